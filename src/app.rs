//! What commands share: the ledger database path, the cluster target, the async runtime, and the output
//! helpers (aligned tables on stdout, progress on stderr only when it is a terminal).

#![warn(clippy::indexing_slicing)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use crate::cluster::{self, Target};
use crate::store::Store;

/// Where the ledger is and which cluster to talk to. Global: every command accepts them.
#[derive(Debug, Args, Clone)]
pub struct LedgerArgs {
    /// The ledger database (SQLite). Commands that write create it if missing (not its directory);
    /// commands that only read need it to exist.
    #[arg(
        long,
        global = true,
        env = "LEDGER_DB",
        default_value = "ledger.db",
        value_name = "FILE"
    )]
    pub db: PathBuf,
    /// The cluster's REST API: an http(s) URL or a multiaddr (/ip4/127.0.0.1/tcp/9094); several,
    /// comma-separated, name several peers (the first is where ledger writes). Env: LEDGER_CLUSTER.
    /// Credentials come from LEDGER_BASIC_AUTH=user:password or LEDGER_TOKEN, never from flags.
    #[arg(long, global = true, value_name = "ADDR")]
    pub cluster: Option<String>,
    /// The cluster profile in ledger.toml (default: its `default`, or its only cluster).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// The configuration file with cluster profiles.
    #[arg(long, global = true, env = "LEDGER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Longest wait for the cluster: to connect, for a whole request, and between two reads of a
    /// stream (Go duration: 30s, 2m).
    #[arg(long, global = true, default_value = "60s", value_parser = crate::cli::parse_positive_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Find the REST APIs of the cluster's other members: ask the write peer (the first given, or
    /// --peer) for the members (GET /peers), try the hosts of each member's cluster addresses
    /// (ip4, ip6, dns) at that peer's REST port (or --rest-port), and add the ones whose GET /id
    /// answers with that member's ID to the peers given. A profile turns it on with
    /// `discover = true`.
    #[arg(long, global = true)]
    pub discover: bool,
    /// The REST port to try on the members' hosts with --discover (default: the write peer's
    /// port; profile: `rest_port`).
    #[arg(id = "rest-port", long = "rest-port", global = true, value_name = "PORT", value_parser = crate::cli::parse_port, allow_hyphen_values = true)]
    pub rest_port: Option<u16>,
}

/// Set for a command that only reads the ledger (see [`open_existing_only`]).
static EXISTING_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From here on, [`LedgerArgs::store`] opens only a ledger that exists: set by `commands::run` for
/// the commands that only read it, so that none of them creates one.
pub fn open_existing_only(on: bool) {
    EXISTING_ONLY.store(on, std::sync::atomic::Ordering::Relaxed);
}

impl LedgerArgs {
    /// Opens the ledger database, creating the file if it is missing but never a missing directory
    /// (a mistyped `--db` path is an error, not a new tree of directories).
    pub fn store(&self) -> anyhow::Result<Store> {
        if EXISTING_ONLY.load(std::sync::atomic::Ordering::Relaxed) && !self.db.exists() {
            anyhow::bail!(
                "there is no ledger at {}: nothing has been recorded there (no snapshot, no tag run yet). `ledger snapshot` starts one; --db FILE or LEDGER_DB names another",
                self.db.display()
            );
        }
        if let Some(dir) = self.db.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            anyhow::bail!(
                "cannot create the ledger {}: the directory {} does not exist (create it first, or give another --db)",
                self.db.display(),
                dir.display()
            );
        }
        Store::open(&self.db)
    }

    /// Resolves the cluster from the flags, the environment and ledger.toml.
    pub fn target(&self) -> anyhow::Result<Target> {
        let env = |k: &str| std::env::var(k).ok();
        cluster::config::resolve(&cluster::config::Sources {
            cluster: self.cluster.as_deref(),
            profile: self.profile.as_deref(),
            config: self.config.as_deref(),
            env: &env,
            discover: cluster::config::Discover { on: self.discover, rest_port: self.rest_port },
        })
    }
}

/// `println!` through [`stdout`]: a closed pipe (`ledger … | head`) ends the output quietly and the
/// command still exits with its own code; any other write error is returned.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        writeln!($crate::app::stdout(), "{}", $crate::app::shown_lines(&line))?;
    }};
}

/// Text from the cluster made safe to show on a terminal or in a log: control characters (newlines
/// included), and the invisible and direction-changing format characters, as escapes (`\n`,
/// `\u{1b}`, `\u{202e}`), so a name or key can neither move the cursor, recolour the terminal,
/// reorder a line nor break a table's layout. Everything else is shown as it is.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    shown_but(s, false)
}

