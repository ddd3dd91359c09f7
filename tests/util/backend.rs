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

impl Backend {
    /// How long a migration's pass settles (`--settle`) in a test that waits for every peer. A
    /// real peer can take over 10 s to show the last re-pins of a burst, rebroadcast every 5 s or
    /// not: in 1 of 3 runs of tag's kill test alone, two peers were 11 and 6 pins short after 5
    /// passes of 2 s. 5 s a pass leaves it 25 s over the default 5 passes.
    pub fn settle(self) -> &'static str {
        match self {
            Backend::Sim => "300ms",
            Backend::Real => "5s",
        }
    }
}

/// A running cluster of either kind.
pub enum Cluster {
    Sim(Sim),
    Real(RealCluster),
}

impl Cluster {
    /// `peers` peers of `backend`, empty. `None` when the real cluster is not built here (the test
    /// is then skipped with one line, or fails under `LEDGER_TEST_STRICT=1`). The simulator gets a
    /// short lag (0–100 ms) so that propagation is real but tests stay quick. The real cluster gets
    /// `rebroadcast_interval` 5s instead of the default 1m: after a burst of writes it routinely
    /// leaves a peer without the last heads until the next rebroadcast (15 of 300 pins on two of
    /// three peers, seen here), and a test should not wait 80 s for that each time.
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
                let opts = RealOptions {
                    rebroadcast: Some("5s".into()),
                    ..RealOptions::new(V1_1_6, peers)
                };
                Some(Cluster::Real(RealCluster::start(opts)))
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
        match self {
            Cluster::Sim(s) => super::sorted_pinset(s.url(peer), &[]),
            Cluster::Real(r) => r.pinset(peer),
        }
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

/// A deterministic CIDv0 (`Qm…`, sha2-256 of the label) for a label.
pub fn cid_of(label: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(label.as_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v0(mh).unwrap().to_string()
}

/// A deterministic CIDv1 (`bafy…`, dag-pb, sha2-256 of the label) for a label.
pub fn cid_v1_of(label: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(label.as_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x70, mh).to_string()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The organisations of the seeded pins that are not ours (`hrdag` is ours).
pub const OTHER_ORGS: [&str; 4] = ["amnesty", "witness", "bellingcat", "memorial"];

/// `n` pins of every kind a shared cluster holds, as `(path, query)` for [`Cluster::seed`]; CIDs
/// from `label`. By `i % 10`: 0 named and bare; 1 with other metadata keys; 2 direct (through
/// `/pins/ipfs/…?mode=direct`); 3 expiring in 2036; 4 replication 2/2 on two given peers; 5 with
/// origins; 6 another organisation's, with replication 1/2; 7 `org=""` (unowned); 8 already ours
/// (`org=hrdag`); 9 unnamed, CIDv1, with a key whose value needs escaping. Kinds 0–5, 7 and 9 are
/// unowned: the targets of `tag --org hrdag`.
pub fn every_kind(n: usize, label: &str, ids: &[String]) -> Vec<(String, String)> {
    let peers = ids.len();
    (0..n)
        .map(|i| {
            let cid = if i % 10 == 9 {
                cid_v1_of(&format!("{label}/{i}"))
            } else {
                cid_of(&format!("{label}/{i}"))
            };
            let name = format!("name=dataset-{:03}%2Ffile-{i}.csv", i / 10);
            let q = match i % 10 {
                0 => name,
                1 => format!("{name}&meta-project=census&meta-source=crawler"),
                2 => format!("{name}&mode=direct&meta-project=direct"),
                3 => format!("{name}&expire-at=2036-{:02}-15T00:00:00Z", 1 + i % 12),
                4 if peers >= 2 => format!(
                    "{name}&replication-min=2&replication-max=2&user-allocations={},{}&meta-team=t{}",
                    ids[i % peers],
                    ids[(i + 1) % peers],
                    i % 3
                ),
                4 => format!("{name}&meta-team=t{}", i % 3),
                5 => format!(
                    "{name}&origins={}",
                    enc(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", ids[i % peers]))
                ),
                6 => format!(
                    "{name}&replication-min=1&replication-max=2&meta-org={}&meta-project=theirs",
                    OTHER_ORGS[(i / 10) % OTHER_ORGS.len()]
                ),
                7 => format!("{name}&meta-org="),
                8 => format!("{name}&meta-org=hrdag"),
                _ => format!("meta-note={}", enc("a&b=c; 100% \"quoted\" ü")),
            };
            let path =
                if i % 10 == 2 { format!("/pins/ipfs/{cid}") } else { format!("/pins/{cid}") };
            (path, q)
        })
        .collect()
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
