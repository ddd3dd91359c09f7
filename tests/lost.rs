//! `ledger lost`, `restore`, `owners` and `watch`, and the SQL views behind them (V4), run as the real
//! binary over HTTP against `ledger sim serve`, and (the `…::real` tests) the same bodies against a
//! real v1.1.6 cluster. The cluster is changed behind ledger's back with raw
//! requests, the way another tool or a careless script would (docs/cluster-api.md §6.1, §6.2).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

// ------------------------------------------------------------------------------------------------
// Helpers

const ORGS: [&str; 4] = ["hrdag", "amnesty", "witness", "bellingcat"];

/// Pin `i` of the seeded set, in the stored form of docs/cluster-api.md §2.1. Every pin has metadata
/// (`project`, `team`, a third of them `source`); four in five have an `org`, the fifth is unowned.
/// Names everywhere but every 25th pin. Every 4th pin (from the second) has replication 2/2 on two
/// peers, every 4th (from the fourth) 2/3 on three; the rest replicate everywhere. Every 6th pin
/// expires in 2036.
fn seed_pin(i: usize, ids: &[String]) -> Value {
    let mut meta = BTreeMap::new();
    if i % 5 != 4 {
        meta.insert("org".to_string(), ORGS[i % ORGS.len()].to_string());
    }
    meta.insert("project".to_string(), format!("p{}", i % 7));
    if i.is_multiple_of(3) {
        meta.insert("source".to_string(), "crawler".to_string());
    }
    meta.insert("team".to_string(), format!("t{}", i % 3));
    let name = if i % 25 == 24 { String::new() } else { format!("dataset-{i:04}/file.csv") };
    let n = ids.len();
    let (rmin, rmax, allocations): (i64, i64, Vec<String>) = match i % 4 {
        1 if n >= 2 => (2, 2, vec![ids[i % n].clone(), ids[(i + 1) % n].clone()]),
        3 if n >= 3 => (2, 3, ids[..3].to_vec()),
        _ => (-1, -1, Vec::new()),
    };
    let expire = if i.is_multiple_of(6) {
        format!("2036-{:02}-15T00:00:00Z", 1 + i % 12)
    } else {
        ZERO_TIME.to_string()
    };
    json!({
        "replication_factor_min": rmin,
        "replication_factor_max": rmax,
        "name": name,
        "mode": "recursive",
        "shard_size": 0,
        "user_allocations": null,
        "expire_at": expire,
        "metadata": meta,
        "pin_update": null,
        "origins": [],
        "cid": cid_of(&format!("lost/{i}")),
        "type": "pin",
        "allocations": allocations,
        "max_depth": -1,
        "reference": null,
        "timestamp": format!("2025-11-{:02}T10:00:00Z", 1 + i % 28),
    })
}

fn cid(p: &Value) -> String {
    p["cid"].as_str().unwrap().to_string()
}

