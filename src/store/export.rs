//! The rows behind `ledger export`: the tables whose query is their column set (runs, passes,
//! convergence, owners, added) and the re-pin log. Functions take the caller's connection.

use rusqlite::Connection;
use rusqlite::types::ValueRef;

/// A table `ledger export` writes as its query's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Runs,
    Passes,
    Convergence,
    Owners,
    Added,
}

const RUNS_SQL: &str = "SELECT r.id, r.kind, r.cluster, r.peer, r.peer_url, r.org, r.dry_run, r.started_at,
    r.finished_at, r.state, r.params,
    (SELECT count(*) FROM passes p WHERE p.run_id = r.id) AS passes,
    (SELECT count(*) FROM repins x WHERE x.run_id = r.id) AS repins,
    (SELECT count(*) FROM repins x WHERE x.run_id = r.id AND x.outcome = 'applied') AS applied,
    (SELECT count(*) FROM repins x WHERE x.run_id = r.id AND x.outcome IN ('failed', 'mismatch', 'not-applied')) AS failed,
    (SELECT count(*) FROM repins x WHERE x.run_id = r.id AND x.outcome = 'refused') AS refused
    FROM runs r ORDER BY r.id";
const PASSES_SQL: &str =
    "SELECT run_id AS run, pass, started_at, finished_at, targets, attempted, succeeded,
    failed FROM passes ORDER BY run_id, pass";
const CONVERGENCE_SQL: &str = "SELECT run, org, pass, peer, at, seconds, targets, tagged, percent
    FROM convergence ORDER BY run, seconds, peer";
const OWNERS_SQL: &str = "SELECT cluster, peer, snapshot_id AS snapshot, org, pins FROM owners ORDER BY cluster, peer, org";

const ADDED_SQL: &str =
    "SELECT a.run_id AS run, r.started_at, r.org, a.upload, a.name, a.path, a.kind,
    a.bytes, a.size, x.cid, a.pinned,
    CASE WHEN a.pinned THEN (SELECT count(*) FROM added_reads d
        WHERE d.run_id = a.run_id AND d.cid_id = a.cid_id) END AS peers_read,
    CASE WHEN a.pinned THEN (SELECT count(*) FROM added_reads d
        WHERE d.run_id = a.run_id AND d.cid_id = a.cid_id AND d.digest IS NOT NULL) END AS shown_on
    FROM added a JOIN runs r ON r.id = a.run_id JOIN cids x ON x.id = a.cid_id
    ORDER BY a.run_id, a.seq";

impl Query {
    fn sql(self) -> &'static str {
        match self {
            Query::Runs => RUNS_SQL,
            Query::Passes => PASSES_SQL,
            Query::Convergence => CONVERGENCE_SQL,
            Query::Owners => OWNERS_SQL,
            Query::Added => ADDED_SQL,
        }
    }
}

/// Calls `each` with the column names of `query`, then with every row as text: NULL is empty,
/// numbers are in decimal, text and blobs are (lossy) UTF-8.
pub fn rows(
    conn: &Connection,
    query: Query,
    mut each: impl FnMut(&[String]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(query.sql())?;
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    each(&names)?;
    let mut rows = stmt.query([])?;
    let mut record = Vec::with_capacity(names.len());
    while let Some(r) = rows.next()? {
        record.clear();
        for i in 0..names.len() {
            record.push(match r.get_ref(i)? {
                ValueRef::Null => String::new(),
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Real(x) => x.to_string(),
                ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
            });
        }
        each(&record)?;
    }
    Ok(())
}

/// One re-pin as `export repins` reads it, with its run's kind and its CID; the versions before
/// and after are `pin_versions (cid_id, digest)` keys (see `snapshots::version`).
#[derive(Debug, Clone)]
pub struct RepinRow {
    pub id: i64,
    pub run: i64,
    pub kind: String,
    pub pass: i64,
    pub cid: String,
    pub requested_at: String,
    pub verified_at: Option<String>,
    pub status: String,
    pub http_status: Option<i64>,
    pub outcome: Option<String>,
    pub path: String,
    pub query: String,
    pub error: Option<String>,
    pub cid_id: i64,
    pub before_digest: Option<Vec<u8>>,
    pub after_digest: Option<Vec<u8>>,
}

/// Calls `each` with every re-pin ledger sent or refused, in id order.
pub fn repins(
    conn: &Connection,
    mut each: impl FnMut(RepinRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT r.id, r.run_id, u.kind, r.pass, c.cid, r.requested_at, r.verified_at, r.status,
                r.http_status, r.outcome, r.path, r.query, r.error, r.cid_id, r.before_digest,
                r.after_digest
         FROM repins r JOIN runs u ON u.id = r.run_id JOIN cids c ON c.id = r.cid_id ORDER BY r.id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        each(RepinRow {
            id: r.get(0)?,
            run: r.get(1)?,
            kind: r.get(2)?,
            pass: r.get(3)?,
            cid: r.get(4)?,
            requested_at: r.get(5)?,
            verified_at: r.get(6)?,
            status: r.get(7)?,
            http_status: r.get(8)?,
            outcome: r.get(9)?,
            path: r.get(10)?,
            query: r.get(11)?,
            error: r.get(12)?,
            cid_id: r.get(13)?,
            before_digest: r.get(14)?,
            after_digest: r.get(15)?,
        })?;
    }
    Ok(())
}
