//! `ledger watch --every DURATION`: snapshots on a schedule, as a long-running process, so that the
//! history an incident needs exists before it. Each new loss is logged as it appears and, with
//! `--on-loss CMD`, handed to CMD as JSON on stdin. SIGTERM or SIGINT: the snapshot in progress is
//! finished and stored, then the process exits 0.

use std::io::Write as _;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Args;

use crate::app;
use crate::cli::Peers;
use crate::context::Context;
use crate::ledger::lost::LossReport;
use crate::ledger::snapshot;
use crate::render;
use crate::store::incident::{self, LostFilter};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Take a snapshot this often (Go duration: 30s, 5m, 1h), counted from the start of each round.
    #[arg(long, value_parser = crate::ids::parse_go_duration, value_name = "DURATION")]
    pub every: Duration,
    #[command(flatten)]
    pub peers: Peers,
    /// Run CMD (through `sh -c`) for each round that finds new losses, with the loss report (the JSON
    /// of `ledger lost --json`, new losses only) on its stdin.
    #[arg(long, value_name = "CMD")]
    pub on_loss: Option<String>,
    /// Stop after this many rounds (default: run until SIGTERM or SIGINT).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u64>,
}

pub fn run(args: WatchArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.every.is_zero() {
        anyhow::bail!("--every must be longer than 0s");
    }
    let urls = args.peers.urls(ctx)?;
    let clients = ctx.clients(&urls)?;
    let store = ctx.store()?;
    let cluster = ctx.cluster_name()?;
    let quiet = ctx.is_quiet();
    ctx.block_on(async {
        let mut shutdown = app::Shutdown::new()?;
        tracing::info!(
            peers = urls.len(),
            every = %crate::ids::format_duration(args.every),
            "watching {}",
            store.path.display()
        );
        let mut round = 0u64;
        loop {
            let started = tokio::time::Instant::now();
            round += 1;
            let mut taken = Vec::new();
            for c in &clients {
                match snapshot::take(store, c, cluster, &Default::default(), |_| {}).await {
                    Ok(r) if r.complete => {
                        if !quiet {
                            render::snapshot_summary(&r)?;
                        }
                        taken.push(r.id);
                    }
                    Ok(r) => tracing::warn!(
                        snapshot = r.id,
                        "snapshot of {} is incomplete ({}); it is not evidence of anything",
                        c.base(),
                        r.error.as_deref().unwrap_or("unknown error")
                    ),
                    Err(e) => tracing::warn!("cannot snapshot {}: {e:#}", c.base()),
                }
            }
            if !taken.is_empty() {
                let filter = LostFilter { first_lacking_in: Some(taken), ..Default::default() };
                let losses = incident::lost(&store.conn, &filter)?;
                report_losses(&losses, args.on_loss.as_deref());
            }
            if args.rounds.is_some_and(|n| round >= n) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + args.every) => {}
                _ = shutdown.wait() => {
                    tracing::info!("stopping");
                    break;
                }
            }
        }
        anyhow::Ok(())
    })??;
    Ok(ExitCode::SUCCESS)
}

/// Logs each loss and hands the report to `--on-loss`. A failing hook is logged, never fatal.
fn report_losses(losses: &[incident::Loss], on_loss: Option<&str>) {
    if losses.is_empty() {
        return;
    }
    for l in losses {
        let fields: Vec<&str> = l.fields.iter().map(|f| f.field.as_str()).collect();
        tracing::warn!(
            cid = %l.cid,
            by = %l.attribution.kind,
            snapshot = l.first_lacking.snapshot,
            "lost {}",
            fields.join(", ")
        );
    }
    let Some(cmd) = on_loss else { return };
    let json = match serde_json::to_vec(&LossReport { losses, count: losses.len() }) {
        Ok(j) => j,
        Err(e) => return tracing::error!("cannot render the loss report: {e}"),
    };
    let run = || -> std::io::Result<std::process::ExitStatus> {
        let mut child =
            std::process::Command::new("sh").arg("-c").arg(cmd).stdin(Stdio::piped()).spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(&json);
        drop(stdin);
        child.wait()
    };
    match run() {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::error!("--on-loss command exited with {s}"),
        Err(e) => tracing::error!("cannot run the --on-loss command: {e}"),
    }
}
