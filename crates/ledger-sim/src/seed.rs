//! The simulator's starting pin set: generated from a seed (`--pins N --seed S`) or loaded from an
//! `/allocations` dump (`--from FILE`).

use std::io::BufRead;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::pin::{Metadata, Mode, Pin, PinType};

/// Organisations that own some of the generated pins.
pub const OTHER_ORGS: [&str; 5] = ["hrdag", "amnesty", "witness", "bellingcat", "memorial"];

/// Timestamps of generated pins lie up to 90 days before this instant; expiries 30 to 720 days after
/// [`EXPIRY_ANCHOR`]. Fixed, so that the same seed gives the same pins on any day.
const TIMESTAMP_ANCHOR: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const EXPIRY_ANCHOR: i64 = 2_082_758_400; // 2036-01-01T00:00:00Z

/// The instants generated timestamps and expiries are measured from.
pub fn anchors() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = DateTime::<Utc>::from_timestamp(TIMESTAMP_ANCHOR, 0).expect("valid anchor");
    let expiry_base = DateTime::<Utc>::from_timestamp(EXPIRY_ANCHOR, 0).expect("valid anchor");
    (now, expiry_base)
}

/// The earliest expiry a generated pin can have (30 days after [`EXPIRY_ANCHOR`]).
pub fn first_expiry() -> DateTime<Utc> {
    anchors().1 + Duration::try_days(30).unwrap_or_default()
}

/// Generates `n` pins from `seed`; `peers` are the peer IDs that allocations draw from. The same
/// arguments give the same pins.
pub fn generate(n: usize, seed: u64, peers: &[String]) -> Vec<Pin> {
    let anchors = anchors();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_0f1e_d9e7);
    (0..n).map(|i| random_pin(&mut rng, seed, i, peers, anchors)).collect()
}

/// Pin number `i` of [`generate`]. Each field draws from `rng` in turn, in this order, so that a seed
/// keeps giving the same pins.
fn random_pin(
    rng: &mut SmallRng,
    seed: u64,
    i: usize,
    peers: &[String],
    anchors: (DateTime<Utc>, DateTime<Utc>),
) -> Pin {
    let mut seed_bytes = seed.to_le_bytes().to_vec();
    seed_bytes.extend_from_slice(&(i as u64).to_le_bytes());
    let cid = if rng.random_bool(0.7) {
        ledger_ids::cid_v0(&seed_bytes)
    } else {
        ledger_ids::cid_v1(&seed_bytes)
    };
    fields(rng, cid, peers, anchors)
}

/// A pin of `cid` with every other field drawn from `rng`, in this order: name, allocations,
/// metadata, mode, expiry, origins, age.
pub fn fields(
    rng: &mut SmallRng,
    cid: String,
    peers: &[String],
    (now, expiry_base): (DateTime<Utc>, DateTime<Utc>),
) -> Pin {
    let name = random_name(rng);
    let (rmin, rmax, allocations) = random_allocations(rng, peers);
    let metadata = random_metadata(rng);
    let direct = rng.random_bool(0.02);
    let expire_at = rng
        .random_bool(0.02)
        .then(|| expiry_base + Duration::try_days(rng.random_range(30..720)).unwrap_or_default());
    let origins = random_origins(rng, peers);
    let age = Duration::try_seconds(rng.random_range(3_600..90 * 86_400)).unwrap_or_default();
    Pin {
        cid,
        typ: PinType::Data,
        allocations,
        max_depth: if direct { 0 } else { -1 },
        reference: None,
        timestamp: now - age,
        replication_min: rmin,
        replication_max: rmax,
        name,
        mode_query: if direct { Mode::Direct } else { Mode::Recursive },
        shard_size: 0,
        user_allocations: None,
        expire_at,
        metadata,
        pin_update: None,
        origins,
        origins_given: true,
        metadata_given: false,
    }
    .to_stored()
}

/// A file-like name; empty for one pin in 20.
fn random_name(rng: &mut SmallRng) -> String {
    let kinds = ["csv", "json", "pdf", "tar.gz", "parquet", "mp4", "jpg"];
    if rng.random_bool(0.05) {
        String::new()
    } else {
        format!(
            "dataset-{:04}/file-{}.{}",
            rng.random_range(0..500),
            rng.random_range(0..100),
            kinds[rng.random_range(0..kinds.len())]
        )
    }
}

/// `(replication_factor_min, replication_factor_max, allocations)`: everywhere (`-1`, `-1`, none)
/// for most pins, otherwise 2–4 distinct peers drawn from `peers`.
fn random_allocations(rng: &mut SmallRng, peers: &[String]) -> (i32, i32, Vec<String>) {
    let everywhere = peers.len() < 2 || rng.random_bool(0.6);
    if everywhere {
        return (-1, -1, Vec::new());
    }
    let max = rng.random_range(3..=4).min(peers.len() as i32);
    let min = rng.random_range(2..=3).min(max);
    let mut idx: Vec<usize> = (0..peers.len()).collect();
    for j in 0..idx.len() {
        let k = rng.random_range(j..idx.len());
        idx.swap(j, k);
    }
    let count = rng.random_range(min..=max) as usize;
    (min, max, idx[..count].iter().map(|&j| peers[j].clone()).collect())
}

