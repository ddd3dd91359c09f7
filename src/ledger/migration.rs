//! The passes of a migration, shared by `ledger tag` and the bulk `ledger repin`: each pass
//! [`repin`](Migration::repin)s what the write peer does not show as asked, through the safe,
//! recorded path, [`settle`](Migration::settle)s while sampling every peer (the convergence curve),
//! then [`verify`](Migration::verify)s every peer with a snapshot tied to the run and pass, and a
//! probe. What "as asked" means is the run's [`Goal`]. Planning, and what a run reports, are the
//! callers'.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client};
use crate::context::Context;
use crate::domain::Outcome;
use crate::ledger::run::Run;
use crate::ledger::{repin, snapshot};
use crate::store::{Store, runs};

/// What every target of a run must end up showing: metadata keys set and removed, options put in
/// place of the pin's own, and (with `--allocations`) no allocation outside a list of peers.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Goal {
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
    pub name: Option<String>,
    pub replication: Option<(i32, i32)>,
    /// `Some(None)`: never expires.
    pub expire_at: Option<Option<String>>,
    pub allocations: Option<Vec<String>>,
}

impl Goal {
    /// The goal of `ledger tag --org ORG`.
    pub fn tag(org: &str) -> Goal {
        Goal { set: BTreeMap::from([("org".to_string(), org.to_string())]), ..Goal::default() }
    }

    /// Whether `pin` shows the goal.
    pub fn shows(&self, pin: &CanonicalPin) -> bool {
        self.shows_fields(&Fields {
            metadata: &pin.metadata,
            name: &pin.name,
            replication: (pin.replication_min, pin.replication_max),
            expire_at: pin.expire_at.as_deref(),
            allocations: &pin.allocations,
        })
    }

    /// Whether a pin with these fields shows the goal.
    pub fn shows_fields(&self, f: &Fields) -> bool {
        self.set.iter().all(|(k, v)| f.metadata.get(k) == Some(v))
            && self.unset.iter().all(|k| !f.metadata.contains_key(k))
            && self.name.as_ref().is_none_or(|n| f.name == n)
            && self.replication.is_none_or(|r| f.replication == r)
            && self.expire_at.as_ref().is_none_or(|e| f.expire_at == e.as_deref())
            && self
                .allocations
                .as_ref()
                .is_none_or(|within| f.allocations.iter().all(|a| within.contains(a)))
    }

    /// Whether the goal changes the `org` key (sets it, or removes it).
    pub fn touches_org(&self) -> bool {
        self.set.contains_key("org") || self.unset.iter().any(|k| k == "org")
    }

    /// The options the re-pins put in place of the pin's own.
    pub fn overrides(&self) -> repin_request::Overrides {
        repin_request::Overrides {
            name: self.name.clone(),
            replication: self.replication,
            expire_at: self.expire_at.clone(),
            allocations: self.allocations.clone(),
        }
    }
}

use crate::cluster::repin as repin_request;

/// The fields of a pin a [`Goal`] looks at.
pub struct Fields<'a> {
    pub metadata: &'a BTreeMap<String, String>,
    pub name: &'a str,
    pub replication: (i32, i32),
    pub expire_at: Option<&'a str>,
    pub allocations: &'a [String],
}

/// How the passes go: how long each settles, how often it is sampled meanwhile, how many passes at
/// most and for how long, and how fast the re-pins go.
#[derive(Debug, Clone)]
pub struct Passes {
    pub settle: Duration,
    pub probe_every: Duration,
    pub max_passes: u32,
    pub timeout: Duration,
    pub concurrency: usize,
    pub rate: Option<f64>,
}

/// One pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub pass: u32,
    pub attempted: usize,
    pub applied: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub refused: usize,
    pub conflicts: usize,
    /// Targets shown as asked (for a tag run: tagged), per peer ID, after the pass settled.
    pub tagged: BTreeMap<String, usize>,
}

/// What the passes came to.
#[derive(Debug, Clone, Default)]
pub struct Passed {
    pub passes: Vec<PassReport>,
    pub converged: bool,
    /// Per peer ID: targets not (yet) shown as asked there.
    pub stragglers: BTreeMap<String, Vec<String>>,
    /// Pins that changed owner between the plan and the re-pin, or were refused, with the reason.
    pub not_done: Vec<(String, String)>,
    /// Each peer's ID, as far as it said (for the membership check).
    pub peer_ids: Vec<Option<String>>,
}

