//! Runs and the re-pin record: intents written before a request, completed after it, reconciled after
//! a crash. Functions take the caller's connection or transaction; the caller commits an intent
//! before its request goes out.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::domain::{Outcome, PlanClass, RepinStatus, RunKind, RunState};
use crate::pin::CanonicalPin;

/// A run about to begin.
pub struct NewRun<'a> {
    pub kind: RunKind,
    pub cluster: &'a str,
    pub peer: &'a str,
    pub peer_url: &'a str,
    pub org: Option<&'a str>,
    pub params_json: &'a str,
    pub dry_run: bool,
}

/// Starts a run (state `running`).
pub fn begin(conn: &Connection, r: &NewRun) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO runs (kind, cluster, peer, peer_url, org, params, dry_run, started_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.kind,
            r.cluster,
            r.peer,
            r.peer_url,
            r.org,
            r.params_json,
            r.dry_run,
            super::now_text(),
            RunState::Running
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records which members of the cluster the run read, as `params.membership` (JSON).
pub fn set_membership(conn: &Connection, run: i64, membership_json: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET params = json_set(coalesce(params, '{}'), '$.membership', json(?2))
         WHERE id = ?1",
        params![run, membership_json],
    )?;
    Ok(())
}

/// The members the run read, as [`set_membership`] recorded them (`None`: a run that recorded
/// none, such as a dry run or one begun before runs recorded them).
pub fn membership(conn: &Connection, run: i64) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT json_extract(params, '$.membership') FROM runs WHERE id = ?1",
        params![run],
        |r| r.get(0),
    )
}

/// Ends a run with its state.
pub fn finish(conn: &Connection, run: i64, state: RunState) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET state = ?2, finished_at = ?3 WHERE id = ?1",
        params![run, state, super::now_text()],
    )?;
    Ok(())
}

/// The id of a CID, inserting it if new.
pub fn cid_id(conn: &Connection, cid: &str) -> rusqlite::Result<i64> {
    let known = conn
        .prepare_cached("SELECT id FROM cids WHERE cid = ?1")?
        .query_row([cid], |r| r.get(0))
        .optional()?;
    match known {
        Some(id) => Ok(id),
        None => {
            conn.prepare_cached("INSERT INTO cids (cid) VALUES (?1)")?.execute([cid])?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// Records a run's plan: every pin with its class and, for a conflict, its owner (call inside the
/// caller's transaction: a plan of a million pins is one commit).
pub fn record_plan<'a>(
    conn: &Connection,
    run: i64,
    rows: impl Iterator<Item = (&'a str, PlanClass, Option<&'a str>)>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "INSERT OR REPLACE INTO run_targets (run_id, cid_id, class, owner)
         SELECT ?1, id, ?3, ?4 FROM cids WHERE cid = ?2",
    )?;
    for (cid, class, owner) in rows {
        stmt.execute(params![run, cid, class, owner])?;
    }
    Ok(())
}

/// One finished pass of a run, with its re-pin counts.
pub struct PassCounts {
    pub pass: i64,
    pub started_at: String,
    pub targets: usize,
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
}

/// Records a finished pass.
pub fn record_pass(conn: &Connection, run: i64, p: &PassCounts) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO passes (run_id, pass, started_at, finished_at, targets, attempted, succeeded, failed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run,
            p.pass,
            p.started_at,
            super::now_text(),
            p.targets as i64,
            p.attempted as i64,
            p.succeeded as i64,
            p.failed as i64
        ],
    )?;
    Ok(())
}

/// Stores a version of a pin read outside a snapshot (before or after a re-pin).
pub fn ensure_version(
    conn: &Connection,
    cid_id: i64,
    pin: &CanonicalPin,
) -> rusqlite::Result<[u8; 16]> {
    let row = super::snapshots::VersionRow::new(cid_id, pin);
    conn.prepare_cached(&super::snapshots::insert_versions_sql(1))?.execute(&row.values()[..])?;
    let digest = pin.digest();
    Ok(digest)
}

