//! `ledger drift`: the pins on which the cluster's peers disagree in their latest complete
//! snapshots, since when, who holds which version, and whether the disagreement is shrinking from
//! round to round. Reads the ledger only. Exit 1 when a disagreement is older than `--older-than`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::app::{print_json, print_table, short_peer};
use crate::context::Context;
use crate::ledger::drift::{self, Disagreement, Report};
use crate::report::table_out::{Kind, ParquetOut, TableOut};

/// The arguments of `ledger drift`; its help text is on `Command::Drift` in `cli.rs`.
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Exit 1 when a disagreement has lasted longer than this (Go duration: 90s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = crate::cli::parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub older_than: Duration,
    /// Leave out a peer whose latest complete snapshot started more than this before the newest
    /// peer's (it is named, with why); longer than 0s.
    #[arg(long, default_value = "1h", value_parser = crate::cli::parse_positive_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub stale_after: Duration,
    /// How many of the latest rounds to count (at least 1).
    #[arg(long, default_value = "5", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV on stdout: one row per version (or lack) of each disagreeing pin.
    #[arg(long, conflicts_with = "parquet")]
    pub csv: bool,
    /// The rows of --csv as Parquet in FILE, typed as `ledger export --parquet` types them
    /// (since_snapshot an integer, since_at and cluster_timestamp timestamps, age_seconds a
    /// double, older a boolean).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "status"])]
    pub parquet: Option<String>,
    /// List the pins stuck in pin_error, pin_queued or pinning on a peer instead, from the status
    /// readings of `ledger snapshot --status` (`commands::run` sends it to `drift_status`).
    #[arg(long, conflicts_with_all = ["stale_after", "rounds"])]
    pub status: bool,
}

/// What `ledger drift` lists. One listing today; a `--status` listing (pins stuck in a tracker
/// status) joins it as a variant of its own.
enum What {
    /// The pins whose stored versions differ between peers.
    Versions,
}

impl DriftArgs {
    fn what(&self) -> What {
        What::Versions
    }
}

pub fn run(args: DriftArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    match args.what() {
        What::Versions => versions(&args, ctx),
    }
}

fn versions(args: &DriftArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let opts = drift::Options::of(ctx, args.older_than, args.stale_after, args.rounds)?;
    let report = drift::report(&ctx.store()?.conn, &opts)?;
    if args.json {
        print_json(&report)?;
    } else if args.csv {
        let mut w: Box<dyn TableOut> = Box::new(crate::app::csv_writer("-")?);
        write_rows(&report, w.as_mut())?;
        w.finish()?;
    } else if let Some(path) = &args.parquet {
        let mut w: Box<dyn TableOut> = Box::new(ParquetOut::create(path, parquet_kind)?);
        write_rows(&report, w.as_mut())?;
        w.finish()?;
    } else {
        print_report(&report)?;
    }
    Ok(if report.older > 0 { ExitCode::from(crate::error::ATTENTION) } else { ExitCode::SUCCESS })
}

/// The CSV columns of `drift --csv`.
const CSV_COLUMNS: [&str; 11] = [
    "cid",
    "since_snapshot",
    "since_at",
    "age_seconds",
    "older",
    "state",
    "digest",
    "name",
    "metadata",
    "cluster_timestamp",
    "peers",
];

/// One row per version of each disagreeing pin (`holds`), and one for the peers that lack it
/// (`lacks`); the header even when there is no row.
fn write_rows(r: &Report, w: &mut dyn TableOut) -> anyhow::Result<()> {
    w.header(&CSV_COLUMNS)?;
    for d in &r.drift {
        let head = [
            d.cid.clone(),
            d.since.snapshot.to_string(),
            d.since.at.clone(),
            format!("{:.3}", d.age_seconds),
            d.older.to_string(),
        ];
        for v in &d.versions {
            let tail = [
                "holds".to_string(),
                v.digest.clone(),
                v.name.clone(),
                v.metadata.to_string(),
                v.cluster_timestamp.clone().unwrap_or_default(),
                v.peers.join(" "),
            ];
            w.row(&[&head[..], &tail[..]].concat())?;
        }
        if !d.lacking.is_empty() {
            let tail = ["lacks", "", "", "", "", &d.lacking.join(" ")].map(str::to_string);
            w.row(&[&head[..], &tail[..]].concat())?;
        }
    }
    Ok(())
}

