//! The CLI's one error type: what went wrong, with its source kept, printed
//! by `main` as one line, and the exit status it ends with.
//!
//! A closed output pipe is not an error to report: [`CliError::BrokenPipe`]
//! ends `hwbreak` the way other Unix filters end (`yes | head -1`): by
//! SIGPIPE, after every event is closed, so the shell sees status 141.

use std::io;
use std::path::PathBuf;

/// A failure to report to the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line breaks a rule (exit status 2); the message names
    /// the rule and what to do.
    #[error("{0}")]
    Usage(String),
    /// A SPEC does not parse (exit status 2).
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The watch library refused: perf events, ptrace, `/proc`.
    #[error(transparent)]
    Linux(#[from] hwbreak_linux::Error),
    /// A name in a SPEC did not resolve.
    #[error(transparent)]
    Symbol(#[from] hwbreak_linux::symbols::SymbolError),
    /// A record file cannot be opened.
    #[error("cannot open record file {}: {source}; make one with `hwbreak record -o FILE SPEC -- CMD`", path.display())]
    RecordOpen {
        /// The file named on the command line.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A record file cannot be read: damaged, truncated, another format.
    #[error("{}: {source}", path.display())]
    RecordRead {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::recfile::RecError,
    },
    /// The record file cannot be created or written.
    #[error("cannot create record file {}: {source}", path.display())]
    RecordCreate {
        /// The file named with `-o`.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The record file cannot be written (a full disk, `/dev/full`).
    #[error("cannot write record file {}: {source}", path.display())]
    RecordWrite {
        /// The file named with `-o`.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing the hits or the summary failed (other than a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
    /// The reader of stdout went away (`hwbreak ... | head`).
    #[error("the output pipe was closed")]
    BrokenPipe,
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// A rule was broken; the message names it and what to do.
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// A refusal with exit status 1: the message names the rule and what to do.
    pub fn new(msg: impl Into<String>) -> Self {
        CliError::Refused(msg.into())
    }

    /// A usage error (exit status 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// A failed write of the output: [`CliError::BrokenPipe`] when the
    /// reader went away, else [`CliError::Output`].
    pub fn output(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Output(e)
        }
    }

    /// A failed JSON write of the output (see [`CliError::output`]).
    pub fn json(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(io::ErrorKind::BrokenPipe) => CliError::BrokenPipe,
            _ => CliError::Output(io::Error::other(e)),
        }
    }

    /// The exit status: 2 for usage errors, 141 (128 + SIGPIPE, what a
    /// shell reports for a filter killed by SIGPIPE) for a closed pipe when
    /// SIGPIPE cannot be raised, 1 otherwise.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Spec(_) => 2,
            CliError::BrokenPipe => 128 + libc::SIGPIPE,
            _ => 1,
        }
    }

    /// The message as one line: a multi-line library message is folded.
    pub fn one_line(&self) -> String {
        self.to_string()
            .split('\n')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return CliError::BrokenPipe;
        }
        CliError::Io(e)
    }
}

/// End the process for `e`: a closed pipe dies by SIGPIPE, quietly (its
/// events are closed by then); anything else prints one line and exits
/// with [`CliError::code`].
pub fn exit_with(e: &CliError) -> ! {
    if matches!(e, CliError::BrokenPipe) {
        // SAFETY: signal and raise take integers; restoring the default
        // action of SIGPIPE (Rust's runtime ignores it) and raising it ends
        // this process the way a shell expects of a filter.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    } else {
        eprintln!("hwbreak: {}", e.one_line());
    }
    std::process::exit(e.code());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_its_own_kind_and_usage_errors_exit_2() {
        let e = CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, CliError::BrokenPipe));
        assert_eq!(e.code(), 141);
        assert_eq!(CliError::usage("x").code(), 2);
        assert_eq!(CliError::new("x").code(), 1);
        let out = CliError::output(io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(out, CliError::Output(_)));
    }

    #[test]
    fn json_write_into_a_closed_pipe_is_a_broken_pipe() {
        struct Closed;
        impl io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = serde_json::to_writer(Closed, &[1, 2]).unwrap_err();
        assert!(matches!(CliError::json(e), CliError::BrokenPipe));
    }

    #[test]
    fn a_multi_line_message_prints_as_one_line_and_keeps_its_source() {
        let e = CliError::new("first\n  second\n");
        assert_eq!(e.one_line(), "first; second");
        let e = CliError::RecordCreate {
            path: "/dev/full".into(),
            source: io::Error::from(io::ErrorKind::StorageFull),
        };
        assert!(e.to_string().contains("/dev/full"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
