//! The report of a tag run: [`load`] gathers everything from the stored history in the ledger (the
//! run, its passes, the convergence probes, the last verification snapshot of each peer, the plan's
//! pins that other organisations own, and the owners of each peer's pins); [`write()`] renders it as
//! one self-contained HTML page ([`html`], with the chart from [`chart`] as inline SVG) and CSV files
//! ([`files`]) in a directory.
//! Nothing here talks to the cluster.

pub mod chart;
pub mod files;
pub mod html;
pub mod table_out;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rusqlite::Connection;

use crate::cluster::Membership;
use crate::domain::PlanClass;
use crate::store::incident::{self, PeerOwners};
use crate::store::report::{self as q, Conflict, Straggler, Verified};
use crate::store::runs::{self, PassRow, ProbeRow, RunRow};

/// Everything a report shows, read from the ledger.
#[derive(Debug, Clone)]
pub struct Report {
    pub run: RunRow,
    /// The peer ID that took the writes.
    pub write_peer: Option<String>,
    pub passes: Vec<PassRow>,
    /// Convergence samples in time order.
    pub probes: Vec<ProbeRow>,
    /// Every peer of the run: the write peer first, then the others by ID.
    pub peers: Vec<String>,
    /// The plan, by class: `target`, `already`, `conflict`.
    pub plan: BTreeMap<PlanClass, i64>,
    pub verified: Vec<Verified>,
    pub stragglers: Vec<Straggler>,
    /// Pins of the plan another organisation owns, left alone.
    pub owned_by_others: Vec<Conflict>,
    /// The run asked for its pins by name (`--only`): those others own are conflicts.
    pub asked_by_name: bool,
    /// Each peer of the run's cluster, its latest complete snapshot by owner.
    pub owners: Vec<PeerOwners>,
    /// The cluster's members the run read and those it did not (`None`: not recorded).
    pub membership: Option<Membership>,
}

/// The run a report is about: the one asked for, or the latest tag run that was not a dry run.
pub fn resolve_run(conn: &Connection, run: Option<i64>) -> anyhow::Result<RunRow> {
    let id = match run {
        Some(id) => id,
        None => match runs::latest_in_passes(conn)? {
            Some(id) => id,
            None => bail!(
                "the ledger has no tag run yet, nor a bulk re-pin (a dry run sends nothing and does not count): run `ledger tag --org ORG` first"
            ),
        },
    };
    let Some(row) = runs::get(conn, id)? else {
        bail!("there is no run {id} in this ledger: `ledger convergence` shows the latest tag run");
    };
    let bulk = row.kind == crate::domain::RunKind::Repin && runs::has_passes(conn, id)?;
    if row.kind != crate::domain::RunKind::Tag && !bulk {
        bail!(
            "run {id} is {} run; reports are made of tag runs and bulk re-pins (`ledger repin --only/--org/--all`){}",
            a_kind(row.kind),
            where_else(row.kind)
        );
    }
    if row.dry_run {
        bail!(
            "run {id} is a dry run: it sent nothing, so there is no report to make (`ledger report` alone reports the latest tag run that was not)"
        );
    }
    Ok(row)
}

/// Reads the report of a tag run from the ledger.
pub fn load(conn: &Connection, run: RunRow) -> anyhow::Result<Report> {
    let id = run.id;
    let write_peer = q::write_peer(conn, id)?;
    let passes = runs::passes(conn, id)?;
    let probes = runs::probes(conn, id)?;
    let verified = q::last_verifications(conn, id)?;
    let org = run.org.clone().unwrap_or_default();
    let stragglers = match run.kind {
        crate::domain::RunKind::Repin => bulk_stragglers(conn, id)?,
        _ => q::stragglers(conn, id, &org)?,
    };
    let owned_by_others = q::owned_by_others(conn, id)?;
    let asked_by_name = q::asked_by_name(conn, id)?;
    let membership = recorded_membership(conn, id)?;
    let plan = q::plan_counts(conn, id)?.into_iter().collect();
    let mut peers: Vec<String> = probes.iter().map(|p| p.peer.clone()).collect();
    peers.extend(verified.iter().map(|v| v.peer.clone()));
    peers.sort();
    peers.dedup();
    // The run's cluster: its peers, by ID, and the series recorded under its name.
    let mut owners = incident::owners(conn)?;
    owners.retain(|o| o.cluster == run.cluster || peers.binary_search(&o.peer).is_ok());
    if let Some(w) = &write_peer
        && let Some(i) = peers.iter().position(|p| p == w)
    {
        let w = peers.remove(i);
        peers.insert(0, w);
    }
    Ok(Report {
        run,
        write_peer,
        passes,
        probes,
        peers,
        plan,
        verified,
        stragglers,
        owned_by_others,
        asked_by_name,
        owners,
        membership,
    })
}

