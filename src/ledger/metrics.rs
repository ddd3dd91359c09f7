//! `ledger watch --metrics ADDR`: the ledger as Prometheus sees it, in the OpenMetrics text format
//! (prometheus-client) over HTTP/1 (hyper, the stack the cluster client already runs on), at
//! `GET /metrics`.
//!
//! Two kinds of figure, read at two times. What a round changes (pins per peer and organisation,
//! losses, drift) is read from the ledger after each round, by the watch, as `ledger owners`,
//! `ledger lost` and `ledger drift` read it. What moves between rounds (each peer's latest
//! snapshot, the runs in progress and how far they have come) is read at each scrape, on a
//! connection of the scrape's own that only reads, so a `ledger tag` run in another process shows as
//! it goes. The watch's own counters (rounds, errors, losses it found) live in the process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use strum::IntoEnumIterator as _;

use crate::domain::{Attribution, Outcome, SnapshotState};
use crate::ledger::drift;
use crate::store::incident::{self, Loss, LostFilter, PeerOwners};
use crate::store::metrics::{self as queries, ActiveRun};
use crate::store::snapshots::SnapshotRow;

/// Something the watch counts as an error (`ledger_watch_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::AsRefStr, strum::EnumIter)]
#[strum(serialize_all = "kebab-case")]
pub enum ErrorKind {
    /// A peer that could not be read.
    Unreadable,
    /// A snapshot whose stream broke.
    Incomplete,
    /// An `--on-loss` or `--on-drift` hook that failed.
    Hook,
    /// A figure the ledger could not read for the metrics (the last one read is served).
    Metrics,
}

/// The figures a scrape serves, and where they are read from.
#[derive(Debug)]
pub struct Metrics {
    cluster: String,
    db: PathBuf,
    state: Mutex<State>,
    /// The scrapes' own connection, opened at the first scrape.
    reader: Mutex<Option<rusqlite::Connection>>,
}

#[derive(Debug, Default)]
struct State {
    // Read after each round.
    owners: Vec<PeerOwners>,
    losses: BTreeMap<Attribution, i64>,
    drift: Option<Drift>,
    // Counted by the watch.
    rounds: u64,
    new_losses: BTreeMap<Attribution, u64>,
    errors: BTreeMap<ErrorKind, u64>,
    // Read at each scrape.
    snapshots: Vec<SnapshotRow>,
    runs: Vec<ActiveRun>,
}

#[derive(Debug, Clone, Copy)]
struct Drift {
    pins: usize,
    oldest_seconds: f64,
    compared: usize,
}

