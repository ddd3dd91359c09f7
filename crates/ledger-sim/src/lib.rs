//! The IPFS Cluster simulator behind `ledger sim serve` and `ledger demo`: N peers in one process, each
//! with its own CRDT replica ([`state`]) and its own REST API port ([`api`], over [`http`]), plus a
//! control API for faults ([`control`]). It follows `docs/cluster-api.md`; `docs/simulator.md` lists
//! the choices the real cluster leaves open and what the simulator does. Of ledger's own code it uses
//! only the identifiers in `ledger-ids`.

pub mod add;
pub mod api;
pub mod auth;
pub mod control;
pub mod http;
pub mod lazy;
pub mod multipart;
pub mod options;
pub mod pin;
pub mod seed;
pub mod state;
pub mod unixfs;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use sha2::Digest;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use control::Faults;
pub use state::NetConfig;

/// Everything `ledger sim serve` can be told at start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub peers: usize,
    pub listen: SocketAddr,
    /// Each peer on a loopback address of its own (`listen`'s IP + i), all on one port, as the
    /// members of a real cluster are on hosts of their own; otherwise one IP, a port each.
    pub distinct_hosts: bool,
    /// Peers whose `/id` and `/peers` addresses are these multiaddrs instead of their own (by
    /// name), as a real peer's `cluster.announce_multiaddress` replaces what it says of itself.
    pub announce: Vec<(String, Vec<String>)>,
    pub net: NetConfig,
    pub pins: Vec<pin::Pin>,
    /// A generated set served beside `pins` without being held in memory (see [`lazy`]).
    pub lazy: Option<lazy::LazySet>,
    pub users: auth::Users,
    pub quirk_partial_apply: bool,
    pub replication_min: i32,
    pub replication_max: i32,
    pub version: String,
    pub faults: Faults,
}

/// What the first stdout line announces about one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub name: String,
    pub id: String,
    pub url: String,
    #[serde(skip)]
    pub ipfs_id: String,
    /// The host its cluster addresses give: the IP it listens on (127.0.0.1 for an unspecified one).
    #[serde(skip)]
    pub host: std::net::IpAddr,
    #[serde(skip)]
    pub cluster_port: u16,
    /// Its kubo's swarm port.
    #[serde(skip)]
    pub ipfs_port: u16,
    /// Its announced cluster addresses (`SimConfig::announce`), if any: they replace its own.
    #[serde(skip)]
    pub announce: Option<Vec<String>>,
}

impl PeerInfo {
    /// Its cluster addresses, each ending `/p2p/<id>`, as `/id` and `/peers` give them.
    pub fn cluster_addresses(&self) -> Vec<String> {
        match &self.announce {
            Some(a) => {
                a.iter().map(|m| format!("{}/p2p/{}", m.trim_end_matches('/'), self.id)).collect()
            }
            None => {
                vec![format!("{}/tcp/{}/p2p/{}", ip_part(self.host), self.cluster_port, self.id)]
            }
        }
    }

    /// Its kubo's addresses, on its host.
    pub fn ipfs_addresses(&self) -> Vec<String> {
        vec![format!("{}/tcp/{}/p2p/{}", ip_part(self.host), self.ipfs_port, self.ipfs_id)]
    }
}

/// `/ip4/A` or `/ip6/A`.
fn ip_part(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("/ip4/{a}"),
        std::net::IpAddr::V6(a) => format!("/ip6/{a}"),
    }
}

/// The shared state of a running simulated cluster.
pub struct Cluster {
    pub peers: Vec<PeerInfo>,
    pub world: Mutex<state::World>,
    pub wake: Notify,
    pub faults: Mutex<Faults>,
    pub users: auth::Users,
    pub quirk_partial_apply: bool,
    pub rf_default: (i32, i32),
    pub version: String,
    pub rng: Mutex<SmallRng>,
    pub started: Instant,
    /// Wakes a peer's accept loop when it is restarted, so it can close its port.
    pub restarts: Vec<Notify>,
    /// Told by a peer's accept loop once its port is closed, so a restart answers only then.
    pub closed: Vec<Notify>,
    /// Tracker statuses set through `POST /_sim/status`, by (peer, pin key).
    pub steered: Mutex<control::Steered>,
}

