//! Post-incident queries at scale (`cargo bench --bench lost`): a `BENCH_LOST_PINS`-pin (default
//! 200,000) simulated cluster on 3 peers, snapshotted, tagged in full (so every pin has changed once
//! on every peer), then 1,000 pins wiped by a bare re-pin from outside and snapshotted again. Then,
//! each the median of 3: `ledger lost` over the whole history, `ledger lost --since` the last round
//! (what `ledger watch` asks after each round), `ledger restore --dry-run` of the 1,000, and `ledger
//! diff` of the write peer's snapshots before and after the wipe.

mod common;

use common::{Sim, ledger, median};

fn count(out: &std::process::Output, what: &str) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v[what].as_array().map(Vec::len).unwrap_or_else(|| v[what].as_u64().unwrap() as usize)
}

fn main() {
    let pins: usize =
        std::env::var("BENCH_LOST_PINS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let sim =
        Sim::start(&["--peers", "3", "--lag", "0", "--pins", &pins.to_string(), "--seed", "7"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let (t, out) = ledger(&db, &sim.urls, &["snapshot", "--all-peers"]);
    assert!(out.status.success());
    println!("first snapshot of 3 peers: {t:.1} s");
    let (t, out) =
        ledger(&db, &sim.urls, &["tag", "--org", "bench", "--settle", "1s", "--concurrency", "32"]);
    assert!(out.status.code().unwrap() <= 1, "{}", String::from_utf8_lossy(&out.stderr));
    println!("tag run over every unowned pin: {t:.1} s");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::new();
    let body = http.get(format!("{}/allocations?filter=all", sim.urls[0])).send().unwrap();
    let text = body.text().unwrap();
    let wiped: Vec<String> = text
        .lines()
        .take(1000)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"].as_str().unwrap().into()
        })
        .collect();
    for cid in &wiped {
        let r = http.post(format!("{}/pins/{cid}", sim.urls[0])).send().unwrap();
        assert!(r.status().is_success());
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let last: i64 = conn.query_row("SELECT max(id) FROM snapshots", [], |r| r.get(0)).unwrap();
    let (_, out) = ledger(&db, &sim.urls, &["snapshot", "--all-peers"]);
    assert!(out.status.success());
    let changes: i64 =
        conn.query_row("SELECT count(*) FROM pin_changes", [], |r| r.get(0)).unwrap();
    println!("{pins} pins, 3 peers: {changes} changes on record, {} wiped", wiped.len());

    let runs = |args: &[&str], what: &str, want: usize| {
        let mut secs = Vec::new();
        for _ in 0..3 {
            let (t, out) = ledger(&db, &sim.urls, args);
            assert_eq!(count(&out, what), want, "{args:?}");
            secs.push(t);
        }
        let m = median(secs.clone());
        println!("{}: median {m:.2} s (runs {secs:.2?})", args.join(" "));
    };
    runs(&["lost", "--json"], "losses", wiped.len());
    runs(&["lost", "--json", "--since", &last.to_string()], "losses", wiped.len());
    // The write peer's snapshot just before the wipe: the values to restore.
    let from = conn
        .query_row(
            "SELECT max(id) FROM snapshots WHERE state = 'complete' AND id <= ?1
               AND series_id = (SELECT series_id FROM snapshots WHERE id = ?1 + 1)",
            [last],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        .to_string();
    runs(&["restore", "--json", "--dry-run", "--from", &from], "restored", wiped.len());
    let to = (last + 1).to_string();
    runs(&["diff", &from, &to, "--json"], "pins", wiped.len());
}
