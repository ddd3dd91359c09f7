//! `ledger export TABLE --csv FILE|-` or `--parquet FILE`: ledger tables as RFC 4180 CSV (the csv
//! crate) or as Parquet with a type per column ([`crate::report::table_out`]), with stable columns
//! documented in the README.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};

use crate::app::csv_writer;
use crate::context::Context;
use crate::report::table_out::{Kind, ParquetOut, TableOut};
use crate::store::{self, export::Query, snapshots as db};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Table {
    /// Every snapshot (one row each).
    Snapshots,
    /// The pins of one snapshot (default: the latest complete one).
    Pins,
    /// Every re-pin ledger sent or refused, with the metadata before and after.
    Repins,
    /// Every run of tag, repin, restore and add.
    Runs,
    /// Every pass of every run.
    Passes,
    /// Every convergence sample of every tag run.
    Convergence,
    /// Pins per peer and organisation, as of each peer's latest complete snapshot.
    Owners,
    /// Every lost value, one row per field (see `ledger lost`).
    Lost,
    /// Every entry `ledger add` uploaded, and on how many peers each pin it made was shown.
    Added,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("out").required(true).args(["csv", "parquet"])))]
pub struct ExportArgs {
    /// Which table.
    pub table: Table,
    /// Where to write the CSV; `-` for stdout.
    #[arg(
        long,
        value_name = "FILE|-",
        required_unless_present = "parquet",
        conflicts_with = "parquet"
    )]
    pub csv: Option<String>,
    /// Write Parquet to FILE instead: integers as INT64, times as UTC timestamps (nanoseconds),
    /// flags as booleans, numbers with a fraction as DOUBLE, the rest (metadata, lists) as the
    /// same UTF-8 text and JSON as the CSV; empty CSV fields are NULL. Row groups of 131,072 rows.
    #[arg(long, value_name = "FILE")]
    pub parquet: Option<String>,
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

/// `export runs`, `passes`, `convergence`, `owners` and `added`: the query's column names are the header
/// (see `store::export`), NULL is an empty field.
fn export_query(
    conn: &rusqlite::Connection,
    query: Query,
    w: &mut dyn TableOut,
) -> anyhow::Result<()> {
    let mut first = true;
    store::export::rows(conn, query, |record| {
        if std::mem::take(&mut first) {
            let names: Vec<&str> = record.iter().map(String::as_str).collect();
            return w.header(&names);
        }
        w.row(record)
    })
}

/// The Parquet type of a column, by its name (the same name has the same type in every table,
/// but for the per-field columns of `export repins`: see [`repin_kind`]).
fn kind(column: &str) -> Kind {
    const INT: [&str; 31] = [
        "id",
        "run",
        "run_id",
        "pass",
        "pins",
        "new",
        "changed",
        "vanished",
        "previous_id",
        "http_status",
        "replication_min",
        "replication_max",
        "shard_size",
        "passes",
        "repins",
        "applied",
        "failed",
        "refused",
        "targets",
        "attempted",
        "succeeded",
        "tagged",
        "snapshot",
        "last_had",
        "first_lacking",
        "repin",
        "upload",
        "bytes",
        "size",
        "peers_read",
        "shown_on",
    ];
    const TIME: [&str; 9] = [
        "started_at",
        "finished_at",
        "requested_at",
        "verified_at",
        "at",
        "last_had_at",
        "first_lacking_at",
        "expire_at",
        "cluster_timestamp",
    ];
    match column {
        c if INT.contains(&c) => Kind::Int,
        c if TIME.contains(&c) => Kind::Time,
        "seconds" | "percent" => Kind::Real,
        "dry_run" | "unpinned" | "pinned" => Kind::Bool,
        _ => Kind::Text,
    }
}

/// `export repins`: its per-field columns hold `BEFORE -> AFTER`, text.
fn repin_kind(column: &str) -> Kind {
    if REPIN_FIELDS.contains(&column) { Kind::Text } else { kind(column) }
}

