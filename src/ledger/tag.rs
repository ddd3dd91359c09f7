//! The org-metadata migration: tag every unowned pin with `org=ORG`, pass after pass, until every peer
//! shows every target tagged. Plans from a fresh complete snapshot of the write peer; never touches a
//! pin another organisation owns (unless told to reassign it); re-pins through the safe, recorded path;
//! after each pass waits, then verifies every peer with a snapshot tied to the run and a probe.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client, Membership};
use crate::context::Context;
use crate::domain::{Outcome, PlanClass, RunKind, RunState};
use crate::ledger::run::{Run, Spec};
use crate::ledger::{members, repin, snapshot};
use crate::store::{Store, runs, snapshots as db};

/// How a tag run is asked to behave.
#[derive(Debug, Clone)]
pub struct Options {
    pub org: String,
    /// The peer that takes the writes (default: the cluster's first peer).
    pub peer: Option<String>,
    pub reassign_from: Option<String>,
    pub only: Option<HashSet<String>>,
    pub dry_run: bool,
    pub settle: Duration,
    pub max_passes: u32,
    pub timeout: Duration,
    pub concurrency: usize,
    /// At most this many re-pins per second (`None`: as fast as the concurrency allows).
    pub rate: Option<f64>,
    /// How often to sample every peer while a pass settles (zero: only after it).
    pub probe_every: Duration,
}

impl Options {
    /// The defaults of `ledger tag --org ORG`.
    pub fn new(org: &str) -> Options {
        Options {
            org: org.to_string(),
            peer: None,
            reassign_from: None,
            only: None,
            dry_run: false,
            settle: Duration::from_secs(10),
            max_passes: 5,
            timeout: Duration::from_secs(30 * 60),
            concurrency: 16,
            rate: None,
            probe_every: Duration::from_secs(2),
        }
    }

    /// The options as the run records them (`runs.params`).
    fn params(&self, clients: &[Client]) -> serde_json::Value {
        serde_json::json!({
            "org": self.org, "reassign_from": self.reassign_from,
            "only": self.only.as_ref().map(|o| o.len()),
            "settle": crate::ids::format_duration(self.settle), "max_passes": self.max_passes,
            "concurrency": self.concurrency,
            "peers": clients.iter().map(|c| c.base().to_string()).collect::<Vec<_>>(),
        })
    }
}

/// The plan: which pins get tagged, which are left alone and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub snapshot: i64,
    pub targets: Vec<String>,
    pub already: usize,
    /// Pins already tagged ORG on the write peer: verified on every peer too, so that a run after an
    /// interrupted one ends in the same state.
    #[serde(skip)]
    pub already_cids: Vec<String>,
    /// (cid, owner) of pins another organisation owns: left alone, as a shared cluster expects.
    pub owned_by_others: Vec<(String, String)>,
    /// The same for pins asked for by name (`--only`): conflicts, which need a person.
    pub conflicts: Vec<(String, String)>,
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
    /// Targets shown tagged, per peer ID, after the pass settled.
    pub tagged: BTreeMap<String, usize>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: i64,
    pub org: String,
    pub dry_run: bool,
    pub plan: Plan,
    pub passes: Vec<PassReport>,
    pub converged: bool,
    /// Per peer ID: targets not (yet) tagged there.
    pub stragglers: BTreeMap<String, Vec<String>>,
    /// Pins that changed owner between the plan and the re-pin, or failed, with the reason.
    pub not_tagged: Vec<(String, String)>,
    /// The members the run verified and those it did not (a dry run verifies nothing).
    #[serde(flatten)]
    pub membership: Membership,
    pub seconds: f64,
}

impl Report {
    /// Whether a person must look at the run: stragglers, conflicts (pins asked for by `--only`
    /// that another organisation owns), pins not tagged (an owner changed since the plan, a re-pin
    /// failed or read back otherwise). Pins other organisations own are not conflicts.
    pub fn needs_attention(&self) -> bool {
        !self.converged
            || !self.plan.conflicts.is_empty()
            || !self.not_tagged.is_empty()
            || !self.every_member_read()
    }

