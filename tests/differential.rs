//! The simulator held to the real thing (issue 10, point 5): one script of REST exchanges is sent to
//! a real 3-peer IPFS Cluster v1.1.6 and to a 3-peer `ledger sim serve`, both with Basic auth on,
//! and every answer is compared: status, the headers that matter, the trailers and the JSON field
//! by field (key order included). What must differ is normalised first: peer IDs become
//! `peer0`…`peer2` and kubo IDs `ipfs0`…, ports `PORT`, times near now `<now>` (with `.ns` when they
//! carry sub-second digits, `+1h` when an hour ahead), and streams the real cluster emits in no fixed
//! order are sorted. A difference that remains must be one of [`known_differences`] (each named,
//! with its reason, and matched on the exchange, the field and both values, or for the order of a
//! pin's allocations both pins together), or the test fails. The known differences are the ones
//! `docs/simulator.md` lists under "Known differences".

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use crate::util::*;

/// Peers on each side.
const PEERS: usize = 3;
const USER: &str = "admin";
const PASS: &str = "diff-s3cret";

// ------------------------------------------------------------------------------------------------
// Deterministic CIDs

/// A CIDv0 (`Qm…`): the SHA-256 of `label` (content no kubo has).
fn v0(label: &str) -> String {
    use sha2::Digest;
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&sha2::Sha256::digest(label.as_bytes()));
    bs58::encode(mh).into_string()
}

/// A CIDv1 dag-pb (`bafybei…`): the SHA-256 of `label` (content no kubo has).
fn v1(label: &str) -> String {
    use sha2::Digest;
    let mut b = vec![0x01, 0x70, 0x12, 0x20];
    b.extend_from_slice(&sha2::Sha256::digest(label.as_bytes()));
    format!("b{}", data_encoding::BASE32_NOPAD.encode(&b).to_lowercase())
}

/// A CIDv1 raw block with the identity multihash of `label` (`bafkqa…`): its content is the CID
/// itself, so every kubo has it and the real cluster's pins reach `pinned` as the simulator's do.
fn idc(label: &str) -> String {
    let mut b = vec![0x01, 0x55, 0x00, label.len() as u8];
    b.extend_from_slice(label.as_bytes());
    format!("b{}", data_encoding::BASE32_NOPAD.encode(&b).to_lowercase())
}

// ------------------------------------------------------------------------------------------------
// The script

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// `Basic admin:<password>`.
    Good,
    /// No `Authorization` header.
    Missing,
    /// `Basic admin:wrong`.
    BadBasic,
    /// `Bearer` with a token signed with another key.
    BadBearer,
    /// `Bearer` with the token this side's `POST /token` gave.
    Token,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Compared in the order received.
    Keep,
    /// NDJSON items sorted (the real cluster emits them in map or completion order).
    Sorted,
}

struct Ex {
    label: String,
    peer: usize,
    method: &'static str,
    /// Path and query; `{peerN}` is replaced by that side's peer ID.
    path: String,
    auth: Auth,
    body: &'static str,
    order: Order,
}

enum Step {
    Ex(Ex),
    /// Wait until every peer of each side holds the same pin set, then let pin statuses settle.
    Settle,
}

fn ex(label: &str, method: &'static str, path: impl Into<String>) -> Step {
    Step::Ex(Ex {
        label: label.to_string(),
        peer: 0,
        method,
        path: path.into(),
        auth: Auth::Good,
        body: "",
        order: Order::Keep,
    })
}

fn with(step: Step, f: impl FnOnce(&mut Ex)) -> Step {
    match step {
        Step::Ex(mut e) => {
            f(&mut e);
            Step::Ex(e)
        }
        s => s,
    }
}

fn auth(step: Step, a: Auth) -> Step {
    with(step, |e| e.auth = a)
}

fn on(step: Step, peer: usize) -> Step {
    with(step, |e| e.peer = peer)
}

fn sorted(step: Step) -> Step {
    with(step, |e| e.order = Order::Sorted)
}

