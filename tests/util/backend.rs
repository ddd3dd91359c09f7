//! One cluster for a test body, whichever backend runs it: `ledger sim serve` or the real IPFS
//! Cluster (v1.1.6 on loopback). The body only sees REST URLs, peer IDs and a few waits, so the same
//! body runs on both (`on_both!`).

use std::time::Duration;

use serde_json::Value;

use super::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use super::{Sim, raw};

/// Which cluster a test body runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sim,
    Real,
}

/// A running cluster of either kind.
pub enum Cluster {
    Sim(Sim),
    Real(RealCluster),
}

impl Cluster {
    /// `peers` peers of `backend`, empty. `None` when the real cluster is not built here (the test
    /// is then skipped with one line, or fails under `LEDGER_TEST_STRICT=1`). The simulator gets a
    /// short lag (0–100 ms) so that propagation is real but tests stay quick.
    pub fn start(backend: Backend, peers: usize) -> Option<Cluster> {
        match backend {
            Backend::Sim => Some(Cluster::Sim(Sim::start(&[
                "--peers",
                &peers.to_string(),
                "--lag",
                "0..100ms",
            ]))),
            Backend::Real => {
                if !available(V1_1_6) {
                    return None;
                }
                Some(Cluster::Real(RealCluster::start(RealOptions::new(V1_1_6, peers))))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Cluster::Sim(_) => Backend::Sim,
            Cluster::Real(_) => Backend::Real,
        }
    }

    pub fn len(&self) -> usize {
        self.ids().len()
    }

    pub fn url(&self, peer: usize) -> &str {
        match self {
            Cluster::Sim(s) => s.url(peer),
            Cluster::Real(r) => r.url(peer),
        }
    }

    /// Every peer's REST URL, comma-separated, peer0 (the write peer) first.
    pub fn urls(&self) -> String {
        (0..self.len()).map(|i| self.url(i).to_string()).collect::<Vec<_>>().join(",")
    }

    /// The cluster peer IDs, in peer order.
    pub fn ids(&self) -> Vec<String> {
        match self {
            Cluster::Sim(s) => s.peers.iter().map(|p| p.id.clone()).collect(),
            Cluster::Real(r) => r.peers.iter().map(|p| p.id.clone()).collect(),
        }
    }

    /// One peer's `/allocations?filter=all`, sorted by CID.
    pub fn pinset(&self, peer: usize) -> Vec<Value> {
        let r = raw(self.url(peer), "GET", "/allocations?filter=all", &[], b"");
        assert!(r.status == 200 || r.status == 204, "allocations: {} {}", r.status, r.text());
        assert_eq!(r.trailer("X-Stream-Error").unwrap_or(""), "", "stream error");
        let mut pins = r.ndjson();
        pins.sort_by(|a, b| a["cid"].as_str().cmp(&b["cid"].as_str()));
        pins
    }

    /// Wait until every replica holds the same pin set; returns it (sorted by CID).
    pub fn wait_converged(&self, timeout: Duration) -> Vec<Value> {
        match self {
            Cluster::Sim(s) => {
                s.wait_converged(timeout);
                self.pinset(0)
            }
            Cluster::Real(r) => r.wait_converged(timeout),
        }
    }

    /// Wait until every replica holds `n` pins and the same pin set.
    pub fn wait_for_pins(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let pins = self.wait_converged(timeout);
            if pins.len() == n {
                return pins;
            }
            assert!(start.elapsed() < timeout, "{} pins, not {n}, after {timeout:?}", pins.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST PATH` on one peer (a pin or re-pin with its query); the response must be 200.
    pub fn post(&self, peer: usize, path: &str) -> Value {
        let r = raw(self.url(peer), "POST", path, &[], b"");
        assert_eq!(r.status, 200, "POST {path} on peer{peer}: {}", r.text());
        r.json()
    }

    /// Pins every pin of `pins` (each `(path, query)`, e.g. `("/pins/Qm…", "name=x")`) through
    /// peer0, then waits until every replica holds them all. Returns the stored pin set.
    pub fn seed(&self, pins: &[(String, String)]) -> Vec<Value> {
        let before = self.pinset(0).len();
        for (path, query) in pins {
            let p = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            self.post(0, &p);
        }
        self.wait_for_pins(before + pins.len(), Duration::from_secs(60))
    }
}

/// Runs each named test body `fn NAME(backend: Backend)` twice, as `NAME::sim` and `NAME::real`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sim() {
                    super::$name($crate::util::backend::Backend::Sim)
                }
                #[test]
                fn real() {
                    super::$name($crate::util::backend::Backend::Real)
                }
            }
        )*
    };
}
