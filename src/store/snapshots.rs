//! Series, snapshots, pin versions and observation intervals: the rows behind `ledger snapshot`,
//! `snapshots`, `diff`, `history` and `export pins`. Functions take the caller's connection or
//! transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::cluster::CanonicalPin;

/// Finds or creates the series of (cluster, peer).
pub fn series_id(conn: &Connection, cluster: &str, peer: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO series (cluster, peer) VALUES (?1, ?2) ON CONFLICT (cluster, peer) DO NOTHING",
        params![cluster, peer],
    )?;
    conn.query_row(
        "SELECT id FROM series WHERE cluster = ?1 AND peer = ?2",
        params![cluster, peer],
        |r| r.get(0),
    )
}

/// Records the start of a snapshot (state `running`).
pub fn begin(
    conn: &Connection,
    series: i64,
    peer_url: &str,
    run: Option<(i64, i64)>,
    started_at: &str,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO snapshots (series_id, peer_url, run_id, pass, started_at, state) VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
        params![series, peer_url, run.map(|r| r.0), run.map(|r| r.1), started_at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Snapshots left `running` by a process that died are marked `incomplete`.
pub fn mark_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE snapshots SET state = 'incomplete', error = 'interrupted: the ledger process stopped before the snapshot was stored' WHERE state = 'running'",
        [],
    )
}

/// The latest complete snapshot of a series, if any.
pub fn latest_complete(conn: &Connection, series: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT max(id) FROM snapshots WHERE series_id = ?1 AND state = 'complete'",
        [series],
        |r| r.get(0),
    )
}

/// The counts a finished snapshot records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub pins: i64,
    pub new: i64,
    pub changed: i64,
    pub vanished: i64,
}

/// Records how a snapshot ended.
pub fn finish(
    conn: &Connection,
    id: i64,
    complete: bool,
    previous: Option<i64>,
    counts: &Counts,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let (new, changed, vanished) = if complete {
        (Some(counts.new), Some(counts.changed), Some(counts.vanished))
    } else {
        (None, None, None)
    };
    conn.execute(
        "UPDATE snapshots SET finished_at = ?2, state = ?3, pins_seen = ?4, previous_id = ?5, new_pins = ?6,
         changed_pins = ?7, vanished_pins = ?8, error = ?9 WHERE id = ?1",
        params![
            id,
            super::now_text(),
            if complete { "complete" } else { "incomplete" },
            counts.pins,
            if complete { previous } else { None },
            new,
            changed,
            vanished,
            error
        ],
    )?;
    Ok(())
}

/// The id of a CID, inserting it if new.
pub fn cid_id(conn: &Connection, cid: &str) -> rusqlite::Result<i64> {
    if let Some(id) = conn
        .prepare_cached("SELECT id FROM cids WHERE cid = ?1")?
        .query_row([cid], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO cids (cid) VALUES (?1)")?.execute([cid])?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a CID known to be absent (first sight in a fresh ledger); falls back to lookup.
pub fn insert_cid(conn: &Connection, cid: &str) -> rusqlite::Result<i64> {
    let n = conn
        .prepare_cached("INSERT INTO cids (cid) VALUES (?1) ON CONFLICT (cid) DO NOTHING")?
        .execute([cid])?;
    if n == 1 { Ok(conn.last_insert_rowid()) } else { cid_id(conn, cid) }
}

/// The id of this version of the pin, inserting it if new. `fresh_cid`: the CID was just inserted,
/// so no version of it can exist yet.
pub fn version_id(
    conn: &Connection,
    cid_id: i64,
    pin: &CanonicalPin,
    fresh_cid: bool,
) -> rusqlite::Result<i64> {
    let digest = pin.digest();
    if !fresh_cid
        && let Some(id) = conn
            .prepare_cached("SELECT id FROM pin_versions WHERE cid_id = ?1 AND digest = ?2")?
            .query_row(params![cid_id, &digest[..]], |r| r.get(0))
            .optional()?
    {
        return Ok(id);
    }
    let json = |v: &dyn erased::Json| v.to_json();
    conn.prepare_cached(
        "INSERT INTO pin_versions (cid_id, digest, name, metadata, org, allocations, replication_min, replication_max,
         mode, max_depth, expire_at, origins, type, shard_size, reference, pin_update, cluster_timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        cid_id,
        &digest[..],
        pin.name,
        if pin.metadata.is_empty() { None } else { Some(json(&pin.metadata)) },
        pin.org(),
        json(&pin.allocations),
        pin.replication_min,
        pin.replication_max,
        pin.mode,
        pin.max_depth,
        pin.expire_at,
        json(&pin.origins),
        pin.typ,
        pin.shard_size as i64,
        pin.reference,
        pin.pin_update,
        pin.cluster_timestamp,
    ])?;
    Ok(conn.last_insert_rowid())
}

mod erased {
    /// Canonical JSON of a list or map.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("serialisable")
        }
    }
}

