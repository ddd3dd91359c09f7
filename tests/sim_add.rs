//! `POST /add` (issue 14, point 1): uploads as the real clients send them (one file, several
//! files, a nested directory with `wrap-with-directory`) to `ledger sim serve`, the answer lines'
//! form and order, the pin with the query's options on every peer, bad input; then the same
//! uploads to a real v1.1.6 cluster and to the simulator, whose CIDs and lines must be equal.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::realcluster::{RealCluster, RealOptions, V1_1_6, available};
use crate::util::{RawResponse, Sim, raw, try_raw};

const BOUNDARY: &str = "ledgerTestBoundary0123456789";

/// One part of an upload: a file with its bytes, or a directory (`None`).
pub struct Part {
    pub path: String,
    pub data: Option<Vec<u8>>,
}

pub fn file(path: &str, data: &[u8]) -> Part {
    Part { path: path.into(), data: Some(data.to_vec()) }
}

pub fn dir(path: &str) -> Part {
    Part { path: path.into(), data: None }
}

/// The body boxo's `MultiFileReader` (form mode) writes, as `ipfs-cluster-ctl add` and the Go
/// client send it: `form-data; name="file"; filename="<query-escaped path>"`, directories as
/// `application/x-directory`.
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        let escaped: String = url::form_urlencoded::byte_serialize(p.path.as_bytes()).collect();
        let ct =
            if p.data.is_some() { "application/octet-stream" } else { "application/x-directory" };
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{escaped}\"\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(p.data.as_deref().unwrap_or_default());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn add(url: &str, auth: &[(&str, &str)], query: &str, body: &[u8]) -> RawResponse {
    try_add(url, auth, query, body).unwrap_or_else(|e| panic!("POST /add?{query} on {url}: {e}"))
}

pub fn try_add(
    url: &str,
    auth: &[(&str, &str)],
    query: &str,
    body: &[u8],
) -> Result<RawResponse, String> {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut headers = vec![("Content-Type", ct.as_str())];
    headers.extend_from_slice(auth);
    try_raw(url, "POST", &format!("/add?{query}"), &headers, body)
}

fn start(peers: usize) -> Sim {
    Sim::start(&["--peers", &peers.to_string(), "--lag", "0..20ms"])
}

fn ids(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();
    v.sort();
    v
}

