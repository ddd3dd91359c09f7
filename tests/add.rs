//! `ledger add PATH… --org ORG` (issue 14, point 2): a directory and a file added on the simulator
//! and on a real v1.1.6 cluster get the org tag and every pin option on every peer, the ledger
//! records each entry and the pins as read back from every peer, and `ledger owners` and `ledger
//! lost` see the pins like any other; `--wrap` makes one pin; `--dry-run` and bad input send
//! nothing.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::util::*;

fn add(dir: &Path, urls: &str, args: &[&str]) -> Output {
    ledger()
        .current_dir(dir)
        .args(["--db", "ledger.db", "--cluster", urls, "add"])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `docs/` (an empty file, a 262,145-byte file of fixed bytes, a nested directory, a hidden file
/// left out) and `notes.txt`, under `dir`.
fn tree(dir: &Path) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..262_145u32).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    std::fs::write(docs.join("sub/big.bin"), big).unwrap();
    std::fs::write(docs.join("sub/a b+c.txt"), b"census 2024\n").unwrap();
    std::fs::write(docs.join(".hidden"), b"not uploaded").unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello\n").unwrap();
}

/// The roots of [`tree`]'s two uploads, as a real v1.1.6 cluster computes them by default.
const DOCS: &str = "QmfRPCYhQuNbiYq7b8o2FkKUBwAEMvMThxYZU2bdFBFUK1";
const NOTES: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";

/// A directory and a file, added with the org tag, other metadata, replication and an expiry:
/// every peer holds both pins with exactly those options; the ledger holds every entry (paths,
/// sizes, CIDs) and each pin as each peer read it back; a snapshot then counts them as the org's
/// (`owners`), and a re-pin that drops the metadata is found by `lost`.
fn a_directory_is_added_with_the_org_tag_on_every_peer(b: Backend) {
    let Some(c) = Cluster::start(b, 3) else { return };
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let args = [
        "docs",
        "notes.txt",
        "--org",
        "hrdag",
        "--meta",
        "env=prod",
        "--replication",
        "2..3",
        "--expire-at",
        "2099-01-01T00:00:00Z",
        "--json",
    ];
    let out = add(dir.path(), &c.urls(), &args);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r} / {}", String::from_utf8_lossy(&out.stderr));
    let cids: Vec<&str> =
        r["uploads"].as_array().unwrap().iter().map(|u| u["cid"].as_str().unwrap()).collect();
    assert_eq!(cids, [DOCS, NOTES], "{r}");
    assert_eq!(r["spread"]["peers"].as_array().unwrap().len(), 3, "{r}");
    c.wait_converged(std::time::Duration::from_secs(60));
    for peer in 0..3 {
        let pins = c.pinset(peer);
        for (cid, name) in [(DOCS, "docs"), (NOTES, "notes.txt")] {
            let p = pins
                .iter()
                .find(|p| p["cid"] == cid)
                .unwrap_or_else(|| panic!("peer{peer} lacks {name}"));
            assert_eq!(p["name"], name, "peer{peer}: {p}");
            assert_eq!(
                p["metadata"],
                serde_json::json!({"env": "prod", "org": "hrdag"}),
                "peer{peer}: {p}"
            );
            assert_eq!(
                (p["replication_factor_min"].as_i64(), p["replication_factor_max"].as_i64()),
                (Some(2), Some(3)),
                "peer{peer}: {p}"
            );
            assert_eq!(p["expire_at"], "2099-01-01T00:00:00Z", "peer{peer}: {p}");
            assert_eq!(p["max_depth"], -1, "recursive, peer{peer}: {p}");
        }
    }
    let db = dir.path().join("ledger.db");
    assert_eq!(sql_rows(&db, "SELECT kind, org, state FROM runs"), [["add", "hrdag", "done"]]);
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let at = |p: &str| root.join(p).display().to_string();
    let entries = sql_rows(
        &db,
        "SELECT a.upload, a.name, a.path, a.kind, coalesce(a.bytes, ''), a.pinned, x.cid
         FROM added a JOIN cids x ON x.id = a.cid_id ORDER BY a.seq",
    );
    let names: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [e[0].clone(), e[1].clone(), e[2].clone(), e[3].clone(), e[4].clone(), e[5].clone()]
        })
        .collect();
    let row = |u: &str, n: &str, kind: &str, bytes: &str, pinned: &str| {
        [
            u.to_string(),
            n.to_string(),
            at(n),
            kind.to_string(),
            bytes.to_string(),
            pinned.to_string(),
        ]
    };
    assert_eq!(
        names,
        [
            row("0", "docs/empty", "file", "0", "0"),
            row("0", "docs/sub/a b+c.txt", "file", "12", "0"),
            row("0", "docs/sub/big.bin", "file", "262145", "0"),
            row("0", "docs/sub", "directory", "", "0"),
            row("0", "docs", "directory", "", "1"),
            row("1", "notes.txt", "file", "6", "1"),
        ]
    );
    assert_eq!(entries[4][6], DOCS);
    let reads = sql_rows(
        &db,
        "SELECT cid, count(DISTINCT peer), count(name), min(org), min(replication_min), min(expire_at)
         FROM added_pins GROUP BY cid ORDER BY cid",
    );
    let mut want = vec![
        vec![
            DOCS.to_string(),
            "3".into(),
            "3".into(),
            "hrdag".into(),
            "2".into(),
            "2099-01-01T00:00:00Z".into(),
        ],
        vec![
            NOTES.to_string(),
            "3".into(),
            "3".into(),
            "hrdag".into(),
            "2".into(),
            "2099-01-01T00:00:00Z".into(),
        ],
    ];
    want.sort();
    assert_eq!(reads, want, "every peer read back with the org");

    let ledger_at = |args: &[&str]| {
        let out = ledger()
            .current_dir(dir.path())
            .args(["--db", "ledger.db", "--cluster", &c.urls()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.code().unwrap_or(9) <= 1,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_of(&out)
    };
    let csv = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "export", "added", "--csv", "-"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "run,started_at,org,upload,name,path,kind,bytes,size,cid,pinned,peers_read,shown_on"
    );
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(lines[5].ends_with(&format!(",{DOCS},1,3,3")), "{csv}");
    assert!(lines[1].ends_with(",0,,"), "{csv}");
    ledger_at(&["snapshot", "--all-peers", "--json"]);
    let owners = ledger_at(&["owners", "--json"]);
    for p in owners["peers"].as_array().unwrap() {
        assert_eq!(p["orgs"]["hrdag"], 2, "{owners}");
    }
    c.post(0, &format!("/pins/{NOTES}?name=notes.txt"));
    c.wait_converged(std::time::Duration::from_secs(60));
    wait_until(
        std::time::Duration::from_secs(60),
        "the re-pin without metadata on every peer",
        || (0..3).all(|i| c.pinset(i).iter().any(|p| p["cid"] == NOTES && p["metadata"].is_null())),
    );
    ledger_at(&["snapshot", "--all-peers", "--json"]);
    let lost = ledger_at(&["lost", "--json"]);
    let losses = lost["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 1, "{lost}");
    assert_eq!(losses[0]["cid"], NOTES, "{lost}");
    let fields: Vec<&str> = losses[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"metadata.org"), "{lost}");
}

