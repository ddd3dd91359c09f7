//! Snapshot throughput and storage (`cargo bench --bench snapshot`): the real `ledger snapshot` binary
//! against `ledger sim serve` over loopback, beside a bare read (and read + parse) of the same stream
//! measured in the same run.
//!
//! - first snapshot of N pins (default 1,000,000), then a repeat of the unchanged set, then one after
//!   1% of the pins were re-pinned with new metadata: pins/s, peak RSS of `ledger`, database growth;
//! - the bare baselines: read the `/allocations` stream only; read it and parse every line.
//!
//! `BENCH_PINS` changes N. Results go to stdout as Markdown rows.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Sim, db_bytes};
use std::time::Instant;

/// Runs `ledger snapshot` and returns (seconds, peak RSS in MiB).
fn snapshot(db: &Path, url: &str) -> (f64, f64) {
    let m = common::measured(Command::new(env!("CARGO_BIN_EXE_ledger")).args([
        "--db",
        db.to_str().unwrap(),
        "--cluster",
        url,
        "-q",
        "snapshot",
    ]));
    assert!(m.status.success(), "ledger snapshot failed: {:?}\n{}", m.status, m.stderr);
    (m.secs, m.peak_mib)
}

/// Reads the stream (and parses every line when `parse`): pins/s.
fn bare_read(url: &str, parse: bool) -> (usize, f64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client =
            ledger::cluster::Client::new(url.parse().unwrap(), None, Default::default()).unwrap();
        let start = Instant::now();
        let mut s = client.allocations().await.unwrap();
        let mut n = 0;
        while let Some(line) = s.next_line().await {
            if parse {
                ledger::cluster::CanonicalPin::from_line(&line).unwrap();
            }
            n += 1;
        }
        assert_eq!(s.outcome(), Some(&ledger::cluster::StreamOutcome::Complete));
        (n, start.elapsed().as_secs_f64())
    })
}

fn repin_one_percent(url: &str, pins: usize) {
    let body = reqwest::blocking::get(format!("{url}/allocations")).unwrap().text().unwrap();
    let cids: Vec<String> = body
        .lines()
        .step_by(100)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(cids.len(), pins.div_ceil(100));
    common::repin_each(url, &cids, "meta-org=bench&name=changed");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pins: usize =
        std::env::var("BENCH_PINS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let pins_arg = pins.to_string();
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--pins", &pins_arg]);
    let sim_url = sim.urls[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    bare_read(&sim_url, false); // warm the simulator's JSON cache
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);

    let (n, t_read) = bare_read(&sim_url, false);
    let (_, t_parse) = bare_read(&sim_url, true);
    assert_eq!(n, pins);
    println!("| benchmark | result | notes |\n|---|---|---|");
    println!(
        "| bare read of the stream, {pins} pins | {:.0} pins/s ({t_read:.2} s) | no parsing |",
        pins as f64 / t_read
    );
    println!(
        "| bare read + parse of every line | {:.0} pins/s ({t_parse:.2} s) | canonical form of each pin |",
        pins as f64 / t_parse
    );

    // Three first snapshots into fresh ledgers; the last ledger goes on.
    let mut firsts = Vec::new();
    let mut rss1: f64 = 0.0;
    for _ in 0..3 {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        let (t, rss) = snapshot(&db, &sim_url);
        rss1 = rss1.max(rss);
        firsts.push(t);
    }
    let mut sorted = firsts.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t1 = sorted[1];
    let size1 = db_bytes(&db);
    println!(
        "| first snapshot (`ledger snapshot`, median of 3) | {:.0} pins/s ({t1:.2} s; runs {}; {:.2}× the bare read + parse time) | peak RSS {rss1:.0} MiB; database {:.1} MiB |",
        pins as f64 / t1,
        firsts.iter().map(|t| format!("{t:.2} s")).collect::<Vec<_>>().join(", "),
        t1 / t_parse,
        mib(size1)
    );

    let mut repeats = Vec::new();
    let mut growth = 0;
    let mut rss_max: f64 = 0.0;
    for _ in 0..3 {
        let before = db_bytes(&db);
        let (t, rss) = snapshot(&db, &sim_url);
        growth = growth.max(db_bytes(&db) - before);
        rss_max = rss_max.max(rss);
        repeats.push(t);
    }
    repeats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t2 = repeats[1];
    let (_, t_read2) = bare_read(&sim_url, false);
    println!(
        "| repeat snapshot, unchanged (median of 3) | {:.0} pins/s ({t2:.2} s; {:.2}× the bare read time {t_read2:.2} s) | peak RSS {rss_max:.0} MiB; database grew ≤ {growth} bytes |",
        pins as f64 / t2,
        t2 / t_read2
    );

    repin_one_percent(&sim_url, pins);
    let before = db_bytes(&db);
    let (t3, rss3) = snapshot(&db, &sim_url);
    let grew = db_bytes(&db) - before;
    println!(
        "| snapshot after 1% re-pinned | {:.0} pins/s ({t3:.2} s) | peak RSS {rss3:.0} MiB; database grew {:.2} MiB = {:.2}% of the first snapshot |",
        pins as f64 / t3,
        mib(grew),
        100.0 * grew as f64 / size1 as f64
    );
}
