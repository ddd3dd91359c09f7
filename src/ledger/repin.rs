//! One safe re-pin, on the record: read the pin from the peer that takes the write, build the request
//! that keeps every option (cluster::repin), commit the intent, send it, record the answer, read the
//! pin back and record the outcome. Tag, restore and `ledger repin` all go through [`safe_repins`].

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::Serialize;

use anyhow::Context as _;

use crate::cluster::{CanonicalPin, Client, repin};
use crate::context::Context;
use crate::domain::{Outcome, RunKind, RunState};
use crate::ledger::run::{Run, Spec};
use crate::ledger::spread::{self, Spread};
use crate::store::runs;

/// What became of one re-pin.
#[derive(Debug, Clone, Serialize)]
pub struct RepinOutcome {
    pub cid: String,
    pub outcome: Outcome,
    pub repin_id: Option<i64>,
    pub http_status: Option<u16>,
    /// Fields that differ from what was intended (for `mismatch`).
    pub mismatched: Vec<&'static str>,
    /// Accepted (200), yet read back as it was before for as long as `--timeout` allowed: a
    /// batching cluster that has not committed the write, or lost it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub still_as_before: bool,
    pub error: Option<String>,
}

impl RepinOutcome {
    fn new(cid: &str, outcome: Outcome) -> RepinOutcome {
        RepinOutcome {
            cid: cid.to_string(),
            outcome,
            repin_id: None,
            http_status: None,
            mismatched: Vec::new(),
            still_as_before: false,
            error: None,
        }
    }
}

/// Decides, from the pin as just read, that it must not be re-pinned (the reason), e.g. because another
/// organisation owns it: the re-pin is then recorded as refused and reported as a conflict.
pub type Guard<'a> = dyn Fn(&CanonicalPin) -> Option<String> + 'a;

/// Reads and parses the stored pin from `client`'s peer.
pub async fn read_pin(client: &Client, cid: &str) -> anyhow::Result<Option<CanonicalPin>> {
    match client.allocation(cid).await? {
        None => Ok(None),
        Some(body) => {
            let line = body.strip_suffix(b"\n").unwrap_or(&body);
            Ok(Some(CanonicalPin::from_line(line).map_err(|e| {
                anyhow::anyhow!(
                    "{} answered GET /allocations/{cid} with something that is not a pin: {e}",
                    client.base()
                )
            })?))
        }
    }
}

/// What a batch of re-pins changes, and which pins it must leave alone.
pub struct Change<'a> {
    pub set: &'a BTreeMap<String, String>,
    pub unset: &'a [String],
    pub guard: Option<&'a Guard<'a>>,
    /// Per CID, a change of its own in place of `set` and `unset` (a restore).
    pub per_cid: Option<&'a HashMap<String, PinEdit>>,
    /// Options every pin gets in place of its own (a bulk `ledger repin`); `None`: keep them all.
    pub overrides: Option<&'a repin::Overrides>,
    /// With `--allocations`: a pin is as asked only once allocated to none but these peers.
    pub allocations_within: Option<&'a [String]>,
}

impl<'a> Change<'a> {
    /// A change of metadata alone: `set`, `unset`, every other option kept.
    pub fn metadata(
        set: &'a BTreeMap<String, String>,
        unset: &'a [String],
        guard: Option<&'a Guard<'a>>,
    ) -> Change<'a> {
        Change { set, unset, guard, per_cid: None, overrides: None, allocations_within: None }
    }
}

/// One pin's own change: metadata keys to set and remove, and options to put back.
#[derive(Debug, Clone, Default)]
pub struct PinEdit {
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
    pub overrides: repin::Overrides,
}

/// How fast a batch goes: requests in flight, and at most `rate` re-pins per second.
#[derive(Debug, Clone)]
pub struct Pace {
    pub concurrency: usize,
    pub rate: Option<f64>,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace { concurrency: 16, rate: None }
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

impl Pace {
    /// One request per `1/rate` seconds (`None`: no limit, also for a period under a nanosecond). A limiter that allows no burst at all
    /// loses every wake-up's lateness for good (the timer wakes up to a millisecond late, which at 500
    /// re-pins/s is half a period): it allows as many requests as 4 ms hold, so a late wake-up is made
    /// up and the long-run rate is the one asked for.
    /// The rate asked for, if it is one (finite and positive).
    fn rate(&self) -> Option<f64> {
        self.rate.filter(|r| r.is_finite() && *r > 0.0)
    }