/// An origin multiaddr with a peer ID that is no cluster member (the same on both sides).
const ORIGIN: &str =
    "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn script() -> Vec<Step> {
    let a = idc("diff a");
    let b = idc("diff b");
    let d = idc("diff direct");
    let d2 = idc("diff direct 2");
    let u = idc("diff update");
    let o = idc("diff origins");
    let e = idc("diff expiry");
    let s = idc("diff shard");
    let r = idc("diff replication");
    let q = idc("diff quirk");
    let q0 = v0("diff v0");
    let q1 = v1("diff v1");
    let missing = v0("diff never pinned");
    vec![
        // Health, identity, version, peers, empty listings.
        auth(ex("health, no auth", "GET", "/health"), Auth::Missing),
        auth(ex("health, bad basic auth", "GET", "/health"), Auth::BadBasic),
        ex("health", "GET", "/health"),
        ex("id", "GET", "/id"),
        on(ex("id on peer1", "GET", "/id"), 1),
        ex("version", "GET", "/version"),
        sorted(ex("peers", "GET", "/peers")),
        ex("allocations, empty", "GET", "/allocations"),
        ex("allocations, empty, filter=pin", "GET", "/allocations?filter=pin"),
        ex("pins, empty", "GET", "/pins"),
        ex("pins local, empty", "GET", "/pins?local=true"),
        ex("recover all local, nothing to do", "POST", "/pins/recover?local=true"),
        // Authentication.
        auth(ex("id, no auth", "GET", "/id"), Auth::Missing),
        auth(ex("id, bad basic auth", "GET", "/id"), Auth::BadBasic),
        auth(ex("id, bad bearer token", "GET", "/id"), Auth::BadBearer),
        auth(ex("unknown route, no auth", "GET", "/nope"), Auth::Missing),
        auth(ex("pin, no auth", "POST", format!("/pins/{a}")), Auth::Missing),
        ex("token", "POST", "/token"),
        auth(ex("token, no auth", "POST", "/token"), Auth::Missing),
        auth(ex("token, bad basic auth", "POST", "/token"), Auth::BadBasic),
        auth(ex("id with the bearer token", "GET", "/id"), Auth::Token),
        auth(ex("token with the bearer token", "POST", "/token"), Auth::Token),
        auth(ex("version with the bearer token", "GET", "/version"), Auth::Token),
        // Routing: 404, 405, 400, 307, 301.
        ex("unknown route", "GET", "/nope"),
        ex("wrong method on /pins/{cid}", "PUT", format!("/pins/{a}")),
        ex("wrong method on /pins/ipfs/{cid}", "GET", format!("/pins/ipfs/{a}")),
        ex("wrong method on /version", "POST", "/version"),
        ex("wrong method on /allocations", "DELETE", "/allocations"),
        ex("allocation of a missing pin", "GET", format!("/allocations/{missing}")),
        ex("allocation, bad cid", "GET", "/allocations/not-a-cid"),
        ex("unpin a missing pin", "DELETE", format!("/pins/{missing}")),
        ex("unpin a missing pin by path", "DELETE", format!("/pins/ipfs/{missing}")),
        ex("status of a missing pin", "GET", format!("/pins/{missing}")),
        ex("status of a missing pin, local", "GET", format!("/pins/{missing}?local=true")),
        ex("pin, bad cid", "POST", "/pins/not-a-cid"),
        ex("pin by path, bad cid", "POST", "/pins/ipfs/not-a-cid"),
        ex("status, bad cid", "GET", "/pins/not-a-cid"),
        ex("allocations, bad filter", "GET", "/allocations?filter=bogus"),
        ex("pins, bad filter", "GET", "/pins?filter=bogus"),
        ex("pins, the website's filter name", "GET", "/pins?filter=unexpected_unpinned"),
        ex("pins, bad cid in cids", "GET", format!("/pins?cids={a},nope")),
        ex("trailing slash, GET with query", "GET", format!("/pins/?cids={a}")),
        ex("trailing slash, POST", "POST", format!("/pins/{a}/?name=x")),
        ex("trailing slash, /id", "GET", "/id/"),
        ex("unclean path, //", "GET", "//pins"),
        ex("unclean path, .", "GET", "/pins/./version"),
        ex("unclean path, ..", "GET", "/allocations/../id"),
        ex("unclean path with query", "GET", "/x/../allocations?filter=pin"),
        // Pins and re-pins, every option.
        ex(
            "pin with name and metadata",
            "POST",
            format!("/pins/{a}?name=first&meta-org=hrdag&meta-env=prod"),
        ),
        ex("stored pin", "GET", format!("/allocations/{a}")),
        ex("re-pin with a name only", "POST", format!("/pins/{a}?name=second")),
        ex("stored pin after the re-pin", "GET", format!("/allocations/{a}")),
        ex(
            "pin with mode and name (spaces)",
            "POST",
            format!("/pins/{b}?mode=recursive&name=a+b%20c"),
        ),
        ex(
            "pin with replication and user allocations",
            "POST",
            format!("/pins/{r}?replication=2&user-allocations={{peer2}},{{peer1}}"),
        ),
        ex("stored pin with allocations", "GET", format!("/allocations/{r}")),
        ex(
            "re-pin, replication-min/max, user allocations",
            "POST",
            format!("/pins/{r}?replication-min=1&replication-max=2&user-allocations={{peer1}}"),
        ),
        ex("stored pin, allocations kept", "GET", format!("/allocations/{r}")),
        ex("pin with shard-size", "POST", format!("/pins/{s}?shard-size=1048576")),
        ex("pin with expire-at", "POST", format!("/pins/{e}?expire-at=2099-05-01T00:00:00Z")),
        ex("stored pin with expire-at", "GET", format!("/allocations/{e}")),
        ex("re-pin with expire-in", "POST", format!("/pins/{e}?expire-in=1h")),
        ex("stored pin with expire-in", "GET", format!("/allocations/{e}")),
        ex("pin with origins", "POST", format!("/pins/{o}?origins={ORIGIN}")),
        ex("stored pin with origins", "GET", format!("/allocations/{o}")),
        ex("direct pin by path", "POST", format!("/pins/ipfs/{d}?mode=direct&name=direct")),
        ex("stored direct pin", "GET", format!("/allocations/{d}")),
        ex(
            "re-pin of a direct pin by path",
            "POST",
            format!("/pins/ipfs/{d}?mode=direct&meta-org=hrdag"),
        ),
        ex("mode=direct on /pins/{cid}", "POST", format!("/pins/{d2}?mode=direct")),
        ex("stored pin of mode=direct on /pins/{cid}", "GET", format!("/allocations/{d2}")),
        ex("recursive pin re-pinned direct", "POST", format!("/pins/ipfs/{d2}?mode=direct")),
        ex(
            "pin-update",
            "POST",
            format!("/pins/{u}?pin-update={a}&name=updated&meta-org=ignored&replication=2"),
        ),
        ex("stored pin of the pin-update", "GET", format!("/allocations/{u}")),
        ex("pin-update from a missing pin", "POST", format!("/pins/{q}?pin-update={missing}")),
        ex("pin-update, bad cid", "POST", format!("/pins/{q}?pin-update=nope")),
        ex("pin-update to itself", "POST", format!("/pins/{b}?pin-update={b}&name=self")),
        ex("pin, CIDv0", "POST", format!("/pins/{q0}?name=v0")),
        ex("pin by path, CIDv1", "POST", format!("/pins/ipfs/{q1}?name=v1")),
        // Option errors (400) and validation errors (500).
        ex("replication-min alone", "POST", format!("/pins/{q}?replication-min=2")),
        ex(
            "replication min -1, max 2",
            "POST",
            format!("/pins/{q}?replication-min=-1&replication-max=2"),
        ),
        ex("replication too high", "POST", format!("/pins/{q}?replication=5")),
        ex(
            "replication-min invalid (partly applied)",
            "POST",
            format!("/pins/{q}?name=quirk&meta-org=x&replication-min=abc"),
        ),
        ex("stored pin after the 400", "GET", format!("/allocations/{q}")),
        ex("shard-size invalid", "POST", format!("/pins/{q}?shard-size=-1")),
        ex("expire-in invalid", "POST", format!("/pins/{q}?expire-in=abc")),
        ex("expire-in too short", "POST", format!("/pins/{q}?expire-in=500ms")),
        ex("expire-at invalid", "POST", format!("/pins/{q}?expire-at=tomorrow")),
        ex("expire-at in the past", "POST", format!("/pins/{q}?expire-at=2000-01-01T00:00:00Z")),
        ex("origins invalid", "POST", format!("/pins/{q}?origins=/ip4/1.2.3.4")),
        ex("unpin with an option error", "DELETE", format!("/pins/{missing}?replication-min=abc")),
        ex("pin by path with a sub-path", "POST", format!("/pins/ipfs/{q0}/sub/dir")),
        Step::Settle,
        // Listings and status.
        ex("allocations", "GET", "/allocations"),
        ex("allocations, filter=all", "GET", "/allocations?filter=all"),
        ex("allocations, filter=pin,foo", "GET", "/allocations?filter=pin,foo"),
        ex("allocations, filter=meta-pin", "GET", "/allocations?filter=meta-pin"),
        on(ex("allocations on peer1", "GET", "/allocations"), 1),
        on(ex("stored pin on peer2", "GET", format!("/allocations/{a}")), 2),
        ex(
            "status of a pin of content no kubo has, local",
            "GET",
            format!("/pins/{q0}?local=true"),
        ),
        ex("unpin the CIDv0 pin", "DELETE", format!("/pins/{q0}")),
        ex("unpin the CIDv1 pin by path", "DELETE", format!("/pins/ipfs/{q1}")),
        Step::Settle,
        sorted(ex("pins", "GET", "/pins")),
        sorted(ex("pins, as the Go client asks", "GET", "/pins?local=false&filter=&cids=")),
        sorted(ex("pins local", "GET", "/pins?local=true")),
        sorted(ex("pins, filter=pinned", "GET", "/pins?filter=pinned")),
        sorted(ex("pins, filter=pin_error,queued", "GET", "/pins?filter=pin_error,queued")),
        sorted(ex("pins, filter=remote", "GET", "/pins?filter=remote")),
        sorted(ex("pins, cids", "GET", format!("/pins?cids={a},{r}"))),
        sorted(ex("pins, cids, local", "GET", format!("/pins?cids={a},{d}&local=true"))),
        ex("status of a pin", "GET", format!("/pins/{a}")),
        ex("status of a pin, local", "GET", format!("/pins/{a}?local=true")),
        on(ex("status of an allocated pin on peer1", "GET", format!("/pins/{r}")), 1),
        ex("recover a pin", "POST", format!("/pins/{a}/recover")),
        ex("recover a pin, local", "POST", format!("/pins/{a}/recover?local=true")),
        sorted(ex("recover all", "POST", "/pins/recover")),
        sorted(ex("recover all, local", "POST", "/pins/recover?local=true")),
        // Unpins.
        ex("unpin", "DELETE", format!("/pins/{a}")),
        ex("unpin by path (direct pin)", "DELETE", format!("/pins/ipfs/{d}")),
        ex("unpin again", "DELETE", format!("/pins/{a}")),
        ex("allocation after the unpin", "GET", format!("/allocations/{a}")),
    ]
}

