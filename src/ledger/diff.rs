//! What differs between two snapshots, pin by pin, and field by field between two stored versions
//! of a pin.

use serde::Serialize;

use crate::store::snapshots::{self as db, PinRow};

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: String,
    pub after: String,
}

/// The fields of the stored form that differ between `a` and `b`, in a fixed order.
pub fn changed_fields(a: &PinRow, b: &PinRow) -> Vec<FieldChange> {
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    let pairs: [(&'static str, String, String); 13] = [
        ("name", a.name.clone(), b.name.clone()),
        ("metadata", text(&a.metadata), text(&b.metadata)),
        ("allocations", a.allocations.clone(), b.allocations.clone()),
        ("replication_min", a.replication_min.to_string(), b.replication_min.to_string()),
        ("replication_max", a.replication_max.to_string(), b.replication_max.to_string()),
        ("mode", a.mode.clone(), b.mode.clone()),
        ("expire_at", text(&a.expire_at), text(&b.expire_at)),
        ("origins", a.origins.clone(), b.origins.clone()),
        ("type", a.typ.clone(), b.typ.clone()),
        ("shard_size", a.shard_size.to_string(), b.shard_size.to_string()),
        ("reference", text(&a.reference), text(&b.reference)),
        ("pin_update", text(&a.pin_update), text(&b.pin_update)),
        ("cluster_timestamp", text(&a.cluster_timestamp), text(&b.cluster_timestamp)),
    ];
    pairs
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(field, before, after)| FieldChange { field, before, after })
        .collect()
}

/// One pin that differs between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub cid: String,
    /// `new`, `vanished` or `changed`.
    pub change: &'static str,
    pub fields: Vec<FieldChange>,
}

/// What differs between two stored snapshots (of any peers), sorted by change and CID.
#[derive(Debug, Clone)]
pub struct Diff {
    pub a: db::SnapshotRow,
    pub b: db::SnapshotRow,
    pub pins: Vec<Entry>,
}

/// Compares snapshot `a` with snapshot `b`.
pub fn between(conn: &rusqlite::Connection, a: i64, b: i64) -> anyhow::Result<Diff> {
    let get = |id: i64| -> anyhow::Result<db::SnapshotRow> {
        match db::get(conn, id)? {
            Some(s) => Ok(s),
            None => anyhow::bail!("there is no snapshot {id}; `ledger snapshots` lists them"),
        }
    };
    let (a, b) = (get(a)?, get(b)?);
    let mut entries = Vec::new();
    for d in db::differing(conn, &a, &b)? {
        let ra = d.a.map(|v| db::version(conn, d.cid_id, &v)).transpose()?;
        let rb = d.b.map(|v| db::version(conn, d.cid_id, &v)).transpose()?;
        entries.push(match (ra, rb) {
            (None, Some(r)) => Entry { cid: r.cid, change: "new", fields: vec![] },
            (Some(r), None) => Entry { cid: r.cid, change: "vanished", fields: vec![] },
            (Some(x), Some(y)) => {
                Entry { cid: y.cid.clone(), change: "changed", fields: changed_fields(&x, &y) }
            }
            (None, None) => continue,
        });
    }
    entries.sort_by(|x, y| (x.change, &x.cid).cmp(&(y.change, &y.cid)));
    Ok(Diff { a, b, pins: entries })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain stored pin for tests.
    pub(crate) fn row() -> PinRow {
        PinRow {
            cid: "Qm".into(),
            name: "a".into(),
            metadata: None,
            allocations: "[]".into(),
            replication_min: -1,
            replication_max: -1,
            mode: "recursive".into(),
            expire_at: None,
            origins: "[]".into(),
            cluster_timestamp: Some("2026-01-01T00:00:00Z".into()),
            typ: "pin".into(),
            shard_size: 0,
            reference: None,
            pin_update: None,
            max_depth: -1,
        }
    }

    #[test]
    fn only_differing_fields() {
        let a = row();
        assert!(changed_fields(&a, &a).is_empty());
        let mut b = row();
        b.metadata = Some(r#"{"org":"hrdag"}"#.into());
        b.name = String::new();
        let c = changed_fields(&a, &b);
        assert_eq!(c.iter().map(|c| c.field).collect::<Vec<_>>(), vec!["name", "metadata"]);
        assert_eq!(c[1].after, r#"{"org":"hrdag"}"#);
    }
}
