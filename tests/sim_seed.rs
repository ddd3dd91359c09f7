//! Seeding (docs/simulator.md "Seeding", `--pins/--seed/--from`) checked against the stored form of
//! docs/cluster-api.md §2.1, and the peer IDs announced on the first stdout line (§2).

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

const ORGS: [&str; 5] = ["hrdag", "amnesty", "witness", "bellingcat", "memorial"];

/// Bytes of an Ed25519 libp2p peer ID (identity multihash of the protobuf public key).
const ED25519_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

fn allocations(sim: &Sim, peer: usize) -> RawResponse {
    let r = raw(sim.url(peer), "GET", "/allocations", &[], b"");
    assert_eq!(r.status, 200, "GET /allocations on peer{peer}: {}", r.text());
    assert!(r.complete, "stream ended early on peer{peer}");
    assert_eq!(r.trailer("X-Stream-Error"), Some(""), "clean stream on peer{peer}");
    r
}

/// An Ed25519 peer ID from 32 key bytes.
fn peer_id(key: [u8; 32]) -> String {
    let mut b = ED25519_PREFIX.to_vec();
    b.extend_from_slice(&key);
    bs58::encode(b).into_string()
}

fn assert_valid_peer_id(id: &str) {
    assert!(id.starts_with("12D3KooW"), "Ed25519 peer IDs start with 12D3KooW: {id}");
    let bytes = bs58::decode(id)
        .into_vec()
        .unwrap_or_else(|e| panic!("peer ID {id} is not base58btc: {e}"));
    assert_eq!(bytes.len(), 38, "identity multihash of a 36-byte Ed25519 public key: {id}");
    assert_eq!(bytes[..6], ED25519_PREFIX, "identity multihash of an Ed25519 key: {id}");
}

/// RFC 3339 check for the stored form: UTC, second precision.
fn assert_stored_time(t: &str, what: &str) {
    let parsed = chrono::DateTime::parse_from_rfc3339(t)
        .unwrap_or_else(|e| panic!("{what} {t:?} is not RFC 3339: {e}"));
    assert!(t.ends_with('Z'), "{what} {t:?} is rendered in UTC");
    assert_eq!(parsed.timestamp_subsec_nanos(), 0, "{what} {t:?} has second precision");
    assert!(!t.contains('.'), "{what} {t:?} has no fraction");
}

/// RFC 4648 base32, upper case, no padding: the datastore key of a binary CID.
fn base32_key(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The keys of a JSON object line in their textual order.
fn key_order(line: &str) -> Vec<String> {
    // Only the top-level keys: walk the text tracking depth and strings.
    let (mut depth, mut in_str, mut esc) = (0, false, false);
    let mut keys = Vec::new();
    let mut cur = String::new();
    let mut expect_key = false;
    for ch in line.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
                if depth == 1 && expect_key {
                    keys.push(std::mem::take(&mut cur));
                    expect_key = false;
                }
                continue;
            }
            if depth == 1 && expect_key {
                cur.push(ch);
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    expect_key = true;
                }
            }
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => expect_key = true,
            _ => {}
        }
    }
    keys
}

