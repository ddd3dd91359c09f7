//! `ledger tag --org ORG`: the migration over a seeded simulator (issue 4, first points); the
//! `…::real` tests run the same bodies on a real v1.1.6 cluster.

use std::collections::BTreeMap;
use std::process::Output;

use serde_json::Value;

use crate::util::*;

fn urls(sim: &impl PeerUrls) -> String {
    sim.all_urls()
}

fn tag(dir: &tempfile::TempDir, sim: &impl PeerUrls, args: &[&str]) -> Output {
    tag_at(dir, &urls(sim), args)
}

/// `ledger tag` with `--cluster CLUSTER`.
fn tag_at(dir: &tempfile::TempDir, cluster: &str, args: &[&str]) -> Output {
    ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", cluster, "tag"])
        .args(args)
        .output()
        .unwrap()
}

fn pinset(sim: &impl PeerUrls, peer: usize) -> BTreeMap<String, Value> {
    let r = raw(sim.peer_url(peer), "GET", "/allocations?filter=all", &[], b"");
    r.ndjson().into_iter().map(|p| (p["cid"].as_str().unwrap().to_string(), p)).collect()
}

fn org(p: &Value) -> Option<&str> {
    p["metadata"]["org"].as_str().filter(|o| !o.is_empty())
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What a migration to `hrdag` must leave on every peer: each pin that was unowned in `before`
/// tagged `hrdag` with every other option as it was (its timestamp aside), every other pin exactly
/// as it was.
fn check_migrated(c: &Cluster, before: &BTreeMap<String, Value>, what: &str) {
    c.wait_converged(std::time::Duration::from_secs(60));
    for peer in 0..c.len() {
        let after = pinset(c, peer);
        assert_eq!(after.len(), before.len(), "{what}: pins on peer{peer}");
        for (cid, b) in before {
            let a = &after[cid];
            if org(b).is_none() {
                assert_eq!(org(a), Some("hrdag"), "{what}: {cid} on peer{peer}");
                for f in PIN_FIELDS {
                    if f != "metadata" && f != "timestamp" {
                        assert_eq!(a[f], b[f], "{what}: {f} of {cid} on peer{peer}");
                    }
                }
                let mut want = b["metadata"].as_object().cloned().unwrap_or_default();
                want.insert("org".into(), "hrdag".into());
                assert_eq!(a["metadata"], Value::Object(want), "{what}: {cid}");
            } else {
                assert_eq!(a, b, "{what}: a pin that was not a target changed: {cid}");
            }
        }
    }
}

/// On both backends, over pins of every kind: every unowned pin is tagged and keeps every other
/// option, field by field; no other organisation's pin is touched; the run is on the record.
fn tags_every_unowned_pin_keeps_everything_else_and_touches_no_other_org(b: Backend) {
    let Some(sim) = Cluster::start(b, 3) else { return };
    sim.seed(&every_kind(400, "tag", &sim.ids()));
    let dir = tempfile::tempdir().unwrap();
    let before = pinset(&sim, 0);
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", b.settle(), "--json"]);
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r}");
    let others = before.values().filter(|p| org(p).is_some_and(|o| o != "hrdag")).count();
    assert!(others > 0, "the seed holds other organisations' pins");
    // Pins of other organisations are left alone and listed; they are no conflict: exit 0, `done`.
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["plan"]["owned_by_others"].as_array().unwrap().len(), others, "{r}");
    assert_eq!(r["plan"]["conflicts"].as_array().unwrap().len(), 0, "{r}");
    let targets: Vec<&String> = before.keys().filter(|c| org(&before[*c]).is_none()).collect();
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), targets.len());
    check_migrated(&sim, &before, "after the run");
    // Every re-pin is on the record with the version before and after.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let (n, applied, with_both): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(outcome = 'applied'), sum(before_digest IS NOT NULL AND after_digest IS NOT NULL)
             FROM repins WHERE status != 'refused'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (n, applied, with_both),
        (targets.len() as i64, targets.len() as i64, targets.len() as i64)
    );
    // The plan is on the record, pin by pin, other organisations' pins with their owner.
    let (t, c): (i64, i64) = conn
        .query_row(
            "SELECT sum(class = 'target'), sum(class = 'conflict' AND owner IS NOT NULL) FROM run_targets WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((t, c), (targets.len() as i64, others as i64));
    let state: String =
        conn.query_row("SELECT state FROM runs WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(state, "done");
    let probes: i64 = conn.query_row("SELECT count(*) FROM probes", [], |r| r.get(0)).unwrap();
    assert!(probes >= 3, "one probe per peer and pass");
    // A second run finds nothing left to do.
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--json"]);
    let r = report(&out);
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 0);
    assert_eq!(r["converged"], true);
}

