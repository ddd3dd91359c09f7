//! The command-line tree (clap derive). Each command's arguments live with the command in
//! `src/commands/`; this file only assembles them. Help text is the doc comments.

use clap::{Args, Parser, Subcommand};

/// An audit and migration ledger for IPFS Cluster pin metadata.
#[derive(Debug, Parser)]
#[command(name = "ledger", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v, -vv). `LEDGER_LOG` (e.g. `LEDGER_LOG=debug`) overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub ledger: crate::app::LedgerArgs,
}

/// Which peers a snapshot reads (`snapshot`, `watch`).
#[derive(Debug, Args, Clone)]
pub struct Peers {
    /// Snapshot this peer (URL or multiaddr; repeatable). Default: the cluster's first peer.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
    /// Snapshot every peer of the cluster (those named by --cluster or the profile).
    #[arg(long, conflicts_with = "peer")]
    pub all_peers: bool,
}

impl Peers {
    /// The peers' URLs.
    pub fn urls(&self, ctx: &crate::context::Context) -> anyhow::Result<Vec<url::Url>> {
        Ok(if !self.peer.is_empty() {
            self.peer
                .iter()
                .map(|p| crate::cluster::config::parse_address(p).map(|(u, _)| u))
                .collect::<anyhow::Result<_>>()?
        } else if self.all_peers {
            ctx.target()?.peers.clone()
        } else {
            ctx.target()?.peers[..1].to_vec()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record one pass of the pin set of a peer (or of every peer) into the ledger.
    Snapshot(crate::commands::snapshot::SnapshotArgs),
    /// List the snapshots in the ledger.
    Snapshots(crate::commands::snapshots::SnapshotsArgs),
    /// What changed between two snapshots: new, vanished and changed pins, field by field.
    Diff(crate::commands::diff::DiffArgs),
    /// One pin's versions across snapshots, per peer.
    History(crate::commands::history::HistoryArgs),
    /// Tag every unowned pin with org=ORG, pass after pass, until every peer agrees.
    Tag(crate::commands::tag::TagArgs),
    /// How a tag run converged, per pass and per peer, from stored history.
    Convergence(crate::commands::convergence::ConvergenceArgs),
    /// One safe re-pin that keeps every other option of the pin, on the record.
    Repin(crate::commands::repin::RepinArgs),
    /// A tag run's report: an HTML page with the convergence chart and tables, and CSV files.
    Report(crate::commands::report::ReportArgs),
    /// Pins that lost metadata, name, allocations, replication or expiry, when, and who did it.
    Lost(crate::commands::lost::LostArgs),
    /// Put back the values pins had in a snapshot and have since lost (safe re-pins, on the record).
    Restore(crate::commands::restore::RestoreArgs),
    /// Pins per organisation and peer, unowned pins, and owner changes.
    Owners(crate::commands::owners::OwnersArgs),
    /// Take snapshots on a schedule and report each new loss as it appears.
    Watch(crate::commands::watch::WatchArgs),
    /// Write a table of the ledger as CSV.
    Export(crate::commands::export::ExportArgs),
    /// The ledger database itself: schema migrations.
    #[command(subcommand)]
    Db(crate::commands::db::DbCommand),
    /// The built-in IPFS Cluster simulator (multi-peer, CRDT, real REST API).
    #[command(subcommand)]
    Sim(Box<crate::commands::sim::SimCommand>),
    /// The whole story on a simulated cluster in this process: snapshot, tag, convergence, report.
    Demo(crate::commands::demo::DemoArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sim_serve_parses() {
        let cli = Cli::try_parse_from(["ledger", "sim", "serve", "--peers", "3", "--lag", "0..2s"])
            .unwrap();
        assert!(matches!(cli.command, Command::Sim(_)));
        assert!(Cli::try_parse_from(["ledger", "sim", "serve", "--lag", "2s..1s"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "sim", "serve", "--drop", "1.5"]).is_err());
    }

    #[test]
    fn report_and_demo_parse() {
        let cli = Cli::try_parse_from(["ledger", "report", "3", "--out", "r"]).unwrap();
        let Command::Report(a) = cli.command else { panic!("not report") };
        assert_eq!((a.run, a.out.to_str()), (Some(3), Some("r")));
        let cli = Cli::try_parse_from(["ledger", "demo"]).unwrap();
        let Command::Demo(a) = cli.command else { panic!("not demo") };
        assert_eq!((a.pins, a.owned, a.peers, a.rate), (3512, 40, 5, 500.0));
        assert_eq!(a.out.to_str(), Some("reports/demo"));
        assert!(Cli::try_parse_from(["ledger", "report", "x"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "demo", "--lag", "2s..1s"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "demo", "--rate", "-3"]).is_err());
    }
}
