//! Pin statuses over time (V5): the status readings a snapshot takes with `--status`, and each
//! peer's tracker status of its pins as intervals over the complete readings of its series, the way
//! `observations` holds pin versions. The rows behind `ledger snapshot --status` and `ledger drift
//! --status`. Functions take the caller's connection or transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::domain::SnapshotState;

/// The series of a snapshot.
pub fn series_of_snapshot(conn: &Connection, snapshot: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT series_id FROM snapshots WHERE id = ?1", [snapshot], |r| r.get(0))
        .optional()
}

/// Records the start of a status reading (state `running`) taken with `snapshot`.
pub fn begin(
    conn: &Connection,
    snapshot: i64,
    series: i64,
    started_at: &str,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO status_readings (snapshot_id, series_id, started_at, state) VALUES (?1, ?2, ?3, 'running')",
        params![snapshot, series, started_at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Readings left `running` by a process that died are marked `incomplete`.
pub fn mark_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE status_readings SET state = 'incomplete', error = 'interrupted: the ledger process stopped before the statuses were stored' WHERE state = 'running'",
        [],
    )
}

/// The latest complete reading of a series, if any.
pub fn latest_complete(conn: &Connection, series: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT max(id) FROM status_readings WHERE series_id = ?1 AND state = 'complete'",
        [series],
        |r| r.get(0),
    )
}

/// How a reading ended, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub entries: i64,
    pub opened: i64,
    pub closed: i64,
}

/// Records how a reading ended (`previous`, `opened` and `closed` only for a complete one).
pub fn finish(
    conn: &Connection,
    id: i64,
    complete: bool,
    previous: Option<i64>,
    counts: &Counts,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let (prev, opened, closed) = match complete {
        true => (previous, Some(counts.opened), Some(counts.closed)),
        false => (None, None, None),
    };
    conn.execute(
        "UPDATE status_readings SET finished_at = ?2, state = ?3, entries = ?4, previous_id = ?5,
         opened = ?6, closed = ?7, error = ?8 WHERE id = ?1",
        params![
            id,
            super::now_text(),
            if complete { SnapshotState::Complete } else { SnapshotState::Incomplete },
            counts.entries,
            prev,
            opened,
            closed,
            error
        ],
    )?;
    Ok(())
}

/// One status line as read: the pin's CID and this peer's entry of its `peer_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub cid: String,
    pub status: String,
    pub error: String,
    pub status_at: Option<String>,
    pub attempt_count: i64,
}

/// The lines of one reading, gathered in a temporary table inside the caller's transaction, then
/// applied to the intervals at once ([`LineSet::apply`]) when the stream was whole.
pub struct LineSet<'c> {
    conn: &'c Connection,
    sel_cid: rusqlite::Statement<'c>,
    ins_cid: rusqlite::Statement<'c>,
    ins_line: rusqlite::Statement<'c>,
}

