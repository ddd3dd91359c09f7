//! A simulator and a ledger database in a temporary directory, and `ledger` run on them to its end
//! or as a child process that a test stops at a chosen point: the scaffolding of the run-lifecycle
//! tests and the fault matrix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// How long any awaited condition may take on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Names the output files of spawned processes apart.
static SPAWNED: AtomicU64 = AtomicU64::new(0);

/// A simulator and a ledger database (`ledger.db`) in a temporary directory. The simulator is
/// killed when this is dropped (see [`Sim`]), whatever the test's outcome.
pub struct Case {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    /// `--cluster` of every run: every peer of the simulator unless a test puts something between.
    pub cluster: String,
}

impl Case {
    pub fn start(args: &[&str]) -> Case {
        let sim = Sim::start(args);
        let cluster = sim.all_urls();
        Case { sim, dir: tempfile::tempdir().unwrap(), cluster }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    pub fn urls(&self) -> String {
        self.cluster.clone()
    }

    /// `ledger --db ledger.db --cluster <every peer> ARGS`, to its end.
    pub fn run(&self, args: &[&str]) -> Out {
        let o = ledger()
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db", "--cluster", &self.urls()])
            .args(args)
            .timeout(PATIENCE)
            .output()
            .expect("run ledger");
        Out::from(o)
    }

    /// The same, started as a child process (stdout and stderr to files in the directory).
    pub fn spawn(&self, args: &[&str]) -> Ledger {
        let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdout = self.dir.path().join(format!("stdout-{n}-{}.txt", args[0]));
        let stderr = self.dir.path().join(format!("stderr-{n}-{}.txt", args[0]));
        let mut cmd = Command::new(bin());
        crate::util::clean_env(&mut cmd)
            .current_dir(self.dir.path())
            .args(["--db", "ledger.db", "--cluster", &self.urls()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Ledger { child: cmd.spawn().expect("spawn ledger"), stdout, stderr }
    }

    pub fn sql(&self, q: &str) -> Vec<Vec<String>> {
        sql_rows(&self.db(), q)
    }

    /// `count(*)` of `q` while a ledger process may be writing (0 until the database exists).
    pub fn count(&self, q: &str) -> i64 {
        count_while_written(&self.db(), q)
    }

    /// Every run: id, kind, state, and whether `finished_at` is set.
    pub fn runs(&self) -> Vec<Vec<String>> {
        self.sql(
            "SELECT id, kind, state, CASE WHEN finished_at IS NULL THEN 'unfinished' ELSE 'finished' END
             FROM runs ORDER BY id",
        )
    }

    /// Fails unless no run is left `running`.
    pub fn assert_none_running(&self, what: &str) {
        let running = self.sql("SELECT id, kind FROM runs WHERE state = 'running'");
        assert!(running.is_empty(), "{what}: runs left running: {running:?}");
    }

    /// Replaces the simulator's faults.
    pub fn faults(&self, json: &str) {
        self.sim.control("POST", "/_sim/faults", json);
    }

    pub fn clear_faults(&self) {
        self.sim.control("DELETE", "/_sim/faults", "");
    }

    /// The writes the simulated cluster has committed (a re-pin counts once it is applied).
    pub fn writes(&self) -> u64 {
        self.sim.state()["writes"].as_u64().expect("writes in /_sim/state")
    }

    /// Peer0's pin set, sorted by CID.
    pub fn pins(&self) -> Vec<Value> {
        sorted_pinset(self.sim.url(0), &[])
    }

    /// `GET /allocations/{cid}` on peer0 (no latency may be in force).
    pub fn pin(&self, cid: &str) -> Value {
        let r = raw(self.sim.url(0), "GET", &format!("/allocations/{cid}"), &[], b"");
        assert_eq!(r.status, 200, "GET /allocations/{cid}: {}", r.text());
        r.json()
    }

    /// Stops the simulator process (SIGKILL): every peer goes away at once.
    pub fn stop_sim(&mut self) {
        self.sim.child.kill().expect("kill the simulator");
        self.sim.child.wait().expect("reap the simulator");
    }
}

/// A `ledger` child process, killed and reaped when dropped if it is still running.
pub struct Ledger {
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Ledger {
    /// Sends `sig` (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        crate::util::signal(self.child.id(), sig);
    }

    /// Fails if the process has ended: the chosen point must be reached with the run still going.
    pub fn assert_alive(&mut self, at: &str) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("ledger ended ({st}) before {at}: {}", self.stderr_text());
        }
    }

    /// Waits (at most `within`) for the process to end: its exit code (`None` if a signal killed
    /// it) and its stderr.
    pub fn wait(&mut self, within: Duration) -> Out {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Out {
                    code: st.code().unwrap_or(-1),
                    stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    stderr: self.stderr_text(),
                };
            }
            assert!(
                start.elapsed() < within,
                "ledger did not end within {within:?}: {}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process may mount file systems (root with mount(8)); otherwise skips with why.
pub fn can_mount(dir: &Path) -> bool {
    let probe = dir.join("mount-probe");
    std::fs::create_dir_all(&probe).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&probe)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        drop(Mounted(probe));
        return true;
    }
    skip("root and mount(8) (a tmpfs, a read-only bind mount)", "sudo cargo test")
}

/// A mount point, unmounted when dropped.
pub struct Mounted(PathBuf);

impl Mounted {
    pub fn mount(args: &[&str], at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount").args(args).arg(at).status().expect("run mount");
        assert!(st.success(), "mount {args:?} {}", at.display());
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.0).status();
        if !st.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
