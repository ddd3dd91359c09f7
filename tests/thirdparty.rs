//! A real third-party IPFS Cluster client, the npm package `@nftstorage/ipfs-cluster`, pins with
//! metadata and lists the pin set against `ledger sim serve`, and adds files and a directory
//! through `/add` (`tests/thirdparty/add.mjs`), on the simulator and on a real cluster.
//!
//! `tests/thirdparty/client.mjs` drives the library and prints what it saw as one JSON object; these
//! tests check that against what was sent and, independently over raw HTTP, against what the
//! simulator stored. They need Node >= 18 and npm: the first of them runs `tests/thirdparty/setup.sh`
//! (idempotent; it installs the locked package from the npm registry), so `cargo test` is enough on a
//! new machine with Node. Without Node or npm they are skipped with one line (a failure under
//! `LEDGER_TEST_STRICT=1`); a failed install fails.

use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SETUP_HINT: &str =
    "tests/thirdparty/setup.sh (needs node >= 18 and npm) must install the package";

/// Node.js and npm are here (or the test is skipped, or fails under `LEDGER_TEST_STRICT=1`).
fn node() -> bool {
    const FIX: &str = "apt-get install nodejs npm (Node >= 18)";
    have("node", "--version", FIX) && have("npm", "--version", FIX)
}

/// Runs `tests/thirdparty/setup.sh` once per test process (the tests run in parallel; one install).
fn setup() {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let done = DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(thirdparty_dir().join("setup.sh"))
            .output()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = done {
        panic!("tests/thirdparty/setup.sh failed: {e}");
    }
}

fn thirdparty_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("thirdparty")
}

/// Run `node tests/thirdparty/client.mjs URL EXTRA...`; returns (exit status success, its JSON line).
fn run_client(url: &str, extra: &[&str]) -> (bool, Value) {
    setup();
    let dir = thirdparty_dir();
    let lib = dir.join("node_modules/@nftstorage/ipfs-cluster/package.json");
    assert!(lib.is_file(), "{} is missing: {SETUP_HINT}", lib.display());
    let out = Command::new("node")
        .arg(dir.join("client.mjs"))
        .arg(url)
        .args(extra)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): {SETUP_HINT}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client.mjs ({}) printed no JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        )
    });
    (out.status.success(), json)
}

/// Like `run_client`, but the library must not have failed.
fn run_client_ok(url: &str, extra: &[&str]) -> Value {
    let (ok, out) = run_client(url, extra);
    assert!(
        ok,
        "the library failed against the simulator: {}",
        serde_json::to_string_pretty(&out).unwrap()
    );
    out
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("not a string: {x}")).to_string())
        .collect()
}

/// The query pairs of the one request the library sent with this method and path.
fn sent_query(out: &Value, method: &str, path: &str) -> Vec<(String, String)> {
    let reqs: Vec<&Value> = out["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == method
                && url::Url::parse(r["url"].as_str().unwrap()).unwrap().path() == path
        })
        .collect();
    assert_eq!(reqs.len(), 1, "expected one {method} {path} in {}", out["requests"]);
    let u = url::Url::parse(reqs[0]["url"].as_str().unwrap()).unwrap();
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Allocations for a replication factor pair on a healthy cluster of `peers`.
fn check_allocations(what: &str, sent: &Value, allocations: &Value, peers: &[&str]) {
    let got = strs(allocations);
    let (min, max) = (
        sent["replicationFactorMin"].as_i64().unwrap(),
        sent["replicationFactorMax"].as_i64().unwrap(),
    );
    if min == -1 {
        assert!(got.is_empty(), "{what}: rf -1 must give allocations [], got {got:?}");
        return;
    }
    let distinct: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), got.len(), "{what}: duplicate allocations {got:?}");
    assert!(
        distinct.iter().all(|p| peers.contains(p)),
        "{what}: allocations {got:?} are not peers {peers:?}"
    );
    let want = usize::try_from(max).unwrap().min(peers.len());
    assert!(got.len() >= usize::try_from(min).unwrap(), "{what}: fewer than rf min {min}: {got:?}");
    assert_eq!(got.len(), want, "{what}: rf {min}/{max} on {} healthy peers: {got:?}", peers.len());
}

