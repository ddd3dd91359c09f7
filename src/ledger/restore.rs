//! `ledger restore`: put back the values pins had in a snapshot and have since lost, through the safe
//! re-pin path (every other option kept), as a run on the record. A pin that changed again after the
//! loss holds a value someone set on purpose: it is a conflict, left alone unless forced.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::cluster::{CanonicalPin, Client};
use crate::context::Context;
use crate::domain::{Outcome, PlanClass, RunKind, RunState, SnapshotState};
use crate::ledger::repin::{self, Change, Pace, PinEdit};
use crate::ledger::run::{Run, Spec};
use crate::ledger::spread::{self, Spread};
use crate::store::incident::{self, LostField};
use crate::store::snapshots::{self as db, PinRow};
use crate::store::{Store, runs};

/// What a restore does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The snapshot whose values are put back.
    pub from: i64,
    /// Only these CIDs.
    pub only: Option<HashSet<String>>,
    /// Only these metadata keys (and no other field).
    pub keys: Option<Vec<String>>,
    pub dry_run: bool,
    /// Overwrite values set after the loss.
    pub force: bool,
    pub concurrency: usize,
    /// The peer that takes the writes (default: the cluster's first peer).
    pub peer: Option<String>,
}

/// The fields a restore compares: what a person sets on a pin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    name: String,
    metadata: BTreeMap<String, String>,
    replication: (i64, i64),
    expire_at: Option<String>,
}

impl Tracked {
    fn of_row(p: &PinRow) -> Tracked {
        Tracked {
            name: p.name.clone(),
            metadata: p
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default(),
            replication: (p.replication_min, p.replication_max),
            expire_at: p.expire_at.clone(),
        }
    }

    /// One field's value, by its name in a loss report (`metadata.KEY`, `name`, …).
    fn value(&self, field: &str) -> Option<String> {
        match field {
            "name" => Some(self.name.clone()),
            "replication_min" => Some(self.replication.0.to_string()),
            "replication_max" => Some(self.replication.1.to_string()),
            "expire_at" => self.expire_at.clone(),
            f => f.strip_prefix("metadata.").and_then(|k| self.metadata.get(k).cloned()),
        }
    }

    /// These values with `edit` made: what the pin holds once a restore has put them back.
    fn with(&self, edit: &PinEdit) -> Tracked {
        let mut t = self.clone();
        t.metadata.extend(edit.set.clone());
        for k in &edit.unset {
            t.metadata.remove(k);
        }
        let o = &edit.overrides;
        if let Some(n) = &o.name {
            t.name = n.clone();
        }
        if let Some((min, max)) = o.replication {
            t.replication = (min.into(), max.into());
        }
        if let Some(e) = &o.expire_at {
            t.expire_at = e.clone();
        }
        t
    }

    fn of_pin(p: &CanonicalPin) -> Tracked {
        Tracked {
            name: p.name.clone(),
            metadata: p.metadata.clone(),
            replication: (p.replication_min.into(), p.replication_max.into()),
            expire_at: p.expire_at.clone(),
        }
    }
}