    /// Pins per chunk of a batch: eight per request in flight, so that a commit is shared by many
    /// pins while a run killed mid-way has most of its answers on the record. A chunk is read while
    /// the one before is sent, so a pin waits up to two chunks' time between its read and its POST;
    /// with a rate, a chunk holds at most a quarter of a second's worth, so that the read the
    /// request is built from stays fresh.
    fn chunk(&self) -> usize {
        let size = self.concurrency.max(1) * 8;
        match self.rate() {
            Some(rate) => size.min((rate / 4.0).ceil() as usize).max(1),
            None => size,
        }
    }

    fn limiter(&self) -> Option<Limiter> {
        let rate = self.rate()?;
        // A rate too small for a `Duration` waits as long as one can hold in practice (136 years).
        let period = std::time::Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(std::time::Duration::from_secs(u32::MAX.into()));
        let burst = (rate * 0.004).ceil().clamp(1.0, 1_000.0) as u32;
        let quota = governor::Quota::with_period(period)?
            .allow_burst(std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN));
        Some(governor::RateLimiter::direct(quota))
    }
}

/// Where a batch of re-pins goes and is recorded.
pub struct Batch<'a> {
    pub conn: &'a rusqlite::Connection,
    pub client: &'a Client,
    /// The run and pass the re-pins are recorded under.
    pub at: (i64, i64),
    pub change: &'a Change<'a>,
    pub pace: &'a Pace,
    /// "Now" for the requests (an expired pin is refused as of this time).
    pub clock: crate::context::Clock,
}

/// Safe re-pins of `cids`, in chunks (see [`Pace::chunk`]): every intent is durable before its
/// request goes out, and a chunk costs one commit rather than two per pin. While a chunk's requests
/// are sent and its pins read back, the next chunk's pins are read (at most `concurrency` pins in
/// flight in all); then one transaction records the answers of the one and the intents of the
/// other. A CID given twice turns the overlap off, so that no pin is read before its own earlier
/// re-pin is answered. `done` is called with the number of CIDs finished so far. Returns every
/// outcome.
pub async fn safe_repins<S: AsRef<str>>(
    b: &Batch<'_>,
    cids: &[S],
    done: impl FnMut(usize),
) -> anyhow::Result<Vec<RepinOutcome>> {
    let mut outcomes = Vec::with_capacity(cids.len());
    safe_repins_each(b, cids, done, |o| outcomes.push(o)).await?;
    Ok(outcomes)
}

/// [`safe_repins`], handing each outcome to `each` once the transaction that records it has
/// committed, instead of keeping them all: a pass over a million pins holds one chunk's outcomes at
/// a time.
pub async fn safe_repins_each<S: AsRef<str>>(
    b: &Batch<'_>,
    cids: &[S],
    mut done: impl FnMut(usize),
    mut each: impl FnMut(RepinOutcome),
) -> anyhow::Result<()> {
    let limiter = b.pace.limiter();
    let slots = tokio::sync::Semaphore::new(b.pace.concurrency.max(1));
    let unique = cids.iter().map(AsRef::as_ref).collect::<std::collections::HashSet<&str>>().len()
        == cids.len();
    let mut finished = 0;
    let mut hand_over = |outcomes: &mut Vec<RepinOutcome>| {
        finished += outcomes.len();
        outcomes.drain(..).for_each(&mut each);
        done(finished);
    };
    let mut outcomes = Vec::new();
    let mut chunks =
        cids.chunks(b.pace.chunk()).map(|cids| Chunk { batch: b, cids, slots: &slots });
    let Some(mut chunk) = chunks.next() else { return Ok(()) };
    let read = chunk.read().await;
    let tx = b.conn.unchecked_transaction()?;
    let mut planned = chunk.record_intents(&tx, read, &mut outcomes)?;
    tx.commit()?;
    hand_over(&mut outcomes);
    loop {
        let next = chunks.next();
        let last = next.is_none();
        let read_next = async {
            match &next {
                Some(n) => Some(n.read().await),
                None => None,
            }
        };
        let send = chunk.send(&planned, limiter.as_ref());
        let (answers, read) = if unique {
            futures::future::join(send, read_next).await
        } else {
            let answers = send.await;
            (answers, read_next.await)
        };
        let tx = b.conn.unchecked_transaction()?;
        chunk.record_answers(&tx, std::mem::take(&mut planned), answers, &mut outcomes)?;
        if let (Some(n), Some(read)) = (next, read) {
            planned = n.record_intents(&tx, read, &mut outcomes)?;
            chunk = n;
        }
        tx.commit()?;
        hand_over(&mut outcomes);
        if last {
            return Ok(());
        }
    }
}

