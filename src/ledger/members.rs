//! The cluster's members as a command can know them: those a peer lists (`GET /peers`), and the
//! peers the ledger snapshotted complete under the cluster's name within [`REMEMBERED`]. A real
//! cluster stops listing a stopped peer within seconds (its `ping` metric lapses), in `GET /peers`
//! and in `/id`'s `cluster_peers` alike; the ledger's own history is then the only witness that it
//! is a member. A peer removed from the cluster for good stops counting [`REMEMBERED`] after its
//! last complete snapshot.

use std::time::Duration;

use crate::cluster::membership::Known;
use crate::cluster::{Client, Membership};
use crate::context::Context;

/// How long a peer the cluster no longer lists counts as a member after its last complete snapshot.
pub const REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// The members `listing`'s first answering peer lists, with those the ledger knows, against the
/// IDs `read` (see [`Membership::check`]).
pub async fn check(
    ctx: &Context,
    listing: &[Client],
    read: &[Option<String>],
) -> anyhow::Result<Membership> {
    let known = known(ctx)?;
    Ok(Membership::check(listing, read, &known).await)
}

/// The peers of the cluster's series whose latest complete snapshot began within [`REMEMBERED`].
fn known(ctx: &Context) -> anyhow::Result<Vec<Known>> {
    let store = ctx.store()?;
    let urls: Vec<String> = ctx.target()?.peers.iter().map(url::Url::to_string).collect();
    let series = crate::store::drift::cluster_series(&store.conn, ctx.cluster_name()?, &urls)?;
    let since = ctx.clock.now() - chrono::Duration::from_std(REMEMBERED)?;
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(series
        .into_iter()
        .filter_map(|s| {
            let (_, started, _) = s.complete?;
            (started >= since).then_some(Known { id: s.peer, last_seen: started })
        })
        .collect())
}
