//! `ledger drift` and `watch --drift-after/--on-drift` (issue 13, points 4 and 6): replica drift
//! made on purpose — a paused peer, a partition, deliveries dropped with no rebroadcast, a restart
//! in batching mode on the simulator; a peer stopped and started again on the real cluster — is
//! listed pin by pin exactly as the peers serve it (which peers hold which version, which lack the
//! pin), from the snapshot where it started, with its age; `--older-than` decides exit 1; and once
//! the cluster heals, the next round lists nothing and the rounds' counts shrink.
//!
//! The truth every listing is held to is read from the cluster itself, peer by peer
//! (`GET /allocations?filter=all`) at the time of the round: the pins whose stored form differs
//! between peers, grouped by stored form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::case::Case;
use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use crate::util::*;

/// For each pin on which the peers disagree: the sets of peers that hold one version each, and the
/// peers that lack it.
type Drift = BTreeMap<String, (BTreeSet<BTreeSet<String>>, BTreeSet<String>)>;

/// The drift as the cluster serves it: every peer's pin set, grouped per CID by stored form.
fn served_drift(urls: &[String], ids: &[String], auth: &[(&str, &str)]) -> Drift {
    let sets: Vec<BTreeMap<String, Value>> = urls
        .iter()
        .map(|u| {
            let pins = sorted_pinset(u, auth);
            pins.into_iter().map(|p| (p["cid"].as_str().unwrap().to_string(), p)).collect()
        })
        .collect();
    let cids: BTreeSet<&String> = sets.iter().flat_map(|s| s.keys()).collect();
    let mut out = Drift::new();
    for cid in cids {
        let mut by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut lacking = BTreeSet::new();
        for (set, id) in sets.iter().zip(ids) {
            match set.get(cid) {
                Some(p) => by.entry(p.to_string()).or_default().insert(id.clone()),
                None => lacking.insert(id.clone()),
            };
        }
        if by.len() > 1 || !lacking.is_empty() {
            out.insert(cid.clone(), (by.into_values().collect(), lacking));
        }
    }
    out
}

/// The drift as `ledger drift --json` lists it.
fn listed_drift(report: &Value) -> Drift {
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
    };
    report["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("no drift list: {report}"))
        .iter()
        .map(|d| {
            let versions = d["versions"].as_array().unwrap().iter().map(|v| set(&v["peers"]));
            (d["cid"].as_str().unwrap().to_string(), (versions.collect(), set(&d["lacking"])))
        })
        .collect()
}

/// Each listed pin's since snapshot.
fn since_of(report: &Value) -> BTreeMap<String, i64> {
    report["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["cid"].as_str().unwrap().to_string(), d["since"]["snapshot"].as_i64().unwrap()))
        .collect()
}

/// The rounds' counts of a report.
fn counts(report: &Value) -> Vec<i64> {
    report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["disagreeing"].as_i64().unwrap())
        .collect()
}

/// A time the ledger wrote.
fn time(at: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&chrono::Utc)
}

/// Every listed age is now minus its since snapshot's start (within the time `drift` took), and
/// that start is the snapshot's own `started_at` in the ledger.
fn assert_ages(report: &Value, db: &Path, before: chrono::DateTime<chrono::Utc>, what: &str) {
    let after = chrono::Utc::now();
    for d in report["drift"].as_array().unwrap() {
        let since = d["since"]["snapshot"].as_i64().unwrap();
        let at = d["since"]["at"].as_str().unwrap();
        let stored = sql_rows(db, &format!("SELECT started_at FROM snapshots WHERE id = {since}"));
        assert_eq!(stored, vec![vec![at.to_string()]], "{what}: since.at of {}", d["cid"]);
        let age = d["age_seconds"].as_f64().unwrap();
        let lo = (before - time(at)).num_milliseconds() as f64 / 1000.0 - 0.002;
        let hi = (after - time(at)).num_milliseconds() as f64 / 1000.0 + 0.002;
        assert!(lo <= age && age <= hi, "{what}: age {age} of {} not in {lo}..{hi}", d["cid"]);
    }
}

