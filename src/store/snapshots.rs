//! Series, snapshots, pin versions and observation intervals: the rows behind `ledger snapshot`,
//! `snapshots`, `diff`, `history` and `export pins`. Functions take the caller's connection or
//! transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::domain::SnapshotState;
use crate::pin::CanonicalPin;

/// The series a snapshot of `peer` (its ID, from `/id`) goes into: the peer's own, whatever the
/// cluster is called this time. A peer is who its ID says it is, so the cluster's name (a profile, or
/// the first URL of `--cluster`) does not start a new history: the series of that peer that holds
/// its latest complete snapshot goes on (a ledger written before this rule may hold several series
/// of one peer, one per name it was given). A peer never seen gets a new series named `cluster`.
pub fn series_id(conn: &Connection, cluster: &str, peer: &str) -> rusqlite::Result<i64> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT se.id FROM series se WHERE se.peer = ?2
             ORDER BY (SELECT max(s.id) FROM snapshots s WHERE s.series_id = se.id AND s.state = 'complete') DESC NULLS LAST,
                      se.cluster = ?1 DESC, se.id DESC
             LIMIT 1",
            params![cluster, peer],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
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

/// Whether the ledger has no CIDs at all (a first snapshot into it can insert every CID unasked).
pub fn is_fresh_ledger(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM cids)", [], |r| r.get(0))
}

/// Sizes the page cache for a snapshot that holds `open_intervals` open intervals in memory (~50
/// bytes each): the cache shrinks as they grow, and a first snapshot gets a larger one for its
/// inserts. Both stay under 150 MiB for a million pins.
pub fn size_cache_for_snapshot(conn: &Connection, open_intervals: usize) -> rusqlite::Result<()> {
    let cache_kib: i64 = if open_intervals > 200_000 { 16 * 1024 } else { 64 * 1024 };
    conn.pragma_update(None, "cache_size", -cache_kib)
}

/// Foreign-key checks off for a snapshot's writes, on again at [`ForeignKeysOff::restore`] (or
/// when dropped unrestored, ignoring errors).
///
/// Every reference the snapshot writer stores comes from a row it has just written or read in the
/// same transaction; checking each one again costs a tenth of a million-pin snapshot. The checks
/// are back on for everything else once the snapshot is stored (and tests run
/// `PRAGMA foreign_key_check`).
pub struct ForeignKeysOff<'c> {
    conn: &'c Connection,
    restored: bool,
}

impl<'c> ForeignKeysOff<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<ForeignKeysOff<'c>> {
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        Ok(ForeignKeysOff { conn, restored: false })
    }

    /// Turns the checks back on (outside any transaction: SQLite ignores the pragma inside one).
    pub fn restore(mut self) -> rusqlite::Result<()> {
        self.restored = true;
        self.conn.pragma_update(None, "foreign_keys", "ON")
    }
}

impl Drop for ForeignKeysOff<'_> {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.conn.pragma_update(None, "foreign_keys", "ON");
        }
    }
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
            if complete { SnapshotState::Complete } else { SnapshotState::Incomplete },
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

/// Records how many pins of the complete snapshot `id` each owner has (`None`: unowned), as the
/// stream was counted: what the `owners` view reads.
pub fn record_owners<'a>(
    conn: &Connection,
    id: i64,
    owners: impl IntoIterator<Item = (Option<&'a str>, &'a i64)>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO snapshot_owners (snapshot_id, org, pins) VALUES (?1, ?2, ?3)",
    )?;
    for (org, pins) in owners {
        stmt.execute(params![id, org, pins])?;
    }
    Ok(())
}

/// Records the owner changes the complete snapshot `id` saw against the series' previous complete
/// one (V4's `org_changes`): one row per pin and (from, to) pair, moved to this snapshot when it is
/// older than the one that recorded it first. Run in the snapshot's transaction, after [`finish`].
pub fn record_owner_changes(conn: &Connection, id: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO owner_changes (cid_id, from_org, to_org, series_id, changed_in)
         SELECT x.id, coalesce(o.from_org, ''), coalesce(o.to_org, ''), se.id, o.changed_in
         FROM org_changes o JOIN cids x ON x.cid = o.cid
         JOIN series se ON se.cluster = o.cluster AND se.peer = o.peer
         WHERE o.changed_in = ?1
         ON CONFLICT (cid_id, from_org, to_org) DO UPDATE SET series_id = excluded.series_id,
             changed_in = excluded.changed_in
         WHERE excluded.changed_in < owner_changes.changed_in",
        [id],
    )
}