// ------------------------------------------------------------------------------------------------
// One side: a cluster, its peer IDs, its token

struct Side {
    name: &'static str,
    urls: Vec<String>,
    /// (cluster peer ID, kubo peer ID) per peer.
    ids: Vec<(String, String)>,
    token: Option<String>,
}

impl Side {
    fn new(name: &'static str, urls: Vec<String>) -> Side {
        let ids = urls
            .iter()
            .map(|u| {
                let id = raw(u, "GET", "/id", &[("Authorization", &basic(PASS))], b"").json();
                (
                    id["id"].as_str().unwrap().to_string(),
                    id["ipfs"]["id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Side { name, urls, ids, token: None }
    }

    fn send(&mut self, e: &Ex) -> RawResponse {
        let mut path = e.path.clone();
        for (i, (id, _)) in self.ids.iter().enumerate() {
            path = path.replace(&format!("{{peer{i}}}"), id);
        }
        let header = match e.auth {
            Auth::Good => Some(basic(PASS)),
            Auth::Missing => None,
            Auth::BadBasic => Some(basic("wrong")),
            Auth::BadBearer => Some(format!("Bearer {}", jwt(USER, "not the key"))),
            Auth::Token => {
                Some(format!("Bearer {}", self.token.as_deref().expect("a token first")))
            }
        };
        let headers: Vec<(&str, &str)> =
            header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let r = raw(&self.urls[e.peer], e.method, &path, &headers, e.body.as_bytes());
        if e.path == "/token" && e.auth == Auth::Good && r.status == 200 {
            self.token = r.json()["token"].as_str().map(str::to_string);
        }
        r
    }

    /// Every peer holds the same pin set; then the pin statuses get time to settle.
    fn settle(&self) {
        let start = Instant::now();
        loop {
            let sets: Vec<String> = self
                .urls
                .iter()
                .map(|u| {
                    raw(u, "GET", "/allocations", &[("Authorization", &basic(PASS))], b"").text()
                })
                .collect();
            if sets.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{}: replicas differ after 60s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }

    /// Normalises one answer for comparison.
    fn normalise(&self, e: &Ex, r: &RawResponse) -> Value {
        let mut headers = Map::new();
        for (k, v) in &r.headers {
            let k = k.to_ascii_lowercase();
            if IGNORED_HEADERS.contains(&k.as_str()) {
                continue;
            }
            let v = self.text(v);
            match headers.get_mut(&k) {
                Some(Value::Array(vs)) => vs.push(Value::String(v)),
                _ => {
                    headers.insert(k, json!([v]));
                }
            }
        }
        let trailers: Map<String, Value> = r
            .trailers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(self.text(v))))
            .collect();
        let text = r.text();
        let body = if r.body.is_empty() {
            Value::Null
        } else if r.header("transfer-encoding").is_some() || text.matches('\n').count() > 1 {
            let mut items: Vec<Value> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    serde_json::from_str(l)
                        .map(|v| self.value(v))
                        .unwrap_or_else(|_| Value::String(self.text(l)))
                })
                .collect();
            if e.order == Order::Sorted {
                items.sort_by_key(|v| serde_json::to_string(v).unwrap());
            }
            Value::Array(items)
        } else {
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => self.value(v),
                Err(_) => Value::String(self.text(&text)),
            }
        };
        json!({
            "status": r.status,
            "headers": headers,
            "trailers": trailers,
            "body": body,
        })
    }

