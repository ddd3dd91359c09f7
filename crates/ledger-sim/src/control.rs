//! Faults and the control API under `/_sim/` (a prefix no real cluster routes): injected errors,
//! latency and stream cuts; pausing, partitioning and restarting peers; the state report that tests
//! poll instead of sleeping.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::http::{Body, Request, Response};

/// The faults in force. Set by flags at start and by `POST /_sim/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub errors: Vec<ErrorFault>,
    #[serde(default)]
    pub stream_cut: Option<StreamCut>,
}

/// Answer `status` instead of serving `endpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    pub endpoint: String,
    pub status: u16,
    #[serde(default = "one")]
    pub rate: f64,
    /// Fire this many times, then disarm (`None`: forever).
    #[serde(default)]
    pub count: Option<u64>,
    /// Only on these peers (names or IDs); `None`: all.
    #[serde(default)]
    pub peers: Option<Vec<String>>,
}

/// Cut every stream after `after` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCut {
    pub after: usize,
    #[serde(default)]
    pub mode: CutMode,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub peers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutMode {
    /// End the stream with an `X-Stream-Error` trailer.
    #[default]
    Trailer,
    /// Drop the connection without ending the chunked body.
    Drop,
}

fn one() -> f64 {
    1.0
}

/// The endpoint names a fault may name: those of the route table (`api.rs`), and `*` for all.
pub const ENDPOINTS: [&str; 12] = [
    "health",
    "id",
    "version",
    "peers",
    "allocations",
    "pins",
    "pin",
    "unpin",
    "recover",
    "token",
    "monitor",
    "*",
];

impl ErrorFault {
    /// Refuses an endpoint no route has (the fault would never fire) and a status that is not an
    /// HTTP status.
    pub fn check(&self) -> Result<(), String> {
        if !ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!(
                "no endpoint {:?}: faults apply to {}",
                self.endpoint,
                ENDPOINTS.join(", ")
            ));
        }
        if !(100..=599).contains(&self.status) {
            return Err(format!("{} is not an HTTP status (100 to 599)", self.status));
        }
        Ok(())
    }
}

impl Faults {
    /// Parses `--error ENDPOINT:STATUS:RATE`.
    pub fn parse_error_flag(s: &str) -> Result<ErrorFault, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [endpoint, status, rest @ ..] = parts.as_slice() else {
            return Err(format!("expected ENDPOINT:STATUS[:RATE], got {s:?}"));
        };
        let status: u16 = status.parse().map_err(|_| format!("bad status in {s:?}"))?;
        let rate: f64 = match rest {
            [] => 1.0,
            [r] => r.parse().map_err(|_| format!("bad rate in {s:?}"))?,
            _ => return Err(format!("expected ENDPOINT:STATUS[:RATE], got {s:?}")),
        };
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("rate must be between 0 and 1 in {s:?}"));
        }
        let fault =
            ErrorFault { endpoint: endpoint.to_string(), status, rate, count: None, peers: None };
        fault.check()?;
        Ok(fault)
    }

    /// Parses `--stream-cut K[:trailer|:drop]`.
    pub fn parse_cut_flag(s: &str) -> Result<StreamCut, String> {
        let (k, mode) = s.split_once(':').unwrap_or((s, "trailer"));
        let after = k.parse().map_err(|_| format!("bad item count in {s:?}"))?;
        let mode = match mode {
            "trailer" => CutMode::Trailer,
            "drop" => CutMode::Drop,
            other => return Err(format!("stream cut mode must be trailer or drop, not {other:?}")),
        };
        Ok(StreamCut { after, mode, count: None, peers: None })
    }
}

