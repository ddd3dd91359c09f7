//! The life of a writing run (issue 11, point 2): `ledger tag`, `restore` and `repin`, each stopped
//! at a chosen point — by SIGTERM or SIGINT, by an error, by the cluster going away — and the state
//! each leaves in `runs` and `repins`. A signal ends the command with exit 2 and the run
//! `interrupted` (finished, not left `running`); a re-pin it left `pending` is settled by the next
//! run, which reads the pin; an error records `failed`; a re-pin that fails is `failed` for `ledger
//! repin` and `attention` for a restore.
//!
//! The chosen point is held open long enough to act on: a tag run by its `--settle`, a re-pin by the
//! simulator's latency fault, which delays every request by the latency in force when the request
//! arrives. The tests wait for the point on the ledger's database (read-only), never with a fixed
//! sleep, and kill every process they start (the simulator and the ledger are killed when dropped).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::case::*;
use crate::util::*;

/// The metadata every test sets.
const ORG: &str = "lifecycle";

/// What a command stopped by a signal must show: exit 2 and a message saying so.
fn assert_signalled(out: &Out, what: &str) {
    assert_eq!(out.code, 2, "{what}: exit code: {out:?}");
    assert!(out.stderr.contains("interrupted by a signal"), "{what}: stderr: {out:?}");
}

/// What a command that failed with an error must show: exit 2, and not the signal's message.
fn assert_errored(out: &Out, what: &str) {
    assert_eq!(out.code, 2, "{what}: exit code: {out:?}");
    assert!(out.stderr.contains("ledger: error:"), "{what}: stderr: {out:?}");
    assert!(!out.stderr.contains("interrupted"), "{what}: stderr: {out:?}");
}

fn run_row(id: i64, kind: &str, state: &str) -> Vec<String> {
    vec![id.to_string(), kind.to_string(), state.to_string(), "finished".to_string()]
}

