//! Property tests over the parsers that read what others write, and the re-pin query as a round
//! trip: no input panics, and what ledger sends is what the cluster reads back.
//!
//! - `CanonicalPin::from_line` (the NDJSON pin parser) on arbitrary bytes and on pins with arbitrary
//!   names, keys and values;
//! - the re-pin request as a round trip: a pin's options → `cluster::repin::build` → the query string
//!   → the simulator's `url.ParseQuery` and `PinOptions.FromQuery` (both written from ipfs-cluster's
//!   source and held to the real cluster by tests/differential.rs) → the same options, over arbitrary
//!   Unicode keys and values, `& = ; + % #`, spaces, newlines and control characters included;
//!   a request ledger refuses to build is refused for a reason it states;
//! - the multiaddr/URL, Go duration, CID and credential parsers, and the configuration loader.
//!
//! Each property runs `LEDGER_FUZZ_CASES` cases (default 2,000, so the default `cargo test` stays
//! quick). The long run, `LEDGER_FUZZ_CASES=1000000 cargo test --release --test integration fuzz::`,
//! prints how many cases each property executed and which outcome classes they reached; its figures
//! are in reports/RELIABILITY.md.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use ledger::cluster::CanonicalPin;
use ledger::cluster::repin;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

fn cases() -> u32 {
    std::env::var("LEDGER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

/// Outcome classes a property reached: what its cases covered.
#[derive(Default)]
struct Classes(RefCell<BTreeMap<String, u64>>);

impl Classes {
    fn hit(&self, class: &str) {
        *self.0.borrow_mut().entry(class.to_string()).or_default() += 1;
    }
}

/// Runs `property` over `cases()` values of `strategy`, then prints how many cases ran and the
/// classes they reached (with `--nocapture`, or on failure).
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value, &Classes) -> Result<(), TestCaseError>,
) {
    let classes = Classes::default();
    let runs = Cell::new(0u64);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |v| {
        runs.set(runs.get() + 1);
        property(v, &classes)
    });
    let seen: Vec<String> = classes.0.borrow().iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!("fuzz {name}: {} cases executed; classes: {}", runs.get(), seen.join(", "));
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Text with the characters that break query strings, JSON and terminals, and any Unicode.
fn nasty_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        "&",
        "=",
        ";",
        "+",
        "%",
        "#",
        " ",
        "\n",
        "\r",
        "\t",
        "\u{0}",
        "\u{7f}",
        "\u{1b}[31m",
        "%zz",
        "%20",
        "?",
        "/",
        "\\",
        "\"",
        "é",
        "組織",
        "🦀",
        "\u{200b}",
        "\u{202e}",
        "meta-",
        "",
    ]);
    prop::collection::vec(prop_oneof![special.prop_map(str::to_string), any::<String>()], 0..6)
        .prop_map(|parts| parts.concat())
}

/// Inputs close to valid ones (so the cases reach the parsers' success paths too), and arbitrary
/// text.
fn input_text() -> impl Strategy<Value = String> {
    prop_oneof![
        nasty_text(),
        (0u64..100_000, prop::sample::select(vec!["ns", "us", "µs", "ms", "s", "m", "h", "", "x"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
            format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
        }),
        (any::<u16>(), nasty_text())
            .prop_map(|(port, path)| format!("http://127.0.0.1:{port}/{path}")),
        any::<[u8; 8]>().prop_map(|seed| ledger::ids::cid_v0(&seed)),
        any::<[u8; 8]>().prop_map(|seed| ledger::ids::cid_v1(&seed)),
        (2000u32..2100, 1u32..13, 1u32..29, 0u32..24, nasty_text())
            .prop_map(|(y, m, d, h, tail)| { format!("{y}-{m:02}-{d:02}T{h:02}:00:00Z{tail}") }),
    ]
}

/// A valid line with bytes changed, inserted or cut at random places.
fn mutated_pin_line() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4);
    edits.prop_map(|edits| {
        let mut line =
            pin_line("n", &BTreeMap::from([("k".into(), "v".into())]), (1, 2), false).into_bytes();
        for (at, byte, kind) in edits {
            let i = at.index(line.len());
            match kind {
                0 => line[i] = byte,
                1 => line.insert(i, byte),
                _ => line.truncate(i),
            }
            if line.is_empty() {
                break;
            }
        }
        line
    })
}

