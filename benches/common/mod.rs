//! What the benchmarks share: a `ledger sim serve` process (killed on drop) and its peers' URLs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

pub struct Sim {
    pub child: Child,
    pub urls: Vec<String>,
}

impl Sim {
    /// Starts `ledger sim serve ARGS` and reads its first line.
    pub fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["sim", "serve"])
            .args(args)
            .env("LEDGER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ledger sim serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("hello line");
        let urls = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["url"].as_str().unwrap().to_string())
            .collect();
        Sim { child, urls }
    }

    /// The simulator's resident memory.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The simulator's peak resident memory so far.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// A memory figure of `/proc/PID/status`, in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        status_kb(self.child.id(), field) / 1024.0
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median of some measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The command `ledger --db DB --cluster URLS -q ARGS`.
pub fn ledger_cmd(db: &Path, urls: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    cmd.args(["--db", db.to_str().unwrap(), "--cluster", &urls.join(","), "-q"]).args(args);
    cmd
}

/// Runs `ledger --db DB --cluster URLS -q ARGS`: (seconds, output).
pub fn ledger(db: &Path, urls: &[String], args: &[&str]) -> (f64, Output) {
    let start = Instant::now();
    let out = ledger_cmd(db, urls, args).output().unwrap();
    (start.elapsed().as_secs_f64(), out)
}

/// `POST URL/pins/CID?QUERY` for every CID, 16 at a time; each must answer 200.
pub fn repin_each(url: &str, cids: &[String], query: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let cids = std::sync::Arc::new(cids.to_vec());
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (client, cids, next) = (client.clone(), cids.clone(), next.clone());
            let (url, query) = (url.to_string(), query.to_string());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(cid) = cids.get(i) else { break };
                    let r = client.post(format!("{url}/pins/{cid}?{query}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// The database's size with its WAL folded in.
pub fn db_bytes(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    (pages * size) as u64
}

/// What [`measured`] saw of a process: its wall time, its peak resident memory (the kernel's
/// `ru_maxrss`, from `wait4`), how it ended and what it wrote.
pub struct Measured {
    pub secs: f64,
    pub peak_mib: f64,
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `cmd` to its end, its output into files (nothing reads a pipe until the process has exited).
#[allow(clippy::zombie_processes, reason = "the child is reaped by wait4")]
pub fn measured(cmd: &mut Command) -> Measured {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let (mut raw, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, writing into the two locals it is given.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut raw, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    let secs = start.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    Measured {
        secs,
        peak_mib: usage.ru_maxrss as f64 / 1024.0,
        status: std::process::ExitStatus::from_raw(raw),
        stdout: std::fs::read(&out).unwrap(),
        stderr,
    }
}

/// A figure of `/proc/PID/status` in kB (0 once the process is gone).
fn status_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
