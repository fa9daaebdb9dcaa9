//! Launching a command that is watched from its first instruction.
//!
//! `fork`, and the child blocks on a pipe before `exec`. Meanwhile the parent
//! opens the events on the child with `enable_on_exec` + `inherit`; then it
//! releases the child, which calls `exec`; the kernel enables the events
//! during `exec`, before the new program's first instruction.
//!
//! When the addresses are only known after the program is loaded (a PIE
//! with ASLR, a global in a shared library), use [`StoppedAtEntry`]
//! instead: the child stops at its ELF entry point, after the dynamic
//! loader mapped its libraries and before any of the program's own code ran.
//!
//! We use `std::process::Command` (with `pre_exec`) rather than a hand-written
//! fork, to keep its environment, cwd and stdio handling. Its `spawn()` waits
//! until `exec` succeeded, so it runs on a helper thread; the child reports
//! its pid through a second pipe.

use crate::error::{Error, Result};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::thread::JoinHandle;

mod setid;
mod trapstate;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into `fds`, a live local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these fds; we are their only owner.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A forked child held before `exec`.
#[derive(Debug)]
pub struct Gated {
    pid: i32,
    gate_w: Option<OwnedFd>,
    spawner: Option<JoinHandle<io::Result<Child>>>,
    program: String,
}

const GO: u8 = b'g';

impl Gated {
    /// Fork `cmd`; the child stops before `exec`. With `no_aslr` the child
    /// runs with `ADDR_NO_RANDOMIZE` (as gdb does), so a PIE loads at a
    /// predictable base.
    pub fn spawn(mut cmd: Command, no_aslr: bool) -> Result<Gated> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let launch_err = |e: io::Error| Error::Launch {
            program: program.clone(),
            source: e,
        };
        if let Some(why) = setid::refusal(&cmd, false, no_aslr) {
            return Err(launch_err(io::Error::other(why)));
        }
        let (gate_r, gate_w) = pipe().map_err(launch_err)?;
        let (pid_r, pid_w) = pipe().map_err(launch_err)?;
        let (gr, gw, pw): (RawFd, RawFd, RawFd) =
            (gate_r.as_raw_fd(), gate_w.as_raw_fd(), pid_w.as_raw_fd());
        // SAFETY: the closure runs in the forked child and only makes
        // async-signal-safe calls (close, personality, getpid, write, read).
        unsafe {
            cmd.pre_exec(move || {
                libc::close(gw);
                if no_aslr {
                    let cur = libc::personality(0xffff_ffff);
                    if cur >= 0 {
                        libc::personality(
                            (cur as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong,
                        );
                    }
                }
                let pid = libc::getpid();
                if libc::write(pw, (&pid as *const i32).cast(), 4) != 4 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(pw);
                let mut b = 0u8;
                loop {
                    let n = libc::read(gr, (&mut b as *mut u8).cast(), 1);
                    if n == 1 && b == GO {
                        return Ok(());
                    }
                    if n < 0 && *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "watch setup failed; launch cancelled",
                    ));
                }
            });
        }
        let spawner = std::thread::spawn(move || {
            let r = cmd.spawn();
            drop(pid_w);
            drop(gate_r);
            r
        });
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            // SAFETY: reading into the live local buffer `buf`.
            let n =
                unsafe { libc::read(pid_r.as_raw_fd(), buf[got..].as_mut_ptr().cast(), 4 - got) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        if got < 4 {
            // The child never reached pre_exec: spawn failed.
            let e = spawner
                .join()
                .map_err(|_| launch_err(io::Error::other("spawner panicked")))?
                .err()
                .unwrap_or_else(|| io::Error::other("child did not report its pid"));
            return Err(launch_err(e));
        }
        Ok(Gated {
            pid: i32::from_ne_bytes(buf),
            gate_w: Some(gate_w),
            spawner: Some(spawner),
            program,
        })
    }

    /// The child's pid (valid before and after `exec`).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Let the child `exec`; returns it once `exec` succeeded.
    pub fn release(mut self) -> Result<Child> {
        let w = self.gate_w.take().expect("gate");
        // SAFETY: writing one byte from a live local to our own pipe fd.
        let n = unsafe { libc::write(w.as_raw_fd(), (&GO as *const u8).cast(), 1) };
        drop(w);
        if n != 1 {
            return Err(Error::sys(
                "release the launched child",
                io::Error::last_os_error(),
            ));
        }
        let h = self.spawner.take().expect("spawner");
        match h.join() {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Error::Launch {
                program: self.program.clone(),
                source: e,
            }),
            Err(_) => Err(Error::sys("launch", io::Error::other("spawner panicked"))),
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        // Not released: closing the gate makes pre_exec fail, the child exits
        // without running the program, and spawn() reaps it.
        self.gate_w.take();
        if let Some(h) = self.spawner.take() {
            let _ = h.join();
        }
    }
}

