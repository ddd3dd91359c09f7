//! `ledger repin` over a set (`--only`, `--org`, `--all`; issue 14, points 3–4): a rebalance of 500
//! pins off a peer keeps every other field on every peer and the ledger holds each pin before and
//! after; `--dry-run` sends nothing; a `kill -9` mid-run and the rerun end as one uninterrupted run
//! would, no pin re-pinned twice; another organisation's pin is left alone without `--force`.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn repin(dir: &tempfile::TempDir, sim: &impl PeerUrls, args: &[&str]) -> Output {
    ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", &sim.all_urls(), "repin"])
        .args(args)
        .output()
        .unwrap()
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

fn pinset(sim: &impl PeerUrls, peer: usize) -> BTreeMap<String, Value> {
    let r = raw(sim.peer_url(peer), "GET", "/allocations?filter=all", &[], b"");
    r.ndjson().into_iter().map(|p| (p["cid"].as_str().unwrap().to_string(), p)).collect()
}

fn post(sim: &Sim, path: &str) {
    let r = raw(sim.url(0), "POST", path, &[], b"");
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
}

/// 500 pins with replication 2..2, each allocated to peer2 and one other peer, of every kind a
/// re-pin can damage: named with metadata, direct, expiring, with origins, another org's; as
/// `(path, query)`.
fn on_peer2(ids: &[String]) -> Vec<(String, String)> {
    (0..500)
        .map(|i| {
            let cid = cid_of(&format!("rebalance/{i}"));
            let alloc = format!("user-allocations={},{}", ids[2], ids[i % 2]);
            let base =
                format!("replication-min=2&replication-max=2&{alloc}&name=set-{i:03}%2Ffile");
            let origin = enc(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", ids[1]));
            match i % 5 {
                0 => (
                    format!("/pins/{cid}"),
                    format!("{base}&meta-project=census&meta-team=t{}", i % 3),
                ),
                1 => {
                    (format!("/pins/ipfs/{cid}"), format!("{base}&mode=direct&meta-project=direct"))
                }
                2 => (
                    format!("/pins/{cid}"),
                    format!("{base}&expire-at=2036-0{}-15T00:00:00Z", 1 + i % 9),
                ),
                3 => (format!("/pins/{cid}"), format!("{base}&origins={origin}")),
                _ => (
                    format!("/pins/{cid}"),
                    format!("{base}&meta-org=amnesty&meta-note={}", enc("a&b=c ü")),
                ),
            }
        })
        .collect()
}

fn seed_on_peer2(sim: &Sim) {
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    for (path, q) in on_peer2(&ids) {
        post(sim, &format!("{path}?{q}"));
    }
    sim.wait_converged(Duration::from_secs(60));
}

/// After a rebalance off peer2 (run 1 of the ledger in `dir`): every peer shows every pin of
/// `before` allocated to two peers, neither of them peer2, every kept field as it was; the ledger
/// holds each pin's version before (on peer2) and after (off it).
fn check_rebalanced(
    sim: &impl PeerUrls,
    before: &BTreeMap<String, Value>,
    ids: &[String],
    dir: &tempfile::TempDir,
) {
    for peer in 0..3 {
        let after = pinset(sim, peer);
        assert_eq!(after.len(), 500, "peer{peer}");
        for (cid, b) in before {
            let a = &after[cid];
            let alloc: Vec<&str> =
                a["allocations"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
            assert_eq!(alloc.len(), 2, "{cid} on peer{peer}: {a}");
            assert!(!alloc.contains(&ids[2].as_str()), "{cid} still on peer2 (peer{peer}): {a}");
            for f in KEPT {
                assert_eq!(a[f], b[f], "{f} of {cid} on peer{peer}");
            }
        }
    }
    // The ledger: for every pin, a re-pin applied with the version before (on peer2) and after
    // (off it), every kept field equal between the two.
    let db = dir.path().join("ledger.db");
    let q = format!(
        "SELECT count(DISTINCT r.cid_id) FROM repins r
         JOIN pin_versions b ON b.cid_id = r.cid_id AND b.digest = r.before_digest
         JOIN pin_versions a ON a.cid_id = r.cid_id AND a.digest = r.after_digest
         WHERE r.run_id = 1 AND r.outcome = 'applied'
           AND b.allocations LIKE '%{p2}%' AND a.allocations NOT LIKE '%{p2}%'
           AND a.name = b.name AND a.metadata IS b.metadata AND a.expire_at IS b.expire_at
           AND a.mode = b.mode AND a.max_depth = b.max_depth AND a.origins = b.origins
           AND a.replication_min = b.replication_min AND a.replication_max = b.replication_max",
        p2 = ids[2]
    );
    assert_eq!(sql_rows(&db, &q), [["500"]]);
}

/// The fields a rebalance must keep, field by field.
const KEPT: [&str; 8] = [
    "name",
    "metadata",
    "expire_at",
    "mode",
    "max_depth",
    "origins",
    "replication_factor_min",
    "replication_factor_max",
];

/// A rebalance off peer2 while it is down (the cluster moves a pin only off a peer that is no
/// longer a valid allocation, docs/cluster-api.md §6.1 step 6): every pin ends allocated to peer0
/// and peer1 on every peer, with name, metadata, expiry, mode and origins as they were, and the
/// ledger holds each pin's version before and after. Once peer2 is back, the same command finds
/// everything done, verifies it on every peer and sends nothing.
#[test]
fn a_rebalance_of_500_pins_off_a_peer_keeps_every_other_field_on_every_peer() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0..100ms", "--rebroadcast", "1s"]);
    seed_on_peer2(&sim);
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    let before = pinset(&sim, 0);
    assert_eq!(before.len(), 500);
    for (cid, p) in &before {
        assert!(
            p["allocations"].as_array().unwrap().contains(&ids[2].clone().into()),
            "{cid}: {p}"
        );
    }
    sim.control("POST", "/_sim/peers/peer2/restart?down=15s", "");
    let dir = tempfile::tempdir().unwrap();
    let others = format!("{},{}", ids[0], ids[1]);
    let args =
        ["--all", "--allocations", &others, "--settle", "300ms", "--max-passes", "1", "--json"];
    let out = repin(&dir, &sim, &args);
    let r = report(&out);
    // peer2 is down: it cannot be verified, so the run needs attention.
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 500, "{r}");
    assert_eq!(r["passes"][0]["applied"], 500, "{r}");
    assert_eq!(r["plan"]["conflicts"].as_array().unwrap().len(), 0, "{r}");
    // peer2 back: every peer shows every pin moved, everything else kept.
    wait_until(Duration::from_secs(60), "peer2 back", || {
        try_raw(sim.url(2), "GET", "/id", &[], b"").is_ok_and(|r| r.status == 200)
    });
    sim.wait_converged(Duration::from_secs(60));
    check_rebalanced(&sim, &before, &ids, &dir);
    // The same command again: nothing left to move, verified on every peer, exit 0.
    let out = repin(&dir, &sim, &args);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["plan"]["already"], 500, "{r}");
    assert_eq!(r["converged"], true, "{r}");
    let db = dir.path().join("ledger.db");
    let sent = sql_rows(&db, "SELECT count(*) FROM repins WHERE run_id = 2");
    assert_eq!(sent, [["0"]], "the rerun re-pinned something");
    let kinds = sql_rows(&db, "SELECT kind, state FROM runs ORDER BY id");
    assert_eq!(kinds, [["repin", "attention"], ["repin", "done"]]);
}

