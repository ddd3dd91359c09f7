//! `ledger restore --from SNAPSHOT`: re-apply the values pins had in a snapshot and have since lost,
//! through the safe re-pin path, recorded as a run. Exit 0 all restored, 1 conflicts, failures or
//! unpinned pins left, 2 error.

use std::process::ExitCode;

use clap::Args;

use crate::app::print_json;
use crate::context::Context;
use crate::ledger::restore;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The complete snapshot whose values come back (`ledger snapshots` lists them). The pins of
    /// its peer are compared with that peer's latest complete snapshot.
    #[arg(long, value_name = "SNAPSHOT")]
    pub from: i64,
    /// Only these CIDs (one per line; `#` comments and blank lines ignored).
    #[arg(long, value_name = "FILE")]
    pub only: Option<std::path::PathBuf>,
    /// Only these metadata keys (comma-separated), and no other field.
    #[arg(long, value_delimiter = ',', value_name = "K1,K2")]
    pub keys: Option<Vec<String>>,
    /// Print what would be restored, record the plan, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also overwrite values someone set after the loss (the conflicts).
    #[arg(long)]
    pub force: bool,
    /// The peer that takes the writes (default: the cluster's first peer).
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<String>,
    /// Re-pins in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RestoreArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if let Some(keys) = &args.keys {
        for k in keys {
            crate::cluster::repin::check_key(k)?;
        }
    }
    let opts = restore::Options {
        from: args.from,
        only: args.only.as_deref().map(crate::ids::read_cid_list).transpose()?,
        keys: args.keys.clone(),
        dry_run: args.dry_run,
        force: args.force,
        concurrency: args.concurrency as usize,
        peer: args.peer.clone(),
    };
    if args.json {
        ctx.silence();
    }
    let report = ctx.until_signal(restore::run(ctx, &opts))?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    let attention = report.needs_attention();
    Ok(if attention { ExitCode::from(crate::error::ATTENTION) } else { ExitCode::SUCCESS })
}

fn print_report(r: &restore::Report) -> std::io::Result<()> {
    let verb = if r.dry_run { "would restore" } else { "restored" };
    crate::out!(
        "run {}: values of snapshot {} over snapshot {}{}",
        r.run.unwrap_or(0),
        r.from,
        r.current,
        if r.dry_run { " (dry run: nothing sent)" } else { "" }
    );
    for p in r.plan.iter().take(if r.dry_run { 50 } else { 10 }) {
        let fields: Vec<&str> = p.fields.iter().map(|f| f.field.as_str()).collect();
        crate::out!("  {verb} {}: {}", p.cid, crate::app::shown(&fields.join(", ")));
    }
    if r.plan.len() > 50 {
        crate::out!("  … and {} more", r.plan.len() - 50);
    }
    crate::out!(
        "{verb} {} pins; {} conflicts, {} unpinned (not re-pinned), {} failed",
        r.restored.len(),
        r.conflicts.len(),
        r.unpinned.len(),
        r.failed.len()
    );
    for c in &r.conflicts {
        crate::out!("  conflict {}: {}", c.cid, crate::app::shown(&c.reason));
    }
    for c in &r.unpinned {
        crate::out!("  unpinned {c}");
    }
    for f in &r.failed {
        crate::out!("  failed {}: {}", f.cid, crate::app::shown(&f.error));
    }
    if let Some(s) = &r.spread {
        crate::render::spread(s, r.restored.len())?;
    }
    Ok(())
}
