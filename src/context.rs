//! What every use case runs with, built once per command in [`crate::commands::run`]: the ledger
//! (opened on first use, so a command that needs no database never creates one), the cluster target
//! and its clients, the clock, the async runtime, progress on stderr, and the signal that interrupts a
//! run.

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::app::LedgerArgs;
use crate::cluster::{self, Client, Settings, Target};
use crate::store::Store;

/// Where "now" comes from: the system clock, or a fixed time (tests).
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// The context of one command.
pub struct Context {
    args: LedgerArgs,
    quiet: Cell<bool>,
    store: OnceCell<Store>,
    target: OnceCell<Target>,
    /// The members `--discover` found beyond the peers given (found once per command).
    discovered: OnceCell<Vec<url::Url>>,
    runtime: OnceCell<tokio::runtime::Runtime>,
    pub clock: Clock,
}

impl Context {
    /// A context for the ledger and cluster named by `args`; nothing is opened yet.
    pub fn new(args: LedgerArgs, quiet: bool) -> Context {
        Context {
            args,
            quiet: Cell::new(quiet),
            store: OnceCell::new(),
            target: OnceCell::new(),
            discovered: OnceCell::new(),
            runtime: OnceCell::new(),
            clock: Clock::System,
        }
    }

    /// The ledger, opened (and migrated) on first use.
    pub fn store(&self) -> anyhow::Result<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let store = self.args.store()?;
        Ok(self.store.get_or_init(|| store))
    }

    /// The cluster, resolved from the flags, the environment and ledger.toml on first use.
    pub fn target(&self) -> anyhow::Result<&Target> {
        if let Some(t) = self.target.get() {
            return Ok(t);
        }
        let target = self.args.target()?;
        Ok(self.target.get_or_init(|| target))
    }

    /// The target's peers, with `write` (a URL or multiaddr, when given) first: the peer that takes
    /// the writes.
    /// With discovery on, the members found beyond them follow (asked of the write peer).
    pub fn peers(&self, write: Option<&str>) -> anyhow::Result<Vec<url::Url>> {
        let given = match write {
            Some(p) => Some(cluster::config::parse_address(p).context("--peer")?.0),
            None => None,
        };
        let first = match &given {
            Some(u) => u.clone(),
            None => self.first_peer()?,
        };
        let mut urls = self.all_peers_from(&first)?;
        if let Some(u) = given {
            urls.retain(|x| *x != u);
            urls.insert(0, u);
        }
        Ok(urls)
    }

    /// Every peer of the target: those given and, with discovery on, the members found beyond
    /// them (asked of the first peer).
    pub fn all_peers(&self) -> anyhow::Result<Vec<url::Url>> {
        self.all_peers_from(&self.first_peer()?)
    }

    fn first_peer(&self) -> anyhow::Result<url::Url> {
        let peers = &self.target()?.peers;
        peers.first().cloned().context("the cluster names no peer")
    }

    /// The target's peers, then the members that discovery (asking `ask`) found beyond them,
    /// by URL; discovery runs on the first call only.
    fn all_peers_from(&self, ask: &url::Url) -> anyhow::Result<Vec<url::Url>> {
        let target = self.target()?;
        let mut urls = target.peers.clone();
        if !target.discover.on {
            return Ok(urls);
        }
        let found = match self.discovered.get() {
            Some(f) => f,
            None => {
                let f = self.discover(ask, target.discover.rest_port);
                self.discovered.get_or_init(|| f)
            }
        };
        for u in found {
            if !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        Ok(urls)
    }

    /// Runs discovery from `ask` and logs what it found; a write peer that cannot list the members
    /// is logged and nothing is added. It runs on a thread and runtime of its own, so that it can
    /// be asked for from inside async work on this thread's runtime.
    fn discover(&self, ask: &url::Url, rest_port: Option<u16>) -> Vec<url::Url> {
        let (write, auth, settings) = match (self.client(ask), self.target()) {
            (Ok(w), Ok(t)) => (w, t.auth.clone(), self.settings(0)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot discover the cluster's members: {e:#}");
                return Vec::new();
            }
        };
        // The peers given, and the peer asked (`--peer` need not be one of them).
        let mut given = self.target().map(|t| t.peers.clone()).unwrap_or_default();
        if !given.contains(ask) {
            given.insert(0, ask.clone());
        }
        let work = move || -> anyhow::Result<Vec<cluster::discover::Discovered>> {
            let probe = |u: &url::Url| Client::new(u.clone(), auth.clone(), settings.clone());
            let rt = crate::app::runtime()?;
            Ok(rt.block_on(cluster::discover::discover(&write, &given, rest_port, probe))?)
        };
        let found = std::thread::scope(|s| s.spawn(work).join());
        match found {
            Ok(Ok(found)) => {
                cluster::discover::log(&found);
                found
                    .into_iter()
                    .filter_map(|d| match d.found {
                        cluster::discover::Found::At(u) => Some(u),
                        _ => None,
                    })
                    .collect()
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    "cannot discover the cluster's members from {ask}: {e:#}; going on with the peers given"
                );
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("discovery stopped unexpectedly; going on with the peers given");
                Vec::new()
            }
        }
    }

    /// The target's name: the key of its history in the ledger.
    pub fn cluster_name(&self) -> anyhow::Result<&str> {
        Ok(&self.target()?.name)
    }

    /// A client for one peer of the target, with its credentials and the `--timeout` limits.
    pub fn client(&self, url: &url::Url) -> anyhow::Result<Client> {
        let target = self.target()?;
        Client::new(url.clone(), target.auth.clone(), self.settings(Settings::default().retries))
    }

    /// The `--timeout` limits, with `retries` retries of an idempotent request (a discovery
    /// candidate gets none: each is asked once).
    fn settings(&self, retries: u32) -> Settings {
        let t = self.args.timeout;
        Settings {
            connect_timeout: t.min(std::time::Duration::from_secs(10)),
            request_timeout: t,
            read_timeout: t,
            retries,
            ..Settings::default()
        }
    }

    /// Clients for `urls`, in that order.
    pub fn clients(&self, urls: &[url::Url]) -> anyhow::Result<Vec<Client>> {
        urls.iter().map(|u| self.client(u)).collect()
    }

    /// No progress on stderr from here on (`--json`, or a caller that prints its own).
    pub fn silence(&self) {
        self.quiet.set(true);
    }

    /// Whether progress and chatter on stderr are off (`--quiet`, or [`Context::silence`]).
    pub fn is_quiet(&self) -> bool {
        self.quiet.get()
    }

    /// A progress bar (`Some(len)`) or spinner on stderr; hidden with `--quiet`, after
    /// [`Context::silence`], or when stderr is not a terminal.
    pub fn progress(&self, len: Option<u64>) -> indicatif::ProgressBar {
        crate::app::progress(self.quiet.get(), len)
    }

    /// Runs `work` to its end on this thread (HTTP here, SQLite synchronous beside it).
    pub fn block_on<F: Future>(&self, work: F) -> anyhow::Result<F::Output> {
        if self.runtime.get().is_none() {
            let rt = crate::app::runtime().context("cannot start the async runtime")?;
            let _ = self.runtime.set(rt);
        }
        Ok(self.runtime.get().expect("set above").block_on(work))
    }

    /// Runs `work` until it ends or SIGTERM/SIGINT arrives. On a signal the work is dropped where it
    /// stands (a run or a snapshot records itself `interrupted` as it is dropped) and an error says
    /// so. The signals are watched on a thread of their own, so that work busy on this thread
    /// (a snapshot writing to SQLite) sees [`stop_requested`] at once.
    pub fn until_signal<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        let watcher = SignalWatcher::start()?;
        let notify = watcher.notify.clone();
        self.block_on(async move {
            // The watcher sets STOP before it notifies, so what the work drops sees it.
            let signalled = notify.notified();
            tokio::select! {
                r = work => r,
                () = signalled => Err(anyhow::anyhow!("interrupted by a signal")),
            }
        })?
    }

    /// Whether a signal stopped the work.
    pub fn interrupted(&self) -> bool {
        stop_requested()
    }

    /// Now, by the context's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The ledger's path (for messages).
    pub fn db_path(&self) -> &std::path::Path {
        &self.args.db
    }
}