/// The Parquet type of a column of `drift --parquet`.
fn parquet_kind(column: &str) -> Kind {
    match column {
        "since_snapshot" => Kind::Int,
        "since_at" | "cluster_timestamp" => Kind::Time,
        "age_seconds" => Kind::Real,
        "older" => Kind::Bool,
        _ => Kind::Text,
    }
}

/// An age in whole seconds, as a Go duration (`12m3s`).
fn age(seconds: f64) -> String {
    let d = Duration::try_from_secs_f64(seconds.max(0.0).floor()).unwrap_or(Duration::ZERO);
    crate::ids::format_duration(d)
}

fn peers_cell(peers: &[String]) -> String {
    peers.iter().map(|p| short_peer(p)).collect::<Vec<_>>().join(" ")
}

/// A version in a few words: its name, metadata and the start of its digest.
fn version_cell(v: &drift::Version) -> String {
    let digest: String = v.digest.chars().take(8).collect();
    format!("{:?} {} {digest}", v.name, v.metadata)
}

/// The rows of one disagreement: one per version, then the peers that lack it.
fn drift_rows(d: &Disagreement) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let head = vec![
        d.cid.clone(),
        format!("snapshot {} ({})", d.since.snapshot, d.since.at),
        format!("{}{}", age(d.age_seconds), if d.older { " !" } else { "" }),
    ];
    let blank = vec![String::new(); 3];
    for v in &d.versions {
        let first = if rows.is_empty() { head.clone() } else { blank.clone() };
        rows.push([first, vec![peers_cell(&v.peers), version_cell(v)]].concat());
    }
    if !d.lacking.is_empty() {
        let first = if rows.is_empty() { head } else { blank };
        rows.push([first, vec![peers_cell(&d.lacking), "(lacks it)".to_string()]].concat());
    }
    rows
}

fn print_report(r: &Report) -> anyhow::Result<()> {
    let scope = if r.every_peer { " (every peer)" } else { "" };
    crate::out!(
        "cluster {}: compared {} of {} peers the ledger knows{scope}",
        r.cluster,
        r.compared,
        r.known
    );
    for p in r.peers.iter().filter(|p| !p.compared) {
        crate::out!(
            "  not compared: {} ({})",
            short_peer(&p.peer),
            p.reason.as_deref().unwrap_or_default()
        );
    }
    if r.compared < 2 {
        crate::out!("fewer than two peers to compare: no drift can be seen");
    }
    if !r.drift.is_empty() {
        let rows: Vec<Vec<String>> = r.drift.iter().flat_map(drift_rows).collect();
        print_table(&["cid", "since", "age", "peers", "version"], &rows)?;
    }
    print_rounds(r)?;
    crate::out!(
        "{} {}, {} for longer than {} (--older-than)",
        r.count,
        if r.count == 1 { "pin disagrees" } else { "pins disagree" },
        r.older,
        r.older_than
    );
    Ok(())
}

fn print_rounds(r: &Report) -> anyhow::Result<()> {
    if r.rounds.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .map(|x| {
            vec![
                x.round.to_string(),
                format!("{}–{}", x.first_snapshot, x.last_snapshot),
                x.at.clone(),
                x.peers.to_string(),
                x.disagreeing.to_string(),
            ]
        })
        .collect();
    print_table(&["round", "snapshots", "started", "peers", "disagreeing"], &rows)?;
    let counts: Vec<String> = r.rounds.iter().map(|x| x.disagreeing.to_string()).collect();
    crate::out!("trend: {} ({} pins over the last rounds)", r.trend, counts.join(" → "));
    Ok(())
}