/// [`shown`], but keeping line breaks: for whole lines of output.
pub fn shown_lines(s: &str) -> std::borrow::Cow<'_, str> {
    shown_but(s, true)
}

fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn shown_but(s: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let hide = |c: char| hidden(c) && !(keep_newlines && c == '\n');
    if !s.chars().any(hide) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !hide(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Set once a write to stdout found the pipe closed: nothing more is written.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdout's reader has gone (a write found the pipe closed).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Stdout for everything a command prints. When the reader has gone (a broken pipe), the output
/// ends there: that write and every later one is dropped and reported as done, so that the
/// command runs to its end and exits with the code it means (`ledger diff 1 8 | head -1` still
/// exits 1). Other write errors are returned.
pub fn stdout() -> PipeSafe<std::io::StdoutLock<'static>> {
    PipeSafe(std::io::stdout().lock())
}

/// A writer that treats a broken pipe as the end of the output (see [`stdout`]).
pub struct PipeSafe<W>(pub W);

impl<W: Write> PipeSafe<W> {
    fn guard<T>(
        &mut self,
        done: T,
        op: impl FnOnce(&mut W) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        if stdout_closed() {
            return Ok(done);
        }
        match op(&mut self.0) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(done)
            }
            r => r,
        }
    }
}

impl<W: Write> Write for PipeSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.guard(buf.len(), |w| w.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.guard((), |w| w.write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.guard((), |w| w.flush())
    }
}

/// A current-thread runtime: HTTP runs here while SQLite stays synchronous on the same thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A spinner or bar on stderr, hidden when stderr is not a terminal or with `--quiet`.
pub fn progress(quiet: bool, len: Option<u64>) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    match len {
        Some(n) => {
            let pb = indicatif::ProgressBar::new(n);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb
        }
        None => {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                    .expect("valid template"),
            );
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            pb
        }
    }
}

/// Prints rows as an aligned table (the last column is not padded).
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut out = stdout();
    for line in table_lines(headers, rows) {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// The lines of [`print_table`]: the headers, then one line a row, columns two spaces apart and
/// padded by display width (a CJK character or an emoji takes two terminal cells), the last column
/// not padded.
pub fn table_lines(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let headers: Vec<std::borrow::Cow<str>> = headers.iter().map(|h| shown(h)).collect();
    let rows: Vec<Vec<std::borrow::Cow<str>>> =
        rows.iter().map(|r| r.iter().map(|c| shown(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(c.width()),
                None => widths.push(c.width()),
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < n {
                let w = widths.get(i).copied().unwrap_or(0);
                s.extend(std::iter::repeat_n(' ', w.saturating_sub(c.width())));
            }
        }
        s
    };
    let mut lines = vec![line(headers.iter().map(|h| h.as_ref()).collect())];
    lines.extend(rows.iter().map(|r| line(r.iter().map(|c| c.as_ref()).collect())));
    lines
}

/// A peer ID shortened for tables: `12D3Ko…aBcDeF`, the first and last six characters; an ID of
/// at most 16 characters is left whole. Counts characters, not bytes, so an ID that is not ASCII
/// (from a server that is not what it says) is shortened rather than cut inside a character.
pub fn short_peer(peer: &str) -> String {
    let n = peer.chars().count();
    if n <= 16 {
        return peer.to_string();
    }
    let head: String = peer.chars().take(6).collect();
    let tail: String = peer.chars().skip(n - 6).collect();
    format!("{head}…{tail}")
}

/// Prints a value as pretty JSON on stdout, in 64 KiB writes (stdout alone would write each line).
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = buffered_stdout();
    serde_json::to_writer_pretty(&mut out, v).map_err(io_error)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// [`stdout`] written 64 KiB at a time.
fn buffered_stdout() -> std::io::BufWriter<PipeSafe<std::io::StdoutLock<'static>>> {
    std::io::BufWriter::with_capacity(1 << 16, stdout())
}

/// Pretty JSON of `{"KEY": [items…], "count": N}` on stdout, byte for byte as [`print_json`] writes
/// that object whole, with each item serialised and written on a thread of its own as `fill` hands
/// it over: a long list is never held, and reading the items overlaps writing them. When `fill`
/// fails, the object is left open (no reader takes the part for the whole) and its error returned.
/// Returns the count.
pub fn json_list<T, E>(
    key: &str,
    fill: impl FnOnce(&mut dyn FnMut(T) -> anyhow::Result<()>) -> Result<(), E>,
) -> anyhow::Result<usize>
where
    T: serde::Serialize + Send,
    E: Into<anyhow::Error>,
{
    write_json_list(buffered_stdout, key, fill)
}

/// [`json_list`] on the writer `open` gives, opened on the writing thread.
fn write_json_list<T, E, W: Write>(
    open: impl FnOnce() -> W + Send,
    key: &str,
    fill: impl FnOnce(&mut dyn FnMut(T) -> anyhow::Result<()>) -> Result<(), E>,
) -> anyhow::Result<usize>
where
    T: serde::Serialize + Send,
    E: Into<anyhow::Error>,
{
    use serde::ser::SerializeMap as _;
    const BATCH: usize = 256;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(16);
    // Written batches come back to be freed here, where they were allocated: freeing on another
    // thread costs the allocator more than the serialising saves.
    let (back, written_batches) = std::sync::mpsc::channel::<Vec<T>>();
    let items = Drained { rx, back, count: std::cell::Cell::new(0), failed: Default::default() };
    let failed = std::sync::Arc::clone(&items.failed);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> anyhow::Result<usize> {
            let mut out = open();
            let mut ser = serde_json::Serializer::pretty(&mut out);
            let mut map = serde::Serializer::serialize_map(&mut ser, Some(2)).map_err(io_error)?;
            map.serialize_entry(key, &items).map_err(io_error)?;
            map.serialize_entry("count", &items.count.get()).map_err(io_error)?;
            map.end().map_err(io_error)?;
            writeln!(out)?;
            out.flush()?;
            Ok(items.count.get())
        });
        let (mut batch, mut writer_stopped) = (Vec::with_capacity(BATCH), false);
        let mut hand = |item: T| -> anyhow::Result<()> {
            batch.push(item);
            if batch.len() == BATCH {
                written_batches.try_iter().for_each(drop);
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                // The writer stops early only on an error, which its join returns.
                writer_stopped = tx.send(full).is_err();
                anyhow::ensure!(!writer_stopped, "stdout could not be written");
            }
            Ok(())
        };
        let filled = fill(&mut hand).map_err(Into::into);
        match &filled {
            Ok(()) if !batch.is_empty() => drop(tx.send(batch)),
            Ok(()) => {}
            Err(_) => failed.store(true, std::sync::atomic::Ordering::SeqCst),
        }
        drop(tx);
        let written = writer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (filled, written) {
            (Ok(()), written) => written,
            (Err(_), Err(w)) if writer_stopped => Err(w),
            (Err(e), _) => Err(e),
        }
    })
}

