//! Snapshots on a schedule (`ledger watch`): every round snapshots each peer, looks for losses
//! first seen in the new snapshots, logs each and hands them to the `--on-loss` hook; with
//! `--drift-after`, it also logs each disagreement between the peers' replicas that has lasted that
//! long, once, and hands it to the `--on-drift` hook. A peer that
//! cannot be read is logged and tried again next round; one the ledger cannot store (a full disk)
//! ends the watch with the error. SIGTERM or SIGINT: the snapshot in progress is
//! finished and stored, then the watch ends.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::{Client, Membership};
use crate::context::Context;
use crate::ledger::drift;
use crate::ledger::lost::LossReport;
use crate::ledger::metrics::{ErrorKind, Metrics};
use crate::ledger::{members, snapshot};
use crate::store::incident::{self, LostFilter};

/// How a watch runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub peers: Vec<url::Url>,
    pub every: Duration,
    /// Run this (through `sh -c`) with the new losses' report on stdin.
    pub on_loss: Option<String>,
    /// Stop after this many rounds (`None`: until a signal).
    pub rounds: Option<u64>,
    /// Log each disagreement between the peers once it has lasted this long (`None`: no drift).
    pub drift_after: Option<Duration>,
    /// Run this (through `sh -c`) with the disagreements newly past `drift_after` on stdin.
    pub on_drift: Option<String>,
    /// `--all-peers`: say which members of the cluster (`GET /peers`) a round did not snapshot.
    pub all_peers: bool,
    /// Read each peer's pin statuses after each complete snapshot (`--status`).
    pub status: bool,
    /// Serve the metrics here (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Watches until the rounds are done or a signal arrives. `each` gets every complete snapshot.
/// With `--all-peers`, the members the last round snapshotted (`None` without it).
pub async fn run(
    ctx: &Context,
    opts: &Options,
    mut each: impl FnMut(&snapshot::Report) -> anyhow::Result<()>,
) -> anyhow::Result<Option<Membership>> {
    let clients = ctx.clients(&opts.peers)?;
    let mut stop = Stop { shutdown: crate::app::Shutdown::new()?, seen: false };
    tracing::info!(
        peers = clients.len(),
        every = %crate::ids::format_duration(opts.every),
        "watching {}",
        ctx.db_path().display()
    );
    let metrics = match opts.metrics {
        Some(addr) => Some(start_metrics(ctx, addr)?),
        None => None,
    };
    let m = metrics.as_deref();
    let mut round = 0u64;
    let mut members: Option<Membership> = None;
    // The disagreements already handed on, by (CID, since snapshot): each is reported once.
    let mut reported: HashSet<(String, i64)> = HashSet::new();
    loop {
        let started = tokio::time::Instant::now();
        round += 1;
        let (taken, read) =
            snapshot_round(ctx, &clients, (opts.status, m), &mut stop, &mut each).await?;
        // A round a signal cut short says nothing of the members.
        if opts.all_peers && !stop.seen() {
            members = Some(check_members(ctx, &clients, read, (round, members)).await?);
        }
        let mut losses = Vec::new();
        if !taken.is_empty() {
            let filter = LostFilter { first_lacking_in: Some(taken), ..Default::default() };
            losses = incident::lost(&ctx.store()?.conn, &filter)?;
            let mut hooks_ok = report_losses(&losses, opts.on_loss.as_deref(), ctx.db_path());
            if let Some(after) = opts.drift_after {
                hooks_ok &= report_drift(ctx, after, opts.on_drift.as_deref(), &mut reported);
            }
            if let (false, Some(m)) = (hooks_ok, m) {
                m.error(ErrorKind::Hook);
            }
        }
        if let Some(m) = m {
            m.round_done(ctx, &losses);
        }
        if opts.rounds.is_some_and(|n| round >= n) || stop.seen() {
            break;
        }
        tokio::select! {
            biased;
            () = stop.wait() => break,
            () = tokio::time::sleep_until(started + opts.every) => {}
        }
    }
    if stop.seen {
        tracing::info!("stopping");
    }
    Ok(members)
}

