//! The safe re-pin (docs/cluster-api.md §6.5): a re-pin replaces the whole pin, so the request must carry
//! every option the pin has — name, replication factors, every `meta-*`, a future expiry, origins,
//! direct mode through `/pins/ipfs/{cid}` — built from the stored pin as read from the peer that will
//! take the write, and checked locally before anything is sent (a bad option gets a 400 *and* a
//! half-applied pin from a real cluster). Pure: no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::pin::CanonicalPin;

/// Go's server reads at most 8 KiB of request line and headers; this leaves 1 KiB for the headers
/// (host, auth, user agent).
pub const MAX_URL_BYTES: usize = 7 * 1024;

/// Everything but RFC 3986 unreserved characters is escaped.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A re-pin ready to send: `POST {path}?{query}` with no body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub path: String,
    pub query: String,
    /// What the pin must look like afterwards (stored form, without timestamp and allocations).
    pub intended: Intended,
}

impl Request {
    /// `path?query`.
    pub fn path_and_query(&self) -> String {
        format!("{}?{}", self.path, self.query)
    }
}

/// The fields a safe re-pin promises to keep or set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Intended {
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub replication_min: i32,
    pub replication_max: i32,
    pub mode: String,
    pub expire_at: Option<String>,
    pub origins: Vec<String>,
    /// With `--allocations`: the pin counts as re-pinned only once it is allocated to none but
    /// these peers (the cluster takes `user-allocations` as a priority, §6.1 step 6). `None`: the
    /// allocations are the cluster's to choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations_within: Option<Vec<String>>,
}

impl Intended {
    /// The fields where `pin` differs from what was intended, by name.
    pub fn mismatches(&self, pin: &CanonicalPin) -> Vec<&'static str> {
        let mut out = Vec::new();
        if pin.name != self.name {
            out.push("name");
        }
        if pin.metadata != self.metadata {
            out.push("metadata");
        }
        if pin.replication_min != self.replication_min
            || pin.replication_max != self.replication_max
        {
            out.push("replication");
        }
        if pin.mode != self.mode {
            out.push("mode");
        }
        if pin.expire_at != self.expire_at {
            out.push("expire_at");
        }
        if pin.origins != self.origins {
            out.push("origins");
        }
        if let Some(within) = &self.allocations_within
            && pin.allocations.iter().any(|a| !within.contains(a))
        {
            out.push("allocations");
        }
        out
    }
}

/// Why a re-pin is refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "metadata key {0:?} is empty or holds &, =, ;, # or a control character; the cluster cannot take it as a meta- query parameter"
    )]
    BadKey(String),
    #[error("metadata value for {0:?} holds a NUL or control character")]
    BadValue(String),
    #[error("the pin expired at {0}; re-pinning it would make it permanent")]
    Expired(String),
    #[error("a {0} cannot be re-pinned through the pins API")]
    NotAPin(String),
    #[error("the request would be {0} bytes long, over the cluster's limit of {MAX_URL_BYTES}")]
    TooLong(usize),
}

/// Values a re-pin puts in place of the pin's own (a restore of last-known values). `None`: keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub name: Option<String>,
    pub replication: Option<(i32, i32)>,
    /// `Some(None)`: never expires.
    pub expire_at: Option<Option<String>>,
    /// Sent as `user-allocations`: a priority, not a guarantee.
    pub allocations: Option<Vec<String>>,
}

/// [`build`] on `pin` with `overrides` put in place first: every option not overridden is kept.
pub fn build_with(
    pin: &CanonicalPin,
    overrides: &Overrides,
    set: &BTreeMap<String, String>,
    unset: &[String],
    now: DateTime<Utc>,
) -> Result<Request, Refusal> {
    let mut p = pin.clone();
    if let Some(n) = &overrides.name {
        p.name = n.clone();
    }
    if let Some((min, max)) = overrides.replication {
        (p.replication_min, p.replication_max) = (min, max);
    }
    if let Some(e) = &overrides.expire_at {
        p.expire_at = e.clone();
    }
    if let Some(a) = &overrides.allocations {
        p.allocations = a.clone();
    }
    build(&p, set, unset, now)
}

/// Builds the safe re-pin of `pin` (as just read from the write peer) with `set` applied and `unset`
/// keys removed. Keys are sent in sorted order, each parameter once.
pub fn build(
    pin: &CanonicalPin,
    set: &BTreeMap<String, String>,
    unset: &[String],
    now: DateTime<Utc>,
) -> Result<Request, Refusal> {
    if pin.typ != "pin" {
        return Err(Refusal::NotAPin(pin.typ.clone()));
    }
    let mut metadata = pin.metadata.clone();
    for k in unset {
        metadata.remove(k);
    }
    for (k, v) in set {
        metadata.insert(k.clone(), v.clone());
    }
    for (k, v) in &metadata {
        check_key(k)?;
        if v.chars().any(|c| c.is_control()) {
            return Err(Refusal::BadValue(k.clone()));
        }
    }
    let expire_at = match &pin.expire_at {
        None => None,
        Some(t) if pin.expires_after(now) => Some(t.clone()),
        Some(t) => return Err(Refusal::Expired(t.clone())),
    };
    let direct = pin.mode == "direct";
    let mut params: Vec<(String, String)> = vec![
        ("name".into(), pin.name.clone()),
        ("replication-min".into(), pin.replication_min.to_string()),
        ("replication-max".into(), pin.replication_max.to_string()),
    ];
    if direct {
        params.push(("mode".into(), "direct".into()));
    }
    if let Some(t) = &expire_at {
        params.push(("expire-at".into(), t.clone()));
    }
    if !pin.origins.is_empty() {
        params.push(("origins".into(), pin.origins.join(",")));
    }
    if !pin.allocations.is_empty() {
        // Only a priority: the cluster keeps valid current allocations anyway (§6.1 step 6).
        params.push(("user-allocations".into(), pin.allocations.join(",")));
    }
    for (k, v) in &metadata {
        params.push((format!("meta-{k}"), v.clone()));
    }
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, ESCAPE), utf8_percent_encode(v, ESCAPE))
        })
        .collect::<Vec<_>>()
        .join("&");
    let path =
        if direct { format!("/pins/ipfs/{}", pin.cid) } else { format!("/pins/{}", pin.cid) };
    let len = "POST ".len() + path.len() + 1 + query.len() + " HTTP/1.1\r\n".len();
    if len > MAX_URL_BYTES {
        return Err(Refusal::TooLong(len));
    }
    Ok(Request {
        path,
        query,
        intended: Intended {
            name: pin.name.clone(),
            metadata,
            replication_min: pin.replication_min,
            replication_max: pin.replication_max,
            mode: pin.mode.clone(),
            expire_at,
            origins: pin.origins.clone(),
            allocations_within: None,
        },
    })
}

