//! One peer's REST API: the middleware chain (auth → CORS → trailing slash → router), the route table
//! of `api/rest/restapi.go`, and the handlers (docs/cluster-api.md §1, §4, §5, §6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::Cluster;
use super::auth::Verdict;
use super::control::CutMode;
use super::http::{Body, Chunk, Request, Response};
use super::options::parse_cid;
use super::options::{PinOptions, Query, from_query};
use super::pin::{Mode, Pin, PinType};
use super::state::{Entry, PendingOp, WriteError};
use ledger_ids::{go_time, go_zero_time};

const REALM: &str = "Restricted IPFS Cluster API";
const NOT_IN_PINSET: &str = "pin is not part of the pinset";

/// Serves one request on peer `p`. `None` drops the connection (a restarting peer).
pub async fn handle(c: Arc<Cluster>, p: usize, req: Request) -> Option<Response> {
    if c.is_down(p) {
        return None;
    }
    if req.path.starts_with("/_sim/") {
        return Some(super::control::handle(&c, req).await);
    }
    let latency = c.fault_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // The auth check wraps the CORS handler: its 401s carry no CORS headers.
    match authenticate(&c, &req) {
        Err(denied) => Some(denied),
        Ok(verdict) => serve(&c, p, &req, verdict).await.map(|r| with_cors(r, &req)),
    }
}

/// The auth middleware: the verdict, or the 401 that ends the request. Authentication runs before
/// routing: an unknown path gets 401, not 404.
fn authenticate(c: &Cluster, req: &Request) -> Result<Verdict, Response> {
    let exempt = req.method == "OPTIONS" || (req.method == "GET" && req.path == "/health");
    let verdict = c.users.check(req.header("authorization"));
    if !exempt {
        match verdict {
            Verdict::NoAuth => {
                return Err(error(401, "unauthorized: no auth provided")
                    .header("WWW-Authenticate", format!("Bearer realm=\"{REALM}\""))
                    .header("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")));
            }
            Verdict::BadBasic => {
                return Err(error(401, "unauthorized: access denied")
                    .header("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")));
            }
            Verdict::BadToken => {
                return Err(error(401, "unauthorized: invalid token").header(
                    "WWW-Authenticate",
                    format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
                ));
            }
            Verdict::Open | Verdict::User(_) => {}
        }
    }
    Ok(verdict)
}

/// The router and the handler; `None` drops the connection unanswered.
async fn serve(c: &Arc<Cluster>, p: usize, req: &Request, verdict: Verdict) -> Option<Response> {
    if req.method == "OPTIONS" && req.header("origin").is_some() {
        return Some(preflight(req));
    }
    let decoded = match mux_path(req) {
        Ok(decoded) => decoded,
        Err(redirect) => return Some(redirect),
    };
    let segs: Vec<&str> = decoded[1..].split('/').collect();
    let route = match route(&req.method, &segs) {
        Ok(r) => r,
        Err(405) => return Some(Response::new(405, Body::Empty)),
        Err(_) => return Some(error(404, "not found")),
    };
    if let Some(status) = c.fault_error(p, route.endpoint()) {
        return Some(error(status, "simulated fault"));
    }
    if let Route::Add = route {
        return super::add::handle(c, p, req, &Query::parse(&req.query)).await;
    }
    Some(dispatch(c, p, req, route, verdict))
}

/// A CORS preflight (`OPTIONS` with an `Origin`): 204 allowing what was asked.
fn preflight(req: &Request) -> Response {
    let method = req.header("access-control-request-method").unwrap_or("GET").to_string();
    let mut r = Response::new(204, Body::Empty)
        .header("Access-Control-Allow-Methods", method)
        .header("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    if let Some(h) = req.header("access-control-request-headers") {
        r = r.header("Access-Control-Allow-Headers", h.to_string());
    }
    r
}

/// The percent-decoded path, or the redirect the router answers instead: 307 without a trailing
/// slash, 301 to the cleaned path (no `.`, `..` or doubled `/`).
fn mux_path(req: &Request) -> Result<String, Response> {
    let query = if req.query.is_empty() { String::new() } else { format!("?{}", req.query) };
    if req.path.len() > 1 && req.path.ends_with('/') {
        let to = format!("{}{query}", req.path.trim_end_matches('/'));
        let to = if to.is_empty() || to.starts_with('?') { format!("/{to}") } else { to };
        return Err(redirect(req, 307, to));
    }
    let decoded = percent_encoding::percent_decode_str(&req.path).decode_utf8_lossy().into_owned();
    let cleaned = clean_path(&decoded);
    if cleaned != decoded {
        return Err(Response::new(301, Body::Empty).header("Location", format!("{cleaned}{query}")));
    }
    Ok(decoded)
}

/// Runs the handler of `route`.
fn dispatch(c: &Arc<Cluster>, p: usize, req: &Request, route: Route, verdict: Verdict) -> Response {
    let q = Query::parse(&req.query);
    match route {
        Route::Health => Response::new(204, Body::Empty).header("Content-Type", "application/json"),
        Route::Bandwidth => json(200, &serde_json::json!({})),
        Route::Alerts => json(200, &serde_json::json!([])),
        Route::Graph => graph(c),
        Route::Id => json(200, &id_json(c, p, p)),
        Route::Version => json(200, &serde_json::json!({ "version": c.version })),
        Route::Peers => peers_stream(c, p),
        Route::PeerAdd => peer_add(req),
        Route::PeerRm(id) => match ledger_ids::parse_peer_id(&id) {
            None => error(400, &format!("error decoding Peer ID: failed to parse peer ID {id:?}")),
            Some(_) => error(500, "crdt consensus component cannot remove peers"),
        },
        Route::Allocations => allocations(c, p, &q),
        Route::Allocation(cid) => match parse_cid(&cid) {
            Err(e) => error(400, &format!("error decoding Cid: {e}")),
            Ok(pc) => match c.world().replicas[p].get(&pc.key) {
                Some(e) => stored(200, e.value()),
                None => error(404, NOT_IN_PINSET),
            },
        },
        Route::Pins => pins_status(c, p, &q),
        Route::PinStatus(cid) | Route::PinRecover(cid) => match parse_cid(&cid) {
            Err(e) => error(400, &format!("error decoding Cid: {e}")),
            Ok(pc) => {
                let body = if q.get("local") == "true" {
                    local_info(c, p, &pc.key, &pc.canonical)
                } else {
                    global_info(c, p, &pc.key, &pc.canonical)
                };
                Response::new(200, Body::Full(body)).header("Content-Type", "application/json")
            }
        },
        Route::RecoverAll => recover_all(c, p, q.get("local") == "true"),
        Route::Pin(cid) => pin(c, p, &cid, false, &q),
        Route::PinPath(kt, rest) => match path_cid(&kt, &rest) {
            Ok(cid) => pin(c, p, &cid, true, &q),
            Err(r) => r,
        },
        Route::Unpin(cid) => unpin(c, p, &cid, &q),
        Route::UnpinPath(kt, rest) => match path_cid(&kt, &rest) {
            Ok(cid) => unpin(c, p, &cid, &q),
            Err(r) => r,
        },
        Route::Token => token(c, verdict),
        // Served by `serve`, which awaits the upload.
        Route::Add => error(500, "unreachable: /add is served apart"),
        Route::Metrics => json(200, &serde_json::json!(["freespace", "ping"])),
        Route::Metric(name) => metric(c, &name),
        Route::Gc => gc(c),
    }
}