    fn value(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.value(x)).collect()),
            Value::Object(m) => {
                let mut renamed = false;
                let mut out: Vec<(String, Value)> = m
                    .into_iter()
                    .map(|(k, x)| {
                        if k == "cluster_peers" {
                            return (k, self.peerset(&x));
                        }
                        let k2 = self.text(&k);
                        renamed |= k2 != k;
                        (k2, self.value(x))
                    })
                    .collect();
                // A map keyed by peer IDs is emitted in the order of the IDs: after renaming,
                // in the order of the names.
                if renamed {
                    out.sort_by(|x, y| x.0.cmp(&y.0));
                }
                // A real peer lists the other peers' addresses by its peerstore's priorities.
                for (k, x) in out.iter_mut() {
                    if k == "cluster_peers_addresses"
                        && let Value::Array(a) = x
                    {
                        a.sort_by_key(|v| v.to_string());
                    }
                }
                Value::Object(out.into_iter().collect())
            }
            x => x,
        }
    }

    /// A peerset (`cluster_peers`): whether it is in the order of the IDs' bytes, as the CRDT
    /// consensus sorts it, then the names sorted (the two sides' IDs sort differently).
    fn peerset(&self, ids: &Value) -> Value {
        let raw: Vec<&str> =
            ids.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let bytes: Vec<Vec<u8>> =
            raw.iter().map(|id| bs58::decode(id).into_vec().unwrap_or_default()).collect();
        let in_order = bytes.windows(2).all(|w| w[0] <= w[1]);
        let mut names: Vec<String> = raw.iter().map(|id| self.text(id)).collect();
        names.sort();
        json!({ "in ID order": in_order, "peers": names })
    }

    fn text(&self, s: &str) -> String {
        if let Some(t) = time_label(s) {
            return t;
        }
        let mut s = s.to_string();
        for (i, (id, ipfs)) in self.ids.iter().enumerate() {
            s = s.replace(id, &format!("peer{i}"));
            if !ipfs.is_empty() {
                s = s.replace(ipfs, &format!("ipfs{i}"));
            }
        }
        for url in &self.urls {
            s = s.replace(url.trim_start_matches("http://"), "HOST:PORT");
        }
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find("/tcp/") {
            out.push_str(&rest[..i + 5]);
            rest = &rest[i + 5..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits > 0 {
                out.push_str("PORT");
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }
}

const IGNORED_HEADERS: [&str; 2] = ["date", "content-length"];

/// An HS256 JWT `{"iss":user}` signed with `key`.
fn jwt(user: &str, key: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing = format!(
        "{}.{}",
        b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"iss":"{user}"}}"#))
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing.as_bytes());
    format!("{signing}.{}", b64.encode(mac.finalize().into_bytes()))
}

