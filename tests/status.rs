//! Pin status over time (issue 13, point 5): `ledger snapshot --status` stores each peer's own
//! tracker status of its pins (`GET /pins?local=true`) as intervals per peer, and `ledger drift
//! --status` lists the pins stuck in `pin_error`, `pin_queued` or `pinning` on a peer for at least
//! `--older-than`, with the peer, the status, the error text and since when.
//!
//! On the simulator, the statuses are steered through `POST /_sim/status`; time is real but short
//! (readings a second or two apart against `--older-than 2s`). On the real cluster, a CID nobody
//! has (kubo has no bootstrap peers and no routing, and nothing leaves loopback) is pinned with
//! replication 2 under a 15 s `ipfshttp.pin_timeout`: its two allocated peers report it `pinning`,
//! then `pin_error`, and `drift --status` lists it on exactly those two; unpinned, it is listed
//! nowhere.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::util::case::Case;
use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use crate::util::*;

/// One entry of `drift --status --json`'s `stuck`, as a contract: every field, no other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Stuck {
    cluster: String,
    peer: String,
    cid: String,
    status: String,
    error: String,
    status_at: Option<String>,
    attempt_count: i64,
    first_reading: i64,
    first_snapshot: i64,
    since: String,
    last_reading: i64,
    last_snapshot: i64,
    last_seen: String,
    stuck_seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Reading {
    cluster: String,
    peer: String,
    reading: i64,
    snapshot: i64,
    started_at: String,
    entries: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    older_than_seconds: f64,
    statuses: Vec<String>,
    stuck: Vec<Stuck>,
    count: usize,
    readings: Vec<Reading>,
}

fn report(out: &Out) -> Report {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("drift --status --json: {e}: {out:?}"))
}

/// Peer `peer`'s tracker reports `status` (with `error`) for `cid`; `None`: its own again.
fn steer(case: &Case, peer: &str, cid: &str, status: Option<&str>, error: &str) {
    let body = json!({ "peer": peer, "cid": cid, "status": status, "error": error });
    case.sim.control("POST", "/_sim/status", &body.to_string());
}

/// The start time and snapshot of every status reading of `peer`, oldest first.
fn readings_of(case: &Case, peer: &str) -> Vec<(String, String)> {
    case.sql(&format!(
        "SELECT r.started_at, r.snapshot_id FROM status_readings r JOIN series se ON se.id = r.series_id
         WHERE se.peer = '{peer}' AND r.state = 'complete' ORDER BY r.id"
    ))
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect()
}

/// Seconds from `a` to `b` (RFC 3339).
fn seconds(a: &str, b: &str) -> f64 {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    (t(b) - t(a)).num_milliseconds() as f64 / 1000.0
}

fn snapshot_status(case: &Case) {
    let out = case.run(&["snapshot", "--all-peers", "--status"]);
    assert_eq!(out.code, 0, "snapshot --all-peers --status: {out:?}");
}