enum Route {
    Health,
    Bandwidth,
    Alerts,
    Graph,
    Id,
    Version,
    Peers,
    PeerAdd,
    PeerRm(String),
    Allocations,
    Allocation(String),
    Pins,
    RecoverAll,
    PinRecover(String),
    PinStatus(String),
    Pin(String),
    PinPath(String, String),
    Unpin(String),
    UnpinPath(String, String),
    Token,
    Add,
    Metrics,
    Metric(String),
    Gc,
}

impl Route {
    /// The endpoint name that faults refer to.
    fn endpoint(&self) -> &'static str {
        match self {
            Route::Health | Route::Bandwidth | Route::Alerts | Route::Graph => "health",
            Route::Id => "id",
            Route::Version => "version",
            Route::Peers | Route::PeerAdd | Route::PeerRm(_) => "peers",
            Route::Allocations | Route::Allocation(_) => "allocations",
            Route::Pins | Route::PinStatus(_) => "pins",
            Route::RecoverAll | Route::PinRecover(_) => "recover",
            Route::Pin(_) | Route::PinPath(..) | Route::Add => "pin",
            Route::Unpin(_) | Route::UnpinPath(..) => "unpin",
            Route::Token => "token",
            Route::Metrics | Route::Metric(_) | Route::Gc => "monitor",
        }
    }
}

/// The route table of `api/rest/restapi.go`, in registration order, matched as gorilla/mux v1.8.1
/// does: `Err(404)` when nothing matches, `Err(405)` only when a route matched the path but not the
/// method and no route registered after it has the request's method (gorilla's method matcher runs
/// first and clears an earlier mismatch whenever it matches, whatever the path), so `PUT
/// /pins/{cid}` is 405 while `POST /version` and `GET /pins/ipfs/{cid}` are 404.
fn route(method: &str, segs: &[&str]) -> Result<Route, u16> {
    let s = |i: usize| segs[i].to_string();
    let n = segs.len();
    let key_path = n >= 3 && segs[0] == "pins" && matches!(segs[1], "ipfs" | "ipns" | "ipld");
    let rest = || segs[2..].join("/");
    type Make<'a> = Box<dyn Fn() -> Route + 'a>;
    let table: Vec<(&str, bool, Make)> = vec![
        ("GET", segs == ["id"], Box::new(|| Route::Id)),
        ("GET", segs == ["version"], Box::new(|| Route::Version)),
        ("GET", segs == ["peers"], Box::new(|| Route::Peers)),
        ("POST", segs == ["peers"], Box::new(|| Route::PeerAdd)),
        ("DELETE", n == 2 && segs[0] == "peers", Box::new(|| Route::PeerRm(s(1)))),
        ("POST", segs == ["add"], Box::new(|| Route::Add)),
        ("GET", segs == ["allocations"], Box::new(|| Route::Allocations)),
        ("GET", n == 2 && segs[0] == "allocations", Box::new(|| Route::Allocation(s(1)))),
        ("GET", segs == ["pins"], Box::new(|| Route::Pins)),
        (
            "POST",
            n == 3 && segs[0] == "pins" && segs[2] == "recover",
            Box::new(|| Route::PinRecover(s(1))),
        ),
        ("POST", segs == ["pins", "recover"], Box::new(|| Route::RecoverAll)),
        ("GET", n == 2 && segs[0] == "pins", Box::new(|| Route::PinStatus(s(1)))),
        ("POST", n == 2 && segs[0] == "pins", Box::new(|| Route::Pin(s(1)))),
        ("POST", key_path, Box::new(|| Route::PinPath(s(1), rest()))),
        ("DELETE", n == 2 && segs[0] == "pins", Box::new(|| Route::Unpin(s(1)))),
        ("DELETE", key_path, Box::new(|| Route::UnpinPath(s(1), rest()))),
        ("POST", segs == ["ipfs", "gc"], Box::new(|| Route::Gc)),
        ("GET", segs == ["health", "graph"], Box::new(|| Route::Graph)),
        ("GET", segs == ["health", "alerts"], Box::new(|| Route::Alerts)),
        ("GET", segs == ["health", "bandwidth"], Box::new(|| Route::Bandwidth)),
        (
            "GET",
            n == 3 && segs[0] == "monitor" && segs[1] == "metrics",
            Box::new(|| Route::Metric(s(2))),
        ),
        ("GET", segs == ["monitor", "metrics"], Box::new(|| Route::Metrics)),
        ("POST", segs == ["token"], Box::new(|| Route::Token)),
        ("GET", segs == ["health"], Box::new(|| Route::Health)),
    ];
    let mut mismatch = false;
    for (m, path_matches, make) in &table {
        if *m == method {
            if *path_matches {
                return Ok(make());
            }
            mismatch = false;
        } else if *path_matches {
            mismatch = true;
        }
    }
    Err(if mismatch { 405 } else { 404 })
}

/// gorilla/mux `cleanPath`: removes `.`, `..` and empty elements, keeps a trailing slash.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut cleaned = format!("/{}", out.join("/"));
    if p.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// The CID of `/pins/{ipfs|ipns|ipld}/{path}`: only `/ipfs/<cid>` resolves without IPFS.
fn path_cid(key_type: &str, rest: &str) -> Result<String, Response> {
    let mut parts = rest.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    let sub = parts.next().unwrap_or_default();
    if key_type != "ipfs" && key_type != "ipld" {
        return Err(error(500, "error resolving path: IPNS resolution is not simulated"));
    }
    if let Err(e) = parse_cid(first) {
        return Err(error(
            400,
            &format!("error parsing path: invalid path \"/{key_type}/{rest}\": {e}"),
        ));
    }
    if !sub.is_empty() {
        return Err(error(500, "error resolving path: sub-path resolution is not simulated"));
    }
    Ok(first.to_string())
}

