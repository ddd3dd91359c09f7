//! Real convergence (`cargo bench --bench realcluster`): `ledger tag --org hrdag` of the field
//! report's 3,512 unowned pins (and 40 owned by other organisations) on a real 5-peer IPFS Cluster
//! v1.1.6 with kubo, on loopback, with the cluster's shipped defaults (`rebroadcast_interval` 1m);
//! then the same on `ledger sim serve` with the throughput the real peers showed (`--apply-rate 50
//! --inbox 32 --rebroadcast 60s`), and `ledger demo`, all in one run and with the demo's tag
//! settings (500 re-pins/s, settle 5s, a probe every 500ms), as many passes as it takes. For each: wall time, the first read of
//! every peer after pass 1, the probe curve of the peers that lagged, when each peer first showed
//! every target, and the passes it took. The field report saw 2,749 → 3,139 → 3,385 → 3,512.
//!
//! Needs the real cluster built (`bash tests/realcluster/setup.sh`).

#[path = "../tests/util/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod util;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use util::{PeerUrls, cid_of, raw};

/// One probe sample: pass, peer, seconds since the run started, targets, tagged.
struct Sample {
    pass: i64,
    peer: String,
    secs: f64,
    targets: i64,
    tagged: i64,
}

fn samples(csv_text: &str) -> Vec<Sample> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            Sample {
                pass: rec[1].parse().unwrap(),
                peer: rec[2].to_string(),
                secs: rec[3].parse().unwrap(),
                targets: rec[4].parse().unwrap(),
                tagged: rec[5].parse().unwrap(),
            }
        })
        .collect()
}

/// Prints the figures of one run's probe curve: per peer, the first read after pass 1, when it
/// showed every target, and the curve where it moved.
fn summarise(what: &str, wall: f64, samples: &[Sample]) {
    let mut first: BTreeMap<&str, &Sample> = BTreeMap::new();
    let mut done: BTreeMap<&str, f64> = BTreeMap::new();
    let mut curves: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut plateaus: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
    let mut kept_at: BTreeMap<&str, f64> = BTreeMap::new();
    let mut passes = 0;
    for s in samples {
        passes = passes.max(s.pass);
        if s.pass == 1 {
            first.entry(&s.peer).or_insert(s);
        }
        if s.tagged >= s.targets {
            done.entry(&s.peer).or_insert(s.secs);
        }
        // The curve where it moved: a point every 10 s or so, and both ends of a standstill.
        let curve = curves.entry(&s.peer).or_default();
        let kept = kept_at.get(s.peer.as_str()).copied();
        let plateau = plateaus.get(s.peer.as_str()).copied();
        if plateau.is_none_or(|(n, _)| n != s.tagged) {
            let stood = plateau.filter(|&(_, since)| s.secs - since > 5.0);
            if let Some((n, since)) = stood.filter(|&(_, since)| Some(since) != kept) {
                curve.push(format!("{n}@{since:.1}s"));
            }
            if kept.is_none_or(|t| s.secs - t >= 10.0) || stood.is_some() || s.tagged >= s.targets {
                curve.push(format!("{}@{:.1}s", s.tagged, s.secs));
                kept_at.insert(s.peer.as_str(), s.secs);
            }
            plateaus.insert(s.peer.as_str(), (s.tagged, s.secs));
        }
    }
    println!("{what}: {wall:.1} s wall, {passes} passes");
    for (peer, s) in &first {
        let short = &peer[peer.len().saturating_sub(6)..];
        println!(
            "  …{short}: first read after pass 1 {}/{} ({:.1}%) at {:.1}s; every target after {}; curve {}",
            s.tagged,
            s.targets,
            100.0 * s.tagged as f64 / s.targets as f64,
            s.secs,
            done.get(peer).map(|t| format!("{t:.1}s")).unwrap_or_else(|| "never".into()),
            curves[peer].join(" → ")
        );
    }
}

fn ledger(dir: &std::path::Path, cluster: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .current_dir(dir)
        .env("LEDGER_LOG", "warn")
        .args(["--db", "ledger.db", "--cluster", cluster])
        .args(args)
        .output()
        .unwrap()
}

