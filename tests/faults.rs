//! The fault matrix (issue 12, point 19): `snapshot`, `tag`, `repin`, `restore` and `watch`, each
//! under each fault the simulator, a proxy or the machine can put in its way — latency, bursts of
//! 429, 500 and 503, a stream cut with and without its trailer, dropped connections, a paused peer, a
//! partition, a peer restarted with batching on, a full disk, SIGINT, SIGTERM and SIGKILL.
//!
//! Every cell is one test: a 3-peer simulator with `PINS` pins of its own, the command run under
//! the fault, then the fault cleared and the same command run again. Each cell asserts:
//!
//! - the faulted run's exit code and what it says (the table in [`expect`], also in
//!   reports/RELIABILITY.md), and the state it recorded for its run or snapshots;
//! - the ledger is whole (`integrity_check`, `foreign_key_check`), nothing is left `running` or
//!   `pending` after the rerun, and the rerun exits 0 and reaches the command's goal on the cluster;
//! - nothing recorded contradicts the cluster: every complete snapshot holds exactly the cluster's
//!   pins, an incomplete one only pins the cluster has; every pin's value on the cluster is the one
//!   the ledger last recorded as `applied` for it, or the one it had before the cell when there is
//!   none (a re-pin the cluster took is never unknown to the ledger); and no pin was applied twice.
//!
//! Faults that need root (the full disk is a tmpfs) say so and are skipped without it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::case::*;
use crate::util::*;

/// Pins in every cell, all unowned: `tag` has targets and no conflicts.
const PINS: usize = 30;
/// Pins whose name and metadata a `restore` cell loses before the restore.
const LOSE: usize = 8;
const ORG: &str = "faults";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Snapshot,
    Tag,
    Repin,
    Restore,
    Watch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 150 ms before every answer.
    Latency,
    /// Two 429s on each of `/id`, `/allocations` and `POST /pins`.
    Busy429,
    /// The same with 500.
    Error500,
    /// The same with 503.
    Busy503,
    /// The first stream is cut after 10 pins, with an error in its trailer.
    CutTrailer,
    /// The same, the connection dropped without ending the body.
    CutDrop,
    /// A proxy before peer0 drops two `GET /allocations` before the peer sees them and two re-pins
    /// after the peer took them (the answer never arrives).
    Dropped,
    /// peer2 paused: no deliveries in or out, its API answering from its stale replica.
    Paused,
    /// peer2 partitioned from peer0 and peer1.
    Partition,
    /// Batching on (a batch commits after 50 writes or 1 s). A writing command: peer0 restarted
    /// while its batch holds a re-pin, which is lost. A reading one: peer2 restarting, down for 6 s,
    /// when it starts.
    Restarted,
    /// The ledger's file system full when the command starts, 64 KiB left (`repin`, `restore`) or
    /// 256 KiB (the others).
    DiskFull,
    Sigint,
    Sigterm,
    Sigkill,
}

/// What a faulted run must do.
struct Expect {
    /// Its exit code (`None`: killed by the signal).
    code: Option<i32>,
    /// Said on stderr (or in the JSON on stdout).
    says: &'static [&'static str],
    /// The state of its run (writing commands) or of its snapshots (`snapshot`, `watch`), sorted:
    /// one of these.
    states: &'static [&'static [&'static str]],
    /// The distinct outcomes of the re-pins it recorded, sorted (`None`: not checked).
    outcomes: Option<&'static [&'static str]>,
    /// Another exit code the command may give, and what it then says instead of `says`.
    or: Option<(i32, &'static str)>,
}

impl Expect {
    fn outcomes(self, o: &'static [&'static str]) -> Expect {
        Expect { outcomes: Some(o), ..self }
    }
}