#[test]
fn seeded_pins_are_on_every_peer_and_valid() {
    let sim = Sim::start(&["--peers", "3", "--pins", "2000", "--seed", "7"]);
    let s = sim.state();
    assert_eq!(s["converged"], true, "seeded replicas start settled: {s}");
    let first = allocations(&sim, 0);
    let pins = first.ndjson();
    assert_eq!(pins.len(), 2000);
    for peer in 0..3 {
        assert_eq!(s["peers"][peer]["pins"], 2000, "{s}");
        if peer > 0 {
            assert_eq!(
                allocations(&sim, peer).text(),
                first.text(),
                "peer{peer} starts with the same replica"
            );
        }
    }
    let mut seen = BTreeSet::new();
    let mut keys = Vec::new();
    for p in &pins {
        let s = p["cid"].as_str().expect("cid string");
        let c = cid::Cid::try_from(s).unwrap_or_else(|e| panic!("invalid CID {s:?}: {e}"));
        assert_eq!(c.to_string(), s, "canonical CID string");
        if s.starts_with("Qm") {
            assert_eq!(c.version(), cid::Version::V0, "{s}");
        } else {
            assert!(s.starts_with("bafy"), "CIDv1 strings look like bafy…: {s}");
            assert_eq!(c.version(), cid::Version::V1, "{s}");
        }
        assert!(seen.insert(s.to_string()), "duplicate CID {s}");
        keys.push(base32_key(&c.to_bytes()));
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert!(
        keys == sorted,
        "/allocations streams in datastore-key order (base32 of the binary CID)"
    );
}

/// Sleeps until the wall clock is in a later second than now (at most about 1s).
fn into_next_second() {
    let t = chrono::Utc::now().timestamp();
    while chrono::Utc::now().timestamp() == t {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pins of a body with their time fields blanked.
fn without_times(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let exp = v["expire_at"] != ZERO_TIME;
            v["timestamp"] = Value::Null;
            v["expire_at"] = Value::Bool(exp);
            v
        })
        .collect()
}

#[test]
fn seed_determines_the_pinset() {
    let a = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "7"]);
    into_next_second();
    let b = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "7"]);
    let c = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "8"]);
    let body_a = allocations(&a, 0).text();
    let body_b = allocations(&b, 0).text();
    let (ta, tb) = (without_times(&body_a), without_times(&body_b));
    assert_eq!(ta.len(), 300);
    if let Some((x, y)) = ta.iter().zip(&tb).find(|(x, y)| x != y) {
        panic!("the same seed gives different pins (times aside):\n{x}\n{y}");
    }
    assert_eq!(ta, tb);
    let cids = |sim: &Sim| -> BTreeSet<String> {
        allocations(sim, 0)
            .ndjson()
            .iter()
            .map(|p| p["cid"].as_str().unwrap().to_string())
            .collect()
    };
    let (ca, cc) = (cids(&a), cids(&c));
    assert_eq!(cc.len(), 300);
    assert!(ca.intersection(&cc).count() < 30, "a different seed gives different CIDs");
    assert_ne!(ta, without_times(&allocations(&c, 0).text()));
}

#[test]
fn same_seed_output_is_identical_across_runs() {
    let a = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "7"]);
    // A later start must not change the output: the pins come from the seed alone.
    into_next_second();
    let b = Sim::start(&["--peers", "2", "--pins", "300", "--seed", "7"]);
    let body_a = allocations(&a, 0).text();
    let body_b = allocations(&b, 0).text();
    if let Some((x, y)) = body_a.lines().zip(body_b.lines()).find(|(x, y)| x != y) {
        panic!(
            "the same seed, started a second later, gives different output; first difference:\n{x}\n{y}"
        );
    }
    assert_eq!(body_a, body_b);
}

