//! The org-metadata migration: tag every unowned pin with `org=ORG`, pass after pass, until every peer
//! shows every target tagged. Plans from a fresh complete snapshot of the write peer; never touches a
//! pin another organisation owns (unless told to reassign it); re-pins through the safe, recorded path;
//! after each pass waits, then verifies every peer with a snapshot tied to the run and a probe.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client};
use crate::ledger::{repin, snapshot};
use crate::store::{Store, runs, snapshots as db};

/// How a tag run is asked to behave.
#[derive(Debug, Clone)]
pub struct Options {
    pub org: String,
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
    /// (cid, owner) of pins another organisation owns.
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
    pub seconds: f64,
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
            Some(o) => plan.conflicts.push((p.cid, o)),
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

/// Runs the migration. `clients[0]` is the write peer; every client is verified.
pub async fn run(
    store: &mut Store,
    cluster: &str,
    clients: &[Client],
    opts: &Options,
    mut progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let write = &clients[0];
    let me = write.id().await?;
    runs::mark_interrupted(&store.conn)?;
    let settled = repin::reconcile(&store.conn, write, cluster).await?;
    if settled > 0 {
        tracing::info!(settled, "settled re-pins left pending by an interrupted run");
    }
    let params = serde_json::json!({
        "org": opts.org, "reassign_from": opts.reassign_from, "only": opts.only.as_ref().map(|o| o.len()),
        "settle": crate::ids::format_duration(opts.settle), "max_passes": opts.max_passes,
        "concurrency": opts.concurrency, "peers": clients.iter().map(|c| c.base().to_string()).collect::<Vec<_>>(),
    });
    let run = runs::begin(
        &store.conn,
        "tag",
        cluster,
        &me.id,
        write.base().as_str(),
        Some(&opts.org),
        &params.to_string(),
        opts.dry_run,
    )?;

    // Plan from a fresh complete snapshot of the write peer.
    let snap =
        snapshot::take(store, write, cluster, &snapshot::Options { run: Some((run, 0)) }, |_| {})
            .await?;
    if !snap.complete {
        runs::finish(&store.conn, run, "failed")?;
        anyhow::bail!(
            "cannot plan: the snapshot of {} is incomplete: {}",
            write.base(),
            snap.error.unwrap_or_default()
        );
    }
    let row = db::get(&store.conn, snap.id)?.expect("the snapshot just taken");
    let plan = plan(store, &row, opts)?;
    runs::record_plan(
        &store.conn,
        run,
        plan.targets
            .iter()
            .map(|c| (c.as_str(), "target", None))
            .chain(plan.already_cids.iter().map(|c| (c.as_str(), "already", None)))
            .chain(plan.conflicts.iter().map(|(c, o)| (c.as_str(), "conflict", Some(o.as_str())))),
    )?;
    let mut report = Report {
        run,
        org: opts.org.clone(),
        dry_run: opts.dry_run,
        plan: plan.clone(),
        passes: Vec::new(),
        converged: false,
        stragglers: BTreeMap::new(),
        not_tagged: Vec::new(),
        seconds: 0.0,
    };
    if opts.dry_run {
        runs::finish(&store.conn, run, "done")?;
        report.converged = plan.targets.is_empty();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let targets: HashSet<String> = plan.targets.iter().chain(&plan.already_cids).cloned().collect();
    let set = BTreeMap::from([("org".to_string(), opts.org.clone())]);
    let guard = ownership_guard(opts);
    let mut to_tag: Vec<String> = plan.targets.clone();
    // Each peer's ID, asked once, for the samples taken while a pass settles.
    let mut peer_ids = Vec::with_capacity(clients.len());
    for c in clients {
        peer_ids.push(c.id().await.map(|i| i.id).unwrap_or_else(|_| c.base().to_string()));
    }
    let mut gave_up: HashSet<String> = HashSet::new();
    for pass in 1..=opts.max_passes {
        let mut pr = PassReport { pass, ..Default::default() };
        let pass_started = crate::store::now_text();
        let batch: Vec<String> = to_tag.iter().filter(|c| !gave_up.contains(*c)).cloned().collect();
        let total = batch.len() as u64;
        let change = repin::Change { set: &set, unset: &[], guard: Some(&guard), per_cid: None };
        let pace = repin::Pace { concurrency: opts.concurrency, rate: opts.rate };
        let results = repin::safe_repins(
            &store.conn,
            write,
            (run, pass as i64),
            &batch,
            &change,
            &pace,
            |n| progress("tagging", n as u64, total),
        )
        .await?;
        for o in results {
            pr.attempted += 1;
            match o.outcome.as_str() {
                "applied" => pr.applied += 1,
                "unchanged" => pr.unchanged += 1,
                "conflict" => {
                    pr.conflicts += 1;
                    gave_up.insert(o.cid.clone());
                    report.not_tagged.push((o.cid, o.error.unwrap_or_default()));
                }
                "refused" => {
                    pr.refused += 1;
                    gave_up.insert(o.cid.clone());
                    report.not_tagged.push((o.cid, o.error.unwrap_or_default()));
                }
                _ => {
                    pr.failed += 1;
                    tracing::debug!(cid = %o.cid, "re-pin failed: {}", o.error.unwrap_or_default());
                }
            }
        }
        store.conn.execute(
            "INSERT INTO passes (run_id, pass, started_at, finished_at, targets, attempted, succeeded, failed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![run, pass, pass_started, crate::store::now_text(), targets.len() as i64,
                pr.attempted as i64, (pr.applied + pr.unchanged) as i64, (pr.failed + pr.refused + pr.conflicts) as i64],
        )?;
        // Settle, then verify every peer: a snapshot tied to the run and pass, and a probe.
        let wanted: HashSet<String> = targets.difference(&gave_up).cloned().collect();
        // While the pass settles, sample every peer now and then: the time-resolved curve.
        let settle_end = tokio::time::Instant::now() + opts.settle;
        while !opts.probe_every.is_zero()
            && tokio::time::Instant::now() + opts.probe_every < settle_end
        {
            tokio::time::sleep(opts.probe_every).await;
            for (client, peer) in clients.iter().zip(&peer_ids) {
                let Ok((n, _)) = probe(client, &wanted, &opts.org).await else { continue };
                runs::add_probe(
                    &store.conn,
                    (run, pass as i64),
                    peer,
                    started.elapsed().as_secs_f64(),
                    n,
                    wanted.len(),
                )?;
            }
        }
        tokio::time::sleep_until(settle_end).await;
        let mut all_there = true;
        report.stragglers.clear();
        for client in clients {
            let s = snapshot::take(
                store,
                client,
                cluster,
                &snapshot::Options { run: Some((run, pass as i64)) },
                |_| {},
            )
            .await?;
            let (n, tagged) = match probe(client, &wanted, &opts.org).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("probe failed: {e:#}");
                    all_there = false;
                    continue;
                }
            };
            runs::add_probe(
                &store.conn,
                (run, pass as i64),
                &s.peer,
                started.elapsed().as_secs_f64(),
                n,
                wanted.len(),
            )?;
            pr.tagged.insert(s.peer.clone(), n);
            if n < wanted.len() {
                all_there = false;
                let mut missing: Vec<String> = wanted.difference(&tagged).cloned().collect();
                missing.sort();
                report.stragglers.insert(s.peer.clone(), missing);
            }
            if std::ptr::eq(client, write) {
                // The next pass re-pins only what the write peer does not show tagged.
                to_tag = wanted.difference(&tagged).cloned().collect();
                to_tag.sort();
            }
        }
        report.passes.push(pr);
        if all_there {
            report.converged = true;
            break;
        }
        if started.elapsed() > opts.timeout {
            break;
        }
    }
    let attention =
        !report.converged || !plan.conflicts.is_empty() || !report.not_tagged.is_empty();
    runs::finish(&store.conn, run, if attention { "attention" } else { "done" })?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
