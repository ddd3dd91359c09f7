//! `ledger sim serve`: runs the built-in multi-peer IPFS Cluster simulator until SIGINT or SIGTERM.
//! See docs/simulator.md for the behaviour and the `/_sim/` control API.

#![warn(clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{parse_duration, parse_lag, parse_per_second, parse_pin_count, parse_rate};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use ledger_sim::{Faults, NetConfig, SimConfig, auth::Users, control};

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve an N-peer simulated IPFS Cluster: one REST API port per peer.
    ///
    /// Prints one JSON line on stdout with each peer's name, ID and URL, then logs to stderr.
    /// Stop it with Ctrl-C or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Number of cluster peers.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub peers: u16,
    /// Address of peer0; peer i listens on PORT+i. Port 0 picks a free port for every peer.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Each peer on an address of its own, all on one port: peer i on the --listen IPv4 address
    /// plus i (127.0.0.1, 127.0.0.2, …, all loopback on Linux), as a real cluster's members are
    /// on hosts of their own; with port 0, a port free on every one of them. Their `/id` and
    /// `/peers` addresses give those hosts (with cluster port 9096), so ledger's discovery finds
    /// them.
    #[arg(long)]
    pub distinct_hosts: bool,
    /// Peer NAME's `/id` and `/peers` addresses are these multiaddrs instead of its own
    /// (comma-separated; repeatable), as a real peer's `cluster.announce_multiaddress` does; e.g.
    /// `peer2=/ip4/127.0.0.9/tcp/9096`. `/p2p/<id>` is added to each.
    #[arg(long, value_name = "NAME=MULTIADDR[,…]", value_parser = parse_announce)]
    pub announce: Vec<(String, Vec<String>)>,
    /// Generate this many pins (a realistic mix; see docs/simulator.md).
    #[arg(long, default_value_t = 0, value_parser = parse_pin_count, conflicts_with = "from")]
    pub pins: usize,
    /// Serve this many generated pins without holding them: pin i derived from (seed, i) whenever
    /// it is read, only the pins written since start kept; every CID a CIDv0 (docs/simulator.md).
    /// At most 1,073,741,824.
    #[arg(long, value_name = "N", conflicts_with_all = ["pins", "from"], value_parser = clap::value_parser!(u64).range(0..=ledger_sim::lazy::MAX_PINS))]
    pub lazy_pins: Option<u64>,
    /// Random seed for generated pins, peer IDs, lag and drops.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Load the starting pins from NDJSON in the `/allocations` stored form (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub from: Option<String>,
    /// Propagation delay of each delivery to another peer, uniform in MIN..MAX (e.g. `50ms..2s`;
    /// `0` for none).
    #[arg(long, default_value = "50ms..1s", value_parser = parse_lag, allow_hyphen_values = true, value_name = "MIN..MAX")]
    pub lag: (Duration, Duration),
    /// Probability (0..1) that a delivery is lost; lost ones arrive at the next rebroadcast tick.
    #[arg(long = "drop", default_value_t = 0.0, value_parser = parse_rate, value_name = "RATE")]
    pub drop_rate: f64,
    /// Rebroadcast interval; each tick is randomised by ±30%.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub rebroadcast: Duration,
    /// Deltas per second a peer applies from the others, one broadcast at a time (0: at once). A
    /// real v1.1.6 peer applied about 50/s here (docs/simulator.md, "Throughput").
    #[arg(long, default_value_t = 0.0, value_parser = parse_per_second, value_name = "N")]
    pub apply_rate: f64,
    /// With --apply-rate: deliveries a busy peer holds; one more is lost (gossipsub's queue: 32).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub inbox: u32,
    /// CRDT batching: commit a batch after this many writes (batching needs both size and age > 0).
    #[arg(long, default_value_t = 0)]
    pub batch_size: usize,
    /// CRDT batching: commit a batch this long after its first write.
    #[arg(long, default_value = "0s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub batch_age: Duration,
    /// CRDT batching: writes waiting beyond this many are refused with 500.
    #[arg(long, default_value_t = 50_000)]
    pub batch_queue: usize,
    /// How often the state sync removes expired pins.
    #[arg(long, default_value = "5m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub state_sync: Duration,
    /// Cluster default replication factor min (replaces 0 in requests).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_min: i32,
    /// Cluster default replication factor max (replaces 0 in requests).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_max: i32,
    /// Require auth: accept this user (repeatable). Bearer JWTs (HS256, iss=USER, key=PASS) work too.
    #[arg(long = "basic-auth", value_name = "USER:PASS", value_parser = parse_user)]
    pub basic_auth: Vec<(String, String)>,
    /// Reproduce the real cluster's bug: a 400 for a bad option still commits the partly parsed pin.
    #[arg(long)]
    pub quirk_partial_apply: bool,
    /// Fault: added latency before every API response.
    #[arg(long, default_value = "0s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub latency: Duration,
    /// Fault: answer STATUS for a fraction RATE of requests to ENDPOINT (repeatable). Endpoints:
    /// health, id, version, peers, allocations, pins, pin, unpin, recover, token, monitor, or *.
    #[arg(long = "error", value_name = "ENDPOINT:STATUS[:RATE]", value_parser = Faults::parse_error_flag)]
    pub errors: Vec<control::ErrorFault>,
    /// Fault: cut every stream after K items, with a trailer error (default) or a dropped connection.
    #[arg(long, value_name = "K[:trailer|:drop]", value_parser = Faults::parse_cut_flag)]
    pub stream_cut: Option<control::StreamCut>,
    /// The version `/version` and `/id` report.
    #[arg(long, default_value = "1.1.6")]
    pub version_string: String,
}

