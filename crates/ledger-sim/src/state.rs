//! The replicated pin set: one CRDT replica per peer, the delta log, and the delivery model
//! (docs/cluster-api.md §7 and §10.1 points 1–4). No HTTP here.
//!
//! Model. Every write becomes a *delta* made by one peer (its origin), numbered per origin, carrying
//! the writer's priority (its highest known height + 1) and the writer's causal context (how many
//! deltas of each origin it had applied). A peer applies a delta only after everything in its causal
//! context, fetching missing deltas from the shared log as go-ds-crdt fetches missing DAG blocks. Per
//! key the replica keeps the versions that no later write has superseded; the visible value is the one
//! with the highest priority, ties broken by the byte-greater stored value. A remove deletes only the
//! versions its writer had seen, so a concurrent re-pin survives (add wins). Because the value is a
//! pure function of the set of applied deltas, replicas that applied the same deltas are identical.
//!
//! Delivery. A committed delta is broadcast to every other peer after a delay drawn from the lag
//! range; with the drop rate it is lost instead. Every peer runs a rebroadcast tick (interval ±30%)
//! that brings each reachable peer up to its own state, as a re-announced head would. A paused peer
//! sends and receives nothing; a partition blocks deliveries between groups; a down (restarting) peer
//! receives nothing. Deliveries that meet a blocked link are lost and repaired by a later tick.
//!
//! Throughput (off unless `apply_rate` > 0). A real peer handles one broadcast at a time, walking the
//! DAG below its head and fetching each missing block from another peer (go-ds-crdt without
//! multi-head processing), so it applies others' deltas at a bounded rate, and broadcasts that
//! arrive while it is busy wait in a bounded buffer (gossipsub's subscription queue); the ones that
//! find it full are lost until a later broadcast or rebroadcast names a newer head. Here: a delivery
//! joins the peer's inbox (or is lost when `inbox` deliveries already wait), and the peer works
//! through its inbox in order, applying `apply_rate` deltas per second toward each one's target.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use imbl::{OrdMap, OrdSet};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::Digest;

use super::lazy::LazySet;
use super::pin::Pin;

/// Origin of the versions a replica starts with (seeded or loaded pins, seen by every peer).
const GENESIS: u32 = u32::MAX;

/// Settings of the delivery model.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub lag_min: Duration,
    pub lag_max: Duration,
    pub drop_rate: f64,
    pub rebroadcast: Duration,
    pub batch_size: usize,
    pub batch_age: Duration,
    pub batch_queue: usize,
    pub state_sync: Duration,
    pub seed: u64,
    /// Deltas per second a peer applies from others (0: at once, on delivery).
    pub apply_rate: f64,
    /// Deliveries a busy peer holds (with `apply_rate`); one more is lost.
    pub inbox: usize,
}

/// A version of one key's value, identified by (origin, seq, index in the delta).
#[derive(Debug, Clone)]
struct Version {
    origin: u32,
    seq: u64,
    idx: u32,
    prio: u64,
    pin: Arc<Pin>,
    /// The stored-form JSON, rendered once and shared by every replica holding this version.
    json: Arc<OnceLock<Box<[u8]>>>,
}

impl Version {
    fn json(&self) -> &[u8] {
        self.json.get_or_init(|| {
            let mut v = Vec::with_capacity(512);
            self.pin.write_stored(&mut v);
            v.into_boxed_slice()
        })
    }

    fn id(&self) -> (u32, u64, u32) {
        (self.origin, self.seq, self.idx)
    }
}

/// What a replica holds for one key.
#[derive(Debug, Clone)]
pub struct Entry {
    live: Vec<Version>,
    /// When the last put of this key reached this replica (drives the tracker statuses).
    pub applied_at: Option<(Instant, DateTime<Utc>)>,
}

impl Entry {
    /// The visible value: highest priority, then the byte-greater stored form.
    pub fn value(&self) -> &Arc<Pin> {
        &self.winner().pin
    }

    /// The visible value's stored-form JSON (no trailing newline).
    pub fn stored_json(&self) -> &[u8] {
        self.winner().json()
    }

    fn winner(&self) -> &Version {
        let mut best = &self.live[0];
        for v in &self.live[1..] {
            if v.prio > best.prio || (v.prio == best.prio && v.json() > best.json()) {
                best = v;
            }
        }
        best
    }
}

#[derive(Debug)]
enum Op {
    Put { key: Arc<str>, pin: Arc<Pin>, json: Arc<OnceLock<Box<[u8]>>> },
    Del { key: Arc<str>, versions: Vec<(u32, u64, u32)> },
}

#[derive(Debug)]
struct Delta {
    origin: u32,
    seq: u64,
    prio: u64,
    /// The writer's applied count per origin when it made this delta (its own entry is `seq - 1`).
    deps: Vec<u64>,
    ops: Vec<Op>,
}

