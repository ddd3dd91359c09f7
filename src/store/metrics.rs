//! What `ledger watch --metrics` serves that is read straight from the ledger: each peer's latest
//! snapshot, and the runs in progress with their re-pins and convergence samples so far.

use rusqlite::{Connection, params};

use super::snapshots::SnapshotRow;
use crate::domain::{Outcome, PlanClass, RunKind, RunState};

/// The latest snapshot of each peer of `cluster`, whatever its state, by peer.
pub fn latest_snapshots(conn: &Connection, cluster: &str) -> rusqlite::Result<Vec<SnapshotRow>> {
    let mut ids = conn.prepare(
        "SELECT max(s.id) FROM snapshots s JOIN series se ON se.id = s.series_id
         WHERE se.cluster = ?1 GROUP BY se.peer ORDER BY se.peer",
    )?;
    let ids: Vec<i64> = ids.query_map([cluster], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(super::snapshots::get(conn, id)?);
    }
    Ok(out)
}

/// A run in progress (`runs.state = 'running'`), as far as it has come.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRun {
    pub id: i64,
    pub kind: RunKind,
    pub org: Option<String>,
    /// The pins of its plan that are targets.
    pub targets: i64,
    /// The pass it is in: one more than the passes it has finished.
    pub pass: i64,
    /// Its re-pins by outcome; `None`: not settled yet (pending, or sent and not read back).
    pub repins: Vec<(Option<Outcome>, i64)>,
    /// The latest convergence sample of each peer: (peer, targets it showed tagged).
    pub tagged: Vec<(String, i64)>,
}

/// Every run of `cluster` in progress that is not a dry run, oldest first. (A run whose process
/// died stays `running` until the next run marks it interrupted.)
pub fn active_runs(conn: &Connection, cluster: &str) -> rusqlite::Result<Vec<ActiveRun>> {
    let mut runs = conn.prepare_cached(
        "SELECT u.id, u.kind, u.org,
           (SELECT count(*) FROM run_targets t WHERE t.run_id = u.id AND t.class = ?3),
           (SELECT count(*) FROM passes p WHERE p.run_id = u.id) + 1
         FROM runs u WHERE u.cluster = ?1 AND u.state = ?2 AND u.dry_run = 0 ORDER BY u.id",
    )?;
    let rows = runs.query_map(params![cluster, RunState::Running, PlanClass::Target], |r| {
        Ok(ActiveRun {
            id: r.get(0)?,
            kind: r.get(1)?,
            org: r.get(2)?,
            targets: r.get(3)?,
            pass: r.get(4)?,
            repins: Vec::new(),
            tagged: Vec::new(),
        })
    })?;
    let mut out: Vec<ActiveRun> = rows.collect::<Result<_, _>>()?;
    let mut repins = conn.prepare_cached(
        "SELECT outcome, count(*) FROM repins WHERE run_id = ?1 GROUP BY outcome ORDER BY outcome",
    )?;
    let mut tagged = conn.prepare_cached(
        "SELECT peer, tagged FROM probes p WHERE run_id = ?1
           AND seconds = (SELECT max(seconds) FROM probes q WHERE q.run_id = p.run_id AND q.peer = p.peer)
         GROUP BY peer ORDER BY peer",
    )?;
    for run in &mut out {
        run.repins = repins
            .query_map([run.id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        run.tagged = tagged
            .query_map([run.id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs::{self, NewRun};

    fn begin(conn: &Connection, org: &str, dry_run: bool) -> i64 {
        let r = NewRun {
            kind: RunKind::Tag,
            cluster: "c",
            peer: "P",
            peer_url: "http://127.0.0.1:9094/",
            org: Some(org),
            params_json: "{}",
            dry_run,
        };
        runs::begin(conn, &r).unwrap()
    }

    /// Only the runs in progress (not a dry run, not one that ended), each with its plan's
    /// targets and each peer's latest probe.
    #[test]
    fn active_runs_are_the_running_ones_with_each_peers_latest_probe() {
        let store = crate::store::Store::open_in_memory().unwrap();
        let conn = &store.conn;
        let ended = begin(conn, "old", false);
        runs::finish(conn, ended, RunState::Done).unwrap();
        begin(conn, "dry", true);
        let run = begin(conn, "hrdag", false);
        for cid in ["bafy1", "bafy2", "bafy3"] {
            runs::cid_id(conn, cid).unwrap();
        }
        let plan = [
            ("bafy1", PlanClass::Target, None),
            ("bafy2", PlanClass::Target, None),
            ("bafy3", PlanClass::Conflict, Some("other")),
        ];
        runs::record_plan(conn, run, plan.into_iter()).unwrap();
        runs::add_probe(conn, (run, 1), "A", 1.0, 1, 2).unwrap();
        runs::add_probe(conn, (run, 1), "A", 2.0, 2, 2).unwrap();
        runs::add_probe(conn, (run, 1), "B", 1.5, 1, 2).unwrap();
        let active = active_runs(conn, "c").unwrap();
        assert_eq!(active.len(), 1, "{active:?}");
        let a = &active[0];
        assert_eq!(
            (a.id, a.kind, a.org.as_deref(), a.targets, a.pass),
            (run, RunKind::Tag, Some("hrdag"), 2, 1)
        );
        assert_eq!(a.tagged, vec![("A".to_string(), 2), ("B".to_string(), 1)]);
        assert!(a.repins.is_empty());
        assert!(active_runs(conn, "another cluster").unwrap().is_empty());
    }
}