/// Opens an observation interval.
pub fn open_observation(
    conn: &Connection,
    series: i64,
    cid_id: i64,
    version_id: i64,
    snapshot: i64,
    line_hash: &[u8; 16],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO observations (series_id, cid_id, version_id, first_snapshot, line_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![series, cid_id, version_id, snapshot, &line_hash[..]])?;
    Ok(())
}

/// Closes an interval: the version was last seen in `last` (the previous complete snapshot).
pub fn close_observation(conn: &Connection, obs: i64, last: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE observations SET last_snapshot = ?2 WHERE id = ?1")?
        .execute(params![obs, last])?;
    Ok(())
}

/// Records a new way the same version is served (the same canonical pin, other bytes).
pub fn update_line_hash(conn: &Connection, obs: i64, line_hash: &[u8; 16]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE observations SET line_hash = ?2 WHERE id = ?1")?
        .execute(params![obs, &line_hash[..]])?;
    Ok(())
}

/// An open interval of a series, as a repeat snapshot needs it.
pub struct OpenObservation {
    pub id: i64,
    pub line_hash: [u8; 16],
    pub org: Option<String>,
}

/// Every open interval of a series.
pub fn open_observations(conn: &Connection, series: i64) -> rusqlite::Result<Vec<OpenObservation>> {
    let mut stmt = conn.prepare(
        "SELECT o.id, o.line_hash, v.org FROM observations o JOIN pin_versions v ON v.id = o.version_id
         WHERE o.series_id = ?1 AND o.last_snapshot IS NULL",
    )?;
    let rows = stmt.query_map([series], |r| {
        let h: Vec<u8> = r.get(1)?;
        let mut line_hash = [0u8; 16];
        if h.len() == 16 {
            line_hash.copy_from_slice(&h);
        }
        Ok(OpenObservation { id: r.get(0)?, line_hash, org: r.get(2)? })
    })?;
    rows.collect()
}