crate::on_both!(a_directory_is_added_with_the_org_tag_on_every_peer);

/// `--wrap`: the paths go up in one upload, and the wrapping directory (answer name `""`) is the
/// one pin, with the org tag; the files inside are not pinned on their own.
#[test]
fn wrap_makes_one_pin_of_the_paths() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let out = add(
        dir.path(),
        &sim.all_urls(),
        &["docs", "notes.txt", "--wrap", "--org", "hrdag", "--json"],
    );
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["uploads"].as_array().unwrap().len(), 1, "{r}");
    let cid = r["uploads"][0]["cid"].as_str().unwrap().to_string();
    let pins = sorted_pinset(sim.url(1), &[]);
    assert_eq!(pins.len(), 1, "one pin: {pins:?}");
    assert_eq!(pins[0]["cid"], cid.as_str());
    assert_eq!(pins[0]["metadata"]["org"], "hrdag");
    assert_eq!(pins[0]["name"], "", "no name unless given");
    let db = dir.path().join("ledger.db");
    let pinned =
        sql_rows(&db, "SELECT name, coalesce(path, 'NULL'), kind FROM added WHERE pinned = 1");
    assert_eq!(pinned, [["", "NULL", "directory"]]);
    assert_eq!(sql_rows(&db, "SELECT count(*) FROM added"), [["7"]]);
    for cmd in ["convergence", "report"] {
        let out = ledger()
            .current_dir(dir.path())
            .args(["--db", "ledger.db", cmd, "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("run 1 is an add run") && err.contains("ledger export added"),
            "{cmd}: {err}"
        );
    }
}

