//! The one integration-test binary: every test drives the real `ledger` binary over real HTTP.

mod util;

mod sim_api;
mod thirdparty;