/// Listens on `addr` and serves the metrics there, read from the ledger once before the first
/// round. An address that cannot be listened on is an error: the watch does not start.
fn start_metrics(ctx: &Context, addr: std::net::SocketAddr) -> anyhow::Result<Arc<Metrics>> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let metrics = Metrics::new(ctx.cluster_name()?, ctx.db_path().to_path_buf());
    metrics.refresh(ctx);
    crate::ledger::metrics::serve_on_a_thread(listener, metrics.clone())?;
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(metrics)
}

/// The members a round snapshotted (`read`: the peer ID of each complete snapshot), logged when
/// they differ from the round before's (`last`).
async fn check_members(
    ctx: &Context,
    clients: &[Client],
    mut read: Vec<Option<String>>,
    (round, last): (u64, Option<Membership>),
) -> anyhow::Result<Membership> {
    read.resize(clients.len().max(read.len()), None);
    let m = members::check(ctx, clients, &read).await?;
    if last.as_ref() != Some(&m) {
        match m.shortfall("snapshotted") {
            Some(said) => tracing::warn!(
                "round {round}: {said}; {}",
                crate::cluster::membership::HOW_TO_NAME_THEM
            ),
            None if last.is_some() => {
                tracing::info!("round {round}: every member of the cluster snapshotted")
            }
            None => {}
        }
    }
    Ok(m)
}

/// SIGTERM or SIGINT, remembered once seen: checked before each snapshot, so a signal lets the
/// snapshot in progress finish and no other begin.
struct Stop {
    shutdown: crate::app::Shutdown,
    seen: bool,
}

impl Stop {
    /// Whether a signal has arrived (without waiting).
    fn seen(&mut self) -> bool {
        use futures::FutureExt as _;
        if !self.seen {
            self.seen = self.shutdown.wait().now_or_never().is_some();
        }
        self.seen
    }

    async fn wait(&mut self) {
        if !self.seen {
            self.shutdown.wait().await;
            self.seen = true;
        }
    }
}

/// One snapshot of each peer (until a signal); the ids of the complete ones, and their peers' IDs. A
/// peer that cannot be read is logged; a snapshot the ledger cannot store is an error.
async fn snapshot_round(
    ctx: &Context,
    clients: &[Client],
    (status, m): (bool, Option<&Metrics>),
    stop: &mut Stop,
    each: &mut impl FnMut(&snapshot::Report) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<i64>, Vec<Option<String>>)> {
    let (store, cluster) = (ctx.store()?, ctx.cluster_name()?);
    let (mut taken, mut read) = (Vec::new(), Vec::new());
    for c in clients {
        if stop.seen() {
            break;
        }
        match snapshot::take(store, c, cluster, &Default::default(), |_| {}).await {
            Ok(mut r) if r.complete => {
                if status {
                    r.status = Some(read_status(store, c, &r).await?);
                }
                each(&r)?;
                taken.push(r.id);
                read.push(Some(r.peer.clone()));
            }
            Ok(r) => {
                tracing::warn!(
                    snapshot = r.id,
                    "snapshot of {} is incomplete ({}); it is not evidence of anything",
                    c.base(),
                    r.error.as_deref().unwrap_or("unknown error")
                );
                if let Some(m) = m {
                    m.error(ErrorKind::Incomplete);
                }
            }
            // A ledger that cannot store is no watch at all: the error ends it.
            Err(e) if e.chain().any(|c| c.downcast_ref::<rusqlite::Error>().is_some()) => {
                return Err(e.context(format!("cannot store the snapshot of {}", c.base())));
            }
            Err(e) => {
                tracing::warn!("cannot snapshot {}: {e:#}", c.base());
                if let Some(m) = m {
                    m.error(ErrorKind::Unreadable);
                }
            }
        }
    }
    Ok((taken, read))
}