/// What putting `had` back over `now` takes: the edit and the values it restores (empty: nothing
/// was lost, at most added). With `keys`, only those metadata keys.
fn restore_edit(had: &PinRow, now: &PinRow, keys: Option<&[String]>) -> (PinEdit, Vec<LostField>) {
    let (h, n) = (Tracked::of_row(had), Tracked::of_row(now));
    let mut edit = PinEdit::default();
    let mut fields = Vec::new();
    for (k, v) in &h.metadata {
        // An empty value is no value: a tag run that filled it in lost nothing.
        if v.is_empty() || keys.is_some_and(|ks| !ks.contains(k)) {
            continue;
        }
        if n.metadata.get(k) != Some(v) {
            edit.set.insert(k.clone(), v.clone());
            fields.push(LostField {
                field: format!("metadata.{k}"),
                before: Some(v.clone()),
                after: n.metadata.get(k).cloned(),
            });
        }
    }
    if keys.is_some() {
        return (edit, fields);
    }
    if !h.name.is_empty() && h.name != n.name {
        edit.overrides.name = Some(h.name.clone());
        fields.push(LostField {
            field: "name".into(),
            before: Some(h.name.clone()),
            after: Some(n.name.clone()),
        });
    }
    // -1 (everywhere) is what a re-pin without options falls back to: no value of its own.
    let lost = |b: i64, a: i64| b != -1 && b != a;
    if lost(h.replication.0, n.replication.0) || lost(h.replication.1, n.replication.1) {
        let (min, max) = h.replication;
        edit.overrides.replication = Some((min as i32, max as i32));
        for (field, b, a) in
            [("replication_min", min, n.replication.0), ("replication_max", max, n.replication.1)]
        {
            if a != b {
                fields.push(LostField {
                    field: field.into(),
                    before: Some(b.to_string()),
                    after: Some(a.to_string()),
                });
            }
        }
    }
    if h.expire_at.is_some() && h.expire_at != n.expire_at {
        edit.overrides.expire_at = Some(h.expire_at.clone());
        fields.push(LostField {
            field: "expire_at".into(),
            before: h.expire_at.clone(),
            after: n.expire_at.clone(),
        });
    }
    if !fields.is_empty() && had.allocations != "[]" && had.allocations != now.allocations {
        // Only a priority, and only sent with a value that is really restored.
        edit.overrides.allocations = serde_json::from_str(&had.allocations).ok();
    }
    (edit, fields)
}

/// One pin the restore puts back (or would).
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub cid: String,
    pub fields: Vec<LostField>,
}

/// A pin left alone, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub cid: String,
    pub reason: String,
}

/// A failed restore of one pin.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub cid: String,
    pub error: String,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: Option<i64>,
    pub dry_run: bool,
    pub from: i64,
    /// The peer's latest complete snapshot: the state the restore starts from.
    pub current: i64,
    /// Restored (or, in a dry run, to restore).
    pub restored: Vec<String>,
    pub conflicts: Vec<Skipped>,
    pub unpinned: Vec<String>,
    pub failed: Vec<Failed>,
    /// What each pin gets back.
    pub plan: Vec<Restored>,
    /// Which peers show the restored pins as the write peer does (`None`: nothing was restored).
    pub spread: Option<Spread>,
}

impl Report {
    /// Whether a person must look at the restore: conflicts, failures, pins unpinned since, or
    /// restored pins some member of the cluster was not seen to show.
    pub fn needs_attention(&self) -> bool {
        !self.conflicts.is_empty()
            || !self.failed.is_empty()
            || !self.unpinned.is_empty()
            || self.spread.as_ref().is_some_and(|s| !s.everywhere())
    }
}

struct Plan {
    edits: HashMap<String, PinEdit>,
    /// Per CID, the values the ledger last saw and the values once restored: the pin must show the
    /// one (nothing happened since) or the other (a restore already put them back: nothing to do).
    expect: HashMap<String, (Tracked, Tracked)>,
    restored: Vec<Restored>,
    conflicts: Vec<Skipped>,
    unpinned: Vec<String>,
}

