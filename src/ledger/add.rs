//! `ledger add PATH… --org ORG` as a run (kind `add`): each path uploaded through the write peer's
//! `POST /add` with the org tag and every pin option in the query ([`crate::cluster::add`]), every
//! entry of the answer recorded as it comes (`added`), then each pin the add made read back: on the
//! write peer until it shows it (a batching cluster shows a write once its batch commits), then on
//! every other peer until it shows the pin as the write peer does ([`spread`]), each reading
//! recorded (`added_reads`). `done` when every pin reads back as asked on every member of the
//! cluster; `attention` when one does not, or a member was not read; `failed` when an upload fails.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::add::{self as api, AddOptions, Added, PinOptions, Sent, Upload};
use crate::cluster::{CanonicalPin, Client, StreamOutcome};
use crate::context::Context;
use crate::domain::{RunKind, RunState};
use crate::ledger::run::{Run, Spec};
use crate::ledger::spread::{self, Spread};
use crate::store::added;

/// What to add and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub uploads: Vec<Upload>,
    pub org: String,
    /// The pin options (the org tag among the metadata).
    pub pin: PinOptions,
    pub add: AddOptions,
    /// The peer that takes the uploads (default: the cluster's first peer).
    pub peer: Option<String>,
}

impl Options {
    /// The pin name of upload `u`: `--name`, else (without --wrap) the path's own name.
    fn name_of<'a>(&'a self, u: &'a Upload) -> Option<&'a str> {
        self.pin.name.as_deref().or((!u.root.is_empty()).then_some(u.root.as_str()))
    }

    /// Each upload's `POST /add` path and query, as it would be sent.
    pub fn requests(&self) -> Vec<String> {
        self.uploads
            .iter()
            .map(|u| {
                let q = api::query(&self.pin, self.name_of(u), &self.add);
                if q.is_empty() { "/add".into() } else { format!("/add?{q}") }
            })
            .collect()
    }
}

/// One entry the cluster's answer named.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub name: String,
    /// The local path (`None`: the --wrap directory).
    pub path: Option<String>,
    pub cid: String,
    pub size: u64,
}

/// One upload and the pin it made.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    pub path: String,
    pub request: String,
    pub bytes: u64,
    pub entries: Vec<Entry>,
    /// The pinned root's CID.
    pub cid: String,
    /// The pin as the write peer reads it back (`None`: not shown within --timeout).
    pub pin: Option<CanonicalPin>,
    /// The options the pin read back does not show as asked, by name.
    pub mismatched: Vec<&'static str>,
}

/// What `ledger add` did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: i64,
    pub org: String,
    pub uploads: Vec<UploadReport>,
    /// Which peers show the pins as the write peer does.
    pub spread: Spread,
    pub bytes: u64,
    pub seconds: f64,
}

impl Report {
    /// Whether every pin reads back as asked, on every member of the cluster.
    pub fn everywhere(&self) -> bool {
        self.uploads.iter().all(|u| u.pin.is_some() && u.mismatched.is_empty())
            && self.spread.everywhere()
    }
}

