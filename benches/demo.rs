//! The demo's figures (`cargo bench --bench demo`): `ledger demo` with its defaults (5 peers, 3,512
//! unowned pins, lag 2s..8s, 5% lost broadcasts, 500 re-pins/s), seeds 1, 2 and 3: wall time, the
//! first read after pass 1 on the peers that did not take the writes (the field report saw 2,749 of
//! 3,512, 78%), when every peer showed every target, and how many passes it took. The first read
//! depends on the pass keeping its rate, so it is measured here, in a release build, not in a test.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

fn main() {
    let mut walls = Vec::new();
    let mut shares = Vec::new();
    for seed in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("demo");
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["-q", "demo", "--seed", &seed.to_string(), "--out", out_dir.to_str().unwrap()])
            .output()
            .unwrap();
        let wall = start.elapsed().as_secs_f64();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Per peer: the first sample of pass 1, and when it first showed every target.
        let mut first: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut done: BTreeMap<String, f64> = BTreeMap::new();
        let mut passes = 0;
        let mut r = csv::Reader::from_path(out_dir.join("convergence.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let (pass, peer): (i64, String) = (rec[1].parse().unwrap(), rec[2].to_string());
            let (secs, targets, tagged): (f64, i64, i64) =
                (rec[3].parse().unwrap(), rec[4].parse().unwrap(), rec[5].parse().unwrap());
            passes = passes.max(pass);
            if pass == 1 {
                first.entry(peer.clone()).or_insert((targets, tagged));
            }
            if tagged >= targets {
                done.entry(peer).or_insert(secs);
            }
        }
        let lagging: Vec<f64> = first
            .values()
            .filter(|(targets, tagged)| tagged < targets)
            .map(|(targets, tagged)| 100.0 * *tagged as f64 / *targets as f64)
            .collect();
        let reads: Vec<String> =
            first.values().filter(|(t, n)| n < t).map(|(t, n)| format!("{n}/{t}")).collect();
        let converged = done.values().cloned().fold(0.0, f64::max);
        println!(
            "seed {seed}: {wall:.1} s wall; first read after pass 1 on the {} lagging peers: {} ({:.1}–{:.1}%); every peer showed every target after {converged:.1} s; {passes} passes",
            lagging.len(),
            reads.join(", "),
            lagging.iter().cloned().fold(f64::MAX, f64::min),
            lagging.iter().cloned().fold(0.0, f64::max),
        );
        walls.push(wall);
        shares.extend(lagging);
    }
    println!(
        "demo: median wall time {:.1} s (of {}); first read on lagging peers {:.1}–{:.1}%, median {:.1}%",
        common::median(walls.clone()),
        walls.len(),
        shares.iter().cloned().fold(f64::MAX, f64::min),
        shares.iter().cloned().fold(0.0, f64::max),
        common::median(shares.clone()),
    );
}
