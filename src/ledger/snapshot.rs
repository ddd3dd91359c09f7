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
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};
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
    /// The status reading taken with the snapshot (`snapshot --status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::ledger::status::Reading>,
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
    seen: bool,
}

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
/// is recorded in it: a broken stream in the report, an error of the ledger itself (a full disk) as
/// `incomplete` with the reason before the error is returned, SIGTERM/SIGINT as `incomplete`,
/// "interrupted by a signal", at once.
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
    crate::store::status::mark_interrupted(&store.conn)?;
    let me = client.id().await?;
    let conn = &store.conn;
    let mut snapshot = Pipeline::begin(conn, client, cluster, &me.id, opts, started)?;
    let unstored = Unstored { conn, id: snapshot.snap, settled: false };
    match snapshot.store(conn, client, &mut progress) {
        Ok(end) => {
            unstored.settle();
            Ok(match end {
                Stored::NotStarted(msg) => snapshot.failed_to_start(msg),
                Stored::Stream(failure, counts) => snapshot.into_report(failure, counts),
            })
        }
        Err(e) => Err(unstored.failed(e, snapshot.report.pins)),
    }
}

/// Why a snapshot stopped when SIGTERM or SIGINT arrived, as recorded.
pub const INTERRUPTED: &str = "interrupted by a signal";

/// A snapshot row not yet finished: [`Unstored::settle`] once it is, [`Unstored::failed`] on an
/// error of the ledger; dropped otherwise (its future dropped on a signal, a panic), it records the
/// snapshot `incomplete` itself.
struct Unstored<'c> {
    conn: &'c Connection,
    id: i64,
    settled: bool,
}

impl Unstored<'_> {
    fn settle(mut self) {
        self.settled = true;
    }

    /// Records the snapshot incomplete with `e` as the reason (the transaction that failed has been
    /// rolled back); if even that fails, the error says so.
    fn failed(mut self, e: anyhow::Error, pins: i64) -> anyhow::Error {
        self.settled = true;
        let why = format!("the ledger could not store the snapshot: {}", crate::error::chain(&e));
        match self.record(&why, pins) {
            Ok(()) => e.context(format!("cannot store snapshot {} (recorded incomplete)", self.id)),
            Err(e2) => e.context(format!(
                "snapshot {} could not be recorded incomplete either ({e2}); the next snapshot marks it",
                self.id
            )),
        }
    }

    fn record(&self, why: &str, pins: i64) -> rusqlite::Result<()> {
        let counts = db::Counts { pins, ..Default::default() };
        db::finish(self.conn, self.id, false, None, &counts, Some(why))
    }
}

impl Drop for Unstored<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let why =
            if std::thread::panicking() { "stopped by a defect (a panic)" } else { INTERRUPTED };
        match self.record(why, 0) {
            Ok(()) => tracing::warn!(snapshot = self.id, "snapshot recorded incomplete: {why}"),
            Err(e) => {
                tracing::error!(snapshot = self.id, "cannot record the snapshot incomplete: {e}")
            }
        }
    }
}

