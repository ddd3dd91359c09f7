//! `ledger watch --every DURATION`: snapshots on a schedule, as a long-running process, so that the
//! history an incident needs exists before it. Each new loss is logged as it appears and, with
//! `--on-loss CMD`, handed to CMD as JSON on stdin; with `--drift-after DURATION`, each disagreement
//! between the peers' replicas that has lasted that long is logged once and, with `--on-drift CMD`,
//! handed to CMD the same way. SIGTERM or SIGINT: the snapshot in progress is finished and stored,
//! then the process exits 0 — or 1 with `--all-peers` when the last round did not snapshot every
//! member of the cluster (`GET /peers`), which the watch logs as it sees it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::Peers;
use crate::context::Context;
use crate::ledger::watch;
use crate::render;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Take a snapshot this often (Go duration: 30s, 5m, 1h), counted from the start of each round.
    #[arg(long, value_parser = crate::cli::parse_positive_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub every: Duration,
    #[command(flatten)]
    pub peers: Peers,
    /// Run CMD (through `sh -c`) for each round that finds new losses, with the loss report (the JSON
    /// of `ledger lost --json`, new losses only) on its stdin.
    #[arg(long, value_name = "CMD")]
    pub on_loss: Option<String>,
    /// After each round, log each pin on which the peers' replicas have disagreed for at least
    /// DURATION (as `ledger drift` finds it), once per disagreement (a CID and the snapshot it
    /// started in).
    #[arg(long, value_parser = crate::cli::parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub drift_after: Option<std::time::Duration>,
    /// Run CMD (through `sh -c`) for each round that finds disagreements newly past
    /// --drift-after, with the drift report (the JSON of `ledger drift --json`, those
    /// disagreements only) on its stdin.
    #[arg(long, value_name = "CMD", requires = "drift_after")]
    pub on_drift: Option<String>,
    /// After each complete snapshot, also read the peer's own tracker status of its pins and store
    /// the changes (as `snapshot --status`; `ledger drift --status` lists the stuck ones).
    #[arg(long)]
    pub status: bool,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics while watching: pins per
    /// peer and org, losses, drift, each peer's latest snapshot, the watch's rounds and errors, and
    /// any run in progress (e.g. 127.0.0.1:9464; port 0 picks a free port, logged at start).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Stop after this many rounds, at least 1 (default: run until SIGTERM or SIGINT).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,
}

pub fn run(args: WatchArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let opts = watch::Options {
        peers: args.peers.urls(ctx)?,
        every: args.every,
        on_loss: args.on_loss.clone(),
        rounds: args.rounds,
        drift_after: args.drift_after,
        on_drift: args.on_drift.clone(),
        all_peers: args.peers.all_peers,
        status: args.status,
        metrics: args.metrics,
    };
    let quiet = ctx.is_quiet();
    let summary = |r: &crate::ledger::snapshot::Report| {
        if !quiet {
            render::snapshot_summary(r)?;
        }
        Ok(())
    };
    let members = ctx.block_on(watch::run(ctx, &opts, summary))??;
    Ok(match members {
        Some(m) if !m.every_member_read() => ExitCode::from(crate::error::ATTENTION),
        _ => ExitCode::SUCCESS,
    })
}
