//! `ledger snapshot`: record one pass of a peer's pin set (`GET /allocations?filter=all`, that peer's
//! own replica) as changes since the peer's previous complete snapshot.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::app::{self, print_json};
use crate::cli::GlobalArgs;
use crate::ledger::snapshot::{self, Report};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub peers: Peers,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Which peers a snapshot reads.
#[derive(Debug, Args, Clone)]
pub struct Peers {
    /// Snapshot this peer (URL or multiaddr; repeatable). Default: the cluster's first peer.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
    /// Snapshot every peer of the cluster (those named by --cluster or the profile).
    #[arg(long, conflicts_with = "peer")]
    pub all_peers: bool,
}

impl Peers {
    /// The peers' URLs.
    pub fn urls(&self, target: &crate::cluster::Target) -> anyhow::Result<Vec<url::Url>> {
        Ok(if !self.peer.is_empty() {
            self.peer
                .iter()
                .map(|p| crate::cluster::config::parse_address(p).map(|(u, _)| u))
                .collect::<anyhow::Result<_>>()?
        } else if self.all_peers {
            target.peers.clone()
        } else {
            target.peers[..1].to_vec()
        })
    }
}

pub fn run(args: SnapshotArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let target = g.ledger.target()?;
    let urls = args.peers.urls(&target)?;
    let mut store = g.ledger.store()?;
    let rt = app::runtime()?;
    let mut reports = Vec::new();
    for url in &urls {
        let client = g.ledger.client(&target, url)?;
        let pb = app::progress(g.quiet || args.json, None);
        pb.set_message(format!("snapshot of {url}"));
        let report = rt
            .block_on(snapshot::take(&mut store, &client, &target.name, &Default::default(), |n| {
                pb.set_position(n as u64)
            }))
            .with_context(|| format!("cannot snapshot {url}"))?;
        pb.finish_and_clear();
        if !args.json {
            print_summary(&report)?;
        }
        reports.push(report);
    }
    if args.json {
        print_json(&reports)?;
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.complete).collect();
    for r in &failed {
        eprintln!(
            "ledger: error: snapshot {} of {} is incomplete: {}. It kept the {} pins it read, and no pin counts as vanished because of it. Run `ledger snapshot` again.",
            r.id,
            r.peer_url,
            r.error.as_deref().unwrap_or("unknown error"),
            r.pins
        );
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ERROR) })
}

pub fn print_summary(r: &Report) -> std::io::Result<()> {
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
