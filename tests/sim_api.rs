//! Conformance of `ledger sim serve` with the IPFS Cluster REST API as described in
//! `docs/cluster-api.md` (v1.1.6). Every test starts its own simulator and checks the wire format.

use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CID_A: &str = "QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME";
const CID_B: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
const NOT_IN_PINSET: &str = "pin is not part of the pinset";

// ------------------------------------------------------------------------------------------
// helpers (local to this file)

fn sim3() -> Sim {
    Sim::start(&["--peers", "3", "--lag", "0"])
}

/// A further valid CIDv0 (`v1 == false`) or CIDv1 dag-pb, derived from `n`.
fn gen_cid(n: u32, v1: bool) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("sim_api test cid {n}").as_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    if v1 {
        cid::Cid::new_v1(0x70, mh).to_string()
    } else {
        cid::Cid::new_v0(mh).unwrap().to_string()
    }
}

fn req(sim: &Sim, peer: usize, method: &str, path: &str) -> RawResponse {
    raw(sim.url(peer), method, path, &[], b"")
}

fn get(sim: &Sim, peer: usize, path: &str) -> RawResponse {
    req(sim, peer, "GET", path)
}

fn post(sim: &Sim, peer: usize, path: &str) -> RawResponse {
    req(sim, peer, "POST", path)
}

fn ctx(r: &RawResponse) -> String {
    format!("status {} headers {:?} body {:?}", r.status, r.headers, r.text())
}

fn assert_json_ct(r: &RawResponse) {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{}", ctx(r));
}

/// A handler error: status, JSON content type and exactly `{"code":status,"message":msg}`.
fn assert_error(r: &RawResponse, status: u16, msg: &str) {
    assert_eq!(r.status, status, "{}", ctx(r));
    assert_json_ct(r);
    assert_eq!(r.json(), json!({"code": status, "message": msg}), "{}", ctx(r));
}

/// A handler error whose message starts with `prefix`.
fn assert_error_prefix(r: &RawResponse, status: u16, prefix: &str) {
    assert_eq!(r.status, status, "{}", ctx(r));
    assert_json_ct(r);
    let v = r.json();
    assert_eq!(v["code"], json!(status), "{}", ctx(r));
    let msg = v["message"].as_str().unwrap_or_else(|| panic!("no message: {}", ctx(r)));
    assert!(msg.starts_with(prefix), "message {msg:?} should start with {prefix:?}");
    assert_eq!(v.as_object().unwrap().len(), 2, "error object has only code and message: {v}");
}

/// POST a pin (path includes the query) and return the 200 JSON body.
fn pin(sim: &Sim, peer: usize, path: &str) -> Value {
    let r = post(sim, peer, path);
    assert_eq!(r.status, 200, "POST {path}: {}", ctx(&r));
    assert_json_ct(&r);
    r.json()
}

/// GET /allocations/{cid} that must succeed: (raw response, JSON).
fn stored_raw(sim: &Sim, peer: usize, cid: &str) -> (RawResponse, Value) {
    let r = get(sim, peer, &format!("/allocations/{cid}"));
    assert_eq!(r.status, 200, "GET /allocations/{cid} on peer{peer}: {}", ctx(&r));
    assert_json_ct(&r);
    let v = r.json();
    (r, v)
}

fn stored(sim: &Sim, peer: usize, cid: &str) -> Value {
    stored_raw(sim, peer, cid).1
}

fn assert_absent(sim: &Sim, peer: usize, cid: &str) {
    let r = get(sim, peer, &format!("/allocations/{cid}"));
    assert_error(&r, 404, NOT_IN_PINSET);
}

