//! One safe re-pin, on the record: read the pin from the peer that takes the write, build the request
//! that keeps every option (cluster::repin), commit the intent, send it, record the answer, read the
//! pin back and record the outcome. The tag run and `ledger repin` both go through [`safe_repin`].

use std::collections::BTreeMap;

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
    (run, pass): (i64, i64),
    cid: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
    guard: Option<&Guard<'_>>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome {
        cid: cid.to_string(),
        outcome: String::new(),
        repin_id: None,
        http_status: None,
        mismatched: Vec::new(),
        error: None,
    };
    let Some(before) = read_pin(client, cid).await? else {
        anyhow::bail!(
            "{cid} is not pinned on {} (GET /allocations/{cid} answered 404)",
            client.base()
        );
    };
    // Everything up to the intent is one transaction, committed before the request goes out. No
    // `.await` inside: re-pins running concurrently on this connection never interleave in it.
    let tx = conn.unchecked_transaction()?;
    let cid_id = runs::cid_id(&tx, &before.cid)?;
    let before_digest = runs::ensure_version(&tx, cid_id, &before)?;
    // The pin as it is now decides, not as it was planned: it may have changed since.
    let refusal = guard.and_then(|g| g(&before)).map(|reason| ("conflict", reason));
    let request = match refusal {
        Some(r) => Err(r),
        None => repin::build(&before, set, unset, chrono::Utc::now())
            .map_err(|e| ("refused", e.to_string())),
    };
    let request = match request {
        Ok(r) => r,
        Err((outcome, reason)) => {
            out.repin_id =
                Some(runs::refused(&tx, run, pass, cid_id, Some(before_digest), &reason)?);
            tx.commit()?;
            out.outcome = outcome.into();
            out.error = Some(reason);
            return Ok(out);
        }
    };
    if request.intended.mismatches(&before).is_empty() {
        tx.commit()?;
        out.outcome = "unchanged".into();
        return Ok(out);
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
    tx.commit()?;
    out.repin_id = Some(id);

    let answer = client.post_pin(&request.path_and_query()).await;
    // Read back from the same peer (read-your-writes holds there) and compare.
    let after = read_pin(client, cid).await?;

    let tx = conn.unchecked_transaction()?;
    match answer {
        Ok((status, body)) => {
            out.http_status = Some(status);
            let ok = status == 200;
            let body: String = body.chars().take(4096).collect();
            runs::answered(&tx, id, ok, Some(status), Some(&body), (!ok).then_some(body.as_str()))?;
            if !ok {
                out.error = Some(format!("the cluster answered {status}: {}", body.trim()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            runs::answered(&tx, id, false, None, None, Some(&msg))?;
            out.error = Some(msg);
        }
    }
    let (after_digest, mismatched) = match &after {
        Some(p) => (Some(runs::ensure_version(&tx, cid_id, p)?), request.intended.mismatches(p)),
        None => (None, vec!["pinned"]),
    };
    out.outcome = match (mismatched.is_empty(), out.error.is_some()) {
        (true, _) => "applied",
        (false, true) => "failed",
        (false, false) => "mismatch",
    }
    .into();
    out.mismatched = mismatched;
    runs::verified(&tx, id, after_digest, &out.outcome)?;
    tx.commit()?;
    Ok(out)
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
