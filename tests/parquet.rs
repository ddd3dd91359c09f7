//! `ledger export TABLE --parquet FILE`: every table `export` knows, from a story on a simulated
//! cluster (snapshots, a tag run, a loss, an upload), written as Parquet and as CSV, and the Parquet
//! read back by DuckDB (the `duckdb` Python package, `tests/parquet/compare.py`) and compared with
//! the CSV row for row, with each column of the type the README gives it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const TABLES: [&str; 9] =
    ["snapshots", "pins", "repins", "runs", "passes", "convergence", "owners", "lost", "added"];

#[test]
fn every_export_as_parquet_reads_back_in_duckdb_as_its_csv() {
    if !have_python("duckdb", "duckdb") {
        return;
    }
    let sim = Sim::start(&["--peers", "3", "--pins", "40", "--seed", "5", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<&str> = sim.peers.iter().map(|p| p.url.as_str()).collect();
    let cluster = urls.join(",");
    let run = |args: &[&str]| -> Out {
        let mut cmd = ledger();
        cmd.current_dir(dir.path()).timeout(Duration::from_secs(120));
        cmd.args(["--db", "ledger.db", "--cluster", &cluster]).args(args);
        cmd.output().unwrap().into()
    };
    assert_eq!(run(&["snapshot", "--all-peers"]).code, 0);
    let out = run(&["tag", "--org", "hrdag", "--settle", "300ms"]);
    assert_eq!(out.code, 0, "{out:?}");
    sim.wait_converged(Duration::from_secs(30));
    let pins = sorted_pinset(sim.url(0), &[]);
    let victim = pins.iter().find(|p| p["metadata"]["org"] == "hrdag").unwrap()["cid"].clone();
    let r = raw(sim.url(0), "POST", &format!("/pins/{}", victim.as_str().unwrap()), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    sim.wait_converged(Duration::from_secs(30));
    assert_eq!(run(&["snapshot", "--all-peers"]).code, 0);
    std::fs::write(dir.path().join("notes.txt"), "parquet\n").unwrap();
    let out = run(&["add", "notes.txt", "--org", "hrdag"]);
    assert_eq!(out.code, 0, "{out:?}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parquet/compare.py");
    for table in TABLES {
        let (csv, parquet) = (format!("{table}.csv"), format!("out/{table}.parquet"));
        let out = run(&["export", table, "--csv", &csv]);
        assert_eq!(out.code, 0, "{out:?}");
        let out = run(&["export", table, "--parquet", &parquet]);
        assert_eq!(out.code, 0, "{out:?}");
        let cmp = Command::new("python3")
            .arg(&script)
            .args([&csv, &parquet])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&cmp.stderr);
        assert!(cmp.status.success(), "{table}: {said}");
        let v: Value = serde_json::from_slice(&cmp.stdout).unwrap();
        assert!(v["rows"].as_u64().unwrap() > 0, "{table} has rows: {v}");
        let types = &v["types"];
        let want = |col: &str, t: &str| {
            assert_eq!(types[col], t, "{table}.{col}: {types}");
        };
        match table {
            "snapshots" => (want("id", "BIGINT"), want("started_at", "TIMESTAMPTZ_NS")).1,
            "pins" => (want("metadata", "VARCHAR"), want("replication_min", "BIGINT")).1,
            "repins" => {
                (want("verified_at", "TIMESTAMPTZ_NS"), want("replication_min", "VARCHAR")).1
            }
            "runs" => (want("dry_run", "BOOLEAN"), want("applied", "BIGINT")).1,
            "convergence" => (want("percent", "DOUBLE"), want("at", "TIMESTAMPTZ_NS")).1,
            "lost" => (want("unpinned", "BOOLEAN"), want("first_lacking_at", "TIMESTAMPTZ_NS")).1,
            "added" => (want("pinned", "BOOLEAN"), want("bytes", "BIGINT")).1,
            _ => {}
        }
    }
    // `ledger drift --parquet`: the rows of `drift --csv` (none here: the peers agree), typed.
    let csv = run(&["drift", "--csv"]);
    assert_eq!(csv.code, 0, "{csv:?}");
    std::fs::write(dir.path().join("drift.csv"), &csv.stdout).unwrap();
    let out = run(&["drift", "--parquet", "drift.parquet"]);
    assert_eq!(out.code, 0, "{out:?}");
    let cmp = Command::new("python3")
        .arg(&script)
        .args(["drift.csv", "drift.parquet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(cmp.status.success(), "drift: {}", String::from_utf8_lossy(&cmp.stderr));
    let v: Value = serde_json::from_slice(&cmp.stdout).unwrap();
    assert_eq!(v["types"]["since_at"], "TIMESTAMPTZ_NS", "{v}");
    assert_eq!(v["types"]["older"], "BOOLEAN", "{v}");
    the_readme_query_finds_the_lost_org(&run, dir.path(), victim.as_str().unwrap());
    // Parquet needs a file, and one of --csv or --parquet is needed.
    let out = run(&["export", "runs", "--parquet", "-"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("Parquet is not written to stdout"), "{out:?}");
    let out = run(&["export", "runs"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--parquet"), "{out:?}");
}

/// The README's DuckDB query ("When a ledger outgrows one machine") over a lake of one cluster:
/// the one pin that lost its org, lost by whom `ledger lost` says.
fn the_readme_query_finds_the_lost_org(run: &dyn Fn(&[&str]) -> Out, dir: &Path, victim: &str) {
    let out = run(&["export", "lost", "--parquet", "lake/cluster=sim/lost.parquet"]);
    assert_eq!(out.code, 0, "{out:?}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (_, after) = readme.split_once("DuckDB reads them where they are").unwrap();
    let sql = after.split_once("```sql\n").unwrap().1.split_once("```").unwrap().0;
    let py = "import duckdb, json, sys\n\
              rows = duckdb.connect().execute(sys.argv[1]).fetchall()\n\
              print(json.dumps([[str(v) for v in r] for r in rows]))";
    let out = Command::new("python3").args(["-c", py, sql]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("sim", victim), "{rows:?}");
    // Who lost it, as `ledger lost` says.
    let lost = run(&["lost", "--json"]).json();
    let by = lost["losses"].as_array().unwrap().iter().find(|l| l["cid"] == victim).unwrap();
    let by = by["attribution"]["kind"].as_str().unwrap();
    assert_eq!((rows[0][2].as_str(), rows[0][4].as_str()), ("hrdag", by), "{rows:?}");
}
