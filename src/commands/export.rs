//! `ledger export TABLE --csv FILE|-`: ledger tables as RFC 4180 CSV (the csv crate), with stable
//! columns documented in the README.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};

use crate::app::csv_writer;
use crate::cli::GlobalArgs;
use crate::report::files::CsvOut;
use crate::store::snapshots as db;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Table {
    /// Every snapshot (one row each).
    Snapshots,
    /// The pins of one snapshot (default: the latest complete one).
    Pins,
    /// Every re-pin ledger sent or refused, with the metadata before and after.
    Repins,
    /// Every run of tag, repin and restore.
    Runs,
    /// Every pass of every run.
    Passes,
    /// Every convergence sample of every tag run.
    Convergence,
    /// Pins per peer and organisation, as of each peer's latest complete snapshot.
    Owners,
    /// Every lost value, one row per field (see `ledger lost`).
    Lost,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which table.
    pub table: Table,
    /// Where to write the CSV; `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub csv: String,
    /// For `pins`: the snapshot to export.
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<i64>,
}

/// Columns of `export pins`.
pub const PIN_COLUMNS: [&str; 14] = [
    "cid",
    "name",
    "metadata",
    "allocations",
    "replication_min",
    "replication_max",
    "mode",
    "expire_at",
    "origins",
    "cluster_timestamp",
    "type",
    "shard_size",
    "reference",
    "pin_update",
];

/// Columns of `export snapshots`.
pub const SNAPSHOT_COLUMNS: [&str; 15] = [
    "id",
    "cluster",
    "peer",
    "peer_url",
    "run_id",
    "pass",
    "started_at",
    "finished_at",
    "state",
    "pins",
    "new",
    "changed",
    "vanished",
    "previous_id",
    "error",
];

/// Columns of `export repins`, then one per field of [`REPIN_FIELDS`]. The per-field columns hold
/// `BEFORE -> AFTER` when the re-pin changed that field and are empty otherwise; `metadata_keys` lists
/// changed keys as `+k` (added), `-k` (removed), `~k` (new value).
pub const REPIN_COLUMNS: [&str; 17] = [
    "id",
    "run",
    "kind",
    "pass",
    "cid",
    "requested_at",
    "verified_at",
    "status",
    "http_status",
    "outcome",
    "path",
    "query",
    "error",
    "before_metadata",
    "after_metadata",
    "changed_fields",
    "metadata_keys",
];

/// The per-field columns of `export repins`, as named by `ledger::diff`.
pub const REPIN_FIELDS: [&str; 7] =
    ["name", "allocations", "replication_min", "replication_max", "mode", "expire_at", "origins"];

/// `export runs`, `passes`, `convergence` and `owners`: the query is the column set.
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

/// Columns of `export lost`.
pub const LOST_COLUMNS: [&str; 15] = [
    "cid",
    "peers",
    "last_had",
    "last_had_at",
    "first_lacking",
    "first_lacking_at",
    "unpinned",
    "field",
    "before",
    "after",
    "attribution",
    "run",
    "pass",
    "repin",
    "query",
];

/// Writes the rows of `sql` with its column names as the header; NULL is an empty field.
fn export_query(conn: &rusqlite::Connection, sql: &str, w: &mut CsvOut) -> anyhow::Result<()> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    w.write_record(&names)?;
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
        w.write_record(&record)?;
    }
    Ok(())
}

fn export_repins(conn: &rusqlite::Connection, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(REPIN_COLUMNS.iter().chain(&REPIN_FIELDS))?;
    let mut stmt = conn.prepare(
        "SELECT r.id, r.run_id, u.kind, r.pass, c.cid, r.requested_at, r.verified_at, r.status,
                r.http_status, r.outcome, r.path, r.query, r.error, r.cid_id, r.before_digest,
                r.after_digest
         FROM repins r JOIN runs u ON u.id = r.run_id JOIN cids c ON c.id = r.cid_id ORDER BY r.id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let text = |i: usize| -> rusqlite::Result<String> {
            Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default())
        };
        let num = |i: usize| -> rusqlite::Result<String> {
            Ok(r.get::<_, Option<i64>>(i)?.map(|n| n.to_string()).unwrap_or_default())
        };
        let mut rec = vec![
            num(0)?,
            num(1)?,
            text(2)?,
            num(3)?,
            text(4)?,
            text(5)?,
            text(6)?,
            text(7)?,
            num(8)?,
            text(9)?,
            text(10)?,
            text(11)?,
            text(12)?,
        ];
        let cid_id: i64 = r.get(13)?;
        let version = |i: usize| -> rusqlite::Result<Option<db::PinRow>> {
            match r.get::<_, Option<Vec<u8>>>(i)? {
                Some(d) => db::version(conn, cid_id, &d).map(Some),
                None => Ok(None),
            }
        };
        let (before, after) = (version(14)?, version(15)?);
        let meta = |p: &Option<db::PinRow>| {
            p.as_ref()
                .map(|p| p.metadata.clone().unwrap_or_else(|| "{}".into()))
                .unwrap_or_default()
        };
        rec.push(meta(&before));
        rec.push(meta(&after));
        let (changes, keys) = match (&before, &after) {
            (Some(b), Some(a)) => (crate::ledger::diff::changed_fields(b, a), metadata_keys(b, a)),
            _ => (Vec::new(), String::new()),
        };
        let changed: Vec<&str> =
            changes.iter().map(|c| c.field).filter(|f| *f != "cluster_timestamp").collect();
        rec.push(changed.join(" "));
        rec.push(keys);
        for f in REPIN_FIELDS {
            rec.push(
                changes
                    .iter()
                    .find(|c| c.field == f)
                    .map(|c| format!("{} -> {}", c.before, c.after))
                    .unwrap_or_default(),
            );
        }
        w.write_record(&rec)?;
    }
    Ok(())
}

