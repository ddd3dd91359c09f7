//! Replica drift (`ledger drift`, `watch --drift-after`): the pins on which the peers of one cluster
//! disagree in their latest complete snapshots — another version, or present on some and absent on
//! others — since when, who holds what, and whether the disagreement shrinks from round to round.
//!
//! Definitions (the README's `ledger drift` section says the same):
//!
//! - The *view* at snapshot `k` holds, for each compared peer, its latest complete snapshot with an
//!   id up to `k` (a peer with none yet takes no part). A pin *disagrees* in a view when at least
//!   two peers take part and they do not all hold the same version of it (absent counts as a
//!   version). The current view is the one at the newest compared snapshot.
//! - A disagreement's *since* is the earliest snapshot `k` such that the pin disagrees in every view
//!   from `k` up to the current one: the first snapshot from which the peers have disagreed without
//!   a break (its shape may change meanwhile). Its age is now minus that snapshot's start.
//! - A *round* is a run of consecutive complete snapshots (in id order) of the compared peers in
//!   which no peer appears twice: one `snapshot --all-peers`, one `watch` round, one tag pass's
//!   verification. A round's count is the number of disagreeing pins in the view at its last
//!   snapshot.
//!
//! A peer is compared unless its latest snapshot is incomplete, it has no complete snapshot, or its
//! latest complete snapshot started more than `stale_after` before the newest peer's. Only the
//! ledger is read; the cluster is not asked.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::drift::{self as db, Interval, SeriesRow};
use crate::store::snapshots;

/// `--stale-after`'s default, and the bound `watch --drift-after` compares with.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);

/// What to compare and how to judge it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster's name (`Context::cluster_name`).
    pub cluster: String,
    /// The cluster's peers' URLs as the ledger stores them (`http://host:port/`).
    pub urls: Vec<String>,
    /// A peer whose latest complete snapshot started this much before the newest peer's is not
    /// compared.
    pub stale_after: Duration,
    /// A disagreement older than this needs attention (exit 1).
    pub older_than: Duration,
    /// How many of the latest rounds to count.
    pub rounds: usize,
    pub now: DateTime<Utc>,
}

impl Options {
    /// The options for the context's cluster (its name and peers' URLs), now by its clock.
    pub fn of(
        ctx: &crate::context::Context,
        older_than: Duration,
        stale_after: Duration,
        rounds: u64,
    ) -> anyhow::Result<Options> {
        Ok(Options {
            cluster: ctx.cluster_name()?.to_string(),
            urls: ctx.target()?.peers.iter().map(|u| u.to_string()).collect(),
            stale_after,
            older_than,
            rounds: usize::try_from(rounds).unwrap_or(usize::MAX),
            now: ctx.now(),
        })
    }
}

/// One peer of the cluster known to the ledger, and whether it was compared.
#[derive(Debug, Clone, Serialize)]
pub struct PeerState {
    pub peer: String,
    /// The URL of its latest complete snapshot.
    pub peer_url: Option<String>,
    pub compared: bool,
    /// Its latest complete snapshot.
    pub snapshot: Option<i64>,
    pub at: Option<String>,
    /// Why it was not compared.
    pub reason: Option<String>,
}

/// A snapshot and when it started.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct At {
    pub snapshot: i64,
    pub at: String,
}

/// One version of a disagreeing pin and the peers that hold it.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// xxh3-128 of the version's canonical form, hex.
    pub digest: String,
    pub name: String,
    pub metadata: serde_json::Value,
    pub cluster_timestamp: Option<String>,
    pub peers: Vec<String>,
}

/// One pin on which the compared peers disagree.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub cid: String,
    pub since: At,
    pub age_seconds: f64,
    /// Older than `--older-than`.
    pub older: bool,
    pub versions: Vec<Version>,
    /// The compared peers whose latest complete snapshot lacks the pin.
    pub lacking: Vec<String>,
}