impl Metrics {
    pub fn new(cluster: &str, db: PathBuf) -> Arc<Metrics> {
        let state = State {
            new_losses: Attribution::iter().map(|a| (a, 0)).collect(),
            errors: ErrorKind::iter().map(|k| (k, 0)).collect(),
            ..State::default()
        };
        Arc::new(Metrics {
            cluster: cluster.to_string(),
            db,
            state: Mutex::new(state),
            reader: Mutex::new(None),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn error(&self, kind: ErrorKind) {
        *self.state().errors.entry(kind).or_default() += 1;
    }

    /// A round is over: it found `found` (the new losses), and the ledger is read again for the
    /// figures a round changes. What cannot be read is logged and counted; the figures before it
    /// are served.
    pub fn round_done(&self, ctx: &crate::context::Context, found: &[Loss]) {
        {
            let mut s = self.state();
            s.rounds += 1;
            for l in found {
                *s.new_losses.entry(l.attribution.kind).or_default() += 1;
            }
        }
        self.refresh(ctx);
    }

    /// Reads the ledger again for the figures a round changes. What cannot be read is logged and
    /// counted; the figures before it are served.
    pub fn refresh(&self, ctx: &crate::context::Context) {
        if let Err(e) = self.read_round(ctx) {
            tracing::warn!("cannot read the ledger for the metrics: {e:#}");
            self.error(ErrorKind::Metrics);
        }
    }

    /// Reads what a round changes: owners, every recorded loss by attribution, the drift (none
    /// while the ledger holds no complete snapshot of the cluster to compare).
    fn read_round(&self, ctx: &crate::context::Context) -> anyhow::Result<()> {
        let conn = &ctx.store()?.conn;
        let mut owners = incident::owners(conn)?;
        owners.retain(|o| o.cluster == self.cluster);
        let mut losses: BTreeMap<Attribution, i64> = Attribution::iter().map(|a| (a, 0)).collect();
        incident::each_lost::<rusqlite::Error>(conn, &LostFilter::default(), |l| {
            *losses.entry(l.attribution.kind).or_default() += 1;
            Ok(())
        })?;
        let drift = if owners.is_empty() {
            None
        } else {
            let opts = drift::Options::of(ctx, Duration::ZERO, drift::DEFAULT_STALE_AFTER, 2)?;
            let report = drift::report(conn, &opts)?;
            let oldest = report.drift.iter().map(|d| d.age_seconds).fold(0.0, f64::max);
            Some(Drift { pins: report.count, oldest_seconds: oldest, compared: report.compared })
        };
        let mut s = self.state();
        s.owners = owners;
        s.losses = losses;
        s.drift = drift;
        Ok(())
    }

    /// Reads what moves between rounds, on the scrapes' own connection.
    fn read_scrape(&self) -> anyhow::Result<()> {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if reader.is_none() {
            *reader = Some(crate::store::reader(&self.db)?);
        }
        let conn = reader.as_ref().expect("opened above");
        let snapshots = queries::latest_snapshots(conn, &self.cluster)?;
        let runs = queries::active_runs(conn, &self.cluster)?;
        let mut s = self.state();
        (s.snapshots, s.runs) = (snapshots, runs);
        Ok(())
    }

    /// One scrape: the ledger read for what moves, then every figure as OpenMetrics text.
    pub fn scrape(self: &Arc<Self>) -> String {
        if let Err(e) = self.read_scrape() {
            tracing::warn!("cannot read the ledger for the metrics: {e:#}");
            self.error(ErrorKind::Metrics);
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(self.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The figures, encoded at each scrape from [`State`].
#[derive(Debug)]
struct Collect(Arc<Metrics>);

/// One metric family's samples: label pairs and a value.
type Samples<V> = Vec<(Vec<(&'static str, String)>, V)>;

/// What describes a family: its name (the unit is added as a suffix, and `_total` to a counter's
/// samples), its help, its unit.
type Spec<'a> = (&'a str, &'a str, Option<Unit>);

/// Encodes a family of gauges. A family with no samples is still described, so its HELP is always
/// there.
fn gauges<V: Copy>(enc: &mut DescriptorEncoder, spec: Spec, samples: Samples<V>) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let mut m = enc.encode_descriptor(spec.0, spec.1, spec.2.as_ref(), MetricType::Gauge)?;
    for (labels, v) in &samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes a family of counters, as [`gauges`] does.
fn counters(enc: &mut DescriptorEncoder, spec: Spec, samples: Samples<u64>) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(spec.0, spec.1, spec.2.as_ref(), MetricType::Counter)?;
    for (labels, v) in &samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn parse_time(rfc3339: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok()
}

fn seconds_since_epoch(rfc3339: &str) -> Option<f64> {
    Some(parse_time(rfc3339)?.timestamp_micros() as f64 / 1e6)
}

impl prometheus_client::collector::Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.state();
        let cluster = &self.0.cluster;
        encode_pins(&mut enc, cluster, &s)?;
        encode_losses(&mut enc, &s)?;
        encode_snapshots(&mut enc, cluster, &s.snapshots)?;
        encode_watch(&mut enc, &s)?;
        encode_runs(&mut enc, &s.runs)
    }
}

/// Pins per peer and organisation, unowned pins, and the drift.
fn encode_pins(enc: &mut DescriptorEncoder, cluster: &str, s: &State) -> std::fmt::Result {
    let peer = |o: &PeerOwners| vec![("cluster", cluster.to_string()), ("peer", o.peer.clone())];
    let mut owned: Samples<i64> = Vec::new();
    for o in &s.owners {
        for (org, n) in &o.orgs {
            let mut labels = peer(o);
            labels.push(("org", org.clone()));
            owned.push((labels, *n));
        }
    }
    let help = "Pins of each organisation (metadata org) in the peer's latest complete snapshot";
    gauges(enc, ("ledger_pins", help, None), owned)?;
    let unowned = s.owners.iter().map(|o| (peer(o), o.unowned)).collect();
    let help = "Pins with no org in the peer's latest complete snapshot";
    gauges(enc, ("ledger_unowned_pins", help, None), unowned)?;
    let Some(d) = s.drift else { return Ok(()) };
    let c = || vec![("cluster", cluster.to_string())];
    let help =
        "Pins on which the latest complete snapshots of the compared peers disagree (ledger drift)";
    gauges(enc, ("ledger_drift_pins", help, None), vec![(c(), d.pins as i64)])?;
    let help = "How long the oldest disagreement between the peers has lasted (0: none)";
    let name = ("ledger_drift_oldest_age", help, Some(Unit::Seconds));
    gauges(enc, name, vec![(c(), d.oldest_seconds)])?;
    let help = "Peers whose latest complete snapshots the drift compares";
    let name = ("ledger_drift_compared_peers", help, None);
    gauges(enc, name, vec![(c(), d.compared as i64)])
}

/// The losses in the ledger and those the watch found, by who made them.
fn encode_losses(enc: &mut DescriptorEncoder, s: &State) -> std::fmt::Result {
    let by = |a: &Attribution| vec![("attribution", a.as_ref().to_string())];
    let all = s.losses.iter().map(|(a, n)| (by(a), *n)).collect();
    let help = "Losses recorded in the ledger (what ledger lost lists), by attribution";
    gauges(enc, ("ledger_losses", help, None), all)?;
    let found = s.new_losses.iter().map(|(a, n)| (by(a), *n)).collect();
    let help = "Losses first seen by this watch's snapshots, by attribution";
    counters(enc, ("ledger_watch_losses", help, None), found)
}

/// Each peer's latest snapshot: when it started, how long it took, its state and its pins.
fn encode_snapshots(
    enc: &mut DescriptorEncoder,
    cluster: &str,
    rows: &[SnapshotRow],
) -> std::fmt::Result {
    let peer = |r: &SnapshotRow| vec![("cluster", cluster.to_string()), ("peer", r.peer.clone())];
    let started: Samples<f64> =
        rows.iter().filter_map(|r| Some((peer(r), seconds_since_epoch(&r.started_at)?))).collect();
    let help = "When the peer's latest snapshot started (Unix time)";
    let name = ("ledger_last_snapshot_timestamp", help, Some(Unit::Seconds));
    gauges(enc, name, started)?;
    let took: Samples<f64> = rows
        .iter()
        .filter_map(|r| {
            let took = parse_time(r.finished_at.as_deref()?)? - parse_time(&r.started_at)?;
            Some((peer(r), took.num_microseconds()?.max(0) as f64 / 1e6))
        })
        .collect();
    let help = "How long the peer's latest snapshot took (absent while it runs)";
    let name = ("ledger_last_snapshot_duration", help, Some(Unit::Seconds));
    gauges(enc, name, took)?;
    let mut states: Samples<i64> = Vec::new();
    for r in rows {
        for state in SnapshotState::iter() {
            let mut labels = peer(r);
            labels.push(("state", state.as_ref().to_string()));
            states.push((labels, i64::from(r.state == state)));
        }
    }
    let help =
        "The state of the peer's latest snapshot: 1 for the state it is in, 0 for the others";
    gauges(enc, ("ledger_last_snapshot_state", help, None), states)?;
    let pins = rows.iter().map(|r| (peer(r), r.pins)).collect();
    let help = "Pins the peer's latest snapshot read (so far, while it runs)";
    gauges(enc, ("ledger_last_snapshot_pins", help, None), pins)
}

/// The watch's rounds and errors.
fn encode_watch(enc: &mut DescriptorEncoder, s: &State) -> std::fmt::Result {
    let help = "Rounds the watch has finished (a snapshot of each peer, then the losses and drift)";
    counters(enc, ("ledger_watch_rounds", help, None), vec![(vec![], s.rounds)])?;
    let errors =
        s.errors.iter().map(|(k, n)| (vec![("kind", k.as_ref().to_string())], *n)).collect();
    let help = "Errors the watch logged: a peer it could not read, a snapshot cut short, a failed hook, a figure it could not read";
    counters(enc, ("ledger_watch_errors", help, None), errors)
}

/// The runs in progress: targets, re-pins by outcome so far, and targets tagged per peer.
fn encode_runs(enc: &mut DescriptorEncoder, runs: &[ActiveRun]) -> std::fmt::Result {
    let run = |r: &ActiveRun| {
        vec![
            ("run", r.id.to_string()),
            ("kind", r.kind.as_ref().to_string()),
            ("org", r.org.clone().unwrap_or_default()),
        ]
    };
    let targets = runs.iter().map(|r| (run(r), r.targets)).collect();
    let help = "Targets of each run in progress (its plan's pins to re-pin)";
    gauges(enc, ("ledger_run_targets", help, None), targets)?;
    let pass = runs.iter().map(|r| (run(r), r.pass)).collect();
    let help = "The pass each run in progress is in";
    gauges(enc, ("ledger_run_pass", help, None), pass)?;
    let mut repins: Samples<u64> = Vec::new();
    for r in runs {
        let count = |o: Option<Outcome>| {
            let n: i64 = r.repins.iter().filter(|(x, _)| *x == o).map(|(_, n)| n).sum();
            u64::try_from(n).unwrap_or(0)
        };
        let outcomes = [
            Outcome::Applied,
            Outcome::Mismatch,
            Outcome::NotApplied,
            Outcome::Refused,
            Outcome::Failed,
        ];
        for (name, n) in
            outcomes.iter().map(|o| (o.as_ref(), count(Some(*o)))).chain([("pending", count(None))])
        {
            let mut labels = run(r);
            labels.push(("outcome", name.to_string()));
            repins.push((labels, n));
        }
    }
    let help = "Re-pins of each run in progress by outcome (pending: sent or about to be, not yet read back)";
    counters(enc, ("ledger_run_repins", help, None), repins)?;
    let mut tagged: Samples<i64> = Vec::new();
    for r in runs {
        for (peer, n) in &r.tagged {
            let mut labels = run(r);
            labels.push(("peer", peer.clone()));
            tagged.push((labels, *n));
        }
    }
    let help = "Targets of each run in progress that the peer showed as asked at its latest probe";
    gauges(enc, ("ledger_run_tagged_pins", help, None), tagged)
}

/// Serves `metrics` at `GET /metrics` on `listener` until the process ends, on a thread and
/// runtime of its own: a scrape is answered while the watch waits on the cluster or on SQLite.
pub fn serve_on_a_thread(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = crate::app::runtime()?;
    let listener = {
        let _entered = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || rt.block_on(serve(listener, metrics)))?;
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(m.clone(), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
            {
                tracing::debug!("metrics: connection ended: {e}");
            }
        });
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn answer(
    m: Arc<Metrics>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, kind: &str, body: String| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
        r.headers_mut().insert(http::header::CONTENT_TYPE, kind.parse().expect("a valid header"));
        Ok(r)
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found: the metrics are at /metrics\n".into());
    }
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return reply(405, "text/plain", "only GET /metrics\n".into());
    }
    // The ledger is read on a thread that may wait for SQLite, not on the watch's.
    match tokio::task::spawn_blocking(move || m.scrape()).await {
        Ok(text) => reply(200, OPENMETRICS, text),
        Err(e) => reply(500, "text/plain", format!("cannot read the metrics: {e}\n")),
    }
}