/// The query of a re-pin that keeps every option of the stored pin `p` but the ones in `set`
/// (`name`, or `meta-KEY`); `None` in `set` drops that key.
fn full_query(p: &Value, set: &[(&str, Option<&str>)]) -> String {
    let mut q: BTreeMap<String, String> = BTreeMap::new();
    q.insert("name".into(), p["name"].as_str().unwrap_or("").into());
    q.insert("replication-min".into(), p["replication_factor_min"].to_string());
    q.insert("replication-max".into(), p["replication_factor_max"].to_string());
    for (k, v) in p["metadata"].as_object().into_iter().flatten() {
        q.insert(format!("meta-{k}"), v.as_str().unwrap().into());
    }
    let expire = p["expire_at"].as_str().unwrap_or(ZERO_TIME);
    if expire != ZERO_TIME {
        q.insert("expire-at".into(), expire.into());
    }
    let allocs: Vec<&str> =
        p["allocations"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !allocs.is_empty() {
        q.insert("user-allocations".into(), allocs.join(","));
    }
    for (k, v) in set {
        match v {
            Some(v) => q.insert(k.to_string(), v.to_string()),
            None => q.remove(*k),
        };
    }
    q.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// A cluster seeded with `seed_pin` pins through its REST API, and a ledger in a temporary
/// directory that knows every peer of it. `pins` is what the cluster stored, in seed order.
struct Lab {
    cluster: Cluster,
    dir: tempfile::TempDir,
    pins: Vec<Value>,
}

impl Lab {
    /// On the simulator, without lag (deterministic).
    fn start(peers: usize, n: usize) -> Lab {
        let sim = Sim::start(&["--peers", &peers.to_string(), "--lag", "0"]);
        Lab::seeded(Cluster::Sim(sim), n)
    }

    /// On `backend` (the simulator as in [`Lab::start`]); `None` when the real cluster is not here.
    fn on(backend: Backend, peers: usize, n: usize) -> Option<Lab> {
        match backend {
            Backend::Sim => Some(Lab::start(peers, n)),
            Backend::Real => Cluster::start(backend, peers).map(|c| Lab::seeded(c, n)),
        }
    }

    fn seeded(cluster: Cluster, n: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ids = cluster.ids();
        let seeds: Vec<Value> = (0..n).map(|i| seed_pin(i, &ids)).collect();
        let requests: Vec<(String, String)> =
            seeds.iter().map(|p| (format!("/pins/{}", cid(p)), full_query(p, &[]))).collect();
        let stored: BTreeMap<String, Value> =
            cluster.seed(&requests).into_iter().map(|p| (cid(&p), p)).collect();
        let pins: Vec<Value> = seeds.iter().map(|p| stored[&cid(p)].clone()).collect();
        for (seed, pin) in seeds.iter().zip(&pins) {
            assert_eq!(restorable(pin)["metadata"], seed["metadata"], "seeded {}", cid(seed));
        }
        // What the tests change next lands in a later second than the seed: stored timestamps
        // have second precision, and a loss is told from the timestamp that moved.
        std::thread::sleep(Duration::from_millis(1100));
        Lab { cluster, dir, pins }
    }

    /// The simulator, for steps only it can take (faults, counters).
    fn sim(&self) -> &Sim {
        match &self.cluster {
            Cluster::Sim(s) => s,
            Cluster::Real(_) => panic!("a simulator-only step on the real cluster"),
        }
    }

    /// Writes the cluster committed so far, where the backend counts them (the simulator does).
    fn writes(&self) -> Option<u64> {
        match &self.cluster {
            Cluster::Sim(s) => s.state()["writes"].as_u64(),
            Cluster::Real(_) => None,
        }
    }

    fn wait_converged(&self) {
        self.cluster.wait_converged(Duration::from_secs(60));
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    fn urls(&self) -> String {
        self.cluster.urls()
    }

    fn ids(&self) -> BTreeSet<String> {
        self.cluster.ids().into_iter().collect()
    }

    /// `ledger --db ledger.db --cluster <every peer> ARGS`.
    fn run(&self, args: &[&str]) -> Out {
        let o = ledger()
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db", "--cluster", &self.urls()])
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run ledger");
        Out::from(o)
    }

    /// `ledger snapshot --all-peers --json` once the cluster has settled: the snapshot ID of every
    /// peer, in peer order; every snapshot must complete.
    fn snapshot_all(&self) -> Vec<i64> {
        self.wait_converged();
        let out = self.run(&["snapshot", "--all-peers", "--json"]);
        assert_eq!(out.code, 0, "snapshot --all-peers: {out:?}");
        let reports = out.json();
        let reports = reports.as_array().unwrap();
        assert_eq!(reports.len(), self.cluster.len(), "{out:?}");
        self.cluster
            .ids()
            .iter()
            .map(|id| {
                let r = reports
                    .iter()
                    .find(|r| r["peer"] == id.as_str())
                    .unwrap_or_else(|| panic!("no snapshot of {id}: {out:?}"));
                assert_eq!(r["complete"], true, "{r}");
                r["id"].as_i64().unwrap()
            })
            .collect()
    }

    /// `ledger lost --json EXTRA`: the exit code and the report.
    fn lost(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["lost", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.code == 0 || out.code == 1, "lost {extra:?}: {out:?}");
        let v = out.json();
        let n = v["losses"].as_array().unwrap_or_else(|| panic!("no losses list: {v}")).len();
        assert_eq!(v["count"], n, "count is the number of losses: {v}");
        assert_eq!(
            out.code,
            if n > 0 { 1 } else { 0 },
            "exit 1 exactly when something is lost: {v}"
        );
        (out.code, v)
    }

    /// `ledger restore --json EXTRA`: the exit code and the report.
    fn restore(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["restore", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.code == 0 || out.code == 1, "restore {extra:?}: {out:?}");
        let v = out.json();
        for k in ["restored", "conflicts", "unpinned", "failed"] {
            assert!(v[k].is_array(), "restore report has no {k} list: {v}");
        }
        (out.code, v)
    }

    /// `GET /allocations/{cid}` on one peer: the stored pin, `None` on 404.
    fn get(&self, peer: usize, cid: &str) -> Option<Value> {
        let r = raw(self.cluster.url(peer), "GET", &format!("/allocations/{cid}"), &[], b"");
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GET /allocations/{cid} on peer{peer}: {s} {}", r.text()),
        }
    }

    /// A raw `POST /pins/{cid}?QUERY` on one peer (empty query: the bare re-pin that wipes).
    fn post(&self, peer: usize, cid: &str, query: &str) {
        let path =
            if query.is_empty() { format!("/pins/{cid}") } else { format!("/pins/{cid}?{query}") };
        let r = raw(self.cluster.url(peer), "POST", &path, &[], b"");
        assert_eq!(r.status, 200, "POST {path} on peer{peer}: {}", r.text());
    }

    /// A raw `POST /pins/{cid}` whose options travel in a JSON body, which the cluster ignores
    /// (docs/cluster-api.md §6.2): the pin is wiped.
    fn post_json_body(&self, peer: usize, p: &Value) {
        let body = json!({
            "name": p["name"],
            "metadata": p["metadata"],
            "replication_factor_min": p["replication_factor_min"],
            "replication_factor_max": p["replication_factor_max"],
            "expire_at": p["expire_at"],
        })
        .to_string();
        let path = format!("/pins/{}", cid(p));
        let r = raw(
            self.cluster.url(peer),
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "POST {path} with a JSON body: {}", r.text());
    }

    fn unpin(&self, peer: usize, cid: &str) {
        let r = raw(self.cluster.url(peer), "DELETE", &format!("/pins/{cid}"), &[], b"");
        assert_eq!(r.status, 200, "DELETE /pins/{cid}: {}", r.text());
    }

    /// Rows of a query on the ledger database, every value as text (`NULL` for null).
    fn sql(&self, q: &str) -> Vec<Vec<String>> {
        sql_rows(&self.db(), q)
    }

    /// The losses each snapshot recorded as it was committed are those the whole history gives
    /// when read again through `change_losses` (what V7's migration reads for a ledger before it):
    /// every change merged where it was first seen, every sighting, every value.
    fn check_recorded_losses(&self) {
        let key = "cid_id, hex(before_digest), hex(after_digest)";
        let recorded = self.sql(&format!(
            "SELECT {key}, series_id, last_had, first_lacking, f.value ->> 0, f.value ->> 1,
                    f.value ->> 2
             FROM losses l, json_each(l.fields) f ORDER BY 1, 2, 3, 7"
        ));
        let again = self.sql(&format!(
            "SELECT {key}, series_id, last_had, first_lacking, field, before_value, after_value
             FROM change_losses c WHERE first_lacking = (SELECT min(first_lacking) FROM change_losses e
                 WHERE e.cid_id = c.cid_id AND e.before_digest = c.before_digest
                   AND e.after_digest IS c.after_digest)
             ORDER BY 1, 2, 3, 7"
        ));
        assert!(!recorded.is_empty(), "no loss was recorded");
        assert_eq!(recorded, again, "losses as recorded, and as the history gives them");
        let sightings = self.sql(&format!(
            "SELECT {key}, s.first_lacking, s.series_id, s.last_had
             FROM loss_sightings s JOIN losses l ON l.id = s.loss_id ORDER BY 1, 2, 3, 4"
        ));
        let again = self.sql(&format!(
            "SELECT DISTINCT {key}, first_lacking, series_id, last_had FROM change_losses ORDER BY 1, 2, 3, 4"
        ));
        assert_eq!(sightings, again, "sightings as recorded, and as the history gives them");
        let kept = self.sql(&format!(
            "SELECT {key}, timestamp_before, timestamp_after, sighting_series FROM losses l ORDER BY 1, 2, 3"
        ));
        let again = self.sql(&format!(
            "SELECT {key},
                    (SELECT cluster_timestamp FROM pin_versions v
                      WHERE v.cid_id = l.cid_id AND v.digest = l.before_digest),
                    (SELECT cluster_timestamp FROM pin_versions v
                      WHERE v.cid_id = l.cid_id AND v.digest = l.after_digest),
                    (SELECT json_group_array(series_id) FROM (
                        SELECT series_id, min(first_lacking) AS first FROM loss_sightings s
                        WHERE s.loss_id = l.id GROUP BY series_id ORDER BY first))
             FROM losses l ORDER BY 1, 2, 3"
        ));
        assert_eq!(
            kept, again,
            "each loss's timestamps and series, and as its versions and sightings give them"
        );
    }

    /// The `sqlite3` command-line shell on the ledger database: its output lines.
    fn sqlite3(&self, q: &str) -> Vec<String> {
        let out = std::process::Command::new("sqlite3")
            .args(["-batch", "-noheader"])
            .arg(self.db())
            .arg(q)
            .output()
            .expect("run sqlite3");
        assert!(out.status.success(), "sqlite3 {q}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// The losses of a `lost --json` report by CID; a CID listed twice fails (each CID here changed once).
fn by_cid(report: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for l in report["losses"].as_array().unwrap() {
        let c = l["cid"].as_str().unwrap_or_else(|| panic!("a loss without cid: {l}")).to_string();
        assert!(m.insert(c.clone(), l.clone()).is_none(), "{c} is listed twice: {report}");
    }
    m
}

/// A loss's fields: name → (before, after).
fn fields(l: &Value) -> BTreeMap<String, (Value, Value)> {
    let mut m = BTreeMap::new();
    for f in l["fields"].as_array().unwrap_or_else(|| panic!("no fields list: {l}")) {
        let name = f["field"].as_str().unwrap_or_else(|| panic!("field without name: {l}"));
        let prev = m.insert(name.to_string(), (f["before"].clone(), f["after"].clone()));
        assert!(prev.is_none(), "field {name} listed twice: {l}");
    }
    m
}

fn str_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_string())
        .collect()
}

fn cids_of(indices: &[usize], pins: &[Value]) -> BTreeSet<String> {
    indices.iter().map(|&i| cid(&pins[i])).collect()
}

fn same_time(a: &str, b: &str) -> bool {
    match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn alloc_set(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The fields a wipe (a bare re-pin, docs/cluster-api.md §6.1) takes from pin `b`: every metadata key, a
/// non-empty name, non-empty allocations, replication factors other than the default -1 and an expiry.
fn wiped_fields(b: &Value) -> BTreeSet<String> {
    let mut f: BTreeSet<String> = b["metadata"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| format!("metadata.{k}"))
        .collect();
    if b["name"] != "" {
        f.insert("name".into());
    }
    if !alloc_set(&b["allocations"]).is_empty() {
        f.insert("allocations".into());
    }
    if b["replication_factor_min"] != -1 {
        f.insert("replication_min".into());
    }
    if b["replication_factor_max"] != -1 {
        f.insert("replication_max".into());
    }
    if b["expire_at"] != ZERO_TIME {
        f.insert("expire_at".into());
    }
    f
}

/// A loss `l` of pin `b` by a wipe: field by field with the values before and what the wipe left.
fn check_wiped(b: &Value, l: &Value) {
    let c = cid(b);
    let f = fields(l);
    assert_eq!(f.keys().cloned().collect::<BTreeSet<_>>(), wiped_fields(b), "fields of {c}: {l}");
    for (k, v) in b["metadata"].as_object().unwrap() {
        assert_eq!(
            f[&format!("metadata.{k}")],
            (v.clone(), Value::Null),
            "metadata.{k} of {c}: {l}"
        );
    }
    if let Some((before, after)) = f.get("name") {
        assert_eq!(before, &b["name"], "name of {c}: {l}");
        // The cluster stores "no name" as "": the name is gone, so `after` is null.
        assert!(after.is_null(), "name after the wipe of {c} is gone (null): {l}");
    }
    if let Some((before, after)) = f.get("allocations") {
        let text = before.as_str().unwrap_or_else(|| panic!("allocations as text: {l}"));
        let list: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("allocations before is not JSON array text ({e}): {l}"));
        assert_eq!(alloc_set(&list), alloc_set(&b["allocations"]), "allocations of {c}: {l}");
        // Gone: null, or the empty list as text.
        assert!(after.is_null() || after == "[]", "allocations after the wipe of {c}: {l}");
    }
    for (field, key) in [
        ("replication_min", "replication_factor_min"),
        ("replication_max", "replication_factor_max"),
    ] {
        if let Some(pair) = f.get(field) {
            assert_eq!(pair, &(json!(b[key].to_string()), json!("-1")), "{field} of {c}: {l}");
        }
    }
    if let Some((before, after)) = f.get("expire_at") {
        let before = before.as_str().unwrap_or_else(|| panic!("expire_at as text: {l}"));
        assert!(same_time(before, b["expire_at"].as_str().unwrap()), "expire_at of {c}: {l}");
        assert!(after.is_null(), "expiry after the wipe of {c}: {l}");
    }
}

/// Attribution `outside`: the cluster timestamp moved and ledger sent nothing.
fn check_outside(b: &Value, l: &Value) {
    let a = &l["attribution"];
    assert_eq!(a["kind"], "outside", "{l}");
    for k in ["run", "pass", "repin", "query"] {
        assert!(a[k].is_null(), "no re-pin of ours, so no {k}: {l}");
    }
    let before = a["timestamp_before"].as_str().unwrap_or_else(|| panic!("timestamp_before: {l}"));
    assert!(same_time(before, b["timestamp"].as_str().unwrap()), "timestamp_before: {l}");
    let after = a["timestamp_after"].as_str().unwrap_or_else(|| panic!("timestamp_after: {l}"));
    assert!(!same_time(before, after), "the timestamp moved: {l}");
    assert_eq!(l["unpinned"], false, "{l}");
}

/// The fields of a stored pin that a restore brings back (allocations as a set).
fn restorable(p: &Value) -> Value {
    json!({
        "name": p["name"],
        "metadata": p["metadata"],
        "replication_factor_min": p["replication_factor_min"],
        "replication_factor_max": p["replication_factor_max"],
        "expire_at": p["expire_at"],
        "mode": p["mode"],
        "origins": p["origins"],
        "allocations": alloc_set(&p["allocations"]).into_iter().collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------------------------------------
// A. The incident: wipes, a rename and unpins behind ledger's back; lost finds them; restore repairs

fn lost_finds_every_wipe_rename_and_unpin_and_restore_repairs_them(b: Backend) {
    let Some(lab) = Lab::on(b, 3, 300) else { return };
    let pins = &lab.pins;
    let round1 = lab.snapshot_all();
    let (_, none) = lab.lost(&[]);
    assert_eq!(none["count"], 0, "one snapshot per peer is no evidence of anything: {none}");

    // The incident, straight to the cluster: 50 bare re-pins and 20 JSON-body re-pins (both wipe),
    // 10 renames through peer2 that keep every other option, 5 unpins.
    let bare: Vec<usize> = (0..50).collect();
    let body: Vec<usize> = (50..70).collect();
    let renamed: Vec<usize> = (70..).filter(|&i| pins[i]["name"] != "").take(10).collect();
    let unpinned: Vec<usize> = (renamed[9] + 1..renamed[9] + 6).collect();
    for &i in &bare {
        lab.post(0, &cid(&pins[i]), "");
    }
    for &i in &body {
        lab.post_json_body(0, &pins[i]);
    }
    for &i in &renamed {
        let q = full_query(&pins[i], &[("name", Some(&format!("renamed-{i}")))]);
        lab.post(2, &cid(&pins[i]), &q);
    }
    for &i in &unpinned {
        lab.unpin(0, &cid(&pins[i]));
    }
    lab.wait_converged();
    for &i in &renamed {
        // The rename kept every other option (the test's own re-pin is right).
        let now = lab.get(0, &cid(&pins[i])).unwrap();
        let mut want = restorable(&pins[i]);
        want["name"] = json!(format!("renamed-{i}"));
        assert_eq!(restorable(&now), want, "rename of pin {i}");
    }
    let round2 = lab.snapshot_all();

    let (code, report) = lab.lost(&[]);
    assert_eq!(code, 1);
    let losses = by_cid(&report);
    let wiped: Vec<usize> = bare.iter().chain(&body).copied().collect();
    let all: BTreeSet<String> = cids_of(&wiped, pins)
        .into_iter()
        .chain(cids_of(&renamed, pins))
        .chain(cids_of(&unpinned, pins))
        .collect();
    assert_eq!(all.len(), 85);
    assert_eq!(losses.keys().cloned().collect::<BTreeSet<_>>(), all, "exactly the 85 changed pins");
    assert_eq!(report["count"], 85);
    for l in losses.values() {
        assert_eq!(str_set(&l["peers"]), lab.ids(), "every peer saw it: {l}");
        let last = l["last_had"]["snapshot"].as_i64().unwrap_or_else(|| panic!("last_had: {l}"));
        let first =
            l["first_lacking"]["snapshot"].as_i64().unwrap_or_else(|| panic!("first_lacking: {l}"));
        assert!(round1.contains(&last), "last_had is a first-round snapshot: {l}");
        assert!(round2.contains(&first), "first_lacking is a second-round snapshot: {l}");
        for k in ["last_had", "first_lacking"] {
            let at = l[k]["at"].as_str().unwrap_or_else(|| panic!("{k}.at: {l}"));
            assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{k}.at is RFC 3339: {l}");
        }
    }
    for &i in &wiped {
        let l = &losses[&cid(&pins[i])];
        check_wiped(&pins[i], l);
        check_outside(&pins[i], l);
    }
    for &i in &renamed {
        let l = &losses[&cid(&pins[i])];
        let f = fields(l);
        assert_eq!(f.len(), 1, "a rename changes the name only: {l}");
        assert_eq!(f["name"], (pins[i]["name"].clone(), json!(format!("renamed-{i}"))), "{l}");
        check_outside(&pins[i], l);
    }
    for &i in &unpinned {
        let l = &losses[&cid(&pins[i])];
        assert_eq!(l["unpinned"], true, "{l}");
        assert_eq!(l["attribution"]["kind"], "unpinned", "{l}");
        let f = fields(l);
        let meta = pins[i]["metadata"].as_object().unwrap();
        for (k, v) in meta {
            assert_eq!(f[&format!("metadata.{k}")], (v.clone(), Value::Null), "{l}");
        }
    }

    // --key restricts to losses of one metadata key; --since to losses after a snapshot or a time.
    let (_, org) = lab.lost(&["--key", "org"]);
    let with_org: BTreeSet<String> = wiped
        .iter()
        .chain(&unpinned)
        .filter(|&&i| pins[i]["metadata"]["org"].is_string())
        .map(|&i| cid(&pins[i]))
        .collect();
    assert_eq!(by_cid(&org).keys().cloned().collect::<BTreeSet<_>>(), with_org, "--key org");
    let (_, nokey) = lab.lost(&["--key", "no-such-key"]);
    assert_eq!(nokey["count"], 0, "{nokey}");
    let r1_last = round1.iter().max().unwrap().to_string();
    let r2_last = round2.iter().max().unwrap().to_string();
    assert_eq!(lab.lost(&["--since", &r1_last]).1["count"], 85);
    assert_eq!(lab.lost(&["--since", &r2_last]).1["count"], 0);
    assert_eq!(lab.lost(&["--since", "2000-01-01T00:00:00Z"]).1["count"], 85);
    assert_eq!(lab.lost(&["--since", "2999-01-01T00:00:00Z"]).1["count"], 0);
    // The table for people.
    let table = lab.run(&["lost"]);
    assert_eq!(table.code, 1, "{table:?}");
    for &i in renamed.iter().chain(&unpinned) {
        assert!(table.stdout.contains(&cid(&pins[i])), "pin {i} in the table: {}", table.stdout);
    }

    // One wiped pin changes again before anyone restores: a conflict.
    let conflict = cid(&pins[bare[0]]);
    lab.post(0, &conflict, "meta-org=someoneelse");
    let round3 = lab.snapshot_all();
    let conflicted = lab.get(0, &conflict).unwrap();

    let writes = lab.writes();
    let from = round1[0].to_string();
    let (code, r) = lab.restore(&["--from", &from]);
    assert_eq!(code, 1, "a conflict and unpinned pins need attention: {r}");
    assert_eq!(r["dry_run"], false, "{r}");
    let run = r["run"].as_i64().unwrap_or_else(|| panic!("no run id: {r}"));
    let expected: BTreeSet<String> =
        cids_of(&wiped[1..], pins).into_iter().chain(cids_of(&renamed, pins)).collect();
    assert_eq!(expected.len(), 79);
    assert_eq!(str_set(&r["restored"]), expected, "restored: {r}");
    let conflicts = r["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{r}");
    assert_eq!(conflicts[0]["cid"], conflict.as_str(), "{r}");
    assert!(conflicts[0]["reason"].as_str().is_some_and(|s| !s.is_empty()), "a reason: {r}");
    assert_eq!(str_set(&r["unpinned"]), cids_of(&unpinned, pins), "{r}");
    assert_eq!(r["failed"], json!([]), "{r}");
    if let (Some(before), Some(after)) = (writes, lab.writes()) {
        assert!(after >= before + 79, "79 re-pins were sent");
    }

    // On every peer, the 79 are back to their last-known state; the conflict is untouched.
    lab.wait_converged();
    for peer in 0..3 {
        for i in wiped[1..].iter().chain(&renamed) {
            let c = cid(&pins[*i]);
            let now = lab.get(peer, &c).unwrap_or_else(|| panic!("{c} gone from peer{peer}"));
            assert_eq!(restorable(&now), restorable(&pins[*i]), "pin {i} ({c}) on peer{peer}");
        }
        assert_eq!(lab.get(peer, &conflict).as_ref(), Some(&conflicted), "conflict on peer{peer}");
        for &i in &unpinned {
            assert!(lab.get(peer, &cid(&pins[i])).is_none(), "unpinned pin {i} was re-pinned");
        }
    }
    // On the record: a run of kind restore and one applied re-pin per restored pin.
    let runs = lab.sql("SELECT id, kind, dry_run FROM runs");
    assert_eq!(runs, vec![vec![run.to_string(), "restore".into(), "0".into()]]);
    let applied: Vec<String> = lab
        .sql(&format!(
            "SELECT c.cid FROM repins r JOIN cids c ON c.id = r.cid_id
             WHERE r.run_id = {run} AND r.outcome = 'applied'"
        ))
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(applied.len(), 79, "one applied re-pin per restored pin");
    assert_eq!(applied.into_iter().collect::<BTreeSet<_>>(), expected);

    // --force overwrites the conflict with the last-known values too.
    let round4 = lab.snapshot_all();
    let (code, r) = lab.restore(&["--from", &from, "--force"]);
    assert_eq!(code, 1, "the unpinned pins still need attention: {r}");
    let forced = r["run"].as_i64().unwrap();
    // The 79 have their last-known values again in the latest snapshot: nothing to restore there.
    assert_eq!(str_set(&r["restored"]), BTreeSet::from([conflict.clone()]), "--force: {r}");
    assert_eq!(r["conflicts"], json!([]), "forced, so no longer a conflict: {r}");
    assert_eq!(
        lab.sql(&format!(
            "SELECT count(*) FROM repins WHERE run_id = {forced} AND outcome = 'applied'"
        )),
        [["1"]]
    );
    assert_eq!(str_set(&r["unpinned"]), cids_of(&unpinned, pins), "{r}");
    assert_eq!(r["failed"], json!([]), "{r}");
    lab.wait_converged();
    for peer in 0..3 {
        for i in wiped.iter().chain(&renamed) {
            let now = lab.get(peer, &cid(&pins[*i])).unwrap();
            assert_eq!(restorable(&now), restorable(&pins[*i]), "pin {i} on peer{peer}");
        }
    }

    // What the restores changed shows up as ledger's own doing, and afterwards nothing is lost.
    let round5 = lab.snapshot_all();
    let r3_last = round3.iter().max().unwrap().to_string();
    let (_, since3) = lab.lost(&["--since", &r3_last]);
    for l in since3["losses"].as_array().unwrap() {
        let a = &l["attribution"];
        assert_eq!(a["kind"], "ours", "a change the restore made: {l}");
        assert!(a["run"] == run || a["run"] == forced, "{l}");
        assert!(a["query"].is_string() && a["repin"].is_i64(), "{l}");
    }
    let r4_last = round4.iter().max().unwrap().to_string();
    let (_, since4) = lab.lost(&["--since", &r4_last]);
    let l = &by_cid(&since4)[&conflict];
    assert_eq!(l["attribution"]["kind"], "ours", "{l}");
    assert_eq!(l["attribution"]["run"], forced, "{l}");
    assert_eq!(fields(l)["metadata.org"], (json!("someoneelse"), json!("hrdag")), "{l}");
    let r5_last = round5.iter().max().unwrap().to_string();
    let (code, after) = lab.lost(&["--since", &r5_last]);
    assert_eq!((code, &after["count"]), (0, &json!(0)), "nothing new: {after}");
    lab.check_recorded_losses();
}

crate::on_both!(lost_finds_every_wipe_rename_and_unpin_and_restore_repairs_them);

// ------------------------------------------------------------------------------------------------
// B. A re-pin ledger sent is attributed to ledger

fn a_loss_from_our_own_repin_is_attributed_ours_with_run_and_query(b: Backend) {
    let Some(lab) = Lab::on(b, 2, 40) else { return };
    lab.snapshot_all();
    let p = &lab.pins[1];
    let c = cid(p);
    let out = lab.run(&["repin", &c, "--unset", "team", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    lab.snapshot_all();

    let rows = lab.sql("SELECT r.id, r.run_id, r.query FROM repins r");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (repin, run, query) = (&rows[0][0], &rows[0][1], &rows[0][2]);
    assert!(!query.contains("meta-team"), "the query dropped team: {query}");

    let (code, report) = lab.lost(&["--key", "team"]);
    assert_eq!(code, 1);
    let losses = by_cid(&report);
    assert_eq!(losses.keys().collect::<Vec<_>>(), [&c], "{report}");
    let l = &losses[&c];
    let a = &l["attribution"];
    assert_eq!(a["kind"], "ours", "{l}");
    assert_eq!(a["run"].to_string(), *run, "{l}");
    assert_eq!(a["repin"].to_string(), *repin, "{l}");
    assert_eq!(a["query"], query.as_str(), "{l}");
    assert_eq!(l["unpinned"], false);
    assert_eq!(str_set(&l["peers"]), lab.ids(), "{l}");
    assert_eq!(fields(l)["metadata.team"], (p["metadata"]["team"].clone(), Value::Null), "{l}");
    // The one change of the history, and it touched no org.
    assert_eq!(by_cid(&lab.lost(&[]).1).len(), 1);
    assert_eq!(lab.lost(&["--key", "org"]).1["count"], 0);
    lab.check_recorded_losses();
}

crate::on_both!(a_loss_from_our_own_repin_is_attributed_ours_with_run_and_query);

// ------------------------------------------------------------------------------------------------
// C. An incomplete snapshot is never evidence

#[test]
fn an_incomplete_snapshot_is_never_evidence_of_a_loss() {
    let lab = Lab::start(1, 300);
    let first = lab.snapshot_all()[0];
    // A pin that the next, cut stream will not reach is wiped.
    let served = raw(lab.sim().url(0), "GET", "/allocations?filter=all", &[], b"").ndjson();
    let late = cid(&served[200]);
    let b = lab.pins.iter().find(|p| cid(p) == late).unwrap().clone();
    lab.post(0, &late, "");
    lab.sim().control(
        "POST",
        "/_sim/faults",
        r#"{"stream_cut":{"after":50,"mode":"trailer","count":1}}"#,
    );
    let out = lab.run(&["snapshot", "--json"]);
    assert_eq!(out.code, 2, "the cut snapshot is incomplete: {out:?}");
    assert_eq!(out.json()[0]["complete"], false, "{out:?}");
    let cut = out.json()[0]["id"].as_i64().unwrap();

    // 250 pins were missing from the cut stream, one really changed: none of it is evidence yet.
    let (code, report) = lab.lost(&[]);
    assert_eq!((code, &report["count"]), (0, &json!(0)), "{report}");
    assert_eq!(lab.run(&["lost"]).code, 0);

    // The next complete snapshot is: exactly the real change, from the first to the third snapshot.
    let third = lab.snapshot_all()[0];
    let (code, report) = lab.lost(&[]);
    assert_eq!(code, 1);
    let losses = by_cid(&report);
    assert_eq!(losses.keys().collect::<Vec<_>>(), [&late], "{report}");
    let l = &losses[&late];
    assert_eq!(l["last_had"]["snapshot"], first, "{l}");
    assert_eq!(l["first_lacking"]["snapshot"], third, "not the incomplete {cut}: {l}");
    check_wiped(&b, l);
    check_outside(&b, l);
}

// ------------------------------------------------------------------------------------------------
// D. A dry run sends nothing

fn restore_dry_run_lists_what_it_would_restore_and_sends_nothing(b: Backend) {
    let Some(lab) = Lab::on(b, 2, 40) else { return };
    let round1 = lab.snapshot_all();
    let wiped: Vec<usize> = (0..5).collect();
    for &i in &wiped {
        lab.post(0, &cid(&lab.pins[i]), "");
    }
    lab.snapshot_all();
    let before: Vec<Value> =
        wiped.iter().map(|&i| lab.get(0, &cid(&lab.pins[i])).unwrap()).collect();
    let writes = lab.writes();
    // Every peer's replica as it stands, to show that the dry run changed none.
    let replicas: Vec<Vec<Value>> = (0..lab.cluster.len()).map(|i| lab.cluster.pinset(i)).collect();

    let from = round1[0].to_string();
    let (code, r) = lab.restore(&["--from", &from, "--dry-run"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(str_set(&r["restored"]), cids_of(&wiped, &lab.pins), "what it would restore: {r}");
    assert_eq!(
        (&r["conflicts"], &r["unpinned"], &r["failed"]),
        (&json!([]), &json!([]), &json!([]))
    );
    assert_eq!(lab.writes(), writes, "a dry run wrote to the cluster");
    lab.wait_converged();
    let after: Vec<Vec<Value>> = (0..lab.cluster.len()).map(|i| lab.cluster.pinset(i)).collect();
    assert_eq!(after, replicas, "a dry run changed a replica");
    for (k, &i) in wiped.iter().enumerate() {
        assert_eq!(lab.get(0, &cid(&lab.pins[i])).unwrap(), before[k], "pin {i} changed");
    }
    assert_eq!(lab.sql("SELECT count(*) FROM repins WHERE status = 'sent'"), [["0"]]);

    // The same without --dry-run restores them.
    let (code, r) = lab.restore(&["--from", &from]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(str_set(&r["restored"]), cids_of(&wiped, &lab.pins), "{r}");
    for &i in &wiped {
        let now = lab.get(0, &cid(&lab.pins[i])).unwrap();
        assert_eq!(restorable(&now), restorable(&lab.pins[i]), "pin {i}");
    }
}

crate::on_both!(restore_dry_run_lists_what_it_would_restore_and_sends_nothing);

/// `--keys` restores only those metadata keys (no other field); `--only` only the listed pins.
#[test]
fn restore_keys_and_only_narrow_what_comes_back() {
    let lab = Lab::start(2, 40);
    let round1 = lab.snapshot_all();
    // Wiped pins that had a name and an org and another key.
    let wiped: Vec<usize> = (0..lab.pins.len())
        .filter(|&i| {
            let p = &lab.pins[i];
            p["name"] != "" && p["metadata"]["org"].is_string() && p["metadata"]["team"].is_string()
        })
        .take(4)
        .collect();
    assert_eq!(wiped.len(), 4, "the seed has such pins");
    for &i in &wiped {
        lab.post(0, &cid(&lab.pins[i]), "");
    }
    lab.snapshot_all();
    let from = round1[0].to_string();

    // --only: the first two pins, and only their org.
    let only = lab.dir.path().join("only.txt");
    let listed =
        format!("# two of them\n{}\n\n{}\n", cid(&lab.pins[wiped[0]]), cid(&lab.pins[wiped[1]]));
    std::fs::write(&only, listed).unwrap();
    let (code, r) =
        lab.restore(&["--from", &from, "--keys", "org", "--only", only.to_str().unwrap()]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(str_set(&r["restored"]), cids_of(&wiped[..2], &lab.pins), "{r}");
    lab.wait_converged();
    for &i in &wiped[..2] {
        let now = lab.get(1, &cid(&lab.pins[i])).unwrap();
        assert_eq!(now["metadata"], json!({"org": lab.pins[i]["metadata"]["org"]}), "pin {i}");
        assert_eq!(now["name"], "", "--keys restores no other field: pin {i}");
    }
    for &i in &wiped[2..] {
        let now = lab.get(1, &cid(&lab.pins[i])).unwrap();
        assert!(now["metadata"].as_object().is_none_or(|m| m.is_empty()), "not listed: pin {i}");
    }
    // A bad key or an unreadable list is refused before anything is sent.
    let out = lab.run(&["restore", "--from", &from, "--keys", "a&b"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = lab.run(&["restore", "--from", &from, "--only", "/no/such/file"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("/no/such/file"), "{out:?}");
    let out = lab.run(&["restore", "--from", "999"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no snapshot 999"), "{out:?}");

    // Without them, everything the rest lost comes back.
    lab.snapshot_all();
    let (code, r) = lab.restore(&["--from", &from]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(str_set(&r["restored"]), cids_of(&wiped, &lab.pins), "{r}");
    lab.wait_converged();
    for &i in &wiped {
        let now = lab.get(1, &cid(&lab.pins[i])).unwrap();
        assert_eq!(restorable(&now), restorable(&lab.pins[i]), "pin {i}");
    }
}

// ------------------------------------------------------------------------------------------------
// E. Owners

/// `ledger owners --json`, its peers checked against `pins`, `snapshots` (in peer order).
fn check_owners(lab: &Lab, pins: &[Value], snapshots: &[i64]) -> Value {
    let out = lab.run(&["owners", "--json"]);
    assert!(out.code == 0 || out.code == 1, "{out:?}");
    let v = out.json();
    let peers = v["peers"].as_array().unwrap_or_else(|| panic!("no peers list: {v}"));
    assert_eq!(peers.len(), lab.cluster.len(), "{v}");
    let (orgs, unowned) = org_counts(pins);
    for (i, id) in lab.cluster.ids().iter().enumerate() {
        let e = peers
            .iter()
            .find(|e| e["peer"] == id.as_str())
            .unwrap_or_else(|| panic!("no entry for {id}: {v}"));
        assert_eq!(e["snapshot"], snapshots[i], "the peer's latest complete snapshot: {e}");
        let got: BTreeMap<String, i64> = e["orgs"]
            .as_object()
            .unwrap_or_else(|| panic!("no orgs map: {e}"))
            .iter()
            .map(|(k, n)| (k.clone(), n.as_i64().unwrap()))
            .collect();
        assert_eq!(got, orgs, "{e}");
        assert_eq!(e["unowned"], unowned, "{e}");
    }
    // The counts recorded at each commit are those the peers' open intervals give.
    let counted = lab.sql(
        "SELECT o.series_id, v.org, count(*) FROM observations o
         JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
         WHERE o.last_snapshot IS NULL GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let recorded = lab.sql(
        "SELECT s.series_id, o.org, o.pins FROM owners w JOIN snapshots s ON s.id = w.snapshot_id
         JOIN snapshot_owners o ON o.snapshot_id = s.id AND o.org IS w.org ORDER BY 1, 2",
    );
    assert_eq!(recorded, counted, "owners as recorded, and as the intervals count them");
    v
}

fn owners_counts_per_org_and_peer_and_lists_org_changes(b: Backend) {
    let Some(lab) = Lab::on(b, 3, 120) else { return };
    let round1 = lab.snapshot_all();
    let v = check_owners(&lab, &lab.pins, &round1);
    assert_eq!((&v["changes"], &v["replaced"]), (&json!([]), &json!([])), "{v}");

    // Three re-pins that keep everything but the org: hrdag → witness, unowned → newco, amnesty → none.
    let mut now = lab.pins.clone();
    let changes = [(0, Some("witness")), (4, Some("newco")), (1, None)];
    for (i, to) in changes {
        lab.post(0, &cid(&lab.pins[i]), &full_query(&lab.pins[i], &[("meta-org", to)]));
        let meta = now[i]["metadata"].as_object_mut().unwrap();
        match to {
            Some(o) => meta.insert("org".into(), json!(o)),
            None => meta.remove("org"),
        };
    }
    let round2 = lab.snapshot_all();
    let v = check_owners(&lab, &now, &round2);
    // Pins per (from, to), each pin once although every peer saw it.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for &(i, to) in &changes {
        *want
            .entry((lab.pins[i]["metadata"]["org"].to_string(), json!(to).to_string()))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String), i64> = v["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes: {v}"))
        .iter()
        .map(|c| ((c["from"].to_string(), c["to"].to_string()), c["pins"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, want, "changes: {v}");
    // The pins that had an owner, where a peer first saw it lose or change.
    let mut replaced = BTreeSet::new();
    for ch in v["replaced"].as_array().unwrap_or_else(|| panic!("no replaced: {v}")) {
        assert!(round2.contains(&ch["snapshot"].as_i64().unwrap()), "{ch}");
        assert!(ch["at"].is_string() && lab.ids().contains(ch["peer"].as_str().unwrap()), "{ch}");
        replaced.insert((
            ch["cid"].as_str().unwrap().to_string(),
            ch["from"].to_string(),
            ch["to"].to_string(),
        ));
    }
    let want: BTreeSet<(String, String, String)> = changes
        .iter()
        .filter(|&&(i, _)| lab.pins[i]["metadata"]["org"].is_string())
        .map(|&(i, to)| {
            (cid(&lab.pins[i]), lab.pins[i]["metadata"]["org"].to_string(), json!(to).to_string())
        })
        .collect();
    assert_eq!(replaced.len(), 2, "{v}");
    assert_eq!(replaced, want, "replaced: {v}");
    // As recorded at each commit, and as the view reads the history again.
    let recorded = lab.sql(
        "SELECT x.cid, nullif(o.from_org, ''), nullif(o.to_org, '') FROM owner_changes o
         JOIN cids x ON x.id = o.cid_id ORDER BY 1, 2, 3",
    );
    let again = lab.sql("SELECT DISTINCT cid, from_org, to_org FROM org_changes ORDER BY 1, 2, 3");
    assert_eq!(recorded, again);
}

crate::on_both!(owners_counts_per_org_and_peer_and_lists_org_changes);

// ------------------------------------------------------------------------------------------------
// F. watch

/// A child process killed on drop (if the test fails before it ends).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_watch(lab: &Lab, on_loss: &Path, stderr: &Path) -> Child {
    let mut cmd = std::process::Command::new(bin());
    crate::util::clean_env(&mut cmd)
        .current_dir(lab.dir.path())
        .args(["--db", "ledger.db", "--cluster", &lab.urls()])
        .args(["watch", "--every", "1s", "--all-peers", "--on-loss"])
        .arg(format!("cat > '{}'", on_loss.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap());
    Child(cmd.spawn().expect("spawn ledger watch"))
}

/// Sends a signal with kill(1) and waits for the process to end: its exit code.
fn signal_and_wait(child: &mut Child, sig: &str, log: &Path) -> Option<i32> {
    crate::util::signal(child.0.id(), sig);
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch did not end within 10s of SIG{sig}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_snapshots(db: &Path, state: &str) -> i64 {
    count_while_written(db, &format!("SELECT count(*) FROM snapshots WHERE state = '{state}'"))
}

fn watch_reports_a_new_loss_to_the_hook_and_stops_cleanly(b: Backend) {
    let Some(lab) = Lab::on(b, 2, 30) else { return };
    let report = lab.dir.path().join("loss.json");
    let log = lab.dir.path().join("watch.log");
    let mut watch = spawn_watch(&lab, &report, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(15), "the first snapshot of both peers", || {
        count_snapshots(&lab.db(), "complete") >= 2
    });
    assert!(!report.exists(), "a loss was reported before any: {}", log_text());

    let p = &lab.pins[0];
    let c = cid(p);
    lab.post(0, &c, "");
    let mut last = Value::Null;
    wait_until(Duration::from_secs(10), "the on-loss hook to write the report", || {
        let Ok(text) = std::fs::read_to_string(&report) else { return false };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { return false };
        last = v;
        last["losses"].as_array().is_some_and(|l| l.iter().any(|l| l["cid"] == c.as_str()))
    });
    assert!(last["count"].as_i64().is_some_and(|n| n >= 1), "{last}");
    for l in last["losses"].as_array().unwrap() {
        assert_eq!(l["cid"], c.as_str(), "only the new loss is reported: {last}");
        assert_eq!(l["attribution"]["kind"], "outside", "{last}");
    }
    let logged = log_text();
    assert!(logged.lines().any(|l| l.contains(&c)), "a line on stderr names the loss: {logged}");

    assert_eq!(signal_and_wait(&mut watch, "TERM", &log), Some(0), "{}", log_text());
    assert_eq!(count_snapshots(&lab.db(), "running"), 0, "a snapshot was left running");
    assert!(count_snapshots(&lab.db(), "complete") >= 3);

    // SIGINT, at once after starting: the same clean end.
    let mut watch = spawn_watch(&lab, &report, &log);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(signal_and_wait(&mut watch, "INT", &log), Some(0), "{}", log_text());
    assert_eq!(count_snapshots(&lab.db(), "running"), 0, "a snapshot was left running");
}

crate::on_both!(watch_reports_a_new_loss_to_the_hook_and_stops_cleanly);

/// A peer that cannot be read is logged and tried again next round; the watch goes on and ends
/// after `--rounds`.
#[test]
fn watch_goes_on_when_a_peer_is_down() {
    let lab = Lab::start(2, 20);
    // Down longer than the client retries a refused connection (4 retries, about 3 s).
    lab.sim().control("POST", "/_sim/peers/peer1/restart?down=8s", "");
    let out = lab.run(&["watch", "--every", "700ms", "--all-peers", "--rounds", "5"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("cannot snapshot"), "the outage is logged: {out:?}");
    let per_peer = lab.sql(
        "SELECT se.peer, count(*) FROM snapshots s JOIN series se ON se.id = s.series_id
         WHERE s.state = 'complete' GROUP BY se.peer ORDER BY se.peer",
    );
    assert_eq!(per_peer.len(), 2, "both peers were snapshotted in the end: {per_peer:?}");
    let counts: BTreeMap<String, i64> =
        per_peer.iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
    assert_eq!(counts[&lab.sim().peers[0].id], 5, "{counts:?}");
    let down = counts[&lab.sim().peers[1].id];
    assert!((1..5).contains(&down), "peer1 missed the rounds it was down for: {counts:?}");
    assert_eq!(count_snapshots(&lab.db(), "running"), 0);
}

// ------------------------------------------------------------------------------------------------
// G. The views, through the sqlite3 shell

#[test]
fn the_views_answer_in_the_sqlite3_shell() {
    if !have("sqlite3", "-version", "apt-get install sqlite3") {
        return;
    }
    let lab = Lab::start(2, 100);
    lab.snapshot_all();
    for i in 0..3 {
        lab.post(0, &cid(&lab.pins[i]), "");
    }
    let gone = cid(&lab.pins[3]);
    lab.unpin(0, &gone);
    let q = full_query(&lab.pins[5], &[("name", Some("elsewhere"))]);
    lab.post(1, &cid(&lab.pins[5]), &q);
    lab.snapshot_all();

    let (_, report) = lab.lost(&[]);
    assert_eq!(report["count"], 5, "{report}");
    assert_eq!(lab.sqlite3("SELECT count(DISTINCT cid) FROM lost_metadata"), ["5"]);
    assert_eq!(
        lab.sqlite3(&format!(
            "SELECT DISTINCT attribution FROM lost_metadata WHERE cid = '{gone}'"
        )),
        ["unpinned"]
    );
    let wiped = cid(&lab.pins[0]);
    assert_eq!(
        lab.sqlite3(&format!(
            "SELECT DISTINCT attribution FROM lost_metadata WHERE cid = '{wiped}' AND field = 'metadata.team'"
        )),
        ["outside"]
    );
    // owners: per peer, every pin of its latest snapshot, by org.
    let per_peer = lab.sqlite3("SELECT peer, sum(pins) FROM owners GROUP BY peer ORDER BY peer");
    let mut want: Vec<String> = lab.sim().peers.iter().map(|p| format!("{}|99", p.id)).collect();
    want.sort();
    assert_eq!(per_peer, want);
    assert!(!lab.sqlite3("SELECT * FROM owners").is_empty());
    // pin_history: two versions of the wiped pin on each peer.
    assert_eq!(
        lab.sqlite3(&format!("SELECT count(*) FROM pin_history WHERE cid = '{wiped}'")),
        ["4"]
    );
    assert!(lab.sqlite3("SELECT count(*) FROM pin_history")[0].parse::<i64>().unwrap() >= 200);
    // The others answer too.
    assert_eq!(lab.sqlite3("SELECT count(*) FROM pin_changes"), ["10"]);
    for view in ["org_changes", "convergence"] {
        assert_eq!(lab.sqlite3(&format!("SELECT count(*) >= 0 FROM {view}")), ["1"]);
    }
}