/// A tracker status set on one peer for one pin (`POST /_sim/status`): what that peer's status
/// listings say for the pin while its replica holds it, until cleared or the peer restarts (a
/// restart resets the tracker).
#[derive(Debug, Clone)]
pub struct SteeredStatus {
    pub status: &'static str,
    pub error: String,
    /// When it was set: the tracker's `timestamp`.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The steered statuses, by (peer, pin key).
pub type Steered = std::collections::HashMap<(usize, String), SteeredStatus>;

/// The statuses a peer's tracker can be steered to: every single TrackerStatus a peer reports of
/// itself (not the asker's `cluster_error`, nor the composite filter names).
pub const STEERABLE: [&str; 11] = [
    "pinned",
    "pin_error",
    "pin_queued",
    "pinning",
    "unpin_error",
    "unpin_queued",
    "unpinning",
    "unpinned",
    "remote",
    "sharded",
    "unexpectedly_unpinned",
];

fn applies(peers: &Option<Vec<String>>, c: &Cluster, p: usize) -> bool {
    peers.as_ref().is_none_or(|list| list.iter().any(|n| c.peer_index(n) == Some(p)))
}

impl Cluster {
    /// The status steered on peer `p` for the pin `key`, if any.
    pub fn steered_status(&self, p: usize, key: &str) -> Option<SteeredStatus> {
        let steered = self.steered.lock().unwrap_or_else(|e| e.into_inner());
        steered.get(&(p, key.to_string())).cloned()
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The added latency for peer `p`.
    pub fn fault_latency(&self) -> Duration {
        Duration::from_millis(self.faults().latency_ms)
    }

    /// An injected error status for this endpoint on peer `p`, if one fires now.
    pub fn fault_error(&self, p: usize, endpoint: &str) -> Option<u16> {
        let mut f = self.faults();
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut fired = None;
        for e in f.errors.iter_mut() {
            if (e.endpoint == endpoint || e.endpoint == "*")
                && applies(&e.peers, self, p)
                && e.count != Some(0)
                && rng.random::<f64>() < e.rate
            {
                if let Some(n) = e.count.as_mut() {
                    *n -= 1;
                }
                fired = Some(e.status);
                break;
            }
        }
        f.errors.retain(|e| e.count != Some(0));
        fired
    }

    /// A stream cut for a stream served by peer `p`, if one applies (consumes one use).
    pub fn fault_stream_cut(&self, p: usize) -> Option<(usize, CutMode)> {
        let mut f = self.faults();
        let cut = f.stream_cut.as_mut()?;
        if !applies(&cut.peers, self, p) || cut.count == Some(0) {
            return None;
        }
        if let Some(n) = cut.count.as_mut() {
            *n -= 1;
        }
        let out = (cut.after, cut.mode);
        if cut.count == Some(0) {
            f.stream_cut = None;
        }
        Some(out)
    }
}

#[derive(Serialize)]
struct PeerState {
    name: String,
    id: String,
    url: String,
    pins: usize,
    digest: String,
    paused: bool,
    down: bool,
    batch_pending: usize,
}

#[derive(Serialize)]
struct StateReport {
    peers: Vec<PeerState>,
    in_flight: usize,
    lost: u64,
    writes: usize,
    converged: bool,
}

/// Serves `/_sim/…`.
pub async fn handle(c: &Cluster, req: Request) -> Response {
    let path = req.path.trim_start_matches("/_sim/");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let now = Instant::now();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["state"]) => state(c, now),
        ("GET", ["faults"]) => {
            ok_json(serde_json::to_value(c.faults().clone()).expect("serialisable"))
        }
        ("POST", ["faults"]) => set_faults(c, &req.body),
        ("DELETE", ["faults"]) => {
            *c.faults() = Faults::default();
            ok_json(serde_json::json!({}))
        }
        ("POST", ["peers", name, action]) => peer_action(c, name, action, &req.query, now).await,
        ("POST", ["status"]) => steer_status(c, &req.body),
        ("DELETE", ["status"]) => {
            c.steered.lock().unwrap_or_else(|e| e.into_inner()).clear();
            ok_json(serde_json::json!({}))
        }
        ("POST", ["partition"]) => partition(c, &req.body),
        ("DELETE", ["partition"]) => {
            c.world().partition = None;
            c.wake.notify_one();
            ok_json(serde_json::json!({}))
        }
        ("POST", ["rebroadcast"]) => {
            let mut w = c.world();
            for p in 0..w.n() {
                w.rebroadcast_from(p, now);
            }
            drop(w);
            c.wake.notify_one();
            ok_json(serde_json::json!({}))
        }
        _ => not_found("no such control endpoint; see docs/simulator.md"),
    }
}

/// `GET /_sim/state`: each replica's pin count and digest, and the deliveries in flight.
fn state(c: &Cluster, now: Instant) -> Response {
    let mut w = c.world();
    let peers = (0..w.n())
        .map(|p| PeerState {
            name: c.peers[p].name.clone(),
            id: c.peers[p].id.clone(),
            url: c.peers[p].url.clone(),
            pins: w.replicas[p].len(),
            digest: w.digest(p),
            paused: w.paused[p],
            down: w.is_down(p, now),
            batch_pending: w.replicas[p].batch_len(),
        })
        .collect();
    let report = StateReport {
        peers,
        in_flight: w.in_flight(),
        lost: w.lost(),
        writes: w.writes(),
        converged: w.converged(),
    };
    ok_json(serde_json::to_value(report).expect("serialisable"))
}

/// `POST /_sim/faults`: replaces every fault, once each peer it names is known.
fn set_faults(c: &Cluster, body: &[u8]) -> Response {
    match serde_json::from_slice::<Faults>(body) {
        Ok(f) => {
            if let Some(e) = f.errors.iter().find_map(|e| e.check().err()) {
                return bad(&e);
            }
            for name in f
                .errors
                .iter()
                .filter_map(|e| e.peers.as_ref())
                .chain(f.stream_cut.iter().filter_map(|s| s.peers.as_ref()))
                .flatten()
            {
                if c.peer_index(name).is_none() {
                    return bad(&format!("unknown peer {name:?}"));
                }
            }
            *c.faults() = f.clone();
            ok_json(serde_json::to_value(f).expect("serialisable"))
        }
        Err(e) => bad(&format!("bad faults JSON: {e}")),
    }
}