#[test]
fn seeded_mix_matches_the_documented_proportions() {
    let sim = Sim::start(&["--peers", "5", "--pins", "2000", "--seed", "7"]);
    let ids: BTreeSet<&str> = sim.peers.iter().map(|p| p.id.as_str()).collect();
    let r = allocations(&sim, 0);
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2000);
    let now = chrono::Utc::now();

    let mut n = BTreeMap::<&str, usize>::new();
    let mut bump = |k: &'static str| *n.entry(k).or_default() += 1;
    for line in &lines {
        assert_eq!(key_order(line), PIN_FIELDS, "stored-form field order (§2.1): {line}");
        let p: Value = serde_json::from_str(line).unwrap();
        let cid = p["cid"].as_str().unwrap();
        if cid.starts_with("Qm") {
            bump("v0");
        }
        // Stored form invariants.
        assert_eq!(p["type"], "pin", "{line}");
        assert_eq!(p["shard_size"], 0, "{line}");
        assert_eq!(p["user_allocations"], Value::Null, "never stored: {line}");
        assert_eq!(p["pin_update"], Value::Null, "{line}");
        assert_eq!(p["reference"], Value::Null, "{line}");
        assert_stored_time(p["timestamp"].as_str().expect("timestamp"), "timestamp");
        // Names.
        let name = p["name"].as_str().expect("name string");
        if name.is_empty() {
            bump("empty-name");
        }
        // Replication and allocations.
        let (rmin, rmax) = (
            p["replication_factor_min"].as_i64().unwrap(),
            p["replication_factor_max"].as_i64().unwrap(),
        );
        let allocs = p["allocations"].as_array().expect("allocations is an array, never null");
        assert_eq!(rmin == -1, rmax == -1, "rf -1 on both or neither: {line}");
        assert_eq!(
            allocs.is_empty(),
            rmin == -1,
            "allocations non-empty exactly when rf is not -1: {line}"
        );
        if rmin == -1 {
            bump("everywhere");
        } else {
            assert!(
                (2..=3).contains(&rmin) && (3..=4).contains(&rmax) && rmin <= rmax,
                "rf {rmin}/{rmax}: {line}"
            );
            assert!(
                (rmin as usize..=rmax as usize).contains(&allocs.len()),
                "between min and max allocations: {line}"
            );
            let distinct: BTreeSet<&str> = allocs.iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(distinct.len(), allocs.len(), "distinct allocations: {line}");
            assert!(distinct.is_subset(&ids), "allocations are cluster peers: {line}");
        }
        // Mode.
        match (p["mode"].as_str(), p["max_depth"].as_i64()) {
            (Some("recursive"), Some(-1)) => {}
            (Some("direct"), Some(0)) => bump("direct"),
            other => panic!("mode/max_depth {other:?}: {line}"),
        }
        // Expiry.
        let exp = p["expire_at"].as_str().expect("expire_at");
        if exp != ZERO_TIME {
            assert_stored_time(exp, "expire_at");
            let t = chrono::DateTime::parse_from_rfc3339(exp).unwrap();
            assert!(t > now, "expiring pins expire in the future: {line}");
            bump("expiring");
        }
        // Origins: [] when empty in the stored form.
        let origins = p["origins"].as_array().expect("origins is an array, never null");
        if !origins.is_empty() {
            bump("origins");
            for o in origins {
                assert!(
                    o.as_str().is_some_and(|o| o.starts_with('/') && o.contains("/p2p/")),
                    "origin multiaddr: {line}"
                );
            }
        }
        // Metadata: null when empty.
        match &p["metadata"] {
            Value::Null => bump("no-org"),
            Value::Object(m) => {
                assert!(!m.is_empty(), "empty metadata is stored as null: {line}");
                assert!(m.values().all(Value::is_string), "{line}");
                match m.get("org").map(|v| v.as_str().unwrap()) {
                    None => {
                        bump("no-org");
                        bump("other-keys");
                    }
                    Some("") => bump("org-empty"),
                    Some(org) => {
                        assert!(
                            ORGS.contains(&org),
                            "org is one of the other organisations: {org:?}"
                        );
                        bump("org");
                    }
                }
            }
            other => panic!("metadata {other}: {line}"),
        }
    }
    let get = |k: &str| n.get(k).copied().unwrap_or(0);
    let between = |k: &str, lo: usize, hi: usize| {
        let v = get(k);
        assert!(
            (lo..=hi).contains(&v),
            "{k}: {v} of 2000 pins, expected {lo}..={hi} (counts: {n:?})"
        );
    };
    between("v0", 1200, 1600); // ~70% CIDv0
    between("everywhere", 1000, 1400); // 60% -1/-1
    between("no-org", 1400, 1800); // ~80% without org
    between("other-keys", 1, 1600); // some of them with project/source
    between("org", 200, 600); // ~20% another organisation
    between("org-empty", 1, 100); // a few org=""
    between("direct", 10, 100); // ~2%
    between("expiring", 10, 100); // ~2%
    between("origins", 20, 140); // ~3%
    between("empty-name", 1, 200); // a few empty names
}

