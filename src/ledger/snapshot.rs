//! Taking a snapshot: stream one peer's `GET /allocations` into the ledger as changes against the
//! series' open intervals.
//!
//! A line whose exact bytes were served last time (its xxh3-128 matches an open interval) is unchanged
//! and costs a hash lookup: no parsing, no write. Any other line is parsed into its canonical form and
//! compared with the pin's open version. Interval changes (new, changed, vanished) are applied only
//! once the stream has ended with an empty `X-Stream-Error` trailer; a stream that breaks keeps what it
//! read as a partial observation and changes no interval, so an incomplete snapshot is never evidence
//! that a pin vanished. All of it happens in one transaction per snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client, StreamOutcome};
use crate::context::Context;
use crate::store::Store;
use crate::store::snapshots::{self as db, ObsKey};

/// What a snapshot found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: i64,
    pub cluster: String,
    pub peer: String,
    pub peer_url: String,
    pub complete: bool,
    pub pins: i64,
    /// Since the previous complete snapshot of this peer (`None` for an incomplete snapshot).
    pub new: Option<i64>,
    pub changed: Option<i64>,
    pub vanished: Option<i64>,
    pub previous_id: Option<i64>,
    pub orgs: BTreeMap<String, i64>,
    pub unowned: i64,
    pub error: Option<String>,
    pub seconds: f64,
}

/// Options of one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Tie the snapshot to a run and pass (tag verification).
    pub run: Option<(i64, i64)>,
}

/// An open interval of the series, as the repeat path needs it (kept small: a million of them).
struct Open {
    key: ObsKey,
    /// Interned org, or `NO_ORG`.
    org: u32,
    seen: bool,
}

const NO_ORG: u32 = u32::MAX;

/// A set of small non-negative integers (row ids), one bit each.
#[derive(Default)]
struct BitSet(Vec<u64>);

