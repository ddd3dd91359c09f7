//! `ledger add` throughput and memory (`cargo bench --bench add`): the real `ledger add --org bench`
//! against `ledger sim serve --peers 3` with no lag, each run on a fresh simulator and ledger.
//!
//! - a directory of 1,000 files of 4 KiB: files/s end to end (median of 3);
//! - one file of `BENCH_ADD_MIB` MiB (default 1,024): MiB/s end to end and the `ledger` process's
//!   peak resident memory (VmHWM, read every 20 ms until it exits), beside the simulator's.

mod common;

use std::io::Write as _;
use std::process::Command;

use common::{Sim, measured, median};

/// Runs `ledger add PATH --org bench --json`: (seconds, peak RSS in MiB, its JSON report).
fn add(dir: &std::path::Path, urls: &[String], path: &str) -> (f64, f64, serde_json::Value) {
    let m = measured(
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .current_dir(dir)
            .args(["--db", "l.db", "--cluster", &urls.join(","), "-q", "add", path])
            .args(["--org", "bench", "--json"]),
    );
    assert_eq!(m.status.code(), Some(0), "{}", m.stderr);
    (m.secs, m.peak_mib, serde_json::from_slice(&m.stdout).unwrap())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: u64 = std::env::var("BENCH_ADD_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    println!("| benchmark | result | notes |\n|---|---|---|");

    let mut rates = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..3 {
        let sim = Sim::start(&["--lag", "0", "--peers", "3"]);
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        for i in 0..1000u32 {
            let body: Vec<u8> = (0..4096u32).map(|j| (i ^ j.wrapping_mul(7)) as u8).collect();
            std::fs::write(files.join(format!("f{i:04}.bin")), body).unwrap();
        }
        let (secs, peak, r) = add(dir.path(), &sim.urls, "files");
        assert_eq!(r["uploads"][0]["entries"].as_array().unwrap().len(), 1001);
        rates.push(1000.0 / secs);
        peaks.push(peak);
    }
    println!(
        "| `ledger add` of a directory of 1,000 files of 4 KiB, 3 peers (median of 3) | {:.0} files/s (runs {}) | peak RSS {:.1} MiB; upload, 1,001 entries recorded, the pin read back on every peer |",
        median(rates.clone()),
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
        median(peaks)
    );

    let sim = Sim::start(&["--lag", "0", "--peers", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..mib {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let (secs, peak, r) = add(dir.path(), &sim.urls, "big.bin");
    assert_eq!(r["bytes"].as_u64(), Some(mib << 20));
    println!(
        "| `ledger add` of one {mib} MiB file, 3 peers | {:.0} MiB/s ({secs:.1} s) | ledger's peak RSS **{peak:.1} MiB**; the simulator's RSS after it {:.1} MiB |",
        mib as f64 / secs,
        sim.rss_mib()
    );
}
