//! `ledger tag --org ORG`: tag every unowned pin with `org=ORG`, pass after pass, until every peer
//! agrees, with every re-pin on the record. Exit 0 converged, 1 stragglers or conflicts, 2 error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::app::{self, print_json, print_table};
use crate::cli::GlobalArgs;
use crate::ledger::tag;

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The organisation: pins with no `org` get `org=ORG`.
    #[arg(long)]
    pub org: String,
    /// Also retag pins owned by this organisation (otherwise another org's pins are never touched).
    #[arg(long, value_name = "OTHER")]
    pub reassign_from: Option<String>,
    /// Only these CIDs (one per line; `#` comments and blank lines ignored).
    #[arg(long, value_name = "FILE")]
    pub only: Option<std::path::PathBuf>,
    /// The peer that takes the writes (default: the cluster's first peer).
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<String>,
    /// Record and print the plan; send no write.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait this long after each pass before verifying every peer.
    #[arg(long, default_value = "10s", value_parser = crate::ids::parse_go_duration)]
    pub settle: Duration,
    /// Give up after this many passes.
    #[arg(long, default_value_t = 5)]
    pub max_passes: u32,
    /// Give up starting new passes after this long.
    #[arg(long = "run-timeout", default_value = "30m", value_parser = crate::ids::parse_go_duration)]
    pub run_timeout: Duration,
    /// Re-pins in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// While a pass settles, sample every peer this often (0s: only after the settle).
    #[arg(long, default_value = "2s", value_parser = crate::ids::parse_go_duration)]
    pub probe_every: Duration,
    /// At most this many re-pins per second.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TagArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    crate::cluster::repin::check_key("org")?;
    if args.org.is_empty() || args.org.chars().any(char::is_control) {
        bail!("--org must be a non-empty name without control characters");
    }
    let only = args.only.as_deref().map(crate::ids::read_cid_list).transpose()?;
    let target = g.ledger.target()?;
    let mut urls = target.peers.clone();
    if let Some(p) = &args.peer {
        let (u, _) = crate::cluster::config::parse_address(p)?;
        urls.retain(|x| *x != u);
        urls.insert(0, u);
    }
    let clients: Vec<_> =
        urls.iter().map(|u| g.ledger.client(&target, u)).collect::<anyhow::Result<_>>()?;
    let mut store = g.ledger.store()?;
    let lock = store.run_lock()?;
    let opts = tag::Options {
        org: args.org.clone(),
        reassign_from: args.reassign_from.clone(),
        only,
        dry_run: args.dry_run,
        settle: args.settle,
        max_passes: args.max_passes.max(1),
        timeout: args.run_timeout,
        concurrency: args.concurrency as usize,
        rate: args.rate,
        probe_every: args.probe_every,
    };
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be a positive number of re-pins per second");
    }
    let pb = app::progress(g.quiet || args.json, Some(0));
    let rt = app::runtime()?;
    let report =
        rt.block_on(tag::run(&mut store, &target.name, &clients, &opts, |what, done, total| {
            pb.set_length(total);
            pb.set_position(done);
            pb.set_message(what.to_string());
        }))?;
    pb.finish_and_clear();
    drop(lock);
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    let attention =
        !report.converged || !report.plan.conflicts.is_empty() || !report.not_tagged.is_empty();
    Ok(if args.dry_run || !attention {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ATTENTION)
    })
}

fn print_report(r: &tag::Report) -> std::io::Result<()> {
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