/// Runs the passes over `targets` (re-pinned) and `already` (verified only), until every peer shows
/// every one as asked, or `max_passes` / `timeout` is reached.
pub async fn drive(
    m: &mut Migration<'_>,
    passes: &Passes,
    started: Instant,
) -> anyhow::Result<Passed> {
    let mut out = Passed::default();
    for pass in 1..=passes.max_passes.max(1) {
        let mut pr = m.repin(pass, &mut out).await?;
        m.settle(pass).await?;
        let all_there = m.verify(pass, &mut pr, &mut out).await?;
        out.passes.push(pr);
        if all_there {
            out.converged = true;
            break;
        }
        if started.elapsed() > passes.timeout {
            break;
        }
    }
    out.peer_ids = m.peer_ids.clone();
    Ok(out)
}

/// The peer's ID as its `/id` says, or `None` when it cannot be asked now.
async fn peer_id(client: &Client) -> Option<String> {
    match client.id().await {
        Ok(me) => Some(me.id),
        Err(e) => {
            tracing::debug!("cannot ask {} for its ID: {e}", client.base());
            None
        }
    }
}

/// The wanted targets a peer shows as asked now, by reading its pin set (a probe). `wanted` names
/// the target a CID is, if it is one still wanted.
async fn probe<'t>(
    client: &Client,
    wanted: impl Fn(&str) -> Option<&'t str>,
    goal: &Goal,
) -> anyhow::Result<HashSet<&'t str>> {
    let mut stream = client.allocations().await?;
    let mut shown = HashSet::new();
    while let Some(line) = stream.next_line().await {
        let Ok(pin) = CanonicalPin::from_line(&line) else { continue };
        if let Some(cid) = wanted(&pin.cid)
            && goal.shows(&pin)
        {
            shown.insert(cid);
        }
    }
    match stream.outcome() {
        Some(crate::cluster::StreamOutcome::Complete) => Ok(shown),
        other => {
            anyhow::bail!("the pin set of {} could not be read whole: {other:?}", client.base())
        }
    }
}

/// Why a pin re-pinned with `--allocations` is not retried when the cluster kept its allocations.
pub const KEPT_ALLOCATIONS: &str = "the cluster kept an allocation outside --allocations: it moves \
     a pin only off a peer that is not a valid allocation (down, or gone from the cluster); \
     not retried";

/// Counts one re-pin's outcome in its pass, and notes the pins not to retry (`gave_up`) with why
/// (`not_done`).
fn count_outcome(
    pr: &mut PassReport,
    gave_up: &mut Vec<String>,
    not_done: &mut Vec<(String, String)>,
    o: repin::RepinOutcome,
) {
    pr.attempted += 1;
    match o.outcome {
        Outcome::Applied => pr.applied += 1,
        Outcome::Unchanged => pr.unchanged += 1,
        // The cluster kept a valid allocation outside `--allocations` (it moves a pin only off a
        // peer that is down or gone, docs/cluster-api.md §6.1 step 6): another pass would send the
        // same request for the same answer.
        Outcome::Mismatch if o.mismatched == ["allocations"] => {
            pr.failed += 1;
            gave_up.push(o.cid.clone());
            not_done.push((o.cid, KEPT_ALLOCATIONS.to_string()));
        }
        Outcome::Conflict | Outcome::Refused => {
            if o.outcome == Outcome::Conflict {
                pr.conflicts += 1;
            } else {
                pr.refused += 1;
            }
            gave_up.push(o.cid.clone());
            not_done.push((o.cid, o.error.unwrap_or_default()));
        }
        _ => {
            pr.failed += 1;
            tracing::debug!(cid = %o.cid, "re-pin failed: {}", o.error.unwrap_or_default());
        }
    }
}

/// Owned copies of CIDs, for a report.
fn owned(cids: &[&str]) -> Vec<String> {
    cids.iter().map(|c| c.to_string()).collect()
}

/// The passes of one run; see the module documentation.
pub struct Migration<'a> {
    ctx: &'a Context,
    store: &'a Store,
    clients: &'a [Client],
    run: i64,
    passes: &'a Passes,
    goal: &'a Goal,
    guard: &'a repin::Guard<'a>,
    overrides: repin_request::Overrides,
    /// What the progress bar says the pass is doing ("tagging", "re-pinning").
    doing: &'static str,
    started: Instant,
    /// Every pin that should end up as asked: the targets and those already so, borrowed from the
    /// plan (each CID is held once, by the plan, whatever the number of passes and peers).
    targets: HashSet<&'a str>,
    /// What the next pass re-pins.
    to_do: Vec<&'a str>,
    /// Pins that cannot be re-pinned (a conflict or a refusal): not retried, not waited for.
    gave_up: HashSet<String>,
    /// Each peer's ID, for the samples taken while a pass settles: asked once, and again before a
    /// sample while unknown (`None`: `/id` failed); a peer's samples are keyed by its ID only.
    peer_ids: Vec<Option<String>>,
}