/// A launched command in a watcher's charge: its [`Child`] and, once it
/// ended, its exit status (kept, so that waiting twice answers the same).
#[derive(Debug, Default)]
pub(crate) struct Launched {
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Launched {
    /// In charge of `child`, if any.
    pub fn new(child: Option<Child>) -> Launched {
        Launched {
            child: Mutex::new(child),
            exit: Mutex::new(None),
        }
    }

    /// Take charge of `child` (replacing none).
    pub fn adopt(&self, child: Child) {
        *self.child.lock().unwrap() = Some(child);
    }

    /// Wait for it to exit.
    pub fn wait(&self) -> Result<ExitStatus> {
        if let Some(s) = *self.exit.lock().unwrap() {
            return Ok(s);
        }
        let mut c = self.child.lock().unwrap();
        let child = c.as_mut().ok_or_else(|| {
            Error::Invalid("wait: the target was not launched by this watcher".into())
        })?;
        let s = child
            .wait()
            .map_err(|e| Error::sys("wait for the launched command", e))?;
        *self.exit.lock().unwrap() = Some(s);
        Ok(s)
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        if let Some(s) = *self.exit.lock().unwrap() {
            return Ok(Some(s));
        }
        let mut c = self.child.lock().unwrap();
        let Some(child) = c.as_mut() else {
            return Ok(None);
        };
        let s = child
            .try_wait()
            .map_err(|e| Error::sys("check the launched command", e))?;
        if let Some(s) = s {
            *self.exit.lock().unwrap() = Some(s);
        }
        Ok(s)
    }

    /// Its stdin, if it was `Stdio::piped()`.
    pub fn take_stdin(&self) -> Option<std::process::ChildStdin> {
        self.child.lock().unwrap().as_mut()?.stdin.take()
    }

    /// Its stdout, if it was `Stdio::piped()`.
    pub fn take_stdout(&self) -> Option<std::process::ChildStdout> {
        self.child.lock().unwrap().as_mut()?.stdout.take()
    }
}

/// A launched command stopped at its ELF entry point (`AT_ENTRY`), traced by
/// the calling thread: resolve symbols in it (its libraries are mapped),
/// open a [`crate::watch::Watcher`] on `Target::Process(pid)`, then
/// [`StoppedAtEntry::resume`] and hand the `Child` to
/// [`crate::watch::Watcher::adopt_child`]. Call every method from the
/// thread that spawned it (ptrace requests only work from the tracer
/// thread). Not watched: what ran before the entry point, ld.so and the
/// libraries' constructors.
///
/// ```no_run
/// use hwbreak_core::BpAttr;
/// use hwbreak_linux::launch::StoppedAtEntry;
/// use hwbreak_linux::symbols::Resolver;
/// use hwbreak_linux::watch::{Target, Watcher};
/// let mut cmd = std::process::Command::new("./uselib");
/// cmd.arg("1000");
/// let stopped = StoppedAtEntry::spawn(cmd, true)?;
/// let v = Resolver::for_pid(stopped.pid())?.resolve("libwatchme.so:watchme_value")?;
/// let w = Watcher::builder()
///     .target(Target::Process(stopped.pid()))
///     .watch("watchme_value", BpAttr::write(v.addr, v.len))
///     .open()?;
/// w.adopt_child(stopped.resume()?).expect("the watched process");
/// w.wait()?;
/// assert_eq!(w.counts()?, vec![1000]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// How: `PTRACE_TRACEME` before `exec`; the kernel stops the child with
/// `SIGTRAP` after `exec`; we read `AT_ENTRY` from `/proc/PID/auxv`, write
/// an `int3` over its first byte, continue, and at the trap put the byte
/// back and set the IP to the entry again (what gdb's `start` does). Not a
/// hardware execute breakpoint: the kernel keeps a ptrace debug register
/// booked for the thread until it execs or exits, even once DR7 disables
/// it, so the program's main thread would be left 3 of its 4 slots.
/// Dropping it without `resume` kills the child.
#[derive(Debug)]
pub struct StoppedAtEntry {
    child: Option<Child>,
    pid: i32,
    entry: u64,
}

/// How the child came back from `waitpid`.
enum Stop {
    /// Stopped with this signal.
    Signal(i32),
    /// Exited or was killed (the raw wait status); it is reaped.
    Ended(i32),
}

fn wait_stop(pid: i32) -> io::Result<Stop> {
    wait_stop_event(pid).map(|(s, _)| s)
}

/// Like [`wait_stop`], and whether the stop is a `PTRACE_EVENT_EXEC`.
fn wait_stop_event(pid: i32) -> io::Result<(Stop, bool)> {
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes one int to `st`, a live local.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if libc::WIFSTOPPED(st) {
            let exec = st >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXEC << 8);
            return Ok((Stop::Signal(libc::WSTOPSIG(st)), exec));
        }
        return Ok((Stop::Ended(st), false));
    }
}

