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

/// The peer IDs and URLs one `ledger ARGS snapshot --all-peers --json` read, and its stderr; it
/// must exit with `code`.
fn snapshot_all(
    dir: &std::path::Path,
    args: &[&str],
    code: i32,
) -> (std::collections::BTreeSet<(String, String)>, String) {
    let out: Out = ledger()
        .current_dir(dir)
        .env("LEDGER_LOG", "info")
        .args(["--db", "ledger.db"])
        .args(args)
        .args(["snapshot", "--all-peers", "--json"])
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, code, "{}", out.all());
    let v = out.json();
    let read = v.as_array().unwrap().iter().map(|s| {
        (s["peer"].as_str().unwrap().to_string(), s["peer_url"].as_str().unwrap().to_string())
    });
    let read: Vec<_> = read.collect();
    let set: std::collections::BTreeSet<_> = read.iter().cloned().collect();
    assert_eq!(set.len(), read.len(), "each peer read once: {}", out.stdout);
    (set, out.stderr)
}

/// `--discover` on a real 4-peer v1.1.6 cluster whose peers are on hosts of their own
/// (127.0.0.1–4, one REST port): given one peer's URL, ledger finds every member from the
/// addresses `GET /peers` gives, and reads them all; `--rest-port` is the port tried; a member
/// whose REST API cannot be reached, or whose address answers with another member's ID, is named
/// and not read, and the command reads the rest.
#[test]
fn discover_finds_every_member_of_a_real_cluster_from_one_url() {
    if !available(V1_1_6) {
        return;
    }
    let mut rc =
        RealCluster::start(RealOptions { distinct_hosts: true, ..RealOptions::new(V1_1_6, 4) });
    let urls: Vec<String> = rc.peers.iter().map(|p| p.url.clone()).collect();
    let url = |i: usize| urls[i].clone();
    let port = url(0).rsplit_once(':').unwrap().1.to_string();
    for (i, p) in rc.peers.iter().enumerate() {
        assert_eq!(p.url, format!("http://127.0.0.{}:{port}", i + 1));
    }
    // What the real /peers says of each member: its cluster swarm address on its own host (with
    // /p2p/<id>); its REST API's address (port 20004 in the namespace) is not among them.
    let items = raw(rc.url(0), "GET", "/peers", &[], b"").ndjson();
    assert_eq!(items.len(), 4);
    for (i, p) in rc.peers.iter().enumerate() {
        let item = items.iter().find(|x| x["id"] == p.id.as_str()).expect("listed");
        let addrs: Vec<&str> =
            item["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let own = format!("/ip4/127.0.0.{}/tcp/20006/p2p/{}", i + 1, p.id);
        assert!(addrs.contains(&own.as_str()), "peer{i}: {addrs:?}");
        assert!(addrs.iter().all(|a| !a.contains("/tcp/20004")), "peer{i}: {addrs:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let peers = rc.peers.clone();
    let with = |which: &[usize]| -> std::collections::BTreeSet<(String, String)> {
        which.iter().map(|&i| (peers[i].id.clone(), format!("{}/", peers[i].url))).collect()
    };
    // Without --discover: the one peer given; with it: all four, each at its own host.
    // (Membership: the three members not read are named, exit 1.)
    let (read, _) = snapshot_all(dir.path(), &["--cluster", &url(0)], 1);
    assert_eq!(read, with(&[0]));
    let (read, log) = snapshot_all(dir.path(), &["--cluster", &url(0), "--discover"], 0);
    assert_eq!(read, with(&[0, 1, 2, 3]), "{log}");
    // --rest-port: peer0 given through another port; that port finds nothing on the members'
    // hosts, the REST port finds them all (and peer0 is not read twice).
    let other = rc.another_url(0);
    let (read, log) = snapshot_all(dir.path(), &["--cluster", &other, "--discover"], 1);
    assert_eq!(read, [(rc.peers[0].id.clone(), format!("{other}/"))].into(), "{log}");
    let (read, log) =
        snapshot_all(dir.path(), &["--cluster", &other, "--discover", "--rest-port", &port], 0);
    let mut want = with(&[1, 2, 3]);
    want.insert((rc.peers[0].id.clone(), format!("{other}/")));
    assert_eq!(read, want, "{log}");
    // peer2's REST API unreachable (the peer runs on), peer3's address answering as peer1.
    rc.close_rest(2);
    rc.close_rest(3);
    rc.point_rest(3, 1);
    let (read, log) = snapshot_all(dir.path(), &["--cluster", &url(0), "--discover"], 1);
    assert_eq!(read, with(&[0, 1]), "{log}");
    let p2 = format!("member {} (peer2) not discovered: {}/: no answer", rc.peers[2].id, url(2));
    assert!(log.contains(&p2), "{p2:?}: {log}");
    let p3 = format!(
        "member {} (peer3) not discovered: {}/: /id answered another ID, {}",
        rc.peers[3].id,
        url(3),
        rc.peers[1].id
    );
    assert!(log.contains(&p3), "{p3:?}: {log}");
    rc.assert_loopback_only();
}

/// With CRDT batching a real peer answers a re-pin 200, with the pin as asked, before it stores it:
/// read right after, even on that peer, the pin is still the old one, until the batch commits. So
/// the POST's answer is not the stored pin, and ledger reads every re-pin back; `ledger repin`
/// through such a peer waits for the batch and records `applied` only once the pin shows.
#[test]
fn a_batching_real_peer_answers_a_repin_before_it_stores_it() {
    if !available(V1_1_6) {
        return;
    }
    let opts = RealOptions { batching: Some((10_000, "5s".into())), ..RealOptions::new(V1_1_6, 1) };
    let rc = RealCluster::start(opts);
    let cid = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n";
    let org = || {
        let r = raw(rc.url(0), "GET", &format!("/allocations/{cid}"), &[], b"");
        (r.status == 200).then(|| r.json()["metadata"]["org"].as_str().unwrap_or("").to_string())
    };
    let post = |org: &str| {
        let r = raw(rc.url(0), "POST", &format!("/pins/{cid}?name=b&meta-org={org}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["metadata"]["org"], org, "the answer is the pin as asked");
    };
    post("first");
    assert_eq!(org(), None, "a new pin is not stored before its batch commits");
    wait_until(std::time::Duration::from_secs(30), "the first batch", || {
        org().as_deref() == Some("first")
    });
    post("second");
    assert_eq!(org().as_deref(), Some("first"), "answered 200, yet the peer still has the old pin");
    let waited = wait_until(std::time::Duration::from_secs(30), "the second batch", || {
        org().as_deref() == Some("second")
    });
    eprintln!("the re-pin showed {:.1}s after its 200", waited.as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let out: Out = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", &rc.urls(), "--timeout", "30s"])
        .args(["repin", cid, "--meta", "org=third", "--json"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.all());
    let said: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(said["outcome"], "applied", "{}", out.all());
    assert_eq!(org().as_deref(), Some("third"));
    let db = dir.path().join("ledger.db");
    let row = sql_rows(&db, "SELECT status, http_status, outcome FROM repins");
    assert_eq!(row, vec![vec!["sent".to_string(), "200".into(), "applied".into()]]);
    rc.assert_loopback_only();
}
