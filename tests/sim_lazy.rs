//! `ledger sim serve --lazy-pins N` (issue 15, point 1): a generated set the simulator never holds
//! is snapshotted, re-pinned in bulk and snapshotted again by the real `ledger`, and every peer
//! serves exactly what the ledger recorded.

use std::time::Duration;

use crate::util::*;

#[test]
fn a_lazy_set_is_snapshotted_and_repinned_like_a_held_one() {
    let sim = Sim::start(&["--peers", "3", "--lazy-pins", "20000", "--lag", "0..50ms"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        ledger()
            .current_dir(dir.path())
            .args(["--db", "ledger.db", "--cluster", &sim.all_urls()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["snapshot", "--all-peers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let db = dir.path().join("ledger.db");
    assert_eq!(
        sql_rows(&db, "SELECT pins_seen, state FROM snapshots ORDER BY id"),
        vec![vec!["20000".to_string(), "complete".to_string()]; 3]
    );
    for (i, id) in ["1", "2", "3"].into_iter().enumerate() {
        assert_eq!(snapshot_pins(&db, id), served_pins(sim.url(i), &[]), "snapshot {id}");
    }
    // A generated pin is found by its CID, as a held one is.
    let first = sorted_pinset(sim.url(0), &[]);
    let cid = first[7]["cid"].as_str().unwrap().to_string();
    let r = raw(sim.url(1), "GET", &format!("/allocations/{cid}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), first[7]);
    // 50 of them re-pinned with one more key, every other option kept.
    let list: Vec<&str> = first.iter().step_by(400).map(|p| p["cid"].as_str().unwrap()).collect();
    assert_eq!(list.len(), 50);
    std::fs::write(dir.path().join("list"), list.join("\n")).unwrap();
    let out = run(&["repin", "--only", "list", "--meta", "team=x", "--settle", "500ms", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    sim.wait_converged(Duration::from_secs(30));
    for peer in 0..3 {
        let now = sorted_pinset(sim.url(peer), &[]);
        assert_eq!(now.len(), 20000, "peer{peer}");
        for (a, b) in now.iter().zip(&first) {
            if list.contains(&a["cid"].as_str().unwrap()) {
                assert_eq!(a["metadata"]["team"], "x", "peer{peer}: {a}");
                assert_eq!(a["name"], b["name"]);
                assert_eq!(a["allocations"], b["allocations"]);
            } else {
                assert_eq!(a, b, "peer{peer}: an untouched pin changed");
            }
        }
    }
    let out = run(&["snapshot", "--all-peers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let changed = sql_rows(
        &db,
        "SELECT sum(changed_pins) FROM snapshots WHERE id > 3 GROUP BY series_id ORDER BY series_id",
    );
    assert_eq!(
        changed,
        vec![vec!["50".to_string()]; 3],
        "each peer's snapshots see the 50 re-pins"
    );
    let last = sql_rows(&db, "SELECT max(id) FROM snapshots");
    assert_eq!(snapshot_pins(&db, &last[0][0]).len(), 20000);
}
