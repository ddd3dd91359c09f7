//! The CSV files of a report (RFC 4180 through the `csv` crate; times as stored, ISO 8601 UTC). Each
//! writer takes the report and a CSV writer, so `ledger convergence --csv` writes its curve with the
//! same code as `convergence.csv`.

use std::io::Write;

use super::Report;
use crate::store::runs::ProbeRow;

/// A CSV writer on any sink.
pub type CsvOut = csv::Writer<Box<dyn Write>>;

type WriteFn = fn(&Report, &mut CsvOut) -> anyhow::Result<()>;

/// Every CSV file of a report: its name and its writer.
pub const ALL: [(&str, WriteFn); 5] = [
    ("convergence.csv", |r, w| convergence(w, r.run.id, &r.probes)),
    ("passes.csv", passes),
    ("stragglers.csv", stragglers),
    ("owned_by_others.csv", owned_by_others),
    ("owners.csv", owners),
];

/// `run,pass,peer,seconds,targets,tagged`: one row per convergence sample.
pub fn convergence(w: &mut CsvOut, run: i64, probes: &[ProbeRow]) -> anyhow::Result<()> {
    w.write_record(["run", "pass", "peer", "seconds", "targets", "tagged"])?;
    for p in probes {
        w.write_record([
            run.to_string(),
            p.pass.to_string(),
            p.peer.clone(),
            format!("{:.3}", p.seconds),
            p.targets.to_string(),
            p.tagged.to_string(),
        ])?;
    }
    Ok(())
}

/// `run,pass,started_at,finished_at,seconds,targets,attempted,succeeded,failed,peer,tagged`: one row
/// per pass and peer; `seconds` is when the pass started, after the run started; `tagged` is what the
/// peer showed at the end of the pass (its last sample in the pass; empty if it has none).
pub fn passes(r: &Report, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record([
        "run",
        "pass",
        "started_at",
        "finished_at",
        "seconds",
        "targets",
        "attempted",
        "succeeded",
        "failed",
        "peer",
        "tagged",
    ])?;
    let starts = r.pass_starts();
    for p in &r.passes {
        let seconds = starts
            .iter()
            .find(|(n, _)| *n == p.pass)
            .map(|(_, s)| format!("{s:.3}"))
            .unwrap_or_default();
        let peers: Vec<Option<&String>> =
            if r.peers.is_empty() { vec![None] } else { r.peers.iter().map(Some).collect() };
        for peer in peers {
            let tagged = peer
                .and_then(|peer| r.at_pass_end(p.pass, peer))
                .map(|x| x.tagged.to_string())
                .unwrap_or_default();
            w.write_record([
                r.run.id.to_string(),
                p.pass.to_string(),
                p.started_at.clone(),
                p.finished_at.clone().unwrap_or_default(),
                seconds.clone(),
                p.targets.to_string(),
                p.attempted.to_string(),
                p.succeeded.to_string(),
                p.failed.to_string(),
                peer.cloned().unwrap_or_default(),
                tagged,
            ])?;
        }
    }
    Ok(())
}

/// `run,peer,snapshot_id,pass,cid,state,org`: targets a peer's last verification snapshot does not
/// show tagged; `state` is `untagged`, `other-org` (`org` names it) or `absent`.
pub fn stragglers(r: &Report, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(["run", "peer", "snapshot_id", "pass", "cid", "state", "org"])?;
    for s in &r.stragglers {
        w.write_record([
            r.run.id.to_string(),
            s.peer.clone(),
            s.snapshot_id.to_string(),
            s.pass.to_string(),
            s.cid.clone(),
            s.state.clone(),
            s.org.clone().unwrap_or_default(),
        ])?;
    }
    Ok(())
}

/// `run,cid,owner`: pins of the plan another organisation owns, left alone.
pub fn owned_by_others(r: &Report, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(["run", "cid", "owner"])?;
    for c in &r.owned_by_others {
        w.write_record([r.run.id.to_string(), c.cid.clone(), c.owner.clone().unwrap_or_default()])?;
    }
    Ok(())
}

/// `cluster,peer,snapshot_id,org,pins`: pins per org in each peer's latest complete snapshot (`org`
/// empty: unowned).
pub fn owners(r: &Report, w: &mut CsvOut) -> anyhow::Result<()> {
    w.write_record(["cluster", "peer", "snapshot_id", "org", "pins"])?;
    for o in &r.owners {
        let orgs = o.orgs.iter().map(|(org, n)| (org.as_str(), *n));
        for (org, pins) in orgs.chain((o.unowned > 0).then_some(("", o.unowned))) {
            w.write_record([
                o.cluster.clone(),
                o.peer.clone(),
                o.snapshot.to_string(),
                org.to_string(),
                pins.to_string(),
            ])?;
        }
    }
    Ok(())
}
