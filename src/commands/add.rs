//! `ledger add PATH… --org ORG`: upload files and directories through the cluster's `/add` with the
//! org tag, each path pinned with every option given, the pins read back from every peer, all on the
//! record as a run of kind `add`. Exit 0 when every pin reads back as asked on every member of the
//! cluster; 1 when one does not, or a member was not read; 2 on bad input (before anything is
//! sent) or a failed upload.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use crate::app::print_json;
use crate::cluster::add::{self as api, AddOptions, PinOptions};
use crate::context::Context;
use crate::ledger::add;
use crate::render;

/// The largest chunk the cluster's adder takes (boxo `chunker.ChunkSizeLimit`).
const MAX_CHUNK: u64 = 2_096_896;

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files and directories to add; each is its own upload and its own pin (with --wrap: one
    /// upload, one pin, the directory that wraps them).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The organisation: every pin gets `org=ORG` (default: the profile's `org` in ledger.toml).
    #[arg(long)]
    pub org: Option<String>,
    /// Another metadata key (repeatable): `--meta env=prod`. The value may contain `=`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = crate::cli::parse_meta)]
    pub meta: Vec<(String, String)>,
    /// The pin's name (default: the path's own name; with --wrap, none).
    #[arg(long)]
    pub name: Option<String>,
    /// Both replication factors: `MIN..MAX` (`-1..-1`: every peer), or one number for both
    /// (default: the cluster's).
    #[arg(long, value_name = "MIN..MAX", value_parser = crate::cluster::config::parse_replication, allow_hyphen_values = true)]
    pub replication: Option<(i32, i32)>,
    /// Allocate to these peers (peer IDs, comma-separated), sent as `user-allocations`.
    #[arg(long, value_name = "PEER,…", value_delimiter = ',')]
    pub allocations: Vec<String>,
    /// The expiry: an RFC 3339 time in the future.
    #[arg(long, value_name = "TIME", conflicts_with = "expire_in")]
    pub expire_at: Option<String>,
    /// The expiry this long from now (a Go duration).
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_positive_duration, allow_hyphen_values = true)]
    pub expire_in: Option<Duration>,
    /// The CID version: 0 (`Qm…`, the cluster's default) or 1 (`bafy…`, raw leaves by default).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub cid_version: Option<u8>,
    /// Raw leaves: `true` or `false` (default: true with --cid-version 1, else false).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub raw_leaves: Option<bool>,
    /// How files are cut into blocks: `size-N` (default `size-262144`), `rabin…` or `buzhash`.
    #[arg(long, value_name = "CHUNKER")]
    pub chunker: Option<String>,
    /// The multihash of every block (default `sha2-256`; another needs --cid-version 1).
    #[arg(long, value_name = "NAME")]
    pub hash: Option<String>,
    /// Put the paths in one directory and pin that (`wrap-with-directory`).
    #[arg(long)]
    pub wrap: bool,
    /// Include entries whose name starts with `.` inside directories.
    #[arg(long)]
    pub hidden: bool,
    /// The peer that takes the uploads (URL or multiaddr). Default: the cluster's first peer.
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<String>,
    /// Print the requests and the parts each would carry; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AddArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let opts = options(&args, ctx)?;
    if args.dry_run {
        return dry_run(&args, &opts, ctx);
    }
    if args.json {
        ctx.silence();
    }
    let report = ctx.until_signal(add::run(ctx, &opts))?;
    if args.json {
        print_json(&report)?;
    } else {
        render::add_report(&report)?;
    }
    if report.everywhere() {
        return Ok(ExitCode::SUCCESS);
    }
    if report.uploads.iter().any(|u| u.pin.is_none() || !u.mismatched.is_empty()) {
        eprintln!(
            "ledger: a pin the add made does not read back as asked on the write peer (above): \
             run `ledger add` again with the same paths once the cluster is healthy"
        );
    } else {
        eprintln!(
            "ledger: the write peer shows every pin, but not every member of the cluster was seen \
             showing them (above)"
        );
    }
    Ok(ExitCode::from(crate::error::ATTENTION))
}

