//! What `/proc` and `/sys` say: threads of a process, their state, owner
//! and tracer, mappings, online CPUs, the perf and ptrace sysctls. Every
//! `/proc` read of this crate outside [`crate::symbols`] is here, so that
//! [`crate::error`] stays plain data. Small hand-written parsers: the
//! formats are one line per entry and a crate (procfs) would pull in far
//! more than we use.

use crate::error::{Denied, Error, Result};
use std::path::Path;

/// `/proc/sys/kernel/perf_event_paranoid`, if readable.
pub fn perf_event_paranoid() -> Option<i32> {
    read_i32("/proc/sys/kernel/perf_event_paranoid")
}

/// `/proc/sys/kernel/yama/ptrace_scope`, or `None` when Yama is absent.
pub fn ptrace_scope() -> Option<i32> {
    read_i32("/proc/sys/kernel/yama/ptrace_scope")
}

/// `/proc/sys/kernel/perf_event_max_stack` (the deepest callchain the
/// kernel records), capped at 127 (our callchain buffers); 127 if unreadable.
pub fn perf_event_max_stack() -> u16 {
    read_i32("/proc/sys/kernel/perf_event_max_stack")
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(127)
        .min(127)
}

/// `/proc/sys/kernel/perf_event_mlock_kb`: the KiB of perf rings an
/// unprivileged user may lock per CPU, if readable.
pub fn perf_event_mlock_kb() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_i32(p: &str) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// An [`Error::Permission`] for `what`, refused with `errno` by `rule`, with
/// the perf and ptrace sysctls read now (the message names their values).
pub fn permission_error(what: impl Into<String>, errno: i32, rule: Denied) -> Error {
    Error::permission_with(what, errno, rule, perf_event_paranoid(), ptrace_scope())
}

/// An [`Error::OutOfFds`] for `what`, with this process's descriptor count
/// and limits read now.
pub fn out_of_fds_error(what: String, errno: i32) -> Error {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, a live local.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    let known = |v: libc::rlim_t| (ok && v != libc::RLIM_INFINITY).then_some(v);
    Error::OutOfFds {
        what,
        errno,
        open: open_fd_count(),
        soft: known(r.rlim_cur),
        hard: known(r.rlim_max),
    }
}

/// The permission rule for a breakpoint on thread or process `tid` (0 = this
/// one): [`Denied::OtherUser`] when `/proc/TID/status` names another real
/// uid, else [`Denied::Own`].
pub fn denied_for_task(tid: i32) -> Denied {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    if tid <= 0 {
        return Denied::Own;
    }
    Denied::for_owner(
        status(&format!("/proc/{tid}/status")).and_then(|s| s.uid),
        me,
    )
}

/// What this crate reads from a `/proc/.../status` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// The real uid (first field of `Uid:`).
    pub uid: Option<u32>,
    /// The tracing thread (`TracerPid:`), 0 when not traced.
    pub tracer: Option<i32>,
}

/// Parse the text of a `status` file; absent or malformed fields are `None`.
pub fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("Uid:") {
            st.uid = v.split_whitespace().next().and_then(|u| u.parse().ok());
        } else if let Some(v) = l.strip_prefix("TracerPid:") {
            st.tracer = v.trim().parse().ok();
        }
    }
    st
}

fn status(path: &str) -> Option<Status> {
    Some(parse_status(&std::fs::read_to_string(path).ok()?))
}

/// The tracer of thread `tid` of process `pid` (`TracerPid`, 0 = none), or
/// `None` if the thread is gone.
pub fn tracer_of(pid: i32, tid: i32) -> Option<i32> {
    status(&format!("/proc/{pid}/task/{tid}/status"))?.tracer
}

/// `AT_ENTRY` (the program's ELF entry point) from `/proc/PID/auxv`.
pub fn auxv_entry(pid: i32) -> std::io::Result<u64> {
    let b = std::fs::read(format!("/proc/{pid}/auxv"))?;
    b.chunks_exact(16)
        .map(|c| {
            (
                u64::from_ne_bytes(c[..8].try_into().unwrap()),
                u64::from_ne_bytes(c[8..].try_into().unwrap()),
            )
        })
        .find(|&(k, _)| k == libc::AT_ENTRY)
        .map(|(_, v)| v)
        .ok_or_else(|| std::io::Error::other("no AT_ENTRY in auxv"))
}

/// Whether process `pid` exists (as seen in `/proc`).
pub fn process_exists(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// The id under which process `pid`'s memory is read in `/proc`: `pid`
/// itself, or, when its main thread has exited while others live on (a
/// zombie leader, whose `/proc/PID/maps` is empty and whose `exe` link is
/// unreadable), its first live thread: `/proc/TID/` shows the same process
/// through a live thread.
pub fn live_task(pid: i32) -> i32 {
    if !matches!(thread_state(pid, pid), Some('Z') | Some('X')) {
        return pid;
    }
    threads(pid)
        .ok()
        .and_then(|t| t.first().copied())
        .unwrap_or(pid)
}

/// The thread ids of process `pid`, from `/proc/PID/task`, skipping zombie
/// threads (an exited leader stays listed as `Z` until the group ends; it can
/// take no breakpoint and must not be waited for).
pub fn threads(pid: i32) -> Result<Vec<i32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ProcessGone { pid }
        } else {
            Error::sys(format!("read /proc/{pid}/task"), e)
        }
    })?;
    let mut v: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| !matches!(thread_state(pid, tid), Some('Z') | Some('X') | None))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The kernel's `PF_KTHREAD` task flag (`include/linux/sched.h`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in `/proc/PID/stat`'s
