//! How cost grows with the pin count (`cargo bench --bench growth`): for each size of
//! `BENCH_GROWTH_PINS` (comma-separated, default `100000,1000000`), `BENCH_RUNS` (default 3) times
//! on a fresh 1-peer `ledger sim serve --lazy-pins N` (no lag) and a fresh ledger, one after the
//! other:
//!
//! - `snapshot`: the first snapshot of the N pins;
//! - `tag`: `ledger tag --org bench --settle 0s --concurrency 64` of every unowned pin (its planning
//!   and verification snapshots included);
//! - `snapshot after 1% changed`: 1% of the pins re-pinned bare from outside (which drops their
//!   metadata), then a snapshot;
//! - `lost`: `ledger lost --json` over that history;
//! - `diff`: `ledger diff` of the last two snapshots.
//!
//! Each step's wall time and the `ledger` process's peak RSS (medians of the runs), and the
//! database's size after it. Then, per step, how its time grows from one size to the next.

mod common;

use common::{Measured, Sim, db_bytes, ledger_cmd, measured, median, repin_each};
use std::path::Path;

const STEPS: [&str; 5] = ["snapshot", "tag", "snapshot after 1% changed", "lost", "diff"];

/// Runs `ledger --db DB --cluster URL -q ARGS`, which must end with exit 0 or 1 (1: attention,
/// e.g. losses found).
fn step(db: &Path, url: &str, args: &[&str]) -> Measured {
    let m = measured(&mut ledger_cmd(db, &[url.to_string()], args));
    assert!(
        m.status.code().is_some_and(|c| c <= 1),
        "ledger {args:?}: {:?}\n{}",
        m.status,
        m.stderr
    );
    m
}

/// One figure of one step: seconds, peak RSS in MiB, database bytes after it.
type Figure = (f64, f64, u64);

/// Every step once, on a fresh simulator of `pins` pins and a fresh ledger.
fn one_run(pins: usize) -> Vec<Figure> {
    let n = pins.to_string();
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--lazy-pins", &n, "--seed", "7"]);
    let url = sim.urls[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let mut figures = Vec::new();
    let mut record = |m: Measured| figures.push((m.secs, m.peak_mib, db_bytes(&db)));
    record(step(&db, &url, &["snapshot"]));
    record(step(&db, &url, &["tag", "--org", "bench", "--settle", "0s", "--concurrency", "64"]));
    let damaged: Vec<String> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT cid FROM cids WHERE id % 100 = 0 ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    repin_each(&url, &damaged, "");
    record(step(&db, &url, &["snapshot"]));
    record(step(&db, &url, &["lost", "--json"]));
    let (a, b): (i64, i64) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT (SELECT max(id) FROM snapshots WHERE state = 'complete' AND id < m.id), m.id
             FROM (SELECT max(id) AS id FROM snapshots WHERE state = 'complete') m",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    record(step(&db, &url, &["diff", &a.to_string(), &b.to_string(), "--json"]));
    figures
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = |k: &str| std::env::var(k).ok();
    let sizes: Vec<usize> = env("BENCH_GROWTH_PINS")
        .unwrap_or("100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_GROWTH_PINS: numbers, comma-separated"))
        .collect();
    let runs: usize = env("BENCH_RUNS").and_then(|v| v.parse().ok()).unwrap_or(3);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("{cores} cores; medians of {runs} runs\n");
    println!("| step | pins | time, median (runs) | peak RSS, median | database after |");
    println!("|---|---|---|---|---|");
    let mut medians = vec![Vec::new(); STEPS.len()];
    for &pins in &sizes {
        let all: Vec<Vec<Figure>> = (0..runs).map(|_| one_run(pins)).collect();
        for (i, name) in STEPS.iter().enumerate() {
            let secs: Vec<f64> = all.iter().map(|r| r[i].0).collect();
            let rss = median(all.iter().map(|r| r[i].1).collect());
            let bytes = all.last().unwrap()[i].2;
            let t = median(secs.clone());
            medians[i].push(t);
            let list = secs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ");
            println!(
                "| {name} | {pins} | {t:.2} s ({list}) | {rss:.0} MiB | {:.1} MB |",
                bytes as f64 / 1e6
            );
        }
    }
    println!();
    for (i, name) in STEPS.iter().enumerate() {
        let growth: Vec<String> = sizes
            .windows(2)
            .zip(medians[i].windows(2))
            .map(|(p, t)| {
                format!(
                    "{}→{}: ×{:.1} pins, ×{:.1} time",
                    p[0],
                    p[1],
                    p[1] as f64 / p[0] as f64,
                    t[1] / t[0]
                )
            })
            .collect();
        println!("{name}: {}", growth.join("; "));
    }
}