/// The field report's pin set through `url` by 8 clients at once: 3,512 named, unowned pins and 40
/// of other organisations. Returns the seconds it took.
fn seed(url: &str) -> f64 {
    let start = Instant::now();
    let others = ["amnesty", "witness", "bellingcat", "memorial"];
    let queries: Vec<String> = (0..3552)
        .map(|i| {
            let cid = cid_of(&format!("field-report/{i}"));
            let name = format!("name=dataset-{:04}%2Ffile-{}.json", i / 10, i % 10);
            if i < 3512 {
                format!("/pins/{cid}?{name}")
            } else {
                format!("/pins/{cid}?{name}&meta-org={}", others[i % others.len()])
            }
        })
        .collect();
    std::thread::scope(|s| {
        for chunk in queries.chunks(queries.len().div_ceil(8)) {
            s.spawn(move || {
                for q in chunk {
                    let r = raw(url, "POST", q, &[], b"");
                    assert_eq!(r.status, 200, "{q}: {}", r.text());
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

/// `ledger tag --org hrdag` with the demo's settings, as many passes as it takes within 10 minutes
/// (the real peers wait for rebroadcasts), then its probe curve.
fn tag(what: &str, cluster: &str) {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let args = [
        "tag",
        "--org",
        "hrdag",
        "--rate",
        "500",
        "--settle",
        "5s",
        "--probe-every",
        "500ms",
        "--max-passes",
        "40",
        "--run-timeout",
        "10m",
        "--json",
    ];
    let out = ledger(dir.path(), cluster, &args);
    let wall = start.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tag --json ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    println!("{what}: tag converged {}, exit {:?}", report["converged"], out.status.code());
    let csv = ledger(dir.path(), cluster, &["convergence", "--csv", "-"]);
    assert!(csv.status.success(), "{}", String::from_utf8_lossy(&csv.stderr));
    summarise(what, wall, &samples(&String::from_utf8_lossy(&csv.stdout)));
}

fn main() {
    if !available(V1_1_6) {
        return;
    }
    let rc = RealCluster::start(RealOptions::new(V1_1_6, 5));
    println!("real 5-peer v1.1.6 cluster up in {:.1} s", rc.startup.as_secs_f64());
    let seeded = seed(rc.url(0));
    let settled = Instant::now();
    let pins = rc.wait_converged(Duration::from_secs(300));
    assert_eq!(pins.len(), 3552);
    println!(
        "real: seeded 3,552 pins in {seeded:.1} s ({:.0} pins/s); every peer held all of them {:.1} s later",
        3552.0 / seeded,
        settled.elapsed().as_secs_f64()
    );
    tag("real v1.1.6, 5 peers (rebroadcast 1m)", &rc.all_urls());
    rc.assert_loopback_only();
    drop(rc);

    // The simulator calibrated on the real cluster: 50 deltas/s per peer, 32 held broadcasts.
    let sim = util::Sim::start(&[
        "--peers",
        "5",
        "--lag",
        "50ms..500ms",
        "--apply-rate",
        "50",
        "--inbox",
        "32",
        "--rebroadcast",
        "60s",
    ]);
    let seeded = seed(sim.url(0));
    let settled = Instant::now();
    sim.wait_converged(Duration::from_secs(300));
    println!(
        "sim: seeded 3,552 pins in {seeded:.1} s; every peer held all of them {:.1} s later",
        settled.elapsed().as_secs_f64()
    );
    tag("ledger sim serve --apply-rate 50 --inbox 32 --rebroadcast 60s", &sim.all_urls());
    drop(sim);

    // The demo: the same model at 15 times the field report's speed.
    let demo_dir = tempfile::tempdir().unwrap();
    let out_dir = demo_dir.path().join("demo");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["-q", "demo", "--seed", "1", "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(out_dir.join("convergence.csv")).unwrap();
    summarise("ledger demo --seed 1 (apply-rate 350, rebroadcast 10s)", wall, &samples(&text));
    println!(
        "field report (v1.1.5, by hand, 32 re-pins/s): 2,749 → 3,139 → 3,385 → 3,512 over ~30 s, 3 passes"
    );
}