/// Changed metadata keys between two versions: `+k` added, `-k` removed, `~k` new value.
fn metadata_keys(b: &db::PinRow, a: &db::PinRow) -> String {
    let parse = |p: &db::PinRow| -> std::collections::BTreeMap<String, String> {
        p.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default()
    };
    let (mb, ma) = (parse(b), parse(a));
    let mut out = Vec::new();
    for (k, v) in &ma {
        match mb.get(k) {
            None => out.push(format!("+{k}")),
            Some(old) if old != v => out.push(format!("~{k}")),
            Some(_) => {}
        }
    }
    out.extend(mb.keys().filter(|k| !ma.contains_key(*k)).map(|k| format!("-{k}")));
    out.sort_by(|x, y| x[1..].cmp(&y[1..]));
    out.join(" ")
}

fn export_lost(conn: &rusqlite::Connection, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(LOST_COLUMNS)?;
    for l in crate::store::incident::lost(conn, &Default::default())? {
        for f in &l.fields {
            w.write_record([
                l.cid.clone(),
                l.peers.join(" "),
                l.last_had.snapshot.to_string(),
                l.last_had.at.clone(),
                l.first_lacking.snapshot.to_string(),
                l.first_lacking.at.clone(),
                u8::from(l.unpinned).to_string(),
                f.field.clone(),
                f.before.clone().unwrap_or_default(),
                f.after.clone().unwrap_or_default(),
                l.attribution.kind.clone(),
                num(l.attribution.run),
                num(l.attribution.pass),
                num(l.attribution.repin),
                l.attribution.query.clone().unwrap_or_default(),
            ])?;
        }
    }
    Ok(())
}

/// An optional number as a CSV field (empty when absent).
fn num(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn export_snapshots(conn: &rusqlite::Connection, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(SNAPSHOT_COLUMNS)?;
    for s in db::list(conn)? {
        w.write_record([
            s.id.to_string(),
            s.cluster,
            s.peer,
            s.peer_url,
            num(s.run_id),
            num(s.pass),
            s.started_at,
            s.finished_at.unwrap_or_default(),
            s.state,
            s.pins.to_string(),
            num(s.new),
            num(s.changed),
            num(s.vanished),
            num(s.previous_id),
            s.error.unwrap_or_default(),
        ])?;
    }
    Ok(())
}

/// The snapshot `export pins` reads: the one asked for, or the latest complete one.
fn pins_snapshot(conn: &rusqlite::Connection, id: Option<i64>) -> anyhow::Result<db::SnapshotRow> {
    Ok(match id {
        Some(id) => match db::get(conn, id)? {
            Some(s) => s,
            None => bail!("there is no snapshot {id}; `ledger snapshots` lists them"),
        },
        None => match db::list(conn)?.into_iter().rev().find(|s| s.state == "complete") {
            Some(s) => s,
            None => bail!("the ledger has no complete snapshot yet: run `ledger snapshot` first"),
        },
    })
}

fn export_pins(
    conn: &rusqlite::Connection,
    snap: &db::SnapshotRow,
    w: &mut CsvOut,
) -> anyhow::Result<()> {
    w.write_record(PIN_COLUMNS)?;
    db::pins_of(conn, snap, |p| {
        w.write_record([
            p.cid,
            p.name,
            p.metadata.unwrap_or_else(|| "{}".to_string()),
            p.allocations,
            p.replication_min.to_string(),
            p.replication_max.to_string(),
            p.mode,
            p.expire_at.unwrap_or_default(),
            p.origins,
            p.cluster_timestamp.unwrap_or_default(),
            p.typ,
            p.shard_size.to_string(),
            p.reference.unwrap_or_default(),
            p.pin_update.unwrap_or_default(),
        ])?;
        Ok(())
    })?;
    Ok(())
}

/// Writes one CSV document to `path` (`-`: stdout) and flushes it, so a write error is reported.
fn to_csv(path: &str, f: impl FnOnce(&mut CsvOut) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut w = csv_writer(path)?;
    f(&mut w)?;
    w.flush()?;
    Ok(())
}

pub fn run(args: ExportArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = g.ledger.store()?;
    let conn = &store.conn;
    let path = args.csv.as_str();
    match args.table {
        Table::Snapshots => to_csv(path, |w| export_snapshots(conn, w))?,
        Table::Pins => {
            // Resolved before the file is created, so a bad snapshot leaves no empty CSV behind.
            let snap = pins_snapshot(conn, args.snapshot)?;
            to_csv(path, |w| export_pins(conn, &snap, w))?
        }
        _ if args.snapshot.is_some() => bail!("--snapshot only applies to `export pins`"),
        Table::Repins => to_csv(path, |w| export_repins(conn, w))?,
        Table::Runs => to_csv(path, |w| export_query(conn, RUNS_SQL, w))?,
        Table::Passes => to_csv(path, |w| export_query(conn, PASSES_SQL, w))?,
        Table::Convergence => to_csv(path, |w| export_query(conn, CONVERGENCE_SQL, w))?,
        Table::Owners => to_csv(path, |w| export_query(conn, OWNERS_SQL, w))?,
        Table::Lost => to_csv(path, |w| export_lost(conn, w))?,
    }
    Ok(ExitCode::SUCCESS)
}
