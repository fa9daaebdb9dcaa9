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
use hwbreak_linux::launch::{Follow, StoppedAtEntry};
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
    if !is_script(&cmd[0]) {
        let stopped = StoppedAtEntry::spawn(command(cmd, stdout_to_stderr, own_session), true)
            .map_err(|e| CliError::new(e.to_string()))?;
        let plan = plan::plan_loaded(t, stopped.pid())?;
        return Ok((plan, AtEntry { stopped }));
    }
    // A script: the kernel runs its interpreter. A shell or `env` that does
    // not define the names is taken for a wrapper and followed to the
    // program it `exec`s; any other interpreter must define them itself.
    let mut outcome: Option<Result<Plan, CliError>> = None;
    let mut last_err: Option<CliError> = None;
    let spawned = StoppedAtEntry::spawn_following(
        command(cmd, stdout_to_stderr, own_session),
        true,
        |pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            match plan::plan_loaded(t, pid) {
                Ok(p) => {
                    outcome = Some(Ok(p));
                    Follow::Stop
                }
                Err(e) if is_wrapper(&exe) => {
                    last_err = Some(e);
                    Follow::Next
                }
                Err(e) => {
                    outcome = Some(Err(CliError::new(format!(
                    "`{}` is a script run by {}, and its names are looked up there: {}. hwbreak watches the program that runs: names of the script's own language are not symbols of it (install the interpreter's debug symbols, e.g. python3.11-dbg, to name its C variables)",
                    cmd[0],
                    exe.display(),
                    e
                ))));
                    Follow::Stop
                }
            }
        },
    );
    match (spawned, outcome) {
        (Ok(stopped), Some(Ok(plan))) => Ok((plan, AtEntry { stopped })),
        (Ok(_stopped), Some(Err(e))) => Err(e), // dropping `_stopped` kills it
        (Ok(_), None) => Err(CliError::new("internal error: no program was chosen")),
        (Err(e), _) => Err(CliError::new(format!(
            "{e}; no program it ran defines what was asked{}. A wrapper script must `exec` the program for hwbreak to follow it",
            last_err.map(|e| format!(" ({})", e)).unwrap_or_default()
        ))),
    }
}

/// Whether `path` is an executable script (`#!`), not an ELF program.
fn is_script(path: &str) -> bool {
    use std::io::Read;
    let found = if path.contains('/') {
        Some(std::path::PathBuf::from(path))
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(path))
                .find(|c| c.is_file())
        })
    };
    let mut magic = [0u8; 2];
    found
        .and_then(|p| std::fs::File::open(p).ok())
        .is_some_and(|mut f| f.read_exact(&mut magic).is_ok() && &magic == b"#!")
}

/// A program that runs another: a shell running a wrapper script, or `env`.
fn is_wrapper(exe: &std::path::Path) -> bool {
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "busybox" | "env"
    )
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