/// "exited with status N" or "was killed by signal N", from a wait status.
fn describe_end(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exited with status {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("was killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("ended (wait status {st:#x})")
    }
}

/// Why a program that never reached its entry point ended, from its wait status.
fn ended_before_entry(st: i32) -> io::Error {
    let msg = if libc::WIFEXITED(st) {
        format!(
            "it exited with status {} before reaching its entry point, so nothing was watched: the dynamic loader failed (a shared library missing or not loadable: see its message above) or a library constructor ended it",
            libc::WEXITSTATUS(st)
        )
    } else if libc::WIFSIGNALED(st) {
        format!(
            "it was killed by signal {} before reaching its entry point, so nothing was watched",
            libc::WTERMSIG(st)
        )
    } else {
        format!("it ended before reaching its entry point (wait status {st:#x})")
    };
    io::Error::other(msg)
}

fn cont(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes integers only.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as usize as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// x86's one-byte breakpoint instruction.
const INT3: u64 = 0xcc;

/// The stopped tracee's word at `addr` (`PTRACE_PEEKTEXT`).
fn peek_text(pid: i32, addr: u64) -> io::Result<u64> {
    // SAFETY: errno is thread-local; PEEKTEXT returns the word, so -1 is only
    // an error if errno says so.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PTRACE_PEEKTEXT takes integers and writes nothing of ours.
    let v = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKTEXT,
            pid,
            addr as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let e = io::Error::last_os_error();
    if v == -1 && e.raw_os_error() != Some(0) {
        return Err(e);
    }
    Ok(v as u64)
}

/// Write the stopped tracee's word at `addr` (`PTRACE_POKETEXT`; the kernel
/// writes through a read-only text mapping into a private copy of the page).
fn poke_text(pid: i32, addr: u64, word: u64) -> io::Result<()> {
    // SAFETY: PTRACE_POKETEXT takes integers only.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_POKETEXT,
            pid,
            addr as *mut libc::c_void,
            word as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_regs(pid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct to `regs`, a live local.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut regs as *mut libc::user_regs_struct as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(regs)
}

fn set_regs(pid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: PTRACE_SETREGS reads one user_regs_struct from `regs`, a live reference.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            regs as *const libc::user_regs_struct as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub use crate::procfs::auxv_entry;

/// What to do with a program the launched command runs, stopped at its
/// entry point: see [`StoppedAtEntry::spawn_following`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// This is the program: stay stopped here.
    Stop,
    /// Not this one: let it run, and stop at the entry point of the next
    /// program it `exec`s (a wrapper script's `exec prog`, `env`'s program).
    Next,
}

impl StoppedAtEntry {
    /// Launch `cmd` and stop it at its entry point. `no_aslr` as in [`Gated::spawn`].
    pub fn spawn(cmd: Command, no_aslr: bool) -> Result<StoppedAtEntry> {
        Self::spawn_following(cmd, no_aslr, |_| Follow::Stop)
    }

    /// Launch `cmd` and stop at the entry point of the first program it runs
    /// that `choose` takes. `cmd` may be a `#!` script (the kernel runs its
    /// interpreter) or a wrapper that `exec`s the real program: `choose`
    /// sees each program in turn, stopped at its entry point with its
    /// libraries mapped, and says [`Follow::Next`] to let it run until it
    /// `exec`s another. A command that ends before `choose` takes a program
    /// is an [`Error::Launch`] saying which programs it ran.
    pub fn spawn_following(
        mut cmd: Command,
        no_aslr: bool,
        mut choose: impl FnMut(i32) -> Follow,
    ) -> Result<StoppedAtEntry> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let err = |e: io::Error| Error::Launch {
            program: program.clone(),
            source: e,
        };
        // The child says on this pipe whether it had SIGTRAP blocked (see
        // trapstate): one byte, before it unblocks it for the entry stop.
        if let Some(why) = setid::refusal(&cmd, true, no_aslr) {
            return Err(err(io::Error::other(why)));
        }
        let (trap_r, trap_w) = pipe().map_err(err)?;
        let trap_w_fd = trap_w.as_raw_fd();
        // SAFETY: the closure runs in the forked child and only makes
        // async-signal-safe calls (personality, ptrace, sigprocmask, write).
        unsafe {
            cmd.pre_exec(move || {
                let blocked = u8::from(trapstate::unblock_in_child());
                if libc::write(trap_w_fd, (&blocked as *const u8).cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                if no_aslr {
                    let cur = libc::personality(0xffff_ffff);
                    if cur >= 0 {
                        libc::personality(
                            (cur as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong,
                        );
                    }
                }
                if libc::ptrace(
                    libc::PTRACE_TRACEME,
                    0,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(err)?;
        drop(trap_w);
        let mut blocked = [0u8];
        // The child wrote its byte before exec, which spawn waited for.
        std::io::Read::read_exact(&mut std::fs::File::from(trap_r), &mut blocked).map_err(err)?;
        let pid = child.id() as i32;
        let mut me = StoppedAtEntry {
            child: Some(child),
            pid,
            entry: 0,
        };
        // The post-exec SIGTRAP.
        let sig = me.wait_stop().map_err(err)?;
        if sig != libc::SIGTRAP {
            return Err(err(io::Error::other(format!(
                "unexpected stop signal {sig} after exec"
            ))));
        }
        // Later execs stop with PTRACE_EVENT_EXEC, told apart from the program's own SIGTRAPs.
        // SAFETY: PTRACE_SETOPTIONS takes integers only.
        if unsafe {
            libc::ptrace(
                libc::PTRACE_SETOPTIONS,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                libc::PTRACE_O_TRACEEXEC as usize as *mut libc::c_void,
            )
        } < 0
        {
            return Err(err(io::Error::last_os_error()));
        }
        let mut ran = Vec::new();
        let mut blocked_before_exec = blocked[0] == 1;
        loop {
            me.run_to_entry(blocked_before_exec).map_err(err)?;
            blocked_before_exec = false;
            ran.push(
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into()),
            );
            if choose(pid) == Follow::Stop {
                return Ok(me);
            }
            // Run on to the next exec, delivering the program's signals.
            cont(pid, 0).map_err(err)?;
            loop {
                match wait_stop_event(pid).map_err(err)? {
                    (Stop::Ended(st), _) => {
                        me.child = None;
                        return Err(err(io::Error::other(format!(
                            "it ran {} and {}, without running another program",
                            ran.join(", then "),
                            describe_end(st)
                        ))));
                    }
                    (Stop::Signal(_), true) => break,
                    (Stop::Signal(sig), false) => {
                        cont(pid, if sig == libc::SIGTRAP { 0 } else { sig }).map_err(err)?;
                    }
                }
            }
        }
    }

    /// From just after an exec to the new program's entry point: one int3
    /// there, run, and rewind as if never stopped, with `SIGTRAP` blocked
    /// or ignored as the program had it (`blocked_before_exec`: the child
    /// unblocked it before this exec; see [`trapstate`]).
    fn run_to_entry(&mut self, blocked_before_exec: bool) -> io::Result<()> {
        let pid = self.pid;
        let trap = trapstate::before_entry(pid, blocked_before_exec)?;
        self.entry = auxv_entry(pid)?;
        let entry = self.entry;
        // One int3 over the entry's first byte, in the aligned word holding it
        // (an aligned word never crosses a page).
        let word_at = entry & !7;
        let shift = (entry & 7) * 8;
        let word = peek_text(pid, word_at)?;
        let patched = (word & !(0xff << shift)) | (INT3 << shift);
        poke_text(pid, word_at, patched)?;
        cont(pid, 0)?;
        let mut regs = loop {
            let sig = self.wait_stop()?;
            if sig == libc::SIGTRAP {
                let regs = get_regs(pid)?;
                // int3 traps after itself.
                if regs.rip == entry + 1 {
                    break regs;
                }
            }
            // A signal for the program (the loader may get one): deliver it.
            cont(pid, if sig == libc::SIGTRAP { 0 } else { sig })?;
        };
        // Put the byte back and rewind to the entry: as if never stopped.
        poke_text(pid, word_at, word)?;
        regs.rip = entry;
        set_regs(pid, &regs)?;
        trapstate::at_entry(pid, trap, &regs, &mut || self.wait_stop())
    }

    /// Wait for the child's next stop; its stop signal. If it ended instead,
    /// it is reaped here: forget it (Drop must not signal a reaped pid, which
    /// may already belong to another process) and say why it ended.
    fn wait_stop(&mut self) -> io::Result<i32> {
        match wait_stop(self.pid)? {
            Stop::Signal(sig) => Ok(sig),
            Stop::Ended(st) => {
                self.child = None;
                Err(ended_before_entry(st))
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The entry point it is stopped at.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// Detach: the program runs from its entry point.
    pub fn resume(mut self) -> Result<Child> {
        // SAFETY: PTRACE_DETACH takes integers only.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_DETACH,
                self.pid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if rc < 0 {
            return Err(Error::sys(
                "detach from the launched command",
                io::Error::last_os_error(),
            ));
        }
        Ok(self.child.take().expect("child"))
    }
}

impl Drop for StoppedAtEntry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
