//! `ledger`: an audit and migration ledger for IPFS Cluster pin metadata, and the multi-peer cluster
//! simulator its tests, benchmarks and demo run against. The binary (`src/main.rs`) is a thin shell
//! around [`cli`] and [`commands`].

pub mod app;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod context;
pub mod domain;
pub mod error;
pub mod ids;
pub mod ledger;
pub mod logging;
pub mod render;
pub mod report;
pub mod sim;
pub mod store;
