//! What the terminal shows of a use case's result, shared by the commands and the demo: tables and
//! lines on stdout (through [`crate::out!`], so a closed pipe ends the program quietly).

use crate::app::{print_table, shown};
use crate::cluster::Membership;
use crate::ledger::convergence::Convergence;
use crate::ledger::spread::Spread;
use crate::ledger::{snapshot, tag};
use crate::store::runs::ProbeRow;

/// One snapshot in three lines: what was read, what changed, who owns the pins.
pub fn snapshot_summary(r: &snapshot::Report) -> std::io::Result<()> {
    let rate = if r.seconds > 0.0 { r.pins as f64 / r.seconds } else { 0.0 };
    let state = if r.complete { "complete" } else { "INCOMPLETE" };
    crate::out!(
        "snapshot {} of {} ({}): {state}, {} pins in {:.1}s ({rate:.0} pins/s)",
        r.id,
        r.peer_url,
        r.peer,
        r.pins,
        r.seconds
    );
    if r.complete {
        let since = match r.previous_id {
            Some(p) => format!("since snapshot {p}"),
            None => "first snapshot of this peer".to_string(),
        };
        crate::out!(
            "  {since}: {} new, {} changed, {} vanished",
            r.new.unwrap_or(0),
            r.changed.unwrap_or(0),
            r.vanished.unwrap_or(0)
        );
    }
    let owners: Vec<String> = r.orgs.iter().map(|(o, n)| format!("{} {n}", shown(o))).collect();
    crate::out!(
        "  owners: {} · unowned {}",
        if owners.is_empty() { "none".to_string() } else { owners.join(", ") },
        r.unowned
    );
    if let Some(s) = &r.status {
        status_summary(s)?;
    }
    Ok(())
}

/// The status reading of a snapshot (`snapshot --status`): pins per status, and what changed.
fn status_summary(s: &crate::ledger::status::Reading) -> std::io::Result<()> {
    if !s.complete {
        crate::out!(
            "  statuses (reading {}): INCOMPLETE after {} lines: {}",
            s.id,
            s.entries,
            shown(s.error.as_deref().unwrap_or("unknown error"))
        );
        return Ok(());
    }
    let counts: Vec<String> = s.statuses.iter().map(|(k, n)| format!("{} {n}", shown(k))).collect();
    let since = match s.previous_id {
        Some(p) => format!("since reading {p}"),
        None => "first status reading of this peer".to_string(),
    };
    crate::out!(
        "  statuses (reading {}): {} · {since}: {} changed or new, {} ended",
        s.id,
        if counts.is_empty() { "none".to_string() } else { counts.join(", ") },
        s.opened.unwrap_or(0),
        s.closed.unwrap_or(0)
    );
    Ok(())
}

/// Which members of the cluster a command read, when not all: "verified 1 of 4 cluster peers; not
/// read: …", and how to name the others. Nothing when every member was read.
pub fn membership(m: &Membership, verb: &str) -> std::io::Result<()> {
    if let Some(said) = m.shortfall(verb) {
        crate::out!("{said}");
        if m.members.is_some() {
            crate::out!("  {}", crate::cluster::membership::HOW_TO_NAME_THEM);
        }
    }
    Ok(())
}

/// Which peers show the `written` pins of a repin or a restore as the write peer does: every member,
/// or the peers short of them and the members not read.
pub fn spread(s: &Spread, written: usize) -> std::io::Result<()> {
    if written == 0 {
        return Ok(());
    }
    if s.everywhere() {
        crate::out!("shown as written on every peer ({} cluster members read)", s.peers.len());
        return Ok(());
    }
    let fine = s.peers.iter().filter(|p| p.error.is_none() && p.lacking.is_empty()).count();
    crate::out!("shown as written on {fine} of the {} peer(s) read", s.peers.len());
    for p in s.short() {
        let who = p.id.as_deref().map_or_else(|| p.url.clone(), crate::app::short_peer);
        match &p.error {
            Some(e) => crate::out!("  {who}: not read: {}", shown(e)),
            None => crate::out!(
                "  {who}: {} of {written} not shown as written within --timeout (first: {})",
                p.lacking.len(),
                p.lacking[0]
            ),
        }
    }
    membership(&s.membership, "read")
}

