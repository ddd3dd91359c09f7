//! `ledger report [RUN] --out DIR`: a tag run's report from stored history — one self-contained HTML
//! page (convergence chart as inline SVG, passes, stragglers, conflicts, owners) and CSV files beside
//! it. Exit 0 once written (whether the run converged is in the report; `ledger convergence` exits 1
//! when it did not).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::GlobalArgs;
use crate::report;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The tag run (default: the latest tag run).
    pub run: Option<i64>,
    /// Write report.html, convergence.svg and the CSV files (convergence, passes, stragglers,
    /// conflicts, owners) into this directory; created if missing, files in it replaced.
    #[arg(long, default_value = "reports", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: ReportArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = g.ledger.store()?;
    let run = report::resolve_run(&store.conn, args.run)?;
    let r = report::load(&store.conn, run)?;
    let written = report::write(&r, &args.out)?;
    let names: Vec<String> = written
        .files
        .iter()
        .skip(1)
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    crate::out!("report of run {} written to {}", r.run.id, written.files[0].display());
    crate::out!("  beside it: {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}
