//! The command-line tree (clap derive). Each command's arguments live with the command in
//! `src/commands/`; this file only assembles them. Help text is the doc comments.

#![warn(clippy::indexing_slicing)]

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
    /// Snapshot every peer of the cluster (those named by --cluster or the profile, and those
    /// --discover finds).
    #[arg(long, conflicts_with = "peer")]
    pub all_peers: bool,
}

impl Peers {
    /// The peers' URLs.
    pub fn urls(&self, ctx: &crate::context::Context) -> anyhow::Result<Vec<url::Url>> {
        use anyhow::Context as _;
        Ok(if !self.peer.is_empty() {
            self.peer
                .iter()
                .map(|p| crate::cluster::config::parse_address(p).map(|(u, _)| u).context("--peer"))
                .collect::<anyhow::Result<_>>()?
        } else if self.all_peers {
            ctx.all_peers()?
        } else {
            ctx.target()?.peers.iter().take(1).cloned().collect()
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
    /// Upload files and directories through the cluster's /add with the org tag; each path pinned
    /// with every option given, read back from every peer, on the record.
    Add(crate::commands::add::AddArgs),
    /// How a tag run or a bulk re-pin converged, per pass and per peer, from stored history.
    Convergence(crate::commands::convergence::ConvergenceArgs),
    /// Safe re-pins that keep every other option: one pin (CID), or a set (--only, --org, --all) in
    /// passes verified on every peer, on the record.
    Repin(crate::commands::repin::RepinArgs),
    /// A tag run's (or bulk re-pin's) report: an HTML page with the convergence chart and tables, and CSV files.
    Report(crate::commands::report::ReportArgs),
    /// Pins that lost metadata, name, allocations, replication or expiry, when, and who did it.
    Lost(crate::commands::lost::LostArgs),
    /// Put back the values pins had in a snapshot and have since lost (safe re-pins, on the record).
    Restore(crate::commands::restore::RestoreArgs),
    /// Pins on which the peers' replicas disagree, since when, who holds what, and whether it heals.
    ///
    /// Reads the ledger only. A pin disagrees when the compared peers' latest complete snapshots
    /// do not all hold the same version of it (the stored form: name, metadata, allocations,
    /// replication, expiry, timestamp …), or some hold it and others lack it. The peers compared
    /// are the cluster's (--cluster or the profile) that the ledger holds snapshots of, less those
    /// whose latest snapshot is incomplete or whose latest complete snapshot started more than
    /// --stale-after before the newest peer's (each named, with why).
    ///
    /// Since: the view at snapshot K holds each compared peer's latest complete snapshot up to K;
    /// a disagreement lasts since the earliest snapshot K from which the pin disagrees in every
    /// view up to the current one, without a break. Its age is now minus that snapshot's start.
    ///
    /// A round is a run of consecutive complete snapshots in which no peer appears twice (one
    /// `snapshot --all-peers`, one `watch` round). The disagreeing pins are counted at the end of
    /// each of the last --rounds rounds; the trend compares the two latest: healing (fewer),
    /// growing (more), steady (as many), agreed (none), unknown (one round).
    ///
    /// Exit 0 when no disagreement is older than --older-than, 1 when one is, 2 on bad input.
    ///
    /// --status lists instead the pins stuck in pin_error, pin_queued or pinning on a peer, from
    /// the status readings of `ledger snapshot --status`: per peer, with since when (the first
    /// reading that saw the status), the status and the tracker's error text; --older-than is
    /// then measured from that reading to the peer's latest, which still sees it. Exit 1 when any
    /// is listed, 0 when none, 2 on bad input or a ledger with no status reading.
    Drift(crate::commands::drift::DriftArgs),
    /// Pins per organisation and peer, unowned pins, and owner changes.
    Owners(crate::commands::owners::OwnersArgs),
    /// Take snapshots on a schedule and report each new loss as it appears.
    Watch(crate::commands::watch::WatchArgs),
    /// Write a table of the ledger as CSV.
    Export(crate::commands::export::ExportArgs),
    /// The configuration: `config check` prints the cluster every other command would use.
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// The ledger database itself: schema migrations.
    #[command(subcommand)]
    Db(crate::commands::db::DbCommand),
    /// The built-in IPFS Cluster simulator (multi-peer, CRDT, real REST API).
    #[command(
        subcommand,
        arg(crate::commands::sim::not_for_sim("db")),
        arg(crate::commands::sim::not_for_sim("cluster")),
        arg(crate::commands::sim::not_for_sim("profile")),
        arg(crate::commands::sim::not_for_sim("config")),
        arg(crate::commands::sim::not_for_sim("timeout")),
        arg(crate::commands::sim::not_for_sim("rest-port")),
        arg(crate::commands::sim::not_for_sim("discover"))
    )]
    Sim(Box<crate::commands::sim::SimCommand>),
    /// The whole story on a simulated cluster in this process: snapshot, tag, convergence, report.
    Demo(crate::commands::demo::DemoArgs),
    /// A shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    Completions(crate::commands::shell::CompletionsArgs),
    /// The man page of ledger or of one of its commands (roff, on stdout), or every page into a
    /// directory.
    Man(crate::commands::shell::ManArgs),
}

/// Value parsers that several commands' arguments share. A flag that takes a duration also takes
/// values that start with `-` (`allow_hyphen_values`), so that `--settle -1s` is told that a
/// duration cannot be negative instead of being read as an unknown flag `-1`.
///
/// A Go duration (`30s`, `2m`, `1h30m`) that is not negative.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match crate::ids::parse_signed_go_duration(s)? {
        (true, d) if !d.is_zero() => Err("durations cannot be negative".to_string()),
        (_, d) => Ok(d),
    }
}