fn ids(sim: &Sim) -> Vec<String> {
    sim.peers.iter().map(|p| p.id.clone()).collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Poll `f` until it returns Some, failing after `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn parse_time(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

/// `YYYY-MM-DDTHH:MM:SSZ`: second precision, rendered in UTC.
fn assert_second_precision(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("time is not a string: {v}"));
    let b = s.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    assert!(
        b.len() == 20
            && digits.iter().all(|&i| b[i].is_ascii_digit())
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z',
        "time {s:?} is not second precision UTC"
    );
    parse_time(s);
}

/// RFC 3339 with a fractional second part (a fresh in-memory time).
fn assert_subsecond(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("time is not a string: {v}"));
    parse_time(s);
    let frac = s.split_once('.').map(|(_, f)| f.trim_end_matches('Z')).unwrap_or("");
    assert!(
        !frac.is_empty()
            && frac.len() <= 9
            && frac.bytes().all(|c| c.is_ascii_digit())
            && s.ends_with('Z'),
        "time {s:?} has no sub-second part (or is not UTC)"
    );
}

fn assert_near_now(v: &Value, offset_secs: i64) {
    let t = parse_time(v.as_str().unwrap());
    let want = chrono::Utc::now().timestamp() + offset_secs;
    assert!((t.timestamp() - want).abs() <= 15, "time {v} is not about now{offset_secs:+}s");
}

// --- a tiny raw JSON scanner, to see key order as it is on the wire ---------------------------

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn skip_string(b: &[u8], mut i: usize) -> usize {
    assert_eq!(b[i], b'"');
    i += 1;
    while b[i] != b'"' {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn skip_value(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            j
        }
    }
}

/// The entries of the JSON object in `text`, in wire order, with each value's raw text.
fn entries(text: &str) -> Vec<(String, String)> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    assert_eq!(b.get(i), Some(&b'{'), "not an object: {text}");
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b[i] == b'}' {
        return out;
    }
    loop {
        let ks = i;
        i = skip_string(b, i);
        let key: String = serde_json::from_str(&text[ks..i]).unwrap();
        i = skip_ws(b, i);
        assert_eq!(b[i], b':', "bad object: {text}");
        i = skip_ws(b, i + 1);
        let vs = i;
        i = skip_value(b, i);
        out.push((key, text[vs..i].to_string()));
        i = skip_ws(b, i);
        match b[i] {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return out,
            c => panic!("unexpected {:?} in {text}", c as char),
        }
    }
}

fn keys(text: &str) -> Vec<String> {
    entries(text).into_iter().map(|(k, _)| k).collect()
}

/// Raw text of the top-level value `key`.
fn raw_field(text: &str, key: &str) -> String {
    entries(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
        .1
}

fn assert_pin_keys(text: &str) {
    assert_eq!(keys(text), PIN_FIELDS, "Pin field names/order (§2.1) in {text}");
}

fn without(v: &Value, drop: &[&str]) -> Value {
    let mut m = v.as_object().unwrap().clone();
    for k in drop {
        m.remove(*k);
    }
    Value::Object(m)
}

/// RFC 4648 base32, upper case, no padding (the datastore key of a binary CID).
fn base32(data: &[u8]) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &byte in data {
        buf = (buf << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHA[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHA[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn ds_key(c: &str) -> String {
    let c: cid::Cid = c.parse().unwrap();
    base32(&c.to_bytes())
}

fn assert_stream_ok(r: &RawResponse) {
    assert_eq!(r.status, 200, "{}", ctx(r));
    assert_json_ct(r);
    let trailer_decl = r.headers_named("Trailer").join(",");
    assert!(
        trailer_decl.split(',').any(|t| t.trim().eq_ignore_ascii_case("X-Stream-Error")),
        "no `Trailer: X-Stream-Error` header: {:?}",
        r.headers
    );
    assert!(r.complete, "stream did not end cleanly: {}", ctx(r));
    assert_eq!(
        r.trailer("X-Stream-Error"),
        Some(""),
        "trailer must be present and empty: {:?}",
        r.trailers
    );
    assert!(r.body.ends_with(b"\n"), "NDJSON items end with a newline: {:?}", r.text());
}

/// peer_map of a GlobalPinInfo as peer id → status.
fn statuses(gpi: &Value) -> std::collections::BTreeMap<String, String> {
    gpi["peer_map"]
        .as_object()
        .unwrap_or_else(|| panic!("no peer_map: {gpi}"))
        .iter()
        .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap().to_string()))
        .collect()
}

fn pin_status(sim: &Sim, peer: usize, cid: &str) -> Value {
    let r = get(sim, peer, &format!("/pins/{cid}"));
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert_json_ct(&r);
    r.json()
}

// ------------------------------------------------------------------------------------------
// §1 routing and transport

#[test]
fn routing_trailing_slash_is_307_keeping_query() {
    let sim = sim3();
    let r = get(&sim, 0, "/pins/?cids=a,b");
    assert_eq!(r.status, 307, "{}", ctx(&r));
    assert_eq!(r.header("Location"), Some("/pins?cids=a,b"));

    let r = get(&sim, 1, "/version/");
    assert_eq!(r.status, 307, "{}", ctx(&r));
    assert_eq!(r.header("Location"), Some("/version"));

    // The redirect comes before routing: a POST with a trailing slash pins nothing.
    let r = post(&sim, 0, &format!("/pins/{CID_A}/?name=x&meta-org=acme"));
    assert_eq!(r.status, 307, "{}", ctx(&r));
    assert_eq!(r.header("Location"), Some(format!("/pins/{CID_A}?name=x&meta-org=acme").as_str()));
    assert_absent(&sim, 0, CID_A);
}

#[test]
fn routing_unclean_path_is_301() {
    let sim = sim3();
    for (path, clean) in [
        (format!("/allocations//{CID_A}"), format!("/allocations/{CID_A}")),
        ("//version".to_string(), "/version".to_string()),
        ("/./version".to_string(), "/version".to_string()),
        ("/pins/../version".to_string(), "/version".to_string()),
    ] {
        let r = get(&sim, 0, &path);
        assert_eq!(r.status, 301, "GET {path}: {}", ctx(&r));
        assert_eq!(r.header("Location"), Some(clean.as_str()), "GET {path}");
    }
}

#[test]
fn routing_unknown_route_is_404_not_found() {
    let sim = sim3();
    for (method, path) in
        [("GET", "/nope"), ("GET", "/v0/version"), ("GET", "/pins/a/b/c"), ("POST", "/nope/x")]
    {
        let r = req(&sim, 0, method, path);
        assert_error(&r, 404, "not found");
    }
}

#[test]
fn routing_wrong_method_is_405_with_empty_body() {
    let sim = sim3();
    for (method, path) in [("PUT", format!("/pins/{CID_A}")), ("DELETE", "/token".to_string())] {
        let r = req(&sim, 0, method, &path);
        assert_eq!(r.status, 405, "{method} {path}: {}", ctx(&r));
        assert!(r.body.is_empty(), "{method} {path}: 405 body must be empty: {:?}", r.text());
        let ct = r.header("Content-Type").unwrap_or("");
        assert!(!ct.contains("application/json"), "{method} {path}: 405 has Content-Type {ct:?}");
    }
    // gorilla/mux clears a method mismatch when a later route has the request's method: a real
    // v1.1.6 peer answers these 404 (tests/differential.rs).
    for (method, path) in [
        ("GET", format!("/pins/ipfs/{CID_A}")),
        ("DELETE", "/version".to_string()),
        ("POST", "/allocations".to_string()),
    ] {
        assert_error(&req(&sim, 0, method, &path), 404, "not found");
    }
    // PUT did not pin anything.
    assert_absent(&sim, 0, CID_A);
}

#[test]
fn oversized_request_line_is_431_text_plain() {
    let sim = sim3();
    // ~6 KiB of URL is still accepted (limit is about 8 KiB for request line + headers).
    let big = "v".repeat(6000);
    let body = pin(&sim, 0, &format!("/pins/{CID_A}?meta-big={big}"));
    assert_eq!(body["metadata"]["big"], json!(big));

    let huge = "x".repeat(10_000);
    let r = get(&sim, 0, &format!("/allocations/{CID_A}?meta-big={huge}"));
    assert_eq!(r.status, 431, "{}", ctx(&r));
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "431 Content-Type {ct:?}");
    assert_eq!(r.text(), "431 Request Header Fields Too Large");
}

#[test]
fn handler_responses_are_application_json() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--pins", "3", "--seed", "5"]);
    let checks: Vec<(&str, String)> = vec![
        ("GET", "/id".into()),
        ("GET", "/version".into()),
        ("GET", "/peers".into()),
        ("GET", "/allocations".into()),
        ("GET", format!("/allocations/{CID_A}")),
        ("GET", "/allocations/notacid".into()),
        ("GET", "/nope".into()),
        ("POST", format!("/pins/{CID_A}?name=x")),
        ("GET", format!("/allocations/{CID_A}")),
        ("GET", format!("/pins/{CID_A}")),
        ("GET", "/pins".into()),
        ("GET", "/pins?filter=bogus".into()),
        ("POST", format!("/pins/{CID_B}?replication-min=x")),
        ("POST", format!("/pins/{CID_B}?replication=9")),
        ("DELETE", format!("/pins/{CID_A}")),
    ];
    for (method, path) in checks {
        let r = req(&sim, 0, method, &path);
        assert!(!r.body.is_empty(), "{method} {path} should have a body: {}", ctx(&r));
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json"),
            "{method} {path}: {}",
            ctx(&r)
        );
    }
}

// ------------------------------------------------------------------------------------------
// §2.1 JSON forms

#[test]
fn stored_form_fields_order_and_empty_values() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}"));
    let (r, v) = stored_raw(&sim, 0, CID_A);
    let text = r.text();
    assert_pin_keys(&text);
    assert_eq!(
        without(&v, &["timestamp"]),
        json!({
            "replication_factor_min": -1, "replication_factor_max": -1, "name": "", "mode": "recursive",
            "shard_size": 0, "user_allocations": null, "expire_at": ZERO_TIME, "metadata": null,
            "pin_update": null, "origins": [], "cid": CID_A, "type": "pin", "allocations": [],
            "max_depth": -1, "reference": null
        })
    );
    assert_eq!(raw_field(&text, "metadata"), "null");
    assert_eq!(raw_field(&text, "origins"), "[]");
    assert_eq!(raw_field(&text, "user_allocations"), "null");
    assert_eq!(raw_field(&text, "allocations"), "[]");
    assert_second_precision(&v["timestamp"]);
    assert_near_now(&v["timestamp"], 0);
}

#[test]
fn post_response_is_in_memory_form() {
    let sim = sim3();
    let peer1 = sim.peers[1].id.clone();
    let r = post(&sim, 0, &format!("/pins/{CID_B}?mode=direct&user-allocations={peer1}"));
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert_json_ct(&r);
    let text = r.text();
    assert_pin_keys(&text);
    let v = r.json();
    assert_eq!(
        without(&v, &["timestamp"]),
        json!({
            "replication_factor_min": -1, "replication_factor_max": -1, "name": "", "mode": "direct",
            "shard_size": 0, "user_allocations": [peer1], "expire_at": ZERO_TIME, "metadata": {},
            "pin_update": null, "origins": null, "cid": CID_B, "type": "pin", "allocations": [],
            "max_depth": -1, "reference": null
        })
    );
    assert_eq!(raw_field(&text, "metadata"), "{}");
    assert_eq!(raw_field(&text, "origins"), "null");
    assert_subsecond(&v["timestamp"]);

    // The stored form of the same write: mode from max_depth, no user_allocations, null metadata,
    // [] origins, the timestamp truncated to the second.
    let s = stored(&sim, 0, CID_B);
    assert_eq!(s["mode"], "recursive");
    assert_eq!(s["user_allocations"], Value::Null);
    assert_eq!(s["metadata"], Value::Null);
    assert_eq!(s["origins"], json!([]));
    assert_second_precision(&s["timestamp"]);
    let mem = parse_time(v["timestamp"].as_str().unwrap());
    let st = parse_time(s["timestamp"].as_str().unwrap());
    assert_eq!(
        st.timestamp(),
        mem.timestamp(),
        "stored timestamp = POST timestamp truncated to seconds"
    );
}

#[test]
fn metadata_keys_are_sorted() {
    let sim = sim3();
    let r =
        post(&sim, 0, &format!("/pins/{CID_A}?meta-zeta=1&meta-alpha=2&meta-Mid=3&meta-beta=4"));
    assert_eq!(r.status, 200, "{}", ctx(&r));
    let want = ["Mid", "alpha", "beta", "zeta"];
    assert_eq!(keys(&raw_field(&r.text(), "metadata")), want, "POST response metadata order");
    let (r, v) = stored_raw(&sim, 0, CID_A);
    assert_eq!(keys(&raw_field(&r.text(), "metadata")), want, "stored metadata order");
    assert_eq!(v["metadata"], json!({"Mid": "3", "alpha": "2", "beta": "4", "zeta": "1"}));
}

// ------------------------------------------------------------------------------------------
// §3 query options

#[test]
fn meta_query_parsing() {
    let sim = sim3();
    let q = "meta-=ignored&meta-a=1&meta-a=2&meta-b=hello+world&meta-c=x%20y&meta-d=%2B&Meta-e=1&meta-f=";
    let want = json!({"a": "1", "b": "hello world", "c": "x y", "d": "+", "f": ""});
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?{q}"));
    assert_eq!(v["metadata"], want, "POST response");
    assert_eq!(stored(&sim, 0, CID_A)["metadata"], want, "stored form");
}

#[test]
fn name_is_always_overwritten() {
    let sim = sim3();
    for (q, want) in [
        ("name=first", "first"),
        ("name=a&name=b", "a"),
        ("name=hello+world%21", "hello world!"),
        ("meta-x=1", ""),
        ("", ""),
    ] {
        let v = pin(&sim, 0, &format!("/pins/{CID_A}?{q}"));
        assert_eq!(v["name"], want, "POST ?{q}");
        assert_eq!(stored(&sim, 0, CID_A)["name"], want, "stored after ?{q}");
    }
}

#[test]
fn replication_overrides_min_and_max() {
    let sim = sim3();
    let all: BTreeSet<String> = ids(&sim).into_iter().collect();

    let v =
        pin(&sim, 0, &format!("/pins/{CID_A}?replication=2&replication-min=1&replication-max=3"));
    assert_eq!(
        (v["replication_factor_min"].clone(), v["replication_factor_max"].clone()),
        (json!(2), json!(2))
    );
    let s = stored(&sim, 0, CID_A);
    assert_eq!(
        (s["replication_factor_min"].clone(), s["replication_factor_max"].clone()),
        (json!(2), json!(2))
    );
    let allocs: BTreeSet<String> = strs(&s["allocations"]).into_iter().collect();
    assert_eq!(allocs.len(), 2, "2 distinct allocations: {s}");
    assert!(allocs.is_subset(&all), "allocations are cluster peers: {s}");
    assert_eq!(strs(&v["allocations"]).into_iter().collect::<BTreeSet<_>>(), allocs);

    // min 1 / max 2: allocated up to max.
    let v = pin(&sim, 0, &format!("/pins/{CID_B}?replication-min=1&replication-max=2"));
    assert_eq!(
        (v["replication_factor_min"].clone(), v["replication_factor_max"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(strs(&stored(&sim, 0, CID_B)["allocations"]).len(), 2);

    // replication=-1: everywhere, allocations [].
    let c = gen_cid(1, false);
    let v = pin(&sim, 0, &format!("/pins/{c}?replication=-1"));
    assert_eq!(
        (v["replication_factor_min"].clone(), v["replication_factor_max"].clone()),
        (json!(-1), json!(-1))
    );
    assert_eq!(v["allocations"], json!([]));
    assert_eq!(stored(&sim, 0, &c)["allocations"], json!([]));
}

#[test]
fn bad_options_are_400_with_exact_messages() {
    let sim = sim3();
    let exact = [
        ("replication-min=abc", "parameter replication-min invalid"),
        ("replication-max=abc", "parameter replication-max invalid"),
        // `replication` overrides replication-min (parsed first), so its error is min's.
        ("replication=abc", "parameter replication-min invalid"),
        ("shard-size=abc", "parameter shard_size is invalid"),
        ("shard-size=-1", "parameter shard_size is invalid"),
        ("expire-in=500ms", "expire-in duration too short"),
    ];
    // Collect every mismatch, so that one wrong message does not hide the others.
    let mut wrong = Vec::new();
    for (q, msg) in exact {
        let r = post(&sim, 0, &format!("/pins/{CID_A}?{q}"));
        let want = json!({"code": 400, "message": msg});
        let ok = r.status == 400
            && r.header("Content-Type") == Some("application/json")
            && serde_json::from_slice::<Value>(&r.body).ok() == Some(want);
        if !ok {
            wrong.push(format!("?{q}: want 400 {msg:?}, got {}", ctx(&r)));
        }
    }
    let prefixed = [
        ("expire-at=yesterday", "expire-at cannot be parsed: "),
        ("expire-in=soon", "expire-in cannot be parsed: "),
        ("origins=garbage", "error decoding multiaddress: "),
        ("origins=/ip4/1.2.3.4/tcp/4001", "multiaddress does not contain peer ID: "),
        ("pin-update=notacid", "error decoding update option parameter: "),
    ];
    for (q, prefix) in prefixed {
        let r = post(&sim, 0, &format!("/pins/{CID_A}?{q}"));
        let v: Option<Value> = serde_json::from_slice(&r.body).ok();
        let ok = r.status == 400
            && r.header("Content-Type") == Some("application/json")
            && v.as_ref().is_some_and(|v| {
                v["code"] == 400
                    && v.as_object().unwrap().len() == 2
                    && v["message"].as_str().is_some_and(|m| m.starts_with(prefix))
            });
        if !ok {
            wrong.push(format!("?{q}: want 400 {prefix:?}..., got {}", ctx(&r)));
        }
    }
    assert!(wrong.is_empty(), "wrong 400 answers:\n{}", wrong.join("\n"));
    // The path route parses the same options.
    let r = post(&sim, 0, &format!("/pins/ipfs/{CID_A}?shard-size=x"));
    assert_error(&r, 400, "parameter shard_size is invalid");
    // Clean rejection (simulator.md; the partial-apply quirk is off by default): nothing written.
    assert_absent(&sim, 0, CID_A);

    // ... and an existing pin is left untouched.
    pin(&sim, 0, &format!("/pins/{CID_B}?name=keep&meta-org=acme"));
    let before = stored(&sim, 0, CID_B);
    let r = post(&sim, 0, &format!("/pins/{CID_B}?name=other&replication-min=abc"));
    assert_error(&r, 400, "parameter replication-min invalid");
    assert_eq!(stored(&sim, 0, CID_B), before);

    // DELETE parses (and ignores) the options too: a bad one is a clean 400 and the pin stays.
    let r = req(&sim, 0, "DELETE", &format!("/pins/{CID_B}?replication-min=abc"));
    assert_error(&r, 400, "parameter replication-min invalid");
    assert_eq!(stored(&sim, 0, CID_B), before);
}

/// §3 parse-error quirk, reproduced with `--quirk-partial-apply`: the 400 goes out, the partly parsed
/// pin (options parsed in the order name, mode, replication*, ..., meta-*, pin-update, origins) is
/// committed and a second JSON document follows the error in the body.
#[test]
fn quirk_partial_apply_commits_partly_parsed_pin() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--quirk-partial-apply"]);
    let r = post(&sim, 0, &format!("/pins/{CID_A}?name=x&meta-org=acme&replication-min=abc"));
    assert_eq!(r.status, 400, "{}", ctx(&r));
    let text = r.text();
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("body is not a sequence of JSON documents ({e}): {text:?}"));
    assert_eq!(docs.len(), 2, "error + a second document: {text:?}");
    assert_eq!(docs[0], json!({"code": 400, "message": "parameter replication-min invalid"}));
    let s = stored(&sim, 0, CID_A);
    assert_eq!(s["name"], "x");
    assert_eq!(s["metadata"], Value::Null, "meta-* is parsed after replication");
    assert_eq!(
        (s["replication_factor_min"].clone(), s["replication_factor_max"].clone()),
        (json!(-1), json!(-1))
    );

    // origins is parsed last: metadata made it in.
    let r = post(&sim, 0, &format!("/pins/{CID_B}?name=y&meta-org=acme&origins=garbage"));
    assert_eq!(r.status, 400, "{}", ctx(&r));
    let s = stored(&sim, 0, CID_B);
    assert_eq!(s["name"], "y");
    assert_eq!(s["metadata"], json!({"org": "acme"}));
    assert_eq!(s["origins"], json!([]));

    // DELETE: the 400 is written while the unpin still runs.
    let r = req(&sim, 0, "DELETE", &format!("/pins/{CID_A}?shard-size=x"));
    assert_eq!(r.status, 400, "{}", ctx(&r));
    assert_absent(&sim, 0, CID_A);
}

#[test]
fn validation_errors_are_500_with_exact_messages() {
    let sim = sim3();
    for (q, msg) in [
        (
            "replication-min=3&replication-max=2",
            "cluster.replication_factor_min is larger than max",
        ),
        // default max 0 -> -1: "larger than max" (§3 note)
        ("replication-min=2", "cluster.replication_factor_min is larger than max"),
        (
            "replication-min=-1&replication-max=2",
            "cluster.replication_factor_min and max must be -1 when one of them is",
        ),
        ("replication-min=-2&replication-max=2", "cluster.replication_factor_min is wrong"),
        ("expire-at=2001-01-01T00:00:00Z", "pin.ExpireAt set before current time"),
        (
            "replication=5",
            "not enough peers to allocate CID. Needed at least: 5. Wanted at most: 5. Available candidates: 3. See logs for more info.",
        ),
    ] {
        let r = post(&sim, 0, &format!("/pins/{CID_A}?{q}"));
        assert_error(&r, 500, msg);
        assert_absent(&sim, 0, CID_A);
    }
}

#[test]
fn invalid_user_allocations_are_dropped() {
    let sim = sim3();
    let peer2 = sim.peers[2].id.clone();
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?replication=1&user-allocations=notapeer,{peer2}"));
    assert_eq!(v["user_allocations"], json!([peer2]));
    assert_eq!(v["allocations"], json!([peer2]), "user-allocations are allocated first");
    let s = stored(&sim, 0, CID_A);
    assert_eq!(s["allocations"], json!([peer2]));
    assert_eq!(s["user_allocations"], Value::Null);

    // Only invalid IDs: still accepted, allocation falls back to the allocator.
    let v = pin(&sim, 0, &format!("/pins/{CID_B}?replication=1&user-allocations=garbage"));
    assert_eq!(strs(&v["allocations"]).len(), 1);
}

#[test]
fn replication_zero_means_cluster_default() {
    let sim = sim3();
    for q in ["", "replication-min=0&replication-max=0", "replication=0"] {
        let v = pin(&sim, 0, &format!("/pins/{CID_A}?{q}"));
        assert_eq!(v["replication_factor_min"], -1, "?{q}");
        assert_eq!(v["replication_factor_max"], -1, "?{q}");
        assert_eq!(v["allocations"], json!([]), "?{q}");
        let s = stored(&sim, 0, CID_A);
        assert_eq!(
            (s["replication_factor_min"].clone(), s["replication_factor_max"].clone()),
            (json!(-1), json!(-1))
        );
        assert_eq!(s["allocations"], json!([]));
    }
}

#[test]
fn replication_default_flags_change_the_default() {
    let sim = Sim::start(&[
        "--peers",
        "3",
        "--lag",
        "0",
        "--replication-min",
        "2",
        "--replication-max",
        "3",
    ]);
    for (i, q) in ["", "replication-min=0&replication-max=0", "replication=0"].iter().enumerate() {
        let c = gen_cid(10 + i as u32, i % 2 == 1);
        let v = pin(&sim, 0, &format!("/pins/{c}?{q}"));
        assert_eq!(v["replication_factor_min"], 2, "?{q}");
        assert_eq!(v["replication_factor_max"], 3, "?{q}");
        let s = stored(&sim, 0, &c);
        assert_eq!(
            (s["replication_factor_min"].clone(), s["replication_factor_max"].clone()),
            (json!(2), json!(3))
        );
        assert_eq!(strs(&s["allocations"]).len(), 3, "allocated up to max on 3 peers: {s}");
    }
    // Only min given: max comes from the default (3).
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?replication-min=1"));
    assert_eq!(
        (v["replication_factor_min"].clone(), v["replication_factor_max"].clone()),
        (json!(1), json!(3))
    );
    let v = pin(&sim, 0, &format!("/pins/{CID_B}?replication=1"));
    assert_eq!(strs(&v["allocations"]).len(), 1);
}

#[test]
fn expiry_options() {
    let sim = sim3();
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?expire-in=1h"));
    assert_near_now(&v["expire_at"], 3600);
    let s = stored(&sim, 0, CID_A);
    assert_second_precision(&s["expire_at"]);
    assert_near_now(&s["expire_at"], 3600);

    // expire-at wins over expire-in; stored with second precision.
    pin(&sim, 0, &format!("/pins/{CID_A}?expire-at=2999-01-02T03:04:05.678Z&expire-in=1h"));
    assert_eq!(stored(&sim, 0, CID_A)["expire_at"], "2999-01-02T03:04:05Z");
}

// ------------------------------------------------------------------------------------------
// §6.1 / §6.2 re-pin replaces the whole pin

#[test]
fn repin_replaces_the_whole_pin() {
    let sim = sim3();
    let origin = format!("/ip4/1.2.3.4/tcp/4001/p2p/{}", sim.peers[2].id);
    pin(
        &sim,
        0,
        &format!(
            "/pins/{CID_A}?name=dataset&meta-org=old&meta-project=p1&expire-in=1h&origins={origin}&replication=2"
        ),
    );
    let before = stored(&sim, 0, CID_A);
    assert_eq!(before["name"], "dataset");
    assert_eq!(before["metadata"], json!({"org": "old", "project": "p1"}));
    assert_eq!(before["origins"], json!([origin]));
    assert_ne!(before["expire_at"], ZERO_TIME);
    assert_eq!(strs(&before["allocations"]).len(), 2);

    let v = pin(&sim, 0, &format!("/pins/{CID_A}?meta-org=acme"));
    assert_eq!(v["metadata"], json!({"org": "acme"}));
    let after = stored(&sim, 0, CID_A);
    assert_eq!(
        without(&after, &["timestamp"]),
        json!({
            "replication_factor_min": -1, "replication_factor_max": -1, "name": "", "mode": "recursive",
            "shard_size": 0, "user_allocations": null, "expire_at": ZERO_TIME, "metadata": {"org": "acme"},
            "pin_update": null, "origins": [], "cid": CID_A, "type": "pin", "allocations": [],
            "max_depth": -1, "reference": null
        })
    );
    assert!(
        parse_time(after["timestamp"].as_str().unwrap())
            >= parse_time(before["timestamp"].as_str().unwrap()),
        "timestamp moves forward"
    );
}

#[test]
fn post_with_json_body_is_a_bare_post() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}?name=orig&meta-org=x&replication=2"));
    assert_eq!(strs(&stored(&sim, 0, CID_A)["allocations"]).len(), 2);

    let body = br#"{"name":"x","metadata":{"org":"y"},"replication_factor_min":2,"replication_factor_max":2}"#;
    let r = raw(
        sim.url(0),
        "POST",
        &format!("/pins/{CID_A}"),
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(r.status, 200, "{}", ctx(&r));
    let v = r.json();
    assert_eq!(v["name"], "");
    assert_eq!(v["metadata"], json!({}));
    assert_eq!(
        (v["replication_factor_min"].clone(), v["replication_factor_max"].clone()),
        (json!(-1), json!(-1))
    );
    assert_eq!(v["allocations"], json!([]));

    let s = stored(&sim, 0, CID_A);
    assert_eq!(s["name"], "");
    assert_eq!(s["metadata"], Value::Null);
    assert_eq!(s["allocations"], json!([]));

    // Identical to what a bare POST stores.
    pin(&sim, 0, &format!("/pins/{CID_B}"));
    let bare = stored(&sim, 0, CID_B);
    assert_eq!(without(&s, &["cid", "timestamp"]), without(&bare, &["cid", "timestamp"]));
}

#[test]
fn mode_direct_on_cid_route_stores_recursive() {
    let sim = sim3();
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?mode=direct"));
    assert_eq!(v["mode"], "direct", "mode echoes the query");
    assert_eq!(v["max_depth"], -1);
    let s = stored(&sim, 0, CID_A);
    assert_eq!(s["mode"], "recursive");
    assert_eq!(s["max_depth"], -1);
}

#[test]
fn mode_direct_on_path_route_stores_direct() {
    let sim = sim3();
    let v = pin(&sim, 0, &format!("/pins/ipfs/{CID_B}?mode=direct&name=d"));
    assert_eq!(v["cid"], CID_B);
    assert_eq!(v["mode"], "direct");
    assert_eq!(v["max_depth"], 0);
    let s = stored(&sim, 0, CID_B);
    assert_eq!(s["mode"], "direct");
    assert_eq!(s["max_depth"], 0);
    assert_eq!(s["name"], "d");

    // A direct pin stays direct when re-pinned on the path route ...
    pin(&sim, 0, &format!("/pins/ipfs/{CID_B}?mode=direct"));
    assert_eq!(stored(&sim, 0, CID_B)["max_depth"], 0);
    // ... and silently becomes recursive through /pins/{cid}.
    pin(&sim, 0, &format!("/pins/{CID_B}"));
    let s = stored(&sim, 0, CID_B);
    assert_eq!(s["mode"], "recursive");
    assert_eq!(s["max_depth"], -1);
}

const RECURSIVE_TO_DIRECT: &str = "cannot repin a CID which is already pinned in recursive mode (new pin is pinned as direct). Unpin it first.";

#[test]
fn repin_recursive_as_direct_on_path_route_is_500() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}?name=r"));
    let before = stored(&sim, 0, CID_A);
    let r = post(&sim, 0, &format!("/pins/ipfs/{CID_A}?mode=direct"));
    assert_error(&r, 500, RECURSIVE_TO_DIRECT);
    assert_eq!(stored(&sim, 0, CID_A), before);
}

#[test]
fn repin_recursive_with_mode_direct_on_cid_route_is_500() {
    // §6.1 table: existing recursive + mode=direct → 500 (the check uses the requested mode).
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}?name=r"));
    let before = stored(&sim, 0, CID_A);
    let r = post(&sim, 0, &format!("/pins/{CID_A}?mode=direct"));
    assert_error(&r, 500, RECURSIVE_TO_DIRECT);
    assert_eq!(stored(&sim, 0, CID_A), before);
}

// ------------------------------------------------------------------------------------------
// §6.3 pin update

#[test]
fn pin_update_copies_the_whole_from_pin() {
    let sim = sim3();
    let origin = format!("/ip4/5.6.7.8/tcp/4001/p2p/{}", sim.peers[1].id);
    pin(
        &sim,
        0,
        &format!(
            "/pins/{CID_A}?name=src&meta-org=a&meta-x=1&replication=2&origins={origin}&expire-in=1h"
        ),
    );
    let from = stored(&sim, 0, CID_A);

    let peer2 = &sim.peers[2].id;
    let r = post(
        &sim,
        0,
        &format!(
            "/pins/{CID_B}?pin-update={CID_A}&meta-org=zzz&replication=3&user-allocations={peer2}"
        ),
    );
    assert_eq!(r.status, 200, "{}", ctx(&r));
    let to = stored(&sim, 0, CID_B);
    assert_eq!(to["cid"], CID_B);
    assert_eq!(to["pin_update"], CID_A);
    assert_eq!(
        without(&to, &["cid", "pin_update", "timestamp"]),
        without(&from, &["cid", "pin_update", "timestamp"]),
        "everything else copied from the from-pin, query options ignored"
    );
    assert!(
        parse_time(to["timestamp"].as_str().unwrap())
            >= parse_time(from["timestamp"].as_str().unwrap())
    );
    // from is not unpinned
    assert_eq!(stored(&sim, 0, CID_A), from);

    // A non-empty name replaces the name; a future expiry replaces expire_at.
    let c = gen_cid(20, true);
    pin(&sim, 0, &format!("/pins/{c}?pin-update={CID_A}&name=newname&expire-in=2h"));
    let s = stored(&sim, 0, &c);
    assert_eq!(s["name"], "newname");
    assert_near_now(&s["expire_at"], 7200);
    assert_eq!(s["metadata"], from["metadata"]);
    assert_eq!(s["allocations"], from["allocations"]);

    // An empty name keeps the from-pin name.
    let c = gen_cid(21, false);
    pin(&sim, 0, &format!("/pins/{c}?pin-update={CID_A}&name="));
    assert_eq!(stored(&sim, 0, &c)["name"], "src");
}

#[test]
fn pin_update_from_missing_is_404() {
    let sim = sim3();
    let missing = gen_cid(30, false);
    let r = post(&sim, 0, &format!("/pins/{CID_B}?pin-update={missing}&name=x"));
    assert_error(&r, 404, NOT_IN_PINSET);
    assert_absent(&sim, 0, CID_B);
}

#[test]
fn pin_update_to_itself_is_a_normal_pin() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}?pin-update={CID_A}&name=self&meta-k=v"));
    let s = stored(&sim, 0, CID_A);
    assert_eq!(s["pin_update"], CID_A);
    assert_eq!(s["name"], "self");
    assert_eq!(s["metadata"], json!({"k": "v"}));
}

// ------------------------------------------------------------------------------------------
// §4 endpoints

#[test]
fn health_is_204_empty() {
    let sim = sim3();
    let r = get(&sim, 0, "/health");
    assert_eq!(r.status, 204, "{}", ctx(&r));
    assert!(r.body.is_empty());
}

#[test]
fn version_endpoint() {
    let sim = sim3();
    let r = get(&sim, 2, "/version");
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert_json_ct(&r);
    assert_eq!(r.json(), json!({"version": "1.1.6"}));

    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--version-string", "1.0.8"]);
    assert_eq!(get(&sim, 0, "/version").json(), json!({"version": "1.0.8"}));
    assert_eq!(get(&sim, 0, "/id").json()["version"], "1.0.8");
}

const ID_KEYS: [&str; 10] = [
    "id",
    "addresses",
    "cluster_peers",
    "cluster_peers_addresses",
    "version",
    "commit",
    "rpc_protocol_version",
    "error",
    "ipfs",
    "peername",
];

fn check_id(v: &Value, text: &str, all: &BTreeSet<String>) {
    assert_eq!(keys(text), ID_KEYS, "ID field order: {text}");
    let id = v["id"].as_str().unwrap();
    assert!(all.contains(id), "id {id} is a cluster peer");
    for a in strs(&v["addresses"]) {
        assert!(a.contains(&format!("/p2p/{id}")), "address {a} has /p2p/<id>");
    }
    assert_eq!(strs(&v["cluster_peers"]).into_iter().collect::<BTreeSet<_>>(), *all);
    assert!(v["cluster_peers_addresses"].is_array(), "{v}");
    assert_eq!(v["version"], "1.1.6");
    assert_eq!(v["commit"], "");
    assert_eq!(v["rpc_protocol_version"], "/ipfscluster/1.0/rpc");
    assert!(v["error"].is_string(), "{v}");
    let ipfs_keys = keys(&raw_field(text, "ipfs"));
    let expect: Vec<&str> = if v["ipfs"].get("id").is_some() {
        vec!["id", "addresses", "error"]
    } else {
        vec!["addresses", "error"]
    };
    assert_eq!(ipfs_keys, expect, "ipfs object: {v}");
    assert!(v["peername"].is_string(), "{v}");
}

#[test]
fn id_endpoint() {
    let sim = sim3();
    let all: BTreeSet<String> = ids(&sim).into_iter().collect();
    for i in 0..3 {
        let r = get(&sim, i, "/id");
        assert_eq!(r.status, 200, "{}", ctx(&r));
        assert_json_ct(&r);
        let v = r.json();
        check_id(&v, &r.text(), &all);
        assert_eq!(v["id"], sim.peers[i].id.as_str(), "/id answers for the receiving peer");
        assert_eq!(v["error"], "");
    }
}

#[test]
fn peers_stream_one_id_per_peer() {
    let sim = sim3();
    let all: BTreeSet<String> = ids(&sim).into_iter().collect();
    let r = get(&sim, 1, "/peers");
    assert_stream_ok(&r);
    let text = r.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let mut seen = BTreeSet::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        check_id(&v, l, &all);
        seen.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, all);
}

#[test]
fn allocations_stream() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--pins", "25", "--seed", "7"]);
    let r = get(&sim, 0, "/allocations");
    assert_stream_ok(&r);
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 25, "{text}");
    let mut cids = Vec::new();
    for l in &lines {
        assert!(!l.is_empty(), "no blank lines: {text:?}");
        assert_pin_keys(l);
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["user_allocations"], Value::Null);
        assert_eq!(v["type"], "pin");
        assert_second_precision(&v["timestamp"]);
        cids.push(v["cid"].as_str().unwrap().to_string());
    }
    // Datastore key order: base32 (upper case) of the binary CID.
    let dskeys: Vec<String> = cids.iter().map(|c| ds_key(c)).collect();
    let mut sorted = dskeys.clone();
    sorted.sort();
    assert_eq!(dskeys, sorted, "items in datastore key order: {cids:?}");

    // Every peer starts with the same replica.
    let r1 = get(&sim, 2, "/allocations");
    assert_stream_ok(&r1);
    assert_eq!(r1.ndjson(), r.ndjson());

    // Filters.
    for f in ["all", "pin", "pin,foo", "foo,pin"] {
        let r = get(&sim, 0, &format!("/allocations?filter={f}"));
        assert_stream_ok(&r);
        assert_eq!(r.ndjson().len(), 25, "filter={f}");
    }
    assert_error(&get(&sim, 0, "/allocations?filter=foo"), 400, "invalid filter value");
    let r = get(&sim, 0, "/allocations?filter=meta-pin");
    assert_eq!(r.status, 204, "no meta pins: {}", ctx(&r));
    assert!(r.body.is_empty());
}

#[test]
fn allocations_stream_empty_is_204() {
    let sim = sim3();
    let r = get(&sim, 0, "/allocations");
    assert_eq!(r.status, 204, "{}", ctx(&r));
    assert!(r.body.is_empty(), "{:?}", r.text());
}

#[test]
fn allocation_single_errors() {
    let sim = sim3();
    assert_error(&get(&sim, 0, &format!("/allocations/{CID_A}")), 404, NOT_IN_PINSET);
    assert_error_prefix(&get(&sim, 0, "/allocations/notacid"), 400, "error decoding Cid:");
}

#[test]
fn delete_returns_stored_form_before_removal() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}?name=x&meta-a=1&replication=2"));
    let (_, before) = stored_raw(&sim, 0, CID_A);
    let r = req(&sim, 0, "DELETE", &format!("/pins/{CID_A}"));
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert_json_ct(&r);
    assert_pin_keys(&r.text());
    assert_eq!(r.json(), before, "DELETE answers the stored form");
    assert_absent(&sim, 0, CID_A);
    assert_error(&req(&sim, 0, "DELETE", &format!("/pins/{CID_A}")), 404, NOT_IN_PINSET);

    // Path form.
    pin(&sim, 0, &format!("/pins/{CID_B}"));
    let before = stored(&sim, 0, CID_B);
    let r = req(&sim, 0, "DELETE", &format!("/pins/ipfs/{CID_B}"));
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert_eq!(r.json(), before);
    assert_absent(&sim, 0, CID_B);
    assert_error(&req(&sim, 0, "DELETE", &format!("/pins/ipfs/{CID_B}")), 404, NOT_IN_PINSET);

    assert_error_prefix(&req(&sim, 0, "DELETE", "/pins/notacid"), 400, "error decoding Cid:");
}

#[test]
fn status_of_missing_cid_is_200_all_unpinned() {
    let sim = sim3();
    let v = pin_status(&sim, 0, CID_A);
    assert_eq!(v["cid"], CID_A);
    assert_eq!(v["name"], "");
    assert_eq!(v["allocations"], json!([]));
    assert_eq!(v["metadata"], Value::Null);
    assert_near_now(&v["created"], 0);
    let st = statuses(&v);
    assert_eq!(st.keys().cloned().collect::<Vec<_>>(), {
        let mut i = ids(&sim);
        i.sort();
        i
    });
    assert!(st.values().all(|s| s == "unpinned"), "{v}");
}

fn gpi_checks(text: &str, sim: &Sim) {
    assert_eq!(
        keys(text),
        ["cid", "name", "allocations", "origins", "created", "metadata", "peer_map"],
        "GlobalPinInfo order: {text}"
    );
    let pm = raw_field(text, "peer_map");
    let pm_keys = keys(&pm);
    let mut sorted = pm_keys.clone();
    sorted.sort();
    assert_eq!(pm_keys, sorted, "peer_map keys are sorted");
    for (k, info) in entries(&pm) {
        assert!(sim.peers.iter().any(|p| p.id == k), "peer_map key {k} is a peer");
        let ks: Vec<String> = keys(&info)
            .into_iter()
            .filter(|k| k != "ipfs_peer_id" && k != "ipfs_peer_addresses")
            .collect();
        assert_eq!(
            ks,
            ["peername", "status", "timestamp", "error", "attempt_count", "priority_pin"],
            "PinInfoShort: {info}"
        );
    }
}

#[test]
fn status_moves_to_pinned_after_pin_and_repin() {
    let sim = sim3();
    let me = sim.peers[0].id.clone();
    // peer0 (the receiving peer) is allocated first; one more peer is chosen by the allocator.
    let q = format!("/pins/{CID_A}?replication=2&user-allocations={me}");
    let v = pin(&sim, 0, &q);
    let allocs: BTreeSet<String> = strs(&v["allocations"]).into_iter().collect();
    assert_eq!(allocs.len(), 2);
    assert!(allocs.contains(&me), "user-allocations first: {v}");
    // `others`: what an allocated peer other than the receiving one may still report while the
    // write travels to it (it answers from its own replica, §4 GET /pins/{cid}).
    let check =
        |st: &std::collections::BTreeMap<String, String>, mine: &[&str], others: &[&str]| {
            assert_eq!(st.len(), 3, "one entry per peer: {st:?}");
            for (p, s) in st {
                let want = if *p == me { mine } else { others };
                if allocs.contains(p) {
                    assert!(want.contains(&s.as_str()), "allocated peer {p}: {s} not in {want:?}");
                } else {
                    assert_eq!(s, "remote", "non-allocated peer {p}");
                }
            }
        };
    let r = get(&sim, 0, &format!("/pins/{CID_A}"));
    assert_json_ct(&r);
    gpi_checks(&r.text(), &sim);
    check(&statuses(&r.json()), &["pin_queued", "pinning"], &["unpinned", "pin_queued", "pinning"]);
    let moving = ["unpinned", "pin_queued", "pinning", "pinned"];
    poll(Duration::from_secs(5), "allocated peers pinned", || {
        let st = statuses(&pin_status(&sim, 0, CID_A));
        check(&st, &moving[1..], &moving);
        st.iter().filter(|(p, _)| allocs.contains(*p)).all(|(_, s)| s == "pinned").then_some(())
    });

    // A re-pin queues the pin again on the allocated peers (§6.1 step 8), even though the
    // content is already pinned.
    let v = pin(&sim, 0, &q);
    assert_eq!(
        strs(&v["allocations"]).into_iter().collect::<BTreeSet<_>>(),
        allocs,
        "allocations kept"
    );
    check(
        &statuses(&pin_status(&sim, 0, CID_A)),
        &["pin_queued", "pinning"],
        &["pinned", "pin_queued", "pinning"],
    );
    poll(Duration::from_secs(5), "pinned again", || {
        let st = statuses(&pin_status(&sim, 0, CID_A));
        check(&st, &moving[1..], &moving[1..]);
        st.iter().filter(|(p, _)| allocs.contains(*p)).all(|(_, s)| s == "pinned").then_some(())
    });

    // Pin everywhere: every peer is allocated, none is remote.
    pin(&sim, 0, &format!("/pins/{CID_B}"));
    poll(Duration::from_secs(5), "everywhere pin pinned on all", || {
        let st = statuses(&pin_status(&sim, 0, CID_B));
        assert_eq!(st.len(), 3);
        assert!(st.values().all(|s| s != "remote"), "{st:?}");
        st.values().all(|s| s == "pinned").then_some(())
    });
}

#[test]
fn status_all_global_stream() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--pins", "12", "--seed", "3"]);
    let pins: Vec<Value> = get(&sim, 0, "/allocations").ndjson();
    assert_eq!(pins.len(), 12);
    poll(Duration::from_secs(5), "settled statuses", || {
        let r = get(&sim, 1, "/pins");
        assert_stream_ok(&r);
        let text = r.text();
        let items: Vec<&str> = text.lines().collect();
        assert_eq!(items.len(), 12, "{text}");
        let mut ok = true;
        for l in items {
            gpi_checks(l, &sim);
            let v: Value = serde_json::from_str(l).unwrap();
            let p = pins.iter().find(|p| p["cid"] == v["cid"]).expect("status item is a pin");
            let allocs = strs(&p["allocations"]);
            let st = statuses(&v);
            assert_eq!(st.len(), 3, "one entry per peer: {v}");
            for (peer, s) in st {
                if allocs.is_empty() || allocs.contains(&peer) {
                    assert_ne!(s, "remote", "allocated peer is not remote: {v}");
                    ok &= s == "pinned";
                } else {
                    assert_eq!(s, "remote", "{v}");
                }
            }
        }
        ok.then_some(())
    });
}

#[test]
fn status_local_and_cids_modes() {
    let sim = sim3();
    pin(&sim, 0, &format!("/pins/{CID_A}"));
    pin(&sim, 0, &format!("/pins/{CID_B}?replication=1"));

    // local=true: one-entry peer_map, the receiving peer's.
    let r = get(&sim, 1, "/pins?local=true");
    assert_stream_ok(&r);
    let items = r.ndjson();
    assert!(items.iter().any(|v| v["cid"] == CID_A), "{}", r.text());
    for v in &items {
        let st = statuses(v);
        assert_eq!(st.keys().collect::<Vec<_>>(), [&sim.peers[1].id], "{v}");
    }

    // cids mode: one item per CID, filter ignored (even an invalid one).
    let missing = gen_cid(40, true);
    let r = get(&sim, 0, &format!("/pins?cids={CID_A},{CID_B},{missing}&filter=bogus"));
    assert_stream_ok(&r);
    let items = r.ndjson();
    let got: BTreeSet<String> =
        items.iter().map(|v| v["cid"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, [CID_A.to_string(), CID_B.to_string(), missing.clone()].into_iter().collect());
    for v in &items {
        let st = statuses(v);
        assert_eq!(st.len(), 3, "{v}");
        if v["cid"] == missing.as_str() {
            assert!(st.values().all(|s| s == "unpinned"), "{v}");
        }
    }
    let r = get(&sim, 0, &format!("/pins?cids={CID_A},notacid"));
    assert_error_prefix(&r, 400, "error decoding Cid:");
}

#[test]
fn status_filters() {
    let sim = sim3();
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?replication=2"));
    let allocs: BTreeSet<String> = strs(&v["allocations"]).into_iter().collect();
    poll(Duration::from_secs(5), "pinned", || {
        let st = statuses(&pin_status(&sim, 0, CID_A));
        st.iter().filter(|(p, _)| allocs.contains(*p)).all(|(_, s)| s == "pinned").then_some(())
    });

    for f in ["bogus", "unexpected_unpinned", "bogus,other"] {
        assert_error(&get(&sim, 0, &format!("/pins?filter={f}")), 400, "invalid filter value");
    }
    let r = get(&sim, 0, "/pins?filter=unexpectedly_unpinned");
    assert!(r.status == 204 || r.status == 200, "{}", ctx(&r));
    if r.status == 204 {
        assert!(r.body.is_empty());
    } else {
        assert_stream_ok(&r);
        for v in r.ndjson() {
            assert!(statuses(&v).values().all(|s| s == "unexpectedly_unpinned"), "{v}");
        }
    }

    // A filter applies per peer entry.
    for f in ["pinned", "pinned,bogus", "%20pinned%20"] {
        let r = get(&sim, 0, &format!("/pins?filter={f}"));
        assert_stream_ok(&r);
        let items = r.ndjson();
        assert_eq!(items.len(), 1, "filter={f}: {}", r.text());
        let st = statuses(&items[0]);
        assert_eq!(
            st.keys().cloned().collect::<BTreeSet<_>>(),
            allocs,
            "filter={f}: only pinned peers"
        );
        assert!(st.values().all(|s| s == "pinned"));
    }
    let r = get(&sim, 0, "/pins?filter=remote");
    assert_stream_ok(&r);
    let items = r.ndjson();
    assert_eq!(items.len(), 1);
    let st = statuses(&items[0]);
    assert_eq!(st.len(), 1);
    assert!(!allocs.contains(st.keys().next().unwrap()));
    assert_eq!(st.values().next().unwrap(), "remote");

    let r = get(&sim, 0, "/pins?filter=pin_error");
    assert_eq!(r.status, 204, "{}", ctx(&r));
    assert!(r.body.is_empty());
}

#[test]
fn recover_local_with_nothing_to_recover_is_204() {
    let sim = Sim::start(&["--peers", "3", "--lag", "0", "--pins", "5", "--seed", "2"]);
    let r = post(&sim, 0, "/pins/recover?local=true");
    assert_eq!(r.status, 204, "{}", ctx(&r));
    assert!(r.body.is_empty(), "{:?}", r.text());
}

// ------------------------------------------------------------------------------------------
// §7 per-peer reads

#[test]
fn per_peer_reads_read_your_writes_then_lag() {
    let sim = Sim::start(&["--peers", "3", "--lag", "2s..2s"]);
    let t0 = Instant::now();
    let v = pin(&sim, 0, &format!("/pins/{CID_A}?name=lagged&meta-org=acme"));
    assert_eq!(v["name"], "lagged");
    let on0 = stored(&sim, 0, CID_A);
    assert_eq!(on0["metadata"], json!({"org": "acme"}));

    let r = get(&sim, 1, &format!("/allocations/{CID_A}"));
    let early = t0.elapsed();
    assert!(early < Duration::from_millis(1500), "machine too slow for this check ({early:?})");
    assert_error(&r, 404, NOT_IN_PINSET);
    // Peer1's status view: not in its replica → all unpinned.
    let st = statuses(&pin_status(&sim, 1, CID_A));
    assert!(st.values().all(|s| s == "unpinned"), "{st:?}");

    let on1 = poll(Duration::from_secs(8), "pin visible on peer1", || {
        let r = get(&sim, 1, &format!("/allocations/{CID_A}"));
        (r.status == 200).then(|| r.json())
    });
    assert!(t0.elapsed() >= Duration::from_millis(1900), "visible on peer1 only after the 2s lag");
    assert_eq!(on1, on0, "same stored pin on both peers");
}