/// One safe re-pin of `cid` (see [`safe_repins`]).
pub async fn safe_repin(b: &Batch<'_>, cid: &str) -> anyhow::Result<RepinOutcome> {
    let mut out = safe_repins(b, &[cid], |_| {}).await?;
    Ok(out.pop().expect("one outcome per CID"))
}

/// A chunk of a batch, in four steps: [`read`](Chunk::read) every pin (concurrently),
/// [`record_intents`](Chunk::record_intents), [`send`](Chunk::send) the requests and read the pins
/// back (concurrently), [`record_answers`](Chunk::record_answers). The caller commits; a chunk's
/// answers and the next one's intents share a transaction.
struct Chunk<'a, S> {
    batch: &'a Batch<'a>,
    cids: &'a [S],
    /// One per pin in flight, shared with the chunk before or after.
    slots: &'a tokio::sync::Semaphore,
}

/// A re-pin whose intent is recorded: about to be sent.
struct Planned {
    out: RepinOutcome,
    id: i64,
    cid_id: i64,
    /// The digest of the pin as read before the request.
    before: [u8; 16],
    request: repin::Request,
}

/// What the cluster answered to a re-pin, and the pin as read back after it.
type Answer = (Result<(u16, String), crate::cluster::Error>, anyhow::Result<Option<CanonicalPin>>);

