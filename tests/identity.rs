//! Who a record is about (issue 12, points 1, 2, 4, 5 and 6): a peer is who its `/id` says, so
//! naming the cluster another way (another order of `--cluster`, `localhost` for `127.0.0.1`, a
//! profile) continues its history and `lost` sees across it; a convergence sample is keyed by a
//! peer's ID, never by its URL; a restore that finds a pin already put back is done, not in
//! conflict; `convergence` and `report` never take a dry run for the latest run; `repin` while a
//! tag run is live is refused and leaves that run's re-pins alone.
//!
//! Every test drives the real binary against `ledger sim serve` on loopback, changes the cluster
//! behind ledger's back with raw requests, and kills every process it starts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// How long any awaited condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// A simulator and a ledger database (`ledger.db`) in a temporary directory.
struct Case {
    sim: Sim,
    dir: tempfile::TempDir,
}

impl Case {
    fn start(args: &[&str]) -> Case {
        Case { sim: Sim::start(args), dir: tempfile::tempdir().unwrap() }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    /// `ledger --db ledger.db --cluster CLUSTER ARGS`, to its end.
    fn run_on(&self, cluster: &str, args: &[&str]) -> Out {
        let o = ledger()
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db", "--cluster", cluster])
            .args(args)
            .timeout(PATIENCE)
            .output()
            .expect("run ledger");
        Out::from(o)
    }

    /// The same on every peer, peer0 first.
    fn run(&self, args: &[&str]) -> Out {
        self.run_on(&self.sim.all_urls(), args)
    }

    /// `ledger --db ledger.db ARGS` with no cluster given (read-only commands, or a profile).
    fn run_bare(&self, args: &[&str]) -> Out {
        let o = ledger()
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db"])
            .args(args)
            .timeout(PATIENCE)
            .output()
            .expect("run ledger");
        Out::from(o)
    }

    /// `ledger --db ledger.db --cluster <every peer> ARGS` as a child process (stdout discarded).
    fn spawn(&self, args: &[&str]) -> Spawned {
        let stderr = self.dir.path().join(format!("stderr-{}.txt", args[0]));
        let mut cmd = Command::new(bin());
        crate::util::clean_env(&mut cmd)
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db", "--cluster", &self.sim.all_urls()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap());
        Spawned(cmd.spawn().expect("spawn ledger"))
    }

    fn sql(&self, q: &str) -> Vec<Vec<String>> {
        sql_rows(&self.db(), q)
    }

    /// `count(*)` of `q` while a ledger process may be writing.
    fn count(&self, q: &str) -> i64 {
        count_while_written(&self.db(), q)
    }

    fn faults(&self, json: &str) {
        self.sim.control("POST", "/_sim/faults", json);
    }

    fn clear_faults(&self) {
        self.sim.control("DELETE", "/_sim/faults", "");
    }

    /// Peer0's pin set, sorted by CID.
    fn pins(&self) -> Vec<Value> {
        sorted_pinset(self.sim.url(0), &[])
    }

    /// `n` CIDs of pins with a name and metadata, not expiring, not in `except`: a bare re-pin
    /// loses their values.
    fn named(&self, n: usize, except: &[String]) -> Vec<String> {
        let cids: Vec<String> = self
            .pins()
            .iter()
            .filter(|p| p["name"] != "" && p["expire_at"] == ZERO_TIME)
            .filter(|p| p["metadata"].as_object().is_some_and(|m| !m.is_empty()))
            .map(|p| p["cid"].as_str().unwrap().to_string())
            .filter(|c| !except.contains(c))
            .take(n)
            .collect();
        assert_eq!(cids.len(), n, "pins with a name and metadata to lose");
        cids
    }

    /// Re-pins each of `cids` on peer0 with no options, as a careless script would (name and
    /// metadata are gone), and waits until every peer has the change.
    fn strip(&self, cids: &[String]) {
        for c in cids {
            let r = raw(self.sim.url(0), "POST", &format!("/pins/{c}"), &[], b"");
            assert_eq!(r.status, 200, "a bare re-pin of {c}: {}", r.text());
        }
        self.sim.wait_converged(PATIENCE);
    }

    /// `GET /allocations/{cid}` on peer0.
    fn pin(&self, cid: &str) -> Value {
        let r = raw(self.sim.url(0), "GET", &format!("/allocations/{cid}"), &[], b"");
        assert_eq!(r.status, 200, "GET /allocations/{cid}: {}", r.text());
        r.json()
    }

    /// The IDs the simulator gave its peers.
    fn ids(&self) -> BTreeSet<String> {
        self.sim.peers.iter().map(|p| p.id.clone()).collect()
    }
}

/// A `ledger` child process, killed (SIGKILL) and reaped when dropped if still running.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CIDs of `ledger lost --json`, sorted, after checking the exit code (1: losses found).
fn lost_cids(out: &Out) -> Vec<String> {
    assert_eq!(out.code, 1, "lost finds the losses: {out:?}");
    let mut cids: Vec<String> = out.json()["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cid"].as_str().unwrap().to_string())
        .collect();
    cids.sort();
    cids.dedup();
    cids
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// `http://localhost:PORT` for `http://127.0.0.1:PORT`, when `localhost` names 127.0.0.1 alone
/// here (nothing else may be dialled).
fn as_localhost(url: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let port: u16 = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    let addrs: Vec<_> = ("localhost", port).to_socket_addrs().ok()?.collect();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip() == loopback))
        .then(|| format!("http://localhost:{port}"))
}

