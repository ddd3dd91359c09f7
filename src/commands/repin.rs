//! `ledger repin CID --meta k=v [--unset k]`: one safe re-pin that keeps every other option of the pin
//! (name, replication, other metadata, expiry, origins, mode), recorded in the ledger as a run.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::app::{self, print_json};
use crate::cli::GlobalArgs;
use crate::ledger::repin;
use crate::store::runs;

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

pub fn run(args: RepinArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let cid = crate::ids::parse_cid(&args.cid)
        .map_err(|e| anyhow::anyhow!("{:?} is not a CID: {e}", args.cid))?
        .canonical;
    if args.meta.is_empty() && args.unset.is_empty() {
        anyhow::bail!("nothing to change: give --meta KEY=VALUE or --unset KEY");
    }
    for k in &args.unset {
        crate::cluster::repin::check_key(k)?;
    }
    let target = g.ledger.target()?;
    let url = match &args.peer {
        Some(p) => crate::cluster::config::parse_address(p)?.0,
        None => target.peers[0].clone(),
    };
    let client = g.ledger.client(&target, &url)?;
    let set: BTreeMap<String, String> = args.meta.iter().cloned().collect();
    let rt = app::runtime()?;
    if args.dry_run {
        let pin = rt
            .block_on(repin::read_pin(&client, &cid))?
            .with_context(|| format!("{cid} is not pinned on {url}"))?;
        let req = crate::cluster::repin::build(&pin, &set, &args.unset, chrono::Utc::now())?;
        if args.json {
            print_json(&req)?;
        } else {
            crate::out!("would send: POST {}", req.path_and_query());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = g.ledger.store()?;
    let outcome = rt.block_on(async {
        let me = client.id().await?;
        let reconciled = repin::reconcile(&store.conn, &client, &target.name).await?;
        if reconciled > 0 {
            tracing::info!(reconciled, "settled re-pins left pending by an earlier run");
        }
        let params = serde_json::json!({ "cid": cid, "set": set, "unset": args.unset });
        let run = runs::begin(
            &store.conn,
            "repin",
            &target.name,
            &me.id,
            url.as_str(),
            None,
            &params.to_string(),
            false,
        )?;
        let outcome =
            repin::safe_repin(&store.conn, &client, (run, 1), &cid, &set, &args.unset, None).await;
        let state = match &outcome {
            Ok(o) if o.outcome == "applied" || o.outcome == "unchanged" => "done",
            Ok(o) if o.outcome == "mismatch" => "attention",
            _ => "failed",
        };
        runs::finish(&store.conn, run, state)?;
        outcome
    })?;
    if args.json {
        print_json(&outcome)?;
    } else {
        match outcome.outcome.as_str() {
            "applied" => crate::out!(
                "{cid}: re-pinned on {url}, every other option kept (repin {})",
                outcome.repin_id.unwrap_or(0)
            ),
            "unchanged" => crate::out!("{cid}: already as asked; nothing sent"),
            other => crate::out!(
                "{cid}: {other}{}",
                outcome.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
        }
    }
    Ok(match outcome.outcome.as_str() {
        "applied" | "unchanged" => ExitCode::SUCCESS,
        "mismatch" => {
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
