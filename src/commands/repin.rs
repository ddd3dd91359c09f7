//! `ledger repin CID --meta k=v [--unset k]`: one safe re-pin that keeps every other option of the pin
//! (name, replication, other metadata, expiry, origins, mode), recorded in the ledger as a run.

use std::process::ExitCode;

use clap::Args;

use crate::app::print_json;
use crate::context::Context;
use crate::domain::Outcome;
use crate::ledger::repin;
use crate::ledger::spread::Spread;
use crate::render;

#[derive(Debug, Args)]
pub struct RepinArgs {
    /// The pin's CID.
    pub cid: String,
    /// Set a metadata key (repeatable): `--meta org=hrdag`. The value may contain `=`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Remove a metadata key (repeatable).
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
    /// The peer that takes the write (URL or multiaddr). Default: the cluster's first peer.
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<String>,
    /// Print the request that would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    crate::cluster::repin::check_key(k).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

pub fn run(args: RepinArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cid = crate::ids::parse_cid(&args.cid)
        .map_err(|e| anyhow::anyhow!("{:?} is not a CID: {e}", args.cid))?
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