/// Records what the complete snapshot `id` lost against the series' previous complete one (the rules
/// are V7's `change_losses` view): a loss no peer saw before becomes a row of `losses` with what
/// follows from its two versions (their timestamps, the values lost: V8), and every loss gets this
/// snapshot as a sighting and its series in `sighting_series`. A loss seen here earlier than on the
/// peers that saw it first (an older snapshot committed later) moves its start here. Returns how
/// many values this snapshot saw lost. Run in the snapshot's transaction, after [`finish`].
pub fn record_losses(conn: &Connection, id: i64) -> rusqlite::Result<usize> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS snapshot_losses AS SELECT * FROM change_losses WHERE 0;
         DELETE FROM temp.snapshot_losses;",
    )?;
    let found = conn.execute(
        "INSERT INTO temp.snapshot_losses SELECT * FROM change_losses WHERE first_lacking = ?1",
        [id],
    )?;
    if found == 0 {
        return Ok(0);
    }
    let join = "FROM temp.snapshot_losses c JOIN losses l ON l.cid_id = c.cid_id
                AND l.before_digest = c.before_digest AND l.after_digest IS c.after_digest";
    conn.execute_batch(&format!(
        "INSERT INTO losses (cid_id, before_digest, after_digest, series_id, last_had, first_lacking,
                             timestamp_before, timestamp_after, fields)
         SELECT c.cid_id, c.before_digest, c.after_digest, c.series_id, c.last_had, c.first_lacking,
                b.cluster_timestamp, a.cluster_timestamp,
                json_group_array(json_array(c.field, c.before_value, c.after_value) ORDER BY c.field)
         FROM temp.snapshot_losses c
         JOIN pin_versions b ON b.cid_id = c.cid_id AND b.digest = c.before_digest
         LEFT JOIN pin_versions a ON a.cid_id = c.cid_id AND a.digest = c.after_digest
         GROUP BY c.cid_id, c.before_digest, c.after_digest
         ON CONFLICT (cid_id, before_digest, coalesce(after_digest, X''))
         DO UPDATE SET series_id = excluded.series_id, last_had = excluded.last_had,
                       first_lacking = excluded.first_lacking
         WHERE excluded.first_lacking < losses.first_lacking;
         INSERT OR IGNORE INTO loss_sightings (loss_id, first_lacking, series_id, last_had)
         SELECT DISTINCT l.id, c.first_lacking, c.series_id, c.last_had {join};
         UPDATE losses SET sighting_series = (
             SELECT json_group_array(g.series_id ORDER BY g.first)
             FROM (SELECT series_id, min(first_lacking) AS first FROM loss_sightings
                   WHERE loss_id = losses.id GROUP BY series_id) g)
         WHERE id IN (SELECT l.id {join});"
    ))?;
    Ok(found)
}