/// `snapshot --all-peers --json`: the snapshot ids, in peer order (each complete).
fn round(run: &dyn Fn(&[&str]) -> Out, peers: usize) -> Vec<i64> {
    let out = run(&["snapshot", "--all-peers", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let reports = out.json();
    let ids: Vec<i64> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["complete"], true, "{r}");
            r["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), peers, "{reports}");
    ids
}

/// `drift --json ARGS`: its exit code and report, and when it started.
fn drift(
    run: &dyn Fn(&[&str]) -> Out,
    args: &[&str],
) -> (i32, Value, chrono::DateTime<chrono::Utc>) {
    let before = chrono::Utc::now();
    let out = run(&[&["drift", "--json"][..], args].concat());
    assert!(out.code == 0 || out.code == 1, "{out:?}");
    (out.code, out.json(), before)
}

/// A simulated cluster of `peers` peers holding 30 generated pins, with no lag and no rebroadcast
/// within the test (1h), so that nothing heals unless the test heals it; `extra` adds faults.
fn sim_case(peers: usize, extra: &[&str]) -> Case {
    let n = peers.to_string();
    let base = ["--peers", &n, "--pins", "30", "--lag", "0", "--rebroadcast", "1h"];
    Case::start(&[&base[..], extra].concat())
}

fn ids(c: &Case) -> Vec<String> {
    c.sim.peers.iter().map(|p| p.id.clone()).collect()
}

fn urls(c: &Case) -> Vec<String> {
    c.sim.peers.iter().map(|p| p.url.clone()).collect()
}

/// `n` CIDs that every peer holds (of the generated pins).
fn some_cids(c: &Case, n: usize) -> Vec<String> {
    c.pins().iter().take(n).map(|p| p["cid"].as_str().unwrap().to_string()).collect()
}

/// Re-pins `cid` on peer `p` with new metadata, or pins a new one.
fn write(c: &Case, p: usize, cid: &str, tag: &str) {
    let r =
        raw(c.sim.url(p), "POST", &format!("/pins/{cid}?name={tag}&meta-drift={tag}"), &[], b"");
    assert_eq!(r.status, 200, "POST on peer{p}: {}", r.text());
}

/// Waits until peer `p` serves `cid` with `name`.
fn wait_shows(c: &Case, p: usize, cid: &str, name: &str) {
    wait_until(Duration::from_secs(30), &format!("peer{p} to show {cid} named {name}"), || {
        let r = raw(c.sim.url(p), "GET", &format!("/allocations/{cid}"), &[], b"");
        r.status == 200 && r.json()["name"] == name
    });
}

/// Heals everything that a rebroadcast can: every peer re-announces its state now.
fn rebroadcast_and_converge(c: &Case) {
    c.sim.control("POST", "/_sim/rebroadcast", "");
    c.sim.wait_converged(Duration::from_secs(30));
}

/// The drift listed equals the drift served, and is what the test made.
fn assert_listed(c: &Case, report: &Value, made: &Drift, what: &str) {
    let served = served_drift(&urls(c), &ids(c), &[]);
    assert_eq!(&served, made, "{what}: the cluster serves the drift the test made");
    assert_eq!(&listed_drift(report), made, "{what}: drift --json lists it: {report}");
    assert_eq!(report["count"].as_u64(), Some(made.len() as u64), "{what}");
}

/// One version held by `holders`, the other by `others`; nobody lacks it.
fn split(
    holders: &[&String],
    others: &[&String],
) -> (BTreeSet<BTreeSet<String>>, BTreeSet<String>) {
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
    ([set(holders), set(others)].into_iter().collect(), BTreeSet::new())
}

/// The JSON of `ledger drift --json`, as the README documents it: strict, so that a field added,
/// renamed or dropped fails here.
#[allow(dead_code)]
mod contract {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Report {
        pub cluster: String,
        pub at: String,
        pub older_than: String,
        pub stale_after: String,
        pub known: u64,
        pub compared: u64,
        pub every_peer: bool,
        pub peers: Vec<Peer>,
        pub drift: Vec<Disagreement>,
        pub count: u64,
        pub older: u64,
        pub rounds: Vec<Round>,
        pub trend: String,
        pub healing: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Peer {
        pub peer: String,
        pub peer_url: Option<String>,
        pub compared: bool,
        pub snapshot: Option<i64>,
        pub at: Option<String>,
        pub reason: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct At {
        pub snapshot: i64,
        pub at: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Disagreement {
        pub cid: String,
        pub since: At,
        pub age_seconds: f64,
        pub older: bool,
        pub versions: Vec<Version>,
        pub lacking: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Version {
        pub digest: String,
        pub name: String,
        pub metadata: serde_json::Map<String, serde_json::Value>,
        pub cluster_timestamp: Option<String>,
        pub peers: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Round {
        pub round: u64,
        pub first_snapshot: i64,
        pub last_snapshot: i64,
        pub at: String,
        pub peers: u64,
        pub disagreeing: u64,
    }
}

// ------------------------------------------------------------------------------------------------
// The simulator's faults

/// A partition: two re-pins on peer0's side, a new pin on peer2's. Listed with the peers per
/// version and the lacking ones, from the snapshot of the round that first showed each (peer0's
/// for the re-pins, peer2's for the new pin); the age grows; exit 1 only past `--older-than`;
/// healed, the next round lists nothing and the counts shrink.
#[test]
fn a_partition_is_listed_with_its_peers_and_since_and_disappears_after_healing() {
    let c = sim_case(3, &[]);
    let run = |a: &[&str]| c.run(a);
    let id = ids(&c);
    round(&run, 3);
    let (code, r, _) = drift(&run, &[]);
    assert_eq!((code, r["count"].as_u64(), r["every_peer"].as_bool()), (0, Some(0), Some(true)));

    c.sim.control("POST", "/_sim/partition", r#"{"groups":[["peer0","peer1"],["peer2"]]}"#);
    let cids = some_cids(&c, 2);
    for cid in &cids {
        write(&c, 0, cid, "moved");
        wait_shows(&c, 1, cid, "moved");
    }
    let fresh = cid_of("drift/partition/new");
    write(&c, 2, &fresh, "only-on-peer2");
    let r2 = round(&run, 3);
    let mut made = Drift::new();
    for cid in &cids {
        made.insert(cid.clone(), split(&[&id[0], &id[1]], &[&id[2]]));
    }
    let lacks: BTreeSet<String> = [id[0].clone(), id[1].clone()].into();
    made.insert(fresh.clone(), ([[id[2].clone()].into()].into(), lacks));

    let (code, r, before) = drift(&run, &[]);
    assert_eq!(code, 0, "younger than 10m: no attention: {r}");
    assert_listed(&c, &r, &made, "partitioned");
    let strict: contract::Report = serde_json::from_value(r.clone()).expect("the documented JSON");
    assert!(strict.drift.iter().all(|d| d.versions.iter().all(|v| v.digest.len() == 32)));
    assert!(["healing", "growing", "steady", "agreed", "unknown"].contains(&strict.trend.as_str()));
    let want: BTreeMap<String, i64> =
        [(cids[0].clone(), r2[0]), (cids[1].clone(), r2[0]), (fresh.clone(), r2[2])].into();
    assert_eq!(since_of(&r), want, "since: the snapshot that first showed each: {r}");
    assert_ages(&r, &c.db(), before, "partitioned");
    for d in r["drift"].as_array().unwrap() {
        assert_eq!(d["older"], false, "{d}");
        let names: BTreeSet<&str> =
            d["versions"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert!(names.contains("moved") || names == ["only-on-peer2"].into(), "{d}");
    }
    let moved = r["drift"].as_array().unwrap().iter().find(|d| d["cid"] == cids[0]).unwrap();
    let v = moved["versions"].as_array().unwrap();
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["metadata"]["drift"].as_str()),
        (Some("moved"), Some("moved"))
    );
    assert_eq!(v[0]["peers"].as_array().unwrap().len(), 2, "the version two peers hold first");

    // Older than 0s: attention. The ages grow with a round later; the since stays.
    std::thread::sleep(Duration::from_millis(300));
    let (code, r_old, _) = drift(&run, &["--older-than", "0s"]);
    assert_eq!((code, r_old["older"].as_u64()), (1, Some(3)), "{r_old}");
    let (code, _, _) = drift(&run, &["--older-than", "1h"]);
    assert_eq!(code, 0);
    let first_age = r["drift"][0]["age_seconds"].as_f64().unwrap();
    round(&run, 3);
    let (_, r3, before) = drift(&run, &[]);
    assert_listed(&c, &r3, &made, "still partitioned");
    assert_eq!(since_of(&r3), want, "a round later, the same since");
    assert_ages(&r3, &c.db(), before, "still partitioned");
    assert!(r3["drift"][0]["age_seconds"].as_f64().unwrap() > first_age + 0.25, "{r3}");
    assert_eq!(counts(&r3), vec![0, 3, 3], "{r3}");
    assert_eq!(r3["trend"], "steady");

    // The table and the CSV say the same.
    let table = c.run(&["drift"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table.stdout.contains("compared 3 of 3 peers the ledger knows (every peer)"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(&fresh) && table.stdout.contains("(lacks it)"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("3 pins disagree, 0 for longer than 10m"), "{}", table.stdout);
    let csv = c.run(&["drift", "--csv"]);
    let (header, rows) = csv_maps(csv.stdout.as_bytes());
    assert_eq!(
        header.join(","),
        "cid,since_snapshot,since_at,age_seconds,older,state,digest,name,metadata,cluster_timestamp,peers"
    );
    assert_eq!(rows.len(), 6, "two rows per pin: {}", csv.stdout);
    let lack = rows.iter().find(|r| r["cid"] == fresh && r["state"] == "lacks").unwrap();
    assert_eq!(lack["peers"], format!("{} {}", id[0], id[1]));
    assert_eq!(lack["since_snapshot"], r2[2].to_string());

    // Healed: the next round lists nothing, and the counts shrink.
    c.sim.control("DELETE", "/_sim/partition", "");
    rebroadcast_and_converge(&c);
    round(&run, 3);
    let (code, r, _) = drift(&run, &["--older-than", "0s"]);
    assert_eq!(code, 0, "nothing disagrees: {r}");
    assert_listed(&c, &r, &Drift::new(), "healed");
    assert_eq!(counts(&r), vec![0, 3, 3, 0]);
    assert_eq!((r["trend"].as_str(), r["healing"].as_bool()), (Some("healing"), Some(true)));
}

/// Two peers paused one after the other: the pins written while each was paused are listed with
/// the peers that lack the new version; resumed one at a time, the count shrinks round by round
/// (4 → 2 → 0), and the pins that still disagree keep their since.
#[test]
fn paused_peers_heal_one_at_a_time_and_the_count_shrinks() {
    let c = sim_case(4, &[]);
    let run = |a: &[&str]| c.run(a);
    let id = ids(&c);
    round(&run, 4);
    let cids = some_cids(&c, 4);
    c.sim.control("POST", "/_sim/peers/peer2/pause", "");
    for cid in &cids[..2] {
        write(&c, 0, cid, "a");
        wait_shows(&c, 3, cid, "a");
    }
    c.sim.control("POST", "/_sim/peers/peer3/pause", "");
    for cid in &cids[2..] {
        write(&c, 0, cid, "b");
        wait_shows(&c, 1, cid, "b");
    }
    let r2 = round(&run, 4);
    let mut made = Drift::new();
    for cid in &cids[..2] {
        made.insert(cid.clone(), split(&[&id[0], &id[1], &id[3]], &[&id[2]]));
    }
    for cid in &cids[2..] {
        made.insert(cid.clone(), split(&[&id[0], &id[1]], &[&id[2], &id[3]]));
    }
    let (_, r, before) = drift(&run, &[]);
    assert_listed(&c, &r, &made, "peer2 and peer3 paused");
    assert!(since_of(&r).values().all(|s| *s == r2[0]), "since peer0's snapshot: {r}");
    assert_ages(&r, &c.db(), before, "paused");

    c.sim.control("POST", "/_sim/peers/peer2/resume", "");
    c.sim.control("POST", "/_sim/rebroadcast", "");
    for cid in &cids[..2] {
        wait_shows(&c, 2, cid, "a");
    }
    for cid in &cids[2..] {
        wait_shows(&c, 2, cid, "b");
    }
    round(&run, 4);
    let (_, r, _) = drift(&run, &[]);
    made.retain(|cid, _| cids[2..].contains(cid));
    for cid in &cids[2..] {
        made.insert(cid.clone(), split(&[&id[0], &id[1], &id[2]], &[&id[3]]));
    }
    assert_listed(&c, &r, &made, "peer2 resumed");
    assert!(since_of(&r).values().all(|s| *s == r2[0]), "unbroken since: {r}");
    assert_eq!(counts(&r), vec![0, 4, 2]);
    assert_eq!(r["trend"], "healing");

    c.sim.control("POST", "/_sim/peers/peer3/resume", "");
    rebroadcast_and_converge(&c);
    round(&run, 4);
    let (_, r, _) = drift(&run, &[]);
    assert_listed(&c, &r, &Drift::new(), "both resumed");
    assert_eq!(counts(&r), vec![0, 4, 2, 0]);
}

/// Every delivery dropped and no rebroadcast: peer0's re-pins stay on peer0 alone. Listed; a peer
/// whose latest snapshot is incomplete (a cut stream) is left out and named, and then no "every
/// peer" is claimed; so is a peer older than `--stale-after`; healed by a rebroadcast, nothing.
#[test]
fn dropped_deliveries_without_rebroadcast_are_listed_and_unreadable_peers_named() {
    let c = sim_case(3, &["--drop", "1"]);
    let run = |a: &[&str]| c.run(a);
    let id = ids(&c);
    round(&run, 3);
    let cids = some_cids(&c, 2);
    for cid in &cids {
        write(&c, 0, cid, "dropped");
    }
    std::thread::sleep(Duration::from_millis(200));
    let r2 = round(&run, 3);
    let mut made = Drift::new();
    for cid in &cids {
        made.insert(cid.clone(), split(&[&id[0]], &[&id[1], &id[2]]));
    }
    let (code, r, before) = drift(&run, &["--older-than", "0s"]);
    assert_eq!(code, 1, "older than 0s: {r}");
    assert_listed(&c, &r, &made, "dropped");
    assert!(since_of(&r).values().all(|s| *s == r2[0]), "{r}");
    assert_ages(&r, &c.db(), before, "dropped");

    // peer2's stream cut: its latest snapshot is incomplete, so it is not compared.
    c.faults(r#"{"stream_cut":{"after":5,"mode":"trailer","peers":["peer2"]}}"#);
    let out = c.run(&["snapshot", "--all-peers"]);
    assert_eq!(out.code, 2, "{out:?}");
    c.clear_faults();
    let (_, r, _) = drift(&run, &[]);
    assert_eq!(
        (r["known"].as_u64(), r["compared"].as_u64(), r["every_peer"].as_bool()),
        (Some(3), Some(2), Some(false))
    );
    let p2 = r["peers"].as_array().unwrap().iter().find(|p| p["peer"] == id[2]).unwrap();
    assert_eq!(p2["compared"], false);
    assert!(p2["reason"].as_str().unwrap().contains("is incomplete"), "{p2}");
    let mut two = Drift::new();
    for cid in &cids {
        two.insert(cid.clone(), split(&[&id[0]], &[&id[1]]));
    }
    assert_eq!(listed_drift(&r), two, "only the compared peers: {r}");
    let table = c.run(&["drift"]);
    assert!(table.stdout.contains("compared 2 of 3 peers the ledger knows\n"), "{}", table.stdout);
    assert!(!table.stdout.contains("every peer"), "{}", table.stdout);
    assert!(table.stdout.contains("not compared: 12D3Ko"), "{}", table.stdout);

    // Every peer read again; --stale-after 1ms leaves out all but the newest.
    let r3 = round(&run, 3);
    let (_, r, _) = drift(&run, &["--stale-after", "1ms"]);
    let compared: Vec<i64> = r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["compared"] == true)
        .map(|p| p["snapshot"].as_i64().unwrap())
        .collect();
    assert_eq!(compared, vec![r3[2]], "{r}");
    assert!(r["peers"][0]["reason"].as_str().unwrap().contains("--stale-after"), "{r}");
    assert_eq!(r["count"], 0, "one peer compared: nothing to disagree with: {r}");

    rebroadcast_and_converge(&c);
    round(&run, 3);
    let (code, r, _) = drift(&run, &["--older-than", "0s"]);
    assert_eq!(code, 0);
    assert_listed(&c, &r, &Drift::new(), "rebroadcast");
    assert_eq!(*counts(&r).last().unwrap(), 0);
    assert_eq!(r["trend"], "healing", "{r}");
}

/// Batching on: peer2 restarted (down 2 s) while peer0 commits a batch of re-pins, which peer2
/// never gets; peer1's own uncommitted write is lost by its restart — on every peer, so it is no
/// drift. Listed; healed by a rebroadcast.
#[test]
fn a_restart_in_batching_mode_leaves_drift_that_a_rebroadcast_heals() {
    let c = sim_case(3, &["--batch-size", "2", "--batch-age", "1h"]);
    let run = |a: &[&str]| c.run(a);
    let id = ids(&c);
    round(&run, 3);
    let cids = some_cids(&c, 3);
    c.sim.control("POST", "/_sim/peers/peer2/restart?down=3s", "");
    write(&c, 0, &cids[0], "batched");
    write(&c, 0, &cids[1], "batched");
    wait_shows(&c, 1, &cids[1], "batched");
    write(&c, 1, &cids[2], "lost-in-batch");
    c.sim.control("POST", "/_sim/peers/peer1/restart", "");
    wait_until(Duration::from_secs(30), "peer2 to answer again", || {
        try_raw(c.sim.url(2), "GET", "/id", &[], b"").is_ok_and(|r| r.status == 200)
    });
    let r2 = round(&run, 3);
    let mut made = Drift::new();
    for cid in &cids[..2] {
        made.insert(cid.clone(), split(&[&id[0], &id[1]], &[&id[2]]));
    }
    let (_, r, before) = drift(&run, &[]);
    assert_listed(&c, &r, &made, "after the restarts");
    assert!(since_of(&r).values().all(|s| *s == r2[0]), "{r}");
    assert_ages(&r, &c.db(), before, "batching");

    rebroadcast_and_converge(&c);
    round(&run, 3);
    let (_, r, _) = drift(&run, &[]);
    assert_listed(&c, &r, &Drift::new(), "rebroadcast");
    assert_eq!(counts(&r), vec![0, 2, 0]);
}

/// `watch --drift-after 0s --on-drift 'cat >> FILE'` hands each disagreement once: the ones it
/// finds in its first round then, one made between rounds in a later round, none twice.
#[test]
fn watch_hands_each_disagreement_to_on_drift_once() {
    let c = sim_case(3, &[]);
    let run = |a: &[&str]| c.run(a);
    round(&run, 3);
    c.sim.control("POST", "/_sim/partition", r#"{"groups":[["peer0","peer1"],["peer2"]]}"#);
    let cids = some_cids(&c, 2);
    for cid in &cids {
        write(&c, 0, cid, "moved");
        wait_shows(&c, 1, cid, "moved");
    }
    let file = c.dir.path().join("drift.json");
    let hook = format!("cat >> {}", file.display());
    let args = ["watch", "--every", "1500ms", "--all-peers", "--rounds", "3"];
    let mut w = c.spawn(&[&args[..], &["--drift-after", "0s", "--on-drift", &hook]].concat());
    wait_until(Duration::from_secs(30), "the watch's first round", || {
        c.count("SELECT count(*) FROM snapshots WHERE state = 'complete'") >= 6
    });
    let later = cid_of("drift/watch/later");
    write(&c, 2, &later, "later");
    let out = w.wait(Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let reports: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.unwrap())
        .collect();
    let handed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r["drift"].as_array().unwrap().iter().map(|d| d["cid"].as_str().unwrap().to_string())
        })
        .collect();
    let mut want = cids.clone();
    want.push(later.clone());
    let mut sorted = handed.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "each disagreement once: {text}");
    assert_eq!(reports.len(), 2, "the first round's two, then the later one: {text}");
    assert_eq!(reports[0]["count"], 2, "{}", reports[0]);
    assert_eq!(reports[1]["drift"][0]["cid"], later.as_str());
    assert_eq!(reports[1]["drift"][0]["lacking"].as_array().unwrap().len(), 2);
    assert_eq!(out.stderr.matches("the peers disagree").count(), 3, "{}", out.stderr);
    // A drift older than the bound is handed; one younger is not.
    let mut w = c.spawn(&[
        "watch",
        "--every",
        "1s",
        "--all-peers",
        "--rounds",
        "1",
        "--drift-after",
        "1h",
        "--on-drift",
        &hook,
    ]);
    let out = w.wait(Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "nothing has lasted an hour");
}

/// The `--on-drift` hook gets the environment `--on-loss` gets: no credential, `LEDGER_DB`.
#[test]
fn the_drift_hook_gets_no_credential() {
    let c = sim_case(2, &[]);
    round(&|a: &[&str]| c.run(a), 2);
    c.sim.control("POST", "/_sim/peers/peer1/pause", "");
    write(&c, 0, &some_cids(&c, 1)[0], "moved");
    let dump = c.dir.path().join("hook.env");
    let hook = format!("cat > /dev/null; env > {}", dump.display());
    let out = ledger()
        .current_dir(c.dir.path())
        .env("LEDGER_BASIC_AUTH", "ops:pw-basic")
        .env("LEDGER_TOKEN", "tok-secret")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
        .env("HOME", "/home/ops")
        .args(["--db", "ledger.db", "--cluster", &c.urls(), "watch", "--every", "1s"])
        .args(["--all-peers", "--rounds", "1", "--drift-after", "0s", "--on-drift", &hook])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let out = Out::from(out);
    assert_eq!(out.code, 0, "{out:?}");
    let seen =
        std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("the hook ran: {e}; {out:?}"));
    for secret in ["pw-basic", "tok-secret", "aws-secret"] {
        assert!(!seen.contains(secret), "the hook was handed {secret}:\n{seen}");
    }
    let has = |line: &str| seen.lines().any(|l| l == line);
    assert!(has("LEDGER_DB=ledger.db"), "the ledger it watches, as given:\n{seen}");
    assert!(has("HOME=/home/ops") && has("TZ=UTC"), "{seen}");
}

/// Bad input: exit 2 with a message.
#[test]
fn drift_refuses_bad_input() {
    let c = sim_case(2, &[]);
    for (args, said) in [
        (&["drift", "--older-than", "-1s"][..], "durations cannot be negative"),
        (&["drift", "--stale-after", "0s"][..], "longer than 0s"),
        (&["drift", "--rounds", "0"][..], "0"),
        (&["drift", "--json", "--csv"][..], "cannot be used with"),
        (&["drift"][..], "there is no ledger"),
        (&["watch", "--every", "1s", "--on-drift", "true"][..], "--drift-after"),
    ] {
        let out = c.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(said), "{args:?}: {}", out.stderr);
    }
    // A ledger with snapshots of another cluster only.
    let other = Case::start(&["--peers", "1", "--pins", "3", "--lag", "0"]);
    let o = ledger()
        .current_dir(c.dir.path())
        .args(["--db", "ledger.db", "--cluster", other.sim.url(0), "snapshot"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = c.run(&["drift"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("holds no snapshot of a peer of the cluster"), "{}", out.stderr);
}

// ------------------------------------------------------------------------------------------------
// The real cluster

/// A real 3-peer cluster (rebroadcast every 10 minutes: nothing heals by itself within the test).
/// peer2's daemon stopped, three pins re-pinned with new metadata on peer0, peer2 started again:
/// it comes back without them, as a restarted peer stays until the next broadcast reaches it.
/// `drift` lists exactly the pins the peers serve differently, peer0 and peer1 holding the new
/// version and peer2 the old, since peer0's snapshot of that round, with the right ages; one more
/// write broadcasts a new head, peer2 catches up, and the next round lists nothing.
#[test]
fn real_a_restarted_peer_s_drift_is_listed_and_disappears_after_healing() {
    if !available(V1_1_6) {
        return;
    }
    let opts = RealOptions { rebroadcast: Some("10m".into()), ..RealOptions::new(V1_1_6, 3) };
    let mut rc = RealCluster::start(opts);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let log = |what: &str| eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    let cluster = rc.urls();
    let run = |a: &[&str]| -> Out {
        let o = ledger()
            .current_dir(dir.path())
            .args(["--db", "ledger.db", "--cluster", &cluster, "--timeout", "10s"])
            .args(a)
            .timeout(Duration::from_secs(90))
            .output()
            .expect("run ledger");
        Out::from(o)
    };
    let ids: Vec<String> = rc.peers.iter().map(|p| p.id.clone()).collect();
    let urls: Vec<String> = rc.peers.iter().map(|p| p.url.clone()).collect();
    let post = |rc: &RealCluster, path: &str| {
        let r = raw(rc.url(0), "POST", path, &rc.auth(), b"");
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    };
    let cids: Vec<String> = (0..8).map(|i| cid_of(&format!("drift-real/{i}"))).collect();
    // Written slowly: the last broadcasts of a burst can be lost until a rebroadcast, which
    // this cluster does not make within the test.
    for (i, cid) in cids.iter().enumerate() {
        post(&rc, &format!("/pins/{cid}?name=pin-{i}&meta-project=p"));
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(Duration::from_secs(90), "every peer to hold the 8 pins", || {
        rc.wait_converged(Duration::from_secs(90)).len() >= 8
    });
    round(&run, 3);
    let (_, r, _) = drift(&run, &[]);
    assert_eq!(r["count"], 0, "{r}");

    rc.stop_peer(2);
    log("peer2 stopped");
    for cid in &cids[..3] {
        post(&rc, &format!("/pins/{cid}?name=moved&meta-project=moved"));
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(Duration::from_secs(90), "peer1 to show the 3 re-pins", || {
        let pins = served_pins(rc.url(1), &rc.auth());
        cids[..3].iter().all(|c| pins.get(c).is_some_and(|(n, _)| n == "moved"))
    });
    rc.start_peer(2);
    log("peer2 started again");
    let r2 = round(&run, 3);
    let served = served_drift(&urls, &ids, &rc.auth());
    let mut made = Drift::new();
    for cid in &cids[..3] {
        made.insert(cid.clone(), split(&[&ids[0], &ids[1]], &[&ids[2]]));
    }
    assert_eq!(
        served, made,
        "peer2 came back without the re-pins (it catches up only on a new broadcast)"
    );
    let (code, r, before) = drift(&run, &[]);
    assert_eq!(code, 0, "younger than 10m: {r}");
    assert_eq!(listed_drift(&r), made, "{r}");
    assert!(since_of(&r).values().all(|s| *s == r2[0]), "since peer0's snapshot: {r}");
    assert_ages(&r, &dir.path().join("ledger.db"), before, "real");
    let moved = &r["drift"][0]["versions"][0];
    assert_eq!(
        (moved["name"].as_str(), moved["metadata"]["project"].as_str()),
        (Some("moved"), Some("moved"))
    );
    let (code, r, _) = drift(&run, &["--older-than", "0s"]);
    assert_eq!((code, r["older"].as_u64()), (1, Some(3)));

    // A further write broadcasts a new head: peer2 fetches what it lacks.
    post(&rc, &format!("/pins/{}?name=heal", cid_of("drift-real/heal")));
    wait_until(Duration::from_secs(90), "peer2 to catch up", || {
        served_drift(&urls, &ids, &rc.auth()).is_empty()
    });
    log("peer2 caught up");
    round(&run, 3);
    let (code, r, _) = drift(&run, &["--older-than", "0s"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(listed_drift(&r), Drift::new(), "{r}");
    assert_eq!(counts(&r), vec![0, 3, 0], "{r}");
    assert_eq!(r["trend"], "healing");
    rc.assert_loopback_only();
}
