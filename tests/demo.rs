//! `ledger demo`: the whole story on an in-process simulated cluster, ending in a report whose
//! convergence reached every target on every peer (issue 5, point 4). Smaller and faster settings
//! than the default demo, through its own flags, so a debug build runs it in seconds.

use std::collections::BTreeMap;

use crate::util::*;

const FAST: [&str; 14] = [
    "--pins",
    "300",
    "--owned",
    "10",
    "--rate",
    "0",
    "--lag",
    "50ms..400ms",
    "--rebroadcast",
    "1s",
    "--settle",
    "1s",
    "--probe-every",
    "200ms",
];

#[test]
fn demo_tags_reports_and_converges_on_every_peer() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    for attempt in 0..2 {
        let out = ledger()
            .current_dir(dir.path())
            .args(["demo", "--out", out_dir.to_str().unwrap()])
            .args(FAST)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for step in [
            "$ ledger snapshot --all-peers",
            "$ ledger tag --org hrdag",
            "$ ledger convergence",
            "$ ledger report",
        ] {
            assert!(stdout.contains(step), "{step} missing from: {stdout}");
        }
        assert!(stdout.contains("300 unowned, 10 owned by other organisations"), "{stdout}");
        assert!(stdout.contains("every peer converged"), "{stdout}");
        assert!(stdout.contains("first read after pass 1 on the other peers"), "{stdout}");
        for f in REPORT_FILES.iter().chain(&["ledger.db"]) {
            assert!(out_dir.join(f).is_file(), "{f} missing");
        }
        // Every peer's last sample shows all 300 targets; the run is run 1 of a fresh ledger each time.
        let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut r = csv::Reader::from_path(out_dir.join("convergence.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            assert_eq!(&rec[0], "1", "attempt {attempt}: the demo's ledger was not recreated");
            last.insert(rec[2].to_string(), (rec[4].to_string(), rec[5].to_string()));
        }
        assert_eq!(last.len(), 5, "five peers sampled");
        for (peer, (targets, tagged)) in &last {
            assert_eq!((targets.as_str(), tagged.as_str()), ("300", "300"), "{peer}");
        }
        let others = std::fs::read_to_string(out_dir.join("owned_by_others.csv")).unwrap();
        assert_eq!(others.lines().count(), 1 + 10);
        let stragglers = std::fs::read_to_string(out_dir.join("stragglers.csv")).unwrap();
        assert_eq!(stragglers.lines().count(), 1, "{stragglers}");
        let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
        assert!(html.contains("Converged: every peer showed every target"));
    }
}

#[test]
fn demo_refuses_a_bad_rate() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger().current_dir(dir.path()).args(["demo", "--rate", "-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate") && err.contains("positive number"), "{err}");
    assert!(!dir.path().join("reports").exists(), "nothing written");
}
