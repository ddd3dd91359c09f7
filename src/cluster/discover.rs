//! `--discover`: the REST APIs of the cluster's members, found from what the cluster says of them.
//! The write peer lists the members (`GET /peers`) with their cluster (libp2p) addresses; a REST
//! API's own listen address is never among them (docs/cluster-api.md §4, "GET /peers"), so each
//! host of a member's addresses is tried at the REST port of the peer that was asked (or
//! `--rest-port`), with its scheme and the target's credentials, and a candidate is kept only when
//! its `GET /id` answers with that member's ID. Nothing is dialled that is not the host of one of a
//! member's addresses, and each candidate URL is asked once, whoever lists it.

use std::net::IpAddr;

use url::Url;

use super::{Client, Error, Member};

/// Where discovery found a member, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// One of the peers given is this member (its `GET /id` said so): nothing to add.
    Given(Url),
    /// Its REST API: `GET /id` there answered with its ID.
    At(Url),
    /// Its addresses hold no host to try: the listing peer could not ask it (it lists the ID and
    /// the error only), or it has only relayed or unspecified addresses.
    NoAddress,
    /// No candidate answered with its ID: what each one did.
    NotThere(Vec<(Url, Miss)>),
}

/// What a candidate did instead of answering with the member's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// `GET /id` answered with another peer's ID.
    OtherId(String),
    /// No answer that says an ID (refused, timed out, not the cluster's API).
    NoAnswer(String),
}

/// One member and where it was found.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub member: Member,
    pub found: Found,
}

/// The host of cluster address `addr` of peer `id` that a REST API could listen on: the address's
/// first part when it is `/ip4`, `/ip6`, `/dns`, `/dns4` or `/dns6`. Not an unspecified, multicast
/// or broadcast IP, not a relayed address (`/p2p-circuit`: its host is the relay's), not an
/// address of another peer (`/p2p/<other>`), and not a name a URL would read otherwise.
pub fn host_of(addr: &str, id: &str) -> Option<url::Host> {
    let parts: Vec<&str> = addr.split('/').collect();
    if parts.first() != Some(&"") || parts.contains(&"p2p-circuit") {
        return None;
    }
    let other_peer = parts.windows(2).any(|w| matches!(w, ["p2p" | "ipfs", p] if *p != id));
    if other_peer {
        return None;
    }
    let usable = |ip: IpAddr| {
        !ip.is_unspecified()
            && !ip.is_multicast()
            && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
    };
    match parts.get(1..3)? {
        ["ip4", h] => match h.parse::<std::net::Ipv4Addr>() {
            Ok(ip) if usable(ip.into()) => Some(url::Host::Ipv4(ip)),
            _ => None,
        },
        ["ip6", h] => match h.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if usable(ip.into()) => Some(url::Host::Ipv6(ip)),
            _ => None,
        },
        ["dns" | "dns4" | "dns6", h] => {
            let name_like = !h.is_empty()
                && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            name_like.then(|| url::Host::Domain(h.to_ascii_lowercase()))
        }
        _ => None,
    }
}

/// Whether `host` is this machine's loopback (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback<S: AsRef<str>>(host: &url::Host<S>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.as_ref().eq_ignore_ascii_case("localhost"),
    }
}

