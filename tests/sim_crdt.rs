//! The CRDT consistency model of docs/cluster-api.md §7 (and §10.1 items 2–4): per-peer replicas,
//! propagation lag, lost deliveries recovered at rebroadcast, batching, add-wins, convergence.

use crate::util::*;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A deterministic CIDv0 for a label.
fn cid_of(label: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(label.as_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v0(mh).unwrap().to_string()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn pin(sim: &Sim, peer: usize, cid: &str, query: &str) -> RawResponse {
    raw(sim.url(peer), "POST", &format!("/pins/{cid}?{query}"), &[], b"")
}

fn unpin(sim: &Sim, peer: usize, cid: &str) -> RawResponse {
    raw(sim.url(peer), "DELETE", &format!("/pins/{cid}"), &[], b"")
}

fn alloc(sim: &Sim, peer: usize, cid: &str) -> RawResponse {
    let r = raw(sim.url(peer), "GET", &format!("/allocations/{cid}"), &[], b"");
    assert!(
        r.status == 200 || r.status == 404,
        "GET /allocations/{cid} on peer{peer}: {} {}",
        r.status,
        r.text()
    );
    if r.status == 404 {
        assert_eq!(r.json(), json!({"code": 404, "message": "pin is not part of the pinset"}));
    }
    r
}

fn has_pin(sim: &Sim, peer: usize, cid: &str) -> bool {
    alloc(sim, peer, cid).status == 200
}

/// The full `GET /allocations` body of a peer (empty for 204), after checking the stream ended well.
fn allocations_body(sim: &Sim, peer: usize) -> String {
    let r = raw(sim.url(peer), "GET", "/allocations", &[], b"");
    assert!(
        r.status == 200 || r.status == 204,
        "GET /allocations on peer{peer}: {} {}",
        r.status,
        r.text()
    );
    assert!(r.complete, "GET /allocations on peer{peer} ended early");
    if r.status == 200 {
        assert_eq!(r.trailer("X-Stream-Error"), Some(""), "peer{peer}: clean stream");
    }
    r.text()
}

#[test]
fn lag_write_is_local_at_once_and_remote_later() {
    let sim = Sim::start(&["--peers", "3", "--lag", "1s..1s"]);
    let c = cid_of("crdt/lag");
    let t0 = Instant::now();
    let r = pin(&sim, 0, &c, "name=lagged");
    assert_eq!(r.status, 200, "{}", r.text());
    // Read-your-writes on the writer.
    assert!(has_pin(&sim, 0, &c), "the writer sees its write at once");
    assert!(!has_pin(&sim, 1, &c) && !has_pin(&sim, 2, &c), "others do not see it yet");
    assert!(t0.elapsed() < Duration::from_millis(900), "test too slow to check the lag window");
    for peer in 1..3 {
        wait_until(Duration::from_secs(4), "the write reaches the other peers", || {
            has_pin(&sim, peer, &c)
        });
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(950),
            "peer{peer} saw the write after {at:?}, before the 1s lag"
        );
    }
    let body0 = alloc(&sim, 0, &c).text();
    for peer in 1..3 {
        assert_eq!(alloc(&sim, peer, &c).text(), body0, "peer{peer} holds the same stored pin");
    }
}

#[test]
fn dropped_deliveries_arrive_only_at_the_manual_rebroadcast() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--drop", "1.0", "--rebroadcast", "60s"]);
    let c = cid_of("crdt/drop/manual");
    assert_eq!(pin(&sim, 1, &c, "name=d").status, 200);
    assert!(has_pin(&sim, 1, &c));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!has_pin(&sim, 0, &c) && !has_pin(&sim, 2, &c), "deliveries were dropped");
    sim.control("POST", "/_sim/rebroadcast", "");
    sim.wait_converged(Duration::from_secs(3));
    assert!(has_pin(&sim, 0, &c) && has_pin(&sim, 2, &c), "rebroadcast delivered the write");
}

#[test]
fn dropped_deliveries_arrive_at_the_periodic_rebroadcast_tick() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--drop", "1.0", "--rebroadcast", "2s"]);
    let a = cid_of("crdt/drop/tick/a");
    let b = cid_of("crdt/drop/tick/b");
    assert_eq!(pin(&sim, 0, &a, "name=a").status, 200);
    // The next tick of peer0 is at most 2s + 30% away.
    wait_until(Duration::from_millis(3500), "a reaches peer1 at a tick", || has_pin(&sim, 1, &a));
    // Both deliveries are re-sent by the same tick.
    wait_until(Duration::from_millis(200), "a reaches peer2 at the same tick", || {
        has_pin(&sim, 2, &a)
    });

    // Just after a tick, a new write waits for the next one, at least 2s - 30% later.
    let t = Instant::now();
    assert_eq!(pin(&sim, 0, &b, "name=b").status, 200);
    let waited =
        wait_until(Duration::from_millis(3500), "b reaches peer1 at the next tick", || {
            has_pin(&sim, 1, &b)
        });
    assert!(
        waited >= Duration::from_millis(1200),
        "b was delivered {:?} after it was written, just after a tick: ticks are 1.4s..2.6s apart",
        t.elapsed()
    );
    sim.wait_converged(Duration::from_secs(3));
}

