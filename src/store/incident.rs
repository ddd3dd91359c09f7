//! Post-incident queries over what each snapshot recorded at its commit (V7) and the views: lost
//! values (`losses`, `lost_metadata`), owners (`owners`, `owner_changes`). The views hold the
//! logic, so `sqlite3` users and these commands agree.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::domain::Attribution as Who;

/// Where a loss starts looking: after a snapshot, or after a time (UTC RFC 3339).
#[derive(Debug, Clone)]
pub enum Since {
    Snapshot(i64),
    Time(String),
}

/// Which losses to list.
#[derive(Debug, Clone, Default)]
pub struct LostFilter {
    pub since: Option<Since>,
    /// Only losses of this metadata key.
    pub key: Option<String>,
    /// Only losses first seen in one of these snapshots (`watch`).
    pub first_lacking_in: Option<Vec<i64>>,
}

/// A snapshot and when it started.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct At {
    pub snapshot: i64,
    pub at: String,
}

/// One value that was lost or changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostField {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Who changed it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attribution {
    /// `ours`, `outside`, `cluster` or `unpinned`.
    pub kind: Who,
    pub run: Option<i64>,
    pub pass: Option<i64>,
    pub repin: Option<i64>,
    pub query: Option<String>,
    pub timestamp_before: Option<String>,
    pub timestamp_after: Option<String>,
}

/// One change of a pin (version before → version after) that lost values, merged over the peers
/// that saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Loss {
    pub cid: String,
    pub peers: Vec<String>,
    pub last_had: At,
    pub first_lacking: At,
    pub unpinned: bool,
    pub fields: Vec<LostField>,
    pub attribution: Attribution,
    #[serde(skip)]
    pub before_digest: String,
    #[serde(skip)]
    pub after_digest: Option<String>,
}

/// The losses, oldest first, one per (CID, version before, version after), merged over the peers
/// that saw it: it starts at the earliest snapshot that lacked the value. Read from the losses each
/// snapshot recorded when it was committed (V7), so the cost follows the losses listed, not the
/// history.
pub fn lost(conn: &Connection, f: &LostFilter) -> rusqlite::Result<Vec<Loss>> {
    let mut out = Vec::new();
    each_lost(conn, f, |l| {
        out.push(l);
        Ok::<_, rusqlite::Error>(())
    })?;
    Ok(out)
}

/// [`lost`], one loss at a time, as they are read: nothing is held but the loss at hand.
pub fn each_lost<E: From<rusqlite::Error>>(
    conn: &Connection,
    f: &LostFilter,
    mut each: impl FnMut(Loss) -> Result<(), E>,
) -> Result<(), E> {
    let floor = lost_floor(conn, f)?;
    let peers: HashMap<i64, String> = conn
        .prepare("SELECT id, peer FROM series")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(RECORDED_LOSSES)?;
    let mut rows = stmt.query([floor])?;
    while let Some(r) = rows.next()? {
        let mut l = loss_of(r, &peers)?;
        // Filters apply to the merged loss: it starts where the first peer saw it.
        if keep_loss(&mut l, f) {
            each(l)?;
        }
    }
    Ok(())
}

/// The last snapshot whose changes a filter leaves out (0: none left out).
fn lost_floor(conn: &Connection, f: &LostFilter) -> rusqlite::Result<i64> {
    Ok(match (&f.since, &f.first_lacking_in) {
        (_, Some(ids)) => ids.iter().min().map_or(i64::MAX, |m| m - 1),
        (Some(Since::Snapshot(id)), None) => *id,
        (Some(Since::Time(t)), None) => conn.query_row(
            "SELECT coalesce(max(id), 0) FROM snapshots WHERE started_at <= ?1",
            [t],
            |r| r.get(0),
        )?,
        (None, None) => 0,
    })
}