/// `--dry-run` records the plan and sends nothing: every peer's pin set is as it was, timestamps
/// included (on the simulator, its write count does not move either).
fn dry_run_records_the_plan_and_sends_nothing(b: Backend) {
    let Some(c) = Cluster::start(b, 3) else { return };
    c.seed(&every_kind(100, "dry", &c.ids()));
    let writes = |c: &Cluster| match c {
        Cluster::Sim(s) => s.state()["writes"].as_u64(),
        Cluster::Real(_) => None,
    };
    let (before, wrote) = ((0..3).map(|i| pinset(&c, i)).collect::<Vec<_>>(), writes(&c));
    let dir = tempfile::tempdir().unwrap();
    let out = repin(
        &dir,
        &c,
        &["--all", "--meta", "team=x", "--replication", "1..2", "--dry-run", "--json"],
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 100, "{r}");
    assert_eq!(writes(&c), wrote, "a dry run wrote to the cluster");
    for (i, pins) in before.iter().enumerate() {
        assert_eq!(&pinset(&c, i), pins, "a dry run changed peer{i}'s pins");
    }
    let db = dir.path().join("ledger.db");
    assert_eq!(sql_rows(&db, "SELECT kind, dry_run, state FROM runs"), [["repin", "1", "done"]]);
    assert_eq!(sql_rows(&db, "SELECT count(*) FROM run_targets WHERE class = 'target'"), [["100"]]);
    assert_eq!(sql_rows(&db, "SELECT count(*) FROM repins"), [["0"]]);
}

