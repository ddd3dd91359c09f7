//! `--discover` on the simulator: given one peer's URL, ledger finds the REST APIs of the other
//! members from the cluster's `GET /peers` (the hosts of their cluster addresses, at the given
//! peer's REST port or `--rest-port`), keeps only those whose `GET /id` answers with the member's
//! ID, and every command that reads the cluster reads them. The simulator runs with
//! `--distinct-hosts` (peer i on 127.0.0.1+i, one port), as a real cluster's members are on hosts
//! of their own. The real cluster's cases are in tests/realcluster.rs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use crate::util::{Out, Sim, ledger, sql_rows};

/// `ledger ARGS` on the ledger `db`, with info logs on stderr.
fn run(db: &Path, args: &[&str]) -> Out {
    let out = ledger()
        .env("LEDGER_LOG", "info")
        .arg("--db")
        .arg(db)
        .args(args)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    out.into()
}

/// The peer IDs and URLs a `snapshot --json` read.
fn read_peers(out: &Out) -> BTreeSet<(String, String)> {
    let v = out.json();
    v.as_array()
        .unwrap_or_else(|| panic!("snapshot --json is a list: {out:?}"))
        .iter()
        .map(|s| (s["peer"].as_str().unwrap().to_string(), s["peer_url"].as_str().unwrap().into()))
        .collect()
}

/// `(id, url)` of the simulator's peers `which`, URLs as ledger writes them (with a `/`).
fn peers_of(sim: &Sim, which: &[usize]) -> BTreeSet<(String, String)> {
    which.iter().map(|&i| (sim.peers[i].id.clone(), format!("{}/", sim.peers[i].url))).collect()
}

fn sim_distinct(peers: &str, extra: &[&str]) -> Sim {
    let mut args = vec!["--peers", peers, "--pins", "40", "--lag", "0", "--distinct-hosts"];
    args.extend_from_slice(extra);
    let sim = Sim::start(&args);
    // Every peer on a host of its own, one port.
    let hosts: BTreeSet<String> =
        sim.peers.iter().map(|p| p.url.rsplit_once(':').unwrap().0.into()).collect();
    let ports: BTreeSet<&str> =
        sim.peers.iter().map(|p| p.url.rsplit_once(':').unwrap().1).collect();
    assert_eq!((hosts.len(), ports.len()), (sim.peers.len(), 1), "{:?}", sim.peers);
    sim
}

