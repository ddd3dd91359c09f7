//! Shared helpers: run the real `ledger` binary, start `ledger sim serve`, talk raw HTTP/1.1.

#![allow(dead_code)]

pub mod backend;
pub mod case;
pub mod realcluster;

pub use backend::{Backend, Cluster, cid_of, enc, every_kind};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Go's zero `time.Time`, as the cluster renders "no time".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// docs/cluster-api.md §2.1: the fields of a Pin in the order Go emits them.
pub const PIN_FIELDS: [&str; 16] = [
    "replication_factor_min",
    "replication_factor_max",
    "name",
    "mode",
    "shard_size",
    "user_allocations",
    "expire_at",
    "metadata",
    "pin_update",
    "origins",
    "cid",
    "type",
    "allocations",
    "max_depth",
    "reference",
    "timestamp",
];

/// Whether skipped tests fail: `LEDGER_TEST_STRICT=1` (set by `.ci/run`).
pub fn strict() -> bool {
    std::env::var("LEDGER_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A test that needs `what`, which this machine lacks: prints one line saying what is missing and
/// the command that brings it, and returns false so the test returns early; under
/// `LEDGER_TEST_STRICT=1` it fails instead.
pub fn skip(what: &str, fix: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(!strict(), "{test}: needs {what}; `{fix}` brings it (LEDGER_TEST_STRICT=1: no skips)");
    eprintln!("skipped {test}: needs {what}; `{fix}` brings it");
    false
}

/// True when `program` runs here (`program ARG` exits 0); otherwise [`skip`] with `fix`.
pub fn have(program: &str, arg: &str, fix: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || skip(&format!("`{program}`, which is not installed"), fix)
}

/// True when python3 can import `module`; otherwise [`skip`], naming the PyPI `package`.
pub fn have_python(module: &str, package: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || skip(
        &format!("the {package} Python package"),
        &format!("python3 -m pip install {package}"),
    )
}

/// Polls `f` every 10 ms until it holds; panics with `what` after `timeout`. Returns the time taken.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `ledger` command with a clean environment (no `LEDGER_*`, no `HOME`).
pub fn ledger() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(bin());
    scrub(cmd.env_clear());
    cmd
}

/// Path of the built `ledger` binary.
pub fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin!("ledger").to_path_buf()
}

/// A child process's environment: nothing of the test's but `PATH`, and `TZ=UTC`.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env_clear();
    scrub(cmd);
    cmd
}

/// Sends `sig` (`TERM`, `INT`, …) to process `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

fn scrub<T: EnvSetter>(cmd: &mut T) {
    if let Ok(path) = std::env::var("PATH") {
        cmd.set("PATH", &path);
    }
    cmd.set("TZ", "UTC");
}

trait EnvSetter {
    fn set(&mut self, k: &str, v: &str);
}
impl EnvSetter for assert_cmd::Command {
    fn set(&mut self, k: &str, v: &str) {
        self.env(k, v);
    }
}
impl EnvSetter for Command {
    fn set(&mut self, k: &str, v: &str) {
        self.env(k, v);
    }
}

/// One simulated peer as announced on the simulator's first stdout line.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Peer {
    pub name: String,
    pub id: String,
    pub url: String,
}

/// A running `ledger sim serve`; killed on drop.
pub struct Sim {
    pub child: Child,
    pub peers: Vec<Peer>,
}

