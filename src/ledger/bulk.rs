//! The bulk `ledger repin`: one change (metadata keys, name, replication, expiry, allocations) over
//! a set of pins (`--only FILE`, `--org ORG`, `--all`), planned from a fresh complete snapshot of
//! the write peer and carried out in the passes of [`migration`] — the same safe, recorded re-pins
//! (every other option kept), per-peer verification and convergence record as `ledger tag`. A pin
//! another organisation owns is never changed in a way that takes it from them unless `force`.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client, Membership};
use crate::context::Context;
use crate::domain::{PlanClass, RunKind, RunState};
use crate::ledger::migration::{self, Fields, Goal, Migration, PassReport, Passes};
use crate::ledger::run::{Run, Spec};
use crate::ledger::{members, snapshot};
use crate::store::{Store, runs, snapshots as db};

/// Which pins a bulk re-pin is over. `org`: that organisation's pins (with `only`: the listed pins
/// must be its own). Neither `only` nor `org`: every pin (`--all`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub only: Option<HashSet<String>>,
    pub org: Option<String>,
}

/// How a bulk re-pin is asked to behave.
#[derive(Debug, Clone)]
pub struct Options {
    pub selection: Selection,
    pub goal: Goal,
    /// Change pins another organisation owns too.
    pub force: bool,
    /// The peer that takes the writes (default: the cluster's first peer).
    pub peer: Option<String>,
    pub dry_run: bool,
    pub passes: Passes,
}

impl Options {
    /// The options as the run records them (`runs.params`).
    fn params(&self, clients: &[Client]) -> serde_json::Value {
        serde_json::json!({
            "bulk": true,
            "only": self.selection.only.as_ref().map(|o| o.len()),
            "org": self.selection.org, "all": self.selection.only.is_none() && self.selection.org.is_none(),
            "goal": self.goal, "force": self.force,
            "settle": crate::ids::format_duration(self.passes.settle),
            "max_passes": self.passes.max_passes, "concurrency": self.passes.concurrency,
            "peers": clients.iter().map(|c| c.base().to_string()).collect::<Vec<_>>(),
        })
    }

    /// Why a pin owned by `owner` must be left alone, if it must.
    fn clobbers(&self, owner: Option<&str>) -> Option<String> {
        if self.force {
            return None;
        }
        if let Some(org) = &self.selection.org
            && owner != Some(org.as_str())
        {
            return Some(match owner {
                Some(o) => format!("owned by {o}, not {org} (--force re-pins it anyway)"),
                None => format!("not owned by {org}: it has no org (--force re-pins it anyway)"),
            });
        }
        let owner = owner?;
        let takes = match self.goal.set.get("org") {
            Some(new) => new != owner,
            None => self.goal.unset.iter().any(|k| k == "org"),
        };
        takes.then(|| {
            format!(
                "owned by {owner}: the change would take it from them (--force re-pins it anyway)"
            )
        })
    }
}

/// The plan: which pins get the change, which already show it, which are left alone and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub snapshot: i64,
    pub targets: Vec<String>,
    pub already: usize,
    #[serde(skip)]
    pub already_cids: Vec<String>,
    /// Pins the change would take from another organisation (or, with `--org`, listed pins that
    /// are not its own): left alone.
    pub conflicts: Vec<Conflict>,
    /// CIDs listed with `--only` that the write peer does not hold.
    pub not_pinned: Vec<String>,
}

/// A pin left alone: its owner (`None`: unowned) and why.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub cid: String,
    pub owner: Option<String>,
    pub why: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: i64,
    pub dry_run: bool,
    pub goal: Goal,
    pub plan: Plan,
    pub passes: Vec<PassReport>,
    pub converged: bool,
    /// Per peer ID: targets not (yet) shown as asked there.
    pub stragglers: BTreeMap<String, Vec<String>>,
    /// Pins left alone at their re-pin (owner changed since the plan, refused), with the reason.
    pub not_done: Vec<(String, String)>,
    #[serde(flatten)]
    pub membership: Membership,
    pub seconds: f64,
}

impl Report {
    /// Whether a person must look at the run: stragglers, conflicts, listed pins not pinned, pins
    /// left alone at their re-pin, members not read.
    pub fn needs_attention(&self) -> bool {
        (!self.dry_run && !self.converged)
            || !self.plan.conflicts.is_empty()
            || !self.plan.not_pinned.is_empty()
            || !self.not_done.is_empty()
            || (!self.dry_run && !self.membership.every_member_read())
    }
}