/// rs/cors on an actual (not preflight) request: `Vary: Origin` always, the rest only when the
/// request has an `Origin`.
fn with_cors(mut r: Response, req: &Request) -> Response {
    let preflight = req.method == "OPTIONS" && req.header("origin").is_some();
    if !preflight {
        r.headers.push(("Vary".into(), "Origin".into()));
    }
    if req.header("origin").is_some() {
        r.headers.push(("Access-Control-Allow-Origin".into(), "*".into()));
        r.headers.push((
            "Access-Control-Expose-Headers".into(),
            "Content-Type, X-Stream-Output, X-Chunked-Output, X-Content-Length".into(),
        ));
    }
    r
}

/// Go's `http.Redirect`: for GET and HEAD a small HTML body naming the target.
fn redirect(req: &Request, status: u16, to: String) -> Response {
    let r = Response::new(status, Body::Empty);
    if req.method != "GET" && req.method != "HEAD" {
        return r.header("Location", to);
    }
    let escaped = to
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;");
    let body = format!("<a href=\"{escaped}\">Temporary Redirect</a>.\n\n");
    // Go writes header fields sorted by name.
    Response { body: Body::Full(body.into_bytes()), ..r }
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Location", to)
}

/// A JSON response as Go's `json.Encoder` writes it (a trailing newline).
fn json<T: Serialize + ?Sized>(status: u16, v: &T) -> Response {
    let mut body = Vec::with_capacity(256);
    super::pin::to_go_json(&mut body, v);
    body.push(b'\n');
    Response::new(status, Body::Full(body)).header("Content-Type", "application/json")
}

fn error(code: u16, message: &str) -> Response {
    json(code, &serde_json::json!({ "code": code, "message": message }))
}

fn stored(status: u16, pin: &Pin) -> Response {
    let mut body = Vec::with_capacity(512);
    pin.write_stored(&mut body);
    body.push(b'\n');
    Response::new(status, Body::Full(body)).header("Content-Type", "application/json")
}

// ------------------------------------------------------------------------------------------------
// Pin, unpin, pin update

/// `POST /pins/{cid}` (`path_route` false: max_depth forced to -1) and `POST /pins/ipfs/{cid}`.
fn pin(c: &Cluster, p: usize, cid: &str, path_route: bool, q: &Query) -> Response {
    let pc = match parse_cid(cid) {
        Ok(pc) => pc,
        Err(e) => return error(400, &format!("error decoding Cid: {e}")),
    };
    let now = Utc::now();
    let (opts, parse_err) = from_query(q, now);
    // The real handler writes the 400 and goes on with what it parsed (docs/cluster-api.md §3, a
    // quirk).
    let prefix = match parse_err {
        None => None,
        Some(e) if c.quirk_partial_apply => Some(e),
        Some(e) => return error(400, &e),
    };
    let result = match &opts.pin_update {
        Some(from) if *from != pc.canonical => {
            pin_update(c, p, &pc.key, &pc.canonical, from, &opts)
        }
        _ => new_pin(c, p, &pc.key, &pc.canonical, path_route, opts),
    };
    let (status, mut body) = match result {
        Ok(pin) => (200, pin.memory_json()),
        Err((code, msg)) => (
            code,
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": msg })).unwrap(),
        ),
    };
    body.push(b'\n');
    if let Some(e) = prefix {
        let mut first =
            serde_json::to_vec(&serde_json::json!({ "code": 400, "message": e })).unwrap();
        first.push(b'\n');
        first.extend_from_slice(&body);
        return Response::new(400, Body::Full(first)).header("Content-Type", "application/json");
    }
    Response::new(status, Body::Full(body)).header("Content-Type", "application/json")
}

type PinResult = Result<Pin, (u16, String)>;

fn new_pin(
    c: &Cluster,
    p: usize,
    key: &str,
    cid: &str,
    path_route: bool,
    o: PinOptions,
) -> PinResult {
    let now = Utc::now();
    let mode = o.mode();
    let max_depth = if path_route && mode == Mode::Direct { 0 } else { -1 };
    let mut pin = Pin {
        cid: cid.to_string(),
        typ: PinType::Data,
        allocations: Vec::new(),
        max_depth,
        reference: None,
        timestamp: now,
        replication_min: o.replication_min,
        replication_max: o.replication_max,
        name: o.name,
        mode_query: mode,
        shard_size: o.shard_size,
        user_allocations: o.user_allocations,
        expire_at: o.expire_at,
        metadata: o.metadata.into(),
        pin_update: o.pin_update,
        origins: o.origins.clone().unwrap_or_default(),
        origins_given: o.origins.is_some(),
        metadata_given: o.metadata_parsed,
    };
    if pin.replication_min == 0 {
        pin.replication_min = c.rf_default.0;
    }
    if pin.replication_max == 0 {
        pin.replication_max = c.rf_default.1;
    }
    check_replication(pin.replication_min, pin.replication_max)
        .map_err(|e| (500, e.to_string()))?;
    if pin.expire_at.is_some_and(|t| t < now) {
        return Err((500, "pin.ExpireAt set before current time".into()));
    }
    let mut w = c.world();
    let existing = w.replicas[p].get(key).map(|e| e.value().clone());
    if let Some(ex) = &existing {
        if ex.typ != pin.typ {
            return Err((
                500,
                format!(
                    "cannot repin CID with different tracking method, clear state with pin rm to proceed. New: {}. Was: {}",
                    pin.typ.as_str(),
                    ex.typ.as_str()
                ),
            ));
        }
        // setupPin compares the requested mode, not max_depth: `/pins/{cid}?mode=direct` is refused
        // too, although that route would store the pin as recursive.
        if ex.stored_mode() == Mode::Recursive && pin.mode_query == Mode::Direct {
            return Err((
                500,
                "cannot repin a CID which is already pinned in recursive mode (new pin is pinned as direct). Unpin it first."
                    .into(),
            ));
        }
    }
    let now_i = Instant::now();
    let live: Vec<String> = (0..c.peers.len())
        .filter(|&q| !w.is_down(q, now_i))
        .map(|q| c.peers[q].id.clone())
        .collect();
    pin.allocations = allocate(&pin, existing.as_deref(), &live)?;
    let stored = Arc::new(pin.to_stored());
    write(c, &mut w, p, PendingOp::Put(key.into(), stored))?;
    Ok(pin)
}