crate::on_both!(dry_run_records_the_plan_and_sends_nothing);

/// Bad input exits 2 before anything is sent or recorded.
#[test]
fn bad_input_exits_2_and_sends_nothing() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0", "--pins", "20"]);
    let writes = sim.state()["writes"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("list"), "not-a-cid\n").unwrap();
    let cid = cid_of("x");
    let bad: [&[&str]; 11] = [
        &["--all"],
        &["--all", "--only", "list", "--meta", "a=b"],
        &["--all", "--replication", "3..1"],
        &["--all", "--replication", "0"],
        &["--all", "--allocations", "not-a-peer"],
        &["--all", "--expire-at", "2001-01-01T00:00:00Z"],
        &["--all", "--meta", "a&b=1"],
        &[&cid, "--all", "--meta", "a=b"],
        &[&cid, "--name", "x"],
        &["--ensure", "--org", "hrdag"],
        &["--only", "list", "--meta", "a=b"],
    ];
    for args in bad {
        let out = repin(&dir, &sim, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
    assert_eq!(sim.state()["writes"].as_u64().unwrap(), writes, "bad input wrote to the cluster");
    let db = dir.path().join("ledger.db");
    if db.exists() {
        assert_eq!(sql_rows(&db, "SELECT count(*) FROM runs"), [["0"]]);
    }
}

/// `--meta org=hrdag` over every pin leaves another organisation's pins alone (exit 1, listed),
/// as does `--only … --org hrdag` for a listed pin hrdag does not own; `--force` changes them.
/// `ledger convergence` and `ledger report` read the bulk run back.
#[test]
fn another_orgs_pin_is_left_alone_without_force() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0..50ms"]);
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    for (path, q) in every_kind(50, "org", &ids) {
        post(&sim, &format!("{path}?{q}"));
    }
    sim.wait_converged(Duration::from_secs(30));
    let before = pinset(&sim, 0);
    let theirs: Vec<&String> = before
        .iter()
        .filter(|(_, p)| {
            p["metadata"]["org"].as_str().is_some_and(|o| !o.is_empty() && o != "hrdag")
        })
        .map(|(c, _)| c)
        .collect();
    assert_eq!(theirs.len(), 5);
    let dir = tempfile::tempdir().unwrap();
    let out = repin(&dir, &sim, &["--all", "--meta", "org=hrdag", "--settle", "300ms", "--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["plan"]["conflicts"].as_array().unwrap().len(), 5, "{r}");
    assert_eq!(r["converged"], true, "{r}");
    sim.wait_converged(Duration::from_secs(30));
    let after = pinset(&sim, 0);
    for c in &theirs {
        assert_eq!(after[*c], before[*c], "another org's pin changed: {c}");
    }
    // By name, as hrdag: a listed pin of another org is left alone; hrdag's own is changed.
    let ours = after.iter().find(|(c, p)| p["metadata"]["org"] == "hrdag" && !theirs.contains(c));
    let ours = ours.unwrap().0.clone();
    std::fs::write(dir.path().join("list"), format!("{}\n{ours}\n", theirs[0])).unwrap();
    let out = repin(
        &dir,
        &sim,
        &["--only", "list", "--org", "hrdag", "--meta", "x=y", "--settle", "300ms", "--json"],
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["plan"]["conflicts"][0]["cid"], theirs[0].as_str(), "{r}");
    assert_eq!(r["plan"]["conflicts"][0]["owner"], before[theirs[0]]["metadata"]["org"], "{r}");
    let now = pinset(&sim, 0);
    assert_eq!(now[theirs[0]], before[theirs[0]]);
    assert_eq!(now[&ours]["metadata"]["x"], "y");
    // --force takes them.
    let out = repin(&dir, &sim, &["--all", "--meta", "org=hrdag", "--force", "--settle", "300ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    sim.wait_converged(Duration::from_secs(30));
    for peer in 0..3 {
        for (c, p) in pinset(&sim, peer) {
            assert_eq!(p["metadata"]["org"], "hrdag", "{c} on peer{peer}");
        }
    }
    // convergence and report read the bulk run (run 3) back.
    let conv = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "convergence", "--json"])
        .output()
        .unwrap();
    assert_eq!(conv.status.code(), Some(0), "{}", String::from_utf8_lossy(&conv.stderr));
    let c = report(&conv);
    assert_eq!((c["run"]["id"].as_i64(), c["run"]["kind"].as_str()), (Some(3), Some("repin")));
    let rep = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "report", "--out", "r"])
        .output()
        .unwrap();
    assert_eq!(rep.status.code(), Some(0), "{}", String::from_utf8_lossy(&rep.stderr));
    let page = std::fs::read_to_string(dir.path().join("r/report.html")).unwrap();
    assert!(page.contains("repin run 3 over a set"), "the page names the bulk run");
}

