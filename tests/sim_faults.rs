//! Fault injection and the `/_sim` control API (docs/simulator.md): injected errors, latency,
//! stream cuts, pause, partition, restart, and the `/_sim/state` report.

use crate::util::*;
use serde_json::{Value, json};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const FAULT_MSG: &str = "simulated fault";

/// A deterministic CIDv0 for a label.
fn cid_of(label: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(label.as_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v0(mh).unwrap().to_string()
}

fn pin(sim: &Sim, peer: usize, cid: &str, query: &str) -> RawResponse {
    raw(sim.url(peer), "POST", &format!("/pins/{cid}?{query}"), &[], b"")
}

fn alloc(sim: &Sim, peer: usize, cid: &str) -> RawResponse {
    raw(sim.url(peer), "GET", &format!("/allocations/{cid}"), &[], b"")
}

fn has_pin(sim: &Sim, peer: usize, cid: &str) -> bool {
    let r = alloc(sim, peer, cid);
    assert!(
        r.status == 200 || r.status == 404,
        "GET /allocations/{cid} on peer{peer}: {} {}",
        r.status,
        r.text()
    );
    r.status == 200
}

/// Asserts that `f` stays true for the whole of `period` (polling).
fn holds_for(period: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(f(), "expected to hold for {period:?}: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn assert_fault(r: &RawResponse, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json(), json!({"code": status, "message": FAULT_MSG}), "{what}: fault body");
}

fn peer_state<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["peers"]
        .as_array()
        .expect("peers array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {state}"))
}

/// NDJSON lines that were received whole (ending in `\n`).
fn whole_lines(r: &RawResponse) -> Vec<Value> {
    let text = r.text();
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // the part after the last '\n' (empty when the body ends cleanly)
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

#[test]
fn cli_error_rate_one_fails_only_that_endpoint() {
    let sim = Sim::start(&[
        "--peers",
        "2",
        "--lag",
        "0",
        "--error",
        "pin:500:1.0",
        "--error",
        "version:503:1",
    ]);
    let c = cid_of("faults/cli-error");
    for peer in 0..2 {
        assert_fault(&pin(&sim, peer, &c, "name=x"), 500, "POST /pins with pin:500:1.0");
        assert_fault(
            &raw(sim.url(peer), "GET", "/version", &[], b""),
            503,
            "GET /version with version:503:1",
        );
        assert_fault(
            &raw(sim.url(peer), "POST", &format!("/pins/ipfs/{c}"), &[], b""),
            500,
            "POST /pins/ipfs/{cid} is the pin endpoint too",
        );
        // Other endpoints are untouched.
        assert_eq!(raw(sim.url(peer), "GET", "/id", &[], b"").status, 200);
        assert_eq!(raw(sim.url(peer), "GET", "/health", &[], b"").status, 204);
        let r = alloc(&sim, peer, &c);
        assert_eq!(r.status, 404, "GET /allocations/{{cid}} is not the pin endpoint: {}", r.text());
    }
}

#[test]
fn cli_error_rate_is_a_fraction_of_requests() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--error", "version:429:0.5"]);
    let n = 200;
    let mut failed = 0;
    for _ in 0..n {
        let r = raw(sim.url(0), "GET", "/version", &[], b"");
        match r.status {
            429 => {
                assert_eq!(r.json(), json!({"code": 429, "message": FAULT_MSG}));
                failed += 1;
            }
            200 => assert_eq!(r.json(), json!({"version": "1.1.6"})),
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!((60..=140).contains(&failed), "rate 0.5 over {n} requests failed {failed} times");
}

#[test]
fn control_faults_count_peers_and_clear() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0"]);
    let c = cid_of("faults/control-count");
    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"errors":[{"endpoint":"pin","status":500,"rate":1.0,"count":3,"peers":["peer1"]}]}"#,
    );
    // Other peers are not affected.
    assert_eq!(pin(&sim, 0, &c, "name=a").status, 200, "peer0 is not in `peers`");
    assert_eq!(pin(&sim, 2, &c, "name=b").status, 200, "peer2 is not in `peers`");
    // peer1 fails exactly `count` times, then the fault disarms.
    for i in 0..3 {
        assert_fault(&pin(&sim, 1, &c, "name=c"), 500, &format!("peer1 pin attempt {i}"));
    }
    let r = pin(&sim, 1, &c, "name=d");
    assert_eq!(r.status, 200, "fault disarmed after count=3: {}", r.text());

    // `*` hits every endpoint; DELETE clears.
    sim.control("POST", "/_sim/faults", r#"{"errors":[{"endpoint":"*","status":503,"rate":1.0}]}"#);
    for peer in 0..3 {
        for (m, p) in [
            ("GET", "/id".to_string()),
            ("GET", "/version".into()),
            ("GET", format!("/allocations/{c}")),
        ] {
            assert_fault(
                &raw(sim.url(peer), m, &p, &[], b""),
                503,
                &format!("{m} {p} on peer{peer} with `*`"),
            );
        }
        assert_fault(&pin(&sim, peer, &c, ""), 503, "pin with `*`");
        assert_fault(
            &raw(sim.url(peer), "DELETE", &format!("/pins/{c}"), &[], b""),
            503,
            "unpin with `*`",
        );
        assert_fault(&raw(sim.url(peer), "GET", "/pins", &[], b""), 503, "GET /pins with `*`");
    }
    // The control API itself is not an endpoint that faults.
    assert_eq!(sim.state()["peers"].as_array().unwrap().len(), 3);
    sim.control("DELETE", "/_sim/faults", "");
    for peer in 0..3 {
        assert_eq!(raw(sim.url(peer), "GET", "/version", &[], b"").status, 200, "faults cleared");
        assert_eq!(alloc(&sim, peer, &c).status, 200, "faults cleared, pin is there");
    }
}

