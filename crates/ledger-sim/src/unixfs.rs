//! The UnixFS DAG that `/add` builds, block for block as the cluster's adder does with boxo's
//! importer (v0.39.0): a size splitter, the balanced layout with 174 links per node, leaves as
//! UnixFS `File` nodes or raw blocks, dag-pb nodes with their links before their data, directories
//! as MFS builds them (links sorted by name). It computes CIDs and sizes only: no block is kept,
//! so a file of any size costs one chunk and the links of one path through the tree.
//!
//! Not here: reading the upload (`multipart.rs`) or the order of the answer lines (`add.rs`).

use cid::Cid;
use sha2::{Digest, Sha256};

/// boxo's `DefaultLinksPerBlock`: 8192 / 47.
pub const LINKS_PER_NODE: usize = 174;
const DAG_PB: u64 = 0x70;
const RAW: u64 = 0x55;
const SHA2_256: u64 = 0x12;

/// The parameters of the add that change the CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub cid_version: u8,
    pub raw_leaves: bool,
    pub chunk: usize,
    pub hash: Hash,
}

/// The multihash functions the simulator computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha2_256,
    Sha2_512,
    DblSha2_256,
}

impl Hash {
    /// By go-multihash's name (any case).
    pub fn by_name(name: &str) -> Option<Hash> {
        match name.to_ascii_lowercase().as_str() {
            "sha2-256" => Some(Hash::Sha2_256),
            "sha2-512" => Some(Hash::Sha2_512),
            "dbl-sha2-256" => Some(Hash::DblSha2_256),
            _ => None,
        }
    }

    fn multihash(self, block: &[u8]) -> cid::multihash::Multihash<64> {
        let (code, digest): (u64, Vec<u8>) = match self {
            Hash::Sha2_256 => (SHA2_256, Sha256::digest(block).to_vec()),
            Hash::Sha2_512 => (0x13, sha2::Sha512::digest(block).to_vec()),
            Hash::DblSha2_256 => (0x56, Sha256::digest(Sha256::digest(block)).to_vec()),
        };
        cid::multihash::Multihash::<64>::wrap(code, &digest).unwrap_or_default()
    }
}

/// A link as dag-pb stores it: the child's CID and its cumulative size (`Tsize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    pub size: u64,
}

/// A node once built: its CID and the `size` the answer shows (the node's `Size()`).
pub type Node = Link;

fn cid_of(codec: u64, version: u8, hash: Hash, block: &[u8]) -> Cid {
    let mh = hash.multihash(block);
    if version == 0 && codec == DAG_PB {
        Cid::new_v0(mh).unwrap_or_else(|_| Cid::new_v1(codec, mh))
    } else {
        Cid::new_v1(codec, mh)
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

/// The UnixFS `Data` message (proto2, fields in number order, `blocksizes` unpacked).
fn unixfs_data(
    typ: u64,
    data: Option<&[u8]>,
    filesize: Option<u64>,
    blocksizes: &[u64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.map_or(0, <[u8]>::len) + blocksizes.len() * 4);
    field_varint(&mut out, 1, typ);
    if let Some(d) = data {
        field_bytes(&mut out, 2, d);
    }
    if let Some(s) = filesize {
        field_varint(&mut out, 3, s);
    }
    for b in blocksizes {
        field_varint(&mut out, 4, *b);
    }
    out
}

/// A dag-pb node (go-codec-dagpb): every link (`Hash`, `Name`, `Tsize`), then `Data`.
fn dag_pb(links: &[(&str, &Link)], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + links.len() * 48 + 8);
    for (name, l) in links {
        let mut pl = Vec::with_capacity(48 + name.len());
        field_bytes(&mut pl, 1, &l.cid.to_bytes());
        field_bytes(&mut pl, 2, name.as_bytes());
        field_varint(&mut pl, 3, l.size);
        field_bytes(&mut out, 2, &pl);
    }
    field_bytes(&mut out, 1, data);
    out
}

/// A dag-pb node's CID and `Size()`: its block's length plus its links' sizes.
fn pb_node(f: Format, links: &[(&str, &Link)], data: &[u8]) -> Node {
    let block = dag_pb(links, data);
    let size = block.len() as u64 + links.iter().map(|(_, l)| l.size).sum::<u64>();
    Link { cid: cid_of(DAG_PB, f.cid_version, f.hash, &block), size }
}

/// One leaf: a raw block, or a UnixFS `File` node holding the data (none for an empty file).
fn leaf(f: Format, data: &[u8]) -> (Node, u64) {
    let len = data.len() as u64;
    if f.raw_leaves {
        return (Link { cid: cid_of(RAW, 1, f.hash, data), size: len }, len);
    }
    let d = if data.is_empty() { None } else { Some(data) };
    (pb_node(f, &[], &unixfs_data(2, d, Some(len), &[])), len)
}

/// An inner file node over `children` (each with the file bytes below it).
fn inner(f: Format, children: &[(Node, u64)]) -> (Node, u64) {
    let sizes: Vec<u64> = children.iter().map(|(_, s)| *s).collect();
    let total = sizes.iter().sum();
    let links: Vec<(&str, &Link)> = children.iter().map(|(n, _)| ("", n)).collect();
    (pb_node(f, &links, &unixfs_data(2, None, Some(total), &sizes)), total)
}

/// A file built as its bytes arrive: `push` any amount, `finish` for the root.
pub struct FileBuilder {
    f: Format,
    pending: Vec<u8>,
    /// `levels[0]`: the leaves not yet under a node; `levels[i]`: the nodes of depth `i`.
    levels: Vec<Vec<(Node, u64)>>,
    pub bytes: u64,
}

impl FileBuilder {
    pub fn new(f: Format) -> FileBuilder {
        FileBuilder { f, pending: Vec::with_capacity(f.chunk), levels: vec![Vec::new()], bytes: 0 }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let take = (self.f.chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == self.f.chunk {
                let l = leaf(self.f, &self.pending);
                self.pending.clear();
                self.add(0, l);
            }
        }
    }

    /// Adds a node at `depth`; a full level becomes a node one level up first, as the balanced
    /// layout fills a node only when more data follows.
    fn add(&mut self, depth: usize, n: (Node, u64)) {
        if self.levels[depth].len() == LINKS_PER_NODE {
            let full = std::mem::take(&mut self.levels[depth]);
            if self.levels.len() == depth + 1 {
                self.levels.push(Vec::new());
            }
            let up = inner(self.f, &full);
            self.add(depth + 1, up);
        }
        self.levels[depth].push(n);
    }

    pub fn finish(mut self) -> Node {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let l = leaf(self.f, &rest);
            self.add(0, l);
        }
        if self.levels[0].is_empty() {
            return leaf(self.f, &[]).0;
        }
        let mut depth = 0;
        loop {
            let top = depth + 1 == self.levels.len();
            if top && self.levels[depth].len() == 1 {
                return self.levels[depth]
                    .pop()
                    .map(|(n, _)| n)
                    .unwrap_or_else(|| leaf(self.f, &[]).0);
            }
            let nodes = std::mem::take(&mut self.levels[depth]);
            if top {
                self.levels.push(Vec::new());
            }
            let up = inner(self.f, &nodes);
            self.add(depth + 1, up);
            depth += 1;
        }
    }
}