fn sorted_allocations(line: &Value) -> Vec<String> {
    let mut v: Vec<String> = line["allocations"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every peer's stored pin of `cid` once the replicas agree.
fn stored_everywhere(sim: &Sim, cid: &str) -> Vec<Value> {
    sim.wait_converged(Duration::from_secs(10));
    (0..sim.peers.len())
        .map(|i| {
            let r = raw(sim.url(i), "GET", &format!("/allocations/{cid}"), &[], b"");
            assert_eq!(r.status, 200, "peer{i} lacks {cid}: {}", r.text());
            r.json()
        })
        .collect()
}

#[test]
fn one_file_is_one_line_and_a_pin_with_the_query_options_on_every_peer() {
    let sim = start(3);
    let body = multipart(&[file("hello.txt", b"hello world\n")]);
    let r = add(sim.url(1), &[], "name=greeting&meta-org=hrdag&meta-env=prod", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-Chunked-Output"), Some("1"));
    assert_eq!(r.header("Trailer"), Some("X-Stream-Error"));
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.complete, "the stream ends with its last chunk");
    assert_eq!(r.trailer("X-Stream-Error"), None, "no error: no trailer value at all");
    let lines = r.ndjson();
    assert_eq!(lines.len(), 1, "{}", r.text());
    // The CID and size every IPFS implementation gives `hello world\n`.
    let cid = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    let keys: Vec<&str> = lines[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "cid", "size", "allocations"], "field order: {}", r.text());
    assert_eq!(lines[0]["name"], "hello.txt");
    assert_eq!(lines[0]["cid"], cid);
    assert_eq!(lines[0]["size"], 20);
    assert_eq!(sorted_allocations(&lines[0]), ids(&sim), "replication -1: every peer");
    for pin in stored_everywhere(&sim, cid) {
        assert_eq!(pin["name"], "greeting");
        assert_eq!(pin["metadata"], json!({"env": "prod", "org": "hrdag"}));
        assert_eq!(pin["replication_factor_min"], -1);
        assert_eq!(pin["allocations"], json!([]));
        assert_eq!(pin["mode"], "recursive");
        assert_eq!(pin["max_depth"], -1);
    }
}

#[test]
fn user_allocations_and_expiry_reach_the_pin() {
    let sim = start(3);
    let target = sim.peers[2].id.clone();
    let q = format!("replication=1&user-allocations={target}&expire-in=1h&meta-org=amnesty");
    let r = add(sim.url(0), &[], &q, &multipart(&[file("x.bin", b"some content")]));
    let lines = r.ndjson();
    assert_eq!(lines[0]["allocations"], json!([target]), "{}", r.text());
    let cid = lines[0]["cid"].as_str().unwrap();
    for pin in stored_everywhere(&sim, cid) {
        assert_eq!(pin["allocations"], json!([target]));
        assert_eq!(
            (pin["replication_factor_min"].clone(), pin["replication_factor_max"].clone()),
            (json!(1), json!(1))
        );
        assert_ne!(pin["expire_at"], "0001-01-01T00:00:00Z", "{pin}");
        assert_eq!(pin["metadata"], json!({"org": "amnesty"}));
    }
    // `no-pin`: the lines, no pin.
    let r = add(sim.url(0), &[], "no-pin=true", &multipart(&[file("y", b"not pinned")]));
    let cid = r.ndjson()[0]["cid"].as_str().unwrap().to_string();
    let got = raw(sim.url(0), "GET", &format!("/allocations/{cid}"), &[], b"");
    assert_eq!(got.status, 404, "{}", got.text());
    // Not enough peers for the replication asked: the trailer says so, nothing is pinned.
    let r =
        add(sim.url(0), &[], "replication-min=4&replication-max=4", &multipart(&[file("z", b"z")]));
    let e = r.trailer("X-Stream-Error").unwrap_or_default().to_string();
    assert!(e.starts_with("not enough peers to allocate CID"), "{e:?} {}", r.text());
}

#[test]
fn several_files_get_a_line_each_and_the_last_one_is_pinned() {
    let sim = start(2);
    let body = multipart(&[file("a.txt", b"first"), file("b.txt", b"second"), file("c.txt", b"")]);
    let r = add(sim.url(0), &[], "meta-org=witness", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.ndjson();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.txt", "b.txt", "c.txt"]);
    assert_eq!(lines[2]["cid"], "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", "the empty file");
    assert_eq!(lines[2]["size"], 6);
    let last = lines[2]["cid"].as_str().unwrap();
    stored_everywhere(&sim, last);
    let first = lines[0]["cid"].as_str().unwrap();
    let r = raw(sim.url(0), "GET", &format!("/allocations/{first}"), &[], b"");
    assert_eq!(r.status, 404, "only the last entry's root is pinned: {}", r.text());
}

fn nested() -> Vec<Part> {
    vec![
        dir("docs"),
        file("docs/readme.md", b"# readme\n"),
        dir("docs/sub"),
        file("docs/sub/data.csv", &vec![b'x'; 300_000]),
        dir("docs/sub/deeper"),
        file("docs/sub/deeper/z.txt", b"z"),
        dir("docs/empty"),
        file("docs/a b&c.txt", b"odd name"),
    ]
}

#[test]
fn a_nested_directory_wrapped_answers_files_then_directories_children_first() {
    let sim = start(3);
    let r = add(
        sim.url(0),
        &[],
        "wrap-with-directory=true&name=tree&replication-min=2&replication-max=2",
        &multipart(&nested()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.trailer("X-Stream-Error"), None, "{:?}", r.trailers);
    let lines = r.ndjson();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "docs/readme.md",
            "docs/sub/data.csv",
            "docs/sub/deeper/z.txt",
            "docs/a b&c.txt",
            "docs/empty",
            "docs/sub/deeper",
            "docs/sub",
            "docs",
            "",
        ],
        "{}",
        r.text()
    );
    assert!(r.text().contains("docs/a b\\u0026c.txt"), "Go escapes & in JSON: {}", r.text());
    assert_eq!(lines[4]["cid"], "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn", "empty dir");
    let allocs = sorted_allocations(&lines[0]);
    assert_eq!(allocs.len(), 2, "replication 2: two peers: {}", r.text());
    assert!(lines.iter().all(|l| sorted_allocations(l) == allocs), "one allocation per add");
    let root = lines[8]["cid"].as_str().unwrap();
    for pin in stored_everywhere(&sim, root) {
        assert_eq!(pin["name"], "tree");
        assert_eq!(pin["replication_factor_min"], 2);
        let mut a: Vec<String> = serde_json::from_value(pin["allocations"].clone()).unwrap();
        a.sort();
        assert_eq!(a, allocs, "the pin is allocated to the peers that got the blocks");
    }
    // The same tree with CIDv1: dag-pb nodes `bafy…`, raw leaves `bafk…`.
    let r = add(sim.url(0), &[], "wrap-with-directory=true&cid-version=1", &multipart(&nested()));
    let lines = r.ndjson();
    assert!(lines[0]["cid"].as_str().unwrap().starts_with("bafk"), "{}", r.text());
    assert!(lines[1]["cid"].as_str().unwrap().starts_with("bafy"), "two leaves: a node");
    assert!(lines[8]["cid"].as_str().unwrap().starts_with("bafy"));
}

#[test]
fn bad_input_is_answered_as_the_real_cluster_does() {
    let sim = start(1);
    let url = sim.url(0);
    let r = raw(url, "POST", "/add", &[("Content-Type", "text/plain")], b"hello");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": 400, "message": "request Content-Type isn't multipart/form-data"})
    );
    let r = raw(url, "POST", "/add", &[("Content-Type", "multipart/form-data")], b"hello");
    assert_eq!(r.json()["message"], "no multipart boundary param in Content-Type");
    let body = multipart(&[file("a", b"a")]);
    let r = add(url, &[], "cid-version=one", &body);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("parameter cid-version invalid"))
    );
    let r = add(url, &[], "replication-min=x", &body);
    assert_eq!(r.json()["message"], "parameter replication-min invalid");
    // Errors after the answer has begun go in the trailer of a 200, and nothing is pinned.
    for (q, e) in [
        ("chunker=bogus", "unrecognized chunker option: bogus"),
        ("chunker=size-0", "chunker size must be greater than 0"),
        ("hash=nohash", "hash function name not known"),
        ("cid-version=2", "bad CID Version: unknown CID version: 2"),
    ] {
        let r = add(url, &[], q, &body);
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.trailer("X-Stream-Error"), Some(e), "{q}: {}", r.text());
        assert!(r.ndjson().is_empty(), "{q}: {}", r.text());
    }
    // A body cut inside a part.
    let mut cut = multipart(&[file("a", b"some bytes")]);
    cut.truncate(cut.len() - BOUNDARY.len() - 10);
    let r = add(url, &[], "", &cut);
    let e = r.trailer("X-Stream-Error");
    assert_eq!(e, Some("multipart: NextPart: EOF"), "{}", r.text());
    assert_eq!(r.ndjson()[0]["size"], 16, "the bytes before the cut are the file: {}", r.text());
    let pins = raw(url, "GET", "/allocations", &[], b"");
    assert_eq!(pins.status, 204, "nothing pinned: {}", pins.text());
}