#[test]
fn control_faults_per_endpoint_statuses() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--pins", "5"]);
    let c = cid_of("faults/endpoints");
    assert_eq!(pin(&sim, 0, &c, "").status, 200);
    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"errors":[{"endpoint":"allocations","status":429,"rate":1.0},
                      {"endpoint":"unpin","status":503,"rate":1.0},
                      {"endpoint":"pins","status":500,"rate":1.0}]}"#,
    );
    assert_fault(&raw(sim.url(0), "GET", "/allocations", &[], b""), 429, "GET /allocations (list)");
    assert_fault(&alloc(&sim, 0, &c), 429, "GET /allocations/{cid} (single)");
    assert_fault(
        &raw(sim.url(0), "DELETE", &format!("/pins/{c}"), &[], b""),
        503,
        "DELETE /pins/{cid}",
    );
    assert_fault(&raw(sim.url(0), "GET", "/pins", &[], b""), 500, "GET /pins (list)");
    assert_fault(
        &raw(sim.url(0), "GET", &format!("/pins/{c}"), &[], b""),
        500,
        "GET /pins/{cid} (single)",
    );
    // The write endpoint is not covered by these faults.
    assert_eq!(pin(&sim, 0, &c, "name=again").status, 200);
    // Setting faults replaces all previous ones.
    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"errors":[{"endpoint":"id","status":500,"rate":1.0}]}"#,
    );
    assert_eq!(alloc(&sim, 0, &c).status, 200, "allocations fault replaced");
    assert_eq!(
        raw(sim.url(0), "DELETE", &format!("/pins/{c}"), &[], b"").status,
        200,
        "unpin fault replaced"
    );
    assert_fault(&raw(sim.url(0), "GET", "/id", &[], b""), 500, "GET /id");
}