/// Keeps `disagreements` (V9) as of the complete snapshot `id` of `series`, whose previous complete
/// snapshot is `previous`: the pins whose interval this snapshot opened or closed are read again
/// through the `disagreeing_pins` view. On the series' first complete snapshot every pin of the
/// cluster is, since which peers take part changes; a cluster with one such series has none.
/// Returns how many of the pins read again disagree. Run in the snapshot's transaction, after
/// [`finish`].
pub fn record_disagreements(
    conn: &Connection,
    id: i64,
    series: i64,
    previous: Option<i64>,
) -> rusqlite::Result<usize> {
    let cluster: String =
        conn.query_row("SELECT cluster FROM series WHERE id = ?1", [series], |r| r.get(0))?;
    let Some(previous) = previous else {
        conn.execute("DELETE FROM disagreements WHERE cluster = ?1", [&cluster])?;
        let taking_part: i64 = conn.query_row(
            "SELECT count(*) FROM series t WHERE t.cluster = ?1
               AND EXISTS (SELECT 1 FROM snapshots s WHERE s.series_id = t.id AND s.state = 'complete')",
            [&cluster],
            |r| r.get(0),
        )?;
        if taking_part < 2 {
            return Ok(0);
        }
        return conn.execute(
            "INSERT INTO disagreements (cluster, cid_id)
             SELECT cluster, cid_id FROM disagreeing_pins WHERE cluster = ?1",
            [&cluster],
        );
    };
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS snapshot_changed (cid_id INTEGER PRIMARY KEY);
         DELETE FROM temp.snapshot_changed;",
    )?;
    let changed = conn.execute(
        "INSERT OR IGNORE INTO temp.snapshot_changed (cid_id)
         SELECT cid_id FROM observations WHERE series_id = ?1 AND first_snapshot = ?2
         UNION SELECT cid_id FROM observations WHERE series_id = ?1 AND last_snapshot = ?3",
        params![series, id, previous],
    )?;
    if changed == 0 {
        return Ok(0);
    }
    conn.execute(
        "DELETE FROM disagreements
         WHERE cluster = ?1 AND cid_id IN (SELECT cid_id FROM temp.snapshot_changed)",
        [&cluster],
    )?;
    conn.execute(
        "INSERT INTO disagreements (cluster, cid_id)
         SELECT cluster, cid_id FROM disagreeing_pins
         WHERE cluster = ?1 AND cid_id IN (SELECT cid_id FROM temp.snapshot_changed)",
        [&cluster],
    )
}

/// An observation interval of a series: its CID and the snapshot that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObsKey {
    pub cid_id: i64,
    pub first: i64,
}

/// Closes an interval: the version was last seen in `last` (the previous complete snapshot).
pub fn close_observation(
    conn: &Connection,
    series: i64,
    obs: ObsKey,
    last: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE observations SET last_snapshot = ?4 WHERE cid_id = ?1 AND series_id = ?2 AND first_snapshot = ?3",
    )?
    .execute(params![obs.cid_id, series, obs.first, last])?;
    Ok(())
}

/// Records a new way the same version is served (the same canonical pin, other bytes).
pub fn update_line_hash(
    conn: &Connection,
    series: i64,
    obs: ObsKey,
    line_hash: &[u8; 16],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE observations SET line_hash = ?4 WHERE cid_id = ?1 AND series_id = ?2 AND first_snapshot = ?3",
    )?
    .execute(params![obs.cid_id, series, obs.first, &line_hash[..]])?;
    Ok(())
}

/// Keeps, for an incomplete snapshot, the pin an open interval stands for.
pub fn add_partial_from(
    conn: &Connection,
    snapshot: i64,
    series: i64,
    obs: ObsKey,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO partial_observations (snapshot_id, cid_id, digest)
         SELECT ?1, cid_id, digest FROM observations WHERE cid_id = ?2 AND series_id = ?3 AND first_snapshot = ?4",
    )?
    .execute(params![snapshot, obs.cid_id, series, obs.first])?;
    Ok(())
}

/// Turns the intervals a failed snapshot opened into its partial observations.
pub fn withdraw_opened(conn: &Connection, series: i64, snapshot: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO partial_observations (snapshot_id, cid_id, digest)
         SELECT first_snapshot, cid_id, digest FROM observations WHERE series_id = ?1 AND first_snapshot = ?2",
        params![series, snapshot],
    )?;
    conn.execute(
        "DELETE FROM observations WHERE series_id = ?1 AND first_snapshot = ?2",
        params![series, snapshot],
    )?;
    Ok(())
}

/// Calls `each(key, line_hash)` for every open interval of a series, from the index alone.
pub fn for_each_open(
    conn: &Connection,
    series: i64,
    mut each: impl FnMut(ObsKey, [u8; 16]),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT o.cid_id, o.first_snapshot, o.line_hash FROM observations o INDEXED BY observations_open
         WHERE o.series_id = ?1 AND o.last_snapshot IS NULL",
    )?;
    let mut rows = stmt.query([series])?;
    while let Some(r) = rows.next()? {
        let h = r.get_ref(2)?.as_blob()?;
        let mut line_hash = [0u8; 16];
        if h.len() == 16 {
            line_hash.copy_from_slice(h);
        }
        each(ObsKey { cid_id: r.get(0)?, first: r.get(1)? }, line_hash);
    }
    Ok(())
}