/// `BlockAllocate` (`rpc_api.go`), which the adder asks at its first block: the options set up
/// as for a pin (defaults, checks), then every live peer for replication -1, else the allocation
/// of a new pin. Its answer names the peers in every `/add` line.
pub(crate) fn block_allocate(c: &Cluster, o: &PinOptions) -> Result<Vec<String>, (u16, String)> {
    let min = if o.replication_min == 0 { c.rf_default.0 } else { o.replication_min };
    let max = if o.replication_max == 0 { c.rf_default.1 } else { o.replication_max };
    check_replication(min, max).map_err(|e| (500, e.to_string()))?;
    if o.expire_at.is_some_and(|t| t < Utc::now()) {
        return Err((500, "pin.ExpireAt set before current time".into()));
    }
    let w = c.world();
    let now_i = Instant::now();
    let live: Vec<String> = (0..c.peers.len())
        .filter(|&q| !w.is_down(q, now_i))
        .map(|q| c.peers[q].id.clone())
        .collect();
    if min == -1 {
        return Ok(live);
    }
    let pin = Pin {
        cid: String::new(),
        typ: PinType::Data,
        allocations: Vec::new(),
        max_depth: -1,
        reference: None,
        timestamp: Utc::now(),
        replication_min: min,
        replication_max: max,
        name: String::new(),
        mode_query: Mode::Recursive,
        shard_size: 0,
        user_allocations: o.user_allocations.clone(),
        expire_at: None,
        metadata: Default::default(),
        pin_update: None,
        origins: Vec::new(),
        origins_given: false,
        metadata_given: false,
    };
    allocate(&pin, None, &live)
}

/// The adder's final pin of its root (`adder.Pin`): the normal pin path, recursive, with the
/// query's options and the peers that got the blocks first.
pub(crate) fn add_pin(
    c: &Cluster,
    p: usize,
    cid: &str,
    o: PinOptions,
) -> Result<(), (u16, String)> {
    let pc = parse_cid(cid).map_err(|e| (500, e))?;
    new_pin(c, p, &pc.key, &pc.canonical, false, o).map(|_| ())
}

/// `isReplicationFactorValid`, with the cluster's messages, in its order.
fn check_replication(min: i32, max: i32) -> Result<(), &'static str> {
    if min == 0 || max == 0 {
        return Err("cluster.replication_factor_min and max must be set");
    }
    if min > max {
        return Err("cluster.replication_factor_min is larger than max");
    }
    if min < -1 {
        return Err("cluster.replication_factor_min is wrong");
    }
    if max < -1 {
        return Err("cluster.replication_factor_max is wrong");
    }
    if (min == -1) != (max == -1) {
        return Err("cluster.replication_factor_min and max must be -1 when one of them is");
    }
    Ok(())
}

/// `allocate` (docs/cluster-api.md §6.1 step 6). Valid `user-allocations` come first, then the
/// other live peers; each group is ordered by a hash of (CID, peer), standing in for the
/// `freespace` metric by which a real peer's balanced allocator orders both groups (so the order
/// given in `user-allocations` is not kept). `live`: the IDs of the peers that are up (those with
/// valid metrics).
fn allocate(
    pin: &Pin,
    existing: Option<&Pin>,
    live: &[String],
) -> Result<Vec<String>, (u16, String)> {
    if pin.replication_min == -1 && pin.replication_max == -1 {
        return Ok(Vec::new());
    }
    let (rmin, rmax) = (pin.replication_min as usize, pin.replication_max as usize);
    let is_valid = |id: &str| live.iter().any(|l| l == id);
    let current: Vec<String> = existing.map(|e| e.allocations.clone()).unwrap_or_default();
    let mut valid_current: Vec<String> = current.iter().filter(|a| is_valid(a)).cloned().collect();
    if valid_current.len() > rmax {
        valid_current.truncate(rmax);
        return Ok(valid_current);
    }
    if !current.is_empty() && valid_current.len() >= rmin {
        return Ok(current);
    }
    let by_freespace = |ids: Vec<String>| {
        let mut keyed: Vec<(u64, String)> = ids
            .into_iter()
            .map(|id| {
                let h =
                    <sha2::Sha256 as sha2::Digest>::digest(format!("{}{id}", pin.cid).as_bytes());
                (u64::from_le_bytes(h[..8].try_into().expect("8 bytes")), id)
            })
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, id)| id)
    };
    let mut priority: Vec<String> = Vec::new();
    for ua in pin.user_allocations.iter().flatten() {
        if is_valid(ua) && !valid_current.contains(ua) && !priority.contains(ua) {
            priority.push(ua.clone());
        }
    }
    let rest: Vec<String> = live
        .iter()
        .filter(|id| !valid_current.contains(id) && !priority.contains(id))
        .cloned()
        .collect();
    let mut candidates: Vec<String> = by_freespace(priority).collect();
    candidates.extend(by_freespace(rest));
    let needed = rmin.saturating_sub(valid_current.len());
    let wanted = rmax.saturating_sub(valid_current.len());
    if candidates.len() < needed {
        return Err((
            500,
            format!(
                "not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: {wanted}. Available candidates: {}. See logs for more info.",
                candidates.len()
            ),
        ));
    }
    valid_current.extend(candidates.into_iter().take(wanted));
    Ok(valid_current)
}

fn write(
    c: &Cluster,
    w: &mut super::state::World,
    p: usize,
    op: PendingOp,
) -> Result<(), (u16, String)> {
    match w.write(p, op, Instant::now()) {
        Ok(()) => {
            c.wake.notify_one();
            Ok(())
        }
        Err(WriteError::QueueFull) => Err((
            500,
            "error batching item: batching max_queue_size reached. Too many operations are waiting to be batched. Try increasing the max_queue_size or adjusting the batching options".into(),
        )),
    }
}

/// docs/cluster-api.md §6.3: copy the whole stored from-pin under the new CID; only a non-empty
/// name and a future expiry of the request are used.
fn pin_update(
    c: &Cluster,
    p: usize,
    key: &str,
    cid: &str,
    from: &str,
    o: &PinOptions,
) -> PinResult {
    let from_key = parse_cid(from).map_err(|e| (400, e))?.key;
    let mut w = c.world();
    let Some(src) = w.replicas[p].get(&from_key).map(|e| e.value().clone()) else {
        return Err((404, NOT_IN_PINSET.into()));
    };
    if src.typ != PinType::Data {
        return Err((500, "this pin type cannot be updated".into()));
    }
    let now = Utc::now();
    let mut pin = (*src).clone();
    pin.cid = cid.to_string();
    pin.pin_update = Some(from.to_string());
    pin.timestamp = now;
    if !o.name.is_empty() {
        pin.name = o.name.clone();
    }
    if let Some(t) = o.expire_at.filter(|t| *t > now) {
        pin.expire_at = Some(t);
    }
    pin.user_allocations = None;
    let stored = Arc::new(pin.to_stored());
    write(c, &mut w, p, PendingOp::Put(key.into(), stored))?;
    Ok(pin)
}