/// What a bulk `--meta batch=b2` must leave on every peer: each pin with `batch=b2` added and every
/// other field as it was (its timestamp aside).
fn check_batched(sim: &Cluster, before: &BTreeMap<String, Value>, what: &str) {
    sim.wait_converged(Duration::from_secs(60));
    for peer in 0..sim.len() {
        let after = pinset(sim, peer);
        for (cid, b) in before {
            let a = after.get(cid).unwrap_or_else(|| panic!("{what}: {cid} gone from peer{peer}"));
            for f in PIN_FIELDS {
                if f != "metadata" && f != "timestamp" {
                    assert_eq!(a[f], b[f], "{what}: {f} of {cid} on peer{peer}");
                }
            }
            let mut want = b["metadata"].as_object().cloned().unwrap_or_default();
            want.insert("batch".into(), "b2".into());
            assert_eq!(a["metadata"], Value::Object(want), "{what}: {cid} on peer{peer}");
        }
    }
}

/// `kill -9` of a bulk re-pin in the middle of its first pass (after the 1st, the 40th and the
/// 120th recorded re-pin), then the same command again: every pin ends as one uninterrupted run
/// leaves it, no intent is left pending and no pin is re-pinned twice.
fn killed_mid_run_a_rerun_ends_in_the_same_state_without_repinning_twice(b: Backend) {
    let Some(sim) = Cluster::start(b, 3) else { return };
    let ids = sim.ids();
    let settle = b.settle();
    for (trial, kill_after) in [1, 40, 120].into_iter().enumerate() {
        let seeds = every_kind(200, &format!("bulk-kill/{trial}"), &ids);
        sim.seed(&seeds);
        let cids: std::collections::HashSet<String> =
            seeds.iter().map(|(p, _)| p.rsplit('/').next().unwrap().to_string()).collect();
        let mine: BTreeMap<String, Value> =
            pinset(&sim, 0).into_iter().filter(|(c, _)| cids.contains(c)).collect();
        assert_eq!(mine.len(), 200);
        let dir = tempfile::tempdir().unwrap();
        let list = mine.keys().cloned().collect::<Vec<_>>().join("\n");
        std::fs::write(dir.path().join("list"), list).unwrap();
        let args = ["--only", "list", "--meta", "batch=b2", "--settle", settle];
        let db = dir.path().join("ledger.db");
        let mut child = std::process::Command::new(bin())
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["--db", "ledger.db", "--cluster", &sim.urls(), "repin"])
            .args(args)
            .args(["--concurrency", "4", "--rate", "200"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(60), "re-pins on the record", || {
            count_while_written(&db, "SELECT count(*) FROM repins") >= kill_after
        });
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "trial {trial}: the run ended before the kill");
        // `--timeout 10s`: the rerun settles the intents the killed run left pending by reading
        // each pin until it shows or until --timeout after its request (10 s, not a minute).
        let out = repin(&dir, &sim, &[&args[..], &["--json", "--timeout", "10s"]].concat());
        let r = report(&out);
        assert_eq!(out.status.code(), Some(0), "trial {trial}: {r}");
        assert_eq!(r["converged"], true, "trial {trial}: {r}");
        check_batched(&sim, &mine, &format!("trial {trial}"));
        let pending = sql_rows(&db, "SELECT count(*) FROM repins WHERE status = 'pending'");
        assert_eq!(pending, [["0"]], "trial {trial}: pending intents left");
        let twice = sql_rows(
            &db,
            "SELECT count(*) FROM (SELECT cid_id FROM repins WHERE outcome = 'applied'
             GROUP BY cid_id HAVING count(*) > 1)",
        );
        assert_eq!(twice, [["0"]], "trial {trial}: a pin was re-pinned twice");
        let every =
            sql_rows(&db, "SELECT count(DISTINCT cid_id) FROM repins WHERE outcome = 'applied'");
        assert_eq!(every, [["200"]], "trial {trial}: every pin re-pinned once");
        let runs = sql_rows(&db, "SELECT state FROM runs ORDER BY id");
        assert_eq!(runs, [["interrupted"], ["done"]], "trial {trial}");
    }
}