/// The owner (`None`: none) of the version an open interval of `series` stands for.
pub fn open_owner(conn: &Connection, series: i64, obs: ObsKey) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT nullif(v.org, '') FROM observations o
         JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
         WHERE o.cid_id = ?1 AND o.series_id = ?2 AND o.first_snapshot = ?3",
    )?
    .query_row(params![obs.cid_id, series, obs.first], |r| r.get(0))
}

/// A complete snapshot's pins per owner (`None`: unowned), as it recorded them.
pub fn owners_of(conn: &Connection, snapshot: i64) -> rusqlite::Result<Vec<(Option<String>, i64)>> {
    conn.prepare("SELECT org, pins FROM snapshot_owners WHERE snapshot_id = ?1")?
        .query_map([snapshot], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Rows a multi-row INSERT carries: one statement per this many versions or intervals.
const BATCH: usize = 64;

const VERSION_COLUMNS: &str = "cid_id, digest, name, metadata, org, allocations, replication_min, replication_max,
    mode, max_depth, expire_at, origins, type, shard_size, reference, pin_update, cluster_timestamp";

/// The parameters of one `pin_versions` row, in `VERSION_COLUMNS` order.
pub struct VersionRow<'a> {
    cid_id: i64,
    digest: [u8; 16],
    org: Option<&'a str>,
    shard_size: i64,
    pin: &'a CanonicalPin,
}

impl<'a> VersionRow<'a> {
    pub fn new(cid_id: i64, pin: &'a CanonicalPin) -> VersionRow<'a> {
        VersionRow {
            cid_id,
            digest: pin.digest(),
            org: pin.org(),
            shard_size: pin.shard_size as i64,
            pin,
        }
    }

    pub fn values(&self) -> [&dyn rusqlite::ToSql; 17] {
        let p = self.pin;
        [
            &self.cid_id,
            &self.digest,
            &p.name,
            &p.json.metadata,
            &self.org,
            &p.json.allocations,
            &p.replication_min,
            &p.replication_max,
            &p.mode,
            &p.max_depth,
            &p.expire_at,
            &p.json.origins,
            &p.typ,
            &self.shard_size,
            &p.reference,
            &p.pin_update,
            &p.cluster_timestamp,
        ]
    }
}

/// `INSERT OR IGNORE INTO pin_versions …` for `rows` rows.
pub fn insert_versions_sql(rows: usize) -> String {
    multi_row_insert(
        &format!("INSERT OR IGNORE INTO pin_versions ({VERSION_COLUMNS})"),
        rows,
        17,
        "",
    )
}

/// `INSERT … VALUES (?, …), (?, …)…` for `rows` rows of `cols` parameters.
fn multi_row_insert(head: &str, rows: usize, cols: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    format!("{head} VALUES {} {tail}", vec![row; rows].join(", "))
}

/// The statements a snapshot runs per line, prepared once for the whole stream. New versions and
/// intervals are written in multi-row INSERTs of `BATCH` rows; [`LineWriter::flush`] writes the rest.
pub struct LineWriter<'c> {
    conn: &'c Connection,
    sel_cid: rusqlite::Statement<'c>,
    ins_cid: rusqlite::Statement<'c>,
    ins_versions: rusqlite::Statement<'c>,
    sel_open: rusqlite::Statement<'c>,
    ins_obs: rusqlite::Statement<'c>,
    pending_versions: Vec<(i64, CanonicalPin)>,
    /// (cid_id, digest, line_hash) of intervals to open, all in `obs_target`.
    pending_obs: Vec<(i64, [u8; 16], [u8; 16])>,
    /// (series, snapshot) of the pending intervals.
    obs_target: (i64, i64),
}

impl<'c> LineWriter<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<LineWriter<'c>> {
        Ok(LineWriter {
            conn,
            sel_cid: conn.prepare("SELECT id FROM cids WHERE cid = ?1")?,
            ins_cid: conn
                .prepare("INSERT INTO cids (cid) VALUES (?1) ON CONFLICT (cid) DO NOTHING")?,
            ins_versions: conn.prepare(&insert_versions_sql(BATCH))?,
            sel_open: conn.prepare(
                "SELECT first_snapshot, digest FROM observations
                 WHERE cid_id = ?2 AND series_id = ?1 AND last_snapshot IS NULL",
            )?,
            ins_obs: conn.prepare(&multi_row_insert(
                "INSERT INTO observations (cid_id, series_id, first_snapshot, digest, line_hash)",
                BATCH,
                5,
                "ON CONFLICT DO NOTHING",
            ))?,
            pending_versions: Vec::with_capacity(BATCH),
            pending_obs: Vec::with_capacity(BATCH),
            obs_target: (0, 0),
        })
    }

    /// The CID's id and whether it was just inserted. `assume_new`: the ledger had no CIDs at all.
    pub fn cid_id(&mut self, cid: &str, assume_new: bool) -> rusqlite::Result<(i64, bool)> {
        if !assume_new && let Some(id) = self.sel_cid.query_row([cid], |r| r.get(0)).optional()? {
            return Ok((id, false));
        }
        if self.ins_cid.execute([cid])? == 1 {
            return Ok((self.conn.last_insert_rowid(), true));
        }
        Ok((self.sel_cid.query_row([cid], |r| r.get(0))?, false))
    }

    /// Stores this version of the pin unless it is stored already; returns its digest.
    pub fn ensure_version(&mut self, cid_id: i64, pin: CanonicalPin) -> rusqlite::Result<[u8; 16]> {
        let digest = pin.digest();
        self.pending_versions.push((cid_id, pin));
        if self.pending_versions.len() == BATCH {
            self.flush_versions()?;
        }
        Ok(digest)
    }

    fn flush_versions(&mut self) -> rusqlite::Result<()> {
        if self.pending_versions.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending_versions);
        let versions: Vec<VersionRow> =
            rows.iter().map(|(cid_id, pin)| VersionRow::new(*cid_id, pin)).collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 17);
        for v in &versions {
            values.extend_from_slice(&v.values());
        }
        if rows.len() == BATCH {
            self.ins_versions.execute(rusqlite::params_from_iter(values))?;
        } else {
            self.conn
                .prepare(&insert_versions_sql(rows.len()))?
                .execute(rusqlite::params_from_iter(values))?;
        }
        self.pending_versions = rows;
        self.pending_versions.clear();
        Ok(())
    }

    /// Opens an observation interval (written with the next batch, or by [`LineWriter::flush`]).
    pub fn open_observation(
        &mut self,
        series: i64,
        cid_id: i64,
        digest: &[u8; 16],
        snapshot: i64,
        line_hash: &[u8; 16],
    ) -> rusqlite::Result<()> {
        if self.obs_target != (series, snapshot) {
            self.flush_obs()?;
            self.obs_target = (series, snapshot);
        }
        self.pending_obs.push((cid_id, *digest, *line_hash));
        if self.pending_obs.len() == BATCH {
            self.flush_versions()?; // an interval refers to its version
            self.flush_obs()?;
        }
        Ok(())
    }

    fn flush_obs(&mut self) -> rusqlite::Result<()> {
        if self.pending_obs.is_empty() {
            return Ok(());
        }
        let (series, snapshot) = self.obs_target;
        let rows = std::mem::take(&mut self.pending_obs);
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 5);
        for (cid_id, digest, hash) in &rows {
            values.extend_from_slice(&[
                cid_id as &dyn rusqlite::ToSql,
                &series,
                &snapshot,
                digest as &dyn rusqlite::ToSql,
                hash as &dyn rusqlite::ToSql,
            ]);
        }
        if rows.len() == BATCH {
            self.ins_obs.execute(rusqlite::params_from_iter(values))?;
        } else {
            let sql = multi_row_insert(
                "INSERT INTO observations (cid_id, series_id, first_snapshot, digest, line_hash)",
                rows.len(),
                5,
                "ON CONFLICT DO NOTHING",
            );
            self.conn.prepare(&sql)?.execute(rusqlite::params_from_iter(values))?;
        }
        self.pending_obs = rows;
        self.pending_obs.clear();
        Ok(())
    }

    /// Writes every pending version and interval.
    pub fn flush(&mut self) -> rusqlite::Result<()> {
        self.flush_versions()?;
        self.flush_obs()
    }

    /// The open interval of one CID in a series, with its version's digest.
    pub fn open_of(
        &mut self,
        series: i64,
        cid_id: i64,
    ) -> rusqlite::Result<Option<(ObsKey, Vec<u8>)>> {
        self.sel_open
            .query_row(params![series, cid_id], |r| {
                Ok((ObsKey { cid_id, first: r.get(0)? }, r.get(1)?))
            })
            .optional()
    }
}

