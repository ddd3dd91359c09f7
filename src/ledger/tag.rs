//! The org-metadata migration: tag every unowned pin with `org=ORG`, pass after pass, until every peer
//! shows every target tagged. Plans from a fresh complete snapshot of the write peer; never touches a
//! pin another organisation owns (unless told to reassign it); re-pins through the safe, recorded path;
//! after each pass waits, then verifies every peer with a snapshot tied to the run and a probe.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::ledger::migration::{self, Goal, Migration};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client, Membership};
use crate::context::Context;
use crate::domain::{PlanClass, RunKind, RunState};
use crate::ledger::run::{Run, Spec};
use crate::ledger::{members, snapshot};
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

    /// How the passes go.
    fn passes(&self) -> migration::Passes {
        migration::Passes {
            settle: self.settle,
            probe_every: self.probe_every,
            max_passes: self.max_passes,
            timeout: self.timeout,
            concurrency: self.concurrency,
            rate: self.rate,
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

pub use crate::ledger::migration::PassReport;

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
    let goal = Goal::tag(&opts.org);
    let passes = opts.passes();
    let guard = ownership_guard(opts);
    let work = migration::Work {
        clients: &clients,
        passes: &passes,
        goal: &goal,
        guard: &guard,
        targets: &report.plan.targets,
        already: &report.plan.already_cids,
        doing: "tagging",
    };
    let mut m = Migration::new(ctx, &run, work, started).await?;
    let passed = migration::drive(&mut m, &passes, started).await?;
    report.passes = passed.passes;
    report.converged = passed.converged;
    report.stragglers = passed.stragglers;
    report.not_tagged = passed.not_done;
    report.membership = members::check(ctx, std::slice::from_ref(write), &passed.peer_ids).await?;
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