#[test]
fn latency_is_added_to_every_response() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--latency", "300ms"]);
    for path in ["/version", "/id", "/health"] {
        let t = Instant::now();
        let r = raw(sim.url(0), "GET", path, &[], b"");
        let took = t.elapsed();
        assert!(r.status < 300, "GET {path}: {}", r.status);
        assert!(
            took >= Duration::from_millis(290),
            "GET {path} with --latency 300ms took {took:?}"
        );
    }
    // The control API can change it.
    sim.control("POST", "/_sim/faults", r#"{"latency_ms":600}"#);
    let t = Instant::now();
    assert_eq!(raw(sim.url(0), "GET", "/version", &[], b"").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(590), "latency_ms 600 took {:?}", t.elapsed());
    sim.control("DELETE", "/_sim/faults", "");
    let fastest = (0..3)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(raw(sim.url(0), "GET", "/version", &[], b"").status, 200);
            t.elapsed()
        })
        .min()
        .unwrap();
    assert!(
        fastest < Duration::from_millis(250),
        "latency cleared, yet the fastest request took {fastest:?}"
    );
}

#[test]
fn stream_cut_with_trailer_error() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--pins", "30", "--stream-cut", "10"]);
    for _ in 0..2 {
        let r = raw(sim.url(0), "GET", "/allocations", &[], b"");
        assert_eq!(r.status, 200, "a stream cut after items is still 200");
        assert!(r.complete, "trailer mode ends the chunked body properly");
        assert_eq!(r.ndjson().len(), 10, "cut after 10 items");
        assert!(
            r.header("Trailer").is_some_and(|t| t.eq_ignore_ascii_case("X-Stream-Error")),
            "Trailer: X-Stream-Error announced: {:?}",
            r.headers
        );
        let err = r.trailer("X-Stream-Error").expect("X-Stream-Error trailer present");
        assert!(!err.is_empty(), "X-Stream-Error trailer carries the error");
    }
}

#[test]
fn stream_cut_with_dropped_connection() {
    let sim =
        Sim::start(&["--peers", "1", "--lag", "0", "--pins", "30", "--stream-cut", "10:drop"]);
    let r = raw(sim.url(0), "GET", "/allocations", &[], b"");
    assert_eq!(r.status, 200);
    assert!(!r.complete, "drop mode: no terminating chunk");
    assert!(r.trailers.is_empty(), "drop mode: no trailers: {:?}", r.trailers);
    let n = whole_lines(&r).len();
    assert!(n <= 10, "drop mode: at most 10 items arrive, got {n}");
}

#[test]
fn stream_cut_via_control_api_counts_and_peers() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0", "--pins", "20"]);
    // No fault: the whole stream and an empty trailer.
    let full = raw(sim.url(0), "GET", "/allocations", &[], b"");
    assert_eq!(full.status, 200);
    assert_eq!(full.ndjson().len(), 20);
    assert_eq!(full.trailer("X-Stream-Error"), Some(""), "uncut stream: empty trailer present");

    sim.control(
        "POST",
        "/_sim/faults",
        r#"{"stream_cut":{"after":5,"mode":"trailer","count":1,"peers":["peer0"]}}"#,
    );
    let r = raw(sim.url(1), "GET", "/allocations", &[], b"");
    assert_eq!(r.ndjson().len(), 20, "peer1 is not in `peers`");
    assert_eq!(r.trailer("X-Stream-Error"), Some(""));
    let r = raw(sim.url(0), "GET", "/allocations", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.ndjson().len(), 5, "cut after 5 on peer0");
    assert!(
        !r.trailer("X-Stream-Error").unwrap_or("").is_empty(),
        "trailer error: {:?}",
        r.trailers
    );
    assert_eq!(
        r.ndjson()[..],
        full.ndjson()[..5],
        "the items before the cut are the stream's first items"
    );
    let r = raw(sim.url(0), "GET", "/allocations", &[], b"");
    assert_eq!(r.ndjson().len(), 20, "count=1: disarmed after one cut");
    assert_eq!(r.trailer("X-Stream-Error"), Some(""));

    sim.control("POST", "/_sim/faults", r#"{"stream_cut":{"after":3,"mode":"drop"}}"#);
    for peer in 0..2 {
        let r = raw(sim.url(peer), "GET", "/allocations", &[], b"");
        assert_eq!(r.status, 200);
        assert!(!r.complete, "drop mode on peer{peer}: no terminating chunk");
        assert!(whole_lines(&r).len() <= 3);
    }
}

