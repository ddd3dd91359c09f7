//! Tag throughput (`cargo bench --bench tag`): the real `ledger tag` against `ledger sim serve` with no
//! lag, beside a bare loop measured in the same run.
//!
//! - 3,512 unowned pins (the seed report's migration) on 5 peers: end-to-end time of `ledger tag`;
//! - at concurrency 1, 16 and 64 (`BENCH_TAG_CONCURRENCY`), `BENCH_TAG_PINS` (default 20,000) pins on
//!   1 peer: re-pins/s of the tag's first pass, beside a bare loop that sends per pin the same three
//!   requests as the pass (read the pin, POST the re-pin the tag sent, read it back) with as many in
//!   flight, on a fresh simulator of the same pins. Tag and loop alternate; median of `BENCH_RUNS`
//!   (default 3) each;
//! - a bulk `ledger repin --all` of every one of those pins: re-pins/s;
//! - with `BENCH_TAG_BIG=N` (e.g. 1000000): one tag run of N pins, its wall time and peak RSS.

mod common;

use std::path::Path;
use std::time::Instant;

use common::{Sim, ledger_cmd, measured, median};

fn start(peers: usize, pins: usize, seed: u64) -> Sim {
    let (peers, pins, seed) = (peers.to_string(), pins.to_string(), seed.to_string());
    Sim::start(&["--lag", "0", "--peers", &peers, "--pins", &pins, "--seed", &seed])
}

/// What one `ledger tag` run did.
struct Tagged {
    /// Wall time of the whole run, and its peak RSS in MiB.
    secs: f64,
    peak_mib: f64,
    report: serde_json::Value,
    /// Re-pins of the first pass and its duration as the ledger recorded it.
    attempted: i64,
    pass_secs: f64,
    /// The re-pins sent: (CID, path and query).
    sent: Vec<(String, String)>,
}

impl Tagged {
    fn rate(&self) -> f64 {
        self.attempted as f64 / self.pass_secs
    }
}

/// Runs `ledger tag --org bench` into a fresh ledger in `dir`.
fn tag(dir: &Path, urls: &[String], concurrency: usize) -> Tagged {
    let db = dir.join("l.db");
    let conc = concurrency.to_string();
    let args = ["tag", "--org", "bench", "--settle", "0s", "--json", "--concurrency", &conc];
    let m = measured(&mut ledger_cmd(&db, urls, &args));
    assert!(m.status.success(), "ledger tag: {:?}\n{}", m.status, m.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&m.stdout).unwrap_or_else(|e| panic!("{e}: {}", m.stderr));
    assert_eq!(report["converged"], true, "{}", m.stderr);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (attempted, pass_secs) = first_pass(&conn);
    let mut stmt = conn
        .prepare(
            "SELECT c.cid, r.path || '?' || r.query FROM repins r JOIN cids c ON c.id = r.cid_id
             WHERE r.status = 'sent' ORDER BY r.id",
        )
        .unwrap();
    let sent = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Tagged { secs: m.secs, peak_mib: m.peak_mib, report, attempted, pass_secs, sent }
}

