//! `SIGTRAP` as the launched program inherited it, kept through the entry
//! stop (issue 9 #5).
//!
//! [`super::StoppedAtEntry`] stops the program with signals: the `SIGTRAP`
//! the kernel sends after a `PTRACE_TRACEME` exec, and the forced `SIGTRAP`
//! of its `int3`. Both go wrong when the program inherits `SIGTRAP` blocked
//! or ignored: a blocked post-exec `SIGTRAP` stays pending and the program
//! runs to its end unwatched, and a forced signal that is blocked or ignored
//! makes the kernel unblock it and reset its handler to `SIG_DFL`
//! (`force_sig_info_to_task`), so the program would run with another mask
//! and disposition than it was given. So: the child unblocks `SIGTRAP`
//! before `exec` (and says whether it was blocked), the entry stop runs
//! with `SIGTRAP` unblocked, and at the entry point the mask goes back
//! (`PTRACE_SETSIGMASK`) and an ignored disposition is set again by running
//! one `rt_sigaction(SIGTRAP, SIG_IGN)` in the program (there is no ptrace
//! request for a disposition; the call is run with `PTRACE_SYSCALL`, whose
//! stops are not signals, so it changes nothing else).

use super::{get_regs, peek_text, poke_text, set_regs};
use std::io;

/// `SIGTRAP`'s bit in a kernel signal set.
const BIT: u64 = 1 << (libc::SIGTRAP - 1);

/// How the program had `SIGTRAP` when it was stopped after an exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TrapState {
    /// Blocked in the thread's mask.
    pub blocked: bool,
    /// Disposition `SIG_IGN`.
    pub ignored: bool,
}

/// The kernel signal mask of the stopped tracee (`PTRACE_GETSIGMASK`).
fn get_mask(pid: i32) -> io::Result<u64> {
    let mut m = 0u64;
    // SAFETY: PTRACE_GETSIGMASK writes `addr` (8) bytes to `data`, a live u64.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGMASK,
            pid,
            8usize as *mut libc::c_void,
            &mut m as *mut u64 as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(m)
}

/// Set the kernel signal mask of the stopped tracee (`PTRACE_SETSIGMASK`).
fn set_mask(pid: i32, m: u64) -> io::Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads `addr` (8) bytes from `data`, a live u64.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            pid,
            8usize as *mut libc::c_void,
            &m as *const u64 as *mut libc::c_void,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `SIGTRAP` is ignored by `pid` (`SigIgn` of /proc/PID/status).
fn ignored(pid: i32) -> io::Result<bool> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status has no SigIgn line")))?;
    Ok(v & BIT != 0)
}

/// In the forked child before `exec` (async-signal-safe calls only):
/// unblock `SIGTRAP`; whether it was blocked.
pub(super) fn unblock_in_child() -> bool {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live local sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTRAP);
    }
    // SAFETY: as above; `old` is a live local written by sigprocmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigprocmask reads `set` and writes `old`, both live locals.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, &mut old) };
    // SAFETY: `old` was filled by sigprocmask.
    (unsafe { libc::sigismember(&old, libc::SIGTRAP) }) == 1
}

/// At the stop after an exec: how the program has `SIGTRAP`
/// (`blocked_before_exec` from [`unblock_in_child`] for the first program),
/// and unblock it for the entry stop.
pub(super) fn before_entry(pid: i32, blocked_before_exec: bool) -> io::Result<TrapState> {
    let mask = get_mask(pid)?;
    let st = TrapState {
        blocked: blocked_before_exec || mask & BIT != 0,
        ignored: ignored(pid)?,
    };
    if mask & BIT != 0 {
        set_mask(pid, mask & !BIT)?;
    }
    Ok(st)
}

