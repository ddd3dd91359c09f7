//! `ledger repin`: one safe re-pin that keeps every other option, on the record (issue 4, point 2–3);
//! `a_repin_keeps_every_other_option::real` on a real v1.1.6 cluster.

use std::process::Output;

use crate::util::*;

const CID_DIRECT: &str = "QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME";
const CID_REPL: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
const CID_EXPIRED: &str = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";

/// A simulator of 3 peers holding a direct pin with expiry and origins, a pin with replication 2..3
/// allocated to two peers, and a pin whose expiry has passed.
fn cluster(extra: &[&str]) -> (Sim, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = {
        let probe = Sim::start(&["--peers", "3", "--lag", "0"]);
        probe.peers.iter().map(|p| p.id.clone()).collect()
    };
    let lines = [
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"direct one","mode":"direct","shard_size":0,"user_allocations":null,"expire_at":"2099-05-01T00:00:00Z","metadata":{{"project":"census","source":"crawler"}},"pin_update":null,"origins":["/ip4/10.0.0.1/tcp/4001/p2p/{}"],"cid":"{CID_DIRECT}","type":"pin","allocations":[],"max_depth":0,"reference":null,"timestamp":"2024-04-17T15:42:28Z"}}"#,
            ids[1]
        ),
        format!(
            r#"{{"replication_factor_min":2,"replication_factor_max":3,"name":"replicated","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":{{"org":""}},"pin_update":null,"origins":[],"cid":"{CID_REPL}","type":"pin","allocations":["{}","{}"],"max_depth":-1,"reference":null,"timestamp":"2024-04-17T15:42:28Z"}}"#,
            ids[2], ids[0]
        ),
        format!(
            r#"{{"replication_factor_min":-1,"replication_factor_max":-1,"name":"old","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"2001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":[],"cid":"{CID_EXPIRED}","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2000-04-17T15:42:28Z"}}"#
        ),
    ];
    let file = dir.path().join("pins.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut args = vec!["--peers", "3", "--lag", "0", "--from", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Sim::start(&args), dir)
}

