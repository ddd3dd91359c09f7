//! `POST /add` (docs/cluster-api.md §4 "POST /add"): the local paths walked into the parts a
//! multipart upload carries, named as `ipfs-cluster-ctl add` names them; the query; the body
//! streamed from the files as the peer reads it (never held in memory); and the answer's
//! `AddedOutput` lines.
//!
//! One upload per path given: the cluster pins only the root of an upload's **last** top-level
//! entry, so several paths in one upload would leave all but the last unpinned. With
//! `wrap-with-directory` the paths go in one upload, whose root (the wrapping directory) is the pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// One part of an upload.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The name the cluster gives it: the path in the upload (`docs/sub/a.txt`).
    pub name: String,
    /// Where it is on this machine (absolute).
    pub local: PathBuf,
    pub kind: EntryKind,
    /// The file's bytes (0 for a directory; the target's length for a symlink).
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl EntryKind {
    /// As stored (`added.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            EntryKind::File => "application/octet-stream",
            EntryKind::Directory => "application/x-directory",
            EntryKind::Symlink => "application/symlink",
        }
    }
}

/// One `POST /add`: its parts in the order they are sent, and the name of the entry it pins.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub entries: Vec<Entry>,
    /// The `name` of the answer line that is the pinned root: the top-level entry's name, or `""`
    /// for the wrapping directory.
    pub root: String,
    /// The local paths given for it: one, or with `--wrap` all of them.
    pub paths: Vec<PathBuf>,
}

impl Upload {
    /// The paths, as given, for messages.
    pub fn label(&self) -> String {
        self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().filter(|e| e.kind == EntryKind::File).map(|e| e.bytes).sum()
    }

    /// The local path of the entry the cluster names `name` (`None` for the wrapping directory).
    pub fn local_of(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Why the paths cannot be uploaded; found before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{path}: cannot be read: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{0}: its name is not UTF-8, which the cluster's answer cannot name")]
    NotUtf8(PathBuf),
    #[error("{0}: has no name to upload it under (give the directory by its name)")]
    NoName(PathBuf),
    #[error("{0}: neither a file, a directory nor a symlink")]
    Special(PathBuf),
    #[error(
        "{first} and {second} are both named {name:?}: with --wrap every path must have its own name"
    )]
    SameName { name: String, first: PathBuf, second: PathBuf },
}

/// The uploads for `paths`: one per path, or one in all with `wrap`. Hidden entries (a name
/// starting with `.`) inside a directory are left out unless `hidden`, as `ipfs-cluster-ctl add`
/// does; a path given by name is always uploaded. Every file is opened once here, so one that
/// cannot be read stops the command before anything is sent.
pub fn walk(paths: &[PathBuf], wrap: bool, hidden: bool) -> Result<Vec<Upload>, WalkError> {
    let mut uploads = Vec::new();
    for p in paths {
        let name = top_name(p)?;
        let abs = std::path::absolute(p)
            .map_err(|e| WalkError::Unreadable { path: p.clone(), source: e })?;
        let mut entries = Vec::new();
        walk_one(&abs, name.clone(), hidden, &mut entries)?;
        uploads.push(Upload { entries, root: name, paths: vec![p.clone()] });
    }
    if !wrap || uploads.is_empty() {
        return Ok(uploads);
    }
    let mut seen: std::collections::BTreeMap<&str, &Path> = std::collections::BTreeMap::new();
    for u in &uploads {
        if let Some(first) = seen.insert(&u.root, &u.paths[0]) {
            return Err(WalkError::SameName {
                name: u.root.clone(),
                first: first.to_path_buf(),
                second: u.paths[0].clone(),
            });
        }
    }
    let paths = uploads.iter().flat_map(|u| u.paths.clone()).collect();
    let entries = uploads.into_iter().flat_map(|u| u.entries).collect();
    Ok(vec![Upload { entries, root: String::new(), paths }])
}

/// The name of a path given on the command line: its last component (`.` and `..` resolved).
fn top_name(p: &Path) -> Result<String, WalkError> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WalkError::Missing(p.to_path_buf()),
        _ => WalkError::Unreadable { path: p.to_path_buf(), source: e },
    })?;
    let named = match p.file_name() {
        Some(n) => Some(n.to_os_string()),
        None if meta.is_dir() => std::fs::canonicalize(p)
            .map_err(|e| WalkError::Unreadable { path: p.to_path_buf(), source: e })?
            .file_name()
            .map(|n| n.to_os_string()),
        None => None,
    };
    let name = named.ok_or_else(|| WalkError::NoName(p.to_path_buf()))?;
    name.into_string().map_err(|_| WalkError::NotUtf8(p.to_path_buf()))
}

