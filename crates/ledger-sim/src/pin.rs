//! The simulator's Pin and its two JSON renderings (docs/cluster-api.md §2.1): the stored form, as
//! a pin comes back from the CRDT state, and the in-memory form that a POST answers with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use ledger_ids::{go_time, go_zero_time};

/// `api.PinType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PinType {
    Data,
    Meta,
    ClusterDag,
    Shard,
}

impl PinType {
    pub fn as_str(self) -> &'static str {
        match self {
            PinType::Data => "pin",
            PinType::Meta => "meta-pin",
            PinType::ClusterDag => "clusterdag-pin",
            PinType::Shard => "shard-pin",
        }
    }

    pub fn parse(s: &str) -> Option<PinType> {
        Some(match s {
            "pin" => PinType::Data,
            "meta-pin" => PinType::Meta,
            "clusterdag-pin" => PinType::ClusterDag,
            "shard-pin" => PinType::Shard,
            _ => return None,
        })
    }
}

/// A pin's metadata, kept sorted by key as Go emits maps. A sorted vector rather than a `BTreeMap`:
/// a `BTreeMap` allocates a node of several hundred bytes even for one entry, which would dominate the
/// simulator's memory at a million pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn insert(&mut self, key: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(m: BTreeMap<String, String>) -> Metadata {
        Metadata(m.into_iter().collect())
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// One pin. Holds the union of what both renderings need; [`Pin::to_stored`] drops what the CRDT state
/// does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub cid: String,
    pub typ: PinType,
    pub allocations: Vec<String>,
    /// -1 recursive, 0 direct, 1 for shards.
    pub max_depth: i32,
    pub reference: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub replication_min: i32,
    pub replication_max: i32,
    pub name: String,
    /// The `mode` of the request; only the in-memory form shows it (the stored form derives it).
    pub mode_query: Mode,
    pub shard_size: u64,
    /// Only in the in-memory form; never stored.
    pub user_allocations: Option<Vec<String>>,
    /// `None` = the zero time.
    pub expire_at: Option<DateTime<Utc>>,
    pub metadata: Metadata,
    pub pin_update: Option<String>,
    pub origins: Vec<String>,
    /// Whether `origins` was given (the in-memory form renders `null` when not).
    pub origins_given: bool,
    /// Whether the metadata map exists: the in-memory form renders empty metadata as `{}` only then,
    /// else `null` (a pin copied from the stored form, as pin-update does, or options that failed
    /// before the `meta-*` keys were parsed).
    pub metadata_given: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Recursive,
    Direct,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Recursive => "recursive",
            Mode::Direct => "direct",
        }
    }
}

impl Pin {
    /// The mode as stored: derived from `max_depth`.
    pub fn stored_mode(&self) -> Mode {
        if self.max_depth == 0 { Mode::Direct } else { Mode::Recursive }
    }

    /// The protobuf round trip: user allocations and the query's mode are dropped, times are truncated
    /// to whole seconds.
    pub fn to_stored(&self) -> Pin {
        let mut p = self.clone();
        p.user_allocations = None;
        p.mode_query = p.stored_mode();
        p.timestamp = trunc(p.timestamp);
        p.expire_at = p.expire_at.map(trunc);
        p.origins_given = true;
        p.metadata_given = false;
        p
    }

    /// Renders the stored form (every read, and the DELETE response).
    pub fn write_stored(&self, out: &mut Vec<u8>) {
        to_go_json(out, &self.wire(true));
    }

    /// The stored form as a JSON string.
    pub fn stored_json(&self) -> String {
        let mut v = Vec::with_capacity(512);
        self.write_stored(&mut v);
        String::from_utf8(v).expect("JSON is UTF-8")
    }

