//! The field report's metadata table (issue 10, point 4), measured again: every format the report
//! tried on IPFS Cluster v1.1.5 is sent to a real v1.1.5 peer, to a real v1.1.6 peer and to
//! `ledger sim serve`, by one test body, and each outcome is checked against the report's table
//! (`ipfs-cluster-metadata.md`, "API Format Discovery"). The pin is read back from
//! `/allocations/{cid}` (the stored form); the POST answer is the in-memory form, whose empty
//! metadata is `{}` where the stored form has `null` (docs/cluster-api.md §2.1).
//!
//! What the real clusters showed about the report's table: its `null` for `?metadata={…}` and its
//! `{}` for `?metadata=org=hrdag` and `?metadata-org=hrdag` are not two behaviours. All three
//! formats are ignored alike (no `meta-` key), every one answers `{}` in the POST response and
//! stores `null`; the report read the first from the stored pin and the other two from the POST
//! answer. The JSON body is ignored too, so that POST is a bare re-pin: it resets the name to `""`
//! and, with the default replication (-1/-1), the allocations to `[]` (docs/cluster-api.md §6.2).

use std::time::Instant;

use serde_json::{Value, json};

use crate::util::backend::{Backend, Cluster};
use crate::util::realcluster::{RealCluster, RealOptions, V1_1_5, V1_1_6, available};
use crate::util::*;

/// A CIDv0 whose multihash is the SHA-256 of `label` (content no peer has: the cluster's state
/// does not need it).
fn cid(label: &str) -> String {
    cid_of(label)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The POST answer's `metadata` (in-memory form).
    Response,
    /// The stored pin's `metadata` (`/allocations/{cid}`).
    Stored,
    /// Not a metadata value: the report's warning that name and allocations were wiped.
    Wipe,
}

/// One row of the report's table, as sent and as the report saw it.
struct Attempt {
    attempt: &'static str,
    /// The query after `?` (already URL-encoded) and the body.
    query: &'static str,
    body: &'static str,
    /// The report's "Result" column, and which form of the pin it matches: the report read some
    /// results from the POST answer and some from the stored pin.
    report: &'static str,
    seen_in: Seen,
    /// What the real cluster answers (in-memory form) and stores, for the metadata.
    response_metadata: Value,
    stored_metadata: Value,
}

fn attempts() -> Vec<Attempt> {
    vec![
        Attempt {
            attempt: "URL-encoded JSON",
            query: "metadata=%7B%22org%22%3A%22hrdag%22%7D",
            body: "",
            report: "metadata: null",
            seen_in: Seen::Stored,
            response_metadata: json!({}),
            stored_metadata: Value::Null,
        },
        Attempt {
            attempt: "Key=value string",
            query: "metadata=org%3Dhrdag",
            body: "",
            report: "metadata: {}",
            seen_in: Seen::Response,
            response_metadata: json!({}),
            stored_metadata: Value::Null,
        },
        Attempt {
            attempt: "JSON body POST",
            query: "",
            body: r#"{"metadata":{"org":"hrdag"}}"#,
            report: "Wiped name and allocations!",
            seen_in: Seen::Wipe,
            response_metadata: json!({}),
            stored_metadata: Value::Null,
        },
        Attempt {
            attempt: "Hyphen prefix",
            query: "metadata-org=hrdag",
            body: "",
            report: "metadata: {}",
            seen_in: Seen::Response,
            response_metadata: json!({}),
            stored_metadata: Value::Null,
        },
        Attempt {
            attempt: "meta- prefix",
            query: "meta-org=hrdag",
            body: "",
            report: r#"{"metadata": {"org": "hrdag"}}"#,
            seen_in: Seen::Stored,
            response_metadata: json!({"org": "hrdag"}),
            stored_metadata: json!({"org": "hrdag"}),
        },
        Attempt {
            attempt: "meta- prefix, two keys",
            query: "meta-org=hrdag&meta-env=prod",
            body: "",
            report: r#"{"metadata": {"org": "hrdag", "env": "prod"}}"#,
            seen_in: Seen::Stored,
            response_metadata: json!({"env": "prod", "org": "hrdag"}),
            stored_metadata: json!({"env": "prod", "org": "hrdag"}),
        },
    ]
}

fn stored(c: &Cluster, cid: &str) -> Value {
    let r = raw(c.url(0), "GET", &format!("/allocations/{cid}"), &[], b"");
    assert_eq!(r.status, 200, "GET /allocations/{cid}: {}", r.text());
    r.json()
}

