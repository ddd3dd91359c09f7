//! `ledger snapshots`: every snapshot in the ledger, oldest first.

use std::process::ExitCode;

use clap::Args;

use crate::app::{opt, print_json, print_table};
use crate::context::Context;

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotsArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let rows = crate::store::snapshots::list(&store.conn)?;
    if args.json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.cluster.clone(),
                crate::app::short_peer(&s.peer),
                s.started_at.clone(),
                opt(&s.finished_at),
                s.state.to_string(),
                s.pins.to_string(),
                match (s.new, s.changed, s.vanished) {
                    (Some(n), Some(c), Some(v)) => format!("+{n} ~{c} -{v}"),
                    _ => s.error.clone().unwrap_or_default(),
                },
            ]
        })
        .collect();
    print_table(
        &["id", "cluster", "peer", "started", "finished", "state", "pins", "changes"],
        &table,
    )?;
    Ok(ExitCode::SUCCESS)
}