/// A duration longer than zero (`--timeout`, `--every`).
pub fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("give a duration longer than 0s".to_string());
    }
    Ok(d)
}

/// The slowest rate ledger accepts: one a thousand seconds. Anything slower is a run that never ends
/// (and a period no timer can hold).
pub const MIN_PER_SECOND: f64 = 0.001;

/// A rate per second: 0 (no limit) or at least [`MIN_PER_SECOND`].
pub fn parse_per_second(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        Ok(r) if r.is_finite() && r >= MIN_PER_SECOND => Ok(r),
        _ => Err(format!(
            "{s:?} is not 0 (no limit) or a positive number per second, at least {MIN_PER_SECOND}"
        )),
    }
}

/// A rate of re-pins per second (`tag --rate`): at least [`MIN_PER_SECOND`].
pub fn parse_repin_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= MIN_PER_SECOND => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of re-pins per second, at least {MIN_PER_SECOND}"
        )),
    }
}

/// The most pins a simulated cluster holds (`--pins`, `--owned`): ten times the largest benchmark.
pub const MAX_PINS: usize = 10_000_000;

/// A number of pins for a simulated cluster: 0 to [`MAX_PINS`].
pub fn parse_pin_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_PINS => Ok(n),
        Ok(_) => {
            Err(format!("{s} pins is more than a simulated cluster holds ({MAX_PINS} at most)"))
        }
        Err(_) => Err(format!("{s:?} is not a number of pins")),
    }
}

/// A lag range `MIN..MAX` of Go durations (one value: both ends).
pub fn parse_lag(s: &str) -> Result<(std::time::Duration, std::time::Duration), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a = parse_duration(a)?;
    let b = parse_duration(b)?;
    if b < a {
        return Err(format!("the lag range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

/// A TCP port: 1 to 65535 (`--rest-port`).
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err("0 is not a port: give a TCP port from 1 to 65535".to_string()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{s:?} is not a TCP port: give a number from 1 to 65535")),
    }
}

/// A probability: a number from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("{s} is not between 0 and 1"));
    }
    Ok(r)
}

/// `--meta KEY=VALUE`.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    crate::cluster::repin::check_key(k).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// `--allocations`: peer IDs.
pub fn peer_ids(list: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for a in list {
        let Some(id) = crate::ids::parse_peer_id(a.trim()) else {
            anyhow::bail!("--allocations: {a:?} is not a peer ID");
        };
        ids.push(id);
    }
    Ok(ids)
}