/// One round and the pins that disagreed at its end.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Round {
    /// Counted from the compared peers' first snapshots.
    pub round: usize,
    pub first_snapshot: i64,
    pub last_snapshot: i64,
    pub at: String,
    pub peers: usize,
    pub disagreeing: usize,
}

/// How the count moved between the two latest rounds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// Fewer pins disagree than in the round before.
    Healing,
    /// More.
    Growing,
    /// As many, and some.
    Steady,
    /// None in either round.
    Agreed,
    /// Fewer than two rounds.
    Unknown,
}

impl std::fmt::Display for Trend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trend::Healing => "healing",
            Trend::Growing => "growing",
            Trend::Steady => "steady",
            Trend::Agreed => "agreed",
            Trend::Unknown => "unknown",
        })
    }
}

/// The answer of `ledger drift --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub at: String,
    pub older_than: String,
    pub stale_after: String,
    /// The cluster's peers the ledger holds snapshots of.
    pub known: usize,
    pub compared: usize,
    /// Every peer known to the ledger was compared (and there are at least two).
    pub every_peer: bool,
    pub peers: Vec<PeerState>,
    pub drift: Vec<Disagreement>,
    pub count: usize,
    /// Disagreements older than `older_than`.
    pub older: usize,
    pub rounds: Vec<Round>,
    pub trend: Trend,
    pub healing: bool,
}

/// The drift of the cluster `opts.cluster`, from the ledger alone.
pub fn report(conn: &rusqlite::Connection, opts: &Options) -> anyhow::Result<Report> {
    report_by(conn, opts, Scan::Candidates)
}

/// Which pins [`report_by`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Those that can disagree in a view of the rounds counted ([`db::candidates`]), when every
    /// compared peer's series is of the cluster `opts.cluster`; otherwise every pin.
    Candidates,
    /// Every pin of the compared peers.
    #[cfg_attr(not(test), allow(dead_code))]
    Every,
}

/// [`report`], reading the pins `scan` says.
fn report_by(conn: &rusqlite::Connection, opts: &Options, scan: Scan) -> anyhow::Result<Report> {
    let rows = db::cluster_series(conn, &opts.cluster, &opts.urls)?;
    if rows.is_empty() {
        anyhow::bail!(
            "the ledger holds no snapshot of a peer of the cluster {:?}; `ledger snapshot --all-peers` takes one of each",
            opts.cluster
        );
    }
    let (peers, compared) = choose(&rows, opts.stale_after)?;
    let bounds: Vec<(i64, i64)> = compared.iter().map(|(s, upto, _)| (*s, *upto)).collect();
    let all = db::complete_snapshots(conn, &bounds)?;
    let timeline = Timeline::new(&compared, &all);
    let spans = round_spans(&timeline, &all);
    let window: Vec<i64> =
        spans.iter().rev().take(opts.rounds.max(1)).rev().map(|r| r.last).collect();
    let mut counts = vec![0usize; window.len()];
    let mut found: Vec<Found> = Vec::new();
    let series: Vec<i64> = compared.iter().map(|c| c.0).collect();
    let of_cluster =
        compared.iter().all(|c| rows.iter().any(|r| r.id == c.0 && r.cluster == opts.cluster));
    let each = |cid_id, intervals: &[db::Interval]| {
        let pin = timeline.pin(intervals);
        for (n, k) in counts.iter_mut().zip(&window) {
            *n += usize::from(timeline.disagrees_at(&pin, *k));
        }
        if let Some(now) = timeline.now
            && timeline.disagrees_at(&pin, now)
        {
            let since = timeline.since(&pin, now).unwrap_or(now);
            found.push(Found { cid_id, since, versions: timeline.versions_now(&pin) });
        }
        Ok(())
    };
    match (scan, window.first().and_then(|&k| timeline.earliest_read(k))) {
        (Scan::Candidates, Some(from)) if of_cluster => {
            let cids = db::candidates(conn, &opts.cluster, &series, from)?;
            db::for_each_of(conn, &series, &cids, each)?;
        }
        _ => db::for_each_pin(conn, &series, each)?,
    }
    let starts: HashMap<i64, &str> = all.iter().map(|(id, _, at)| (*id, at.as_str())).collect();
    let mut drift = Vec::with_capacity(found.len());
    for f in found {
        drift.push(disagreement(conn, opts, &compared, &starts, &f)?);
    }
    drift.sort_by(|a, b| (a.since.snapshot, &a.cid).cmp(&(b.since.snapshot, &b.cid)));
    let rounds = numbered_rounds(&spans, &window, &counts);
    Ok(assemble(opts, peers, compared.len(), drift, rounds))
}

