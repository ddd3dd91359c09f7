//! `ledger owners`: per peer, the pins of its latest complete snapshot by organisation, the unowned
//! pins, and the pins whose `org` changed across snapshots.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::app::{print_json, print_table};
use crate::cli::GlobalArgs;
use crate::store::incident::{self, OrgChange, PeerOwners};

#[derive(Debug, Args)]
pub struct OwnersArgs {
    /// JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Owners {
    peers: Vec<PeerOwners>,
    changes: Vec<OrgChange>,
}

pub fn run(args: OwnersArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = g.ledger.store()?;
    let o = Owners {
        peers: incident::owners(&store.conn)?,
        changes: incident::org_changes(&store.conn)?,
    };
    if args.json {
        print_json(&o)?;
        return Ok(ExitCode::SUCCESS);
    }
    if o.peers.is_empty() {
        crate::out!("no complete snapshot yet: run `ledger snapshot` first");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for p in &o.peers {
        let peer = super::snapshots::short(&p.peer);
        for (org, n) in &p.orgs {
            rows.push(vec![peer.clone(), p.snapshot.to_string(), org.clone(), n.to_string()]);
        }
        rows.push(vec![peer, p.snapshot.to_string(), "(unowned)".into(), p.unowned.to_string()]);
    }
    print_table(&["peer", "snapshot", "org", "pins"], &rows)?;
    if !o.changes.is_empty() {
        crate::out!("\nowner changes:");
        let rows: Vec<Vec<String>> = o
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.cid.clone(),
                    super::snapshots::short(&c.peer),
                    c.snapshot.to_string(),
                    c.from.clone().unwrap_or_else(|| "(none)".into()),
                    c.to.clone().unwrap_or_else(|| "(none)".into()),
                ]
            })
            .collect();
        print_table(&["cid", "peer", "snapshot", "from", "to"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
