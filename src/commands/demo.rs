//! `ledger demo`: the whole story on a simulated cluster in this process — five peers holding the
//! field report's 3,512 unowned pins (and a few owned by other organisations), each applying the
//! others' writes at a bounded rate as a real peer does, losing the broadcasts it has no room for
//! until a rebroadcast — through the same use cases as the commands: `snapshot --all-peers`, `tag --org hrdag`,
//! `convergence`, `report`. Needs nothing but loopback. Exit 0 when every peer converged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ledger_sim::{self as sim, Faults, NetConfig, SimConfig, auth::Users};

use crate::app::LedgerArgs;
use crate::cli::{parse_duration, parse_lag, parse_per_second, parse_pin_count, parse_rate};
use crate::context::Context;
use crate::ledger::{convergence, snapshot, tag};
use crate::render;

/// The organisation the demo tags with (the field report's).
pub const ORG: &str = "hrdag";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Write the report (report.html, convergence.svg, CSV files) and the demo's ledger
    /// (ledger.db, recreated on every run) into this directory.
    #[arg(long, default_value = "reports/demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Random seed of the simulated cluster: pins, peer IDs, lag and lost broadcasts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Unowned pins (no `org`): the tag run's targets.
    #[arg(long, default_value_t = 3512, value_parser = parse_pin_count, help_heading = "Simulated cluster")]
    pub pins: usize,
    /// Pins owned by other organisations (the run leaves them alone).
    #[arg(long, default_value_t = 40, value_parser = parse_pin_count, help_heading = "Simulated cluster")]
    pub owned: usize,
    /// Number of peers.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64), help_heading = "Simulated cluster")]
    pub peers: u16,
    /// Propagation delay of each write to the other peers, uniform in MIN..MAX.
    #[arg(long, default_value = "50ms..500ms", value_parser = parse_lag, allow_hyphen_values = true, value_name = "MIN..MAX", help_heading = "Simulated cluster")]
    pub lag: (Duration, Duration),
    /// Probability (0..1) that a broadcast to a peer is lost (it arrives at a rebroadcast tick).
    #[arg(long = "drop", default_value = "0", value_parser = parse_rate, value_name = "RATE", help_heading = "Simulated cluster")]
    pub drop_rate: f64,
    /// Rebroadcast interval of every peer (each tick ±30%).
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true, help_heading = "Simulated cluster")]
    pub rebroadcast: Duration,
    /// Deltas per second each peer applies from the others, one broadcast at a time (0: at once).
    /// 350 against the run's 500 re-pins/s is the field report's ratio (about 25 against 32/s),
    /// 15 times faster (docs/simulator.md, "Throughput").
    #[arg(long, default_value_t = 350.0, value_parser = parse_per_second, value_name = "N", help_heading = "Simulated cluster")]
    pub apply_rate: f64,
    /// With --apply-rate: deliveries a busy peer holds; one more is lost.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Simulated cluster")]
    pub inbox: u32,
    /// Re-pins per second of the tag run (0: as fast as the cluster answers; else at least 0.001).
    #[arg(long, default_value_t = 500.0, value_parser = parse_per_second, allow_negative_numbers = true, help_heading = "Tag run")]
    pub rate: f64,
    /// Wait this long after each pass before verifying every peer.
    #[arg(long, default_value = "5s", value_parser = parse_duration, allow_hyphen_values = true, help_heading = "Tag run")]
    pub settle: Duration,
    /// Sample every peer this often while a pass settles.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, allow_hyphen_values = true, help_heading = "Tag run")]
    pub probe_every: Duration,
}

pub fn run(args: DemoArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let db = fresh_ledger(&args.out)?;
    // The cluster runs on two worker threads of its own; the use cases run on this thread, as they
    // do from the command line.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the simulator's runtime")?;
    let running = rt.block_on(sim::start(cluster_config(&args)))?;
    let ledger = LedgerArgs {
        db: db.clone(),
        cluster: Some(running.urls().join(",")),
        profile: Some("demo".to_string()),
        config: None,
        timeout: Duration::from_secs(60),
        discover: false,
        rest_port: None,
    };
    // The demo's own ledger and cluster: a context of their own.
    let ctx = &Context::new(ledger, ctx.is_quiet());
    describe(&args, running.urls().first().map(String::as_str).unwrap_or("-"), &db)?;

    step("ledger snapshot --all-peers")?;
    for url in &ctx.target()?.peers {
        render::snapshot_summary(&ctx.block_on(snapshot::of_peer(ctx, url))??)?;
    }
    let opts = tag_options(&args);
    step(&format!(
        "ledger tag --org {ORG}{} --settle {} --probe-every {}",
        opts.rate.map(|r| format!(" --rate {r}")).unwrap_or_default(),
        crate::ids::format_duration(opts.settle),
        crate::ids::format_duration(opts.probe_every)
    ))?;
    let report = ctx.until_signal(tag::run(ctx, &opts))?;
    render::tag_report(&report)?;
    drop(running);
    rt.shutdown_timeout(Duration::from_millis(200));

    step("ledger convergence")?;
    let store = ctx.store()?;
    render::convergence(&convergence::load(&store.conn, Some(report.run))?, false)?;
    step(&format!("ledger report --out {}", args.out.display()))?;
    let r = crate::report::load(&store.conn, crate::report::resolve_run(&store.conn, None)?)?;
    render::report_written(r.run.id, &crate::report::write(&r, &args.out)?)?;
    let converged = outcome(&r, started)?;
    crate::out!("open {}", args.out.join("report.html").display());
    Ok(if converged { ExitCode::SUCCESS } else { ExitCode::from(crate::error::ATTENTION) })
}