#[test]
fn paused_peer_serves_stale_replica_until_resumed() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--pins", "5"]);
    sim.wait_converged(Duration::from_secs(5));
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let s = sim.state();
    assert_eq!(peer_state(&s, "peer2")["paused"], true, "{s}");
    assert_eq!(peer_state(&s, "peer0")["paused"], false, "{s}");

    let x = cid_of("faults/pause/x");
    let y = cid_of("faults/pause/y");
    assert_eq!(pin(&sim, 0, &x, "name=x").status, 200);
    wait_until(Duration::from_secs(3), "peer1 gets x", || has_pin(&sim, 1, &x));
    // A paused peer still answers, from its old replica.
    let r = raw(sim.url(2), "GET", "/allocations", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.ndjson().len(), 5, "peer2 keeps its 5 seeded pins and has not got x");
    // Writes to the paused peer apply locally but go nowhere.
    assert_eq!(pin(&sim, 2, &y, "name=y").status, 200);
    assert!(has_pin(&sim, 2, &y), "read-your-writes on the paused peer");
    sim.control("POST", "/_sim/rebroadcast", "");
    holds_for(Duration::from_millis(400), "no deliveries into or out of peer2", || {
        !has_pin(&sim, 2, &x) && !has_pin(&sim, 0, &y) && !has_pin(&sim, 1, &y)
    });
    assert_eq!(sim.state()["converged"], false);

    sim.control("POST", "/_sim/peers/peer2/resume", "");
    assert_eq!(peer_state(&sim.state(), "peer2")["paused"], false);
    sim.control("POST", "/_sim/rebroadcast", "");
    let s = sim.wait_converged(Duration::from_secs(5));
    for peer in 0..3 {
        assert!(
            has_pin(&sim, peer, &x) && has_pin(&sim, peer, &y),
            "peer{peer} has both after resume"
        );
        assert_eq!(s["peers"][peer]["pins"], 7, "{s}");
    }
}

