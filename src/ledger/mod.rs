//! The use cases as plain logic over the store and the cluster client: taking a snapshot (diffing a
//! stream against the open intervals of its series).

pub mod add;
pub mod bulk;
pub mod convergence;
pub mod diff;
pub mod drift;
pub mod lost;
pub mod members;
pub mod metrics;
pub mod migration;
pub mod repin;
pub mod restore;
pub mod run;
pub mod snapshot;
pub mod spread;
pub mod status;
pub mod tag;
pub mod watch;