/// The matrix (reports/RELIABILITY.md shows it as a table).
fn expect(cmd: Cmd, fault: Fault) -> Expect {
    use Cmd::*;
    use Fault::*;
    const C3: &[&str] = &["complete", "complete", "complete"];
    const C9: &[&str] = &["complete"; 9];
    const SIGNALLED: &[&str] = &["interrupted by a signal"];
    const UNREACHABLE: &[&str] = &["cannot reach the cluster", "Is the peer running"];
    const FULL: &[&str] = &["database or disk is full"];
    let e = |code: i32, says, states| Expect {
        code: Some(code),
        says,
        states,
        outcomes: None,
        or: None,
    };
    let killed = |states| Expect { code: None, says: &[], states, outcomes: None, or: None };
    match (cmd, fault) {
        // Retried within --timeout, or not in the command's way: as if nothing happened.
        (Snapshot, Latency | Busy429 | Error500 | Busy503 | Dropped | Paused | Partition) => {
            e(0, &[], &[C3])
        }
        // The cut stream's snapshot is incomplete (never evidence); the other peers' complete.
        (Snapshot, CutTrailer) => {
            e(2, &["X-Stream-Error", "INCOMPLETE"], &[&["complete", "complete", "incomplete"]])
        }
        (Snapshot, CutDrop) => {
            e(2, &["the stream broke", "INCOMPLETE"], &[&["complete", "complete", "incomplete"]])
        }
        (Snapshot, Restarted) => e(2, UNREACHABLE, &[&["complete", "complete"]]),
        (Snapshot, DiskFull) => e(2, FULL, &[&["complete"]]),
        (Snapshot, Sigint | Sigterm) => {
            e(2, &["interrupted by a signal", "recorded incomplete"], &[&["incomplete"]])
        }
        // Killed: `running` until the next snapshot of the series marks it.
        (Snapshot, Sigkill) => killed(&[&["running"]]),

        (Tag, Latency | Busy429 | Busy503 | Dropped) => {
            e(0, &["\"converged\": true"], &[&["done"]])
        }
        // The two re-pins answered 500 fail in pass 1 and are re-pinned in pass 2.
        (Tag, Error500) => e(0, &["\"converged\": true", "\"failed\": 2"], &[&["done"]])
            .outcomes(&["applied", "failed"]),
        // The re-pins lost with the batch read back as before; pass 2 re-pins them.
        (Tag, Restarted) => {
            e(0, &["\"converged\": true"], &[&["done"]]).outcomes(&["applied", "mismatch"])
        }
        // peer2 never shows the targets: a straggler for every one.
        (Tag, Paused | Partition) => {
            e(1, &["\"converged\": false", "stragglers"], &[&["attention"]])
        }
        (Tag, CutTrailer) => e(2, &["cannot plan", "X-Stream-Error"], &[&["failed"]]),
        (Tag, CutDrop) => e(2, &["cannot plan", "the stream broke"], &[&["failed"]]),
        (Tag, DiskFull) => e(2, FULL, &[&["failed"]]),
        (Tag | Repin | Restore, Sigint | Sigterm) => e(2, SIGNALLED, &[&["interrupted"]]),
        (Tag | Repin | Restore, Sigkill) => killed(&[&["running"]]),

        (Repin, Latency | Busy429 | Busy503 | Dropped | CutTrailer | CutDrop) => e(
            0,
            &["re-pinned, every other option kept", "shown as written on every peer"],
            &[&["done"]],
        ),
        // Applied on the write peer; peer2, cut off, never shows it within --timeout.
        (Repin, Paused | Partition) => e(
            1,
            &["re-pinned, every other option kept", "1 of 1 not shown as written within --timeout"],
            &[&["attention"]],
        ),
        (Repin, Error500) => e(2, &["the cluster answered 500"], &[&["failed"]]),
        (Repin, Restarted) => e(
            1,
            &["accepted the re-pin, but the pin still reads as it did before"],
            &[&["attention"]],
        ),
        // Even the run's end cannot be written: said, and the next run marks it `interrupted`.
        (Repin | Restore, DiskFull) => {
            e(2, &["database or disk is full", "cannot record that the run ended"], &[&["running"]])
        }

        (Restore, Latency | Busy429 | Busy503 | Dropped | CutTrailer | CutDrop) => {
            e(0, &["\"failed\": []"], &[&["done"]])
        }
        // Restored through the write peer; peer2, cut off, shows none of it within --timeout.
        (Restore, Paused | Partition) => {
            e(1, &["\"failed\": []", "\"shows\": 0"], &[&["attention"]])
        }
        (Restore, Error500) => e(1, &["the cluster answered 500"], &[&["attention"]]),
        (Restore, Restarted) => e(1, &["mismatch: name, metadata"], &[&["attention"]]),

        // A peer that cannot be read, or a cut stream, is logged and tried next round.
        (Watch, Latency | Busy429 | Error500 | Busy503 | Dropped | Paused | Partition) => {
            e(0, &[], &[C9])
        }
        (Watch, CutTrailer | CutDrop) => e(
            0,
            &["is not evidence of anything"],
            &[&[
                "complete",
                "complete",
                "complete",
                "complete",
                "complete",
                "complete",
                "complete",
                "complete",
                "incomplete",
            ]],
        ),
        // peer2, down for 6 s, missed every round (exit 1, said), or was back by the last one (on a
        // loaded machine a round can take 3 s: back for rounds 2 and 3).
        (Watch, Restarted) => Expect {
            or: Some((0, ": every member of the cluster snapshotted")),
            ..e(
                1,
                &["cannot snapshot", "round 1: snapshotted 2 of 3 cluster peers; not read: "],
                &[&["complete"; 8], &["complete"; 7], &["complete"; 6]],
            )
        },
        // A ledger that cannot store ends the watch.
        (Watch, DiskFull) => {
            e(2, &["cannot store the snapshot", "database or disk is full"], &[&["complete"]])
        }
        // The snapshot in progress when the signal came is finished; no other begins.
        (Watch, Sigint | Sigterm) => e(0, &[], &[C3, &["complete"; 4]]),
        (Watch, Sigkill) => killed(&[C3, &["complete", "complete", "complete", "running"]]),
    }
}