#[test]
fn batching_hides_writes_on_the_same_peer_until_size_commit() {
    let sim =
        Sim::start(&["--peers", "2", "--lag", "0", "--batch-size", "3", "--batch-age", "30s"]);
    let cids: Vec<String> = (0..3).map(|i| cid_of(&format!("crdt/batch/size/{i}"))).collect();
    for (i, c) in cids.iter().enumerate() {
        let r = pin(&sim, 0, c, &format!("name=b{i}"));
        assert_eq!(r.status, 200, "batched write is acknowledged: {}", r.text());
        assert_eq!(r.json()["cid"], c.as_str());
        if i < 2 {
            for (j, earlier) in cids[..=i].iter().enumerate() {
                assert!(
                    !has_pin(&sim, 0, earlier),
                    "write {j} is invisible on the writer before the commit"
                );
            }
            let s = sim.state();
            assert_eq!(s["peers"][0]["batch_pending"], i + 1, "{s}");
            assert_eq!(s["peers"][0]["pins"], 0, "{s}");
        }
    }
    // The third write fills the batch: it commits now, not after 30s.
    wait_until(Duration::from_secs(2), "the batch of 3 commits", || {
        cids.iter().all(|c| has_pin(&sim, 0, c))
    });
    let s = sim.wait_converged(Duration::from_secs(3));
    assert_eq!(s["peers"][1]["pins"], 3);
    assert_eq!(s["peers"][0]["batch_pending"], 0);
}

#[test]
fn batching_commits_by_age() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0", "--batch-size", "3", "--batch-age", "1s"]);
    let c = cid_of("crdt/batch/age");
    let t = Instant::now();
    assert_eq!(pin(&sim, 0, &c, "name=aged").status, 200);
    assert!(!has_pin(&sim, 0, &c), "invisible on the same peer before the commit");
    assert!(!has_pin(&sim, 1, &c));
    wait_until(Duration::from_secs(4), "the batch commits by age", || has_pin(&sim, 0, &c));
    let at = t.elapsed();
    assert!(at >= Duration::from_millis(900), "committed after {at:?}, before the 1s batch age");
    sim.wait_converged(Duration::from_secs(3));
    assert!(has_pin(&sim, 1, &c));
}

#[test]
fn batching_queue_full_refuses_writes_with_500() {
    let sim = Sim::start(&[
        "--peers",
        "2",
        "--lag",
        "0",
        "--batch-size",
        "100",
        "--batch-age",
        "30s",
        "--batch-queue",
        "2",
    ]);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..8 {
        let c = cid_of(&format!("crdt/batch/queue/{i}"));
        let r = pin(&sim, 0, &c, "");
        match r.status {
            200 => accepted.push(c),
            500 => {
                let e = r.json();
                assert_eq!(e["code"], 500, "{e}");
                let msg = e["message"].as_str().unwrap_or_default();
                assert!(
                    msg.starts_with("error batching item: batching max_queue_size reached."),
                    "§3 queue-full message: {msg:?}"
                );
                refused.push(c);
            }
            s => panic!("write {i}: unexpected {s} {}", r.text()),
        }
    }
    assert!(accepted.len() >= 2, "the queue holds 2 writes, accepted {}", accepted.len());
    assert!(!refused.is_empty(), "writes beyond --batch-queue 2 are refused");
    assert!(refused.iter().all(|c| !has_pin(&sim, 0, c)), "refused writes are not applied");
}

/// Pins `c` everywhere with `v=1` and waits until every peer has it.
fn pin_everywhere(sim: &Sim, c: &str) {
    assert_eq!(pin(sim, 0, c, "name=orig&meta-v=1").status, 200);
    sim.wait_converged(Duration::from_secs(5));
}

fn assert_everywhere(sim: &Sim, peers: usize, c: &str, name: &str, meta: Value) {
    let first = alloc(sim, 0, c);
    assert_eq!(first.status, 200, "pinned on peer0");
    for peer in 0..peers {
        let r = alloc(sim, peer, c);
        assert_eq!(r.status, 200, "pinned on peer{peer}");
        let p = r.json();
        assert_eq!(p["name"], name, "peer{peer}: {p}");
        assert_eq!(p["metadata"], meta, "peer{peer}: {p}");
        assert_eq!(r.text(), first.text(), "peer{peer} holds the same stored pin as peer0");
    }
}

