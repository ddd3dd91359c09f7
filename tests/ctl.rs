//! The real client against the simulator: `ipfs-cluster-ctl` v1.1.6, unmodified, runs one script of
//! commands against `ledger sim serve` and against a real 3-peer v1.1.6 cluster, and every command's
//! exit code, stdout and stderr must be the same on both once what must differ is normalised.
//!
//! What is normalised, and why:
//! - Peer IDs, kubo IDs and peer names become `<peerR>`, `<ipfsR>` and `<nameR>`, where R is the
//!   peer's rank in cluster-peer-ID order. Rank, not start order, because the real cluster orders
//!   peers by ID (`cluster_peers`, the ctl's per-peer lines); the ctl always talks to rank 0.
//! - Times become `<time>` (whole seconds), `<time.ns>` (with a fraction) or `<date>` (the ctl's
//!   `2006-01-02 15:04:05`): the precision is compared, the clock is not. The zero time stays.
//! - Ports (`/tcp/N`, `127.0.0.1:N`): each side listens where it can.
//! - Streamed listings (`pin ls`, `status`, `peers ls`) are compared as sets of items: the real
//!   cluster emits them in map or RPC-completion order. `cluster_peers_addresses` is compared as a
//!   set: its order follows each peer's `peer_addresses` in service.json, which the harness writes
//!   in start order, not rank order. `allocations` is compared as a set: the real allocator ranks
//!   the peers it picks by their kubo's free space, which the simulator does not have (the ctl's
//!   text output sorts them itself).
//!
//! The CIDs are identity CIDs of labels (raw codec, identity multihash): kubo holds their content by
//! construction, so the real peers reach `pinned` as the simulator does, and a status can be compared
//! whole. The one sha2-256 CIDv0 of the script has no content anywhere, so on the real cluster it stays
//! `pinning` (IPFS is not simulated); it is listed with `pin ls` and removed before any `status`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::realcluster::*;
use crate::util::*;

const USER: &str = "ctl-user";
const PASS: &str = "ctl-pass";