/// `org` (one of the [`OTHER_ORGS`], or empty), `project` and `source`, each on some of the pins.
fn random_metadata(rng: &mut SmallRng) -> Metadata {
    let projects = ["census", "archive", "testimony", "satellite", "court-records"];
    let sources = ["crawler", "upload", "migration-2024"];
    let mut metadata = Metadata::default();
    let roll: f64 = rng.random();
    if roll < 0.2 {
        metadata.insert(
            "org".to_string(),
            OTHER_ORGS[rng.random_range(0..OTHER_ORGS.len())].to_string(),
        );
    } else if roll < 0.22 {
        metadata.insert("org".to_string(), String::new());
    }
    if rng.random_bool(0.25) {
        metadata.insert(
            "project".to_string(),
            projects[rng.random_range(0..projects.len())].to_string(),
        );
    }
    if rng.random_bool(0.1) {
        metadata
            .insert("source".to_string(), sources[rng.random_range(0..sources.len())].to_string());
    }
    metadata
}

/// One origin multiaddr on a few pins, naming one of `peers`.
fn random_origins(rng: &mut SmallRng, peers: &[String]) -> Vec<String> {
    if rng.random_bool(0.03) && !peers.is_empty() {
        vec![format!(
            "/ip4/10.0.{}.{}/tcp/4001/p2p/{}",
            rng.random_range(0..255),
            rng.random_range(1..255),
            peers[rng.random_range(0..peers.len())]
        )]
    } else {
        Vec::new()
    }
}

/// The demo's pin set: `unowned` pins with no `org` (as in the field report's 3,512-pin migration)
/// and `owned` pins spread evenly among them, each owned by one of the [`OTHER_ORGS`] but the first
/// (the org the demo tags with). Otherwise the same realistic mix as [`generate`].
pub fn demo(unowned: usize, owned: usize, seed: u64, peers: &[String]) -> Vec<Pin> {
    let n = unowned + owned;
    let mut pins = generate(n, seed, peers);
    let others = &OTHER_ORGS[1..];
    let step = n.checked_div(owned).map_or(usize::MAX, |s| s.max(1));
    let mut given = 0;
    for (i, p) in pins.iter_mut().enumerate() {
        let mut m = Metadata::default();
        for (k, v) in p.metadata.iter().filter(|(k, _)| *k != "org") {
            m.insert(k.to_string(), v.to_string());
        }
        if given < owned && i % step == 0 {
            m.insert("org".to_string(), others[given % others.len()].to_string());
            given += 1;
        }
        p.metadata = m;
    }
    pins
}

/// Reads stored-form pins, one JSON object per line (blank lines skipped).
pub fn load(reader: impl BufRead) -> anyhow::Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {}: not JSON: {e}", i + 1))?;
        let pin = Pin::from_stored_json(&v).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
        pins.push(pin);
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_reproducible_and_mixed() {
        let peers: Vec<String> = (0..5u8).map(|i| ledger_ids::peer_id_from_key(&[i; 32])).collect();
        let a = generate(2000, 7, &peers);
        let b = generate(2000, 7, &peers);
        assert_eq!(a, b);
        assert_ne!(a, generate(2000, 8, &peers));
        let owned =
            a.iter().filter(|p| p.metadata.get("org").is_some_and(|o| !o.is_empty())).count();
        assert!((200..700).contains(&owned), "{owned}");
        assert!(a.iter().any(|p| p.max_depth == 0));
        assert!(a.iter().any(|p| p.expire_at.is_some()));
        assert!(a.iter().any(|p| p.cid.starts_with("bafy")));
        for p in &a {
            assert_eq!(p.allocations.is_empty(), p.replication_min == -1);
        }
    }

    #[test]
    fn the_demo_set_has_exactly_the_unowned_and_owned_pins_asked_for() {
        let peers: Vec<String> = (0..5u8).map(|i| ledger_ids::peer_id_from_key(&[i; 32])).collect();
        for (unowned, owned) in [(3512, 40), (300, 10), (5, 0), (0, 3)] {
            let pins = demo(unowned, owned, 1, &peers);
            assert_eq!(pins.len(), unowned + owned);
            let orgs: Vec<&str> = pins.iter().filter_map(|p| p.metadata.get("org")).collect();
            assert_eq!(orgs.len(), owned, "{unowned}+{owned}");
            assert!(orgs.iter().all(|o| OTHER_ORGS[1..].contains(o)));
            assert_eq!(pins, demo(unowned, owned, 1, &peers), "reproducible");
        }
        // Other metadata survives.
        assert!(demo(3512, 40, 1, &peers).iter().any(|p| p.metadata.get("project").is_some()));
    }
}
