//! `ledger report`: a real tag run against the simulator, then the report from stored history — the
//! files, their numbers, a page with no outside references, and the page as headless Chromium renders
//! it (issue 5, point 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn urls(sim: &Sim) -> String {
    sim.peers.iter().map(|p| p.url.clone()).collect::<Vec<_>>().join(",")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ledger().current_dir(dir).args(["--db", "ledger.db"]).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The rows of a CSV file as maps from column to value (checks the header first).
fn csv_rows(path: &Path, header: &[&str]) -> Vec<BTreeMap<String, String>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (cols, rows) = csv_maps(file);
    assert_eq!(cols, header, "header of {}", path.display());
    rows
}

/// The HTML of the table with this id.
fn table<'a>(html: &'a str, id: &str) -> &'a str {
    let start =
        html.find(&format!("<table id=\"{id}\">")).unwrap_or_else(|| panic!("no table {id}"));
    let end = start + html[start..].find("</table>").unwrap();
    &html[start..end]
}

/// The polylines of an SVG with their stroke colour.
fn polylines(svg: &str) -> Vec<String> {
    svg.match_indices("<polyline")
        .map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>').unwrap()];
            let s = tag.find("stroke=\"").unwrap() + 8;
            tag[s..s + tag[s..].find('"').unwrap()].to_string()
        })
        .collect()
}

/// Headless Chromium, as CI installs it (Debian's `chromium`).
fn chromium() -> PathBuf {
    PathBuf::from("/usr/bin/chromium")
}

/// Runs Chromium headless on a page with a fresh profile; kills it after 90 s.
fn render(page: &Path, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    // Read stdout on a thread so a large DOM cannot block Chromium on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).unwrap();
        buf
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish rendering {} in 90 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = reader.join().unwrap();
    out
}

