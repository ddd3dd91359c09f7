//! Identifiers and scalar formats of IPFS Cluster: CIDs, libp2p peer IDs, multiaddrs, Go durations and
//! Go's RFC 3339 time rendering. Shared by the simulator and the client; no I/O here.

use chrono::{DateTime, TimeZone, Utc};
use cid::Cid;

/// Parses a CID string as the cluster does (`cid.Decode`), returning its canonical string
/// (CIDv0 in base58btc, CIDv1 in base32 lower case) and its datastore key.
pub fn parse_cid(s: &str) -> Result<ParsedCid, String> {
    if s.is_empty() {
        return Err("cid too short".to_string());
    }
    let c = Cid::try_from(s).map_err(|e| e.to_string())?;
    Ok(ParsedCid { canonical: c.to_string(), key: datastore_key(&c) })
}

/// A CID in the two forms the cluster uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCid {
    /// `Cid.String()`.
    pub canonical: String,
    /// The datastore key: base32 (RFC 4648, upper case, no padding) of the binary CID. `/allocations`
    /// streams in the byte order of these keys.
    pub key: String,
}

fn datastore_key(c: &Cid) -> String {
    data_encoding::BASE32_NOPAD.encode(&c.to_bytes())
}

/// A CIDv0 (`Qm…`) whose multihash is the SHA-256 of `seed`.
pub fn cid_v0(seed: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed);
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(&digest);
    bs58::encode(bytes).into_string()
}

/// A CIDv1 (`bafy…`, dag-pb, sha2-256) whose multihash is the SHA-256 of `seed`.
pub fn cid_v1(seed: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed);
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).expect("32-byte digest fits");
    Cid::new_v1(0x70, mh).to_string()
}

/// A libp2p Ed25519 peer ID (`12D3KooW…`): the identity multihash of the protobuf-encoded public key.
pub fn peer_id_from_key(public_key: &[u8; 32]) -> String {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(public_key);
    bs58::encode(bytes).into_string()
}

/// Decodes a peer ID as `peer.Decode` does: a base58btc multihash (`Qm…`, `12D3KooW…`), or a CIDv1 with
/// the `libp2p-key` codec. Returns the base58btc form.
pub fn parse_peer_id(s: &str) -> Option<String> {
    if s.starts_with("Qm") || s.starts_with('1') {
        let bytes = bs58::decode(s).into_vec().ok()?;
        let mh = multihash::Multihash::<64>::from_bytes(&bytes).ok()?;
        if mh.code() == 0x00 || mh.code() == 0x12 {
            return Some(s.to_string());
        }
        return None;
    }
    let c = Cid::try_from(s).ok()?;
    if c.codec() != 0x72 {
        return None;
    }
    Some(bs58::encode(c.hash().to_bytes()).into_string())
}

/// Validates a multiaddr as the cluster's `origins` option does. Returns the canonical text
/// (`/ipfs/` written as `/p2p/`) or the cluster's error message.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.first() != Some(&"") || parts.len() < 2 {
        return Err(format!(
            "error decoding multiaddress: failed to parse multiaddr {s:?}: invalid multiaddr, must begin with /"
        ));
    }
    let mut out = String::new();
    let mut has_peer = false;
    let mut i = 1;
    let bad = |msg: String| {
        format!("error decoding multiaddress: failed to parse multiaddr {s:?}: {msg}")
    };
    while i < parts.len() {
        let proto = parts[i];
        if proto.is_empty() && i == parts.len() - 1 {
            break; // a trailing slash
        }
        let takes_value = match proto {
            "ip4" | "ip6" | "tcp" | "udp" | "dns" | "dns4" | "dns6" | "dnsaddr" | "p2p"
            | "ipfs" | "sni" | "ip6zone" => true,
            "quic" | "quic-v1" | "ws" | "wss" | "tls" | "http" | "https" | "webtransport"
            | "p2p-circuit" | "noise" | "webrtc" | "webrtc-direct" => false,
            other => return Err(bad(format!("unknown protocol {other}"))),
        };
        let name = if proto == "ipfs" { "p2p" } else { proto };
        out.push('/');
        out.push_str(name);
        if takes_value {
            let Some(v) = parts.get(i + 1).filter(|v| !v.is_empty()) else {
                return Err(bad("unexpected end of multiaddr".to_string()));
            };
            let ok = match proto {
                "ip4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
                "ip6" => v.parse::<std::net::Ipv6Addr>().is_ok(),
                "tcp" | "udp" => v.parse::<u16>().is_ok(),
                "p2p" | "ipfs" => parse_peer_id(v).is_some(),
                _ => true,
            };
            if !ok {
                return Err(bad(format!("failed to parse {proto} {v}")));
            }
            if name == "p2p" {
                has_peer = true;
            }
            out.push('/');
            out.push_str(v);
            i += 2;
        } else {
            i += 1;
        }
    }
    if !has_peer {
        return Err(
            "multiaddress does not contain peer ID: protocol not found in multiaddr".to_string()
        );
    }
    Ok(out)
}