fn basic(pass: &str) -> String {
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{pass}"),
    );
    format!("Basic {b64}")
}

/// `<now>`, `<now.ns>`, `<now+1h>`… for an RFC 3339 time within a day of now plus a whole number of
/// hours; `None` for anything else (the zero time and fixed times are compared as they are).
fn time_label(s: &str) -> Option<String> {
    if s.len() < 20 || s.as_bytes()[4] != b'-' || s.as_bytes()[10] != b'T' {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let secs = (t.timestamp() - chrono::Utc::now().timestamp()) as f64;
    if secs.abs() > 3.0 * 86400.0 {
        return None;
    }
    let hours = (secs / 3600.0).round() as i64;
    let frac = if s.contains('.') { ".ns" } else { "" };
    let zone = if s.ends_with('Z') { "" } else { "(local)" };
    Some(match hours {
        0 => format!("<now{frac}{zone}>"),
        h => format!("<now{h:+}h{frac}{zone}>"),
    })
}

// ------------------------------------------------------------------------------------------------
// Differences

/// One field that differs: where (a JSON pointer into the normalised answer), and both values.
#[derive(Debug)]
struct Diff {
    at: String,
    sim: Value,
    real: Value,
}

fn diff(at: &str, sim: &Value, real: &Value, out: &mut Vec<Diff>) {
    match (sim, real) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            if ka != kb {
                let mut sa = ka.clone();
                let mut sb = kb.clone();
                sa.sort();
                sb.sort();
                if sa == sb {
                    out.push(Diff {
                        at: format!("{at}/(key order)"),
                        sim: json!(ka),
                        real: json!(kb),
                    });
                }
            }
            for (k, va) in a {
                let p = format!("{at}/{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(
                        Diff { at: p, sim: va.clone(), real: Value::Null.clone() }.absent_real(),
                    ),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(Diff {
                        at: format!("{at}/{k}"),
                        sim: json!("(absent)"),
                        real: vb.clone(),
                    });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{at}/{i}"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Diff { at: at.to_string(), sim: a.clone(), real: b.clone() }),
    }
}

impl Diff {
    fn absent_real(mut self) -> Diff {
        self.real = json!("(absent)");
        self
    }
}

/// A difference the simulator keeps on purpose, with its reason (docs/simulator.md, "Known
/// differences"). It matches one exchange (by label), one field (a JSON pointer whose `*` matches
/// one path element) and both values.
struct Known {
    name: &'static str,
    reason: &'static str,
    exchanges: &'static [&'static str],
    /// The fields, as JSON pointers into the normalised answer.
    at: &'static [&'static str],
    values: Values,
}

/// How a known difference checks the two values.
enum Values {
    /// Each side's value on its own.
    Each { sim: fn(&Value) -> bool, real: fn(&Value) -> bool },
    /// The field is an element of a pin's list (`…/allocations/3`): both pins are checked
    /// together, with the first pin of that CID each side answered with allocations.
    Pins(fn(&Pins) -> bool),
}

