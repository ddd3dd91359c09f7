//! Tag throughput (`cargo bench --bench tag`): the real `ledger tag` against `ledger sim serve` with no
//! lag, beside a bare loop of the same HTTP requests (the re-pin queries the run recorded, sent again
//! with the same concurrency) measured in the same run.
//!
//! - 3,512 unowned pins (the seed report's migration) on 5 peers: end-to-end time of `ledger tag`;
//! - `BENCH_TAG_PINS` (default 100,000) pins on 1 peer: re-pins/s of the first pass;
//! - then a bulk `ledger repin --all` of every one of those pins on the same cluster: re-pins/s.

mod common;

use std::process::Command;
use std::time::Instant;

use common::Sim;

fn start(peers: usize, pins: usize, seed: u64) -> Sim {
    let (peers, pins, seed) = (peers.to_string(), pins.to_string(), seed.to_string());
    Sim::start(&["--lag", "0", "--peers", &peers, "--pins", &pins, "--seed", &seed])
}

/// Runs `ledger tag` and returns (seconds, its JSON report).
fn tag(db: &std::path::Path, urls: &[String], concurrency: usize) -> (f64, serde_json::Value) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--db", db.to_str().unwrap(), "--cluster", &urls.join(","), "-q", "tag"])
        .args([
            "--org",
            "bench",
            "--settle",
            "0s",
            "--json",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (secs, report)
}

/// Sends the recorded re-pin requests again, bare, with `concurrency` in flight: requests/s.
fn bare_loop(url: &str, requests: &[String], concurrency: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = std::sync::Arc::new(requests.to_vec());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, next, requests, url) =
                (client.clone(), next.clone(), requests.clone(), url.to_string());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(pq) = requests.get(i) else { break };
                    let r = client.post(format!("{url}{pq}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        requests.len() as f64 / start.elapsed().as_secs_f64()
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pins: usize =
        std::env::var("BENCH_TAG_PINS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    println!("| benchmark | result | notes |\n|---|---|---|");

    // The seed report's migration: 3,512 unowned pins on 5 peers (the simulator's mix has ~80%
    // unowned, so 4,440 pins give a little over 3,512 targets).
    let mut times = Vec::new();
    let mut n_targets = 0;
    for _ in 0..3 {
        let sim = start(5, 4_440, 11);
        let dir = tempfile::tempdir().unwrap();
        let (secs, r) = tag(&dir.path().join("l.db"), &sim.urls, 16);
        assert_eq!(r["converged"], true);
        n_targets = r["plan"]["targets"].as_array().unwrap().len();
        times.push(secs);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "| `ledger tag`, {n_targets} targets on 5 peers, no lag, end to end (median of 3) | {:.2} s (runs {}) | snapshot, plan, re-pins, verification of every peer |",
        times[1],
        times.iter().map(|t| format!("{t:.2} s")).collect::<Vec<_>>().join(", ")
    );

    // Throughput of the re-pin pass on a large pin set.
    let sim = start(1, pins, 12);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let conc = 32;
    let (secs, r) = tag(&db, &sim.urls, conc);
    assert_eq!(r["converged"], true);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (attempted, pass_secs): (i64, f64) = conn
        .query_row(
            "SELECT attempted, (julianday(finished_at) - julianday(started_at)) * 86400 FROM passes WHERE pass = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut stmt =
        conn.prepare("SELECT path || '?' || query FROM repins WHERE status = 'sent'").unwrap();
    let requests: Vec<String> =
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    let bare = bare_loop(&sim.urls[0], &requests, conc);
    let rate = attempted as f64 / pass_secs;
    println!(
        "| `ledger tag` first pass, {attempted} re-pins, concurrency {conc} | {rate:.0} re-pins/s ({pass_secs:.1} s; whole run {secs:.1} s) | each: read, intent, POST, answer, read back, outcome |"
    );
    println!(
        "| bare loop of the same {} POST requests, concurrency {conc} | {bare:.0} requests/s | {:.2}× the tag pass rate |",
        requests.len(),
        bare / rate
    );

    // A bulk re-pin of every pin of the same cluster, beside it: one more metadata key each.
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--db", db.to_str().unwrap(), "--cluster", &sim.urls.join(","), "-q", "repin"])
        .args(["--all", "--meta", "team=bench", "--settle", "0s", "--json"])
        .args(["--concurrency", &conc.to_string()])
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["converged"], true, "{}", String::from_utf8_lossy(&out.stderr));
    let (attempted, pass_secs): (i64, f64) = conn
        .query_row(
            "SELECT attempted, (julianday(finished_at) - julianday(started_at)) * 86400 FROM passes
             WHERE pass = 1 AND run_id = (SELECT max(id) FROM runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    println!(
        "| `ledger repin --all --meta team=bench` first pass, {attempted} re-pins, concurrency {conc} | {:.0} re-pins/s ({pass_secs:.1} s; whole run {secs:.1} s) | the same path as tag's; {:.2}× the tag pass rate |",
        attempted as f64 / pass_secs,
        (attempted as f64 / pass_secs) / rate
    );
}