impl Cluster {
    /// Index of a peer by name (`peer0`) or ID.
    pub fn peer_index(&self, name: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.name == name || p.id == name)
    }

    /// Locks the replicas and the network.
    pub fn world(&self) -> std::sync::MutexGuard<'_, state::World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_down(&self, p: usize) -> bool {
        self.world().is_down(p, Instant::now())
    }
}

/// A started simulator. Dropping it stops every task.
pub struct Running {
    pub cluster: Arc<Cluster>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// `{"peers":[{"name","id","url"},…]}`: the line `ledger sim serve` prints first.
    pub fn hello_line(&self) -> String {
        serde_json::json!({ "peers": self.cluster.peers }).to_string()
    }

    pub fn urls(&self) -> Vec<String> {
        self.cluster.peers.iter().map(|p| p.url.clone()).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Deterministic peer identity number `i` of a simulator started with `seed`.
pub fn peer_ids(seed: u64, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let key = |tag: &str| -> [u8; 32] {
                let mut h = sha2::Sha256::new();
                h.update(seed.to_le_bytes());
                h.update(tag.as_bytes());
                h.update((i as u64).to_le_bytes());
                h.finalize().into()
            };
            (
                ledger_ids::peer_id_from_key(&key("cluster")),
                ledger_ids::peer_id_from_key(&key("ipfs")),
            )
        })
        .collect()
}

/// Binds every peer's port, then serves until the returned [`Running`] is dropped.
pub async fn start(cfg: SimConfig) -> anyhow::Result<Running> {
    anyhow::ensure!(cfg.peers >= 1, "--peers must be at least 1");
    for (name, _) in &cfg.announce {
        let known = (0..cfg.peers).any(|i| format!("peer{i}") == *name);
        anyhow::ensure!(known, "--announce names {name:?}, which is not a peer (peer0, peer1, …)");
    }
    let listeners = if cfg.distinct_hosts {
        bind_distinct(cfg.listen, cfg.peers).await?
    } else {
        bind_shared(cfg.listen, cfg.peers).await?
    };
    let ids = peer_ids(cfg.net.seed, cfg.peers);
    let peers: Vec<PeerInfo> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let addr = l.local_addr().expect("bound");
            let name = format!("peer{i}");
            let announce = cfg.announce.iter().find(|(n, _)| *n == name).map(|(_, a)| a.clone());
            PeerInfo {
                name,
                id: ids[i].0.clone(),
                url: format!("http://{addr}"),
                ipfs_id: ids[i].1.clone(),
                host: advertised(addr.ip()),
                // On hosts of their own, every peer has the default cluster port.
                cluster_port: if cfg.distinct_hosts { 9096 } else { 9096 + i as u16 },
                ipfs_port: if cfg.distinct_hosts { 4001 } else { 4001 + i as u16 },
                announce,
            }
        })
        .collect();
    let world = state::World::with_base(cfg.peers, cfg.pins, cfg.lazy.clone(), cfg.net.clone());
    let cluster = Arc::new(Cluster {
        peers,
        world: Mutex::new(world),
        wake: Notify::new(),
        faults: Mutex::new(cfg.faults),
        users: cfg.users,
        quirk_partial_apply: cfg.quirk_partial_apply,
        rf_default: (cfg.replication_min, cfg.replication_max),
        version: cfg.version,
        rng: Mutex::new(SmallRng::seed_from_u64(cfg.net.seed.wrapping_add(17))),
        started: Instant::now(),
        restarts: (0..cfg.peers).map(|_| Notify::new()).collect(),
        closed: (0..cfg.peers).map(|_| Notify::new()).collect(),
        steered: Mutex::default(),
    });
    let mut tasks = Vec::new();
    let c = cluster.clone();
    tasks.push(tokio::spawn(async move { ticker(c).await }));
    for (i, l) in listeners.into_iter().enumerate() {
        let c = cluster.clone();
        tasks.push(tokio::spawn(async move { accept_loop(c, i, l).await }));
    }
    Ok(Running { cluster, tasks })
}