/// Runs the uploads; see the module documentation.
pub async fn run(ctx: &Context, opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let clients = ctx.clients(&ctx.peers(opts.peer.as_deref())?)?;
    let write = &clients[0];
    let params = serde_json::json!({
        "paths": opts.uploads.iter().flat_map(|u| &u.paths).collect::<Vec<_>>(),
        "requests": opts.requests(),
        "pin": opts.pin,
        "add": opts.add,
    });
    let spec = Spec { kind: RunKind::Add, org: Some(&opts.org), params, dry_run: false };
    let run = Run::begin(ctx, write, spec).await?;
    let total: u64 = opts.uploads.iter().map(Upload::bytes).sum();
    let pb = ctx.progress(Some(total));
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
        )?
        .progress_chars("=> "),
    );
    let mut uploads = Vec::with_capacity(opts.uploads.len());
    let mut seq = 0;
    for (i, (u, request)) in opts.uploads.iter().zip(opts.requests()).enumerate() {
        pb.set_message(u.label());
        let sent = Sent::default();
        let done = pb.position();
        let ticker = tokio::spawn({
            let (pb, sent) = (pb.clone(), sent.clone());
            async move {
                loop {
                    pb.set_position(done + sent.get());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let at = At { run: run.id(), upload: i as i64, seq: &mut seq };
        let entries = upload(ctx, write, u, &request, &sent, at).await;
        ticker.abort();
        let entries = entries?;
        pb.set_position(done + u.bytes());
        let cid = entries.iter().find(|e| e.name == u.root).map(|e| e.cid.clone());
        let Some(cid) = cid else {
            anyhow::bail!(
                "the cluster's answer to the upload of {} named no root {:?}: nothing was pinned",
                u.label(),
                u.root
            );
        };
        tracing::info!(path = u.label(), cid, "added");
        uploads.push(UploadReport {
            path: u.label(),
            request,
            bytes: u.bytes(),
            entries,
            cid,
            pin: None,
            mismatched: Vec::new(),
        });
    }
    pb.finish_and_clear();
    let spread = read_back(ctx, &clients, &run, opts, &mut uploads).await?;
    run.record_membership(&spread.membership)?;
    let report = Report {
        run: run.id(),
        org: opts.org.clone(),
        uploads,
        spread,
        bytes: total,
        seconds: started.elapsed().as_secs_f64(),
    };
    run.finish(if report.everywhere() { RunState::Done } else { RunState::Attention })?;
    Ok(report)
}

/// Where an upload's answer lines go in the record.
struct At<'a> {
    run: i64,
    upload: i64,
    seq: &'a mut i64,
}

/// Sends one upload and records each entry its answer names, as it comes.
async fn upload(
    ctx: &Context,
    write: &Client,
    u: &Upload,
    request: &str,
    sent: &Sent,
    at: At<'_>,
) -> anyhow::Result<Vec<Entry>> {
    let what = || format!("the upload of {}", u.label());
    let form = api::form(u, sent)?;
    let query = request.split_once('?').map_or("", |(_, q)| q);
    let mut lines =
        write.add(query, form, sent).await.map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
    let conn = &ctx.store()?.conn;
    let mut entries = Vec::new();
    while let Some(line) = lines.next_line().await {
        let a: Added = serde_json::from_slice(&line).map_err(|e| {
            anyhow::anyhow!(
                "{}: the cluster answered a line that is not an AddedOutput: {e}",
                what()
            )
        })?;
        let Some(cid) = a.cid else { continue };
        let local = u.local_of(&a.name);
        let path = local.map(|e| e.local.display().to_string());
        let kind = local.map_or(api::EntryKind::Directory, |e| e.kind);
        *at.seq += 1;
        added::entry(
            conn,
            &added::NewEntry {
                run: at.run,
                seq: *at.seq,
                upload: at.upload,
                name: &a.name,
                path: path.as_deref(),
                kind: kind.as_str(),
                bytes: local.filter(|e| e.kind == api::EntryKind::File).map(|e| e.bytes),
                size: a.size,
                cid: &cid,
                pinned: a.name == u.root,
            },
        )?;
        entries.push(Entry { name: a.name, path, cid, size: a.size });
    }
    match lines.outcome() {
        Some(StreamOutcome::Complete) => Ok(entries),
        Some(StreamOutcome::TrailerError(e)) => {
            anyhow::bail!("{}: the cluster stopped the add: {e}", what())
        }
        Some(StreamOutcome::Broken(e)) => anyhow::bail!("{}: the answer broke off: {e}", what()),
        None => anyhow::bail!("{}: the answer ended unread", what()),
    }
}

/// Reads every pin back: on the write peer until it shows (for at most --timeout), checked against
/// what was asked; then on every other peer ([`spread::check`]). Each reading is recorded.
async fn read_back(
    ctx: &Context,
    clients: &[Client],
    run: &Run<'_>,
    opts: &Options,
    uploads: &mut [UploadReport],
) -> anyhow::Result<Spread> {
    let write = &clients[0];
    for (u, given) in uploads.iter_mut().zip(&opts.uploads) {
        let deadline = Instant::now() + write.timeout();
        u.pin = spread::read_until(write, &u.cid, deadline, |_| true).await;
        if let Some(pin) = &u.pin {
            let name = opts.name_of(given).unwrap_or("");
            u.mismatched = mismatches(&opts.pin, name, pin);
        }
    }
    let cids: Vec<String> = uploads.iter().map(|u| u.cid.clone()).collect();
    let spread = spread::check(ctx, clients, &cids, (write.timeout(), 4)).await?;
    let conn = &ctx.store()?.conn;
    for p in &spread.peers {
        let peer = p.id.clone().unwrap_or_else(|| p.url.clone());
        for u in uploads.iter() {
            let lacking = p.error.is_some() || p.lacking.contains(&u.cid);
            let pin = if lacking { None } else { u.pin.as_ref() };
            let error = match (&p.error, lacking) {
                (Some(e), _) => Some(e.clone()),
                (None, true) => {
                    Some("not shown as the write peer shows it within --timeout".into())
                }
                (None, false) => None,
            };
            added::read(conn, run.id(), &u.cid, &peer, pin, error.as_deref())?;
        }
    }
    Ok(spread)
}

/// The options `pin` does not show as asked: its metadata must be exactly what was sent, and each
/// option given must read back as given.
fn mismatches(opts: &PinOptions, name: &str, pin: &CanonicalPin) -> Vec<&'static str> {
    let mut out = Vec::new();
    if pin.metadata != opts.metadata {
        out.push("metadata");
    }
    if pin.name != name {
        out.push("name");
    }
    if pin.mode != "recursive" {
        out.push("mode");
    }
    if opts.replication.is_some_and(|r| r != (pin.replication_min, pin.replication_max)) {
        out.push("replication");
    }
    if opts.expire_at.is_some() && pin.expire_at != opts.expire_at {
        out.push("expire_at");
    }
    if !opts.allocations.is_empty() && pin.allocations.iter().any(|a| !opts.allocations.contains(a))
    {
        out.push("allocations");
    }
    out
}