/// The demo's ledger, `DIR/ledger.db`, removed (with its WAL) so that every run starts afresh.
fn fresh_ledger(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let db = dir.join("ledger.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove the old demo ledger {p:?}"));
            }
            _ => {}
        }
    }
    Ok(db)
}

/// The simulated cluster the demo runs on.
pub(crate) fn cluster_config(args: &DemoArgs) -> SimConfig {
    let n = args.peers as usize;
    let ids: Vec<String> = sim::peer_ids(args.seed, n).into_iter().map(|(id, _)| id).collect();
    SimConfig {
        peers: n,
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        distinct_hosts: false,
        announce: Vec::new(),
        net: NetConfig {
            lag_min: args.lag.0,
            lag_max: args.lag.1,
            drop_rate: args.drop_rate,
            rebroadcast: args.rebroadcast.max(Duration::from_millis(10)),
            batch_size: 0,
            batch_age: Duration::ZERO,
            batch_queue: 50_000,
            state_sync: Duration::from_secs(300),
            seed: args.seed,
            apply_rate: args.apply_rate,
            inbox: args.inbox as usize,
        },
        pins: sim::seed::demo(args.pins, args.owned, args.seed, &ids),
        lazy: None,
        users: Users::default(),
        quirk_partial_apply: false,
        replication_min: -1,
        replication_max: -1,
        version: "1.1.6".to_string(),
        faults: Faults::default(),
    }
}

/// The tag run the demo makes: `ledger tag --org hrdag` with the demo's pace.
fn tag_options(args: &DemoArgs) -> tag::Options {
    tag::Options {
        settle: args.settle,
        probe_every: args.probe_every,
        rate: (args.rate > 0.0).then_some(args.rate),
        timeout: Duration::from_secs(600),
        ..tag::Options::new(ORG)
    }
}

/// The two lines that say what the simulated cluster is.
fn describe(args: &DemoArgs, first_url: &str, db: &Path) -> std::io::Result<()> {
    crate::out!(
        "ledger demo: a simulated {}-peer cluster on loopback ({first_url}) with {} pins: {} unowned, {} owned by other organisations",
        args.peers,
        args.pins + args.owned,
        args.pins,
        args.owned
    );
    let applies = if args.apply_rate > 0.0 {
        format!(
            "each peer applies {} of the others' writes per second and holds {} broadcasts",
            args.apply_rate, args.inbox
        )
    } else {
        "each peer applies the others' writes at once".to_string()
    };
    crate::out!(
        "  propagation lag {}..{}, {applies}, {:.0}% of broadcasts lost until a rebroadcast (every {} ±30%); ledger {}",
        crate::ids::format_duration(args.lag.0),
        crate::ids::format_duration(args.lag.1),
        args.drop_rate * 100.0,
        crate::ids::format_duration(args.rebroadcast),
        db.display()
    );
    Ok(())
}

/// What the report says, in two lines; true when every peer converged.
fn outcome(r: &crate::report::Report, started: Instant) -> std::io::Result<bool> {
    crate::out!("");
    let firsts: Vec<String> = r
        .peers
        .iter()
        .filter(|p| r.write_peer.as_ref() != Some(*p))
        .filter_map(|p| r.first_read(1, p))
        .map(|p| {
            format!(
                "{} {}/{} ({:.1}%)",
                crate::app::short_peer(&p.peer),
                p.tagged,
                p.targets,
                crate::report::percent(p.tagged, p.targets)
            )
        })
        .collect();
    if !firsts.is_empty() {
        crate::out!("first read after pass 1 on the other peers: {}", firsts.join(", "));
    }
    let converged = r.every_peer_converged();
    crate::out!(
        "{} after {} pass(es); demo finished in {:.1}s",
        if converged { "every peer converged" } else { "NOT every peer converged" },
        r.passes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(converged)
}

fn step(cmd: &str) -> std::io::Result<()> {
    crate::out!("\n$ {cmd}");
    Ok(())
}
