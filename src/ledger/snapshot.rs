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
use crate::store::{Store, snapshots as db};

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

struct Open {
    id: i64,
    org: Option<u32>,
    seen: bool,
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
    store: &mut Store,
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
    let mut by_line: HashMap<u128, u32> = HashMap::new();
    for o in db::open_observations(&store.conn, series)? {
        let org = o.org.as_deref().filter(|s| !s.is_empty()).map(|s| orgs.id(s));
        by_line.insert(u128::from_be_bytes(o.line_hash), open.len() as u32);
        open.push(Open { id: o.id, org, seen: false });
    }
    let fresh_ledger: bool =
        store.conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM cids)", [], |r| r.get(0))?;

    // Reading and parsing run on their own thread while this one writes to SQLite.
    let known: HashSet<u128> = by_line.keys().copied().collect();
    let (rx, reader) = spawn_reader(client.fresh()?, known);
    let first = rx.recv().unwrap_or(Msg::End(Some("the reader stopped".into())));
    if let Msg::Failed(msg) = first {
        let _ = reader.join();
        db::finish(&store.conn, snap, false, None, &db::Counts::default(), Some(&msg))?;
        report.error = Some(msg);
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let tx = store.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Deferred interval changes, applied only if the stream completes.
    let mut new_obs: Vec<(i64, i64, u128)> = Vec::new();
    let mut close: Vec<i64> = Vec::new();
    let mut rehash: Vec<(i64, u128)> = Vec::new();
    let mut handled: HashSet<i64> = HashSet::new();
    let mut new_cids: HashSet<i64> = HashSet::new();
    // What was read, for a partial observation if the stream breaks.
    let mut read_fast: Vec<i64> = Vec::new();
    let mut read_slow: Vec<(i64, i64)> = Vec::new();
    let (mut n_new, mut n_changed) = (0i64, 0i64);
    let mut unowned = 0i64;
    let mut last_tick = Instant::now();
    let mut outcome: Option<String> = None;

    let mut msg = first;
    loop {
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
                    let o = &mut open[by_line[&hash] as usize];
                    if !o.seen {
                        o.seen = true;
                        match o.org {
                            Some(org) => orgs.counts[org as usize] += 1,
                            None => unowned += 1,
                        }
                        read_fast.push(o.id);
                        continue;
                    }
                    // The same line twice in one stream: treat the second like any other line.
                    match CanonicalPin::from_line(&line) {
                        Ok(p) => (hash, p),
                        Err(e) => {
                            report.pins -= 1;
                            outcome = Some(bad_line(report.pins + 1, &e, &line));
                            break;
                        }
                    }
                }
                Item::Parsed { hash, pin } => (hash, *pin),
                Item::Bad { error } => {
                    report.pins -= 1;
                    outcome = Some(error);
                    break;
                }
            };
            match pin.org() {
                Some(org) => {
                    let i = orgs.id(org);
                    orgs.counts[i as usize] += 1;
                }
                None => unowned += 1,
            }
            let (cid_id, fresh) = if fresh_ledger {
                (db::insert_cid(&tx, &pin.cid)?, true)
            } else {
                let before: Option<i64> = tx
                    .prepare_cached("SELECT id FROM cids WHERE cid = ?1")?
                    .query_row([&pin.cid], |r| r.get(0))
                    .ok();
                match before {
                    Some(id) => (id, false),
                    None => (db::insert_cid(&tx, &pin.cid)?, true),
                }
            };
            let version = db::version_id(&tx, cid_id, &pin, fresh)?;
            read_slow.push((cid_id, version));
            let current = if fresh { None } else { db::open_observation_of(&tx, series, cid_id)? };
            match current {
                Some((obs, _, digest)) if digest == pin.digest() => {
                    // The same version served as other bytes (another zone, another server version).
                    if handled.insert(obs) {
                        rehash.push((obs, hash));
                    }
                }
                Some((obs, _, _)) => {
                    if handled.insert(obs) {
                        close.push(obs);
                        new_obs.push((cid_id, version, hash));
                        n_changed += 1;
                    }
                }
                None => {
                    if new_cids.insert(cid_id) {
                        new_obs.push((cid_id, version, hash));
                        n_new += 1;
                    }
                }
            }
        }
        if outcome.is_some() {
            break;
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
    tracing::debug!(pins = report.pins, seconds = started.elapsed().as_secs_f64(), "stream read");
    let failure = outcome;
    let mut counts = db::Counts { pins: report.pins, new: n_new, changed: n_changed, vanished: 0 };
    match &failure {
        None => {
            let vanished: Vec<i64> =
                open.iter().filter(|o| !o.seen && !handled.contains(&o.id)).map(|o| o.id).collect();
            counts.vanished = vanished.len() as i64;
            if let Some(prev) = previous {
                for obs in close.iter().chain(&vanished) {
                    db::close_observation(&tx, *obs, prev)?;
                }
            }
            for (obs, h) in &rehash {
                db::update_line_hash(&tx, *obs, &h.to_be_bytes())?;
            }
            for (cid_id, version, h) in &new_obs {
                db::open_observation(&tx, series, *cid_id, *version, snap, &h.to_be_bytes())?;
            }
        }
        Some(_) => {
            let mut from_obs = tx.prepare_cached(
                "INSERT OR REPLACE INTO partial_observations (snapshot_id, cid_id, version_id)
                 SELECT ?1, cid_id, version_id FROM observations WHERE id = ?2",
            )?;
            for obs in &read_fast {
                from_obs.execute(rusqlite::params![snap, obs])?;
            }
            drop(from_obs);
            for (cid_id, version) in &read_slow {
                db::add_partial(&tx, snap, *cid_id, *version)?;
            }
        }
    }
    db::finish(&tx, snap, failure.is_none(), previous, &counts, failure.as_deref())?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "intervals written");
    tx.commit()?;
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
    known: HashSet<u128>,
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
                if known.contains(&hash) {
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