#[test]
fn a_pin_stuck_in_pin_error_is_listed_with_its_peer_error_and_since_and_one_that_recovered_is_not()
{
    let case = Case::start(&["--peers", "3", "--pins", "30", "--lag", "0s"]);
    let pins = case.pins();
    let (stuck, recovers) = (pins[3]["cid"].as_str().unwrap(), pins[7]["cid"].as_str().unwrap());
    let ids: Vec<String> = case.sim.peers.iter().map(|p| p.id.clone()).collect();
    steer(&case, "peer1", stuck, Some("pin_error"), "failed to fetch: context deadline exceeded");
    steer(&case, "peer2", recovers, Some("pinning"), "");
    snapshot_status(&case);
    std::thread::sleep(Duration::from_millis(1200));
    steer(&case, "peer2", recovers, Some("pinned"), "");
    snapshot_status(&case);
    std::thread::sleep(Duration::from_millis(1200));
    snapshot_status(&case);

    let out = case.run(&["drift", "--status", "--older-than", "2s", "--json"]);
    assert_eq!(out.code, 1, "a stuck pin is listed: exit 1: {out:?}");
    let r = report(&out);
    assert_eq!(r.older_than_seconds, 2.0);
    assert_eq!(r.statuses, ["pin_error", "pin_queued", "pinning"]);
    assert_eq!((r.count, r.stuck.len()), (1, 1), "only the stuck pin: {:?}", r.stuck);
    let s = &r.stuck[0];
    assert_eq!((s.peer.as_str(), s.cid.as_str()), (ids[1].as_str(), stuck));
    assert_eq!(s.status, "pin_error");
    assert_eq!(s.error, "failed to fetch: context deadline exceeded");
    // Since the first reading of peer1 (round 1), up to its latest (round 3), which still saw it.
    let p1 = readings_of(&case, &ids[1]);
    assert_eq!(p1.len(), 3, "three readings of peer1");
    assert_eq!(
        (s.since.as_str(), s.first_snapshot.to_string()),
        (p1[0].0.as_str(), p1[0].1.clone())
    );
    assert_eq!(
        (s.last_seen.as_str(), s.last_snapshot.to_string()),
        (p1[2].0.as_str(), p1[2].1.clone())
    );
    assert!((s.stuck_seconds - seconds(&p1[0].0, &p1[2].0)).abs() < 0.002, "{s:?}");
    assert!(s.stuck_seconds >= 2.0, "{s:?}");
    assert_eq!(s.attempt_count, 1, "the simulator counts one attempt of an error");
    assert!(s.status_at.is_some(), "the tracker's own timestamp is kept: {s:?}");
    assert_eq!(r.readings.len(), 3, "every peer's latest reading: {:?}", r.readings);
    assert!(r.readings.iter().all(|x| x.entries == 30), "{:?}", r.readings);

    // The recovered pin: `pinning` on peer2 in round 1 only, then `pinned` — not stuck, even with
    // --older-than 0s; its history holds both intervals.
    let out = case.run(&["drift", "--status", "--older-than", "0s", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let listed: Vec<(String, String)> =
        report(&out).stuck.iter().map(|s| (s.peer.clone(), s.cid.clone())).collect();
    assert_eq!(listed, vec![(ids[1].clone(), stuck.to_string())]);
    let history = case.sql(&format!(
        "SELECT status, current FROM status_history WHERE cid = '{recovers}' AND peer = '{}'
         ORDER BY first_reading",
        ids[2]
    ));
    assert_eq!(
        history,
        vec![vec!["pinning".to_string(), "0".into()], vec!["pinned".into(), "1".into()]]
    );

    // The table says the same; a longer --older-than lists nothing (exit 0).
    let out = case.run(&["drift", "--status", "--older-than", "2s"]);
    assert_eq!(out.code, 1, "{out:?}");
    let row = out.stdout.lines().find(|l| l.contains(stuck)).unwrap_or_else(|| panic!("{out:?}"));
    assert!(row.contains("pin_error") && row.contains("context deadline exceeded"), "{row}");
    assert!(row.contains(&format!("{} (snapshot {})", p1[0].0, p1[0].1)), "{row}");
    assert!(out.stdout.contains("1 stuck for 2s or longer: 1 pin on 1 peer"), "{out:?}");
    let out = case.run(&["drift", "--status", "--older-than", "1h"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("no pin stuck in pin_error, pin_queued or pinning for 1h0m0s or longer"),
        "{out:?}"
    );

    // CSV: the same row.
    let out = case.run(&["drift", "--status", "--older-than", "2s", "--csv"]);
    assert_eq!(out.code, 1, "{out:?}");
    let (header, rows) = csv_maps(out.stdout.as_bytes());
    assert_eq!(header[..4], ["cluster", "peer", "cid", "status"]);
    assert_eq!(rows.len(), 1, "{out:?}");
    assert_eq!(rows[0]["peer"], ids[1]);
    assert_eq!(rows[0]["cid"], stuck);
    assert_eq!(rows[0]["status"], "pin_error");
    assert_eq!(rows[0]["since"], p1[0].0);
}

#[test]
fn a_snapshot_without_status_and_a_failed_reading_leave_the_stored_statuses_alone() {
    let case = Case::start(&["--peers", "2", "--pins", "12", "--lag", "0s"]);
    let cid = case.pins()[5]["cid"].as_str().unwrap().to_string();
    let peer0 = case.sim.peers[0].id.clone();
    steer(&case, "peer0", &cid, Some("pin_queued"), "");
    let out = case.run(&["snapshot", "--status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let reading = &out.json()[0]["status"];
    assert_eq!(reading["complete"], true, "{out:?}");
    assert_eq!(reading["entries"], 12, "{out:?}");
    assert_eq!(reading["statuses"]["pin_queued"], 1, "{out:?}");
    let counted: i64 =
        reading["statuses"].as_object().unwrap().values().map(|n| n.as_i64().unwrap()).sum();
    assert_eq!(counted, 12, "{out:?}");
    let stored =
        "SELECT cid_id, series_id, first_reading, coalesce(last_reading, 'open'), status, error
                  FROM pin_statuses ORDER BY cid_id, first_reading";
    let before = case.sql(stored);
    assert_eq!(before.len(), 12);

    // The pin recovers on the cluster; snapshots without --status read no status and end none.
    steer(&case, "peer0", &cid, None, "");
    for _ in 0..2 {
        let out = case.run(&["snapshot", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.json()[0].get("status").is_none(), "no reading without --status: {out:?}");
    }
    assert_eq!(case.sql(stored), before, "a snapshot without --status changed the statuses");
    assert_eq!(case.count("SELECT count(*) FROM status_readings"), 1);
    let out = case.run(&["drift", "--status", "--older-than", "0s", "--json"]);
    assert_eq!(out.code, 1, "the last reading still says pin_queued: {out:?}");
    let r = report(&out);
    assert_eq!(
        (r.stuck[0].peer.as_str(), r.stuck[0].status.as_str()),
        (peer0.as_str(), "pin_queued")
    );
    assert_eq!(r.stuck[0].last_snapshot, 1, "last seen by the reading of snapshot 1");

    // A peer whose GET /pins fails: the reading is recorded incomplete (exit 2) and ends nothing.
    case.faults(r#"{"errors":[{"endpoint":"pins","status":500}]}"#);
    let out = case.run(&["--timeout", "5s", "snapshot", "--status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("status reading 2 of") && out.stderr.contains("is incomplete"),
        "{out:?}"
    );
    case.clear_faults();
    assert_eq!(case.sql(stored), before, "an incomplete reading changed the statuses");
    assert_eq!(
        case.sql("SELECT id, state FROM status_readings ORDER BY id"),
        vec![vec!["1".to_string(), "complete".into()], vec!["2".into(), "incomplete".into()]]
    );

    // The next complete reading sees the pin pinned: its pin_queued interval ends there.
    let out = case.run(&["snapshot", "--status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("since reading 1: 1 changed or new, 1 ended"), "{out:?}");
    let out = case.run(&["drift", "--status", "--older-than", "0s"]);
    assert_eq!(out.code, 0, "nothing stuck any more: {out:?}");
    let history = case.sql(&format!(
        "SELECT status, first_reading, last_reading FROM status_history WHERE cid = '{cid}' ORDER BY first_reading"
    ));
    assert_eq!(
        history,
        vec![
            vec!["pin_queued".to_string(), "1".into(), "1".into()],
            vec!["pinned".into(), "3".into(), "3".into()]
        ]
    );
}

#[test]
fn watch_status_reads_the_statuses_after_every_snapshot() {
    let case = Case::start(&["--peers", "2", "--pins", "8", "--lag", "0s"]);
    let cid = case.pins()[2]["cid"].as_str().unwrap().to_string();
    steer(&case, "peer1", &cid, Some("pinning"), "");
    let out = case.run(&["watch", "--every", "1s", "--rounds", "3", "--all-peers", "--status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.matches("  statuses (reading ").count(), 6, "{out:?}");
    assert_eq!(case.count("SELECT count(*) FROM status_readings WHERE state = 'complete'"), 6);
    let out = case.run(&["drift", "--status", "--older-than", "1s", "--json"]);
    assert_eq!(out.code, 1, "pinning for three rounds a second apart: {out:?}");
    let r = report(&out);
    assert_eq!(r.stuck.len(), 1, "{:?}", r.stuck);
    assert_eq!((r.stuck[0].cid.as_str(), r.stuck[0].status.as_str()), (cid.as_str(), "pinning"));
    assert_eq!(r.stuck[0].peer, case.sim.peers[1].id);
    // Three rounds started a second apart: the first and last readings of peer1 about 2 s apart.
    assert!(r.stuck[0].stuck_seconds >= 1.5, "{:?}", r.stuck[0]);
}

/// Waits until snapshot 1 is stored and its status reading has begun (the simulator holds the
/// `GET /pins` answer back by its latency).
fn wait_reading_begun(case: &Case) {
    wait_until(PATIENCE, "the status reading to begin", || {
        case.count("SELECT count(*) FROM status_readings WHERE state = 'running'") == 1
    });
    assert_eq!(case.count("SELECT count(*) FROM snapshots WHERE state = 'complete'"), 1);
}

#[test]
fn a_status_reading_stopped_by_a_signal_or_a_kill_is_recorded_incomplete_and_changes_nothing() {
    let case = Case::start(&["--peers", "1", "--pins", "8", "--lag", "0s"]);
    let stored = "SELECT count(*) FROM pin_statuses";

    // SIGTERM while the peer holds back its statuses: the reading is recorded incomplete at once,
    // exit 2; the snapshot before it stays complete.
    case.faults(r#"{"latency_ms":1500}"#);
    let mut l = case.spawn(&["snapshot", "--status"]);
    wait_reading_begun(&case);
    l.signal("TERM");
    let out = l.wait(PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        case.sql("SELECT id, state, error FROM status_readings"),
        vec![vec!["1".to_string(), "incomplete".into(), "interrupted by a signal".into()]]
    );
    assert_eq!(case.count(stored), 0);

    // SIGKILL at the same point: the reading stays `running` until the next snapshot marks it.
    case.faults(r#"{"latency_ms":1500}"#);
    let mut l = case.spawn(&["snapshot", "--status"]);
    wait_until(PATIENCE, "snapshot 2 to be stored", || {
        case.count("SELECT count(*) FROM snapshots WHERE state = 'complete'") == 2
    });
    wait_until(PATIENCE, "the status reading to begin", || {
        case.count("SELECT count(*) FROM status_readings WHERE state = 'running'") == 1
    });
    l.child.kill().unwrap();
    l.child.wait().unwrap();
    case.clear_faults();
    let out = case.run(&["snapshot", "--status"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = case.sql("SELECT id, state, error FROM status_readings ORDER BY id");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1][1], "incomplete", "{rows:?}");
    assert!(rows[1][2].starts_with("interrupted: the ledger process stopped"), "{rows:?}");
    assert_eq!(rows[2][1..], ["complete".to_string(), "NULL".into()]);
    assert_eq!(case.count(stored), 8, "one interval per pin, opened by the complete reading");
    assert_eq!(case.count("SELECT count(*) FROM pin_statuses WHERE first_reading = 3"), 8);
}

#[test]
fn the_simulators_steered_status_shows_in_every_status_answer_until_cleared() {
    let case = Case::start(&["--peers", "3", "--pins", "6", "--lag", "0s"]);
    let cid = case.pins().iter().find(|p| p["max_depth"] == -1).unwrap()["cid"]
        .as_str()
        .unwrap()
        .to_string();
    let id1 = case.sim.peers[1].id.clone();
    let entry_on = |peer: usize, path: &str| -> Vec<Value> {
        let r = raw(case.sim.url(peer), "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.ndjson()
            .into_iter()
            .filter(|v| v["cid"] == cid.as_str())
            .map(|v| v["peer_map"][&id1].clone())
            .collect()
    };
    steer(&case, "peer1", &cid, Some("pin_error"), "context canceled");
    for (peer, path) in [
        (1, "/pins?local=true".to_string()),
        (0, "/pins".to_string()),
        (2, format!("/pins/{cid}")),
        (1, "/pins?filter=pin_error&local=true".to_string()),
    ] {
        let e = entry_on(peer, &path);
        assert_eq!(e.len(), 1, "{path} on peer{peer}: {e:?}");
        assert_eq!(
            (e[0]["status"].as_str(), e[0]["error"].as_str()),
            (Some("pin_error"), Some("context canceled")),
            "{path}"
        );
        assert_eq!(e[0]["attempt_count"], 1, "{path}");
    }
    // Other peers keep their own status.
    let r = raw(case.sim.url(0), "GET", &format!("/pins/{cid}?local=true"), &[], b"");
    assert_eq!(r.json()["peer_map"][&case.sim.peers[0].id]["status"], "pinned");
    // Back to the tracker's own; a restart clears what was steered.
    steer(&case, "peer1", &cid, None, "");
    assert_eq!(entry_on(1, "/pins?local=true")[0]["status"], "pinned");
    steer(&case, "peer1", &cid, Some("pinning"), "");
    assert_eq!(entry_on(1, "/pins?local=true")[0]["status"], "pinning");
    case.sim.control("POST", "/_sim/peers/peer1/restart", "");
    assert_eq!(entry_on(1, "/pins?local=true")[0]["status"], "pinned");
    steer(&case, "peer2", &cid, Some("pin_queued"), "");
    case.sim.control("DELETE", "/_sim/status", "");
    let r = raw(case.sim.url(2), "GET", &format!("/pins/{cid}?local=true"), &[], b"");
    assert_eq!(r.json()["peer_map"][&case.sim.peers[2].id]["status"], "pinned");
    // Refused: an unknown peer, status or CID, an unknown field.
    for body in [
        json!({"peer": "peer9", "cid": cid, "status": "pin_error"}),
        json!({"peer": "peer1", "cid": cid, "status": "stuck"}),
        json!({"peer": "peer1", "cid": cid, "status": "cluster_error"}),
        json!({"peer": "peer1", "cid": "notacid", "status": "pin_error"}),
        json!({"peer": "peer1", "cid": cid, "status": "pin_error", "extra": 1}),
    ] {
        let r = raw(case.sim.url(0), "POST", "/_sim/status", &[], body.to_string().as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
}

#[test]
fn drift_status_bad_input_exits_2() {
    let case = Case::start(&["--peers", "1", "--pins", "3"]);
    let expect = |args: &[&str], says: &str| {
        let out = case.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(says), "{args:?} should say {says:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    };
    expect(&["drift", "--status"], "there is no ledger at");
    assert!(!case.db().exists(), "drift --status never creates a ledger");
    let out = case.run(&["snapshot"]);
    assert_eq!(out.code, 0, "{out:?}");
    expect(&["drift", "--status"], "the ledger holds no pin statuses");
    // `ledger drift`'s version listing flags do not apply to --status.
    expect(&["drift", "--status", "--rounds", "3"], "cannot be used with");
    expect(&["drift", "--status", "--stale-after", "1h"], "cannot be used with");
    expect(&["drift", "--status", "--older-than", "-1s"], "durations cannot be negative");
    expect(&["drift", "--status", "--older-than", "ten minutes"], "--older-than");
    expect(&["drift", "--status", "--json", "--csv"], "cannot be used with");
}

// ------------------------------------------------------------------------------------------------
// The real cluster

/// How long any awaited condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(120);

/// Each peer's own status of `cid` (`GET /pins/{cid}?local=true`): (status, error).
fn local_status(rc: &RealCluster, peer: usize, cid: &str) -> (String, String) {
    let r = raw(rc.url(peer), "GET", &format!("/pins/{cid}?local=true"), &rc.auth(), b"");
    assert_eq!(r.status, 200, "status of {cid} on peer{peer}: {}", r.text());
    let v = r.json();
    let entry = &v["peer_map"][&rc.peers[peer].id];
    let text = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
    (text("status"), text("error"))
}

/// Polls `f` every 200 ms (each poll asks the peers' trackers) until it holds.
fn wait_real(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out after {PATIENCE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ledger_real(rc: &RealCluster, db: &std::path::Path, args: &[&str]) -> Out {
    let o = ledger()
        .args(["--db", db.to_str().unwrap(), "--cluster", &rc.urls()])
        .args(args)
        .timeout(PATIENCE)
        .output()
        .expect("run ledger");
    Out::from(o)
}

#[test]
fn real_a_pin_no_kubo_can_fetch_is_listed_stuck_on_the_peers_it_was_allocated_to() {
    if !available(V1_1_6) {
        return;
    }
    let opts = RealOptions { pin_timeout: Some("15s".into()), ..RealOptions::new(V1_1_6, 3) };
    let rc = RealCluster::start(opts);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let cid = cid_of(&format!("ledger status test: content nobody has {}", nanos.as_nanos()));
    let r = raw(
        rc.url(0),
        "POST",
        &format!("/pins/{cid}?name=unfetchable&replication-min=2&replication-max=2"),
        &rc.auth(),
        b"",
    );
    assert_eq!(r.status, 200, "pin: {}", r.text());
    let allocated: Vec<String> = r.json()["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().into())
        .collect();
    assert_eq!(allocated.len(), 2, "{allocated:?}");
    let on: Vec<usize> = (0..3).filter(|&i| allocated.contains(&rc.peers[i].id)).collect();
    let off = (0..3).find(|i| !on.contains(i)).unwrap();
    let started = Instant::now();

    // While the allocated peers try: pin_queued or pinning, listed with --older-than 0s.
    wait_real("both allocated peers to hold the pin", || {
        on.iter()
            .all(|&i| matches!(local_status(&rc, i, &cid).0.as_str(), "pin_queued" | "pinning"))
    });
    let out = ledger_real(&rc, &db, &["snapshot", "--all-peers", "--status"]);
    assert_eq!(out.code, 0, "{out:?}");
    let trying = started.elapsed();
    let out = ledger_real(&rc, &db, &["drift", "--status", "--older-than", "0s", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let r = report(&out);
    let mut listed: Vec<(&str, &str, &str)> =
        r.stuck.iter().map(|s| (s.peer.as_str(), s.cid.as_str(), s.status.as_str())).collect();
    listed.sort();
    let mut want: Vec<&str> = on.iter().map(|&i| rc.peers[i].id.as_str()).collect();
    want.sort();
    assert_eq!(listed.len(), 2, "{listed:?} (read {trying:?} after the pin)");
    for ((peer, c, status), id) in listed.iter().zip(&want) {
        assert_eq!((*peer, *c), (*id, cid.as_str()));
        assert!(matches!(*status, "pin_queued" | "pinning"), "{listed:?}");
    }

    // The pin timeout gives it up: pin_error on both, with the cluster's error text.
    wait_real("both allocated peers to report pin_error", || {
        on.iter().all(|&i| local_status(&rc, i, &cid).0 == "pin_error")
    });
    let errors: Vec<String> = on.iter().map(|&i| local_status(&rc, i, &cid).1).collect();
    eprintln!(
        "pin_error {:.1}s after the pin; errors: {errors:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(errors.iter().all(|e| !e.is_empty()), "{errors:?}");
    for _ in 0..2 {
        let out = ledger_real(&rc, &db, &["snapshot", "--all-peers", "--status"]);
        assert_eq!(out.code, 0, "{out:?}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    let out = ledger_real(&rc, &db, &["drift", "--status", "--older-than", "1s", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let r = report(&out);
    let mut listed: Vec<&Stuck> = r.stuck.iter().collect();
    listed.sort_by(|a, b| a.peer.cmp(&b.peer));
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (s, id) in listed.iter().zip(&want) {
        assert_eq!(
            (s.peer.as_str(), s.cid.as_str(), s.status.as_str()),
            (*id, cid.as_str(), "pin_error")
        );
        let i = on.iter().copied().find(|&i| rc.peers[i].id == s.peer).unwrap();
        assert_eq!(s.error, errors[on.iter().position(|&j| j == i).unwrap()], "{s:?}");
        assert!(s.stuck_seconds >= 1.0, "{s:?}");
    }
    // The peer it was not allocated to holds it as `remote`, never stuck.
    let off_id = &rc.peers[off].id;
    assert!(r.stuck.iter().all(|s| &s.peer != off_id));
    let remote = sql_rows(
        &db,
        &format!(
            "SELECT DISTINCT status FROM status_history WHERE cid = '{cid}' AND peer = '{off_id}'"
        ),
    );
    assert_eq!(remote, vec![vec!["remote".to_string()]]);
    assert_eq!(local_status(&rc, off, &cid).0, "remote");

    // Unpinned, the pin leaves every peer's listing: its intervals end, nothing is stuck.
    let r = raw(rc.url(0), "DELETE", &format!("/pins/{cid}"), &rc.auth(), b"");
    assert_eq!(r.status, 200, "unpin: {}", r.text());
    wait_real("every peer to drop the pin", || {
        (0..3).all(|i| rc.pinset(i).iter().all(|p| p["cid"] != cid.as_str()))
    });
    let out = ledger_real(&rc, &db, &["snapshot", "--all-peers", "--status"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = ledger_real(&rc, &db, &["drift", "--status", "--older-than", "0s"]);
    assert_eq!(out.code, 0, "nothing stuck once unpinned: {out:?}");
    let open = sql_rows(
        &db,
        &format!("SELECT count(*) FROM status_history WHERE cid = '{cid}' AND current"),
    );
    assert_eq!(open, vec![vec!["0".to_string()]], "every interval of the pin ended");
    rc.assert_loopback_only();
}