/// Width and height from a PNG's IHDR, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn report_of_a_tag_run_from_stored_history_renders_in_chromium() {
    let sim =
        Sim::start(&["--peers", "3", "--pins", "200", "--seed", "21", "--lag", "20ms..300ms"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Before any tag run: a clear error, exit 2.
    let none = run(d, &["report"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("no tag run yet"), "{}", stderr(&none));

    // peer2 receives nothing: its targets stay untagged (stragglers), the run takes both passes.
    sim.control("POST", "/_sim/peers/peer2/pause", "");
    let tag = run(
        d,
        &[
            "--cluster",
            &urls(&sim),
            "tag",
            "--org",
            "hrdag",
            "--settle",
            "900ms",
            "--probe-every",
            "250ms",
            "--max-passes",
            "2",
            "--json",
        ],
    );
    assert_eq!(tag.status.code(), Some(1), "{}", stderr(&tag));
    let t: Value = serde_json::from_slice(&tag.stdout).unwrap();
    let targets: Vec<&str> =
        t["plan"]["targets"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let already = t["plan"]["already"].as_u64().unwrap() as usize;
    let others: BTreeMap<String, String> = t["plan"]["owned_by_others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_str().unwrap().to_string()))
        .collect();
    assert!(!targets.is_empty() && !others.is_empty() && targets.len() < 200);
    let ids: Vec<String> = sim.peers.iter().map(|p| p.id.clone()).collect();

    // A repin run is not a tag run: asked for by id it is refused; the default is the latest tag run.
    let one = targets[0];
    let repin = run(d, &["--cluster", &urls(&sim), "repin", one, "--meta", "note=x"]);
    // Applied, but paused peer2 never shows it: exit 1, and said.
    assert_eq!(repin.status.code(), Some(1), "{}", stderr(&repin));
    let said = String::from_utf8_lossy(&repin.stdout);
    assert!(said.contains("shown as written on 2 of the 3 peer(s) read"), "{said}");
    let bad = run(d, &["report", "2", "--out", "out"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("run 2 is a repin run"), "{}", stderr(&bad));
    let bad = run(d, &["report", "99", "--out", "out"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("there is no run 99"), "{}", stderr(&bad));
    assert!(!d.join("out").exists(), "a refused report wrote files");

    // The report needs nothing but the ledger: stop the cluster first.
    drop(sim);
    let out = run(d, &["report", "--out", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("report of run 1 written to out/report.html"), "{said}");
    let o = d.join("out");
    for f in REPORT_FILES {
        assert!(o.join(f).is_file(), "{f} missing");
        assert!(said.contains(f), "{f} not named in: {said}");
    }

    // convergence.csv is exactly `ledger convergence --csv`.
    let conv = run(d, &["convergence", "--csv", "-"]);
    assert_eq!(std::fs::read(o.join("convergence.csv")).unwrap(), conv.stdout);
    let curve = csv_rows(
        &o.join("convergence.csv"),
        &["run", "pass", "peer", "seconds", "targets", "tagged"],
    );
    assert!(curve.len() >= 2 * 3 * 2, "samples while settling and at each pass end");
    let wanted = (targets.len() + already).to_string();
    assert!(curve.iter().all(|p| p["targets"] == wanted && p["run"] == "1"));

    // passes.csv: a row per pass and peer; at each pass end peer0 shows everything, peer2 only
    // what was tagged before the run.
    let passes = csv_rows(
        &o.join("passes.csv"),
        &[
            "run",
            "pass",
            "started_at",
            "finished_at",
            "seconds",
            "targets",
            "attempted",
            "succeeded",
            "failed",
            "peer",
            "tagged",
        ],
    );
    assert_eq!(passes.len(), 2 * 3);
    for p in &passes {
        assert!(p["started_at"].ends_with('Z') && p["started_at"].contains('T'), "{p:?}");
        let tagged: usize = p["tagged"].parse().unwrap();
        if p["peer"] == ids[0] {
            assert_eq!(tagged, targets.len() + already, "{p:?}");
        } else if p["peer"] == ids[2] {
            assert_eq!(tagged, already, "{p:?}");
        }
    }
    let first = passes.iter().find(|p| p["pass"] == "1").unwrap();
    assert_eq!(first["attempted"], targets.len().to_string());
    assert_eq!(first["succeeded"], targets.len().to_string());
    assert_eq!(first["failed"], "0");

    // stragglers.csv: every target on peer2, untagged; nothing on the other peers.
    let stragglers = csv_rows(
        &o.join("stragglers.csv"),
        &["run", "peer", "snapshot_id", "pass", "cid", "state", "org"],
    );
    assert_eq!(stragglers.len(), targets.len());
    let mut got: Vec<&str> = stragglers.iter().map(|s| s["cid"].as_str()).collect();
    got.sort();
    let mut want = targets.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(stragglers.iter().all(|s| s["peer"] == ids[2] && s["state"] == "untagged"));
    assert!(stragglers.iter().all(|s| s["pass"] == "2"));

    // owned_by_others.csv: the plan's pins of other organisations, with their owners.
    let rows = csv_rows(&o.join("owned_by_others.csv"), &["run", "cid", "owner"]);
    let got: BTreeMap<String, String> =
        rows.iter().map(|r| (r["cid"].clone(), r["owner"].clone())).collect();
    assert_eq!(got, others);

    // owners.csv: every peer's latest complete snapshot counts all 200 pins; peer0 shows the
    // targets tagged (the repin run's `note` does not change the owner), peer2 shows them unowned.
    let owners =
        csv_rows(&o.join("owners.csv"), &["cluster", "peer", "snapshot_id", "org", "pins"]);
    let count = |peer: &str, org: &str| -> usize {
        owners
            .iter()
            .filter(|r| r["peer"] == peer && r["org"] == org)
            .map(|r| r["pins"].parse::<usize>().unwrap())
            .sum()
    };
    for id in &ids {
        let all: usize = owners
            .iter()
            .filter(|r| &r["peer"] == id)
            .map(|r| r["pins"].parse::<usize>().unwrap())
            .sum();
        assert_eq!(all, 200, "{id}");
    }
    assert_eq!(count(&ids[0], "hrdag"), targets.len() + already);
    assert_eq!(count(&ids[0], ""), 0);
    assert_eq!(count(&ids[2], ""), targets.len());
    assert_eq!(count(&ids[2], "hrdag"), already);
    for owner in others.values() {
        let n = others.values().filter(|o| *o == owner).count();
        assert_eq!(count(&ids[0], owner), n, "{owner}");
    }

    // The page is self-contained: nothing is fetched from anywhere.
    let html = std::fs::read_to_string(o.join("report.html")).unwrap();
    for bad in ["http://", "https://", "<script", "<link", "@import", "url(", "<img", "<iframe"] {
        assert!(!html.contains(bad), "the report contains {bad:?}");
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    // The chart: one line per peer in its own colour, plus a grey marker per pass and one for the
    // targets (the axes and ticks are black).
    assert_eq!(html.matches("<svg").count(), 1);
    let lines: Vec<String> =
        polylines(&html).into_iter().filter(|c| c.as_str() != "#000000").collect();
    assert_eq!(lines.len(), 3 + 2 + 1, "{lines:?}");
    let grey = lines.iter().filter(|c| c.as_str() == "#AAAAAA").count();
    assert_eq!(grey, 3, "two passes and the targets line: {lines:?}");
    for (i, c) in ["#1F77B4", "#FF7F0E", "#2CA02C"].iter().enumerate() {
        assert_eq!(lines.iter().filter(|l| l == c).count(), 1, "the line of peer {i}: {lines:?}");
        assert!(html.contains(&format!("background:{c}")), "legend colour of peer {i}");
    }
    assert_eq!(html.matches("<circle").count(), curve.len(), "a point per sample");
    // The tables with their numbers.
    let pt = table(&html, "passes");
    assert_eq!(pt.matches("<tr>").count(), 1 + 2);
    assert!(pt.contains(&format!(
        "<td>{}</td><td>{}</td><td>0</td>",
        targets.len(),
        targets.len()
    )));
    assert!(pt.contains(&format!("<td>{already} ")), "peer2's count at pass end");
    let sc = table(&html, "straggler-counts");
    assert!(sc.contains(&format!("<td>{}</td></tr>", targets.len())));
    assert_eq!(table(&html, "stragglers").matches("<tr>").count(), 1 + targets.len());
    assert!(html.contains("<h2>Owned by other organisations</h2>"));
    let ct = table(&html, "owned-by-others");
    assert_eq!(ct.matches("<tr>").count(), 1 + others.len());
    for cid in others.keys() {
        assert!(ct.contains(cid.as_str()));
    }
    assert!(table(&html, "owners").contains(&format!("<td>{}</td>", targets.len() + already)));
    assert!(html.contains("Not converged"));
    // The standalone SVG is a document of its own.
    let svg = std::fs::read_to_string(o.join("convergence.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));

    // Chromium: the rendered DOM still has the chart and every table row.
    if !have(chromium().to_str().unwrap(), "--version", "apt-get install chromium") {
        return;
    }
    let page = std::fs::canonicalize(o.join("report.html")).unwrap();
    let dom = render(&page, &["--dump-dom"]);
    assert!(dom.status.success(), "chromium --dump-dom: {}", stderr(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), 1, "{dom}");
    assert_eq!(polylines(&dom), polylines(&html));
    assert_eq!(dom.matches("<tr").count(), html.matches("<tr").count());
    assert_eq!(dom.matches("<table").count(), html.matches("<table").count());

    // And a screenshot, kept under target/ for people to look at.
    let shot = bin().parent().unwrap().parent().unwrap().join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let r =
        render(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,2000"]);
    assert!(r.status.success(), "chromium --screenshot: {}", stderr(&r));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert_eq!(png_size(&png), (1280, 2000));
    // A blank page of that size compresses to a few KiB; text, tables and a chart do not.
    assert!(png.len() > 40_000, "{} bytes: a nearly blank screenshot?", png.len());
}
