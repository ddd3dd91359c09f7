//! Query strings as Go's `url.ParseQuery` reads them, and `PinOptions.FromQuery`
//! (docs/cluster-api.md §3): the only place a pin's options come from. The request body is never
//! read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::pin::Mode;

/// `url.Values` in arrival order: `get` returns the first value of a key.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses like Go ≥ 1.17: `&`-separated pairs; a pair holding `;` or a bad escape is dropped;
    /// `+` and `%20` are spaces.
    pub fn parse(raw: &str) -> Query {
        let mut pairs = Vec::new();
        for part in raw.split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
                pairs.push((k, v));
            }
        }
        Query(pairs)
    }

    /// The first value of `key`, or `""`.
    pub fn get(&self, key: &str) -> &str {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// `url.QueryUnescape`: `None` on a malformed escape.
pub fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `PinOptions` as parsed from a query.
#[derive(Debug, Clone, Default)]
pub struct PinOptions {
    pub name: String,
    pub mode: Option<Mode>,
    pub replication_min: i32,
    pub replication_max: i32,
    pub shard_size: u64,
    pub user_allocations: Option<Vec<String>>,
    pub expire_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    /// Whether parsing got as far as the `meta-*` keys: before that Go's map is nil (`null` in the
    /// POST answer of a partly applied pin), after it an empty map (`{}`).
    pub metadata_parsed: bool,
    pub pin_update: Option<String>,
    pub origins: Option<Vec<String>>,
}

impl PinOptions {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Recursive)
    }
}

/// `PinOptions.FromQuery`. On error, returns the options parsed so far with the 400 message: the
/// real handler goes on with them (the partial-apply quirk).
pub fn from_query(q: &Query, now: DateTime<Utc>) -> (PinOptions, Option<String>) {
    let mut po = PinOptions { name: q.get("name").to_string(), ..Default::default() };
    po.mode = match q.get("mode") {
        "direct" => Some(Mode::Direct),
        _ => Some(Mode::Recursive),
    };
    let (mut rmin, mut rmax) = (q.get("replication-min"), q.get("replication-max"));
    let r = q.get("replication");
    if !r.is_empty() {
        rmin = r;
        rmax = r;
    }
    for (name, value) in [("replication-min", rmin), ("replication-max", rmax)] {
        if !value.is_empty() {
            match go_atoi(value) {
                Some(v) if name == "replication-min" => po.replication_min = v,
                Some(v) => po.replication_max = v,
                None => return (po, Some(format!("parameter {name} invalid"))),
            }
        }
    }
    let shard = q.get("shard-size");
    if !shard.is_empty() {
        match shard.parse::<u64>() {
            Ok(v) => po.shard_size = v,
            Err(_) => return (po, Some("parameter shard_size is invalid".to_string())),
        }
    }
    let allocs = q.get("user-allocations");
    if !allocs.is_empty() {
        po.user_allocations =
            Some(allocs.split(',').filter_map(ledger_ids::parse_peer_id).collect());
    }
    let (at, within) = (q.get("expire-at"), q.get("expire-in"));
    if !at.is_empty() {
        match ledger_ids::parse_rfc3339(at) {
            Ok(t) => po.expire_at = Some(t),
            Err(_) => {
                return (po, Some(format!("expire-at cannot be parsed: {}", go_rfc3339_error(at))));
            }
        }
    } else if !within.is_empty() {
        match ledger_ids::parse_signed_go_duration(within) {
            Err(e) => return (po, Some(format!("expire-in cannot be parsed: {e}"))),
            Ok((neg, d)) if neg || d < std::time::Duration::from_secs(1) => {
                return (po, Some("expire-in duration too short".to_string()));
            }
            Ok((_, d)) => {
                po.expire_at = Some(now + chrono::Duration::from_std(d).unwrap_or_default())
            }
        }
    }
    po.metadata_parsed = true;
    for (k, _) in q.pairs() {
        if let Some(key) = k.strip_prefix("meta-")
            && !key.is_empty()
        {
            po.metadata.insert(key.to_string(), q.get(k).to_string());
        }
    }
    let upd = q.get("pin-update");
    if !upd.is_empty() {
        match parse_cid(upd) {
            Ok(c) => po.pin_update = Some(c.canonical),
            Err(e) => return (po, Some(format!("error decoding update option parameter: {e}"))),
        }
    }
    let origins = q.get("origins");
    if !origins.is_empty() {
        let mut list = Vec::new();
        for o in origins.split(',') {
            match ledger_ids::parse_origin(o) {
                Ok(m) => list.push(m),
                Err(e) => return (po, Some(e)),
            }
        }
        po.origins = Some(list);
    }
    (po, None)
}