/// One IP, peer i on `listen`'s port + i (or each on a free port, for port 0).
async fn bind_shared(listen: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        let addr = if listen.port() == 0 {
            listen
        } else {
            let port = listen.port().checked_add(i as u16).context("port out of range")?;
            SocketAddr::new(listen.ip(), port)
        };
        let l =
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// The address of peer `i` with distinct hosts: `ip` + i.
fn nth_host(ip: std::net::Ipv4Addr, i: usize) -> Option<std::net::Ipv4Addr> {
    let n = u32::from(ip).checked_add(u32::try_from(i).ok()?)?;
    Some(std::net::Ipv4Addr::from(n))
}

/// Peer i on `listen`'s IPv4 address + i, all on one port: `listen`'s, or for port 0 one that is
/// free on every host (tried a few times over).
async fn bind_distinct(listen: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpListener>> {
    let std::net::IpAddr::V4(first) = listen.ip() else {
        anyhow::bail!("--distinct-hosts needs an IPv4 --listen address (127.0.0.1:PORT)");
    };
    anyhow::ensure!(
        !first.is_unspecified(),
        "--distinct-hosts needs the first peer's own address, not {first}"
    );
    let last = nth_host(first, n - 1).context("--distinct-hosts: the addresses run out")?;
    anyhow::ensure!(
        first.is_loopback() == last.is_loopback(),
        "--distinct-hosts: {first} to {last} leave the loopback network 127.0.0.0/8"
    );
    for _ in 0..20 {
        let l0 = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let port = l0.local_addr()?.port();
        let mut listeners = vec![l0];
        for i in 1..n {
            let addr = SocketAddr::new(nth_host(first, i).context("no address")?.into(), port);
            match TcpListener::bind(addr).await {
                Ok(l) => listeners.push(l),
                Err(_) if listen.port() == 0 => break,
                Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
            }
        }
        if listeners.len() == n {
            return Ok(listeners);
        }
    }
    anyhow::bail!("--distinct-hosts: found no port free on all {n} addresses from {first}")
}

/// The host a peer's addresses give for its listen IP: itself, or loopback for an unspecified one.
fn advertised(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

/// Runs due deliveries, batch commits and rebroadcast ticks, sleeping until the next one or a write.
async fn ticker(c: Arc<Cluster>) {
    loop {
        let next = c.world().run_due(Instant::now());
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = c.wake.notified() => {}
        }
    }
}

async fn accept_loop(c: Arc<Cluster>, p: usize, mut l: TcpListener) {
    let handler: http::Handler = {
        let c = c.clone();
        Arc::new(move |req| {
            let c = c.clone();
            Box::pin(async move { api::handle(c, p, req).await })
        })
    };
    let addr = l.local_addr().expect("bound");
    loop {
        let accepted = tokio::select! {
            r = l.accept() => r.ok(),
            _ = c.restarts[p].notified() => None,
        };
        if c.is_down(p) {
            // A restarting peer refuses connections: close the port until it is back.
            drop(accepted);
            drop(l);
            c.closed[p].notify_one();
            let until = c.world().down_until[p];
            if let Some(t) = until {
                tokio::time::sleep_until(t.into()).await;
            }
            l = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(%addr, %e, "cannot listen again after a restart; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            continue;
        }
        if let Some((stream, _)) = accepted {
            tokio::spawn(http::serve_connection(stream, handler.clone()));
        }
    }
}