/// The open interval of one CID in a series: (observation id, version id, version digest).
pub fn open_observation_of(
    conn: &Connection,
    series: i64,
    cid_id: i64,
) -> rusqlite::Result<Option<(i64, i64, Vec<u8>)>> {
    conn.prepare_cached(
        "SELECT o.id, o.version_id, v.digest FROM observations o JOIN pin_versions v ON v.id = o.version_id
         WHERE o.cid_id = ?2 AND o.series_id = ?1 AND o.last_snapshot IS NULL",
    )?
    .query_row(params![series, cid_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

/// Keeps a pin that an incomplete snapshot read.
pub fn add_partial(
    conn: &Connection,
    snapshot: i64,
    cid_id: i64,
    version_id: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO partial_observations (snapshot_id, cid_id, version_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (snapshot_id, cid_id) DO UPDATE SET version_id = excluded.version_id",
    )?
    .execute(params![snapshot, cid_id, version_id])?;
    Ok(())
}

/// A row of `ledger snapshots`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    pub id: i64,
    pub cluster: String,
    pub peer: String,
    pub peer_url: String,
    pub run_id: Option<i64>,
    pub pass: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub state: String,
    pub pins: i64,
    pub new: Option<i64>,
    pub changed: Option<i64>,
    pub vanished: Option<i64>,
    pub previous_id: Option<i64>,
    pub error: Option<String>,
}

const SNAPSHOT_COLUMNS: &str =
    "s.id, se.cluster, se.peer, s.peer_url, s.run_id, s.pass, s.started_at, s.finished_at,
    s.state, s.pins_seen, s.new_pins, s.changed_pins, s.vanished_pins, s.previous_id, s.error";

fn snapshot_row(r: &rusqlite::Row) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        cluster: r.get(1)?,
        peer: r.get(2)?,
        peer_url: r.get(3)?,
        run_id: r.get(4)?,
        pass: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        state: r.get(8)?,
        pins: r.get(9)?,
        new: r.get(10)?,
        changed: r.get(11)?,
        vanished: r.get(12)?,
        previous_id: r.get(13)?,
        error: r.get(14)?,
    })
}

/// Every snapshot, oldest first.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<SnapshotRow>> {
    let sql = format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s JOIN series se ON se.id = s.series_id ORDER BY s.id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], snapshot_row)?;
    rows.collect()
}

/// One snapshot.
pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<SnapshotRow>> {
    let sql = format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s JOIN series se ON se.id = s.series_id WHERE s.id = ?1"
    );
    conn.query_row(&sql, [id], snapshot_row).optional()
}

/// A stored pin version with its CID, as reconstructed for a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PinRow {
    pub cid: String,
    pub name: String,
    pub metadata: Option<String>,
    pub allocations: String,
    pub replication_min: i64,
    pub replication_max: i64,
    pub mode: String,
    pub expire_at: Option<String>,
    pub origins: String,
    pub cluster_timestamp: Option<String>,
    #[serde(rename = "type")]
    pub typ: String,
    pub shard_size: i64,
    pub reference: Option<String>,
    pub pin_update: Option<String>,
    pub max_depth: i64,
    #[serde(skip)]
    pub version_id: i64,
}

const PIN_COLUMNS: &str = "c.cid, v.name, v.metadata, v.allocations, v.replication_min, v.replication_max, v.mode,
    v.expire_at, v.origins, v.cluster_timestamp, v.type, v.shard_size, v.reference, v.pin_update, v.max_depth, v.id";

fn pin_row(r: &rusqlite::Row) -> rusqlite::Result<PinRow> {
    Ok(PinRow {
        cid: r.get(0)?,
        name: r.get(1)?,
        metadata: r.get(2)?,
        allocations: r.get(3)?,
        replication_min: r.get(4)?,
        replication_max: r.get(5)?,
        mode: r.get(6)?,
        expire_at: r.get(7)?,
        origins: r.get(8)?,
        cluster_timestamp: r.get(9)?,
        typ: r.get(10)?,
        shard_size: r.get(11)?,
        reference: r.get(12)?,
        pin_update: r.get(13)?,
        max_depth: r.get(14)?,
        version_id: r.get(15)?,
    })
}

/// The pin set of a stored snapshot, by CID: the intervals of its series that cover it (complete), or
/// what it read (incomplete).
pub fn pins_of(
    conn: &Connection,
    snap: &SnapshotRow,
    mut each: impl FnMut(PinRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let sql = if snap.state == "complete" {
        format!(
            "SELECT {PIN_COLUMNS} FROM observations o JOIN pin_versions v ON v.id = o.version_id JOIN cids c ON c.id = o.cid_id
             WHERE o.series_id = (SELECT series_id FROM snapshots WHERE id = ?1)
               AND o.first_snapshot <= ?1 AND (o.last_snapshot IS NULL OR o.last_snapshot >= ?1)
             ORDER BY c.cid"
        )
    } else {
        format!(
            "SELECT {PIN_COLUMNS} FROM partial_observations o JOIN pin_versions v ON v.id = o.version_id JOIN cids c ON c.id = o.cid_id
             WHERE o.snapshot_id = ?1 ORDER BY c.cid"
        )
    };
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([snap.id])?;
    while let Some(r) = rows.next()? {
        each(pin_row(r)?)?;
    }
    Ok(())
}

/// One pin's versions in every series: (snapshot range, series, the version).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub cluster: String,
    pub peer: String,
    pub first_snapshot: i64,
    pub first_seen: String,
    pub last_snapshot: Option<i64>,
    pub last_seen: Option<String>,
    pub pin: PinRow,
}

