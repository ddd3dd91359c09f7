//! Talking to an IPFS Cluster's REST API: where it is and how to authenticate ([`config`]), the HTTP
//! client with retries and the trailer-aware `/allocations` stream ([`client`]), and the pin types (re-exported from [`crate::pin`]).

pub mod add;
pub mod client;
pub mod config;
pub mod discover;
pub mod membership;
pub mod repin;

pub use crate::pin::CanonicalPin;
pub use client::{AllocStream, Client, Error, Member, Settings, StreamOutcome};
pub use config::{Auth, Target};
pub use membership::Membership;