#[test]
fn partition_holds_deliveries_across_the_boundary_until_healed() {
    let sim = Sim::start(&["--peers", "4", "--lag", "0"]);
    sim.control("POST", "/_sim/partition", r#"{"groups":[["peer0","peer1"],["peer2","peer3"]]}"#);
    let a = cid_of("faults/partition/a");
    let b = cid_of("faults/partition/b");
    assert_eq!(pin(&sim, 0, &a, "name=a").status, 200);
    assert_eq!(pin(&sim, 3, &b, "name=b").status, 200);
    wait_until(Duration::from_secs(3), "a reaches peer1 within its group", || has_pin(&sim, 1, &a));
    wait_until(Duration::from_secs(3), "b reaches peer2 within its group", || has_pin(&sim, 2, &b));
    sim.control("POST", "/_sim/rebroadcast", "");
    holds_for(Duration::from_millis(400), "nothing crosses the partition", || {
        !has_pin(&sim, 2, &a)
            && !has_pin(&sim, 3, &a)
            && !has_pin(&sim, 0, &b)
            && !has_pin(&sim, 1, &b)
    });
    let s = sim.state();
    assert_eq!(s["converged"], false, "{s}");
    assert_eq!(s["peers"][0]["digest"], s["peers"][1]["digest"], "same group, same replica: {s}");
    assert_eq!(s["peers"][2]["digest"], s["peers"][3]["digest"], "same group, same replica: {s}");
    assert_ne!(s["peers"][0]["digest"], s["peers"][2]["digest"], "different groups differ: {s}");

    sim.control("DELETE", "/_sim/partition", "");
    sim.control("POST", "/_sim/rebroadcast", "");
    let s = sim.wait_converged(Duration::from_secs(5));
    for peer in 0..4 {
        assert!(
            has_pin(&sim, peer, &a) && has_pin(&sim, peer, &b),
            "peer{peer} has both after healing"
        );
        assert_eq!(s["peers"][peer]["pins"], 2, "{s}");
    }
}

#[test]
fn restart_with_batching_loses_the_uncommitted_batch() {
    let sim =
        Sim::start(&["--peers", "2", "--lag", "0", "--batch-size", "100", "--batch-age", "1s"]);
    let lost = cid_of("faults/restart/lost");
    let kept = cid_of("faults/restart/kept");
    assert_eq!(pin(&sim, 0, &lost, "name=lost").status, 200, "batched write is acknowledged");
    assert_eq!(peer_state(&sim.state(), "peer0")["batch_pending"], 1);
    sim.control("POST", "/_sim/peers/peer0/restart", "");
    assert_eq!(peer_state(&sim.state(), "peer0")["batch_pending"], 0, "the batch is gone");
    // A write after the restart commits at its age; had the old batch survived it would have
    // committed no later than this one.
    assert_eq!(pin(&sim, 0, &kept, "name=kept").status, 200);
    wait_until(Duration::from_secs(5), "the post-restart batch commits by age", || {
        has_pin(&sim, 0, &kept)
    });
    let s = sim.wait_converged(Duration::from_secs(5));
    for peer in 0..2 {
        assert!(!has_pin(&sim, peer, &lost), "the uncommitted write is lost on peer{peer}");
        assert!(has_pin(&sim, peer, &kept));
        assert_eq!(s["peers"][peer]["pins"], 1, "{s}");
    }
}

/// Whether an HTTP request to `hostport` gets any response bytes at all.
fn answers(hostport: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(hostport) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET /version HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    !buf.is_empty()
}

#[test]
fn restart_with_down_serves_nothing_for_a_while() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0"]);
    let hostport = sim.url(1).trim_start_matches("http://").trim_end_matches('/').to_string();
    let t = Instant::now();
    sim.control("POST", "/_sim/peers/peer1/restart?down=1s", "");
    assert!(!answers(&hostport), "peer1 answers nothing while down");
    assert_eq!(peer_state(&sim.state(), "peer1")["down"], true);
    assert!(answers(sim.url(0).trim_start_matches("http://")), "peer0 is not affected");
    wait_until(Duration::from_secs(5), "peer1 comes back", || answers(&hostport));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "down for about 1s, back after {:?}",
        t.elapsed()
    );
    assert_eq!(raw(sim.url(1), "GET", "/version", &[], b"").status, 200);
    assert_eq!(peer_state(&sim.state(), "peer1")["down"], false);
}

#[test]
fn restart_with_down_refuses_tcp_connections() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0"]);
    let hostport = sim.url(1).trim_start_matches("http://").trim_end_matches('/').to_string();
    sim.control("POST", "/_sim/peers/peer1/restart?down=1s", "");
    match TcpStream::connect(&hostport) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!(
            "simulator.md: a restarting peer refuses connections for DUR, yet connect succeeded"
        ),
    }
    wait_until(Duration::from_secs(5), "peer1 accepts again", || {
        TcpStream::connect(&hostport).is_ok()
    });
}