    /// Whether every member of the cluster was read: only then may the run say "every peer".
    pub fn every_member_read(&self) -> bool {
        self.membership.every_member_read()
    }
}

/// Classifies the pins of the write peer's snapshot.
pub fn plan(store: &Store, snap: &db::SnapshotRow, opts: &Options) -> anyhow::Result<Plan> {
    let mut plan = Plan { snapshot: snap.id, ..Default::default() };
    db::pins_of(&store.conn, snap, |p| {
        if opts.only.as_ref().is_some_and(|only| !only.contains(&p.cid)) {
            return Ok(());
        }
        let org = p
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<BTreeMap<String, String>>(m).ok())
            .and_then(|m| m.get("org").cloned())
            .filter(|o| !o.is_empty());
        match org {
            None => plan.targets.push(p.cid),
            Some(o) if o == opts.org => {
                plan.already += 1;
                plan.already_cids.push(p.cid);
            }
            Some(o) if opts.reassign_from.as_deref() == Some(o.as_str()) => {
                plan.targets.push(p.cid)
            }
            Some(o) if opts.only.is_some() => plan.conflicts.push((p.cid, o)),
            Some(o) => plan.owned_by_others.push((p.cid, o)),
        }
        Ok(())
    })?;
    Ok(plan)
}

/// Whether a pin as read now may be tagged: another owner (not being reassigned) is a conflict.
fn ownership_guard(opts: &Options) -> impl Fn(&CanonicalPin) -> Option<String> + '_ {
    move |pin| match pin.org() {
        None => None,
        Some(o) if o == opts.org => None,
        Some(o) if opts.reassign_from.as_deref() == Some(o) => None,
        Some(o) => Some(format!("owned by {o}: changed since the plan, left alone")),
    }
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

/// Counts the targets each peer shows tagged now, by reading its pin set (a probe).
async fn probe(
    client: &Client,
    targets: &HashSet<String>,
    org: &str,
) -> anyhow::Result<(usize, HashSet<String>)> {
    let mut stream = client.allocations().await?;
    let mut tagged = HashSet::new();
    while let Some(line) = stream.next_line().await {
        let Ok(pin) = CanonicalPin::from_line(&line) else { continue };
        if pin.org() == Some(org) && targets.contains(&pin.cid) {
            tagged.insert(pin.cid);
        }
    }
    match stream.outcome() {
        Some(crate::cluster::StreamOutcome::Complete) => Ok((tagged.len(), tagged)),
        other => {
            anyhow::bail!("the pin set of {} could not be read whole: {other:?}", client.base())
        }
    }
}

/// Runs the migration: plan, then pass after pass until every peer shows every target tagged.
/// The first of the target's peers (or `opts.peer`) takes the writes; every peer is verified.
pub async fn run(ctx: &Context, opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let clients = ctx.clients(&ctx.peers(opts.peer.as_deref())?)?;
    let write = &clients[0];
    let spec = Spec {
        kind: RunKind::Tag,
        org: Some(&opts.org),
        params: opts.params(&clients),
        dry_run: opts.dry_run,
    };
    let run = Run::begin(ctx, write, spec).await?;
    let plan = plan_run(ctx, &run, write, opts).await?;
    let mut report = Report {
        run: run.id(),
        org: opts.org.clone(),
        dry_run: opts.dry_run,
        plan,
        passes: Vec::new(),
        converged: false,
        stragglers: BTreeMap::new(),
        not_tagged: Vec::new(),
        membership: Membership::default(),
        seconds: 0.0,
    };
    if opts.dry_run {
        report.converged = report.plan.targets.is_empty();
        report.seconds = started.elapsed().as_secs_f64();
        run.finish(RunState::Done)?;
        return Ok(report);
    }
    let mut m = Migration::new(ctx, &clients, &run, opts, &report.plan, started).await?;
    for pass in 1..=opts.max_passes {
        let mut pr = m.repin(pass, &mut report).await?;
        m.settle(pass).await?;
        let all_there = m.verify(pass, &mut pr, &mut report).await?;
        report.passes.push(pr);
        if all_there {
            report.converged = true;
            break;
        }
        if started.elapsed() > opts.timeout {
            break;
        }
    }
    report.membership = members::check(ctx, std::slice::from_ref(write), &m.peer_ids).await?;
    run.record_membership(&report.membership)?;
    report.seconds = started.elapsed().as_secs_f64();
    run.finish(if report.needs_attention() { RunState::Attention } else { RunState::Done })?;
    Ok(report)
}