/// At the entry point (registers `regs`, rip at the entry): give the program
/// back the `SIGTRAP` it inherited.
/// `wait` waits for the tracee's next stop (its stop signal), as
/// [`super::StoppedAtEntry`] does, forgetting a tracee that ended.
pub(super) fn at_entry(
    pid: i32,
    st: TrapState,
    regs: &libc::user_regs_struct,
    wait: &mut dyn FnMut() -> io::Result<i32>,
) -> io::Result<()> {
    if st.blocked {
        set_mask(pid, get_mask(pid)? | BIT)?;
    }
    if st.ignored && !ignored(pid)? {
        ignore_again(pid, regs, wait)?;
    }
    Ok(())
}

/// Bytes `bytes` written at `addr` in the tracee; the words they replaced.
fn write_bytes(pid: i32, addr: u64, bytes: &[u8]) -> io::Result<Vec<(u64, u64)>> {
    let mut saved = Vec::new();
    let first = addr & !7;
    let last = (addr + bytes.len() as u64 - 1) & !7;
    let mut w = first;
    while w <= last {
        let old = peek_text(pid, w)?;
        let mut b = old.to_le_bytes();
        for (i, byte) in b.iter_mut().enumerate() {
            let a = w + i as u64;
            if a >= addr && a < addr + bytes.len() as u64 {
                *byte = bytes[(a - addr) as usize];
            }
        }
        poke_text(pid, w, u64::from_le_bytes(b))?;
        saved.push((w, old));
        w += 8;
    }
    Ok(saved)
}

/// Run `rt_sigaction(SIGTRAP, {SIG_IGN}, NULL, 8)` in the tracee stopped at
/// `regs` (rip at its entry point), then put back every byte and register.
/// The `struct kernel_sigaction` goes 512 bytes below the stack pointer
/// (at the entry point nothing lives below it), the `syscall` instruction
/// over the entry's first two bytes.
fn ignore_again(
    pid: i32,
    regs: &libc::user_regs_struct,
    wait: &mut dyn FnMut() -> io::Result<i32>,
) -> io::Result<()> {
    let act_at = (regs.rsp - 512) & !15;
    let mut act = Vec::with_capacity(32);
    // sa_handler = SIG_IGN (1), sa_flags, sa_restorer, sa_mask: all 0.
    for v in [libc::SIG_IGN as u64, 0, 0, 0] {
        act.extend_from_slice(&v.to_le_bytes());
    }
    let mut saved = write_bytes(pid, act_at, &act)?;
    saved.extend(write_bytes(pid, regs.rip, &[0x0f, 0x05])?);
    let mut call = *regs;
    call.rax = libc::SYS_rt_sigaction as u64;
    call.rdi = libc::SIGTRAP as u64;
    call.rsi = act_at;
    call.rdx = 0;
    call.r10 = 8;
    let result = set_regs(pid, &call).and_then(|()| run_one_syscall(pid, wait));
    // Restore in reverse order (the two writes may share a word only if the
    // stack were next to the text: never, but reverse order is right anyway).
    for (w, old) in saved.into_iter().rev() {
        poke_text(pid, w, old)?;
    }
    set_regs(pid, regs)?;
    let ret = result?;
    if ret != 0 {
        return Err(io::Error::other(format!(
            "could not set SIGTRAP back to ignored at the entry point: rt_sigaction returned {}",
            ret as i64
        )));
    }
    Ok(())
}

/// From a stop before a `syscall` instruction: run to its exit stop; its
/// return value. A signal that stops the tracee meanwhile is delivered.
fn run_one_syscall(pid: i32, wait: &mut dyn FnMut() -> io::Result<i32>) -> io::Result<u64> {
    for _ in 0..2 {
        let mut sig = 0;
        loop {
            // SAFETY: PTRACE_SYSCALL takes integers only.
            if unsafe {
                libc::ptrace(
                    libc::PTRACE_SYSCALL,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    sig as usize as *mut libc::c_void,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
            match wait()? {
                libc::SIGTRAP => break,
                s => sig = s,
            }
        }
    }
    Ok(get_regs(pid)?.rax)
}
