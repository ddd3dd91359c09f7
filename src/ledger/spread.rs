//! Whether the writes of a `repin` or a `restore`, made through the write peer, reached the other
//! peers: each other peer given is read, pin by pin, until it shows every written pin as the write
//! peer now does (the same pin, digest for digest) or `--timeout` has passed since the check began;
//! and which members of the cluster (`GET /peers`) were read at all. Only a write seen on every
//! member is said to be everywhere.

use std::time::Duration;

use futures::StreamExt as _;
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::{CanonicalPin, Client, Membership};
use crate::context::Context;
use crate::ledger::members;
use crate::ledger::repin::read_pin;

/// What one peer shows of the written pins.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSpread {
    pub url: String,
    /// Its ID, as its `/id` says (`None`: it did not say).
    pub id: Option<String>,
    /// Written pins it shows as the write peer does.
    pub shows: usize,
    /// Written pins it did not show so before the deadline, by CID.
    pub lacking: Vec<String>,
    /// Why it could not be read, when it could not.
    pub error: Option<String>,
}

/// Which peers show the written pins, the write peer first, and which members were read.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub peers: Vec<PeerSpread>,
    #[serde(flatten)]
    pub membership: Membership,
}

impl Spread {
    /// Whether every member of the cluster was read and shows every written pin.
    pub fn everywhere(&self) -> bool {
        self.membership.every_member_read()
            && self.peers.iter().all(|p| p.error.is_none() && p.lacking.is_empty())
    }

    /// The peers read that do not show every written pin (or could not be read).
    pub fn short(&self) -> impl Iterator<Item = &PeerSpread> {
        self.peers.iter().filter(|p| p.error.is_some() || !p.lacking.is_empty())
    }
}

/// Reads `cids` on the write peer (`clients[0]`), then on each other peer until it shows each as
/// the write peer does, for at most `timeout` in all; `concurrency` reads at a time per peer.
pub async fn check(
    ctx: &Context,
    clients: &[Client],
    cids: &[String],
    (timeout, concurrency): (Duration, usize),
) -> anyhow::Result<Spread> {
    let deadline = Instant::now() + timeout;
    let write = &clients[0];
    let wanted: Vec<(String, Option<[u8; 16]>)> = futures::stream::iter(cids)
        .map(|cid| async move {
            let digest = read_pin(write, cid).await.ok().flatten().map(|p| p.digest());
            (cid.clone(), digest)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut peers = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        let id = match c.id().await {
            Ok(me) => Some(me.id),
            Err(e) => {
                peers.push(PeerSpread {
                    url: c.base().to_string(),
                    id: None,
                    shows: 0,
                    lacking: cids.to_vec(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let lacking = if i == 0 {
            wanted.iter().filter(|(_, d)| d.is_none()).map(|(c, _)| c.clone()).collect()
        } else {
            lacking_on(c, &wanted, deadline, concurrency).await
        };
        let shows = cids.len() - lacking.len();
        peers.push(PeerSpread { url: c.base().to_string(), id, shows, lacking, error: None });
    }
    let read: Vec<Option<String>> = peers.iter().map(|p| p.id.clone()).collect();
    let membership = members::check(ctx, clients, &read).await?;
    Ok(Spread { peers, membership })
}

/// The pins of `wanted` that `client`'s peer does not show with the wanted digest by `deadline`.
async fn lacking_on(
    client: &Client,
    wanted: &[(String, Option<[u8; 16]>)],
    deadline: Instant,
    concurrency: usize,
) -> Vec<String> {
    futures::stream::iter(wanted)
        .map(|(cid, digest)| async move {
            let shown = match digest {
                Some(d) => shows(client, cid, *d, deadline).await,
                None => false,
            };
            (!shown).then(|| cid.clone())
        })
        .buffered(concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Whether the peer shows the pin with `digest` by `deadline`.
async fn shows(client: &Client, cid: &str, digest: [u8; 16], deadline: Instant) -> bool {
    read_until(client, cid, deadline, |pin| pin.digest() == digest).await.is_some()
}

/// The pin `cid` as `client`'s peer shows it once `wanted` holds of it: read again (50 ms later,
/// then twice as long each time, at most 1 s apart) until it does, or `None` by `deadline`.
pub async fn read_until(
    client: &Client,
    cid: &str,
    deadline: Instant,
    wanted: impl Fn(&CanonicalPin) -> bool,
) -> Option<CanonicalPin> {
    let mut pause = Duration::from_millis(50);
    loop {
        if let Ok(Some(pin)) = read_pin(client, cid).await
            && wanted(&pin)
        {
            return Some(pin);
        }
        if Instant::now() + pause > deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