/// Classifies the pins of the write peer's snapshot.
pub fn plan(store: &Store, snap: &db::SnapshotRow, opts: &Options) -> anyhow::Result<Plan> {
    let mut plan = Plan { snapshot: snap.id, ..Default::default() };
    let mut seen = HashSet::new();
    let only = opts.selection.only.as_ref();
    db::pins_of(&store.conn, snap, |p| {
        if only.is_some_and(|o| !o.contains(&p.cid)) {
            return Ok(());
        }
        seen.insert(p.cid.clone());
        let metadata: BTreeMap<String, String> =
            p.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
        let owner = metadata.get("org").map(String::as_str).filter(|o| !o.is_empty());
        // `--org` alone selects that organisation's pins; the others are not in the set.
        let elsewhere = opts.selection.org.as_deref().is_some_and(|o| owner != Some(o));
        if elsewhere && only.is_none() {
            return Ok(());
        }
        if let Some(why) = opts.clobbers(owner) {
            plan.conflicts.push(Conflict { cid: p.cid, owner: owner.map(str::to_string), why });
            return Ok(());
        }
        let allocations: Vec<String> = serde_json::from_str(&p.allocations).unwrap_or_default();
        let fields = Fields {
            metadata: &metadata,
            name: &p.name,
            replication: (p.replication_min as i32, p.replication_max as i32),
            expire_at: p.expire_at.as_deref(),
            allocations: &allocations,
        };
        if opts.goal.shows_fields(&fields) {
            plan.already += 1;
            plan.already_cids.push(p.cid);
        } else {
            plan.targets.push(p.cid);
        }
        Ok(())
    })?;
    if let Some(only) = only {
        plan.not_pinned = only.difference(&seen).cloned().collect();
        plan.not_pinned.sort();
    }
    Ok(plan)
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
    let Some(row) = db::get(&store.conn, snap.id)? else {
        anyhow::bail!("the snapshot {} just taken is not in the ledger", snap.id);
    };
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
                plan.conflicts
                    .iter()
                    .map(|c| (c.cid.as_str(), PlanClass::Conflict, c.owner.as_deref())),
            ),
    )?;
    tx.commit()?;
    Ok(plan)
}

/// Runs the bulk re-pin: plan, then pass after pass until every peer shows every target as asked.
pub async fn run(ctx: &Context, opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let clients = ctx.clients(&ctx.peers(opts.peer.as_deref())?)?;
    let write = &clients[0];
    let org = opts.selection.org.as_deref().or(opts.goal.set.get("org").map(String::as_str));
    let spec =
        Spec { kind: RunKind::Repin, org, params: opts.params(&clients), dry_run: opts.dry_run };
    let run = Run::begin(ctx, write, spec).await?;
    let plan = plan_run(ctx, &run, write, opts).await?;
    let mut report = Report {
        run: run.id(),
        dry_run: opts.dry_run,
        goal: opts.goal.clone(),
        plan,
        passes: Vec::new(),
        converged: false,
        stragglers: BTreeMap::new(),
        not_done: Vec::new(),
        membership: Membership::default(),
        seconds: 0.0,
    };
    if opts.dry_run {
        report.converged = report.plan.targets.is_empty();
        report.seconds = started.elapsed().as_secs_f64();
        run.finish(RunState::Done)?;
        return Ok(report);
    }
    let guard = |pin: &CanonicalPin| {
        opts.clobbers(pin.org()).map(|why| format!("changed since the plan: {why}; left alone"))
    };
    let work = migration::Work {
        clients: &clients,
        passes: &opts.passes,
        goal: &opts.goal,
        guard: &guard,
        targets: &report.plan.targets,
        already: &report.plan.already_cids,
        doing: "re-pinning",
    };
    let mut m = Migration::new(ctx, &run, work, started).await?;
    let passed = migration::drive(&mut m, &opts.passes, started).await?;
    report.passes = passed.passes;
    report.converged = passed.converged;
    report.stragglers = passed.stragglers;
    report.not_done = passed.not_done;
    report.membership = members::check(ctx, std::slice::from_ref(write), &passed.peer_ids).await?;
    run.record_membership(&report.membership)?;
    report.seconds = started.elapsed().as_secs_f64();
    run.finish(if report.needs_attention() { RunState::Attention } else { RunState::Done })?;
    Ok(report)
}