/// A stored pin as `GET /allocations` serves it, with the given name and metadata.
fn pin_line(name: &str, meta: &BTreeMap<String, String>, rep: (i32, i32), direct: bool) -> String {
    serde_json::json!({
        "cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "name": name,
        "allocations": ["12D3KooWSJxnDS6ao1hRbafTNvXFDMa2Yo3B1eL9v2fMnpLcDrq1"],
        "origins": [],
        "created": "2026-11-20T08:00:00Z",
        "metadata": meta,
        "pin_update": null,
        "replication_factor_max": rep.1,
        "replication_factor_min": rep.0,
        "shard_size": 0,
        "user_allocations": null,
        "expire_at": "2099-01-01T00:00:00Z",
        "max_depth": if direct { 0 } else { -1 },
        "mode": if direct { "direct" } else { "recursive" },
        "type": "pin",
        "timestamp": "2026-11-20T08:00:00Z",
        "reference": null,
    })
    .to_string()
}

#[test]
fn the_pin_parser_takes_any_bytes() {
    let bytes = prop_oneof![prop::collection::vec(any::<u8>(), 0..400), mutated_pin_line()];
    check("pin parser, any bytes", bytes, |bytes, c| {
        c.hit(if CanonicalPin::from_line(&bytes).is_ok() { "a pin" } else { "refused" });
        Ok(())
    });
}

/// A pin with arbitrary text in every text field parses, twice to the same version.
#[test]
fn a_pin_with_any_text_parses_to_one_version() {
    let pins = (
        nasty_text(),
        prop::collection::btree_map(nasty_text(), nasty_text(), 0..5),
        (-1i32..5, -1i32..5),
        any::<bool>(),
    );
    check("pin parser, any text", pins, |(name, meta, rep, direct), c| {
        let line = pin_line(&name, &meta, rep, direct);
        let pin = CanonicalPin::from_line(line.as_bytes()).expect("a well-formed pin parses");
        prop_assert_eq!(&pin.name, &name);
        prop_assert_eq!(&pin.metadata, &meta);
        let again = CanonicalPin::from_line(line.as_bytes()).unwrap();
        prop_assert_eq!(pin.digest(), again.digest());
        c.hit(if meta.is_empty() { "no metadata" } else { "metadata" });
        Ok(())
    });
}

/// The safe re-pin's query, read back as the cluster reads it, carries exactly the pin's options
/// and the change; a request ledger will not build is refused for the reason it says.
#[test]
fn the_repin_query_reads_back_as_the_same_options() {
    // Keys: half of them any text, half without the four separators ledger refuses in a key.
    let key = || {
        prop_oneof![nasty_text(), nasty_text().prop_map(|k| k.replace(['&', '=', ';', '#'], "_"))]
    };
    let cases = (
        nasty_text(),
        prop::collection::btree_map(key(), nasty_text(), 0..4),
        prop::collection::btree_map(key(), nasty_text(), 0..3),
        (-1i32..5, -1i32..5),
        any::<bool>(),
    );
    check("re-pin round trip", cases, |(name, meta, set, rep, direct), c| {
        let now = chrono::Utc::now();
        let pin = CanonicalPin::from_line(pin_line(&name, &meta, rep, direct).as_bytes()).unwrap();
        let mut want = meta.clone();
        want.extend(set.clone());
        match repin::build(&pin, &set, &[], now) {
            Ok(req) => {
                let q = ledger_sim::options::Query::parse(&req.query);
                let (po, err) = ledger_sim::options::from_query(&q, now);
                prop_assert_eq!(err, None, "the cluster refuses {}", req.query);
                prop_assert_eq!(&po.name, &name);
                prop_assert_eq!(&po.metadata, &want);
                prop_assert_eq!((po.replication_min, po.replication_max), rep);
                prop_assert_eq!(po.mode() == ledger_sim::pin::Mode::Direct, direct);
                prop_assert_eq!(req.path.starts_with("/pins/ipfs/"), direct);
                prop_assert_eq!(
                    po.expire_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    Some("2099-01-01T00:00:00Z".to_string())
                );
                prop_assert_eq!(&req.intended.metadata, &want);
                c.hit("sent and read back");
            }
            Err(repin::Refusal::BadKey(k)) => {
                prop_assert!(want.contains_key(&k));
                prop_assert!(repin::check_key(&k).is_err());
                c.hit("refused: key");
            }
            Err(repin::Refusal::BadValue(k)) => {
                prop_assert!(want[&k].chars().any(char::is_control), "{:?}", want[&k]);
                c.hit("refused: value");
            }
            Err(repin::Refusal::TooLong(n)) => {
                prop_assert!(n > repin::MAX_URL_BYTES);
                c.hit("refused: too long");
            }
            Err(other) => prop_assert!(false, "unexpected refusal {other}"),
        }
        Ok(())
    });
}