/// How the stream went into the ledger.
enum Stored {
    /// The request failed before any line (recorded incomplete, with why).
    NotStarted(String),
    /// Stored: why the stream was not whole (`None`: it was), and the counts.
    Stream(Option<String>, db::Counts),
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

/// One snapshot on its way through [`take`]'s steps: [`Pipeline::begin`] records it,
/// [`Pipeline::load_open_intervals`] reads what the series holds, [`Pipeline::write`] streams the
/// lines into one transaction ([`Pipeline::read_stream`], a line at a time through the fast path
/// [`Pipeline::seen_again`] or the slow path [`Pipeline::compare`]) and then closes intervals
/// ([`Pipeline::close_intervals`]) or withdraws them ([`Pipeline::withdraw`]);
/// [`Pipeline::into_report`] says what it found.
struct Pipeline {
    started: Instant,
    series: i64,
    snap: i64,
    /// The previous complete snapshot of the series.
    previous: Option<i64>,
    /// Counted as the stream is read: pins, owners and unowned pins.
    report: Report,
    /// The open intervals of the series; a slot of `by_line` indexes this.
    open: Vec<Open>,
    /// The open intervals, keyed by the line that was served for them.
    by_line: Arc<LineIndex>,
    orgs: Orgs,
    /// The ledger had no CIDs at all when the snapshot began.
    fresh_ledger: bool,
}

/// What the slow path found, applied once the stream has ended.
#[derive(Default)]
struct Changes {
    /// Intervals of changed pins, closed only once the stream is known to be whole (the new
    /// intervals are opened as lines arrive, while their pages are in the cache, and removed again
    /// if the stream fails).
    close: Vec<ObsKey>,
    /// Intervals whose version was served as other bytes, with the new line hash.
    rehash: Vec<(ObsKey, [u8; 16])>,
    /// Open intervals the slow path has dealt with.
    handled: HashSet<ObsKey>,
    /// CIDs already handled in this stream (ids are dense: a bit each).
    cid_seen: BitSet,
    /// Pins read through the slow path whose version did not change, for a partial observation if
    /// the stream breaks (new and changed ones are the intervals this snapshot opened).
    read_same: Vec<(i64, [u8; 16])>,
    new: i64,
    changed: i64,
}

impl Pipeline {
    /// Step 1: records the snapshot (state `running`) in the series of (`cluster`, `peer`).
    fn begin(
        conn: &Connection,
        client: &Client,
        cluster: &str,
        peer: &str,
        opts: &Options,
        started: Instant,
    ) -> anyhow::Result<Pipeline> {
        let peer_url = client.base().to_string();
        let series = db::series_id(conn, cluster, peer)?;
        let snap = db::begin(conn, series, &peer_url, opts.run, &crate::store::now_text())?;
        let previous = db::latest_complete(conn, series)?;
        let report = Report {
            id: snap,
            cluster: cluster.to_string(),
            peer: peer.to_string(),
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
            status: None,
        };
        Ok(Pipeline {
            started,
            series,
            snap,
            previous,
            report,
            open: Vec::new(),
            by_line: Arc::default(),
            orgs: Orgs::default(),
            fresh_ledger: false,
        })
    }

    /// Step 2: the open intervals of the series, keyed by the line that was served for them.
    fn load_open_intervals(&mut self, conn: &Connection) -> anyhow::Result<()> {
        // As many as the previous snapshot read, so that neither vector doubles past its need.
        let expected = match self.previous {
            Some(p) => db::get(conn, p)?.map_or(0, |s| s.pins.max(0) as usize),
            None => 0,
        };
        let open = &mut self.open;
        open.reserve_exact(expected);
        let mut hashes: Vec<u128> = Vec::with_capacity(expected);
        db::for_each_open(conn, self.series, |key, hash| {
            hashes.push(u128::from_be_bytes(hash));
            open.push(Open { key, seen: false });
        })?;
        self.by_line = Arc::new(LineIndex::build(hashes));
        self.fresh_ledger = db::is_fresh_ledger(conn)?;
        Ok(())
    }

    /// Steps 2 to 4: the open intervals, then the stream into one transaction (on a thread of its
    /// own, the reader reads and parses while this one writes to SQLite).
    fn store(
        &mut self,
        conn: &Connection,
        client: &Client,
        progress: &mut impl FnMut(i64),
    ) -> anyhow::Result<Stored> {
        self.load_open_intervals(conn)?;
        let (rx, reader) = spawn_reader(client.fresh()?, self.by_line.clone());
        let first = next_msg(&rx);
        if let Msg::Failed(msg) = first {
            let _ = reader.join();
            db::finish(conn, self.snap, false, None, &db::Counts::default(), Some(&msg))?;
            return Ok(Stored::NotStarted(msg));
        }
        db::size_cache_for_snapshot(conn, self.open.len())?;
        let checks = db::ForeignKeysOff::new(conn)?;
        let stored = self.write(conn, first, rx, reader, progress);
        checks.restore()?;
        let (failure, counts) = stored?;
        tracing::debug!(seconds = self.started.elapsed().as_secs_f64(), "committed");
        Ok(Stored::Stream(failure, counts))
    }

    /// The report of a snapshot whose request failed before any line (recorded by
    /// [`Pipeline::store`]).
    fn failed_to_start(mut self, msg: String) -> Report {
        self.report.error = Some(msg);
        self.report.seconds = self.started.elapsed().as_secs_f64();
        self.report
    }