/// What a [`Migration`] works on.
pub struct Work<'a> {
    pub clients: &'a [Client],
    pub passes: &'a Passes,
    pub goal: &'a Goal,
    /// Decides, from the pin as read just before its re-pin, that it must be left alone.
    pub guard: &'a repin::Guard<'a>,
    pub targets: &'a [String],
    pub already: &'a [String],
    pub doing: &'static str,
}

impl<'a> Migration<'a> {
    pub async fn new(
        ctx: &'a Context,
        run: &Run<'_>,
        w: Work<'a>,
        started: Instant,
    ) -> anyhow::Result<Migration<'a>> {
        let mut peer_ids = Vec::with_capacity(w.clients.len());
        for c in w.clients {
            let id = peer_id(c).await;
            if id.is_none() {
                tracing::warn!("{} did not say its ID: no sample of it until it does", c.base());
            }
            peer_ids.push(id);
        }
        Ok(Migration {
            ctx,
            store: ctx.store()?,
            clients: w.clients,
            run: run.id(),
            passes: w.passes,
            goal: w.goal,
            guard: w.guard,
            overrides: w.goal.overrides(),
            doing: w.doing,
            started,
            targets: w.targets.iter().chain(w.already).map(String::as_str).collect(),
            to_do: w.targets.iter().map(String::as_str).collect(),
            gave_up: HashSet::new(),
            peer_ids,
        })
    }

    /// The target `cid` names, if it is still wanted on every peer (not given up on).
    fn wanted(&self, cid: &str) -> Option<&'a str> {
        self.targets.get(cid).copied().filter(|c| !self.gave_up.contains(*c))
    }

    /// How many targets are still wanted on every peer.
    fn wanted_count(&self) -> usize {
        self.targets.iter().filter(|c| !self.gave_up.contains(**c)).count()
    }

    /// The targets still wanted that `shown` lacks, sorted.
    fn missing(&self, shown: &HashSet<&str>) -> Vec<&'a str> {
        let mut missing: Vec<&'a str> = (self.targets.iter().copied())
            .filter(|c| !self.gave_up.contains(*c) && !shown.contains(c))
            .collect();
        missing.sort_unstable();
        missing
    }

    /// Step 1: re-pins what is left to do through the write peer, and records the pass.
    async fn repin(&mut self, pass: u32, out: &mut Passed) -> anyhow::Result<PassReport> {
        let mut pr = PassReport { pass, ..Default::default() };
        let pass_started = crate::store::now_text();
        self.to_do.retain(|c| !self.gave_up.contains(*c));
        let change = repin::Change {
            overrides: Some(&self.overrides),
            allocations_within: self.goal.allocations.as_deref(),
            ..repin::Change::metadata(&self.goal.set, &self.goal.unset, Some(self.guard))
        };
        let pace = repin::Pace { concurrency: self.passes.concurrency, rate: self.passes.rate };
        let b = repin::Batch {
            conn: &self.store.conn,
            client: &self.clients[0],
            at: (self.run, pass as i64),
            change: &change,
            pace: &pace,
            clock: self.ctx.clock,
        };
        let pb = self.ctx.progress(Some(self.to_do.len() as u64));
        pb.set_message(self.doing);
        let mut gave_up = Vec::new();
        let progress = |n: usize| pb.set_position(n as u64);
        let tally =
            |o: repin::RepinOutcome| count_outcome(&mut pr, &mut gave_up, &mut out.not_done, o);
        repin::safe_repins_each(&b, &self.to_do, progress, tally).await?;
        pb.finish_and_clear();
        self.gave_up.extend(gave_up);
        let counts = runs::PassCounts {
            pass: pass as i64,
            started_at: pass_started,
            targets: self.targets.len(),
            attempted: pr.attempted,
            succeeded: pr.applied + pr.unchanged,
            failed: pr.failed + pr.refused + pr.conflicts,
        };
        runs::record_pass(&self.store.conn, self.run, &counts)?;
        Ok(pr)
    }

    /// Step 2: waits `--settle`, sampling every peer every `--probe-every` meanwhile (the
    /// time-resolved convergence curve).
    async fn settle(&mut self, pass: u32) -> anyhow::Result<()> {
        let wanted = self.wanted_count();
        let every = self.passes.probe_every;
        let settle_end = tokio::time::Instant::now() + self.passes.settle;
        while !every.is_zero() && tokio::time::Instant::now() + every < settle_end {
            tokio::time::sleep(every).await;
            for (i, client) in self.clients.iter().enumerate() {
                if self.peer_ids[i].is_none() {
                    self.peer_ids[i] = peer_id(client).await;
                }
                // Whose pin set it is, unknown until the peer says: no sample until then.
                let Some(peer) = &self.peer_ids[i] else { continue };
                let Ok(shown) = probe(client, |c| self.wanted(c), self.goal).await else {
                    continue;
                };
                self.add_probe(pass, peer, shown.len(), wanted)?;
            }
        }
        tokio::time::sleep_until(settle_end).await;
        Ok(())
    }

    fn add_probe(&self, pass: u32, peer: &str, n: usize, of: usize) -> anyhow::Result<()> {
        let at = (self.run, pass as i64);
        let seconds = self.started.elapsed().as_secs_f64();
        runs::add_probe(&self.store.conn, at, peer, seconds, n, of)?;
        Ok(())
    }

    /// Step 3: a snapshot of every peer tied to the run and pass, and a probe of each. True when
    /// every peer shows every wanted target as asked. The next pass re-pins what the write peer
    /// lacks.
    async fn verify(
        &mut self,
        pass: u32,
        pr: &mut PassReport,
        out: &mut Passed,
    ) -> anyhow::Result<bool> {
        let wanted = self.wanted_count();
        let cluster = self.ctx.cluster_name()?;
        let mut all_there = true;
        out.stragglers.clear();
        for (i, client) in self.clients.iter().enumerate() {
            let snap_opts = snapshot::Options { run: Some((self.run, pass as i64)) };
            let s = match snapshot::take(self.store, client, cluster, &snap_opts, |_| {}).await {
                Ok(s) => s,
                // A peer other than the write peer that cannot be read (down, restarting) is a
                // straggler for this pass: every wanted target counts as missing there.
                Err(e) if i > 0 => {
                    tracing::warn!(
                        "cannot verify {}, its targets count as stragglers: {e:#}",
                        client.base()
                    );
                    all_there = false;
                    let missing = self.missing(&HashSet::new());
                    // By its ID when known; a peer that never told its ID is named by its URL here.
                    let who = self.peer_ids[i].clone().unwrap_or_else(|| client.base().to_string());
                    out.stragglers.insert(who, owned(&missing));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shown = match probe(client, |c| self.wanted(c), self.goal).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("probe failed: {e:#}");
                    all_there = false;
                    continue;
                }
            };
            self.peer_ids[i] = Some(s.peer.clone());
            self.add_probe(pass, &s.peer, shown.len(), wanted)?;
            pr.tagged.insert(s.peer.clone(), shown.len());
            let missing = self.missing(&shown);
            if !missing.is_empty() {
                all_there = false;
                out.stragglers.insert(s.peer, owned(&missing));
            }
            if i == 0 {
                self.to_do = missing;
            }
        }
        Ok(all_there)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(line: &str) -> CanonicalPin {
        CanonicalPin::from_line(line.as_bytes()).unwrap()
    }

    const P: &str = r#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","name":"n","replication_factor_min":2,"replication_factor_max":2,"metadata":{"org":"hrdag","k":"v"},"origins":[],"allocations":["a","b"],"max_depth":-1,"type":"pin","expire_at":"2099-01-01T00:00:00Z","timestamp":"2024-01-01T00:00:00Z"}"#;

    #[test]
    fn a_goal_is_shown_only_when_every_part_of_it_is() {
        let p = pin(P);
        assert!(Goal::tag("hrdag").shows(&p));
        assert!(!Goal::tag("amnesty").shows(&p));
        assert!(Goal::default().shows(&p));
        let g = |f: fn(&mut Goal)| {
            let mut g = Goal::default();
            f(&mut g);
            g.shows(&p)
        };
        assert!(!g(|g| g.unset = vec!["k".into()]));
        assert!(g(|g| g.unset = vec!["gone".into()]));
        assert!(g(|g| g.name = Some("n".into())));
        assert!(!g(|g| g.name = Some("m".into())));
        assert!(g(|g| g.replication = Some((2, 2))));
        assert!(!g(|g| g.replication = Some((1, 2))));
        assert!(g(|g| g.expire_at = Some(Some("2099-01-01T00:00:00Z".into()))));
        assert!(!g(|g| g.expire_at = Some(None)));
        assert!(g(|g| g.allocations = Some(vec!["a".into(), "b".into(), "c".into()])));
        assert!(!g(|g| g.allocations = Some(vec!["a".into(), "c".into()])));
        assert!(Goal { unset: vec!["org".into()], ..Goal::default() }.touches_org());
        assert!(!Goal::default().touches_org());
    }
}
