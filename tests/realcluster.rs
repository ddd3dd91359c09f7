//! The real IPFS Cluster harness itself: peers come up, see each other, answer ledger, and nothing
//! they run has a socket off loopback.

use crate::util::realcluster::*;
use crate::util::*;

#[test]
fn a_real_3_peer_cluster_comes_up_on_loopback_only() {
    if !available(V1_1_6) {
        return;
    }
    let rc = RealCluster::start(RealOptions::new(V1_1_6, 3));
    eprintln!("3-peer start-up: {:.1}s", rc.startup.as_secs_f64());
    // Every peer lists the same 3 members, with their own version.
    let ids: std::collections::BTreeSet<String> = rc.peers.iter().map(|p| p.id.clone()).collect();
    for i in 0..3 {
        let r = raw(rc.url(i), "GET", "/peers", &[], b"");
        let listed: std::collections::BTreeSet<String> =
            r.ndjson().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(listed, ids, "peer{i}");
        let v = raw(rc.url(i), "GET", "/version", &[], b"").json();
        assert_eq!(v["version"], "1.1.6");
    }
    // A pin written on one peer reaches the others, and ledger records every peer's replica.
    let cid = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n";
    let r = raw(rc.url(0), "POST", &format!("/pins/{cid}?name=first&meta-org=hrdag"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let pins = rc.wait_converged(std::time::Duration::from_secs(30));
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0]["metadata"]["org"], "hrdag");
    let dir = tempfile::tempdir().unwrap();
    let out: Out = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", &rc.urls(), "snapshot", "--all-peers", "--json"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.all());
    let snaps = sql_rows(&dir.path().join("ledger.db"), "SELECT state, pins_seen FROM snapshots");
    assert_eq!(snaps, vec![vec!["complete".to_string(), "1".to_string()]; 3]);
    // Every process is in the cluster's own namespace, listening and connected on loopback only.
    rc.assert_loopback_only();
    assert_eq!(rc.pids().len(), 1 + 2 * 3, "the holder, 3 kubo daemons, 3 cluster peers");
}
