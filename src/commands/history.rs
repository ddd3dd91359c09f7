//! `ledger history CID`: one pin's versions across snapshots, per peer.

use std::process::ExitCode;

use clap::Args;

use crate::app::{opt, print_json, print_table};
use crate::context::Context;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The pin's CID.
    pub cid: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: HistoryArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cid = crate::ids::parse_cid(&args.cid)
        .map_err(|e| anyhow::anyhow!("{:?} is not a CID: {e}", args.cid))?
        .canonical;
    let store = ctx.store()?;
    let rows = crate::store::snapshots::history(&store.conn, &cid)?;
    if args.json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        crate::out!("{cid} is in no snapshot of this ledger");
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|h| {
                vec![
                    crate::app::short_peer(&h.peer),
                    h.first_snapshot.to_string(),
                    match h.last_snapshot {
                        Some(l) => l.to_string(),
                        None => "now".to_string(),
                    },
                    h.pin.name.clone(),
                    h.pin.metadata.clone().unwrap_or_else(|| "{}".into()),
                    format!("{}..{}", h.pin.replication_min, h.pin.replication_max),
                    h.pin.allocations.clone(),
                    opt(&h.pin.cluster_timestamp),
                ]
            })
            .collect();
        print_table(
            &["peer", "from", "to", "name", "metadata", "replication", "allocations", "timestamp"],
            &table,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
