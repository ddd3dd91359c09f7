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
    pub fn peers(&self, write: Option<&str>) -> anyhow::Result<Vec<url::Url>> {
        let mut urls = self.target()?.peers.clone();
        if let Some(p) = write {
            let (u, _) = cluster::config::parse_address(p).context("--peer")?;
            urls.retain(|x| *x != u);
            urls.insert(0, u);
        }
        Ok(urls)
    }

    /// The target's name: the key of its history in the ledger.
    pub fn cluster_name(&self) -> anyhow::Result<&str> {
        Ok(&self.target()?.name)
    }

    /// A client for one peer of the target, with its credentials and the `--timeout` limits.
    pub fn client(&self, url: &url::Url) -> anyhow::Result<Client> {
        let target = self.target()?;
        let t = self.args.timeout;
        let settings = Settings {
            connect_timeout: t.min(std::time::Duration::from_secs(10)),
            request_timeout: t,
            read_timeout: t,
            ..Settings::default()
        };
        Client::new(url.clone(), target.auth.clone(), settings)
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
