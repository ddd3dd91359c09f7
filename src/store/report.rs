//! The queries behind `ledger report`: a tag run's write peer, its conflicts and the stragglers its
//! last verification snapshots show (the owners come from `store::incident`, as for `ledger owners`).
//! Read-only; every answer comes from stored history, nothing from the cluster.

use crate::domain::PlanClass;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The peer ID that took a run's writes.
pub fn write_peer(conn: &Connection, run: i64) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT peer FROM runs WHERE id = ?1", [run], |r| r.get(0)).optional()
}

/// Pins of the plan owned by another organisation, never touched by the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Conflict {
    pub cid: String,
    pub owner: Option<String>,
}

/// The pins of a tag run's plan that another organisation owns (class `conflict`), with the owner.
pub fn owned_by_others(conn: &Connection, run: i64) -> rusqlite::Result<Vec<Conflict>> {
    let mut stmt = conn.prepare(
        "SELECT c.cid, t.owner FROM run_targets t JOIN cids c ON c.id = t.cid_id
         WHERE t.run_id = ?1 AND t.class = 'conflict' ORDER BY t.owner, c.cid",
    )?;
    let rows = stmt.query_map([run], |r| Ok(Conflict { cid: r.get(0)?, owner: r.get(1)? }))?;
    rows.collect()
}

/// Whether the run tagged only pins asked for by name (`--only`): then a pin another organisation
/// owns is a conflict.
pub fn asked_by_name(conn: &Connection, run: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT coalesce(json_extract(params, '$.only') IS NOT NULL, 0) FROM runs WHERE id = ?1",
        [run],
        |r| r.get(0),
    )
}

/// How many pins of the plan fell in each class (`target`, `already`, `conflict`).
pub fn plan_counts(conn: &Connection, run: i64) -> rusqlite::Result<Vec<(PlanClass, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT class, count(*) FROM run_targets WHERE run_id = ?1 GROUP BY class ORDER BY class",
    )?;
    let rows = stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The last complete verification snapshot of one peer in a run (pass 1 and later; pass 0 is the
/// snapshot the plan was made from).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verified {
    pub peer: String,
    pub snapshot_id: i64,
    pub pass: i64,
    pub finished_at: Option<String>,
}

pub fn last_verifications(conn: &Connection, run: i64) -> rusqlite::Result<Vec<Verified>> {
    let mut stmt = conn.prepare(
        "SELECT se.peer, s.id, s.pass, s.finished_at FROM snapshots s JOIN series se ON se.id = s.series_id
         WHERE s.id IN (SELECT max(id) FROM snapshots WHERE run_id = ?1 AND pass >= 1
                        AND state = 'complete' GROUP BY series_id)
         ORDER BY se.peer",
    )?;
    let rows = stmt.query_map([run], |r| {
        Ok(Verified {
            peer: r.get(0)?,
            snapshot_id: r.get(1)?,
            pass: r.get(2)?,
            finished_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// A target of the run that a peer's last verification snapshot does not show tagged with the run's
/// org: `untagged` (no org), `other-org` (`org` says whose), or `absent` (not in that snapshot).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Straggler {
    pub peer: String,
    pub snapshot_id: i64,
    pub pass: i64,
    pub cid: String,
    pub state: String,
    pub org: Option<String>,
}

/// Every straggler of a run, by peer and CID. `org` is the org the run tagged with.
pub fn stragglers(conn: &Connection, run: i64, org: &str) -> rusqlite::Result<Vec<Straggler>> {
    let mut stmt = conn.prepare(
        "WITH last AS (
             SELECT series_id, max(id) AS snap FROM snapshots
             WHERE run_id = ?1 AND pass >= 1 AND state = 'complete' GROUP BY series_id
         )
         SELECT se.peer, last.snap, s.pass, c.cid, o.cid_id IS NULL, v.org
         FROM last JOIN series se ON se.id = last.series_id JOIN snapshots s ON s.id = last.snap
         JOIN run_targets t ON t.run_id = ?1 AND t.class IN ('target', 'already')
         JOIN cids c ON c.id = t.cid_id
         LEFT JOIN observations o ON o.cid_id = t.cid_id AND o.series_id = last.series_id
              AND o.first_snapshot <= last.snap AND (o.last_snapshot IS NULL OR o.last_snapshot >= last.snap)
         LEFT JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
         WHERE v.org IS NULL OR v.org != ?2
         ORDER BY se.peer, c.cid",
    )?;
    let rows = stmt.query_map(params![run, org], |r| {
        let absent: bool = r.get(4)?;
        let seen: Option<String> = r.get(5)?;
        let state = match (absent, &seen) {
            (true, _) => "absent",
            (false, None) => "untagged",
            (false, Some(_)) => "other-org",
        };
        Ok(Straggler {
            peer: r.get(0)?,
            snapshot_id: r.get(1)?,
            pass: r.get(2)?,
            cid: r.get(3)?,
            state: state.to_string(),
            org: seen,
        })
    })?;
    rows.collect()
}

/// A target of a run as a peer's last verification snapshot holds it (`None`: absent there).
#[derive(Debug, Clone)]
pub struct VerifiedTarget {
    pub peer: String,
    pub snapshot_id: i64,
    pub pass: i64,
    pub cid: String,
    /// name, metadata (JSON), replication min and max, expire_at, allocations (JSON), org.
    #[allow(clippy::type_complexity)]
    pub version: Option<(String, Option<String>, i64, i64, Option<String>, String, Option<String>)>,
}

/// Every target of a run (classes `target` and `already`) as each peer's last complete
/// verification snapshot holds it, by peer and CID: what a bulk re-pin's stragglers are read from.
pub fn verified_targets(conn: &Connection, run: i64) -> rusqlite::Result<Vec<VerifiedTarget>> {
    let mut stmt = conn.prepare(
        "WITH last AS (
             SELECT series_id, max(id) AS snap FROM snapshots
             WHERE run_id = ?1 AND pass >= 1 AND state = 'complete' GROUP BY series_id
         )
         SELECT se.peer, last.snap, s.pass, c.cid, o.cid_id IS NULL, v.name, v.metadata,
                v.replication_min, v.replication_max, v.expire_at, v.allocations, v.org
         FROM last JOIN series se ON se.id = last.series_id JOIN snapshots s ON s.id = last.snap
         JOIN run_targets t ON t.run_id = ?1 AND t.class IN ('target', 'already')
         JOIN cids c ON c.id = t.cid_id
         LEFT JOIN observations o ON o.cid_id = t.cid_id AND o.series_id = last.series_id
              AND o.first_snapshot <= last.snap AND (o.last_snapshot IS NULL OR o.last_snapshot >= last.snap)
         LEFT JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
         ORDER BY se.peer, c.cid",
    )?;
    let rows = stmt.query_map([run], |r| {
        let absent: bool = r.get(4)?;
        let version = if absent {
            None
        } else {
            Some((r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?))
        };
        Ok(VerifiedTarget {
            peer: r.get(0)?,
            snapshot_id: r.get(1)?,
            pass: r.get(2)?,
            cid: r.get(3)?,
            version,
        })
    })?;
    rows.collect()
}