/// Plans from a fresh complete snapshot of the write peer, and records the plan.
async fn plan_run(
    ctx: &Context,
    run: &Run<'_>,
    write: &Client,
    opts: &Options,
) -> anyhow::Result<Plan> {
    let store = ctx.store()?;
    let snap_opts = snapshot::Options { run: Some((run.id(), 0)) };
    let snap = snapshot::take(store, write, ctx.cluster_name()?, &snap_opts, |_| {}).await?;
    if !snap.complete {
        anyhow::bail!(
            "cannot plan: the snapshot of {} is incomplete: {}",
            write.base(),
            snap.error.unwrap_or_default()
        );
    }
    let row = db::get(&store.conn, snap.id)?.expect("the snapshot just taken");
    let plan = plan(store, &row, opts)?;
    let tx = store.conn.unchecked_transaction()?;
    runs::record_plan(
        &tx,
        run.id(),
        plan.targets
            .iter()
            .map(|c| (c.as_str(), PlanClass::Target, None))
            .chain(plan.already_cids.iter().map(|c| (c.as_str(), PlanClass::Already, None)))
            .chain(
                plan.owned_by_others
                    .iter()
                    .chain(&plan.conflicts)
                    .map(|(c, o)| (c.as_str(), PlanClass::Conflict, Some(o.as_str()))),
            ),
    )?;
    tx.commit()?;
    Ok(plan)
}

/// The passes of a migration, in three steps each: [`repin`](Migration::repin) what the write peer
/// does not show tagged, [`settle`](Migration::settle) while sampling every peer, then
/// [`verify`](Migration::verify) every peer with a snapshot tied to the run and a probe.
struct Migration<'a> {
    ctx: &'a Context,
    store: &'a Store,
    clients: &'a [Client],
    run: i64,
    opts: &'a Options,
    started: Instant,
    /// Every pin that should end up tagged: the targets and those already tagged.
    targets: HashSet<String>,
    /// What the next pass re-pins.
    to_tag: Vec<String>,
    /// Pins that cannot be tagged (a conflict or a refusal): not retried, not waited for.
    gave_up: HashSet<String>,
    /// Each peer's ID, for the samples taken while a pass settles: asked once, and again before a
    /// sample while unknown (`None`: `/id` failed); a peer's samples are keyed by its ID only.
    peer_ids: Vec<Option<String>>,
    set: BTreeMap<String, String>,
}