/// Addresses, durations, CIDs, times and credentials: a value or an error, never a panic.
#[test]
fn the_input_parsers_take_any_text() {
    check("input parsers", input_text(), |s, c| {
        let outcomes = [
            ("address", ledger::cluster::config::parse_address(&s).is_ok()),
            ("duration", ledger::ids::parse_go_duration(&s).is_ok()),
            ("cid", ledger::ids::parse_cid(&s).is_ok()),
            ("time", ledger::ids::parse_rfc3339(&s).is_ok()),
            ("credentials", ledger::cluster::Auth::parse(&s).is_ok()),
        ];
        for (what, ok) in outcomes {
            c.hit(&format!("{what}: {}", if ok { "value" } else { "error" }));
        }
        Ok(())
    });
}

/// Multiaddrs and URLs built from parts, with arbitrary hosts, ports and paths.
#[test]
fn addresses_from_parts_never_panic() {
    let parts = (
        prop::sample::select(vec!["ip4", "ip6", "dns", "dns4", "tcp", "unix", "x", ""]),
        nasty_text(),
        any::<u32>(),
        prop::sample::select(vec!["http", "https", "ftp", ""]),
    );
    check("addresses from parts", parts, |(proto, host, port, scheme), c| {
        for a in [
            format!("/{proto}/{host}/tcp/{port}"),
            format!("/{proto}/{host}/tcp/{port}/http"),
            format!("{scheme}://{host}:{port}/"),
            format!("{scheme}://u:p@{host}:{port}"),
        ] {
            let ok = ledger::cluster::config::parse_address(&a).is_ok();
            c.hit(if ok { "value" } else { "error" });
        }
        Ok(())
    });
}

/// Discovery's candidates from cluster addresses with arbitrary hosts: never a panic, and every
/// candidate is at the REST port given, on a host one of the member's addresses names, with no
/// userinfo, path, query or fragment.
#[test]
fn discovery_candidates_come_only_from_the_members_addresses() {
    let parts = (
        prop::sample::select(vec!["ip4", "ip6", "dns", "dns4", "dns6", "unix", "p2p-circuit", ""]),
        nasty_text(),
        any::<u16>(),
        prop::sample::select(vec!["http", "https"]),
    );
    check("discovery candidates", parts, |(proto, host, port, scheme), c| {
        let id = "12D3KooWAbC";
        let member = ledger::cluster::Member {
            id: id.into(),
            peername: String::new(),
            addresses: vec![
                format!("/{proto}/{host}/tcp/9096/p2p/{id}"),
                format!("/{proto}/{host}/tcp/9096/p2p/12D3KooWOther"),
                format!("/{proto}/{host}"),
            ],
            error: None,
        };
        let port = port.max(1);
        let urls = ledger::cluster::discover::candidates(&member, scheme, port, true);
        prop_assert!(urls.len() <= 1, "one host, at most one candidate: {urls:?}");
        for u in &urls {
            let h = u.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
            prop_assert!(host.to_ascii_lowercase().contains(&h), "{u} from {host:?}");
            prop_assert_eq!(u.port_or_known_default(), Some(port));
            prop_assert!(u.username().is_empty() && u.password().is_none(), "{}", u);
            prop_assert!(u.path() == "/" && u.query().is_none() && u.fragment().is_none(), "{}", u);
        }
        c.hit(if urls.is_empty() { "no candidate" } else { "a candidate" });
        Ok(())
    });
}

