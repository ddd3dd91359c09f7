//! `ledger db status`: the schema migrations this binary carries and which the database has; exit 1
//! when the database has a migration history every other command refuses (a checksum mismatch).

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
    let path = ctx.db_path();
    // No ledger there: every migration is pending, and nothing is created to say so.
    let exists = path.exists();
    let at = if exists { path } else { std::path::Path::new(":memory:") };
    let store = crate::store::Store::open_unmigrated(at)?;
    let status = store.migration_status()?;
    if args.json {
        print_json(
            &serde_json::json!({ "database": path, "exists": exists, "migrations": status }),
        )?;
    } else {
        let note =
            if exists { "" } else { " (none yet: the first command that writes creates it)" };
        crate::out!("database: {}{note}", path.display());
        let rows: Vec<Vec<String>> = status
            .iter()
            .map(|m| {
                let state = match (&m.applied_on, m.checksum_mismatch) {
                    (Some(_), true) => "checksum mismatch",
                    (Some(_), false) => "applied",
                    (None, _) => "pending",
                };
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
    // What every other command would refuse the database for, in the words they use: exit 1.
    if let Err(e) = crate::store::check_history(&store.conn, path) {
        eprintln!("ledger: {e:#}");
        return Ok(ExitCode::from(crate::error::ATTENTION));
    }
    Ok(ExitCode::SUCCESS)
}