// ------------------------------------------------------------------------------------------------
// 1. A peer is who its /id says, whatever the cluster is called

/// Snapshots of both peers with `--cluster A,B`; five pins stripped by outside re-pins; snapshots
/// with `--cluster B,A`: `lost` finds the five (exit 1). Five more stripped, snapshots through
/// `localhost` and through a profile: `lost` finds all ten. Two peers, two series, throughout.
#[test]
fn the_history_follows_the_peer_not_the_url() {
    let c = Case::start(&["--peers", "2", "--pins", "60", "--seed", "71", "--lag", "0"]);
    let (a, b) = (c.sim.url(0).to_string(), c.sim.url(1).to_string());
    let out = c.run_on(&format!("{a},{b}"), &["snapshot", "--all-peers"]);
    assert_eq!(out.code, 0, "{out:?}");

    let first = c.named(5, &[]);
    c.strip(&first);
    let out = c.run_on(&format!("{b},{a}"), &["snapshot", "--all-peers", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    for r in out.json().as_array().unwrap() {
        assert!(r["previous_id"].is_i64(), "not a first snapshot of its peer: {r}");
    }
    let out = c.run_bare(&["lost", "--json"]);
    assert_eq!(lost_cids(&out), sorted(&first), "{out:?}");
    for l in out.json()["losses"].as_array().unwrap() {
        assert_eq!(l["attribution"]["kind"], "outside", "{l}");
        assert_eq!(l["peers"].as_array().map(Vec::len), Some(2), "seen on both peers: {l}");
    }

    let second = c.named(5, &first);
    c.strip(&second);
    let mut every = first.clone();
    every.extend(second.iter().cloned());
    match (as_localhost(&a), as_localhost(&b)) {
        (Some(la), Some(lb)) => {
            let out = c.run_on(&format!("{la},{lb}"), &["snapshot", "--all-peers"]);
            assert_eq!(out.code, 0, "{out:?}");
            assert_eq!(lost_cids(&c.run_bare(&["lost", "--json"])), sorted(&every));
        }
        _ => eprintln!("localhost does not name 127.0.0.1 alone here: that step is left out"),
    }
    let third = c.named(5, &every);
    c.strip(&third);
    every.extend(third.iter().cloned());
    std::fs::write(
        c.dir.path().join("ledger.toml"),
        format!("[clusters.lab]\npeers = [\"{b}\", \"{a}\"]\n"),
    )
    .unwrap();
    let out = c.run_bare(&["snapshot", "--all-peers"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lost_cids(&c.run_bare(&["lost", "--json"])), sorted(&every));

    let series = c.sql("SELECT peer FROM series ORDER BY peer");
    let ids: Vec<Vec<String>> = c.ids().into_iter().map(|i| vec![i]).collect();
    assert_eq!(series, ids, "one series per peer");
    assert_eq!(
        c.sql("SELECT count(*) FROM snapshots WHERE previous_id IS NULL"),
        [["2"]],
        "only the very first snapshot of each peer has no predecessor"
    );
}

/// A tag run under another name than the peers' snapshots (`--cluster B,A` after `A,B`): its
/// report lists the owners of both peers, found by their IDs.
#[test]
fn a_report_finds_the_owners_of_its_peers_by_id() {
    let c = Case::start(&["--peers", "2", "--pins", "12", "--seed", "72", "--lag", "0"]);
    let (a, b) = (c.sim.url(0).to_string(), c.sim.url(1).to_string());
    assert_eq!(c.run_on(&format!("{a},{b}"), &["snapshot", "--all-peers"]).code, 0);
    let out = c.run_on(&format!("{b},{a}"), &["tag", "--org", "ident", "--settle", "300ms"]);
    assert!(out.code <= 1, "{out:?}");
    let out = c.run_bare(&["report", "--out", "r"]);
    assert_eq!(out.code, 0, "{out:?}");
    let csv = std::fs::File::open(c.dir.path().join("r/owners.csv")).unwrap();
    let (_, rows) = csv_maps(csv);
    let peers: BTreeSet<String> = rows.iter().map(|r| r["peer"].clone()).collect();
    assert_eq!(peers, c.ids(), "owners of both peers: {rows:?}");
}

// ------------------------------------------------------------------------------------------------
// 2. repin while a tag run is live

/// A tag run of 300 pins slowed by latency; `repin` of one of its pins meanwhile is refused with
/// the run lock's message, records no run, and touches none of the tag run's re-pins: the rows
/// answered before are unchanged, and at the end every one holds the tag run's own answer.
#[test]
fn repin_during_a_live_tag_run_is_refused_and_touches_nothing() {
    let c = Case::start(&["--peers", "2", "--pins", "300", "--seed", "73", "--lag", "0"]);
    let target = c.pins()[0]["cid"].as_str().unwrap().to_string();
    c.faults(r#"{"latency_ms":100}"#);
    let mut tag = c.spawn(&["tag", "--org", "ident", "--settle", "500ms", "--probe-every", "0s"]);
    wait_until(PATIENCE, "re-pins answered and others pending, in one live run", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'sent'") > 0
            && c.count("SELECT count(*) FROM repins WHERE status = 'pending'") > 0
    });
    let answered = "SELECT id, status, http_status, response, error, outcome FROM repins
                    WHERE status <> 'pending' ORDER BY id";
    let before = c.sql(answered);
    let out = c.run(&["repin", &target, "--meta", "team=x"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("another tag, restore or repin run is active"), "{out:?}");
    let after = c.sql(answered);
    assert_eq!(after[..before.len()], before[..], "answered re-pins of the tag run changed");
    assert!(c.sql("SELECT id FROM runs WHERE kind = 'repin'").is_empty(), "a repin run recorded");

    wait_until(PATIENCE, "the tag run to end", || tag.0.try_wait().unwrap().is_some());
    let status = tag.0.wait().unwrap();
    assert!(status.code().is_some_and(|c| c <= 1), "tag: {status}");
    let rows = c.sql(
        "SELECT count(*), count(*) FILTER (WHERE status = 'sent' AND http_status = 200 AND response IS NOT NULL
                                           AND coalesce(error, '') NOT LIKE '%reconciled%')
         FROM repins",
    );
    assert_eq!(rows[0][0], rows[0][1], "every re-pin holds the tag run's answer: {rows:?}");
    let runs = c.sql("SELECT kind, state FROM runs");
    assert_eq!(runs.len(), 1, "only the tag run: {runs:?}");
    assert!(runs[0][1] == "done" || runs[0][1] == "attention", "{runs:?}");
}

// ------------------------------------------------------------------------------------------------
// 4. Convergence samples keyed by peer ID only

/// peer2 answers `/id` 404 once, when the tag run first asks for its ID: it is asked again before
/// the next sample, and `convergence --json` shows exactly the three peers' IDs, no URL.
#[test]
fn a_peer_whose_id_failed_is_sampled_by_its_id_once_known() {
    let c = Case::start(&["--peers", "3", "--pins", "20", "--seed", "74", "--lag", "0"]);
    c.faults(r#"{"errors":[{"endpoint":"id","status":404,"count":1,"peers":["peer2"]}]}"#);
    let out_tag = c.run(&["tag", "--org", "ident", "--settle", "2s", "--probe-every", "300ms"]);
    let out = &out_tag;
    assert!(out.code <= 1 && out.stdout.contains("converged: every peer"), "{out:?}");
    let out = c.run_bare(&["convergence", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let j = out.json();
    let in_curve: BTreeSet<String> = j["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(in_curve, c.ids(), "{j}");
    let converged: BTreeSet<String> =
        j["converged_after"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(converged, c.ids(), "{j}");
    // Sampled while settling (by its ID), not only by the verification after it.
    let q = format!("SELECT count(*) > 1 FROM probes WHERE peer = '{}'", c.sim.peers[2].id);
    assert_eq!(c.sql(&q), [["1"]]);
    assert_eq!(c.sql("SELECT count(*) FROM probes WHERE peer LIKE '%/%'"), [["0"]]);
    assert!(out_tag.stderr.contains("did not say its ID"), "{out_tag:?}");
}

// ------------------------------------------------------------------------------------------------
// 5. Already restored is done, not a conflict

/// Pins on a one-peer simulator, snapshot 1; `lose` of them stripped; snapshot 2. Returns the
/// stripped CIDs.
fn lost_case(seed: &str, pins: usize, lose: usize) -> (Case, Vec<String>) {
    let n = pins.to_string();
    let c = Case::start(&["--peers", "1", "--pins", &n, "--seed", seed, "--lag", "0"]);
    assert_eq!(c.run(&["snapshot"]).code, 0, "the first snapshot");
    let lost = c.named(lose, &[]);
    c.strip(&lost);
    assert_eq!(c.run(&["snapshot"]).code, 0, "the second snapshot");
    (c, lost)
}

/// The names of `cids` on the cluster and in snapshot 1, which must agree.
fn assert_restored(c: &Case, cids: &[String]) {
    for cid in cids {
        let had = c.sql(&format!(
            "SELECT v.name FROM observations o JOIN cids x ON x.id = o.cid_id
             JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
             WHERE x.cid = '{cid}' AND o.first_snapshot <= 1 AND (o.last_snapshot IS NULL OR o.last_snapshot >= 1)"
        ));
        assert_eq!(c.pin(cid)["name"].as_str(), Some(had[0][0].as_str()), "{cid} restored");
    }
}

/// A report's conflicts, restored CIDs (sorted), and the ledger's `refused` re-pins.
fn restore_outcome(c: &Case, out: &Out) -> (usize, Vec<String>, i64) {
    let j = out.json();
    let conflicts = j["conflicts"].as_array().unwrap().len();
    let mut restored: Vec<String> = serde_json::from_value(j["restored"].clone()).unwrap();
    restored.sort();
    (conflicts, restored, c.count("SELECT count(*) FROM repins WHERE status = 'refused'"))
}

/// `restore --from 1` twice: the second finds every pin already put back: exit 0, no conflict, no
/// `refused` re-pin, nothing sent.
#[test]
fn a_second_restore_finds_everything_done() {
    let (c, lost) = lost_case("75", 30, 6);
    let out = c.run(&["restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(restore_outcome(&c, &out), (0, sorted(&lost), 0));
    assert_restored(&c, &lost);
    let writes = c.sim.state()["writes"].clone();

    let out = c.run(&["restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 0, "the second restore: {out:?}");
    assert_eq!(restore_outcome(&c, &out), (0, sorted(&lost), 0), "{out:?}");
    assert_eq!(c.sim.state()["writes"], writes, "the second restore re-pinned something");
    assert_eq!(c.sql("SELECT kind, state FROM runs"), [["restore", "done"], ["restore", "done"]]);
}

/// A restore slowed by latency (one re-pin at a time), killed with SIGKILL once its first chunk
/// is answered: the rerun counts none of the pins already put back as conflicts, and restores
/// every pin (exit 0).
#[test]
fn a_restore_killed_midway_then_rerun_restores_everything() {
    let (c, lost) = lost_case("76", 60, 20);
    c.faults(r#"{"latency_ms":150}"#);
    let mut restore = c.spawn(&["restore", "--from", "1", "--concurrency", "1"]);
    wait_until(PATIENCE, "the first re-pins answered", || {
        c.count("SELECT count(*) FROM repins WHERE status = 'sent'") >= 8
    });
    assert!(restore.0.try_wait().unwrap().is_none(), "the restore ended before the kill");
    restore.0.kill().unwrap(); // SIGKILL
    restore.0.wait().unwrap();
    c.clear_faults();
    let done = lost.iter().filter(|cid| c.pin(cid)["name"] != "").count();
    assert!(done >= 8 && done < lost.len(), "{done} of {} put back before the kill", lost.len());

    let out = c.run(&["restore", "--from", "1", "--json"]);
    assert_eq!(out.code, 0, "the rerun: {out:?}");
    let (conflicts, restored, refused) = restore_outcome(&c, &out);
    assert_eq!((conflicts, refused), (0, 0), "{out:?}");
    assert_eq!(restored, sorted(&lost), "{out:?}");
    assert_restored(&c, &lost);
}

// ------------------------------------------------------------------------------------------------
// 6. A dry run is never "the latest run"

/// A tag run, then a dry run: `convergence` and `report` show the tag run (exit 0), and asked for
/// the dry run by its id they say it is one, with nothing to show (exit 2). On a ledger whose only
/// tag run is a dry run, both say there is no tag run yet (exit 2).
#[test]
fn convergence_and_report_skip_dry_runs() {
    let c = Case::start(&["--peers", "2", "--pins", "10", "--seed", "77", "--lag", "0"]);
    let out = c.run(&["tag", "--org", "ident", "--settle", "300ms"]);
    assert!(out.code <= 1 && out.stdout.contains("converged: every peer"), "{out:?}");
    let out = c.run(&["tag", "--org", "other", "--dry-run"]);
    assert!(out.code <= 1, "{out:?}");
    assert_eq!(c.sql("SELECT id, dry_run FROM runs"), [["1", "0"], ["2", "1"]]);

    let out = c.run_bare(&["convergence", "--json"]);
    assert_eq!(out.code, 0, "the latest tag run converged: {out:?}");
    assert_eq!(out.json()["run"]["id"], 1, "{out:?}");
    let out = c.run_bare(&["report", "--out", "r"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("report of run 1 "), "{out:?}");

    for args in [&["convergence", "2"][..], &["report", "2", "--out", "r2"]] {
        let out = c.run_bare(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("run 2 is a dry run"), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    assert!(!c.dir.path().join("r2").exists(), "a report of a dry run was written");

    let d = Case::start(&["--peers", "1", "--pins", "4", "--seed", "78"]);
    assert!(d.run(&["tag", "--org", "ident", "--dry-run"]).code <= 1);
    for args in [&["convergence"][..], &["report", "--out", "r"]] {
        let out = d.run_bare(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("no tag run yet"), "{args:?}: {out:?}");
    }
}
