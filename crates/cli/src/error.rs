//! The CLI's one error type: a message that names the rule and what to do,
//! printed as one line, and an exit status.

use std::fmt;

/// A failure to report to the user.
#[derive(Debug)]
pub struct CliError {
    /// One line: what went wrong, which rule, what to do.
    pub msg: String,
    /// Process exit status (1 for errors, 2 for usage).
    pub code: i32,
}

impl CliError {
    /// An error with exit status 1.
    pub fn new(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 1,
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 2,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, always: a multi-line library message is folded.
        let one = self
            .msg
            .split('\n')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        f.write_str(&one)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`hwbreak ... | head`): not an error to report.
            return CliError {
                msg: String::new(),
                code: 0,
            };
        }
        CliError::new(format!("I/O error: {e}"))
    }
}

impl From<crate::spec::SpecError> for CliError {
    fn from(e: crate::spec::SpecError) -> Self {
        CliError::usage(e.to_string())
    }
}
