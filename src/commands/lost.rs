//! `ledger lost`: pins whose metadata, name, allocations, replication or expiry disappeared or changed
//! between consecutive complete snapshots of a peer, with who did it. Exit 1 when anything is found.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::app::{json_list, print_table};
use crate::context::Context;
use crate::domain::Attribution;
use crate::ledger::lost::parse_since;
use crate::store::incident::{self, Loss, LostFilter, Since};

#[derive(Debug, Args)]
pub struct LostArgs {
    /// Only losses seen after this snapshot (an id) or this time (RFC 3339, e.g.
    /// 2026-11-20T08:00:00Z, or a date: 2026-11-20).
    #[arg(long, value_name = "SNAPSHOT|TIME")]
    pub since: Option<String>,
    /// Only losses of this metadata key.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LostArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let store = ctx.store()?;
    if let Some(Since::Snapshot(id)) = since
        && crate::store::snapshots::get(&store.conn, id)?.is_none()
    {
        bail!("there is no snapshot {id}; `ledger snapshots` lists them");
    }
    let filter = LostFilter { since, key: args.key.clone(), first_lacking_in: None };
    let found = if args.json {
        // As `LossReport` serialises, one loss at a time.
        json_list("losses", |hand| incident::each_lost(&store.conn, &filter, hand))?
    } else {
        let losses = incident::lost(&store.conn, &filter)?;
        print_losses(&losses)?;
        losses.len()
    };
    Ok(if found == 0 { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ATTENTION) })
}

/// A value as a table cell: long ones (allocations) shortened; `--json` and `export lost` have them
/// whole.
fn cell(v: &str) -> String {
    const MAX: usize = 48;
    if v.chars().count() <= MAX {
        return v.to_string();
    }
    let mut s: String = v.chars().take(MAX - 1).collect();
    s.push('…');
    s
}

/// One line per field: what was lost, where and by whom.
pub fn print_losses(losses: &[Loss]) -> anyhow::Result<()> {
    if losses.is_empty() {
        crate::out!("no lost values");
        return Ok(());
    }
    let mut rows = Vec::new();
    for l in losses {
        let who = match (l.attribution.kind, l.attribution.run) {
            (Attribution::Ours, Some(run)) => {
                format!("ours: run {run} pass {}", l.attribution.pass.unwrap_or(0))
            }
            (kind, _) => kind.to_string(),
        };
        for f in &l.fields {
            rows.push(vec![
                l.cid.clone(),
                format!("{}→{}", l.last_had.snapshot, l.first_lacking.snapshot),
                f.field.clone(),
                cell(f.before.as_deref().unwrap_or_default()),
                f.after.as_deref().map_or_else(|| "(gone)".into(), cell),
                who.clone(),
                l.peers.len().to_string(),
            ]);
        }
    }
    print_table(&["cid", "snapshots", "field", "before", "after", "by", "peers"], &rows)?;
    crate::out!(
        "{} {} lost values ({} by ledger's re-pins, {} outside, {} unpinned)",
        losses.len(),
        if losses.len() == 1 { "pin" } else { "pins" },
        losses.iter().filter(|l| l.attribution.kind == Attribution::Ours).count(),
        losses.iter().filter(|l| l.attribution.kind == Attribution::Outside).count(),
        losses.iter().filter(|l| l.unpinned).count()
    );
    Ok(())
}
