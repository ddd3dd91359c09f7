//! What `ledger add` runs uploaded (`added`) and each pin they made as every peer showed it
//! (`added_reads`); see migrations/V6__add_runs.sql. Each call is its own autocommitted statement, so
//! an answer line is on record as soon as it has come.

use rusqlite::{Connection, params};

use crate::pin::CanonicalPin;

/// An entry the cluster's answer named.
pub struct NewEntry<'a> {
    pub run: i64,
    pub seq: i64,
    pub upload: i64,
    pub name: &'a str,
    pub path: Option<&'a str>,
    pub kind: &'a str,
    pub bytes: Option<u64>,
    pub size: u64,
    pub cid: &'a str,
    pub pinned: bool,
}

pub fn entry(conn: &Connection, e: &NewEntry) -> rusqlite::Result<()> {
    let cid_id = super::runs::cid_id(conn, e.cid)?;
    conn.prepare_cached(
        "INSERT INTO added (run_id, seq, upload, name, path, kind, bytes, size, cid_id, pinned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        e.run,
        e.seq,
        e.upload,
        e.name,
        e.path,
        e.kind,
        e.bytes.map(|b| b as i64),
        e.size as i64,
        cid_id,
        e.pinned
    ])?;
    Ok(())
}

/// Records how `peer` showed the pin `cid` after the add: `pin` as read back (stored as a pin
/// version), or nothing, with why.
pub fn read(
    conn: &Connection,
    run: i64,
    cid: &str,
    peer: &str,
    pin: Option<&CanonicalPin>,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let cid_id = super::runs::cid_id(conn, cid)?;
    let digest = pin.map(|p| super::runs::ensure_version(conn, cid_id, p)).transpose()?;
    conn.prepare_cached(
        "INSERT INTO added_reads (run_id, cid_id, peer, read_at, digest, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run_id, cid_id, peer) DO UPDATE
         SET read_at = excluded.read_at, digest = excluded.digest, error = excluded.error",
    )?
    .execute(params![run, cid_id, peer, super::now_text(), digest, error])?;
    Ok(())
}