/// The paths walked and every option checked, before anything is sent.
fn options(args: &AddArgs, ctx: &Context) -> anyhow::Result<add::Options> {
    let org = match &args.org {
        Some(o) => o.clone(),
        None => match ctx.target()?.org.clone() {
            Some(o) => o,
            None => bail!(
                "no organisation: give --org ORG, or set `org = \"ORG\"` in the cluster's profile \
                 in ledger.toml"
            ),
        },
    };
    if org.is_empty() || org.chars().any(|c| matches!(c, '&' | '=' | ';' | '#') || c.is_control()) {
        bail!(
            "--org {org:?}: an organisation is a non-empty name without &, =, ;, # or control characters"
        );
    }
    let mut metadata: std::collections::BTreeMap<String, String> =
        args.meta.iter().cloned().collect();
    if metadata.contains_key("org") {
        bail!("give the organisation with --org, not --meta org=…");
    }
    metadata.insert("org".into(), org.clone());
    if args.name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
        bail!("--name holds a control character");
    }
    if args.expire_at.as_deref() == Some("never") {
        bail!("--expire-at never: a new pin never expires unless given an expiry; leave it out");
    }
    let expire_at =
        crate::cli::expiry(args.expire_at.as_deref(), args.expire_in, ctx.now())?.flatten();
    if let Some(c) = &args.chunker {
        check_chunker(c)?;
    }
    if args.cid_version.unwrap_or(0) == 0 && args.hash.as_deref().is_some_and(|h| h != "sha2-256") {
        bail!(
            "--hash {}: a CIDv0 is always sha2-256; add --cid-version 1",
            args.hash.as_deref().unwrap_or("")
        );
    }
    let uploads = api::walk(&args.paths, args.wrap, args.hidden)?;
    Ok(add::Options {
        uploads,
        org,
        pin: PinOptions {
            name: args.name.clone(),
            metadata,
            replication: args.replication,
            allocations: crate::cli::peer_ids(&args.allocations)?,
            expire_at,
        },
        add: AddOptions {
            cid_version: args.cid_version,
            raw_leaves: args.raw_leaves,
            chunker: args.chunker.clone(),
            hash: args.hash.clone(),
            wrap: args.wrap,
        },
        peer: args.peer.clone(),
    })
}

/// `size-N` within the adder's limits; `rabin…` and `buzhash` go to the cluster as given.
fn check_chunker(c: &str) -> anyhow::Result<()> {
    if c.starts_with("rabin") || c == "buzhash" {
        return Ok(());
    }
    let size = c.strip_prefix("size-").and_then(|n| n.parse::<u64>().ok());
    match size {
        Some(n) if n > 0 && n <= MAX_CHUNK => Ok(()),
        Some(_) => bail!("--chunker {c}: the size must be 1 to {MAX_CHUNK}"),
        None => bail!("--chunker {c:?}: give size-N (bytes), rabin[-MIN-AVG-MAX] or buzhash"),
    }
}

/// What `--dry-run` prints of one upload.
#[derive(Serialize)]
struct Planned<'a> {
    path: String,
    request: String,
    bytes: u64,
    parts: &'a [api::Entry],
}

fn dry_run(args: &AddArgs, opts: &add::Options, ctx: &Context) -> anyhow::Result<ExitCode> {
    let url = ctx.peers(opts.peer.as_deref())?.remove(0);
    let base = url.as_str().trim_end_matches('/');
    let planned: Vec<Planned> = opts
        .uploads
        .iter()
        .zip(opts.requests())
        .map(|(u, r)| Planned {
            path: u.label(),
            request: format!("POST {base}{r}"),
            bytes: u.bytes(),
            parts: &u.entries,
        })
        .collect();
    if args.json {
        print_json(&planned)?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in &planned {
        crate::out!("would send: {}", p.request);
        for e in p.parts {
            match e.kind {
                api::EntryKind::File => crate::out!("  file       {} ({} bytes)", e.name, e.bytes),
                api::EntryKind::Directory => crate::out!("  directory  {}", e.name),
                api::EntryKind::Symlink => crate::out!("  symlink    {}", e.name),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
