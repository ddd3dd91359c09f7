//! The `ledger` binary: parse arguments, set up logging, run the command, map the outcome to an exit
//! code (0 ok, 1 needs attention, 2 error). A broken pipe on stdout ends the output, not the
//! command: its exit code is the one it means.

use std::process::ExitCode;

use clap::Parser;

// The snapshot pipeline allocates on one thread and frees on another; glibc's allocator serialises
// that on an arena lock, mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ledger::cli::Cli::parse();
    ledger::logging::init(cli.global.verbose, cli.global.quiet);
    match ledger::commands::run(cli) {
        Ok(code) => code,
        Err(err) => ledger::error::report(&err),
    }
}