/// The URLs to try for `member`: each distinct host of its addresses at `scheme://host:port/`, in
/// the order of its addresses. A loopback host only with `loopback` (the peer asked is on
/// loopback): seen from elsewhere, a member's loopback address is this machine, never that member.
pub fn candidates(member: &Member, scheme: &str, port: u16, loopback: bool) -> Vec<Url> {
    let mut out: Vec<Url> = Vec::new();
    for a in &member.addresses {
        let Some(host) = host_of(a, &member.id) else { continue };
        if is_loopback(&host) && !loopback {
            continue;
        }
        let Ok(url) = Url::parse(&format!("{scheme}://{host}:{port}/")) else { continue };
        // The URL must name that host and port, nothing else.
        let same = url.host().map(|h| h.to_owned()) == Some(host.clone())
            && url.port_or_known_default() == Some(port);
        if same && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// Asks `write` for the members, then every candidate and every peer `given` once (all at the
/// same time) for its ID, through a client `probe` makes for it: a member that is one of the
/// peers given, under whatever URL, is not added again. `rest_port`: the port to try; `None` for
/// `write`'s.
pub async fn discover(
    write: &Client,
    given: &[Url],
    rest_port: Option<u16>,
    probe: impl Fn(&Url) -> anyhow::Result<Client>,
) -> Result<Vec<Discovered>, Error> {
    let members = write.peers().await?;
    let scheme = write.base().scheme().to_string();
    let port = rest_port.or(write.base().port_or_known_default()).unwrap_or(9094);
    let loopback = write.base().host().is_some_and(|h| is_loopback(&h));
    let per_member: Vec<Vec<Url>> =
        members.iter().map(|m| candidates(m, &scheme, port, loopback)).collect();
    let mut unique: Vec<Url> = Vec::new();
    for u in given.iter().chain(per_member.iter().flatten()) {
        if !unique.contains(u) {
            unique.push(u.clone());
        }
    }
    let answers = futures::future::join_all(unique.iter().map(|u| ask_id(u, &probe))).await;
    let answer_of = |u: &Url| unique.iter().position(|x| x == u).and_then(|i| answers.get(i));
    let found = members
        .into_iter()
        .zip(per_member)
        .map(|(member, urls)| {
            let is_member = |u: &&Url| matches!(answer_of(u), Some(Ok(id)) if *id == member.id);
            let found = match given.iter().find(is_member) {
                Some(u) => Found::Given(u.clone()),
                None => judge(&member, &urls, &answer_of),
            };
            Discovered { member, found }
        })
        .collect();
    Ok(found)
}

/// `GET /id` at `url`, once: the ID it answered, or why none.
async fn ask_id(
    url: &Url,
    probe: &impl Fn(&Url) -> anyhow::Result<Client>,
) -> Result<String, String> {
    let client = probe(url).map_err(|e| format!("{e:#}"))?;
    client.id().await.map(|me| me.id).map_err(|e| e.to_string())
}

/// Where `member` is, from the answers to its candidates `urls`.
fn judge<'a>(
    member: &Member,
    urls: &[Url],
    answer_of: &impl Fn(&Url) -> Option<&'a Result<String, String>>,
) -> Found {
    if urls.is_empty() {
        return Found::NoAddress;
    }
    let mut misses = Vec::new();
    for u in urls {
        match answer_of(u) {
            Some(Ok(id)) if *id == member.id => return Found::At(u.clone()),
            Some(Ok(id)) => misses.push((u.clone(), Miss::OtherId(id.clone()))),
            Some(Err(e)) => misses.push((u.clone(), Miss::NoAnswer(e.clone()))),
            None => misses.push((u.clone(), Miss::NoAnswer("not asked".into()))),
        }
    }
    Found::NotThere(misses)
}

/// Logs (at info) where each member was found, and why the others were not.
pub fn log(found: &[Discovered]) {
    for d in found {
        let who = format!("member {} ({})", d.member.id, d.member.peername);
        let who = crate::app::shown(&who).into_owned();
        match &d.found {
            Found::Given(url) => tracing::info!("{who} is the peer given at {url}"),
            Found::At(url) => tracing::info!("{who} discovered at {url}"),
            Found::NoAddress => {
                let error = d.member.error.as_deref().map(|e| format!(" (listed with: {e})"));
                let error = crate::app::shown(&error.unwrap_or_default()).into_owned();
                tracing::info!("{who} not discovered: no address to try{error}")
            }
            Found::NotThere(misses) => {
                let why: Vec<String> = misses
                    .iter()
                    .map(|(u, m)| match m {
                        Miss::OtherId(other) => format!("{u}: /id answered another ID, {other}"),
                        Miss::NoAnswer(e) => format!("{u}: no answer ({e})"),
                    })
                    .collect();
                let why = crate::app::shown(&why.join("; ")).into_owned();
                tracing::info!("{who} not discovered: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWAbC";

    fn member(addrs: &[&str]) -> Member {
        Member {
            id: ID.into(),
            peername: "p".into(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            error: None,
        }
    }

    #[test]
    fn hosts_come_only_from_usable_addresses() {
        let h = |a: &str| host_of(a, ID).map(|h| h.to_string());
        assert_eq!(h("/ip4/10.0.0.2/tcp/9096/p2p/12D3KooWAbC").as_deref(), Some("10.0.0.2"));
        assert_eq!(h("/ip6/::1/tcp/9096").as_deref(), Some("[::1]"));
        assert_eq!(h("/dns4/Peer-1.example/tcp/9096").as_deref(), Some("peer-1.example"));
        for bad in [
            "/ip4/0.0.0.0/tcp/9096",
            "/ip6/::/tcp/9096",
            "/ip4/224.0.0.1/tcp/9096",
            "/ip4/255.255.255.255/tcp/9096",
            "/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWRelay/p2p-circuit/p2p/12D3KooWAbC",
            "/ip4/10.0.0.2/tcp/9096/p2p/12D3KooWOther",
            "/ip4/999.0.0.1/tcp/9096",
            "/dns/a@b/tcp/9096",
            "/dns/a:1/tcp/9096",
            "/unix/tmp/sock",
            "ip4/10.0.0.2/tcp/9096",
            "",
            "/",
        ] {
            assert_eq!(h(bad), None, "{bad}");
        }
    }

    #[test]
    fn candidates_are_each_host_once_at_the_rest_port() {
        let m = member(&[
            "/ip4/127.0.0.2/tcp/9096/p2p/12D3KooWAbC",
            "/ip4/127.0.0.2/udp/9096/quic-v1/p2p/12D3KooWAbC",
            "/ip4/10.0.0.2/tcp/9096/p2p/12D3KooWAbC",
            "/ip4/0.0.0.0/tcp/9096",
        ]);
        let c = |scheme, port, lo| -> Vec<String> {
            candidates(&m, scheme, port, lo).iter().map(Url::to_string).collect()
        };
        assert_eq!(c("http", 9094, true), ["http://127.0.0.2:9094/", "http://10.0.0.2:9094/"]);
        assert_eq!(c("https", 443, true), ["https://127.0.0.2/", "https://10.0.0.2/"]);
        // Asked from elsewhere, a member's loopback address is this machine: not tried.
        assert_eq!(c("http", 9094, false), ["http://10.0.0.2:9094/"]);
        let lo = member(&["/ip6/::1/tcp/9096", "/dns4/localhost/tcp/9096"]);
        assert!(candidates(&lo, "http", 9094, false).is_empty());
        assert_eq!(candidates(&lo, "http", 9094, true).len(), 2);
        assert!(candidates(&member(&[]), "http", 9094, true).is_empty());
    }

    #[test]
    fn a_member_is_found_only_where_its_id_answers() {
        let m = member(&["/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1", "/ip4/10.0.0.4/tcp/1"]);
        let urls = candidates(&m, "http", 9094, true);
        let answers: Vec<Result<String, String>> =
            vec![Ok("12D3KooWOther".into()), Err("refused".into()), Ok(ID.into())];
        let answer_of = |u: &Url| urls.iter().position(|x| x == u).and_then(|i| answers.get(i));
        assert_eq!(judge(&m, &urls, &answer_of), Found::At(urls[2].clone()));
        let answer_of = |u: &Url| urls.iter().position(|x| x == u).and_then(|i| answers.get(i + 5));
        assert!(matches!(judge(&m, &urls, &answer_of), Found::NotThere(v) if v.len() == 3));
        assert_eq!(judge(&m, &[], &answer_of), Found::NoAddress);
    }
}
