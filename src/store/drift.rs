//! The rows behind `ledger drift` and `watch --drift-after`: the series of one cluster with their
//! latest snapshots, the complete snapshots of the series compared, and every observation interval
//! of those series, pin by pin. The comparison itself is plain logic in `ledger::drift`.

use std::collections::BTreeSet;

use rusqlite::{Connection, params_from_iter};

/// One series of the cluster, with its latest snapshot (of any state) and its latest complete one.
#[derive(Debug, Clone)]
pub struct SeriesRow {
    pub id: i64,
    pub peer: String,
    /// The cluster's name the series was first snapshotted under.
    pub cluster: String,
    /// The latest snapshot: id, state, started_at, error.
    pub latest: Option<(i64, String, String, Option<String>)>,
    /// The latest complete snapshot: id, started_at, peer_url.
    pub complete: Option<(i64, String, String)>,
}

/// The series of the cluster named `cluster`: those first snapshotted under that name, and those
/// with a snapshot read at one of `urls` (a peer keeps the series it was first snapshotted in,
/// whatever the cluster was called then).
pub fn cluster_series(
    conn: &Connection,
    cluster: &str,
    urls: &[String],
) -> rusqlite::Result<Vec<SeriesRow>> {
    let marks = numbered(urls.len());
    let sql = format!(
        "SELECT se.id, se.peer, se.cluster,
                l.id, l.state, l.started_at, l.error,
                c.id, c.started_at, c.peer_url
         FROM series se
         LEFT JOIN snapshots l ON l.id = (SELECT max(id) FROM snapshots WHERE series_id = se.id AND state <> 'running')
         LEFT JOIN snapshots c ON c.id = (SELECT max(id) FROM snapshots WHERE series_id = se.id AND state = 'complete')
         WHERE se.cluster = ?1
            OR se.id IN (SELECT series_id FROM snapshots WHERE peer_url IN ({marks}))
         ORDER BY se.id"
    );
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&cluster];
    values.extend(urls.iter().map(|u| u as &dyn rusqlite::ToSql));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| {
        let latest = match r.get::<_, Option<i64>>(3)? {
            Some(id) => Some((id, r.get(4)?, r.get(5)?, r.get(6)?)),
            None => None,
        };
        let complete = match r.get::<_, Option<i64>>(7)? {
            Some(id) => Some((id, r.get(8)?, r.get(9)?)),
            None => None,
        };
        Ok(SeriesRow { id: r.get(0)?, peer: r.get(1)?, cluster: r.get(2)?, latest, complete })
    })?;
    rows.collect()
}

/// `?2, ?3, …` for `n` parameters after the first.
fn numbered(n: usize) -> String {
    if n == 0 {
        return "NULL".to_string();
    }
    (2..n + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// The complete snapshots of `series` up to `upto` (each series' own bound), oldest first:
/// (snapshot id, series id, started_at).
pub fn complete_snapshots(
    conn: &Connection,
    series: &[(i64, i64)],
) -> rusqlite::Result<Vec<(i64, i64, String)>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT id, series_id, started_at FROM snapshots
         WHERE series_id = ?1 AND state = 'complete' AND id <= ?2 ORDER BY id",
    )?;
    for (s, upto) in series {
        let rows = stmt.query_map([s, upto], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            out.push(row?);
        }
    }
    out.sort_unstable_by_key(|r| r.0);
    Ok(out)
}

/// One observation interval: the series, the snapshots it spans (`last` `None`: up to now) and the
/// version's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub series: i64,
    pub first: i64,
    pub last: Option<i64>,
    pub digest: Vec<u8>,
}

/// Calls `each(cid_id, intervals)` for every pin observed in any of `series`, in CID order, with
/// every interval of that pin in those series. One pass over the table in its key order.
pub fn for_each_pin(
    conn: &Connection,
    series: &[i64],
    mut each: impl FnMut(i64, &[Interval]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if series.is_empty() {
        return Ok(());
    }
    let marks = (1..=series.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    // `+series_id`: read in key order, not through an index on series_id and then sorted.
    let sql = format!(
        "SELECT cid_id, series_id, first_snapshot, last_snapshot, digest FROM observations
         WHERE +series_id IN ({marks}) ORDER BY cid_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(series))?;
    let mut current: Option<i64> = None;
    let mut group: Vec<Interval> = Vec::new();
    while let Some(r) = rows.next()? {
        let cid_id: i64 = r.get(0)?;
        if current != Some(cid_id) {
            if let Some(c) = current {
                each(c, &group)?;
            }
            group.clear();
            current = Some(cid_id);
        }
        group.push(interval(r)?);
    }
    if let Some(c) = current {
        each(c, &group)?;
    }
    Ok(())
}

/// An interval from a row of `cid_id, series_id, first_snapshot, last_snapshot, digest`.
fn interval(r: &rusqlite::Row) -> rusqlite::Result<Interval> {
    Ok(Interval { series: r.get(1)?, first: r.get(2)?, last: r.get(3)?, digest: r.get(4)? })
}

/// The pins that can disagree, among `series` of the cluster `cluster`, in a view that reads their
/// snapshots from `from` on: those that disagree now (V9's `disagreements`) and those with an
/// interval in `series` opened after `from` or closed at or after it. Any other pin holds one
/// version (or none) on each of those series from `from` on, the same on all.
pub fn candidates(
    conn: &Connection,
    cluster: &str,
    series: &[i64],
    from: i64,
) -> rusqlite::Result<BTreeSet<i64>> {
    let mut out = BTreeSet::new();
    let mut stmt = conn.prepare("SELECT cid_id FROM disagreements WHERE cluster = ?1")?;
    for c in stmt.query_map([cluster], |r| r.get(0))? {
        out.insert(c?);
    }
    let mut stmt = conn.prepare(
        "SELECT cid_id FROM observations WHERE series_id = ?1 AND first_snapshot > ?2
         UNION ALL
         SELECT cid_id FROM observations WHERE series_id = ?1 AND last_snapshot >= ?2",
    )?;
    for s in series {
        for c in stmt.query_map([s, &from], |r| r.get(0))? {
            out.insert(c?);
        }
    }
    Ok(out)
}

/// [`for_each_pin`] for the pins `cids` only, each read by its key.
pub fn for_each_of(
    conn: &Connection,
    series: &[i64],
    cids: &BTreeSet<i64>,
    mut each: impl FnMut(i64, &[Interval]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT cid_id, series_id, first_snapshot, last_snapshot, digest FROM observations
         WHERE cid_id = ?1",
    )?;
    let mut group: Vec<Interval> = Vec::new();
    for &cid_id in cids {
        group.clear();
        let mut rows = stmt.query([cid_id])?;
        while let Some(r) = rows.next()? {
            let i = interval(r)?;
            if series.contains(&i.series) {
                group.push(i);
            }
        }
        if !group.is_empty() {
            each(cid_id, &group)?;
        }
    }
    Ok(())
}

/// A CID by its id.
pub fn cid(conn: &Connection, cid_id: i64) -> rusqlite::Result<String> {
    conn.query_row("SELECT cid FROM cids WHERE id = ?1", [cid_id], |r| r.get(0))
}
