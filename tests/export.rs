//! `ledger export TABLE --csv`: every table, with its documented column set, from a real ledger
//! built against the simulator (a tag run, a re-pin that removes a key, a wipe from outside).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::*;

fn urls(sim: &Sim) -> String {
    sim.peers.iter().map(|p| p.url.clone()).collect::<Vec<_>>().join(",")
}

fn run(dir: &tempfile::TempDir, sim: &Sim, args: &[&str]) -> std::process::Output {
    ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", &urls(sim)])
        .args(args)
        .output()
        .unwrap()
}

/// The CSV of `ledger export TABLE`: header and rows as maps.
fn export(
    dir: &tempfile::TempDir,
    sim: &Sim,
    table: &str,
) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let out = run(dir, sim, &["export", table, "--csv", "-"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    csv_maps(&out.stdout[..])
}

fn is_utc_time(s: &str) -> bool {
    s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[test]
fn every_table_exports_with_its_documented_columns() {
    let sim = Sim::start(&["--peers", "2", "--pins", "120", "--seed", "5", "--lag", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let pins: Vec<Value> = raw(sim.url(0), "GET", "/allocations?filter=all", &[], b"").ndjson();
    let with_two_keys = pins
        .iter()
        .find(|p| p["metadata"].as_object().is_some_and(|m| m.len() >= 2 && m.contains_key("org")))
        .expect("a seeded pin with an org and another key");
    let keyed = with_two_keys["cid"].as_str().unwrap().to_string();
    let key = with_two_keys["metadata"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "org")
        .unwrap()
        .clone();

    let out = run(&dir, &sim, &["snapshot", "--all-peers"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        run(&dir, &sim, &["tag", "--org", "hrdag", "--settle", "200ms", "--probe-every", "100ms"]);
    assert!(out.status.code().unwrap() <= 1, "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&dir, &sim, &["repin", &keyed, "--unset", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A wipe from outside: a bare POST.
    let wiped = pins
        .iter()
        .map(|p| p["cid"].as_str().unwrap())
        .find(|c| {
            *c != keyed && pins.iter().any(|p| p["cid"] == *c && p["metadata"]["org"].is_string())
        })
        .unwrap()
        .to_string();
    assert_eq!(raw(sim.url(0), "POST", &format!("/pins/{wiped}"), &[], b"").status, 200);
    sim.wait_converged(std::time::Duration::from_secs(10));
    let out = run(&dir, &sim, &["snapshot", "--all-peers"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // repins
    let (h, rows) = export(&dir, &sim, "repins");
    assert_eq!(
        h,
        [
            "id",
            "run",
            "kind",
            "pass",
            "cid",
            "requested_at",
            "verified_at",
            "status",
            "http_status",
            "outcome",
            "path",
            "query",
            "error",
            "before_metadata",
            "after_metadata",
            "changed_fields",
            "metadata_keys",
            "name",
            "allocations",
            "replication_min",
            "replication_max",
            "mode",
            "expire_at",
            "origins"
        ]
    );
    let tagged = rows.iter().filter(|r| r["kind"] == "tag" && r["outcome"] == "applied").count();
    assert!(tagged > 0);
    for r in rows.iter().filter(|r| r["kind"] == "tag" && r["outcome"] == "applied") {
        // Seeded pins may carry an empty org, which counts as unowned.
        assert!(["+org", "~org"].contains(&r["metadata_keys"].as_str()), "{r:?}");
        assert_eq!(r["changed_fields"], "metadata", "{r:?}");
        let after: Value = serde_json::from_str(&r["after_metadata"]).unwrap();
        assert_eq!(after["org"], "hrdag");
        assert!(is_utc_time(&r["requested_at"]) && is_utc_time(&r["verified_at"]), "{r:?}");
        assert!(r["name"].is_empty() && r["replication_min"].is_empty(), "{r:?}");
    }
    let unset: Vec<_> = rows.iter().filter(|r| r["kind"] == "repin").collect();
    assert_eq!(unset.len(), 1);
    assert_eq!(unset[0]["cid"], keyed);
    assert_eq!(unset[0]["metadata_keys"], format!("-{key}"));
    let before: Value = serde_json::from_str(&unset[0]["before_metadata"]).unwrap();
    let after: Value = serde_json::from_str(&unset[0]["after_metadata"]).unwrap();
    assert!(before.get(&key).is_some() && after.get(&key).is_none());

    // runs and passes
    let (h, runs) = export(&dir, &sim, "runs");
    assert_eq!(
        h,
        [
            "id",
            "kind",
            "cluster",
            "peer",
            "peer_url",
            "org",
            "dry_run",
            "started_at",
            "finished_at",
            "state",
            "params",
            "passes",
            "repins",
            "applied",
            "failed",
            "refused"
        ]
    );
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0]["kind"].as_str(), runs[0]["org"].as_str()), ("tag", "hrdag"));
    assert_eq!(runs[0]["applied"], tagged.to_string());
    assert!(runs.iter().all(|r| is_utc_time(&r["started_at"]) && !r["peer_url"].contains('@')));
    let (h, passes) = export(&dir, &sim, "passes");
    assert_eq!(
        h,
        ["run", "pass", "started_at", "finished_at", "targets", "attempted", "succeeded", "failed"]
    );
    assert!(!passes.is_empty() && passes.iter().all(|p| p["run"] == "1"));
    assert_eq!(passes[0]["succeeded"], tagged.to_string());

    // convergence
    let (h, conv) = export(&dir, &sim, "convergence");
    assert_eq!(h, ["run", "org", "pass", "peer", "at", "seconds", "targets", "tagged", "percent"]);
    assert!(conv.len() >= 2, "one sample per peer at least");
    let last = conv.last().unwrap();
    assert_eq!(last["tagged"], last["targets"]);
    assert_eq!(last["percent"].parse::<f64>().unwrap(), 100.0);

    // owners: per peer, the counts add up to the pin set.
    let (h, owners) = export(&dir, &sim, "owners");
    assert_eq!(h, ["cluster", "peer", "snapshot", "org", "pins"]);
    let peer0: i64 = owners
        .iter()
        .filter(|r| r["peer"] == sim.peers[0].id)
        .map(|r| r["pins"].parse::<i64>().unwrap())
        .sum();
    assert_eq!(peer0, pins.len() as i64);

    // lost: the wiped pin's org (outside) and the removed key (ours).
    let (h, lost) = export(&dir, &sim, "lost");
    assert_eq!(
        h,
        [
            "cid",
            "peers",
            "last_had",
            "last_had_at",
            "first_lacking",
            "first_lacking_at",
            "unpinned",
            "field",
            "before",
            "after",
            "attribution",
            "run",
            "pass",
            "repin",
            "query"
        ]
    );
    let org_of_wiped =
        lost.iter().find(|r| r["cid"] == wiped && r["field"] == "metadata.org").unwrap();
    assert_eq!(org_of_wiped["attribution"], "outside");
    assert_eq!(org_of_wiped["after"], "");
    assert_eq!(org_of_wiped["peers"].split(' ').count(), 2);
    let ours =
        lost.iter().find(|r| r["cid"] == keyed && r["field"] == format!("metadata.{key}")).unwrap();
    assert_eq!(ours["attribution"], "ours");
    assert_eq!(ours["run"], "2");
    assert!(
        ours["query"].contains("meta-org=") && !ours["query"].contains(&format!("meta-{key}="))
    );
    assert!(is_utc_time(&ours["first_lacking_at"]));
    // A tag run only adds: none of its re-pins is a loss.
    assert!(lost.iter().all(|r| r["run"] != "1"), "{lost:?}");
}

#[test]
fn export_refuses_options_that_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger()
        .current_dir(dir.path())
        .args(["--db", "ledger.db", "export", "runs", "--csv", "-", "--snapshot", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--snapshot only applies"));
}
