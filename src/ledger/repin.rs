//! One safe re-pin, on the record: read the pin from the peer that takes the write, build the request
//! that keeps every option (cluster::repin), commit the intent, send it, record the answer, read the
//! pin back and record the outcome. The tag run and `ledger repin` both go through [`safe_repin`].

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::Serialize;

use crate::cluster::{CanonicalPin, Client, repin};
use crate::store::runs;

/// What became of one re-pin.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub cid: String,
    /// `applied`, `mismatch`, `refused`, `failed`, or `unchanged` (nothing to do: no request sent).
    pub outcome: String,
    pub repin_id: Option<i64>,
    pub http_status: Option<u16>,
    /// Fields that differ from what was intended (for `mismatch`).
    pub mismatched: Vec<&'static str>,
    pub error: Option<String>,
}

/// Decides, from the pin as just read, that it must not be re-pinned (the reason), e.g. because another
/// organisation owns it: the re-pin is then recorded as refused and reported as a conflict.
pub type Guard<'a> = dyn Fn(&CanonicalPin) -> Option<String> + 'a;

/// Reads and parses the stored pin from `client`'s peer.
pub async fn read_pin(client: &Client, cid: &str) -> anyhow::Result<Option<CanonicalPin>> {
    match client.allocation(cid).await? {
        None => Ok(None),
        Some(body) => {
            let line = body.strip_suffix(b"\n").unwrap_or(&body);
            Ok(Some(CanonicalPin::from_line(line).map_err(|e| {
                anyhow::anyhow!(
                    "{} answered GET /allocations/{cid} with something that is not a pin: {e}",
                    client.base()
                )
            })?))
        }
    }
}

/// One safe re-pin of `cid` on `client`'s peer, setting `set` and removing `unset`, recorded under
/// `(run, pass)`.
pub async fn safe_repin(
    conn: &rusqlite::Connection,
    client: &Client,
    at: (i64, i64),
    cid: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
    guard: Option<&Guard<'_>>,
) -> anyhow::Result<Outcome> {
    let change = Change { set, unset, guard, per_cid: None };
    let mut out =
        safe_repins(conn, client, at, &[cid.to_string()], &change, &Pace::default(), |_| {})
            .await?;
    Ok(out.pop().expect("one outcome per CID"))
}

/// What a batch of re-pins changes, and which pins it must leave alone.
pub struct Change<'a> {
    pub set: &'a BTreeMap<String, String>,
    pub unset: &'a [String],
    pub guard: Option<&'a Guard<'a>>,
    /// Per CID, a change of its own in place of `set` and `unset` (a restore).
    pub per_cid: Option<&'a HashMap<String, PinEdit>>,
}

/// One pin's own change: metadata keys to set and remove, and options to put back.
#[derive(Debug, Clone, Default)]
pub struct PinEdit {
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
    pub overrides: repin::Overrides,
}

/// How fast a batch goes: requests in flight, and at most `rate` re-pins per second.
#[derive(Debug, Clone)]
pub struct Pace {
    pub concurrency: usize,
    pub rate: Option<f64>,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace { concurrency: 16, rate: None }
    }
}

