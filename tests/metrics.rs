//! `ledger watch --metrics`: scraped during a watch of a simulated cluster while a tag run goes on
//! and a pin loses its metadata, the text parsed by the `prometheus_client` Python package's own
//! OpenMetrics parser (`tests/metrics/parse.py`), and the values held against what `ledger
//! owners`, `ledger lost`, `ledger drift` and the runs table say.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// A child process killed on drop (if the test fails before it ends).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One scrape: the text as served, parsed by prometheus_client into families.
fn scrape(base: &str) -> Vec<Value> {
    let r = raw(base, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/parse.py");
    let mut py = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut py.stdin.take().unwrap(), &r.body).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refuses the text: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.text()
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// The samples of family `name` as (labels, value).
fn samples(families: &[Value], name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let f = families.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no {name}"));
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (labels, s["value"].as_f64().unwrap())
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include `with`.
fn value(families: &[Value], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = samples(families, name)
        .into_iter()
        .filter(|(l, _)| with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| v)
        .collect();
    assert!(hits.len() <= 1, "{name} {with:?}: {hits:?}");
    hits.first().copied()
}

/// Prometheus's conventions: every family is `ledger_…`, has HELP, a counter's samples end in
/// `_total`, a unit is the name's suffix.
fn check_conventions(families: &[Value]) {
    for f in families {
        let name = f["name"].as_str().unwrap();
        assert!(name.starts_with("ledger_"), "{f}");
        assert!(!f["help"].as_str().unwrap().is_empty(), "{name} has HELP");
        let unit = f["unit"].as_str().unwrap();
        assert!(unit.is_empty() || name.ends_with(&format!("_{unit}")), "{name}: unit {unit}");
        for s in f["samples"].as_array().unwrap() {
            if f["type"] == "counter" {
                assert_eq!(s["name"], format!("{name}_total"), "{f}");
            }
        }
    }
}

fn run(dir: &Path, cluster: &str, args: &[&str]) -> Out {
    let mut cmd = ledger();
    cmd.current_dir(dir).timeout(Duration::from_secs(120));
    cmd.args(["--db", "ledger.db", "--cluster", cluster]).args(args);
    cmd.output().unwrap().into()
}

fn spawn(dir: &Path, cluster: &str, args: &[&str], stderr: &Path) -> Child {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd)
        .current_dir(dir)
        .args(["--db", "ledger.db", "--cluster", cluster])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap());
    Child(cmd.spawn().expect("spawn ledger"))
}

/// Starts the watch with `--metrics 127.0.0.1:0` and reads the address it logs.
fn start_watch(dir: &Path, cluster: &str) -> (Child, String) {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd)
        .current_dir(dir)
        .args(["--db", "ledger.db", "--cluster", cluster])
        .args(["watch", "--every", "500ms", "--all-peers", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Child(cmd.spawn().expect("spawn ledger watch"));
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the watch logs where its metrics are").unwrap();
        if let Some((_, at)) = line.split_once("metrics at ") {
            break at.trim_end_matches("/metrics").to_string();
        }
    };
    // Keep reading stderr, so the watch never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

/// The README's table of metrics (rows that start with `` | `ledger_``) names what a scrape
/// serves, no more and no less (a counter by its samples' `_total` name).
fn the_readme_lists_every_metric(families: &[Value]) {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let listed: std::collections::BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `ledger_"))
        .map(|l| format!("ledger_{}", l.split_once('`').unwrap().0))
        .collect();
    let served: std::collections::BTreeSet<String> = families
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            if f["type"] == "counter" { format!("{name}_total") } else { name.to_string() }
        })
        .collect();
    assert_eq!(listed, served, "the README's metrics table and what is served");
}

fn rounds(families: &[Value]) -> f64 {
    value(families, "ledger_watch_rounds", &[]).unwrap()
}

