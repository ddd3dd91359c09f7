//! The pin: as the cluster's REST API sends it (read leniently: unknown fields are ignored), and the
//! canonical form of a stored pin that the ledger keeps and compares. The client parses into it, the
//! store keeps it, the use cases compare it; it depends on none of them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Pin as `GET /allocations` returns it (the stored form, docs/cluster-api.md §2.1).
#[derive(Debug, Clone, Deserialize)]
pub struct WirePin {
    pub cid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub replication_factor_min: i32,
    #[serde(default)]
    pub replication_factor_max: i32,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub shard_size: u64,
    #[serde(default)]
    pub expire_at: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub pin_update: Option<String>,
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    #[serde(rename = "type", default)]
    pub typ: Option<serde_json::Value>,
    #[serde(default)]
    pub allocations: Option<Vec<String>>,
    #[serde(default = "minus_one")]
    pub max_depth: i32,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

fn minus_one() -> i32 {
    -1
}

/// The ledger's form of a stored pin: times in UTC, the zero time as `None`, empty metadata as an empty
/// map, mode derived from `max_depth` as the cluster does. Two pins are the same version exactly when
/// their canonical JSON is equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanonicalPin {
    pub cid: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub allocations: Vec<String>,
    pub replication_min: i32,
    pub replication_max: i32,
    pub mode: String,
    pub max_depth: i32,
    pub expire_at: Option<String>,
    pub origins: Vec<String>,
    #[serde(rename = "type")]
    pub typ: String,
    pub shard_size: u64,
    pub reference: Option<String>,
    pub pin_update: Option<String>,
    pub cluster_timestamp: Option<String>,
    /// xxh3-128 of the canonical JSON, computed once.
    #[serde(skip)]
    digest: [u8; 16],
    /// The JSON texts the ledger stores, rendered once (on the reading thread).
    #[serde(skip)]
    pub json: StoredJson,
}

/// Canonical JSON of the list and map fields, as stored in `pin_versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredJson {
    /// `None` when the metadata is empty.
    pub metadata: Option<String>,
    pub allocations: String,
    pub origins: String,
}

/// Go's zero time in any zone is "no time".
fn canonical_time(t: Option<&str>) -> Result<Option<String>, String> {
    let Some(t) = t.filter(|t| !t.is_empty()) else { return Ok(None) };
    if t == "0001-01-01T00:00:00Z" {
        return Ok(None);
    }
    if is_plain_utc_seconds(t) {
        return Ok(Some(t.to_string())); // already canonical: the common case, kept fast
    }
    let parsed = DateTime::parse_from_rfc3339(t).map_err(|e| format!("bad time {t:?}: {e}"))?;
    let utc = parsed.with_timezone(&Utc);
    if utc.timestamp() <= -62_135_596_800 {
        return Ok(None); // 0001-01-01T00:00:00Z
    }
    Ok(Some(crate::ids::go_time(&utc)))
}

/// `YYYY-MM-DDTHH:MM:SSZ` with plausible fields: the canonical form as it is.
fn is_plain_utc_seconds(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() != 20 || b[19] != b'Z' {
        return false;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !digits.iter().all(|&i| b[i].is_ascii_digit()) || !seps.iter().all(|&(i, c)| b[i] == c) {
        return false;
    }
    let num = |i: usize| (b[i] - b'0') as u32 * 10 + (b[i + 1] - b'0') as u32;
    (1..=12).contains(&num(5))
        && (1..=31).contains(&num(8))
        && num(11) < 24
        && num(14) < 60
        && num(17) < 60
}

/// Checks a CID string from the cluster. The cluster prints canonical CIDs (`Cid.String()`): a CIDv0 is
/// `Qm` + 44 base58 characters and a CIDv1 is base32 lower case with a `b` prefix; those pass a
/// character check. Anything else is parsed in full and re-encoded.
fn canonical_cid(s: &str) -> Result<String, String> {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let b = s.as_bytes();
    let v0 = b.len() == 46 && s.starts_with("Qm") && b.iter().all(|c| B58.contains(c));
    let v1 = b.len() > 40
        && b[0] == b'b'
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(c));
    if v0 || v1 {
        return Ok(s.to_string());
    }
    crate::ids::parse_cid(s).map(|c| c.canonical)
}

