//! A generated pin set that is never held in memory: pin number `i` of `n` is derived from
//! `(seed, i)` alone, whenever it is asked for, and its CID is made so that the datastore keys of the
//! pins sort as their numbers do. So a replica can keep only what changed since start and still
//! list, look up and count the whole set in key order (issue 15, point 1).
//!
//! The key of a CIDv0 is base32 (RFC 4648, upper case) of `0x12 0x20 digest`. Its first three
//! characters are fixed (`CIQ`); the fourth takes one fixed bit and the digest's first 4 bits,
//! which are 0 here (`A`). The next [`INDEX_CHARS`] characters carry `i` in base 32, each digit
//! written as the base32 symbol of that rank in ASCII order (`2`…`7` sort before `A`…`Z`), so key
//! order is index order. The digest's remaining bits are SHA-256 of `(seed, i)`, so the CIDs look
//! like any others.

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::pin::Pin;

/// Key characters that carry the index: 32⁶ ≈ 1.07 × 10⁹ pins at most.
pub const INDEX_CHARS: usize = 6;

/// The most pins a lazy set can number.
pub const MAX_PINS: u64 = 1 << (5 * INDEX_CHARS);

/// The base32 symbols in ASCII order: digit `d` of an index is written as `SORTED[d]`.
const SORTED: &[u8; 32] = b"234567ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The 5-bit base32 value of `SORTED[d]` (`A` = 0 … `Z` = 25, `2` = 26 … `7` = 31).
fn value_of_digit(d: u8) -> u8 {
    if d < 6 { 26 + d } else { d - 6 }
}

/// A generated set of `n` pins from `seed`, allocations drawn from `peers`.
#[derive(Debug, Clone)]
pub struct LazySet {
    pub n: u64,
    pub seed: u64,
    pub peers: Vec<String>,
}

impl LazySet {
    /// The multihash digest of pin `i`: 4 zero bits, the index's 30 bits, then SHA-256 of
    /// `(seed, i)`.
    fn digest(&self, i: u64) -> [u8; 32] {
        use sha2::Digest;
        let mut seed_bytes = self.seed.to_le_bytes().to_vec();
        seed_bytes.extend_from_slice(&i.to_le_bytes());
        let fill = sha2::Sha256::digest(&seed_bytes);
        let mut bits: u64 = 0;
        for k in (0..INDEX_CHARS).rev() {
            let d = ((i >> (5 * k)) & 31) as u8;
            bits = (bits << 5) | u64::from(value_of_digit(d));
        }
        // 4 zero bits, then the 30 index bits: the top 34 bits of the digest.
        let mut out = [0u8; 32];
        out.copy_from_slice(&fill);
        let head = bits << (64 - 34);
        let keep = u64::MAX >> 34;
        let first = u64::from_be_bytes(out[..8].try_into().expect("8 bytes"));
        out[..8].copy_from_slice(&((first & keep) | head).to_be_bytes());
        out
    }

    /// The CID (`Qm…`) of pin `i`.
    pub fn cid(&self, i: u64) -> String {
        cid_of(&self.digest(i))
    }

    /// The datastore key of pin `i`.
    pub fn key(&self, i: u64) -> String {
        key_of(&self.digest(i))
    }

    /// Pin `i`'s datastore key and its pin (the digest computed once).
    pub fn key_and_pin(&self, i: u64, anchors: (DateTime<Utc>, DateTime<Utc>)) -> (String, Pin) {
        let d = self.digest(i);
        (key_of(&d), self.pin_of(i, cid_of(&d), anchors))
    }

    /// The pin number a datastore key names, if it is one of this set's.
    pub fn index_of(&self, key: &str) -> Option<u64> {
        let k = key.as_bytes();
        if k.len() < 4 + INDEX_CHARS || &k[..4] != b"CIQA" {
            return None;
        }
        let mut i: u64 = 0;
        for &c in &k[4..4 + INDEX_CHARS] {
            let d = SORTED.iter().position(|&s| s == c)? as u64;
            i = (i << 5) | d;
        }
        let ours = i < self.n && self.key(i) == key;
        ours.then_some(i)
    }

    /// Pin number `i`, in stored form.
    pub fn pin(&self, i: u64, anchors: (DateTime<Utc>, DateTime<Utc>)) -> Pin {
        self.pin_of(i, self.cid(i), anchors)
    }

    fn pin_of(&self, i: u64, cid: String, anchors: (DateTime<Utc>, DateTime<Utc>)) -> Pin {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        super::seed::fields(&mut rng, cid, &self.peers, anchors)
    }
}

/// `Qm…` of a sha2-256 digest.
fn cid_of(digest: &[u8; 32]) -> String {
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(digest);
    bs58::encode(bytes).into_string()
}

/// The datastore key of the CIDv0 of a sha2-256 digest: base32 of its binary form.
fn key_of(digest: &[u8; 32]) -> String {
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(digest);
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u64) -> LazySet {
        let peers = (0..3u8).map(|i| ledger_ids::peer_id_from_key(&[i; 32])).collect();
        LazySet { n, seed: 5, peers }
    }

    #[test]
    fn keys_sort_as_the_indexes_do() {
        let s = set(MAX_PINS);
        let mut probes: Vec<u64> = (0..2000).collect();
        probes.extend([31, 32, 33, 1023, 1024, 1 << 20, 10_000_000, 100_000_000, MAX_PINS - 1]);
        probes.sort_unstable();
        probes.dedup();
        let keys: Vec<String> =
            probes.iter().map(|&i| ledger_ids::parse_cid(&s.cid(i)).unwrap().key).collect();
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        for (&i, k) in probes.iter().zip(&keys) {
            assert_eq!(s.index_of(k), Some(i), "{k}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_sets_is_not_found() {
        let s = set(1000);
        let beyond = ledger_ids::parse_cid(&set(2000).cid(1500)).unwrap().key;
        assert_eq!(s.index_of(&beyond), None, "past n");
        let other_seed = LazySet { seed: 6, ..s.clone() };
        let k = ledger_ids::parse_cid(&other_seed.cid(3)).unwrap().key;
        assert_eq!(s.index_of(&k), None, "same index, other seed");
        let k = ledger_ids::parse_cid(&ledger_ids::cid_v0(b"x")).unwrap().key;
        assert_eq!(s.index_of(&k), None);
        assert_eq!(s.index_of("CIQ"), None);
    }

    #[test]
    fn pins_are_derived_from_seed_and_index_alone() {
        let s = set(100);
        let anchors = crate::seed::anchors();
        let a: Vec<Pin> = (0..100).map(|i| s.pin(i, anchors)).collect();
        let b: Vec<Pin> = (0..100).rev().map(|i| s.pin(i, anchors)).collect::<Vec<_>>();
        let b: Vec<Pin> = b.into_iter().rev().collect();
        assert_eq!(a, b, "the order pins are asked for changes nothing");
        assert!(a.iter().any(|p| p.metadata.get("org").is_some()));
        assert!(a.iter().any(|p| !p.allocations.is_empty()));
        assert!(a.iter().all(|p| p.cid.starts_with("Qm")));
    }
}
