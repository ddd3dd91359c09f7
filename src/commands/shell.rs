//! `ledger completions SHELL` and `ledger man [COMMAND]`: made from the command-line tree itself
//! (clap_complete, clap_mangen), so they name every command and flag this binary has.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory};

use crate::cli::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  ledger completions bash > ~/.local/share/bash-completion/completions/ledger
  ledger completions zsh > ~/.zfunc/_ledger      (with fpath+=~/.zfunc before compinit)
  ledger completions fish > ~/.config/fish/completions/ledger.fish")]
pub struct CompletionsArgs {
    /// The shell to write the completion script for (on stdout).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for one shell on stdout.
pub fn completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "ledger", &mut script);
    crate::app::stdout().write_all(&script).context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  ledger man | man -l -
  ledger man tag | man -l -
  ledger man db migrate > ledger-db-migrate.1
  ledger man --out-dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// The command whose page to write (`tag`, `db migrate`, …); none: ledger's own page.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Write every page (ledger.1, ledger-snapshot.1, ledger-db-migrate.1, …) into DIR instead of
    /// one on stdout.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

/// Writes one man page (roff) on stdout, or every page into a directory.
pub fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = without_help(Cli::command());
    cmd.build();
    if let Some(dir) = &a.out_dir {
        let written = write_pages(&cmd, dir)
            .with_context(|| format!("writing the man pages into {}", dir.display()))?;
        eprintln!("ledger: {written} man pages written into {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut page = &cmd;
    for (depth, name) in a.command.iter().enumerate() {
        page = page.find_subcommand(name).ok_or_else(|| {
            let under = a.command[..depth].iter().fold("ledger".to_string(), |s, c| s + " " + c);
            let known: Vec<_> = page.get_subcommands().map(|c| c.get_name()).collect();
            let known = if known.is_empty() {
                String::new()
            } else {
                format!("; it has: {}", known.join(", "))
            };
            anyhow::anyhow!("`{under}` has no command `{name}`{known}")
        })?;
    }
    let mut roff = Vec::new();
    man_page(page).render(&mut roff).context("rendering the man page")?;
    crate::app::stdout().write_all(&roff).context("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// The tree without clap's `help` subcommands, which need no pages of their own (`--help` stays).
fn without_help(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true).mut_subcommands(without_help)
}

/// One page, its source line naming ledger and its version whichever command it is about.
fn man_page(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone()).source(concat!("ledger ", env!("CARGO_PKG_VERSION")))
}

/// The page of `cmd` and of each of its commands (not the hidden ones), as `ledger-tag.1` and so
/// on; how many were written.
fn write_pages(cmd: &clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
    let mut written = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub, dir)?;
    }
    man_page(cmd).generate_to(dir)?;
    Ok(written + 1)
}