impl CanonicalPin {
    /// Validates and normalises one stored-form pin.
    pub fn from_wire(w: WirePin) -> Result<CanonicalPin, String> {
        let cid = canonical_cid(&w.cid).map_err(|e| format!("bad cid {:?}: {e}", w.cid))?;
        let typ = match &w.typ {
            None => "pin".to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            // Before v1.0 the type was a number (1 data, 2 meta, 4 clusterdag, 8 shard).
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(1) => "pin",
                Some(2) => "meta-pin",
                Some(4) => "clusterdag-pin",
                Some(8) => "shard-pin",
                _ => "bad-type",
            }
            .to_string(),
            Some(other) => return Err(format!("bad pin type {other}")),
        };
        let mut pin = CanonicalPin {
            cid,
            name: w.name,
            metadata: w.metadata.unwrap_or_default(),
            allocations: w.allocations.unwrap_or_default(),
            replication_min: w.replication_factor_min,
            replication_max: w.replication_factor_max,
            mode: if w.max_depth == 0 { "direct" } else { "recursive" }.to_string(),
            max_depth: w.max_depth,
            expire_at: canonical_time(w.expire_at.as_deref())?,
            origins: w.origins.unwrap_or_default(),
            typ,
            shard_size: w.shard_size,
            reference: w.reference.filter(|r| !r.is_empty()),
            pin_update: w.pin_update.filter(|r| !r.is_empty()),
            cluster_timestamp: canonical_time(w.timestamp.as_deref())?,
            digest: [0; 16],
            json: StoredJson::default(),
        };
        pin.digest = xxhash_rust::xxh3::xxh3_128(pin.canonical_json().as_bytes()).to_be_bytes();
        let text = |v: &dyn erased::Json| v.to_json();
        pin.json = StoredJson {
            metadata: (!pin.metadata.is_empty()).then(|| text(&pin.metadata)),
            allocations: text(&pin.allocations),
            origins: text(&pin.origins),
        };
        Ok(pin)
    }

    /// Parses one NDJSON line of `GET /allocations`.
    pub fn from_line(line: &[u8]) -> Result<CanonicalPin, String> {
        let w: WirePin = serde_json::from_slice(line).map_err(|e| format!("not a pin: {e}"))?;
        CanonicalPin::from_wire(w)
    }

    /// The canonical JSON (field order as declared, maps sorted).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }

    /// xxh3-128 of the canonical JSON.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// `metadata.org`, where non-empty.
    pub fn org(&self) -> Option<&str> {
        self.metadata.get("org").map(String::as_str).filter(|o| !o.is_empty())
    }

    /// Whether the pin expires in the future (relative to `now`).
    pub fn expires_after(&self, now: DateTime<Utc>) -> bool {
        self.expire_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t > now)
    }
}

mod erased {
    /// Canonical JSON of a list or map.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("serialisable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_and_zero_time_do_not_change_the_version() {
        let a = br#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","name":"x","metadata":null,"timestamp":"2024-05-06T14:53:20+02:00","expire_at":"0001-01-01T00:00:00Z","origins":[],"allocations":[],"max_depth":-1,"type":"pin","replication_factor_min":-1,"replication_factor_max":-1}"#;
        let b = br#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","name":"x","metadata":{},"timestamp":"2024-05-06T12:53:20Z","expire_at":"0001-01-01T01:00:00+01:00","origins":null,"allocations":null,"type":"pin","replication_factor_min":-1,"replication_factor_max":-1,"extra":1}"#;
        let (a, b) = (CanonicalPin::from_line(a).unwrap(), CanonicalPin::from_line(b).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.cluster_timestamp.as_deref(), Some("2024-05-06T12:53:20Z"));
        assert_eq!(a.expire_at, None);
    }

    #[test]
    fn fast_paths_agree_with_full_parsing() {
        for t in ["2024-05-06T12:53:20Z", "2024-05-06T14:53:20+02:00", "2024-05-06T12:53:20.5Z"] {
            let slow = DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
            assert_eq!(canonical_time(Some(t)).unwrap().unwrap(), crate::ids::go_time(&slow));
        }
        assert!(canonical_time(Some("2024-13-06T12:53:20Z")).is_err());
        for c in [crate::ids::cid_v0(b"x"), crate::ids::cid_v1(b"x")] {
            assert_eq!(canonical_cid(&c).unwrap(), crate::ids::parse_cid(&c).unwrap().canonical);
        }
        let z = "zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7";
        assert_eq!(canonical_cid(z).unwrap(), crate::ids::parse_cid(z).unwrap().canonical);
        assert!(canonical_cid("Qm!!").is_err());
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(CanonicalPin::from_line(b"{").is_err());
        assert!(CanonicalPin::from_line(br#"{"cid":"nope"}"#).is_err());
        assert!(CanonicalPin::from_line(br#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","timestamp":"yesterday"}"#).is_err());
    }
}