/// The pins (objects with a `cid`) that hold a differing list element, on both sides.
struct Pins<'a> {
    sim: &'a Value,
    real: &'a Value,
    /// The first answer of each side that showed this CID with allocations (this one included).
    sim_first: &'a Value,
    real_first: &'a Value,
}

/// The first pin object per CID that showed allocations, of one side.
type FirstAllocations = std::collections::BTreeMap<String, Value>;

/// Records every pin in a normalised answer (the body, or each item of a stream) that is the first
/// of its CID with a non-empty `allocations` list.
fn record_first_allocations(answer: &Value, first: &mut FirstAllocations) {
    let body = &answer["body"];
    let pins: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    for p in pins {
        if let (Some(cid), Some(a)) = (p["cid"].as_str(), p["allocations"].as_array())
            && !a.is_empty()
        {
            first.entry(cid.to_string()).or_insert_with(|| p.clone());
        }
    }
}

fn pointer_matches(pattern: &str, at: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let a: Vec<&str> = at.split('/').collect();
    p.len() == a.len() && p.iter().zip(&a).all(|(x, y)| *x == "*" || x == y)
}

fn is(v: &Value, options: &[Value]) -> bool {
    options.contains(v)
}

fn starts(v: &Value, prefix: &str) -> bool {
    v.as_str().is_some_and(|s| s.starts_with(prefix))
}

/// The simulator's known differences from a real cluster (docs/simulator.md, "Known differences").
fn known_differences() -> Vec<Known> {
    vec![
        Known {
            name: "IPFS path resolution",
            reason: "IPFS is not simulated: a path with a sub-path is resolved by the real peer's kubo \
                     (here it times out: no kubo has the content); the simulator answers 500 \
                     'error resolving path: … not simulated'",
            exchanges: &["pin by path with a sub-path"],
            at: &["/body/message"],
            values: Values::Each {
                sim: |v| starts(v, "error resolving path: sub-path resolution is not simulated"),
                real: |v| starts(v, "IPFS error (resolve?arg="),
            },
        },
        Known {
            name: "content no kubo has",
            reason: "IPFS is not simulated: the simulator's pins reach pinned after ~300 ms; a real \
                     peer's kubo keeps looking for content that no node has (pinning, one attempt, \
                     with priority, the operation's time), later pin_error",
            exchanges: &["status of a pin of content no kubo has, local"],
            at: &[
                "/body/peer_map/peer0/status",
                "/body/peer_map/peer0/attempt_count",
                "/body/peer_map/peer0/priority_pin",
                "/body/peer_map/peer0/timestamp",
                "/body/peer_map/peer0/error",
            ],
            values: Values::Each {
                sim: |v| {
                    is(v, &[json!("pinned"), json!(0), json!(false), json!("<now>"), json!("")])
                },
                real: |v| {
                    is(
                        v,
                        &[
                            json!("pinning"),
                            json!("pin_queued"),
                            json!("pin_error"),
                            json!(true),
                            json!("<now.ns>"),
                        ],
                    ) || v.as_u64().is_some()
                        || v.is_string()
                },
            },
        },
        Known {
            name: "allocation order",
            reason: "a real peer's balanced allocator orders the candidates, user allocations as \
                     one group first, then the others, by each peer's freespace metric (its \
                     kubo's StorageMax less its repo's size, which differs per peer by some \
                     bytes); the simulator orders both groups by a hash of CID and peer. The same \
                     peers, as many, user allocations first, every one a cluster peer, and each \
                     side keeps its first allocation in every later answer",
            exchanges: &[
                "pin with replication and user allocations",
                "stored pin with allocations",
                "re-pin, replication-min/max, user allocations",
                "stored pin, allocations kept",
                "allocations",
                "allocations, filter=all",
                "allocations, filter=pin,foo",
                "allocations on peer1",
                "pins",
                "pins, as the Go client asks",
                "pins local",
                "pins, filter=pinned",
                "pins, filter=remote",
                "pins, cids",
                "status of an allocated pin on peer1",
            ],
            at: &["/body/allocations/*", "/body/*/allocations/*"],
            values: Values::Pins(same_allocations_in_another_order),
        },
        Known {
            name: "re-queued pins finish at IPFS speed",
            reason: "IPFS is not simulated: a recover answers the re-queued pins as pin_queued; on a \
                     real peer whose kubo has the block the operation may already be done when the \
                     answer is written (pinned, the pin's own time, no priority)",
            exchanges: &["recover all", "recover all, local"],
            at: &[
                "/body/*/peer_map/*/status",
                "/body/*/peer_map/*/timestamp",
                "/body/*/peer_map/*/priority_pin",
                "/body/*/peer_map/*/attempt_count",
            ],
            values: Values::Each {
                sim: |v| is(v, &[json!("pin_queued"), json!("<now.ns>"), json!(true), json!(0)]),
                real: |v| {
                    is(
                        v,
                        &[
                            json!("pinned"),
                            json!("pinning"),
                            json!("<now>"),
                            json!(false),
                            json!(1),
                        ],
                    )
                },
            },
        },
    ]
}