/// A re-pin about to be sent.
pub struct Intent<'a> {
    pub run: i64,
    pub pass: i64,
    pub cid_id: i64,
    pub before: Option<[u8; 16]>,
    pub path: &'a str,
    pub query: &'a str,
    pub intended_json: &'a str,
}

/// Records the intent (a request with no answer: status `pending`); durable once the transaction
/// commits.
pub fn intent(conn: &Connection, i: &Intent) -> rusqlite::Result<i64> {
    let id = request(conn, i)?;
    conn.prepare_cached("INSERT INTO repins_unanswered (repin_id) VALUES (?1)")?.execute([id])?;
    Ok(id)
}

/// Inserts a re-pin's request.
fn request(conn: &Connection, i: &Intent) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO repin_requests (run_id, pass, cid_id, before_digest, path, query, intended, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        i.run,
        i.pass,
        i.cid_id,
        i.before,
        i.path,
        i.query,
        i.intended_json,
        super::now_text()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Records a re-pin refused before sending: a request that was never sent, answered `refused`.
pub fn refused(
    conn: &Connection,
    run: i64,
    pass: i64,
    cid_id: i64,
    before: Option<[u8; 16]>,
    reason: &str,
) -> rusqlite::Result<i64> {
    let id = request(
        conn,
        &Intent { run, pass, cid_id, before, path: "", query: "", intended_json: "{}" },
    )?;
    conn.prepare_cached(
        "INSERT INTO repin_answers (repin_id, cid_id, status, error, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, cid_id, RepinStatus::Refused, reason, Outcome::Refused])?;
    Ok(id)
}

/// What became of a re-pin whose intent was recorded.
pub struct Settled {
    pub id: i64,
    /// The pin's, as its request has it.
    pub cid_id: i64,
    /// Whether the cluster took it: status `sent`, else `failed`.
    pub sent: bool,
    pub http_status: Option<u16>,
    pub response: Option<String>,
    pub error: Option<String>,
    /// The digest of the pin as read back.
    pub after: Option<[u8; 16]>,
    pub outcome: Outcome,
}

/// Records what the cluster answered to a re-pin, the pin as read back and the outcome: the re-pin's
/// answer, written once, and the request no longer unanswered.
pub fn settled(conn: &Connection, s: &Settled) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO repin_answers (repin_id, cid_id, status, http_status, response, error,
                                    after_digest, verified_at, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.id,
        s.cid_id,
        if s.sent { RepinStatus::Sent } else { RepinStatus::Failed },
        s.http_status,
        s.response,
        s.error,
        s.after,
        super::now_text(),
        s.outcome
    ])?;
    conn.prepare_cached("DELETE FROM repins_unanswered WHERE repin_id = ?1")?.execute([s.id])?;
    Ok(())
}

/// A re-pin left `pending` by a process that stopped between the intent and the answer.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub id: i64,
    pub run: i64,
    pub cid: String,
    pub cid_id: i64,
    pub intended_json: String,
    /// When the request was about to be sent (RFC 3339).
    pub requested_at: String,
    /// The digest of the pin as read before it.
    pub before_digest: Option<Vec<u8>>,
}

