//! Post-incident queries on a long history (`cargo bench --bench history`): a `BENCH_HISTORY_PINS`-pin
//! (default 1,000,000) cluster of 5 simulated peers (`ledger sim serve --lazy-pins`), snapshotted on
//! every peer, tagged in full, then 1% of the pins damaged from outside (a bare re-pin, which drops
//! their metadata) before each further snapshot of every peer, until every peer has 20 complete
//! snapshots. Then each query the median of 3: `lost` (whole history and `--since` the last round),
//! `restore --dry-run`, `diff`, `history CID`, `owners`, `convergence`, `drift` and `export repins`.
//! Also the database's growth per snapshot round, beside the bytes of the versions it added.
//!
//! `BENCH_HISTORY_SNAPSHOTS` changes the 20. `BENCH_HISTORY_KEEP=FILE` copies the ledger there once
//! it is built; `BENCH_HISTORY_DB=FILE` times the queries on a ledger built before (a copy of it)
//! instead of building one, and needs the same `BENCH_HISTORY_PINS` (and `BENCH_HISTORY_PORT`, the
//! first peer's port, 47310 unless set).

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use common::{Sim, db_bytes, ledger, median, repin_each};

const PEERS: usize = 5;
/// The simulator's seed: the same pins on every run.
const SEED: &str = "7";

fn ok(out: &Output, args: &[&str]) {
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "ledger {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bytes of the stored versions: each column's length, 8 per integer, 16 per digest.
fn version_bytes(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT coalesce(sum(8 + 16 + length(name) + coalesce(length(metadata), 0)
                + coalesce(length(org), 0) + length(allocations) + 8 + 8 + length(mode) + 8
                + coalesce(length(expire_at), 0) + length(origins) + length(type) + 8
                + coalesce(length(reference), 0) + coalesce(length(pin_update), 0)
                + coalesce(length(cluster_timestamp), 0)), 0) FROM pin_versions",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn complete_snapshots(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT coalesce(min(n), 0) FROM (SELECT count(*) AS n FROM snapshots
          WHERE state = 'complete' GROUP BY series_id)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every CID the write peer holds, in its order.
fn cids(url: &str) -> Vec<String> {
    let body = reqwest::blocking::get(format!("{url}/allocations")).unwrap().text().unwrap();
    body.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"].as_str().unwrap().into()
        })
        .collect()
}

/// Builds the ledger: every peer snapshotted, a full tag run, then damage and snapshots until
/// every peer has `snapshots` complete ones. Returns the median growth per round and the bytes of
/// the versions a round added.
fn build(db: &Path, sim: &Sim, pins: usize, snapshots: i64) -> (u64, i64) {
    let start = Instant::now();
    let (t, out) = ledger(db, &sim.urls, &["snapshot", "--all-peers"]);
    ok(&out, &["snapshot"]);
    println!("first snapshot of {PEERS} peers: {t:.1} s");
    let args = ["tag", "--org", "bench", "--settle", "1s", "--concurrency", "32"];
    let (t, out) = ledger(db, &sim.urls, &args);
    ok(&out, &args);
    println!("tag run over every unowned pin: {t:.1} s");
    let all = cids(&sim.urls[0]);
    assert_eq!(all.len(), pins);
    let per_round = pins / 100;
    let mut round = 0;
    let (mut growth, mut versions) = (Vec::new(), Vec::new());
    while complete_snapshots(db) < snapshots {
        let hit: Vec<String> =
            (0..per_round).map(|k| all[(round * per_round + k) % pins].clone()).collect();
        repin_each(&sim.urls[0], &hit, ""); // no options: what a careless script does
        let (b0, v0) = (db_bytes(db), version_bytes(db));
        let (t, out) = ledger(db, &sim.urls, &["snapshot", "--all-peers"]);
        ok(&out, &["snapshot"]);
        let (b1, v1) = (db_bytes(db), version_bytes(db));
        growth.push((b1 - b0) as f64);
        versions.push((v1 - v0) as f64);
        round += 1;
        println!(
            "round {round}: {per_round} damaged, snapshot of {PEERS} peers {t:.1} s, +{} bytes",
            b1 - b0
        );
    }
    println!("ledger built in {:.0} s: {} bytes", start.elapsed().as_secs_f64(), db_bytes(db));
    (median(growth) as u64, median(versions) as i64)
}

