//! Wire types of the cluster's REST API, read leniently (unknown fields are ignored), and the
//! canonical form of a stored pin that the ledger keeps and compares.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Pin as `GET /allocations` returns it (the stored form, cluster-api.md §2.1).
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Go's zero time in any zone is "no time".
fn canonical_time(t: Option<&str>) -> Result<Option<String>, String> {
    let Some(t) = t.filter(|t| !t.is_empty()) else { return Ok(None) };
    let parsed = DateTime::parse_from_rfc3339(t).map_err(|e| format!("bad time {t:?}: {e}"))?;
    let utc = parsed.with_timezone(&Utc);
    if utc.timestamp() <= -62_135_596_800 {
        return Ok(None); // 0001-01-01T00:00:00Z
    }
    Ok(Some(crate::ids::go_time(&utc)))
}

impl CanonicalPin {
    /// Validates and normalises one stored-form pin.
    pub fn from_wire(w: WirePin) -> Result<CanonicalPin, String> {
        let cid = crate::ids::parse_cid(&w.cid).map_err(|e| format!("bad cid {:?}: {e}", w.cid))?;
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
        Ok(CanonicalPin {
            cid: cid.canonical,
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
        })
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
        xxhash_rust::xxh3::xxh3_128(self.canonical_json().as_bytes()).to_be_bytes()
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
    fn bad_lines_are_refused() {
        assert!(CanonicalPin::from_line(b"{").is_err());
        assert!(CanonicalPin::from_line(br#"{"cid":"nope"}"#).is_err());
        assert!(CanonicalPin::from_line(br#"{"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","timestamp":"yesterday"}"#).is_err());
    }
}
