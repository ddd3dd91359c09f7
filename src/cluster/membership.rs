//! Which members of the cluster a command read: the members a peer lists (`GET /peers`) against the
//! IDs the peers the command was given answered with. Only when every member was read may a
//! command say "every peer"; otherwise it names the members it did not read and says how to give
//! their addresses.

use serde::{Deserialize, Serialize};

use crate::cluster::{Client, Member};

/// The members a command read and those it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// How many members the cluster has, as the listing peer says (`None`: no peer could list them).
    pub members: Option<usize>,
    /// Members the command read (their IDs), by peer name then ID.
    pub read: Vec<String>,
    /// Members no peer the command read is: never read, so never verified. By peer name, then ID.
    pub not_read: Vec<Member>,
    /// Peers the command was given that never said who they are (down, or refusing).
    #[serde(default)]
    pub unanswered: usize,
}

impl Membership {
    /// Asks the first of `listing` that answers for the cluster's members and sets them, with the
    /// `known` peers it does not list, against `read`: the ID each peer the command read said it
    /// has (`None`: it never said).
    pub async fn check(listing: &[Client], read: &[Option<String>], known: &[Known]) -> Membership {
        let mut members = None;
        for c in listing {
            match c.peers().await {
                Ok(mut m) => {
                    let unlisted: Vec<Member> = known
                        .iter()
                        .filter(|k| !m.iter().any(|x| x.id == k.id))
                        .map(Known::unlisted)
                        .collect();
                    m.extend(unlisted);
                    members = Some(m);
                    break;
                }
                Err(e) => tracing::warn!("cannot list the cluster's members at {}: {e}", c.base()),
            }
        }
        if members.is_none() {
            tracing::warn!(
                "no peer could list the cluster's members: only the peers given are verified, \
                 and whether they are all the cluster's is not known"
            );
        }
        Membership::of(members, read)
    }

    /// `members` (as a peer lists them, `None`: not known) set against the IDs read.
    pub fn of(members: Option<Vec<Member>>, read: &[Option<String>]) -> Membership {
        let unanswered = read.iter().filter(|r| r.is_none()).count();
        let Some(mut members) = members else {
            return Membership {
                members: None,
                read: Vec::new(),
                not_read: Vec::new(),
                unanswered,
            };
        };
        let count = members.len();
        // A peer lists the members in no fixed order: by name, then ID, they read the same twice.
        members.sort_by(|a, b| (&a.peername, &a.id).cmp(&(&b.peername, &b.id)));
        let (was_read, not_read): (Vec<Member>, Vec<Member>) =
            members.into_iter().partition(|m| read.iter().flatten().any(|id| *id == m.id));
        Membership {
            members: Some(count),
            read: was_read.into_iter().map(|m| m.id).collect(),
            not_read,
            unanswered,
        }
    }

    /// Whether every member of the cluster was read: only then may a command say "every peer".
    pub fn every_member_read(&self) -> bool {
        self.members.is_some() && self.not_read.is_empty()
    }

    /// What a command says of the members it read, when it may not say "every peer": "verified 1 of
    /// 4 cluster peers; not read: 12D3Ko…x (no REST address given)", or that the members are not
    /// known. `None` when every member was read.
    pub fn shortfall(&self, verb: &str) -> Option<String> {
        let Some(members) = self.members else {
            return Some(format!(
                "the peers asked could not list the cluster's members (GET /peers): only the peers \
                 given were {verb}, and whether they are all the cluster's is not known"
            ));
        };
        if self.not_read.is_empty() {
            return None;
        }
        let why = if self.unanswered > 0 {
            "not answering, or no REST address given"
        } else {
            "no REST address given"
        };
        let names: Vec<String> = self
            .not_read
            .iter()
            .map(|m| {
                let name = if m.peername.is_empty() {
                    String::new()
                } else {
                    format!(" {}", crate::app::shown(&m.peername))
                };
                let why = m.error.as_deref().map_or(why.into(), crate::app::shown);
                format!("{}{name} ({why})", crate::app::short_peer(&m.id))
            })
            .collect();
        Some(format!(
            "{verb} {} of {members} cluster peers; not read: {}",
            members - self.not_read.len(),
            names.join(", ")
        ))
    }
}

/// A peer the ledger snapshotted lately under the cluster's name: a member, whether or not a peer
/// lists it now. (A real cluster stops listing a stopped peer in `GET /peers` within seconds, so
/// the listing alone would let a command that never read it say "every peer".)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: String,
    /// When its latest complete snapshot began.
    pub last_seen: String,
}

impl Known {
    fn unlisted(&self) -> Member {
        Member {
            id: self.id.clone(),
            peername: String::new(),
            addresses: Vec::new(),
            error: Some(format!(
                "not listed by the cluster now; snapshotted complete at {}",
                self.last_seen
            )),
        }
    }
}

/// How to give the members' addresses, said after a [`Membership::shortfall`].
pub const HOW_TO_NAME_THEM: &str = "name each member's REST API with --cluster (comma-separated, the \
                                    write peer first) or in the profile's peers, or let --discover \
                                    find them";

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, name: &str) -> Member {
        Member { id: id.into(), peername: name.into(), addresses: Vec::new(), error: None }
    }

    #[test]
    fn only_a_cluster_whose_every_member_was_read_is_every_peer() {
        let all = vec![member("c", "p2"), member("a", "p0"), member("b", "p1")];
        let m = Membership::of(Some(all.clone()), &[Some("a".into()), Some("b".into())]);
        assert_eq!(
            (m.members, m.read.clone(), m.not_read.clone()),
            (Some(3), vec!["a".to_string(), "b".to_string()], vec![member("c", "p2")])
        );
        assert!(!m.every_member_read());
        let said = m.shortfall("verified").unwrap();
        assert!(said.starts_with("verified 2 of 3 cluster peers; not read: "), "{said}");
        assert!(said.ends_with(" p2 (no REST address given)"), "{said}");

        let m = Membership::of(Some(all.clone()), &[Some("a".into()), None]);
        assert!(m.shortfall("read").unwrap().contains("(not answering, or no REST address given)"));

        let every = [Some("c".into()), Some("a".into()), Some("b".into())];
        let gone = Known { id: "d".into(), last_seen: "2026-12-01T10:00:00.000Z".into() };
        let said = Membership::of(Some(vec![all[0].clone(), gone.unlisted()]), &every[..1]);
        assert!(
            said.shortfall("read").unwrap().ends_with(
                "d (not listed by the cluster now; snapshotted complete at 2026-12-01T10:00:00.000Z)"
            ),
            "{said:?}"
        );
        let m = Membership::of(Some(all), &every);
        assert!(m.every_member_read());
        assert_eq!(m.shortfall("verified"), None);

        let unknown = Membership::of(None, &every);
        assert!(!unknown.every_member_read());
        assert!(unknown.shortfall("verified").unwrap().contains("not known"));
    }
}