/// `--dry-run` prints each request and its parts and sends nothing: no pin, no write, no run.
#[test]
fn dry_run_prints_the_requests_and_sends_nothing() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let before = sim.state()["writes"].clone();
    let out = add(
        dir.path(),
        &sim.all_urls(),
        &["docs", "notes.txt", "--org", "hr dag", "--name", "x&y", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let base = sim.url(0).trim_end_matches('/');
    assert!(
        text.contains(&format!("would send: POST {base}/add?name=x%26y&meta-org=hr%20dag\n")),
        "{text}"
    );
    assert!(text.contains("  file       docs/sub/big.bin (262145 bytes)\n"), "{text}");
    assert_eq!(text.matches("would send: POST").count(), 2, "{text}");
    assert_eq!(sim.state()["writes"], before, "a dry run wrote");
    assert!(sorted_pinset(sim.url(0), &[]).is_empty());
    assert!(!dir.path().join("ledger.db").exists(), "a dry run made a ledger");
}

/// Bad input exits 2 with a clear message before anything is sent: a missing path, a path that
/// cannot be read, a FIFO (which would block the upload), an org with `&` or `=`, `--meta org=`,
/// a bad chunker, a hash a CIDv0 cannot have, no org at all.
#[test]
fn bad_input_exits_2_and_sends_nothing() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let fifo = dir.path().join("docs/pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let before = sim.state()["writes"].clone();
    let cases: &[(&[&str], &str)] = &[
        (&["nope", "--org", "hrdag"], "nope: no such file or directory"),
        (&["notes.txt/inner", "--org", "hrdag"], "notes.txt/inner: cannot be read"),
        (&["docs", "--org", "hrdag"], "neither a file, a directory nor a symlink"),
        (&["notes.txt", "--org", "a&b"], "an organisation is a non-empty name without &"),
        (&["notes.txt", "--org", "a=b"], "an organisation is a non-empty name without &"),
        (&["notes.txt", "--org", "hrdag", "--meta", "org=x"], "give the organisation with --org"),
        (&["notes.txt", "--org", "hrdag", "--chunker", "size-0"], "the size must be 1 to 2096896"),
        (&["notes.txt", "--org", "hrdag", "--chunker", "bogus"], "give size-N"),
        (&["notes.txt", "--org", "hrdag", "--hash", "sha2-512"], "add --cid-version 1"),
        (&["notes.txt"], "no organisation: give --org ORG"),
    ];
    for (args, want) in cases {
        let out = add(dir.path(), &sim.all_urls(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(sim.state()["writes"], before, "bad input wrote");
    assert!(sorted_pinset(sim.url(0), &[]).is_empty());
}

/// A profile's `org` is the default `--org`, as the field report's tool tags every upload with its
/// profile.
#[test]
fn the_profile_org_is_the_default() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let toml = format!("[clusters.main]\npeers = [\"{}\"]\norg = \"memorial\"\n", sim.url(0));
    std::fs::write(dir.path().join("ledger.toml"), toml).unwrap();
    let out = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "add", "notes.txt", "--json"])
        .output()
        .unwrap();
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["org"], "memorial");
    let pins = sorted_pinset(sim.url(0), &[]);
    assert_eq!(pins[0]["metadata"]["org"], "memorial");
}

/// `kill -9` in the middle of an upload, then the same command again: the killed run is marked
/// `interrupted` by the rerun, the rerun adds the file and exits 0, and the cluster holds the one pin
/// with the org tag (the same bytes get the same CID: nothing is added twice).
#[test]
fn killed_mid_upload_a_rerun_adds_the_file_once() {
    let sim = Sim::start(&["--peers", "2", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> =
        (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), body).unwrap();
    let db = dir.path().join("ledger.db");
    let mut child = std::process::Command::new(bin())
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--db",
            "ledger.db",
            "--cluster",
            &sim.all_urls(),
            "add",
            "big.bin",
            "--org",
            "hrdag",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(std::time::Duration::from_secs(30), "the run on the record", || {
        count_while_written(&db, "SELECT count(*) FROM runs") >= 1
    });
    child.kill().unwrap(); // SIGKILL
    assert!(child.wait().unwrap().code().is_none(), "the add ended before the kill");
    let out = add(dir.path(), &sim.all_urls(), &["big.bin", "--org", "hrdag", "--json"]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    let cid = r["uploads"][0]["cid"].as_str().unwrap();
    let pins = sorted_pinset(sim.url(1), &[]);
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(pins[0]["cid"], cid);
    assert_eq!(pins[0]["metadata"]["org"], "hrdag");
    let runs = sql_rows(&db, "SELECT kind, state FROM runs ORDER BY id");
    assert_eq!(runs, [["add", "interrupted"], ["add", "done"]]);
    let mine = sql_rows(&db, "SELECT count(*) FROM added WHERE run_id = 2 AND pinned = 1");
    assert_eq!(mine, [["1"]]);
}
