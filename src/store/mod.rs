//! The SQLite ledger: [`Store::open`] is the one place that opens the file (pragmas, schema check,
//! refinery migrations embedded from `migrations/`). Table groups live in their own files; their
//! functions take the caller's `&Connection` or `&Transaction` and never open transactions themselves.

pub mod added;
pub mod drift;
pub mod export;
pub mod incident;
pub mod metrics;
pub mod report;
pub mod runs;
pub mod snapshots;
pub mod status;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rusqlite::Connection;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The open ledger database.
pub struct Store {
    pub conn: Connection,
    pub path: PathBuf,
    /// The file (or its directory) cannot be written: the ledger was opened for reading only, and
    /// [`Store::write_lock`] and [`Store::run_lock`] refuse with a message that says so.
    pub read_only: bool,
}

/// One migration and whether the database has it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationStatus {
    pub version: u32,
    pub name: String,
    pub applied_on: Option<String>,
    /// Applied, but not the migration this binary carries under that version (every command
    /// refuses the database).
    pub checksum_mismatch: bool,
}

impl Store {
    /// Opens (creating if needed) the ledger at `path` and brings its schema up to date. A database
    /// whose schema is newer than this binary is refused untouched. A ledger that cannot be written
    /// is opened read-only when its schema is current. First opens by several processes at once
    /// take turns (`<db>.open.lock`), so a fresh database is created and migrated once.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let (mut store, lock) = Store::connect(path)?;
        check_history(&store.conn, path)?;
        if store.read_only {
            let pending = status(&store.conn)?.iter().filter(|m| m.applied_on.is_none()).count();
            if pending > 0 {
                bail!(
                    "the ledger database {} cannot be written (the file or its directory is read-only) and {pending} schema migration(s) are pending: run `ledger db migrate` once where it can be written",
                    path.display()
                );
            }
            return Ok(store);
        }
        migrate(&mut store.conn).map_err(|e| migration_error(&e, &store.conn, path))?;
        drop(lock);
        Ok(store)
    }

    /// Opens the ledger without applying pending migrations (for `ledger db status`).
    pub fn open_unmigrated(path: &Path) -> anyhow::Result<Store> {
        Ok(Store::connect(path)?.0)
    }

    /// Opens the ledger, holding the open lock (returned; `None` when it cannot be created beside a
    /// database that cannot be written either): read-write, or read-only when the file or its
    /// directory cannot be written.
    fn connect(path: &Path) -> anyhow::Result<(Store, Option<std::fs::File>)> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        }
        let lock = open_lock(path)?;
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the ledger database {}", path.display()))?;
        let read_only = match conn.is_readonly(rusqlite::MAIN_DB) {
            Ok(true) => true,
            _ => match configure(&conn) {
                Ok(()) => false,
                Err(e) if path.exists() && is_read_only_error(&e) => true,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot set up {}", path.display()));
                }
            },
        };
        let conn = if read_only {
            drop(conn);
            open_read_only(path)?
        } else {
            conn
        };
        check_not_newer(&conn, path)?;
        Ok((Store { conn, path: path.to_path_buf(), read_only }, lock))
    }

    /// An in-memory ledger with the full schema (tests).
    pub fn open_in_memory() -> anyhow::Result<Store> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Store { conn, path: PathBuf::from(":memory:"), read_only: false })
    }

    /// Waits for, then holds, the exclusive right to write snapshots and runs to this ledger (a lock
    /// file beside the database, released when the returned file is dropped or the process dies).
    pub fn write_lock(&self) -> anyhow::Result<Option<std::fs::File>> {
        if self.path.as_os_str() == ":memory:" {
            return Ok(None);
        }
        self.refuse_read_only()?;
        let (f, lock_path) = self.lock_file("write")?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(
                    "waiting for another ledger process that is writing to {}",
                    self.path.display()
                );
                f.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(Some(f))
    }

    /// Holds the right to run a writing command (tag, restore, repin) on this ledger: one at a time.
    /// Fails at once when another holds it.
    pub fn run_lock(&self) -> anyhow::Result<Option<std::fs::File>> {
        if self.path.as_os_str() == ":memory:" {
            return Ok(None);
        }
        self.refuse_read_only()?;
        let (f, _) = self.lock_file("run")?;
        if f.try_lock().is_err() {
            anyhow::bail!(
                "another tag, restore or repin run is active on {}; wait for it to finish (or stop it) and run again",
                self.path.display()
            );
        }
        Ok(Some(f))
    }

    /// A writing command on a read-only ledger: an error that says so.
    fn refuse_read_only(&self) -> anyhow::Result<()> {
        if self.read_only {
            bail!(
                "the ledger database {} is read-only (the file or its directory cannot be written), and this command writes to it: make it writable, or give --db a writable copy",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Opens (creating it if needed) the lock file `<db>.WHAT.lock`, unlocked.
    fn lock_file(&self, what: &str) -> anyhow::Result<(std::fs::File, PathBuf)> {
        let path = lock_path(&self.path, what);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        Ok((f, path))
    }

    /// Every migration this binary knows, with when it was applied to this database.
    pub fn migration_status(&self) -> anyhow::Result<Vec<MigrationStatus>> {
        status(&self.conn)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        let _ = self.conn.execute_batch("PRAGMA optimize;");
    }
}

/// `<db>.<what>.lock` beside the database.
pub fn lock_path(db: &Path, what: &str) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{what}.lock"));
    db.with_file_name(name)
}

/// Waits for, then holds, `<db>.open.lock`: the turn to open (create, migrate) the ledger. `None`
/// when the lock file cannot be created because its directory cannot be written: then neither can
/// the database, which is opened read-only, and nothing needs the turn; `None` too for an
/// in-memory database (`ledger db status` of a ledger that does not exist), which no other
/// process can open.
fn open_lock(db: &Path) -> anyhow::Result<Option<std::fs::File>> {
    if db.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let path = lock_path(db, "open");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path);
    let f = match f {
        Ok(f) => f,
        Err(e) if is_read_only_io(&e) && db.exists() => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the lock file {}", path.display()));
        }
    };
    f.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(Some(f))
}

