//! `ledger snapshot`, `snapshots`, `diff`, `history`, `export` and `db status` (issue 3), run as the
//! real binary against `ledger sim serve` (and, where the simulator cannot misbehave the right way, a
//! tiny fake peer) over real HTTP. Every test has its own ledger database and its own simulator;
//! the reconstruction test also runs on a real v1.1.6 cluster (`…::real`).

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------------
// Helpers

/// A ledger in its own temporary directory.
struct Ledger {
    dir: tempfile::TempDir,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger { dir: tempfile::tempdir().unwrap() }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ledger --db <this ledger>` in the ledger's directory, with a clean environment.
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = ledger();
        c.current_dir(self.dir.path()).arg("--db").arg(self.db()).timeout(Duration::from_secs(90));
        c
    }

    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.args(args).output().expect("run ledger");
        Out::from(o)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(&[], args)
    }

    /// `ledger --cluster URL snapshot --json …`: the output and its reports (none if stdout is empty).
    fn snapshot_with(
        &self,
        env: &[(&str, &str)],
        cluster: &str,
        extra: &[&str],
    ) -> (Out, Vec<Value>) {
        let mut args = vec!["--cluster", cluster, "snapshot", "--json"];
        args.extend_from_slice(extra);
        let out = self.run_with(env, &args);
        let reports = if out.stdout.trim().is_empty() {
            Vec::new()
        } else {
            out.json().as_array().unwrap_or_else(|| panic!("not an array: {out:?}")).clone()
        };
        (out, reports)
    }

    fn snapshot(&self, cluster: &str) -> (Out, Vec<Value>) {
        self.snapshot_with(&[], cluster, &[])
    }

    /// A snapshot that must complete: its one report.
    fn snapshot_ok(&self, cluster: &str) -> Value {
        let (out, reports) = self.snapshot(cluster);
        assert_eq!(out.code, 0, "snapshot should complete: {out:?}");
        assert_eq!(reports.len(), 1, "{out:?}");
        assert_eq!(reports[0]["complete"], true, "{out:?}");
        reports[0].clone()
    }

    /// A snapshot that must end incomplete (exit 2, a clear message): its one report.
    fn snapshot_incomplete(&self, cluster: &str) -> (Out, Value) {
        let (out, reports) = self.snapshot(cluster);
        assert_eq!(out.code, 2, "an incomplete snapshot exits 2: {out:?}");
        assert!(out.stderr.contains("incomplete"), "the message says incomplete: {out:?}");
        assert_eq!(reports.len(), 1, "{out:?}");
        let r = reports[0].clone();
        assert_eq!(r["complete"], false, "{r}");
        for k in ["new", "changed", "vanished"] {
            assert!(r[k].is_null(), "an incomplete snapshot reports no {k}: {r}");
        }
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "error recorded: {r}");
        (out, r)
    }

    /// `ledger snapshots --json`.
    fn snapshots(&self) -> Vec<Value> {
        let out = self.run(&["snapshots", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        out.json().as_array().unwrap().clone()
    }

    /// `ledger export pins [--snapshot ID] --csv -`, parsed, by CID.
    fn export_pins(&self, snapshot: Option<i64>) -> BTreeMap<String, HashMap<String, String>> {
        let id = snapshot.map(|s| s.to_string());
        let mut args = vec!["export", "pins", "--csv", "-"];
        if let Some(id) = &id {
            args.extend(["--snapshot", id.as_str()]);
        }
        let out = self.run(&args);
        assert_eq!(out.code, 0, "export pins: {out:?}");
        parse_csv(&out.stdout)
            .into_iter()
            .map(|row| (row["cid"].clone(), row))
            .collect::<BTreeMap<_, _>>()
    }
}

/// CSV text into rows keyed by header.
fn parse_csv(text: &str) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let rec = rec.expect("a CSV record");
            headers.iter().cloned().zip(rec.iter().map(str::to_string)).collect()
        })
        .collect()
}

fn csv_headers(text: &str) -> Vec<String> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.headers().unwrap().iter().map(str::to_string).collect()
}

/// `GET /allocations?filter=all` of one peer as served (raw HTTP, not ledger's client).
fn served(sim: &impl PeerUrls, peer: usize) -> Vec<Value> {
    let r = raw(sim.peer_url(peer), "GET", "/allocations?filter=all", &[], b"");
    match r.status {
        204 => Vec::new(),
        200 => {
            assert!(r.complete, "the simulator's stream ended cleanly");
            assert_eq!(r.trailer("X-Stream-Error"), Some(""), "empty trailer");
            r.ndjson()
        }
        s => panic!("GET /allocations: {s} {}", r.text()),
    }
}

fn pin(sim: &impl PeerUrls, peer: usize, cid: &str, query: &str) {
    let r = raw(sim.peer_url(peer), "POST", &format!("/pins/{cid}?{query}"), &[], b"");
    assert_eq!(r.status, 200, "POST /pins/{cid}?{query}: {}", r.text());
}

fn unpin(sim: &impl PeerUrls, peer: usize, cid: &str) {
    let r = raw(sim.peer_url(peer), "DELETE", &format!("/pins/{cid}"), &[], b"");
    assert_eq!(r.status, 200, "DELETE /pins/{cid}: {}", r.text());
}

fn faults(sim: &Sim, body: &str) {
    sim.control("POST", "/_sim/faults", body);
}

fn cid(p: &Value) -> String {
    p["cid"].as_str().unwrap().to_string()
}

/// Canonical JSON of a metadata map (keys sorted); `None` for absent or empty metadata.
fn canonical_metadata(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Object(m) if m.is_empty() => None,
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            Some(serde_json::to_string(&sorted).unwrap())
        }
        other => panic!("metadata is not a map: {other}"),
    }
}

/// Canonical JSON of a served list (`null` is the empty list).
fn canonical_list(v: &Value) -> String {
    match v {
        Value::Null => "[]".to_string(),
        Value::Array(_) => serde_json::to_string(v).unwrap(),
        other => panic!("not a list: {other}"),
    }
}

fn opt_str(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// A served time against its exported form: the same instant, written in UTC; Go's zero time (and no
/// time) exports as an empty cell.
fn check_time(what: &str, served: &Value, exported: &str) {
    let s = served.as_str().unwrap_or("");
    let zero = s.is_empty() || s.starts_with("0001-01-01T00:00:00");
    if zero {
        assert_eq!(exported, "", "{what}: the zero time exports empty (served {s:?})");
        return;
    }
    let a = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{what} {s}: {e}"));
    let b = chrono::DateTime::parse_from_rfc3339(exported)
        .unwrap_or_else(|e| panic!("{what}: exported {exported:?} is not RFC 3339: {e}"));
    assert_eq!(a, b, "{what}: served {s}, exported {exported}");
    assert!(exported.ends_with('Z'), "{what}: exported time {exported:?} is not UTC");
}

/// Every exported row equals the served pin with its CID, field by field, and the sets are equal.
fn assert_reconstructs(
    what: &str,
    exported: &BTreeMap<String, HashMap<String, String>>,
    served: &[Value],
) {
    let served_cids: BTreeSet<String> = served.iter().map(cid).collect();
    let exported_cids: BTreeSet<String> = exported.keys().cloned().collect();
    assert_eq!(served.len(), served_cids.len(), "{what}: served CIDs are unique");
    let missing: Vec<_> = served_cids.difference(&exported_cids).take(5).collect();
    let extra: Vec<_> = exported_cids.difference(&served_cids).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: pin sets differ: {} served, {} exported; missing {missing:?}, extra {extra:?}",
        served_cids.len(),
        exported_cids.len()
    );
    for p in served {
        let c = cid(p);
        let row = &exported[&c];
        let w = |field: &str| format!("{what}: {c} field {field}");
        assert_eq!(row["name"], opt_str(&p["name"]), "{}", w("name"));
        // Empty metadata: an empty cell, or `{}`.
        match canonical_metadata(&p["metadata"]) {
            Some(m) => assert_eq!(row["metadata"], m, "{}", w("metadata")),
            None => assert!(
                row["metadata"].is_empty() || row["metadata"] == "{}",
                "{}: {:?} for no metadata",
                w("metadata"),
                row["metadata"]
            ),
        }
        assert_eq!(row["allocations"], canonical_list(&p["allocations"]), "{}", w("allocations"));
        assert_eq!(row["origins"], canonical_list(&p["origins"]), "{}", w("origins"));
        assert_eq!(
            row["replication_min"],
            p["replication_factor_min"].to_string(),
            "{}",
            w("replication_min")
        );
        assert_eq!(
            row["replication_max"],
            p["replication_factor_max"].to_string(),
            "{}",
            w("replication_max")
        );
        assert_eq!(row["mode"], opt_str(&p["mode"]), "{}", w("mode"));
        check_time(&w("expire_at"), &p["expire_at"], &row["expire_at"]);
        check_time(&w("cluster_timestamp"), &p["timestamp"], &row["cluster_timestamp"]);
        if let Some(t) = row.get("type") {
            assert_eq!(*t, opt_str(&p["type"]), "{}", w("type"));
        }
        if let Some(s) = row.get("shard_size") {
            assert_eq!(*s, p["shard_size"].to_string(), "{}", w("shard_size"));
        }
        if let Some(r) = row.get("reference") {
            assert_eq!(*r, opt_str(&p["reference"]), "{}", w("reference"));
        }
        if let Some(u) = row.get("pin_update") {
            assert_eq!(*u, opt_str(&p["pin_update"]), "{}", w("pin_update"));
        }
    }
}

fn report_orgs(r: &Value) -> BTreeMap<String, i64> {
    r["orgs"]
        .as_object()
        .unwrap_or_else(|| panic!("no orgs map: {r}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect()
}

/// The ledger file's size in bytes once its WAL is checkpointed into it.
fn db_size(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(conn);
    let file = std::fs::metadata(path).unwrap().len();
    assert_eq!(file, (pages * size) as u64, "checkpointed file size is page_count × page_size");
    file
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

fn basic_header(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

// ------------------------------------------------------------------------------------------------
// A fake peer for what the simulator cannot do (a malformed line, a stream without its trailer).

const FAKE_PEER_ID: &str = "12D3KooWRWdowsXLTto5XPU1AKJ23qM2dMYv9pUuuteAgza9txUi";

/// A stored-form pin line as a v1.1.6 cluster serves it.
fn good_line(label: &str, org: &str) -> String {
    format!(
        r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"{label}","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":{{"org":"{org}"}},"pin_update":null,"origins":[],"cid":"{}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2025-10-11T09:45:24Z"}}"#,
        cid_of(label)
    )
}

/// The head of a chunked 200 NDJSON response, as the cluster sends it.
const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: X-Stream-Error\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// These NDJSON lines as chunks (one per line).
fn chunks(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        let data = format!("{l}\n");
        out.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }
    out
}

/// The last chunk, with `trailer` as `X-Stream-Error` (`None`: no trailer at all).
fn chunked_end(trailer: Option<&str>) -> Vec<u8> {
    let mut out = b"0\r\n".to_vec();
    if let Some(t) = trailer {
        out.extend_from_slice(format!("X-Stream-Error: {t}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A whole chunked 200 response with these NDJSON lines, ending with `trailer`.
fn chunked(lines: &[&str], trailer: Option<&str>) -> Vec<u8> {
    let mut out = CHUNKED_HEAD.as_bytes().to_vec();
    out.extend(chunks(lines));
    out.extend(chunked_end(trailer));
    out
}

/// Holds a fake peer's `/allocations` answer after its first part: `reached` is set once that part
/// is written; the rest follows when `go` is set (never, for a stall).
#[derive(Clone, Default)]
struct Gate {
    reached: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
}

impl Gate {
    fn wait_reached(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.reached.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "ledger never asked the fake peer for /allocations");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn open(&self) {
        self.go.store(true, Ordering::SeqCst);
    }
}

/// A fake peer on 127.0.0.1:0 with peer ID `id`: `GET /id` answers the ID, `GET /allocations` writes
/// `first` (raw response bytes), waits for the gate if any, writes `rest`, and closes. Returns its
/// URL and the request heads it received. The listener thread lives until the test binary exits.
fn fake_peer_logged(
    id: &str,
    first: Vec<u8>,
    rest: Vec<u8>,
    gate: Option<Gate>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (id, heads) = (id.to_string(), log.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(s) = conn else { continue };
            let (id, first, rest, gate) = (id.clone(), first.clone(), rest.clone(), gate.clone());
            let heads = heads.clone();
            std::thread::spawn(move || serve_fake(s, &id, &first, &rest, gate, &heads));
        }
    });
    (url, log)
}

fn fake_peer_gated(id: &str, first: Vec<u8>, rest: Vec<u8>, gate: Option<Gate>) -> String {
    fake_peer_logged(id, first, rest, gate).0
}

/// A fake peer that answers `/allocations` with `allocations` at once.
fn fake_peer(allocations: Vec<u8>) -> String {
    fake_peer_gated(FAKE_PEER_ID, allocations, Vec::new(), None)
}

fn serve_fake(
    mut s: TcpStream,
    id: &str,
    first: &[u8],
    rest: &[u8],
    gate: Option<Gate>,
    heads: &Mutex<Vec<String>>,
) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    heads.lock().unwrap().push(text.clone());
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let json = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    if path == "/id" {
        let body = format!(r#"{{"id":"{id}","peername":"fake","version":"1.1.6"}}"#);
        let _ = s.write_all(&json("200 OK", &body));
    } else if path.starts_with("/allocations") {
        let _ = s.write_all(first);
        let _ = s.flush();
        if let Some(g) = gate {
            g.reached.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !g.go.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = s.write_all(rest);
    } else {
        let _ = s.write_all(&json("404 Not Found", r#"{"code":404,"message":"not found"}"#));
    }
    let _ = s.flush();
}

// ------------------------------------------------------------------------------------------------
// 4. Reconstruction, field by field

/// On both backends: every pin of every kind, every field, before and after re-pins, unpins and
/// new pins, from every stored snapshot.
fn snapshots_reconstruct_exactly_what_was_served_before_and_after_changes(b: Backend) {
    let Some(sim) = Cluster::start(b, 3) else { return };
    sim.seed(&every_kind(300, "reconstruct", &sim.ids()));
    let l = Ledger::new();
    let before = served(&sim, 0);
    assert_eq!(before.len(), 300);
    let r1 = l.snapshot_ok(sim.url(0));
    assert_eq!(r1["pins"], 300);
    assert_eq!(r1["new"], 300);

    let out = l.run(&["export", "pins", "--csv", "-"]);
    assert_eq!(out.code, 0, "{out:?}");
    let headers = csv_headers(&out.stdout);
    for col in [
        "cid",
        "name",
        "metadata",
        "allocations",
        "replication_min",
        "replication_max",
        "mode",
        "expire_at",
        "origins",
        "cluster_timestamp",
    ] {
        assert!(headers.iter().any(|h| h == col), "export pins has column {col}: {headers:?}");
    }
    // The seeded set exercises the interesting fields.
    assert!(before.iter().any(|p| canonical_metadata(&p["metadata"]).is_some()));
    assert!(before.iter().any(|p| p["allocations"].as_array().is_some_and(|a| !a.is_empty())));
    assert!(before.iter().any(|p| p["origins"].as_array().is_some_and(|a| !a.is_empty())));
    assert!(before.iter().any(|p| !p["expire_at"].as_str().unwrap().starts_with("0001")));
    assert!(before.iter().any(|p| p["mode"] == "direct"));
    assert_reconstructs("snapshot 1", &l.export_pins(None), &before);

    // Changes: re-pin with new metadata (and an expiry, other replication), unpin, pin new ones.
    let repinned: Vec<String> = before.iter().step_by(37).map(cid).collect();
    for (i, c) in repinned.iter().enumerate() {
        pin(
            &sim,
            0,
            c,
            &format!(
                "name=renamed-{i}&meta-org=witness&meta-zeta=last&meta-alpha=first&replication-min=1&replication-max=2&expire-in=8760h"
            ),
        );
    }
    let gone: Vec<String> =
        before.iter().skip(5).step_by(41).map(cid).filter(|c| !repinned.contains(c)).collect();
    for c in &gone {
        unpin(&sim, 0, c);
    }
    let fresh: Vec<String> = (0..7).map(|i| cid_of(&format!("reconstruct/new/{i}"))).collect();
    for (i, c) in fresh.iter().enumerate() {
        let q = if i % 2 == 0 {
            format!("name=new-{i}&meta-org=hrdag&mode=direct")
        } else {
            format!("name=new-{i}&origins=/ip4/10.0.0.{i}/tcp/4001/p2p/{FAKE_PEER_ID}")
        };
        pin(&sim, 0, c, &q);
    }
    sim.wait_converged(Duration::from_secs(60));
    let after = served(&sim, 0);
    assert_eq!(after.len(), 300 - gone.len() + fresh.len());

    let r2 = l.snapshot_ok(sim.url(0));
    assert_eq!(r2["previous_id"], r1["id"]);
    assert_eq!(r2["new"], fresh.len() as i64, "{r2}");
    assert_eq!(r2["changed"], repinned.len() as i64, "{r2}");
    assert_eq!(r2["vanished"], gone.len() as i64, "{r2}");
    let id1 = r1["id"].as_i64().unwrap();
    let id2 = r2["id"].as_i64().unwrap();
    assert_reconstructs("snapshot 2 (latest)", &l.export_pins(None), &after);
    assert_reconstructs("snapshot 2 (--snapshot)", &l.export_pins(Some(id2)), &after);
    assert_reconstructs("snapshot 1 after snapshot 2", &l.export_pins(Some(id1)), &before);

    // A third, unchanged pass: every stored snapshot still reconstructs exactly.
    let r3 = l.snapshot_ok(sim.url(0));
    assert_eq!(
        (r3["new"].as_i64(), r3["changed"].as_i64(), r3["vanished"].as_i64()),
        (Some(0), Some(0), Some(0))
    );
    assert_reconstructs("snapshot 3", &l.export_pins(r3["id"].as_i64()), &after);
    assert_reconstructs("snapshot 2 after 3", &l.export_pins(Some(id2)), &after);
    assert_reconstructs("snapshot 1 after 3", &l.export_pins(Some(id1)), &before);
}

crate::on_both!(snapshots_reconstruct_exactly_what_was_served_before_and_after_changes);

#[test]
fn export_pins_to_a_file_and_unknown_snapshot() {
    let sim = Sim::start(&["--peers", "1", "--pins", "40", "--seed", "4", "--lag", "0"]);
    let l = Ledger::new();
    let out = l.run(&["export", "pins", "--csv", "-"]);
    assert_eq!(out.code, 2, "no complete snapshot yet: {out:?}");
    assert!(out.stderr.contains("ledger snapshot"), "says what to do: {out:?}");
    l.snapshot_ok(sim.url(0));
    let file = l.path("out/pins.csv");
    let out = l.run(&["export", "pins", "--csv", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let rows: BTreeMap<String, HashMap<String, String>> =
        parse_csv(&text).into_iter().map(|r| (r["cid"].clone(), r)).collect();
    assert_reconstructs("export to a file", &rows, &served(&sim, 0));
    let out = l.run(&["export", "pins", "--snapshot", "99", "--csv", "-"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("99"), "names the snapshot: {out:?}");
}

// ------------------------------------------------------------------------------------------------
// 3. Summary counts

#[test]
fn summary_counts_new_changed_vanished_orgs_and_unowned() {
    let sim = Sim::start(&["--peers", "1", "--pins", "200", "--seed", "11", "--lag", "0"]);
    let l = Ledger::new();
    let before = served(&sim, 0);
    let (orgs0, unowned0) = org_counts(&before);
    assert!(!orgs0.is_empty() && unowned0 > 0, "the seed has owned and unowned pins");

    // First snapshot, text summary.
    let out = l.run(&["--cluster", sim.url(0), "snapshot"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("200 pins"), "pins in the summary: {}", out.stdout);
    assert!(out.stdout.contains("200 new, 0 changed, 0 vanished"), "{}", out.stdout);
    for (org, n) in &orgs0 {
        assert!(out.stdout.contains(&format!("{org} {n}")), "{org} {n} in: {}", out.stdout);
    }
    assert!(out.stdout.contains(&format!("unowned {unowned0}")), "{}", out.stdout);

    // Changes: 4 re-pinned to witness, 3 unpinned (one owned if any), 2 new for hrdag.
    let owned: Vec<String> = before
        .iter()
        .filter(|p| p["metadata"]["org"].as_str().is_some_and(|o| !o.is_empty() && o != "witness"))
        .map(cid)
        .collect();
    let unowned: Vec<String> = before
        .iter()
        .filter(|p| p["metadata"]["org"].as_str().is_none_or(str::is_empty))
        .map(cid)
        .collect();
    let repinned = [owned[0].clone(), unowned[0].clone(), unowned[1].clone(), unowned[2].clone()];
    for c in &repinned {
        pin(&sim, 0, c, "name=moved&meta-org=witness");
    }
    let gone = [owned[1].clone(), unowned[3].clone(), unowned[4].clone()];
    for c in &gone {
        unpin(&sim, 0, c);
    }
    for i in 0..2 {
        pin(&sim, 0, &cid_of(&format!("summary/new/{i}")), "name=n&meta-org=hrdag");
    }
    sim.wait_converged(Duration::from_secs(10));
    let after = served(&sim, 0);
    let (orgs1, unowned1) = org_counts(&after);

    let out = l.run(&["--cluster", sim.url(0), "snapshot"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("{} pins", after.len())), "{}", out.stdout);
    assert!(out.stdout.contains("since snapshot 1"), "{}", out.stdout);
    assert!(out.stdout.contains("2 new, 4 changed, 3 vanished"), "{}", out.stdout);
    for (org, n) in &orgs1 {
        assert!(out.stdout.contains(&format!("{org} {n}")), "{org} {n} in: {}", out.stdout);
    }
    assert!(out.stdout.contains(&format!("unowned {unowned1}")), "{}", out.stdout);

    // The same in JSON, for an unchanged third pass.
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!(r["id"], 3);
    assert_eq!(r["previous_id"], 2);
    assert_eq!(r["pins"], after.len() as i64);
    assert_eq!(
        (r["new"].as_i64(), r["changed"].as_i64(), r["vanished"].as_i64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(report_orgs(&r), orgs1, "{r}");
    assert_eq!(r["unowned"], unowned1, "{r}");
    assert_eq!(r["peer"].as_str(), Some(sim.peers[0].id.as_str()));
    assert!(r["peer_url"].as_str().unwrap().starts_with(sim.url(0)), "{r}");

    // `snapshots --json` agrees.
    let list = l.snapshots();
    assert_eq!(list.len(), 3);
    let counts: Vec<(i64, i64, i64, i64)> = list
        .iter()
        .map(|s| {
            (
                s["pins"].as_i64().unwrap(),
                s["new"].as_i64().unwrap(),
                s["changed"].as_i64().unwrap(),
                s["vanished"].as_i64().unwrap(),
            )
        })
        .collect();
    let n = after.len() as i64;
    assert_eq!(counts, vec![(200, 200, 0, 0), (n, 2, 4, 3), (n, 0, 0, 0)]);
    assert!(list.iter().all(|s| s["state"] == "complete"));
    assert_eq!(list[1]["previous_id"], 1);
    assert!(list[0]["previous_id"].is_null());

    // The table form names the states.
    let out = l.run(&["snapshots"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().filter(|l| l.contains("complete")).count(), 3, "{}", out.stdout);

    // Owners of the pins served again are the previous snapshot's less those not served again;
    // should the previous snapshot's owners not add up to its pins, they are counted one by one.
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    conn.execute("DELETE FROM snapshot_owners WHERE snapshot_id = 3 AND org IS NOT NULL", [])
        .unwrap();
    drop(conn);
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!(r["id"], 4);
    assert_eq!(report_orgs(&r), orgs1, "counted one by one: {r}");
    assert_eq!(r["unowned"], unowned1, "{r}");

    // A stream cut early (after 20 of its pins, all served again as before) counts those 20.
    faults(&sim, r#"{"stream_cut":{"after":20,"mode":"trailer","count":1}}"#);
    let (_, r) = l.snapshot_incomplete(sim.url(0));
    let (orgs20, unowned20) = org_counts(&after[..20]);
    assert_eq!(r["pins"], 20, "{r}");
    assert_eq!(report_orgs(&r), orgs20, "the owners of the 20 pins read: {r}");
    assert_eq!(r["unowned"], unowned20, "{r}");
}

// ------------------------------------------------------------------------------------------------
// 3. Faults: cut streams, drops, 204, 500 before the first item, malformed lines

#[test]
fn stream_cut_with_trailer_error_is_incomplete_and_keeps_what_it_read() {
    let sim = Sim::start(&["--peers", "1", "--pins", "500", "--seed", "3", "--lag", "0"]);
    let l = Ledger::new();
    let all = served(&sim, 0);
    faults(&sim, r#"{"stream_cut":{"after":120,"mode":"trailer","count":1}}"#);
    let (out, r) = l.snapshot_incomplete(sim.url(0));
    assert!(
        out.stderr.contains("simulated stream failure"),
        "the trailer's error is shown: {}",
        out.stderr
    );
    assert!(out.stderr.contains("X-Stream-Error"), "says it came in the trailer: {}", out.stderr);
    assert_eq!(r["pins"], 120, "{r}");
    let id = r["id"].as_i64().unwrap();
    assert_reconstructs("the 120 pins read", &l.export_pins(Some(id)), &all[..120]);
    let list = l.snapshots();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "incomplete");
    assert!(list[0]["error"].as_str().unwrap().contains("simulated stream failure"));
    // No complete snapshot yet: the default export refuses.
    assert_eq!(l.run(&["export", "pins", "--csv", "-"]).code, 2);
    // Next pass is complete and every pin is new (the incomplete one was no baseline).
    let r2 = l.snapshot_ok(sim.url(0));
    assert_eq!(r2["new"], 500);
    assert!(r2["previous_id"].is_null(), "{r2}");
}

#[test]
fn connection_dropped_mid_stream_is_incomplete() {
    let sim = Sim::start(&["--peers", "1", "--pins", "500", "--seed", "3", "--lag", "0"]);
    let l = Ledger::new();
    let all = served(&sim, 0);
    l.snapshot_ok(sim.url(0));
    faults(&sim, r#"{"stream_cut":{"after":200,"mode":"drop","count":1}}"#);
    let (out, r) = l.snapshot_incomplete(sim.url(0));
    assert!(out.stderr.contains("broke"), "says the stream broke: {}", out.stderr);
    assert_eq!(r["pins"], 200, "{r}");
    assert_reconstructs("the pins read", &l.export_pins(r["id"].as_i64()), &all[..200]);
    let r3 = l.snapshot_ok(sim.url(0));
    assert_eq!(r3["previous_id"], 1, "the baseline is the last complete snapshot: {r3}");
    assert_eq!(
        (r3["new"].as_i64(), r3["changed"].as_i64(), r3["vanished"].as_i64()),
        (Some(0), Some(0), Some(0))
    );
    let states: Vec<Value> = l.snapshots().iter().map(|s| s["state"].clone()).collect();
    assert_eq!(states, ["complete", "incomplete", "complete"]);
}

#[test]
fn empty_cluster_answers_204_and_the_snapshot_is_complete() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0"]);
    let l = Ledger::new();
    let r = raw(sim.url(0), "GET", "/allocations?filter=all", &[], b"");
    assert_eq!(r.status, 204);
    let r1 = l.snapshot_ok(sim.url(0));
    assert_eq!(r1["pins"], 0);
    assert_eq!(r1["new"], 0);
    assert_eq!(r1["unowned"], 0);
    let c = cid_of("empty/one");
    pin(&sim, 0, &c, "name=one&meta-org=amnesty");
    let r2 = l.snapshot_ok(sim.url(0));
    assert_eq!((r2["pins"].as_i64(), r2["new"].as_i64()), (Some(1), Some(1)));
    assert_eq!(report_orgs(&r2), BTreeMap::from([("amnesty".to_string(), 1)]));
    unpin(&sim, 0, &c);
    // A 204 is a complete, empty pin set: it is evidence that the pin vanished.
    let r3 = l.snapshot_ok(sim.url(0));
    assert_eq!((r3["pins"].as_i64(), r3["vanished"].as_i64()), (Some(0), Some(1)), "{r3}");
    assert!(l.export_pins(r3["id"].as_i64()).is_empty());
}

#[test]
fn error_500_before_the_first_item_is_retried_then_recorded() {
    let sim = Sim::start(&["--peers", "1", "--pins", "50", "--seed", "2", "--lag", "0"]);
    let l = Ledger::new();
    // A cut before the first item is a 500: once, a retry recovers.
    faults(&sim, r#"{"stream_cut":{"after":0,"mode":"trailer","count":1}}"#);
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!(r["pins"], 50);
    // Every time: the snapshot gives up, records why, exits 2.
    faults(&sim, r#"{"stream_cut":{"after":0,"mode":"trailer"}}"#);
    let started = Instant::now();
    let (out, r) = l.snapshot_incomplete(sim.url(0));
    assert!(started.elapsed() < Duration::from_secs(30), "retries are bounded");
    assert!(out.stderr.contains("500"), "names the status: {}", out.stderr);
    assert!(out.stderr.contains("simulated stream failure"), "{}", out.stderr);
    assert_eq!(r["pins"], 0);
    let list = l.snapshots();
    assert_eq!(list[1]["state"], "incomplete");
    assert!(list[1]["error"].as_str().unwrap().contains("500"), "{}", list[1]);
    sim.control("DELETE", "/_sim/faults", "");
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!((r["previous_id"].as_i64(), r["vanished"].as_i64()), (Some(1), Some(0)));
}

#[test]
fn malformed_ndjson_line_is_incomplete() {
    let good1 = good_line("fake/good-1", "hrdag");
    let good2 = good_line("fake/good-2", "");
    // The fake peer itself is sound: good lines and an empty trailer make a complete snapshot.
    let l = Ledger::new();
    let ok = fake_peer(chunked(&[&good1, &good2], Some("")));
    let r = l.snapshot_ok(&ok);
    assert_eq!((r["pins"].as_i64(), r["unowned"].as_i64()), (Some(2), Some(1)), "{r}");
    assert_eq!(r["peer"], FAKE_PEER_ID);

    // A garbage line after a good one, then an empty trailer: incomplete, with what it read.
    let l = Ledger::new();
    let bad =
        fake_peer(chunked(&[&good1, r#"{"cid": "QmNotAPin", this is not json"#, &good2], Some("")));
    let (out, r) = l.snapshot_incomplete(&bad);
    assert!(out.stderr.to_lowercase().contains("malformed"), "says malformed: {}", out.stderr);
    assert!(out.stderr.contains("line 2"), "says which line: {}", out.stderr);
    let kept = l.export_pins(r["id"].as_i64());
    assert!(kept.contains_key(&cid_of("fake/good-1")), "keeps the line it read: {kept:?}");
    assert_eq!(l.snapshots()[0]["state"], "incomplete");
}

#[test]
fn requests_carry_a_user_agent_and_the_credentials() {
    let good = good_line("fake/ua", "hrdag");
    let (url, heads) =
        fake_peer_logged(FAKE_PEER_ID, chunked(&[&good], Some("")), Vec::new(), None);
    let l = Ledger::new();
    let (out, _) = l.snapshot_with(&[("LEDGER_BASIC_AUTH", "ops:pa55")], &url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads.iter().any(|h| h.starts_with("GET /allocations?filter=all ")),
        "asks for the whole pin set: {heads:?}"
    );
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(lower.contains("\r\nuser-agent: ledger/"), "a ledger user agent: {h}");
        assert!(h.contains(&basic_header("ops", "pa55")), "Basic credentials sent: {h}");
    }
}

#[test]
fn stream_without_its_trailer_or_with_an_error_trailer_is_incomplete() {
    let good1 = good_line("fake/t-1", "witness");
    let good2 = good_line("fake/t-2", "witness");
    // A chunked stream that ends cleanly but without the X-Stream-Error trailer.
    let l = Ledger::new();
    let url = fake_peer(chunked(&[&good1, &good2], None));
    let (out, r) = l.snapshot_incomplete(&url);
    assert!(out.stderr.contains("X-Stream-Error"), "{}", out.stderr);
    assert_eq!(r["pins"], 2);
    // A stream whose trailer carries an error.
    let l = Ledger::new();
    let url = fake_peer(chunked(&[&good1, &good2], Some("context canceled")));
    let (out, _) = l.snapshot_incomplete(&url);
    assert!(out.stderr.contains("context canceled"), "{}", out.stderr);
    // A Content-Length body (no trailers possible).
    let body = format!("{good1}\n{good2}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let l = Ledger::new();
    let url = fake_peer(resp.into_bytes());
    l.snapshot_incomplete(&url);
}

#[test]
fn a_stalled_stream_times_out_as_incomplete() {
    let good1 = good_line("fake/s-1", "hrdag");
    // The stream stays open and silent after the first line; `--timeout 1s` gives up on it.
    let mut first = CHUNKED_HEAD.as_bytes().to_vec();
    first.extend(chunks(&[&good1]));
    let l = Ledger::new();
    let url = fake_peer_gated(FAKE_PEER_ID, first, Vec::new(), Some(Gate::default()));
    let started = std::time::Instant::now();
    let (out, reports) = l.snapshot_with(&[], &url, &["--timeout", "1s"]);
    assert_eq!(out.code, 2, "a timed-out stream exits 2: {out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "gave up in time");
    assert_eq!(reports.len(), 1, "{out:?}");
    assert_eq!(reports[0]["complete"], false);
    assert_eq!(reports[0]["pins"], 1);
    assert!(reports[0]["vanished"].is_null());
}

// ------------------------------------------------------------------------------------------------
// 3 + 5 + 7. An incomplete snapshot followed by a complete one

/// Every reference in the ledger resolves (the snapshot writer stores without per-row checks).
fn assert_foreign_keys_hold(l: &Ledger) {
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").unwrap();
    let broken: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!("{}:{:?}", r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(broken.is_empty(), "dangling references: {broken:?}");
}

#[test]
fn incomplete_then_complete_reports_no_false_vanishing() {
    let sim = Sim::start(&["--peers", "1", "--pins", "300", "--seed", "7", "--lag", "0"]);
    let l = Ledger::new();
    let before = served(&sim, 0);
    let r1 = l.snapshot_ok(sim.url(0));
    assert_eq!(r1["new"], 300);

    // Changes on both sides of where the next stream will be cut (after 50 items).
    let gone: Vec<String> = [10, 60, 150, 290].iter().map(|&i| cid(&before[i])).collect();
    for c in &gone {
        unpin(&sim, 0, c);
    }
    let changed: Vec<String> = [20, 100, 250].iter().map(|&i| cid(&before[i])).collect();
    for c in &changed {
        pin(&sim, 0, c, "name=relabelled&meta-org=bellingcat&meta-case=42");
    }
    let fresh: Vec<String> = (0..5).map(|i| cid_of(&format!("incomplete/new/{i}"))).collect();
    for c in &fresh {
        pin(&sim, 0, c, "name=fresh");
    }
    let after = served(&sim, 0);

    faults(&sim, r#"{"stream_cut":{"after":50,"mode":"trailer","count":1}}"#);
    let (out, r2) = l.snapshot_incomplete(sim.url(0));
    assert_eq!(r2["pins"], 50);
    assert!(
        out.stderr.contains("no pin counts as vanished") || out.stderr.contains("vanished"),
        "the message says nothing vanished because of it: {}",
        out.stderr
    );
    let r3 = l.snapshot_ok(sim.url(0));
    assert_eq!(r3["previous_id"], r1["id"], "compared with the last complete snapshot: {r3}");
    assert_eq!(r3["pins"], after.len() as i64);
    assert_eq!(r3["new"], fresh.len() as i64, "{r3}");
    assert_eq!(r3["changed"], changed.len() as i64, "{r3}");
    assert_eq!(r3["vanished"], gone.len() as i64, "{r3}");
    let (id1, id2, id3) =
        (r1["id"].as_i64().unwrap(), r2["id"].as_i64().unwrap(), r3["id"].as_i64().unwrap());
    assert_eq!((id1, id2, id3), (1, 2, 3));

    // The list shows the states and the error; only complete snapshots carry counts.
    let list = l.snapshots();
    let states: Vec<&str> = list.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["complete", "incomplete", "complete"]);
    assert!(list[1]["vanished"].is_null() && list[1]["new"].is_null(), "{}", list[1]);
    assert!(list[1]["error"].as_str().unwrap().contains("simulated stream failure"));
    assert_eq!(list[2]["vanished"], gone.len() as i64);
    let table = l.run(&["snapshots"]);
    assert!(table.stdout.contains("incomplete"), "{}", table.stdout);

    // diff of the complete ones: exactly the changes, with the changed fields.
    let out = l.run(&["diff", "1", "3", "--json"]);
    assert_eq!(out.code, 1, "snapshots that differ exit 1 like diff(1): {out:?}");
    let d = out.json();
    let of = |kind: &str| -> BTreeSet<String> {
        d["pins"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["change"] == kind)
            .map(|p| p["cid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("new"), fresh.iter().cloned().collect());
    assert_eq!(of("vanished"), gone.iter().cloned().collect());
    assert_eq!(of("changed"), changed.iter().cloned().collect());
    assert_eq!(d["pins"].as_array().unwrap().len(), 12);
    for p in d["pins"].as_array().unwrap().iter().filter(|p| p["change"] == "changed") {
        let fields: BTreeMap<&str, (&str, &str)> = p["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["field"].as_str().unwrap(),
                    (f["before"].as_str().unwrap(), f["after"].as_str().unwrap()),
                )
            })
            .collect();
        assert_eq!(fields["name"].1, "relabelled", "{p}");
        assert_eq!(fields["metadata"].1, r#"{"case":"42","org":"bellingcat"}"#, "{p}");
        assert!(fields.contains_key("cluster_timestamp"), "{p}");
        assert!(!fields.contains_key("mode") || fields["mode"].0 != fields["mode"].1);
        let old = before.iter().find(|b| b["cid"] == p["cid"]).unwrap();
        assert_eq!(fields["name"].0, old["name"].as_str().unwrap(), "{p}");
    }
    // The table form shows fields and counts.
    let out = l.run(&["diff", "1", "3"]);
    assert_eq!(out.code, 1, "{out:?}");
    for c in gone.iter().chain(&fresh).chain(&changed) {
        assert!(out.stdout.contains(c.as_str()), "{c} in the diff: {}", out.stdout);
    }
    assert!(out.stdout.contains("relabelled") && out.stdout.contains("bellingcat"));
    assert!(out.all().contains("5 new, 3 changed, 4 vanished"), "{out:?}");
    // Same snapshot: no differences, exit 0.
    let out = l.run(&["diff", "3", "3"]);
    assert_eq!(out.code, 0, "{out:?}");
    // A diff involving the incomplete snapshot warns that it is no evidence.
    let out = l.run(&["diff", "1", "2", "--json"]);
    assert!(out.stderr.contains("incomplete"), "warns: {out:?}");
    // Unknown snapshot.
    let out = l.run(&["diff", "1", "42"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("42"), "{out:?}");

    // history: a pin unread by the cut stream and unchanged has one unbroken interval.
    let quiet = cid(&before[200]);
    assert!(!gone.contains(&quiet) && !changed.contains(&quiet));
    let out = l.run(&["history", &quiet, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = out.json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!((h[0]["first_snapshot"].as_i64(), h[0]["last_snapshot"].as_i64()), (Some(1), None));
    // A changed pin has two versions, the old one closed at snapshot 1.
    let out = l.run(&["history", &changed[0], "--json"]);
    let h = out.json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (h[0]["first_snapshot"].as_i64(), h[0]["last_snapshot"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!((h[1]["first_snapshot"].as_i64(), h[1]["last_snapshot"].as_i64()), (Some(3), None));
    assert_eq!(h[1]["pin"]["name"], "relabelled");
    assert_eq!(h[1]["pin"]["metadata"], r#"{"case":"42","org":"bellingcat"}"#);
    let old = before.iter().find(|b| cid(b) == changed[0]).unwrap();
    assert_eq!(h[0]["pin"]["name"], old["name"]);
    // A vanished pin: its one version closed at snapshot 1.
    let h = l.run(&["history", &gone[3], "--json"]).json();
    assert_eq!(h.as_array().unwrap().len(), 1);
    assert_eq!(h[0]["last_snapshot"], 1);
    // Table form.
    let out = l.run(&["history", &changed[0]]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("relabelled") && out.stdout.contains("now"), "{}", out.stdout);
    let out = l.run(&["history", &cid_of("never/pinned")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("no snapshot"), "{}", out.stdout);
    assert_eq!(l.run(&["history", "not-a-cid"]).code, 2);

    // export snapshots.
    let out = l.run(&["export", "snapshots", "--csv", "-"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = parse_csv(&out.stdout);
    assert_eq!(rows.len(), 3);
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str()).collect();
    assert_eq!(states, ["complete", "incomplete", "complete"]);
    assert_eq!(rows[2]["vanished"], "4");
    assert_eq!(rows[2]["previous_id"], "1");
    assert_eq!(rows[1]["vanished"], "");
    assert!(rows[1]["error"].contains("simulated stream failure"));
    assert!(rows.iter().all(|r| r["peer"] == sim.peers[0].id));
    assert_eq!(rows[0]["pins"], "300");
    assert_foreign_keys_hold(&l);
}

// ------------------------------------------------------------------------------------------------
// 2. Retries

#[test]
fn retries_on_503_and_429_but_not_on_other_4xx() {
    let sim = Sim::start(&["--peers", "1", "--pins", "80", "--seed", "5", "--lag", "0"]);
    let l = Ledger::new();
    faults(&sim, r#"{"errors":[{"endpoint":"allocations","status":503,"rate":1.0,"count":2}]}"#);
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!(r["pins"], 80);
    faults(&sim, r#"{"errors":[{"endpoint":"allocations","status":429,"rate":1.0,"count":2}]}"#);
    l.snapshot_ok(sim.url(0));
    faults(&sim, r#"{"errors":[{"endpoint":"id","status":503,"rate":1.0,"count":2}]}"#);
    l.snapshot_ok(sim.url(0));
    // A 400 is not retried: one 400 fails the snapshot although the next try would succeed.
    faults(&sim, r#"{"errors":[{"endpoint":"allocations","status":400,"rate":1.0,"count":1}]}"#);
    let (out, _) = l.snapshot_incomplete(sim.url(0));
    assert!(out.stderr.contains("400"), "names the status: {}", out.stderr);
    // Nor is a 404.
    faults(&sim, r#"{"errors":[{"endpoint":"allocations","status":404,"rate":1.0,"count":1}]}"#);
    let (out, _) = l.snapshot_incomplete(sim.url(0));
    assert!(out.stderr.contains("404"), "names the status: {}", out.stderr);
    // Both faults were used up by the one request each.
    let r = l.snapshot_ok(sim.url(0));
    assert_eq!((r["previous_id"].as_i64(), r["vanished"].as_i64()), (Some(3), Some(0)));
}

#[test]
fn retries_connection_refused_while_a_peer_restarts() {
    let sim = Sim::start(&["--peers", "2", "--pins", "30", "--seed", "5", "--lag", "0"]);
    let l = Ledger::new();
    sim.control("POST", "/_sim/peers/peer1/restart?down=400ms", "");
    let r = l.snapshot_ok(sim.url(1));
    assert_eq!(r["peer"].as_str(), Some(sim.peers[1].id.as_str()));
    assert_eq!(r["pins"], 30);
}

#[test]
fn unreachable_cluster_fails_clearly() {
    let l = Ledger::new();
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = l.run(&["--cluster", &format!("http://127.0.0.1:{port}"), "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
}

// ------------------------------------------------------------------------------------------------
// 4. Storage grows with changes, not with pins × passes

#[test]
fn storage_grows_with_changes_not_with_passes() {
    let sim = Sim::start(&["--peers", "1", "--pins", "20000", "--seed", "9", "--lag", "0"]);
    let l = Ledger::new();
    let r1 = l.snapshot_ok(sim.url(0));
    assert_eq!(r1["pins"], 20000);
    let s1 = db_size(&l.db());
    let r2 = l.snapshot_ok(sim.url(0));
    assert_eq!(r2["new"], 0);
    let s2 = db_size(&l.db());
    assert!(
        s2 < s1 + 64 * 1024,
        "an unchanged 20,000-pin pass grew the ledger by {} bytes (first snapshot: {s1} bytes)",
        s2 as i64 - s1 as i64
    );

    // 1% changed: 120 re-pinned, 40 unpinned, 40 new.
    let all = served(&sim, 0);
    for (i, p) in all.iter().step_by(98).take(120).enumerate() {
        pin(&sim, 0, &cid(p), &format!("name=migrated-{i}&meta-org=memorial"));
    }
    for p in all.iter().skip(51).step_by(400).take(40) {
        unpin(&sim, 0, &cid(p));
    }
    for i in 0..40 {
        pin(&sim, 0, &cid_of(&format!("storage/new/{i}")), "name=fresh&meta-org=hrdag");
    }
    let r3 = l.snapshot_ok(sim.url(0));
    assert_eq!(
        (r3["new"].as_i64(), r3["changed"].as_i64(), r3["vanished"].as_i64()),
        (Some(40), Some(120), Some(40))
    );
    let s3 = db_size(&l.db());
    assert!(
        (s3 as f64) <= s2 as f64 + 0.03 * s1 as f64,
        "1% changed grew the ledger by {} bytes, more than 3% of the first snapshot ({s1} bytes)",
        s3 as i64 - s2 as i64
    );
    // And the changed pass still reconstructs.
    assert_reconstructs("after 1% changed", &l.export_pins(r3["id"].as_i64()), &served(&sim, 0));
}

// ------------------------------------------------------------------------------------------------
// 2. Credentials: 401, Basic, Bearer, never stored or logged

const PASSWORD: &str = "Zq7-very-secret-pw-4242";

#[test]
fn unauthorized_says_how_to_pass_credentials() {
    let auth = format!("admin:{PASSWORD}");
    let sim = Sim::start(&[
        "--peers",
        "1",
        "--pins",
        "20",
        "--seed",
        "2",
        "--lag",
        "0",
        "--basic-auth",
        &auth,
    ]);
    let l = Ledger::new();
    let out = l.run(&["--cluster", sim.url(0), "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("LEDGER_BASIC_AUTH"),
        "says how to pass credentials: {}",
        out.stderr
    );
    assert!(out.stderr.contains("LEDGER_TOKEN"), "{}", out.stderr);
    // Wrong password: the same advice, and the wrong password is not echoed.
    let out = l.run_with(
        &[("LEDGER_BASIC_AUTH", "admin:wrong-pw-987")],
        &["--cluster", sim.url(0), "snapshot"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("LEDGER_BASIC_AUTH"), "{}", out.stderr);
    assert!(!out.all().contains("wrong-pw-987"), "{out:?}");
    // Right credentials.
    let (out, reports) = l.snapshot_with(&[("LEDGER_BASIC_AUTH", &auth)], sim.url(0), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(reports[0]["pins"], 20);
}

#[test]
fn credentials_are_never_stored_or_logged() {
    let auth = format!("admin:{PASSWORD}");
    let sim = Sim::start(&[
        "--peers",
        "2",
        "--pins",
        "60",
        "--seed",
        "2",
        "--lag",
        "0",
        "--basic-auth",
        &auth,
    ]);
    let l = Ledger::new();
    let mut outputs = Vec::new();

    // Basic via the environment, with debug logs on.
    let (out, reports) = l.snapshot_with(
        &[("LEDGER_BASIC_AUTH", &auth), ("LEDGER_LOG", "trace")],
        sim.url(0),
        &["-vv"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(reports[0]["pins"], 60);
    outputs.push(out);

    // Bearer: a token from POST /token, via LEDGER_TOKEN.
    let r = raw(
        sim.url(0),
        "POST",
        "/token",
        &[("Authorization", &basic_header("admin", PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    let (out, reports) =
        l.snapshot_with(&[("LEDGER_TOKEN", &token), ("LEDGER_LOG", "trace")], sim.url(0), &["-vv"]);
    assert_eq!(out.code, 0, "a Bearer token works: {out:?}");
    assert_eq!(reports[0]["new"], 0);
    outputs.push(out);

    // A bad token is refused with the advice.
    let out =
        l.run_with(&[("LEDGER_TOKEN", "not.a.token")], &["--cluster", sim.url(0), "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("LEDGER_TOKEN"), "{}", out.stderr);

    // Userinfo in the address (also a way to pass Basic credentials): not kept in the URL stored.
    let with_userinfo = sim.url(1).replacen("http://", &format!("http://admin:{PASSWORD}@"), 1);
    let (out, _) = l.snapshot_with(&[("LEDGER_LOG", "trace")], &with_userinfo, &["-vv"]);
    // Whether or not userinfo is accepted, nothing may leak.
    outputs.push(out);

    // A credentials file named in a profile.
    std::fs::write(l.path("creds"), format!("{auth}\n")).unwrap();
    std::fs::write(
        l.path("ledger.toml"),
        format!("[clusters.lab]\npeers = [\"{}\"]\ncredentials = \"creds\"\n", sim.url(0)),
    )
    .unwrap();
    let out = l.run_with(&[("LEDGER_LOG", "trace")], &["-vv", "snapshot", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    outputs.push(out);

    for args in [
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["export", "pins", "--csv", "-"],
        vec!["export", "snapshots", "--csv", "-"],
        vec!["diff", "1", "2", "--json"],
    ] {
        outputs.push(l.run(&args));
    }
    let secrets = [
        PASSWORD.to_string(),
        token.clone(),
        basic_header("admin", PASSWORD).trim_start_matches("Basic ").to_string(),
    ];
    for out in &outputs {
        for s in &secrets {
            assert!(!out.all().contains(s.as_str()), "a secret was printed: {out:?}");
        }
    }
    // The database files, byte by byte (checkpointed, and whatever is left beside it).
    db_size(&l.db());
    for entry in std::fs::read_dir(l.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("ledger.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for s in &secrets {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()), "{name} holds a secret");
        }
    }
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    let urls: Vec<String> = conn
        .prepare("SELECT peer_url FROM snapshots")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(urls.iter().all(|u| !u.contains('@')), "{urls:?}");
}

// ------------------------------------------------------------------------------------------------
// 2. Cluster addresses: multiaddr, env, profiles, --peer, --all-peers

#[test]
fn cluster_as_multiaddr_and_from_the_environment() {
    let sim = Sim::start(&["--peers", "1", "--pins", "25", "--seed", "6", "--lag", "0"]);
    let l = Ledger::new();
    let maddr = format!("/ip4/127.0.0.1/tcp/{}", port_of(sim.url(0)));
    let r = l.snapshot_ok(&maddr);
    assert_eq!(r["pins"], 25);
    assert_eq!(r["peer"].as_str(), Some(sim.peers[0].id.as_str()));
    // LEDGER_CLUSTER.
    let out = l.run_with(&[("LEDGER_CLUSTER", &maddr)], &["snapshot", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()[0]["previous_id"], 1);
    // No cluster at all: a clear error.
    let out = l.run(&["snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stderr.is_empty());
    // A bad address.
    let out = l.run(&["--cluster", "/ip4/127.0.0.1/udp/9094", "snapshot"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("multiaddr"), "{}", out.stderr);
}

#[test]
fn profile_with_peers_and_credentials_file_and_all_peers() {
    let auth = format!("ops:{PASSWORD}");
    let sim = Sim::start(&[
        "--peers",
        "3",
        "--pins",
        "40",
        "--seed",
        "8",
        "--lag",
        "0",
        "--basic-auth",
        &auth,
    ]);
    let l = Ledger::new();
    std::fs::create_dir_all(l.path("conf")).unwrap();
    std::fs::write(l.path("conf/cluster.creds"), format!("{auth}\n")).unwrap();
    let peers = [
        format!("/ip4/127.0.0.1/tcp/{}", port_of(sim.url(0))),
        sim.url(1).to_string(),
        format!("/ip4/127.0.0.1/tcp/{}/http", port_of(sim.url(2))),
    ];
    let cfg = l.path("conf/ledger.toml");
    std::fs::write(
        &cfg,
        format!(
            "default = \"lab\"\n\n[clusters.lab]\npeers = [\"{}\", \"{}\", \"{}\"]\ncredentials = \"cluster.creds\"\n\n[clusters.other]\npeers = [\"http://127.0.0.1:1\"]\n",
            peers[0], peers[1], peers[2]
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    // Default: the profile's first peer.
    let out = l.run(&["--config", cfg, "snapshot", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json();
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["peer"].as_str(), Some(sim.peers[0].id.as_str()));
    assert_eq!(r[0]["cluster"], "lab");

    // Make peer2 differ: pause it, then pin on peer0.
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let c = cid_of("profile/new");
    let r = raw(
        sim.url(0),
        "POST",
        &format!("/pins/{c}?name=x"),
        &[("Authorization", &basic_header("ops", PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw(
        sim.url(1),
        "GET",
        &format!("/allocations/{c}"),
        &[("Authorization", &basic_header("ops", PASSWORD))],
        b"",
    )
    .status
        != 200
    {
        assert!(Instant::now() < deadline, "peer1 never got the pin");
        std::thread::sleep(Duration::from_millis(20));
    }

    // --all-peers via LEDGER_CONFIG and --profile: one report per listed peer.
    let out = l.run_with(
        &[("LEDGER_CONFIG", cfg)],
        &["--profile", "lab", "snapshot", "--all-peers", "--json"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let reports = out.json().as_array().unwrap().clone();
    assert_eq!(reports.len(), 3, "{reports:?}");
    let ids: Vec<&str> = reports.iter().map(|r| r["peer"].as_str().unwrap()).collect();
    let sim_ids: Vec<&str> = sim.peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, sim_ids);
    let news: Vec<i64> = reports.iter().map(|r| r["new"].as_i64().unwrap()).collect();
    assert_eq!(news, [1, 41, 40], "peer0 had a baseline; peer2 is paused and lacks the new pin");
    for r in &reports {
        assert_eq!(r["complete"], true);
        assert_eq!(r["cluster"], "lab");
    }
    // --peer picks one peer explicitly.
    let out = l.run(&["--config", cfg, "snapshot", "--peer", sim.url(2), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()[0]["peer"].as_str(), Some(sim.peers[2].id.as_str()));
    assert_eq!(out.json()[0]["previous_id"], 4);

    // The default ./ledger.toml in the working directory.
    std::fs::copy(l.path("conf/ledger.toml"), l.path("ledger.toml")).unwrap();
    std::fs::copy(l.path("conf/cluster.creds"), l.path("cluster.creds")).unwrap();
    let out = l.run(&["snapshot", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");

    // --all-peers with several --cluster addresses: two of the three members, so the third is
    // named as not read (exit 1).
    let l2 = Ledger::new();
    let list = format!("{},{}", sim.url(0), sim.url(1));
    let (out, reports) = l2.snapshot_with(&[("LEDGER_BASIC_AUTH", &auth)], &list, &["--all-peers"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("snapshotted 2 of 3 cluster peers; not read: "), "{out:?}");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["peer"].as_str(), Some(sim.peers[1].id.as_str()));
}

// ------------------------------------------------------------------------------------------------
// 1. The store: path, migrations, a newer schema

#[test]
fn db_status_lists_migrations_and_default_path() {
    let l = Ledger::new();
    let out = l.run(&["db", "status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("V1") && out.stdout.contains("pending"), "{}", out.stdout);
    let out = l.run(&["db", "migrate"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = l.run(&["db", "status"]);
    assert!(out.stdout.contains("V1") && out.stdout.contains("applied"), "{}", out.stdout);
    assert!(!out.stdout.contains("pending"), "{}", out.stdout);
    let out = l.run(&["db", "status", "--json"]);
    let j = out.json();
    let m = j["migrations"].as_array().unwrap();
    assert_eq!(m[0]["version"], 1);
    assert!(m[0]["applied_on"].is_string());
    // Store pragmas.
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");

    // Default path ./ledger.db, and LEDGER_DB: a command that writes creates the ledger there, and
    // a command that reads then finds it (a reading command creates none: issue 12).
    let dir = tempfile::tempdir().unwrap();
    let o = ledger().current_dir(dir.path()).args(["db", "migrate"]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(dir.path().join("ledger.db").exists(), "default ./ledger.db");
    let o = ledger().current_dir(dir.path()).args(["snapshots"]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = ledger()
        .current_dir(dir.path())
        .env("LEDGER_DB", dir.path().join("env.db"))
        .args(["db", "migrate"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(dir.path().join("env.db").exists(), "LEDGER_DB");
    let o = ledger()
        .current_dir(dir.path())
        .env("LEDGER_DB", dir.path().join("env.db"))
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let sim = Sim::start(&["--peers", "1", "--pins", "10", "--seed", "1", "--lag", "0"]);
    let l = Ledger::new();
    l.snapshot_ok(sim.url(0));
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        [],
    )
    .unwrap();
    drop(conn);
    for args in [
        vec!["snapshots"],
        vec!["--cluster", sim.url(0), "snapshot"],
        vec!["db", "status"],
        vec!["db", "migrate"],
        vec!["export", "pins", "--csv", "-"],
        vec!["diff", "1", "1"],
        vec!["history", "QmPASTNWe4WotTLLpqdtHh7ndvqRGUzrVEwwXcFodUMZ9z"],
    ] {
        let out = l.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("V999") && out.stderr.contains("newer"),
            "{args:?}: names the newer schema: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    // Untouched: still one snapshot, still the fake row.
    let conn = rusqlite::Connection::open(l.db()).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    let v: i64 = conn
        .query_row("SELECT max(version) FROM refinery_schema_history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 999);
}

// ------------------------------------------------------------------------------------------------
// 1. Two ledger processes on one database (a cron job and an operator): the busy timeout makes one
// wait for the other; neither fails, and neither's snapshot is mislabelled.

/// The exact lines `GET /allocations?filter=all` served.
fn served_lines(sim: &Sim, peer: usize) -> Vec<String> {
    let r = raw(sim.url(peer), "GET", "/allocations?filter=all", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Runs `ledger --cluster URL snapshot --json` on another thread.
fn snapshot_in_background(l: &Ledger, url: &str) -> std::thread::JoinHandle<Out> {
    let mut c = l.cmd();
    c.args(["--cluster", url, "snapshot", "--json"]);
    std::thread::spawn(move || {
        let o = c.output().expect("run ledger");
        Out::from(o)
    })
}

/// Waits until `h` has finished, or `within` has passed; true if it finished.
fn finished_within(h: &std::thread::JoinHandle<Out>, within: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if h.is_finished() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    h.is_finished()
}

// Snapshots into one ledger are written one at a time (one transaction each): a second snapshot waits
// for the first, then both complete, and neither relabels the other.
#[test]
fn a_snapshot_taken_while_another_is_streaming_waits_for_it() {
    let sim = Sim::start(&["--peers", "1", "--pins", "300", "--seed", "12", "--lag", "0"]);
    let l = Ledger::new();
    l.snapshot_ok(sim.url(0));
    // Peer B (a fake) serves the same pins, pausing after 50 lines.
    let lines = served_lines(&sim, 0);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut first = CHUNKED_HEAD.as_bytes().to_vec();
    first.extend(chunks(&refs[..50]));
    let mut rest = chunks(&refs[50..]);
    rest.extend(chunked_end(Some("")));
    let gate = Gate::default();
    let fake = fake_peer_gated(FAKE_PEER_ID, first, rest, Some(gate.clone()));
    let b = snapshot_in_background(&l, &fake);
    gate.wait_reached(Duration::from_secs(20));

    // Meanwhile, a snapshot of peer A with a change waits for B's.
    pin(&sim, 0, &cid_of("concurrent/a"), "name=a");
    let a = snapshot_in_background(&l, sim.url(0));
    assert!(!finished_within(&a, Duration::from_millis(1500)), "A did not wait for B");
    let during = l.snapshots();
    let b_during = during.iter().find(|s| s["peer"] == FAKE_PEER_ID).unwrap();
    assert_eq!(b_during["state"], "running", "B relabelled while streaming: {b_during}");

    gate.open();
    let out = b.join().unwrap();
    assert_eq!(out.code, 0, "the snapshot of peer B failed: {out:?}");
    let rb = &out.json()[0];
    assert_eq!((rb["complete"].as_bool(), rb["pins"].as_i64()), (Some(true), Some(300)), "{rb}");
    let out = a.join().unwrap();
    assert_eq!(out.code, 0, "the snapshot of peer A failed after waiting: {out:?}");
    let ra = &out.json()[0];
    assert_eq!(ra["new"], 1, "{ra}");
    let states: Vec<Value> = l.snapshots().iter().map(|s| s["state"].clone()).collect();
    assert_eq!(states, ["complete", "complete", "complete"]);
}

#[test]
fn first_snapshots_of_two_peers_racing_on_a_fresh_ledger() {
    let sim = Sim::start(&["--peers", "1", "--pins", "300", "--seed", "13", "--lag", "0"]);
    let l = Ledger::new();
    assert_eq!(l.run(&["db", "migrate"]).code, 0);
    // Peer B (a fake) serves the same pins, holding its stream until told to go on.
    let lines = served_lines(&sim, 0);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let gate = Gate::default();
    let fake =
        fake_peer_gated(FAKE_PEER_ID, Vec::new(), chunked(&refs, Some("")), Some(gate.clone()));
    let b = snapshot_in_background(&l, &fake);
    gate.wait_reached(Duration::from_secs(20));
    let a = snapshot_in_background(&l, sim.url(0));
    assert!(!finished_within(&a, Duration::from_millis(1000)), "A did not wait for B");
    gate.open();
    let out = b.join().unwrap();
    assert_eq!(out.code, 0, "the snapshot of peer B failed: {out:?}");
    let rb = out.json()[0].clone();
    assert_eq!((rb["complete"].as_bool(), rb["new"].as_i64()), (Some(true), Some(300)), "{rb}");
    let out = a.join().unwrap();
    assert_eq!(out.code, 0, "the snapshot of peer A failed: {out:?}");
    let ra = out.json()[0].clone();
    assert_eq!((ra["complete"].as_bool(), ra["new"].as_i64()), (Some(true), Some(300)), "{ra}");
    let all = served(&sim, 0);
    assert_reconstructs("peer B", &l.export_pins(rb["id"].as_i64()), &all);
    assert_reconstructs("peer A", &l.export_pins(ra["id"].as_i64()), &all);
}