/// `POST /_sim/peers/{name}/{pause|resume|restart}[?down=DURATION]`.
async fn peer_action(c: &Cluster, name: &str, action: &str, query: &str, now: Instant) -> Response {
    let Some(p) = c.peer_index(name) else {
        return not_found(&format!("no peer {name:?}"));
    };
    let down = match (action, super::options::Query::parse(query).get("down")) {
        ("restart", "") => Duration::ZERO,
        ("restart", d) => match ledger_ids::parse_go_duration(d) {
            Ok(d) => d,
            Err(e) => return bad(&e),
        },
        _ => Duration::ZERO,
    };
    {
        let mut w = c.world();
        match action {
            "pause" => w.paused[p] = true,
            "resume" => w.paused[p] = false,
            "restart" => {
                w.restart(p, down, now);
                c.steered.lock().unwrap_or_else(|e| e.into_inner()).retain(|(q, _), _| *q != p);
                c.restarts[p].notify_one();
            }
            _ => return not_found("unknown peer action"),
        }
    }
    c.wake.notify_one();
    let closing = action == "restart" && !down.is_zero();
    if closing {
        // Answer once the port is closed: a client told "restarted" must find it refused.
        let _ = tokio::time::timeout(Duration::from_secs(2), c.closed[p].notified()).await;
    }
    ok_json(serde_json::json!({ "peer": c.peers[p].name, "action": action }))
}

/// `POST /_sim/status` `{"peer":"peer1","cid":"Qm…","status":"pin_error","error":"…"}`: peer1's
/// tracker reports that status (and error text, default empty) for the pin from now on, in `GET
/// /pins` (local or not) and `GET /pins/{cid}`, while its replica holds the pin. `"status":null`
/// gives the pin back to the tracker's own status.
fn steer_status(c: &Cluster, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Steer {
        peer: String,
        cid: String,
        status: Option<String>,
        #[serde(default)]
        error: String,
    }
    let s: Steer = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => return bad(&format!("bad status JSON: {e}")),
    };
    let Some(p) = c.peer_index(&s.peer) else {
        return bad(&format!("unknown peer {:?}", s.peer));
    };
    let key = match super::options::parse_cid(&s.cid) {
        Ok(pc) => pc.key,
        Err(e) => return bad(&format!("bad cid: {e}")),
    };
    let mut steered = c.steered.lock().unwrap_or_else(|e| e.into_inner());
    let Some(name) = s.status else {
        steered.remove(&(p, key));
        return ok_json(
            serde_json::json!({ "peer": c.peers[p].name, "cid": s.cid, "status": null }),
        );
    };
    let Some(status) = STEERABLE.iter().copied().find(|x| *x == name) else {
        return bad(&format!("{name:?} is not a status a peer reports: {}", STEERABLE.join(", ")));
    };
    let since = chrono::Utc::now();
    steered.insert((p, key), SteeredStatus { status, error: s.error.clone(), since });
    ok_json(
        serde_json::json!({ "peer": c.peers[p].name, "cid": s.cid, "status": status, "error": s.error }),
    )
}

/// `POST /_sim/partition` `{"groups":[["peer0","peer1"],…]}`.
fn partition(c: &Cluster, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    struct Groups {
        groups: Vec<Vec<String>>,
    }
    let g: Groups = match serde_json::from_slice(body) {
        Ok(g) => g,
        Err(e) => return bad(&format!("bad partition JSON: {e}")),
    };
    let n = c.peers.len();
    // Peers not named form a group of their own.
    let mut assign = vec![g.groups.len(); n];
    for (gi, group) in g.groups.iter().enumerate() {
        for name in group {
            match c.peer_index(name) {
                Some(p) => assign[p] = gi,
                None => return bad(&format!("unknown peer {name:?}")),
            }
        }
    }
    c.world().partition = Some(assign);
    ok_json(serde_json::json!({ "groups": g.groups }))
}

fn ok_json(v: serde_json::Value) -> Response {
    let mut body = v.to_string().into_bytes();
    body.push(b'\n');
    Response::new(200, Body::Full(body)).header("Content-Type", "application/json")
}

fn bad(msg: &str) -> Response {
    let mut r = ok_json(serde_json::json!({ "code": 400, "message": msg }));
    r.status = 400;
    r
}

fn not_found(msg: &str) -> Response {
    let mut r = ok_json(serde_json::json!({ "code": 404, "message": msg }));
    r.status = 404;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_fault_names_a_real_endpoint_and_status() {
        for ok in ["pin:500", "allocations:503:0.5", "*:429:1", "monitor:500:0"] {
            assert!(Faults::parse_error_flag(ok).is_ok(), "{ok}");
        }
        let err = Faults::parse_error_flag("nosuch:500:1").unwrap_err();
        assert!(err.contains("\"nosuch\"") && err.contains("allocations"), "{err}");
        assert!(Faults::parse_error_flag("pins/x:500").is_err());
        assert!(Faults::parse_error_flag("PIN:500").is_err());
        assert!(Faults::parse_error_flag("pin:0").unwrap_err().contains("HTTP status"));
        assert!(Faults::parse_error_flag("pin:999").is_err());
    }
}