fn plan(store: &Store, opts: &Options) -> anyhow::Result<(db::SnapshotRow, i64, Plan)> {
    let conn = &store.conn;
    let Some(from) = db::get(conn, opts.from)? else {
        anyhow::bail!("there is no snapshot {}; `ledger snapshots` lists them", opts.from);
    };
    if from.state != SnapshotState::Complete {
        anyhow::bail!(
            "snapshot {} is {}: only a complete snapshot is a record of what pins had",
            from.id,
            from.state
        );
    }
    let series = db::series_id(conn, &from.cluster, &from.peer)?;
    let current = db::latest_complete(conn, series)?.unwrap_or(from.id);
    let now_row = db::get(conn, current)?.expect("the latest complete snapshot exists");
    let mut p = Plan {
        edits: HashMap::new(),
        expect: HashMap::new(),
        restored: Vec::new(),
        conflicts: Vec::new(),
        unpinned: Vec::new(),
    };
    let keys = opts.keys.as_deref();
    let mut diffs = db::differing(conn, &from, &now_row)?;
    diffs.sort_by_key(|d| d.cid_id);
    for d in diffs {
        let Some(a) = &d.a else { continue };
        let had = db::version(conn, d.cid_id, a)?;
        if opts.only.as_ref().is_some_and(|o| !o.contains(&had.cid)) {
            continue;
        }
        let Some(b) = &d.b else {
            p.unpinned.push(had.cid);
            continue;
        };
        let now = db::version(conn, d.cid_id, b)?;
        let (edit, fields) = restore_edit(&had, &now, keys);
        if fields.is_empty() {
            continue;
        }
        // The first version after the snapshot that lacked a value is the loss; any change after it
        // is someone's later choice.
        let versions = incident::versions_since(conn, series, d.cid_id, from.id)?;
        let mut loss = None;
        for digest in versions.iter().skip(1) {
            let v = db::version(conn, d.cid_id, digest)?;
            if !restore_edit(&had, &v, keys).1.is_empty() {
                loss = Some(v);
                break;
            }
        }
        // A value someone set after the loss: a field to put back that holds something else now
        // than what the loss left (a field our own restore already put back is not among them).
        let changed_again = loss.is_some_and(|l| {
            let (l, n) = (Tracked::of_row(&l), Tracked::of_row(&now));
            fields.iter().any(|f| l.value(&f.field) != n.value(&f.field))
        });
        if changed_again && !opts.force {
            p.conflicts.push(Skipped {
                cid: had.cid,
                reason: "changed again after the loss: a value set since then would be overwritten (--force restores anyway)".into(),
            });
            continue;
        }
        let seen = Tracked::of_row(&now);
        let restored = seen.with(&edit);
        p.expect.insert(had.cid.clone(), (seen, restored));
        p.edits.insert(had.cid.clone(), edit);
        p.restored.push(Restored { cid: had.cid, fields });
    }
    Ok((from, current, p))
}

/// Runs the restore through the write peer (`opts.peer`, or the cluster's first peer).
pub async fn run(ctx: &Context, opts: &Options) -> anyhow::Result<Report> {
    let store = ctx.store()?;
    let (from, current, plan) = plan(store, opts)?;
    let clients = ctx.clients(&ctx.peers(opts.peer.as_deref())?)?;
    let client = &clients[0];
    let params = serde_json::json!({
        "from": opts.from, "current": current, "only": opts.only.as_ref().map(|o| o.len()),
        "keys": opts.keys, "force": opts.force, "concurrency": opts.concurrency,
    });
    let spec = Spec { kind: RunKind::Restore, org: None, params, dry_run: opts.dry_run };
    let run = Run::begin(ctx, client, spec).await?;
    let tx = store.conn.unchecked_transaction()?;
    runs::record_plan(
        &tx,
        run.id(),
        plan.restored
            .iter()
            .map(|r| (r.cid.as_str(), PlanClass::Target, None))
            .chain(plan.conflicts.iter().map(|c| (c.cid.as_str(), PlanClass::Conflict, None))),
    )?;
    tx.commit()?;
    let mut report = Report {
        run: Some(run.id()),
        dry_run: opts.dry_run,
        from: from.id,
        current,
        restored: Vec::new(),
        conflicts: plan.conflicts,
        unpinned: plan.unpinned,
        failed: Vec::new(),
        plan: plan.restored,
        spread: None,
    };
    if opts.dry_run {
        report.restored = report.plan.iter().map(|r| r.cid.clone()).collect();
        run.finish(RunState::Done)?;
        return Ok(report);
    }
    let outcomes =
        put_back(ctx, client, run.id(), opts, &report.plan, (plan.edits, plan.expect)).await?;
    for o in outcomes {
        match o.outcome {
            o2 if o2.is_success() => report.restored.push(o.cid),
            Outcome::Conflict => {
                report.conflicts.push(Skipped { cid: o.cid, reason: o.error.unwrap_or_default() })
            }
            _ => report.failed.push(Failed {
                error: o
                    .error
                    .unwrap_or_else(|| format!("{}: {}", o.outcome, o.mismatched.join(", "))),
                cid: o.cid,
            }),
        }
    }
    if !report.restored.is_empty() {
        let pace = opts.concurrency.max(1);
        let spread =
            spread::check(ctx, &clients, &report.restored, (client.timeout(), pace)).await?;
        run.record_membership(&spread.membership)?;
        report.spread = Some(spread);
    }
    let clean = report.conflicts.is_empty()
        && report.failed.is_empty()
        && report.spread.as_ref().is_none_or(Spread::everywhere);
    run.finish(if clean { RunState::Done } else { RunState::Attention })?;
    Ok(report)
}

