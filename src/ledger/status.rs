//! Pin status over time: a status reading (`ledger snapshot --status`) streams one peer's own
//! tracker status of its pins (`GET /pins?local=true`) into the ledger as intervals per peer series,
//! and `ledger drift --status` lists the pins stuck in `pin_error`, `pin_queued` or `pinning` on a
//! peer for at least a given time, from those intervals alone.
//!
//! A reading is taken after a snapshot, under the same write lock discipline, in one transaction:
//! a stream that breaks, or a line that is not a status, leaves the reading `incomplete` and changes
//! no interval, so a cut stream never ends a status. A crash or a signal leaves the reading row,
//! marked incomplete (at once on a signal, by the next writer after a crash).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::cluster::{Client, StreamOutcome};
use crate::store::Store;
use crate::store::status::{self as db, StatusLine};

/// The statuses `drift --status` lists: a pin the peer should hold and does not, yet.
pub const STUCK: [&str; 3] = ["pin_error", "pin_queued", "pinning"];

/// What one status reading found.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub id: i64,
    pub snapshot_id: i64,
    pub complete: bool,
    /// Status lines read.
    pub entries: i64,
    /// Pins per status (a complete reading).
    pub statuses: BTreeMap<String, i64>,
    /// Since the previous complete reading of this peer (`None` for an incomplete reading).
    pub previous_id: Option<i64>,
    pub opened: Option<i64>,
    pub closed: Option<i64>,
    pub error: Option<String>,
    pub seconds: f64,
}

/// Reads the statuses of the peer behind `client` (whose ID is `peer`) after snapshot `snapshot`.
/// A peer that fails the request, a cut stream or a malformed line: the reading is recorded
/// incomplete and returned with its error. An error of the ledger itself records the reading
/// incomplete with the reason and is returned.
pub async fn read(
    store: &Store,
    client: &Client,
    snapshot: i64,
    peer: &str,
) -> anyhow::Result<Reading> {
    let started = Instant::now();
    let _lock = store.write_lock()?;
    let conn = &store.conn;
    db::mark_interrupted(conn)?;
    let series = db::series_of_snapshot(conn, snapshot)?
        .with_context(|| format!("there is no snapshot {snapshot}"))?;
    let id = db::begin(conn, snapshot, series, &crate::store::now_text())?;
    let mut reading = Reading {
        id,
        snapshot_id: snapshot,
        complete: false,
        entries: 0,
        statuses: BTreeMap::new(),
        previous_id: None,
        opened: None,
        closed: None,
        error: None,
        seconds: 0.0,
    };
    let guard = Unfinished { conn, id, settled: false };
    match store_stream(conn, client, series, peer, &mut reading).await {
        Ok(()) => guard.settle(),
        Err(e) => return Err(guard.failed(e, reading.entries)),
    }
    reading.seconds = started.elapsed().as_secs_f64();
    Ok(reading)
}

/// The stream into one transaction: the lines, then (a whole stream) the intervals, then how the
/// reading ended.
async fn store_stream(
    conn: &Connection,
    client: &Client,
    series: i64,
    peer: &str,
    reading: &mut Reading,
) -> anyhow::Result<()> {
    let mut stream = match client.local_statuses().await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot read the statuses: {e}");
            db::finish(conn, reading.id, false, None, &db::Counts::default(), Some(&msg))?;
            reading.error = Some(msg);
            return Ok(());
        }
    };
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut lines = db::LineSet::new(&tx)?;
    let mut failure = None;
    while let Some(line) = stream.next_line().await {
        match parse_line(&line, peer) {
            Ok(l) => lines.add(&l)?,
            Err(e) => {
                let shown: String = String::from_utf8_lossy(&line).chars().take(120).collect();
                let n = reading.entries + 1;
                failure =
                    Some(format!("malformed status at line {n} of {}: {e}: {shown}", stream.url()));
                break;
            }
        }
        reading.entries += 1;
    }
    let failure = failure.or_else(|| stream_failure(stream.outcome()));
    let mut counts = db::Counts { entries: reading.entries, ..Default::default() };
    if failure.is_none() {
        let previous = db::latest_complete(&tx, series)?;
        counts = lines.apply(series, reading.id, previous)?;
        reading.statuses = lines.by_status()?.into_iter().collect();
        (reading.previous_id, reading.opened, reading.closed) =
            (previous, Some(counts.opened), Some(counts.closed));
        reading.entries = counts.entries;
    }
    drop(lines);
    let previous = reading.previous_id;
    db::finish(&tx, reading.id, failure.is_none(), previous, &counts, failure.as_deref())?;
    tx.commit()?;
    reading.complete = failure.is_none();
    reading.error = failure;
    Ok(())
}

