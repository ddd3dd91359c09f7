//! Faults a hostile but fair user finds (issue 12: points 3, 7, 8, 9, 11, 17 and two messages of
//! 18), each reproduced for real and held to what ledger must do: a peer down in the middle of a
//! tag run, a full disk and SIGTERM/SIGINT during a snapshot, many first opens of a fresh ledger at
//! once, a ledger that cannot be written, peers that never answer, trickle or send an endless
//! line, `https://` to a plain-HTTP port, and the messages of a refused connection and a 401.
//!
//! The misbehaving peers are small servers on 127.0.0.1 in this process (a thread per
//! connection, stopped when the test ends); the rest is `ledger sim serve`. The full disk is a
//! 2 MiB tmpfs and the read-only ledger a read-only bind mount (both need root and mount(8)) or the
//! ledger's directory as seen by the user `nobody` (setpriv(1)): root ignores file modes, these
//! do not. Without them the test says what it needs and is skipped. Wall-time bounds are derived
//! from `--timeout` and generous: they tell "bounded" from "unbounded", not fast from slow.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::case::{Mounted, can_mount};
use crate::util::*;

/// How long any awaited condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------
// Helpers

/// A ledger process started in `dir`, its stdout and stderr in files there.
struct Proc {
    child: Child,
    started: Instant,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, args: &[&str]) -> Proc {
        Proc::spawn_as(dir, args, None)
    }

    /// The same as the user `nobody` (through setpriv) when `nobody` is set.
    fn spawn_as(dir: &Path, args: &[&str], nobody: Option<()>) -> Proc {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (out, err) = (dir.join(format!("stdout-{n}.txt")), dir.join(format!("stderr-{n}.txt")));
        let mut cmd = match nobody {
            None => Command::new(bin()),
            Some(()) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(bin());
                c
            }
        };
        crate::util::clean_env(&mut cmd)
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Proc { child: cmd.spawn().expect("spawn ledger"), started: Instant::now(), out, err }
    }

    /// Waits for the end, at most `limit` (then kills it: exit code -1); the output and the time.
    fn wait(mut self, limit: Duration) -> (Out, Duration) {
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let out = Out {
            code,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        };
        (out, took)
    }

    fn signal(&self, sig: &str) {
        crate::util::signal(self.child.id(), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ledger ARGS` in `dir`, to its end (at most `limit`).
fn run_in(dir: &Path, args: &[&str], limit: Duration) -> (Out, Duration) {
    Proc::spawn(dir, args).wait(limit)
}

/// One row of `q` on the ledger, every column as text; `None` until the ledger has such a row.
fn row(db: &Path, q: &str) -> Option<Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    let _ = conn.busy_timeout(Duration::from_secs(2));
    conn.query_row(q, [], |r| {
        let n = r.as_ref().column_count();
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect())
    })
    .ok()
}

/// A stored-form pin line as a v1.1.6 cluster serves it.
fn pin_line(label: &str) -> String {
    format!(
        r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"{label}","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":{{}},"pin_update":null,"origins":[],"cid":"{}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2025-10-11T09:45:24Z"}}"#,
        cid_of(label)
    )
}

const PEER_ID: &str = "12D3KooWRWdowsXLTto5XPU1AKJ23qM2dMYv9pUuuteAgza9txUi";

/// The head of a chunked 200 NDJSON response, as the cluster sends it.
const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: X-Stream-Error\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The head of a streamed `/allocations` answer, then a whole pin line (a chunk) per label.
fn stream_of(labels: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut s = CHUNKED_HEAD.as_bytes().to_vec();
    for label in labels {
        s.extend(chunk(format!("{}\n", pin_line(&label)).as_bytes()));
    }
    s
}

/// What a fake peer's handler gets: the connection, the request's method and path, and the stop
/// flag.
struct Conn<'a> {
    s: TcpStream,
    method: String,
    path: String,
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
}

impl Conn<'_> {
    /// Writes `b`, counting it; false once the client is gone or the test ends.
    fn send(&mut self, b: &[u8]) -> bool {
        if self.stop.load(Ordering::SeqCst) || self.s.write_all(b).is_err() {
            return false;
        }
        let _ = self.s.flush();
        self.sent.fetch_add(b.len() as u64, Ordering::SeqCst);
        true
    }

    /// Holds the connection open, answering nothing, until the test ends or the client leaves.
    fn hold(&mut self) {
        let _ = self.s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 1024];
        while !self.stop.load(Ordering::SeqCst) {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    /// `GET /id` answered as a cluster peer does.
    fn id(&mut self) {
        let body = format!(r#"{{"id":"{PEER_ID}","peername":"fake","version":"1.1.6"}}"#);
        self.json("200 OK", &body);
    }

    /// A redirect to `location`, as a proxy in front of a peer (or the peer itself) sends it.
    fn redirect(&mut self, status: &str, location: &str) {
        let r = format!(
            "HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        self.send(r.as_bytes());
    }

    fn json(&mut self, status: &str, body: &str) {
        let r = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.send(r.as_bytes());
    }
}

type Handler = Arc<dyn Fn(&mut Conn<'_>) + Send + Sync>;

/// A fake peer on 127.0.0.1: reads each request's head (like Go's net/http, it waits for the
/// blank line) and hands the connection to `handler`. Stopped when dropped.
struct FakePeer {
    url: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    addr: std::net::SocketAddr,
}

impl FakePeer {
    /// A fake peer that answers `/id` as a peer does and hands every other request to `stream`.
    fn streaming(stream: impl Fn(&mut Conn<'_>) + Send + Sync + 'static) -> FakePeer {
        FakePeer::start(move |c| if c.path == "/id" { c.id() } else { stream(c) })
    }

    fn start(handler: impl Fn(&mut Conn<'_>) + Send + Sync + 'static) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let handler: Handler = Arc::new(handler);
        let (st, se) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = conn else { continue };
                let (h, st, se) = (handler.clone(), st.clone(), se.clone());
                std::thread::spawn(move || serve(s, &h, &st, &se));
            }
        });
        FakePeer { url: format!("http://{addr}"), stop, sent, addr }
    }

    /// A fake peer that notes each request as "METHOD path" before `handler` answers it.
    fn noting(
        handler: impl Fn(&mut Conn<'_>) + Send + Sync + 'static,
    ) -> (FakePeer, Arc<std::sync::Mutex<Vec<String>>>) {
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let peer = FakePeer::start(move |c| {
            log.lock().unwrap().push(format!("{} {}", c.method, c.path));
            handler(c)
        });
        (peer, asked)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop, which sees the flag
    }
}

fn serve(mut s: TcpStream, handler: &Handler, stop: &AtomicBool, sent: &AtomicU64) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let _ = s.set_read_timeout(None);
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace().map(str::to_string);
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    handler(&mut Conn { s, method, path, stop, sent });
}

/// `ledger --db ledger.db --cluster URL --timeout T snapshot` in a fresh directory, to its end.
fn snapshot_of(url: &str, timeout: &str, limit: Duration) -> (Out, Duration, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--db", "ledger.db", "--cluster", url, "--timeout", timeout, "snapshot"];
    let (out, took) = run_in(dir.path(), &args, limit);
    (out, took, dir)
}

// ------------------------------------------------------------------------------------------------
// 3. A peer that goes down during a tag run

/// A 3-peer simulator with 40 unowned pins, a tag run on it (`--settle 4s`, two passes,
/// `--timeout 2s`), and `peer` restarted with `down=40s` once the first pass's re-pins are recorded.
fn tag_with_a_peer_going_down(peer: &str) -> (Out, tempfile::TempDir, Sim) {
    let sim = Sim::start(&["--peers", "3", "--pins", "40", "--lag", "0", "--seed", "12"]);
    let dir = tempfile::tempdir().unwrap();
    let urls = sim.all_urls();
    let args = [
        "--db",
        "ledger.db",
        "--cluster",
        &urls,
        "--timeout",
        "2s",
        "tag",
        "--org",
        "robust",
        "--settle",
        "4s",
        "--probe-every",
        "0s",
        "--max-passes",
        "2",
        "--json",
    ];
    let p = Proc::spawn(dir.path(), &args);
    let db = dir.path().join("ledger.db");
    wait_until(PATIENCE, "the first pass's re-pins recorded", || {
        row(&db, "SELECT 1 FROM passes WHERE pass = 1").is_some()
    });
    sim.control("POST", &format!("/_sim/peers/{peer}/restart?down=40s"), "");
    let (out, _) = p.wait(PATIENCE * 2);
    (out, dir, sim)
}

#[test]
fn a_peer_down_during_a_tag_run_is_a_straggler_and_the_run_goes_on() {
    let (out, dir, sim) = tag_with_a_peer_going_down("peer2");
    assert_eq!(out.code, 1, "stragglers: attention, not an error: {out:?}");
    let r = out.json();
    assert_eq!(r["converged"], false, "{r}");
    assert_eq!(r["passes"].as_array().unwrap().len(), 2, "both passes ran: {r}");
    let down = &sim.peers[2].id;
    let missing =
        r["stragglers"][down].as_array().unwrap_or_else(|| panic!("no stragglers of {down}: {r}"));
    let targets = r["plan"]["targets"].as_array().unwrap().len();
    assert!(targets > 20, "{r}");
    assert_eq!(missing.len(), targets, "every target is unverified on the peer that is down: {r}");
    for up in [&sim.peers[0].id, &sim.peers[1].id] {
        assert!(r["stragglers"].get(up).is_none(), "{up} showed every target: {r}");
    }
    assert!(
        out.stderr.contains("cannot verify") && out.stderr.contains("stragglers"),
        "logged: {}",
        out.stderr
    );
    let state =
        row(&dir.path().join("ledger.db"), "SELECT state FROM runs ORDER BY id DESC LIMIT 1");
    assert_eq!(state, Some(vec!["attention".to_string()]));
}

#[test]
fn the_write_peer_down_during_a_tag_run_is_still_an_error() {
    let (out, dir, sim) = tag_with_a_peer_going_down("peer0");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&sim.peers[0].url), "names the write peer: {}", out.stderr);
    let state =
        row(&dir.path().join("ledger.db"), "SELECT state FROM runs ORDER BY id DESC LIMIT 1");
    assert_eq!(state, Some(vec!["failed".to_string()]));
}

/// `snapshot --all-peers` with the middle peer down: it is named, nothing is recorded for it, and
/// the peers after it are snapshotted all the same (the command stopped at the first peer it could
/// not reach, and `--json` printed nothing of the snapshots it had taken). Exit 2.
#[test]
fn a_peer_down_during_snapshot_all_peers_is_named_and_the_others_are_snapshotted() {
    let sim = Sim::start(&["--peers", "3", "--pins", "25", "--lag", "0", "--seed", "5"]);
    sim.control("POST", "/_sim/peers/peer1/restart?down=60s", "");
    let dir = tempfile::tempdir().unwrap();
    let urls = sim.all_urls();
    let args = ["--db", "ledger.db", "--cluster", &urls, "--timeout", "2s", "snapshot"];
    let (out, _) = run_in(dir.path(), &[&args[..], &["--all-peers", "--json"]].concat(), PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    let down = &sim.peers[1].url;
    assert_eq!(out.stderr.matches("cannot snapshot").count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("cannot snapshot {down}")), "{}", out.stderr);
    let reports = out.json();
    let taken: Vec<(&str, bool, i64)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["peer"].as_str().unwrap(), r["complete"] == true, r["pins"].as_i64().unwrap()))
        .collect();
    let (p0, p2) = (sim.peers[0].id.as_str(), sim.peers[2].id.as_str());
    assert_eq!(taken, [(p0, true, 25), (p2, true, 25)], "{reports}");
    let db = dir.path().join("ledger.db");
    let rows = sql_rows(
        &db,
        "SELECT se.peer, s.state FROM snapshots s JOIN series se ON se.id = s.series_id ORDER BY s.id",
    );
    let want = [[p0, "complete"], [p2, "complete"]];
    assert_eq!(rows, want.map(|r| r.map(String::from).to_vec()).to_vec());
    // Without --json: the same, each snapshot taken said on stdout.
    let (out, _) = run_in(dir.path(), &[&args[..], &["--all-peers"]].concat(), PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout.matches("complete, 25 pins").count(), 2, "{}", out.stdout);
}

// ------------------------------------------------------------------------------------------------
// 7. A full disk and a signal during a snapshot

#[test]
fn a_full_disk_during_a_snapshot_records_it_incomplete_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    if !can_mount(dir.path()) {
        return;
    }
    let disk = dir.path().join("disk");
    let _mounted = Mounted::mount(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &disk);
    let sim = Sim::start(&["--peers", "1", "--pins", "20000", "--seed", "7"]);
    let db = disk.join("ledger.db");
    let db_arg = db.to_str().unwrap();
    let (out, _) =
        run_in(dir.path(), &["--db", db_arg, "--cluster", sim.url(0), "snapshot"], PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    let snap = row(&db, "SELECT state, error, finished_at IS NOT NULL FROM snapshots").unwrap();
    assert_eq!(snap[0], "incomplete", "not left running: {snap:?}");
    assert!(
        snap[1].contains("could not store the snapshot") && snap[1].contains("disk is full"),
        "{snap:?}"
    );
    assert_eq!(snap[2], "1", "finished: {snap:?}");
    assert!(out.stderr.contains("disk is full"), "the right error: {}", out.stderr);
    assert_eq!(out.stderr.matches("disk is full").count(), 1, "said once: {}", out.stderr);
    assert!(out.stderr.contains("recorded incomplete"), "{}", out.stderr);
    // The next command reads the same record (not "interrupted").
    let (list, _) = run_in(dir.path(), &["--db", db_arg, "snapshots", "--json"], PATIENCE);
    assert_eq!(list.code, 0, "{list:?}");
    let error = list.json()[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("disk is full"), "{error}");
}

/// `ledger snapshot` of `url` started, the snapshot seen `running`, then `sig` sent: the output,
/// the time from the signal to the end, and the snapshot as recorded (state, error, pins).
fn signal_a_snapshot(url: &str, sig: &str, settle: Duration) -> (Out, Duration, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let p = Proc::spawn(dir.path(), &["--db", "ledger.db", "--cluster", url, "snapshot"]);
    wait_until(PATIENCE, "the snapshot running", || {
        row(&db, "SELECT 1 FROM snapshots WHERE state = 'running'").is_some()
    });
    std::thread::sleep(settle);
    let sent = Instant::now();
    p.signal(sig);
    let (out, _) = p.wait(PATIENCE);
    let took = sent.elapsed();
    let snap = row(&db, "SELECT state, coalesce(error, ''), pins_seen FROM snapshots").unwrap();
    (out, took, snap)
}

#[test]
fn sigterm_during_a_snapshot_records_it_incomplete_at_once() {
    // Every answer of the peer waits 5 s: the snapshot is recorded, then waits for its stream.
    let sim = Sim::start(&["--peers", "1", "--pins", "50", "--latency", "5s"]);
    let (out, took, snap) = signal_a_snapshot(sim.url(0), "TERM", Duration::ZERO);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("interrupted by a signal"), "{}", out.stderr);
    assert_eq!(snap[0], "incomplete", "{snap:?}");
    assert_eq!(snap[1], "interrupted by a signal", "{snap:?}");
    assert!(took < Duration::from_secs(3), "at once, not after the peer answered: {took:?}");
}

#[test]
fn sigint_in_the_middle_of_a_stream_keeps_what_it_read() {
    // Three pins, then the peer goes silent inside the stream.
    let peer = FakePeer::streaming(|c| {
        if c.send(&stream_of((0..3).map(|i| format!("robust/{i}")))) {
            c.hold();
        }
    });
    let (out, took, snap) = signal_a_snapshot(&peer.url, "INT", Duration::from_millis(500));
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(snap, vec!["incomplete", "interrupted by a signal", "3"], "{out:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

// ------------------------------------------------------------------------------------------------
// 8. First opens of a fresh ledger, many at once

#[test]
fn first_opens_of_a_fresh_ledger_take_turns() {
    // Read commands never create a ledger, so the writers that do (`db migrate`) race here, alone
    // and beside readers that open the file while it is being created.
    let migrate = ["--db", "new.db", "db", "migrate"];
    let status = ["--db", "new.db", "db", "status"];
    let six_writers: Vec<&[&str]> = vec![&migrate; 6];
    let mixed: Vec<&[&str]> = [&migrate[..], &status[..]].repeat(4);
    for (name, procs_args) in [("db migrate", six_writers), ("db migrate and db status", mixed)] {
        let args = [name];
        let n = procs_args.len();
        for trial in 0..6 {
            let dir = tempfile::tempdir().unwrap();
            let procs: Vec<Proc> = procs_args.iter().map(|a| Proc::spawn(dir.path(), a)).collect();
            for p in procs {
                let (out, _) = p.wait(PATIENCE);
                assert_eq!(out.code, 0, "{args:?}, trial {trial}, {n} at once: {}", out.stderr);
            }
            let (st, _) =
                run_in(dir.path(), &["--db", "new.db", "db", "status", "--json"], PATIENCE);
            let pending = st.json()["migrations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["applied_on"].is_null())
                .count();
            assert_eq!(pending, 0, "migrated once, whole: {}", st.stdout);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 9. A ledger that cannot be written

/// A ledger with one complete snapshot in `dir/data/ledger.db`.
fn ledger_with_a_snapshot(dir: &Path) -> (Sim, PathBuf) {
    let sim = Sim::start(&["--peers", "1", "--pins", "5", "--seed", "3"]);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("ledger.db");
    let (out, _) =
        run_in(dir, &["--db", db.to_str().unwrap(), "--cluster", sim.url(0), "snapshot"], PATIENCE);
    assert_eq!(out.code, 0, "{out:?}");
    (sim, db)
}

/// Read commands work on the read-only ledger `db`; writing ones say it is read-only (exit 2).
fn reads_work_and_writes_are_refused(dir: &Path, db: &Path, url: &str, nobody: Option<()>) {
    let db = db.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        Proc::spawn_as(dir, &all, nobody).wait(PATIENCE).0
    };
    for args in
        [&["snapshots"][..], &["db", "status"], &["owners"], &["export", "snapshots", "--csv", "-"]]
    {
        let out = run(args);
        assert_eq!(out.code, 0, "{args:?} on a read-only ledger: {out:?}");
        assert!(!out.stderr.contains("readonly"), "{args:?}: {}", out.stderr);
    }
    let list = run(&["snapshots", "--json"]);
    assert_eq!(list.json().as_array().map(Vec::len), Some(1), "{list:?}");
    for args in [&["--cluster", url, "snapshot"][..], &["--cluster", url, "tag", "--org", "x"]] {
        let out = run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("is read-only"), "{args:?} says why: {}", out.stderr);
    }
}

#[test]
fn a_ledger_on_a_read_only_mount_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    if !can_mount(dir.path()) {
        return;
    }
    let (sim, _) = ledger_with_a_snapshot(dir.path());
    // The ledger's directory, seen through a read-only bind mount: no write reaches it, root's
    // included.
    let ro = dir.path().join("ro");
    let _bind = Mounted::mount(&["--bind", dir.path().join("data").to_str().unwrap()], &ro);
    let st = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&ro).status().unwrap();
    assert!(st.success(), "remount read-only");
    assert!(std::fs::write(ro.join("probe"), b"x").is_err(), "the mount is read-only");
    reads_work_and_writes_are_refused(dir.path(), &ro.join("ledger.db"), sim.url(0), None);
}

#[test]
fn a_ledger_whose_directory_the_user_cannot_write_can_be_read() {
    if !have("setpriv", "--version", "apt-get install util-linux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, db) = ledger_with_a_snapshot(dir.path());
    // Owned by root, 0755 and 0644: `nobody` may read the ledger but write neither it nor its
    // directory, so SQLite cannot create the WAL's shared-memory file beside it.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [(dir.path(), 0o755), (&dir.path().join("data"), 0o755), (&db, 0o644)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for f in ["ledger.db-wal", "ledger.db-shm"] {
        assert!(!dir.path().join("data").join(f).exists(), "{f} is gone once the ledger is closed");
    }
    let probe = Proc::spawn_as(dir.path(), &["--version"], Some(())).wait(PATIENCE).0;
    if probe.code != 0 {
        skip("setpriv to the user nobody, who can run the test binary", "run the tests as root");
        return;
    }
    reads_work_and_writes_are_refused(dir.path(), &db, sim.url(0), Some(()));
}

// ------------------------------------------------------------------------------------------------
// 11. --timeout bounds the whole operation

#[test]
fn a_peer_that_accepts_and_never_answers_is_given_up_after_the_timeout() {
    let peer = FakePeer::start(|c| c.hold());
    let (out, took, _dir) = snapshot_of(&peer.url, "3s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("no answer") && out.stderr.contains("within 3s (--timeout)"),
        "{}",
        out.stderr
    );
    // The first request is GET /id, which a real cluster answers only once its kubo does.
    assert!(out.stderr.contains("a stopped or busy kubo holds it"), "{}", out.stderr);
    assert!(took < Duration::from_secs(9), "the retries stay within --timeout 3s: {took:?}");
}

#[test]
fn a_peer_that_trickles_its_answer_is_given_up_after_the_timeout() {
    let peer = FakePeer::start(|c| {
        for b in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".iter().cycle() {
            if !c.send(&[*b]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let (out, took, _dir) = snapshot_of(&peer.url, "3s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("within 3s (--timeout)"), "{}", out.stderr);
    assert!(took < Duration::from_secs(9), "{took:?}");
}

#[test]
fn a_stream_that_trickles_a_line_is_cut_after_the_timeout() {
    let peer = FakePeer::streaming(|c| {
        let line = pin_line("robust/trickled");
        if !c.send(&stream_of(["robust/whole".to_string()])) {
            return;
        }
        for b in line.as_bytes().iter().cycle() {
            if !c.send(&chunk(&[*b])) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let (out, took, dir) = snapshot_of(&peer.url, "2s", Duration::from_secs(120));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no complete line within 2s (--timeout)"), "{}", out.stderr);
    assert!(took < Duration::from_secs(20), "bounded by --timeout 2s: {took:?}");
    let snap =
        row(&dir.path().join("ledger.db"), "SELECT state, pins_seen FROM snapshots").unwrap();
    assert_eq!(snap, vec!["incomplete", "1"], "the whole line is kept, the stream is incomplete");
}

#[test]
fn an_endless_line_is_cut_at_16_mib() {
    let peer = FakePeer::streaming(|c| {
        let block = chunk(&[b'a'; 64 * 1024]);
        if c.send(CHUNKED_HEAD.as_bytes()) && c.send(&chunk(b"{\"cid\":\"")) {
            while c.send(&block) {}
        }
    });
    // A long --timeout: only the line limit can end this quickly.
    let (out, took, dir) = snapshot_of(&peer.url, "60s", Duration::from_secs(120));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("a line longer than 16 MiB"), "{}", out.stderr);
    assert!(took < Duration::from_secs(30), "{took:?}");
    let sent = peer.sent();
    assert!(
        sent < 48 << 20,
        "ledger stopped reading soon after 16 MiB: the peer sent {sent} bytes"
    );
    let snap =
        row(&dir.path().join("ledger.db"), "SELECT state, pins_seen FROM snapshots").unwrap();
    assert_eq!(snap, vec!["incomplete", "0"]);
}

// ------------------------------------------------------------------------------------------------
// 17. https:// to a plain-HTTP port

#[test]
fn https_to_the_simulators_plain_http_port_says_the_tls_handshake_failed() {
    let sim = Sim::start(&["--peers", "1", "--pins", "3"]);
    let url = sim.url(0).replace("http://", "https://");
    let (out, took, _dir) = snapshot_of(&url, "60s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TLS handshake"), "{}", out.stderr);
    assert!(out.stderr.contains("plain HTTP") && out.stderr.contains("http://"), "{}", out.stderr);
    assert!(!out.stderr.contains("Is the peer running"), "{}", out.stderr);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn https_to_a_plain_http_port_that_waits_for_a_request_head_says_so_fast() {
    // Like Go's net/http (the real cluster): a TLS hello never ends a request head, so the server
    // waits for more and the handshake never finishes.
    let peer = FakePeer::start(|c| c.id());
    let url = peer.url.replace("http://", "https://");
    let (out, took, _dir) = snapshot_of(&url, "60s", Duration::from_secs(120));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("TLS handshake") && out.stderr.contains("plain HTTP"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(15), "not a timeout per try: {took:?}");
}

// ------------------------------------------------------------------------------------------------
// 18. Messages: each cause once; a 401 without a message shows none

#[test]
fn a_refused_connection_is_said_once() {
    // Port 1: privileged, and nothing here listens on it.
    let (out, _, _dir) = snapshot_of("http://127.0.0.1:1", "2s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    let err = out.stderr.trim();
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("error sending request"), "reqwest's own words add nothing: {err}");
    assert!(err.contains("Is the peer running"), "{err}");
}

#[test]
fn a_401_says_the_clusters_reason_or_none() {
    let empty = FakePeer::start(|c| c.json("401 Unauthorized", "{}"));
    let (out, _, _dir) = snapshot_of(&empty.url, "5s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("refused the credentials: set LEDGER_BASIC_AUTH"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("({})") && !out.stderr.contains("()"), "{}", out.stderr);
    let sim = Sim::start(&["--peers", "1", "--pins", "3", "--basic-auth", "a:b"]);
    let (out, _, _dir) = snapshot_of(sim.url(0), "5s", PATIENCE);
    assert!(out.stderr.contains("(unauthorized: no auth provided)"), "{}", out.stderr);
    let bare = FakePeer::start(|c| c.json("401 Unauthorized", "\"unauthorized: invalid token\""));
    let (out, _, _dir) = snapshot_of(&bare.url, "5s", PATIENCE);
    assert!(out.stderr.contains("(unauthorized: invalid token)"), "without quotes: {}", out.stderr);
}

#[test]
fn a_redirect_is_named_and_not_followed() {
    let (proxy, asked) = FakePeer::noting(|c| {
        c.redirect("301 Moved Permanently", "https://admin:s3cret@127.0.0.1:1/id?token=t0ken");
    });
    let (out, _, _dir) = snapshot_of(&proxy.url, "5s", PATIENCE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("answered 301 with a redirect to https://127.0.0.1:1/id: ledger does not follow redirects"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cret") && !out.stderr.contains("t0ken"), "{}", out.stderr);
    assert_eq!(*asked.lock().unwrap(), ["GET /id"], "one request, not followed");
}

/// A re-pin answered with a 301 (as gorilla/mux answers a path that is not clean) is recorded as
/// failed with the redirect named, and never turned into the `GET` that would answer the old pin.
#[test]
fn a_redirected_repin_is_failed_and_never_sent_as_a_get() {
    let label = "robust/redirected";
    let cid = cid_of(label);
    let pin_path = format!("/pins/{cid}");
    let (peer, asked) = FakePeer::noting(move |c| match c.method.as_str() {
        _ if c.path == "/id" => c.id(),
        "POST" => c.redirect("301 Moved Permanently", &pin_path),
        _ if c.path == "/peers" => c.json("404 Not Found", "{}"),
        _ => c.json("200 OK", &pin_line(label)),
    });
    let dir = tempfile::tempdir().unwrap();
    let args = ["--db", "ledger.db", "--cluster", &peer.url, "--timeout", "3s", "repin", &cid];
    let (out, _) = run_in(dir.path(), &[&args[..], &["--meta", "team=x"]].concat(), PATIENCE);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("answered 301 with a redirect to"), "{out:?}");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.iter().filter(|a| a.starts_with("POST ")).count(), 1, "{asked:?}");
    assert!(!asked.contains(&format!("GET /pins/{cid}")), "the POST was not followed: {asked:?}");
    let db = dir.path().join("ledger.db");
    let r = row(&db, "SELECT status, error FROM repins").unwrap();
    assert_eq!(r[0], "failed", "{r:?}");
    assert!(r[1].contains("answered 301 with a redirect to"), "{r:?}");
}
