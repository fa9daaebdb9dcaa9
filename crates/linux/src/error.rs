//! Typed errors. Each names the rule that was broken and what to do next.
//!
//! Most are found before any system call: the arch rules come from
//! `hwbreak_core::arch`, a dead process and an unmapped address from `/proc`.
//! The kernel's own answers (`ENOSPC`, `EACCES`, `EPERM`, `ESRCH`) are turned
//! into the same variants, with what we know about who holds the slots and
//! which permission is missing.

use hwbreak_core::arch::ArchError;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from `hwbreak-linux`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CPU cannot watch this: alignment, length, access kind (from core's arch rules).
    #[error("watch `{watch}`: {source}")]
    Arch {
        /// The watch's name.
        watch: String,
        /// The arch rule that was broken.
        #[source]
        source: ArchError,
    },

    /// No free debug-register slot (`ENOSPC` from the kernel).
    #[error("{}", no_slot_message(.watch, .held_by_us, .total, .other_users))]
    NoSlot {
        /// The watch that did not fit.
        watch: String,
        /// Watches of this request that already hold a slot on the same thread/CPU.
        held_by_us: Vec<String>,
        /// Slots the hardware has (4 on x86-64).
        total: usize,
        /// Slots held by other perf users (another tool, gdb, a second watcher):
        /// `total - held_by_us.len()`.
        other_users: usize,
    },

    /// The kernel refused for lack of permission (`EACCES`/`EPERM`).
    #[error("{}", permission_message(.what, .errno, .paranoid, .ptrace_scope))]
    Permission {
        /// What we tried (e.g. "open a breakpoint on thread 1234").
        what: String,
        /// The errno the kernel returned.
        errno: i32,
        /// `/proc/sys/kernel/perf_event_paranoid`, if readable.
        paranoid: Option<i32>,
        /// `/proc/sys/kernel/yama/ptrace_scope`, if present (absent without Yama).
        ptrace_scope: Option<i32>,
    },

    /// The process or thread does not exist (any more).
    #[error("process {pid} does not exist (it exited, or the PID is wrong); check with `ps -p {pid}` and pass a live PID")]
    ProcessGone {
        /// The PID or TID.
        pid: i32,
    },

    /// The watched range is not mapped in the target process.
    #[error("watch `{watch}`: address {addr:#x}+{len} is not mapped in process {pid} (see /proc/{pid}/maps); resolve the name in this process (PIE and ASLR move addresses) or pick a mapped address")]
    NotMapped {
        /// The watch's name.
        watch: String,
        /// The address.
        addr: u64,
        /// Its length.
        len: u64,
        /// The process.
        pid: i32,
    },

    /// The CPU does not exist or is offline.
    #[error("CPU {cpu} is not online (online: {online}); pick an online CPU or watch all CPUs")]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: u32,
        /// The online CPU list, as in /sys/devices/system/cpu/online.
        online: String,
    },

    /// The request itself is inconsistent (no watch, a mode the target cannot do).
    #[error("invalid request: {0}")]
    Invalid(String),

    /// The kernel lacks a feature this request needs.
    #[error(
        "{feature} is not supported by this kernel ({errno_name}); it needs Linux {since} or later"
    )]
    Unsupported {
        /// The feature.
        feature: &'static str,
        /// The kernel version that introduced it.
        since: &'static str,
        /// What the kernel said.
        errno_name: String,
    },

    /// A launched command could not be started.
    #[error("cannot launch `{program}`: {source}")]
    Launch {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Any other system-call failure, with the call that failed.
    #[error("{op}: {source}")]
    Sys {
        /// What we were doing.
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A system-call failure with context.
    pub fn sys(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }

    /// The errno behind this error, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Permission { errno, .. } => Some(*errno),
            Error::NoSlot { .. } => Some(libc::ENOSPC),
            Error::ProcessGone { .. } => Some(libc::ESRCH),
            Error::Sys { source, .. } | Error::Launch { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn no_slot_message(watch: &str, ours: &[String], total: &usize, others: &usize) -> String {
    let mut s = format!(
        "no free hardware breakpoint slot for watch `{watch}`: the CPU has {total}, and all are taken"
    );
    if !ours.is_empty() {
        s.push_str(&format!(
            "; this request holds {} ({})",
            ours.len(),
            ours.join(", ")
        ));
    }
    if *others > 0 {
        s.push_str(&format!(
            "; {others} held by other perf users on this thread/CPU (another hwbreak, perf, gdb hardware watchpoints)"
        ));
    }
    s.push_str("; remaining: 0. Drop a watch, or watch a wider variable with fewer slots");
    s
}

/// What `perf_event_paranoid` levels mean for an unprivileged user.
pub fn explain_paranoid(level: i32) -> &'static str {
    match level {
        i32::MIN..=-1 => "-1: no restrictions",
        0 => "0: CPU-wide events allowed, no raw tracepoints",
        1 => "1: no CPU-wide events without CAP_PERFMON; own processes only",
        2 => "2: also no kernel-space profiling; own processes, user space only",
        _ => "3 or more (distribution patch): perf_event_open disabled for unprivileged users",
    }
}

fn permission_message(
    what: &str,
    errno: &i32,
    paranoid: &Option<i32>,
    scope: &Option<i32>,
) -> String {
    let mut s = format!(
        "permission denied ({}) to {what}. ",
        std::io::Error::from_raw_os_error(*errno)
    );
    s.push_str("Watching another user's process needs CAP_SYS_PTRACE (run as root or as that user); CPU-wide watches need CAP_PERFMON or perf_event_paranoid <= 0");
    match paranoid {
        Some(p) => s.push_str(&format!(
            "; /proc/sys/kernel/perf_event_paranoid = {}",
            explain_paranoid(*p)
        )),
        None => s.push_str("; /proc/sys/kernel/perf_event_paranoid is unreadable"),
    }
    match scope {
        Some(0) => s.push_str("; yama ptrace_scope = 0 (classic: same uid may attach)"),
        Some(1) => s.push_str("; yama ptrace_scope = 1 (only descendants: launch the program with `-- CMD`, or lower it with `sysctl kernel.yama.ptrace_scope=0`)"),
        Some(2) => s.push_str("; yama ptrace_scope = 2 (admin only: needs CAP_SYS_PTRACE)"),
        Some(n) => s.push_str(&format!("; yama ptrace_scope = {n} (attach disabled)")),
        None => s.push_str("; Yama is absent (ptrace_scope does not apply)"),
    }
    s
}

/// A compact name for an errno, for messages.
pub(crate) fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ENOSPC => "ENOSPC",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ESRCH => "ESRCH",
        libc::EINVAL => "EINVAL",
        libc::E2BIG => "E2BIG",
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "",
    };
    if name.is_empty() {
        format!("errno {e}")
    } else {
        name.to_string()
    }
}