/// Reads a file of CIDs, one per line (`#` comments and blank lines ignored), in canonical form.
pub fn read_cid_list(path: &std::path::Path) -> anyhow::Result<std::collections::HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut set = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let c = parse_cid(line).map_err(|e| {
            anyhow::anyhow!("{}:{}: {line:?} is not a CID: {e}", path.display(), i + 1)
        })?;
        set.insert(c.canonical);
    }
    Ok(set)
}

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1.5h`, `2h45m`, `-1s`, `0`.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    parse_signed_go_duration(s).and_then(|(neg, d)| {
        if neg && !d.is_zero() { Err(format!("negative duration {s:?}")) } else { Ok(d) }
    })
}

/// Like [`parse_go_duration`] but returns the sign separately.
pub fn parse_signed_go_duration(s: &str) -> Result<(bool, std::time::Duration), String> {
    let err = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((neg, std::time::Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        if num_end == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        nanos += value * scale;
    }
    Ok((neg, std::time::Duration::from_nanos(nanos.round() as u64)))
}

/// Formats a duration the way Go prints it (`1m30s`, `250ms`, `0s`), for flags and messages.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_millis();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The zero `time.Time` of Go, rendered `0001-01-01T00:00:00Z`.
pub fn go_zero_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()
}

/// Renders a time like Go's `time.Time.MarshalJSON` in UTC: RFC 3339 with the fractional seconds
/// trimmed of trailing zeros (none when whole).
pub fn go_time(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Hand-rolled: this runs twice per pin in every `/allocations` stream.
    let mut out = String::with_capacity(32);
    let push = |out: &mut String, v: u32, width: usize| {
        let mut digits = [b'0'; 10];
        let mut v = v;
        for i in (0..width).rev() {
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push_str(std::str::from_utf8(&digits[..width]).expect("ASCII digits"));
    };
    push(&mut out, t.year().max(0) as u32, 4);
    out.push('-');
    push(&mut out, t.month(), 2);
    out.push('-');
    push(&mut out, t.day(), 2);
    out.push('T');
    push(&mut out, t.hour(), 2);
    out.push(':');
    push(&mut out, t.minute(), 2);
    out.push(':');
    push(&mut out, t.second(), 2);
    let nanos = t.timestamp_subsec_nanos();
    if nanos != 0 {
        let mut frac = String::with_capacity(9);
        push(&mut frac, nanos, 9);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 (with or without fractional seconds, any offset) to UTC.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_round_trip_and_keys_are_base32() {
        let v0 = cid_v0(b"x");
        assert!(v0.starts_with("Qm") && v0.len() == 46);
        let p = parse_cid(&v0).unwrap();
        assert_eq!(p.canonical, v0);
        assert!(p.key.starts_with("CIQ"), "{}", p.key);
        let v1 = cid_v1(b"x");
        assert!(v1.starts_with("bafybei"), "{v1}");
        assert_eq!(parse_cid(&v1).unwrap().canonical, v1);
        assert!(parse_cid("nope").is_err());
        assert!(parse_cid("").is_err());
    }

    #[test]
    fn peer_ids_parse_in_both_forms() {
        let id = peer_id_from_key(&[7; 32]);
        assert!(id.starts_with("12D3KooW"), "{id}");
        assert_eq!(parse_peer_id(&id).as_deref(), Some(id.as_str()));
        assert!(parse_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N").is_some());
        assert!(parse_peer_id("garbage").is_none());
    }

    #[test]
    fn origins_need_a_peer() {
        let id = peer_id_from_key(&[1; 32]);
        let ok = parse_origin(&format!("/ip4/1.2.3.4/tcp/4001/ipfs/{id}")).unwrap();
        assert_eq!(ok, format!("/ip4/1.2.3.4/tcp/4001/p2p/{id}"));
        let e = parse_origin("/ip4/1.2.3.4/tcp/4001").unwrap_err();
        assert!(e.starts_with("multiaddress does not contain peer ID"), "{e}");
        let e = parse_origin("ip4/1.2.3.4").unwrap_err();
        assert!(e.starts_with("error decoding multiaddress"), "{e}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse_go_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_go_duration("1.5h").unwrap().as_secs(), 5400);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("x").is_err());
        assert_eq!(format_duration(std::time::Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn go_time_trims_nanos() {
        let t = Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap();
        assert_eq!(go_time(&t), "2023-11-14T22:13:20.12Z");
        assert_eq!(go_time(&go_zero_time()), "0001-01-01T00:00:00Z");
    }
}