/// An I/O error that says the place cannot be written.
fn is_read_only_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(1) // EPERM: an immutable directory
}

/// An SQLite error that says the database (or the files beside it) cannot be written.
fn is_read_only_error(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// A second connection to the ledger at `path` that only reads (a scrape's, beside the process's
/// own [`Store`]).
pub fn reader(path: &Path) -> anyhow::Result<Connection> {
    open_read_only(path)
}

/// Opens a ledger that cannot be written, for reading. When the WAL's shared-memory file is
/// missing and cannot be created beside it, the file is read as immutable: as it is now.
fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    use rusqlite::OpenFlags;
    let what = || format!("cannot open the read-only ledger database {}", path.display());
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).with_context(what)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    one_plan(&conn)?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => return Ok(conn),
        Err(e) if is_read_only_error(&e) => drop(conn),
        Err(e) => return Err(e).with_context(what),
    }
    let abs = std::path::absolute(path).with_context(what)?;
    let mut uri = url::Url::from_file_path(&abs)
        .map_err(|()| anyhow::anyhow!("{} is not a file path", abs.display()))?;
    uri.set_query(Some("immutable=1"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(uri.as_str(), flags).with_context(what)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .with_context(what)?;
    Ok(conn)
}

/// One plan per statement, whatever is bound to it: without this, SQLite prepares a statement
/// again when a value newly bound to it might choose another plan (once `PRAGMA optimize` has
/// sampled the indexes), and a lookup repeated per pin (`export repins`, restore) spent half its
/// time in SQLite's parser.
fn one_plan(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    one_plan(conn)?;
    // Room for every statement a tag run repeats, so none is parsed again per pin.
    conn.set_prepared_statement_cache_capacity(64);
    // A new database gets 16 KiB pages (set before WAL fixes the page size): a million-pin snapshot
    // writes fewer, fuller pages than with the 4 KiB default.
    conn.pragma_update(None, "page_size", 16_384)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 16 MiB of page cache by default; a snapshot sizes its own (see ledger::snapshot).
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Applies the pending migrations, all of them in one transaction: refinery's default runs each
/// migration's SQL and the row that records it in two transactions, so a process killed between them
/// left a schema change that the next open tried to apply again ("view pin_history already exists").
///
/// Foreign keys are off while they run (SQLite takes that only outside a transaction): V6 rebuilds
/// `runs`, which other tables reference, as SQLite's procedure for a table rebuild asks. It copies
/// every row as it was, ids included, so no reference breaks (see the test
/// `v6_keeps_every_run_and_every_reference_to_it`).
fn migrate(conn: &mut Connection) -> Result<refinery::Report, refinery::Error> {
    use refinery::error::WrapMigrationError as _;
    let fk = |conn: &Connection, on: &str| {
        conn.pragma_update(None, "foreign_keys", on).migration_err("PRAGMA foreign_keys", None)
    };
    fk(conn, "OFF")?;
    let report = embedded::migrations::runner().set_grouped(true).run(conn);
    fk(conn, "ON")?;
    report
}

/// The newest migration version this binary carries.
pub fn binary_schema_version() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version() as u32)
        .max()
        .unwrap_or(0)
}