/// The re-pins of a restore: each pin gets its own edit, and is left alone if it no longer looks
/// as the ledger last saw it (unless forced). A pin that already holds the values to put back (an
/// earlier restore, or one stopped midway, put them back) is done: its re-pin would change nothing,
/// so none is sent.
async fn put_back(
    ctx: &Context,
    client: &Client,
    run: i64,
    opts: &Options,
    plan: &[Restored],
    (edits, expect): (HashMap<String, PinEdit>, HashMap<String, (Tracked, Tracked)>),
) -> anyhow::Result<Vec<repin::RepinOutcome>> {
    let force = opts.force;
    let guard = move |pin: &CanonicalPin| -> Option<String> {
        let (seen, restored) = expect.get(&pin.cid)?;
        let now = Tracked::of_pin(pin);
        (!force && now != *seen && now != *restored).then(|| {
            "changed since the latest snapshot: a value set since then would be overwritten (--force restores anyway)".to_string()
        })
    };
    let cids: Vec<String> = plan.iter().map(|r| r.cid.clone()).collect();
    let change = Change {
        set: &BTreeMap::new(),
        unset: &[],
        guard: Some(&guard),
        per_cid: Some(&edits),
        overrides: None,
        allocations_within: None,
    };
    let pace = Pace { concurrency: opts.concurrency.max(1), rate: None };
    let b = repin::Batch {
        conn: &ctx.store()?.conn,
        client,
        at: (run, 1),
        change: &change,
        pace: &pace,
        clock: ctx.clock,
    };
    let pb = ctx.progress(Some(cids.len() as u64));
    pb.set_message("restoring");
    let outcomes = repin::safe_repins(&b, &cids, |n| pb.set_position(n as u64)).await?;
    pb.finish_and_clear();
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, meta: &str, rep: (i64, i64), expire: Option<&str>) -> PinRow {
        PinRow {
            name: name.into(),
            metadata: (!meta.is_empty()).then(|| meta.to_string()),
            allocations: "[\"p1\"]".into(),
            replication_min: rep.0,
            replication_max: rep.1,
            expire_at: expire.map(str::to_string),
            ..crate::ledger::diff::tests::row()
        }
    }

    #[test]
    fn only_lost_values_come_back() {
        let had = row("n", r#"{"org":"hrdag","team":"a"}"#, (2, 3), Some("2099-01-01T00:00:00Z"));
        let now = row("", r#"{"new":"x","team":"b"}"#, (-1, -1), None);
        let (edit, fields) = restore_edit(&had, &now, None);
        assert_eq!(edit.set.len(), 2);
        assert_eq!(edit.set["team"], "a");
        assert_eq!(edit.overrides.name.as_deref(), Some("n"));
        assert_eq!(edit.overrides.replication, Some((2, 3)));
        assert_eq!(edit.overrides.expire_at, Some(Some("2099-01-01T00:00:00Z".into())));
        assert_eq!(fields.len(), 6);
        // An added key is not a loss.
        let added =
            row("n", r#"{"org":"hrdag","team":"a","x":"y"}"#, (2, 3), had.expire_at.as_deref());
        assert!(restore_edit(&had, &added, None).1.is_empty());
        // An empty value filled in since (a tag run) is not a loss.
        let empty = row("n", r#"{"org":""}"#, (2, 3), None);
        let tagged = row("n", r#"{"org":"hrdag"}"#, (2, 3), None);
        assert!(restore_edit(&empty, &tagged, None).1.is_empty());
        let everywhere = row("n", "", (-1, -1), None);
        assert!(restore_edit(&everywhere, &row("n", "", (2, 3), None), None).1.is_empty());
        // --keys: those keys only.
        let (edit, fields) = restore_edit(&had, &now, Some(&["org".to_string()]));
        assert_eq!(fields.len(), 1);
        assert_eq!(edit.overrides, crate::cluster::repin::Overrides::default());
    }
}