fn repin(
    dir: &tempfile::TempDir,
    sim: &impl PeerUrls,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = ledger();
    cmd.current_dir(dir.path())
        .args(["--db", "ledger.db", "--cluster", &sim.all_urls(), "repin"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stored(sim: &impl PeerUrls, cid: &str, auth: &[(&str, &str)]) -> serde_json::Value {
    let r = raw(sim.peer_url(0), "GET", &format!("/allocations/{cid}"), auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn sql(dir: &tempfile::TempDir, q: &str) -> Vec<Vec<String>> {
    sql_rows(&dir.path().join("ledger.db"), q)
}

fn without(v: &serde_json::Value, keys: &[&str]) -> serde_json::Value {
    let mut v = v.clone();
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
    v
}

/// On both backends: a direct pin with an expiry, origins and two metadata keys, and a pin with
/// replication 2..3 allocated to two peers, each pinned through the REST API, then re-pinned by
/// `ledger repin --meta org=hrdag`: every other option stays as it was.
fn a_repin_keeps_every_other_option(b: Backend) {
    let Some(sim) = Cluster::start(b, 3) else { return };
    let ids = sim.ids();
    let origin = enc(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", ids[1]));
    sim.seed(&[
        (
            format!("/pins/ipfs/{CID_DIRECT}"),
            format!(
                "mode=direct&name=direct%20one&expire-at=2099-05-01T00:00:00Z\
                 &meta-project=census&meta-source=crawler&origins={origin}"
            ),
        ),
        (
            format!("/pins/{CID_REPL}"),
            format!(
                "name=replicated&replication-min=2&replication-max=3&meta-org=\
                 &user-allocations={},{}",
                ids[2], ids[0]
            ),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    for cid in [CID_DIRECT, CID_REPL] {
        let before = stored(&sim, cid, &[]);
        let out = repin(&dir, &sim, &[], &[cid, "--meta", "org=hrdag"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let after = stored(&sim, cid, &[]);
        // Everything but metadata and the timestamp is as before; metadata gained org.
        assert_eq!(
            without(&before, &["metadata", "timestamp"]),
            without(&after, &["metadata", "timestamp"])
        );
        let mut want = before["metadata"].as_object().cloned().unwrap_or_default();
        want.insert("org".into(), "hrdag".into());
        assert_eq!(after["metadata"], serde_json::Value::Object(want), "{cid}");
    }
    // The direct pin went through the path route and is still direct, with its origins and expiry.
    let direct = stored(&sim, CID_DIRECT, &[]);
    assert_eq!((&direct["max_depth"], &direct["mode"]), (&serde_json::json!(0), &"direct".into()));
    assert_eq!(direct["origins"].as_array().map(Vec::len), Some(1), "{direct}");
    assert!(direct["expire_at"].as_str().unwrap().starts_with("2099-05-01T00:00:00"), "{direct}");
    let repl = stored(&sim, CID_REPL, &[]);
    assert!(repl["allocations"].as_array().unwrap().len() >= 2, "{repl}");
    // Every peer follows.
    let pins = sim.wait_converged(std::time::Duration::from_secs(60));
    assert!(pins.iter().all(|p| p["metadata"]["org"] == "hrdag"), "{pins:?}");
}

crate::on_both!(a_repin_keeps_every_other_option);

#[test]
fn unset_removes_one_key_only() {
    let (sim, dir) = cluster(&[]);
    let out = repin(&dir, &sim, &[], &[CID_DIRECT, "--unset", "source", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "applied");
    assert_eq!(stored(&sim, CID_DIRECT, &[])["metadata"], serde_json::json!({"project": "census"}));
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let (sim, dir) = cluster(&[]);
    let writes = || sim.state()["writes"].as_u64().unwrap();
    let w0 = writes();
    for args in [
        vec![CID_DIRECT, "--meta", "a&b=1"],
        vec![CID_DIRECT, "--meta", "k;x=1"],
        vec![CID_DIRECT, "--meta", "=v"],
        vec!["not-a-cid", "--meta", "org=x"],
        vec![CID_DIRECT],
    ] {
        let out = repin(&dir, &sim, &[], &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
    // An expired pin would become permanent: refused, and recorded as refused.
    let out = repin(&dir, &sim, &[], &[CID_EXPIRED, "--meta", "org=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permanent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = sql(&dir, "SELECT status, outcome FROM repins");
    assert_eq!(rows, vec![vec!["refused".to_string(), "refused".to_string()]]);
    // A pin the peer does not have.
    let out = repin(
        &dir,
        &sim,
        &[],
        &["QmNLwtrnWuDahvQCHXzxUWKiahjSyiPw4C3Z4iC3oCVDWi", "--meta", "org=x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not pinned"));
    assert_eq!(writes(), w0, "no write reached the cluster");
}

#[test]
fn every_repin_is_on_the_record_without_credentials() {
    let (sim, dir) = cluster(&["--basic-auth", "admin:s3cret-pw"]);
    let env = [("LEDGER_BASIC_AUTH", "admin:s3cret-pw")];
    let out = repin(&dir, &sim, &env, &[CID_REPL, "--meta", "org=hrdag"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = sql(
        &dir,
        "SELECT u.kind, u.state, r.status, r.outcome, r.http_status, r.path, r.query, typeof(r.before_digest), typeof(r.after_digest)
         FROM repins r JOIN runs u ON u.id = r.run_id",
    );
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(&r[..5], ["repin", "done", "sent", "applied", "200"]);
    assert_eq!(r[5], format!("/pins/{CID_REPL}"));
    assert!(r[6].contains("meta-org=hrdag") && r[6].contains("replication-min=2"), "{}", r[6]);
    assert_eq!(&r[7..], ["blob", "blob"]);
    // The cluster's answer was already the intended pin: no note on the record.
    assert_eq!(sql(&dir, "SELECT count(*) FROM repins WHERE error IS NOT NULL")[0][0], "0");
    // Before and after are stored versions that differ.
    let v = sql(&dir, "SELECT count(*) FROM pin_versions");
    assert_eq!(v[0][0], "2");
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(9).any(|w| w == b"s3cret-pw"), "the password is in a ledger file");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
}

#[test]
fn pending_intents_are_reconciled_by_reading_the_pin() {
    let (sim, dir) = cluster(&[]);
    assert!(repin(&dir, &sim, &[], &[CID_DIRECT, "--meta", "org=hrdag"]).status.success());
    // As if the ledger had died after sending the first and before sending a second re-pin.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    // A request with no answer is `pending` (V11).
    conn.execute_batch(
        "DELETE FROM repin_answers WHERE repin_id = 1;
         INSERT INTO repins_unanswered (repin_id) VALUES (1);
         INSERT INTO repin_requests (run_id, pass, cid_id, path, query, intended, requested_at)
         SELECT run_id, pass, cid_id, path, 'meta-org=never', replace(intended, 'hrdag', 'never-sent'), requested_at
         FROM repin_requests WHERE id = 1;
         INSERT INTO repins_unanswered (repin_id) SELECT max(id) FROM repin_requests;",
    )
    .unwrap();
    drop(conn);
    assert!(repin(&dir, &sim, &[], &[CID_REPL, "--meta", "org=amnesty"]).status.success());
    let rows = sql(&dir, "SELECT id, status, outcome FROM repins ORDER BY id");
    assert_eq!(rows[0], ["1", "sent", "applied"]);
    assert_eq!(rows[1], ["2", "failed", "not-applied"]);
    assert_eq!(rows[2], ["3", "sent", "applied"]);
}
