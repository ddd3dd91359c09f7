//! `ledger tag --org ORG`: tag every unowned pin with `org=ORG`, pass after pass, until every peer
//! agrees, with every re-pin on the record. Exit 0 converged (pins other organisations own are left
//! alone and listed, not a reason for 1); 1 stragglers, conflicts (pins asked for with `--only` that
//! another organisation owns) or pins not tagged; 2 error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::app::print_json;
use crate::cli::parse_duration;
use crate::context::Context;
use crate::ledger::tag;
use crate::render;

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
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub settle: Duration,
    /// Give up after this many passes (at least 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_passes: u32,
    /// Give up starting new passes after this long.
    #[arg(long = "run-timeout", default_value = "30m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub run_timeout: Duration,
    /// Re-pins in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// While a pass settles, sample every peer this often (0s: only after the settle).
    #[arg(long, default_value = "2s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub probe_every: Duration,
    /// At most this many re-pins per second (at least 0.001: one every 1000 s).
    #[arg(long, value_name = "PER_SECOND", value_parser = crate::cli::parse_repin_rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TagArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    crate::cluster::repin::check_key("org")?;
    if args.org.is_empty() || args.org.chars().any(char::is_control) {
        bail!("--org must be a non-empty name without control characters");
    }
    let opts = tag::Options {
        org: args.org.clone(),
        peer: args.peer.clone(),
        reassign_from: args.reassign_from.clone(),
        only: args.only.as_deref().map(crate::ids::read_cid_list).transpose()?,
        dry_run: args.dry_run,
        settle: args.settle,
        max_passes: args.max_passes.max(1),
        timeout: args.run_timeout,
        concurrency: args.concurrency as usize,
        rate: args.rate,
        probe_every: args.probe_every,
    };
    if args.json {
        ctx.silence();
    }
    let report = ctx.until_signal(tag::run(ctx, &opts))?;
    if args.json {
        print_json(&report)?;
    } else {
        render::tag_report(&report)?;
    }
    Ok(if args.dry_run || !report.needs_attention() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ATTENTION)
    })
}
