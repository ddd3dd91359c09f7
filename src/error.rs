//! Exit codes and how errors reach the user: `ledger: error: …` on stderr and exit 2. A broken pipe on
//! stdout is a normal way for a reader such as `head` to stop reading: [`crate::app::stdout`] ends
//! the output there and the command exits with its own code; one that still reaches here as an
//! error ends the command quietly, with exit 0.

use std::process::ExitCode;

/// 0: ran and found nothing that needs attention.
pub const OK: u8 = 0;
/// 1: ran and found something that needs attention (drift, lost metadata, stragglers, conflicts).
pub const ATTENTION: u8 = 1;
/// 2: an error; the message says what to do next.
pub const ERROR: u8 = 2;

/// Prints the error chain and returns the exit code for it.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let is_pipe = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    let broken_pipe = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(is_pipe)
            || e.downcast_ref::<csv::Error>().is_some_and(|c| match c.kind() {
                csv::ErrorKind::Io(io) => is_pipe(io),
                _ => false,
            })
    });
    if broken_pipe {
        return ExitCode::from(OK);
    }
    // The chain may hold what a server answered: shown, never interpreted by the terminal.
    eprintln!("ledger: error: {}", crate::app::shown(&format!("{err:#}")));
    ExitCode::from(ERROR)
}
