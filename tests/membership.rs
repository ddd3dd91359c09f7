//! Every command that reads the cluster says which of its members (`GET /peers`) it read, never
//! "every peer" unless it read every one, and exits 1 when it could not: `snapshot --all-peers`,
//! `watch --all-peers`, `repin`, `restore`, and, from what a tag run recorded, `convergence` and
//! `report`. Each runs against a simulated cluster given only its first peer, then every peer.

use std::path::Path;

use crate::util::*;

/// `ledger --db DIR/ledger.db --cluster CLUSTER --timeout 2s ARGS`.
fn run(dir: &Path, cluster: &str, args: &[&str]) -> Out {
    run_for(dir, cluster, "2s", args)
}

fn run_for(dir: &Path, cluster: &str, timeout: &str, args: &[&str]) -> Out {
    ledger()
        .current_dir(dir)
        .args(["--db", "ledger.db", "--cluster", cluster, "--timeout", timeout])
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// The IDs of the members a report did not read (its `not_read`).
fn not_read(v: &serde_json::Value) -> Vec<String> {
    let list = v["not_read"].as_array().unwrap_or_else(|| panic!("no not_read list: {v}"));
    list.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

fn ids(sim: &Sim, peers: std::ops::Range<usize>) -> Vec<String> {
    sim.peers[peers].iter().map(|p| p.id.clone()).collect()
}

/// A peer ID as ledger shortens it: its first and last six characters.
fn short(id: &str) -> String {
    format!("{}…{}", &id[..6], &id[id.len() - 6..])
}

fn three_peers() -> Sim {
    Sim::start(&["--peers", "3", "--pins", "40", "--seed", "31", "--lag", "0"])
}

#[test]
fn snapshot_of_all_peers_names_the_members_it_did_not_read() {
    let sim = three_peers();
    let dir = tempfile::tempdir().unwrap();
    let one = run(dir.path(), sim.url(0), &["snapshot", "--all-peers"]);
    assert_eq!(one.code, 1, "{one:?}");
    assert!(one.stdout.contains("snapshotted 1 of 3 cluster peers; not read: "), "{one:?}");
    for p in &sim.peers[1..] {
        assert!(one.stdout.contains(&short(&p.id)), "{}: {one:?}", p.id);
    }
    assert!(one.stdout.contains("name each member's REST API with --cluster"), "{one:?}");
    let json = run(dir.path(), sim.url(0), &["snapshot", "--all-peers", "--json"]);
    assert_eq!(json.code, 1, "{json:?}");
    assert!(json.stderr.contains("snapshotted 1 of 3 cluster peers"), "{json:?}");
    assert_eq!(json.json().as_array().unwrap().len(), 1, "{json:?}");
    let all = run(dir.path(), &sim.all_urls(), &["snapshot", "--all-peers"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(!all.all().contains("not read"), "{all:?}");
    // One peer of the three down: two snapshotted, the third named (and the command exits 2, as
    // for any peer it cannot read).
    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"errors":[{"endpoint":"allocations","status":500,"peers":["peer2"]}]}"#,
    );
    let down = run(dir.path(), &sim.all_urls(), &["snapshot", "--all-peers"]);
    assert_eq!(down.code, 2, "{down:?}");
    assert!(down.stdout.contains("snapshotted 2 of 3 cluster peers; not read: "), "{down:?}");
}

#[test]
fn watch_of_all_peers_says_once_which_members_it_did_not_read_and_exits_1() {
    let sim = three_peers();
    let dir = tempfile::tempdir().unwrap();
    let args = ["watch", "--all-peers", "--every", "200ms", "--rounds", "3"];
    let one = run(dir.path(), sim.url(0), &args);
    assert_eq!(one.code, 1, "{one:?}");
    let said = one.stderr.matches("snapshotted 1 of 3 cluster peers; not read: ").count();
    assert_eq!(said, 1, "said once, not every round: {one:?}");
    assert!(one.stderr.contains("round 1: "), "{one:?}");
    let all = run(dir.path(), &sim.all_urls(), &args);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(!all.all().contains("not read"), "{all:?}");
    let snaps = sql_rows(&dir.path().join("ledger.db"), "SELECT count(*) FROM snapshots");
    assert_eq!(snaps, [["12"]], "3 rounds of 1 peer, then 3 rounds of 3");
}

#[test]
fn repin_is_done_only_when_every_member_shows_it() {
    let sim = three_peers();
    let dir = tempfile::tempdir().unwrap();
    let pins = sorted_pinset(sim.url(0), &[]);
    let cid = pins[0]["cid"].as_str().unwrap();
    let one = run(dir.path(), sim.url(0), &["repin", cid, "--meta", "note=a", "--json"]);
    assert_eq!(one.code, 1, "{one:?}");
    let v = one.json();
    assert_eq!(v["outcome"], "applied", "{v}");
    assert_eq!(v["spread"]["members"], 3, "{v}");
    assert_eq!(not_read(&v["spread"]), ids(&sim, 1..3), "{v}");
    assert_eq!(v["spread"]["peers"][0]["shows"], 1, "{v}");

    let all = run(dir.path(), &sim.all_urls(), &["repin", cid, "--meta", "note=b"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(
        all.stdout.contains("shown as written on every peer (3 cluster members read)"),
        "{all:?}"
    );

    // A peer cut off from the others never shows the write: named, with what it lacks.
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let cut = run(dir.path(), &sim.all_urls(), &["repin", cid, "--meta", "note=c"]);
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(cut.stdout.contains("shown as written on 2 of the 3 peer(s) read"), "{cut:?}");
    let lacking = format!("  {}: 1 of 1 not shown as written", short(&sim.peers[2].id));
    assert!(cut.stdout.contains(&lacking), "{cut:?}");
    let states = sql_rows(&dir.path().join("ledger.db"), "SELECT state FROM runs ORDER BY id");
    assert_eq!(states, [["attention"], ["done"], ["attention"]]);
    let recorded = sql_rows(
        &dir.path().join("ledger.db"),
        "SELECT json_extract(params, '$.membership.members'), \
         json_array_length(params, '$.membership.not_read') FROM runs ORDER BY id",
    );
    assert_eq!(recorded, [["3", "2"], ["3", "0"], ["3", "0"]]);
}

#[test]
fn restore_says_which_members_show_what_it_put_back() {
    let sim = three_peers();
    let dir = tempfile::tempdir().unwrap();
    let all_urls = sim.all_urls();
    let pins = sorted_pinset(sim.url(0), &[]);
    let cid = pins.iter().find(|p| p["metadata"]["org"].is_string()).expect("an owned pin")["cid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(run(dir.path(), &all_urls, &["snapshot"]).code, 0);
    assert_eq!(run(dir.path(), &all_urls, &["repin", &cid, "--unset", "org"]).code, 0);
    assert_eq!(run(dir.path(), &all_urls, &["snapshot"]).code, 0);
    let one = run(dir.path(), sim.url(0), &["restore", "--from", "1", "--json"]);
    assert_eq!(one.code, 1, "{one:?}");
    let v = one.json();
    assert_eq!(v["restored"], serde_json::json!([cid]), "{v}");
    assert_eq!(not_read(&v["spread"]), ids(&sim, 1..3), "{v}");
    // Once put back, the same restore finds nothing to do; a loss again, restored through every
    // peer, is shown everywhere.
    assert_eq!(run(dir.path(), &all_urls, &["repin", &cid, "--unset", "org"]).code, 0);
    assert_eq!(run(dir.path(), &all_urls, &["snapshot"]).code, 0);
    let all = run(dir.path(), &all_urls, &["restore", "--from", "1"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(
        all.stdout.contains("shown as written on every peer (3 cluster members read)"),
        "{all:?}"
    );
}

#[test]
fn convergence_and_report_say_every_peer_only_of_a_run_that_read_every_member() {
    let sim = Sim::start(&["--peers", "4", "--pins", "60", "--seed", "32", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let tag = ["tag", "--org", "hrdag", "--settle", "0s"];
    assert_eq!(run(dir.path(), sim.url(0), &tag).code, 1);
    let conv = run(dir.path(), sim.url(0), &["convergence"]);
    assert_eq!(conv.code, 1, "{conv:?}");
    assert!(conv.stdout.contains("verified 1 of 4 cluster peers; not read: "), "{conv:?}");
    let json = run(dir.path(), sim.url(0), &["convergence", "--json"]).json();
    assert_eq!(not_read(&json["membership"]), ids(&sim, 1..4), "{json}");
    let report = |name: &str| {
        let out = run(dir.path(), sim.url(0), &["report", "--out", name]);
        assert_eq!(out.code, 0, "{out:?}");
        std::fs::read_to_string(dir.path().join(name).join("report.html")).unwrap()
    };
    let html = report("one");
    assert!(html.contains("Converged on the 1 peer(s) read"), "{html}");
    assert!(html.contains("verified 1 of 4 cluster peers; not read: "), "{html}");
    assert!(!html.contains("Converged: every peer"), "{html}");

    assert_eq!(run(dir.path(), &sim.all_urls(), &tag).code, 0);
    let conv = run(dir.path(), &sim.all_urls(), &["convergence"]);
    assert_eq!(conv.code, 0, "{conv:?}");
    assert!(!conv.stdout.contains("not read"), "{conv:?}");
    let html = report("all");
    assert!(html.contains("Converged: every peer showed every target tagged"), "{html}");
    assert!(!html.contains("id=\"membership\""), "{html}");
}

/// On either cluster, three peers and only the first named: `tag` verifies that peer, names the two
/// members it never read and exits 1 (`attention`); named whole, the same cluster's run tags and
/// verifies every member, leaves the pins another organisation owns alone and exits 0 (`done`).
/// `snapshot --all-peers` and `repin` given the first peer only name the other two as well.
fn the_first_peer_alone_is_one_of_three_members(b: Backend) {
    let Some(c) = Cluster::start(b, 3) else { return };
    let (timeout, settle) = match b {
        Backend::Sim => ("2s", "300ms"),
        Backend::Real => ("30s", "2s"),
    };
    let pins: Vec<(String, String)> = (0..12)
        .map(|i| {
            let q = if i % 3 == 0 { "meta-org=amnesty".to_string() } else { format!("name=m{i}") };
            (format!("/pins/{}", cid_of(&format!("membership-{i}"))), q)
        })
        .collect();
    c.seed(&pins);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids = c.ids();
    let tag = ["tag", "--org", "hrdag", "--settle", settle, "--json"];

    let all = run_for(d, &c.urls(), timeout, &tag);
    assert_eq!(all.code, 0, "{all:?}");
    let v = all.json();
    assert_eq!((v["converged"].clone(), v["members"].clone()), (true.into(), 3.into()), "{v}");
    assert_eq!(v["plan"]["owned_by_others"].as_array().unwrap().len(), 4, "{v}");
    assert!(not_read(&v).is_empty(), "{v}");

    let one = run_for(d, c.url(0), timeout, &tag);
    assert_eq!(one.code, 1, "{one:?}");
    let v = one.json();
    assert_eq!(v["members"], 3, "{v}");
    assert_eq!(not_read(&v), ids[1..].to_vec(), "{v}");
    let text = run_for(d, c.url(0), timeout, &tag[..5]);
    assert!(text.stdout.contains("verified 1 of 3 cluster peers; not read: "), "{text:?}");
    assert!(!text.stdout.contains("every peer"), "{text:?}");
    assert!(text.stdout.contains("owned by others (left alone): 4"), "{text:?}");

    let snap = run_for(d, c.url(0), timeout, &["snapshot", "--all-peers"]);
    assert_eq!(snap.code, 1, "{snap:?}");
    assert!(snap.stdout.contains("snapshotted 1 of 3 cluster peers; not read: "), "{snap:?}");
    let cid = cid_of("membership-1");
    let repin = run_for(d, c.url(0), timeout, &["repin", &cid, "--meta", "note=a", "--json"]);
    assert_eq!(repin.code, 1, "{repin:?}");
    assert_eq!(not_read(&repin.json()["spread"]), ids[1..].to_vec(), "{repin:?}");
    let states = sql_rows(&d.join("ledger.db"), "SELECT kind, state FROM runs ORDER BY id");
    let want =
        [["tag", "done"], ["tag", "attention"], ["tag", "attention"], ["repin", "attention"]];
    assert_eq!(states, want);
    if let Cluster::Real(rc) = &c {
        rc.assert_loopback_only();
    }
}

crate::on_both!(the_first_peer_alone_is_one_of_three_members);

/// A real cluster stops listing a stopped peer in `GET /peers` within seconds; the ledger, which
/// snapshotted it, still counts it a member: `snapshot --all-peers` and `tag` given the two peers
/// left name the third as not read (exit 1), never "every peer".
#[test]
fn a_stopped_real_peer_the_cluster_no_longer_lists_is_still_a_member() {
    use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
    if !available(V1_1_6) {
        return;
    }
    let opts = RealOptions { rebroadcast: Some("5s".into()), ..RealOptions::new(V1_1_6, 3) };
    let mut rc = RealCluster::start(opts);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = format!("{},{}", rc.url(0), rc.url(1));
    let all = run_for(d, &rc.urls(), "30s", &["snapshot", "--all-peers"]);
    assert_eq!(all.code, 0, "{all:?}");
    let gone = rc.peers[2].id.clone();
    rc.stop_peer(2);
    wait_until(std::time::Duration::from_secs(90), "peer2 unlisted by peer0", || {
        let listed = raw(rc.url(0), "GET", "/peers", &[], b"").ndjson();
        !listed.iter().any(|p| p["id"] == gone.as_str())
    });
    let said = format!("{} (not listed by the cluster now; snapshotted complete at ", short(&gone));
    let snap = run_for(d, &two, "30s", &["snapshot", "--all-peers"]);
    assert_eq!(snap.code, 1, "{snap:?}");
    assert!(snap.stdout.contains("snapshotted 2 of 3 cluster peers; not read: "), "{snap:?}");
    assert!(snap.stdout.contains(&said), "{snap:?}");
    let tag = run_for(d, &two, "30s", &["tag", "--org", "hrdag", "--settle", "1s"]);
    assert_eq!(tag.code, 1, "{tag:?}");
    assert!(tag.stdout.contains("verified 2 of 3 cluster peers; not read: "), "{tag:?}");
    assert!(tag.stdout.contains(&said) && !tag.stdout.contains("every peer"), "{tag:?}");
    rc.assert_loopback_only();
}