/// The targets of a bulk re-pin that a peer's last verification snapshot does not show as asked
/// (`not-as-asked`, with the org seen) or lacks (`absent`): the run's goal is read from its params.
fn bulk_stragglers(conn: &Connection, run: i64) -> anyhow::Result<Vec<Straggler>> {
    let params: serde_json::Value =
        serde_json::from_str(&runs::params(conn, run)?.unwrap_or_default()).unwrap_or_default();
    let goal: crate::ledger::migration::Goal = serde_json::from_value(params["goal"].clone())
        .with_context(|| format!("run {run} recorded no goal a report can read"))?;
    let mut out = Vec::new();
    for t in q::verified_targets(conn, run)? {
        let state = match &t.version {
            None => Some(("absent", None)),
            Some((name, metadata, rmin, rmax, expire_at, allocations, org)) => {
                let metadata: BTreeMap<String, String> = metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or_default();
                let allocations: Vec<String> =
                    serde_json::from_str(allocations).unwrap_or_default();
                let f = crate::ledger::migration::Fields {
                    metadata: &metadata,
                    name,
                    replication: (*rmin as i32, *rmax as i32),
                    expire_at: expire_at.as_deref(),
                    allocations: &allocations,
                };
                (!goal.shows_fields(&f)).then(|| ("not-as-asked", org.clone()))
            }
        };
        if let Some((state, org)) = state {
            out.push(Straggler {
                peer: t.peer,
                snapshot_id: t.snapshot_id,
                pass: t.pass,
                cid: t.cid,
                state: state.to_string(),
                org,
            });
        }
    }
    Ok(out)
}

/// The members a run read, as it recorded them (`None`: it recorded none).
pub fn recorded_membership(conn: &Connection, run: i64) -> anyhow::Result<Option<Membership>> {
    let Some(json) = runs::membership(conn, run)? else { return Ok(None) };
    let m = serde_json::from_str(&json)
        .with_context(|| format!("run {run}'s recorded members are not readable"))?;
    Ok(Some(m))
}

/// What may be said of the members a run read, when it may not say "every peer": the members it
/// did not read, or that it recorded none. `None` when every member was read.
pub fn unverified(m: Option<&Membership>) -> Option<String> {
    match m {
        Some(m) => m.shortfall("verified"),
        None => Some(
            "which of the cluster's members the run read was not recorded: only the peers shown \
             were verified"
                .into(),
        ),
    }
}

impl Report {
    /// Seconds from the start of the run to the start of each pass.
    pub fn pass_starts(&self) -> Vec<(i64, f64)> {
        self.pass_spans().into_iter().map(|(p, start, _)| (p, start)).collect()
    }

    /// Each pass's re-pin phase: seconds from the start of the run to the pass's start and to the
    /// end of its re-pins (when recorded).
    pub fn pass_spans(&self) -> Vec<(i64, f64, Option<f64>)> {
        let Some(t0) = parse_time(&self.run.started_at) else { return Vec::new() };
        let since = |t: &str| parse_time(t).map(|t| (t - t0).num_milliseconds() as f64 / 1000.0);
        self.passes
            .iter()
            .filter_map(|p| {
                Some((p.pass, since(&p.started_at)?, p.finished_at.as_deref().and_then(since)))
            })
            .collect()
    }

    /// The last sample of a peer in a pass: what the peer showed when the pass ended.
    pub fn at_pass_end(&self, pass: i64, peer: &str) -> Option<&ProbeRow> {
        at_pass_end(&self.probes, pass, peer)
    }

