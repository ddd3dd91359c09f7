//! `POST /add` as a v1.1.6 peer answers it (docs/cluster-api.md §4 "POST /add"): the add
//! parameters of `api/add.go`, the upload read as it arrives, the UnixFS DAG of each file and
//! directory (`unixfs.rs`), one `AddedOutput` line per file as it is done and, after each
//! top-level entry, one per directory (children first, by name), then the root pinned through the
//! simulator's normal pin path with the query's pin options, so it replicates like any pin.
//!
//! Like the cluster's adder (a copy of kubo's, over one MFS root), every top-level entry of one
//! upload goes into the same MFS root: a file under its CID, a directory's children at the root
//! itself; what is pinned is the last entry's root.
//!
//! Not here: the HTTP framing (`http.rs`) or the pin path (`api.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::mpsc;

use super::Cluster;
use super::http::{Body, Chunk, Request, Response};
use super::multipart::{Kind, Multipart, PartHead, boundary};
use super::options::{PinOptions, Query, from_query};
use super::unixfs::{self, FileBuilder, Format, Hash, Link};

/// The add parameters of `AddParamsFromQuery` that the simulator acts on.
#[derive(Debug, Clone)]
pub struct AddParams {
    pub wrap: bool,
    pub local: bool,
    pub shard: bool,
    pub progress: bool,
    pub stream_channels: bool,
    pub nocopy: bool,
    pub no_pin: bool,
    pub layout: String,
    pub chunker: String,
    pub hash: String,
    pub format: String,
    pub cid_version: i64,
    pub raw_leaves: bool,
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` (64-bit).
fn go_int(v: &str) -> Option<i64> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `AddParamsFromQuery`, in its order: the pin options, then the add options; the 400 message of
/// the first that does not parse.
pub fn parse_params(q: &Query) -> Result<(AddParams, PinOptions), String> {
    let (mut opts, err) = from_query(q, Utc::now());
    if let Some(e) = err {
        return Err(e);
    }
    opts.pin_update = None;
    let layout = q.get("layout");
    if !matches!(layout, "trickle" | "balanced" | "") {
        return Err("layout parameter is invalid".into());
    }
    let chunker = if q.get("chunker").is_empty() { "size-262144" } else { q.get("chunker") };
    let hash = if q.get("hash").is_empty() { "sha2-256" } else { q.get("hash") };
    let format = q.get("format");
    if !matches!(format, "car" | "unixfs" | "") {
        return Err("format parameter is invalid".into());
    }
    let boolean = |name: &str, default: bool| -> Result<bool, String> {
        match q.get(name) {
            "" => Ok(default),
            v => go_bool(v).ok_or_else(|| format!("parameter {name} invalid")),
        }
    };
    let mut p = AddParams {
        local: boolean("local", false)?,
        wrap: {
            boolean("recursive", false)?;
            boolean("hidden", false)?;
            boolean("wrap-with-directory", false)?
        },
        shard: boolean("shard", false)?,
        progress: boolean("progress", false)?,
        cid_version: match q.get("cid-version") {
            "" => 0,
            v => go_int(v).ok_or("parameter cid-version invalid")?,
        },
        layout: layout.into(),
        chunker: chunker.into(),
        hash: hash.into(),
        format: format.into(),
        raw_leaves: false,
        stream_channels: true,
        nocopy: false,
        no_pin: false,
    };
    // As kubo: CIDv1 implies raw leaves unless `raw-leaves` says otherwise.
    p.raw_leaves = boolean("raw-leaves", p.cid_version > 0)?;
    p.stream_channels = boolean("stream-channels", true)?;
    p.nocopy = boolean("nocopy", false)?;
    p.no_pin = boolean("no-pin", false)?;
    Ok((p, opts))
}

/// boxo's `chunker.FromString` for the size splitter; the others are not simulated.
fn chunk_size(chunker: &str) -> Result<usize, String> {
    const LIMIT: i64 = 2 * 1024 * 1024 - 256;
    if chunker.is_empty() || chunker == "default" {
        return Ok(262144);
    }
    let name = chunker.split('-').next().unwrap_or_default();
    match name {
        "size" => {
            let parts: Vec<&str> = chunker.split('-').collect();
            if parts.len() != 2 {
                return Err("incorrect chunker string format (expected size-{size})".into());
            }
            let n = go_int(parts[1])
                .ok_or_else(|| format!("strconv.Atoi: parsing {:?}: invalid syntax", parts[1]))?;
            match n {
                n if n <= 0 => Err("chunker size must be greater than 0".into()),
                n if n > LIMIT => Err(format!(
                    "chunker parameters may not exceed the maximum chunk size of {LIMIT}"
                )),
                n => Ok(n as usize),
            }
        }
        "rabin" | "buzhash" => Err(format!("chunker {chunker} is not simulated")),
        _ => Err(format!("unrecognized chunker option: {chunker}")),
    }
}

/// The names go-multihash knows (`multihash.Names` and the registered BLAKE2 family).
fn known_hash(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "identity",
        "sha1",
        "sha2-256",
        "sha2-512",
        "sha3",
        "sha3-224",
        "sha3-256",
        "sha3-384",
        "sha3-512",
        "dbl-sha2-256",
        "murmur3-x64-64",
        "keccak-224",
        "keccak-256",
        "keccak-384",
        "keccak-512",
        "blake3",
        "shake-128",
        "shake-256",
        "sha2-256-trunc254-padded",
        "x11",
        "md5",
        "poseidon-bls12_381-a2-fc1",
    ];
    let n = name.to_ascii_lowercase();
    NAMES.contains(&n.as_str()) || n.starts_with("blake2b-") || n.starts_with("blake2s-")
}

/// What `newIpfsAdder` and the other set-up steps refuse, with the adder's messages (they reach
/// the client as the `X-Stream-Error` trailer of a 200).
fn format_of(p: &AddParams) -> Result<Format, String> {
    if p.format == "car" {
        return Err("adding CAR files is not simulated".into());
    }
    if p.shard {
        return Err("sharded adding is not simulated".into());
    }
    if p.cid_version != 0 && p.cid_version != 1 {
        return Err(format!("bad CID Version: unknown CID version: {}", p.cid_version));
    }
    if !known_hash(&p.hash) {
        return Err("hash function name not known".into());
    }
    let hash = Hash::by_name(&p.hash)
        .ok_or_else(|| format!("hash function {} is not simulated", p.hash))?;
    if p.cid_version == 0 && hash != Hash::Sha2_256 {
        // go-cid's `Prefix.Sum`, at the adder's first dag-pb node: CIDv0 is sha2-256 only.
        return Err("invalid cid: invalid v0 prefix".into());
    }
    if p.layout == "trickle" {
        return Err("the trickle layout is not simulated".into());
    }
    Ok(Format { cid_version: p.cid_version as u8, raw_leaves: p.raw_leaves, chunk: 262144, hash })
}

/// `api.AddedOutput` as Go writes it (`bytes`, `size` and `allocations` left out when empty).
#[derive(Serialize)]
struct Added<'a> {
    name: &'a str,
    cid: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allocations: &'a [String],
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Where the answer lines go: streamed (`stream-channels`, the default) or kept for one array.
enum Out {
    Stream(mpsc::Sender<Chunk>),
    Buffer(Vec<serde_json::Value>),
}

impl Out {
    async fn line(&mut self, a: &Added<'_>) {
        match self {
            Out::Stream(tx) => {
                let mut line = Vec::with_capacity(160);
                super::pin::to_go_json(&mut line, a);
                line.push(b'\n');
                let _ = tx.send(Chunk::Data(line)).await;
            }
            Out::Buffer(v) => v.push(serde_json::to_value(a).unwrap_or_default()),
        }
    }
}

/// An MFS directory: its entries by name (Go's string order).
#[derive(Default)]
struct Dir {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    File(Link),
    Dir(Dir),
}

/// The adder's `progressReaderIncrement`.
const PROGRESS_EVERY: u64 = 256 * 1024;

/// boxo's `HAMTShardingSize`: past this estimate of a directory's links it is sharded.
const HAMT_SHARDING_SIZE: usize = 256 * 1024;

/// Paths deeper than this are refused (the directory walk is recursive).
const MAX_DEPTH: usize = 1024;

impl Dir {
    /// `mfs.Mkdir` with `Mkparents`: the directory at `path`, made as needed.
    fn mkdir_p(&mut self, path: &[&str]) -> Result<&mut Dir, String> {
        let mut d = self;
        for seg in path {
            let e = d.entries.entry(seg.to_string()).or_insert_with(|| Entry::Dir(Dir::default()));
            d = match e {
                Entry::Dir(sub) => sub,
                Entry::File(_) => return Err(format!("{seg} is not a directory")),
            };
        }
        Ok(d)
    }
}

/// One add: the shared MFS root and where the current top-level entry stands.
struct Adder {
    c: Arc<Cluster>,
    p: usize,
    params: AddParams,
    opts: PinOptions,
    f: Format,
    chunker: Result<usize, String>,
    root: Dir,
    /// The current top-level entry's name while it is a directory.
    top_dir: Option<String>,
    last_root: Option<Link>,
    dests: Option<Vec<String>>,
    out: Out,
}

/// Go's `filepath.Join` of two clean relative names.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

impl Adder {
    /// `BlockAllocate`, at the first block: the peers the blocks go to (every answer line names
    /// them).
    fn allocate(&mut self) -> Result<(), String> {
        if self.dests.is_some() {
            return Ok(());
        }
        let mut dests = super::api::block_allocate(&self.c, &self.opts).map_err(|(_, m)| m)?;
        let me = self.c.peers[self.p].id.clone();
        let no_user = self.opts.user_allocations.as_ref().is_none_or(|u| u.is_empty());
        if self.params.local && !dests.contains(&me) && no_user && !dests.is_empty() {
            let last = dests.len() - 1;
            dests[last] = me;
        }
        self.dests = Some(dests);
        Ok(())
    }

    async fn emit(&mut self, name: &str, n: Option<&Link>, bytes: u64) {
        let allocations = if bytes > 0 || n.is_none() {
            Vec::new()
        } else {
            self.dests.clone().unwrap_or_default()
        };
        let a = Added {
            name,
            cid: n.map(|n| n.cid.to_string()),
            bytes,
            size: n.map_or(0, |n| n.size),
            allocations: &allocations,
        };
        self.out.line(&a).await;
    }

    /// Ends the current top-level directory: its directories' lines, its root.
    async fn finish_top(&mut self) -> Result<(), String> {
        let Some(prefix) = self.top_dir.take() else { return Ok(()) };
        let root = std::mem::take(&mut self.root);
        let mut lines = Vec::new();
        let node = dir_node(self.f, &root, "", &mut lines, 0)?;
        self.root = root;
        for (path, n) in lines {
            self.emit(&join(&prefix, &path), Some(&n), 0).await;
        }
        self.last_root = Some(node);
        Ok(())
    }

    /// One part of the upload.
    async fn part(&mut self, mp: &mut Multipart, head: PartHead) -> Result<(), String> {
        let path = head.name.trim_start_matches('/').to_string();
        let (top, rel) = if self.params.wrap {
            (String::new(), path)
        } else {
            match path.split_once('/') {
                Some((t, r)) => (t.to_string(), r.to_string()),
                None => (path, String::new()),
            }
        };
        if self.top_dir.as_deref() != Some(top.as_str()) || (rel.is_empty() && !self.params.wrap) {
            self.finish_top().await?;
        }
        self.allocate()?;
        if rel.is_empty() && !self.params.wrap {
            if head.kind == Kind::Directory {
                self.top_dir = Some(top);
                return Ok(());
            }
            let n = self.content(mp, head.kind, "").await?;
            self.root.entries.insert(n.cid.to_string(), Entry::File(n.clone()));
            self.emit(&top, Some(&n), 0).await;
            self.last_root = Some(n);
            return Ok(());
        }
        self.top_dir = Some(top.clone());
        let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        if segs.len() > MAX_DEPTH {
            return Err(format!("paths deeper than {MAX_DEPTH} are not simulated"));
        }
        if head.kind == Kind::Directory {
            return self.root.mkdir_p(&segs).map(|_| ());
        }
        let n = self.content(mp, head.kind, &rel).await?;
        let (name, parent) = match segs.split_last() {
            Some((name, parent)) => (name.to_string(), parent),
            None => (n.cid.to_string(), &[][..]),
        };
        self.root.mkdir_p(parent)?.entries.insert(name, Entry::File(n.clone()));
        self.emit(&join(&top, &rel), Some(&n), 0).await;
        Ok(())
    }

    /// The node of a file or symlink part, its bytes read as they arrive.
    async fn content(
        &mut self,
        mp: &mut Multipart,
        kind: Kind,
        path: &str,
    ) -> Result<Link, String> {
        if self.params.nocopy {
            return Err("missing file path or URL, can't create filestore reference".into());
        }
        if kind == Kind::Symlink {
            let mut target = Vec::new();
            while let Some(d) = mp.read(64 * 1024).await? {
                target.extend_from_slice(&d);
                if target.len() > 1024 * 1024 {
                    return Err("symlink target too long".into());
                }
            }
            return Ok(unixfs::symlink(self.f, &target));
        }
        let chunk = self.chunker.clone()?;
        let mut b = FileBuilder::new(Format { chunk, ..self.f });
        let (mut reported, mut cut) = (0, false);
        // The size splitter takes a cut body (`io.ErrUnexpectedEOF`) for the end of the file.
        loop {
            let d = match mp.read(1024 * 1024).await {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) if e == super::multipart::UNEXPECTED_EOF => {
                    cut = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            if !self.params.progress {
                b.push(&d);
                continue;
            }
            // The splitter's reads end at each chunk's end: that is where a progress line can be.
            let mut d = &d[..];
            while !d.is_empty() {
                let take = d.len().min(chunk - (b.bytes % chunk as u64) as usize);
                b.push(&d[..take]);
                d = &d[take..];
                if b.bytes.is_multiple_of(chunk as u64) && b.bytes - reported >= PROGRESS_EVERY {
                    reported = b.bytes;
                    self.emit(path, None, reported).await;
                }
            }
        }
        // The progress reader reports the end on `io.EOF` only, not on a cut.
        if self.params.progress && !cut {
            self.progress_end(path, b.bytes, reported, chunk).await;
        }
        Ok(b.finish())
    }

    /// The progress lines at a file's end: the read that met the end of the part reports, and
    /// so does every later read of the splitter, which the balanced layout asks for each time it
    /// checks for more data after the last full chunk.
    async fn progress_end(&mut self, path: &str, bytes: u64, reported: u64, chunk: usize) {
        if !bytes.is_multiple_of(chunk as u64) {
            self.emit(path, None, bytes).await;
            return;
        }
        if bytes > 0 && reported != bytes {
            self.emit(path, None, bytes).await;
        }
        for _ in 0..unixfs::reads_after_end(bytes / chunk as u64) {
            self.emit(path, None, bytes).await;
        }
    }
}

/// A directory's node, with the lines of it and of the directories below it (children first,
/// by name), as the adder's `outputDirs` writes them.
fn dir_node(
    f: Format,
    d: &Dir,
    path: &str,
    lines: &mut Vec<(String, Link)>,
    depth: usize,
) -> Result<Link, String> {
    if depth > MAX_DEPTH {
        return Err(format!("paths deeper than {MAX_DEPTH} are not simulated"));
    }
    let mut links: Vec<(&str, Link)> = Vec::with_capacity(d.entries.len());
    for (name, e) in &d.entries {
        match e {
            Entry::File(l) => links.push((name, l.clone())),
            Entry::Dir(sub) => {
                links.push((name, dir_node(f, sub, &join(path, name), lines, depth + 1)?))
            }
        }
    }
    // boxo turns a directory into a HAMT once its links' names and CIDs pass 256 KiB.
    let estimated: usize = links.iter().map(|(n, l)| n.len() + l.cid.encoded_len()).sum();
    if estimated > HAMT_SHARDING_SIZE {
        return Err(format!(
            "directory {path:?}: HAMT-sharded directories (links over 256 KiB) are not simulated"
        ));
    }
    let node = unixfs::directory(f, links.iter().map(|(n, l)| (*n, l)));
    lines.push((path.to_string(), node.clone()));
    Ok(node)
}

/// What one add ends in: the error for the trailer, or the root.
enum Outcome {
    Root,
    Failed(String),
    /// No entry at all: the real handler dereferences a nil block streamer and its goroutine
    /// panics, so the connection closes with no answer.
    Panic,
}

async fn run(a: &mut Adder, mp: &mut Multipart) -> Outcome {
    let walk = async {
        while let Some(head) = mp.next_part().await? {
            a.part(mp, head).await?;
        }
        a.finish_top().await
    };
    if let Err(e) = walk.await {
        return Outcome::Failed(e);
    }
    let Some(root) = a.last_root.clone() else { return Outcome::Panic };
    if a.params.no_pin {
        return Outcome::Root;
    }
    let mut opts = a.opts.clone();
    opts.user_allocations = a.dests.clone();
    match super::api::add_pin(&a.c, a.p, &root.cid.to_string(), opts) {
        Ok(()) => Outcome::Root,
        Err((_, m)) => Outcome::Failed(m),
    }
}

/// `POST /add`: 400 for what the handler refuses before answering, else the add.
pub async fn handle(c: &Arc<Cluster>, p: usize, req: &Request, q: &Query) -> Option<Response> {
    let rx = req.body_stream.lock().ok().and_then(|mut g| g.take());
    let b = match boundary(req.header("content-type")) {
        Ok(b) => b,
        Err(e) => return Some(error(400, e)),
    };
    let (params, opts) = match parse_params(q) {
        Ok(v) => v,
        Err(e) => return Some(error(400, &e)),
    };
    let rx = match rx {
        Some(rx) => rx,
        None => {
            // The body was read whole (not the `/add` path as sent): replay it.
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Ok(req.body.clone()));
            rx
        }
    };
    let mut mp = Multipart::new(rx, &b);
    let f = match format_of(&params) {
        Ok(f) => f,
        Err(e) => return Some(stream_answer(vec![Chunk::End(trailer(&e))])),
    };
    let chunker = chunk_size(&params.chunker);
    let buffered = !params.stream_channels;
    // As the adder's output channel: 200 lines may wait for the client to read.
    let (tx, mut lines) = mpsc::channel::<Chunk>(200);
    let out = if buffered { Out::Buffer(Vec::new()) } else { Out::Stream(tx.clone()) };
    let mut a = Adder {
        c: c.clone(),
        p,
        params,
        opts,
        f,
        chunker,
        root: Dir::default(),
        top_dir: None,
        last_root: None,
        dests: None,
        out,
    };
    if buffered {
        return buffered_answer(run(&mut a, &mut mp).await, a.out);
    }
    tokio::spawn(async move {
        let end = match run(&mut a, &mut mp).await {
            Outcome::Root => Chunk::End(Vec::new()),
            Outcome::Failed(e) => Chunk::End(trailer(&e)),
            Outcome::Panic => Chunk::Abort,
        };
        let _ = tx.send(end).await;
    });
    // Go writes the head at the first flush: an add that panics before any line gets no answer.
    let first = lines.recv().await?;
    if matches!(first, Chunk::Abort) {
        return None;
    }
    let rest =
        futures::stream::unfold(lines, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let body = futures::StreamExt::chain(futures::stream::iter([first]), rest);
    Some(with_add_headers(Response::new(200, Body::Stream(Box::pin(body)))))
}

fn trailer(e: &str) -> Vec<(String, String)> {
    vec![("X-Stream-Error".into(), e.replace(['\r', '\n'], " "))]
}

fn stream_answer(chunks: Vec<Chunk>) -> Response {
    with_add_headers(Response::new(200, Body::Stream(Box::pin(futures::stream::iter(chunks)))))
}

/// The headers of `AddMultipartHTTPHandler` (streaming): no keep-alive, a declared trailer.
fn with_add_headers(mut r: Response) -> Response {
    r.close = true;
    r.header("Cache-Control", "no-cache")
        .header("Content-Type", "application/json")
        .header("Trailer", "X-Stream-Error")
        .header("X-Chunked-Output", "1")
}

/// `stream-channels=false`: one JSON array after the add (`null` when no line), or a 500.
fn buffered_answer(o: Outcome, out: Out) -> Option<Response> {
    let lines = match out {
        Out::Buffer(v) => v,
        Out::Stream(_) => Vec::new(),
    };
    let mut r = match o {
        Outcome::Panic => return None,
        Outcome::Failed(e) => error(500, &e),
        Outcome::Root => {
            let v = if lines.is_empty() { serde_json::Value::Null } else { lines.into() };
            json(200, &v)
        }
    };
    r.close = true;
    Some(r.header("Cache-Control", "no-cache"))
}

fn json<T: Serialize + ?Sized>(status: u16, v: &T) -> Response {
    let mut body = Vec::with_capacity(256);
    super::pin::to_go_json(&mut body, v);
    body.push(b'\n');
    Response::new(status, Body::Full(body)).header("Content-Type", "application/json")
}

fn error(code: u16, message: &str) -> Response {
    json(code, &serde_json::json!({ "code": code, "message": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_params_as_go_parses_them() {
        let (p, _) = parse_params(&Query::parse("")).expect("defaults");
        assert_eq!((p.cid_version, p.raw_leaves, p.stream_channels), (0, false, true));
        let (p, _) = parse_params(&Query::parse("cid-version=1")).expect("v1");
        assert!(p.raw_leaves, "CIDv1 implies raw leaves");
        let (p, _) = parse_params(&Query::parse("cid-version=1&raw-leaves=false")).expect("v1");
        assert!(!p.raw_leaves);
        let e = parse_params(&Query::parse("cid-version=x")).unwrap_err();
        assert_eq!(e, "parameter cid-version invalid");
        let e = parse_params(&Query::parse("wrap-with-directory=yes")).unwrap_err();
        assert_eq!(e, "parameter wrap-with-directory invalid");
        assert_eq!(
            parse_params(&Query::parse("layout=x")).unwrap_err(),
            "layout parameter is invalid"
        );
        assert_eq!(
            parse_params(&Query::parse("format=x")).unwrap_err(),
            "format parameter is invalid"
        );
    }

    #[test]
    fn chunkers() {
        assert_eq!(chunk_size("size-262144"), Ok(262144));
        assert_eq!(chunk_size("default"), Ok(262144));
        assert_eq!(chunk_size("size-0").unwrap_err(), "chunker size must be greater than 0");
        assert_eq!(
            chunk_size("size-x").unwrap_err(),
            "strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(chunk_size("bogus").unwrap_err(), "unrecognized chunker option: bogus");
        assert!(chunk_size("size-2097152").unwrap_err().contains("2096896"));
    }
}
