//! The IPFS Cluster simulator behind `ledger sim serve` and `ledger demo`: N peers in one process, each
//! with its own CRDT replica ([`state`]) and its own REST API port ([`api`], over [`http`]), plus a
//! control API for faults ([`control`]). It follows `docs/cluster-api.md`; `docs/simulator.md` lists
//! the choices the real cluster leaves open and what the simulator does. Of ledger's own code it uses
//! only the identifiers in `ledger-ids`.

pub mod api;
pub mod auth;
pub mod control;
pub mod http;
pub mod options;
pub mod pin;
pub mod seed;
pub mod state;

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
    pub net: NetConfig,
    pub pins: Vec<pin::Pin>,
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
    #[serde(skip)]
    pub cluster_port: u16,
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
    let mut listeners = Vec::with_capacity(cfg.peers);
    for i in 0..cfg.peers {
        let addr = if cfg.listen.port() == 0 {
            cfg.listen
        } else {
            let port = cfg.listen.port().checked_add(i as u16).context("port out of range")?;
            SocketAddr::new(cfg.listen.ip(), port)
        };
        let l =
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(l);
    }
    let ids = peer_ids(cfg.net.seed, cfg.peers);
    let peers: Vec<PeerInfo> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let addr = l.local_addr().expect("bound");
            PeerInfo {
                name: format!("peer{i}"),
                id: ids[i].0.clone(),
                url: format!("http://{addr}"),
                ipfs_id: ids[i].1.clone(),
                cluster_port: 9096 + i as u16,
            }
        })
        .collect();
    let world = state::World::new(cfg.peers, cfg.pins, cfg.net.clone());
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