// ------------------------------------------------------------------------------------------------
// A cell

struct Scene {
    /// Unmounted before the case's folder is removed (fields drop in order).
    _disk: Option<Mounted>,
    case: Case,
    _proxy: Option<Proxy>,
    /// Every pin as peer0 served it when the scene was ready: CID → (name, metadata).
    before: PinValues,
    /// The pins a restore brings back.
    lost: Vec<String>,
    args: Vec<String>,
}

fn sim_args(fault: Fault, seed: u64) -> Vec<String> {
    let mut a: Vec<String> = ["--peers", "3", "--lag", "0..50ms", "--rebroadcast", "1s", "--seed"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(seed.to_string());
    if fault == Fault::Restarted {
        a.extend(["--batch-size", "50", "--batch-age", "1s"].map(String::from));
    }
    a
}

/// A 3-peer simulator with `PINS` named pins (and, for a restore, two snapshots with `LOSE` of them
/// re-pinned bare in between), the command's arguments, and what the fault needs in place before
/// the first byte is written (a tmpfs, a proxy). `None` when the fault cannot be set up here.
fn scene(cmd: Cmd, fault: Fault, seed: u64) -> Option<Scene> {
    let args: Vec<String> = sim_args(fault, seed);
    let mut case = Case::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let disk = match fault {
        Fault::DiskFull if !can_mount(case.dir.path()) => return None,
        Fault::DiskFull => {
            Some(Mounted::mount(&["-t", "tmpfs", "-o", "size=8m", "tmpfs"], case.dir.path()))
        }
        _ => None,
    };
    for i in 0..PINS {
        let cid = cid_of(&format!("faults-{seed}-{i}"));
        let q = format!("name=file-{i}&meta-project=p{}", i % 4);
        let r = raw(case.sim.url(0), "POST", &format!("/pins/{cid}?{q}"), &[], b"");
        assert_eq!(r.status, 200, "pin {cid}: {}", r.text());
    }
    case.sim.wait_converged(PATIENCE);
    let lost = if cmd == Cmd::Restore { lose_some(&case) } else { Vec::new() };
    if fault == Fault::DiskFull {
        assert_eq!(case.run(&["db", "migrate"]).code, 0, "a ledger before the disk fills");
    }
    let before = served_pins(case.sim.url(0), &[]);
    let proxy = (fault == Fault::Dropped).then(|| {
        let p = Proxy::start(case.sim.url(0));
        let rest: Vec<&str> = (1..3).map(|i| case.sim.url(i)).collect();
        case.cluster = format!("{},{}", p.url, rest.join(","));
        p
    });
    let target = before.keys().next().unwrap().clone();
    let args = command_args(cmd, &target);
    Some(Scene { _disk: disk, case, _proxy: proxy, before, lost, args })
}

/// Snapshot 1, `LOSE` pins re-pinned bare (name and metadata gone), snapshot 2: what `restore --from
/// 1` puts back. Returns those CIDs.
fn lose_some(case: &Case) -> Vec<String> {
    assert_eq!(case.run(&["snapshot"]).code, 0, "the first snapshot");
    let lost: Vec<String> = served_pins(case.sim.url(0), &[]).into_keys().take(LOSE).collect();
    for cid in &lost {
        let r = raw(case.sim.url(0), "POST", &format!("/pins/{cid}"), &[], b"");
        assert_eq!(r.status, 200, "a bare re-pin of {cid}: {}", r.text());
    }
    case.sim.wait_converged(PATIENCE);
    assert_eq!(case.run(&["snapshot"]).code, 0, "the second snapshot");
    lost
}

fn command_args(cmd: Cmd, target: &str) -> Vec<String> {
    let a: &[&str] = match cmd {
        Cmd::Snapshot => &["snapshot", "--all-peers"],
        Cmd::Tag => &[
            "tag",
            "--org",
            ORG,
            "--settle",
            "1s",
            "--probe-every",
            "0s",
            "--max-passes",
            "3",
            "--json",
        ],
        Cmd::Repin => &["repin", target, "--meta", "team=faults"],
        Cmd::Restore => &["restore", "--from", "1", "--json"],
        Cmd::Watch => &["watch", "--every", "1s", "--rounds", "3", "--all-peers"],
    };
    let mut v: Vec<String> = ["--timeout", "2s"].map(String::from).to_vec();
    v.extend(a.iter().map(|s| s.to_string()));
    v
}

fn is_writer(cmd: Cmd) -> bool {
    matches!(cmd, Cmd::Tag | Cmd::Repin | Cmd::Restore)
}

/// The faults the simulator takes through `POST /_sim/faults`, set before the command starts.
fn sim_faults(fault: Fault) -> Option<String> {
    let burst = |status: u16| {
        let e =
            |endpoint: &str| format!(r#"{{"endpoint":"{endpoint}","status":{status},"count":2}}"#);
        format!(r#"{{"errors":[{},{},{}]}}"#, e("id"), e("allocations"), e("pin"))
    };
    let cut = |mode: &str| format!(r#"{{"stream_cut":{{"after":10,"mode":"{mode}","count":1}}}}"#);
    Some(match fault {
        Fault::Latency => r#"{"latency_ms":150}"#.to_string(),
        Fault::Busy429 => burst(429),
        Fault::Error500 => burst(500),
        Fault::Busy503 => burst(503),
        Fault::CutTrailer => cut("trailer"),
        Fault::CutDrop => cut("drop"),
        // Slow enough to act in the middle: a writing command's first re-pin, a snapshot's stream.
        Fault::Restarted | Fault::Sigint | Fault::Sigterm | Fault::Sigkill => {
            r#"{"latency_ms":300}"#.to_string()
        }
        _ => return None,
    })
}

/// Runs the command of `s` under `fault`, to its end.
fn faulted_run(s: &Scene, cmd: Cmd, fault: Fault) -> Out {
    let c = &s.case;
    if let Some(f) = sim_faults(fault) {
        c.faults(&f);
    }
    let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
    match fault {
        Fault::Paused => {
            c.sim.control("POST", "/_sim/peers/peer2/pause", "");
        }
        Fault::Partition => {
            c.sim.control("POST", "/_sim/partition", r#"{"groups":[["peer0","peer1"],["peer2"]]}"#);
        }
        Fault::Restarted if !is_writer(cmd) => {
            c.sim.control("POST", "/_sim/peers/peer2/restart?down=6s", "");
        }
        Fault::DiskFull => fill(c.dir.path(), room(cmd)),
        _ => {}
    }
    let signal = match fault {
        Fault::Sigint => "INT",
        Fault::Sigterm => "TERM",
        Fault::Sigkill => "KILL",
        Fault::Restarted if is_writer(cmd) => "",
        _ => return c.run(&args),
    };
    let mut p = c.spawn(&args);
    wait_until(PATIENCE, "the point the fault strikes", || {
        if is_writer(cmd) && fault == Fault::Restarted {
            c.sim.state()["peers"][0]["batch_pending"].as_u64() > Some(0)
        } else if is_writer(cmd) {
            c.count("SELECT count(*) FROM repins") > 0
        } else if cmd == Cmd::Watch {
            c.count("SELECT count(*) FROM snapshots WHERE state = 'complete'") >= 3
        } else {
            c.count("SELECT count(*) FROM snapshots WHERE state = 'running'") > 0
        }
    });
    p.assert_alive("the fault");
    if signal.is_empty() {
        c.sim.control("POST", "/_sim/peers/peer0/restart", "");
    } else {
        p.signal(signal);
    }
    p.wait(PATIENCE * 2)
}

/// Clears the fault: the simulator's faults, the pause, the partition, the peer that was down, the
/// full disk. Then waits for the cluster to settle.
fn clear(s: &Scene, fault: Fault) {
    let c = &s.case;
    c.clear_faults();
    match fault {
        Fault::Paused => {
            c.sim.control("POST", "/_sim/peers/peer2/resume", "");
        }
        Fault::Partition => {
            c.sim.control("DELETE", "/_sim/partition", "");
        }
        Fault::Restarted => {
            wait_until(PATIENCE, "peer2 up again", || {
                try_raw(c.sim.url(2), "GET", "/health", &[], b"").is_ok_and(|r| r.status == 204)
            });
        }
        Fault::DiskFull => {
            std::fs::remove_file(c.dir.path().join("filler")).unwrap();
        }
        _ => {}
    }
    c.sim.control("POST", "/_sim/rebroadcast", "");
    c.sim.wait_converged(PATIENCE);
}

/// The room a full disk leaves: enough for the command to begin and record some of its work.
fn room(cmd: Cmd) -> usize {
    match cmd {
        Cmd::Repin | Cmd::Restore => 64 << 10,
        Cmd::Tag => 256 << 10,
        // One peer's snapshot fits (its intervals go into three indexes), not all three.
        Cmd::Snapshot | Cmd::Watch => 320 << 10,
    }
}

/// Fills the file system of `dir` to `room` bytes short of full.
fn fill(dir: &std::path::Path, room: usize) {
    let reserve = dir.join("reserve");
    std::fs::write(&reserve, vec![0u8; room]).unwrap();
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    std::fs::remove_file(reserve).unwrap();
}

fn run_cell(cmd: Cmd, fault: Fault) {
    let seed = 100 + 20 * cmd as u64 + fault as u64;
    let Some(s) = scene(cmd, fault, seed) else { return };
    let out = faulted_run(&s, cmd, fault);
    let states = recorded_states(&s.case, cmd);
    let what = format!("{cmd:?} × {fault:?}");
    check_expected(&expect(cmd, fault), &s.case, &out, &states, &what);
    check_whole(&s.case, &what);
    clear(&s, fault);
    check_agrees(&s, &what);
    let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
    let again = s.case.run(&args);
    assert_eq!(again.code, 0, "{what}: the rerun: {again:?}");
    check_whole(&s.case, &what);
    check_settled(&s.case, &what);
    check_agrees(&s, &what);
    check_goal(&s, cmd, &what);
}

/// The faulted run's recorded state: its run's (writing commands) or every snapshot it took.
fn recorded_states(c: &Case, cmd: Cmd) -> Vec<String> {
    if !c.db().exists() {
        return Vec::new();
    }
    let q = if is_writer(cmd) {
        "SELECT state FROM runs ORDER BY state"
    } else {
        "SELECT state FROM snapshots ORDER BY state"
    };
    c.sql(q).into_iter().map(|r| r[0].clone()).collect()
}

fn check_expected(e: &Expect, c: &Case, out: &Out, states: &[String], what: &str) {
    if let Some(want) = e.outcomes {
        let got = c.sql("SELECT DISTINCT outcome FROM repins WHERE run_id = 1 ORDER BY outcome");
        let got: Vec<&str> = got.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(got, want, "{what}: the re-pins' outcomes");
    }
    let code = (out.code != -1).then_some(out.code);
    if let Some((other, says)) = e.or
        && code == Some(other)
    {
        assert!(out.all().contains(says), "{what}: says {says:?}: {out:?}");
    } else {
        assert_eq!(code, e.code, "{what}: exit code: {out:?}");
        for s in e.says {
            assert!(out.all().contains(s), "{what}: says {s:?}: {out:?}");
        }
    }
    assert!(
        e.states.iter().any(|want| states == *want),
        "{what}: recorded states {states:?}, expected one of {:?}; {out:?}",
        e.states
    );
}

// ------------------------------------------------------------------------------------------------
// The checks

/// The database is whole.
fn check_whole(c: &Case, what: &str) {
    if !c.db().exists() {
        return;
    }
    assert_eq!(c.sql("PRAGMA integrity_check"), [["ok"]], "{what}: integrity_check");
    assert!(c.sql("PRAGMA foreign_key_check").is_empty(), "{what}: foreign_key_check");
}

/// Nothing left running or pending.
fn check_settled(c: &Case, what: &str) {
    let open = c.sql(
        "SELECT 'run', id, state FROM runs WHERE state = 'running'
         UNION ALL SELECT 'snapshot', id, state FROM snapshots WHERE state = 'running'
         UNION ALL SELECT 'repin', id, status FROM repins WHERE status = 'pending'",
    );
    assert!(open.is_empty(), "{what}: left open: {open:?}");
}

/// Nothing recorded contradicts the cluster (see the module's documentation).
fn check_agrees(s: &Scene, what: &str) {
    let c = &s.case;
    if !c.db().exists() || c.count("SELECT count(*) FROM sqlite_master WHERE name = 'repins'") == 0
    {
        return;
    }
    let cids: BTreeSet<&String> = s.before.keys().collect();
    for (snap, state, held) in snapshot_contents(c) {
        let held: BTreeSet<&String> = held.iter().collect();
        match state.as_str() {
            "complete" => assert_eq!(held, cids, "{what}: complete snapshot {snap}"),
            _ => assert!(held.is_subset(&cids), "{what}: {state} snapshot {snap}: {held:?}"),
        }
    }
    let applied = c.sql(
        "SELECT c.cid, v.name, coalesce(v.metadata, 'null') FROM repins r JOIN cids c ON c.id = r.cid_id
         JOIN pin_versions v ON v.cid_id = r.cid_id AND v.digest = r.after_digest
         WHERE r.outcome = 'applied' ORDER BY r.id",
    );
    let mut last = PinValues::new();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for row in applied {
        let meta: Value = serde_json::from_str(&row[2]).unwrap();
        last.insert(row[0].clone(), (row[1].clone(), meta));
        *times.entry(row[0].clone()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: applied more than once: {twice:?}");
    // A re-pin left pending (its process stopped before the answer was recorded) may or may not
    // have been applied: the ledger says so, and the next run settles it.
    let mut pending: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    let rows = c.sql(
        "SELECT c.cid, r.intended FROM repins r JOIN cids c ON c.id = r.cid_id
         WHERE r.status = 'pending'",
    );
    for row in rows {
        let intended: Value = serde_json::from_str(&row[1]).unwrap();
        let name = intended["name"].as_str().unwrap_or_default().to_string();
        let value = (name, metadata_value(&intended["metadata"]));
        pending.entry(row[0].clone()).or_default().push(value);
    }
    let now = served_pins(c.sim.url(0), &[]);
    for (cid, value) in &now {
        let want = last.get(cid).or(s.before.get(cid)).unwrap();
        let maybe = pending.get(cid).is_some_and(|p| p.contains(value));
        let history = c.sql(&format!(
            "SELECT r.id, r.status, r.outcome, r.http_status, r.error FROM repins r
             JOIN cids c ON c.id = r.cid_id WHERE c.cid = '{cid}' ORDER BY r.id"
        ));
        assert!(
            value == want || maybe,
            "{what}: {cid} on the cluster is {value:?}, the ledger recorded {want:?}; its re-pins: {history:?}"
        );
    }
}

/// Every snapshot: id, state, and the CIDs it holds.
fn snapshot_contents(c: &Case) -> Vec<(String, String, Vec<String>)> {
    let snaps = c.sql("SELECT id, state FROM snapshots ORDER BY id");
    snaps
        .into_iter()
        .map(|r| {
            let cids = if r[1] == "complete" {
                snapshot_pins(&c.db(), &r[0]).into_keys().collect()
            } else {
                let q = format!(
                    "SELECT c.cid FROM partial_observations p JOIN cids c ON c.id = p.cid_id
                     WHERE p.snapshot_id = {}",
                    r[0]
                );
                c.sql(&q).into_iter().map(|mut x| x.remove(0)).collect()
            };
            (r[0].clone(), r[1].clone(), cids)
        })
        .collect()
}

/// The rerun reached the command's goal on every peer.
fn check_goal(s: &Scene, cmd: Cmd, what: &str) {
    let c = &s.case;
    c.sim.wait_converged(PATIENCE);
    let peers: Vec<PinValues> = (0..3).map(|i| served_pins(c.sim.url(i), &[])).collect();
    match cmd {
        Cmd::Tag => {
            for (i, p) in peers.iter().enumerate() {
                let untagged: Vec<_> = p.iter().filter(|(_, v)| v.1["org"] != ORG).collect();
                assert!(untagged.is_empty(), "{what}: untagged on peer{i}: {untagged:?}");
            }
        }
        Cmd::Repin => {
            let target = s.before.keys().next().unwrap();
            for (i, p) in peers.iter().enumerate() {
                assert_eq!(p[target].1["team"], "faults", "{what}: peer{i}: {:?}", p[target]);
            }
        }
        Cmd::Restore => {
            for cid in &s.lost {
                for (i, p) in peers.iter().enumerate() {
                    assert_ne!(p[cid].0, "", "{what}: {cid} not restored on peer{i}");
                }
            }
        }
        Cmd::Snapshot | Cmd::Watch => {
            for (i, peer) in c.sim.peers.iter().enumerate() {
                let held = latest_snapshot_of(c, &peer.id);
                assert_eq!(held, peers[i], "{what}: the latest snapshot of peer{i}");
            }
        }
    }
}

/// The pins of the latest complete snapshot of the peer with this ID.
fn latest_snapshot_of(c: &Case, id: &str) -> PinValues {
    let latest = c.sql(&format!(
        "SELECT max(s.id) FROM snapshots s JOIN series r ON r.id = s.series_id
         WHERE r.peer = '{id}' AND s.state = 'complete'"
    ));
    snapshot_pins(&c.db(), &latest[0][0])
}

// ------------------------------------------------------------------------------------------------
// A proxy that drops connections

/// A proxy before one peer, one upstream connection per request (`Connection: close`) so it sees
/// every request: it drops the first two `GET /allocations…` before the peer sees them, and the
/// first two `POST`s after the peer answered them (the client never gets the answer).
struct Proxy {
    url: String,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let quota = Arc::new((AtomicI64::new(2), AtomicI64::new(2)));
        let halt = stop.clone();
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (up, quota) = (upstream.clone(), quota.clone());
                        std::thread::spawn(move || relay(s, &up, &quota));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { url, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one client connection, request by request.
fn relay(client: TcpStream, upstream: &str, quota: &(AtomicI64, AtomicI64)) {
    client.set_nonblocking(false).unwrap();
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == "\r\n";
            if !line.to_ascii_lowercase().starts_with("connection:") && !end {
                head.push(line);
            }
            if end {
                break;
            }
        }
        let len: usize = head
            .iter()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let first = head.first().cloned().unwrap_or_default();
        let take = |n: &AtomicI64| n.fetch_sub(1, Ordering::SeqCst) > 0;
        if first.starts_with("GET /allocations") && take(&quota.0) {
            return;
        }
        let Ok(mut up) = TcpStream::connect(upstream) else { return };
        let request = format!("{}Connection: close\r\n\r\n", head.concat());
        if up.write_all(request.as_bytes()).and_then(|_| up.write_all(&body)).is_err() {
            return;
        }
        let mut answer = Vec::new();
        if up.read_to_end(&mut answer).is_err() {
            return;
        }
        if first.starts_with("POST ") && take(&quota.1) {
            return;
        }
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The cells

/// One test per fault for a command: `row!(Cmd: test_name = Fault, …)`.
macro_rules! row {
    ($cmd:ident: $($name:ident = $fault:ident),* $(,)?) => {
        $(#[test] fn $name() { run_cell(Cmd::$cmd, Fault::$fault) })*
    };
}

/// A module of one test per fault for each command: `matrix!(module: Cmd, …)`.
macro_rules! matrix {
    ($($module:ident: $cmd:ident),*) => {
        $(mod $module {
            use super::*;
            row!($cmd: latency = Latency, busy_429 = Busy429, error_500 = Error500,
                busy_503 = Busy503, cut_trailer = CutTrailer, cut_drop = CutDrop,
                dropped = Dropped, paused = Paused, partition = Partition,
                restarted = Restarted, disk_full = DiskFull, sigint = Sigint, sigterm = Sigterm,
                sigkill = Sigkill);
        })*
    };
}

matrix!(snapshot: Snapshot, tag: Tag, repin: Repin, restore: Restore, watch: Watch);
