//! Launching a command whose SPECs resolve only once it is loaded: a
//! variable in a shared library (`libfoo.so:x`), or a name its executable
//! does not define.
//!
//! The command starts stopped at its ELF entry point
//! ([`hwbreak_linux::launch::StoppedAtEntry`]): ld.so has mapped and
//! relocated every library it needs, and none of the program's own code
//! has run. The SPECs resolve against the live process, as with `-p`; the
//! watches open on it (one thread, and threads it creates later inherit
//! them); then it runs on from its entry point. Writes made before the
//! entry point, by ld.so and by library constructors, are not watched.
//!
//! Every path out before [`AtEntry::resume_into`] kills the child:
//! dropping the `StoppedAtEntry` does.

use crate::cli::TargetArgs;
use crate::error::CliError;
use crate::plan::{self, Plan};
use hwbreak_linux::launch::StoppedAtEntry;
use hwbreak_linux::watch::Watcher;
use std::process::Command;

/// The command line after `--`, as hwbreak launches it. With
/// `stdout_to_stderr` (`--json`, `record`) its stdout goes to hwbreak's
/// stderr, so that hwbreak's stdout stays clean.
pub fn command(cmd: &[String], stdout_to_stderr: bool, own_session: bool) -> Command {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    if stdout_to_stderr {
        c.stdout(std::io::stderr());
    }
    if own_session {
        // `--stop` leaves the program stopped after hwbreak exits. In
        // hwbreak's process group (or a new one in its session) it would
        // then be a stopped member of an orphaned process group, which the
        // kernel sends SIGHUP and SIGCONT (POSIX job control): in a session
        // of its own, it stays stopped for the debugger.
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and
        // makes one async-signal-safe call.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    c
}

/// A launched command stopped at its entry point, its SPECs planned.
#[derive(Debug)]
pub struct AtEntry {
    stopped: StoppedAtEntry,
}

/// Launch `t`'s command (`cmd`), stop it at its entry point, and plan `t`'s
/// SPECs against it. Runs with address randomisation off, as every command
/// hwbreak launches does. On error the child is killed.
pub fn start(
    t: &TargetArgs,
    cmd: &[String],
    stdout_to_stderr: bool,
    own_session: bool,
) -> Result<(Plan, AtEntry), CliError> {
    let stopped = StoppedAtEntry::spawn(command(cmd, stdout_to_stderr, own_session), true)
        .map_err(|e| CliError::new(e.to_string()))?;
    let plan = plan::plan_loaded(t, stopped.pid())?;
    Ok((plan, AtEntry { stopped }))
}

impl AtEntry {
    /// The child's pid: open the watcher on `Target::Process(pid)`.
    pub fn pid(&self) -> i32 {
        self.stopped.pid()
    }

    /// Let the program run from its entry point, and hand it to `w` (opened
    /// on [`AtEntry::pid`]): `wait`, `try_wait` and ending it on Ctrl-C then
    /// work as for any launched command.
    pub fn resume_into(self, w: &Watcher) -> Result<(), CliError> {
        let child = self
            .stopped
            .resume()
            .map_err(|e| CliError::new(e.to_string()))?;
        w.adopt_child(child).map_err(|mut c| {
            let _ = c.kill();
            let _ = c.wait();
            CliError::new(format!(
                "internal error: the watcher does not watch the launched command (pid {}); it was ended",
                c.id()
            ))
        })
    }
}