/// Every pending re-pin of runs against this cluster.
pub fn pending(conn: &Connection, cluster: &str) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare(
        "SELECT r.id, r.run_id, c.cid, r.cid_id, r.intended, r.requested_at, r.before_digest
         FROM repins_unanswered o JOIN repin_requests r ON r.id = o.repin_id
         JOIN runs u ON u.id = r.run_id JOIN cids c ON c.id = r.cid_id
         WHERE u.cluster = ?1 ORDER BY r.id",
    )?;
    let rows = stmt.query_map(params![cluster], |r| {
        Ok(Pending {
            id: r.get(0)?,
            run: r.get(1)?,
            cid: r.get(2)?,
            cid_id: r.get(3)?,
            intended_json: r.get(4)?,
            requested_at: r.get(5)?,
            before_digest: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Runs still `running` whose process is gone become `interrupted` (call while holding the run lock).
pub fn mark_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE runs SET state = ?2, finished_at = ?1 WHERE state = ?3",
        params![super::now_text(), RunState::Interrupted, RunState::Running],
    )
}

/// Records a convergence sample: `tagged` of `targets` shown by `peer`, `seconds` after the run began.
pub fn add_probe(
    conn: &Connection,
    (run, pass): (i64, i64),
    peer: &str,
    seconds: f64,
    tagged: usize,
    targets: usize,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO probes (run_id, pass, peer, at, seconds, tagged, targets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![run, pass, peer, super::now_text(), seconds, tagged as i64, targets as i64])?;
    Ok(())
}

/// The latest run of a kind that was not a dry run (a dry run records its plan and sends nothing),
/// if any.
pub fn latest(conn: &Connection, kind: RunKind) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(id) FROM runs WHERE kind = ?1 AND dry_run = 0", [kind], |r| r.get(0))
}

/// The latest run that was not a dry run and went in passes: a tag run, or a bulk re-pin (a re-pin
/// of one pin has no passes).
pub fn latest_in_passes(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT max(id) FROM runs r WHERE dry_run = 0 AND (kind = 'tag'
           OR (kind = 'repin' AND EXISTS (SELECT 1 FROM passes p WHERE p.run_id = r.id)))",
        [],
        |r| r.get(0),
    )
}

/// A run's options as it recorded them (`runs.params`, JSON).
pub fn params(conn: &Connection, run: i64) -> rusqlite::Result<Option<String>> {
    rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT params FROM runs WHERE id = ?1",
        [run],
        |r| r.get(0),
    ))
}

/// Whether a run recorded any pass.
pub fn has_passes(conn: &Connection, run: i64) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM passes WHERE run_id = ?1)", [run], |r| r.get(0))
}

/// A run's header.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub kind: RunKind,
    pub cluster: String,
    pub org: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub state: RunState,
    pub dry_run: bool,
}

pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<RunRow>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT id, kind, cluster, org, started_at, finished_at, state, dry_run FROM runs WHERE id = ?1",
        [id],
        |r| {
            Ok(RunRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                cluster: r.get(2)?,
                org: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                state: r.get(6)?,
                dry_run: r.get(7)?,
            })
        },
    )
    .optional()
}

/// One pass of a run, with its re-pin counts.
#[derive(Debug, Clone, Serialize)]
pub struct PassRow {
    pub pass: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub targets: i64,
    pub attempted: i64,
    pub succeeded: i64,
    pub failed: i64,
}

pub fn passes(conn: &Connection, run: i64) -> rusqlite::Result<Vec<PassRow>> {
    let mut stmt = conn.prepare(
        "SELECT pass, started_at, finished_at, targets, attempted, succeeded, failed FROM passes
         WHERE run_id = ?1 ORDER BY pass",
    )?;
    let rows = stmt.query_map([run], |r| {
        Ok(PassRow {
            pass: r.get(0)?,
            started_at: r.get(1)?,
            finished_at: r.get(2)?,
            targets: r.get(3)?,
            attempted: r.get(4)?,
            succeeded: r.get(5)?,
            failed: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// One convergence sample.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub pass: i64,
    pub peer: String,
    pub at: String,
    pub seconds: f64,
    pub tagged: i64,
    pub targets: i64,
}

pub fn probes(conn: &Connection, run: i64) -> rusqlite::Result<Vec<ProbeRow>> {
    let mut stmt = conn.prepare(
        "SELECT pass, peer, at, seconds, tagged, targets FROM probes WHERE run_id = ?1 ORDER BY seconds, peer",
    )?;
    let rows = stmt.query_map([run], |r| {
        Ok(ProbeRow {
            pass: r.get(0)?,
            peer: r.get(1)?,
            at: r.get(2)?,
            seconds: r.get(3)?,
            tagged: r.get(4)?,
            targets: r.get(5)?,
        })
    })?;
    rows.collect()
}
