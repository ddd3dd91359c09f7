//! Crash soak: `tag`, `restore`, `repin` and `snapshot` killed with SIGKILL at random moments, then
//! checked: the database passes `PRAGMA integrity_check` and `foreign_key_check`; every re-pin the
//! cluster received is in the ledger (its intent was recorded before it was sent); the rerun ends as
//! an uninterrupted run would, settles what the killed one left pending, leaves no run or snapshot
//! `running`, and re-pins nothing the cluster already had.
//!
//! `LEDGER_SOAK_TRIALS` sets the trials per command (default 13: 52 in all, in every `cargo test`);
//! `LEDGER_SOAK_SEED` moves the kill moments. The soak mode is the same test with more trials:
//! `LEDGER_SOAK_TRIALS=250 cargo test --release --test integration soak:: -- --test-threads 1`
//! (1,000 trials; figures in reports/RELIABILITY.md).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{Sim, bin, raw, sorted_pinset};

fn trials() -> u64 {
    std::env::var("LEDGER_SOAK_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(13)
}

/// A kill moment in `0..max`, different for every trial and command (xorshift over the seed).
fn moment(command: u64, trial: u64, max: Duration) -> Duration {
    let seed: u64 =
        std::env::var("LEDGER_SOAK_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut x = seed ^ (command << 32) ^ trial.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    max * (x % 10_000) as u32 / 10_000
}

fn ledger(dir: &Path, sim: &Sim, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        // A rerun waits up to --timeout for a re-pin the killed run may have had in flight.
        .args(["--db", "ledger.db", "--cluster", &urls(sim), "--timeout", "2s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn urls(sim: &Sim) -> String {
    sim.peers.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(",")
}

/// Runs to its end; the exit code and stderr.
fn run(dir: &Path, sim: &Sim, args: &[&str]) -> (i32, String) {
    let out = ledger(dir, sim, args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts, then SIGKILLs it after `after` (or lets it end if it ends sooner).
fn kill_after(dir: &Path, sim: &Sim, args: &[&str], after: Duration) {
    let mut child =
        ledger(dir, sim, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

fn query(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    crate::util::sql_rows(&dir.join("ledger.db"), sql)
}

fn count(dir: &Path, sql: &str) -> i64 {
    query(dir, sql)[0][0].parse().unwrap()
}

/// The database is whole and consistent.
fn check_integrity(dir: &Path, what: &str) {
    if !dir.join("ledger.db").exists() {
        return; // killed before the file was created
    }
    let ok = query(dir, "PRAGMA integrity_check");
    assert_eq!(ok, vec![vec!["ok".to_string()]], "{what}: integrity_check");
    let fk = query(dir, "PRAGMA foreign_key_check");
    assert!(fk.is_empty(), "{what}: foreign_key_check: {fk:?}");
}

fn org_of(p: &Value) -> Option<&str> {
    p["metadata"]["org"].as_str()
}

/// CIDs with `org=ORG` on peer 0.
fn tagged(sim: &Sim, org: &str) -> BTreeSet<String> {
    sorted_pinset(sim.url(0), &[])
        .iter()
        .filter(|p| org_of(p) == Some(org))
        .map(|p| p["cid"].as_str().unwrap().to_string())
        .collect()
}

/// CIDs whose re-pin intent is in the ledger (sent, or pending when the process died).
fn intended(dir: &Path) -> BTreeSet<String> {
    // Killed before the file, or its schema, was there: nothing could have been sent.
    if !dir.join("ledger.db").exists()
        || count(dir, "SELECT count(*) FROM sqlite_master WHERE name = 'repins'") == 0
    {
        return BTreeSet::new();
    }
    query(
        dir,
        "SELECT DISTINCT c.cid FROM repins r JOIN cids c ON c.id = r.cid_id WHERE r.status IN ('pending', 'sent')",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// After the rerun: nothing `running`, nothing `pending`, the database whole.
fn check_settled(dir: &Path, what: &str) {
    check_integrity(dir, what);
    assert_eq!(
        count(dir, "SELECT count(*) FROM runs WHERE state = 'running'"),
        0,
        "{what}: a run left running"
    );
    assert_eq!(
        count(dir, "SELECT count(*) FROM repins WHERE status = 'pending'"),
        0,
        "{what}: pending intents"
    );
    assert_eq!(
        count(dir, "SELECT count(*) FROM snapshots WHERE state = 'running'"),
        0,
        "{what}: a snapshot left running"
    );
}

/// The re-pins of the latest run that were sent for pins in `had`: the cluster already had them.
fn resent(dir: &Path, had: &BTreeSet<String>) -> Vec<String> {
    query(
        dir,
        "SELECT c.cid FROM repins r JOIN cids c ON c.id = r.cid_id
         WHERE r.run_id = (SELECT max(id) FROM runs) AND r.status = 'sent'",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .filter(|c| had.contains(c))
    .collect()
}

#[test]
fn tag_killed_at_random_moments() {
    for trial in 0..trials() {
        let seed = (100 + trial).to_string();
        let sim =
            Sim::start(&["--peers", "2", "--pins", "300", "--seed", &seed, "--lag", "0..20ms"]);
        let dir = tempfile::tempdir().unwrap();
        let what = format!("tag trial {trial}");
        let args =
            ["tag", "--org", "soak", "--settle", "100ms", "--concurrency", "4", "--rate", "600"];
        assert!(tagged(&sim, "soak").is_empty());
        kill_after(dir.path(), &sim, &args, moment(1, trial, Duration::from_millis(900)));
        let had = tagged(&sim, "soak");
        let recorded = intended(dir.path());
        let unrecorded: Vec<&String> = had.difference(&recorded).collect();
        assert!(
            unrecorded.is_empty(),
            "{what}: re-pins the ledger has no record of: {unrecorded:?}"
        );
        check_integrity(dir.path(), &what);
        let (code, err) = run(dir.path(), &sim, &args);
        assert!(code <= 1, "{what}: rerun exit {code}: {err}");
        check_settled(dir.path(), &what);
        let again = resent(dir.path(), &had);
        assert!(again.is_empty(), "{what}: re-pinned again: {again:?}");
        sim.wait_converged(Duration::from_secs(10));
        let owned_by_others = sorted_pinset(sim.url(0), &[])
            .iter()
            .filter(|p| org_of(p).is_some_and(|o| o != "soak" && !o.is_empty()))
            .count();
        assert_eq!(
            sorted_pinset(sim.url(0), &[]).len() - tagged(&sim, "soak").len(),
            owned_by_others,
            "{what}"
        );
    }
}

#[test]
fn snapshot_killed_at_random_moments() {
    let sim = Sim::start(&["--peers", "1", "--pins", "20000", "--seed", "7", "--lag", "0"]);
    for trial in 0..trials() {
        let dir = tempfile::tempdir().unwrap();
        let what = format!("snapshot trial {trial}");
        if trial % 2 == 1 {
            // A ledger with history: the killed snapshot is a repeat one.
            assert_eq!(run(dir.path(), &sim, &["snapshot"]).0, 0, "{what}");
        }
        kill_after(dir.path(), &sim, &["snapshot"], moment(2, trial, Duration::from_millis(1500)));
        check_integrity(dir.path(), &what);
        let (code, err) = run(dir.path(), &sim, &["snapshot", "--json"]);
        assert_eq!(code, 0, "{what}: {err}");
        check_settled(dir.path(), &what);
        let latest =
            query(dir.path(), "SELECT state, pins_seen FROM snapshots ORDER BY id DESC LIMIT 1");
        assert_eq!(latest, vec![vec!["complete".to_string(), "20000".to_string()]], "{what}");
        // A killed snapshot is never evidence of anything: no pin vanished, nothing lost.
        let (code, err) = run(dir.path(), &sim, &["lost"]);
        assert_eq!(code, 0, "{what}: lost found something: {err}");
        let vanished = count(dir.path(), "SELECT coalesce(sum(vanished_pins), 0) FROM snapshots");
        assert_eq!(vanished, 0, "{what}");
    }
}

#[test]
fn repin_killed_at_random_moments() {
    let sim = Sim::start(&["--peers", "1", "--pins", "20", "--seed", "9", "--lag", "0"]);
    let cids: Vec<String> = sorted_pinset(sim.url(0), &[])
        .iter()
        .map(|p| p["cid"].as_str().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // Slow answers, so that the kill lands before, during and after the request.
    sim.control("POST", "/_sim/faults", r#"{"latency_ms": 60}"#);
    for trial in 0..trials() {
        let what = format!("repin trial {trial}");
        let cid = &cids[trial as usize % cids.len()];
        let value = format!("t{trial}");
        let meta = format!("soak={value}");
        kill_after(
            dir.path(),
            &sim,
            &["repin", cid, "--meta", &meta],
            moment(3, trial, Duration::from_millis(400)),
        );
        check_integrity(dir.path(), &what);
        let now = sorted_pinset(sim.url(0), &[]);
        let pin = now.iter().find(|p| p["cid"] == cid.as_str()).unwrap();
        let applied = pin["metadata"]["soak"] == value.as_str();
        if applied {
            assert!(
                intended(dir.path()).contains(cid),
                "{what}: the cluster has a re-pin the ledger does not"
            );
        }
        let (code, err) = run(dir.path(), &sim, &["repin", cid, "--meta", &meta]);
        assert_eq!(code, 0, "{what}: {err}");
        check_settled(dir.path(), &what);
        if applied {
            let sent = count(
                dir.path(),
                "SELECT count(*) FROM repins WHERE run_id = (SELECT max(id) FROM runs) AND status = 'sent'",
            );
            assert_eq!(sent, 0, "{what}: sent again though the cluster had it");
        }
    }
    sim.control("DELETE", "/_sim/faults", "");
}

/// A pin's metadata without empty values (an empty value is no value: a restore does not bring it
/// back).
fn kept(meta: &Value) -> BTreeSet<(String, String)> {
    meta.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            v.as_str().filter(|v| !v.is_empty()).map(|v| (k.clone(), v.to_string()))
        })
        .collect()
}

#[test]
fn restore_killed_at_random_moments() {
    for trial in 0..trials() {
        let seed = (300 + trial).to_string();
        let sim = Sim::start(&["--peers", "1", "--pins", "200", "--seed", &seed, "--lag", "0"]);
        let dir = tempfile::tempdir().unwrap();
        let what = format!("restore trial {trial}");
        assert_eq!(run(dir.path(), &sim, &["snapshot"]).0, 0, "{what}");
        // A careless script re-pins 60 pins bare: their names and metadata are gone.
        let before = sorted_pinset(sim.url(0), &[]);
        let wiped: Vec<&Value> =
            before.iter().filter(|p| !kept(&p["metadata"]).is_empty()).take(60).collect();
        assert!(wiped.len() >= 30, "{what}: the seed has too few pins with metadata");
        for p in &wiped {
            let r =
                raw(sim.url(0), "POST", &format!("/pins/{}", p["cid"].as_str().unwrap()), &[], b"");
            assert_eq!(r.status, 200, "{what}");
        }
        assert_eq!(run(dir.path(), &sim, &["snapshot"]).0, 0, "{what}");
        let args = ["restore", "--from", "1", "--concurrency", "2"];
        sim.control("POST", "/_sim/faults", r#"{"latency_ms": 5}"#);
        kill_after(dir.path(), &sim, &args, moment(4, trial, Duration::from_millis(700)));
        sim.control("DELETE", "/_sim/faults", "");
        check_integrity(dir.path(), &what);
        let now = sorted_pinset(sim.url(0), &[]);
        let back: BTreeSet<String> = wiped
            .iter()
            .filter(|p| {
                now.iter()
                    .any(|n| n["cid"] == p["cid"] && kept(&n["metadata"]) == kept(&p["metadata"]))
            })
            .map(|p| p["cid"].as_str().unwrap().to_string())
            .collect();
        let recorded = intended(dir.path());
        let unrecorded: Vec<&String> = back.difference(&recorded).collect();
        assert!(
            unrecorded.is_empty(),
            "{what}: restores the ledger has no record of: {unrecorded:?}"
        );
        let (code, err) = run(dir.path(), &sim, &args);
        assert_eq!(code, 0, "{what}: rerun exit {code}: {err}");
        check_settled(dir.path(), &what);
        let again = resent(dir.path(), &back);
        assert!(again.is_empty(), "{what}: restored again: {again:?}");
        let end = sorted_pinset(sim.url(0), &[]);
        for p in &wiped {
            let n = end.iter().find(|n| n["cid"] == p["cid"]).unwrap();
            assert_eq!(
                kept(&n["metadata"]),
                kept(&p["metadata"]),
                "{what}: {} not restored",
                p["cid"]
            );
            assert_eq!(n["name"], p["name"], "{what}: {} name not restored", p["cid"]);
        }
    }
}