fn export_repins(conn: &rusqlite::Connection, w: &mut dyn TableOut) -> anyhow::Result<()> {
    let header: Vec<&str> = REPIN_COLUMNS.iter().chain(&REPIN_FIELDS).copied().collect();
    w.header(&header)?;
    store::export::repins(conn, |r| {
        let version = |digest: &Option<Vec<u8>>| -> rusqlite::Result<Option<db::PinRow>> {
            match digest {
                Some(d) => db::version(conn, r.cid_id, d).map(Some),
                None => Ok(None),
            }
        };
        let (before, after) = (version(&r.before_digest)?, version(&r.after_digest)?);
        let mut rec = vec![
            r.id.to_string(),
            r.run.to_string(),
            r.kind,
            r.pass.to_string(),
            r.cid,
            r.requested_at,
            r.verified_at.unwrap_or_default(),
            r.status,
            num(r.http_status),
            r.outcome.unwrap_or_default(),
            r.path,
            r.query,
            r.error.unwrap_or_default(),
        ];
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
        w.row(&rec)
    })
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

fn export_lost(conn: &rusqlite::Connection, w: &mut dyn TableOut) -> anyhow::Result<()> {
    w.header(&LOST_COLUMNS)?;
    for l in crate::store::incident::lost(conn, &Default::default())? {
        for f in &l.fields {
            w.row(&[
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
                l.attribution.kind.to_string(),
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

fn export_snapshots(conn: &rusqlite::Connection, w: &mut dyn TableOut) -> anyhow::Result<()> {
    w.header(&SNAPSHOT_COLUMNS)?;
    for s in db::list(conn)? {
        w.row(&[
            s.id.to_string(),
            s.cluster,
            s.peer,
            s.peer_url,
            num(s.run_id),
            num(s.pass),
            s.started_at,
            s.finished_at.unwrap_or_default(),
            s.state.to_string(),
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
        None => match db::list(conn)?
            .into_iter()
            .rev()
            .find(|s| s.state == crate::domain::SnapshotState::Complete)
        {
            Some(s) => s,
            None => bail!("the ledger has no complete snapshot yet: run `ledger snapshot` first"),
        },
    })
}

fn export_pins(
    conn: &rusqlite::Connection,
    snap: &db::SnapshotRow,
    w: &mut dyn TableOut,
) -> anyhow::Result<()> {
    w.header(&PIN_COLUMNS)?;
    db::pins_of(conn, snap, |p| {
        w.row(&[
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
        ])
    })?;
    Ok(())
}

/// Writes one table to the CSV file (`-`: stdout) or the Parquet file `args` name, columns typed
/// by `kind`, and finishes it, so a write error is reported.
fn to_out(
    args: &ExportArgs,
    kind: fn(&str) -> Kind,
    f: impl FnOnce(&mut dyn TableOut) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut w: Box<dyn TableOut> = match (&args.csv, &args.parquet) {
        (_, Some(path)) => Box::new(ParquetOut::create(path, kind)?),
        (Some(path), None) => Box::new(csv_writer(path)?),
        (None, None) => bail!("say where: --csv FILE|- or --parquet FILE"),
    };
    f(w.as_mut())?;
    w.finish()
}

pub fn run(args: ExportArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    // Checked before the ledger is opened: a wrong option is the first thing to say.
    if args.snapshot.is_some() && !matches!(args.table, Table::Pins) {
        bail!("--snapshot only applies to `export pins`");
    }
    let store = ctx.store()?;
    let conn = &store.conn;
    let a = &args;
    match args.table {
        Table::Snapshots => to_out(a, kind, |w| export_snapshots(conn, w))?,
        Table::Pins => {
            // Resolved before the file is created, so a bad snapshot leaves no empty file behind.
            let snap = pins_snapshot(conn, args.snapshot)?;
            to_out(a, kind, |w| export_pins(conn, &snap, w))?
        }
        Table::Repins => to_out(a, repin_kind, |w| export_repins(conn, w))?,
        Table::Runs => to_out(a, kind, |w| export_query(conn, Query::Runs, w))?,
        Table::Passes => to_out(a, kind, |w| export_query(conn, Query::Passes, w))?,
        Table::Convergence => to_out(a, kind, |w| export_query(conn, Query::Convergence, w))?,
        Table::Owners => to_out(a, kind, |w| export_query(conn, Query::Owners, w))?,
        Table::Lost => to_out(a, kind, |w| export_lost(conn, w))?,
        Table::Added => to_out(a, kind, |w| export_query(conn, Query::Added, w))?,
    }
    Ok(ExitCode::SUCCESS)
}