#[test]
fn ctl_commands_give_the_same_answers_on_the_simulator_and_the_real_cluster() {
    if !available(V1_1_6) {
        return;
    }
    let started = Instant::now();
    let sim = run_scripts(Side::Sim);
    let sim_time = started.elapsed();
    let real = run_scripts(Side::Real);
    let mut diffs = Vec::new();
    assert_eq!(sim.len(), real.len(), "both sides ran the same script");
    for (s, r) in sim.iter().zip(&real) {
        assert_eq!(s.label, r.label);
        let same = s.code == r.code && s.stdout == r.stdout && s.stderr == r.stderr;
        let expected = s.code == s.want && r.code == r.want;
        eprintln!("{} ctl {}", if same && expected { "same" } else { "DIFF" }, s.label);
        if same && !expected {
            diffs.push(format!(
                "ctl {}: exit {} on both, the script expects {}:\n{}{}",
                s.label, s.code, s.want, s.stdout, s.stderr
            ));
        } else if !same {
            diffs.push(format!(
                "ctl {}\n--- sim (exit {}):\n{}{}\n--- real (exit {}):\n{}{}",
                s.label, s.code, s.stdout, s.stderr, r.code, r.stdout, r.stderr
            ));
        }
    }
    eprintln!(
        "{} ctl commands compared; simulator {:.1}s, whole test {:.1}s",
        sim.len(),
        sim_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(diffs.is_empty(), "{} commands differ:\n\n{}", diffs.len(), diffs.join("\n\n"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Sim,
    Real,
}

/// Both scripts on one side: the main one on a cluster without auth, the auth one on a cluster
/// with Basic auth. One cluster runs at a time.
fn run_scripts(side: Side) -> Vec<Step> {
    let mut steps = Vec::new();
    {
        let t = Target::start(side, false);
        main_script(&t, &mut steps);
    }
    {
        let t = Target::start(side, true);
        auth_script(&t, &mut steps);
    }
    steps
}

/// An identity CID (CIDv1, raw codec, identity multihash) of `label`.
fn id_cid(label: &str) -> String {
    let mh = multihash::Multihash::<64>::wrap(0x00, label.as_bytes()).unwrap();
    cid::Cid::new_v1(0x55, mh).to_string()
}

/// The labels a script names CIDs and peers by, as `{name}` in a command, and what each stands for.
fn vars(t: &Target) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ["a", "b", "c", "d", "e", "f", "none"]
        .iter()
        .map(|l| (format!("{{{l}}}"), id_cid(&format!("ctl-{l}"))))
        .collect();
    v.push(("{v0}".into(), ledger::ids::cid_v0(b"ctl-v0")));
    for (r, p) in t.peers.iter().enumerate() {
        v.push((format!("{{id{r}}}"), p.id.clone()));
    }
    v
}

/// The script on a cluster without auth.
fn main_script(t: &Target, steps: &mut Vec<Step>) {
    use Shape::*;
    t.run(steps, "version", One, 0);
    t.run(steps, "id", One, 0);
    t.run(steps, "--enc json id", One, 0);
    t.run(steps, "peers ls", Stream, 0);
    t.run(steps, "--enc json peers ls", Stream, 0);
    t.run(steps, "pin ls", Stream, 0);
    t.run(steps, "status", Stream, 0);
    // Pin, and by default wait about a second and print the status.
    t.run(steps, "pin add --name first --metadata org=hrdag --metadata note=a=b {a}", One, 0);
    t.run(steps, "--enc json pin add --no-status --name second --metadata org=witness {b}", One, 0);
    t.run(steps, "pin add --wait --name third {c}", One, 0);
    t.run(steps, "--enc json pin add --no-status --name v0 --metadata k=v {v0}", One, 0);
    t.settle();
    t.run(steps, "pin ls", Stream, 0);
    t.run(steps, "--enc json pin ls", Stream, 0);
    t.run(steps, "--enc json pin ls --filter pin", Stream, 0);
    t.run(steps, "pin ls --filter meta-pin", Stream, 0);
    t.run(steps, "pin ls --filter bogus", Stream, 0);
    t.run(steps, "pin ls {a}", One, 0);
    t.run(steps, "--enc json pin ls {v0}", One, 0);
    t.run(steps, "pin ls {none}", One, 2);
    // The CIDv0 has no content: remove it before any status (see the module doc).
    t.run(steps, "pin rm --no-status {v0}", One, 0);
    t.settle_statuses();
    t.run(steps, "status", Stream, 0);
    t.run(steps, "--enc json status", Stream, 0);
    t.run(steps, "status --local", Stream, 0);
    t.run(steps, "--enc json status --local {a}", One, 0);
    t.run(steps, "status {a} {b}", Stream, 0);
    t.run(steps, "status --filter pinned", Stream, 0);
    t.run(steps, "status --filter queued,error", Stream, 0);
    t.run(steps, "status --filter bogus", Stream, 1);
    t.run(steps, "status {none}", One, 0);
    t.run(steps, "--enc json status {none}", One, 0);
    // pin update: the new pin takes the old one's options; a missing "from" is a 404.
    t.run(steps, "pin update --name fourth {a} {d}", One, 0);
    t.run(steps, "--enc json pin ls {d}", One, 0);
    t.run(steps, "pin update --no-status {none} {e}", One, 2);
    // Replication with user allocations (deterministic: those peers first), and refused options.
    t.run(steps, "pin add --replication 2 --allocations {id0},{id1} --name two {e}", One, 0);
    t.run(steps, "--enc json pin ls {e}", One, 0);
    t.run(steps, "--enc json status {e}", One, 0);
    t.run(steps, "pin add --rmin 2 --no-status {a}", One, 2);
    t.run(steps, "pin add --mode direct --no-status {a}", One, 2);
    t.run(
        steps,
        "--enc json pin add --mode direct --expire-in 1h --no-status --name dx {f}",
        One,
        0,
    );
    t.run(steps, "pin ls {f}", One, 0);
    t.settle_statuses();
    // A direct pin: `pinned` when asked for by CID, `unexpectedly_unpinned` in the listing (v1.1.6
    // lists only IPFS's recursive pins there).
    t.run(steps, "status {f}", One, 0);
    t.run(steps, "status --filter unexpectedly_unpinned", Stream, 0);
    t.run(steps, "pin add --no-status notacid", One, 1);
    t.run(steps, "pin add --metadata novalue --no-status {a}", One, 1);
    // pin rm: status after by default, the removed pin with --no-status, a 404 when missing.
    t.run(steps, "pin rm {a}", One, 0);
    t.run(steps, "--enc json pin rm --no-status {b}", One, 0);
    t.run(steps, "pin rm {none}", One, 2);
    t.run(steps, "--enc json pin rm --no-status {none}", One, 2);
    t.settle();
    t.run(steps, "pin ls", Stream, 0);
    t.run(steps, "--enc json status", Stream, 0);
    // CRDT peers cannot be removed.
    t.run(steps, "peers rm {id2}", One, 2);
}

/// The script on a cluster with Basic auth: good, wrong and missing credentials.
fn auth_script(t: &Target, steps: &mut Vec<Step>) {
    use Shape::*;
    let good = format!("--basic-auth {USER}:{PASS} --force-http");
    t.run(steps, "id", One, 2);
    t.run(steps, "--enc json pin ls", Stream, 2);
    t.run(steps, &format!("--basic-auth {USER}:{PASS} id"), One, 1); // implies https
    t.run(steps, &format!("{good} id"), One, 0);
    t.run(steps, &format!("{good} --enc json version"), One, 0);
    t.run(steps, &format!("{good} pin add --name guarded --metadata org=hrdag {{a}}"), One, 0);
    t.run(steps, &format!("{good} pin ls"), Stream, 0);
    t.run(steps, &format!("{good} --enc json status"), Stream, 0);
    t.run(steps, &format!("--basic-auth {USER}:wrong --force-http pin ls"), Stream, 2);
    t.run(steps, &format!("--basic-auth {USER}:wrong --force-http --enc json pin ls"), Stream, 2);
    t.run(steps, &format!("--basic-auth nobody:{PASS} --force-http peers ls"), Stream, 2);
    t.run(steps, &format!("--basic-auth {USER} --force-http status"), Stream, 2);
    t.run(steps, "--force-http pin rm {a}", One, 2);
    t.run(steps, &format!("{good} pin rm {{a}}"), One, 0);
    t.run(steps, &format!("{good} peers ls"), Stream, 0);
}

/// How a command's output is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// As printed.
    One,
    /// A streamed listing: its items as a set.
    Stream,
}

/// One command as run and normalised.
#[derive(Debug)]
struct Step {
    label: String,
    /// The exit code the script expects.
    want: i32,
    code: i32,
    stdout: String,
    stderr: String,
}

#[derive(Debug, Clone)]
struct TPeer {
    id: String,
    ipfs_id: String,
    name: String,
    url: String,
}

enum Running {
    Sim(Sim),
    Real(RealCluster),
}

/// One running cluster as the script sees it.
struct Target {
    cluster: Running,
    /// In cluster-peer-ID order.
    peers: Vec<TPeer>,
    home: tempfile::TempDir,
    /// The `Authorization` header of the cluster's credentials, when it has auth.
    auth: Option<String>,
}

impl Target {
    fn start(side: Side, auth: bool) -> Target {
        let cluster = match side {
            Side::Sim => {
                let creds = format!("{USER}:{PASS}");
                let mut args = vec!["--peers", "3", "--lag", "0..100ms"];
                if auth {
                    args.extend(["--basic-auth", &creds]);
                }
                Running::Sim(Sim::start(&args))
            }
            Side::Real => {
                let mut o = RealOptions::new(V1_1_6, 3);
                if auth {
                    o.basic_auth = Some((USER.into(), PASS.into()));
                }
                Running::Real(RealCluster::start(o))
            }
        };
        let urls: Vec<String> = match &cluster {
            Running::Sim(s) => s.peers.iter().map(|p| p.url.clone()).collect(),
            Running::Real(r) => r.peers.iter().map(|p| p.url.clone()).collect(),
        };
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASS}"),
        );
        let header = format!("Basic {b64}");
        let auth_hdr: Vec<(&str, &str)> =
            if auth { vec![("Authorization", header.as_str())] } else { vec![] };
        let mut peers: Vec<TPeer> = urls
            .iter()
            .map(|url| {
                let r = raw(url, "GET", "/id", &auth_hdr, b"");
                assert_eq!(r.status, 200, "GET /id on {url}: {}", r.text());
                let id = r.json();
                TPeer {
                    id: id["id"].as_str().unwrap().to_string(),
                    ipfs_id: id["ipfs"]["id"].as_str().unwrap().to_string(),
                    name: id["peername"].as_str().unwrap().to_string(),
                    url: url.clone(),
                }
            })
            .collect();
        // As `peer.IDSlice` sorts: by the IDs' bytes.
        peers.sort_by_key(|p| bs58::decode(&p.id).into_vec().unwrap());
        let auth = auth.then_some(header);
        Target { cluster, peers, home: tempfile::tempdir().unwrap(), auth }
    }

    /// Wait until every replica holds the same pin set (after writes made with `--no-status`).
    fn settle(&self) {
        match &self.cluster {
            Running::Sim(s) => {
                s.wait_converged(Duration::from_secs(30));
            }
            Running::Real(r) => {
                r.wait_converged(Duration::from_secs(30));
            }
        }
    }

    /// [`Target::settle`], then wait until no peer has a pin operation queued or running: how long
    /// an IPFS pin takes is kubo's business (the simulator takes a fixed 300 ms), so a status is
    /// compared once it has settled.
    fn settle_statuses(&self) {
        self.settle();
        let auth = self.auth_header();
        wait_until(Duration::from_secs(30), "no pin operation queued or running", || {
            let r =
                raw(&self.peers[0].url, "GET", "/pins?filter=queued,pinning,unpinning", &auth, b"");
            assert!(r.status == 200 || r.status == 204, "status: {} {}", r.status, r.text());
            r.status == 204
        });
    }

    fn auth_header(&self) -> Vec<(&'static str, &str)> {
        self.auth.iter().map(|h| ("Authorization", h.as_str())).collect()
    }

    /// Run `ipfs-cluster-ctl --host <rank 0> ARGS` (`{label}`s substituted), record it normalised
    /// with the exit code the script expects (so that two clusters the ctl cannot talk to at all do
    /// not pass as equal).
    fn run(&self, steps: &mut Vec<Step>, template: &str, shape: Shape, want: i32) {
        let mut line = template.to_string();
        for (k, v) in vars(self) {
            line = line.replace(&k, &v);
        }
        let port = self.peers[0].url.rsplit(':').next().unwrap().trim_end_matches('/');
        let mut cmd = Command::new(cluster_bin(V1_1_6, "ipfs-cluster-ctl"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TZ", "UTC")
            .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
            .args(line.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (code, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(60), template);
        steps.push(Step {
            label: template.to_string(),
            want,
            code,
            stdout: self.normalise(&stdout, shape),
            stderr: self.normalise(&stderr, Shape::One),
        });
    }

    /// What must differ between two clusters, made equal (see the module doc).
    fn normalise(&self, out: &str, shape: Shape) -> String {
        if let Some(docs) = json_docs(out) {
            let mut docs: Vec<String> = docs
                .into_iter()
                .map(|mut d| {
                    self.normalise_json(&mut d);
                    serde_json::to_string_pretty(&d).unwrap()
                })
                .collect();
            if shape == Shape::Stream {
                docs.sort();
            }
            return docs.join("\n");
        }
        let text = self.normalise_text(out);
        if shape == Shape::One {
            return text;
        }
        // Items of a text listing: a line that does not start with a space and the indented lines
        // after it.
        let mut items: Vec<String> = Vec::new();
        for l in text.lines() {
            match items.last_mut() {
                Some(item) if l.starts_with(' ') => {
                    item.push('\n');
                    item.push_str(l);
                }
                _ => items.push(l.to_string()),
            }
        }
        items.sort();
        items.join("\n")
    }

    fn normalise_json(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.normalise_text(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.normalise_json(x)),
            Value::Object(m) => {
                let old = std::mem::take(m);
                for (k, mut x) in old {
                    self.normalise_json(&mut x);
                    if (k == "cluster_peers_addresses" || k == "allocations")
                        && let Value::Array(a) = &mut x
                    {
                        a.sort_by_key(|e| e.to_string());
                    }
                    m.insert(self.normalise_text(&k), x);
                }
            }
            _ => {}
        }
    }

    fn normalise_text(&self, s: &str) -> String {
        let mut s = s.to_string();
        // Names first: the labels that replace IDs contain "peer".
        for (r, p) in self.peers.iter().enumerate() {
            s = replace_word(&s, &p.name, &format!("<name{r}>"));
        }
        for (r, p) in self.peers.iter().enumerate() {
            s = s.replace(&p.id, &format!("<peer{r}>"));
            s = s.replace(&p.ipfs_id, &format!("<ipfs{r}>"));
        }
        let s = replace_number_after(&s, "/tcp/", "<port>");
        let s = replace_number_after(&s, "127.0.0.1:", "<port>");
        normalise_times(&s)
    }
}

/// Every JSON document of `out` (the ctl prints one indented document per item), or `None` when
/// `out` is not a sequence of JSON documents.
fn json_docs(out: &str) -> Option<Vec<Value>> {
    if out.trim().is_empty() {
        return None;
    }
    serde_json::Deserializer::from_str(out).into_iter::<Value>().collect::<Result<_, _>>().ok()
}

/// `s` with `word` replaced where it is not part of a longer word (`peer1` but not `peer10`).
fn replace_word(s: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(word) {
        out.push_str(&rest[..i]);
        let before = out.chars().last();
        let after = rest[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        if boundary(before) && boundary(after) {
            out.push_str(with);
        } else {
            out.push_str(word);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// `s` with the digits after every `prefix` replaced by `with`.
fn replace_number_after(s: &str, prefix: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(with);
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// RFC 3339 times become `<time>` or `<time.ns>`, `YYYY-MM-DD hh:mm:ss` becomes `<date>`; Go's zero
/// time is kept.
fn normalise_times(s: &str) -> String {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| {
        from + n <= b.len() && b[from..from + n].iter().all(u8::is_ascii_digit)
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let stamp = digits(i, 4)
            && at(i + 4, b'-')
            && digits(i + 5, 2)
            && at(i + 7, b'-')
            && digits(i + 8, 2)
            && (at(i + 10, b'T') || at(i + 10, b' '))
            && digits(i + 11, 2)
            && at(i + 13, b':')
            && digits(i + 14, 2)
            && at(i + 16, b':')
            && digits(i + 17, 2);
        if !stamp {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        let rfc = b[i + 10] == b'T';
        i += 19;
        let mut frac = false;
        if rfc && at(i, b'.') && digits(i + 1, 1) {
            frac = true;
            i += 1;
            while digits(i, 1) {
                i += 1;
            }
        }
        if rfc {
            if at(i, b'Z') {
                i += 1;
            } else if (at(i, b'+') || at(i, b'-')) && digits(i + 1, 2) && at(i + 3, b':') {
                i += 6;
            }
        }
        let text = &s[start..i];
        out.push_str(match (rfc, frac) {
            _ if text == ZERO_TIME => ZERO_TIME,
            (false, _) => "<date>",
            (true, false) => "<time>",
            (true, true) => "<time.ns>",
        });
    }
    out
}

/// Run `cmd` to its end (killed after `limit`): exit code, stdout, stderr.
fn run_with_timeout(mut cmd: Command, limit: Duration, what: &str) -> (i32, String, String) {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("ipfs-cluster-ctl {what}: {e}"));
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipes.0.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipes.1.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ipfs-cluster-ctl {what}: still running after {limit:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn normalisation_keeps_precision_and_the_zero_time() {
    assert_eq!(
        normalise_times(
            "a 2026-12-01T09:38:59Z b 2026-12-01T09:38:43.21613113Z c 0001-01-01T00:00:00Z"
        ),
        "a <time> b <time.ns> c 0001-01-01T00:00:00Z"
    );
    assert_eq!(normalise_times("Added: 2026-12-01 09:39:36 |"), "Added: <date> |");
    assert_eq!(normalise_times("2024-05-06T14:53:20+02:00"), "<time>");
    assert_eq!(
        replace_number_after("/ip4/127.0.0.1/tcp/20006/p2p", "/tcp/", "<port>"),
        "/ip4/127.0.0.1/tcp/<port>/p2p"
    );
    assert_eq!(
        replace_word("peer1 | peer10 | peer1:", "peer1", "<name0>"),
        "<name0> | peer10 | <name0>:"
    );
    assert_eq!(id_cid("x1"), "bafkqaatyge");
}
