//! What the terminal shows of a use case's result, shared by the commands and the demo: tables and
//! lines on stdout (through [`crate::out!`], so a closed pipe ends the program quietly).

use crate::app::print_table;
use crate::ledger::{snapshot, tag};

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
    let owners: Vec<String> = r.orgs.iter().map(|(o, n)| format!("{o} {n}")).collect();
    crate::out!(
        "  owners: {} · unowned {}",
        if owners.is_empty() { "none".to_string() } else { owners.join(", ") },
        r.unowned
    );
    Ok(())
}

/// A tag run: the plan, a row per pass, convergence or the stragglers, the conflicts.
pub fn tag_report(r: &tag::Report) -> std::io::Result<()> {
    let p = &r.plan;
    crate::out!(
        "run {}: org={} — {} targets, {} already tagged, {} owned by other organisations{}",
        r.run,
        r.org,
        p.targets.len(),
        p.already,
        p.conflicts.len(),
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
    if r.converged {
        crate::out!(
            "converged: every peer shows all {} targets tagged ({:.1}s)",
            p.targets.len() - r.not_tagged.len(),
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
    if !p.conflicts.is_empty() {
        crate::out!("conflicts (owned by another organisation, left alone): {}", p.conflicts.len());
        for (cid, owner) in p.conflicts.iter().take(10) {
            crate::out!("  {cid} org={owner}");
        }
    }
    for (cid, why) in &r.not_tagged {
        crate::out!("  not tagged {cid}: {why}");
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