impl<'a> Migration<'a> {
    async fn new(
        ctx: &'a Context,
        clients: &'a [Client],
        run: &Run<'_>,
        opts: &'a Options,
        plan: &Plan,
        started: Instant,
    ) -> anyhow::Result<Migration<'a>> {
        let mut peer_ids = Vec::with_capacity(clients.len());
        for c in clients {
            let id = peer_id(c).await;
            if id.is_none() {
                tracing::warn!("{} did not say its ID: no sample of it until it does", c.base());
            }
            peer_ids.push(id);
        }
        Ok(Migration {
            ctx,
            store: ctx.store()?,
            clients,
            run: run.id(),
            opts,
            started,
            targets: plan.targets.iter().chain(&plan.already_cids).cloned().collect(),
            to_tag: plan.targets.clone(),
            gave_up: HashSet::new(),
            peer_ids,
            set: BTreeMap::from([("org".to_string(), opts.org.clone())]),
        })
    }

    /// The targets still wanted on every peer.
    fn wanted(&self) -> HashSet<String> {
        self.targets.difference(&self.gave_up).cloned().collect()
    }

    /// Step 1: re-pins what is left to tag through the write peer, and records the pass.
    async fn repin(&mut self, pass: u32, report: &mut Report) -> anyhow::Result<PassReport> {
        let mut pr = PassReport { pass, ..Default::default() };
        let pass_started = crate::store::now_text();
        let batch: Vec<String> =
            self.to_tag.iter().filter(|c| !self.gave_up.contains(*c)).cloned().collect();
        let guard = ownership_guard(self.opts);
        let change =
            repin::Change { set: &self.set, unset: &[], guard: Some(&guard), per_cid: None };
        let pace = repin::Pace { concurrency: self.opts.concurrency, rate: self.opts.rate };
        let b = repin::Batch {
            conn: &self.store.conn,
            client: &self.clients[0],
            at: (self.run, pass as i64),
            change: &change,
            pace: &pace,
            clock: self.ctx.clock,
        };
        let pb = self.ctx.progress(Some(batch.len() as u64));
        pb.set_message("tagging");
        let results = repin::safe_repins(&b, &batch, |n| pb.set_position(n as u64)).await?;
        pb.finish_and_clear();
        for o in results {
            pr.attempted += 1;
            match o.outcome {
                Outcome::Applied => pr.applied += 1,
                Outcome::Unchanged => pr.unchanged += 1,
                Outcome::Conflict | Outcome::Refused => {
                    if o.outcome == Outcome::Conflict {
                        pr.conflicts += 1;
                    } else {
                        pr.refused += 1;
                    }
                    self.gave_up.insert(o.cid.clone());
                    report.not_tagged.push((o.cid, o.error.unwrap_or_default()));
                }
                _ => {
                    pr.failed += 1;
                    tracing::debug!(cid = %o.cid, "re-pin failed: {}", o.error.unwrap_or_default());
                }
            }
        }
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
        let wanted = self.wanted();
        let every = self.opts.probe_every;
        let settle_end = tokio::time::Instant::now() + self.opts.settle;
        while !every.is_zero() && tokio::time::Instant::now() + every < settle_end {
            tokio::time::sleep(every).await;
            for (i, client) in self.clients.iter().enumerate() {
                if self.peer_ids[i].is_none() {
                    self.peer_ids[i] = peer_id(client).await;
                }
                // Whose pin set it is, unknown until the peer says: no sample until then.
                let Some(peer) = &self.peer_ids[i] else { continue };
                let Ok((n, _)) = probe(client, &wanted, &self.opts.org).await else { continue };
                self.add_probe(pass, peer, n, wanted.len())?;
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
    /// every peer shows every wanted target tagged. The next pass re-pins what the write peer lacks.
    async fn verify(
        &mut self,
        pass: u32,
        pr: &mut PassReport,
        report: &mut Report,
    ) -> anyhow::Result<bool> {
        let wanted = self.wanted();
        let cluster = self.ctx.cluster_name()?;
        let mut all_there = true;
        report.stragglers.clear();
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
                    let mut missing: Vec<String> = wanted.iter().cloned().collect();
                    missing.sort();
                    // By its ID when known; a peer that never told its ID is named by its URL here.
                    let who = self.peer_ids[i].clone().unwrap_or_else(|| client.base().to_string());
                    report.stragglers.insert(who, missing);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (n, tagged) = match probe(client, &wanted, &self.opts.org).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("probe failed: {e:#}");
                    all_there = false;
                    continue;
                }
            };
            self.peer_ids[i] = Some(s.peer.clone());
            self.add_probe(pass, &s.peer, n, wanted.len())?;
            pr.tagged.insert(s.peer.clone(), n);
            let mut missing: Vec<String> = wanted.difference(&tagged).cloned().collect();
            missing.sort();
            if i == 0 {
                self.to_tag = missing.clone();
            }
            if !missing.is_empty() {
                all_there = false;
                report.stragglers.insert(s.peer, missing);
            }
        }
        Ok(all_there)
    }
}
