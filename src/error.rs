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
    eprintln!("ledger: error: {}", crate::app::shown(&chain(err)));
    ExitCode::from(ERROR)
}

/// The error and its causes, `: `-separated like `{:#}`, each said once: a cause whose text holds
/// its parent's, or is held in it (a library repeating itself), is left out.
pub fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text) || text.contains(last.as_str())) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_by_its_neighbour_is_said_once() {
        let sql = std::io::Error::other("Error code 13: database or disk is full");
        let e = anyhow::Error::new(sql)
            .context("database or disk is full")
            .context("cannot snapshot http://127.0.0.1:9094/");
        assert_eq!(chain(&e), "cannot snapshot http://127.0.0.1:9094/: database or disk is full");
        let e = anyhow::anyhow!("tcp connect error").context("cannot reach the cluster");
        assert_eq!(chain(&e), "cannot reach the cluster: tcp connect error");
    }
}