/// serde_json wraps write errors; unwrap them so that the I/O error itself is kept.
fn io_error(e: serde_json::Error) -> anyhow::Error {
    match e.io_error_kind() {
        Some(_) => anyhow::Error::from(std::io::Error::from(e)),
        None => e.into(),
    }
}

/// The items of [`json_list`] as they arrive, serialised as one sequence.
struct Drained<T> {
    rx: std::sync::mpsc::Receiver<Vec<T>>,
    back: std::sync::mpsc::Sender<Vec<T>>,
    count: std::cell::Cell<usize>,
    /// Set when the items stopped coming on an error: the sequence is then not closed.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<T: serde::Serialize> serde::Serialize for Drained<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq as _};
        let mut seq = s.serialize_seq(None)?;
        for batch in self.rx.iter() {
            for item in &batch {
                seq.serialize_element(item)?;
                self.count.set(self.count.get() + 1);
            }
            drop(self.back.send(batch));
        }
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(S::Error::custom("the list was not read to its end"));
        }
        seq.end()
    }
}

/// A CSV writer on a file, or on stdout for `-`.
pub fn csv_writer(path: &str) -> anyhow::Result<csv::Writer<Box<dyn Write>>> {
    let sink: Box<dyn Write> = if path == "-" {
        Box::new(stdout())
    } else {
        if let Some(parent) =
            std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?,
        ))
    };
    Ok(csv::Writer::from_writer(sink))
}

/// `Option` as table text.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".to_string())
}