#[test]
fn discover_finds_every_member_from_one_url_and_snapshot_reads_them_all() {
    let sim = sim_distinct("4", &[]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    // The simulator's /peers gives each member's own host, as a real cluster does.
    let peers = crate::util::raw(sim.url(0), "GET", "/peers", &[], b"").ndjson();
    for (i, p) in sim.peers.iter().enumerate() {
        let item = peers.iter().find(|x| x["id"] == p.id.as_str()).expect("listed");
        let want = format!("/ip4/127.0.0.{}/tcp/9096/p2p/{}", i + 1, p.id);
        assert_eq!(item["addresses"], serde_json::json!([want]), "{item}");
    }
    // Without --discover: the one peer given.
    let out = run(&db, &["--cluster", sim.url(0), "-q", "snapshot", "--all-peers", "--json"]);
    // Membership says so: the members it did not read are named, exit 1.
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("snapshotted 1 of 4 cluster peers; not read:"), "{}", out.stderr);
    assert_eq!(read_peers(&out), peers_of(&sim, &[0]));
    // With it: every member, each once, at its own host.
    let out =
        run(&db, &["--cluster", sim.url(0), "--discover", "snapshot", "--all-peers", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read_peers(&out), peers_of(&sim, &[0, 1, 2, 3]), "{}", out.stderr);
    assert_eq!(out.json().as_array().unwrap().len(), 4, "each member read once: {}", out.stdout);
    for (i, p) in sim.peers.iter().enumerate().skip(1) {
        let line = format!("member {} (peer{i}) discovered at {}/", p.id, p.url);
        assert!(out.stderr.contains(&line), "logged {line:?}: {}", out.stderr);
    }
    assert!(out.stderr.contains(&format!("member {} (peer0) is the peer given", sim.peers[0].id)));
    // A profile turns it on as well.
    let cfg = dir.path().join("ledger.toml");
    let toml = format!("[clusters.lab]\npeers = [\"{}\"]\ndiscover = true\n", sim.url(0));
    std::fs::write(&cfg, toml).unwrap();
    let out =
        run(&db, &["--config", cfg.to_str().unwrap(), "-q", "snapshot", "--all-peers", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read_peers(&out), peers_of(&sim, &[0, 1, 2, 3]));
}

#[test]
fn a_tag_run_given_one_url_verifies_every_member_discovered() {
    let sim = sim_distinct("3", &[]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let out = run(
        &db,
        &[
            "--cluster",
            sim.url(0),
            "--discover",
            "tag",
            "--org",
            "hrdag",
            "--settle",
            "0s",
            "--json",
        ],
    );
    assert!(out.code == 0 || out.code == 1, "{out:?}");
    // The run's verification snapshots: one series per member, all three.
    let q = "SELECT DISTINCT r.peer FROM snapshots s JOIN series r ON r.id = s.series_id \
             WHERE s.run_id IS NOT NULL ORDER BY 1";
    let verified: BTreeSet<String> = sql_rows(&db, q).into_iter().map(|r| r[0].clone()).collect();
    let all: BTreeSet<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    assert_eq!(verified, all, "{}", out.stderr);
}

#[test]
fn watch_all_peers_snapshots_every_member_discovered() {
    let sim = sim_distinct("3", &[]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let args = ["--cluster", sim.url(0), "--discover", "watch", "--every", "1s", "--all-peers"];
    let out = run(&db, &[&args[..], &["--rounds", "2"]].concat());
    assert_eq!(out.code, 0, "{out:?}");
    let q = "SELECT r.peer, count(*) FROM snapshots s JOIN series r ON r.id = s.series_id \
             WHERE s.state = 'complete' GROUP BY r.peer ORDER BY 1";
    let rows = sql_rows(&db, q);
    let mut want: Vec<Vec<String>> =
        sim.peers.iter().map(|p| vec![p.id.clone(), "2".to_string()]).collect();
    want.sort();
    assert_eq!(rows, want, "two rounds of every member: {}", out.stderr);
    // Discovery ran once, at the start.
    let line = format!("member {} (peer1) discovered at", sim.peers[1].id);
    assert_eq!(out.stderr.matches(&line).count(), 1, "{}", out.stderr);
}

#[test]
fn a_member_whose_id_answers_another_is_not_kept() {
    // peer3 announces peer1's host: its candidate answers peer1's ID.
    let sim = sim_distinct("4", &["--announce", "peer3=/ip4/127.0.0.2/tcp/9096"]);
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &dir.path().join("ledger.db"),
        &["--cluster", sim.url(0), "--discover", "snapshot", "--all-peers", "--json"],
    );
    assert_eq!(out.code, 1, "peer3 is a member not read: {out:?}");
    assert!(out.stderr.contains("snapshotted 3 of 4 cluster peers; not read:"), "{}", out.stderr);
    assert_eq!(read_peers(&out), peers_of(&sim, &[0, 1, 2]), "{}", out.stderr);
    assert_eq!(out.json().as_array().unwrap().len(), 3, "peer1 once: {}", out.stdout);
    let line = format!(
        "member {} (peer3) not discovered: http://127.0.0.2:{}/: /id answered another ID, {}",
        sim.peers[3].id,
        sim.url(0).rsplit_once(':').unwrap().1,
        sim.peers[1].id
    );
    assert!(out.stderr.contains(&line), "logged {line:?}: {}", out.stderr);
}

#[test]
fn members_without_a_reachable_rest_api_are_named_and_the_rest_are_read() {
    // peer2's only address is a host where nothing listens; peer3 is down, so /peers lists it
    // with its error and no address.
    let sim = sim_distinct("4", &["--announce", "peer2=/ip4/127.0.0.77/tcp/9096"]);
    sim.control("POST", "/_sim/peers/peer3/restart?down=120s", "");
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &dir.path().join("ledger.db"),
        &[
            "--cluster",
            sim.url(0),
            "--discover",
            "--timeout",
            "5s",
            "snapshot",
            "--all-peers",
            "--json",
        ],
    );
    assert_eq!(out.code, 1, "peer2 and peer3 are members not read: {out:?}");
    assert_eq!(read_peers(&out), peers_of(&sim, &[0, 1]), "{}", out.stderr);
    let port = sim.url(0).rsplit_once(':').unwrap().1;
    let p2 = format!(
        "member {} (peer2) not discovered: http://127.0.0.77:{port}/: no answer (cannot reach",
        sim.peers[2].id
    );
    assert!(out.stderr.contains(&p2), "logged {p2:?}: {}", out.stderr);
    let p3 =
        format!("member {} () not discovered: no address to try (listed with:", sim.peers[3].id);
    assert!(out.stderr.contains(&p3), "logged {p3:?}: {}", out.stderr);
}

/// A loopback port that copies every connection byte for byte to `upstream` (`host:port`).
fn forward(upstream: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let (Ok(a), Ok(b)) = (c, TcpStream::connect(&upstream)) else { continue };
            let copy = |mut r: TcpStream, mut w: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 || w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            };
            copy(a.try_clone().unwrap(), b.try_clone().unwrap());
            copy(b, a);
        }
    });
    format!("http://{addr}")
}