#[test]
fn a_directory_a_real_peer_would_shard_is_refused_not_miscounted() {
    let sim = start(1);
    // 5,000 links of a 20-byte name and a 34-byte CID: 270,000 bytes, past boxo's 256 KiB.
    let parts: Vec<Part> =
        (0..5000).map(|i| file(&format!("big/file-{i:015}"), format!("{i}").as_bytes())).collect();
    let r = add(sim.url(0), &[], "", &multipart(&parts));
    let e = r.trailer("X-Stream-Error").unwrap_or_default();
    assert!(e.contains("HAMT-sharded directories"), "{e:?}");
    assert_eq!(raw(sim.url(0), "GET", "/allocations", &[], b"").status, 204, "nothing pinned");
    // 4,000 such links (216,000 bytes) make a plain directory.
    let r = add(sim.url(0), &[], "", &multipart(&parts[..4000]));
    assert_eq!(r.trailer("X-Stream-Error"), None);
    assert_eq!(r.ndjson().last().unwrap()["name"], "big");
}

#[test]
fn a_large_upload_streams_through_with_a_balanced_tree() {
    let sim = start(1);
    // 50 MiB: 200 leaves, so two levels of links (174 per node).
    let data: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = add(sim.url(0), &[], "raw-leaves=true", &multipart(&[file("big.bin", &data)]));
    let lines = r.ndjson();
    assert_eq!(lines.len(), 1, "{}", r.text());
    let size = lines[0]["size"].as_u64().unwrap();
    assert!(size > data.len() as u64 && size < data.len() as u64 + 20_000, "{size}");
}

/// The simulator's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(sim: &Sim) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sim.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

