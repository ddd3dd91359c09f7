//! `ledger config check`: the cluster every other command would use, resolved from the flags, the
//! environment and `ledger.toml`, with where each part came from — never the credentials. Exit 1
//! when something needs attention (a credentials file others can read, another profile that
//! cannot be used), 2 when the configuration cannot be used at all.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cluster::Target;
use crate::cluster::config::{self, Auth, ConfigFile};
use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Resolve the cluster as every other command would (--cluster, LEDGER_CLUSTER, --profile,
    /// ledger.toml) and print it: the file read, the profile, the peers and which one takes the
    /// writes, discovery, where the credentials come from (never the credentials), the
    /// organisations. Nothing is sent to the cluster.
    ///
    /// A key ledger does not know, a value of the wrong type or a replication that is not MIN..MAX
    /// is refused with its line and column (exit 2). Exit 1 when something needs attention: a
    /// credentials file other users can read, another profile in the file that cannot be used, a
    /// `default` that names no profile; 0 otherwise.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ConfigCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check(args) = cmd;
    let target = ctx.target()?;
    let cfg = target.origin.file.as_deref();
    let warnings = warnings(target, cfg);
    let report = report(target, cfg, &warnings);
    if args.json {
        crate::app::print_json(&report)?;
    } else {
        print_text(target, &report)?;
        // The credentials file's warning was printed when it was read; the rest are said here.
        let exposed = target.origin.credentials_file.as_deref().and_then(config::exposed);
        for w in warnings.iter().filter(|w| Some(*w) != exposed.as_ref()) {
            eprintln!("ledger: warning: {w}");
        }
    }
    Ok(if warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ATTENTION)
    })
}

/// What needs attention: a credentials file others can read, a `default` that names no profile,
/// and the other profiles of the file that no command could use, each with why.
fn warnings(target: &Target, cfg: Option<&ConfigFile>) -> Vec<String> {
    let mut out: Vec<String> =
        target.origin.credentials_file.as_deref().and_then(config::exposed).into_iter().collect();
    let Some(cfg) = cfg else { return out };
    if let Some(d) = cfg.default.as_ref().filter(|d| !cfg.clusters.contains_key(*d)) {
        out.push(format!("`default` names the cluster {d:?}, which the file does not have"));
    }
    for (name, profile) in cfg.clusters.iter().filter(|(n, _)| **n != target.name) {
        if profile.peers.is_empty() {
            out.push(format!("the cluster {name:?} lists no peers"));
        }
        for p in &profile.peers {
            if let Err(e) = config::parse_address(p) {
                out.push(format!("the cluster {name:?}: {e:#}"));
            }
        }
        if profile.rest_port.is_some() && !profile.discover {
            out.push(format!(
                "the cluster {name:?} gives rest_port, which applies only with discover = true"
            ));
        }
    }
    out
}

/// The resolved configuration as JSON (the text output is made from it).
fn report(target: &Target, cfg: Option<&ConfigFile>, warnings: &[String]) -> Value {
    let origin = &target.origin;
    let profile = cfg.and_then(|c| c.clusters.get(&target.name));
    let orgs: serde_json::Map<String, Value> = profile
        .map(|p| {
            p.orgs
                .iter()
                .map(|(name, o)| {
                    let v = json!({ "peer": o.peer, "contact": o.contact, "replication": o.replication });
                    (name.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let credentials = target.auth.as_ref().map(|a| {
        let kind = match a {
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
        };
        json!({ "kind": kind, "from": origin.credentials, "overridden": origin.overridden })
    });
    let peers: Vec<Value> = target
        .peers
        .iter()
        .enumerate()
        .map(|(i, u)| json!({ "url": u.as_str(), "writes": i == 0 }))
        .collect();
    json!({
        "config": origin.config,
        "cluster": target.name,
        "profile": profile.map(|_| json!({ "name": target.name, "chosen_by": origin.chosen_by })),
        "peers_from": origin.peers,
        "peers": peers,
        "discover": { "on": target.discover.on, "rest_port": target.discover.rest_port },
        "credentials": credentials,
        "org": target.org,
        "orgs": orgs,
        "other_profiles": cfg.map(|c| c.clusters.keys().filter(|n| **n != target.name).collect::<Vec<_>>()),
        "warnings": warnings,
    })
}

/// The report as lines of text.
fn print_text(target: &Target, r: &Value) -> anyhow::Result<()> {
    let origin = &target.origin;
    let file = origin.config.as_ref().map(|p| p.display().to_string());
    crate::out!("configuration   {}", file.as_deref().unwrap_or("none read"));
    match origin.chosen_by {
        Some(by) => crate::out!("profile         {} (chosen by {by})", target.name),
        None => crate::out!("cluster         {} (no profile)", target.name),
    }
    crate::out!("peers           from {}", origin.peers);
    for (i, u) in target.peers.iter().enumerate() {
        let writes = if i == 0 { "  takes the writes" } else { "" };
        crate::out!("  {}. {u}{writes}", i + 1);
    }
    let d = target.discover;
    let port =
        d.rest_port.map_or("the write peer's REST port".to_string(), |p| format!("port {p}"));
    if d.on {
        crate::out!("discover        on: the other members from GET /peers, at {port}");
    } else {
        crate::out!("discover        off");
    }
    let creds = match (&target.auth, &origin.credentials) {
        (Some(Auth::Basic { .. }), Some(from)) => format!("Basic (user:password) from {from}"),
        (Some(Auth::Bearer(_)), Some(from)) => format!("Bearer token from {from}"),
        _ => "none".to_string(),
    };
    crate::out!("credentials     {creds}");
    for o in &origin.overridden {
        crate::out!("                (not used: {o})");
    }
    crate::out!(
        "org             {}",
        target.org.as_deref().unwrap_or("none (ledger add needs --org)")
    );
    if r["orgs"].as_object().is_some_and(|o| !o.is_empty()) {
        crate::out!("organisations");
    }
    for (name, o) in r["orgs"].as_object().into_iter().flatten() {
        let field = |k: &str, label: &str| o[k].as_str().map(|v| format!("{label} {v}"));
        let parts: Vec<String> = [
            field("peer", "peer"),
            field("replication", "replication"),
            field("contact", "contact"),
        ]
        .into_iter()
        .flatten()
        .collect();
        crate::out!(
            "  {name}: {}",
            if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
        );
    }
    let others: Vec<&str> =
        r["other_profiles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !others.is_empty() {
        crate::out!("other profiles  {}", others.join(", "));
    }
    Ok(())
}