/// `ledger add`: a line per upload (its pin's CID, the path, its bytes, how the pin read back on the
/// write peer), a total, then which peers show the pins.
pub fn add_report(r: &crate::ledger::add::Report) -> std::io::Result<()> {
    for u in &r.uploads {
        let state = match (&u.pin, u.mismatched.is_empty()) {
            (None, _) => "not shown on the write peer within --timeout".to_string(),
            (Some(_), true) => "pinned as asked".to_string(),
            (Some(_), false) => format!("pinned, but not as asked: {}", u.mismatched.join(", ")),
        };
        crate::out!(
            "{}  {}  {} in {} entr{}  {state}",
            u.cid,
            u.path,
            indicatif::HumanBytes(u.bytes),
            u.entries.len(),
            if u.entries.len() == 1 { "y" } else { "ies" }
        );
    }
    crate::out!(
        "added {} path(s), {} with org={} in {:.1} s (run {})",
        r.uploads.len(),
        indicatif::HumanBytes(r.bytes),
        r.org,
        r.seconds,
        r.run
    );
    spread(&r.spread, r.uploads.len())
}

/// `TITLE: N` and the first ten (cid, owner), when there are any.
fn owned_list(title: &str, pins: &[(String, String)]) -> std::io::Result<()> {
    if pins.is_empty() {
        return Ok(());
    }
    crate::out!("{title}: {}", pins.len());
    for (cid, owner) in pins.iter().take(10) {
        crate::out!("  {cid} org={}", shown(owner));
    }
    if pins.len() > 10 {
        crate::out!("  … and {} more", pins.len() - 10);
    }
    Ok(())
}

