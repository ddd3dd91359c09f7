//! Logging: `tracing` to stderr only (stdout is for results), filtered by `LEDGER_LOG`, else by
//! `-v`/`-q`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbose` counts `-v`; `quiet` keeps only errors.
pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,ledger=info",
        (false, 1) => "info,ledger=debug",
        (false, _) => "debug,ledger=trace",
    };
    let filter = EnvFilter::try_from_env("LEDGER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