/// The status reading after snapshot `r`: an incomplete one is logged (the next round reads
/// again); one the ledger cannot store ends the watch.
async fn read_status(
    store: &crate::store::Store,
    c: &Client,
    r: &snapshot::Report,
) -> anyhow::Result<crate::ledger::status::Reading> {
    let reading = crate::ledger::status::read(store, c, r.id, &r.peer)
        .await
        .map_err(|e| e.context(format!("cannot store the statuses of {}", c.base())))?;
    if !reading.complete {
        tracing::warn!(
            reading = reading.id,
            "status reading of {} is incomplete ({}); no status counts as changed because of it",
            c.base(),
            reading.error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(reading)
}

/// What the `--on-loss` hook's environment holds besides `LEDGER_DB`: the variables a shell command
/// needs to find programs and speak the user's language, nothing that can hold a credential
/// (`LEDGER_BASIC_AUTH`, `LEDGER_TOKEN`, `LEDGER_CLUSTER` with a `user:pass@`, or anything else
/// the service was started with).
fn hook_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const KEEP: [&str; 8] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"];
    std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| {
                KEEP.contains(&k)
                    || k.starts_with("LC_")
                    || k == "LEDGER_CONFIG"
                    || k == "LEDGER_LOG"
            })
        })
        .collect()
}

/// Logs each loss and hands the report to `--on-loss`, with [`hook_env`] and `LEDGER_DB` (the
/// ledger being watched) as its whole environment. A failing hook is logged, never fatal: false
/// says it failed.
fn report_losses(losses: &[incident::Loss], on_loss: Option<&str>, db: &std::path::Path) -> bool {
    if losses.is_empty() {
        return true;
    }
    for l in losses {
        let fields: Vec<&str> = l.fields.iter().map(|f| f.field.as_str()).collect();
        tracing::warn!(
            cid = %l.cid,
            by = %l.attribution.kind,
            snapshot = l.first_lacking.snapshot,
            "lost {}",
            crate::app::shown(&fields.join(", "))
        );
    }
    let Some(cmd) = on_loss else { return true };
    match serde_json::to_vec(&LossReport { losses, count: losses.len() }) {
        Ok(json) => run_hook("--on-loss", cmd, &json, db),
        Err(e) => {
            tracing::error!("cannot render the loss report: {e}");
            false
        }
    }
}

/// Logs each disagreement that has lasted `after` and was not reported before, and hands them
/// (the JSON of `ledger drift --json`, with only those in `drift`) to `--on-drift`. A drift report
/// that cannot be made is logged; the watch goes on. False: the hook failed.
fn report_drift(
    ctx: &Context,
    after: Duration,
    on_drift: Option<&str>,
    reported: &mut HashSet<(String, i64)>,
) -> bool {
    let made = drift::Options::of(ctx, after, drift::DEFAULT_STALE_AFTER, 2)
        .and_then(|o| drift::report(&ctx.store()?.conn, &o));
    let mut report = match made {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot compare the peers' replicas: {e:#}");
            return true;
        }
    };
    let lasted = |d: &drift::Disagreement| {
        Duration::try_from_secs_f64(d.age_seconds.max(0.0)).is_ok_and(|a| a >= after)
    };
    report.drift.retain(|d| lasted(d) && reported.insert((d.cid.clone(), d.since.snapshot)));
    if report.drift.is_empty() {
        return true;
    }
    for d in &report.drift {
        let holders: Vec<String> = d.versions.iter().map(|v| v.peers.len().to_string()).collect();
        tracing::warn!(
            cid = %d.cid,
            since = d.since.snapshot,
            versions = %holders.join("/"),
            lacking = d.lacking.len(),
            "drift for {}s: the peers disagree",
            d.age_seconds.floor()
        );
    }
    (report.count, report.older) = (report.drift.len(), report.drift.len());
    let Some(cmd) = on_drift else { return true };
    match serde_json::to_vec(&report) {
        Ok(json) => run_hook("--on-drift", cmd, &json, ctx.db_path()),
        Err(e) => {
            tracing::error!("cannot render the drift report: {e}");
            false
        }
    }
}

/// Runs a hook (`flag` names it in messages) through `sh -c` with `json` on its stdin, with
/// [`hook_env`] and `LEDGER_DB` as its whole environment, and waits for it. A failing hook is
/// logged, never fatal: false says it failed.
fn run_hook(flag: &str, cmd: &str, json: &[u8], db: &std::path::Path) -> bool {
    let run = || -> std::io::Result<std::process::ExitStatus> {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env_clear()
            .envs(hook_env())
            .env("LEDGER_DB", db)
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(json);
        drop(stdin);
        child.wait()
    };
    match run() {
        Ok(s) if s.success() => return true,
        Ok(s) => tracing::error!("{flag} command exited with {s}"),
        Err(e) => tracing::error!("cannot run the {flag} command: {e}"),
    }
    false
}
