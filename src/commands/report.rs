//! `ledger report [RUN] --out DIR`: a tag run's report from stored history — one self-contained HTML
//! page (convergence chart as inline SVG, passes, stragglers, pins other organisations own, owners) and CSV files beside
//! it. Exit 0 once written (whether the run converged is in the report; `ledger convergence` exits 1
//! when it did not).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::context::Context;
use crate::{render, report};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The tag run (default: the latest that was not a dry run).
    pub run: Option<i64>,
    /// Write report.html, convergence.svg and the CSV files (convergence, passes, stragglers,
    /// pins other organisations own, owners) into this directory; created if missing, files in it replaced.
    #[arg(long, default_value = "reports", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: ReportArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let run = report::resolve_run(&store.conn, args.run)?;
    let r = report::load(&store.conn, run)?;
    render::report_written(r.run.id, &report::write(&r, &args.out)?)?;
    Ok(ExitCode::SUCCESS)
}
