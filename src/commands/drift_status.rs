//! `ledger drift --status`: the pins stuck in `pin_error`, `pin_queued` or `pinning` on a peer for at
//! least `--older-than`, from the status readings `ledger snapshot --status` stored: per peer, with
//! since when, the status and the tracker's error text. Reads the ledger only. Exit 1 when any is
//! listed, 0 when none, 2 on an error (bad input, a ledger with no status reading).

use std::process::ExitCode;

use crate::app::{csv_writer, print_json, print_table, short_peer, shown};
use crate::context::Context;
use crate::ledger::status::{self, StuckReport};

/// The CSV columns, one row per stuck pin and peer.
const CSV_COLUMNS: [&str; 14] = [
    "cluster",
    "peer",
    "cid",
    "status",
    "error",
    "since",
    "first_snapshot",
    "last_seen",
    "last_snapshot",
    "stuck_seconds",
    "status_at",
    "attempt_count",
    "first_reading",
    "last_reading",
];

/// What `drift --status` is asked: `--older-than`, `--json`, `--csv` of `ledger drift`'s arguments.
#[derive(Debug, Clone)]
pub struct Listing {
    pub older_than: std::time::Duration,
    pub json: bool,
    pub csv: bool,
}

pub fn run(ctx: &Context, args: &Listing) -> anyhow::Result<ExitCode> {
    let report = status::stuck(ctx.store()?, args.older_than)?;
    if args.json {
        print_json(&report)?;
    } else if args.csv {
        write_csv(&report)?;
    } else {
        print_stuck(&report)?;
    }
    Ok(if report.stuck.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ATTENTION)
    })
}

fn write_csv(report: &StuckReport) -> anyhow::Result<()> {
    let mut w = csv_writer("-")?;
    w.write_record(CSV_COLUMNS)?;
    for s in &report.stuck {
        let c = &s.current;
        w.write_record([
            c.cluster.clone(),
            c.peer.clone(),
            c.cid.clone(),
            c.status.clone(),
            c.error.clone(),
            c.since.clone(),
            c.first_snapshot.to_string(),
            c.last_seen.clone(),
            c.last_snapshot.to_string(),
            format!("{:.3}", s.stuck_seconds),
            c.status_at.clone().unwrap_or_default(),
            c.attempt_count.to_string(),
            c.first_reading.to_string(),
            c.last_reading.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// The table, then what it is evidence of: each peer's latest reading.
fn print_stuck(report: &StuckReport) -> anyhow::Result<()> {
    let older = crate::ids::format_duration(
        std::time::Duration::try_from_secs_f64(report.older_than_seconds).unwrap_or_default(),
    );
    if report.stuck.is_empty() {
        crate::out!("no pin stuck in pin_error, pin_queued or pinning for {older} or longer");
    } else {
        let rows: Vec<Vec<String>> = report
            .stuck
            .iter()
            .map(|s| {
                let c = &s.current;
                vec![
                    short_peer(&c.peer),
                    c.cid.clone(),
                    shown(&c.status).into_owned(),
                    format!("{} (snapshot {})", c.since, c.first_snapshot),
                    format_seconds(s.stuck_seconds),
                    shown(&c.error).into_owned(),
                ]
            })
            .collect();
        print_table(&["peer", "cid", "status", "since", "for", "error"], &rows)?;
        let pins: std::collections::BTreeSet<&str> =
            report.stuck.iter().map(|s| s.current.cid.as_str()).collect();
        crate::out!(
            "{} stuck for {older} or longer: {} {} on {} {}",
            report.count,
            pins.len(),
            if pins.len() == 1 { "pin" } else { "pins" },
            peers_of(report),
            if peers_of(report) == 1 { "peer" } else { "peers" }
        );
    }
    for r in &report.readings {
        crate::out!(
            "  {}: statuses read {} (reading {}, snapshot {}, {} pins)",
            short_peer(&r.peer),
            r.started_at,
            r.reading,
            r.snapshot,
            r.entries
        );
    }
    Ok(())
}

fn peers_of(report: &StuckReport) -> usize {
    let peers: std::collections::BTreeSet<&str> =
        report.stuck.iter().map(|s| s.current.peer.as_str()).collect();
    peers.len()
}

/// `12m30s`, `4.2s`.
fn format_seconds(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s.round() as u64;
    crate::ids::format_duration(std::time::Duration::from_secs(whole))
}