/// `DELETE /pins/{cid}`: answers the stored pin as it was before removal.
fn unpin(c: &Cluster, p: usize, cid: &str, q: &Query) -> Response {
    let pc = match parse_cid(cid) {
        Ok(pc) => pc,
        Err(e) => return error(400, &format!("error decoding Cid: {e}")),
    };
    let (_, parse_err) = from_query(q, Utc::now());
    let prefix = match parse_err {
        None => None,
        Some(e) if c.quirk_partial_apply => Some(e),
        Some(e) => return error(400, &e),
    };
    let mut w = c.world();
    let resp = match w.replicas[p].get(&pc.key).map(|e| e.value().clone()) {
        None => error(404, NOT_IN_PINSET),
        Some(ex) if matches!(ex.typ, PinType::Shard | PinType::ClusterDag) => {
            error(500, "cannot unpin a shard directly. Unpin content root CID instead.")
        }
        Some(ex) => match write(c, &mut w, p, PendingOp::Del(pc.key.as_str().into())) {
            Ok(()) => stored(200, &ex),
            Err((code, msg)) => error(code, &msg),
        },
    };
    match (prefix, resp.body) {
        (Some(e), Body::Full(b)) => {
            let mut first =
                serde_json::to_vec(&serde_json::json!({ "code": 400, "message": e })).unwrap();
            first.push(b'\n');
            first.extend_from_slice(&b);
            Response::new(400, Body::Full(first)).header("Content-Type", "application/json")
        }
        (_, body) => Response { body, ..resp },
    }
}

// ------------------------------------------------------------------------------------------------
// Streams

/// The NDJSON stream of `common.StreamResponse` (docs/cluster-api.md §5) over pre-rendered items,
/// with the cut fault: 204 when empty, 500 when cut before the first item, else 200 and an
/// `X-Stream-Error` trailer.
fn ndjson_stream<I>(c: &Cluster, p: usize, items: I) -> Response
where
    I: Iterator<Item = Vec<u8>> + Send + 'static,
{
    let mut items = items.fuse().peekable();
    let cut = c.fault_stream_cut(p);
    if items.peek().is_none() && cut.is_none() {
        // The headers are set before the first item is looked for.
        return Response::new(204, Body::Empty)
            .header("Content-Type", "application/json")
            .header("Trailer", "X-Stream-Error");
    }
    if cut.is_some_and(|(after, _)| after == 0) {
        return error(500, "simulated stream failure");
    }
    let chunks = NdjsonChunks { items, sent: 0, cut, finished: false };
    Response::new(200, Body::Stream(Box::pin(futures::stream::iter(chunks))))
        .header("Content-Type", "application/json")
        .header("Trailer", "X-Stream-Error")
}

/// Groups items into ~60 KiB chunks and ends with the trailer (or the cut).
struct NdjsonChunks<I> {
    items: I,
    sent: usize,
    cut: Option<(usize, CutMode)>,
    finished: bool,
}

impl<I: Iterator<Item = Vec<u8>>> Iterator for NdjsonChunks<I> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.finished {
            return None;
        }
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            if let Some((after, mode)) = self.cut
                && self.sent >= after
            {
                if !buf.is_empty() {
                    return Some(Chunk::Data(buf));
                }
                self.finished = true;
                return Some(match mode {
                    CutMode::Trailer => Chunk::End(vec![(
                        "X-Stream-Error".into(),
                        "simulated stream failure: connection to peer lost".into(),
                    )]),
                    CutMode::Drop => Chunk::Abort,
                });
            }
            if buf.len() >= 60 * 1024 {
                return Some(Chunk::Data(buf));
            }
            match self.items.next() {
                Some(item) => {
                    buf.extend_from_slice(&item);
                    buf.push(b'\n');
                    self.sent += 1;
                }
                None if !buf.is_empty() => return Some(Chunk::Data(buf)),
                None => {
                    self.finished = true;
                    return Some(Chunk::End(vec![("X-Stream-Error".into(), String::new())]));
                }
            }
        }
    }
}

/// `GET /allocations`: this peer's replica in key order, stored form.
fn allocations(c: &Cluster, p: usize, q: &Query) -> Response {
    let filter = q.get("filter");
    let mut types: Vec<PinType> = Vec::new();
    if !filter.is_empty() {
        for tok in filter.split(',') {
            match tok.trim() {
                "all" => types.extend([
                    PinType::Data,
                    PinType::Meta,
                    PinType::ClusterDag,
                    PinType::Shard,
                ]),
                t => types.extend(PinType::parse(t)),
            }
        }
        if types.is_empty() {
            return error(400, "invalid filter value");
        }
    }
    // A point-in-time view (the clone is O(1)), walked a page of keys at a time.
    let view = c.world().replicas[p].view();
    let items = ReplicaLines { view, after: None, batch: std::collections::VecDeque::new(), types };
    ndjson_stream(c, p, items)
}

/// The stored-form lines of a replica view in key order, rendered in batches of 256 keys.
struct ReplicaLines {
    view: crate::state::View,
    after: Option<Arc<str>>,
    batch: std::collections::VecDeque<Vec<u8>>,
    types: Vec<PinType>,
}

impl Iterator for ReplicaLines {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        while self.batch.is_empty() {
            let page = self.view.page(self.after.as_ref(), 256);
            let (last, _) = page.last()?;
            self.after = Some(last.clone());
            for (_, e) in &page {
                if self.types.is_empty() || self.types.contains(&e.value().typ) {
                    self.batch.push_back(e.stored_json().to_vec());
                }
            }
        }
        self.batch.pop_front()
    }
}

/// `GET /peers`: one ID per peer, unreachable ones (with their error) after the healthy ones.
fn peers_stream(c: &Cluster, p: usize) -> Response {
    let now = Instant::now();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    {
        let w = c.world();
        for q in 0..c.peers.len() {
            if q == p || w.link_open(p, q, now) {
                ok.push(serde_json::to_vec(&id_json(c, p, q)).unwrap());
            } else {
                // Built in place of the answer it lacks: a zero ID with its ID and error, nil
                // lists rendered null (docs/cluster-api.md §4, "GET /peers").
                let e = serde_json::json!({
                    "id": c.peers[q].id, "addresses": null, "cluster_peers": null, "cluster_peers_addresses": null,
                    "version": "", "commit": "", "rpc_protocol_version": "", "error": "context deadline exceeded",
                    "ipfs": {"addresses": null, "error": ""}, "peername": "",
                });
                failed.push(serde_json::to_vec(&e).unwrap());
            }
        }
    }
    ok.extend(failed);
    ndjson_stream(c, p, ok.into_iter())
}