    /// The first sample of a peer in a pass: the first read after the pass's re-pins.
    pub fn first_read(&self, pass: i64, peer: &str) -> Option<&ProbeRow> {
        first_read(&self.probes, pass, peer)
    }

    /// Seconds after the run started when a peer first showed every target (`None`: never).
    pub fn converged_after(&self, peer: &str) -> Option<f64> {
        converged_after(&self.probes, peer)
    }

    /// Whether every member of the cluster was read, so that the report may say "every peer".
    pub fn every_member_read(&self) -> bool {
        self.membership.as_ref().is_some_and(Membership::every_member_read)
    }

    /// Whether every peer read showed every target at its last sample, and those were every member.
    pub fn every_peer_converged(&self) -> bool {
        self.converged() && self.every_member_read()
    }

    /// Whether every peer read showed every target at its last sample.
    pub fn converged(&self) -> bool {
        !self.peers.is_empty()
            && self.peers.iter().all(|peer| {
                self.probes
                    .iter()
                    .rev()
                    .find(|p| &p.peer == peer)
                    .is_some_and(|p| p.tagged >= p.targets)
            })
    }

    /// The plan's count for a class.
    pub fn planned(&self, class: PlanClass) -> i64 {
        self.plan.get(&class).copied().unwrap_or(0)
    }
}

/// The last of `probes` (in time order) of a peer in a pass.
pub fn at_pass_end<'a>(probes: &'a [ProbeRow], pass: i64, peer: &str) -> Option<&'a ProbeRow> {
    probes.iter().rev().find(|p| p.pass == pass && p.peer == peer)
}

/// The first of `probes` (in time order) of a peer in a pass.
pub fn first_read<'a>(probes: &'a [ProbeRow], pass: i64, peer: &str) -> Option<&'a ProbeRow> {
    probes.iter().find(|p| p.pass == pass && p.peer == peer)
}

/// Seconds after the run started when a peer's `probes` first showed every target (`None`: never).
pub fn converged_after(probes: &[ProbeRow], peer: &str) -> Option<f64> {
    probes.iter().find(|p| p.peer == peer && p.tagged >= p.targets).map(|p| p.seconds)
}

/// Percent of `part` in `whole` for display with one decimal (100 when there is nothing to do): short
/// of the whole it stays at most 99.9, so 3511 of 3512 never reads as 100.0%.
pub fn percent(part: i64, whole: i64) -> f64 {
    if whole <= 0 || part >= whole {
        return 100.0;
    }
    (100.0 * part as f64 / whole as f64).min(99.9)
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

/// The files of a written report, in the order written.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Writes `report.html`, `convergence.svg` and the CSV files into `dir` (created if missing).
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut files = Vec::new();
    let svg = chart::svg(report)?;
    let mut put = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
        Ok(())
    };
    put("report.html", &html::page(report, &svg))?;
    put("convergence.svg", &svg)?;
    for (name, write) in files::ALL {
        let path = dir.join(name);
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let sink: Box<dyn std::io::Write> = Box::new(std::io::BufWriter::new(file));
        let mut w = csv::Writer::from_writer(sink);
        write(report, &mut w).with_context(|| format!("cannot write {}", path.display()))?;
        w.flush().with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
    }
    Ok(Written { dir: dir.to_path_buf(), files })
}

/// `a tag`, `an add`: a run kind with its article.
pub fn a_kind(kind: crate::domain::RunKind) -> String {
    let article = if kind == crate::domain::RunKind::Add { "an" } else { "a" };
    format!("{article} {kind}")
}

/// Where what a run of `kind` recorded can be read instead, for a message (empty for none).
pub fn where_else(kind: crate::domain::RunKind) -> &'static str {
    match kind {
        crate::domain::RunKind::Add => {
            ": what an add pinned, peer by peer, is in `ledger export added` and the view added_pins"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_reads_100_only_when_whole() {
        assert_eq!(super::percent(3511, 3512), 99.9);
        assert_eq!(super::percent(3512, 3512), 100.0);
        assert_eq!(super::percent(0, 0), 100.0);
        assert_eq!(format!("{:.1}", super::percent(2749, 3512)), "78.3");
    }
}