/// `--expire-at TIME|never` or `--expire-in DURATION`: `Some(None)` never expires, `None` not given.
pub fn expiry(
    at: Option<&str>,
    within: Option<std::time::Duration>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Option<Option<String>>> {
    Ok(match (at, within) {
        (Some("never"), _) => Some(None),
        (Some(t), _) => Some(Some(future_time(
            crate::ids::parse_rfc3339(t).map_err(|e| anyhow::anyhow!("--expire-at: {e}"))?,
            now,
        )?)),
        (None, Some(d)) => Some(Some(future_time(now + chrono::Duration::from_std(d)?, now)?)),
        (None, None) => None,
    })
}

/// A time in the future, whole seconds, as the cluster stores it.
fn future_time(
    t: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    if t <= now {
        anyhow::bail!("the expiry {} is not in the future: a pin cannot take it", t.to_rfc3339());
    }
    let whole = chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    Ok(crate::ids::go_time(&whole))
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

    #[test]
    fn drift_and_its_watch_flags_parse() {
        use std::time::Duration;
        let cli = Cli::try_parse_from(["ledger", "drift"]).unwrap();
        let Command::Drift(a) = cli.command else { panic!("not drift") };
        assert_eq!(
            (a.older_than, a.stale_after, a.rounds),
            (Duration::from_secs(600), Duration::from_secs(3600), 5)
        );
        assert!(Cli::try_parse_from(["ledger", "drift", "--json", "--csv"]).is_err());
        assert!(Cli::try_parse_from(["ledger", "drift", "--older-than", "-1s"]).is_err());
        let w = ["ledger", "watch", "--every", "1s", "--drift-after", "0s", "--on-drift", "cat"];
        let Command::Watch(a) = Cli::try_parse_from(w).unwrap().command else {
            panic!("not watch")
        };
        assert_eq!((a.drift_after, a.on_drift.as_deref()), (Some(Duration::ZERO), Some("cat")));
        assert!(
            Cli::try_parse_from(["ledger", "watch", "--every", "1s", "--on-drift", "x"]).is_err()
        );
    }

    #[test]
    fn durations_rates_and_pin_counts_have_bounds() {
        use std::time::Duration;
        assert_eq!(parse_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("-1s"), Err("durations cannot be negative".to_string()));
        assert!(parse_positive_duration("0s").unwrap_err().contains("longer than 0s"));
        assert_eq!(parse_positive_duration("1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_per_second("0"), Ok(0.0));
        assert_eq!(parse_per_second("0.001"), Ok(0.001));
        for bad in ["0.0009", "1e-30", "-1", "NaN", "inf", "x"] {
            assert!(parse_per_second(bad).is_err(), "{bad}");
            assert!(parse_repin_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_repin_rate("0").is_err());
        assert_eq!(parse_pin_count("10000000"), Ok(MAX_PINS));
        assert!(parse_pin_count("10000001").unwrap_err().contains("at most"));
        assert!(parse_pin_count("18446744073709551616").is_err());
    }

    #[test]
    fn ledger_options_parse_before_and_after_every_command_but_sim() {
        for args in [
            &["ledger", "--db", "x.db", "--timeout", "5s", "snapshots"][..],
            &["ledger", "snapshots", "--db", "x.db", "--timeout", "5s"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.global.ledger.db.to_str(), Some("x.db"), "{args:?}");
            assert_eq!(cli.global.ledger.timeout, std::time::Duration::from_secs(5));
        }
        assert!(Cli::try_parse_from(["ledger", "--db", "x.db", "sim", "serve"]).is_ok());
        assert!(Cli::try_parse_from(["ledger", "sim", "serve", "--db", "x.db"]).is_err());
        assert!(
            Cli::try_parse_from(["ledger", "sim", "--cluster", "http://a:1", "serve"]).is_err()
        );
        assert!(Cli::try_parse_from(["ledger", "sim", "serve", "-v", "--peers", "2"]).is_ok());
    }
}
