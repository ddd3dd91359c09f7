//! The real IPFS Cluster on loopback: an N-peer CRDT cluster of `ipfs-cluster-service` peers, each
//! driving its own kubo daemon, built by `tests/realcluster/setup.sh`.
//!
//! Nothing may leave loopback. kubo and the peers are configured for 127.0.0.1 only (no bootstrap
//! peers, no mDNS, no routing, no relay, no NAT mapping, telemetry off), and beyond that every process
//! runs in a network namespace of its own cluster that holds nothing but `lo`: ipfs-cluster v1.1.x
//! always turns on libp2p's NAT port mapping (UPnP and NAT-PMP discovery) and hole punching, which no
//! setting of its configuration turns off, so only a namespace without a route out keeps those
//! packets in. Inside the namespace every port is free, so the ports are fixed per peer.
//!
//! Each peer's REST API listens on 127.0.0.1 inside the namespace and on a Unix socket in the peer's
//! folder; the harness forwards a loopback TCP port of the test process to that socket byte for byte,
//! so `ledger`, `ipfs-cluster-ctl` and the raw client talk plain HTTP to the real server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{raw, try_raw};

/// The newest release, the one ledger's end-to-end tests run on.
pub const V1_1_6: &str = "v1.1.6";
/// The release the field report measured.
pub const V1_1_5: &str = "v1.1.5";
/// The kubo release every peer drives (tests/realcluster/setup.sh builds it).
pub const KUBO: &str = "v0.43.0";

/// Where tests/realcluster/setup.sh puts the binaries: `<cache>/<module>-<version>/bin`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("LEDGER_REALCLUSTER_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/ledger/realcluster"),
    }
}

/// Path of one built binary, e.g. `cluster_bin("v1.1.6", "ipfs-cluster-ctl")`.
pub fn cluster_bin(version: &str, name: &str) -> PathBuf {
    cache_dir().join(format!("ipfs-cluster-{version}/bin/{name}"))
}

pub fn kubo_bin() -> PathBuf {
    cache_dir().join(format!("kubo-{KUBO}/bin/ipfs"))
}

/// True when this test may go on: the binaries of `version` (and kubo) are built and network
/// namespaces can be made. Otherwise one line says what is missing and how to get it, and the test
/// is skipped, or fails where skips are failures (`LEDGER_TEST_STRICT=1`, as in CI).
pub fn available(version: &str) -> bool {
    let bins = [
        cluster_bin(version, "ipfs-cluster-service"),
        cluster_bin(version, "ipfs-cluster-ctl"),
        kubo_bin(),
    ];
    if let Some(missing) = bins.iter().find(|b| !b.is_file()) {
        return super::skip(
            &format!("the real IPFS Cluster {version} ({} is missing)", missing.display()),
            "bash tests/realcluster/setup.sh",
        );
    }
    if !netns_works() {
        return super::skip(
            "a network namespace for the real cluster (`unshare --net` as root, with iproute2's `ip`)",
            "run the tests as root on Linux with util-linux and iproute2 installed",
        );
    }
    true
}