impl Sim {
    /// Start `ledger sim serve` with these extra arguments and wait for its first line.
    pub fn start(args: &[&str]) -> Sim {
        let mut cmd = Command::new(bin());
        cmd.env_clear();
        scrub(&mut cmd);
        cmd.args(["sim", "serve"]).args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn ledger sim serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read first line");
        #[derive(serde::Deserialize)]
        struct Hello {
            peers: Vec<Peer>,
        }
        let hello: Hello = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("first line is not the peers JSON ({e}): {line:?}"));
        Sim { child, peers: hello.peers }
    }

    pub fn url(&self, peer: usize) -> &str {
        &self.peers[peer].url
    }

    /// `GET /_sim/state` as JSON.
    pub fn state(&self) -> serde_json::Value {
        let r = raw(self.url(0), "GET", "/_sim/state", &[], b"");
        assert_eq!(r.status, 200, "state: {}", r.text());
        r.json()
    }

    /// Wait (polling the control API) until every replica is identical and nothing is in flight.
    pub fn wait_converged(&self, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.state();
            if s["converged"] == true {
                return s;
            }
            assert!(start.elapsed() < timeout, "not converged after {timeout:?}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A control request (`/_sim/...`) that must succeed.
    pub fn control(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let r = raw(
            self.url(0),
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
        if r.body.is_empty() { serde_json::Value::Null } else { r.json() }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Anything with peers reachable over HTTP: the simulator, a real cluster, either of them.
pub trait PeerUrls {
    fn peer_url(&self, peer: usize) -> &str;
    fn peer_count(&self) -> usize;

    /// Every peer's URL, comma-separated, peer0 first: the value of `ledger --cluster`.
    fn all_urls(&self) -> String {
        (0..self.peer_count()).map(|i| self.peer_url(i)).collect::<Vec<_>>().join(",")
    }
}

impl PeerUrls for Sim {
    fn peer_url(&self, peer: usize) -> &str {
        self.url(peer)
    }
    fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

impl PeerUrls for realcluster::RealCluster {
    fn peer_url(&self, peer: usize) -> &str {
        self.url(peer)
    }
    fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

impl PeerUrls for backend::Cluster {
    fn peer_url(&self, peer: usize) -> &str {
        self.url(peer)
    }
    fn peer_count(&self) -> usize {
        self.len()
    }
}

/// A response read off the wire, with its trailers (if the body was chunked).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The body ended cleanly (last chunk seen, or Content-Length satisfied).
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The NDJSON lines of a streamed body.
    pub fn ndjson(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Send one HTTP/1.1 request over a fresh TCP connection and read the whole response, trailers
/// included. `path` is sent as-is (so it may hold a query, `//` or a trailing slash).
pub fn raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    try_raw(base, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {base}: {e}"))
}

/// [`raw`], with a refused connection or one closed before a response head as an error.
pub fn try_raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse, String> {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
    s.write_all(body).map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // a dropped connection may end in a reset
    if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!("no response head ({} bytes)", buf.len()));
    }
    Ok(parse_response(&buf, method == "HEAD"))
}

fn parse_response(buf: &[u8], head_only: bool) -> RawResponse {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("no response head") + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let rest = &buf[end..];
    let get =
        |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let mut complete = false;
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        complete = true;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut pos = 0;
        while let Some(nl) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&rest[pos..pos + nl]).into_owned();
            let size =
                usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
            pos += nl + 2;
            if size == 0 {
                // trailers until an empty line
                while let Some(nl) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    let line = String::from_utf8_lossy(&rest[pos..pos + nl]).into_owned();
                    pos += nl + 2;
                    if line.is_empty() {
                        complete = true;
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    trailers.push((k.trim().to_string(), v.trim().to_string()));
                }
                break;
            }
            if pos + size > rest.len() {
                body.extend_from_slice(&rest[pos..]);
                break;
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        body.extend_from_slice(&rest[..len.min(rest.len())]);
        complete = rest.len() >= len;
    } else {
        body.extend_from_slice(rest);
        complete = true;
    }
    RawResponse { status, headers, body, trailers, complete }
}

/// One peer's `/allocations?filter=all`, sorted by CID; the stream must end with an empty
/// `X-Stream-Error` trailer.
pub fn sorted_pinset(url: &str, auth: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let r = raw(url, "GET", "/allocations?filter=all", auth, b"");
    assert!(r.status == 200 || r.status == 204, "allocations: {} {}", r.status, r.text());
    assert_eq!(r.trailer("X-Stream-Error").unwrap_or(""), "", "stream error");
    let mut pins = r.ndjson();
    pins.sort_by(|a, b| a["cid"].as_str().cmp(&b["cid"].as_str()));
    pins
}

/// Each pin's name and metadata (`Null` when it has none), by CID: what a snapshot must hold of a
/// pin set, read the same way from the cluster ([`served_pins`]) and from the ledger
/// ([`snapshot_pins`]).
pub type PinValues = std::collections::BTreeMap<String, (String, serde_json::Value)>;

/// A pin's metadata as [`PinValues`] holds it: `Null` for none (absent, `null` or `{}`).
pub fn metadata_value(m: &serde_json::Value) -> serde_json::Value {
    match m {
        serde_json::Value::Object(o) if !o.is_empty() => m.clone(),
        _ => serde_json::Value::Null,
    }
}

/// A peer's pin set (`GET /allocations?filter=all`) as [`PinValues`].
pub fn served_pins(url: &str, auth: &[(&str, &str)]) -> PinValues {
    sorted_pinset(url, auth)
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            (p["cid"].as_str().unwrap().to_string(), (name, metadata_value(&p["metadata"])))
        })
        .collect()
}

/// The pins of complete snapshot `id` as the ledger holds them (no metadata: `Null`, as stored).
pub fn snapshot_pins(db: &std::path::Path, id: &str) -> PinValues {
    let q = format!(
        "SELECT c.cid, v.name, coalesce(v.metadata, 'null') FROM observations o
         JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
         JOIN cids c ON c.id = o.cid_id
         WHERE o.series_id = (SELECT series_id FROM snapshots WHERE id = {id})
           AND o.first_snapshot <= {id} AND (o.last_snapshot IS NULL OR o.last_snapshot >= {id})"
    );
    sql_rows(db, &q)
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), serde_json::from_str(&r[2]).unwrap())))
        .collect()
}

/// `count(*)` of query `q` on a ledger another process is writing: opened read-only with a busy
/// timeout; 0 while the database does not exist yet.
pub fn count_while_written(db: &std::path::Path, q: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    conn.query_row(q, [], |r| r.get(0)).unwrap_or(0)
}

/// Rows of a query on a ledger database, every value as text (`NULL` for null, `blob:LEN` for a blob).
pub fn sql_rows(db: &std::path::Path, q: &str) -> Vec<Vec<String>> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                ValueRef::Null => "NULL".to_string(),
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(f) => f.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Blob(b) => format!("blob:{}", b.len()),
            })
            .collect())
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Per-org counts and unowned pins of a pin set as the cluster serves it (an empty `org` is
/// unowned).
pub fn org_counts(pins: &[serde_json::Value]) -> (std::collections::BTreeMap<String, i64>, i64) {
    let mut orgs = std::collections::BTreeMap::new();
    let mut unowned = 0;
    for p in pins {
        match p["metadata"]["org"].as_str().filter(|o| !o.is_empty()) {
            Some(o) => *orgs.entry(o.to_string()).or_insert(0) += 1,
            None => unowned += 1,
        }
    }
    (orgs, unowned)
}

/// A CSV document: its header, and its rows as maps from column to value.
pub fn csv_maps(
    r: impl std::io::Read,
) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_reader(r);
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(String::from)).collect())
        .collect();
    (header, rows)
}

/// The files `ledger report` writes into its directory.
pub const REPORT_FILES: [&str; 7] = [
    "report.html",
    "convergence.svg",
    "convergence.csv",
    "passes.csv",
    "stragglers.csv",
    "owned_by_others.csv",
    "owners.csv",
];

/// What one `ledger` run printed and how it exited.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Stdout as JSON (a failure shows both streams).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}