/// A ledger option (`--db`, `--cluster`, …) under `ledger sim`, which serves a cluster and uses no
/// ledger: hidden from its help, refused with the reason. An argument of the same name on `sim`
/// keeps clap from handing the global one down to `sim` and `sim serve`.
pub fn not_for_sim(name: &'static str) -> clap::Arg {
    // A flag (`--discover`) takes no value: the missing value is refused the same way.
    let arg = clap::Arg::new(name).long(name).hide(true).num_args(0..=1).default_missing_value("");
    arg.value_parser(
        move |_: &str| -> Result<String, String> {
            Err(format!(
                "`ledger sim` serves a simulated cluster and uses no ledger: --{name} does not apply to it"
            ))
        },
    )
}

fn parse_announce(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, addrs) = s.split_once('=').ok_or("expected NAME=MULTIADDR[,MULTIADDR…]")?;
    let addrs: Vec<String> =
        addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    if name.trim().is_empty() || addrs.iter().any(|a| !a.starts_with('/')) {
        return Err("expected NAME=MULTIADDR[,MULTIADDR…], each multiaddr starting with /".into());
    }
    Ok((name.trim().to_string(), addrs))
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    let (u, p) = s.split_once(':').ok_or("expected USER:PASS")?;
    if u.is_empty() {
        return Err("the user name is empty".into());
    }
    Ok((u.to_string(), p.to_string()))
}

impl ServeArgs {
    /// The simulator configuration these flags describe (reads `--from`).
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let n = self.peers as usize;
        let ids: Vec<String> =
            ledger_sim::peer_ids(self.seed, n).into_iter().map(|(id, _)| id).collect();
        let pins = match &self.from {
            Some(path) if path == "-" => ledger_sim::seed::load(std::io::stdin().lock())?,
            Some(path) => {
                let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
                ledger_sim::seed::load(std::io::BufReader::new(f))
                    .with_context(|| format!("reading {path}"))?
            }
            None => ledger_sim::seed::generate(self.pins, self.seed, &ids),
        };
        Ok(SimConfig {
            peers: n,
            listen: self.listen,
            distinct_hosts: self.distinct_hosts,
            announce: self.announce.clone(),
            net: NetConfig {
                lag_min: self.lag.0,
                lag_max: self.lag.1,
                drop_rate: self.drop_rate,
                rebroadcast: self.rebroadcast.max(Duration::from_millis(10)),
                batch_size: self.batch_size,
                batch_age: self.batch_age,
                batch_queue: self.batch_queue,
                state_sync: self.state_sync.max(Duration::from_millis(10)),
                seed: self.seed,
                apply_rate: self.apply_rate,
                inbox: self.inbox as usize,
            },
            pins,
            lazy: self.lazy_pins.map(|n| ledger_sim::lazy::LazySet {
                n,
                seed: self.seed,
                peers: ids.clone(),
            }),
            users: Users(self.basic_auth.clone()),
            quirk_partial_apply: self.quirk_partial_apply,
            replication_min: self.replication_min,
            replication_max: self.replication_max,
            version: self.version_string.clone(),
            faults: Faults {
                latency_ms: self.latency.as_millis() as u64,
                errors: self.errors.clone(),
                stream_cut: self.stream_cut.clone(),
            },
        })
    }
}

pub fn run(cmd: SimCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SimCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config()?;
    let pins = cfg.pins.len() as u64 + cfg.lazy.as_ref().map_or(0, |l| l.n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut shutdown = crate::app::Shutdown::new()?;
        let running = ledger_sim::start(cfg).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", running.hello_line())?;
            out.flush()?;
        }
        tracing::info!(peers = args.peers, pins, "simulated cluster ready");
        shutdown.wait().await;
        tracing::info!(writes = running.cluster.world().writes(), "stopping");
        drop(running);
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(ExitCode::SUCCESS)
}