/// The report's summary fields around the disagreements and rounds.
fn assemble(
    opts: &Options,
    peers: Vec<PeerState>,
    compared: usize,
    drift: Vec<Disagreement>,
    rounds: Vec<Round>,
) -> Report {
    let trend = trend(&rounds);
    let known = peers.len();
    Report {
        cluster: opts.cluster.clone(),
        at: opts.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        older_than: crate::ids::format_duration(opts.older_than),
        stale_after: crate::ids::format_duration(opts.stale_after),
        known,
        compared,
        every_peer: compared == known && compared >= 2,
        peers,
        count: drift.len(),
        older: drift.iter().filter(|d| d.older).count(),
        drift,
        rounds,
        trend,
        healing: trend == Trend::Healing,
    }
}

/// The trend between the two latest rounds.
pub fn trend(rounds: &[Round]) -> Trend {
    match rounds {
        [.., a, b] if b.disagreeing < a.disagreeing => Trend::Healing,
        [.., a, b] if b.disagreeing > a.disagreeing => Trend::Growing,
        [.., _, b] if b.disagreeing > 0 => Trend::Steady,
        [.., _, _] => Trend::Agreed,
        _ => Trend::Unknown,
    }
}

/// A time stored in the ledger.
fn parse_time(at: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(at)
        .with_context(|| format!("the ledger holds a time that is not RFC 3339: {at:?}"))?
        .with_timezone(&Utc))
}

/// A compared peer: its series, its latest complete snapshot, its ID.
type Compared = (i64, i64, String);

/// A disagreeing pin as found in the scan: its id, since snapshot, and each compared peer's
/// version now (`None`: lacks it).
struct Found {
    cid_id: i64,
    since: i64,
    versions: Vec<Option<Vec<u8>>>,
}