fn walk_one(p: &Path, name: String, hidden: bool, out: &mut Vec<Entry>) -> Result<(), WalkError> {
    let unreadable = |e| WalkError::Unreadable { path: p.to_path_buf(), source: e };
    let meta = std::fs::symlink_metadata(p).map_err(unreadable)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(p).map_err(unreadable)?;
        let bytes = target.as_os_str().len() as u64;
        out.push(Entry { name, local: p.to_path_buf(), kind: EntryKind::Symlink, bytes });
    } else if ft.is_file() {
        std::fs::File::open(p).map_err(unreadable)?;
        out.push(Entry { name, local: p.to_path_buf(), kind: EntryKind::File, bytes: meta.len() });
    } else if ft.is_dir() {
        let mut children = Vec::new();
        for d in std::fs::read_dir(p).map_err(unreadable)? {
            let d = d.map_err(unreadable)?;
            let n = d.file_name().into_string().map_err(|_| WalkError::NotUtf8(d.path()))?;
            if hidden || !n.starts_with('.') {
                children.push(n);
            }
        }
        // Go's os.ReadDir order: by name, byte for byte.
        children.sort();
        out.push(Entry {
            name: name.clone(),
            local: p.to_path_buf(),
            kind: EntryKind::Directory,
            bytes: 0,
        });
        for c in children {
            walk_one(&p.join(&c), format!("{name}/{c}"), hidden, out)?;
        }
    } else {
        return Err(WalkError::Special(p.to_path_buf()));
    }
    Ok(())
}

/// Go's `url.QueryEscape`: what `ipfs-cluster-ctl` puts in a part's `filename` (the peer
/// query-unescapes it; Go's `FileName()` would otherwise keep only the part after the last `/`).
const QUERY_ESCAPE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn query_escape(s: &str) -> String {
    utf8_percent_encode(s, QUERY_ESCAPE).to_string().replace("%20", "+")
}

/// What the upload has sent so far, shared with whoever shows progress or watches for a stall.
#[derive(Debug, Default, Clone)]
pub struct Sent(Arc<AtomicU64>);

impl Sent {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// The multipart body of `upload`: each file read in 256 KiB pieces as the peer takes them.
pub fn form(upload: &Upload, sent: &Sent) -> std::io::Result<reqwest::multipart::Form> {
    let mut form = reqwest::multipart::Form::new().percent_encode_noop();
    for e in &upload.entries {
        let part = match e.kind {
            EntryKind::Directory => reqwest::multipart::Part::bytes(Vec::new()),
            EntryKind::Symlink => {
                let target = std::fs::read_link(&e.local)?;
                reqwest::multipart::Part::bytes(target.into_os_string().into_encoded_bytes())
            }
            EntryKind::File => {
                let stream = file_stream(e.local.clone(), e.bytes, sent.clone());
                reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::wrap_stream(stream),
                    e.bytes,
                )
            }
        };
        let part = part
            .file_name(query_escape(&e.name))
            .mime_str(e.kind.content_type())
            .map_err(std::io::Error::other)?;
        form = form.part("file", part);
    }
    Ok(form)
}

/// A file's bytes as a stream of pieces; a file that changed length since it was walked fails
/// the upload (the length was sent ahead).
fn file_stream(
    path: PathBuf,
    len: u64,
    sent: Sent,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt as _;
    struct State {
        path: PathBuf,
        file: Option<tokio::fs::File>,
        left: u64,
        sent: Sent,
    }
    let state = State { path, file: None, left: len, sent };
    futures::stream::try_unfold(state, |mut s| async move {
        let file = match &mut s.file {
            Some(f) => f,
            None => s.file.insert(tokio::fs::File::open(&s.path).await?),
        };
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        let n = file.read_buf(&mut buf).await? as u64;
        if n == 0 && s.left == 0 {
            return Ok(None);
        }
        if n == 0 || n > s.left {
            let what = if n == 0 { "shorter" } else { "longer" };
            return Err(std::io::Error::other(format!(
                "{} became {what} while it was being uploaded",
                s.path.display()
            )));
        }
        s.left -= n;
        s.sent.add(n);
        Ok(Some((buf.freeze(), s)))
    })
}

/// The add options that change the CIDs (docs/cluster-api.md §4 "POST /add", Query).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AddOptions {
    pub cid_version: Option<u8>,
    pub raw_leaves: Option<bool>,
    pub chunker: Option<String>,
    pub hash: Option<String>,
    pub wrap: bool,
}

