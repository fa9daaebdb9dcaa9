//! A process stopped at the write, left for a debugger.
//!
//! [`crate::filter::HitFilter`] stops the process from the trap with
//! `SIGSTOP`. This module waits until the group stop is complete (every
//! thread in state `T`), and reads where each thread stopped without
//! attaching: `/proc/PID/task/TID/syscall` gives a thread's user stack and
//! instruction pointers when it is stopped outside a system call (`-1 SP
//! PC`). Nothing here traces the process, so `gdb -p PID` can attach the
//! moment we return: gdb sees the process stopped, attaches, and (as
//! `linux_nat` does for a stopped process) wakes it into its own stop with
//! `SIGCONT`, the registers as they were.

use crate::error::{Error, Result};
use crate::procfs;
use std::time::{Duration, Instant};

/// Where one thread of a stopped process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStop {
    /// Thread id.
    pub tid: i32,
    /// Its state letter in `/proc` (`T` for a group stop).
    pub state: char,
    /// Its user-space instruction pointer, when it stopped outside a
    /// system call (`None` inside one, e.g. blocked in `futex`).
    pub user_ip: Option<u64>,
}

/// How long [`wait_group_stop`] waits for the last thread: a thread in
/// uninterruptible sleep (`D`) joins the stop only when its I/O completes.
pub const GROUP_STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Wait until every thread of `pid` is stopped (`T`), and say where each
/// is. Errors: the process exited ([`Error::ProcessGone`]), or a thread
/// did not stop within [`GROUP_STOP_PATIENCE`] (the error lists the states).
pub fn wait_group_stop(pid: i32) -> Result<Vec<ThreadStop>> {
    let t0 = Instant::now();
    loop {
        let tids = procfs::threads(pid)?;
        if tids.is_empty() {
            return Err(Error::ProcessGone { pid });
        }
        let states: Vec<(i32, Option<char>)> = tids
            .iter()
            .map(|&t| (t, procfs::thread_state(pid, t)))
            .collect();
        if states.iter().any(|s| matches!(s.1, Some('Z' | 'X'))) && !procfs::process_exists(pid) {
            return Err(Error::ProcessGone { pid });
        }
        if states.iter().all(|s| s.1 == Some('T')) {
            return Ok(states
                .iter()
                .map(|&(tid, st)| ThreadStop {
                    tid,
                    state: st.unwrap_or('T'),
                    user_ip: user_ip(pid, tid),
                })
                .collect());
        }
        if t0.elapsed() > GROUP_STOP_PATIENCE {
            let list: Vec<String> = states
                .iter()
                .map(|(t, s)| format!("{t}:{}", s.unwrap_or('?')))
                .collect();
            return Err(Error::Invalid(format!(
                "process {pid} was sent SIGSTOP but not every thread stopped within {}s (thread:state {}); a thread in D state stops when its I/O ends",
                GROUP_STOP_PATIENCE.as_secs(),
                list.join(" ")
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Thread `tid`'s user instruction pointer while it is stopped outside a
/// system call, from `/proc/PID/task/TID/syscall` (`-1 SP PC`; the kernel
/// shows it to a reader allowed to ptrace the process).
pub fn user_ip(pid: i32, tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    parse_syscall_line(&s)
}

/// The PC of a `syscall` line that says "not in a system call" (`-1 SP PC`).
pub fn parse_syscall_line(s: &str) -> Option<u64> {
    let mut f = s.split_whitespace();
    if f.next()? != "-1" {
        return None;
    }
    let _sp = f.next()?;
    u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()
}

/// Read `len` (at most 8) bytes of `pid` at `addr`, little-endian, with
/// `process_vm_readv` (works on a stopped process, without attaching).
pub fn read_u64(pid: i32, addr: u64, len: usize) -> Result<u64> {
    let len = len.min(8);
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` points to `buf`, live and `len` <= 8 bytes long; the
    // remote iovec is only read by the kernel in the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n != len as isize {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ESRCH) => Error::ProcessGone { pid },
            _ => Error::sys(format!("read {len} bytes at {addr:#x} in process {pid}"), e),
        });
    }
    Ok(u64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_line_gives_the_pc_only_outside_a_system_call() {
        assert_eq!(
            parse_syscall_line("-1 0x7ffd3c1b2e48 0x5555555551e0\n"),
            Some(0x5555_5555_51e0)
        );
        assert_eq!(
            parse_syscall_line("202 0x7f 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x7f12\n"),
            None
        );
        assert_eq!(parse_syscall_line("running\n"), None);
    }

    #[test]
    fn reading_a_dead_process_names_it_gone() {
        let e = read_u64(i32::MAX - 1, 0x1000, 8).unwrap_err();
        assert!(matches!(e, Error::ProcessGone { .. }), "{e}");
    }
}
