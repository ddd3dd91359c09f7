//! `ledger db status`: the schema migrations this binary carries and which the database has.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::app::{opt, print_json, print_table};
use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// List the schema migrations: applied ones with their date, and pending ones.
    Status(StatusArgs),
    /// Apply pending migrations (every other command does this when it opens the ledger).
    Migrate,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: DbCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        DbCommand::Status(a) => a,
        DbCommand::Migrate => {
            let store = ctx.store()?;
            let applied = store.migration_status()?.len();
            crate::out!("{}: schema up to date ({applied} migrations)", store.path.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let store = crate::store::Store::open_unmigrated(ctx.db_path())?;
    let status = store.migration_status()?;
    if args.json {
        print_json(&serde_json::json!({ "database": store.path, "migrations": status }))?;
    } else {
        crate::out!("database: {}", store.path.display());
        let rows: Vec<Vec<String>> = status
            .iter()
            .map(|m| {
                let state = if m.applied_on.is_some() { "applied" } else { "pending" };
                vec![
                    format!("V{}", m.version),
                    m.name.clone(),
                    state.to_string(),
                    opt(&m.applied_on),
                ]
            })
            .collect();
        print_table(&["version", "name", "state", "applied_on"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