/// The migration history: version, name, applied_on, checksum, as stored.
fn applied(conn: &Connection) -> anyhow::Result<Vec<(u32, String, String, String)>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT version, name, applied_on, checksum FROM refinery_schema_history ORDER BY version",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn check_not_newer(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let ours = binary_schema_version();
    if let Some((theirs, name, ..)) = applied(conn)?.into_iter().max_by_key(|m| m.0)
        && theirs > ours
    {
        bail!(
            "the ledger database {} has schema V{theirs} ({name}), newer than this binary's V{ours}: upgrade ledger, or use another --db",
            path.display()
        );
    }
    Ok(())
}

fn status(conn: &Connection) -> anyhow::Result<Vec<MigrationStatus>> {
    let applied = applied(conn)?;
    let mut out: Vec<MigrationStatus> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| {
            let row = applied.iter().find(|a| a.0 == m.version() as u32);
            MigrationStatus {
                version: m.version() as u32,
                name: m.name().to_string(),
                applied_on: row.map(|a| a.2.clone()),
                checksum_mismatch: row.is_some_and(|a| a.3 != m.checksum().to_string()),
            }
        })
        .collect();
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// Refuses a migration history that does not match this binary's migrations (a checksum mismatch:
/// the schema was changed by something other than this ledger) or that holds rows the migration
/// runner cannot read (it would stop the process on them). `ledger db status` says the same.
pub fn check_history(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let db = path.display();
    for (version, name, applied_on, checksum) in applied(conn)? {
        if !written_by_refinery(&applied_on) || checksum.parse::<u64>().is_err() {
            bail!(
                "the ledger database {db} has a damaged migration history: the row of V{version} ({name}) in refinery_schema_history was not written by ledger; use another --db"
            );
        }
    }
    if let Some(m) = status(conn)?.into_iter().find(|m| m.checksum_mismatch) {
        bail!(
            "the ledger database {db} has a migration V{} ({}) that differs from this ledger's (checksum mismatch): its schema was written by another build of ledger or changed by hand; use the ledger that wrote it, or another --db",
            m.version,
            m.name
        );
    }
    Ok(())
}

/// Whether `t` is a time as the migration runner writes it (`2026-11-24T00:26:04.444478973Z`,
/// RFC 3339 with `T`, no leap second), which is also what it can read back.
fn written_by_refinery(t: &str) -> bool {
    use chrono::Timelike as _;
    let shape = t.len() >= 20 && t.as_bytes().get(10) == Some(&b'T') && t.is_ascii();
    shape
        && chrono::DateTime::parse_from_rfc3339(t).is_ok_and(|d| {
            d.nanosecond() < 1_000_000_000 && d.offset().local_minus_utc().abs() < 86_400
        })
}

/// A failed migration, said without its SQL: which migration failed, and SQLite's reason.
fn migration_error(err: &refinery::Error, conn: &Connection, path: &Path) -> anyhow::Error {
    let db = path.display();
    let refinery::error::Kind::Connection(_, source) = err.kind() else {
        return anyhow::anyhow!("cannot migrate the ledger database {db}: {err}");
    };
    let reason = match source.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqlInputError { msg, .. }) => msg.clone(),
        Some(rusqlite::Error::SqliteFailure(_, Some(msg))) => msg.clone(),
        Some(e) => e.to_string(),
        None => source.to_string(),
    };
    // Each migration commits on its own: the failed one is the first still pending.
    match status(conn).ok().and_then(|st| st.into_iter().find(|m| m.applied_on.is_none())) {
        Some(m) => anyhow::anyhow!(
            "cannot migrate the ledger database {db}: migration V{} ({}) failed: {reason}",
            m.version,
            m.name
        ),
        None => anyhow::anyhow!("cannot migrate the ledger database {db}: {reason}"),
    }
}

