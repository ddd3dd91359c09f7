//! `ledger repin CID --meta k=v [--unset k]`: one safe re-pin that keeps every other option of the pin
//! (name, replication, other metadata, expiry, origins, mode), recorded in the ledger as a run.
//! `ledger repin --only FILE | --org ORG | --all` and a change: the same over a set, in passes
//! verified on every peer, as `ledger tag` does ([`crate::ledger::bulk`]).

use std::process::ExitCode;

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::app::print_json;
use crate::cli::parse_duration;
use crate::context::Context;
use crate::domain::Outcome;
use crate::ledger::bulk;
use crate::ledger::migration::{Goal, Passes};
use crate::ledger::repin;
use crate::ledger::spread::Spread;
use crate::render;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("set").args(["only", "org", "all"]).multiple(true)))]
pub struct RepinArgs {
    /// The pin's CID (one pin). Without it, give the set: --only FILE, --org ORG or --all.
    #[arg(conflicts_with_all = ["only", "org", "all"])]
    pub cid: Option<String>,
    /// The set: these CIDs (one per line; `#` comments and blank lines ignored).
    #[arg(long, value_name = "FILE")]
    pub only: Option<std::path::PathBuf>,
    /// The set: this organisation's pins (with --only: the listed pins must be its own).
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// The set: every pin of the write peer.
    #[arg(long, conflicts_with_all = ["only", "org"])]
    pub all: bool,
    #[command(flatten)]
    pub bulk: BulkArgs,
    /// Set a metadata key (repeatable): `--meta org=hrdag`. The value may contain `=`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = crate::cli::parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Remove a metadata key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
    /// The peer that takes the write (URL or multiaddr). Default: the cluster's first peer.
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<String>,
    /// Print the request (or, over a set, record and print the plan); send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RepinArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let Some(cid) = args.cid.clone() else {
        return run_bulk(args, ctx);
    };
    if args.bulk.changes_options() || args.bulk.force {
        anyhow::bail!(
            "--name, --replication, --allocations, --expire-at, --expire-in, --ensure and --force \
             apply to a set: give the CID in a file with --only FILE"
        );
    }
    let cid = crate::ids::parse_cid(&cid)
        .map_err(|e| anyhow::anyhow!("{cid:?} is not a CID: {e}"))?
        .canonical;
    if args.meta.is_empty() && args.unset.is_empty() {
        anyhow::bail!("nothing to change: give --meta KEY=VALUE or --unset KEY");
    }
    for k in &args.unset {
        crate::cluster::repin::check_key(k)?;
    }
    let opts = repin::OneOptions {
        cid: cid.clone(),
        set: args.meta.iter().cloned().collect(),
        unset: args.unset.clone(),
        peer: args.peer.clone(),
    };
    if args.dry_run {
        let req = ctx.block_on(repin::preview(ctx, &opts))??;
        if args.json {
            print_json(&req)?;
        } else {
            crate::out!("would send: POST {}", req.path_and_query());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let one = ctx.until_signal(repin::one(ctx, &opts))?;
    if args.json {
        print_json(&one)?;
    } else {
        print_outcome(&cid, &one.outcome)?;
        if let Some(spread) = &one.spread {
            render::spread(spread, 1)?;
        }
    }
    let outcome = one.outcome;
    Ok(match outcome.outcome {
        _ if one.spread.as_ref().is_some_and(Spread::everywhere) => ExitCode::SUCCESS,
        o if o.is_success() => {
            eprintln!(
                "ledger: the write peer shows the re-pin, but not every member of the cluster was \
                 seen showing it (above)"
            );
            ExitCode::from(crate::error::ATTENTION)
        }
        Outcome::Mismatch if outcome.still_as_before => {
            eprintln!(
                "ledger: the cluster accepted the re-pin, but the pin still reads as it did before, \
                 for as long as --timeout allowed. A cluster with CRDT batching shows a write only \
                 once its batch commits, and loses it if the peer restarts first: run the same \
                 `ledger repin` again once the peer is up (it sends nothing if the pin shows it)"
            );
            ExitCode::from(crate::error::ATTENTION)
        }
        Outcome::Mismatch => {
            eprintln!(
                "ledger: the pin as read back differs from what was sent in: {}",
                outcome.mismatched.join(", ")
            );
            ExitCode::from(crate::error::ATTENTION)
        }
        _ => {
            eprintln!(
                "ledger: error: the re-pin of {cid} was {}: {}",
                outcome.outcome,
                outcome.error.as_deref().unwrap_or("see `ledger history`")
            );
            ExitCode::from(crate::error::ERROR)
        }
    })
}

fn print_outcome(cid: &str, o: &repin::RepinOutcome) -> std::io::Result<()> {
    match o.outcome {
        Outcome::Applied => crate::out!(
            "{cid}: re-pinned, every other option kept (repin {})",
            o.repin_id.unwrap_or(0)
        ),
        Outcome::Unchanged => crate::out!("{cid}: already as asked; nothing sent"),
        other => crate::out!(
            "{cid}: {other}{}",
            o.error.as_deref().map(|e| format!(": {}", crate::app::shown(e))).unwrap_or_default()
        ),
    }
    Ok(())
}

/// The change and pace of a bulk re-pin (with --only, --org or --all).
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// Set both replication factors: `MIN..MAX` (`-1..-1`: every peer), or one number for both.
    #[arg(long, value_name = "MIN..MAX", value_parser = crate::cluster::config::parse_replication, allow_hyphen_values = true)]
    pub replication: Option<(i32, i32)>,
    /// The replication the profile gives the organisation of --org (`replication = "MIN..MAX"` under
    /// `[clusters.NAME.orgs.ORG]` in ledger.toml).
    #[arg(long, requires = "org", conflicts_with = "replication")]
    pub ensure: bool,
    /// Allocate to these peers (peer IDs, comma-separated), sent as `user-allocations`; a pin counts
    /// as done once it is allocated to no other peer.
    #[arg(long, value_name = "PEER,…", value_delimiter = ',')]
    pub allocations: Vec<String>,
    /// Set the name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set the expiry: an RFC 3339 time in the future, or `never`.
    #[arg(long, value_name = "TIME", conflicts_with = "expire_in")]
    pub expire_at: Option<String>,
    /// Set the expiry this long from now (a Go duration).
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_positive_duration, allow_hyphen_values = true)]
    pub expire_in: Option<Duration>,
    /// Also change pins another organisation owns when the change would take them from it (a set or
    /// removed `org`), or, with --org, listed pins that are not its own.
    #[arg(long)]
    pub force: bool,
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
}