    /// Step 3: the whole stream, in one transaction: every line, then the interval changes (a whole
    /// stream) or the partial observation (a broken one), then how the snapshot ended. Returns why
    /// the stream was not whole (`None`: it was) and the counts stored.
    fn write(
        &mut self,
        conn: &Connection,
        first: Msg,
        rx: Receiver<Msg>,
        reader: JoinHandle<()>,
        progress: &mut impl FnMut(i64),
    ) -> anyhow::Result<(Option<String>, db::Counts)> {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let mut w = db::LineWriter::new(&tx)?;
        let mut changes = Changes::default();
        let failure = self.read_stream(&mut w, &mut changes, first, &rx, progress)?;
        drop(rx); // a reader still sending (after a bad line) stops at its next send
        if failure.as_deref() != Some(INTERRUPTED) {
            let _ = reader.join(); // (after a signal it may be waiting on the peer: left to end)
        }
        progress(self.report.pins);
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::debug!(pins = self.report.pins, seconds, "stream read");
        self.count_seen_owners(&tx)?;
        w.flush()?; // every new version and interval is in the transaction from here on
        let counts = match &failure {
            None => self.close_intervals(&tx, &changes)?,
            Some(_) => self.withdraw(&tx, &changes)?,
        };
        drop(w);
        db::finish(&tx, self.snap, failure.is_none(), self.previous, &counts, failure.as_deref())?;
        tracing::debug!(seconds = self.started.elapsed().as_secs_f64(), "intervals written");
        if failure.is_none() {
            self.record(&tx)?;
        }
        tx.commit()?;
        Ok((failure, counts))
    }

    /// What a complete snapshot records for the post-incident queries, in its transaction: its
    /// pins per owner, and the values it lost and the owners that changed against the series'
    /// previous complete snapshot.
    fn record(&self, tx: &Connection) -> rusqlite::Result<()> {
        let orgs = self.orgs.names.iter().map(|o| Some(o.as_str())).zip(&self.orgs.counts);
        let owners = orgs.chain([(None, &self.report.unowned)]).filter(|(_, n)| **n > 0);
        db::record_owners(tx, self.snap, owners)?;
        let pins = db::record_disagreements(tx, self.snap, self.series, self.previous)?;
        tracing::debug!(pins, "pins on which the peers disagree, of those this snapshot changed");
        if self.previous.is_some() {
            let values = db::record_losses(tx, self.snap)?;
            let owners = db::record_owner_changes(tx, self.snap)?;
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::debug!(values, owners, seconds, "losses and owner changes recorded");
        }
        Ok(())
    }

    /// Reads the batches from `first` on until the stream ends or a line is not a pin: why it is not
    /// whole, `None` when it is.
    fn read_stream(
        &mut self,
        w: &mut db::LineWriter<'_>,
        changes: &mut Changes,
        first: Msg,
        rx: &Receiver<Msg>,
        progress: &mut impl FnMut(i64),
    ) -> anyhow::Result<Option<String>> {
        let mut last_tick = Instant::now();
        let mut msg = first;
        loop {
            let items = match msg {
                Msg::Batch(items) => items,
                Msg::End(outcome) => return Ok(outcome),
                Msg::Failed(e) => return Ok(Some(e)),
            };
            for item in items {
                if let Some(error) = self.line(w, changes, item)? {
                    return Ok(Some(error));
                }
            }
            if last_tick.elapsed() > Duration::from_millis(100) {
                progress(self.report.pins);
                last_tick = Instant::now();
            }
            msg = next_msg(rx);
        }
    }

    /// One line, through the fast path when it was served last time for an open interval not seen
    /// yet in this stream, else through the slow path. `Some(error)`: it is not a pin.
    #[inline]
    fn line(
        &mut self,
        w: &mut db::LineWriter<'_>,
        changes: &mut Changes,
        item: Item,
    ) -> anyhow::Result<Option<String>> {
        self.report.pins += 1;
        let (hash, pin) = match item {
            Item::Known { hash, line } => {
                if self.seen_again(hash) {
                    return Ok(None);
                }
                // The same line twice in one stream: parse it like any other.
                match CanonicalPin::from_line(&line) {
                    Ok(p) => (hash, p),
                    Err(e) => {
                        self.report.pins -= 1;
                        return Ok(Some(bad_line(self.report.pins + 1, &e, &line)));
                    }
                }
            }
            Item::Parsed { hash, pin } => (hash, *pin),
            Item::Bad { error } => {
                self.report.pins -= 1;
                return Ok(Some(error));
            }
        };
        self.compare(w, changes, hash, pin)?;
        Ok(None)
    }