crate::on_both!(tags_every_unowned_pin_keeps_everything_else_and_touches_no_other_org);

#[test]
fn dry_run_sends_nothing_and_only_restricts_targets() {
    let sim = Sim::start(&["--peers", "2", "--pins", "200", "--seed", "5", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let writes = sim.state()["writes"].as_u64().unwrap();
    let out = tag(&dir, &sim, &["--org", "hrdag", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!report(&out)["plan"]["targets"].as_array().unwrap().is_empty());
    assert_eq!(sim.state()["writes"].as_u64().unwrap(), writes, "a dry run wrote to the cluster");
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let (dry, planned): (i64, i64) = conn
        .query_row(
            "SELECT r.dry_run, (SELECT count(*) FROM run_targets WHERE run_id = r.id AND class = 'target') FROM runs r",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(dry, 1, "recorded as a dry run");
    assert!(planned > 0, "the dry run's plan is recorded");
    drop(conn);

    let before = pinset(&sim, 0);
    let unowned: Vec<&String> =
        before.keys().filter(|c| org(&before[*c]).is_none()).take(3).collect();
    let list = dir.path().join("only.txt");
    std::fs::write(
        &list,
        format!(
            "# three of them\n{}\n\n",
            unowned.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        ),
    )
    .unwrap();
    let out = tag(
        &dir,
        &sim,
        &["--org", "hrdag", "--settle", "100ms", "--only", list.to_str().unwrap(), "--json"],
    );
    let r = report(&out);
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 3, "{r}");
    let after = pinset(&sim, 0);
    let tagged = after.values().filter(|p| org(p) == Some("hrdag")).count();
    let was = before.values().filter(|p| org(p) == Some("hrdag")).count();
    assert_eq!(tagged, was + 3);
    // A bad --only file is a clear error.
    std::fs::write(&list, "not-a-cid\n").unwrap();
    let out = tag(&dir, &sim, &["--org", "hrdag", "--only", list.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a CID"));
}

#[test]
fn reassign_from_is_the_only_way_to_retag_another_org() {
    let sim = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "8", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let before = pinset(&sim, 0);
    let amnesty = before.values().filter(|p| org(p) == Some("amnesty")).count();
    assert!(amnesty > 0);
    let out = tag(
        &dir,
        &sim,
        &["--org", "hrdag", "--reassign-from", "amnesty", "--settle", "100ms", "--json"],
    );
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    let after = pinset(&sim, 0);
    assert_eq!(after.values().filter(|p| org(p) == Some("amnesty")).count(), 0);
    for (cid, b) in &before {
        if let Some(o) = org(b).filter(|o| *o != "amnesty" && *o != "hrdag") {
            assert_eq!(org(&after[cid]), Some(o), "{cid} of {o} was retagged");
        }
    }
}

/// A cluster is its members, not the URLs given: with `--cluster` naming one of four peers, the run
/// tags and verifies that peer, says which three members it never read and exits 1 (`attention`),
/// never "every peer". Named all four, it says "every peer" and exits 0. A write peer that cannot
/// list the members (`GET /peers` answering 500) leaves the run unable to say it read them all.
#[test]
fn a_run_that_read_some_members_says_which_and_never_every_peer() {
    let sim = Sim::start(&["--peers", "4", "--pins", "80", "--seed", "14", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let one = tag_at(&dir, &sim.peers[0].url, &["--org", "hrdag", "--settle", "0s", "--json"]);
    let r = report(&one);
    assert_eq!(one.status.code(), Some(1), "{r}");
    assert_eq!(r["converged"], true, "{r}");
    assert_eq!(r["members"], 4, "{r}");
    let unread: Vec<&str> =
        r["not_read"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = sim.peers[1..].iter().map(|p| p.id.as_str()).collect();
    assert_eq!(unread, want, "{r}");
    let text = tag_at(&dir, &sim.peers[0].url, &["--org", "hrdag", "--settle", "0s"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("verified 1 of 4 cluster peers; not read: "), "{text}");
    assert!(text.contains("(no REST address given)") && !text.contains("every peer"), "{text}");
    let all = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s"]);
    let all_text = String::from_utf8_lossy(&all.stdout).to_string();
    assert_eq!(all.status.code(), Some(0), "{all_text}");
    assert!(all_text.contains("converged: every peer shows all"), "{all_text}");
    sim.control("POST", "/_sim/faults", r#"{"errors":[{"endpoint":"peers","status":500}]}"#);
    let blind = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--timeout", "2s"]);
    let blind_text = String::from_utf8_lossy(&blind.stdout).to_string();
    assert_eq!(blind.status.code(), Some(1), "{blind_text}");
    assert!(blind_text.contains("could not list the cluster's members"), "{blind_text}");
    let states = sql_rows(&dir.path().join("ledger.db"), "SELECT state FROM runs ORDER BY id");
    assert_eq!(states, [["attention"], ["attention"], ["done"], ["attention"]]);
}

/// `--only` names the pins to tag: one of them that another organisation owns is a conflict, left
/// alone, and the run needs attention (exit 1); the same run without it is `done` (exit 0).
#[test]
fn an_only_pin_another_organisation_owns_is_a_conflict() {
    let sim = Sim::start(&["--peers", "2", "--pins", "60", "--seed", "9", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let pins = sorted_pinset(sim.url(0), &[]);
    let unowned: Vec<&str> =
        pins.iter().filter(|p| org(p).is_none()).map(|p| p["cid"].as_str().unwrap()).collect();
    let owned =
        pins.iter().find(|p| org(p).is_some_and(|o| o != "hrdag")).expect("another org's pin");
    let owned_cid = owned["cid"].as_str().unwrap();
    let list = |cids: &[&str]| {
        let f = dir.path().join("only.txt");
        std::fs::write(&f, cids.join("\n")).unwrap();
        f.to_str().unwrap().to_string()
    };
    let only = list(&[unowned[0], unowned[1], owned_cid]);
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--only", &only, "--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["converged"], true, "{r}");
    assert_eq!(
        r["plan"]["conflicts"],
        serde_json::json!([[owned_cid, org(owned).unwrap()]]),
        "{r}"
    );
    assert_eq!(r["plan"]["owned_by_others"].as_array().unwrap().len(), 0, "{r}");
    let after = sorted_pinset(sim.url(0), &[]);
    let now = after.iter().find(|p| p["cid"] == owned_cid).unwrap();
    assert_eq!(now["metadata"], owned["metadata"], "the conflict was left alone");
    let text = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--only", &only]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("conflicts (asked for with --only"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let only = list(&[unowned[2]]);
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--only", &only, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let states = sql_rows(&dir.path().join("ledger.db"), "SELECT state FROM runs ORDER BY id");
    assert_eq!(states, [["attention"], ["attention"], ["done"]]);
}

#[test]
fn a_paused_peer_leaves_stragglers_and_exit_1() {
    let sim = Sim::start(&["--peers", "3", "--pins", "100", "--seed", "3", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let out =
        tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms", "--max-passes", "2", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["converged"], false);
    let stragglers = r["stragglers"].as_object().unwrap();
    assert_eq!(stragglers.len(), 1, "{r}");
    assert_eq!(stragglers.keys().next().unwrap(), &sim.peers[2].id);
    assert_eq!(
        stragglers[&sim.peers[2].id].as_array().unwrap().len(),
        r["plan"]["targets"].as_array().unwrap().len()
    );
    let text = tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms", "--max-passes", "1"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("NOT converged"));
    // Once the peer is back, a further run converges without re-pinning anything.
    sim.control("POST", "/_sim/peers/peer2/resume", "");
    sim.control("POST", "/_sim/rebroadcast", "");
    sim.wait_converged(std::time::Duration::from_secs(10));
    let r = report(&tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--json"]));
    assert_eq!(r["converged"], true, "{r}");
}

#[test]
fn a_second_run_on_the_same_ledger_is_refused() {
    let sim = Sim::start(&["--peers", "1", "--pins", "10", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let lock = std::fs::File::create(dir.path().join("ledger.db.run.lock")).unwrap();
    lock.lock().unwrap();
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("another tag, restore or repin run is active")
    );
    drop(lock);
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s"]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The simulator's pin set on peer 0 reduced to what a tag run may change: (cid → org).
fn orgs(sim: &Sim) -> BTreeMap<String, Option<String>> {
    pinset(sim, 0).into_iter().map(|(c, p)| (c.clone(), org(&p).map(str::to_string))).collect()
}

#[test]
fn killed_at_random_moments_a_rerun_ends_as_an_uninterrupted_run() {
    // The expected end state, from an uninterrupted run on an identical cluster.
    let args = ["--peers", "2", "--pins", "600", "--seed", "31", "--lag", "0..20ms"];
    let expected = {
        let sim = Sim::start(&args);
        let dir = tempfile::tempdir().unwrap();
        let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms"]);
        assert!(out.status.code().is_some_and(|c| c <= 1));
        sim.wait_converged(std::time::Duration::from_secs(10));
        orgs(&sim)
    };
    for trial in 0..10u64 {
        let sim = Sim::start(&args);
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(bin())
            .current_dir(dir.path())
            .args([
                "--db",
                "ledger.db",
                "--cluster",
                &urls(&sim),
                "tag",
                "--org",
                "hrdag",
                "--settle",
                "100ms",
            ])
            .args(["--concurrency", "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill somewhere between planning and the end of the first pass.
        std::thread::sleep(std::time::Duration::from_millis(40 + trial * 45));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms", "--json"]);
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "trial {trial}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report(&out)["converged"], true, "trial {trial}");
        sim.wait_converged(std::time::Duration::from_secs(10));
        assert_eq!(
            orgs(&sim),
            expected,
            "trial {trial}: the end state differs from an uninterrupted run"
        );
        let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM repins WHERE status = 'pending'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pending, 0, "trial {trial}: pending intents left");
        // No pin was re-pinned after it was tagged: at most one applied re-pin per CID, except where
        // an interrupted intent was reconciled as applied and then never sent again.
        let twice: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT cid_id FROM repins WHERE outcome = 'applied' GROUP BY cid_id HAVING count(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(twice, 0, "trial {trial}: a tagged pin was re-pinned");
        let interrupted: i64 = conn
            .query_row(
                "SELECT count(*) FROM runs WHERE state IN ('interrupted', 'running')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(interrupted <= 1, "trial {trial}");
    }
}

/// On both backends: `kill -9` of a tag run in the middle of its first pass (after the 1st, the
/// 40th and the 120th recorded re-pin), then the same command again. The rerun finishes the
/// migration as if nothing had happened: every target tagged with every option kept, nothing else
/// touched, no intent left pending, no tagged pin re-pinned.
fn killed_mid_pass_a_rerun_finishes_the_migration(b: Backend) {
    let Some(sim) = Cluster::start(b, 3) else { return };
    for (trial, kill_after) in [1, 40, 120].into_iter().enumerate() {
        sim.seed(&every_kind(200, &format!("kill/{trial}"), &sim.ids()));
        let before = pinset(&sim, 0);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let mut child = std::process::Command::new(bin())
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["--db", "ledger.db", "--cluster", &urls(&sim), "tag", "--org", "hrdag"])
            .args(["--settle", b.settle(), "--concurrency", "4", "--rate", "200"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(std::time::Duration::from_secs(60), "re-pins on the record", || {
            count_while_written(&db, "SELECT count(*) FROM repins") >= kill_after
        });
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "trial {trial}: the run ended before the kill");
        let killed_at = count_while_written(&db, "SELECT count(*) FROM repins");
        let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", b.settle(), "--json"]);
        let r = report(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "trial {trial}: other orgs' pins are no conflict: {r}"
        );
        assert_eq!(r["converged"], true, "trial {trial}: {r}");
        check_migrated(&sim, &before, &format!("trial {trial}, killed after {killed_at} re-pins"));
        let rows = sql_rows(&db, "SELECT count(*) FROM repins WHERE status = 'pending'");
        assert_eq!(rows, [["0"]], "trial {trial}: pending intents left");
        let twice = sql_rows(
            &db,
            "SELECT count(*) FROM (SELECT cid_id FROM repins WHERE outcome = 'applied'
             GROUP BY cid_id HAVING count(*) > 1)",
        );
        assert_eq!(twice, [["0"]], "trial {trial}: a tagged pin was re-pinned");
        let runs = sql_rows(&db, "SELECT state FROM runs ORDER BY id");
        assert_eq!(runs.len(), 2, "trial {trial}: {runs:?}");
        assert_eq!(runs[0][0], "interrupted", "trial {trial}: the killed run: {runs:?}");
    }
}

crate::on_both!(killed_mid_pass_a_rerun_finishes_the_migration);

#[test]
fn error_bursts_are_retried_and_nothing_untagged_counts_as_tagged() {
    let sim = Sim::start(&["--peers", "2", "--pins", "150", "--seed", "17", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    // 30 re-pins fail with 429, 503 or 500 (a 500 is not retried at once: the next pass re-pins).
    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"errors":[{"endpoint":"pin","status":429,"count":10},{"endpoint":"pin","status":503,"count":10},{"endpoint":"pin","status":500,"count":10,"rate":0.5}]}"#,
    );
    let out =
        tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms", "--max-passes", "4", "--json"]);
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r}");
    let after = pinset(&sim, 0);
    let targets = r["plan"]["targets"].as_array().unwrap();
    for c in targets {
        assert_eq!(org(&after[c.as_str().unwrap()]), Some("hrdag"));
    }
    // Every failed attempt is on the record as failed, never as applied.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let bad: i64 = conn
        .query_row(
            "SELECT count(*) FROM repins WHERE http_status >= 400 AND outcome = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0, "a failed request was counted as applied");
}

#[test]
fn rate_limits_the_re_pins() {
    let sim = Sim::start(&["--peers", "1", "--pins", "60", "--seed", "2", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "0s", "--rate", "40", "--json"]);
    let r = report(&out);
    let n = r["plan"]["targets"].as_array().unwrap().len();
    assert!(n >= 30, "{n} targets");
    // n re-pins at 40/s take at least (n-1)/40 s.
    assert!(
        started.elapsed().as_secs_f64() >= (n - 1) as f64 / 40.0,
        "{:?} for {n}",
        started.elapsed()
    );
    assert_eq!(tag(&dir, &sim, &["--org", "x", "--rate", "0"]).status.code(), Some(2));
}

#[test]
fn a_stream_cut_during_verification_is_not_counted_and_the_next_pass_verifies() {
    let sim = Sim::start(&["--peers", "2", "--pins", "120", "--seed", "4", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    // Peer1's next two streams (its verification snapshot and probe of pass 1) break after 10 items.
    let peer1 = &sim.peers[1].name;
    sim.control(
        "POST",
        "/_sim/faults",
        &format!(r#"{{"stream_cut":{{"after":10,"mode":"drop","count":2,"peers":["{peer1}"]}}}}"#),
    );
    let out = tag(&dir, &sim, &["--org", "hrdag", "--settle", "100ms", "--json"]);
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r}");
    let passes = r["passes"].as_array().unwrap();
    assert!(passes.len() >= 2, "pass 1 could not verify peer1, so a second pass verified it: {r}");
    assert!(passes[0]["tagged"].get(&sim.peers[1].id).is_none(), "a broken probe counted: {r}");
    assert_eq!(passes[1]["attempted"], 0, "nothing was left to re-pin on the write peer");
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let incomplete: i64 = conn
        .query_row(
            "SELECT count(*) FROM snapshots WHERE state = 'incomplete' AND run_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(incomplete, 1, "the cut verification snapshot is recorded as incomplete");
}

#[test]
fn timeouts_say_what_happened() {
    let sim = Sim::start(&["--peers", "1", "--pins", "20", "--lag", "0", "--latency", "1500ms"]);
    let dir = tempfile::tempdir().unwrap();
    let out = ledger()
        .current_dir(dir.path())
        .args([
            "--db",
            "ledger.db",
            "--cluster",
            sim.url(0),
            "--timeout",
            "500ms",
            "tag",
            "--org",
            "hrdag",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out") || err.contains("timeout"), "{err}");
    let writes = sim.state()["writes"].as_u64().unwrap();
    assert_eq!(writes, 0, "nothing was written");
}

#[test]
fn the_defaults_converge_on_the_simulators_defaults() {
    // Five peers, 50 ms..1 s of lag, the default 10 s settle: one pass.
    let sim = Sim::start(&["--pins", "200", "--seed", "9"]);
    let dir = tempfile::tempdir().unwrap();
    let r = report(&tag(&dir, &sim, &["--org", "hrdag", "--json"]));
    assert_eq!(r["converged"], true, "{r}");
    assert_eq!(r["passes"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["passes"][0]["tagged"].as_object().unwrap().len(), 5);
}

#[test]
fn convergence_reads_the_run_back_from_history() {
    let sim = Sim::start(&["--peers", "3", "--pins", "100", "--seed", "6", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let none = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "convergence"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "no tag run yet");
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let r = report(&tag(
        &dir,
        &sim,
        &["--org", "hrdag", "--settle", "100ms", "--max-passes", "2", "--json"],
    ));
    let targets = r["plan"]["targets"].as_array().unwrap().len() as i64
        + r["plan"]["already"].as_i64().unwrap();
    let conv = |args: &[&str]| {
        ledger()
            .current_dir(dir.path())
            .args(["--db", "ledger.db", "convergence"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = conv(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "peer2 never converged");
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["passes"].as_array().unwrap().len(), 2);
    assert_eq!(c["curve"].as_array().unwrap().len(), 6, "a probe per peer and pass");
    let after = c["converged_after"].as_object().unwrap();
    assert!(after[&sim.peers[0].id].is_f64());
    assert!(after[&sim.peers[2].id].is_null());
    for p in c["curve"].as_array().unwrap() {
        assert_eq!(p["targets"], targets);
    }
    let csv = conv(&["--csv", "-"]);
    let text = String::from_utf8_lossy(&csv.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("run,pass,peer,seconds,targets,tagged"));
    assert_eq!(lines.count(), 6);
    let table = conv(&[]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("NOT converged"));
}

#[test]
fn probes_sample_every_peer_while_a_pass_settles() {
    let sim = Sim::start(&["--peers", "2", "--pins", "80", "--seed", "10", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let r = report(&tag(
        &dir,
        &sim,
        &["--org", "hrdag", "--settle", "1500ms", "--probe-every", "400ms", "--json"],
    ));
    assert_eq!(r["converged"], true);
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM probes", [], |r| r.get(0)).unwrap();
    // Two or three samples of both peers during the settle, then the verification probe of each.
    assert!((6..=10).contains(&n), "{n} probes");
    let ordered: i64 = conn
        .query_row("SELECT count(*) FROM probes a JOIN probes b ON b.rowid = a.rowid + 1 WHERE b.seconds < a.seconds", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(ordered, 0, "samples are in time order");
}
