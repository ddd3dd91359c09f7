//! `ledger export TABLE --csv FILE|-`: ledger tables as RFC 4180 CSV (the csv crate), with stable
//! columns documented in the README.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};

use crate::app::csv_writer;
use crate::cli::GlobalArgs;
use crate::store::snapshots as db;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Table {
    /// Every snapshot (one row each).
    Snapshots,
    /// The pins of one snapshot (default: the latest complete one).
    Pins,
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

pub fn run(args: ExportArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = g.ledger.store()?;
    let o = |v: Option<String>| v.unwrap_or_default();
    let n = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    match args.table {
        Table::Snapshots => {
            let mut w = csv_writer(&args.csv)?;
            w.write_record(SNAPSHOT_COLUMNS)?;
            for s in db::list(&store.conn)? {
                w.write_record([
                    s.id.to_string(),
                    s.cluster,
                    s.peer,
                    s.peer_url,
                    n(s.run_id),
                    n(s.pass),
                    s.started_at,
                    o(s.finished_at),
                    s.state,
                    s.pins.to_string(),
                    n(s.new),
                    n(s.changed),
                    n(s.vanished),
                    n(s.previous_id),
                    o(s.error),
                ])?;
            }
            w.flush()?;
        }
        Table::Pins => {
            let snap = match args.snapshot {
                Some(id) => match db::get(&store.conn, id)? {
                    Some(s) => s,
                    None => bail!("there is no snapshot {id}; `ledger snapshots` lists them"),
                },
                None => {
                    let latest =
                        db::list(&store.conn)?.into_iter().rev().find(|s| s.state == "complete");
                    match latest {
                        Some(s) => s,
                        None => bail!(
                            "the ledger has no complete snapshot yet: run `ledger snapshot` first"
                        ),
                    }
                }
            };
            let mut w = csv_writer(&args.csv)?;
            w.write_record(PIN_COLUMNS)?;
            db::pins_of(&store.conn, &snap, |p| {
                w.write_record([
                    p.cid,
                    p.name,
                    p.metadata.unwrap_or_else(|| "{}".to_string()),
                    p.allocations,
                    p.replication_min.to_string(),
                    p.replication_max.to_string(),
                    p.mode,
                    o(p.expire_at),
                    p.origins,
                    o(p.cluster_timestamp),
                    p.typ,
                    p.shard_size.to_string(),
                    o(p.reference),
                    o(p.pin_update),
                ])?;
                Ok(())
            })?;
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
