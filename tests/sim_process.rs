//! `ledger sim serve` as a process: ports PORT+i, the first stdout line, clean stops on SIGINT/SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < within, "the simulator did not stop within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly() {
    for sig in ["TERM", "INT"] {
        let mut sim = Sim::start(&["--peers", "2", "--pins", "10"]);
        let r = raw(sim.url(0), "GET", "/version", &[], b"");
        assert_eq!(r.status, 200);
        signal(sim.child.id(), sig);
        let st = wait_exit(&mut sim.child, Duration::from_secs(5));
        assert!(st.success(), "{sig}: exit status {st:?}");
    }
}

#[test]
fn peers_listen_on_consecutive_ports() {
    // Find three consecutive free ports (retrying if another process takes one meanwhile).
    for _ in 0..20 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base > 65_000 {
            continue;
        }
        let mut child = Command::new(bin())
            .args(["sim", "serve", "--peers", "3", "--listen", &format!("127.0.0.1:{base}")])
            .env("LEDGER_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.is_empty() {
            let _ = child.wait();
            continue; // a port was taken: try another base
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let urls: Vec<String> = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["url"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", base + i)).collect();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(urls, want);
        let names: Vec<&str> =
            v["peers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["peer0", "peer1", "peer2"]);
        return;
    }
    panic!("could not find three consecutive free ports");
}

#[test]
fn bad_flags_get_a_clear_error() {
    let out = ledger().args(["sim", "serve", "--lag", "2s..1s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends before it starts"));
    let out =
        ledger().args(["sim", "serve", "--from", "/nonexistent/pins.ndjson"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/pins.ndjson"));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    // `ledger … | head -0`: the reader is gone before ledger writes its summary.
    let sim = Sim::start(&["--peers", "1", "--pins", "50", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", sim.url(0), "snapshot"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