/// A tag run: the plan, a row per pass, convergence or the stragglers, the pins other
/// organisations own and the conflicts.
pub fn tag_report(r: &tag::Report) -> std::io::Result<()> {
    let p = &r.plan;
    crate::out!(
        "run {}: org={} — {} targets, {} already tagged, {} owned by other organisations{}",
        r.run,
        r.org,
        p.targets.len(),
        p.already,
        p.owned_by_others.len() + p.conflicts.len(),
        if r.dry_run { " (dry run: nothing sent)" } else { "" }
    );
    if r.dry_run {
        for c in p.targets.iter().take(20) {
            crate::out!("  would tag {c}");
        }
        if p.targets.len() > 20 {
            crate::out!("  … and {} more", p.targets.len() - 20);
        }
    }
    let mut rows = Vec::new();
    for pass in &r.passes {
        let tagged: Vec<String> = pass
            .tagged
            .iter()
            .map(|(peer, n)| format!("{}:{n}", crate::app::short_peer(peer)))
            .collect();
        rows.push(vec![
            pass.pass.to_string(),
            pass.attempted.to_string(),
            pass.applied.to_string(),
            pass.unchanged.to_string(),
            (pass.failed + pass.refused).to_string(),
            tagged.join(" "),
        ]);
    }
    if !rows.is_empty() {
        print_table(
            &["pass", "attempted", "applied", "already", "failed", "tagged per peer"],
            &rows,
        )?;
    }
    let tagged = p.targets.len() - r.not_tagged.len();
    if r.converged && r.every_member_read() {
        crate::out!("converged: every peer shows all {tagged} targets tagged ({:.1}s)", r.seconds);
    } else if r.converged {
        let read = r.passes.last().map_or(0, |p| p.tagged.len());
        let peers = if read == 1 { "peer" } else { "peers" };
        crate::out!(
            "converged on the {read} {peers} read: all {tagged} targets tagged ({:.1}s)",
            r.seconds
        );
    } else if !r.dry_run {
        crate::out!(
            "NOT converged after {} passes ({:.1}s); stragglers per peer:",
            r.passes.len(),
            r.seconds
        );
        for (peer, cids) in &r.stragglers {
            crate::out!(
                "  {peer}: {} ({})",
                cids.len(),
                cids.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    if !r.dry_run {
        membership(&r.membership, "verified")?;
    }
    owned_list("owned by others (left alone)", &p.owned_by_others)?;
    owned_list(
        "conflicts (asked for with --only, owned by another organisation, left alone)",
        &p.conflicts,
    )?;
    for (cid, why) in &r.not_tagged {
        crate::out!("  not tagged {cid}: {}", shown(why));
    }
    Ok(())
}

/// Where a report was written: the page, and the files beside it.
pub fn report_written(run: i64, written: &crate::report::Written) -> std::io::Result<()> {
    let names: Vec<String> = written
        .files
        .iter()
        .skip(1)
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    crate::out!("report of run {run} written to {}", written.files[0].display());
    crate::out!("  beside it: {}", names.join(", "));
    Ok(())
}

/// The text output: the run, a table of the curve (every sample, or the first and last read of each
/// pass and peer), and when each peer showed every target.
pub fn convergence(report: &Convergence, every_sample: bool) -> anyhow::Result<()> {
    let r = &report.run;
    crate::out!(
        "run {} ({}, org={}, {}): {}",
        r.id,
        r.kind,
        r.org.as_deref().unwrap_or("-"),
        r.started_at,
        r.state
    );
    if every_sample {
        let rows: Vec<Vec<String>> = report
            .curve
            .iter()
            .map(|p| vec![p.pass.to_string(), crate::app::short_peer(&p.peer), read(p)])
            .collect();
        print_table(&["pass", "peer", "tagged"], &rows)?;
    } else {
        print_passes(report)?;
    }
    for (peer, after) in &report.converged_after {
        match after {
            Some(s) => crate::out!("{}: every target after {s:.1}s", crate::app::short_peer(peer)),
            None => crate::out!("{}: NOT converged", crate::app::short_peer(peer)),
        }
    }
    match &report.membership {
        Some(m) => membership(m, "verified")?,
        None => crate::out!("{}", crate::report::unverified(None).unwrap_or_default()),
    }
    Ok(())
}

/// Per pass and peer: the first read (right after the pass's re-pins) and the last.
fn print_passes(report: &Convergence) -> std::io::Result<()> {
    let repins = |pass: i64| {
        report
            .passes
            .iter()
            .find(|x| x.pass == pass)
            .map(|x| format!("{}/{}/{}", x.attempted, x.succeeded, x.failed))
            .unwrap_or_default()
    };
    let spans: std::collections::BTreeSet<(i64, &str)> =
        report.curve.iter().map(|p| (p.pass, p.peer.as_str())).collect();
    let curve = &report.curve;
    let rows: Vec<Vec<String>> = spans
        .into_iter()
        .filter_map(|(pass, peer)| {
            let first = crate::report::first_read(curve, pass, peer)?;
            let last = crate::report::at_pass_end(curve, pass, peer)?;
            Some(vec![
                pass.to_string(),
                crate::app::short_peer(peer),
                read(first),
                read(last),
                repins(pass),
            ])
        })
        .collect();
    print_table(&["pass", "peer", "first read", "last read", "re-pins a/s/f"], &rows)
}

/// One probe's read: `tagged/targets (percent%) at seconds`.
fn read(p: &ProbeRow) -> String {
    let pct = crate::report::percent(p.tagged, p.targets);
    format!("{}/{} ({pct:.1}%) at {:.1}s", p.tagged, p.targets, p.seconds)
}

/// A bulk re-pin: the plan, a row per pass, convergence or the stragglers, the pins left alone.
pub fn bulk_report(r: &crate::ledger::bulk::Report) -> std::io::Result<()> {
    let p = &r.plan;
    crate::out!(
        "run {}: {} targets, {} already as asked, {} left alone{}",
        r.run,
        p.targets.len(),
        p.already,
        p.conflicts.len(),
        if r.dry_run { " (dry run: nothing sent)" } else { "" }
    );
    if r.dry_run {
        for c in p.targets.iter().take(20) {
            crate::out!("  would re-pin {c}");
        }
        if p.targets.len() > 20 {
            crate::out!("  … and {} more", p.targets.len() - 20);
        }
    }
    let rows: Vec<Vec<String>> = r
        .passes
        .iter()
        .map(|pass| {
            let shown: Vec<String> = pass
                .tagged
                .iter()
                .map(|(peer, n)| format!("{}:{n}", crate::app::short_peer(peer)))
                .collect();
            vec![
                pass.pass.to_string(),
                pass.attempted.to_string(),
                pass.applied.to_string(),
                pass.unchanged.to_string(),
                (pass.failed + pass.refused + pass.conflicts).to_string(),
                shown.join(" "),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(
            &["pass", "attempted", "applied", "already", "failed", "as asked per peer"],
            &rows,
        )?;
    }
    let done = p.targets.len() + p.already - r.not_done.len();
    if r.converged && !r.dry_run {
        let on = if r.membership.every_member_read() { "every peer" } else { "every peer read" };
        crate::out!("converged: {on} shows all {done} pins as asked ({:.1}s)", r.seconds);
    } else if !r.dry_run {
        crate::out!(
            "NOT converged after {} passes ({:.1}s); stragglers per peer:",
            r.passes.len(),
            r.seconds
        );
        for (peer, cids) in &r.stragglers {
            crate::out!(
                "  {peer}: {} ({})",
                cids.len(),
                cids.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    if !r.dry_run {
        membership(&r.membership, "verified")?;
    }
    for c in p.conflicts.iter().take(20) {
        crate::out!("  left alone {}: {}", c.cid, shown(&c.why));
    }
    if p.conflicts.len() > 20 {
        crate::out!("  … and {} more left alone", p.conflicts.len() - 20);
    }
    for cid in &p.not_pinned {
        crate::out!("  not pinned on the write peer: {cid}");
    }
    for (cid, why) in &r.not_done {
        crate::out!("  not re-pinned {cid}: {}", shown(why));
    }
    Ok(())
}