fn id_json(c: &Cluster, _from: usize, q: usize) -> serde_json::Value {
    let me = &c.peers[q];
    let addrs = |i: usize| c.peers[i].cluster_addresses();
    serde_json::json!({
        "id": me.id,
        "addresses": addrs(q),
        "cluster_peers": sorted_peer_ids(c),
        "cluster_peers_addresses": (0..c.peers.len()).filter(|&i| i != q).flat_map(addrs).collect::<Vec<_>>(),
        "version": c.version,
        "commit": "",
        "rpc_protocol_version": "/ipfscluster/1.0/rpc",
        "error": "",
        "ipfs": {
            "id": me.ipfs_id,
            "addresses": me.ipfs_addresses(),
            "error": "",
        },
        "peername": me.name,
    })
}

/// The peerset as the CRDT consensus gives it: sorted by the IDs' bytes (`peer.IDSlice`).
fn sorted_peer_ids(c: &Cluster) -> Vec<String> {
    let mut ids: Vec<(Vec<u8>, String)> = c
        .peers
        .iter()
        .map(|x| (bs58::decode(&x.id).into_vec().unwrap_or_default(), x.id.clone()))
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

fn peer_add(req: &Request) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return error(400, "error decoding request body"),
    };
    match v.get("peer_id").and_then(|x| x.as_str()).and_then(ledger_ids::parse_peer_id) {
        None => error(400, "error decoding peer_id"),
        Some(_) => error(500, "failed to dial: adding peers is not simulated"),
    }
}

fn token(c: &Cluster, verdict: Verdict) -> Response {
    if !c.users.enabled() {
        return error(401, "unauthorized");
    }
    match verdict {
        Verdict::User(u) => match c.users.issue_token(&u) {
            Some(t) => json(200, &serde_json::json!({ "token": t })),
            None => error(401, "unauthorized"),
        },
        _ => error(401, "unauthorized"),
    }
}

fn graph(c: &Cluster) -> Response {
    let ids: Vec<String> = c.peers.iter().map(|p| p.id.clone()).collect();
    let names: BTreeMap<String, String> =
        c.peers.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
    let links: BTreeMap<String, Vec<String>> = ids
        .iter()
        .map(|i| (i.clone(), ids.iter().filter(|j| *j != i).cloned().collect()))
        .collect();
    let trust: BTreeMap<String, bool> = ids.iter().map(|i| (i.clone(), true)).collect();
    let to_ipfs: BTreeMap<String, String> =
        c.peers.iter().map(|p| (p.id.clone(), p.ipfs_id.clone())).collect();
    json(
        200,
        &serde_json::json!({
            "cluster_id": ids[0], "id_to_peername": names, "ipfs_links": {}, "cluster_links": links,
            "cluster_trust_links": trust, "cluster_to_ipfs": to_ipfs,
        }),
    )
}

fn metric(c: &Cluster, name: &str) -> Response {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let list: Vec<serde_json::Value> = c
        .peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": name, "peer": p.id, "value": if name == "freespace" { "1000000000000" } else { "" },
                "expire": now + 30_000_000_000i64, "valid": true, "weight": 0, "partitionable": false,
                "received_at": now,
            })
        })
        .collect();
    json(200, &list)
}

fn gc(c: &Cluster) -> Response {
    let map: BTreeMap<String, serde_json::Value> = c
        .peers
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                serde_json::json!({ "peer": p.id, "peername": p.name, "keys": [], "error": "" }),
            )
        })
        .collect();
    json(200, &serde_json::json!({ "peer_map": map }))
}

// ------------------------------------------------------------------------------------------------
// Status (GET /pins)

/// One peer's tracker view of a pin (`PinInfoShort` plus the pin fields it reports).
#[derive(Clone)]
struct PeerView {
    peer: usize,
    status: &'static str,
    error: String,
    timestamp: chrono::DateTime<Utc>,
    pin: Option<Arc<Pin>>,
}

#[derive(Serialize)]
struct PinInfoShort<'a> {
    peername: &'a str,
    ipfs_peer_id: &'a str,
    status: &'static str,
    timestamp: String,
    error: &'a str,
    attempt_count: u32,
    priority_pin: bool,
}

#[derive(Serialize)]
struct GlobalPinInfo<'a> {
    cid: &'a str,
    name: &'a str,
    allocations: Option<&'a [String]>,
    origins: Option<&'a [String]>,
    created: String,
    metadata: Option<&'a super::pin::Metadata>,
    peer_map: BTreeMap<&'a str, PinInfoShort<'a>>,
}

/// A tracker status from how long ago the pin reached the peer: queued, then pinning, then pinned.
/// An operation's time is when it was queued; once pinned, the time is the pin's own (stored,
/// whole seconds), as the stateless tracker reports it.
fn tracker_status(e: &Entry, now: Instant) -> (&'static str, chrono::DateTime<Utc>) {
    match e.applied_at {
        None => ("pinned", e.value().timestamp),
        Some((at, wall)) => {
            let age = now.saturating_duration_since(at);
            let status = if age < Duration::from_millis(100) {
                "pin_queued"
            } else if age < Duration::from_millis(300) {
                "pinning"
            } else {
                return ("pinned", e.value().timestamp);
            };
            (status, wall)
        }
    }
}

fn allocated_to(pin: &Pin, id: &str) -> bool {
    pin.allocations.is_empty() || pin.allocations.iter().any(|a| a == id)
}

/// What peer `q` reports for `key`, asked by `p` (whose replica decides `remote`).
fn peer_view(
    c: &Cluster,
    w: &super::state::World,
    p: usize,
    q: usize,
    key: &str,
    now: Instant,
) -> PeerView {
    let wall = Utc::now();
    // A steered status is the tracker's: on the peer itself it comes before `remote`, as an
    // operation does in the stateless tracker's listing.
    let steered = w.replicas[q].get(key).and_then(|e| {
        c.steered_status(q, key).map(|s| PeerView {
            peer: q,
            status: s.status,
            error: s.error,
            timestamp: s.since,
            pin: Some(e.value().clone()),
        })
    });
    if q == p
        && let Some(v) = steered
    {
        return v;
    }
    let local = w.replicas[p].get(key);
    if let Some(e) = local
        && !allocated_to(e.value(), &c.peers[q].id)
    {
        return PeerView {
            peer: q,
            status: "remote",
            error: String::new(),
            timestamp: e.value().timestamp,
            pin: Some(e.value().clone()),
        };
    }
    if q != p && !w.link_open(p, q, now) {
        return PeerView {
            peer: q,
            status: "cluster_error",
            error: "context deadline exceeded".into(),
            timestamp: wall,
            pin: None,
        };
    }
    if let Some(v) = steered {
        return v;
    }
    match w.replicas[q].get(key) {
        Some(e) => {
            let (status, ts) = tracker_status(&e, now);
            PeerView {
                peer: q,
                status,
                error: String::new(),
                timestamp: ts,
                pin: Some(e.value().clone()),
            }
        }
        None => PeerView {
            peer: q,
            status: "unpinned",
            error: String::new(),
            timestamp: wall,
            pin: None,
        },
    }
}