#[test]
fn rest_port_is_the_port_tried_on_the_members_hosts() {
    // The members listen on 127.0.0.21–23 at one port; ledger reaches peer0 through another port.
    let sim = sim_distinct("3", &["--listen", "127.0.0.21:0"]);
    let port = sim.url(0).rsplit_once(':').unwrap().1.to_string();
    let via = forward(sim.url(0).trim_start_matches("http://").to_string());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    // The given peer's port is tried on the members' hosts: nothing there.
    let out = run(&db, &["--cluster", &via, "--discover", "snapshot", "--all-peers", "--json"]);
    assert_eq!(out.code, 1, "peer1 and peer2 are members not read: {out:?}");
    let ids: BTreeSet<String> = read_peers(&out).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, BTreeSet::from([sim.peers[0].id.clone()]), "{}", out.stderr);
    // --rest-port: the members' own port; peer0, given through the other port, is not read twice.
    let out = run(
        &db,
        &[
            "--cluster",
            &via,
            "--discover",
            "--rest-port",
            &port,
            "snapshot",
            "--all-peers",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let mut want = peers_of(&sim, &[1, 2]);
    want.insert((sim.peers[0].id.clone(), format!("{via}/")));
    assert_eq!(read_peers(&out), want, "{}", out.stderr);
    // And in a profile.
    let cfg = dir.path().join("ledger.toml");
    let toml =
        format!("[clusters.lab]\npeers = [\"{via}\"]\ndiscover = true\nrest_port = {port}\n");
    std::fs::write(&cfg, toml).unwrap();
    let out =
        run(&db, &["--config", cfg.to_str().unwrap(), "-q", "snapshot", "--all-peers", "--json"]);
    assert_eq!(read_peers(&out), want, "{out:?}");
}

#[test]
fn a_bad_rest_port_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let url = "http://127.0.0.1:9";
    for (bad, says) in [
        ("0", "0 is not a port"),
        ("abc", "\"abc\" is not a TCP port"),
        ("65536", "\"65536\" is not a TCP port"),
        ("-1", "\"-1\" is not a TCP port"),
    ] {
        let out = run(&db, &["--cluster", url, "--discover", "--rest-port", bad, "snapshot"]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
    }
    // Without discovery a REST port means nothing: said, not ignored.
    let out = run(&db, &["--cluster", url, "--rest-port", "9094", "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("applies to --discover"), "{}", out.stderr);
    let cfg = dir.path().join("ledger.toml");
    std::fs::write(
        &cfg,
        format!("[clusters.lab]\npeers = [\"{url}\"]\ndiscover = true\nrest_port = 0\n"),
    )
    .unwrap();
    let out = run(&db, &["--config", cfg.to_str().unwrap(), "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("REST port 0 is not a port"), "{}", out.stderr);
    assert!(!db.exists(), "nothing was recorded");
}