/// The recorded losses that start after snapshot `?1`, each with its first sighting's attribution,
/// the series that saw it (in the order they first saw it) and the values it lost (by field), all
/// kept in its row (V8). `CROSS JOIN` keeps SQLite reading the losses in the order of
/// `first_lacking`, so only the losses of one snapshot are sorted at a time.
const RECORDED_LOSSES: &str =
    "SELECT x.cid, a.last_had, s1.started_at, a.first_lacking, s2.started_at, a.attribution,
            a.repin_id, a.run_id, a.pass, a.query, a.timestamp_before, a.timestamp_after,
            lower(hex(l.before_digest)), lower(hex(l.after_digest)), l.sighting_series, l.fields
     FROM losses l
     CROSS JOIN loss_attribution a ON a.loss_id = l.id AND a.first_lacking = l.first_lacking
     JOIN cids x ON x.id = l.cid_id
     JOIN snapshots s1 ON s1.id = a.last_had
     JOIN snapshots s2 ON s2.id = a.first_lacking
     WHERE l.first_lacking > ?1
     ORDER BY l.first_lacking, x.cid, l.before_digest, l.after_digest";

/// A loss from its row of [`RECORDED_LOSSES`]; `peers` names each series by its peer. Two series of
/// one peer (another cluster name) count once, where the first of them saw the loss.
fn loss_of(r: &rusqlite::Row, peers: &HashMap<i64, String>) -> rusqlite::Result<Loss> {
    let json = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let series: Vec<i64> = serde_json::from_str(&json(14)?).map_err(|e| bad(14, e))?;
    let mut seen = Vec::with_capacity(series.len());
    for s in series {
        let p = peers.get(&s).ok_or_else(|| {
            let e = format!("sighting_series names series {s}, which the ledger does not hold");
            rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, e.into())
        })?;
        if !seen.contains(p) {
            seen.push(p.clone());
        }
    }
    let fields: Vec<(String, Option<String>, Option<String>)> =
        serde_json::from_str(&json(15)?).map_err(|e| bad(15, e))?;
    let kind: Who = r.get(5)?;
    Ok(Loss {
        cid: r.get(0)?,
        peers: seen,
        last_had: At { snapshot: r.get(1)?, at: r.get(2)? },
        first_lacking: At { snapshot: r.get(3)?, at: r.get(4)? },
        unpinned: kind == Who::Unpinned,
        fields: fields
            .into_iter()
            .map(|(field, before, after)| LostField { field, before, after })
            .collect(),
        attribution: Attribution {
            kind,
            repin: r.get(6)?,
            run: r.get(7)?,
            pass: r.get(8)?,
            query: r.get(9)?,
            timestamp_before: r.get(10)?,
            timestamp_after: r.get(11)?,
        },
        before_digest: r.get(12)?,
        after_digest: r.get(13)?,
    })
}

/// Whether a merged loss passes the filter; a key filter keeps only that key's fields.
fn keep_loss(l: &mut Loss, f: &LostFilter) -> bool {
    let after = match &f.since {
        Some(Since::Snapshot(id)) => l.first_lacking.snapshot > *id,
        Some(Since::Time(t)) => l.first_lacking.at > *t,
        None => true,
    };
    let new = f.first_lacking_in.as_ref().is_none_or(|ids| ids.contains(&l.first_lacking.snapshot));
    if let Some(k) = &f.key {
        let field = format!("metadata.{k}");
        l.fields.retain(|x| x.field == field);
    }
    after && new && !l.fields.is_empty()
}

/// One peer's latest complete snapshot by owner.
#[derive(Debug, Clone, Serialize)]
pub struct PeerOwners {
    pub cluster: String,
    pub peer: String,
    pub snapshot: i64,
    pub orgs: BTreeMap<String, i64>,
    pub unowned: i64,
}

impl PeerOwners {
    /// Pins of `org` (`None`: unowned).
    pub fn count(&self, org: Option<&str>) -> i64 {
        match org {
            Some(o) => self.orgs.get(o).copied().unwrap_or(0),
            None => self.unowned,
        }
    }

    /// Every pin of the snapshot.
    pub fn total(&self) -> i64 {
        self.orgs.values().sum::<i64>() + self.unowned
    }
}