impl BitSet {
    /// Adds `n`; false if it was there already.
    fn insert(&mut self, n: i64) -> bool {
        let n = n.max(0) as usize;
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

/// The line hashes of the open intervals, found by hash: an open-addressing table of slot numbers
/// over the hashes themselves (xxh3 output is uniform, so its low bits index the table directly).
/// For a million intervals: 16 MiB of hashes and 8 MiB of table, where a `HashMap` would take 34 MiB.
#[derive(Default)]
struct LineIndex {
    hashes: Vec<u128>,
    table: Vec<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

impl LineIndex {
    fn build(hashes: Vec<u128>) -> LineIndex {
        let size = (hashes.len() * 2).next_power_of_two().max(16);
        let mut idx = LineIndex { table: vec![EMPTY; size], mask: size - 1, hashes };
        for (slot, h) in idx.hashes.iter().enumerate() {
            let mut i = (*h as u64 as usize) & idx.mask;
            while idx.table[i] != EMPTY {
                i = (i + 1) & idx.mask;
            }
            idx.table[i] = slot as u32;
        }
        idx
    }

    /// The slot whose line hash is `h`.
    fn get(&self, h: u128) -> Option<u32> {
        if self.hashes.is_empty() {
            return None;
        }
        let mut i = (h as u64 as usize) & self.mask;
        loop {
            let slot = self.table[i];
            if slot == EMPTY {
                return None;
            }
            if self.hashes[slot as usize] == h {
                return Some(slot);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Interns org names so the open-interval table stays small.
#[derive(Default)]
struct Orgs {
    names: Vec<String>,
    index: HashMap<String, u32>,
    counts: Vec<i64>,
}

impl Orgs {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        self.counts.push(0);
        i
    }
}

/// Takes one snapshot of the peer behind `client`. Errors before the stream starts (unreachable
/// peer, bad credentials) return `Err` and record nothing; once a snapshot row exists, every failure
/// is recorded in it and returned in the report.
pub async fn take(
    store: &Store,
    client: &Client,
    cluster: &str,
    opts: &Options,
    mut progress: impl FnMut(i64),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    // One writer at a time: a second snapshot waits here for the first to commit. Holding the lock,
    // any snapshot still `running` belongs to a process that died.
    let _lock = store.write_lock()?;
    db::mark_interrupted(&store.conn)?;
    let me = client.id().await?;
    let peer_url = client.base().to_string();
    let series = db::series_id(&store.conn, cluster, &me.id)?;
    let snap = db::begin(&store.conn, series, &peer_url, opts.run, &crate::store::now_text())?;
    let previous = db::latest_complete(&store.conn, series)?;
    let mut report = Report {
        id: snap,
        cluster: cluster.to_string(),
        peer: me.id.clone(),
        peer_url,
        complete: false,
        pins: 0,
        new: None,
        changed: None,
        vanished: None,
        previous_id: previous,
        orgs: BTreeMap::new(),
        unowned: 0,
        error: None,
        seconds: 0.0,
    };

    // The open intervals of this series, keyed by the line that was served for them.
    let mut orgs = Orgs::default();
    let mut open: Vec<Open> = Vec::new();
    let mut hashes: Vec<u128> = Vec::new();
    db::for_each_open(&store.conn, series, |key, hash, org| {
        let org = org.filter(|s| !s.is_empty()).map_or(NO_ORG, |s| orgs.id(s));
        hashes.push(u128::from_be_bytes(hash));
        open.push(Open { key, org, seen: false });
    })?;
    let by_line = std::sync::Arc::new(LineIndex::build(hashes));
    let fresh_ledger: bool =
        store.conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM cids)", [], |r| r.get(0))?;

    // Reading and parsing run on their own thread while this one writes to SQLite.
    let (rx, reader) = spawn_reader(client.fresh()?, by_line.clone());
    let first = rx.recv().unwrap_or(Msg::End(Some("the reader stopped".into())));
    if let Msg::Failed(msg) = first {
        let _ = reader.join();
        db::finish(&store.conn, snap, false, None, &db::Counts::default(), Some(&msg))?;
        report.error = Some(msg);
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Memory: a repeat snapshot holds its open intervals in memory (~50 bytes each), so the page cache
    // shrinks as they grow; a first snapshot gets a larger cache for its inserts. Both stay under
    // 150 MiB for a million pins.
    let cache_kib: i64 = if open.len() > 200_000 { 16 * 1024 } else { 64 * 1024 };
    store.conn.pragma_update(None, "cache_size", -cache_kib)?;
    // Every reference the writer stores comes from a row it has just written or read in this same
    // transaction; checking each one again costs a tenth of a million-pin snapshot. The checks are back
    // on for everything else once the snapshot is stored (and tests run `PRAGMA foreign_key_check`).
    store.conn.pragma_update(None, "foreign_keys", "OFF")?;
    let stored = (|| -> anyhow::Result<(Option<String>, db::Counts, i64)> {
        let tx = rusqlite::Transaction::new_unchecked(
            &store.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let mut w = db::LineWriter::new(&tx)?;
        // New intervals are opened as lines arrive (while their pages are in the cache) and removed again if
        // the stream fails; closing intervals waits until the stream is known to be whole.
        let mut close: Vec<ObsKey> = Vec::new();
        let mut rehash: Vec<(ObsKey, [u8; 16])> = Vec::new();
        let mut handled: HashSet<ObsKey> = HashSet::new();
        // CIDs already handled in this stream (ids are dense: a bit each).
        let mut cid_seen = BitSet::default();
        // Pins read through the slow path whose version did not change, for a partial observation if the
        // stream breaks (new and changed ones are the intervals this snapshot opened).
        let mut read_same: Vec<(i64, [u8; 16])> = Vec::new();
        let (mut n_new, mut n_changed) = (0i64, 0i64);
        let mut unowned = 0i64;
        let mut last_tick = Instant::now();
        let outcome: Option<String>;

        let mut msg = first;
        'stream: loop {
            let items = match msg {
                Msg::Batch(items) => items,
                Msg::End(o) => {
                    outcome = o;
                    break;
                }
                Msg::Failed(e) => {
                    outcome = Some(e);
                    break;
                }
            };
            for item in items {
                report.pins += 1;
                let (hash, pin) = match item {
                    Item::Known { hash, line } => {
                        if let Some(i) = by_line.get(hash) {
                            let o = &mut open[i as usize];
                            if !o.seen {
                                o.seen = true;
                                match o.org {
                                    NO_ORG => unowned += 1,
                                    org => orgs.counts[org as usize] += 1,
                                }
                                continue;
                            }
                        }
                        // The same line twice in one stream: parse it like any other.
                        match CanonicalPin::from_line(&line) {
                            Ok(p) => (hash, p),
                            Err(e) => {
                                report.pins -= 1;
                                outcome = Some(bad_line(report.pins + 1, &e, &line));
                                break 'stream;
                            }
                        }
                    }
                    Item::Parsed { hash, pin } => (hash, *pin),
                    Item::Bad { error } => {
                        report.pins -= 1;
                        outcome = Some(error);
                        break 'stream;
                    }
                };
                match pin.org() {
                    Some(org) => {
                        let i = orgs.id(org);
                        orgs.counts[i as usize] += 1;
                    }
                    None => unowned += 1,
                }
                let (cid_id, fresh) = w.cid_id(&pin.cid, fresh_ledger)?;
                if !cid_seen.insert(cid_id) {
                    continue; // the same CID twice in one stream: the first one counts
                }
                let version = w.ensure_version(cid_id, pin)?;
                let hash = hash.to_be_bytes();
                let current = if fresh { None } else { w.open_of(series, cid_id)? };
                match current {
                    Some((obs, digest)) if digest == version => {
                        // The same version served as other bytes (another zone, another server version).
                        if handled.insert(obs) {
                            rehash.push((obs, hash));
                        }
                        read_same.push((cid_id, version));
                    }
                    Some((obs, _)) => {
                        if handled.insert(obs) {
                            close.push(obs);
                            w.open_observation(series, cid_id, &version, snap, &hash)?;
                            n_changed += 1;
                        }
                    }
                    None => {
                        w.open_observation(series, cid_id, &version, snap, &hash)?;
                        n_new += 1;
                    }
                }
            }
            if last_tick.elapsed() > Duration::from_millis(100) {
                progress(report.pins);
                last_tick = Instant::now();
            }
            msg = rx.recv().unwrap_or(Msg::End(Some("the reader stopped".into())));
        }
        drop(rx); // a reader still sending (after a bad line) stops at its next send
        let _ = reader.join();
        progress(report.pins);
        tracing::debug!(
            pins = report.pins,
            seconds = started.elapsed().as_secs_f64(),
            "stream read"
        );
        w.flush()?; // every new version and interval is in the transaction from here on
        let failure = outcome;

        let mut counts =
            db::Counts { pins: report.pins, new: n_new, changed: n_changed, vanished: 0 };
        match &failure {
            None => {
                let vanished: Vec<ObsKey> = open
                    .iter()
                    .filter(|o| !o.seen && !handled.contains(&o.key))
                    .map(|o| o.key)
                    .collect();
                counts.vanished = vanished.len() as i64;
                if let Some(prev) = previous {
                    for obs in close.iter().chain(&vanished) {
                        db::close_observation(&tx, series, *obs, prev)?;
                    }
                }
                for (obs, h) in &rehash {
                    db::update_line_hash(&tx, series, *obs, h)?;
                }
            }
            Some(_) => {
                for o in open.iter().filter(|o| o.seen) {
                    db::add_partial_from(&tx, snap, series, o.key)?;
                }
                for (cid_id, version) in &read_same {
                    db::add_partial(&tx, snap, *cid_id, version)?;
                }
                db::withdraw_opened(&tx, series, snap)?;
            }
        }
        drop(w);
        db::finish(&tx, snap, failure.is_none(), previous, &counts, failure.as_deref())?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "intervals written");
        tx.commit()?;
        Ok((failure, counts, unowned))
    })();
    store.conn.pragma_update(None, "foreign_keys", "ON")?;
    let (failure, counts, unowned) = stored?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "committed");

    report.complete = failure.is_none();
    if report.complete {
        report.new = Some(counts.new);
        report.changed = Some(counts.changed);
        report.vanished = Some(counts.vanished);
    }
    report.error = failure;
    report.unowned = unowned;
    report.orgs = orgs
        .names
        .iter()
        .zip(&orgs.counts)
        .filter(|(_, c)| **c > 0)
        .map(|(n, c)| (n.clone(), *c))
        .collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One snapshot of the peer at `url`, with a spinner on stderr while it reads.
pub async fn of_peer(ctx: &Context, url: &url::Url) -> anyhow::Result<Report> {
    let client = ctx.client(url)?;
    let pb = ctx.progress(None);
    pb.set_message(format!("snapshot of {url}"));
    let report = take(ctx.store()?, &client, ctx.cluster_name()?, &Options::default(), |n| {
        pb.set_position(n as u64)
    })
    .await;
    pb.finish_and_clear();
    report
}

/// One line of the stream, as the reader thread hands it over.
enum Item {
    /// Its bytes were served last time for an open interval: no parsing needed.
    Known {
        hash: u128,
        line: bytes::Bytes,
    },
    Parsed {
        hash: u128,
        pin: Box<CanonicalPin>,
    },
    /// A line that is not a pin: the snapshot stops here.
    Bad {
        error: String,
    },
}

enum Msg {
    Batch(Vec<Item>),
    /// The stream ended: `None` when whole, else why not.
    End(Option<String>),
    /// The request failed before any item.
    Failed(String),
}

fn bad_line(n: i64, e: &str, line: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(line).chars().take(120).collect();
    format!("malformed NDJSON at line {n}: {e}: {shown}")
}

/// Reads `GET /allocations` on a thread of its own (with its own runtime and connections), hashing
/// every line and parsing those not in `known`, in batches.
fn spawn_reader(
    client: Client,
    known: std::sync::Arc<LineIndex>,
) -> (Receiver<Msg>, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel::<Msg>(16);
    let handle = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Msg::Failed(format!("cannot start the reader: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let mut stream = match client.allocations().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Msg::Failed(e.to_string()));
                    return;
                }
            };
            let url = stream.url().to_string();
            let mut batch = Vec::with_capacity(1024);
            let mut n = 0i64;
            while let Some(line) = stream.next_line().await {
                n += 1;
                let hash = xxhash_rust::xxh3::xxh3_128(&line);
                if known.get(hash).is_some() {
                    batch.push(Item::Known { hash, line });
                } else {
                    match CanonicalPin::from_line(&line) {
                        Ok(pin) => batch.push(Item::Parsed { hash, pin: Box::new(pin) }),
                        Err(e) => {
                            let error = format!("{} from {url}", bad_line(n, &e, &line));
                            batch.push(Item::Bad { error });
                            let _ = tx.send(Msg::Batch(std::mem::take(&mut batch)));
                            return;
                        }
                    }
                }
                if batch.len() == 1024 && tx.send(Msg::Batch(std::mem::take(&mut batch))).is_err() {
                    return;
                }
            }
            if !batch.is_empty() && tx.send(Msg::Batch(batch)).is_err() {
                return;
            }
            let end = match stream.outcome() {
                Some(StreamOutcome::Complete) => None,
                Some(StreamOutcome::TrailerError(e)) => Some(format!(
                    "the cluster reported an error in the X-Stream-Error trailer: {e}"
                )),
                Some(StreamOutcome::Broken(e)) => Some(format!("the stream broke: {e}")),
                None => Some("the stream ended in an unknown state".to_string()),
            };
            let _ = tx.send(Msg::End(end));
        });
    });
    (rx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_finds_every_hash_and_nothing_else() {
        let mut x: u64 = 0x1234_5678;
        let mut hashes = Vec::new();
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hashes.push(((x as u128) << 64) | (x.rotate_left(7) as u128));
        }
        hashes.push(0);
        hashes.push(u128::MAX);
        let idx = LineIndex::build(hashes.clone());
        for (slot, h) in hashes.iter().enumerate() {
            assert_eq!(idx.get(*h), Some(slot as u32));
        }
        assert_eq!(idx.get(12345), None);
        assert!(LineIndex::default().get(1).is_none());
    }
}