/// Merges peer views as `GlobalPinInfo.Add` does: the top-level fields come from the last non-error
/// entry merged. `created` overrides the merged creation time.
/// `local`: a one-peer answer, whose `allocations` is `null` (not `[]`) when the peer does not have
/// the pin.
fn render_global(
    c: &Cluster,
    cid: &str,
    views: &[PeerView],
    created: Option<chrono::DateTime<Utc>>,
    local: bool,
) -> Vec<u8> {
    let mut top: Option<&PeerView> = None;
    for v in views {
        if v.status != "cluster_error" {
            top = Some(v);
        }
    }
    let pin = top.and_then(|v| v.pin.as_deref());
    let empty: &[String] = &[];
    let info = GlobalPinInfo {
        cid,
        name: pin.map(|p| p.name.as_str()).unwrap_or(""),
        allocations: match pin {
            Some(p) => Some(p.allocations.as_slice()),
            None if local => None,
            None => Some(empty),
        },
        origins: pin.map(|p| p.origins.as_slice()),
        created: go_time(&created.or(pin.map(|p| p.timestamp)).unwrap_or_else(go_zero_time)),
        metadata: pin.map(|p| &p.metadata).filter(|m| !m.is_empty()),
        peer_map: views
            .iter()
            .map(|v| {
                let peer = &c.peers[v.peer];
                (
                    peer.id.as_str(),
                    PinInfoShort {
                        peername: &peer.name,
                        ipfs_peer_id: &peer.ipfs_id,
                        status: v.status,
                        timestamp: go_time(&v.timestamp),
                        error: &v.error,
                        // An operation on a recent pin is queued with priority; its attempt
                        // is counted once it runs.
                        attempt_count: u32::from(matches!(
                            v.status,
                            "pinning" | "pin_error" | "unpin_error"
                        )),
                        priority_pin: matches!(v.status, "pin_queued" | "pinning"),
                    },
                )
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(512);
    super::pin::to_go_json(&mut out, &info);
    out.push(b'\n');
    out
}

/// `GET /pins/{cid}` (global): every peer's view, merged in random order.
fn global_info(c: &Cluster, p: usize, key: &str, cid: &str) -> Vec<u8> {
    let now = Instant::now();
    let w = c.world();
    let mut order: Vec<usize> = (0..c.peers.len()).collect();
    order.shuffle(&mut *c.rng.lock().unwrap_or_else(|e| e.into_inner()));
    if w.replicas[p].get(key).is_none() {
        // Not in this peer's replica: every peer "unpinned", created now.
        let views: Vec<PeerView> = order
            .iter()
            .map(|&q| PeerView {
                peer: q,
                status: "unpinned",
                error: String::new(),
                timestamp: Utc::now(),
                pin: None,
            })
            .collect();
        return render_global(c, cid, &views, Some(Utc::now()), false);
    }
    // Peers the pin is not allocated to are filled in by the receiving peer, at the time of asking.
    let views: Vec<PeerView> = order
        .iter()
        .map(|&q| peer_view(c, &w, p, q, key, now))
        .map(|v| if v.status == "remote" { PeerView { timestamp: Utc::now(), ..v } } else { v })
        .collect();
    render_global(c, cid, &views, None, false)
}

/// `?local=true`: this peer's own view as a one-entry GlobalPinInfo.
fn local_info(c: &Cluster, p: usize, key: &str, cid: &str) -> Vec<u8> {
    let w = c.world();
    let v = peer_view(c, &w, p, p, key, Instant::now());
    render_global(c, cid, &[v], None, true)
}

/// A peer's view as the state listing (StatusAll) reports it. ipfs-cluster v1.1.6's `PinLs` stops
/// after the first type it lists (`break nextFilter` at the end of the `recursive` stream), so the
/// listing never sees IPFS's direct pins: an allocated direct pin that is not in an operation shows
/// as `unexpectedly_unpinned`. A single pin's status (`/pins/{cid}`, `?cids=`) asks IPFS for that
/// CID and says `pinned`.
fn listed_view(mut v: PeerView, pin: &Pin) -> PeerView {
    if pin.max_depth == 0 && v.status == "pinned" {
        v.status = "unexpectedly_unpinned";
        v.error = "the item should be pinned but it is not".into();
    }
    v
}

/// `POST /pins/recover`: every peer (or only this one, `local`) re-queues the pins its listing
/// shows in an error state and answers with their new status (queued).
fn recover_all(c: &Cluster, p: usize, local: bool) -> Response {
    let now = Instant::now();
    let mut items: Vec<Vec<u8>> = Vec::new();
    {
        let w = c.world();
        let peers: Vec<usize> = if local { vec![p] } else { (0..c.peers.len()).collect() };
        for (key, e) in w.replicas[p].view().iter() {
            let views: Vec<PeerView> = peers
                .iter()
                .map(|&q| listed_view(peer_view(c, &w, p, q, &key, now), e.value()))
                .filter(|v| matches!(v.status, "unexpectedly_unpinned" | "pin_error"))
                .map(|v| PeerView {
                    status: "pin_queued",
                    error: String::new(),
                    timestamp: Utc::now(),
                    ..v
                })
                .collect();
            if !views.is_empty() {
                let mut item = render_global(c, &e.value().cid, &views, None, local);
                item.pop();
                items.push(item);
            }
        }
    }
    ndjson_stream(c, p, items.into_iter())
}

/// The statuses a filter names (composite names expanded).
fn parse_status_filter(s: &str) -> Result<Vec<&'static str>, ()> {
    let mut out = Vec::new();
    for tok in s.split(',') {
        let tok: String = tok.chars().filter(|ch| !ch.is_whitespace()).collect();
        let add: &[&'static str] = match tok.as_str() {
            "undefined" => &["undefined"],
            "cluster_error" => &["cluster_error"],
            "pin_error" => &["pin_error"],
            "unpin_error" => &["unpin_error"],
            "error" => &["cluster_error", "pin_error", "unpin_error"],
            "pinned" => &["pinned"],
            "pinning" => &["pinning"],
            "unpinning" => &["unpinning"],
            "unpinned" => &["unpinned"],
            "remote" => &["remote"],
            "pin_queued" => &["pin_queued"],
            "unpin_queued" => &["unpin_queued"],
            "queued" => &["pin_queued", "unpin_queued"],
            "sharded" => &["sharded"],
            "unexpectedly_unpinned" => &["unexpectedly_unpinned"],
            _ => &[],
        };
        out.extend_from_slice(add);
    }
    if out.is_empty() { Err(()) } else { Ok(out) }
}

/// `GET /pins`: global (buffered, random order), `local=true` (streamed), or `cids=` (one status per
/// CID, filter ignored).
fn pins_status(c: &Cluster, p: usize, q: &Query) -> Response {
    let local = q.get("local") == "true";
    let cids = q.get("cids");
    if !cids.is_empty() {
        let mut parsed = Vec::new();
        for s in cids.split(',') {
            match parse_cid(s) {
                Ok(pc) => parsed.push(pc),
                Err(e) => return error(400, &format!("error decoding Cid: {e}")),
            }
        }
        let items: Vec<Vec<u8>> = parsed
            .iter()
            .map(|pc| {
                let mut v = if local {
                    local_info(c, p, &pc.key, &pc.canonical)
                } else {
                    global_info(c, p, &pc.key, &pc.canonical)
                };
                v.pop(); // the stream adds its own newline
                v
            })
            .collect();
        return ndjson_stream(c, p, items.into_iter());
    }
    let filter = match q.get("filter") {
        "" => None,
        f => match parse_status_filter(f) {
            Ok(list) => Some(list),
            Err(()) => return error(400, "invalid filter value"),
        },
    };
    let now = Instant::now();
    let mut items: Vec<Vec<u8>> = Vec::new();
    {
        let w = c.world();
        let view = w.replicas[p].view();
        let peers: Vec<usize> = if local { vec![p] } else { (0..c.peers.len()).collect() };
        for (key, e) in view.iter() {
            let mut views: Vec<PeerView> = peers
                .iter()
                .map(|&qq| listed_view(peer_view(c, &w, p, qq, &key, now), e.value()))
                .collect();
            if let Some(f) = &filter {
                views.retain(|v| f.contains(&v.status));
                if views.is_empty() {
                    continue;
                }
            }
            let mut item = render_global(c, &e.value().cid, &views, None, local);
            item.pop();
            items.push(item);
        }
    }
    if !local {
        // The real peer buffers every answer in a map and emits in map order: random.
        items.shuffle(&mut *c.rng.lock().unwrap_or_else(|e| e.into_inner()));
    }
    ndjson_stream(c, p, items.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert!(matches!(route("GET", &["pins", "x"]), Ok(Route::PinStatus(_))));
        assert!(matches!(route("POST", &["pins", "recover"]), Ok(Route::RecoverAll)));
        // A later GET route clears the POST route's method mismatch: 404, as on a real peer.
        assert!(matches!(route("GET", &["pins", "ipfs", "x"]), Err(404)));
        assert!(matches!(route("POST", &["version"]), Err(404)));
        assert!(matches!(route("PUT", &["pins", "x"]), Err(405)));
        assert!(matches!(route("DELETE", &["token"]), Err(405)));
        assert!(matches!(route("GET", &["nope"]), Err(404)));
        assert!(matches!(route("POST", &["pins", "ipfs", "x", "y"]), Ok(Route::PinPath(..))));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("//pins"), "/pins");
        assert_eq!(clean_path("/a/./b/../c"), "/a/c");
        assert_eq!(clean_path("/pins/"), "/pins/");
    }

    #[test]
    fn replication_checks_in_order() {
        assert_eq!(
            check_replication(2, -1),
            Err("cluster.replication_factor_min is larger than max")
        );
        assert_eq!(
            check_replication(-1, 3),
            Err("cluster.replication_factor_min and max must be -1 when one of them is")
        );
        assert_eq!(check_replication(-2, -2), Err("cluster.replication_factor_min is wrong"));
        assert!(check_replication(2, 3).is_ok());
    }

    fn replicated(cid: &str, min: i32, max: i32, user: &[&str]) -> Pin {
        Pin {
            cid: cid.into(),
            typ: PinType::Data,
            allocations: vec![],
            max_depth: -1,
            reference: None,
            timestamp: Utc::now(),
            replication_min: min,
            replication_max: max,
            name: String::new(),
            mode_query: Mode::Recursive,
            shard_size: 0,
            user_allocations: Some(user.iter().map(|u| u.to_string()).collect()),
            expire_at: None,
            metadata: Default::default(),
            pin_update: None,
            origins: vec![],
            origins_given: false,
            metadata_given: true,
        }
    }

    #[test]
    fn allocation_puts_user_allocations_first_in_the_allocators_order() {
        let live: Vec<String> = ["p0", "p1", "p2", "p3"].map(String::from).into();
        for n in 0..20 {
            let cid = format!("cid{n}");
            // As on a real peer, user allocations are a priority group ordered like every other
            // candidate: the order they are given in is not kept.
            let a = allocate(&replicated(&cid, 2, 2, &["p2", "p1"]), None, &live).unwrap();
            let b = allocate(&replicated(&cid, 2, 2, &["p1", "p2"]), None, &live).unwrap();
            assert_eq!(a, b, "{cid}");
            let mut set = a.clone();
            set.sort();
            assert_eq!(set, ["p1", "p2"], "{cid}");
            // Priority first, then as many others as wanted; unknown peers are no candidates.
            let c = allocate(&replicated(&cid, 2, 3, &["p3", "nope"]), None, &live).unwrap();
            assert_eq!(c.len(), 3, "{cid}: {c:?}");
            assert_eq!(c[0], "p3", "{cid}: {c:?}");
            assert!(c.iter().all(|p| live.contains(p)), "{cid}: {c:?}");
            // Enough current allocations: kept as they are, in their order.
            let mut pin = replicated(&cid, 1, 2, &["p0"]);
            let mut current = replicated(&cid, 2, 2, &[]);
            current.allocations = vec!["p3".into(), "p1".into()];
            assert_eq!(allocate(&pin, Some(&current), &live).unwrap(), ["p3", "p1"]);
            pin.replication_min = 5;
            pin.replication_max = 5;
            assert_eq!(
                allocate(&pin, None, &live).unwrap_err().1,
                "not enough peers to allocate CID. Needed at least: 5. Wanted at most: 5. \
                 Available candidates: 4. See logs for more info."
            );
        }
    }

    #[test]
    fn status_filters() {
        assert!(parse_status_filter("unexpected_unpinned").is_err());
        assert_eq!(parse_status_filter("pinned, foo").unwrap(), vec!["pinned"]);
        assert_eq!(parse_status_filter("queued").unwrap(), vec!["pin_queued", "unpin_queued"]);
    }
}
