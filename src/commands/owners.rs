//! `ledger owners`: per peer, the pins of its latest complete snapshot by organisation, the unowned
//! pins, and the pins whose `org` changed across snapshots.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::app::{print_json, print_table};
use crate::context::Context;
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

pub fn run(args: OwnersArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
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
    // One row per organisation, one column per peer (its latest complete snapshot).
    let mut rows: Vec<Vec<String>> = Vec::new();
    for org in incident::org_names(&o.peers).into_iter().map(Some).chain([None]) {
        let mut row = vec![org.unwrap_or("(unowned)").to_string()];
        row.extend(o.peers.iter().map(|p| p.count(org).to_string()));
        rows.push(row);
    }
    let mut total = vec!["total".to_string()];
    total.extend(o.peers.iter().map(|p| p.total().to_string()));
    rows.push(total);
    let headers: Vec<String> = std::iter::once("org".to_string())
        .chain(
            o.peers
                .iter()
                .map(|p| format!("{} (snapshot {})", crate::app::short_peer(&p.peer), p.snapshot)),
        )
        .collect();
    print_table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows)?;
    if !o.changes.is_empty() {
        // Summed by (from, to), one pin counted once however many peers saw the change; then the
        // pins that lost or changed an owner (an unowned pin being tagged is the usual migration).
        let mut by_kind: std::collections::BTreeMap<
            (&str, &str),
            std::collections::BTreeSet<&str>,
        > = Default::default();
        for c in &o.changes {
            let key = (c.from.as_deref().unwrap_or("(none)"), c.to.as_deref().unwrap_or("(none)"));
            by_kind.entry(key).or_default().insert(&c.cid);
        }
        crate::out!("\nowner changes:");
        let rows: Vec<Vec<String>> = by_kind
            .iter()
            .map(|((from, to), cids)| {
                vec![from.to_string(), to.to_string(), cids.len().to_string()]
            })
            .collect();
        print_table(&["from", "to", "pins"], &rows)?;
        let mut taken: Vec<&OrgChange> = Vec::new();
        for c in o.changes.iter().filter(|c| c.from.is_some()) {
            if !taken.iter().any(|t| t.cid == c.cid && t.from == c.from && t.to == c.to) {
                taken.push(c);
            }
        }
        if !taken.is_empty() {
            crate::out!("\npins whose owner was removed or replaced:");
            let rows: Vec<Vec<String>> = taken
                .iter()
                .take(50)
                .map(|c| {
                    vec![
                        c.cid.clone(),
                        c.from.clone().unwrap_or_default(),
                        c.to.clone().unwrap_or_else(|| "(none)".into()),
                        c.snapshot.to_string(),
                        c.at.clone(),
                    ]
                })
                .collect();
            print_table(&["cid", "from", "to", "snapshot", "at"], &rows)?;
            if taken.len() > 50 {
                crate::out!("… and {} more (--json lists them all)", taken.len() - 50);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