impl<'c> LineSet<'c> {
    /// An empty set (the temporary table is created, or emptied).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<LineSet<'c>> {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS status_lines (
                 cid_id INTEGER PRIMARY KEY, status TEXT NOT NULL, error TEXT NOT NULL,
                 status_at TEXT, attempt_count INTEGER NOT NULL);
             DELETE FROM temp.status_lines;",
        )?;
        Ok(LineSet {
            conn,
            sel_cid: conn.prepare("SELECT id FROM cids WHERE cid = ?1")?,
            ins_cid: conn
                .prepare("INSERT INTO cids (cid) VALUES (?1) ON CONFLICT (cid) DO NOTHING")?,
            // The same CID twice in one reading: the first line counts.
            ins_line: conn.prepare(
                "INSERT INTO temp.status_lines (cid_id, status, error, status_at, attempt_count)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (cid_id) DO NOTHING",
            )?,
        })
    }

    /// Adds one line.
    pub fn add(&mut self, line: &StatusLine) -> rusqlite::Result<()> {
        let id: i64 = match self.sel_cid.query_row([&line.cid], |r| r.get(0)).optional()? {
            Some(id) => id,
            None => {
                self.ins_cid.execute([&line.cid])?;
                self.sel_cid.query_row([&line.cid], |r| r.get(0))?
            }
        };
        self.ins_line.execute(params![
            id,
            line.status,
            line.error,
            line.status_at,
            line.attempt_count
        ])?;
        Ok(())
    }

    /// The reading `reading` of `series` was whole: every open interval whose status (or error
    /// text) the reading does not show again ends at `previous`, the series' previous complete
    /// reading; every status not already open opens an interval at `reading`.
    pub fn apply(
        &self,
        series: i64,
        reading: i64,
        previous: Option<i64>,
    ) -> rusqlite::Result<Counts> {
        let closed = match previous {
            None => 0,
            Some(prev) => self.conn.execute(
                "UPDATE pin_statuses SET last_reading = ?2
                 WHERE series_id = ?1 AND last_reading IS NULL AND NOT EXISTS (
                     SELECT 1 FROM temp.status_lines l WHERE l.cid_id = pin_statuses.cid_id
                        AND l.status = pin_statuses.status AND l.error = pin_statuses.error)",
                params![series, prev],
            )?,
        };
        let opened = self.conn.execute(
            "INSERT INTO pin_statuses (cid_id, series_id, first_reading, last_reading, status, error, status_at, attempt_count)
             SELECT l.cid_id, ?1, ?2, NULL, l.status, l.error, l.status_at, l.attempt_count
             FROM temp.status_lines l
             WHERE NOT EXISTS (SELECT 1 FROM pin_statuses o
                               WHERE o.cid_id = l.cid_id AND o.series_id = ?1 AND o.last_reading IS NULL)",
            params![series, reading],
        )?;
        let entries = self
            .conn
            .query_row("SELECT count(*) FROM temp.status_lines", [], |r| r.get::<_, i64>(0))?;
        Ok(Counts { entries, opened: opened as i64, closed: closed as i64 })
    }

    /// The reading's lines per status.
    pub fn by_status(&self) -> rusqlite::Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT status, count(*) FROM temp.status_lines GROUP BY status ORDER BY status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}

/// A pin whose current status on a peer is one of those asked for (an open interval).
#[derive(Debug, Clone, Serialize)]
pub struct CurrentStatus {
    pub cluster: String,
    pub peer: String,
    pub cid: String,
    pub status: String,
    pub error: String,
    /// The tracker's own timestamp of the status, as the first reading saw it.
    pub status_at: Option<String>,
    pub attempt_count: i64,
    /// The first reading that saw the status: its id, its snapshot, when it started.
    pub first_reading: i64,
    pub first_snapshot: i64,
    pub since: String,
    /// The series' latest complete reading, which still saw it.
    pub last_reading: i64,
    pub last_snapshot: i64,
    pub last_seen: String,
}

/// Every open interval whose status is one of `statuses`, by peer and CID.
pub fn current(conn: &Connection, statuses: &[&str]) -> rusqlite::Result<Vec<CurrentStatus>> {
    let list = serde_json::to_string(statuses).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare(
        "SELECT se.cluster, se.peer, c.cid, ps.status, ps.error, ps.status_at, ps.attempt_count,
                f.id, f.snapshot_id, f.started_at, l.id, l.snapshot_id, l.started_at
         FROM pin_statuses ps
         JOIN series se ON se.id = ps.series_id
         JOIN cids c ON c.id = ps.cid_id
         JOIN status_readings f ON f.id = ps.first_reading
         JOIN status_readings l ON l.id = (SELECT max(r.id) FROM status_readings r
                                           WHERE r.series_id = ps.series_id AND r.state = 'complete')
         WHERE ps.last_reading IS NULL AND ps.status IN (SELECT value FROM json_each(?1))
         ORDER BY se.peer, c.cid",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(CurrentStatus {
            cluster: r.get(0)?,
            peer: r.get(1)?,
            cid: r.get(2)?,
            status: r.get(3)?,
            error: r.get(4)?,
            status_at: r.get(5)?,
            attempt_count: r.get(6)?,
            first_reading: r.get(7)?,
            first_snapshot: r.get(8)?,
            since: r.get(9)?,
            last_reading: r.get(10)?,
            last_snapshot: r.get(11)?,
            last_seen: r.get(12)?,
        })
    })?;
    rows.collect()
}

/// A peer's latest complete status reading.
#[derive(Debug, Clone, Serialize)]
pub struct LatestReading {
    pub cluster: String,
    pub peer: String,
    pub reading: i64,
    pub snapshot: i64,
    pub started_at: String,
    pub entries: i64,
}

