//! Simulator throughput (`cargo bench --bench sim`): the real `ledger sim serve` binary over loopback.
//!
//! - `GET /allocations` of 1,000,000 pins on a 5-peer simulator: pins/s, median of 5 reads.
//! - Re-pins (`POST /pins/{cid}?…`) at concurrency 32 on a 5-peer simulator: re-pins/s, median of 3.
//! - Resident memory of the simulator for several pin counts and peer counts.
//! - `GET /allocations` of generated pins (`--lazy-pins`, 5 peers) at each count of
//!   `BENCH_LAZY_PINS` (default 1,000,000 and 10,000,000): pins/s, median of 3, and the simulator's
//!   peak RSS. `BENCH_LAZY_ONLY=1` runs only this.
//!
//! `BENCH_PINS` changes the pin count (default 1,000,000). Results go to stdout as Markdown rows.

mod common;

use std::io::Read;

use common::{Sim, median};
use std::time::{Duration, Instant};

/// Reads the whole `/allocations` stream and counts its lines.
fn read_allocations(client: &reqwest::blocking::Client, url: &str) -> (usize, Duration) {
    let start = Instant::now();
    let mut resp = client.get(format!("{url}/allocations?filter=all")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = 0;
    loop {
        let n = resp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    (lines, start.elapsed())
}

/// `times` whole reads of the stream of `pins` pins: pins/s of each.
fn read_rates(
    client: &reqwest::blocking::Client,
    url: &str,
    pins: usize,
    times: usize,
) -> Vec<f64> {
    (0..times)
        .map(|_| {
            let (n, d) = read_allocations(client, url);
            assert_eq!(n, pins);
            n as f64 / d.as_secs_f64()
        })
        .collect()
}

/// "M UNIT (median of N; min A, max B)".
fn spread(rates: &[f64], unit: &str) -> String {
    format!(
        "{:.0} {unit} (median of {}; min {:.0}, max {:.0})",
        median(rates.to_vec()),
        rates.len(),
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max)
    )
}

fn bench_allocations(pins: usize) {
    let t = Instant::now();
    let sim = Sim::start(&["--peers", "5", "--pins", &pins.to_string(), "--lag", "0"]);
    let seeded = t.elapsed();
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    read_allocations(&client, &sim.urls[0]); // warm-up
    let rates = read_rates(&client, &sim.urls[0], pins, 5);
    println!(
        "| GET /allocations, {pins} pins, 5 peers | {} | start-up with seeding {:.1} s, RSS {:.0} MiB |",
        spread(&rates, "pins/s"),
        seeded.as_secs_f64(),
        sim.rss_mib()
    );
}

fn bench_repins(pins: usize, total: usize, concurrency: usize) {
    let sim = Sim::start(&["--peers", "5", "--pins", &pins.to_string(), "--lag", "50ms..1s"]);
    // The CIDs to re-pin, in the order peer0 streams them.
    let client = reqwest::blocking::Client::new();
    let body = client.get(format!("{}/allocations", sim.urls[0])).send().unwrap().text().unwrap();
    let cids: Vec<String> = body
        .lines()
        .take(total)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rates = Vec::new();
    for round in 0..3 {
        let rate = rt.block_on(async {
            let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let cids = std::sync::Arc::new(cids.clone());
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, next, cids, url) =
                    (client.clone(), next.clone(), cids.clone(), sim.urls[0].clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(cid) = cids.get(i) else { break };
                        let r = client
                            .post(format!("{url}/pins/{cid}?name=bench-{round}&meta-org=hrdag&meta-pass={round}"))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                        r.bytes().await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            cids.len() as f64 / start.elapsed().as_secs_f64()
        });
        rates.push(rate);
    }
    println!(
        "| POST /pins re-pins, concurrency {concurrency}, 5 peers, {total} per round | {} | RSS after {:.0} MiB |",
        spread(&rates, "re-pins/s"),
        sim.rss_mib()
    );
}

fn bench_memory(pin_counts: &[usize]) {
    for &peers in &[1usize, 5] {
        for &pins in pin_counts {
            let sim = Sim::start(&["--peers", &peers.to_string(), "--pins", &pins.to_string()]);
            std::thread::sleep(Duration::from_millis(200));
            println!("| memory, {pins} pins, {peers} peers | RSS {:.0} MiB | |", sim.rss_mib());
        }
    }
    // Every peer rewrites every pin once: each replica then holds its own versions.
    let pins = pin_counts[pin_counts.len() / 2];
    let sim = Sim::start(&["--peers", "5", "--pins", &pins.to_string(), "--lag", "0"]);
    let before = sim.rss_mib();
    let client = reqwest::blocking::Client::new();
    let body = client.get(format!("{}/allocations", sim.urls[0])).send().unwrap().text().unwrap();
    let cids: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for cid in cids.iter().take(20_000) {
        client.post(format!("{}/pins/{cid}?meta-org=x", sim.urls[0])).send().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "| memory, {pins} pins, 5 peers, after 20000 re-pins replicated to every peer | RSS {:.0} MiB (before {:.0}) | |",
        sim.rss_mib(),
        before
    );
}

/// Generated pins, read whole three times: they are made as they are read, not held.
fn bench_lazy(pins: usize) {
    let t = Instant::now();
    let sim = Sim::start(&["--peers", "5", "--lazy-pins", &pins.to_string(), "--lag", "0"]);
    let started = t.elapsed();
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let rates = read_rates(&client, &sim.urls[0], pins, 3);
    println!(
        "| GET /allocations, {pins} generated pins (`--lazy-pins`), 5 peers | {} | start-up {:.2} s; peak RSS {:.0} MiB, RSS after {:.0} MiB |",
        spread(&rates, "pins/s"),
        started.as_secs_f64(),
        sim.peak_rss_mib(),
        sim.rss_mib()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches for their list
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pins: usize =
        std::env::var("BENCH_PINS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("| benchmark | result | notes |\n|---|---|---|");
    let lazy: Vec<usize> = std::env::var("BENCH_LAZY_PINS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_LAZY_PINS: pin counts, comma-separated"))
        .collect();
    for n in lazy {
        bench_lazy(n);
    }
    if std::env::var_os("BENCH_LAZY_ONLY").is_some() {
        return;
    }
    bench_allocations(pins);
    bench_repins(pins.min(100_000), 20_000.min(pins), 32);
    bench_memory(&[pins / 4, pins / 2, pins]);
}