/// The library's status entries (GET /pins or /pins/{cid}) by CID.
fn statuses_by_cid(v: &Value) -> std::collections::BTreeMap<String, Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| (s["cid"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

/// Every peer has an entry; allocated peers are on their way to pinned, the others are `remote`.
fn check_status(what: &str, status: &Value, allocations: &[String], peers: &[&str]) {
    let map =
        status["peerMap"].as_object().unwrap_or_else(|| panic!("{what}: no peerMap: {status}"));
    let keys: BTreeSet<&str> = map.keys().map(String::as_str).collect();
    assert_eq!(keys, peers.iter().copied().collect::<BTreeSet<_>>(), "{what}: peer_map keys");
    for (peer, info) in map {
        let st = info["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no status for {peer}: {info}"));
        if allocations.is_empty() || allocations.contains(peer) {
            assert!(
                ["pin_queued", "pinning", "pinned"].contains(&st),
                "{what}: allocated peer {peer} is {st}"
            );
        } else {
            assert_eq!(st, "remote", "{what}: unallocated peer {peer}");
        }
        assert!(info["peerName"].is_string(), "{what}: no peername for {peer}: {info}");
        assert!(
            info["timestamp"].is_string(),
            "{what}: timestamp of {peer} is not a valid time: {info}"
        );
    }
}

#[test]
fn library_pins_with_metadata_and_lists_the_pinset() {
    if !node() {
        return;
    }
    let sim = Sim::start(&["--peers", "3", "--lag", "0"]);
    let url = sim.url(0);
    let peers: Vec<&str> = sim.peers.iter().map(|p| p.id.as_str()).collect();
    let out = run_client_ok(url, &[]);

    // version / id / peers
    assert_eq!(out["version"], "1.1.6");
    assert_eq!(out["info"]["id"], peers[0], "info(): {}", out["info"]);
    assert_eq!(out["info"]["version"], "1.1.6");
    let listed: BTreeSet<String> =
        out["peers"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().into()).collect();
    assert_eq!(listed, peers.iter().map(|p| p.to_string()).collect(), "peerList()");

    let sent = out["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    let cids: Vec<String> = sent.iter().map(|s| s["cid"].as_str().unwrap().to_string()).collect();

    // What went over the wire: every option in the query string (docs/cluster-api.md §3).
    let q = sent_query(&out, "POST", &format!("/pins/{}", cids[0]));
    for (k, v) in [
        ("name", "dataset 0001/file-17.csv"),
        ("replication-min", "2"),
        ("replication-max", "2"),
        ("meta-org", "hrdag"),
        ("meta-project", "x"),
        ("meta-note", "a b&c=d+e/é"),
    ] {
        assert!(q.contains(&(k.into(), v.into())), "POST query {q:?} lacks {k}={v}");
    }
    let q = sent_query(&out, "POST", &format!("/pins/{}", cids[1]));
    assert!(
        q.contains(&("expire-at".into(), "2031-02-03T04:05:06.000Z".into())),
        "POST query {q:?}"
    );

    // The library's view: the POST response and allocation() must both carry what was sent.
    for (i, s) in sent.iter().enumerate() {
        for (what, got) in [("pin()", &out["pinned"][i]), ("allocation()", &out["allocations"][i])]
        {
            let what = format!("{what} of {}", cids[i]);
            assert_eq!(got["cid"], s["cid"], "{what}");
            assert_eq!(got["name"], s["name"], "{what}");
            assert_eq!(got["metadata"], s["metadata"], "{what}");
            assert_eq!(got["replicationFactorMin"], s["replicationFactorMin"], "{what}");
            assert_eq!(got["replicationFactorMax"], s["replicationFactorMax"], "{what}");
            assert_eq!(got["type"], "pin", "{what}");
            assert_eq!(got["mode"], "recursive", "{what}");
            assert_eq!(got["maxDepth"], -1, "{what}");
            assert_eq!(got["shardSize"], 0, "{what}");
            let expire = s.get("expireAt").cloned().unwrap_or(json!("0001-01-01T00:00:00.000Z"));
            assert_eq!(got["expireAt"], expire, "{what}: expire_at");
            check_allocations(&what, s, &got["allocations"], &peers);
        }
        assert_eq!(
            out["pinned"][i]["allocations"], out["allocations"][i]["allocations"],
            "allocations of {}",
            cids[i]
        );
        assert_eq!(
            out["allocations"][i]["userAllocations"],
            Value::Null,
            "stored form has no user_allocations"
        );
    }

    // Listing through the library (statusAll = GET /pins; it has no call for GET /allocations).
    let all = statuses_by_cid(&out["statusAll"]);
    assert_eq!(all.keys().cloned().collect::<Vec<_>>(), sorted(&cids), "statusAll() CIDs");
    let by_cids = statuses_by_cid(&out["statusAllCids"]);
    assert_eq!(
        by_cids.keys().cloned().collect::<Vec<_>>(),
        sorted(&cids),
        "statusAll({{cids}}) CIDs"
    );
    for (i, cid) in cids.iter().enumerate() {
        let alloc = strs(&out["allocations"][i]["allocations"]);
        assert_eq!(all[cid]["name"], sent[i]["name"], "statusAll() name of {cid}");
        check_status(&format!("statusAll() {cid}"), &all[cid], &alloc, &peers);
        check_status(&format!("statusAll(cids) {cid}"), &by_cids[cid], &alloc, &peers);
    }
    assert_eq!(out["status"]["cid"], cids[0].as_str());
    assert_eq!(out["status"]["name"], sent[0]["name"]);
    check_status("status()", &out["status"], &strs(&out["allocations"][0]["allocations"]), &peers);

    // unpin() answers the pin as stored before removal; then it is gone.
    let un = &out["unpinned"];
    assert_eq!(un["cid"], cids[2].as_str());
    assert_eq!(un["name"], sent[2]["name"]);
    assert_eq!(un["metadata"], sent[2]["metadata"]);
    assert_eq!(out["afterUnpin"]["ok"], false, "allocation() after unpin: {}", out["afterUnpin"]);
    assert_eq!(out["afterUnpin"]["status"], 404, "allocation() after unpin: {}", out["afterUnpin"]);
    let after = statuses_by_cid(&out["statusAllAfterUnpin"]);
    assert!(
        after.contains_key(&cids[0]) && after.contains_key(&cids[1]),
        "statusAll() after unpin: {after:?}"
    );
    if let Some(gone) = after.get(&cids[2]) {
        for (peer, info) in gone["peerMap"].as_object().unwrap() {
            let st = info["status"].as_str().unwrap();
            assert!(
                ["unpin_queued", "unpinning", "unpinned"].contains(&st),
                "unpinned CID on {peer} is {st}"
            );
        }
    }

    // Independently, over raw HTTP: the simulator stored exactly what the library sent (stored form).
    let mut stored = Vec::new();
    for (i, s) in sent.iter().take(2).enumerate() {
        let r = raw(url, "GET", &format!("/allocations/{}", cids[i]), &[], b"");
        assert_eq!(r.status, 200, "GET /allocations/{}: {}", cids[i], r.text());
        let p = r.json();
        let what = format!("stored {}", cids[i]);
        assert_eq!(p["cid"], s["cid"], "{what}");
        assert_eq!(p["name"], s["name"], "{what}");
        assert_eq!(p["metadata"], s["metadata"], "{what}");
        assert_eq!(p["replication_factor_min"], s["replicationFactorMin"], "{what}");
        assert_eq!(p["replication_factor_max"], s["replicationFactorMax"], "{what}");
        assert_eq!(p["allocations"], out["allocations"][i]["allocations"], "{what}");
        assert_eq!(p["mode"], "recursive", "{what}");
        assert_eq!(p["max_depth"], -1, "{what}");
        assert_eq!(p["type"], "pin", "{what}");
        assert_eq!(p["shard_size"], 0, "{what}");
        assert_eq!(p["user_allocations"], Value::Null, "{what}");
        assert_eq!(p["pin_update"], Value::Null, "{what}");
        assert_eq!(p["reference"], Value::Null, "{what}");
        assert_eq!(p["origins"], json!([]), "{what}");
        let ts = p["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && !ts.contains('.'),
            "{what}: timestamp {ts} is not seconds in UTC"
        );
        stored.push(p);
    }
    assert_eq!(stored[0]["expire_at"], "0001-01-01T00:00:00Z");
    assert_eq!(
        stored[1]["expire_at"], "2031-02-03T04:05:06Z",
        "expire-at with milliseconds, stored in seconds"
    );

    let r = raw(url, "GET", &format!("/allocations/{}", cids[2]), &[], b"");
    assert_eq!(r.status, 404, "unpinned CID: {}", r.text());
    assert_eq!(r.json(), json!({"code":404,"message":"pin is not part of the pinset"}));

    let r = raw(url, "GET", "/allocations", &[], b"");
    assert_eq!(r.status, 200, "GET /allocations: {}", r.text());
    assert!(r.complete, "GET /allocations stream did not end cleanly");
    assert_eq!(r.trailer("X-Stream-Error"), Some(""), "GET /allocations trailer");
    let mut listed = r.ndjson();
    listed.sort_by_key(|p| p["cid"].as_str().unwrap().to_string());
    stored.sort_by_key(|p| p["cid"].as_str().unwrap().to_string());
    assert_eq!(listed, stored, "GET /allocations = the two remaining pins, as stored");

    // Every replica ends up with the same stored pins.
    sim.wait_converged(Duration::from_secs(10));
    for peer in 1..sim.peers.len() {
        for p in &stored {
            let r = raw(
                sim.url(peer),
                "GET",
                &format!("/allocations/{}", p["cid"].as_str().unwrap()),
                &[],
                b"",
            );
            assert_eq!(r.status, 200, "peer{peer}: {}", r.text());
            assert_eq!(&r.json(), p, "peer{peer}'s replica");
        }
    }
}

#[test]
fn library_with_basic_auth() {
    if !node() {
        return;
    }
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--basic-auth", "hrdag:s3cret"]);
    let url = sim.url(0);

    let (ok, out) = run_client(url, &[]);
    assert!(!ok, "the library must fail without credentials: {out}");
    assert_eq!(out["error"]["step"], "version", "{out}");
    assert_eq!(out["error"]["status"], 401, "{out}");

    let out = run_client_ok(url, &["--basic-auth", "hrdag:s3cret"]);
    assert_eq!(out["version"], "1.1.6");
    let cids: Vec<String> =
        out["sent"].as_array().unwrap().iter().map(|s| s["cid"].as_str().unwrap().into()).collect();
    let auth = format!("Basic {}", base64_encode(b"hrdag:s3cret"));
    let r = raw(url, "GET", &format!("/allocations/{}", cids[0]), &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"], out["sent"][0]["metadata"]);
    assert_eq!(raw(url, "GET", &format!("/allocations/{}", cids[0]), &[], b"").status, 401);
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Run `node tests/thirdparty/add.mjs URL`: what the library's `add` and `addDirectory` returned.
fn run_add(url: &str) -> Value {
    setup();
    let dir = thirdparty_dir();
    let out = Command::new("node")
        .arg(dir.join("add.mjs"))
        .arg(url)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): {SETUP_HINT}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("add.mjs printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr))
    })
}

/// Issue 14: the library's `add` broke on the simulator's 500. Now it adds a file and a directory,
/// gets the CIDs a real v1.1.6 cluster gives (when one can be started here) and the pins carry
/// the metadata on every peer.
#[test]
fn the_library_adds_files_and_directories_with_the_cids_a_real_cluster_gives() {
    if !node() {
        return;
    }
    let sim = Sim::start(&["--peers", "3", "--lag", "0..20ms"]);
    let got = run_add(sim.url(0));
    assert!(got.get("error").is_none(), "the library failed: {got}");
    // The CID every IPFS implementation gives `hello world\n` (CIDv0, UnixFS leaves).
    assert_eq!(got["v0"]["cid"], "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "{got}");
    assert!(got["file"]["cid"].as_str().unwrap_or_default().starts_with("bafy"), "{got}");
    let dir = got["dir"].as_array().unwrap_or_else(|| panic!("no lines: {got}"));
    let root = dir.last().unwrap_or_else(|| panic!("no lines: {got}"));
    assert_eq!(root["name"], "", "the wrapping directory is last: {got}");
    sim.wait_converged(Duration::from_secs(10));
    for peer in 0..3 {
        for (cid, org) in [(&got["file"]["cid"], "hrdag"), (&root["cid"], "witness")] {
            let r = raw(
                sim.url(peer),
                "GET",
                &format!("/allocations/{}", cid.as_str().unwrap()),
                &[],
                b"",
            );
            assert_eq!(r.status, 200, "peer{peer}: {}", r.text());
            assert_eq!(r.json()["metadata"], json!({ "org": org }), "peer{peer}");
        }
    }
    use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
    if !available(V1_1_6) {
        return;
    }
    let real = RealCluster::start(RealOptions::new(V1_1_6, 2));
    assert_eq!(run_add(real.url(0)), got, "the real cluster answers the library otherwise");
    real.assert_loopback_only();
}