/// Now, as stored in the ledger: UTC RFC 3339 with milliseconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory ledger with the migrations up to `version` applied.
    fn migrated_to(version: i32) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        embedded::migrations::runner()
            .set_grouped(true)
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .unwrap();
        conn
    }

    /// SQL that stores a version of pin `cid` (digest `X'd'`) with this name, metadata (JSON, `""`:
    /// none) and cluster timestamp, every other field at its default.
    fn version(cid: i64, d: &str, name: &str, meta: &str, ts: &str) -> String {
        format!(
            "INSERT INTO pin_versions (cid_id, digest, name, metadata, org, allocations,
               replication_min, replication_max, mode, max_depth, expire_at, origins, type,
               shard_size, cluster_timestamp)
             VALUES ({cid}, X'{d}', '{name}', nullif('{meta}', ''), json_extract(nullif('{meta}', ''), '$.org'),
               '[]', -1, -1, 'recursive', -1, NULL, '[]', 'pin', 0, '{ts}');"
        )
    }

    /// Every pending migration and the rows that record them commit together, so no kill can land
    /// between a schema change and its record.
    #[test]
    fn the_migrations_commit_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = commits.clone();
        conn.commit_hook(Some(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }))
        .unwrap();
        migrate(&mut conn).unwrap();
        // One for refinery's history table, one for every migration with its record.
        let n = commits.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, 2, "migrations committed in {n} transactions");
        let recorded: i64 = conn
            .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(recorded as u32, binary_schema_version());
    }

    /// V6 rebuilds `runs`: a ledger at V5 with a run and everything that refers to it comes out
    /// with the same rows, every reference intact (`foreign_key_check` finds none broken), the
    /// convergence view over it, and an `add` run now allowed.
    #[test]
    fn v6_keeps_every_run_and_every_reference_to_it() {
        let mut conn = migrated_to(5);
        conn.execute_batch(
            "INSERT INTO cids (id, cid) VALUES (7, 'QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME');
             INSERT INTO runs (id, kind, cluster, peer, peer_url, org, params, started_at, state)
               VALUES (3, 'tag', 'c', 'p', 'http://a:9094/', 'hrdag', '{}', '2026-01-01', 'done');
             INSERT INTO passes (run_id, pass, started_at) VALUES (3, 1, '2026-01-01');
             INSERT INTO run_targets (run_id, cid_id, class) VALUES (3, 7, 'target');
             INSERT INTO repins (run_id, pass, cid_id, path, query, intended, requested_at, status)
               VALUES (3, 1, 7, '/pins/x', 'meta-org=hrdag', '{}', '2026-01-01', 'sent');
             INSERT INTO probes (run_id, pass, peer, at, seconds, tagged, targets)
               VALUES (3, 1, 'p', '2026-01-01', 1.5, 1, 1);",
        )
        .unwrap();
        let runs = |conn: &Connection| -> String {
            conn.query_row(
                "SELECT group_concat(id || kind || cluster || peer || org || params || state) FROM runs",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let before = runs(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(runs(&conn), before);
        let broken: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(broken, 0, "references broken by the rebuild");
        let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 1, "foreign keys back on");
        let percent: f64 = conn
            .query_row("SELECT percent FROM convergence WHERE run = 3", [], |r| r.get(0))
            .unwrap();
        assert_eq!(percent, 100.0);
        conn.execute(
            "INSERT INTO runs (kind, cluster, peer, peer_url, params, started_at, state)
             VALUES ('add', 'c', 'p', 'u', '{}', '2026-01-02', 'running')",
            [],
        )
        .unwrap();
        let orphan = conn.execute("DELETE FROM runs WHERE id = 3", []);
        assert!(orphan.is_err(), "the references still hold the run");
    }

    /// V7 records the losses of the history before it: a ledger at V6 (two peers, three complete
    /// snapshots each: a wipe seen by both peers at different snapshots, a rename that kept the
    /// timestamp, an unpin, a value changed and changed back) lists the same `lost_metadata` rows
    /// after the migration as the V4 view computed from the intervals before it.
    #[test]
    fn v7_records_the_losses_of_the_history_before_it() {
        let mut conn = migrated_to(6);
        let mut sql = String::from(
            "INSERT INTO series (id, cluster, peer) VALUES (1, 'c', 'peerA'), (2, 'c', 'peerB');
             INSERT INTO cids (id, cid) VALUES (1, 'QmA'), (2, 'QmB'), (3, 'QmC'), (4, 'QmD'),
               (6, 'QmF'), (7, 'QmG');
             INSERT INTO snapshots (id, series_id, peer_url, started_at, finished_at, state, previous_id)
             VALUES (1, 1, 'u', '2026-01-01T00:00:01Z', '2026-01-01T00:00:02Z', 'complete', NULL),
                    (2, 2, 'u', '2026-01-01T00:00:03Z', '2026-01-01T00:00:04Z', 'complete', NULL),
                    (3, 1, 'u', '2026-01-02T00:00:01Z', '2026-01-02T00:00:02Z', 'complete', 1),
                    (4, 2, 'u', '2026-01-02T00:00:03Z', '2026-01-02T00:00:04Z', 'complete', 2),
                    (5, 1, 'u', '2026-01-03T00:00:01Z', '2026-01-03T00:00:02Z', 'complete', 3),
                    (6, 2, 'u', '2026-01-03T00:00:03Z', '2026-01-03T00:00:04Z', 'complete', 4);",
        );
        sql += &version(1, "01", "a", r#"{"org":"hrdag","team":"x"}"#, "t1");
        sql += &version(1, "02", "", "", "t2");
        sql += &version(2, "01", "b", "", "t1");
        sql += &version(2, "02", "renamed", "", "t1");
        sql += &version(3, "01", "c", r#"{"org":"amnesty"}"#, "t1");
        sql += &version(4, "01", "d", r#"{"team":"y"}"#, "t1");
        sql += &version(4, "02", "d", r#"{"team":"z"}"#, "t2");
        sql += &version(6, "01", "f", r#"{"team":"x"}"#, "t1");
        sql += &version(6, "02", "f", r#"{"org":"hrdag","team":"x"}"#, "t2");
        sql += &version(7, "01", "g", r#"{"a":"1","b":"2"}"#, "t1");
        sql += &version(7, "02", "g", r#"{"a":"1","b":"3","c":"4"}"#, "t2");
        // QmA wiped: seen in 3 on peerA, in 6 on peerB. QmB renamed (same timestamp): 3, peerA.
        // QmC unpinned: 4, peerB. QmD team y → z: 3 on peerA, 4 on peerB; back to y: 5, peerA.
        // On peerA in 3, QmF gains an org (nothing lost) and QmG's b changes as c is added.
        sql += "INSERT INTO observations (cid_id, series_id, first_snapshot, last_snapshot, digest, line_hash)
                VALUES (1, 1, 1, 1, X'01', X'00'), (1, 1, 3, NULL, X'02', X'00'),
                       (1, 2, 2, 4, X'01', X'00'), (1, 2, 6, NULL, X'02', X'00'),
                       (2, 1, 1, 1, X'01', X'00'), (2, 1, 3, NULL, X'02', X'00'),
                       (2, 2, 2, NULL, X'01', X'00'),
                       (3, 1, 1, NULL, X'01', X'00'), (3, 2, 2, 2, X'01', X'00'),
                       (4, 1, 1, 1, X'01', X'00'), (4, 1, 3, 3, X'02', X'00'),
                       (4, 1, 5, NULL, X'01', X'00'),
                       (4, 2, 2, 2, X'01', X'00'), (4, 2, 4, NULL, X'02', X'00'),
                       (6, 1, 1, 1, X'01', X'00'), (6, 1, 3, NULL, X'02', X'00'),
                       (7, 1, 1, 1, X'01', X'00'), (7, 1, 3, NULL, X'02', X'00');";
        conn.execute_batch(&sql).unwrap();
        let rows = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn
                .prepare(
                    "SELECT cid || ' ' || peer || ' ' || last_had || '→' || first_lacking || ' '
                       || field || '=' || before_value || '→' || ifnull(after_value, '∅') || ' '
                       || attribution FROM lost_metadata ORDER BY 1",
                )
                .unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let owners = |conn: &Connection| -> Vec<(String, i64, Option<String>, i64)> {
            let mut stmt = conn
                .prepare("SELECT peer, snapshot_id, org, pins FROM owners ORDER BY 1, 3")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let before = rows(&conn);
        assert_eq!(before.len(), 13, "{before:#?}");
        let owned = owners(&conn);
        assert_eq!(owned.len(), 4, "{owned:?}");
        migrate(&mut conn).unwrap();
        assert_eq!(rows(&conn), before);
        assert_eq!(
            owners(&conn),
            owned,
            "the latest snapshots' owners, counted from the intervals"
        );
        let changed: Vec<(String, String, String, i64)> = conn
            .prepare(
                "SELECT x.cid, o.from_org, o.to_org, o.changed_in FROM owner_changes o
                 JOIN cids x ON x.id = o.cid_id ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [("QmA", "hrdag", "", 3), ("QmF", "", "hrdag", 3)];
        let want: Vec<(String, String, String, i64)> = want
            .iter()
            .map(|(c, f, t, n)| (c.to_string(), f.to_string(), t.to_string(), *n))
            .collect();
        assert_eq!(changed, want, "one owner change per pin, where it was first seen");
        let merged: Vec<(String, i64, i64)> = conn
            .prepare(
                "SELECT c.cid, l.first_lacking, (SELECT count(*) FROM loss_sightings s WHERE s.loss_id = l.id)
                 FROM losses l JOIN cids c ON c.id = l.cid_id ORDER BY 1, 2",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [
            ("QmA", 3, 2),
            ("QmB", 3, 1),
            ("QmC", 4, 1),
            ("QmD", 3, 2),
            ("QmD", 5, 1),
            ("QmG", 3, 1),
        ];
        let want: Vec<(String, i64, i64)> =
            want.iter().map(|(c, f, n)| (c.to_string(), *f, *n)).collect();
        assert_eq!(
            merged, want,
            "one loss per change, where it was first seen, with its sightings"
        );
        let series: Vec<(String, String)> = conn
            .prepare(
                "SELECT c.cid, l.sighting_series FROM losses l JOIN cids c ON c.id = l.cid_id
                 WHERE c.cid IN ('QmA', 'QmD') ORDER BY 1, l.first_lacking",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [("QmA", "[1,2]"), ("QmD", "[1,2]"), ("QmD", "[1]")];
        let want: Vec<(String, String)> =
            want.iter().map(|(c, s)| (c.to_string(), s.to_string())).collect();
        assert_eq!(series, want, "V8 keeps each loss's series in the order they first saw it");

        // After V7, each commit records its own: QmE's name lost in 8 (peerB) is recorded first,
        // then in 7 (peerA, an older snapshot committed later), which is where the loss starts.
        let mut sql = "INSERT INTO cids (id, cid) VALUES (5, 'QmE');".to_string();
        sql += &(version(5, "01", "e", "", "t1") + &version(5, "02", "", "", "t2"));
        sql += "INSERT INTO snapshots (id, series_id, peer_url, started_at, finished_at, state, previous_id)
                VALUES (7, 1, 'u', '2026-01-04T00:00:01Z', '2026-01-04T00:00:02Z', 'complete', 5),
                       (8, 2, 'u', '2026-01-04T00:00:03Z', '2026-01-04T00:00:04Z', 'complete', 6);
                INSERT INTO observations (cid_id, series_id, first_snapshot, last_snapshot, digest, line_hash)
                VALUES (5, 1, 5, 5, X'01', X'00'), (5, 1, 7, NULL, X'02', X'00'),
                       (5, 2, 6, 6, X'01', X'00'), (5, 2, 8, NULL, X'02', X'00');";
        conn.execute_batch(&sql).unwrap();
        let qme_series = |conn: &Connection| -> String {
            conn.query_row("SELECT sighting_series FROM losses WHERE cid_id = 5", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(snapshots::record_losses(&conn, 8).unwrap(), 1);
        assert_eq!(qme_series(&conn), "[2]");
        assert_eq!(snapshots::record_losses(&conn, 7).unwrap(), 1);
        assert_eq!(qme_series(&conn), "[1,2]", "peerA's snapshot 7 saw it before peerB's 8");
        let qme: (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT series_id, last_had, first_lacking, (SELECT count(*) FROM loss_sightings s
                   WHERE s.loss_id = l.id) FROM losses l WHERE cid_id = 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(qme, (1, 5, 7, 2), "the loss starts at the earlier snapshot, seen by both");
    }

    /// V11 splits each re-pin into its request and its answer: a ledger at V10 with a re-pin of each
    /// status reads the same rows from the view `repins` after it, the unanswered one is still the
    /// one a next run settles, the loss a sent re-pin made is still attributed to it, and writing
    /// an answer goes on as before.
    #[test]
    fn v11_reads_every_repin_as_before() {
        let mut conn = migrated_to(10);
        let mut sql = String::from("INSERT INTO cids (id, cid) VALUES (1, 'QmA');");
        sql +=
            &(version(1, "01", "a", r#"{"org":"hrdag"}"#, "t1") + &version(1, "02", "a", "", "t2"));
        sql.push_str(
            "INSERT INTO series (id, cluster, peer) VALUES (1, 'c', 'peerA');
             INSERT INTO snapshots (id, series_id, peer_url, started_at, finished_at, state, previous_id)
             VALUES (1, 1, 'u', '2026-01-01T00:00:01Z', '2026-01-01T00:00:02Z', 'complete', NULL),
                    (3, 1, 'u', '2026-01-02T00:00:01Z', '2026-01-02T00:00:02Z', 'complete', 1);
             INSERT INTO observations (cid_id, series_id, first_snapshot, last_snapshot, digest, line_hash)
             VALUES (1, 1, 1, 1, X'01', X'00'), (1, 1, 3, NULL, X'02', X'00');
             INSERT INTO runs (id, kind, cluster, peer, peer_url, org, params, started_at, state)
             VALUES (3, 'tag', 'c', 'p', 'u', 'hrdag', '{}', '2026-01-01T12:00:00Z', 'interrupted');
             INSERT INTO repins (id, run_id, pass, cid_id, before_digest, path, query, intended,
                                 requested_at, status, http_status, response, error, after_digest,
                                 verified_at, outcome)
             VALUES (1, 3, 1, 1, X'01', '/pins/QmA', 'meta-org=', '{}', '2026-01-01T12:00:01Z',
                     'sent', 200, '{\"cid\":\"QmA\"}', NULL, X'02', '2026-01-01T12:00:02Z', 'applied'),
                    (2, 3, 1, 1, X'02', '/pins/QmA', 'meta-org=x', '{}', '2026-01-01T12:00:03Z',
                     'pending', NULL, NULL, NULL, NULL, NULL, NULL),
                    (3, 3, 1, 1, X'02', '', '', '{}', '2026-01-01T12:00:04Z',
                     'refused', NULL, NULL, 'owned by amnesty', NULL, NULL, 'refused'),
                    (4, 3, 2, 1, X'02', '/pins/QmA', 'meta-org=y', '{}', '2026-01-01T12:00:05Z',
                     'failed', 500, 'no', 'the cluster answered 500: no', NULL, NULL, 'failed');",
        );
        conn.execute_batch(&sql).unwrap();
        assert_eq!(snapshots::record_losses(&conn, 3).unwrap(), 1);
        let all = |conn: &Connection, sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let repins =
            "SELECT concat_ws('|', id, run_id, pass, cid_id, quote(before_digest), path, query,
                        intended, requested_at, status, http_status, response, error,
                        quote(after_digest), verified_at, outcome) FROM repins ORDER BY id";
        let lost = "SELECT concat_ws('|', cid, field, attribution, repin_id, run_id, pass, query)
                    FROM lost_metadata ORDER BY 1";
        let (before, lost_before) = (all(&conn, repins), all(&conn, lost));
        assert_eq!(lost_before, ["QmA|metadata.org|ours|1|3|1|meta-org="]);
        migrate(&mut conn).unwrap();
        assert_eq!(all(&conn, repins), before);
        assert_eq!(all(&conn, lost), lost_before);
        let pending = runs::pending(&conn, "c").unwrap();
        assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [2]);
        let broken: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(broken, 0, "references broken by the split");
        let answer = runs::Settled {
            id: 2,
            cid_id: 1,
            sent: true,
            http_status: Some(200),
            response: Some("{}".into()),
            error: None,
            after: None,
            outcome: crate::domain::Outcome::NotApplied,
        };
        runs::settled(&conn, &answer).unwrap();
        assert!(runs::pending(&conn, "c").unwrap().is_empty());
        assert_eq!(
            all(&conn, "SELECT status || outcome FROM repins WHERE id = 2"),
            ["sentnot-applied"]
        );
        assert!(runs::settled(&conn, &answer).is_err(), "a re-pin is answered once");
    }

    #[test]
    fn every_migration_applies_to_an_empty_database() {
        let s = Store::open_in_memory().unwrap();
        let st = s.migration_status().unwrap();
        assert!(!st.is_empty());
        assert!(st.iter().all(|m| m.applied_on.is_some()), "{st:?}");
        assert_eq!(st.last().unwrap().version, binary_schema_version());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '2030-01-01', '0')",
            [],
        )
        .unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("V999") && err.contains("upgrade ledger"), "{err}");
    }
}