/// A metadata key the ledger will send: non-empty, no separators, no control characters.
pub fn check_key(k: &str) -> Result<(), Refusal> {
    let bad =
        k.is_empty() || k.chars().any(|c| matches!(c, '&' | '=' | ';' | '#') || c.is_control());
    if bad { Err(Refusal::BadKey(k.to_string())) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(line: &str) -> CanonicalPin {
        CanonicalPin::from_line(line.as_bytes()).unwrap()
    }

    const BASE: &str = r#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","name":"a b&c","replication_factor_min":2,"replication_factor_max":3,"metadata":{"project":"x","org":""},"origins":[],"allocations":["12D3KooWJicdM7VtrP1iAfDrboKSAC1qPQ4H1KUkwjc7EE31w2AA"],"max_depth":-1,"type":"pin","expire_at":"2099-01-01T00:00:00Z","timestamp":"2024-01-01T00:00:00Z"}"#;

    fn set(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn every_option_travels_and_is_escaped() {
        let r = build(&pin(BASE), &set("org", "hrdag"), &[], Utc::now()).unwrap();
        assert_eq!(r.path, "/pins/QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME");
        assert_eq!(
            r.query,
            "expire-at=2099-01-01T00%3A00%3A00Z&meta-org=hrdag&meta-project=x&name=a%20b%26c&replication-max=3&replication-min=2&user-allocations=12D3KooWJicdM7VtrP1iAfDrboKSAC1qPQ4H1KUkwjc7EE31w2AA"
        );
        assert_eq!(r.intended.metadata.len(), 2);
    }

    #[test]
    fn direct_pins_use_the_path_route() {
        let line = BASE.replace(r#""max_depth":-1"#, r#""max_depth":0"#);
        let r = build(&pin(&line), &set("org", "hrdag"), &[], Utc::now()).unwrap();
        assert!(r.path.starts_with("/pins/ipfs/"));
        assert!(r.query.contains("mode=direct"));
    }

    #[test]
    fn refusals() {
        let p = pin(BASE);
        assert!(matches!(build(&p, &set("a&b", "x"), &[], Utc::now()), Err(Refusal::BadKey(_))));
        assert!(matches!(build(&p, &set("a=b", "x"), &[], Utc::now()), Err(Refusal::BadKey(_))));
        assert!(matches!(build(&p, &set("", "x"), &[], Utc::now()), Err(Refusal::BadKey(_))));
        assert!(matches!(build(&p, &set("k", "a\nb"), &[], Utc::now()), Err(Refusal::BadValue(_))));
        let expired = BASE.replace("2099-01-01", "2001-01-01");
        assert!(matches!(
            build(&pin(&expired), &set("org", "x"), &[], Utc::now()),
            Err(Refusal::Expired(_))
        ));
        assert!(matches!(
            build(&p, &set("big", &"x".repeat(8000)), &[], Utc::now()),
            Err(Refusal::TooLong(_))
        ));
        let meta = BASE.replace(r#""type":"pin""#, r#""type":"meta-pin""#);
        assert!(matches!(
            build(&pin(&meta), &set("org", "x"), &[], Utc::now()),
            Err(Refusal::NotAPin(_))
        ));
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let p = pin(BASE);
        let ov = Overrides {
            name: Some("old".into()),
            replication: Some((1, 4)),
            expire_at: Some(None),
            allocations: None,
        };
        let r = build_with(&p, &ov, &set("team", "a"), &[], Utc::now()).unwrap();
        assert_eq!(
            r.query,
            "meta-org=&meta-project=x&meta-team=a&name=old&replication-max=4&replication-min=1&user-allocations=12D3KooWJicdM7VtrP1iAfDrboKSAC1qPQ4H1KUkwjc7EE31w2AA"
        );
        assert_eq!(r.intended.mismatches(&p), vec!["name", "metadata", "replication", "expire_at"]);
        let past = Overrides { expire_at: Some(Some("2001-01-01T00:00:00Z".into())), ..ov };
        assert!(matches!(
            build_with(&p, &past, &BTreeMap::new(), &[], Utc::now()),
            Err(Refusal::Expired(_))
        ));
    }

    #[test]
    fn unset_removes_and_mismatches_are_named() {
        let p = pin(BASE);
        let r = build(&p, &BTreeMap::new(), &["project".to_string()], Utc::now()).unwrap();
        assert!(!r.query.contains("meta-project"));
        assert_eq!(r.intended.mismatches(&p), vec!["metadata"]);
    }
}