#[test]
fn an_upload_is_chunked_as_it_arrives_not_held() {
    use std::io::{Read, Write};
    let sim = start(1);
    let before = peak_rss_kib(&sim);
    const SIZE: usize = 128 * 1024 * 1024;
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let hostport = sim.url(0).trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&hostport).expect("connect");
    let len = head.len() + SIZE + tail.len();
    write!(
        s,
        "POST /add?raw-leaves=true HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\n\r\n{head}"
    )
    .unwrap();
    let piece = vec![0x5au8; 1024 * 1024];
    for _ in 0..SIZE / piece.len() {
        s.write_all(&piece).expect("the simulator reads the upload");
    }
    s.write_all(tail.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"name\":\"big\""), "{answer}");
    let grew = peak_rss_kib(&sim).saturating_sub(before);
    assert!(grew < 64 * 1024, "a 128 MiB upload grew the simulator by {grew} KiB");
}

/// The comparison cases: files and parameters.
fn cases() -> Vec<(&'static str, Vec<Part>)> {
    let mib5: Vec<u8> =
        (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    vec![
        ("empty", vec![file("empty", b"")]),
        ("one byte", vec![file("one", b"1")]),
        ("256 KiB", vec![file("exact", &vec![7u8; 262144])]),
        ("256 KiB + 1", vec![file("over", &vec![9u8; 262145])]),
        ("5 MiB", vec![file("big", &mib5)]),
        ("several files", vec![file("a", b"a"), file("b", b"bb")]),
        ("nested directory", nested()),
    ]
}

fn compare(real: &RealCluster, sim: &Sim, name: &str, query: &str, parts: &[Part]) {
    compare_raw(real, sim, name, query, &multipart(parts));
}

fn compare_raw(real: &RealCluster, sim: &Sim, name: &str, query: &str, body: &[u8]) {
    let (a, b) = match (
        try_add(real.url(0), &real.auth(), query, body),
        try_add(sim.url(0), &[], query, body),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        // No answer at all (the real adder's goroutine panics on an upload of no part).
        (Err(_), Err(_)) => return,
        (a, b) => panic!("{name} ?{query}: real {a:?}, sim {b:?}"),
    };
    let strip = |r: &RawResponse| -> Vec<Value> {
        r.ndjson()
            .into_iter()
            .flat_map(|l| match l {
                Value::Array(items) => items,
                l => vec![l],
            })
            .map(|mut l| {
                let n = sorted_allocations(&l).len();
                l["allocations"] = json!(n);
                l
            })
            .collect()
    };
    assert_eq!(a.status, b.status, "{name} {query}");
    for h in ["Content-Type", "Cache-Control", "Connection", "Trailer", "X-Chunked-Output"] {
        assert_eq!(a.header(h), b.header(h), "{name} ?{query}: header {h}");
    }
    if std::env::var_os("LEDGER_SHOW_ADD").is_some() {
        eprintln!("{name} ?{query}: {} {:?}\n{}", a.status, a.trailers, a.text());
    }
    assert_eq!(strip(&a), strip(&b), "{name} ?{query}\nreal: {}\nsim: {}", a.text(), b.text());
    assert_eq!(a.trailer("X-Stream-Error"), b.trailer("X-Stream-Error"), "{name} {query}");
}

#[test]
fn the_real_cluster_gives_the_same_cids_and_lines() {
    if !available(V1_1_6) {
        return;
    }
    let real = RealCluster::start(RealOptions::new(V1_1_6, 2));
    let sim = start(2);
    let queries =
        ["", "cid-version=1", "raw-leaves=true", "wrap-with-directory=true", "progress=true"];
    for query in queries {
        for (name, parts) in cases() {
            compare(&real, &sim, name, query, &parts);
        }
    }
    compare(&real, &sim, "chunker", "chunker=size-1000", &[file("x", &vec![1u8; 5000])]);
    let wide: Vec<Part> =
        (0..4000).map(|i| file(&format!("big/file-{i:015}"), format!("{i}").as_bytes())).collect();
    compare(&real, &sim, "4,000 links, just under the HAMT threshold", "", &wide);
    let two = [file("d1/a", b"a"), file("d2/b", b"b")];
    compare(&real, &sim, "two top-level directories share one MFS root", "", &two);
    let mixed = [file("f", b"file first"), dir("d"), file("d/x", b"x")];
    compare(&real, &sim, "a file, then a directory", "", &mixed);
    compare(&real, &sim, "buffered", "stream-channels=false", &nested());
    let mut cut = multipart(&[file("a", b"some bytes")]);
    cut.truncate(cut.len() - BOUNDARY.len() - 10);
    compare_raw(&real, &sim, "cut body", "", &cut);
    compare_raw(&real, &sim, "cut body", "progress=true", &cut);
    compare_raw(&real, &sim, "no part", "", format!("--{BOUNDARY}--\r\n").as_bytes());
    compare(&real, &sim, "bad chunker", "chunker=bogus", &[file("x", b"x")]);
    compare(&real, &sim, "bad hash", "hash=nohash", &[file("x", b"x")]);
    for q in ["hash=sha2-512&cid-version=1", "hash=dbl-sha2-256&cid-version=1", "hash=sha2-512"] {
        compare(&real, &sim, "other hashes", q, &nested());
        compare(&real, &sim, "other hashes", q, &[file("x", &vec![4u8; 600_000])]);
    }
    // The pin the add makes, with its options, as every peer stores it.
    let q =
        "name=report&meta-org=hrdag&replication-min=1&replication-max=1&wrap-with-directory=true";
    let body = multipart(&nested());
    let a = add(real.url(0), &real.auth(), q, &body).ndjson();
    let b = add(sim.url(0), &[], q, &body).ndjson();
    let root = a.last().expect("lines")["cid"].clone();
    assert_eq!(root, b.last().expect("lines")["cid"]);
    let pin_of = |pins: Vec<Value>| -> Value {
        let mut p = pins.into_iter().find(|p| p["cid"] == root).expect("the root is pinned");
        p["timestamp"] = json!("t");
        p["allocations"] = json!(p["allocations"].as_array().map_or(0, Vec::len));
        p
    };
    let real_set = real.wait_converged(Duration::from_secs(60));
    sim.wait_converged(Duration::from_secs(10));
    let sim_set = crate::util::sorted_pinset(sim.url(1), &[]);
    // Every add pinned the same roots on both (only the last entry of an upload is pinned).
    let cids = |set: &[Value]| -> Vec<String> {
        set.iter().map(|p| p["cid"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(cids(&real_set), cids(&sim_set), "the pinned roots");
    let real_pin = pin_of(real_set);
    assert_eq!(real_pin, pin_of(sim_set));
    assert_eq!(real_pin["metadata"], json!({"org": "hrdag"}), "{real_pin}");
    real.assert_loopback_only();
}

/// `ipfs-cluster-ctl ARGS` (v1.1.6, unmodified) against a peer: exit code and stdout.
fn ctl(url: &str, args: &[&str]) -> (i32, String) {
    let port = url.rsplit(':').next().unwrap_or_default();
    let bin = crate::util::realcluster::cluster_bin(V1_1_6, "ipfs-cluster-ctl");
    let out = std::process::Command::new(bin)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .output()
        .expect("run ipfs-cluster-ctl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn ipfs_cluster_ctl_add_prints_the_same_on_the_real_cluster_and_the_simulator() {
    if !available(V1_1_6) {
        return;
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::write(tree.join("readme.md"), b"# tree\n").unwrap();
    std::fs::write(tree.join("sub/data.bin"), vec![3u8; 600_000]).unwrap();
    std::fs::write(tree.join("sub/deeper/z.txt"), b"z").unwrap();
    let one = tmp.path().join("one.txt");
    std::fs::write(&one, b"one file\n").unwrap();
    let (tree, one) = (tree.to_str().unwrap(), one.to_str().unwrap());
    let real = RealCluster::start(RealOptions::new(V1_1_6, 2));
    let sim = start(2);
    let runs: Vec<Vec<&str>> = vec![
        vec!["add", one],
        vec!["add", "-r", tree],
        vec!["add", "-r", "-w", "--name", "t", "--metadata", "org=hrdag", tree, one],
        vec!["add", "-r", "--cid-version", "1", tree],
        vec!["add", "--raw-leaves", "--chunker", "size-1024", one],
    ];
    for args in runs {
        let a = ctl(real.url(0), &args);
        let b = ctl(sim.url(0), &args);
        assert_eq!(a.0, 0, "{args:?} on the real cluster: {}", a.1);
        assert!(a.1.lines().count() >= 1, "{args:?}: {}", a.1);
        if std::env::var_os("LEDGER_SHOW_ADD").is_some() {
            eprintln!("{args:?}:\n{}", a.1);
        }
        assert_eq!(a, b, "{args:?}");
    }
    real.assert_loopback_only();
}
