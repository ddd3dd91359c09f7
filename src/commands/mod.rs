//! One file per command, each with its arguments and its `run`. [`run`] is the one dispatch.

pub mod sim;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sim(cmd) => sim::run(cmd),
    }
}