fn netns_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("unshare")
            .args(["--net", "--", "ip", "link", "set", "lo", "up"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// How to start a real cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealOptions {
    pub version: &'static str,
    pub peers: usize,
    /// `api.restapi.basic_auth_credentials`: one user and password.
    pub basic_auth: Option<(String, String)>,
    /// `consensus.crdt.rebroadcast_interval` (default 1m, as in a fresh `service.json`).
    pub rebroadcast: Option<String>,
    /// Each peer on a loopback address of its own, 127.0.0.(i+1), with the same ports as every
    /// other peer: its REST API, cluster swarm and kubo inside the namespace, and its forwarded
    /// REST URL in the test process (one port on every address), as members on hosts of their
    /// own are. Otherwise every peer is on 127.0.0.1 with ports of its own.
    pub distinct_hosts: bool,
    /// `ipfs_connector.ipfshttp.pin_timeout`: how long a pin may go without progress before the
    /// peer gives it up as `pin_error` (default 2m, as in a fresh `service.json`).
    pub pin_timeout: Option<String>,
    /// `consensus.crdt.batching`: `max_batch_size` and `max_batch_age` (default 0 and "0s": off).
    pub batching: Option<(u64, String)>,
}

impl RealOptions {
    pub fn new(version: &'static str, peers: usize) -> RealOptions {
        RealOptions {
            version,
            peers,
            basic_auth: None,
            rebroadcast: None,
            distinct_hosts: false,
            pin_timeout: None,
            batching: None,
        }
    }
}

/// One peer of a running real cluster.
#[derive(Debug, Clone)]
pub struct RealPeer {
    pub name: String,
    /// The cluster peer ID (`12D3KooW…`).
    pub id: String,
    /// Its kubo daemon's peer ID.
    pub ipfs_id: String,
    /// The REST API, as the test process reaches it (`http://127.0.0.1:PORT`).
    pub url: String,
    pub dir: PathBuf,
}

/// A running real cluster. Dropping it stops every process it started, by PID, and removes its
/// folder; when the test is failing the folder (with every peer's logs) is kept and its path printed.
///
/// A test may stop a peer's cluster daemon or its kubo and start it again ([`RealCluster::stop_peer`],
/// [`RealCluster::start_peer`], [`RealCluster::stop_kubo`], [`RealCluster::start_kubo`]): a process
/// stopped on purpose is not a process that died, and a restarted one logs to a numbered log of its
/// own (`peer2-cluster.1.log` after the first restart).
pub struct RealCluster {
    pub version: &'static str,
    pub peers: Vec<RealPeer>,
    /// How long start-up took, from the first `ipfs init` to every peer listing every peer and
    /// replicating a probe write of every peer.
    pub startup: Duration,
    dir: PathBuf,
    netns: Child,
    procs: Vec<(String, Child)>,
    /// Processes stopped on purpose (by name), until started again.
    stopped: BTreeSet<String>,
    /// How many times each process was started again: its log is `{name}.{n}.log` after the n-th.
    restarts: BTreeMap<String, usize>,
    /// Peer i's REST forwarder at i, then those [`RealCluster::another_url`] opened.
    forwarders: Vec<Forwarder>,
    auth_header: Option<String>,
    /// Held while the cluster runs: real clusters in one test process start one at a time.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One real cluster at a time: a test that wants one waits for the one before to stop, so a
/// 2-core machine is never asked to run several clusters (and their kubo daemons) at once.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Per-peer ports inside the namespace: 20000 + 10 × peer + offset.
fn port(peer: usize, offset: u16) -> u16 {
    20000 + 10 * peer as u16 + offset
}

/// The multiaddr of peer `peer`'s listener `offset` inside the namespace: on 127.0.0.1 at a port
/// of its own, or with distinct hosts on 127.0.0.(peer+1) at the port every peer has.
fn listen_addr(distinct: bool, peer: usize, offset: u16) -> String {
    if distinct {
        format!("/ip4/{}/tcp/{}", host_of(peer), port(0, offset))
    } else {
        format!("/ip4/127.0.0.1/tcp/{}", port(peer, offset))
    }
}

/// Peer `peer`'s own loopback address with distinct hosts: 127.0.0.(peer+1).
pub fn host_of(peer: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, 1 + peer as u8)
}

/// A port of the test process that is free on 127.0.0.1 to 127.0.0.n (the forwarders' common
/// REST port with distinct hosts).
fn port_free_on(n: usize) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let rest: Vec<_> = (1..n).map(|i| TcpListener::bind((host_of(i), port))).collect();
        if rest.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1 to 127.0.0.{n}")
}
const IPFS_API: u16 = 1;
const IPFS_SWARM: u16 = 2;
const REST: u16 = 4;
const PROXY: u16 = 5;
const CLUSTER_SWARM: u16 = 6;
const PINSVC: u16 = 7;

/// The cluster secret every peer shares (a private libp2p network): 32 bytes, hex.
const SECRET: &str = "6c6564676572207465737420636c75737465722c206e6f7420666f7220757365";

