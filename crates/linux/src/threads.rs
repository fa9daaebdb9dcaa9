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
//! already stopped, and it is not released when the freeze ends. A thread
//! that does not stop within [`FREEZE_TIMEOUT`] (stuck in uninterruptible
//! sleep) makes the freeze give up and release everything; the watcher then
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

/// A process whose threads are all stopped under our ptrace. Drop detaches
/// them (they resume). Must be dropped on the thread that created it: ptrace
/// requests only work from the tracer thread.
#[derive(Debug)]
pub struct Frozen {
    pid: i32,
    /// Seized threads and the signal to re-inject on detach (0 = none).
    seized: BTreeMap<i32, i32>,
    /// Threads this thread already traced before the freeze (e.g. a command
    /// stopped at its entry point by [`crate::launch::StoppedAtEntry`]):
    /// stopped already, and not ours to release.
    borrowed: BTreeSet<i32>,
}

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

impl Frozen {
    /// Stop every thread of `pid`. On error every thread seized so far is
    /// detached again.
    pub fn freeze(pid: i32) -> Result<Frozen, FreezeError> {
        if pid as u32 == std::process::id() {
            return Err(FreezeError::OwnProcess);
        }
        let mut f = Frozen {
            pid,
            seized: BTreeMap::new(),
            borrowed: BTreeSet::new(),
        };
        let mut first_scan = true;
        let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
        let mut stopped: BTreeSet<i32> = BTreeSet::new();
        // TracerPid names the tracing *thread*: ptrace belongs to this thread.
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        loop {
            let tids = procfs::threads(pid).map_err(|_| FreezeError::Gone)?;
            let new: Vec<i32> = tids
                .iter()
                .copied()
                .filter(|t| !f.seized.contains_key(t) && !f.borrowed.contains(t))
                .collect();
            if new.is_empty() && f.seized.keys().all(|t| stopped.contains(t)) {
                break;
            }
            for t in new {
                match ptrace(libc::PTRACE_SEIZE, t, 0, libc::PTRACE_O_TRACECLONE as usize) {
                    Ok(_) => {
                        f.seized.insert(t, 0);
                        // ESRCH here means it is exiting; the wait below sees that.
                        let _ = ptrace(libc::PTRACE_INTERRUPT, t, 0, 0);
                    }
                    Err(e) => match procfs::tracer_of(pid, t) {
                        // Traced by us before the freeze began: already stopped.
                        Some(tr) if tr == me && first_scan => {
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
            if let Err(tid) = f.wait_all_stopped(&mut stopped, deadline) {
                return Err(FreezeError::Timeout { tid });
            }
        }
        Ok(f)
    }

    /// Poll every seized, not yet stopped thread until it reports a stop or exits.
    fn wait_all_stopped(
        &mut self,
        stopped: &mut BTreeSet<i32>,
        deadline: std::time::Instant,
    ) -> Result<(), i32> {
        loop {
            let pending: Vec<i32> = self
                .seized
                .keys()
                .copied()
                .filter(|t| !stopped.contains(t))
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
                    // An exited leader stays a zombie until the group ends: never waits.
                    if matches!(
                        procfs::thread_state(self.pid, t),
                        Some('Z') | Some('X') | None
                    ) {
                        self.seized.remove(&t);
                        progress = true;
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

    /// The stopped threads.
    pub fn threads(&self) -> Vec<i32> {
        self.seized
            .keys()
            .chain(self.borrowed.iter())
            .copied()
            .collect()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for (&t, &sig) in &self.seized {
            // ESRCH: it exited meanwhile; nothing to undo.
            let _ = ptrace(libc::PTRACE_DETACH, t, 0, sig as usize);
        }
    }
}
