//! `ledger diff A B`: new, vanished and changed pins between two stored snapshots (of any peers).
//! Exit 1 when they differ, as `diff` does.

use std::process::ExitCode;

use clap::Args;

use crate::app::{print_json, print_table};
use crate::context::Context;
use crate::ledger::diff;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier snapshot's id (see `ledger snapshots`).
    pub a: i64,
    /// The later snapshot's id.
    pub b: i64,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DiffArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let diff::Diff { a, b, pins: entries } = diff::between(&ctx.store()?.conn, args.a, args.b)?;
    for s in [&a, &b] {
        if s.state != crate::domain::SnapshotState::Complete {
            eprintln!(
                "ledger: warning: snapshot {} is {}: it holds only the {} pins it read, so pins missing from it are not evidence of anything",
                s.id, s.state, s.pins
            );
        }
    }
    if args.json {
        print_json(&serde_json::json!({ "a": a.id, "b": b.id, "pins": entries }))?;
    } else if entries.is_empty() {
        crate::out!("snapshots {} and {} hold the same pins", a.id, b.id);
    } else {
        let mut rows = Vec::new();
        for e in &entries {
            if e.fields.is_empty() {
                rows.push(vec![
                    e.change.to_string(),
                    e.cid.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            for f in &e.fields {
                rows.push(vec![
                    e.change.to_string(),
                    e.cid.clone(),
                    f.field.to_string(),
                    f.before.clone(),
                    f.after.clone(),
                ]);
            }
        }
        print_table(&["change", "cid", "field", "before", "after"], &rows)?;
        let count = |c: &str| entries.iter().filter(|e| e.change == c).count();
        eprintln!(
            "{} new, {} changed, {} vanished",
            count("new"),
            count("changed"),
            count("vanished")
        );
    }
    Ok(if entries.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ATTENTION) })
}