    /// The fast path: the line of an open interval, served again. Marks the interval seen (its
    /// owner is counted once the stream has ended: [`Pipeline::count_seen_owners`]); false when no
    /// open interval not yet seen has this line.
    #[inline]
    fn seen_again(&mut self, hash: u128) -> bool {
        let Some(i) = self.by_line.get(hash) else { return false };
        let o = &mut self.open[i as usize];
        if o.seen {
            return false;
        }
        o.seen = true;
        true
    }

    /// Counts the owners of the pins the fast path saw again, looking up the fewer: the previous
    /// complete snapshot's owners (whose pins are the open intervals) less those of the intervals
    /// it did not see, or the owner of every interval it saw (also when those owners do not add up
    /// to the open intervals). A stream cut early costs as few lookups as a whole one.
    fn count_seen_owners(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(previous) = self.previous else { return Ok(()) };
        let before = db::owners_of(conn, previous)?;
        let whole = before.iter().map(|(_, n)| n).sum::<i64>() == self.open.len() as i64;
        let seen = self.open.iter().filter(|o| o.seen).count();
        let take_off = whole && self.open.len() - seen <= seen;
        if take_off {
            for (org, n) in &before {
                self.count_owner(org.as_deref(), *n);
            }
        }
        let mut looked_up: HashMap<Option<String>, i64> = HashMap::new();
        for o in self.open.iter().filter(|o| o.seen != take_off) {
            *looked_up.entry(db::open_owner(conn, self.series, o.key)?).or_default() += 1;
        }
        let sign = if take_off { -1 } else { 1 };
        for (org, n) in looked_up {
            self.count_owner(org.as_deref(), sign * n);
        }
        Ok(())
    }

    /// Adds `n` pins of `org` (`None`: unowned).
    fn count_owner(&mut self, org: Option<&str>, n: i64) {
        match org.filter(|s| !s.is_empty()) {
            Some(org) => {
                let i = self.orgs.id(org);
                self.orgs.counts[i as usize] += n;
            }
            None => self.report.unowned += n,
        }
    }

    /// The slow path: a parsed pin, compared with the open version of its CID. A new or changed
    /// version opens an interval now; closing the old one waits for the end of the stream.
    fn compare(
        &mut self,
        w: &mut db::LineWriter<'_>,
        changes: &mut Changes,
        hash: u128,
        pin: CanonicalPin,
    ) -> anyhow::Result<()> {
        let (cid_id, fresh) = w.cid_id(&pin.cid, self.fresh_ledger)?;
        if !changes.cid_seen.insert(cid_id) {
            return Ok(()); // the same CID twice in one stream: the first one counts
        }
        self.count_owner(pin.org(), 1);
        let version = w.ensure_version(cid_id, pin)?;
        let hash = hash.to_be_bytes();
        let (series, snap) = (self.series, self.snap);
        let current = if fresh { None } else { w.open_of(series, cid_id)? };
        match current {
            Some((obs, digest)) if digest == version => {
                // The same version served as other bytes (another zone, another server version).
                if changes.handled.insert(obs) {
                    changes.rehash.push((obs, hash));
                }
                changes.read_same.push((cid_id, version));
            }
            Some((obs, _)) => {
                if changes.handled.insert(obs) {
                    changes.close.push(obs);
                    w.open_observation(series, cid_id, &version, snap, &hash)?;
                    changes.changed += 1;
                }
            }
            None => {
                w.open_observation(series, cid_id, &version, snap, &hash)?;
                changes.new += 1;
            }
        }
        Ok(())
    }