/// Why a stream was not whole (`None`: it was).
fn stream_failure(outcome: Option<&StreamOutcome>) -> Option<String> {
    match outcome {
        Some(StreamOutcome::Complete) => None,
        Some(StreamOutcome::TrailerError(e)) => {
            Some(format!("the cluster reported an error in the X-Stream-Error trailer: {e}"))
        }
        Some(StreamOutcome::Broken(e)) => Some(format!("the stream broke: {e}")),
        None => Some("the stream ended in an unknown state".to_string()),
    }
}

/// One line of `GET /pins?local=true` as read: the fields ledger keeps, the rest skipped.
#[derive(serde::Deserialize)]
struct Info<'a> {
    #[serde(borrow)]
    cid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    peer_map: BTreeMap<std::borrow::Cow<'a, str>, Entry<'a>>,
}

/// A peer's entry of a GlobalPinInfo (PinInfoShort).
#[derive(serde::Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    attempt_count: Option<i64>,
}

/// One line of `GET /pins?local=true`: a GlobalPinInfo whose `peer_map` holds this peer's entry
/// (keyed by its ID; a map with one entry under another key is taken as the peer's own).
pub fn parse_line(line: &[u8], peer: &str) -> Result<StatusLine, String> {
    let info: Info = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if info.cid.is_empty() {
        return Err("an empty \"cid\"".into());
    }
    let entry = match info.peer_map.get(peer) {
        Some(e) => e,
        None if info.peer_map.len() == 1 => {
            info.peer_map.values().next().ok_or("an empty \"peer_map\"")?
        }
        None => return Err(format!("no entry for peer {peer} in \"peer_map\"")),
    };
    let status = entry.status.as_deref().filter(|s| !s.is_empty());
    let status = status.ok_or("no \"status\" in the peer's entry")?;
    Ok(StatusLine {
        cid: info.cid.into_owned(),
        status: status.to_string(),
        error: entry.error.as_deref().unwrap_or("").to_string(),
        status_at: entry.timestamp.as_deref().and_then(utc_time),
        attempt_count: entry.attempt_count.unwrap_or(0),
    })
}

/// A cluster time (RFC 3339 in the server's zone) as UTC RFC 3339; `None` for the zero time or
/// anything else that is not a time.
fn utc_time(s: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?.to_utc();
    (chrono::Datelike::year(&t) > 1).then(|| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A reading row not yet finished: [`Unfinished::settle`] once it is, [`Unfinished::failed`] on an
/// error of the ledger; dropped otherwise (a signal), it records the reading incomplete itself.
struct Unfinished<'c> {
    conn: &'c Connection,
    id: i64,
    settled: bool,
}

impl Unfinished<'_> {
    fn settle(mut self) {
        self.settled = true;
    }

    fn failed(mut self, e: anyhow::Error, entries: i64) -> anyhow::Error {
        self.settled = true;
        let why = format!("the ledger could not store the statuses: {}", crate::error::chain(&e));
        match self.record(&why, entries) {
            Ok(()) => e.context(format!("cannot store status reading {} (recorded incomplete)", self.id)),
            Err(e2) => e.context(format!(
                "status reading {} could not be recorded incomplete either ({e2}); the next snapshot marks it",
                self.id
            )),
        }
    }

    fn record(&self, why: &str, entries: i64) -> rusqlite::Result<()> {
        let counts = db::Counts { entries, ..Default::default() };
        db::finish(self.conn, self.id, false, None, &counts, Some(why))
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let why = if std::thread::panicking() {
            "stopped by a defect (a panic)"
        } else {
            crate::ledger::snapshot::INTERRUPTED
        };
        if let Err(e) = self.record(why, 0) {
            tracing::error!(reading = self.id, "cannot record the status reading incomplete: {e}");
        }
    }
}

