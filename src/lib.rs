//! `ledger`: an audit and migration ledger for IPFS Cluster pin metadata. The binary (`src/main.rs`)
//! is a thin shell around [`cli`] and [`commands`]. The multi-peer cluster simulator its tests,
//! benchmarks and demo run against is the `ledger-sim` crate (`crates/ledger-sim`); the identifiers
//! the two share are the `ledger-ids` crate, re-exported here as [`ids`].

pub mod app;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod context;
pub mod domain;
pub mod error;
pub mod ledger;
pub mod logging;
pub mod pin;
pub mod render;
pub mod report;
pub mod store;

pub use ledger_ids as ids;