pub fn history(conn: &Connection, cid: &str) -> rusqlite::Result<Vec<HistoryRow>> {
    let sql = format!(
        "SELECT se.cluster, se.peer, o.first_snapshot, f.started_at, o.last_snapshot, l.started_at, {PIN_COLUMNS}
         FROM observations o JOIN cids c ON c.id = o.cid_id JOIN pin_versions v ON v.id = o.version_id
         JOIN series se ON se.id = o.series_id JOIN snapshots f ON f.id = o.first_snapshot
         LEFT JOIN snapshots l ON l.id = o.last_snapshot
         WHERE c.cid = ?1 ORDER BY se.cluster, se.peer, o.first_snapshot"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([cid], |r| {
        let tail = PinRow {
            cid: r.get(6)?,
            name: r.get(7)?,
            metadata: r.get(8)?,
            allocations: r.get(9)?,
            replication_min: r.get(10)?,
            replication_max: r.get(11)?,
            mode: r.get(12)?,
            expire_at: r.get(13)?,
            origins: r.get(14)?,
            cluster_timestamp: r.get(15)?,
            typ: r.get(16)?,
            shard_size: r.get(17)?,
            reference: r.get(18)?,
            pin_update: r.get(19)?,
            max_depth: r.get(20)?,
            version_id: r.get(21)?,
        };
        Ok(HistoryRow {
            cluster: r.get(0)?,
            peer: r.get(1)?,
            first_snapshot: r.get(2)?,
            first_seen: r.get(3)?,
            last_snapshot: r.get(4)?,
            last_seen: r.get(5)?,
            pin: tail,
        })
    })?;
    rows.collect()
}

/// The `(cid_id, version_id)` set of a snapshot as SQL, with `?N` standing for its id.
fn set_sql(snap: &SnapshotRow, n: u8) -> String {
    if snap.state == "complete" {
        format!(
            "SELECT cid_id, version_id FROM observations WHERE series_id = (SELECT series_id FROM snapshots WHERE id = ?{n})
             AND first_snapshot <= ?{n} AND (last_snapshot IS NULL OR last_snapshot >= ?{n})"
        )
    } else {
        format!("SELECT cid_id, version_id FROM partial_observations WHERE snapshot_id = ?{n}")
    }
}

/// The pins whose version differs between two snapshots: (version in `a`, version in `b`), either
/// `None` where the pin is absent.
pub fn differing(
    conn: &Connection,
    a: &SnapshotRow,
    b: &SnapshotRow,
) -> rusqlite::Result<Vec<(Option<i64>, Option<i64>)>> {
    let sql = format!(
        "WITH a AS ({}), b AS ({})
         SELECT a.version_id, b.version_id FROM a FULL OUTER JOIN b ON a.cid_id = b.cid_id
         WHERE a.version_id IS NOT b.version_id",
        set_sql(a, 1),
        set_sql(b, 2)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![a.id, b.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// One stored version with its CID.
pub fn version(conn: &Connection, id: i64) -> rusqlite::Result<PinRow> {
    let sql = format!(
        "SELECT {PIN_COLUMNS} FROM pin_versions v JOIN cids c ON c.id = v.cid_id WHERE v.id = ?1"
    );
    conn.prepare_cached(&sql)?.query_row([id], pin_row)
}