#[test]
fn add_wins_unpin_racing_a_repin_ends_pinned() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--rebroadcast", "60s"]);
    // Unpin first, then the concurrent re-pin; and the other way round.
    for (k, unpin_first) in [true, false].into_iter().enumerate() {
        let c = cid_of(&format!("crdt/add-wins/{k}"));
        pin_everywhere(&sim, &c);
        sim.control("POST", "/_sim/partition", r#"{"groups":[["peer0"],["peer1","peer2"]]}"#);
        let do_unpin = || {
            let r = unpin(&sim, 0, &c);
            assert_eq!(r.status, 200, "unpin on peer0: {}", r.text());
        };
        let do_repin = || {
            let r = pin(&sim, 1, &c, "name=repin&meta-v=2");
            assert_eq!(r.status, 200, "re-pin on peer1: {}", r.text());
        };
        if unpin_first {
            do_unpin();
            do_repin();
        } else {
            do_repin();
            do_unpin();
        }
        assert!(!has_pin(&sim, 0, &c), "peer0 removed it locally");
        sim.control("DELETE", "/_sim/partition", "");
        sim.control("POST", "/_sim/rebroadcast", "");
        sim.wait_converged(Duration::from_secs(5));
        assert_everywhere(&sim, 3, &c, "repin", json!({"v": "2"}));
    }

    // The same race with a paused peer instead of a partition.
    let c = cid_of("crdt/add-wins/pause");
    pin_everywhere(&sim, &c);
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    assert_eq!(unpin(&sim, 2, &c).status, 200);
    assert_eq!(pin(&sim, 0, &c, "name=repin2&meta-v=3").status, 200);
    sim.control("POST", "/_sim/peers/peer2/resume", "");
    sim.control("POST", "/_sim/rebroadcast", "");
    sim.wait_converged(Duration::from_secs(5));
    assert_everywhere(&sim, 3, &c, "repin2", json!({"v": "3"}));

    // Control: an unpin that has seen the re-pin removes it everywhere.
    let c = cid_of("crdt/add-wins/sequential");
    pin_everywhere(&sim, &c);
    assert_eq!(pin(&sim, 1, &c, "name=later").status, 200);
    sim.wait_converged(Duration::from_secs(5));
    assert_eq!(unpin(&sim, 0, &c).status, 200);
    sim.wait_converged(Duration::from_secs(5));
    for peer in 0..3 {
        assert!(!has_pin(&sim, peer, &c), "a causally later unpin removes it on peer{peer}");
    }
}

#[test]
fn concurrent_repins_on_partitioned_peers_converge_to_one_value() {
    let sim = Sim::start(&["--peers", "4", "--lag", "0", "--rebroadcast", "60s"]);
    for round in 0..3 {
        let c = cid_of(&format!("crdt/concurrent-repin/{round}"));
        pin_everywhere(&sim, &c);
        sim.control(
            "POST",
            "/_sim/partition",
            r#"{"groups":[["peer0","peer1"],["peer2","peer3"]]}"#,
        );
        assert_eq!(pin(&sim, 0, &c, &format!("name=left{round}&meta-side=left")).status, 200);
        assert_eq!(
            pin(&sim, 3, &c, &format!("name=right{round}&meta-side=right&meta-x=1")).status,
            200
        );
        // Each side sees its own value.
        wait_until(Duration::from_secs(3), "left value on peer1", || {
            alloc(&sim, 1, &c).json()["name"] == format!("left{round}")
        });
        wait_until(Duration::from_secs(3), "right value on peer2", || {
            alloc(&sim, 2, &c).json()["name"] == format!("right{round}")
        });
        sim.control("DELETE", "/_sim/partition", "");
        sim.control("POST", "/_sim/rebroadcast", "");
        let s = sim.wait_converged(Duration::from_secs(5));
        let digests: BTreeSet<String> =
            s["peers"].as_array().unwrap().iter().map(|p| p["digest"].to_string()).collect();
        assert_eq!(digests.len(), 1, "one digest after healing: {s}");
        let winner = alloc(&sim, 0, &c).json();
        let (name, meta) = if winner["name"] == format!("left{round}") {
            (format!("left{round}"), json!({"side": "left"}))
        } else {
            (format!("right{round}"), json!({"side": "right", "x": "1"}))
        };
        assert_eq!(winner["name"], name.as_str(), "the winner is one of the two writes: {winner}");
        assert_everywhere(&sim, 4, &c, &name, meta);
        let bodies: BTreeSet<String> = (0..4).map(|p| allocations_body(&sim, p)).collect();
        assert_eq!(bodies.len(), 1, "identical GET /allocations on every peer");
    }
}

// ---------------------------------------------------------------------------------------------
// Property: random interleavings converge.

