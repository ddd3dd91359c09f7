//! `ledger snapshot`: record one pass of a peer's pin set (`GET /allocations?filter=all`, that peer's
//! own replica) as changes since the peer's previous complete snapshot. A peer that cannot be asked
//! is named and the other peers are snapshotted all the same (exit 2). With `--all-peers`, members
//! of the cluster (`GET /peers`) that no peer given is are named, and the command exits 1.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::app::print_json;
use crate::cli::Peers;
use crate::context::Context;
use crate::ledger::snapshot::{self, Report};
use crate::ledger::status;
use crate::render;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub peers: Peers,
    /// Also read each peer's own tracker status of its pins (`GET /pins?local=true`: pinned,
    /// pin_error, pin_queued, pinning, remote, …) and store them as changes since the peer's
    /// previous status reading (`ledger drift --status` lists the stuck ones). Costs the peer a
    /// listing of its IPFS pins.
    #[arg(long)]
    pub status: bool,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.json {
        ctx.silence();
    }
    let urls = args.peers.urls(ctx)?;
    let (reports, unreachable) = ctx.until_signal(async {
        let mut reports = Vec::new();
        let mut unreachable = 0;
        for url in &urls {
            let mut report = match snapshot::of_peer(ctx, url).await {
                Ok(r) => r,
                // A peer that cannot be asked (down, refusing the credentials) has nothing
                // recorded; it is said, and the other peers are snapshotted all the same. An
                // error of the ledger itself (a full disk) ends the command.
                Err(e) if is_the_peers(&e) => {
                    let e = e.context(format!("cannot snapshot {url}"));
                    eprintln!("ledger: error: {}", crate::app::shown(&crate::error::chain(&e)));
                    unreachable += 1;
                    continue;
                }
                Err(e) => return Err(e.context(format!("cannot snapshot {url}"))),
            };
            if ctx.interrupted() {
                anyhow::bail!(
                    "{}: snapshot {} of {url} is recorded incomplete, with the {} pins it read",
                    snapshot::INTERRUPTED,
                    report.id,
                    report.pins
                );
            }
            if args.status {
                let client = ctx.client(url)?;
                let reading = status::read(ctx.store()?, &client, report.id, &report.peer).await;
                let why = || format!("cannot store the statuses of {url}");
                report.status = Some(reading.with_context(why)?);
            }
            if !args.json {
                render::snapshot_summary(&report)?;
            }
            reports.push(report);
        }
        Ok((reports, unreachable))
    })?;
    if args.json {
        print_json(&reports)?;
    }
    let unread: Vec<&Report> =
        reports.iter().filter(|r| r.status.as_ref().is_some_and(|s| !s.complete)).collect();
    for r in &unread {
        let s = r.status.as_ref().expect("filtered on a reading");
        eprintln!(
            "ledger: error: status reading {} of {} is incomplete: {}. No status counts as changed because of it. Run `ledger snapshot --status` again.",
            s.id,
            r.peer_url,
            s.error.as_deref().unwrap_or("unknown error"),
        );
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
    let every_member = !args.peers.all_peers || members_read(ctx, &urls, &reports, args.json)?;
    Ok(if !failed.is_empty() || !unread.is_empty() || unreachable > 0 {
        ExitCode::from(crate::error::ERROR)
    } else if !every_member {
        ExitCode::from(crate::error::ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--all-peers`: whether the complete snapshots taken were of every member of the cluster (as the
/// first peer that answers `GET /peers` lists them); says which were not, when not all.
fn members_read(
    ctx: &Context,
    urls: &[url::Url],
    reports: &[Report],
    json: bool,
) -> anyhow::Result<bool> {
    let clients = ctx.clients(urls)?;
    let mut read: Vec<Option<String>> =
        reports.iter().filter(|r| r.complete).map(|r| Some(r.peer.clone())).collect();
    read.resize(urls.len().max(read.len()), None);
    let m = ctx.block_on(crate::ledger::members::check(ctx, &clients, &read))??;
    if let Some(said) = m.shortfall("snapshotted") {
        if json {
            eprintln!("ledger: {said}");
        } else {
            render::membership(&m, "snapshotted")?;
        }
    }
    Ok(m.every_member_read())
}

/// Whether `e` is the peer's answer, or its lack of one, rather than an error of the ledger.
fn is_the_peers(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<crate::cluster::Error>().is_some())
}