/// A pin stuck on a peer: its current status, since the first reading that saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Stuck {
    #[serde(flatten)]
    pub current: db::CurrentStatus,
    /// From the first reading that saw the status to the latest, which still sees it.
    pub stuck_seconds: f64,
}

/// What `drift --status` found.
#[derive(Debug, Clone, Serialize)]
pub struct StuckReport {
    pub older_than_seconds: f64,
    pub statuses: [&'static str; 3],
    pub stuck: Vec<Stuck>,
    pub count: usize,
    /// Each peer's latest complete status reading: what the listing is evidence of.
    pub readings: Vec<db::LatestReading>,
}

/// The pins whose status has been one of [`STUCK`] on a peer in every complete reading for at
/// least `older_than` (from the first reading that saw it to the peer's latest). A ledger with no
/// complete reading at all is an error: it knows nothing about statuses.
pub fn stuck(store: &Store, older_than: Duration) -> anyhow::Result<StuckReport> {
    let conn = &store.conn;
    let readings = db::latest_readings(conn)?;
    if readings.is_empty() {
        anyhow::bail!(
            "the ledger holds no pin statuses: no complete status reading yet. `ledger snapshot --status` (or `--all-peers --status`) reads them"
        );
    }
    let mut stuck = Vec::new();
    for current in db::current(conn, &STUCK)? {
        let secs = seconds_between(&current.since, &current.last_seen);
        if secs >= older_than.as_secs_f64() {
            stuck.push(Stuck { current, stuck_seconds: secs });
        }
    }
    let count = stuck.len();
    Ok(StuckReport {
        older_than_seconds: older_than.as_secs_f64(),
        statuses: STUCK,
        stuck,
        count,
        readings,
    })
}

/// Seconds from `a` to `b` (stored RFC 3339 times); 0 when either cannot be read.
fn seconds_between(a: &str, b: &str) -> f64 {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (t(a), t(b)) {
        (Some(a), Some(b)) => ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_is_the_peers_own_entry() {
        let line = br#"{"cid":"QmX","name":"","allocations":[],"origins":[],"created":"2026-01-01T00:00:00Z","metadata":null,"peer_map":{"12D3KooWA":{"peername":"peer0","ipfs_peer_id":"x","status":"pin_error","timestamp":"2026-01-01T01:00:00+01:00","error":"context canceled","attempt_count":2,"priority_pin":true}}}"#;
        let l = parse_line(line, "12D3KooWA").unwrap();
        assert_eq!(l.cid, "QmX");
        assert_eq!((l.status.as_str(), l.error.as_str()), ("pin_error", "context canceled"));
        assert_eq!(l.status_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(l.attempt_count, 2);
        assert_eq!(parse_line(line, "other").unwrap().status, "pin_error");
        for bad in [&b"{"[..], br#"{"cid":"QmX"}"#, br#"{"cid":"","peer_map":{}}"#, b"[]"] {
            assert!(parse_line(bad, "p").is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let zero = br#"{"cid":"QmX","peer_map":{"p":{"status":"pinned","timestamp":"0001-01-01T00:00:00Z"}}}"#;
        assert_eq!(parse_line(zero, "p").unwrap().status_at, None);
    }

    #[test]
    fn seconds_between_stored_times() {
        assert_eq!(seconds_between("2026-01-01T00:00:00Z", "2026-01-01T00:10:00.500Z"), 600.5);
        assert_eq!(seconds_between("x", "2026-01-01T00:00:00Z"), 0.0);
    }
}
