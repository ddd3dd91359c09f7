//! `ledger convergence [RUN]`: how a tag run converged, from stored history only — per pass and per
//! peer (targets, tagged, percent, re-pins attempted / succeeded / failed), the time-resolved curve of
//! the probes, and the time each peer took to show every target.

use std::process::ExitCode;

use clap::Args;

use crate::app::{csv_writer, print_json};
use crate::context::Context;
use crate::ledger::convergence;
use crate::render;

#[derive(Debug, Args)]
pub struct ConvergenceArgs {
    /// The run (default: the latest tag run that was not a dry run).
    pub run: Option<i64>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the curve as CSV (`run,pass,peer,seconds,targets,tagged`) to FILE, or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub csv: Option<String>,
    /// Print every sample (the whole curve) instead of the first and last read of each pass.
    #[arg(long)]
    pub curve: bool,
}

pub fn run(args: ConvergenceArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let report = convergence::load(&ctx.store()?.conn, args.run)?;
    let all = report.every_peer();
    if let Some(path) = &args.csv {
        let mut w = csv_writer(path)?;
        crate::report::files::convergence(&mut w, report.run.id, &report.curve)?;
        w.flush()?;
        if path == "-" {
            return Ok(code(all));
        }
    }
    if args.json {
        print_json(&report)?;
        return Ok(code(all));
    }
    render::convergence(&report, args.curve)?;
    Ok(code(all))
}

fn code(converged: bool) -> ExitCode {
    if converged { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ATTENTION) }
}