impl RealCluster {
    /// Start a cluster; panics (keeping the logs) if it does not come up within two minutes, three
    /// times over. Call [`available`] first. A peer of v1.1.6 was seen to die at start-up with a nil
    /// pointer in its RPC client (once in some forty starts), so a start-up in which a process
    /// exits is tried again, each failed attempt's folder kept and named.
    pub fn start(opts: RealOptions) -> RealCluster {
        for attempt in 1.. {
            let once = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                RealCluster::start_once(opts.clone())
            }));
            match once {
                Ok(rc) => return rc,
                Err(e) if attempt == 3 => std::panic::resume_unwind(e),
                Err(_) => eprintln!("real cluster: start-up attempt {attempt} failed; again"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn start_once(opts: RealOptions) -> RealCluster {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("ledger-rc-").tempdir().unwrap().keep();
        // The namespace: a holder process that brings `lo` up and sleeps; the others join it.
        let mut netns = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the namespace holder (unshare)");
        let mut line = String::new();
        BufReader::new(netns.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "up", "the namespace holder did not bring lo up");
        let mut rc = RealCluster {
            version: opts.version,
            peers: Vec::new(),
            startup: Duration::ZERO,
            dir,
            netns,
            procs: Vec::new(),
            stopped: BTreeSet::new(),
            restarts: BTreeMap::new(),
            forwarders: Vec::new(),
            auth_header: opts.basic_auth.as_ref().map(|(u, p)| {
                let b64 = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{u}:{p}"),
                );
                format!("Basic {b64}")
            }),
            _turn: turn,
        };
        let n = opts.peers;
        // kubo repos and cluster folders, then every config once all identities are known.
        let mut ids = Vec::new();
        for i in 0..n {
            let pdir = rc.dir.join(format!("peer{i}"));
            std::fs::create_dir_all(&pdir).unwrap();
            rc.run_in_ns(
                &pdir,
                "ipfs-init",
                Command::new(kubo_bin()).args(["init", "--profile", "test"]),
            );
            configure_kubo(&pdir.join("ipfs/config"), i, opts.distinct_hosts);
            let mut init = Command::new(cluster_bin(opts.version, "ipfs-cluster-service"));
            init.args(["--config"]).arg(pdir.join("cluster")).args(["init", "--consensus", "crdt"]);
            init.env("CLUSTER_SECRET", SECRET);
            rc.run_in_ns(&pdir, "cluster-init", &mut init);
            let ident: Value = read_json(&pdir.join("cluster/identity.json"));
            ids.push(ident["id"].as_str().unwrap().to_string());
        }
        for i in 0..n {
            let pdir = rc.dir.join(format!("peer{i}"));
            configure_cluster(&pdir, i, &ids, &opts);
        }
        for i in 0..n {
            rc.spawn_kubo(i);
        }
        for i in 0..n {
            rc.wait_for_log(&format!("peer{i}-ipfs"), "Daemon is ready");
        }
        let common = opts.distinct_hosts.then(|| port_free_on(n));
        for (i, id) in ids.iter().enumerate() {
            let pdir = rc.dir.join(format!("peer{i}"));
            rc.spawn_cluster(i);
            let at = common.map(|p| std::net::SocketAddr::from((host_of(i), p)));
            let fwd = Forwarder::start(pdir.join("rest.sock"), at);
            let ipfs_id = read_json(&pdir.join("ipfs/config"))["Identity"]["PeerID"]
                .as_str()
                .unwrap()
                .to_string();
            rc.peers.push(RealPeer {
                name: format!("peer{i}"),
                id: id.clone(),
                ipfs_id,
                url: fwd.url.clone(),
                dir: pdir,
            });
            rc.forwarders.push(fwd);
        }
        // The REST API answers before the peer is done starting; wait for its word first.
        for i in 0..n {
            rc.wait_for_log(&format!("peer{i}-cluster"), "IPFS Cluster is READY");
        }
        let daemons_up = started.elapsed();
        // Up: every peer answers /health and lists all N peers, none with an error.
        for i in 0..n {
            let what = format!("peer{i} to list all {n} peers in /peers");
            rc.wait_for(Duration::from_secs(120), &what, || {
                let url = &rc.peers[i].url;
                if try_raw(url, "GET", "/health", &rc.auth(), b"").map(|r| r.status) != Ok(204) {
                    return false;
                }
                let Ok(r) = try_raw(url, "GET", "/peers", &rc.auth(), b"") else { return false };
                r.status == 200 && {
                    let ps = r.ndjson();
                    ps.len() == n
                        && ps.iter().all(|p| p["error"].as_str().is_none_or(str::is_empty))
                }
            });
        }
        // And the CRDT carries writes between every pair: a probe pin written on each peer reaches
        // every peer, then their removal does. Until a peer has joined the others' pubsub topic, a
        // broadcast can miss it (a peer that held nothing 60 s after 300 writes was seen here).
        // And every peer has every peer's allocation metrics (`informer.disk` freespace and the
        // `tags` informer), or a pin with a replication factor fails with "not enough peers".
        for i in 0..n {
            for metric in ["freespace", "tag:group"] {
                let what = format!("peer{i} to hold a valid {metric} metric of all {n} peers");
                rc.wait_for(Duration::from_secs(120), &what, || {
                    let path = format!("/monitor/metrics/{metric}");
                    let Ok(r) = try_raw(rc.url(i), "GET", &path, &rc.auth(), b"") else {
                        return false;
                    };
                    r.status == 200
                        && serde_json::from_slice::<Vec<Value>>(&r.body)
                            .is_ok_and(|ms| ms.iter().filter(|m| m["valid"] == true).count() == n)
                });
            }
        }
        let listed = started.elapsed();
        rc.probe_replication();
        rc.startup = started.elapsed();
        eprintln!(
            "real cluster {} with {n} peers up in {:.1}s (daemons ready {:.1}s, peers and metrics {:.1}s) at {}",
            rc.version,
            rc.startup.as_secs_f64(),
            daemons_up.as_secs_f64(),
            listed.as_secs_f64(),
            rc.dir.display()
        );
        rc
    }

    fn probe_replication(&self) {
        let n = self.peers.len();
        let probes: Vec<String> = (0..n).map(|i| probe_cid(self.version, i)).collect();
        for (i, cid) in probes.iter().enumerate() {
            let r = raw(
                self.url(i),
                "POST",
                &format!("/pins/{cid}?name=harness-probe"),
                &self.auth(),
                b"",
            );
            assert_eq!(r.status, 200, "probe pin on peer{i}: {}", r.text());
        }
        let count = |peer: usize| {
            self.pinset(peer)
                .iter()
                .filter(|p| probes.iter().any(|c| p["cid"] == c.as_str()))
                .count()
        };
        for i in 0..n {
            let what = format!("peer{i} to hold the probe pins written on every peer");
            self.wait_for(Duration::from_secs(120), &what, || count(i) == n);
        }
        for cid in &probes {
            let r = raw(self.url(0), "DELETE", &format!("/pins/{cid}"), &self.auth(), b"");
            assert_eq!(r.status, 200, "probe unpin: {}", r.text());
        }
        for i in 0..n {
            let what = format!("peer{i} to drop the probe pins");
            self.wait_for(Duration::from_secs(120), &what, || count(i) == 0);
        }
    }

    /// Every peer's REST URL, comma-separated, the write peer (peer0) first: `ledger --cluster`.
    pub fn urls(&self) -> String {
        self.peers.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(",")
    }

    pub fn url(&self, peer: usize) -> &str {
        &self.peers[peer].url
    }

    /// The `Authorization` header for the configured credentials, if any.
    pub fn auth(&self) -> Vec<(&str, &str)> {
        self.auth_header.iter().map(|h| ("Authorization", h.as_str())).collect()
    }

    /// The PIDs of every process this cluster runs (the namespace holder included; a process
    /// stopped on purpose is not running).
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.netns.id()).chain(self.running().map(|(_, c)| c.id())).collect()
    }

    /// The processes not stopped on purpose, with their names.
    fn running(&self) -> impl Iterator<Item = &(String, Child)> {
        self.procs.iter().filter(|(name, _)| !self.stopped.contains(name))
    }

    /// Every socket of every process this cluster started whose remote end is not loopback, or that
    /// listens anywhere but loopback, as `pid name proto local -> remote`. Reads
    /// `/proc/<pid>/net/{tcp,tcp6,udp,udp6}` (the namespace's tables) and checks that each process
    /// is in the cluster's namespace. Empty when nothing could leave loopback.
    pub fn non_loopback_sockets(&self) -> Vec<String> {
        let holder_ns = std::fs::read_link(format!("/proc/{}/ns/net", self.netns.id())).unwrap();
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(holder_ns, mine, "the cluster's namespace is the test's own");
        let mut bad = Vec::new();
        for (name, child) in self.running() {
            let pid = child.id();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .unwrap_or_else(|e| panic!("{name} (pid {pid}) is gone: {e}"));
            if ns != holder_ns {
                bad.push(format!("{pid} {name}: outside the cluster's namespace ({ns:?})"));
            }
            for proto in ["tcp", "tcp6", "udp", "udp6"] {
                let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap();
                for (local, remote) in socket_table(&table) {
                    let listening = remote.is_unspecified();
                    let ok = if listening {
                        local.ip().is_loopback()
                    } else {
                        local.ip().is_loopback() && remote.ip().is_loopback()
                    };
                    if !ok {
                        bad.push(format!("{pid} {name} {proto} {local} -> {remote}"));
                    }
                }
            }
        }
        bad
    }

    /// Panics, naming them, if any process of this cluster has a socket off loopback.
    pub fn assert_loopback_only(&self) {
        let bad = self.non_loopback_sockets();
        assert!(bad.is_empty(), "sockets off loopback:\n{}", bad.join("\n"));
    }

    /// Wait until every peer's `/allocations` is the same pin set (the CRDT settled); returns it.
    pub fn wait_converged(&self, timeout: Duration) -> Vec<Value> {
        let mut last = Vec::new();
        self.wait_for(timeout, "every peer to hold the same pin set", || {
            let sets: Vec<Vec<Value>> = (0..self.peers.len()).map(|i| self.pinset(i)).collect();
            let same = sets.windows(2).all(|w| w[0] == w[1]);
            last = sets.into_iter().next().unwrap();
            same
        });
        last
    }

    /// One peer's `/allocations?filter=all`, sorted by CID.
    pub fn pinset(&self, peer: usize) -> Vec<Value> {
        super::sorted_pinset(self.url(peer), &self.auth())
    }

    /// A process of this cluster that has exited, if any (its name); one stopped on purpose has
    /// not.
    fn exited(&self) -> Option<&str> {
        self.running().map(|(name, c)| (name, c.id())).find_map(|(name, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the parenthesised command name: Z (zombie) once it has exited.
            let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
            matches!(state, None | Some('Z') | Some('X')).then_some(name.as_str())
        })
    }

    fn wait_for(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if let Some(name) = self.exited() {
                panic!(
                    "real cluster: {name} exited while waiting for {what}; its log: {}",
                    self.log_of(name).display()
                );
            }
            if start.elapsed() > timeout {
                let logs: Vec<String> =
                    self.procs.iter().map(|(n, _)| self.log_of(n).display().to_string()).collect();
                panic!(
                    "real cluster: timed out after {timeout:?} waiting for {what}; logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log `name` writes now: `{name}.log`, or `{name}.{n}.log` after its n-th restart.
    fn log_of(&self, name: &str) -> PathBuf {
        let peer = name.split('-').next().unwrap();
        match self.restarts.get(name) {
            None | Some(0) => self.dir.join(peer).join(format!("{name}.log")),
            Some(n) => self.dir.join(peer).join(format!("{name}.{n}.log")),
        }
    }

    /// Waits (60 s at most) for `line` in the log `name` writes now.
    fn wait_for_log(&self, name: &str, line: &str) {
        let log = self.log_of(name);
        self.wait_for(Duration::from_secs(60), &format!("{line:?} from {name}"), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(line))
        });
    }

    /// `cmd` run inside the cluster's namespace, with the environment every process gets: the
    /// namespace is the isolation; these keep kubo's telemetry off and every file in the peer's
    /// folder. `cmd`'s own variables come last.
    fn in_ns(&self, pdir: &Path, cmd: &Command) -> Command {
        let mut ns = Command::new("nsenter");
        ns.arg(format!("--net=/proc/{}/ns/net", self.netns.id()));
        ns.arg("--").arg(cmd.get_program()).args(cmd.get_args());
        ns.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", pdir)
            .env("TZ", "UTC")
            .env("IPFS_PATH", pdir.join("ipfs"))
            .env("IPFS_TELEMETRY", "off")
            .env("DO_NOT_TRACK", "1");
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                ns.env(k, v);
            }
        }
        ns
    }

    fn run_in_ns(&self, pdir: &Path, what: &str, cmd: &mut Command) {
        let out = self.in_ns(pdir, cmd).output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `cmd` in the namespace as process `name`, logging to [`RealCluster::log_of`]; a
    /// process of that name that was stopped is replaced.
    fn spawn_in_ns(&mut self, pdir: &Path, name: &str, cmd: &mut Command) {
        let mut ns = self.in_ns(pdir, cmd);
        let log = std::fs::File::create(self.log_of(name)).unwrap();
        ns.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // nsenter joins the namespace and execs the program: the child's PID is the program's.
        let child = ns.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        match self.procs.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => {
                assert!(self.stopped.remove(name), "{name} is running: stop it first");
                entry.1 = child;
            }
            None => self.procs.push((name.to_string(), child)),
        }
    }

    /// `ipfs daemon` of peer `i`.
    fn spawn_kubo(&mut self, i: usize) {
        let pdir = self.dir.join(format!("peer{i}"));
        let mut daemon = Command::new(kubo_bin());
        daemon.args(["daemon", "--enable-gc=false", "--migrate=false"]);
        self.spawn_in_ns(&pdir, &format!("peer{i}-ipfs"), &mut daemon);
    }

    /// `ipfs-cluster-service daemon` of peer `i`, with its configuration.
    fn spawn_cluster(&mut self, i: usize) {
        let pdir = self.dir.join(format!("peer{i}"));
        let mut daemon = Command::new(cluster_bin(self.version, "ipfs-cluster-service"));
        daemon.arg("--config").arg(pdir.join("cluster")).arg("daemon");
        self.spawn_in_ns(&pdir, &format!("peer{i}-cluster"), &mut daemon);
    }

    /// Stops peer `i`'s cluster daemon (`peer{i}-cluster`) as an operator would: SIGTERM, then
    /// SIGKILL if it has not exited after 20 s. Its REST port then refuses connections, as a
    /// stopped peer's does. Returns how long it took to exit.
    pub fn stop_peer(&mut self, i: usize) -> Duration {
        let took = self.stop_proc(&format!("peer{i}-cluster"));
        self.forwarders[i].stop();
        took
    }

    /// Starts peer `i`'s cluster daemon again with the same configuration and folder (its state,
    /// identity and REST port kept), and waits until it says it is READY in its new log, answers
    /// `/health`, every running peer lists every running peer in `/peers` without an error, and
    /// holds their valid allocation metrics. Returns how long it took.
    pub fn start_peer(&mut self, i: usize) -> Duration {
        let started = Instant::now();
        let name = format!("peer{i}-cluster");
        assert!(self.stopped.contains(&name), "{name} is running");
        let sock = self.peers[i].dir.join("rest.sock");
        // A daemon that was killed leaves its socket behind, and would fail to listen on it.
        let _ = std::fs::remove_file(&sock);
        *self.restarts.entry(name.clone()).or_default() += 1;
        self.spawn_cluster(i);
        let addr = self.forwarders[i].addr;
        self.forwarders[i] = Forwarder::start(sock, Some(addr));
        self.wait_for_log(&name, "IPFS Cluster is READY");
        self.wait_peers_listed();
        started.elapsed()
    }

    /// Another URL of peer `i`'s REST API: a forwarder of its own on a free 127.0.0.1 port.
    pub fn another_url(&mut self, i: usize) -> String {
        let fwd = Forwarder::start(self.peers[i].dir.join("rest.sock"), None);
        let url = fwd.url.clone();
        self.forwarders.push(fwd);
        url
    }

    /// Closes the port of peer `i`'s REST URL (a connection to it is then refused) while the
    /// peer runs on: its REST API unreachable, the peer still a member.
    pub fn close_rest(&mut self, i: usize) {
        self.forwarders[i].stop();
    }

    /// Peer `i`'s REST URL, closed by [`RealCluster::close_rest`], now forwarded to peer `to`'s
    /// REST API: the address of one member answers as another.
    pub fn point_rest(&mut self, i: usize, to: usize) {
        let addr = self.forwarders[i].addr;
        self.forwarders[i] = Forwarder::start(self.peers[to].dir.join("rest.sock"), Some(addr));
    }

    /// Stops peer `i`'s kubo daemon (`peer{i}-ipfs`): SIGTERM, then SIGKILL after 20 s. Its cluster
    /// daemon keeps running. Returns how long it took to exit.
    pub fn stop_kubo(&mut self, i: usize) -> Duration {
        self.stop_proc(&format!("peer{i}-ipfs"))
    }

    /// Starts peer `i`'s kubo daemon again (same repository), waits for "Daemon is ready" in its
    /// new log and until every running peer holds a valid `freespace` metric of every running peer
    /// whose kubo runs (the disk informer asks kubo). Returns how long it took.
    pub fn start_kubo(&mut self, i: usize) -> Duration {
        self.start_kubos(&[i])
    }

    /// [`RealCluster::start_kubo`] of several peers at once: each started, then the waits.
    pub fn start_kubos(&mut self, peers: &[usize]) -> Duration {
        let started = Instant::now();
        for &i in peers {
            let name = format!("peer{i}-ipfs");
            assert!(self.stopped.contains(&name), "{name} is running");
            *self.restarts.entry(name).or_default() += 1;
            self.spawn_kubo(i);
        }
        for &i in peers {
            self.wait_for_log(&format!("peer{i}-ipfs"), "Daemon is ready");
        }
        self.wait_metrics();
        started.elapsed()
    }

    /// Whether process `name` (`peer2-cluster`, `peer0-ipfs`) is stopped on purpose.
    pub fn is_stopped(&self, name: &str) -> bool {
        self.stopped.contains(name)
    }

    /// SIGTERM to process `name` by its PID, then SIGKILL if it has not exited within 20 s; waits
    /// for it and marks it stopped on purpose.
    fn stop_proc(&mut self, name: &str) -> Duration {
        let started = Instant::now();
        let child = match self.procs.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => c,
            None => panic!("no process {name}"),
        };
        assert!(!self.stopped.contains(name), "{name} is already stopped");
        let pid = child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if exited.is_none() {
            eprintln!("real cluster: {name} (pid {pid}) ignored SIGTERM for 20 s; SIGKILL");
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped.insert(name.to_string());
        started.elapsed()
    }

    /// The peers whose cluster daemon runs.
    fn running_peers(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|i| !self.stopped.contains(&format!("peer{i}-cluster")))
            .collect()
    }

    /// Waits until every running peer answers `/health` and lists exactly the running peers in
    /// `/peers`, none with an error, then for [`RealCluster::wait_metrics`] (120 s at most each).
    fn wait_peers_listed(&self) {
        let up = self.running_peers();
        let want: BTreeSet<&str> = up.iter().map(|&i| self.peers[i].id.as_str()).collect();
        for &i in &up {
            let what = format!("peer{i} to list the {} running peers in /peers", up.len());
            self.wait_for(Duration::from_secs(120), &what, || {
                let url = self.url(i);
                if try_raw(url, "GET", "/health", &self.auth(), b"").map(|r| r.status) != Ok(204) {
                    return false;
                }
                let Ok(r) = try_raw(url, "GET", "/peers", &self.auth(), b"") else { return false };
                let ps = if r.status == 200 { r.ndjson() } else { return false };
                let ids: BTreeSet<&str> = ps.iter().filter_map(|p| p["id"].as_str()).collect();
                ids == want && ps.iter().all(|p| p["error"].as_str().is_none_or(str::is_empty))
            });
        }
        self.wait_metrics();
    }

    /// Waits until every running peer holds a valid `freespace` metric of each running peer whose
    /// kubo runs (the disk informer asks kubo; a pin with a replication factor needs them).
    fn wait_metrics(&self) {
        let up = self.running_peers();
        let with_kubo: BTreeSet<&str> = up
            .iter()
            .filter(|&&i| !self.stopped.contains(&format!("peer{i}-ipfs")))
            .map(|&i| self.peers[i].id.as_str())
            .collect();
        for &i in &up {
            let what = format!("peer{i} to hold a valid freespace metric of the peers with kubo");
            self.wait_for(Duration::from_secs(120), &what, || {
                let path = "/monitor/metrics/freespace";
                let Ok(r) = try_raw(self.url(i), "GET", path, &self.auth(), b"") else {
                    return false;
                };
                r.status == 200
                    && serde_json::from_slice::<Vec<Value>>(&r.body).is_ok_and(|ms| {
                        let valid: BTreeSet<&str> = ms
                            .iter()
                            .filter(|m| m["valid"] == true)
                            .filter_map(|m| m["peer"].as_str())
                            .collect();
                        with_kubo.is_subset(&valid)
                    })
            });
        }
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for fwd in &self.forwarders {
            fwd.stop();
        }
        for (_, child) in self.procs.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.netns.kill();
        let _ = self.netns.wait();
        if std::thread::panicking() {
            eprintln!("real cluster: kept the peers' folders and logs in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The CID of the probe pin the harness writes on `peer` while starting (sha2-256 of a label).
fn probe_cid(version: &str, peer: usize) -> String {
    super::cid_of(&format!("ledger harness probe {version} {peer}"))
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// kubo for a test peer: the `test` profile (loopback addresses, no bootstrap peers, no mDNS, no NAT
/// mapping, no AutoTLS or AutoConf) plus no routing at all, no relay, no hole punching, only TCP,
/// no providing, no HTTP retrieval, no gateway and the telemetry plugin disabled.
fn configure_kubo(path: &Path, peer: usize, distinct: bool) {
    let mut c = read_json(path);
    let ma = |off| listen_addr(distinct, peer, off);
    c["Addresses"]["API"] = json!(ma(IPFS_API));
    c["Addresses"]["Gateway"] = json!([]);
    c["Addresses"]["Swarm"] = json!([ma(IPFS_SWARM)]);
    c["Addresses"]["Announce"] = json!([]);
    c["Addresses"]["AppendAnnounce"] = json!([]);
    c["Bootstrap"] = json!([]);
    c["Peering"] = json!({"Peers": null});
    c["Discovery"]["MDNS"]["Enabled"] = json!(false);
    c["Routing"]["Type"] = json!("none");
    c["Swarm"]["DisableNatPortMap"] = json!(true);
    c["Swarm"]["EnableHolePunching"] = json!(false);
    c["Swarm"]["RelayClient"] = json!({"Enabled": false});
    c["Swarm"]["RelayService"] = json!({"Enabled": false});
    c["Swarm"]["Transports"]["Network"] = json!({
        "TCP": true, "QUIC": false, "Websocket": false, "WebTransport": false, "WebRTCDirect": false
    });
    c["AutoNAT"] = json!({"ServiceMode": "disabled"});
    c["AutoTLS"]["Enabled"] = json!(false);
    c["AutoConf"]["Enabled"] = json!(false);
    c["Provide"] = json!({"Enabled": false});
    c["HTTPRetrieval"] = json!({"Enabled": false});
    c["Plugins"] = json!({"Plugins": {"telemetry": {"Disabled": true}}});
    write_json(path, &c);
}

/// service.json for a test peer: loopback listeners, the other peers as peer addresses and trusted
/// peers, no mDNS, no relay hop; the REST API also on `rest.sock` for the harness's forwarder.
fn configure_cluster(pdir: &Path, peer: usize, ids: &[String], opts: &RealOptions) {
    let path = pdir.join("cluster/service.json");
    let mut c = read_json(&path);
    let ma = |p: usize, off| listen_addr(opts.distinct_hosts, p, off);
    c["cluster"]["peername"] = json!(format!("peer{peer}"));
    c["cluster"]["listen_multiaddress"] = json!([ma(peer, CLUSTER_SWARM)]);
    c["cluster"]["announce_multiaddress"] = json!([]);
    c["cluster"]["mdns_interval"] = json!("0s");
    c["cluster"]["enable_relay_hop"] = json!(false);
    // The peer set is the peers with a valid ping metric: at the default 15s a new cluster takes
    // about 15 s before its peers list each other; at 2s, about 3 s.
    c["cluster"]["monitor_ping_interval"] = json!("2s");
    // Likewise the informers' metrics, which allocation needs: a peer sends them every half TTL,
    // so at the default 30s a pin with a replication factor fails for the first 15 s.
    for informer in ["disk", "pinqueue", "tags"] {
        c["informer"][informer]["metric_ttl"] = json!("4s");
    }
    c["cluster"]["peer_addresses"] = json!(
        (0..ids.len())
            .filter(|&p| p != peer)
            .map(|p| format!("{}/p2p/{}", ma(p, CLUSTER_SWARM), ids[p]))
            .collect::<Vec<_>>()
    );
    let crdt = &mut c["consensus"]["crdt"];
    crdt["cluster_name"] = json!("ledger-test");
    crdt["trusted_peers"] = json!(ids);
    if let Some(r) = &opts.rebroadcast {
        crdt["rebroadcast_interval"] = json!(r);
    }
    if let Some((size, age)) = &opts.batching {
        crdt["batching"]["max_batch_size"] = json!(size);
        crdt["batching"]["max_batch_age"] = json!(age);
    }
    let rest = &mut c["api"]["restapi"];
    rest["http_listen_multiaddress"] =
        json!([ma(peer, REST), format!("/unix/{}", pdir.join("rest.sock").display())]);
    if let Some((u, p)) = &opts.basic_auth {
        rest["basic_auth_credentials"] = json!({ u: p });
    }
    if c["api"].get("ipfsproxy").is_some() {
        c["api"]["ipfsproxy"]["listen_multiaddress"] = json!(ma(peer, PROXY));
        c["api"]["ipfsproxy"]["node_multiaddress"] = json!(ma(peer, IPFS_API));
    }
    if c["api"].get("pinsvcapi").is_some() {
        c["api"]["pinsvcapi"]["http_listen_multiaddress"] = json!(ma(peer, PINSVC));
    }
    c["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = json!(ma(peer, IPFS_API));
    if let Some(t) = &opts.pin_timeout {
        c["ipfs_connector"]["ipfshttp"]["pin_timeout"] = json!(t);
    }
    write_json(&path, &c);
}

/// The (local, remote) addresses of a `/proc/net/{tcp,udp}[6]` table.
fn socket_table(table: &str) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = parse_proc_addr(f.nth(1)?)?;
            let remote = parse_proc_addr(f.next()?)?;
            Some((local, remote))
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6, four little-endian words) and a hex port.
fn parse_proc_addr(s: &str) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip: std::net::IpAddr = match ip.len() {
        8 => std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes()).into(),
        32 => {
            let mut b = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
                b[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(b);
            // An IPv4-mapped address (::ffff:127.0.0.1) is loopback when its IPv4 is.
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            }
        }
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

trait Unspecified {
    fn is_unspecified(&self) -> bool;
}
impl Unspecified for std::net::SocketAddr {
    fn is_unspecified(&self) -> bool {
        self.ip().is_unspecified() && self.port() == 0
    }
}

/// A loopback TCP port of the test process whose connections are copied byte for byte to and from
/// a Unix socket (a peer's REST API inside the cluster's namespace).
struct Forwarder {
    url: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    /// The accept loop, which owns the listener; `None` once stopped.
    accept: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Forwarder {
    /// Listens on a free loopback port, or on `addr` again (a peer started again keeps its URL;
    /// the port is retried for 10 s in case a connection of another process holds it).
    fn start(sock: PathBuf, addr: Option<std::net::SocketAddr>) -> Forwarder {
        let listener = match addr {
            None => TcpListener::bind("127.0.0.1:0").unwrap(),
            Some(a) => {
                let started = Instant::now();
                loop {
                    match TcpListener::bind(a) {
                        Ok(l) => break l,
                        Err(e) if started.elapsed() > Duration::from_secs(10) => {
                            panic!("listen on {a} again for the restarted peer: {e}")
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        };
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let sock = sock.clone();
                std::thread::spawn(move || {
                    // Not up yet (or gone): the client sees a closed connection, as from a
                    // stopped peer.
                    let Ok(unix) = UnixStream::connect(&sock) else { return };
                    pipe(tcp, unix);
                });
            }
        });
        let accept = std::sync::Mutex::new(Some(accept));
        Forwarder { url: format!("http://{addr}"), stop, addr, accept }
    }

    /// Stops accepting and closes the listening port (a connection to it is then refused); the
    /// connections already open go on until either side ends them.
    fn stop(&self) {
        let Some(accept) = self.accept.lock().unwrap().take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        let _ = accept.join();
    }
}

/// Copy both ways until both sides are done; each direction's end is passed on as a half-close.
fn pipe(tcp: TcpStream, unix: UnixStream) {
    let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(std::net::Shutdown::Write);
    });
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

fn copy(r: &mut impl Read, w: &mut impl Write) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_parse() {
        let t = "  sl  local_address rem_address   st\n   0: 0100007F:4E25 00000000:0000 0A\n   1: 0100007F:4E25 0A00000A:01BB 01\n";
        let rows = socket_table(t);
        assert_eq!(rows[0].0.to_string(), "127.0.0.1:20005");
        assert!(rows[0].1.is_unspecified());
        assert_eq!(rows[1].1.to_string(), "10.0.0.10:443");
        let v6 = parse_proc_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(v6.to_string(), "[::1]:80");
        let mapped = parse_proc_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped.to_string(), "127.0.0.1:80");
    }
}