crate::on_both!(killed_mid_run_a_rerun_ends_in_the_same_state_without_repinning_twice);

/// `ensure`: `--org hrdag --ensure` gives every hrdag pin the replication its profile says, and
/// only hrdag's, every other field kept.
#[test]
fn ensure_gives_an_orgs_pins_the_replication_of_its_profile() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0..50ms"]);
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    for (path, q) in every_kind(60, "ensure", &ids) {
        post(&sim, &format!("{path}?{q}"));
    }
    sim.wait_converged(Duration::from_secs(30));
    let before = pinset(&sim, 0);
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<String> = sim.peers.iter().map(|p| format!("{:?}", p.url)).collect();
    let toml = format!(
        "[clusters.shared]\npeers = [{}]\n[clusters.shared.orgs.hrdag]\nreplication = \"1..2\"\n",
        peers.join(", ")
    );
    std::fs::write(dir.path().join("ledger.toml"), toml).unwrap();
    let out = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "repin", "--org", "hrdag", "--ensure", "--settle", "300ms"])
        .args(["--json"])
        .output()
        .unwrap();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["goal"]["replication"], serde_json::json!([1, 2]), "{r}");
    let ours = before.values().filter(|p| p["metadata"]["org"] == "hrdag").count();
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), ours, "{r}");
    sim.wait_converged(Duration::from_secs(30));
    for peer in 0..3 {
        for (cid, a) in pinset(&sim, peer) {
            let b = &before[&cid];
            if b["metadata"]["org"] == "hrdag" {
                assert_eq!(
                    (&a["replication_factor_min"], &a["replication_factor_max"]),
                    (&1.into(), &2.into()),
                    "{cid}"
                );
                for f in ["name", "metadata", "expire_at", "mode", "origins"] {
                    assert_eq!(a[f], b[f], "{f} of {cid} on peer{peer}");
                }
            } else {
                assert_eq!(&a, b, "{cid} is not hrdag's and changed on peer{peer}");
            }
        }
    }
}