const POOL: usize = 4;
const PEERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Pin { peer: usize, cid: usize, name: String, meta: Vec<(String, String)> },
    Unpin { peer: usize, cid: usize },
    Sleep(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let meta = prop::collection::vec(("(org|project|source|k[0-9])", "[a-z0-9 =&]{0,5}"), 0..3);
    prop_oneof![
        5 => (0..PEERS, 0..POOL, "[a-z0-9 /._-]{0,10}", meta)
            .prop_map(|(peer, cid, name, meta)| Op::Pin { peer, cid, name, meta }),
        2 => (0..PEERS, 0..POOL).prop_map(|(peer, cid)| Op::Unpin { peer, cid }),
        2 => (0..60u64).prop_map(Op::Sleep),
    ]
}

/// Metadata as the server sees it: the first value of a repeated key wins (§3).
fn meta_map(meta: &[(String, String)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in meta {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    m
}

fn run_interleaving(seed: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let seed = seed.to_string();
    let sim = Sim::start(&[
        "--peers",
        "3",
        "--lag",
        "0..50ms",
        "--drop",
        "0.3",
        "--rebroadcast",
        "1s",
        "--seed",
        &seed,
    ]);
    let cids: Vec<String> = (0..POOL).map(|i| cid_of(&format!("crdt/prop/{i}"))).collect();
    // Per CID: the (name, metadata) of every acknowledged pin, and whether any unpin succeeded.
    let mut written: Vec<Vec<(String, Value)>> = vec![Vec::new(); POOL];
    let mut unpinned = [false; POOL];
    for op in ops {
        match op {
            Op::Pin { peer, cid, name, meta } => {
                let m = meta_map(meta);
                let mut q = format!("name={}", enc(name));
                for (k, v) in &m {
                    q.push_str(&format!("&meta-{}={}", enc(k), enc(v)));
                }
                let r = pin(&sim, *peer, &cids[*cid], &q);
                prop_assert_eq!(r.status, 200, "POST on peer{}: {}", peer, r.text());
                let stored_meta = if m.is_empty() { Value::Null } else { json!(m) };
                written[*cid].push((name.clone(), stored_meta));
            }
            Op::Unpin { peer, cid } => {
                let r = unpin(&sim, *peer, &cids[*cid]);
                prop_assert!(
                    r.status == 200 || r.status == 404,
                    "DELETE on peer{}: {}",
                    peer,
                    r.text()
                );
                unpinned[*cid] |= r.status == 200;
            }
            Op::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        }
    }
    // Deliveries drain: converged, and nothing left in flight or lost (the invariant that
    // `converged` implies both is checked on its own in sim_faults).
    let mut s = sim.wait_converged(Duration::from_secs(8));
    let start = Instant::now();
    while !(s["converged"] == true && s["in_flight"] == 0 && s["lost"] == 0) {
        prop_assert!(start.elapsed() < Duration::from_secs(8), "deliveries never drained: {}", s);
        std::thread::sleep(Duration::from_millis(20));
        s = sim.state();
    }
    let peers = s["peers"].as_array().unwrap();
    prop_assert_eq!(peers.len(), PEERS);
    for p in peers {
        prop_assert_eq!(&p["digest"], &peers[0]["digest"], "digests differ: {}", s);
        prop_assert_eq!(&p["pins"], &peers[0]["pins"], "pin counts differ: {}", s);
    }

    let bodies: Vec<String> = (0..PEERS).map(|p| allocations_body(&sim, p)).collect();
    for (p, b) in bodies.iter().enumerate() {
        prop_assert_eq!(b, &bodies[0], "GET /allocations of peer{} differs from peer0", p);
    }
    let listed: Vec<Value> = bodies[0].lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    prop_assert_eq!(peers[0]["pins"].as_u64(), Some(listed.len() as u64));
    let mut present = BTreeSet::new();
    for p in &listed {
        let i = cids.iter().position(|c| p["cid"] == c.as_str());
        prop_assert!(i.is_some(), "unknown CID in the pinset: {}", p);
        let i = i.unwrap();
        present.insert(i);
        let value = (p["name"].as_str().unwrap_or_default().to_string(), p["metadata"].clone());
        prop_assert!(
            written[i].contains(&value),
            "final value {} was never written: {:?}",
            p,
            written[i]
        );
    }
    for i in 0..POOL {
        if !written[i].is_empty() && !unpinned[i] {
            prop_assert!(
                present.contains(&i),
                "CID {} was pinned and never unpinned but is gone",
                i
            );
        }
        if written[i].is_empty() {
            prop_assert!(!present.contains(&i), "CID {} was never pinned but is present", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_interleavings_converge(seed in 1u32..1_000_000, ops in prop::collection::vec(op(), 1..14)) {
        run_interleaving(seed, &ops)?;
    }
}