/// Keeps a pin that an incomplete snapshot read.
pub fn add_partial(
    conn: &Connection,
    snapshot: i64,
    cid_id: i64,
    digest: &[u8; 16],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO partial_observations (snapshot_id, cid_id, digest) VALUES (?1, ?2, ?3)
         ON CONFLICT (snapshot_id, cid_id) DO UPDATE SET digest = excluded.digest",
    )?
    .execute(params![snapshot, cid_id, &digest[..]])?;
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
    pub state: SnapshotState,
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
}

const PIN_COLUMNS: &str = "c.cid, v.name, v.metadata, v.allocations, v.replication_min, v.replication_max, v.mode,
    v.expire_at, v.origins, v.cluster_timestamp, v.type, v.shard_size, v.reference, v.pin_update, v.max_depth";

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
    })
}

/// The pin set of a stored snapshot, by CID: the intervals of its series that cover it (complete), or
/// what it read (incomplete).
pub fn pins_of(
    conn: &Connection,
    snap: &SnapshotRow,
    mut each: impl FnMut(PinRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let sql = if snap.state == SnapshotState::Complete {
        format!(
            "SELECT {PIN_COLUMNS} FROM observations o JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest JOIN cids c ON c.id = o.cid_id
             WHERE o.series_id = (SELECT series_id FROM snapshots WHERE id = ?1)
               AND o.first_snapshot <= ?1 AND (o.last_snapshot IS NULL OR o.last_snapshot >= ?1)
             ORDER BY c.cid"
        )
    } else {
        format!(
            "SELECT {PIN_COLUMNS} FROM partial_observations o JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest JOIN cids c ON c.id = o.cid_id
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
         FROM observations o JOIN cids c ON c.id = o.cid_id JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
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

/// The `(cid_id, digest)` set of a snapshot as SQL, with `?N` standing for its id.
fn set_sql(snap: &SnapshotRow, n: u8) -> String {
    if snap.state == SnapshotState::Complete {
        format!(
            "SELECT cid_id, digest FROM observations WHERE series_id = (SELECT series_id FROM snapshots WHERE id = ?{n})
             AND first_snapshot <= ?{n} AND (last_snapshot IS NULL OR last_snapshot >= ?{n})"
        )
    } else {
        format!("SELECT cid_id, digest FROM partial_observations WHERE snapshot_id = ?{n}")
    }
}

/// The version of the pin `cid` (an SQL expression) in a snapshot as a scalar subquery, with `?N`
/// standing for the snapshot's id: one primary-key lookup.
fn version_sql(snap: &SnapshotRow, n: u8, cid: &str) -> String {
    if snap.state == SnapshotState::Complete {
        format!(
            "SELECT digest FROM observations WHERE cid_id = {cid}
             AND series_id = (SELECT series_id FROM snapshots WHERE id = ?{n})
             AND first_snapshot <= ?{n} AND (last_snapshot IS NULL OR last_snapshot >= ?{n})"
        )
    } else {
        format!(
            "SELECT digest FROM partial_observations WHERE snapshot_id = ?{n} AND cid_id = {cid}"
        )
    }
}

/// The pins whose version differs between two snapshots: (version in `a`, version in `b`), either
/// `None` where the pin is absent, in no particular order. Two complete snapshots of one peer are
/// compared by the intervals that closed or opened between them (the cost follows the changes);
/// any others by looking each pin of one snapshot up in the other by key (it follows the pins).
pub fn differing(
    conn: &Connection,
    a: &SnapshotRow,
    b: &SnapshotRow,
) -> rusqlite::Result<Vec<Differing>> {
    let one_peer = (a.cluster == b.cluster && a.peer == b.peer)
        && [a, b].iter().all(|s| s.state == SnapshotState::Complete);
    let sql = if one_peer {
        // A pin whose version differs has an interval that closed in [a, b) or opened in (a, b].
        format!(
            "WITH s AS (SELECT series_id FROM snapshots WHERE id = ?1),
             changed AS (
                 SELECT cid_id FROM observations WHERE series_id = (SELECT series_id FROM s)
                   AND last_snapshot >= min(?1, ?2) AND last_snapshot < max(?1, ?2)
                 UNION
                 SELECT cid_id FROM observations WHERE series_id = (SELECT series_id FROM s)
                   AND first_snapshot > min(?1, ?2) AND first_snapshot <= max(?1, ?2))
             SELECT cid_id, ({}) AS x, ({}) AS y FROM changed WHERE x IS NOT y",
            version_sql(a, 1, "changed.cid_id"),
            version_sql(b, 2, "changed.cid_id"),
        )
    } else {
        by_key_sql(a, b)
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![a.id, b.id], |r| {
        Ok(Differing { cid_id: r.get(0)?, a: r.get(1)?, b: r.get(2)? })
    })?;
    rows.collect()
}

/// [`differing`] of any two snapshots: each pin of `a` looked up in `b`, and each pin of `b` in `a`.
fn by_key_sql(a: &SnapshotRow, b: &SnapshotRow) -> String {
    format!(
        "SELECT x.cid_id, x.digest, ({}) AS other FROM ({}) x WHERE x.digest IS NOT other
         UNION ALL
         SELECT y.cid_id, NULL, y.digest FROM ({}) y WHERE NOT EXISTS ({})",
        version_sql(b, 2, "x.cid_id"),
        set_sql(a, 1),
        set_sql(b, 2),
        version_sql(a, 1, "y.cid_id"),
    )
}

/// A pin whose version differs between two snapshots (`None`: absent from that one).
pub struct Differing {
    pub cid_id: i64,
    pub a: Option<Vec<u8>>,
    pub b: Option<Vec<u8>>,
}

/// One stored version with its CID.
pub fn version(conn: &Connection, cid_id: i64, digest: &[u8]) -> rusqlite::Result<PinRow> {
    let sql = format!(
        "SELECT {PIN_COLUMNS} FROM pin_versions v JOIN cids c ON c.id = v.cid_id WHERE v.cid_id = ?1 AND v.digest = ?2"
    );
    conn.prepare_cached(&sql)?.query_row(params![cid_id, digest], pin_row)
}

/// For tests: CID `cid` as id `cid_id`, with three bare versions, digests `01`, `02` and `03`.
#[cfg(test)]
pub fn test_pin(conn: &Connection, cid_id: i64, cid: &str) {
    conn.execute("INSERT INTO cids (id, cid) VALUES (?1, ?2)", params![cid_id, cid]).unwrap();
    for v in 1..4u8 {
        conn.execute(
            "INSERT INTO pin_versions (cid_id, digest, name, allocations, replication_min,
               replication_max, mode, max_depth, origins, type, shard_size)
             VALUES (?1, ?2, '', '[]', -1, -1, 'recursive', -1, '[]', 'pin', 0)",
            params![cid_id, vec![v]],
        )
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete snapshot in `series`.
    fn complete(conn: &Connection, series: i64) -> i64 {
        let id = begin(conn, series, "http://127.0.0.1:1/", None, "2026-01-01T00:00:00Z").unwrap();
        finish(conn, id, true, None, &Counts::default(), None).unwrap();
        id
    }

    /// Two snapshots of one peer compared by what changed between them find exactly the pins
    /// whose versions differ, as comparing every pin by key does: random histories of 40 pins over
    /// 7 complete snapshots (a pin absent, or one of 3 versions, in each).
    #[test]
    fn one_peer_is_compared_by_its_changes_as_by_every_pin() {
        use rand::{Rng as _, SeedableRng as _};
        /// A differing pin: its CID's id, its versions in the two snapshots.
        type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);
        for seed in 0..20 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let store = crate::store::Store::open_in_memory().unwrap();
            let conn = &store.conn;
            let series = series_id(conn, "c", "peerA").unwrap();
            let mut prev = None;
            let mut snaps = Vec::new();
            for _ in 0..7 {
                let id = begin(conn, series, "http://127.0.0.1:1/", None, "2026-01-01").unwrap();
                finish(conn, id, true, prev, &Counts::default(), None).unwrap();
                prev = Some(id);
                snaps.push(id);
            }
            // held[cid][k]: the version in snapshot k (0: absent).
            let held: Vec<Vec<u8>> = (0..40)
                .map(|_| {
                    (0..7)
                        .map(|_| if rng.random_bool(0.2) { 0 } else { rng.random_range(1..4) })
                        .collect()
                })
                .collect();
            for (c, versions) in held.iter().enumerate() {
                let cid_id = c as i64 + 1;
                test_pin(conn, cid_id, &format!("Qm{c}"));
                let mut k = 0;
                while k < 7 {
                    let v = versions[k];
                    let end = (k..7).find(|&j| versions[j] != v).unwrap_or(7);
                    if v != 0 {
                        let last = (end < 7).then(|| snaps[end - 1]);
                        conn.execute(
                            "INSERT INTO observations (cid_id, series_id, first_snapshot, last_snapshot, digest, line_hash)
                             VALUES (?1, ?2, ?3, ?4, ?5, X'00')",
                            params![cid_id, series, snaps[k], last, vec![v]],
                        )
                        .unwrap();
                    }
                    k = end;
                }
            }
            for i in 0..7 {
                for j in 0..7 {
                    let (a, b) = (
                        get(conn, snaps[i]).unwrap().unwrap(),
                        get(conn, snaps[j]).unwrap().unwrap(),
                    );
                    let mut got: Vec<Row> = differing(conn, &a, &b)
                        .unwrap()
                        .into_iter()
                        .map(|d| (d.cid_id, d.a, d.b))
                        .collect();
                    got.sort();
                    let mut by_key: Vec<Row> = conn
                        .prepare(&by_key_sql(&a, &b))
                        .unwrap()
                        .query_map(params![a.id, b.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    by_key.sort();
                    let some = |v: u8| (v != 0).then(|| vec![v]);
                    let want: Vec<_> = held
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| h[i] != h[j])
                        .map(|(c, h)| (c as i64 + 1, some(h[i]), some(h[j])))
                        .collect();
                    assert_eq!(got, want, "seed {seed}, snapshots {i} and {j}");
                    assert_eq!(by_key, want, "seed {seed}, snapshots {i} and {j}, by key");
                }
            }
        }
    }

    #[test]
    fn a_peer_keeps_its_series_whatever_the_cluster_is_called() {
        let store = crate::store::Store::open_in_memory().unwrap();
        let conn = &store.conn;
        let a = series_id(conn, "127.0.0.1:9094", "peerA").unwrap();
        let b = series_id(conn, "127.0.0.1:9094", "peerB").unwrap();
        assert_ne!(a, b, "two peers, two series");
        // The same peers named by another URL, another order or a profile: the same series.
        assert_eq!(series_id(conn, "127.0.0.1:9095", "peerA").unwrap(), a);
        assert_eq!(series_id(conn, "localhost:9094", "peerB").unwrap(), b);
        assert_eq!(series_id(conn, "lab", "peerA").unwrap(), a);
        let rows: i64 = conn.query_row("SELECT count(*) FROM series", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2, "no series was created for a new name");
        // A ledger written before holds two series of peerA (one per name): the one with the
        // latest complete snapshot goes on, whatever name is used now.
        conn.execute("INSERT INTO series (cluster, peer) VALUES ('old-name', 'peerA')", [])
            .unwrap();
        let old = conn.last_insert_rowid();
        complete(conn, a);
        complete(conn, old);
        assert_eq!(series_id(conn, "127.0.0.1:9094", "peerA").unwrap(), old);
        complete(conn, a);
        assert_eq!(series_id(conn, "old-name", "peerA").unwrap(), a);
    }
}
