//! The one integration-test binary: every test drives the real `ledger` binary over real HTTP.

mod util;

mod bulk_repin;
mod ctl;
mod demo;
mod differential;
mod discover;
mod drift;
mod export;
mod faults;
mod faults_real;
mod field_report;
mod fuzz;
mod hostile_data;
mod hostile_user;
mod identity;
mod layout;
mod lost;
mod membership;
mod realcluster;
mod repin;
mod report;
mod robust;
mod run_lifecycle;
mod sim_add;
mod sim_api;
mod sim_auth;
mod sim_crdt;
mod sim_faults;
mod sim_process;
mod sim_seed;
mod snapshot;
mod soak;
mod status;
mod tag;
mod thirdparty;
