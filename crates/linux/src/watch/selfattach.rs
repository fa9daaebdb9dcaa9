//! Freezing our *own* process while attaching to its threads.
//!
//! A thread cannot ptrace its own thread group, so for `Target::Process(getpid())`
//! we `fork` a helper. The helper is a separate process of the same user: it
//! freezes our threads with ptrace exactly as [`crate::threads::Frozen`]
//! does for another process (our calling thread is frozen too, blocked in
//! `recvmsg`), opens every event on every thread with the same
//! [`open_member`] as the fan-out domain, enables them, lets the
//! threads run, and hands the fds back over a `socketpair` with
//! `SCM_RIGHTS`. The kernel keeps an event alive as long as any fd refers
//! to it, so the helper exits and we own the events.
//!
//! The helper runs Rust code after `fork` in a multi-threaded process. That
//! is sound with glibc, whose `fork` resets the malloc locks in the child;
//! the helper takes no other lock (no stdio, no environment) and leaves with
//! `_exit`. If the helper cannot freeze (not dumpable, a tracer attached,
//! ptrace refused), the caller falls back to re-scanning.

use super::attr::Watch;
use super::member::{
    open_member, Member, MemberEvents, OpenFailure, OpenPlan, OpenStep, WatchEvent,
};
use crate::event::Event;
use crate::threads::Frozen;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the helper achieved.
pub(crate) enum Outcome {
    /// Every thread got its events (enabled as asked), by thread id.
    Opened(HashMap<i32, MemberEvents>),
    /// Opening failed on thread `tid`; everything was closed again.
    OpenFailed {
        /// The thread.
        tid: i32,
        /// What failed.
        failure: OpenFailure,
    },
    /// The freeze was not possible: why. Nothing was opened.
    FreezeFailed(String),
}

const FDS: u32 = 0;
const DONE: u32 = 1;
const OPEN_FAILED: u32 = 2;
const FREEZE_FAILED: u32 = 3;
const BATCH: usize = 200; // below the kernel's SCM_MAX_FD (253)
/// The step word of an `OPEN_FAILED` message for [`OpenStep::Open`]; any
/// other value but [`STEP_BPF`] is the CPU of a failed [`OpenStep::Redirect`].
const STEP_OPEN: u32 = u32::MAX;
/// The step word for [`OpenStep::Bpf`].
const STEP_BPF: u32 = u32::MAX - 1;
/// The watch word of the side-band event (in `FDS` and `OPEN_FAILED`).
const SIDE_BAND: u32 = u32::MAX;