#[test]
fn state_report_tracks_replicas_and_deliveries() {
    let sim = Sim::start(&["--peers", "3", "--pins", "20", "--lag", "400ms..400ms"]);
    let s = sim.state();
    let peers = s["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 3);
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(p["name"], sim.peers[i].name.as_str());
        assert_eq!(p["id"], sim.peers[i].id.as_str());
        assert_eq!(p["url"], sim.peers[i].url.as_str());
        assert_eq!(p["pins"], 20, "{s}");
        assert_eq!(p["paused"], false);
        assert_eq!(p["down"], false);
        assert_eq!(p["batch_pending"], 0);
        assert_eq!(p["digest"], peers[0]["digest"], "seeded replicas are identical: {s}");
        assert!(p["digest"].as_str().is_some_and(|d| !d.is_empty()), "digest is a string: {s}");
    }
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["lost"], 0);
    assert_eq!(s["converged"], true);
    let seeded_digest = peers[0]["digest"].clone();

    let c = cid_of("faults/state");
    assert_eq!(pin(&sim, 0, &c, "name=s").status, 200);
    let s = sim.state();
    assert_eq!(s["peers"][0]["pins"], 21, "writer applied at once: {s}");
    assert_eq!(s["peers"][1]["pins"], 20, "400ms lag: not yet on peer1: {s}");
    assert_eq!(s["in_flight"], 2, "one delivery per other peer in flight: {s}");
    assert_eq!(s["converged"], false);
    assert_ne!(s["peers"][0]["digest"], s["peers"][1]["digest"]);

    let s = sim.wait_converged(Duration::from_secs(5));
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["lost"], 0);
    for p in s["peers"].as_array().unwrap() {
        assert_eq!(p["pins"], 21, "{s}");
        assert_eq!(p["digest"], s["peers"][0]["digest"]);
        assert_ne!(p["digest"], seeded_digest, "digest changes with the replica");
    }

    // Unpinning returns to the seeded replica, and to its digest.
    assert_eq!(raw(sim.url(1), "DELETE", &format!("/pins/{c}"), &[], b"").status, 200);
    let s = sim.wait_converged(Duration::from_secs(5));
    for p in s["peers"].as_array().unwrap() {
        assert_eq!(p["pins"], 20);
        assert_eq!(p["digest"], seeded_digest, "same pins, same digest: {s}");
    }
}

#[test]
fn state_report_counts_lost_deliveries() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--drop", "1.0", "--rebroadcast", "60s"]);
    let c = cid_of("faults/lost");
    assert_eq!(pin(&sim, 0, &c, "").status, 200);
    wait_until(Duration::from_secs(3), "both deliveries are lost", || sim.state()["lost"] == 2);
    let s = sim.state();
    assert_eq!(s["converged"], false);
    assert_eq!(s["peers"][1]["pins"], 0);
    sim.control("POST", "/_sim/rebroadcast", "");
    let s = sim.wait_converged(Duration::from_secs(3));
    assert_eq!(s["lost"], 0);
    assert_eq!(s["peers"][2]["pins"], 1);
}

#[test]
fn state_converged_means_nothing_in_flight_or_lost() {
    let sim = Sim::start(&["--peers", "3", "--lag", "50ms..500ms", "--rebroadcast", "60s"]);
    let c = cid_of("faults/converged-invariant");
    assert_eq!(pin(&sim, 0, &c, "name=inv").status, 200);
    // Extra rebroadcasts schedule extra deliveries that may land after the first ones.
    for _ in 0..10 {
        sim.control("POST", "/_sim/rebroadcast", "");
    }
    let start = Instant::now();
    loop {
        let s = sim.state();
        let digests: std::collections::BTreeSet<String> =
            s["peers"].as_array().unwrap().iter().map(|p| p["digest"].to_string()).collect();
        if s["converged"] == true {
            assert_eq!(digests.len(), 1, "converged means identical digests: {s}");
            assert_eq!(s["in_flight"], 0, "simulator.md: converged means nothing in flight: {s}");
            assert_eq!(s["lost"], 0, "simulator.md: converged means nothing lost: {s}");
        }
        if s["converged"] == true || (digests.len() == 1 && s["in_flight"] == 0 && s["lost"] == 0) {
            assert_eq!(s["converged"], true, "identical replicas, nothing in flight or lost: {s}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never converged: {s}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