/// Re-pins attempted by the first pass of the newest run, and how long that pass took.
fn first_pass(conn: &rusqlite::Connection) -> (i64, f64) {
    conn.query_row(
        "SELECT attempted, (julianday(finished_at) - julianday(started_at)) * 86400 FROM passes
         WHERE pass = 1 AND run_id = (SELECT max(id) FROM runs)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Per pin, bare: `GET /allocations/CID`, the POST, `GET /allocations/CID` again, with `concurrency`
/// pins in flight. Pins/s.
fn bare_loop(url: &str, sent: &[(String, String)], concurrency: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let (client, get) = (&client, |cid: &str| {
            let req = client.get(format!("{url}/allocations/{cid}"));
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        });
        let get = &get;
        let start = Instant::now();
        futures::StreamExt::for_each_concurrent(
            futures::stream::iter(sent),
            concurrency,
            |(cid, pq)| async move {
                get(cid).await;
                let r = client.post(format!("{url}{pq}")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                get(cid).await;
            },
        )
        .await;
        sent.len() as f64 / start.elapsed().as_secs_f64()
    })
}

/// Runs after each other's figures as a cell: "1.2, 1.3, 1.1".
fn runs(v: &[f64], digits: usize) -> String {
    v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The seed report's migration: 3,512 unowned pins on 5 peers (the simulator's mix has ~80%
/// unowned, so 4,440 pins give a little over 3,512 targets), end to end.
fn seed_migration() {
    let mut times = Vec::new();
    let mut n_targets = 0;
    for _ in 0..3 {
        let sim = start(5, 4_440, 11);
        let dir = tempfile::tempdir().unwrap();
        let t = tag(dir.path(), &sim.urls, 16);
        n_targets = t.report["plan"]["targets"].as_array().unwrap().len();
        times.push(t.secs);
    }
    println!(
        "| `ledger tag`, {n_targets} targets on 5 peers, no lag, end to end (median of 3) | {:.2} s (runs {} s) | snapshot, plan, re-pins, verification of every peer |",
        median(times.clone()),
        runs(&times, 2)
    );
}

/// The tag's first pass beside the bare loop at each concurrency, alternating, `n` runs each.
/// Returns the last tag run's ledger directory and simulator, for the bulk re-pin.
fn tag_beside_loop(pins: usize, concurrencies: &[usize], n: usize) -> (tempfile::TempDir, Sim) {
    let mut tags = vec![Vec::new(); concurrencies.len()];
    let mut loops = vec![Vec::new(); concurrencies.len()];
    let mut last = None;
    for _ in 0..n {
        for (i, &c) in concurrencies.iter().enumerate() {
            let sim = start(1, pins, 12);
            let dir = tempfile::tempdir().unwrap();
            let t = tag(dir.path(), &sim.urls, c);
            tags[i].push(t.rate());
            let fresh = start(1, pins, 12);
            loops[i].push(bare_loop(&fresh.urls[0], &t.sent, c));
            last = Some((dir, sim, t.attempted));
        }
    }
    let (dir, sim, attempted) = last.unwrap();
    for (i, c) in concurrencies.iter().enumerate() {
        let (tag, bare) = (median(tags[i].clone()), median(loops[i].clone()));
        println!(
            "| `ledger tag` first pass, {attempted} re-pins, concurrency {c} (median of {n}) | {tag:.0} re-pins/s (runs {}) | each: read, intent, POST, answer, read back, outcome |",
            runs(&tags[i], 0)
        );
        println!(
            "| bare loop: read, the same POST, read back; concurrency {c} (median of {n}) | {bare:.0} pins/s (runs {}) | tag ÷ loop **{:.2}×** |",
            runs(&loops[i], 0),
            tag / bare
        );
    }
    (dir, sim)
}

/// A bulk re-pin of every pin of a tagged cluster: one more metadata key each.
fn bulk_repin(dir: &Path, sim: &Sim, conc: usize) {
    let db = dir.join("l.db");
    let conc = conc.to_string();
    let args = [
        "repin",
        "--all",
        "--meta",
        "team=bench",
        "--settle",
        "0s",
        "--json",
        "--concurrency",
        &conc,
    ];
    let m = measured(&mut ledger_cmd(&db, &sim.urls, &args));
    let r: serde_json::Value =
        serde_json::from_slice(&m.stdout).unwrap_or_else(|e| panic!("{e}: {}", m.stderr));
    assert_eq!(r["converged"], true, "{}", m.stderr);
    let (attempted, pass_secs) = first_pass(&rusqlite::Connection::open(&db).unwrap());
    println!(
        "| `ledger repin --all --meta team=bench` first pass, {attempted} re-pins, concurrency {conc} | {:.0} re-pins/s ({pass_secs:.1} s; whole run {:.1} s) | the same path as tag's |",
        attempted as f64 / pass_secs,
        m.secs
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pins: usize = env_or("BENCH_TAG_PINS", 20_000);
    let n: usize = env_or("BENCH_RUNS", 3);
    let concurrencies: Vec<usize> = env_or("BENCH_TAG_CONCURRENCY", "1,16,64".to_string())
        .split(',')
        .map(|c| c.trim().parse().expect("BENCH_TAG_CONCURRENCY: numbers, comma-separated"))
        .collect();
    println!("| benchmark | result | notes |\n|---|---|---|");
    seed_migration();
    let (dir, sim) = tag_beside_loop(pins, &concurrencies, n);
    bulk_repin(dir.path(), &sim, *concurrencies.last().unwrap());
    let big: usize = env_or("BENCH_TAG_BIG", 0);
    if big > 0 {
        let sim = start(1, big, 13);
        let dir = tempfile::tempdir().unwrap();
        let t = tag(dir.path(), &sim.urls, 64);
        println!(
            "| `ledger tag` of {big} pins, {} re-pins, concurrency 64 | {:.0} s end to end (first pass {:.0} re-pins/s) | ledger's peak RSS **{:.0} MiB**; database {:.0} MiB |",
            t.attempted,
            t.secs,
            t.rate(),
            t.peak_mib,
            common::db_bytes(&dir.path().join("l.db")) as f64 / (1 << 20) as f64
        );
    }
}
