//! `ledger convergence [RUN]`: how a tag run converged, from stored history only — per pass and per
//! peer (targets, tagged, percent, re-pins attempted / succeeded / failed), the time-resolved curve of
//! the probes, and the time each peer took to show every target.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use crate::app::{csv_writer, print_json, print_table};
use crate::cli::GlobalArgs;
use crate::store::runs::{self, PassRow, ProbeRow, RunRow};

#[derive(Debug, Args)]
pub struct ConvergenceArgs {
    /// The run (default: the latest tag run).
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

#[derive(Serialize)]
struct Convergence {
    run: RunRow,
    passes: Vec<PassRow>,
    curve: Vec<ProbeRow>,
    /// Per peer: seconds after the run started when it first showed every target (`null`: never).
    converged_after: BTreeMap<String, Option<f64>>,
}

pub fn run(args: ConvergenceArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = g.ledger.store()?;
    let report = load(&store.conn, args.run)?;
    let all =
        !report.converged_after.is_empty() && report.converged_after.values().all(Option::is_some);
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
    print_text(&report, args.curve)?;
    Ok(code(all))
}

/// The run `id` (default: the latest tag run) and how it converged.
fn load(conn: &rusqlite::Connection, id: Option<i64>) -> anyhow::Result<Convergence> {
    let id = match id {
        Some(id) => id,
        None => match runs::latest(conn, "tag")? {
            Some(id) => id,
            None => bail!("the ledger has no tag run yet: run `ledger tag --org ORG` first"),
        },
    };
    let Some(run) = runs::get(conn, id)? else {
        bail!("there is no run {id}");
    };
    let passes = runs::passes(conn, id)?;
    let curve = runs::probes(conn, id)?;
    let peers: std::collections::BTreeSet<&str> = curve.iter().map(|p| p.peer.as_str()).collect();
    let converged_after: BTreeMap<String, Option<f64>> = peers
        .into_iter()
        .map(|peer| (peer.to_string(), crate::report::converged_after(&curve, peer)))
        .collect();
    Ok(Convergence { run, passes, curve, converged_after })
}

/// The text output: the run, a table of the curve (every sample, or the first and last read of each
/// pass and peer), and when each peer showed every target.
fn print_text(report: &Convergence, every_sample: bool) -> anyhow::Result<()> {
    let r = &report.run;
    crate::out!(
        "run {} ({}, org={}, {}): {}",
        r.id,
        r.kind,
        r.org.as_deref().unwrap_or("-"),
        r.started_at,
        r.state
    );
    if every_sample {
        let rows: Vec<Vec<String>> = report
            .curve
            .iter()
            .map(|p| vec![p.pass.to_string(), super::snapshots::short(&p.peer), read(p)])
            .collect();
        print_table(&["pass", "peer", "tagged"], &rows)?;
    } else {
        print_passes(report)?;
    }
    for (peer, after) in &report.converged_after {
        match after {
            Some(s) => crate::out!("{}: every target after {s:.1}s", super::snapshots::short(peer)),
            None => crate::out!("{}: NOT converged", super::snapshots::short(peer)),
        }
    }
    Ok(())
}

/// Per pass and peer: the first read (right after the pass's re-pins) and the last.
fn print_passes(report: &Convergence) -> std::io::Result<()> {
    let repins = |pass: i64| {
        report
            .passes
            .iter()
            .find(|x| x.pass == pass)
            .map(|x| format!("{}/{}/{}", x.attempted, x.succeeded, x.failed))
            .unwrap_or_default()
    };
    let spans: std::collections::BTreeSet<(i64, &str)> =
        report.curve.iter().map(|p| (p.pass, p.peer.as_str())).collect();
    let curve = &report.curve;
    let rows: Vec<Vec<String>> = spans
        .into_iter()
        .filter_map(|(pass, peer)| {
            let first = crate::report::first_read(curve, pass, peer)?;
            let last = crate::report::at_pass_end(curve, pass, peer)?;
            Some(vec![
                pass.to_string(),
                super::snapshots::short(peer),
                read(first),
                read(last),
                repins(pass),
            ])
        })
        .collect();
    print_table(&["pass", "peer", "first read", "last read", "re-pins a/s/f"], &rows)
}

/// One probe's read: `tagged/targets (percent%) at seconds`.
fn read(p: &ProbeRow) -> String {
    let pct = crate::report::percent(p.tagged, p.targets);
    format!("{}/{} ({pct:.1}%) at {:.1}s", p.tagged, p.targets, p.seconds)
}

fn code(converged: bool) -> ExitCode {
    if converged { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ATTENTION) }
}