/// A write waiting in a batch (batching mode).
#[derive(Debug)]
pub enum PendingOp {
    Put(Arc<str>, Arc<Pin>),
    Del(Arc<str>),
}

/// One peer's replica: the keys written since start (`map`), over the lazy set every replica
/// starts with (`base`, if any) less the base keys removed since (`gone`).
pub struct Replica {
    pub map: OrdMap<Arc<str>, Entry>,
    base: Option<Arc<LazySet>>,
    gone: OrdSet<Arc<str>>,
    /// Base keys neither in `map` nor in `gone`: the base pins as generated.
    base_live: u64,
    applied: Vec<u64>,
    height: u64,
    batch: Vec<PendingOp>,
    batch_deadline: Option<Instant>,
    digest: Option<String>,
}

impl Replica {
    /// What the replica holds for `key`: written since start, or a base pin as generated.
    pub fn get(&self, key: &str) -> Option<Cow<'_, Entry>> {
        if let Some(e) = self.map.get(key) {
            return Some(Cow::Borrowed(e));
        }
        let base = self.base.as_ref()?;
        let i = base.index_of(key)?;
        (!self.gone.contains(key)).then(|| Cow::Owned(genesis_entry(base, i)))
    }
    pub fn len(&self) -> usize {
        self.map.len() + self.base_live as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// A point-in-time view of the whole replica (O(1): the maps are persistent).
    pub fn view(&self) -> View {
        View { map: self.map.clone(), base: self.base.clone(), gone: self.gone.clone() }
    }

    /// Sets `key` to `e` (`None`: nothing live), keeping the base accounts.
    fn set(&mut self, key: &Arc<str>, e: Option<Entry>) {
        let in_base = self.base.as_ref().is_some_and(|b| b.index_of(key).is_some());
        let was_base_live = in_base && !self.map.contains_key(key) && !self.gone.contains(key);
        match e {
            Some(e) => {
                self.map.insert(key.clone(), e);
                self.gone.remove(key);
            }
            None => {
                self.map.remove(key);
                if in_base {
                    self.gone.insert(key.clone());
                }
            }
        }
        if was_base_live {
            self.base_live -= 1;
        }
    }
}

/// The entry of base pin `i`, as every replica starts with it.
fn genesis_entry(base: &LazySet, i: u64) -> Entry {
    genesis_of(i, base.pin(i, crate::seed::anchors()))
}

/// The entry of starting pin number `i` (seeded, loaded or generated), seen by every peer.
fn genesis_of(i: u64, pin: Pin) -> Entry {
    let v = Version {
        origin: GENESIS,
        seq: 0,
        idx: i as u32,
        prio: 1,
        pin: Arc::new(pin),
        json: Default::default(),
    };
    Entry { live: vec![v], applied_at: None }
}

/// A replica as it stood when the view was taken, read in key order a page at a time.
#[derive(Clone)]
pub struct View {
    map: OrdMap<Arc<str>, Entry>,
    base: Option<Arc<LazySet>>,
    gone: OrdSet<Arc<str>>,
}

impl View {
    /// Up to `count` entries with keys after `after` (from the first with `None`), in key order.
    pub fn page(&self, after: Option<&Arc<str>>, count: usize) -> Vec<(Arc<str>, Entry)> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        let mut written = self.map.range((from, Bound::Unbounded)).peekable();
        let mut next_base = match (&self.base, after) {
            (None, _) => u64::MAX,
            (Some(_), None) => 0,
            (Some(b), Some(k)) => first_base_after(b, k),
        };
        let mut out = Vec::with_capacity(count);
        // The next base pin, its key and pin made once (one SHA-256) however long it waits.
        let mut pending: Option<(u64, String, Pin)> = None;
        while out.len() < count {
            if pending.as_ref().is_none_or(|(i, ..)| *i != next_base)
                && let Some(b) = self.base.as_ref().filter(|b| next_base < b.n)
            {
                let (k, pin) = b.key_and_pin(next_base, crate::seed::anchors());
                pending = Some((next_base, k, pin));
            }
            let base_key = pending.as_ref().filter(|(i, ..)| *i == next_base).map(|(_, k, _)| k);
            let take_written = match (written.peek(), base_key) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some(b)) => k.as_ref() <= b.as_str(),
            };
            if take_written {
                let Some((k, e)) = written.next() else { break };
                if base_key.map(String::as_str) == Some(k.as_ref()) {
                    next_base += 1;
                }
                out.push((k.clone(), e.clone()));
            } else if let Some((i, k, pin)) = pending.take() {
                next_base += 1;
                if !self.gone.contains(k.as_str()) {
                    out.push((Arc::from(k.as_str()), genesis_of(i, pin)));
                }
            }
        }
        out
    }

    /// Every entry, in key order, read a page at a time.
    pub fn iter(&self) -> impl Iterator<Item = (Arc<str>, Entry)> + '_ {
        let mut after: Option<Arc<str>> = None;
        let mut buf = std::collections::VecDeque::new();
        let mut done = false;
        std::iter::from_fn(move || {
            if buf.is_empty() && !done {
                let page = self.page(after.as_ref(), 1024);
                match page.last() {
                    Some((k, _)) => after = Some(k.clone()),
                    None => done = true,
                }
                buf.extend(page);
            }
            buf.pop_front()
        })
    }
}