/// A well-formed ledger.toml with the given profile name, peers and credentials file.
fn config_file(name: &str, peers: &[String], creds: Option<&str>) -> String {
    let mut profile = toml::Table::new();
    profile.insert(
        "peers".into(),
        toml::Value::Array(peers.iter().cloned().map(toml::Value::String).collect()),
    );
    if let Some(c) = creds {
        profile.insert("credentials".into(), toml::Value::String(c.to_string()));
    }
    let mut clusters = toml::Table::new();
    clusters.insert(name.to_string(), toml::Value::Table(profile));
    let mut file = toml::Table::new();
    file.insert("default".into(), toml::Value::String(name.to_string()));
    file.insert("clusters".into(), toml::Value::Table(clusters));
    toml::to_string(&file).unwrap_or_default()
}

/// Any text as ledger.toml: a target or an error, never a panic.
#[test]
fn the_config_loader_takes_any_file() {
    let files = (
        prop_oneof![
            any::<String>(),
            (
                nasty_text(),
                prop::collection::vec(input_text(), 0..3),
                prop::option::of(nasty_text())
            )
                .prop_map(|(name, peers, creds)| config_file(
                    &name,
                    &peers,
                    creds.as_deref()
                )),
        ],
        prop::option::of(prop_oneof![nasty_text(), Just(String::new())]),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.toml");
    check("config loader", files, |(text, profile), c| {
        std::fs::write(&path, &text).unwrap();
        let env = |_: &str| None;
        let src = ledger::cluster::config::Sources {
            cluster: None,
            profile: profile.as_deref(),
            config: Some(&path),
            env: &env,
            discover: Default::default(),
        };
        c.hit(if ledger::cluster::config::resolve(&src).is_ok() { "a target" } else { "refused" });
        Ok(())
    });
}

/// Uploads as the simulator's `POST /add` reads them: any bytes, with boundaries and part heads
/// among them, cut into pieces of any size.
fn upload() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let bits = prop_oneof![
        Just(b"--B\r\n".to_vec()),
        Just(b"\r\n--B".to_vec()),
        Just(b"\r\n--B--\r\n".to_vec()),
        Just(
            b"Content-Disposition: form-data; name=\"file\"; filename=\"a%2F..%2Fb\"\r\n".to_vec()
        ),
        Just(b"Content-Type: application/x-directory\r\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    (proptest::collection::vec(bits, 0..12).prop_map(|v| v.concat()), 1usize..50)
}

#[test]
fn the_simulators_multipart_reader_takes_any_upload() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    check("multipart", upload(), |(body, piece), classes| {
        rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(body.len() + 1);
            for p in body.chunks(piece) {
                let _ = tx.send(Ok(p.to_vec())).await;
            }
            drop(tx);
            let mut m = ledger_sim::multipart::Multipart::new(rx, "B");
            let mut parts = 0usize;
            let end = loop {
                match m.next_part().await {
                    Ok(Some(_)) => {
                        parts += 1;
                        while let Ok(Some(d)) = m.read(13).await {
                            prop_assert!(!d.is_empty(), "an empty piece of a part");
                        }
                    }
                    Ok(None) => break "closing boundary",
                    Err(_) => break "error",
                }
                prop_assert!(parts <= body.len() + 1, "more parts than bytes");
            };
            classes.hit(&format!("{end} after {} parts", parts.min(3)));
            Ok(())
        })
    });
}