    /// Renders the in-memory form (the response to a POST).
    pub fn memory_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        to_go_json(&mut out, &self.wire(false));
        out
    }

    fn wire(&self, stored: bool) -> WirePin<'_> {
        let zero = go_zero_time();
        WirePin {
            replication_factor_min: self.replication_min,
            replication_factor_max: self.replication_max,
            name: &self.name,
            mode: if stored { self.stored_mode().as_str() } else { self.mode_query.as_str() },
            shard_size: self.shard_size,
            user_allocations: if stored { None } else { self.user_allocations.as_deref() },
            expire_at: go_time(self.expire_at.as_ref().unwrap_or(&zero)),
            metadata: if (stored || !self.metadata_given) && self.metadata.is_empty() {
                None
            } else {
                Some(&self.metadata)
            },
            pin_update: self.pin_update.as_deref(),
            origins: if stored || self.origins_given { Some(&self.origins) } else { None },
            cid: &self.cid,
            typ: self.typ.as_str(),
            allocations: &self.allocations,
            max_depth: self.max_depth,
            reference: self.reference.as_deref(),
            timestamp: go_time(&self.timestamp),
        }
    }

    /// Parses a stored-form Pin (a line of `GET /allocations`), for `--from`.
    pub fn from_stored_json(v: &serde_json::Value) -> Result<Pin, String> {
        let obj = v.as_object().ok_or("not a JSON object")?;
        let s = |k: &str| obj.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let list = |k: &str| -> Vec<String> {
            obj.get(k)
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let int = |k: &str, d: i64| obj.get(k).and_then(|x| x.as_i64()).unwrap_or(d);
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
            match s(k) {
                None => Ok(None),
                Some(t) => {
                    let t = ledger_ids::parse_rfc3339(&t)?;
                    Ok(if t == go_zero_time() { None } else { Some(t) })
                }
            }
        };
        let cid_text = s("cid").ok_or("missing \"cid\"")?;
        let cid =
            ledger_ids::parse_cid(&cid_text).map_err(|e| format!("bad cid {cid_text:?}: {e}"))?;
        let typ = match s("type") {
            None => PinType::Data,
            Some(t) => PinType::parse(&t).ok_or_else(|| format!("unknown pin type {t:?}"))?,
        };
        let max_depth = match obj.get("max_depth").and_then(|x| x.as_i64()) {
            Some(d) => d as i32,
            None if s("mode").as_deref() == Some("direct") => 0,
            None => -1,
        };
        let metadata = match obj.get("metadata") {
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect::<BTreeMap<_, _>>()
                .into(),
            _ => Metadata::default(),
        };
        Ok(Pin {
            cid: cid.canonical,
            typ,
            allocations: list("allocations"),
            max_depth,
            reference: s("reference"),
            timestamp: time("timestamp")?.unwrap_or_else(go_zero_time),
            replication_min: int("replication_factor_min", -1) as i32,
            replication_max: int("replication_factor_max", -1) as i32,
            name: s("name").unwrap_or_default(),
            mode_query: if max_depth == 0 { Mode::Direct } else { Mode::Recursive },
            shard_size: obj.get("shard_size").and_then(|x| x.as_u64()).unwrap_or(0),
            user_allocations: None,
            expire_at: time("expire_at")?,
            metadata,
            pin_update: s("pin_update"),
            origins: list("origins"),
            origins_given: true,
            metadata_given: false,
        }
        .to_stored())
    }
}

/// Serialises like Go's `json.Encoder` with its default `SetEscapeHTML(true)`: `<`, `>` and `&` become
/// `\u003c`, `\u003e`, `\u0026`, and U+2028/U+2029 are escaped too, so raw bytes match a real cluster's.
pub fn to_go_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
    v.serialize(&mut ser).expect("serialising to a Vec cannot fail");
}

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Field order of `api.Pin` as Go emits it: the embedded PinOptions first.
#[derive(Serialize)]
struct WirePin<'a> {
    replication_factor_min: i32,
    replication_factor_max: i32,
    name: &'a str,
    mode: &'static str,
    shard_size: u64,
    user_allocations: Option<&'a [String]>,
    expire_at: String,
    metadata: Option<&'a Metadata>,
    pin_update: Option<&'a str>,
    origins: Option<&'a Vec<String>>,
    cid: &'a str,
    #[serde(rename = "type")]
    typ: &'static str,
    allocations: &'a [String],
    max_depth: i32,
    reference: Option<&'a str>,
    timestamp: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pin() -> Pin {
        Pin {
            cid: "QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME".into(),
            typ: PinType::Data,
            allocations: vec![],
            max_depth: -1,
            reference: None,
            timestamp: Utc.timestamp_opt(1_713_368_548, 5).unwrap(),
            replication_min: -1,
            replication_max: -1,
            name: String::new(),
            mode_query: Mode::Recursive,
            shard_size: 0,
            user_allocations: Some(vec![]),
            expire_at: None,
            metadata: Metadata::default(),
            pin_update: None,
            origins: vec![],
            origins_given: false,
            metadata_given: true,
        }
    }

    #[test]
    fn stored_form_matches_the_real_world_example() {
        let want = r#"{"replication_factor_min":-1,"replication_factor_max":-1,"name":"","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":null,"pin_update":null,"origins":[],"cid":"QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2024-04-17T15:42:28Z"}"#;
        assert_eq!(pin().to_stored().stored_json(), want);
    }

    #[test]
    fn memory_form_differs_where_the_document_says() {
        let v: serde_json::Value = serde_json::from_slice(&pin().memory_json()).unwrap();
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["origins"], serde_json::Value::Null);
        assert_eq!(v["user_allocations"], serde_json::json!([]));
        assert_eq!(v["timestamp"], "2024-04-17T15:42:28.000000005Z");
    }

    #[test]
    fn html_characters_are_escaped_like_go() {
        let mut p = pin();
        p.name = "a<b>&c\u{2028}".into();
        let s = p.to_stored().stored_json();
        assert!(s.contains(r#""name":"a\u003cb\u003e\u0026c\u2028""#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["name"], "a<b>&c\u{2028}");
    }

    #[test]
    fn stored_json_parses_back() {
        let mut p = pin().to_stored();
        p.metadata.insert("org".into(), "hrdag".into());
        p.max_depth = 0;
        let v: serde_json::Value = serde_json::from_str(&p.stored_json()).unwrap();
        let back = Pin::from_stored_json(&v).unwrap();
        assert_eq!(back.stored_json(), p.to_stored().stored_json());
    }
}