/// flags): it has no user memory, maps or executable.
pub fn is_kernel_thread(pid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the comm's last ')': state ppid pgrp session tty_nr tpgid flags.
    s.rfind(')')
        .and_then(|i| s[i + 1..].split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// A process's name (`/proc/PID/comm`), empty if unreadable.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// `pid` names a live user process or thread: else [`Error::ProcessGone`]
/// or [`Error::KernelThread`].
pub fn check_user_process(pid: i32) -> Result<()> {
    if !process_exists(pid) {
        return Err(Error::ProcessGone { pid });
    }
    if is_kernel_thread(pid) {
        return Err(Error::KernelThread {
            pid,
            comm: comm(pid),
        });
    }
    Ok(())
}

/// A thread's state letter (`R`, `S`, `T`, `t`, `Z` ...) or `None` if it is gone.
pub fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // comm may contain spaces and parentheses: the state follows the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions, e.g. `rw-p`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`), empty for anonymous
    /// memory. A trailing ` (deleted)` is removed and recorded in `deleted`.
    pub path: String,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// The mapped file was deleted (read it through `/proc/PID/map_files`).
    pub deleted: bool,
}

/// Parse `/proc/PID/maps`.
pub fn maps(pid: i32) -> Result<Vec<Mapping>> {
    let live = live_task(pid);
    let text = std::fs::read_to_string(format!("/proc/{live}/maps")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            Error::ProcessGone { pid }
        } else if let Some(errno @ (libc::EACCES | libc::EPERM)) = e.raw_os_error() {
            // Reading maps takes the same ptrace read access as watching.
            permission_error(
                format!("read /proc/{pid}/maps"),
                errno,
                denied_for_task(pid),
            )
        } else {
            Error::sys(format!("read /proc/{pid}/maps"), e)
        }
    })?;
    Ok(parse_maps(&text))
}

/// Parse the text of a maps file; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let range = it.next()?;
            let perms = it.next()?.to_string();
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let inode = it.next()?.parse().ok()?;
            let path = it.next().unwrap_or("").trim_start();
            let (path, deleted) = match path.strip_suffix(" (deleted)") {
                Some(p) => (p, true),
                None => (path, false),
            };
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms,
                offset,
                path: path.to_string(),
                inode,
                deleted,
            })
        })
        .collect()
}

/// Whether `[addr, addr+len)` is covered by mappings (possibly several adjacent ones).
pub fn is_mapped(maps: &[Mapping], addr: u64, len: u64) -> bool {
    let end = match addr.checked_add(len.max(1)) {
        Some(e) => e,
        None => return false,
    };
    let mut cur = addr;
    while cur < end {
        match maps.iter().find(|m| m.start <= cur && cur < m.end) {
            Some(m) => cur = m.end,
            None => return false,
        }
    }
    true
}

/// Online CPUs, from `/sys/devices/system/cpu/online` (e.g. `0-1,4`).
pub fn online_cpus() -> Result<Vec<u32>> {
    let s = online_cpus_text()?;
    Ok(parse_cpu_list(&s))
}

pub(crate) fn online_cpus_text() -> Result<String> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::sys("read /sys/devices/system/cpu/online", e))
}

/// Parse a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    v.push(a);
                }
            }
        }
    }
    v
}

/// How many file descriptors this process has open (`/proc/self/fd`).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_parses_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
    }

    #[test]
    fn maps_parse_and_cover_adjacent_ranges() {
        let m = parse_maps(
            "55d0a000-55d0b000 r--p 00000000 08:01 123 /bin/x\n\
             55d0b000-55d0c000 rw-p 00001000 08:01 123 /bin/x\n\
             7ffd0000-7ffd1000 rw-p 00000000 00:00 0                          [stack]\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].path, "[stack]");
        assert!(is_mapped(&m, 0x55d0aff8, 16));
        assert!(!is_mapped(&m, 0x55d0bff8, 16));
        assert!(!is_mapped(&m, u64::MAX, 2));
    }

    #[test]
    fn status_gives_the_real_uid_and_the_tracer() {
        let st = parse_status("Name:\tx\nTracerPid:\t4242\nUid:\t1000\t0\t0\t0\n");
        assert_eq!(st.uid, Some(1000));
        assert_eq!(st.tracer, Some(4242));
        assert_eq!(parse_status("Name: x\n"), Status::default());
        let me = std::process::id() as i32;
        assert_eq!(tracer_of(me, me), Some(0));
        assert_eq!(tracer_of(i32::MAX, i32::MAX), None);
    }

    #[test]
    fn kthreadd_is_a_kernel_thread_and_this_process_is_not() {
        // PID 2 is kthreadd on every Linux since 2.6.
        assert!(is_kernel_thread(2));
        assert!(!is_kernel_thread(std::process::id() as i32));
        assert!(!is_kernel_thread(i32::MAX));
        let e = check_user_process(2).unwrap_err();
        assert!(matches!(e, Error::KernelThread { pid: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("is a kernel thread"), "{e}");
        assert!(check_user_process(std::process::id() as i32).is_ok());
        assert!(matches!(
            check_user_process(i32::MAX),
            Err(Error::ProcessGone { .. })
        ));
    }

    #[test]
    fn own_threads_are_listed_and_dead_pid_is_gone() {
        let me = std::process::id() as i32;
        assert!(threads(me).unwrap().contains(&me));
        assert!(matches!(threads(i32::MAX), Err(Error::ProcessGone { .. })));
    }
}
