//! Freezing a process while we attach to its threads.
//!
//! # The enumeration race, and how it is closed
//!
//! "Every thread of a process" is opened one thread at a time: the kernel has
//! no per-process breakpoint. Each event is opened with `inherit`, so a thread
//! that an *attached* thread creates later gets a copy of the event inside
//! `clone`, atomically (`perf_event_init_task`, before the new thread can run).
//! Two races remain while we walk `/proc/PID/task`:
//!
//! 1. **Escape**: a thread not yet attached creates a thread after our listing.
//!    The new thread inherits nothing and is not in our list.
//! 2. **Double attach**: an attached thread creates a thread; it inherited the
//!    event. If a re-scan then attaches it directly as well, every hit counts
//!    twice and it holds two slots per watch.
//!
//! Re-scanning until no new TID appears closes (1) but not (2): from `/proc`
//! one cannot tell whether a new thread's creator was attached at clone time.
//! So by default we **freeze** the process first, with ptrace:
//! `PTRACE_SEIZE` (with `PTRACE_O_TRACECLONE`) + `PTRACE_INTERRUPT` every
//! thread, re-scanning until every listed thread is seized and stopped. A
//! thread cloned by a seized thread before it stopped is auto-attached by
//! `TRACECLONE` and stops too. When the listing is stable and every thread is
//! stopped, no thread can be created; we open the events (disabled), enable
//! them all, and detach, re-injecting any signal that arrived meanwhile.
//! Nothing is inherited during the freeze, so nothing is attached twice.
//!
//! A thread cannot ptrace its own process, so for our own process a forked
//! helper does the freeze and hands the fds back (`crate::selfattach`).
//! Freezing needs ptrace rights over the target (the same uid, a dumpable
//! process, no other tracer, and no Yama restriction). Without them
//! [`crate::watch`] falls back to re-scanning until stable
//! ([`crate::watch::Attach::Rescan`] says so and why): no thread escapes, but
//! window (2) remains for threads that attached threads create *during* the
//! attach. Threads created after `open` returns are always exact (inherited).
//!
//! Measured on this project's 2-CPU test VM with `tests/c/spawner.c` (two
//! threads creating a thread every 50 µs, each living 2 ms, then writing):
//! re-scanning over-counted in 7 of 10 rounds (e.g. 33,900 counted for
//! 30,700 writes) (`cargo test -p hwbreak-linux --test count --
//! --ignored experiment_rescan`); frozen, the count was exact in every
//! round (`enumeration_race_no_thread_escapes_and_none_is_attached_twice`).
//! In-process (Rust threads lingering 2 ms, spawned every 100 µs), re-scanning
//! over-counted in 3 of 3 rounds (e.g. 4,560 for 4,280 writes); the helper
//! freeze was exact (`own_process_enumeration_race_is_exact_with_the_helper_freeze`).
//!
//! A thread that is already traced by the calling thread (a command stopped
//! at its entry by [`crate::launch::StoppedAtEntry`]) is *borrowed*: it is
//! already stopped, and it is not released when the freeze ends.
//!
//! # A thread that cannot stop
//!
//! A thread in an uninterruptible wait (`D`: a parent waiting for its
//! `vfork` child, a slow disk) does not stop when interrupted; it stops
//! when it wakes, before its next user instruction. It is *held*: seized
//! and interrupted, it cannot create a thread or touch memory before it
//! stops for us, so it is as frozen as a stopped thread, and the freeze
//! takes it as such once it has slept for [`HOLD_AFTER`] (its events are
//! opened like the others'; the count stays exact). But the kernel detaches
//! only a thread that is in a ptrace stop, so `PTRACE_DETACH` cannot
//! release it: it would stop when it wakes and stay stopped for as long as
//! its tracer lives. Hence the tracer is a dedicated thread
//! ([`Frozen::freeze`]) that exits when the freeze ends; the kernel then
//! releases every thread it traced and clears their pending stops
//! (`exit_ptrace` → `__ptrace_unlink`), and `Frozen`'s Drop returns once
//! no thread is traced by it. Measured with `tests/c/vforker.c` (the main
//! thread in `vfork` wait while the attach runs):
//! `a_thread_in_uninterruptible_wait_is_held_not_left_stopped` in
//! `tests/count.rs`; see docs/RELIABILITY.md. A thread that neither stops
//! nor sleeps uninterruptibly within [`FREEZE_TIMEOUT`] makes the freeze
//! give up; the tracer thread's exit releases everything and the watcher
//! re-scans instead of hanging.