/// Set once SIGTERM or SIGINT has arrived during [`Context::until_signal`]: the process is stopping.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether SIGTERM or SIGINT has asked the process to stop (for work that runs synchronously and
/// cannot be dropped at an `.await`: it checks this and stops itself).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A thread that waits for SIGTERM or SIGINT on a runtime of its own, then sets [`STOP`] and
/// notifies; it ends when dropped.
struct SignalWatcher {
    notify: Arc<tokio::sync::Notify>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatcher {
    /// Starts the thread and returns once its signal handlers are installed.
    fn start() -> anyhow::Result<SignalWatcher> {
        let notify = Arc::new(tokio::sync::Notify::new());
        let (done, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let n = notify.clone();
        let thread = std::thread::spawn(move || {
            let rt = match crate::app::runtime() {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            rt.block_on(async move {
                let mut shutdown = match crate::app::Shutdown::new() {
                    Ok(s) => s,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                let _ = ready.send(Ok(()));
                tokio::select! {
                    () = shutdown.wait() => {
                        STOP.store(true, Ordering::SeqCst);
                        n.notify_one();
                    }
                    _ = &mut done_rx => {}
                }
            });
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the signal watcher did not start"))?
            .context("cannot watch for signals")?;
        Ok(SignalWatcher { notify, done: Some(done), thread: Some(thread) })
    }
}

impl Drop for SignalWatcher {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