/// Which peers are compared: the peers as reported, and the compared ones.
fn choose(
    rows: &[SeriesRow],
    stale_after: Duration,
) -> anyhow::Result<(Vec<PeerState>, Vec<Compared>)> {
    let mut newest: Option<DateTime<Utc>> = None;
    for r in rows {
        if let Some((_, at, _)) = &r.complete {
            let t = parse_time(at)?;
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let mut peers = Vec::new();
    let mut compared = Vec::new();
    for r in rows {
        let reason = match (&r.latest, &r.complete) {
            (_, None) => Some("it has no complete snapshot".to_string()),
            (Some((id, state, at, err)), Some((c, ..))) if id > c => Some(format!(
                "its latest snapshot {id} ({at}) is {state}: {}",
                err.as_deref().unwrap_or("no reason recorded")
            )),
            (_, Some((c, at, _))) => match newest {
                Some(n) if n.signed_duration_since(parse_time(at)?) > stale => Some(format!(
                    "its latest complete snapshot {c} ({at}) started more than {} before the newest peer's (--stale-after)",
                    crate::ids::format_duration(stale_after)
                )),
                _ => None,
            },
        };
        let complete = r.complete.as_ref();
        if reason.is_none()
            && let Some((c, ..)) = complete
        {
            compared.push((r.id, *c, r.peer.clone()));
        }
        peers.push(PeerState {
            peer: r.peer.clone(),
            peer_url: complete.map(|c| c.2.clone()),
            compared: reason.is_none(),
            snapshot: complete.map(|c| c.0),
            at: complete.map(|c| c.1.clone()),
            reason,
        });
    }
    Ok((peers, compared))
}

/// One disagreement as reported: the CID, the since snapshot and age, and the versions by peer.
fn disagreement(
    conn: &rusqlite::Connection,
    opts: &Options,
    compared: &[Compared],
    starts: &HashMap<i64, &str>,
    found: &Found,
) -> anyhow::Result<Disagreement> {
    let Found { cid_id, since, versions: now } = found;
    let (cid_id, since) = (*cid_id, *since);
    let at = starts.get(&since).map(|s| s.to_string()).unwrap_or_default();
    let age = opts.now.signed_duration_since(parse_time(&at)?);
    let age_seconds = age.num_milliseconds() as f64 / 1000.0;
    let older = age.to_std().is_ok_and(|a| a > opts.older_than);
    let mut by: BTreeMap<&[u8], Vec<String>> = BTreeMap::new();
    let mut lacking = Vec::new();
    for ((_, _, peer), v) in compared.iter().zip(now) {
        match v {
            Some(d) => by.entry(d.as_slice()).or_default().push(peer.clone()),
            None => lacking.push(peer.clone()),
        }
    }
    let mut cid = String::new();
    let mut versions = Vec::with_capacity(by.len());
    for (digest, peers) in by {
        let row = snapshots::version(conn, cid_id, digest)?;
        cid = row.cid.clone();
        let metadata = match &row.metadata {
            Some(m) => serde_json::from_str(m).unwrap_or(serde_json::Value::String(m.clone())),
            None => serde_json::json!({}),
        };
        versions.push(Version {
            digest: hex(digest),
            name: row.name,
            metadata,
            cluster_timestamp: row.cluster_timestamp,
            peers,
        });
    }
    if cid.is_empty() {
        cid = crate::store::drift::cid(conn, cid_id)?;
    }
    versions.sort_by(|a, b| b.peers.len().cmp(&a.peers.len()).then(a.digest.cmp(&b.digest)));
    Ok(Disagreement {
        cid,
        since: At { snapshot: since, at },
        age_seconds,
        older,
        versions,
        lacking,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A round's snapshots: the first and last ids, when the first started, and how many peers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    first: i64,
    last: i64,
    at: String,
    peers: usize,
}

/// The rounds of the compared peers' complete snapshots (`all`, oldest first).
fn round_spans(t: &Timeline, all: &[(i64, i64, String)]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    for (id, series, at) in all {
        let Some(&s) = t.index.get(series) else { continue };
        match spans.last_mut() {
            Some(span) if !members.contains(&s) => {
                span.last = *id;
                span.peers += 1;
            }
            _ => {
                members.clear();
                spans.push(Span { first: *id, last: *id, at: at.clone(), peers: 1 });
            }
        }
        members.push(s);
    }
    spans
}

/// The rounds of the window, numbered from the first round, with their counts.
fn numbered_rounds(spans: &[Span], window: &[i64], counts: &[usize]) -> Vec<Round> {
    let skip = spans.len() - window.len();
    spans
        .iter()
        .enumerate()
        .skip(skip)
        .zip(counts)
        .map(|((i, s), n)| Round {
            round: i + 1,
            first_snapshot: s.first,
            last_snapshot: s.last,
            at: s.at.clone(),
            peers: s.peers,
            disagreeing: *n,
        })
        .collect()
}

/// One interval of a pin, its series by index among the compared ones.
#[derive(Debug, Clone)]
struct Obs {
    series: usize,
    first: i64,
    last: Option<i64>,
    digest: Vec<u8>,
}

/// The compared peers' complete snapshots, per peer, for evaluating views.
struct Timeline {
    /// Per compared series (by index): its complete snapshot ids, ascending.
    snaps: Vec<Vec<i64>>,
    /// Series id → index.
    index: HashMap<i64, usize>,
    /// The current view: the newest compared snapshot.
    now: Option<i64>,
}

impl Timeline {
    fn new(compared: &[Compared], all: &[(i64, i64, String)]) -> Timeline {
        let index: HashMap<i64, usize> =
            compared.iter().enumerate().map(|(i, c)| (c.0, i)).collect();
        let mut snaps = vec![Vec::new(); compared.len()];
        for (id, series, _) in all {
            if let Some(v) = index.get(series).and_then(|&i| snaps.get_mut(i)) {
                v.push(*id);
            }
        }
        let now = all.iter().map(|a| a.0).max();
        Timeline { snaps, index, now }
    }

    /// A pin's intervals in the compared series.
    fn pin(&self, intervals: &[Interval]) -> Vec<Obs> {
        intervals
            .iter()
            .filter_map(|i| {
                Some(Obs {
                    series: *self.index.get(&i.series)?,
                    first: i.first,
                    last: i.last,
                    digest: i.digest.clone(),
                })
            })
            .collect()
    }

    /// The earliest snapshot that a view from `k` on reads: each series' latest up to `k`, or its
    /// first when it has none yet.
    fn earliest_read(&self, k: i64) -> Option<i64> {
        (0..self.snaps.len())
            .filter_map(|s| self.latest_at(s, k).or_else(|| self.snaps[s].first().copied()))
            .min()
    }

    /// Series `s`'s latest complete snapshot up to `k`.
    fn latest_at(&self, s: usize, k: i64) -> Option<i64> {
        let v = self.snaps.get(s)?;
        let i = v.partition_point(|&x| x <= k);
        i.checked_sub(1).and_then(|i| v.get(i)).copied()
    }

    /// The version (digest, `None`: absent) series `s` holds in its snapshot `l`.
    fn version_in(pin: &[Obs], s: usize, l: i64) -> Option<&[u8]> {
        pin.iter()
            .find(|o| o.series == s && o.first <= l && o.last.is_none_or(|x| x >= l))
            .map(|o| o.digest.as_slice())
    }

    /// Whether the pin disagrees in the view at `k`.
    fn disagrees_at(&self, pin: &[Obs], k: i64) -> bool {
        let mut seen: Option<Option<&[u8]>> = None;
        for s in 0..self.snaps.len() {
            let Some(l) = self.latest_at(s, k) else { continue };
            let v = Self::version_in(pin, s, l);
            match seen {
                None => seen = Some(v),
                Some(w) if w != v => return true,
                Some(_) => {}
            }
        }
        false
    }

    /// The snapshots at which the pin's view can change: each peer's first snapshot, each
    /// interval's first, and the snapshot after each interval's last. Ascending, once each.
    fn breakpoints(&self, pin: &[Obs]) -> Vec<i64> {
        let mut b: Vec<i64> = self.snaps.iter().filter_map(|v| v.first().copied()).collect();
        for o in pin {
            b.push(o.first);
            if let Some(l) = o.last
                && let Some(v) = self.snaps.get(o.series)
                && let Some(next) = v.get(v.partition_point(|&x| x <= l))
            {
                b.push(*next);
            }
        }
        b.sort_unstable();
        b.dedup();
        b
    }

    /// The earliest snapshot from which the pin has disagreed in every view up to `now`.
    fn since(&self, pin: &[Obs], now: i64) -> Option<i64> {
        let mut since = None;
        for b in self.breakpoints(pin).into_iter().rev().filter(|&b| b <= now) {
            if !self.disagrees_at(pin, b) {
                break;
            }
            since = Some(b);
        }
        since
    }

    /// Each compared series' version of the pin in its latest complete snapshot.
    fn versions_now(&self, pin: &[Obs]) -> Vec<Option<Vec<u8>>> {
        (0..self.snaps.len())
            .map(|s| {
                let l = self.snaps.get(s).and_then(|v| v.last().copied())?;
                Self::version_in(pin, s, l).map(<[u8]>::to_vec)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two peers (series 10 and 20) snapshotted in rounds: 1,2 · 3,4 · 5,6.
    fn timeline() -> Timeline {
        let compared = vec![(10, 5, "a".to_string()), (20, 6, "b".to_string())];
        let all: Vec<(i64, i64, String)> =
            (1..=6).map(|i| (i, if i % 2 == 1 { 10 } else { 20 }, format!("t{i}"))).collect();
        Timeline::new(&compared, &all)
    }

    fn obs(series: usize, first: i64, last: Option<i64>, d: u8) -> Obs {
        Obs { series, first, last, digest: vec![d] }
    }

    #[test]
    fn a_pin_both_peers_hold_alike_never_disagrees() {
        let t = timeline();
        let pin = [obs(0, 1, None, 1), obs(1, 2, None, 1)];
        assert!(!t.disagrees_at(&pin, 6));
        // In the view at 1 only peer a takes part: no disagreement with one peer.
        assert!(!t.disagrees_at(&pin, 1));
    }

    #[test]
    fn since_is_the_first_snapshot_of_the_unbroken_disagreement() {
        let t = timeline();
        // a changes the pin at 3 (version 2), b still holds version 1 at 4 and 6.
        let pin = [obs(0, 1, Some(1), 1), obs(0, 3, None, 2), obs(1, 2, None, 1)];
        assert!(t.disagrees_at(&pin, 3) && t.disagrees_at(&pin, 6));
        assert!(!t.disagrees_at(&pin, 2));
        assert_eq!(t.since(&pin, 6), Some(3));
        // b catches up at 6: no disagreement now.
        let healed =
            [obs(0, 1, Some(1), 1), obs(0, 3, None, 2), obs(1, 2, Some(4), 1), obs(1, 6, None, 2)];
        assert!(!t.disagrees_at(&healed, 6));
        assert!(t.disagrees_at(&healed, 5));
    }

    #[test]
    fn a_pin_one_peer_lacks_disagrees_from_the_snapshot_that_showed_it() {
        let t = timeline();
        // Only b holds it, from snapshot 4.
        let pin = [obs(1, 4, None, 7)];
        assert_eq!(t.since(&pin, 6), Some(4));
        assert_eq!(t.versions_now(&pin), vec![None, Some(vec![7])]);
        // a vanished it after 3 while b kept it: absent on a from 5.
        let pin = [obs(0, 1, Some(3), 1), obs(1, 2, None, 1)];
        assert_eq!(t.since(&pin, 6), Some(5));
    }

    #[test]
    fn a_changing_disagreement_keeps_its_since() {
        let t = timeline();
        // a: v1 until 1, v2 from 3, v3 from 5; b: v1 throughout. Disagrees from 3 without a break.
        let pin =
            [obs(0, 1, Some(1), 1), obs(0, 3, Some(3), 2), obs(0, 5, None, 3), obs(1, 2, None, 1)];
        assert_eq!(t.since(&pin, 6), Some(3));
        // A break in between (b holds v2 at 4): the disagreement starts again at 5.
        let pin = [
            obs(0, 1, Some(1), 1),
            obs(0, 3, Some(3), 2),
            obs(0, 5, None, 3),
            obs(1, 2, Some(2), 1),
            obs(1, 4, None, 2),
        ];
        assert_eq!(t.since(&pin, 6), Some(5));
    }

    /// The since found through the breakpoints is the one the definition gives, view by view, on
    /// random histories of three peers (a small generator, so no dependency).
    #[test]
    fn since_through_breakpoints_is_since_by_definition() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let all: Vec<(i64, i64, String)> =
                (1..=12).map(|i| (i, 10 * (1 + next(3) as i64), String::new())).collect();
            let compared: Vec<Compared> = [10, 20, 30]
                .into_iter()
                .filter_map(|s| {
                    all.iter()
                        .filter(|a| a.1 == s)
                        .map(|a| a.0)
                        .max()
                        .map(|l| (s, l, String::new()))
                })
                .collect();
            let t = Timeline::new(&compared, &all);
            // Each series' version in each of its snapshots: 0 absent, else a digest.
            let mut pin = Vec::new();
            for (i, snaps) in t.snaps.iter().enumerate() {
                let mut open: Option<(i64, u8)> = None;
                let mut prev = None;
                for &k in snaps {
                    let v = next(3) as u8;
                    if open.is_some_and(|(_, d)| d != v) {
                        let (f, d) = open.take().unwrap();
                        pin.push(obs(i, f, prev, d));
                    }
                    if v != 0 && open.is_none() {
                        open = Some((k, v));
                    }
                    prev = Some(k);
                }
                if let Some((f, d)) = open {
                    pin.push(obs(i, f, None, d));
                }
            }
            let Some(now) = t.now else { continue };
            let mut naive = None;
            for k in (1..=now).rev() {
                if !t.disagrees_at(&pin, k) {
                    break;
                }
                naive = Some(k);
            }
            let naive = naive.filter(|_| t.disagrees_at(&pin, now));
            let found =
                Some(()).filter(|_| t.disagrees_at(&pin, now)).and_then(|_| t.since(&pin, now));
            assert_eq!(found, naive, "{pin:?} over {:?}", t.snaps);
        }
    }

    #[test]
    fn rounds_are_runs_without_a_peer_twice() {
        let t = timeline();
        let all: Vec<(i64, i64, String)> =
            (1..=6).map(|i| (i, if i % 2 == 1 { 10 } else { 20 }, format!("t{i}"))).collect();
        let spans = round_spans(&t, &all);
        let ends: Vec<(i64, i64)> = spans.iter().map(|s| (s.first, s.last)).collect();
        assert_eq!(ends, vec![(1, 2), (3, 4), (5, 6)]);
        let r = |n| Round {
            round: 1,
            first_snapshot: 1,
            last_snapshot: 2,
            at: String::new(),
            peers: 2,
            disagreeing: n,
        };
        assert_eq!(trend(&[r(3), r(1)]), Trend::Healing);
        assert_eq!(trend(&[r(1), r(3)]), Trend::Growing);
        assert_eq!(trend(&[r(2), r(2)]), Trend::Steady);
        assert_eq!(trend(&[r(0), r(0)]), Trend::Agreed);
        assert_eq!(trend(&[r(5)]), Trend::Unknown);
    }

    /// A random history of three peers of cluster "c" over the real store: pins change, vanish and
    /// come back; a peer skips rounds, one fails a snapshot, one joins late.
    struct History {
        store: crate::store::Store,
        series: Vec<i64>,
        /// held[series][pin]: the version held now (0: none).
        held: Vec<Vec<u8>>,
        previous: Vec<Option<i64>>,
        rng: rand::rngs::SmallRng,
    }

    const PINS: usize = 30;

    impl History {
        fn new(seed: u64) -> History {
            use rand::SeedableRng as _;
            let store = crate::store::Store::open_in_memory().unwrap();
            let conn = &store.conn;
            let series: Vec<i64> = ["peerA", "peerB", "peerC"]
                .iter()
                .map(|p| snapshots::series_id(conn, "c", p).unwrap())
                .collect();
            for c in 1..=PINS as i64 {
                snapshots::test_pin(conn, c, &format!("Qm{c}"));
            }
            let rng = rand::rngs::SmallRng::seed_from_u64(seed);
            History { store, series, held: vec![vec![0; PINS]; 3], previous: vec![None; 3], rng }
        }

        /// One snapshot of peer `s`: complete with the pins changed as a snapshot records them
        /// (intervals closed at the previous complete snapshot, opened at this one), or failed.
        fn snapshot(&mut self, s: usize, at: &str) {
            use rand::Rng as _;
            use rusqlite::params;
            let conn = &self.store.conn;
            let (series, prev) = (self.series[s], self.previous[s]);
            let id = snapshots::begin(conn, series, "http://127.0.0.1:1/", None, at).unwrap();
            if self.rng.random_bool(0.1) {
                let counts = snapshots::Counts::default();
                snapshots::finish(conn, id, false, prev, &counts, Some("cut")).unwrap();
                return;
            }
            for c in 0..PINS {
                let old = self.held[s][c];
                let new = match self.rng.random_range(0..10) {
                    0 => 0,
                    1 | 2 => self.rng.random_range(1..4),
                    // Mostly what another peer holds: peers converge, and sometimes do not.
                    3..6 => self.held[self.rng.random_range(0..3)][c],
                    _ if prev.is_none() => self.held[0][c],
                    _ => old,
                };
                if old == new {
                    continue;
                }
                let cid = c as i64 + 1;
                if old != 0 {
                    conn.execute(
                        "UPDATE observations SET last_snapshot = ?3
                         WHERE cid_id = ?1 AND series_id = ?2 AND last_snapshot IS NULL",
                        params![cid, series, prev],
                    )
                    .unwrap();
                }
                if new != 0 {
                    conn.execute(
                        "INSERT INTO observations (cid_id, series_id, first_snapshot, digest, line_hash)
                         VALUES (?1, ?2, ?3, ?4, X'00')",
                        params![cid, series, id, vec![new]],
                    )
                    .unwrap();
                }
                self.held[s][c] = new;
            }
            snapshots::finish(conn, id, true, prev, &snapshots::Counts::default(), None).unwrap();
            snapshots::record_disagreements(conn, id, series, prev).unwrap();
            self.previous[s] = Some(id);
        }
    }

    /// Drift read from the pins that can disagree (V9's `disagreements` and the pins changed in
    /// the rounds counted) is drift read from every pin: 40 random histories of three peers, each
    /// compared after every round with 1, 3 and 10 rounds counted; and `disagreements`, kept at
    /// each commit, is what the view gives read whole.
    #[test]
    fn drift_from_the_candidates_is_drift_from_every_pin() {
        use rand::Rng as _;
        for seed in 0..40 {
            let mut h = History::new(seed);
            for round in 0..8 {
                for s in 0..3 {
                    let joined = s < 2 || round >= 3;
                    if joined && !h.rng.random_bool(0.15) {
                        h.snapshot(s, &format!("2026-01-01T00:{round:02}:0{s}Z"));
                    }
                }
                let conn = &h.store.conn;
                let ids = |sql: &str| -> Vec<i64> {
                    let mut stmt = conn.prepare(sql).unwrap();
                    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
                };
                let kept = ids("SELECT cid_id FROM disagreements ORDER BY 1");
                let whole =
                    ids("SELECT cid_id FROM disagreeing_pins WHERE cluster = 'c' ORDER BY 1");
                assert_eq!(kept, whole, "seed {seed} round {round}: disagreements as kept");
                for rounds in [1, 3, 10] {
                    let opts = Options {
                        cluster: "c".into(),
                        urls: Vec::new(),
                        stale_after: Duration::from_secs(86_400),
                        older_than: Duration::from_secs(60),
                        rounds,
                        now: "2026-01-02T00:00:00Z".parse().unwrap(),
                    };
                    let (Ok(fast), Ok(every)) = (
                        report_by(conn, &opts, Scan::Candidates),
                        report_by(conn, &opts, Scan::Every),
                    ) else {
                        continue;
                    };
                    let (fast, every) =
                        (serde_json::to_value(fast).unwrap(), serde_json::to_value(every).unwrap());
                    assert_eq!(fast, every, "seed {seed} round {round}, {rounds} rounds");
                }
            }
        }
    }
}