/// Every organisation any of `peers` has pins of, sorted.
pub fn org_names(peers: &[PeerOwners]) -> Vec<&str> {
    let set: std::collections::BTreeSet<&str> =
        peers.iter().flat_map(|p| p.orgs.keys().map(String::as_str)).collect();
    set.into_iter().collect()
}

/// The `owners` view, one entry per peer.
pub fn owners(conn: &Connection) -> rusqlite::Result<Vec<PeerOwners>> {
    let mut stmt = conn.prepare(
        "SELECT cluster, peer, snapshot_id, org, pins FROM owners ORDER BY cluster, peer, org",
    )?;
    let mut rows = stmt.query([])?;
    let mut out: Vec<PeerOwners> = Vec::new();
    while let Some(r) = rows.next()? {
        let (cluster, peer): (String, String) = (r.get(0)?, r.get(1)?);
        let org: Option<String> = r.get(3)?;
        let pins: i64 = r.get(4)?;
        if out.last().is_none_or(|p| p.cluster != cluster || p.peer != peer) {
            out.push(PeerOwners {
                cluster,
                peer,
                snapshot: r.get(2)?,
                orgs: BTreeMap::new(),
                unowned: 0,
            });
        }
        let p = out.last_mut().expect("pushed above");
        match org {
            Some(o) => *p.orgs.entry(o).or_default() += pins,
            None => p.unowned += pins,
        }
    }
    Ok(out)
}

/// How many pins changed owner from one organisation (`None`: unowned) to another over the
/// history, each pin counted once however many peers saw it.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerChanges {
    pub from: Option<String>,
    pub to: Option<String>,
    pub pins: i64,
}

/// A pin whose owner was removed or replaced, where that was first seen.
#[derive(Debug, Clone, Serialize)]
pub struct OrgChange {
    pub cid: String,
    /// The peer whose snapshot saw it first.
    pub peer: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub snapshot: i64,
    pub at: String,
}

/// The recorded owner changes (V7 `owner_changes`) by (from, to), in that order.
pub fn owner_changes(conn: &Connection) -> rusqlite::Result<Vec<OwnerChanges>> {
    let mut stmt = conn.prepare(
        "SELECT nullif(from_org, ''), nullif(to_org, ''), count(*) FROM owner_changes
         GROUP BY from_org, to_org ORDER BY from_org, to_org",
    )?;
    let rows = stmt
        .query_map([], |r| Ok(OwnerChanges { from: r.get(0)?, to: r.get(1)?, pins: r.get(2)? }))?;
    rows.collect()
}

/// The pins that had an owner and lost it or got another, oldest first.
pub fn owners_replaced(conn: &Connection) -> rusqlite::Result<Vec<OrgChange>> {
    let mut stmt = conn.prepare(
        "SELECT x.cid, se.peer, o.from_org, nullif(o.to_org, ''), o.changed_in, s.started_at
         FROM owner_changes o JOIN cids x ON x.id = o.cid_id JOIN series se ON se.id = o.series_id
         JOIN snapshots s ON s.id = o.changed_in
         WHERE o.from_org <> '' ORDER BY o.changed_in, x.cid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OrgChange {
            cid: r.get(0)?,
            peer: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            snapshot: r.get(4)?,
            at: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// The versions of a pin in a series from snapshot `from` (the one it had there) up to now, in
/// order, as digests.
pub fn versions_since(
    conn: &Connection,
    series: i64,
    cid_id: i64,
    from: i64,
) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT digest FROM observations WHERE cid_id = ?1 AND series_id = ?2
           AND (last_snapshot IS NULL OR last_snapshot >= ?3) AND first_snapshot <= (
               SELECT max(id) FROM snapshots WHERE series_id = ?2 AND state = 'complete')
         ORDER BY first_snapshot",
    )?;
    let rows = stmt.query_map(params![cid_id, series, from], |r| r.get(0))?;
    rows.collect()
}