/// The normalised answers of both sides, and each side's first allocations per CID.
struct Answers<'a> {
    sim: &'a Value,
    real: &'a Value,
    sim_first: &'a FirstAllocations,
    real_first: &'a FirstAllocations,
}

fn known<'k>(ks: &'k [Known], label: &str, d: &Diff, answers: &Answers) -> Option<&'k Known> {
    ks.iter().find(|k| {
        k.exchanges.contains(&label)
            && k.at.iter().any(|at| pointer_matches(at, &d.at))
            && match k.values {
                Values::Each { sim, real } => sim(&d.sim) && real(&d.real),
                Values::Pins(check) => pins(answers, &d.at).is_some_and(|p| check(&p)),
            }
    })
}

/// The pins holding the list element at `at` (the pointer without the list and the index) on
/// both sides, when both have the same CID and both sides recorded a first allocation of it.
fn pins<'a>(answers: &Answers<'a>, at: &str) -> Option<Pins<'a>> {
    let parts: Vec<&str> = at.split('/').collect();
    let pin_at = parts.get(..parts.len().checked_sub(2)?)?.join("/");
    let sim = answers.sim.pointer(&pin_at)?;
    let real = answers.real.pointer(&pin_at)?;
    let cid = sim["cid"].as_str()?;
    if real["cid"].as_str() != Some(cid) {
        return None;
    }
    Some(Pins {
        sim,
        real,
        sim_first: answers.sim_first.get(cid)?,
        real_first: answers.real_first.get(cid)?,
    })
}

/// The names of a list of peers when every one is a distinct cluster peer (`peer0`…), else `None`.
fn members(list: &Value) -> Option<Vec<&str>> {
    let names: Vec<&str> = list.as_array()?.iter().map(Value::as_str).collect::<Option<_>>()?;
    let member = |n: &&str| {
        n.strip_prefix("peer").and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < PEERS)
    };
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    (names.iter().all(member) && distinct.len() == names.len()).then_some(names)
}

/// The allocation order a real peer's free space decides, and nothing else: both sides allocated
/// the same cluster peers, as many, each side's user allocations (of the request that allocated)
/// first, and each side's list is the one it answered first for that CID (kept on re-pin, on every
/// peer and in every listing).
fn same_allocations_in_another_order(p: &Pins) -> bool {
    let (Some(sim), Some(real)) = (members(&p.sim["allocations"]), members(&p.real["allocations"]))
    else {
        return false;
    };
    let user_first = |first: &Value| {
        let (Some(list), Some(user)) =
            (members(&first["allocations"]), members(&first["user_allocations"]))
        else {
            return false;
        };
        let k = user.len().min(list.len());
        list[..k].iter().all(|a| user.contains(a))
    };
    !sim.is_empty()
        && sim.len() == real.len()
        && sim.iter().all(|a| real.contains(a))
        && p.sim["allocations"] == p.sim_first["allocations"]
        && p.real["allocations"] == p.real_first["allocations"]
        && user_first(p.sim_first)
        && user_first(p.real_first)
}

// ------------------------------------------------------------------------------------------------
// The test