/// The write peer's last two complete snapshots, the tag run and the first CID recorded.
fn query_ids(db: &Path) -> (i64, i64, i64, String) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    // The write peer's series is that of the tag run's snapshots.
    let series = one(
        "SELECT series_id FROM snapshots WHERE run_id = (SELECT max(id) FROM runs WHERE kind = 'tag')
         AND state = 'complete' ORDER BY id LIMIT 1",
    );
    let last = one(&format!(
        "SELECT max(id) FROM snapshots WHERE series_id = {series} AND state = 'complete'"
    ));
    let before = one(&format!(
        "SELECT max(id) FROM snapshots WHERE series_id = {series} AND state = 'complete' AND id < {last}"
    ));
    let run = one("SELECT max(id) FROM runs WHERE kind = 'tag'");
    let cid = conn.query_row("SELECT cid FROM cids WHERE id = 1", [], |r| r.get(0)).unwrap();
    (before, last, run, cid)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = |k: &str| std::env::var(k).ok();
    let pins: usize = env("BENCH_HISTORY_PINS").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let snapshots: i64 = env("BENCH_HISTORY_SNAPSHOTS").and_then(|v| v.parse().ok()).unwrap_or(20);
    let peers = PEERS.to_string();
    let lazy = pins.to_string();
    // A fixed port: a ledger kept by one run names the same peers' URLs in the next.
    let listen = format!("127.0.0.1:{}", env("BENCH_HISTORY_PORT").unwrap_or("47310".into()));
    let sim = Sim::start(&[
        "--peers",
        &peers,
        "--lag",
        "0",
        "--lazy-pins",
        &lazy,
        "--seed",
        SEED,
        "--listen",
        &listen,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    match env("BENCH_HISTORY_DB") {
        Some(from) => {
            std::fs::copy(&from, &db).unwrap();
            println!("ledger copied from {from}");
        }
        None => {
            let (growth, versions) = build(&db, &sim, pins, snapshots);
            println!(
                "growth per round of {PEERS} snapshots with 1% changed: {growth} bytes (median), {:.2}× the {versions} bytes of the versions it added",
                growth as f64 / versions as f64
            );
            if let Some(keep) = env("BENCH_HISTORY_KEEP") {
                db_bytes(&db); // folds the WAL in, so the one file is the whole ledger
                std::fs::copy(&db, keep).unwrap();
            }
        }
    }
    // Opening once runs any migration, outside the timings.
    let (t, out) = ledger(&db, &sim.urls, &["snapshots", "--json"]);
    ok(&out, &["snapshots"]);
    println!("first open (migrations): {t:.2} s; database {} bytes", db_bytes(&db));
    let (before, last, run, cid) = query_ids(&db);
    let (before, last, run) = (before.to_string(), last.to_string(), run.to_string());
    let csv = dir.path().join("repins.csv");
    let csv = csv.to_str().unwrap();
    println!("| command | median | runs | output |\n|---|---|---|---|");
    let queries: Vec<Vec<&str>> = vec![
        vec!["lost", "--json"],
        vec!["lost", "--json", "--since", &before],
        vec!["restore", "--json", "--dry-run", "--from", &before],
        vec!["diff", &before, &last, "--json"],
        vec!["history", &cid, "--json"],
        vec!["owners", "--json"],
        vec!["convergence", &run, "--json"],
        vec!["drift", "--json"],
        vec!["export", "repins", "--csv", csv],
    ];
    for args in &queries {
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let (t, out) = ledger(&db, &sim.urls, args);
            ok(&out, args);
            bytes = out.stdout.len();
            secs.push(t);
        }
        let rows = if args[0] == "export" {
            format!("{} rows", std::fs::read_to_string(csv).unwrap().lines().count() - 1)
        } else {
            format!("{bytes} bytes")
        };
        println!(
            "| `ledger {}` | {:.2} s | {} | {rows} |",
            args.join(" "),
            median(secs.clone()),
            secs.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(", ")
        );
    }
}