/// Every series' latest complete reading, by peer.
pub fn latest_readings(conn: &Connection) -> rusqlite::Result<Vec<LatestReading>> {
    let mut stmt = conn.prepare(
        "SELECT se.cluster, se.peer, r.id, r.snapshot_id, r.started_at, r.entries
         FROM status_readings r JOIN series se ON se.id = r.series_id
         WHERE r.id = (SELECT max(x.id) FROM status_readings x
                       WHERE x.series_id = r.series_id AND x.state = 'complete')
         ORDER BY se.peer",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(LatestReading {
            cluster: r.get(0)?,
            peer: r.get(1)?,
            reading: r.get(2)?,
            snapshot: r.get(3)?,
            started_at: r.get(4)?,
            entries: r.get(5)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cid: &str, status: &str, error: &str) -> StatusLine {
        let (cid, status, error) = (cid.to_string(), status.to_string(), error.to_string());
        StatusLine { cid, status, error, status_at: None, attempt_count: 0 }
    }

    /// One complete reading of `lines` in `series`: its id.
    fn reading(conn: &Connection, series: i64, lines: &[StatusLine]) -> (i64, Counts) {
        let snap = crate::store::snapshots::begin(
            conn,
            series,
            "http://127.0.0.1:1/",
            None,
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        let id = begin(conn, snap, series, "2026-01-01T00:00:00Z").unwrap();
        let previous = latest_complete(conn, series).unwrap();
        let mut set = LineSet::new(conn).unwrap();
        for l in lines {
            set.add(l).unwrap();
        }
        let counts = set.apply(series, id, previous).unwrap();
        drop(set);
        finish(conn, id, true, previous, &counts, None).unwrap();
        (id, counts)
    }

    fn intervals(conn: &Connection) -> Vec<(String, String, String, i64, Option<i64>)> {
        let mut stmt = conn
            .prepare(
                "SELECT c.cid, ps.status, ps.error, ps.first_reading, ps.last_reading FROM pin_statuses ps
                 JOIN cids c ON c.id = ps.cid_id ORDER BY c.cid, ps.first_reading",
            )
            .unwrap();
        let rows =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)));
        rows.unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_status_opens_an_interval_the_same_extends_it_a_change_or_absence_closes_it() {
        let store = crate::store::Store::open_in_memory().unwrap();
        let conn = &store.conn;
        let series = crate::store::snapshots::series_id(conn, "c", "peerA").unwrap();
        let (r1, c1) =
            reading(conn, series, &[line("a", "pinned", ""), line("b", "pin_error", "x")]);
        assert_eq!((c1.entries, c1.opened, c1.closed), (2, 2, 0));
        // The same again: nothing written. A repeated CID in one reading: the first line counts.
        let (_, c2) = reading(
            conn,
            series,
            &[line("a", "pinned", ""), line("b", "pin_error", "x"), line("a", "pinning", "")],
        );
        assert_eq!((c2.entries, c2.opened, c2.closed), (2, 0, 0));
        // b's error text changes (a new interval); a is no longer listed (closed); c is new.
        let (r3, c3) =
            reading(conn, series, &[line("b", "pin_error", "y"), line("c", "pin_queued", "")]);
        assert_eq!((c3.entries, c3.opened, c3.closed), (2, 2, 2));
        let r2 = r3 - 1;
        assert_eq!(
            intervals(conn),
            vec![
                ("a".into(), "pinned".into(), "".into(), r1, Some(r2)),
                ("b".into(), "pin_error".into(), "x".into(), r1, Some(r2)),
                ("b".into(), "pin_error".into(), "y".into(), r3, None),
                ("c".into(), "pin_queued".into(), "".into(), r3, None),
            ]
        );
        let stuck = current(conn, &["pin_error", "pin_queued", "pinning"]).unwrap();
        let got: Vec<(&str, &str, i64)> =
            stuck.iter().map(|s| (s.cid.as_str(), s.status.as_str(), s.first_reading)).collect();
        assert_eq!(got, vec![("b", "pin_error", r3), ("c", "pin_queued", r3)]);
        assert!(stuck.iter().all(|s| s.last_reading == r3));
        // Another peer's series is its own.
        let other = crate::store::snapshots::series_id(conn, "c", "peerB").unwrap();
        let (_, c4) = reading(conn, other, &[line("b", "pinned", "")]);
        assert_eq!((c4.opened, c4.closed), (1, 0));
        assert_eq!(latest_readings(conn).unwrap().len(), 2);
    }
}