/// Faults that hold every request `ms` milliseconds and answer the next `posts` re-pins 500. The
/// simulator looks at its faults once a request's latency is over, so a POST held in flight applies
/// if the 500 is gone by then: [`answered`] waits until every one has had its 500.
fn held(ms: u64, posts: usize) -> String {
    format!(r#"{{"latency_ms":{ms},"errors":[{{"endpoint":"pin","status":500,"count":{posts}}}]}}"#)
}

/// Waits until the 500s of [`held`] are spent: every held POST was answered 500 and never applied.
fn answered(c: &Case) {
    wait_until(PATIENCE, "the held re-pins answered 500", || {
        c.sim.control("GET", "/_sim/faults", "")["errors"].as_array().is_some_and(|e| e.is_empty())
    });
}

/// The CID of a pin as the cluster serves it.
fn cid(p: &Value) -> String {
    p["cid"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------------------------------------------
// tag

/// SIGTERM and SIGINT while a tag run settles its first pass (`--settle 30s`): exit 2 at once, the
/// run `interrupted` and finished, nothing pending. The next run finds every target tagged and
/// records `done`, and leaves the interrupted run as it was recorded.
#[test]
fn tag_stopped_by_a_signal_while_settling_is_interrupted() {
    for sig in ["TERM", "INT"] {
        let c = Case::start(&["--peers", "2", "--pins", "6", "--seed", "11", "--lag", "0"]);
        let started = Instant::now();
        let mut tag = c.spawn(&["tag", "--org", ORG, "--settle", "30s", "--probe-every", "1s"]);
        wait_until(PATIENCE, "the first pass recorded while the run is running", || {
            c.count(
                "SELECT count(*) FROM passes p JOIN runs r ON r.id = p.run_id
                 WHERE r.state = 'running' AND p.pass = 1",
            ) == 1
        });
        tag.assert_alive("the signal");
        tag.signal(sig);
        let out = tag.wait(Duration::from_secs(15));
        assert_signalled(&out, &format!("tag, SIG{sig}"));
        assert!(started.elapsed() < Duration::from_secs(30), "SIG{sig}: the settle was not cut");
        assert_eq!(c.runs(), [run_row(1, "tag", "interrupted")], "SIG{sig}");
        assert!(c.count("SELECT count(*) FROM repins") > 0, "SIG{sig}: the pass re-pinned nothing");
        assert_eq!(
            c.sql("SELECT count(*) FROM repins WHERE status <> 'sent'"),
            [["0"]],
            "SIG{sig}: every re-pin of the pass was answered"
        );
        // No verification of pass 1 began: the run stopped inside its settle.
        assert_eq!(c.sql("SELECT count(*) FROM snapshots WHERE run_id = 1 AND pass = 1"), [["0"]]);
        let finished_at = c.sql("SELECT finished_at FROM runs WHERE id = 1");

        let out = c.run(&["tag", "--org", ORG, "--settle", "100ms", "--json"]);
        assert_eq!(out.code, 0, "SIG{sig}: the next run: {out:?}");
        assert_eq!(out.json()["converged"], true, "{out:?}");
        assert_eq!(
            c.runs(),
            [run_row(1, "tag", "interrupted"), run_row(2, "tag", "done")],
            "SIG{sig}"
        );
        assert_eq!(
            c.sql("SELECT finished_at FROM runs WHERE id = 1"),
            finished_at,
            "SIG{sig}: the interrupted run was recorded again by the next one"
        );
        c.assert_none_running(&format!("tag, SIG{sig}"));
    }
}

/// The plan's snapshot of the write peer is cut short (a stream cut): the run cannot plan, and
/// records `failed`.
#[test]
fn tag_whose_plan_snapshot_is_incomplete_fails() {
    let c = Case::start(&["--peers", "1", "--pins", "10", "--seed", "12", "--lag", "0"]);
    c.faults(r#"{"stream_cut":{"after":3,"mode":"trailer","count":1}}"#);
    let out = c.run(&["tag", "--org", ORG, "--settle", "100ms"]);
    assert_errored(&out, "tag");
    assert!(out.stderr.contains("cannot plan"), "{out:?}");
    assert_eq!(c.runs(), [run_row(1, "tag", "failed")]);
    assert_eq!(
        c.sql("SELECT count(*) FROM repins"),
        [["0"]],
        "nothing is re-pinned without a plan"
    );
    c.assert_none_running("tag");
}

/// The simulator process stops while a tag run settles: verifying the pass fails, and the run
/// records `failed` (not `interrupted`: no signal stopped it).
#[test]
fn tag_whose_cluster_goes_away_while_settling_fails() {
    let mut c = Case::start(&["--peers", "1", "--pins", "6", "--seed", "13", "--lag", "0"]);
    let mut tag = c.spawn(&["tag", "--org", ORG, "--settle", "2s", "--probe-every", "0s"]);
    wait_until(PATIENCE, "the first pass recorded", || {
        c.count("SELECT count(*) FROM passes WHERE pass = 1") == 1
    });
    c.stop_sim();
    tag.assert_alive("the verification");
    let out = tag.wait(PATIENCE);
    assert_errored(&out, "tag");
    assert_eq!(c.runs(), [run_row(1, "tag", "failed")], "{out:?}");
    c.assert_none_running("tag");
}

// ------------------------------------------------------------------------------------------------
// repin

/// SIGTERM while the POST of `ledger repin` is in flight (held by latency, then answered 500: it
/// never applies): exit 2, the run `interrupted` and finished, the re-pin left `pending`. The next
/// run reconciles it by reading the pin (`not-applied`), then re-pins and records `done`.
#[test]
fn repin_stopped_by_sigterm_mid_request_is_interrupted_and_reconciled() {
    let c = Case::start(&["--peers", "1", "--pins", "3", "--seed", "21", "--lag", "0"]);
    let target = cid(&c.pins()[0]);
    let meta = format!("org={ORG}");
    let writes = c.writes();
    // Each request is held 1 s (/id, the pin read before the POST), and the POST answered 500.
    c.faults(&held(1000, 1));
    let mut repin = c.spawn(&["repin", &target, "--meta", &meta]);
    wait_until(PATIENCE, "the re-pin's intent recorded", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'pending'") == 1
    });
    // From here on every request is held far longer than the signal takes to arrive.
    c.faults(&held(3000, 1));
    repin.assert_alive("the signal");
    repin.signal("TERM");
    let out = repin.wait(Duration::from_secs(15));
    assert_signalled(&out, "repin");
    assert_eq!(c.runs(), [run_row(1, "repin", "interrupted")]);
    assert_eq!(c.sql("SELECT id, status, outcome FROM repins"), [["1", "pending", "NULL"]]);

    answered(&c);
    c.clear_faults();
    assert_eq!(c.writes(), writes, "the interrupted re-pin was applied");
    let out = c.run(&["--timeout", "2s", "repin", &target, "--meta", &meta]);
    assert_eq!(out.code, 0, "the next run: {out:?}");
    assert_eq!(c.runs(), [run_row(1, "repin", "interrupted"), run_row(2, "repin", "done")]);
    let rows = c.sql(
        "SELECT id, run_id, status, outcome, coalesce(error LIKE '%reconciled%', 0) FROM repins",
    );
    assert_eq!(
        rows,
        [["1", "1", "failed", "not-applied", "1"], ["2", "2", "sent", "applied", "0"]],
        "the pending re-pin reconciled by the next run, which then re-pins"
    );
    assert_eq!(c.pin(&target)["metadata"]["org"], ORG);
    c.assert_none_running("repin");
}

/// SIGTERM while the POST of `ledger repin` is held in flight, and this time the cluster takes it
/// once its latency is over, after the process is gone. The next run, started at once, reads the
/// pin until it shows or until `--timeout` after the request was sent: it records the re-pin
/// `applied` (not `not-applied` from a read made before the request landed) and sends no second
/// one.
#[test]
fn a_repin_that_lands_after_its_process_stopped_is_recorded_applied() {
    let c = Case::start(&["--peers", "1", "--pins", "3", "--seed", "22", "--lag", "0"]);
    let target = cid(&c.pins()[0]);
    let meta = format!("org={ORG}");
    c.faults(r#"{"latency_ms":1500}"#);
    let mut repin = c.spawn(&["repin", &target, "--meta", &meta]);
    wait_until(PATIENCE, "the re-pin's intent recorded", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'pending'") == 1
    });
    repin.assert_alive("the signal");
    repin.signal("TERM");
    assert_signalled(&repin.wait(Duration::from_secs(15)), "repin");
    c.clear_faults();
    let out = c.run(&["--timeout", "10s", "repin", &target, "--meta", &meta]);
    assert_eq!(out.code, 0, "the next run: {out:?}");
    assert_eq!(c.pin(&target)["metadata"]["org"], ORG, "the held re-pin landed");
    let rows = c.sql(
        "SELECT id, run_id, status, outcome, coalesce(error LIKE '%reconciled%', 0) FROM repins",
    );
    assert_eq!(rows, [["1", "1", "sent", "applied", "1"]], "settled as applied, not sent again");
    assert_eq!(c.runs(), [run_row(1, "repin", "interrupted"), run_row(2, "repin", "done")]);
}

/// The simulator process stops while the POST of `ledger repin` is held: the re-pin fails (no
/// answer, the pin unreadable after it), and the run records `failed`; exit 2.
#[test]
fn repin_whose_cluster_goes_away_mid_request_fails() {
    let mut c = Case::start(&["--peers", "1", "--pins", "3", "--seed", "22", "--lag", "0"]);
    let target = cid(&c.pins()[0]);
    c.faults(r#"{"latency_ms":1000}"#);
    let mut repin = c.spawn(&["repin", &target, "--meta", &format!("org={ORG}")]);
    wait_until(PATIENCE, "the re-pin's intent recorded", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'pending'") == 1
    });
    // The POST and the read after it are held; the simulator goes away under them.
    c.faults(r#"{"latency_ms":10000}"#);
    c.stop_sim();
    repin.assert_alive("the answer");
    let out = repin.wait(PATIENCE);
    assert_errored(&out, "repin");
    assert!(out.stderr.contains(&format!("the re-pin of {target} was failed")), "{out:?}");
    assert_eq!(c.runs(), [run_row(1, "repin", "failed")]);
    assert_eq!(
        c.sql("SELECT status, outcome, http_status FROM repins"),
        [["failed", "failed", "NULL"]]
    );
    c.assert_none_running("repin");
}

/// The cluster answers the POST of `ledger repin` with a 500: the run records `failed`, the re-pin
/// `failed` with the status; exit 2. A clean run after it records `done`.
#[test]
fn repin_answered_500_fails_and_a_clean_one_is_done() {
    let c = Case::start(&["--peers", "1", "--pins", "3", "--seed", "23", "--lag", "0"]);
    let target = cid(&c.pins()[0]);
    let meta = format!("org={ORG}");
    c.faults(r#"{"errors":[{"endpoint":"pin","status":500,"count":1}]}"#);
    let out = c.run(&["repin", &target, "--meta", &meta]);
    assert_errored(&out, "repin");
    assert_eq!(c.runs(), [run_row(1, "repin", "failed")]);
    assert_eq!(
        c.sql("SELECT status, outcome, http_status FROM repins"),
        [["failed", "failed", "500"]]
    );

    let out = c.run(&["repin", &target, "--meta", &meta]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(c.runs(), [run_row(1, "repin", "failed"), run_row(2, "repin", "done")]);
    assert_eq!(c.sql("SELECT status, outcome FROM repins WHERE run_id = 2"), [["sent", "applied"]]);
    c.assert_none_running("repin");
}

// ------------------------------------------------------------------------------------------------
// restore

/// A one-peer simulator of `pins` pins whose ledger holds a complete snapshot (1), then a second
/// (2) after the first `lose` pins were re-pinned bare, losing their names: `restore --from 1`
/// re-pins those. Returns their CIDs.
fn restore_case(seed: &str, pins: usize, lose: usize) -> (Case, Vec<String>) {
    let c =
        Case::start(&["--peers", "1", "--pins", &pins.to_string(), "--seed", seed, "--lag", "0"]);
    assert_eq!(c.run(&["snapshot"]).code, 0, "the first snapshot");
    let lost: Vec<String> = c
        .pins()
        .iter()
        .filter(|p| p["name"] != "" && p["expire_at"] == ZERO_TIME)
        .take(lose)
        .map(cid)
        .collect();
    assert_eq!(lost.len(), lose, "pins with a name to lose: {:?}", c.pins());
    for p in &lost {
        let r = raw(c.sim.url(0), "POST", &format!("/pins/{p}"), &[], b"");
        assert_eq!(r.status, 200, "a bare re-pin of {p}: {}", r.text());
        assert_eq!(c.pin(p)["name"], "", "the bare re-pin wiped the name of {p}");
    }
    assert_eq!(c.run(&["snapshot"]).code, 0, "the second snapshot");
    (c, lost)
}

/// SIGINT while a restore's two POSTs are in flight (held by latency, then answered 500: never
/// applied): exit 2, the run `interrupted` and finished, both re-pins left `pending`.
/// The next restore reconciles both (`not-applied`), restores both and records `done`.
#[test]
fn restore_stopped_by_sigint_mid_request_is_interrupted_and_reconciled() {
    let (c, lost) = restore_case("31", 6, 2);
    let writes = c.writes();
    c.faults(&held(1000, 2));
    let mut restore = c.spawn(&["restore", "--from", "1"]);
    wait_until(PATIENCE, "both re-pins' intents recorded", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'pending'") == 2
    });
    c.faults(&held(3000, 2));
    restore.assert_alive("the signal");
    restore.signal("INT");
    let out = restore.wait(Duration::from_secs(15));
    assert_signalled(&out, "restore");
    assert_eq!(c.runs(), [run_row(1, "restore", "interrupted")]);
    assert_eq!(c.count("SELECT count(*) FROM repins WHERE status = 'pending'"), 2);

    answered(&c);
    c.clear_faults();
    assert_eq!(c.writes(), writes, "an interrupted re-pin was applied");
    let out = c.run(&["--timeout", "2s", "restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 0, "the next restore: {out:?}");
    let mut restored: Vec<String> = serde_json::from_value(out.json()["restored"].clone()).unwrap();
    restored.sort();
    let mut want = lost.clone();
    want.sort();
    assert_eq!(restored, want, "{out:?}");
    assert_eq!(c.runs(), [run_row(1, "restore", "interrupted"), run_row(2, "restore", "done")]);
    let rows =
        c.sql("SELECT run_id, status, outcome, coalesce(error LIKE '%reconciled%', 0) FROM repins ORDER BY id");
    assert_eq!(
        rows,
        [
            ["1", "failed", "not-applied", "1"],
            ["1", "failed", "not-applied", "1"],
            ["2", "sent", "applied", "0"],
            ["2", "sent", "applied", "0"]
        ],
        "both pending re-pins reconciled, then restored by the next run"
    );
    c.assert_none_running("restore");
}

/// One of a restore's two POSTs is answered 500: that re-pin is `failed`, the other applied, and
/// the run records `attention` (exit 1) with the failure in its report. A clean restore after it
/// records `done`.
#[test]
fn restore_with_a_failed_repin_needs_attention_and_a_clean_one_is_done() {
    let (c, lost) = restore_case("32", 6, 2);
    c.faults(r#"{"errors":[{"endpoint":"pin","status":500,"count":1}]}"#);
    let out = c.run(&["restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let report = out.json();
    assert_eq!(report["failed"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(report["restored"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(c.runs(), [run_row(1, "restore", "attention")]);
    let rows = c.sql("SELECT status, outcome, http_status FROM repins ORDER BY status");
    assert_eq!(rows, [["failed", "failed", "500"], ["sent", "applied", "200"]]);
    c.assert_none_running("restore");

    // Once a snapshot has seen the restored pin, the same restore puts back the failed one.
    assert_eq!(c.run(&["snapshot"]).code, 0);
    let out = c.run(&["restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let failed = &report["failed"][0]["cid"];
    assert_eq!(out.json()["restored"], serde_json::json!([failed]), "{out:?}");
    assert!(lost.iter().any(|p| p == failed));
    assert_eq!(c.runs(), [run_row(1, "restore", "attention"), run_row(2, "restore", "done")]);
    c.assert_none_running("restore");
}