#[test]
fn the_simulator_answers_like_a_real_cluster() {
    if !available(V1_1_6) {
        return;
    }
    let started = Instant::now();
    let steps = script();
    let real_cluster = RealCluster::start(RealOptions {
        basic_auth: Some((USER.to_string(), PASS.to_string())),
        ..RealOptions::new(V1_1_6, PEERS)
    });
    let sim_cluster = Sim::start(&[
        "--peers",
        &PEERS.to_string(),
        "--lag",
        "0..100ms",
        "--basic-auth",
        &format!("{USER}:{PASS}"),
        "--quirk-partial-apply",
    ]);
    let mut real = Side::new("real", real_cluster.peers.iter().map(|p| p.url.clone()).collect());
    let mut sim = Side::new("sim", sim_cluster.peers.iter().map(|p| p.url.clone()).collect());
    let (mut compared, mut identical, mut listed) = (0, 0, 0);
    let (mut real_first, mut sim_first) = (FirstAllocations::new(), FirstAllocations::new());
    let knowns = known_differences();
    let mut used: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut failures = Vec::new();
    for step in &steps {
        let e = match step {
            Step::Settle => {
                real.settle();
                sim.settle();
                continue;
            }
            Step::Ex(e) => e,
        };
        let rr = real.send(e);
        let sr = sim.send(e);
        let (nr, ns) = (real.normalise(e, &rr), sim.normalise(e, &sr));
        record_first_allocations(&nr, &mut real_first);
        record_first_allocations(&ns, &mut sim_first);
        compared += 1;
        let mut diffs = Vec::new();
        diff("", &ns, &nr, &mut diffs);
        if diffs.is_empty() {
            identical += 1;
            continue;
        }
        let answers =
            Answers { sim: &ns, real: &nr, sim_first: &sim_first, real_first: &real_first };
        let mut unlisted = Vec::new();
        for d in &diffs {
            match known(&knowns, &e.label, d, &answers) {
                Some(k) => *used.entry(k.name).or_default() += 1,
                None => unlisted.push(d),
            }
        }
        if unlisted.is_empty() {
            listed += 1;
            continue;
        }
        let mut msg = format!("{} {} {} (peer{}):", e.label, e.method, e.path, e.peer);
        for d in unlisted {
            msg.push_str(&format!("\n    {}: sim {} | real {}", d.at, d.sim, d.real));
        }
        msg.push_str(&format!("\n  sim:  {ns}\n  real: {nr}"));
        failures.push(msg);
    }
    println!(
        "differential: {compared} exchanges compared, {identical} identical, {listed} with listed differences only, {} unlisted ({:.1}s)",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for k in &knowns {
        println!(
            "  known difference {:?}: {} field(s) — {}",
            k.name,
            used.get(k.name).unwrap_or(&0),
            k.reason
        );
    }
    assert!(compared >= 60, "only {compared} exchanges");
    assert!(failures.is_empty(), "{} exchanges differ:\n{}", failures.len(), failures.join("\n"));
}

/// The "allocation order" difference lets through another order of the same allocation and
/// nothing else, on the exchanges it names.
#[test]
fn differential_allocation_order_is_all_it_allows() {
    let ks = known_differences();
    let answer =
        |body: Value| json!({ "status": 200, "headers": {}, "trailers": {}, "body": body });
    let pin = |allocations: Value, user: Value| json!({ "cid": "bafk", "allocations": allocations, "user_allocations": user });
    // The unlisted differences of one exchange, each side's first allocations updated as in the test.
    let unlisted = |label: &str,
                    sim: &Value,
                    real: &Value,
                    firsts: &mut (FirstAllocations, FirstAllocations)|
     -> Vec<String> {
        record_first_allocations(sim, &mut firsts.0);
        record_first_allocations(real, &mut firsts.1);
        let mut diffs = Vec::new();
        diff("", sim, real, &mut diffs);
        let answers = Answers { sim, real, sim_first: &firsts.0, real_first: &firsts.1 };
        diffs
            .iter()
            .filter(|d| known(&ks, label, d, &answers).is_none())
            .map(|d| d.at.clone())
            .collect()
    };
    let ua = json!(["peer2", "peer1"]);
    let (a, b) = (json!(["peer2", "peer1"]), json!(["peer1", "peer2"]));
    let posted = |l: &Value| answer(pin(l.clone(), ua.clone()));
    let stored = |l: &Value| answer(pin(l.clone(), Value::Null));
    let listed = |l: &Value| {
        answer(json!([{ "cid": "bafj", "allocations": [] }, pin(l.clone(), Value::Null)]))
    };
    let mut firsts = Default::default();
    let post = "pin with replication and user allocations";
    assert!(unlisted(post, &posted(&a), &posted(&b), &mut firsts).is_empty());
    assert!(
        unlisted("stored pin with allocations", &stored(&a), &stored(&b), &mut firsts).is_empty()
    );
    assert!(unlisted("allocations", &listed(&a), &listed(&b), &mut firsts).is_empty());
    // Not on an exchange it does not name.
    assert_eq!(
        unlisted("allocations, filter=meta-pin", &listed(&a), &listed(&b), &mut firsts),
        ["/body/1/allocations/0", "/body/1/allocations/1"]
    );
    // A side that changed its order after the first allocation.
    assert_eq!(unlisted("pins", &listed(&b), &listed(&a), &mut firsts).len(), 2);
    // Another length, a lost user allocation, a non-member, a duplicate.
    for wrong in [
        json!(["peer1"]),
        json!(["peer1", "peer0"]),
        json!(["peer1", "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]),
        json!(["peer1", "peer3"]),
        json!(["peer1", "peer1"]),
    ] {
        let mut firsts = Default::default();
        assert!(!unlisted(post, &posted(&wrong), &posted(&b), &mut firsts).is_empty(), "{wrong}");
        let mut firsts = Default::default();
        assert!(!unlisted(post, &posted(&b), &posted(&wrong), &mut firsts).is_empty(), "{wrong}");
    }
    // User allocations first: a user allocation placed after another peer.
    let one = json!(["peer1"]);
    let (u, v) = (pin(json!(["peer0", "peer1"]), one.clone()), pin(json!(["peer1", "peer0"]), one));
    let mut firsts = Default::default();
    assert_eq!(unlisted(post, &answer(u.clone()), &answer(v.clone()), &mut firsts).len(), 2);
    let mut firsts = Default::default();
    assert_eq!(unlisted(post, &answer(v), &answer(u), &mut firsts).len(), 2);
}