    /// Step 4 of a whole stream: the intervals of changed and vanished pins end at the previous
    /// complete snapshot; versions served as other bytes get their new line hash.
    fn close_intervals(&self, tx: &Connection, changes: &Changes) -> anyhow::Result<db::Counts> {
        let vanished: Vec<ObsKey> = self
            .open
            .iter()
            .filter(|o| !o.seen && !changes.handled.contains(&o.key))
            .map(|o| o.key)
            .collect();
        if let Some(prev) = self.previous {
            for obs in changes.close.iter().chain(&vanished) {
                db::close_observation(tx, self.series, *obs, prev)?;
            }
        }
        for (obs, h) in &changes.rehash {
            db::update_line_hash(tx, self.series, *obs, h)?;
        }
        Ok(self.counts(changes, vanished.len() as i64))
    }

    /// Step 4 of a broken stream: what it read is kept as a partial observation, and the intervals
    /// it opened are withdrawn; no interval closes.
    fn withdraw(&self, tx: &Connection, changes: &Changes) -> anyhow::Result<db::Counts> {
        for o in self.open.iter().filter(|o| o.seen) {
            db::add_partial_from(tx, self.snap, self.series, o.key)?;
        }
        for (cid_id, version) in &changes.read_same {
            db::add_partial(tx, self.snap, *cid_id, version)?;
        }
        db::withdraw_opened(tx, self.series, self.snap)?;
        Ok(self.counts(changes, 0))
    }

    fn counts(&self, changes: &Changes, vanished: i64) -> db::Counts {
        db::Counts { pins: self.report.pins, new: changes.new, changed: changes.changed, vanished }
    }

    /// Step 5: the report of the stored snapshot.
    fn into_report(self, failure: Option<String>, counts: db::Counts) -> Report {
        let mut report = self.report;
        report.complete = failure.is_none();
        if report.complete {
            report.new = Some(counts.new);
            report.changed = Some(counts.changed);
            report.vanished = Some(counts.vanished);
        }
        report.error = failure;
        report.orgs =
            self.orgs.names.into_iter().zip(self.orgs.counts).filter(|(_, c)| *c > 0).collect();
        report.seconds = self.started.elapsed().as_secs_f64();
        report
    }
}

/// The reader's next message; a reader gone without a word ends the stream as broken, and
/// SIGTERM/SIGINT ends it as [`INTERRUPTED`] (checked every 50 ms while the reader is silent).
fn next_msg(rx: &Receiver<Msg>) -> Msg {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        if crate::context::stop_requested() {
            return Msg::End(Some(INTERRUPTED.into()));
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(msg) => return msg,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Msg::End(Some("the reader stopped".into()));
            }
        }
    }
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
fn spawn_reader(client: Client, known: Arc<LineIndex>) -> (Receiver<Msg>, JoinHandle<()>) {
    let (tx, rx) = sync_channel::<Msg>(16);
    let handle = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Msg::Failed(format!("cannot start the reader: {e}")));
                return;
            }
        };
        rt.block_on(read_allocations(client, known, tx));
    });
    (rx, handle)
}

/// The stream's next line. While it waits, lines read before it are handed over after 100 ms, so
/// that the writer holds what a stream that stalls has sent (kept if the snapshot is interrupted).
async fn next_line(
    stream: &mut crate::cluster::AllocStream,
    batch: &mut Vec<Item>,
    tx: &SyncSender<Msg>,
) -> Option<bytes::Bytes> {
    if let Some(line) = stream.buffered_line() {
        return Some(line);
    }
    if !batch.is_empty() {
        match tokio::time::timeout(Duration::from_millis(100), stream.next_line()).await {
            Ok(line) => return line,
            Err(_) => {
                let _ = tx.send(Msg::Batch(std::mem::take(batch)));
            }
        }
    }
    stream.next_line().await
}

/// The reader thread's work: sends the lines in batches of 1024, then how the stream ended. Stops
/// at the first line that is not a pin, or when the receiver is gone.
async fn read_allocations(client: Client, known: Arc<LineIndex>, tx: SyncSender<Msg>) {
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
    while let Some(line) = next_line(&mut stream, &mut batch, &tx).await {
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
        Some(StreamOutcome::TrailerError(e)) => {
            Some(format!("the cluster reported an error in the X-Stream-Error trailer: {e}"))
        }
        Some(StreamOutcome::Broken(e)) => Some(format!("the stream broke: {e}")),
        None => Some("the stream ended in an unknown state".to_string()),
    };
    let _ = tx.send(Msg::End(end));
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