/// The pin options every upload's pin gets (docs/cluster-api.md §3).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PinOptions {
    pub name: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub replication: Option<(i32, i32)>,
    pub allocations: Vec<String>,
    pub expire_at: Option<String>,
}

/// The query of one upload: the pin options, then the add options, every value escaped.
pub fn query(pin: &PinOptions, name: Option<&str>, add: &AddOptions) -> String {
    let mut q: Vec<(String, String)> = Vec::new();
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        q.push(("name".into(), n.into()));
    }
    for (k, v) in &pin.metadata {
        q.push((format!("meta-{k}"), v.clone()));
    }
    if let Some((min, max)) = pin.replication {
        q.push(("replication-min".into(), min.to_string()));
        q.push(("replication-max".into(), max.to_string()));
    }
    if !pin.allocations.is_empty() {
        q.push(("user-allocations".into(), pin.allocations.join(",")));
    }
    if let Some(t) = &pin.expire_at {
        q.push(("expire-at".into(), t.clone()));
    }
    if let Some(v) = add.cid_version {
        q.push(("cid-version".into(), v.to_string()));
    }
    if let Some(r) = add.raw_leaves {
        q.push(("raw-leaves".into(), r.to_string()));
    }
    if let Some(c) = &add.chunker {
        q.push(("chunker".into(), c.clone()));
    }
    if let Some(h) = &add.hash {
        q.push(("hash".into(), h.clone()));
    }
    if add.wrap {
        q.push(("wrap-with-directory".into(), "true".into()));
    }
    let esc = |s: &str| utf8_percent_encode(s, QUERY_ESCAPE).to_string();
    q.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect::<Vec<_>>().join("&")
}

/// One line of the answer: a file or directory added (`AddedOutput`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Added {
    pub name: String,
    pub cid: Option<String>,
    /// The DAG's cumulative size (absent when 0).
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub allocations: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_go_escapes_them() {
        assert_eq!(query_escape("a b+c/d%e&f"), "a+b%2Bc%2Fd%25e%26f");
        assert_eq!(query_escape("ünï.txt"), "%C3%BCn%C3%AF.txt");
    }

    #[test]
    fn the_query_carries_every_option() {
        let pin = PinOptions {
            name: None,
            metadata: [("org".to_string(), "hr dag".to_string())].into(),
            replication: Some((1, 2)),
            allocations: vec!["12D3KooA".into(), "12D3KooB".into()],
            expire_at: Some("2099-01-01T00:00:00Z".into()),
        };
        let add = AddOptions {
            cid_version: Some(1),
            raw_leaves: Some(false),
            chunker: Some("size-1000".into()),
            hash: Some("sha2-512".into()),
            wrap: true,
        };
        assert_eq!(
            query(&pin, Some("x&y"), &add),
            "name=x%26y&meta-org=hr%20dag&replication-min=1&replication-max=2&user-allocations=12D3KooA%2C12D3KooB&expire-at=2099-01-01T00%3A00%3A00Z&cid-version=1&raw-leaves=false&chunker=size-1000&hash=sha2-512&wrap-with-directory=true"
        );
        assert_eq!(query(&PinOptions::default(), Some(""), &AddOptions::default()), "");
    }

    #[test]
    fn a_directory_is_walked_in_go_order_without_hidden_entries() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("docs");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        std::fs::write(top.join("b.txt"), "bb").unwrap();
        std::fs::write(top.join("a.txt"), "a").unwrap();
        std::fs::write(top.join(".secret"), "s").unwrap();
        std::fs::write(top.join("sub/c.csv"), "ccc").unwrap();
        let names = |hidden| -> Vec<String> {
            let u = walk(std::slice::from_ref(&top), false, hidden).unwrap();
            u[0].entries.iter().map(|e| e.name.clone()).collect()
        };
        assert_eq!(
            names(false),
            ["docs", "docs/a.txt", "docs/b.txt", "docs/sub", "docs/sub/c.csv"]
        );
        assert_eq!(names(true)[1], "docs/.secret");
        let u = walk(std::slice::from_ref(&top), false, false).unwrap();
        assert_eq!(u[0].bytes(), 6);
        assert_eq!(u[0].root, "docs");
    }

    #[test]
    fn bad_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(matches!(walk(&[missing], false, false), Err(WalkError::Missing(_))));
        let a = d.path().join("a");
        let b = d.path().join("x/a");
        std::fs::create_dir_all(d.path().join("x")).unwrap();
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "2").unwrap();
        assert_eq!(walk(&[a.clone(), b.clone()], false, false).unwrap().len(), 2);
        assert!(matches!(walk(&[a, b], true, false), Err(WalkError::SameName { .. })));
    }
}