/// The same rebalance on a real 3-peer v1.1.6 cluster, peer2's daemon stopped (SIGTERM) once its
/// pins are seeded and until the first run is over: the cluster moves each pin off peer2 once
/// peer2 has left its peer list (its metrics lapsed), every other field kept on every peer; once
/// peer2 is back the same command re-pins nothing and verifies every peer.
#[test]
fn a_rebalance_of_500_pins_off_a_stopped_peer_on_the_real_cluster() {
    let Some(c) = Cluster::start(Backend::Real, 3) else { return };
    let ids = c.ids();
    c.seed(&on_peer2(&ids));
    let before = pinset(&c, 0);
    assert_eq!(before.len(), 500);
    for (cid, p) in &before {
        assert!(
            p["allocations"].as_array().unwrap().contains(&ids[2].clone().into()),
            "{cid}: {p}"
        );
    }
    let Cluster::Real(mut rc) = c else { unreachable!("a real cluster") };
    rc.stop_peer(2);
    wait_until(Duration::from_secs(60), "peer2 out of the peer list", || {
        let r = raw(rc.url(0), "GET", "/peers", &[], b"");
        r.ndjson().iter().all(|p| p["id"] != ids[2].as_str())
    });
    let dir = tempfile::tempdir().unwrap();
    let others = format!("{},{}", ids[0], ids[1]);
    let args = ["--all", "--allocations", &others, "--settle", "2s", "--max-passes", "1", "--json"];
    let out = repin(&dir, &rc, &args);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "peer2 cannot be verified: {r}");
    assert_eq!(r["plan"]["targets"].as_array().unwrap().len(), 500, "{r}");
    assert_eq!(r["passes"][0]["applied"], 500, "{r}");
    rc.start_peer(2);
    rc.wait_converged(Duration::from_secs(120));
    check_rebalanced(&rc, &before, &ids, &dir);
    let out = repin(&dir, &rc, &["--all", "--allocations", &others, "--settle", "2s", "--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["plan"]["already"], 500, "{r}");
    let db = dir.path().join("ledger.db");
    assert_eq!(sql_rows(&db, "SELECT count(*) FROM repins WHERE run_id = 2"), [["0"]]);
}

/// A rebalance off a peer that is up: the cluster keeps each pin's allocations (docs/cluster-api.md
/// §6.1 step 6), so each pin is re-pinned once, read back `mismatch` in `allocations`, not retried
/// in a later pass, and named with why (exit 1); nothing else about it changes.
#[test]
fn a_rebalance_off_a_live_peer_is_said_and_not_retried() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0"]);
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    for (path, q) in on_peer2(&ids).into_iter().take(20) {
        post(&sim, &format!("{path}?{q}"));
    }
    sim.wait_converged(Duration::from_secs(30));
    let before = pinset(&sim, 0);
    let dir = tempfile::tempdir().unwrap();
    let others = format!("{},{}", ids[0], ids[1]);
    let out =
        repin(&dir, &sim, &["--all", "--allocations", &others, "--settle", "200ms", "--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let not_done = r["not_done"].as_array().unwrap();
    assert_eq!(not_done.len(), 20, "{r}");
    assert!(
        not_done.iter().all(|n| n[1].as_str().unwrap().contains("not a valid allocation")),
        "{r}"
    );
    assert_eq!(r["passes"].as_array().unwrap().len(), 1, "no second pass: {r}");
    let db = dir.path().join("ledger.db");
    let rows = sql_rows(
        &db,
        "SELECT count(*), count(DISTINCT cid_id), sum(outcome = 'mismatch') FROM repins",
    );
    assert_eq!(rows, [["20", "20", "20"]]);
    sim.wait_converged(Duration::from_secs(30));
    for (cid, a) in pinset(&sim, 0) {
        assert_eq!(a["allocations"], before[&cid]["allocations"], "{cid}");
        for f in KEPT {
            assert_eq!(a[f], before[&cid][f], "{f} of {cid}");
        }
    }
}