impl BulkArgs {
    /// Whether an option other than metadata is to change.
    fn changes_options(&self) -> bool {
        self.replication.is_some()
            || self.ensure
            || !self.allocations.is_empty()
            || self.name.is_some()
            || self.expire_at.is_some()
            || self.expire_in.is_some()
    }
}

/// The change asked for, checked before anything is sent.
fn goal(args: &RepinArgs, ctx: &Context) -> anyhow::Result<Goal> {
    for k in &args.unset {
        crate::cluster::repin::check_key(k)?;
    }
    let b = &args.bulk;
    let allocations = crate::cli::peer_ids(&b.allocations)?;
    let replication = match (b.replication, b.ensure, args.org.as_deref()) {
        (_, true, Some(org)) => Some(ctx.target()?.org_replication(org)?),
        (r, _, _) => r,
    };
    let expire_at = crate::cli::expiry(b.expire_at.as_deref(), b.expire_in, ctx.now())?;
    let goal = Goal {
        set: args.meta.iter().cloned().collect(),
        unset: args.unset.clone(),
        name: b.name.clone(),
        replication,
        expire_at,
        allocations: (!allocations.is_empty()).then_some(allocations),
    };
    if goal.name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
        bail!("--name holds a control character");
    }
    if goal.set.is_empty() && goal.unset.is_empty() && !b.changes_options() {
        bail!(
            "nothing to change: give --meta, --unset, --name, --replication, --ensure, \
             --allocations, --expire-at or --expire-in"
        );
    }
    Ok(goal)
}

/// `ledger repin` over a set.
fn run_bulk(args: RepinArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.only.is_none() && args.org.is_none() && !args.all {
        bail!("give a CID, or the set: --only FILE, --org ORG or --all");
    }
    if let Some(org) = &args.org
        && (org.is_empty() || org.chars().any(char::is_control))
    {
        bail!("--org must be a non-empty name without control characters");
    }
    let goal = goal(&args, ctx)?;
    let b = &args.bulk;
    let opts = bulk::Options {
        selection: bulk::Selection {
            only: args.only.as_deref().map(crate::ids::read_cid_list).transpose()?,
            org: args.org.clone(),
        },
        goal,
        force: b.force,
        peer: args.peer.clone(),
        dry_run: args.dry_run,
        passes: Passes {
            settle: b.settle,
            probe_every: b.probe_every,
            max_passes: b.max_passes.max(1),
            timeout: b.run_timeout,
            concurrency: b.concurrency as usize,
            rate: b.rate,
        },
    };
    if args.json {
        ctx.silence();
    }
    let report = ctx.until_signal(bulk::run(ctx, &opts))?;
    if args.json {
        print_json(&report)?;
    } else {
        render::bulk_report(&report)?;
    }
    Ok(if !report.needs_attention() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ATTENTION)
    })
}
