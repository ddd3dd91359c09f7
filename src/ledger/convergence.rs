//! How a tag run (or a bulk re-pin) converged, from stored history only: its passes, the probes' curve, and when each
//! peer first showed every target.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Serialize;

use crate::cluster::Membership;
use crate::store::runs::{self, PassRow, ProbeRow, RunRow};

/// A run's convergence (also the JSON of `ledger convergence --json`).
#[derive(Debug, Serialize)]
pub struct Convergence {
    pub run: RunRow,
    pub passes: Vec<PassRow>,
    pub curve: Vec<ProbeRow>,
    /// Per peer: seconds after the run started when it first showed every target (`null`: never).
    pub converged_after: BTreeMap<String, Option<f64>>,
    /// The cluster's members the run read and those it did not (`null`: not recorded).
    pub membership: Option<Membership>,
}

/// The run `id` (default: the latest tag run that was not a dry run) and how it converged.
pub fn load(conn: &rusqlite::Connection, id: Option<i64>) -> anyhow::Result<Convergence> {
    let id = match id {
        Some(id) => id,
        None => match runs::latest_in_passes(conn)? {
            Some(id) => id,
            None => bail!(
                "the ledger has no tag run yet, nor a bulk re-pin (a dry run sends nothing and does not count): run `ledger tag --org ORG` first"
            ),
        },
    };
    let Some(run) = runs::get(conn, id)? else {
        bail!("there is no run {id}");
    };
    if run.dry_run {
        bail!(
            "run {id} is a dry run: it sent nothing, so there is no convergence to show (`ledger convergence` alone shows the latest tag run that was not)"
        );
    }
    let bulk = run.kind == crate::domain::RunKind::Repin && runs::has_passes(conn, id)?;
    if run.kind != crate::domain::RunKind::Tag && !bulk {
        bail!(
            "run {id} is {} run without passes: convergence is recorded for tag runs and bulk re-pins (`ledger repin --only/--org/--all`){}",
            crate::report::a_kind(run.kind),
            crate::report::where_else(run.kind)
        );
    }
    let passes = runs::passes(conn, id)?;
    let curve = runs::probes(conn, id)?;
    let peers: std::collections::BTreeSet<&str> = curve.iter().map(|p| p.peer.as_str()).collect();
    let converged_after: BTreeMap<String, Option<f64>> = peers
        .into_iter()
        .map(|peer| (peer.to_string(), crate::report::converged_after(&curve, peer)))
        .collect();
    let membership = crate::report::recorded_membership(conn, id)?;
    Ok(Convergence { run, passes, curve, converged_after, membership })
}

impl Convergence {
    /// Whether every peer read showed every target at some point, and those were every member of
    /// the cluster.
    pub fn every_peer(&self) -> bool {
        !self.converged_after.is_empty()
            && self.converged_after.values().all(Option::is_some)
            && self.membership.as_ref().is_some_and(Membership::every_member_read)
    }
}