/// The first index of `base` whose key sorts after `key` (keys sort as indexes do).
fn first_base_after(base: &LazySet, key: &str) -> u64 {
    let (mut lo, mut hi) = (0u64, base.n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if base.key(mid).as_str() <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    due: Instant,
    n: u64,
    src: usize,
    dst: usize,
    /// Bring `dst` up to this applied vector.
    target: Vec<u64>,
}

/// The replicas of every peer and the network between them.
pub struct World {
    pub replicas: Vec<Replica>,
    log: Vec<Vec<Arc<Delta>>>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    n_scheduled: u64,
    pub paused: Vec<bool>,
    pub down_until: Vec<Option<Instant>>,
    /// Group index per peer when partitioned.
    pub partition: Option<Vec<usize>>,
    next_tick: Vec<Instant>,
    next_state_sync: Instant,
    /// Per peer, with `apply_rate`: delivered targets waiting to be worked through, in order.
    inbox: Vec<std::collections::VecDeque<Vec<u64>>>,
    /// Per peer, with `apply_rate`: when it next applies, when it last did, and the deltas it has
    /// earned the time to apply.
    next_apply: Vec<Option<Instant>>,
    last_work: Vec<Instant>,
    credit: Vec<f64>,
    rng: SmallRng,
    cfg: NetConfig,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    QueueFull,
}

impl World {
    /// `n` replicas that all start with `pins` (already in stored form).
    pub fn new(n: usize, pins: Vec<Pin>, cfg: NetConfig) -> World {
        World::with_base(n, pins, None, cfg)
    }

    /// `n` replicas that all start with `pins` and, when given, the lazy set `base` (never held in
    /// memory: a replica keeps only the keys written since start).
    pub fn with_base(n: usize, pins: Vec<Pin>, base: Option<LazySet>, cfg: NetConfig) -> World {
        let base = base.map(Arc::new);
        let mut map = OrdMap::new();
        for (i, pin) in pins.into_iter().enumerate() {
            let key: Arc<str> = match ledger_ids::parse_cid(&pin.cid) {
                Ok(p) => p.key.into(),
                Err(_) => continue,
            };
            map.insert(key, genesis_of(i as u64, pin));
        }
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let replicas = (0..n)
            .map(|_| Replica {
                map: map.clone(),
                base: base.clone(),
                gone: OrdSet::new(),
                base_live: base.as_ref().map_or(0, |b| b.n),
                applied: vec![0; n],
                height: 1,
                batch: Vec::new(),
                batch_deadline: None,
                digest: None,
            })
            .collect();
        let next_tick = (0..n).map(|_| now + jitter(&mut rng, cfg.rebroadcast)).collect();
        World {
            replicas,
            log: vec![Vec::new(); n],
            queue: BinaryHeap::new(),
            n_scheduled: 0,
            paused: vec![false; n],
            down_until: vec![None; n],
            partition: None,
            next_tick,
            next_state_sync: now + cfg.state_sync,
            inbox: vec![Default::default(); n],
            next_apply: vec![None; n],
            last_work: vec![now; n],
            credit: vec![0.0; n],
            rng,
            cfg,
        }
    }

    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_down(&self, p: usize, now: Instant) -> bool {
        self.down_until[p].is_some_and(|t| t > now)
    }

    /// Can a delivery go from `a` to `b` now?
    pub fn link_open(&self, a: usize, b: usize, now: Instant) -> bool {
        !self.paused[a]
            && !self.paused[b]
            && !self.is_down(b, now)
            && !self.is_down(a, now)
            && self.partition.as_ref().is_none_or(|g| g[a] == g[b])
    }

    /// A write received by peer `p`: applied at once (batching off) or queued in the batch.
    pub fn write(&mut self, p: usize, op: PendingOp, now: Instant) -> Result<(), WriteError> {
        if self.batching() {
            let r = &mut self.replicas[p];
            if r.batch.len() >= self.cfg.batch_queue {
                return Err(WriteError::QueueFull);
            }
            r.batch.push(op);
            if r.batch_deadline.is_none() {
                r.batch_deadline = Some(now + self.cfg.batch_age);
            }
            if r.batch.len() >= self.cfg.batch_size {
                self.commit(p, now);
            }
        } else {
            let ops = self.resolve(p, vec![op]);
            self.commit_ops(p, ops, now);
        }
        Ok(())
    }

    fn batching(&self) -> bool {
        self.cfg.batch_size > 0 && !self.cfg.batch_age.is_zero()
    }

    /// Turns pending operations into delta ops against `p`'s current replica.
    fn resolve(&self, p: usize, pending: Vec<PendingOp>) -> Vec<Op> {
        let mut ops = Vec::with_capacity(pending.len());
        for op in pending {
            match op {
                PendingOp::Put(key, pin) => {
                    ops.push(Op::Put { key, pin, json: Default::default() })
                }
                PendingOp::Del(key) => {
                    // Remove every version this peer has seen: those in its replica, plus the puts of
                    // this same delta that come before (they will be applied first).
                    let mut versions: Vec<(u32, u64, u32)> = self.replicas[p]
                        .get(&key)
                        .map(|e| e.live.iter().map(Version::id).collect())
                        .unwrap_or_default();
                    let seq = self.replicas[p].applied[p] + 1;
                    for (i, earlier) in ops.iter().enumerate() {
                        if let Op::Put { key: k, .. } = earlier
                            && *k == key
                        {
                            versions.push((p as u32, seq, i as u32));
                        }
                    }
                    ops.push(Op::Del { key, versions });
                }
            }
        }
        ops
    }

    /// Commits `p`'s batch now (size or age reached).
    pub fn commit(&mut self, p: usize, now: Instant) {
        let pending = std::mem::take(&mut self.replicas[p].batch);
        self.replicas[p].batch_deadline = None;
        if pending.is_empty() {
            return;
        }
        let ops = self.resolve(p, pending);
        self.commit_ops(p, ops, now);
    }

    fn commit_ops(&mut self, p: usize, ops: Vec<Op>, now: Instant) {
        let r = &self.replicas[p];
        let seq = r.applied[p] + 1;
        let delta = Arc::new(Delta {
            origin: p as u32,
            seq,
            prio: r.height + 1,
            deps: r.applied.clone(),
            ops,
        });
        self.log[p].push(delta.clone());
        self.apply(p, &delta);
        let mut target = delta.deps.clone();
        target[p] = seq;
        for dst in 0..self.n() {
            if dst == p {
                continue;
            }
            if self.cfg.drop_rate > 0.0 && self.rng.random::<f64>() < self.cfg.drop_rate {
                continue; // lost: repaired by a rebroadcast tick or a later delivery
            }
            let due = now + self.lag();
            self.schedule(due, p, dst, target.clone());
        }
    }

    fn lag(&mut self) -> Duration {
        let (a, b) = (self.cfg.lag_min, self.cfg.lag_max);
        if b <= a { a } else { self.rng.random_range(a..=b) }
    }

    fn schedule(&mut self, due: Instant, src: usize, dst: usize, target: Vec<u64>) {
        self.n_scheduled += 1;
        self.queue.push(Reverse(Scheduled { due, n: self.n_scheduled, src, dst, target }));
    }

    /// Applies one delta to replica `p` (its causal context must already be there).
    fn apply(&mut self, p: usize, d: &Delta) {
        let now = (Instant::now(), Utc::now());
        let r = &mut self.replicas[p];
        for (i, op) in d.ops.iter().enumerate() {
            match op {
                Op::Put { key, pin, json } => {
                    let v = Version {
                        origin: d.origin,
                        seq: d.seq,
                        idx: i as u32,
                        prio: d.prio,
                        pin: pin.clone(),
                        json: json.clone(),
                    };
                    let mut live = r.get(key).map(|e| e.live.clone()).unwrap_or_default();
                    // Versions the writer had seen are superseded: any later remove that sees this
                    // put sees them too.
                    live.retain(|old| {
                        !(old.origin == GENESIS
                            || (old.origin as usize) < d.deps.len()
                                && old.seq <= d.deps[old.origin as usize]
                            || (old.origin == d.origin && old.seq == d.seq))
                    });
                    live.push(v);
                    r.set(key, Some(Entry { live, applied_at: Some(now) }));
                }
                Op::Del { key, versions } => {
                    if let Some(e) = r.get(key) {
                        let mut e = e.into_owned();
                        e.live.retain(|v| !versions.contains(&v.id()));
                        r.set(key, (!e.live.is_empty()).then_some(e));
                    }
                }
            }
        }
        r.applied[d.origin as usize] = d.seq;
        r.height = r.height.max(d.prio);
        r.digest = None;
    }

    /// Brings replica `p` up to `target` (applied count per origin), in causal order.
    fn catch_up(&mut self, p: usize, target: &[u64]) {
        self.catch_up_at_most(p, target, u64::MAX);
    }

    /// [`Self::catch_up`], applying at most `limit` deltas; returns how many it applied.
    fn catch_up_at_most(&mut self, p: usize, target: &[u64], limit: u64) -> u64 {
        let mut done = 0;
        for (o, &want) in target.iter().enumerate() {
            while self.replicas[p].applied[o] < want {
                let next = self.log[o][self.replicas[p].applied[o] as usize].clone();
                let mut stack = vec![next];
                while let Some(d) = stack.last().cloned() {
                    if self.replicas[p].applied[d.origin as usize] >= d.seq {
                        stack.pop();
                        continue;
                    }
                    let missing =
                        (0..self.n()).find(|&o2| self.replicas[p].applied[o2] < d.deps[o2]);
                    match missing {
                        Some(o2) => {
                            let dep = self.log[o2][self.replicas[p].applied[o2] as usize].clone();
                            stack.push(dep);
                        }
                        None => {
                            if done == limit {
                                return done;
                            }
                            self.apply(p, &d);
                            done += 1;
                            stack.pop();
                        }
                    }
                }
            }
        }
        done
    }

    /// A delivery reaches `p`: applied at once, or (with `apply_rate`) queued in its inbox, or
    /// lost when the inbox is full.
    fn deliver(&mut self, p: usize, target: Vec<u64>, now: Instant) {
        if self.cfg.apply_rate <= 0.0 {
            self.catch_up(p, &target);
            return;
        }
        if self.inbox[p].len() >= self.cfg.inbox.max(1) {
            return; // lost: a later broadcast or a rebroadcast tick names a newer head
        }
        self.inbox[p].push_back(target);
        if self.next_apply[p].is_none() {
            // Idle until now: the first delta goes at once.
            self.next_apply[p] = Some(now);
            self.last_work[p] = now;
            self.credit[p] = 1.0;
        }
    }

    /// With `apply_rate`: `p` works through its inbox, one delta per `1 / apply_rate` seconds since
    /// it last worked.
    fn work(&mut self, p: usize, now: Instant) {
        let rate = self.cfg.apply_rate;
        self.credit[p] += now.saturating_duration_since(self.last_work[p]).as_secs_f64() * rate;
        self.last_work[p] = now;
        while let Some(front) = self.inbox[p].front() {
            if !self.lacks(p, front) {
                self.inbox[p].pop_front();
                continue;
            }
            let budget = self.credit[p].floor() as u64;
            if budget == 0 {
                break;
            }
            let front = front.clone();
            let done = self.catch_up_at_most(p, &front, budget);
            self.credit[p] -= done as f64;
        }
        if self.inbox[p].is_empty() {
            self.next_apply[p] = None;
            self.credit[p] = 0.0;
        } else {
            let wait = (1.0 - self.credit[p].fract()).max(0.0) / rate;
            // At most a day: a rate too small for a timer still applies now and then.
            let wait = Duration::try_from_secs_f64(wait.clamp(1e-4, 86_400.0))
                .unwrap_or(Duration::from_secs(86_400));
            self.next_apply[p] = Some(now + wait);
        }
    }

    /// `p` has not applied everything `target` names.
    fn lacks(&self, p: usize, target: &[u64]) -> bool {
        target.iter().zip(&self.replicas[p].applied).any(|(t, a)| a < t)
    }

    /// Runs everything that is due: deliveries, batch commits, rebroadcast ticks, the expiry sweep.
    /// Returns when something is next due.
    pub fn run_due(&mut self, now: Instant) -> Instant {
        while let Some(Reverse(s)) = self.queue.peek() {
            if s.due > now {
                break;
            }
            let Reverse(s) = self.queue.pop().expect("peeked");
            // A delivery that meets a closed link is lost; a rebroadcast tick repairs it later.
            if self.link_open(s.src, s.dst, now) {
                self.deliver(s.dst, s.target, now);
            }
        }
        for p in 0..self.n() {
            if self.next_apply[p].is_some_and(|t| t <= now) {
                if self.paused[p] || self.is_down(p, now) {
                    // A stopped peer earns no time to apply in.
                    self.next_apply[p] = Some(now + Duration::from_millis(50));
                    self.last_work[p] = now;
                } else {
                    self.work(p, now);
                }
            }
        }
        for p in 0..self.n() {
            if self.replicas[p].batch_deadline.is_some_and(|t| t <= now) {
                self.commit(p, now);
            }
        }
        for p in 0..self.n() {
            if self.next_tick[p] <= now {
                self.rebroadcast_from(p, now);
                let rb = self.cfg.rebroadcast;
                self.next_tick[p] = now + jitter(&mut self.rng, rb);
            }
        }
        if self.next_state_sync <= now {
            self.next_state_sync = now + self.cfg.state_sync;
            self.expire(now);
        }
        let mut next = self.next_state_sync;
        if let Some(Reverse(s)) = self.queue.peek() {
            next = next.min(s.due);
        }
        for p in 0..self.n() {
            next = next.min(self.next_tick[p]);
            if let Some(t) = self.replicas[p].batch_deadline {
                next = next.min(t);
            }
            if let Some(t) = self.next_apply[p] {
                next = next.min(t);
            }
        }
        next
    }

    /// A rebroadcast tick of `p`: every peer that `p` can reach and that lacks something `p` has gets
    /// `p`'s state after the usual lag.
    pub fn rebroadcast_from(&mut self, p: usize, now: Instant) {
        if self.paused[p] || self.is_down(p, now) {
            return;
        }
        let target = self.replicas[p].applied.clone();
        for dst in 0..self.n() {
            if dst == p || !self.link_open(p, dst, now) {
                continue;
            }
            let lacks = (0..self.n()).any(|o| self.replicas[dst].applied[o] < target[o]);
            if lacks {
                let due = now + self.lag();
                self.schedule(due, p, dst, target.clone());
            }
        }
    }

    /// The state-sync loop of the first reachable peer removes pins whose expiry has passed.
    fn expire(&mut self, now: Instant) {
        let Some(p) = (0..self.n()).find(|&p| !self.paused[p] && !self.is_down(p, now)) else {
            return;
        };
        let wall = Utc::now();
        let r = &self.replicas[p];
        let expired: Vec<Arc<str>> = if r.base.is_some() && wall < crate::seed::first_expiry() {
            // No generated pin expires before the first generated expiry: only the written ones.
            r.map
                .iter()
                .filter(|(_, e)| e.value().expire_at.is_some_and(|t| t < wall))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            let view = r.view();
            let expired =
                view.iter().filter(|(_, e)| e.value().expire_at.is_some_and(|t| t < wall));
            expired.map(|(k, _)| k).collect()
        };
        if expired.is_empty() {
            return;
        }
        let ops = self.resolve(p, expired.into_iter().map(PendingOp::Del).collect());
        self.commit_ops(p, ops, now);
    }

    /// A restart of peer `p`: its uncommitted batch is lost, it is unreachable for `down`.
    pub fn restart(&mut self, p: usize, down: Duration, now: Instant) {
        self.replicas[p].batch.clear();
        self.replicas[p].batch_deadline = None;
        // So are the broadcasts it held (with `apply_rate`): a rebroadcast brings them again.
        self.inbox[p].clear();
        self.next_apply[p] = None;
        let keys: Vec<Arc<str>> = self.replicas[p].map.keys().cloned().collect();
        for k in keys {
            if let Some(e) = self.replicas[p].map.get_mut(&k) {
                e.applied_at = None;
            }
        }
        self.down_until[p] = if down.is_zero() { None } else { Some(now + down) };
    }

    /// Deliveries scheduled or waiting in an inbox, and not yet done.
    pub fn in_flight(&self) -> usize {
        self.queue.len() + self.inbox.iter().map(|i| i.len()).sum::<usize>()
    }

    /// Deltas that some replica lacks and that no scheduled delivery will bring: these wait for a
    /// rebroadcast tick (or for a pause or partition to end).
    pub fn lost(&self) -> u64 {
        let mut lost = 0;
        for dst in 0..self.n() {
            let mut coming = self.replicas[dst].applied.clone();
            let scheduled = self.queue.iter().filter(|s| s.0.dst == dst).map(|s| &s.0.target);
            for target in scheduled.chain(&self.inbox[dst]) {
                for (c, &t) in coming.iter_mut().zip(target) {
                    *c = (*c).max(t);
                }
            }
            for (log, &c) in self.log.iter().zip(&coming) {
                lost += (log.len() as u64).saturating_sub(c);
            }
        }
        lost
    }

    /// Every replica has every delta, no batch is pending and no delivery is scheduled.
    pub fn converged(&self) -> bool {
        self.queue.is_empty()
            && self.inbox.iter().all(|i| i.is_empty())
            && self.replicas.iter().all(|r| {
                r.batch.is_empty()
                    && (0..self.n()).all(|o| r.applied[o] == self.log[o].len() as u64)
            })
    }

    /// SHA-256 of the replica's stored-form pins in key order, one JSON line each.
    pub fn digest(&mut self, p: usize) -> String {
        if let Some(d) = &self.replicas[p].digest {
            return d.clone();
        }
        let mut h = sha2::Sha256::new();
        for (_, e) in self.replicas[p].view().iter() {
            h.update(e.stored_json());
            h.update(b"\n");
        }
        let d = format!("{:x}", h.finalize());
        self.replicas[p].digest = Some(d.clone());
        d
    }

    /// Total deltas written (for logs).
    pub fn writes(&self) -> usize {
        self.log.iter().map(Vec::len).sum()
    }
}

fn jitter(rng: &mut SmallRng, base: Duration) -> Duration {
    let f: f64 = rng.random_range(0.7..=1.3);
    Duration::try_from_secs_f64(base.as_secs_f64() * f).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::{Mode, PinType};

    fn cfg() -> NetConfig {
        NetConfig {
            lag_min: Duration::ZERO,
            lag_max: Duration::from_millis(5),
            drop_rate: 0.0,
            rebroadcast: Duration::from_secs(60),
            batch_size: 0,
            batch_age: Duration::ZERO,
            batch_queue: 50_000,
            state_sync: Duration::from_secs(300),
            seed: 1,
            apply_rate: 0.0,
            inbox: 32,
        }
    }

    fn pin(cid: &str, name: &str) -> Pin {
        Pin {
            cid: cid.into(),
            typ: PinType::Data,
            allocations: vec![],
            max_depth: -1,
            reference: None,
            timestamp: Utc::now(),
            replication_min: -1,
            replication_max: -1,
            name: name.into(),
            mode_query: Mode::Recursive,
            shard_size: 0,
            user_allocations: None,
            expire_at: None,
            metadata: Default::default(),
            pin_update: None,
            origins: vec![],
            origins_given: true,
            metadata_given: false,
        }
        .to_stored()
    }

    fn drain(w: &mut World) {
        let far = Instant::now() + Duration::from_secs(3600);
        while w.in_flight() > 0 {
            w.run_due(far);
        }
    }

    #[test]
    fn concurrent_unpin_and_repin_end_pinned() {
        let c = ledger_ids::cid_v0(b"a");
        let key: Arc<str> = ledger_ids::parse_cid(&c).unwrap().key.into();
        let mut w = World::new(3, vec![pin(&c, "orig")], cfg());
        let now = Instant::now();
        // Peer 0 removes while peer 1 re-pins, neither having seen the other.
        w.write(0, PendingOp::Del(key.clone()), now).unwrap();
        w.write(1, PendingOp::Put(key.clone(), Arc::new(pin(&c, "repinned"))), now).unwrap();
        drain(&mut w);
        assert!(w.converged());
        for p in 0..3 {
            assert_eq!(w.replicas[p].get(&key).expect("pinned").value().name, "repinned");
        }
        let d0 = w.digest(0);
        assert!((1..3).all(|p| w.digest(p) == d0));
    }

    #[test]
    fn a_lost_delta_is_fetched_with_a_later_one() {
        let c = ledger_ids::cid_v0(b"b");
        let key: Arc<str> = ledger_ids::parse_cid(&c).unwrap().key.into();
        let mut cfg = cfg();
        cfg.drop_rate = 1.0;
        let mut w = World::new(2, vec![], cfg);
        let now = Instant::now();
        w.write(0, PendingOp::Put(key.clone(), Arc::new(pin(&c, "one"))), now).unwrap();
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.lost(), 1);
        w.rebroadcast_from(0, now);
        drain(&mut w);
        assert!(w.converged());
        assert_eq!(w.replicas[1].get(&key).unwrap().value().name, "one");
    }

    #[test]
    fn a_busy_peer_applies_at_its_rate_and_loses_what_its_inbox_cannot_hold() {
        let mut cfg = cfg();
        cfg.lag_max = Duration::ZERO;
        cfg.apply_rate = 100.0;
        cfg.inbox = 32;
        let mut w = World::new(2, vec![], cfg);
        let t0 = Instant::now();
        let keys: Vec<Arc<str>> = (0..300)
            .map(|i| {
                let c = ledger_ids::cid_v0(format!("burst {i}").as_bytes());
                ledger_ids::parse_cid(&c).unwrap().key.into()
            })
            .collect();
        for k in &keys {
            w.write(0, PendingOp::Put(k.clone(), Arc::new(pin("x", "n"))), t0).unwrap();
        }
        // The 300 broadcasts arrive at once: 32 fit in the inbox, naming deltas 1..32; the other
        // 268 are lost until a rebroadcast.
        w.run_due(t0);
        assert_eq!(w.replicas[1].len(), 1, "the first delta goes at once");
        assert_eq!(w.lost(), 268);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        w.run_due(at(155));
        assert_eq!(w.replicas[1].len(), 16, "one delta per 10 ms");
        w.run_due(at(1000));
        assert_eq!(w.replicas[1].len(), 32, "stuck at what the inbox named");
        assert_eq!(w.in_flight(), 0);
        // A rebroadcast names the newest head: the peer walks the other 268 at 100/s.
        w.rebroadcast_from(0, at(1000));
        w.run_due(at(1000));
        w.run_due(at(2005));
        assert_eq!(w.replicas[1].len(), 133);
        drain(&mut w);
        assert!(w.converged());
        assert_eq!(w.digest(0), w.digest(1));
    }

    #[test]
    fn a_paused_peer_earns_no_time_to_apply_in_and_a_restart_empties_its_inbox() {
        let mut cfg = cfg();
        cfg.lag_max = Duration::ZERO;
        cfg.apply_rate = 100.0;
        let mut w = World::new(2, vec![], cfg);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..300 {
            let c = ledger_ids::cid_v0(format!("pause {i}").as_bytes());
            let k: Arc<str> = ledger_ids::parse_cid(&c).unwrap().key.into();
            w.write(0, PendingOp::Put(k, Arc::new(pin("x", "n"))), t0).unwrap();
        }
        w.run_due(t0);
        w.run_due(at(1000));
        w.rebroadcast_from(0, at(1000));
        w.run_due(at(1000));
        assert_eq!(w.replicas[1].len(), 33);
        // Paused for a second: nothing applied, and nothing owed for that second afterwards.
        w.paused[1] = true;
        w.run_due(at(2000));
        assert_eq!(w.replicas[1].len(), 33);
        w.paused[1] = false;
        w.run_due(at(2105));
        assert_eq!(w.replicas[1].len(), 43, "10 deltas in the 100 ms since the pause ended");
        // A restart drops what the inbox held: the rest waits for a rebroadcast.
        w.restart(1, Duration::ZERO, at(2105));
        w.run_due(at(3000));
        assert_eq!(w.replicas[1].len(), 43);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.lost(), 257);
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::*;

    fn cfg() -> NetConfig {
        NetConfig {
            lag_min: Duration::ZERO,
            lag_max: Duration::from_millis(5),
            drop_rate: 0.0,
            rebroadcast: Duration::from_secs(1),
            batch_size: 0,
            batch_age: Duration::ZERO,
            batch_queue: 100,
            state_sync: Duration::from_secs(60),
            seed: 3,
            apply_rate: 0.0,
            inbox: 100,
        }
    }

    fn lines(w: &World, p: usize) -> Vec<(Arc<str>, Vec<u8>)> {
        w.replicas[p].view().iter().map(|(k, e)| (k, e.stored_json().to_vec())).collect()
    }

    /// A replica over a lazy set reads exactly as one holding the same pins: after re-pins (of
    /// generated pins and of new ones), removals and a removal of a new pin, the listing (key order,
    /// stored forms), the counts, the lookups and the digests are the same, on every peer.
    #[test]
    fn a_lazy_base_reads_as_the_same_pins_held() {
        let peers: Vec<String> = (0..2u8).map(|i| ledger_ids::peer_id_from_key(&[i; 32])).collect();
        let set = LazySet { n: 700, seed: 9, peers };
        let held: Vec<Pin> = (0..700).map(|i| set.pin(i, crate::seed::anchors())).collect();
        let mut lazy = World::with_base(2, Vec::new(), Some(set.clone()), cfg());
        let mut eager = World::new(2, held.clone(), cfg());
        let key = |p: &Pin| -> Arc<str> { ledger_ids::parse_cid(&p.cid).unwrap().key.into() };
        let new = ledger_ids::cid_v0(b"not generated");
        let new_key: Arc<str> = ledger_ids::parse_cid(&new).unwrap().key.into();
        let mut renamed = held[10].clone();
        renamed.name = "renamed".into();
        let mut other = held[0].clone();
        other.cid = new.clone();
        let now = Instant::now();
        for w in [&mut lazy, &mut eager] {
            w.write(0, PendingOp::Put(key(&held[10]), Arc::new(renamed.clone())), now).unwrap();
            w.write(1, PendingOp::Del(key(&held[0])), now).unwrap();
            w.write(1, PendingOp::Del(key(&held[699])), now).unwrap();
            w.write(0, PendingOp::Put(new_key.clone(), Arc::new(other.clone())), now).unwrap();
            w.write(0, PendingOp::Del(key(&held[300])), now).unwrap();
            let mut t = now;
            while !w.converged() {
                t += Duration::from_millis(10);
                w.run_due(t);
            }
        }
        for p in 0..2 {
            assert_eq!(lines(&lazy, p), lines(&eager, p), "peer{p}");
            assert_eq!(lazy.replicas[p].len(), 698, "peer{p}");
            assert_eq!(lazy.replicas[p].len(), eager.replicas[p].len());
            assert!(lazy.replicas[p].get(&key(&held[0])).is_none());
            assert_eq!(lazy.replicas[p].get(&key(&held[10])).unwrap().value().name, "renamed");
            assert_eq!(
                lazy.replicas[p].get(&key(&held[11])).unwrap().stored_json(),
                eager.replicas[p].get(&key(&held[11])).unwrap().stored_json()
            );
            assert!(lazy.replicas[p].get(&new_key).is_some());
            assert_eq!(lazy.digest(p), eager.digest(p));
        }
        // Paging from inside the set starts right after the key given.
        let view = lazy.replicas[0].view();
        let all = lines(&lazy, 0);
        let page = view.page(Some(&all[99].0), 5);
        let got: Vec<&Arc<str>> = page.iter().map(|(k, _)| k).collect();
        let want: Vec<&Arc<str>> = all[100..105].iter().map(|(k, _)| k).collect();
        assert_eq!(got, want);
    }
}