use crate::procfs;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a freeze was not possible (the caller falls back to re-scanning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeError {
    /// The target is this process: a thread cannot ptrace its own group.
    OwnProcess,
    /// Another tracer (a debugger) is attached to thread `tid`.
    Traced {
        /// The thread.
        tid: i32,
        /// Its tracer.
        tracer: i32,
    },
    /// ptrace refused (permissions): the errno.
    Refused(i32),
    /// The process is gone.
    Gone,
    /// A thread did not stop within [`FREEZE_TIMEOUT`] (e.g. stuck in
    /// uninterruptible sleep); everything was released again.
    Timeout {
        /// The thread that did not stop.
        tid: i32,
    },
}

/// How long a freeze waits for every thread to stop before giving up.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A process whose threads are all frozen under our ptrace: stopped, or
/// [held](Frozen::held). Drop releases them (they resume) and returns only
/// once no thread is traced by the freeze any more.
///
/// The tracer is a dedicated, short-lived thread ([`Frozen::freeze`]), not
/// the caller: the kernel can only detach a thread that is in a ptrace stop,
/// and a thread stuck in an uninterruptible wait (a parent waiting for its
/// `vfork` child) is not; but when a tracer *thread* exits, the kernel
/// releases every thread it traced, stopped or not, and clears the pending
/// stop (`exit_ptrace` → `__ptrace_unlink`). So a freeze never leaves a
/// thread stopped behind it, whatever state the thread was in.
#[derive(Debug)]
pub struct Frozen {
    pid: i32,
    threads: Vec<i32>,
    held: Vec<i32>,
    tracer: Tracer,
}

/// Who holds the ptrace links.
#[derive(Debug)]
enum Tracer {
    /// A dedicated thread, told to release through `release` and joined.
    Thread {
        tid: i32,
        release: Option<std::sync::mpsc::Sender<()>>,
        join: Option<std::thread::JoinHandle<()>>,
    },
    /// The calling thread (a forked helper whose exit releases the rest);
    /// dropping the freeze detaches the stopped threads.
    Here { _freeze: Freeze },
}

/// The ptrace state of a freeze, on its tracer thread. Drop detaches every
/// stopped thread (re-injecting its signal); one that never stopped stays
/// traced until the tracer thread exits.
#[derive(Debug)]
struct Freeze {
    pid: i32,
    /// Seized threads and the signal to re-inject on detach (0 = none).
    seized: BTreeMap<i32, i32>,
    /// Threads the caller already traced before the freeze (e.g. a command
    /// stopped at its entry point by [`crate::launch::StoppedAtEntry`]):
    /// stopped already, and not ours to release.
    borrowed: BTreeSet<i32>,
    /// Seized threads that did not stop because they sleep uninterruptibly:
    /// they cannot run a user instruction (so cannot create a thread)
    /// without first entering the stop we asked for.
    held: BTreeSet<i32>,
}

/// How long a seized thread may sleep uninterruptibly (`D`) before the
/// freeze takes it as held instead of waiting for its stop: short I/O
/// waits end within this and the thread stops normally.
pub const HOLD_AFTER: Duration = Duration::from_millis(10);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> Result<libc::c_long, i32> {
    // SAFETY: the requests used here (SEIZE, INTERRUPT, GETEVENTMSG, DETACH) take
    // integers, or for GETEVENTMSG a pointer to a live u64 owned by the caller.
    let rc = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

impl Frozen {
    /// Freeze every thread of `pid` from a dedicated tracer thread. On error
    /// nothing is left traced (the tracer thread has exited).
    pub fn freeze(pid: i32) -> Result<Frozen, FreezeError> {
        if pid as u32 == std::process::id() {
            return Err(FreezeError::OwnProcess);
        }
        let caller = gettid();
        let (result_tx, result_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let join = std::thread::Builder::new()
            .name("hwbreak-freeze".into())
            .spawn(move || {
                let tid = gettid();
                match Freeze::new(pid, caller) {
                    Ok(f) => {
                        let _ = result_tx.send(Ok((tid, f.threads(), f.held())));
                        // Until the caller drops its `Frozen` (or is gone).
                        let _ = release_rx.recv();
                        drop(f);
                    }
                    Err(e) => {
                        drop(result_tx.send(Err((tid, e))));
                    }
                }
                // Leaving the thread releases whatever it still traces.
            })
            .map_err(|e| FreezeError::Refused(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        match result_rx.recv() {
            Ok(Ok((tid, threads, held))) => Ok(Frozen {
                pid,
                threads,
                held,
                tracer: Tracer::Thread {
                    tid,
                    release: Some(release_tx),
                    join: Some(join),
                },
            }),
            Ok(Err((tid, e))) => {
                let _ = join.join();
                wait_untraced_by(pid, tid);
                Err(e)
            }
            Err(_) => {
                // The tracer thread panicked; its exit released everything.
                let _ = join.join();
                Err(FreezeError::Gone)
            }
        }
    }

    /// Freeze every thread of `pid` with the calling thread as the tracer.
    /// A held thread stays traced until the calling thread exits: only for
    /// a forked helper that exits right after (`watch::selfattach`).
    pub(crate) fn freeze_here(pid: i32) -> Result<Frozen, FreezeError> {
        let f = Freeze::new(pid, gettid())?;
        Ok(Frozen {
            pid,
            threads: f.threads(),
            held: f.held(),
            tracer: Tracer::Here { _freeze: f },
        })
    }

    /// The frozen threads: stopped, held, or stopped by the caller before.
    pub fn threads(&self) -> Vec<i32> {
        self.threads.clone()
    }

    /// The frozen threads that did not stop because they sleep in an
    /// uninterruptible wait (e.g. a parent waiting for its `vfork` child).
    /// They cannot run a user instruction before they stop for us, so they
    /// are as frozen as the others; they are released when the freeze ends.
    pub fn held(&self) -> &[i32] {
        &self.held
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Tracer::Thread { tid, release, join } = &mut self.tracer {
            drop(release.take());
            if let Some(j) = join.take() {
                let _ = j.join();
            }
            wait_untraced_by(self.pid, *tid);
        }
    }
}

/// Wait until no thread of `pid` is traced by thread `tracer` any more. An
/// exited tracer's links are dropped by the kernel just after the thread
/// is reported gone (`exit_notify` runs after the join wakes), so this
/// waits out that window; it gives up after a second (a thread still
/// traced then is the kernel's to release, not ours).
fn wait_untraced_by(pid: i32, tracer: i32) {
    let start = std::time::Instant::now();
    loop {
        let Ok(tids) = procfs::threads(pid) else {
            return;
        };
        if !tids
            .iter()
            .any(|&t| procfs::tracer_of(pid, t) == Some(tracer))
        {
            return;
        }
        if start.elapsed() > Duration::from_secs(1) {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

impl Freeze {
    /// Seize and stop every thread of `pid` from this thread. Threads that
    /// `caller` traces already are borrowed. On error every stopped thread
    /// seized so far is detached again (by Drop).
    fn new(pid: i32, caller: i32) -> Result<Freeze, FreezeError> {
        let mut f = Freeze {
            pid,
            seized: BTreeMap::new(),
            borrowed: BTreeSet::new(),
            held: BTreeSet::new(),
        };
        let mut first_scan = true;
        let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
        let mut stopped: BTreeSet<i32> = BTreeSet::new();
        let mut seized_at: BTreeMap<i32, std::time::Instant> = BTreeMap::new();
        // TracerPid names the tracing *thread*: ptrace belongs to this thread.
        let me = gettid();
        loop {
            let tids = procfs::threads(pid).map_err(|_| FreezeError::Gone)?;
            let new: Vec<i32> = tids
                .iter()
                .copied()
                .filter(|t| !f.seized.contains_key(t) && !f.borrowed.contains(t))
                .collect();
            if new.is_empty()
                && f.seized
                    .keys()
                    .all(|t| stopped.contains(t) || f.held.contains(t))
            {
                break;
            }
            for t in new {
                match ptrace(libc::PTRACE_SEIZE, t, 0, libc::PTRACE_O_TRACECLONE as usize) {
                    Ok(_) => {
                        f.seized.insert(t, 0);
                        seized_at.insert(t, std::time::Instant::now());
                        // ESRCH here means it is exiting; the wait below sees that.
                        let _ = ptrace(libc::PTRACE_INTERRUPT, t, 0, 0);
                    }
                    Err(e) => match procfs::tracer_of(pid, t) {
                        // Traced by the caller before the freeze began: already stopped.
                        Some(tr) if tr == caller && first_scan => {
                            f.borrowed.insert(t);
                        }
                        // Auto-attached by TRACECLONE before we saw the clone event.
                        Some(tr) if tr == me => {
                            f.seized.insert(t, 0);
                        }
                        Some(tr) if tr != 0 => {
                            return Err(FreezeError::Traced { tid: t, tracer: tr })
                        }
                        // Gone, or exiting (ESRCH): nothing to freeze.
                        None => {}
                        _ if e == libc::ESRCH => {}
                        _ => return Err(FreezeError::Refused(e)),
                    },
                }
            }
            first_scan = false;
            if let Err(tid) = f.wait_all_stopped(&mut stopped, &seized_at, deadline) {
                return Err(FreezeError::Timeout { tid });
            }
        }
        Ok(f)
    }

    /// Poll every seized, not yet stopped thread until it reports a stop,
    /// exits, or is held (asleep uninterruptibly for [`HOLD_AFTER`]).
    fn wait_all_stopped(
        &mut self,
        stopped: &mut BTreeSet<i32>,
        seized_at: &BTreeMap<i32, std::time::Instant>,
        deadline: std::time::Instant,
    ) -> Result<(), i32> {
        loop {
            let pending: Vec<i32> = self
                .seized
                .keys()
                .copied()
                .filter(|t| !stopped.contains(t) && !self.held.contains(t))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(pending[0]);
            }
            let mut progress = false;
            for t in pending {
                let mut st = 0;
                // SAFETY: waitpid writes one int to `st`, a live local.
                let r = unsafe { libc::waitpid(t, &mut st, libc::__WALL | libc::WNOHANG) };
                if r == 0 {
                    match procfs::thread_state(self.pid, t) {
                        // An exited leader stays a zombie until the group ends: never waits.
                        Some('Z') | Some('X') | None => {
                            self.seized.remove(&t);
                            progress = true;
                        }
                        // Uninterruptible sleep (a vfork parent): it stops only
                        // when it wakes, and cannot run user code before.
                        Some('D')
                            if seized_at
                                .get(&t)
                                .is_none_or(|at| at.elapsed() >= HOLD_AFTER) =>
                        {
                            self.held.insert(t);
                            progress = true;
                        }
                        _ => {}
                    }
                    continue;
                }
                progress = true;
                if r < 0 || libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                    self.seized.remove(&t);
                    continue;
                }
                if libc::WIFSTOPPED(st) {
                    let event = (st >> 16) & 0xff;
                    let sig = libc::WSTOPSIG(st);
                    if event == libc::PTRACE_EVENT_CLONE {
                        let mut new_tid: libc::c_ulong = 0;
                        if ptrace(
                            libc::PTRACE_GETEVENTMSG,
                            t,
                            0,
                            &mut new_tid as *mut libc::c_ulong as usize,
                        )
                        .is_ok()
                        {
                            self.seized.entry(new_tid as i32).or_insert(0);
                        }
                    } else if event == 0 {
                        // A real signal arrived: hand it back on detach.
                        self.seized.insert(t, sig);
                    }
                    stopped.insert(t);
                }
            }
            if !progress {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// The frozen threads (stopped, held, or borrowed).
    fn threads(&self) -> Vec<i32> {
        self.seized
            .keys()
            .chain(self.borrowed.iter())
            .copied()
            .collect()
    }

    /// The held threads.
    fn held(&self) -> Vec<i32> {
        self.held.iter().copied().collect()
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        for (&t, &sig) in &self.seized {
            // ESRCH: it exited meanwhile, or it is held (not in a stop, so
            // it cannot be detached): the tracer thread's exit releases it.
            let _ = ptrace(libc::PTRACE_DETACH, t, 0, sig as usize);
        }
    }
}