fn send(sock: RawFd, words: &[u32], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: words.as_ptr() as *mut libc::c_void,
        iov_len: std::mem::size_of_val(words),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below points to live
    // locals for the duration of the sendmsg call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let mut cbuf = vec![0u8; libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize];
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = cbuf.len();
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receive one message: its words and any fds (owned from here on).
fn recv(sock: RawFd) -> io::Result<(Vec<u32>, Vec<OwnedFd>)> {
    let mut words = vec![0u32; 2 + 2 * BATCH];
    let mut iov = libc::iovec {
        iov_base: words.as_mut_ptr().cast(),
        iov_len: words.len() * 4,
    };
    let mut cbuf = vec![0u8; 4096];
    // SAFETY: as in `send`; the kernel writes at most iov_len / msg_controllen bytes
    // into our buffers, and we only read the fds it reports in the control header.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len();
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        words.truncate(n as usize / 4);
        let mut fds = Vec::new();
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..bytes / 4 {
                    fds.push(OwnedFd::from_raw_fd(*p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((words, fds))
    }
}

/// The helper's work; returns normally only to `_exit`.
fn helper(plan: &OpenPlan<'_>, watches: &[Watch], enable: bool, pid: i32, sock: RawFd) {
    let fz = match Frozen::freeze_here(pid) {
        Ok(f) => f,
        Err(e) => {
            let why = format!("{e:?}");
            let mut w = vec![FREEZE_FAILED];
            w.extend(why.bytes().map(u32::from));
            let _ = send(sock, &w, &[]);
            return;
        }
    };
    let mut opened: Vec<(i32, MemberEvents)> = Vec::new();
    for tid in fz.threads() {
        match open_member(plan, Member::Thread(tid)) {
            Ok(h) => opened.push((tid, h)),
            // It exited meanwhile: nothing to watch.
            Err(f) if f.thread_gone() => {}
            Err(f) => {
                drop(opened);
                drop(fz);
                let errno = f.error.raw_os_error().unwrap_or(0) as u32;
                let step = match f.step {
                    OpenStep::Open => STEP_OPEN,
                    OpenStep::Bpf => STEP_BPF,
                    OpenStep::Redirect { cpu } => cpu as u32,
                };
                let _ = send(
                    sock,
                    &[
                        OPEN_FAILED,
                        errno,
                        f.watch.map_or(SIDE_BAND, |w| w as u32),
                        tid as u32,
                        step,
                    ],
                    &[],
                );
                return;
            }
        }
    }
    // Commit while every thread is stopped: no hit from a half-done request.
    if enable {
        for (_, h) in &opened {
            h.enable(watches);
        }
    }
    drop(fz);
    // (thread, watch word, fd) for every event, side-band ones included.
    let all: Vec<(i32, u32, RawFd)> = opened
        .iter()
        .flat_map(|(tid, h)| {
            let hits = h
                .events
                .iter()
                .map(move |we| (*tid, we.watch as u32, we.event.as_raw_fd()));
            let side = h
                .side_band
                .iter()
                .map(move |ev| (*tid, SIDE_BAND, ev.as_raw_fd()));
            hits.chain(side)
        })
        .collect();
    for chunk in all.chunks(BATCH) {
        let mut w = vec![FDS, chunk.len() as u32];
        let mut fds = Vec::with_capacity(chunk.len());
        for &(tid, watch, fd) in chunk {
            w.push(tid as u32);
            w.push(watch);
            fds.push(fd);
        }
        if send(sock, &w, &fds).is_err() {
            return;
        }
    }
    let _ = send(sock, &[DONE], &[]);
}

/// Freeze our own process from a forked helper and open `plan`'s events on
/// every thread, enabling those of `watches` not marked disabled if
/// `enable`. `Err` only for a failure of the mechanism itself.
pub(crate) fn attach(
    plan: &OpenPlan<'_>,
    watches: &[Watch],
    enable: bool,
    pid: i32,
) -> io::Result<Outcome> {
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two fds into `sv`, a live local array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds from the kernel, owned only here.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    // SAFETY: fork has no memory-safety preconditions; see the module docs for
    // what the child may do (glibc makes malloc usable in it).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        drop(ours);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            helper(plan, watches, enable, pid, theirs.as_raw_fd())
        }));
        // SAFETY: leave without running atexit handlers or destructors of the
        // parent's state (this is a copy of it).
        unsafe { libc::_exit(0) };
    }
    drop(theirs);
    let mut out: HashMap<i32, MemberEvents> = HashMap::new();
    let result = 'recv: loop {
        let (w, mut fds) = match recv(ours.as_raw_fd()) {
            Ok(m) => m,
            Err(e) => break Err(e),
        };
        match w.first().copied() {
            Some(FDS) if w.len() >= 2 => {
                let n = w[1] as usize;
                if fds.len() != n || w.len() != 2 + 2 * n {
                    break Err(io::Error::other("helper sent a malformed batch"));
                }
                for (i, fd) in fds.drain(..).enumerate() {
                    let (tid, watch) = (w[2 + 2 * i] as i32, w[3 + 2 * i]);
                    let h = out.entry(tid).or_default();
                    if watch == SIDE_BAND {
                        let Some(attr) = plan.side_band else {
                            break 'recv Err(io::Error::other("helper sent a side-band event"));
                        };
                        h.side_band
                            .push(Event::from_owned_fd(fd, attr.raw().read_format));
                        continue;
                    }
                    let Some(attr) = plan.attrs.get(watch as usize) else {
                        break 'recv Err(io::Error::other("helper sent an unknown watch"));
                    };
                    h.events.push(WatchEvent {
                        watch: watch as usize,
                        event: Event::from_owned_fd(fd, attr.raw().read_format),
                    });
                }
            }
            Some(DONE) => break Ok(Outcome::Opened(std::mem::take(&mut out))),
            Some(OPEN_FAILED) if w.len() == 5 => {
                break Ok(Outcome::OpenFailed {
                    tid: w[3] as i32,
                    failure: OpenFailure {
                        watch: (w[2] != SIDE_BAND).then_some(w[2] as usize),
                        step: match w[4] {
                            STEP_OPEN => OpenStep::Open,
                            STEP_BPF => OpenStep::Bpf,
                            cpu => OpenStep::Redirect { cpu: cpu as i32 },
                        },
                        error: io::Error::from_raw_os_error(w[1] as i32),
                    },
                })
            }
            Some(FREEZE_FAILED) => {
                let why: String = w[1..].iter().filter_map(|&c| char::from_u32(c)).collect();
                break Ok(Outcome::FreezeFailed(why));
            }
            // EOF: the helper died without a word.
            _ => break Err(io::Error::other("the attach helper exited early")),
        }
    };
    let mut st = 0;
    // SAFETY: reaping our own child; `st` is a live local. ECHILD (someone else
    // reaped it) is harmless: the messages already told us the outcome.
    unsafe { libc::waitpid(child, &mut st, libc::__WALL) };
    result
}