/// How many times boxo's balanced layout asks the splitter for more after a file of `leaves`
/// full chunks has ended (each `Done()` then reads again, and each such read reports progress).
pub fn reads_after_end(leaves: u64) -> u64 {
    struct Splitter {
        left: u64,
        after: u64,
    }
    impl Splitter {
        fn done(&mut self) -> bool {
            if self.left == 0 {
                self.after += 1;
            }
            self.left == 0
        }
    }
    fn fill(s: &mut Splitter, mut children: usize, depth: usize) {
        while children < LINKS_PER_NODE && !s.done() {
            if depth == 1 {
                s.left -= 1;
            } else {
                fill(s, 0, depth - 1);
            }
            children += 1;
        }
    }
    let mut s = Splitter { left: leaves, after: 0 };
    if s.done() {
        return s.after;
    }
    s.left -= 1;
    let mut depth = 1;
    while !s.done() {
        fill(&mut s, 1, depth);
        depth += 1;
    }
    s.after
}

/// A symlink node: UnixFS `Symlink` with the target as data.
pub fn symlink(f: Format, target: &[u8]) -> Node {
    pb_node(f, &[], &unixfs_data(4, Some(target), Some(target.len() as u64), &[]))
}

/// A directory node over named children, sorted by name as dag-pb wants them.
pub fn directory<'a>(f: Format, children: impl Iterator<Item = (&'a str, &'a Link)>) -> Node {
    let mut links: Vec<(&str, &Link)> = children.collect();
    links.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pb_node(f, &links, &unixfs_data(1, None, None, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: Format =
        Format { cid_version: 0, raw_leaves: false, chunk: 262144, hash: Hash::Sha2_256 };
    const V1: Format =
        Format { cid_version: 1, raw_leaves: true, chunk: 262144, hash: Hash::Sha2_256 };

    fn add(f: Format, data: &[u8]) -> Node {
        let mut b = FileBuilder::new(f);
        for piece in data.chunks(10_000) {
            b.push(piece);
        }
        b.finish()
    }

    #[test]
    fn well_known_cids() {
        // The empty file and the empty directory every IPFS implementation agrees on.
        let empty = add(V0, b"");
        assert_eq!(empty.cid.to_string(), "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
        assert_eq!(empty.size, 6);
        let raw = add(V1, b"");
        assert_eq!(
            raw.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(raw.size, 0);
        let dir = directory(V0, std::iter::empty());
        assert_eq!(dir.cid.to_string(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
        assert_eq!(dir.size, 4);
        let hello = add(V0, b"hello world\n");
        assert_eq!(hello.cid.to_string(), "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
    }

    #[test]
    fn the_cid_does_not_depend_on_how_the_bytes_arrive() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        for f in [V0, V1, Format { chunk: 1000, ..V0 }] {
            let whole = add(f, &data);
            for piece in [1usize, 999, 1000, 1001, 65536, 262144, 262145] {
                let mut b = FileBuilder::new(f);
                for p in data.chunks(piece) {
                    b.push(p);
                }
                assert_eq!(b.finish(), whole, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn reads_after_the_end_follow_the_layouts_checks() {
        // The empty file's one read; one leaf: the layout's loop; 20: the node's loop and the
        // layout's (as a real peer reports a 5 MiB file).
        assert_eq!([0, 1, 20, 174].map(reads_after_end), [1, 1, 2, 1]);
        assert_eq!(reads_after_end(175), 3);
    }

    #[test]
    fn the_tree_grows_a_level_only_when_more_leaves_follow() {
        let f = Format { chunk: 1, raw_leaves: true, ..V0 };
        for (n, depth) in
            [(1usize, 0usize), (2, 1), (174, 1), (175, 2), (174 * 174, 2), (174 * 174 + 1, 3)]
        {
            let mut b = FileBuilder::new(f);
            b.push(&vec![7u8; n]);
            let levels = b.levels.len();
            let root = b.finish();
            assert_eq!(root.cid.codec() == RAW, depth == 0, "{n} leaves");
            assert!(levels <= depth + 1, "{n} leaves: {levels} levels before finishing");
        }
    }
}