/// Safe re-pins of `cids`, in chunks: read every pin of a chunk (concurrently), commit their intents
/// in one transaction, send the requests (concurrently), read the pins back, commit answers and
/// outcomes in one transaction. Every intent is durable before its request goes out, and a chunk costs
/// two commits rather than two per pin. `done` is called with the number of CIDs finished so far.
pub async fn safe_repins(
    conn: &rusqlite::Connection,
    client: &Client,
    (run, pass): (i64, i64),
    cids: &[String],
    change: &Change<'_>,
    pace: &Pace,
    mut done: impl FnMut(usize),
) -> anyhow::Result<Vec<Outcome>> {
    let concurrency = pace.concurrency.max(1);
    let interval =
        pace.rate.filter(|r| *r > 0.0).map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let next_slot = std::cell::Cell::new(tokio::time::Instant::now());
    let mut outcomes = Vec::with_capacity(cids.len());
    for chunk in cids.chunks((concurrency * 8).max(1)) {
        // 1. Read every pin of the chunk.
        let befores: Vec<anyhow::Result<Option<CanonicalPin>>> = futures::stream::iter(chunk)
            .map(|cid| read_pin(client, cid))
            .buffered(concurrency)
            .collect()
            .await;
        // 2. Plan and record: one transaction, no `.await` inside.
        struct Planned {
            out: Outcome,
            id: i64,
            cid_id: i64,
            request: repin::Request,
        }
        let mut planned: Vec<Planned> = Vec::new();
        let tx = conn.unchecked_transaction()?;
        for (cid, before) in chunk.iter().zip(befores) {
            let mut out = Outcome {
                cid: cid.clone(),
                outcome: String::new(),
                repin_id: None,
                http_status: None,
                mismatched: Vec::new(),
                error: None,
            };
            let before = match before {
                Ok(Some(p)) => p,
                Ok(None) => {
                    out.outcome = "failed".into();
                    out.error = Some(format!(
                        "{cid} is not pinned on {} (GET /allocations/{cid} answered 404)",
                        client.base()
                    ));
                    outcomes.push(out);
                    continue;
                }
                Err(e) => {
                    out.outcome = "failed".into();
                    out.error = Some(format!("{e:#}"));
                    outcomes.push(out);
                    continue;
                }
            };
            let cid_id = runs::cid_id(&tx, &before.cid)?;
            let before_digest = runs::ensure_version(&tx, cid_id, &before)?;
            // The pin as it is now decides, not as it was planned: it may have changed since.
            let request = match change.guard.and_then(|g| g(&before)) {
                Some(reason) => Err(("conflict", reason)),
                None => match change.per_cid.and_then(|m| m.get(cid)) {
                    Some(e) => repin::build_with(
                        &before,
                        &e.overrides,
                        &e.set,
                        &e.unset,
                        chrono::Utc::now(),
                    ),
                    None => repin::build(&before, change.set, change.unset, chrono::Utc::now()),
                }
                .map_err(|e| ("refused", e.to_string())),
            };
            let request = match request {
                Ok(r) => r,
                Err((outcome, reason)) => {
                    out.repin_id =
                        Some(runs::refused(&tx, run, pass, cid_id, Some(before_digest), &reason)?);
                    out.outcome = outcome.into();
                    out.error = Some(reason);
                    outcomes.push(out);
                    continue;
                }
            };
            if request.intended.mismatches(&before).is_empty() {
                out.outcome = "unchanged".into();
                outcomes.push(out);
                continue;
            }
            let intended_json = serde_json::to_string(&request.intended)?;
            let id = runs::intent(
                &tx,
                &runs::Intent {
                    run,
                    pass,
                    cid_id,
                    before: Some(before_digest),
                    path: &request.path,
                    query: &request.query,
                    intended_json: &intended_json,
                },
            )?;
            out.repin_id = Some(id);
            planned.push(Planned { out, id, cid_id, request });
        }
        tx.commit()?;
        // 3. Send, then read back from the same peer (read-your-writes holds there).
        let next_slot = &next_slot;
        let results: Vec<_> = futures::stream::iter(&planned)
            .map(|p| async move {
                if let Some(iv) = interval {
                    let at = next_slot.get().max(tokio::time::Instant::now());
                    next_slot.set(at + iv);
                    tokio::time::sleep_until(at).await;
                }
                let answer = client.post_pin(&p.request.path_and_query()).await;
                let after = read_pin(client, &p.out.cid).await;
                (answer, after)
            })
            .buffered(concurrency)
            .collect()
            .await;
        // 4. Record answers and outcomes: one transaction.
        let tx = conn.unchecked_transaction()?;
        for (mut p, (answer, after)) in planned.into_iter().zip(results) {
            match answer {
                Ok((status, body)) => {
                    p.out.http_status = Some(status);
                    let ok = status == 200;
                    let body: String = body.chars().take(4096).collect();
                    // The answer (the in-memory form) must already be the intended pin.
                    let differs = if ok {
                        match CanonicalPin::from_line(body.trim().as_bytes()) {
                            Ok(answer) => p.request.intended.mismatches(&answer),
                            Err(_) => vec!["answer"],
                        }
                    } else {
                        Vec::new()
                    };
                    let note = if !ok {
                        Some(format!("the cluster answered {status}: {}", body.trim()))
                    } else if !differs.is_empty() {
                        Some(format!(
                            "the cluster's answer differs from the request in: {}",
                            differs.join(", ")
                        ))
                    } else {
                        None
                    };
                    runs::answered(&tx, p.id, ok, Some(status), Some(&body), note.as_deref())?;
                    if !ok {
                        p.out.error = note;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    runs::answered(&tx, p.id, false, None, None, Some(&msg))?;
                    p.out.error = Some(msg);
                }
            }
            let (after_digest, mismatched) = match &after {
                Ok(Some(pin)) => (
                    Some(runs::ensure_version(&tx, p.cid_id, pin)?),
                    p.request.intended.mismatches(pin),
                ),
                Ok(None) => (None, vec!["pinned"]),
                Err(_) => (None, vec!["unreadable"]),
            };
            p.out.outcome = match (mismatched.is_empty(), p.out.error.is_some()) {
                (true, _) => "applied",
                (false, true) => "failed",
                (false, false) => "mismatch",
            }
            .into();
            p.out.mismatched = mismatched;
            runs::verified(&tx, p.id, after_digest, &p.out.outcome)?;
            outcomes.push(p.out);
        }
        tx.commit()?;
        done(outcomes.len());
    }
    Ok(outcomes)
}

/// Settles re-pins left `pending` by a process that stopped: reads each pin and records whether the
/// intended state is there (`applied`) or not (`not-applied`).
pub async fn reconcile(
    conn: &rusqlite::Connection,
    client: &Client,
    cluster: &str,
) -> anyhow::Result<usize> {
    let pending = runs::pending(conn, cluster)?;
    for p in &pending {
        let intended: repin::Intended = serde_json::from_str(&p.intended_json)?;
        let now = read_pin(client, &p.cid).await?;
        let (after, applied) = match &now {
            Some(pin) => (
                Some(runs::ensure_version(conn, p.cid_id, pin)?),
                intended.mismatches(pin).is_empty(),
            ),
            None => (None, false),
        };
        let note =
            "the ledger stopped before the answer was recorded; reconciled by reading the pin";
        runs::answered(conn, p.id, applied, None, None, Some(note))?;
        runs::verified(conn, p.id, after, if applied { "applied" } else { "not-applied" })?;
    }
    Ok(pending.len())
}
