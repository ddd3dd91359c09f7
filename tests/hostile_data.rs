//! Hostile data from the cluster: whatever a cluster puts in a pin's name, a metadata key or a value
//! (terminal escapes, carriage returns, newlines, NUL, zero-width and right-to-left marks) is shown
//! safely wherever ledger shows it: every terminal table and line shows it escaped, so it can
//! neither drive the terminal nor break a table's layout; CSV keeps it exactly, quoted.

use std::process::Output;

use crate::util::backend::{cid_of, enc};
use crate::util::{Sim, ledger, raw};

const NAME: &str = "evil\u{1b}[31mred\r\nline2\u{202e}gpj.exe\u{7}";
const ORG: &str = "org\u{1b}]0;pwned\u{7}";
const KEY: &str = "k\u{200b}ey\ttab";
const VALUE: &str = "v\nnext line\u{0}";

fn run(dir: &std::path::Path, sim: &Sim, args: &[&str]) -> Output {
    ledger()
        .current_dir(dir)
        .args(["--db", "ledger.db", "--cluster", sim.url(0)])
        .args(args)
        .output()
        .unwrap()
}

/// No character that drives a terminal or reorders a line reaches it; the line breaks are ledger's.
fn assert_shown_safely(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<char> = text
            .chars()
            .filter(|c| {
                (c.is_control() && *c != '\n')
                    || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(bad.is_empty(), "{what} {stream} holds {bad:?}:\n{text}");
        // The name's own line break never starts a line of output.
        assert!(
            !text.lines().any(|l| l.starts_with("line2") || l.starts_with("next line")),
            "{what} {stream}: a value broke a line:\n{text}"
        );
    }
}

#[test]
fn hostile_names_keys_and_values_are_shown_escaped_everywhere() {
    let sim = Sim::start(&["--peers", "1", "--pins", "0", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let cids: Vec<String> = (0..3).map(|i| cid_of(&format!("hostile {i}"))).collect();
    for cid in &cids {
        let q =
            format!("name={}&meta-org={}&meta-{}={}", enc(NAME), enc(ORG), enc(KEY), enc(VALUE));
        let r = raw(sim.url(0), "POST", &format!("/pins/{cid}?{q}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let out = run(dir.path(), &sim, &["snapshot"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_shown_safely("snapshot", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("org\\u{1b}]0;pwned\\u{7}"));

    // A bare re-pin wipes one pin: `lost` shows every hostile value it had.
    let r = raw(sim.url(0), "POST", &format!("/pins/{}", cids[0]), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(run(dir.path(), &sim, &["snapshot"]).status.code(), Some(0));
    let lost = run(dir.path(), &sim, &["lost"]);
    assert_eq!(lost.status.code(), Some(1));
    assert_shown_safely("lost", &lost);
    let text = String::from_utf8_lossy(&lost.stdout);
    assert!(text.contains("evil\\u{1b}[31mred\\r\\nline2\\u{202e}gpj.exe\\u{7}"), "{text}");
    assert!(text.contains("metadata.k\\u{200b}ey\\ttab"), "{text}");
    // The table's columns line up: every row starts its second column where the header does.
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let col = lines[0].find("snapshots").unwrap();
    for l in lines.iter().skip(1).filter(|l| l.starts_with("Qm")) {
        assert_eq!(l.char_indices().nth(col).map(|(_, c)| c), Some('1'), "misaligned: {l}");
    }

    for args in [
        vec!["owners"],
        vec!["history", cids[0].as_str()],
        vec!["diff", "1", "2"],
        vec!["snapshots"],
        vec!["restore", "--from", "1", "--dry-run"],
    ] {
        let out = run(dir.path(), &sim, &args);
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_shown_safely(&args.join(" "), &out);
    }

    // CSV keeps the values exactly, quoted: a script reading it gets what the cluster holds.
    let out = run(dir.path(), &sim, &["export", "pins", "--csv", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rdr = csv::Reader::from_reader(&out.stdout[..]);
    let headers = rdr.headers().unwrap().clone();
    let name_col = headers.iter().position(|h| h == "name").unwrap();
    let names: Vec<String> = rdr.records().map(|r| r.unwrap()[name_col].to_string()).collect();
    assert_eq!(names.iter().filter(|n| *n == NAME).count(), 2, "{names:?}");
}