/// [`ledger_ids::parse_cid`] with the error texts of go-cid's `Decode` (v0.6), which the cluster
/// puts after "error decoding Cid: " and the like.
pub fn parse_cid(s: &str) -> Result<ledger_ids::ParsedCid, String> {
    ledger_ids::parse_cid(s).map_err(|e| go_cid_error(s, &e))
}

fn go_cid_error(s: &str, parsed: &str) -> String {
    /// The multibase prefixes go-multibase decodes.
    const MULTIBASES: &str = "\0 0 7 9 f F b B c C v V t T h k K z Z m M u U";
    if s.len() < 2 {
        return "invalid cid: cid too short".to_string();
    }
    let is_v0 = s.len() == 46 && s.starts_with("Qm");
    let first = s.chars().next().unwrap_or_default().to_string();
    if !is_v0 && !MULTIBASES.split(' ').any(|p| p == first) {
        return "invalid cid: selected encoding not supported".to_string();
    }
    format!("invalid cid: {parsed}")
}

/// The error of Go's `time.Parse(time.RFC3339, value)` for a value that does not parse: the layout
/// element where it failed and the rest of the value (`cannot parse "x" as "2006"`).
pub fn go_rfc3339_error(value: &str) -> String {
    const LAYOUT: &str = "2006-01-02T15:04:05Z07:00";
    let head = format!("parsing time {value:?} as {LAYOUT:?}");
    // (layout element, how many value bytes it takes: digits, or a literal)
    let elems: [(&str, usize, bool); 11] = [
        ("2006", 4, true),
        ("-", 1, false),
        ("01", 2, true),
        ("-", 1, false),
        ("02", 2, true),
        ("T", 1, false),
        ("15", 2, true),
        (":", 1, false),
        ("04", 2, true),
        (":", 1, false),
        ("05", 2, true),
    ];
    let mut rest = value;
    for (elem, n, digits) in elems {
        let ok = if digits {
            rest.len() >= n && rest.as_bytes()[..n].iter().all(u8::is_ascii_digit)
        } else {
            rest.starts_with(elem)
        };
        if !ok {
            return format!("{head}: cannot parse {rest:?} as {elem:?}");
        }
        rest = &rest[n..];
    }
    let rest = match rest.strip_prefix(['.', ',']) {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    format!("{head}: cannot parse {rest:?} as \"Z07:00\"")
}

/// `strconv.Atoi`: optional sign, decimal digits, fits in 64 bits (we keep i32 range).
fn go_atoi(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().and_then(|v| i32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_plus_is_space() {
        let q = Query::parse("meta-org=a+b&meta-org=c&name=x%20y&bad=%zz&semi=1;2");
        assert_eq!(q.get("meta-org"), "a b");
        assert_eq!(q.get("name"), "x y");
        assert!(!q.has("bad"));
        assert!(!q.has("semi"));
    }

    #[test]
    fn metadata_is_exactly_the_meta_keys() {
        let (po, err) =
            from_query(&Query::parse("meta-=x&meta-org=hrdag&meta-env=prod"), Utc::now());
        assert!(err.is_none());
        assert_eq!(po.metadata.len(), 2);
        assert_eq!(po.metadata["org"], "hrdag");
    }

    #[test]
    fn errors_keep_what_was_parsed_before() {
        let (po, err) =
            from_query(&Query::parse("name=x&replication-min=abc&meta-org=y"), Utc::now());
        assert_eq!(err.as_deref(), Some("parameter replication-min invalid"));
        assert_eq!(po.name, "x");
        assert!(po.metadata.is_empty());
    }

    #[test]
    fn go_time_parse_errors() {
        let e = |v: &str| go_rfc3339_error(v).split_once(": ").unwrap().1.to_string();
        assert_eq!(e("tomorrow"), r#"cannot parse "tomorrow" as "2006""#);
        assert_eq!(e("2024/01/01"), r#"cannot parse "/01/01" as "-""#);
        assert_eq!(e("2024-01-01T00:00:00"), r#"cannot parse "" as "Z07:00""#);
    }

    #[test]
    fn go_cid_errors() {
        assert_eq!(parse_cid("x").unwrap_err(), "invalid cid: cid too short");
        assert_eq!(
            parse_cid("not-a-cid").unwrap_err(),
            "invalid cid: selected encoding not supported"
        );
    }

    #[test]
    fn replication_overrides_both() {
        let (po, _) = from_query(&Query::parse("replication=3&replication-min=1"), Utc::now());
        assert_eq!((po.replication_min, po.replication_max), (3, 3));
    }
}