#[test]
fn watch_serves_metrics_that_agree_with_owners_lost_drift_and_the_run() {
    if !have_python("prometheus_client.openmetrics.parser", "prometheus_client") {
        return;
    }
    let sim = Sim::start(&["--peers", "3", "--pins", "60", "--seed", "11", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<&str> = sim.peers.iter().map(|p| p.url.as_str()).collect();
    let cluster = urls.join(",");
    // The watch also has a peer that never answers: each round counts it as an error.
    let watched = format!("{cluster},http://127.0.0.1:1");
    let out = run(dir.path(), &cluster, &["snapshot", "--all-peers"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (mut watch, base) = start_watch(dir.path(), &watched);

    // A tag run in another process, slowed so that it is seen while it goes on.
    let log = dir.path().join("tag.log");
    let mut tag = spawn(
        dir.path(),
        &cluster,
        &["tag", "--org", "hrdag", "--rate", "15", "--settle", "0s"],
        &log,
    );
    let mut during = Vec::new();
    let mut ended = None;
    wait_until(Duration::from_secs(60), "a scrape that shows the tag run applying", || {
        during = scrape(&base);
        ended = tag.0.try_wait().unwrap();
        ended.is_some()
            || value(&during, "ledger_run_repins", &[("outcome", "applied")])
                .is_some_and(|n| n > 0.0)
    });
    assert!(
        ended.is_none(),
        "the tag run ended ({ended:?}) before a scrape saw it: {}\n{during:?}",
        std::fs::read_to_string(&log).unwrap()
    );
    check_conventions(&during);
    let status = tag.0.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let runs = sql_rows(&dir.path().join("ledger.db"), "SELECT id, kind, org FROM runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (id, kind, org) = (&runs[0][0], &runs[0][1], &runs[0][2]);
    let this = [("run", id.as_str()), ("kind", kind.as_str()), ("org", org.as_str())];
    let plan = sql_rows(
        &dir.path().join("ledger.db"),
        &format!("SELECT count(*) FROM run_targets WHERE run_id = {id} AND class = 'target'"),
    );
    let targets: f64 = plan[0][0].parse().unwrap();
    assert!(targets >= 10.0, "{plan:?}");
    assert_eq!(value(&during, "ledger_run_targets", &this), Some(targets));
    let applied_then =
        value(&during, "ledger_run_repins", &[&this[..], &[("outcome", "applied")]].concat());
    let applied_now: f64 = sql_rows(
        &dir.path().join("ledger.db"),
        &format!("SELECT count(*) FROM repins WHERE run_id = {id} AND outcome = 'applied'"),
    )[0][0]
        .parse()
        .unwrap();
    assert!(
        applied_then.is_some_and(|n| n > 0.0 && n < applied_now),
        "{applied_then:?} of {applied_now}"
    );
    assert_eq!(applied_now, targets, "the run applied every target");
    // Once it has ended, no run is in progress.
    let after = scrape(&base);
    assert!(samples(&after, "ledger_run_targets").is_empty(), "{after:?}");

    // An outside re-pin with no options: the pin loses its org and name.
    sim.wait_converged(Duration::from_secs(30));
    let pins = sorted_pinset(sim.url(0), &[]);
    let victim = pins.iter().find(|p| p["metadata"]["org"] == "hrdag").unwrap()["cid"].clone();
    let r = raw(sim.url(0), "POST", &format!("/pins/{}", victim.as_str().unwrap()), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    sim.wait_converged(Duration::from_secs(30));
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(30), "the watch to find the loss", || {
        seen = scrape(&base);
        value(&seen, "ledger_watch_losses", &[("attribution", "outside")]) == Some(1.0)
    });
    // Two rounds more: every peer's latest complete snapshot is after the loss.
    let then = rounds(&seen);
    wait_until(Duration::from_secs(30), "two more rounds", || {
        seen = scrape(&base);
        rounds(&seen) >= then + 2.0
    });
    check_conventions(&seen);
    the_readme_lists_every_metric(&seen);

    // Against `ledger owners`: per peer, each org's pins and the unowned.
    let owners = run(dir.path(), &cluster, &["owners", "--json"]).json();
    let peers = owners["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{owners}");
    for p in peers {
        let peer = p["peer"].as_str().unwrap();
        let mut orgs: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, v) in samples(&seen, "ledger_pins") {
            if labels["peer"] == peer {
                orgs.insert(labels["org"].clone(), v);
            }
        }
        let want: BTreeMap<String, f64> = p["orgs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        assert_eq!(orgs, want, "{peer}: {owners}");
        assert_eq!(value(&seen, "ledger_unowned_pins", &[("peer", peer)]), p["unowned"].as_f64());
    }
    // Against `ledger lost`: the losses by attribution.
    let lost = run(dir.path(), &cluster, &["lost", "--json"]);
    assert_eq!(lost.code, 1, "{lost:?}");
    let lost = lost.json();
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for l in lost["losses"].as_array().unwrap() {
        *by.entry(l["attribution"]["kind"].as_str().unwrap().to_string()).or_default() += 1.0;
    }
    assert_eq!(by.get("outside"), Some(&1.0), "{lost}");
    for (labels, v) in samples(&seen, "ledger_losses") {
        assert_eq!(by.get(&labels["attribution"]).copied().unwrap_or(0.0), v, "{labels:?}: {lost}");
    }
    // Against `ledger drift`: the peers agree.
    let drift = run(dir.path(), &cluster, &["drift", "--json"]).json();
    assert_eq!(value(&seen, "ledger_drift_pins", &[]), drift["count"].as_f64(), "{drift}");
    assert_eq!(value(&seen, "ledger_drift_compared_peers", &[]), Some(3.0));
    // Each peer's latest snapshot: in one state, of every pin once complete; the dead peer, an
    // error each round.
    for p in &sim.peers {
        let state: Vec<(BTreeMap<String, String>, f64)> =
            samples(&seen, "ledger_last_snapshot_state")
                .into_iter()
                .filter(|(l, _)| l["peer"] == p.id)
                .collect();
        assert_eq!(state.iter().map(|(_, v)| v).sum::<f64>(), 1.0, "{state:?}");
        if value(&seen, "ledger_last_snapshot_state", &[("peer", &p.id), ("state", "complete")])
            == Some(1.0)
        {
            assert_eq!(value(&seen, "ledger_last_snapshot_pins", &[("peer", &p.id)]), Some(60.0));
        }
        let started =
            value(&seen, "ledger_last_snapshot_timestamp_seconds", &[("peer", &p.id)]).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        assert!((now.as_secs_f64() - started).abs() < 60.0, "{started}");
    }
    let unreadable = value(&seen, "ledger_watch_errors", &[("kind", "unreadable")]).unwrap();
    let n = rounds(&seen);
    assert!(unreadable == n || unreadable == n + 1.0, "{unreadable} errors in {n} rounds");
    assert_eq!(value(&seen, "ledger_watch_errors", &[("kind", "metrics")]), Some(0.0));

    assert_eq!(raw(&base, "GET", "/", &[], b"").status, 404);
    signal(watch.0.id(), "TERM");
    assert_eq!(watch.0.wait().unwrap().code(), Some(0));
}

/// A watch's first start, on a ledger that holds nothing yet (and a peer that does not answer):
/// the metrics are served all the same.
#[test]
fn watch_serves_metrics_from_a_fresh_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "http://127.0.0.1:1",
        &["watch", "--every", "1s", "--rounds", "1", "--metrics", "127.0.0.1:0"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("metrics at http://127.0.0.1:"), "{out:?}");
    assert!(!out.stderr.contains("cannot read the ledger for the metrics"), "{out:?}");
}

#[test]
fn watch_refuses_a_metrics_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(dir.path(), "http://127.0.0.1:1", &["watch", "--every", "1s", "--metrics", &addr]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&format!("--metrics: cannot listen on {addr}")), "{out:?}");
    let out = run(
        dir.path(),
        "http://127.0.0.1:1",
        &["watch", "--every", "1s", "--metrics", "localhost"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--metrics"), "{out:?}");
}