/// A list of peer IDs with each ID written as its peer's name.
fn peers(c: &Cluster, list: &Value) -> String {
    let mut s = compact(list);
    for (i, id) in c.ids().iter().enumerate() {
        s = s.replace(id, &format!("peer{i}"));
    }
    s
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// The one test body: every attempt of the report on `c`, checked and printed as a table.
fn field_report(what: &str, c: &Cluster) {
    let started = Instant::now();
    let mut rows = vec![[
        "attempt".to_string(),
        "request".to_string(),
        "pin before".to_string(),
        "status".to_string(),
        "POST metadata".to_string(),
        "stored metadata".to_string(),
        "stored name".to_string(),
        "stored allocations".to_string(),
        "report".to_string(),
    ]];
    for (i, a) in attempts().into_iter().enumerate() {
        let cid = cid(&format!("field report attempt {i}"));
        let wipes = !a.body.is_empty();
        let mut before = "-".to_string();
        if wipes {
            // The report's danger: a pin that has a name and allocations before the JSON body POST.
            let first = format!("/pins/{cid}?name=dataset-0042%2Ffile-17.csv&replication=2");
            let r = raw(c.url(0), "POST", &first, &[], b"");
            assert_eq!(r.status, 200, "{what}: POST {first}: {}", r.text());
            let p = stored(c, &cid);
            assert_eq!(p["name"], "dataset-0042/file-17.csv", "{what}: {p}");
            assert_eq!(p["allocations"].as_array().map(Vec::len), Some(2), "{what}: {p}");
            assert_eq!(
                (&p["replication_factor_min"], &p["replication_factor_max"]),
                (&json!(2), &json!(2))
            );
            let allocs = peers(c, &p["allocations"]);
            before = format!("name {}, allocations {allocs}", compact(&p["name"]));
        }
        let path = if a.query.is_empty() {
            format!("/pins/{cid}")
        } else {
            format!("/pins/{cid}?{}", a.query)
        };
        let headers: &[(&str, &str)] =
            if wipes { &[("Content-Type", "application/json")] } else { &[] };
        let r = raw(c.url(0), "POST", &path, headers, a.body.as_bytes());
        assert_eq!(r.status, 200, "{what}: {}: POST {path}: {}", a.attempt, r.text());
        let resp = r.json();
        assert_eq!(
            resp["metadata"], a.response_metadata,
            "{what}: {}: POST answer {resp}",
            a.attempt
        );
        let p = stored(c, &cid);
        assert_eq!(p["metadata"], a.stored_metadata, "{what}: {}: stored {p}", a.attempt);
        // The report's own value, where it gives one, is what the form it was read from shows.
        let report_value =
            a.report.strip_prefix("metadata: ").map(|v| serde_json::from_str(v).unwrap()).or_else(
                || serde_json::from_str::<Value>(a.report).ok().map(|v| v["metadata"].clone()),
            );
        match (a.seen_in, report_value) {
            (Seen::Response, Some(v)) => assert_eq!(resp["metadata"], v, "{what}: {}", a.attempt),
            (Seen::Stored, Some(v)) => assert_eq!(p["metadata"], v, "{what}: {}", a.attempt),
            (Seen::Wipe, None) => {
                assert!(wipes && a.report.starts_with("Wiped name and allocations"))
            }
            (_, v) => panic!("{}: the report's {:?} does not parse as {v:?}", a.attempt, a.report),
        }
        if wipes {
            // The body was never read: a bare re-pin, name reset, replication back to the
            // cluster default (-1/-1, everywhere), so the allocations are gone.
            assert_eq!(p["name"], "", "{what}: the JSON body POST keeps no name: {p}");
            assert_eq!(p["allocations"], json!([]), "{what}: allocations wiped: {p}");
            assert_eq!(
                (&p["replication_factor_min"], &p["replication_factor_max"]),
                (&json!(-1), &json!(-1))
            );
            assert_eq!(resp["name"], "", "{what}: {resp}");
            assert_eq!(resp["allocations"], json!([]), "{what}: {resp}");
        } else {
            assert_eq!(p["name"], "", "{what}: {p}");
        }
        let request = if wipes {
            format!("POST /pins/<cid> -d '{}'", a.body)
        } else {
            format!("?{}", a.query)
        };
        rows.push([
            a.attempt.to_string(),
            request,
            before,
            r.status.to_string(),
            compact(&resp["metadata"]),
            compact(&p["metadata"]),
            compact(&p["name"]),
            compact(&p["allocations"])
                .replace(&c.ids()[0], "peer0")
                .replace(&c.ids()[1], "peer1")
                .replace(&c.ids()[2], "peer2"),
            a.report.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|k| rows.iter().map(|r| r[k].chars().count()).max().unwrap())
        .collect();
    println!("field report, observed on {what}:");
    for r in &rows {
        let cells: Vec<String> =
            r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}", w = *w)).collect();
        println!("  {}", cells.join("  ").trim_end());
    }
    println!(
        "field report on {what}: {} attempts in {:.1}s",
        rows.len() - 1,
        started.elapsed().as_secs_f64()
    );
}

/// The report on a real 3-peer cluster of `version`.
fn on_real(version: &'static str) {
    if !available(version) {
        return;
    }
    let c = Cluster::Real(RealCluster::start(RealOptions::new(version, 3)));
    field_report(&format!("IPFS Cluster {version}"), &c);
}

#[test]
fn field_report_on_real_v1_1_5() {
    on_real(V1_1_5);
}

#[test]
fn field_report_on_real_v1_1_6() {
    on_real(V1_1_6);
}

#[test]
fn field_report_on_sim() {
    let c = Cluster::start(Backend::Sim, 3).unwrap();
    field_report("ledger sim serve", &c);
}
