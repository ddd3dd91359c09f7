//! `ledger owners`: per peer, the pins of its latest complete snapshot by organisation, the unowned
//! pins, how many pins changed owner (from, to) over the history, and the pins whose owner was
//! removed or replaced.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::app::{print_json, print_table};
use crate::context::Context;
use crate::store::incident::{self, OrgChange, OwnerChanges, PeerOwners};

#[derive(Debug, Args)]
pub struct OwnersArgs {
    /// JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Owners {
    peers: Vec<PeerOwners>,
    /// Pins per (from, to) owner change over the history.
    changes: Vec<OwnerChanges>,
    /// The pins whose owner was removed or replaced.
    replaced: Vec<OrgChange>,
}

pub fn run(args: OwnersArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let o = Owners {
        peers: incident::owners(&store.conn)?,
        changes: incident::owner_changes(&store.conn)?,
        replaced: incident::owners_replaced(&store.conn)?,
    };
    if args.json {
        print_json(&o)?;
        return Ok(ExitCode::SUCCESS);
    }
    if o.peers.is_empty() {
        crate::out!("no complete snapshot yet: run `ledger snapshot` first");
        return Ok(ExitCode::SUCCESS);
    }
    // One row per organisation, one column per peer (its latest complete snapshot).
    let mut rows: Vec<Vec<String>> = Vec::new();
    for org in incident::org_names(&o.peers).into_iter().map(Some).chain([None]) {
        let mut row = vec![org.unwrap_or("(unowned)").to_string()];
        row.extend(o.peers.iter().map(|p| p.count(org).to_string()));
        rows.push(row);
    }
    let mut total = vec!["total".to_string()];
    total.extend(o.peers.iter().map(|p| p.total().to_string()));
    rows.push(total);
    let headers: Vec<String> = std::iter::once("org".to_string())
        .chain(
            o.peers
                .iter()
                .map(|p| format!("{} (snapshot {})", crate::app::short_peer(&p.peer), p.snapshot)),
        )
        .collect();
    print_table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows)?;
    print_changes(&o)?;
    Ok(ExitCode::SUCCESS)
}

/// The owner changes by (from, to), one pin counted once however many peers saw the change; then
/// the pins that lost or changed an owner (an unowned pin being tagged is the usual migration).
fn print_changes(o: &Owners) -> anyhow::Result<()> {
    if o.changes.is_empty() {
        return Ok(());
    }
    let none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    crate::out!("\nowner changes:");
    let rows: Vec<Vec<String>> =
        o.changes.iter().map(|c| vec![none(&c.from), none(&c.to), c.pins.to_string()]).collect();
    print_table(&["from", "to", "pins"], &rows)?;
    if o.replaced.is_empty() {
        return Ok(());
    }
    crate::out!("\npins whose owner was removed or replaced:");
    let rows: Vec<Vec<String>> = o
        .replaced
        .iter()
        .take(50)
        .map(|c| {
            let from = c.from.clone().unwrap_or_default();
            vec![c.cid.clone(), from, none(&c.to), c.snapshot.to_string(), c.at.clone()]
        })
        .collect();
    print_table(&["cid", "from", "to", "snapshot", "at"], &rows)?;
    if o.replaced.len() > 50 {
        crate::out!("… and {} more (--json lists them all)", o.replaced.len() - 50);
    }
    Ok(())
}