/// SIGTERM and SIGINT, caught from the moment this is made (so one that arrives during work is seen
/// afterwards instead of killing the process).
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers; needs a running tokio runtime.
    pub fn new() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Returns when either signal arrives (or has arrived).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {

    #[test]
    fn hostile_text_is_shown_escaped() {
        assert_eq!(shown("plain 組織 🦀"), "plain 組織 🦀");
        assert_eq!(shown("a\u{1b}[31mb\r\nc\td\u{0}"), "a\\u{1b}[31mb\\r\\nc\\td\\u{0}");
        assert_eq!(shown("x\u{202e}y\u{200b}z"), "x\\u{202e}y\\u{200b}z");
        assert_eq!(shown_lines("one\ntwo\u{7}"), "one\ntwo\\u{7}");
        let lines = table_lines(&["name", "n"], &[vec!["a\nb".into(), "1".into()]]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "a\\nb  1");
    }

    use unicode_width::UnicodeWidthStr;

    use super::*;

    /// A writer into shared bytes, failing once it holds `room` bytes.
    #[derive(Clone)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>, usize);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut v = self.0.lock().unwrap();
            if v.len() + b.len() > self.1 {
                return Err(std::io::Error::other("full"));
            }
            v.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn list_of(n: usize, fail_at: Option<usize>, room: usize) -> (anyhow::Result<usize>, String) {
        let out = Shared(Default::default(), room);
        let w = out.clone();
        let got = write_json_list(
            move || std::io::BufWriter::with_capacity(64, w),
            "items",
            |hand| -> anyhow::Result<()> {
                for i in 0..n {
                    anyhow::ensure!(Some(i) != fail_at, "item {i} could not be read");
                    hand(serde_json::json!({"i": i, "text": format!("line\n{i}")}))?;
                }
                Ok(())
            },
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        (got, text)
    }

    #[test]
    fn a_json_list_is_written_as_the_whole_object_would_be() {
        for n in [0, 1, 255, 256, 257, 1000] {
            let (got, text) = list_of(n, None, usize::MAX);
            assert_eq!(got.unwrap(), n);
            let items: Vec<_> =
                (0..n).map(|i| serde_json::json!({"i": i, "text": format!("line\n{i}")})).collect();
            let whole = serde_json::json!({"items": items, "count": n});
            assert_eq!(text, serde_json::to_string_pretty(&whole).unwrap() + "\n", "{n} items");
        }
    }

    #[test]
    fn a_json_list_cut_short_is_left_open_with_the_error() {
        let (got, text) = list_of(1000, Some(600), usize::MAX);
        assert_eq!(got.unwrap_err().to_string(), "item 600 could not be read");
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "{text}");
        assert!(text.contains("\"i\": 511"), "what was read is written");
        let (got, text) = list_of(100_000, None, 10_000);
        assert_eq!(got.unwrap_err().to_string(), "full", "the writer's error, not a hang");
        assert!(text.len() <= 10_000);
    }

    #[test]
    fn wide_characters_keep_the_next_column_in_line() {
        let rows = vec![
            vec!["漢字ピア".to_string(), "one".to_string(), "x".to_string()],
            vec!["🦀🚀".to_string(), "two".to_string(), "y".to_string()],
            vec!["ascii-peer".to_string(), "three".to_string(), "z".to_string()],
            vec!["é".to_string(), "four".to_string(), "w".to_string()],
        ];
        let lines = table_lines(&["peer", "n", "last"], &rows);
        assert_eq!(lines.len(), 5);
        // Where the second and third columns start, in terminal cells, on every line.
        let starts = |line: &str, second: &str, third: &str| {
            let at = |cell: &str| line[..line.find(cell).expect(cell)].width();
            (at(second), at(third))
        };
        let header = starts(&lines[0], "n", "last");
        assert_eq!(header, (12, 19), "{lines:#?}");
        for (line, r) in lines[1..].iter().zip(&rows) {
            assert_eq!(starts(line, &r[1], &r[2]), header, "{lines:#?}");
        }
        assert_eq!(lines[3], "ascii-peer  three  z", "the last column is not padded");
    }

    #[test]
    fn a_row_longer_than_the_headers_is_laid_out() {
        let rows = vec![vec!["a".to_string(), "bb".to_string(), "extra".to_string()]];
        assert_eq!(table_lines(&["h1", "h2"], &rows), ["h1  h2", "a   bb  extra"]);
    }

    #[test]
    fn short_peer_counts_characters() {
        let id = "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz";
        assert_eq!(short_peer(id), "12D3Ko…UvWxYz");
        assert_eq!(short_peer("12D3KooWshort"), "12D3KooWshort");
        assert_eq!(short_peer("0123456789abcdef"), "0123456789abcdef", "16 characters stay whole");
        // Not ASCII, from a hostile server: six bytes in is inside the second crab, where a byte
        // slice would panic.
        let hostile = "🦀🦀KooWAbCdEfGhIjKlMnOpQrStUvWxY🦀🦀";
        assert_eq!(short_peer(hostile), "🦀🦀KooW…vWxY🦀🦀");
        assert_eq!(short_peer("пирёдж🦀🦀🦀🦀🦀🦀🦀🦀ñandú€"), "пирёдж…ñandú€");
        // 16 characters but many more bytes: whole.
        let sixteen = "ééééééééééééééé€";
        assert_eq!(sixteen.chars().count(), 16);
        assert_eq!(short_peer(sixteen), sixteen);
    }
}