impl<S: AsRef<str>> Chunk<'_, S> {
    /// Reads every pin of the chunk from the write peer.
    async fn read(&self) -> Vec<anyhow::Result<Option<CanonicalPin>>> {
        let client = self.batch.client;
        futures::stream::iter(self.cids)
            .map(|cid| async move {
                let _slot = self.slots.acquire().await;
                read_pin(client, cid.as_ref()).await
            })
            .buffered(self.batch.pace.concurrency.max(1))
            .collect()
            .await
    }

    /// Decides each pin's request from the pin as read now, and commits the intents (one
    /// transaction, no `.await` inside). Pins with nothing to send get their outcome here.
    fn record_intents(
        &self,
        tx: &rusqlite::Transaction,
        read: Vec<anyhow::Result<Option<CanonicalPin>>>,
        outcomes: &mut Vec<RepinOutcome>,
    ) -> anyhow::Result<Vec<Planned>> {
        let mut planned = Vec::new();
        for (cid, before) in self.cids.iter().zip(read) {
            match self.plan_one(tx, cid.as_ref(), before)? {
                Ok(p) => planned.push(p),
                Err(out) => outcomes.push(out),
            }
        }
        Ok(planned)
    }

    /// One pin's intent, or its outcome when nothing is to be sent.
    fn plan_one(
        &self,
        tx: &rusqlite::Transaction,
        cid: &str,
        before: anyhow::Result<Option<CanonicalPin>>,
    ) -> anyhow::Result<Result<Planned, RepinOutcome>> {
        let (run, pass) = self.batch.at;
        let mut out = RepinOutcome::new(cid, Outcome::Failed);
        let before = match before {
            Ok(Some(p)) => p,
            Ok(None) => {
                out.error = Some(format!(
                    "{cid} is not pinned on {} (GET /allocations/{cid} answered 404)",
                    self.batch.client.base()
                ));
                return Ok(Err(out));
            }
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return Ok(Err(out));
            }
        };
        let cid_id = runs::cid_id(tx, &before.cid)?;
        let before_digest = runs::ensure_version(tx, cid_id, &before)?;
        let request = match self.request_for(cid, &before) {
            Ok(r) => r,
            Err((outcome, reason)) => {
                out.repin_id =
                    Some(runs::refused(tx, run, pass, cid_id, Some(before_digest), &reason)?);
                out.outcome = outcome;
                out.error = Some(reason);
                return Ok(Err(out));
            }
        };
        if request.intended.mismatches(&before).is_empty() {
            out.outcome = Outcome::Unchanged;
            return Ok(Err(out));
        }
        let intended_json = serde_json::to_string(&request.intended)?;
        let id = runs::intent(
            tx,
            &runs::Intent {
                run,
                pass,
                cid_id,
                before: Some(before_digest),
                path: &request.path,
                query: &request.query,
                intended_json: &intended_json,
            },
        )?;
        out.repin_id = Some(id);
        Ok(Ok(Planned { out, id, cid_id, before: before.digest(), request }))
    }

    /// The request for one pin, decided by the pin as it is now (not as planned: it may have changed
    /// since), or why none is sent.
    fn request_for(
        &self,
        cid: &str,
        before: &CanonicalPin,
    ) -> Result<repin::Request, (Outcome, String)> {
        let change = self.batch.change;
        if let Some(reason) = change.guard.and_then(|g| g(before)) {
            return Err((Outcome::Conflict, reason));
        }
        let now = self.batch.clock.now();
        let mut request = match (change.per_cid.and_then(|m| m.get(cid)), change.overrides) {
            (Some(e), _) => repin::build_with(before, &e.overrides, &e.set, &e.unset, now),
            (None, Some(o)) => repin::build_with(before, o, change.set, change.unset, now),
            (None, None) => repin::build(before, change.set, change.unset, now),
        }
        .map_err(|e| (Outcome::Refused, e.to_string()))?;
        request.intended.allocations_within = change.allocations_within.map(<[String]>::to_vec);
        Ok(request)
    }

    /// Sends every planned request (paced), then reads each pin back from the same peer (see
    /// [`read_back`]).
    async fn send(&self, planned: &[Planned], limiter: Option<&Limiter>) -> Vec<Answer> {
        let client = self.batch.client;
        futures::stream::iter(planned)
            .map(|p| async move {
                let _slot = self.slots.acquire().await;
                if let Some(l) = limiter {
                    l.until_ready().await;
                }
                let answer = client.post_pin(&p.request.path_and_query()).await;
                let accepted = matches!(answer, Ok((200, _)));
                let after = read_back(client, p, accepted).await;
                (answer, after)
            })
            .buffered(self.batch.pace.concurrency.max(1))
            .collect()
            .await
    }

    /// Records every answer and outcome (one transaction).
    fn record_answers(
        &self,
        tx: &rusqlite::Transaction,
        planned: Vec<Planned>,
        answers: Vec<Answer>,
        outcomes: &mut Vec<RepinOutcome>,
    ) -> anyhow::Result<()> {
        for (mut p, (answer, after)) in planned.into_iter().zip(answers) {
            let said = judge_answer(&mut p, answer);
            let (after_digest, mismatched) = match &after {
                Ok(Some(pin)) => (
                    Some(runs::ensure_version(tx, p.cid_id, pin)?),
                    p.request.intended.mismatches(pin),
                ),
                Ok(None) => (None, vec!["pinned"]),
                Err(_) => (None, vec!["unreadable"]),
            };
            p.out.outcome = match (mismatched.is_empty(), p.out.error.is_some()) {
                (true, _) => Outcome::Applied,
                (false, true) => Outcome::Failed,
                (false, false) => Outcome::Mismatch,
            };
            p.out.still_as_before = p.out.outcome == Outcome::Mismatch
                && matches!(&after, Ok(Some(pin)) if pin.digest() == p.before);
            p.out.mismatched = mismatched;
            runs::settled(
                tx,
                &runs::Settled {
                    id: p.id,
                    cid_id: p.cid_id,
                    sent: said.sent,
                    http_status: p.out.http_status,
                    response: said.response,
                    error: said.note,
                    after: after_digest,
                    outcome: p.out.outcome,
                },
            )?;
            outcomes.push(p.out);
        }
        Ok(())
    }
}

/// Reads a re-pinned pin back from the peer that took the write. Without CRDT batching that peer
/// shows the write at once; with batching it answers 200 as soon as the write is queued and shows
/// it, even there, only once the batch commits, and a restart before that loses it
/// (docs/cluster-api.md §7). So an accepted re-pin that still reads back exactly as it was before is
/// read again for as long as `--timeout` allows: `applied` means the cluster shows it, never only
/// that it said 200.
async fn read_back(
    client: &Client,
    p: &Planned,
    accepted: bool,
) -> anyhow::Result<Option<CanonicalPin>> {
    let deadline =
        tokio::time::Instant::now() + if accepted { client.timeout() } else { Default::default() };
    read_while_unchanged(client, &p.out.cid, Some(p.before), deadline).await
}

