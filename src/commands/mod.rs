//! One file per command, each with its arguments and its `run`. [`run`] is the one dispatch; commands
//! that need no database or cluster never open them.

pub mod add;
pub mod config;
pub mod convergence;
pub mod db;
pub mod demo;
pub mod diff;
pub mod drift;
pub mod drift_status;
pub mod export;
pub mod history;
pub mod lost;
pub mod owners;
pub mod repin;
pub mod report;
pub mod restore;
pub mod shell;
pub mod sim;
pub mod snapshot;
pub mod snapshots;
pub mod tag;
pub mod watch;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::context::Context;

/// Commands that only read the ledger: they never create one. On a path where there is none they
/// say so when they open it, after their own arguments are checked (exit 2); `db status` lists
/// every migration as pending.
fn reads_only(c: &Command) -> bool {
    matches!(
        c,
        Command::Snapshots(_)
            | Command::Diff(_)
            | Command::Drift(_)
            | Command::History(_)
            | Command::Convergence(_)
            | Command::Lost(_)
            | Command::Owners(_)
            | Command::Export(_)
            | Command::Report(_)
    )
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    crate::app::open_existing_only(reads_only(&cli.command));
    let ctx = &Context::new(g.ledger.clone(), g.quiet);
    match cli.command {
        Command::Snapshot(a) => snapshot::run(a, ctx),
        Command::Snapshots(a) => snapshots::run(a, ctx),
        Command::Diff(a) => diff::run(a, ctx),
        Command::Drift(a) if a.status => {
            let listing =
                drift_status::Listing { older_than: a.older_than, json: a.json, csv: a.csv };
            drift_status::run(ctx, &listing)
        }
        Command::Drift(a) => drift::run(a, ctx),
        Command::History(a) => history::run(a, ctx),
        Command::Tag(a) => tag::run(a, ctx),
        Command::Add(a) => add::run(a, ctx),
        Command::Convergence(a) => convergence::run(a, ctx),
        Command::Repin(a) => repin::run(a, ctx),
        Command::Lost(a) => lost::run(a, ctx),
        Command::Restore(a) => restore::run(a, ctx),
        Command::Owners(a) => owners::run(a, ctx),
        Command::Watch(a) => watch::run(a, ctx),
        Command::Export(a) => export::run(a, ctx),
        Command::Report(a) => report::run(a, ctx),
        Command::Config(c) => config::run(c, ctx),
        Command::Db(c) => db::run(c, ctx),
        Command::Sim(c) => sim::run(*c),
        Command::Demo(a) => demo::run(a, ctx),
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(a),
    }
}