#[test]
fn from_file_serves_back_exactly_those_pins() {
    let p1 = peer_id([1; 32]);
    let p2 = peer_id([2; 32]);
    let origin = format!("/ip4/10.0.0.1/tcp/4001/p2p/{p1}");
    let v0 = "QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME";
    let v1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    let v0b = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    let v0c = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    let lines = [
        // Metadata (keys sorted) and origins.
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"dataset-0001/file-01.csv","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":{{"org":"hrdag","project":"census"}},"pin_update":null,"origins":["{origin}"],"cid":"{v0}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2024-04-17T15:42:28Z"}}"#
        ),
        // A direct pin with allocations.
        format!(
            r#"{{"replication_factor_min":2,"replication_factor_max":3,"name":"direct one","mode":"direct","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":[],"cid":"{v1}","type":"pin","allocations":["{p1}","{p2}"],"max_depth":0,"reference":null,"timestamp":"2023-01-02T03:04:05Z"}}"#
        ),
        // A future expiry, org="".
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"2099-12-31T23:59:59Z","metadata":{{"org":""}},"pin_update":null,"origins":[],"cid":"{v0b}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2025-06-30T12:00:00Z"}}"#
        ),
        // The plain real-world shape.
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":[],"cid":"{v0c}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2024-04-17T15:42:28Z"}}"#
        ),
    ];
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for l in &lines {
        writeln!(file, "{l}").unwrap();
    }
    file.flush().unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let sim = Sim::start(&["--peers", "3", "--from", &path]);

    let want: BTreeSet<String> = lines.iter().cloned().collect();
    let want_values: BTreeSet<String> =
        lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap().to_string()).collect();
    for peer in 0..3 {
        let r = allocations(&sim, peer);
        let got_values: BTreeSet<String> = r.ndjson().iter().map(Value::to_string).collect();
        assert_eq!(got_values, want_values, "peer{peer}: field-for-field the loaded pins");
        let got: BTreeSet<String> = r.text().lines().map(str::to_string).collect();
        assert_eq!(
            got, want,
            "peer{peer}: the stored form, byte for byte (field order, sorted keys)"
        );
        for l in &lines {
            let cid =
                serde_json::from_str::<Value>(l).unwrap()["cid"].as_str().unwrap().to_string();
            let r = raw(sim.url(peer), "GET", &format!("/allocations/{cid}"), &[], b"");
            assert_eq!(r.status, 200, "GET /allocations/{cid} on peer{peer}: {}", r.text());
            assert_eq!(
                r.json(),
                serde_json::from_str::<Value>(l).unwrap(),
                "GET /allocations/{cid} on peer{peer}"
            );
        }
    }
    let s = sim.state();
    assert_eq!(s["converged"], true, "{s}");
    for peer in 0..3 {
        assert_eq!(s["peers"][peer]["pins"], 4, "{s}");
    }
}

#[test]
fn announced_peer_ids_are_ed25519_libp2p_ids() {
    let sim = Sim::start(&["--peers", "5"]);
    assert_eq!(sim.peers.len(), 5);
    let mut ids = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for (i, p) in sim.peers.iter().enumerate() {
        assert_eq!(p.name, format!("peer{i}"));
        assert_valid_peer_id(&p.id);
        assert!(ids.insert(p.id.clone()), "distinct peer IDs");
        assert!(urls.insert(p.url.clone()), "distinct URLs");
        assert!(p.url.starts_with("http://127.0.0.1:"), "{}", p.url);
        let r = raw(&p.url, "GET", "/id", &[], b"");
        assert_eq!(r.status, 200);
        let id = r.json();
        assert_eq!(id["id"], p.id.as_str(), "GET /id on {} reports its own ID", p.name);
        assert_eq!(id["peername"], p.name.as_str());
    }
    // The helper itself recognises a well-formed ID.
    assert_valid_peer_id(&peer_id([7; 32]));
}