/// Reads the pin on `client`'s peer, and while it still has the digest `before` reads it again (50
/// ms later, then twice as long each time, at most 1 s) until `deadline`.
async fn read_while_unchanged(
    client: &Client,
    cid: &str,
    before: Option<[u8; 16]>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Option<CanonicalPin>> {
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        let after = read_pin(client, cid).await;
        let as_before = matches!(&after, Ok(Some(pin)) if Some(pin.digest()) == before);
        if !as_before || tokio::time::Instant::now() + pause > deadline {
            return after;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

/// Reads a pin that a stopped run re-pinned without recording the answer. Its request may still be
/// on its way: a cluster goes on with a request it has received when the client goes away, and a
/// batching one shows the write only once its batch commits. So while the pin reads as it did
/// before the request, it is read again until `--timeout` after the request was sent; only then is
/// "not there" an answer.
async fn settle_read(client: &Client, p: &runs::Pending) -> anyhow::Result<Option<CanonicalPin>> {
    let age = chrono::DateTime::parse_from_rfc3339(&p.requested_at)
        .ok()
        .and_then(|sent| (chrono::Utc::now() - sent.to_utc()).to_std().ok())
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + client.timeout().saturating_sub(age);
    let before = p.before_digest.as_deref().and_then(|d| <[u8; 16]>::try_from(d).ok());
    read_while_unchanged(client, &p.cid, before, deadline).await
}

/// What the cluster's answer to one re-pin says, as it is recorded.
struct Said {
    /// Whether the cluster took it (200).
    sent: bool,
    response: Option<String>,
    note: Option<String>,
}

/// Judges the cluster's answer to one re-pin. A 200 must already carry the intended pin (the
/// cluster's answer is its in-memory form); anything else is noted.
fn judge_answer(p: &mut Planned, answer: Result<(u16, String), crate::cluster::Error>) -> Said {
    let (status, mut body) = match answer {
        Ok(x) => x,
        Err(e) => {
            let msg = e.to_string();
            p.out.error = Some(msg.clone());
            return Said { sent: false, response: None, note: Some(msg) };
        }
    };
    p.out.http_status = Some(status);
    let ok = status == 200;
    if let Some((cut, _)) = body.char_indices().nth(4096) {
        body.truncate(cut);
    }
    let differs = if ok {
        match CanonicalPin::from_line(body.trim().as_bytes()) {
            Ok(answer) => p.request.intended.mismatches(&answer),
            Err(_) => vec!["answer"],
        }
    } else {
        Vec::new()
    };
    let note = if !ok {
        Some(format!("the cluster answered {status}: {}", body.trim()))
    } else if !differs.is_empty() {
        Some(format!("the cluster's answer differs from the request in: {}", differs.join(", ")))
    } else {
        None
    };
    if !ok {
        p.out.error = note.clone();
    }
    Said { sent: ok, response: Some(body), note }
}

/// Settles re-pins left `pending` by a process that stopped: reads each pin ([`settle_read`]) and
/// records whether the intended state is there (`applied`) or not (`not-applied`).
pub async fn reconcile(
    conn: &rusqlite::Connection,
    client: &Client,
    cluster: &str,
) -> anyhow::Result<usize> {
    let pending = runs::pending(conn, cluster)?;
    if !pending.is_empty() {
        tracing::info!(
            pending = pending.len(),
            "settling re-pins a stopped run left unanswered: each is read until it shows, or until \
             --timeout after it was sent"
        );
    }
    for p in &pending {
        let intended: repin::Intended = serde_json::from_str(&p.intended_json)?;
        let now = settle_read(client, p).await?;
        let (after, applied) = match &now {
            Some(pin) => (
                Some(runs::ensure_version(conn, p.cid_id, pin)?),
                intended.mismatches(pin).is_empty(),
            ),
            None => (None, false),
        };
        let note =
            "the ledger stopped before the answer was recorded; reconciled by reading the pin";
        runs::settled(
            conn,
            &runs::Settled {
                id: p.id,
                cid_id: p.cid_id,
                sent: applied,
                http_status: None,
                response: None,
                error: Some(note.to_string()),
                after,
                outcome: if applied { Outcome::Applied } else { Outcome::NotApplied },
            },
        )?;
    }
    Ok(pending.len())
}

/// One re-pin asked for by hand (`ledger repin`).
#[derive(Debug, Clone)]
pub struct OneOptions {
    pub cid: String,
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
    /// The peer that takes the write (default: the cluster's first peer).
    pub peer: Option<String>,
}

/// The request `ledger repin` would send, built from the pin as the write peer has it now.
pub async fn preview(ctx: &Context, opts: &OneOptions) -> anyhow::Result<repin::Request> {
    let url = ctx.peers(opts.peer.as_deref())?.remove(0);
    let client = ctx.client(&url)?;
    let pin = read_pin(&client, &opts.cid)
        .await?
        .with_context(|| format!("{} is not pinned on {url}", opts.cid))?;
    Ok(repin::build(&pin, &opts.set, &opts.unset, ctx.now())?)
}

/// One safe re-pin and where it was seen: the outcome on the write peer, then (when it succeeded)
/// which peers show the pin as the write peer does.
#[derive(Debug, Clone, Serialize)]
pub struct One {
    #[serde(flatten)]
    pub outcome: RepinOutcome,
    pub spread: Option<Spread>,
}

impl One {
    /// Whether the re-pin succeeded and every member of the cluster shows it.
    pub fn everywhere(&self) -> bool {
        self.outcome.outcome.is_success() && self.spread.as_ref().is_some_and(Spread::everywhere)
    }
}

/// One safe re-pin as a run of its own (kind `repin`): `done` when applied or already as asked and
/// shown so on every member of the cluster, `attention` when the pin read back differs or some
/// member does not show it (or was not read), `failed` otherwise.
pub async fn one(ctx: &Context, opts: &OneOptions) -> anyhow::Result<One> {
    let clients = ctx.clients(&ctx.peers(opts.peer.as_deref())?)?;
    let client = &clients[0];
    let params = serde_json::json!({ "cid": opts.cid, "set": opts.set, "unset": opts.unset });
    let spec = Spec { kind: RunKind::Repin, org: None, params, dry_run: false };
    let run = Run::begin(ctx, client, spec).await?;
    let change = Change::metadata(&opts.set, &opts.unset, None);
    let b = Batch {
        conn: &ctx.store()?.conn,
        client,
        at: (run.id(), 1),
        change: &change,
        pace: &Pace::default(),
        clock: ctx.clock,
    };
    let outcome = safe_repin(&b, &opts.cid).await?;
    let mut one = One { outcome, spread: None };
    if one.outcome.outcome.is_success() {
        let cids = [opts.cid.clone()];
        let spread = spread::check(ctx, &clients, &cids, (client.timeout(), 1)).await?;
        run.record_membership(&spread.membership)?;
        one.spread = Some(spread);
    }
    run.finish(match one.outcome.outcome {
        _ if one.everywhere() => RunState::Done,
        o if o.is_success() => RunState::Attention,
        Outcome::Mismatch => RunState::Attention,
        _ => RunState::Failed,
    })?;
    Ok(one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_positive_rate_gets_a_limiter_and_none_panics() {
        for rate in [1e-30, 1e-3, 0.5, 1.0, 500.0, 1e6] {
            let pace = Pace { concurrency: 16, rate: Some(rate) };
            let l = pace.limiter().unwrap_or_else(|| panic!("no limiter for {rate}"));
            // The first request may always go.
            assert!(l.check().is_ok(), "{rate}");
        }
        // No limit: none asked, nonsense, or faster than a period of a nanosecond.
        for rate in [None, Some(0.0), Some(-1.0), Some(f64::NAN), Some(f64::INFINITY), Some(1e30)] {
            assert!(Pace { concurrency: 16, rate }.limiter().is_none(), "{rate:?}");
        }
    }

    #[test]
    fn a_chunk_is_eight_pins_per_request_in_flight_and_a_quarter_second_of_a_rate() {
        let chunk = |concurrency, rate| Pace { concurrency, rate }.chunk();
        assert_eq!(chunk(1, None), 8);
        assert_eq!(chunk(16, None), 128);
        assert_eq!(chunk(0, None), 8);
        assert_eq!(chunk(16, Some(5.0)), 2);
        assert_eq!(chunk(16, Some(0.1)), 1);
        assert_eq!(chunk(16, Some(1e6)), 128);
        assert_eq!(chunk(16, Some(f64::NAN)), 128);
    }

    #[test]
    fn the_burst_holds_four_milliseconds_of_requests() {
        let burst = |rate: f64| {
            let l = Pace { concurrency: 16, rate: Some(rate) }.limiter().unwrap();
            (0..10_000).take_while(|_| l.check().is_ok()).count()
        };
        assert_eq!(burst(1.0), 1);
        assert_eq!(burst(250.0), 1);
        assert_eq!(burst(500.0), 2);
        assert_eq!(burst(1000.0), 4);
    }
}
