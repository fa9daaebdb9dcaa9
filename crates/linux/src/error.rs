//! Typed errors. Each names the rule that was broken and what to do next.
//!
//! Plain data: nothing here reads `/proc` or calls the kernel. The values a
//! message needs (the sysctls, a task's owner) are read by [`crate::procfs`]
//! and handed in.
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

    /// The kernel refused for lack of permission (`EACCES`/`EPERM`). The
    /// message names only the rules of `rule` (build it with
    /// [`crate::procfs::permission_error`], which reads the sysctls).
    #[error("{}", permission_message(.what, *.errno, *.rule, *.paranoid, *.ptrace_scope))]
    Permission {
        /// What we tried (e.g. "open a breakpoint on thread 1234").
        what: String,
        /// The errno the kernel returned.
        errno: i32,
        /// Which permission rule refused it.
        rule: Denied,
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

    /// The PID names a kernel thread, which has no user-space memory.
    #[error("process {pid} ({comm}) is a kernel thread: it has no user-space memory to watch. Pass the PID of a user process (`ps -o pid,comm` shows kernel threads in [brackets]), or watch a kernel address CPU-wide as root")]
    KernelThread {
        /// The PID.
        pid: i32,
        /// Its name (`/proc/PID/comm`).
        comm: String,
    },

    /// A user-space watch lies at or above the end of user space (the
    /// kernel refuses it with `EINVAL`).
    #[error("watch `{watch}`: address {addr:#x}+{len} is not below {limit:#x}, where x86-64 user space ends (the last page below the kernel half is a guard page, never mapped), so the kernel refuses a user-space breakpoint there; pick an address below {limit:#x}")]
    AboveUserSpace {
        /// The watch's name.
        watch: String,
        /// The address.
        addr: u64,
        /// Its length.
        len: u64,
        /// The first address user space cannot use (`TASK_SIZE_MAX`).
        limit: u64,
    },

    /// Out of file descriptors (`EMFILE`/`ENFILE`): each perf event is one.
    #[error("{}", out_of_fds_message(.what, *.errno, *.open, *.soft, *.hard))]
    OutOfFds {
        /// What we tried.
        what: String,
        /// `EMFILE` (this process's limit) or `ENFILE` (the system's).
        errno: i32,
        /// Descriptors this process had open.
        open: usize,
        /// `RLIMIT_NOFILE` soft limit (`ulimit -n`), if known.
        soft: Option<u64>,
        /// `RLIMIT_NOFILE` hard limit (`ulimit -Hn`), if known.
        hard: Option<u64>,
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

/// Which permission rule refused a request. Each kind has its own rules and
/// its own remedy, and the message of [`Error::Permission`] names only those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A CPU-wide breakpoint (one CPU or all): needs `CAP_PERFMON` (root has
    /// it) or `perf_event_paranoid <= 0` (kernel `perf_allow_cpu`).
    CpuWide,
    /// A thread (or the maps) of another user's process: the kernel's ptrace
    /// read-access rule (`ptrace_may_access(PTRACE_MODE_READ)`): the same uid,
    /// or `CAP_SYS_PTRACE`; `CAP_PERFMON` also passes for perf events. Yama's
    /// `ptrace_scope` restricts only attaching, so it plays no part.
    OtherUser {
        /// The owner's (real) uid.
        owner: u32,
        /// Our (real) uid.
        me: u32,
    },
    /// A thread of our own user: `perf_event_paranoid` (3 and up is a
    /// distribution patch that shuts unprivileged users out), a process that
    /// is not dumpable, or a security module.
    Own,
    /// A ptrace request on a thread (the debug-register backend): ptrace
    /// attach rules, including Yama's `ptrace_scope`.
    Ptrace,
    /// Moving a watch opened for user space only to a kernel address.
    KernelAddress,
    /// Raising a thread's scheduling priority (`CAP_SYS_NICE` or rlimits).
    Priority,
    /// Loading a BPF program or map (`--if`, `--stop`): `CAP_BPF` and
    /// `CAP_PERFMON`, or root.
    Bpf,
}

impl Denied {
    /// The rule for a breakpoint on a task whose real uid is `owner` (`None`
    /// when unknown), asked by real uid `me`: [`Denied::OtherUser`] when the
    /// owner is someone else, else [`Denied::Own`]. Pure: read the owner with
    /// [`crate::procfs::denied_for_task`].
    pub fn for_owner(owner: Option<u32>, me: u32) -> Denied {
        match owner {
            Some(owner) if owner != me => Denied::OtherUser { owner, me },
            _ => Denied::Own,
        }
    }
}

impl Error {
    /// A permission refusal of `what` by `rule`, with the perf and ptrace
    /// sysctls that decide it (for the message). Plain data: read them with
    /// [`crate::procfs::permission_error`], which calls this.
    pub fn permission_with(
        what: impl Into<String>,
        errno: i32,
        rule: Denied,
        paranoid: Option<i32>,
        ptrace_scope: Option<i32>,
    ) -> Self {
        Error::Permission {
            what: what.into(),
            errno,
            rule,
            paranoid,
            ptrace_scope,
        }
    }

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
            Error::AboveUserSpace { .. } => Some(libc::EINVAL),
            Error::OutOfFds { errno, .. } => Some(*errno),
            Error::Sys { source, .. } | Error::Launch { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn out_of_fds_message(
    what: &str,
    errno: i32,
    open: usize,
    soft: Option<u64>,
    hard: Option<u64>,
) -> String {
    let lim = |l: Option<u64>| l.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    if errno == libc::ENFILE {
        return format!(
            "cannot {what}: the system is out of file descriptors (ENFILE; fs.file-max); close other programs or raise it with `sysctl fs.file-max=N`"
        );
    }
    format!(
        "cannot {what}: out of file descriptors (EMFILE): {open} open, limit {} (`ulimit -n`; hard limit {}). Each perf event is one descriptor: a process watch opens watches x threads (x CPUs when sampling). Raise the limit (`ulimit -n {}` in the shell that runs hwbreak, as root above the hard limit), or watch fewer variables, or count instead of sampling",
        lim(soft),
        lim(hard),
        hard.map_or(65536, |h| h.max(open as u64 * 2)),
    )
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

/// A `perf_event_paranoid` level and what it lets an unprivileged user do,
/// e.g. `2 (own processes, user space only: ...)`.
pub fn explain_paranoid(level: i32) -> String {
    let meaning = match level {
        i32::MIN..=-1 => "no restrictions",
        0 => "CPU-wide events allowed to everyone",
        1 => "own processes, user and kernel space; CPU-wide events need CAP_PERFMON",
        2 => "own processes, user space only; CPU-wide events and kernel space need CAP_PERFMON",
        _ => "a distribution patch: perf_event_open is closed to unprivileged users",
    };
    format!("{level} ({meaning})")
}

/// `kernel.perf_event_paranoid is N (meaning)`, or that it is unreadable.
fn paranoid_is(paranoid: Option<i32>) -> String {
    match paranoid {
        Some(p) => format!("kernel.perf_event_paranoid is {}", explain_paranoid(p)),
        None => "kernel.perf_event_paranoid is unreadable".into(),
    }
}

/// Why another user's process is refused (watching it, or reading its
/// `/proc` files), and what to do. Yama's `ptrace_scope` is not named: it
/// restricts attaching only, and these are read-access checks.
pub(crate) fn other_user_rule(owner: u32, me: u32) -> String {
    format!(
        "it belongs to uid {owner} and you are uid {me}; another user's process may be watched only with ptrace read access to it: root, CAP_SYS_PTRACE or CAP_PERFMON. Run as uid {owner} or as root, or launch the program yourself so that it is yours"
    )
}

/// One line per refusal: what was refused, the rules of `rule` (and only
/// those) with the sysctl values that decide them, and what to do.
fn permission_message(
    what: &str,
    errno: i32,
    rule: Denied,
    paranoid: Option<i32>,
    scope: Option<i32>,
) -> String {
    let head = format!("permission denied to {what} ({})", errno_name(errno));
    // Something other than the named rule refused (the rule allows it).
    const CPU_FIX: &str = "Run as root, give the program CAP_PERFMON (`setcap cap_perfmon+ep PROGRAM`), or allow everyone with `sysctl kernel.perf_event_paranoid=0`; or watch a process of your own instead of every CPU";
    const ELSE: &str = "a security module (SELinux, AppArmor) or a seccomp filter may deny perf_event_open (see the audit log), or run as root";
    match rule {
        Denied::CpuWide => {
            let rule = "a CPU-wide watch needs root or CAP_PERFMON, or kernel.perf_event_paranoid <= 0";
            match paranoid {
                Some(p) if p <= 0 => format!(
                    "{head}: {rule}; it is {}, which allows it, so something else refused: {ELSE}",
                    explain_paranoid(p)
                ),
                Some(p) => format!("{head}: {rule}, and it is {}. {CPU_FIX}", explain_paranoid(p)),
                None => format!("{head}: {rule}, and it is unreadable. {CPU_FIX}"),
            }
        }
        Denied::OtherUser { owner, me } => format!("{head}: {}", other_user_rule(owner, me)),
        Denied::Own => match paranoid {
            Some(p) if p >= 3 => format!(
                "{head}: {}. Run as root or with CAP_PERFMON, or open it to your own processes with `sysctl kernel.perf_event_paranoid=2`",
                paranoid_is(paranoid)
            ),
            Some(_) => format!(
                "{head}: {}, which allows watching your own process, so something else refused: the process may not be dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)), or {ELSE}",
                paranoid_is(paranoid)
            ),
            None => format!(
                "{head}: {}; run as root or with CAP_PERFMON",
                paranoid_is(paranoid)
            ),
        },
        Denied::Ptrace => {
            let yama = match scope {
                None => String::new(),
                Some(0) => "; kernel.yama.ptrace_scope is 0 (classic: the same uid may attach)".into(),
                Some(1) => "; kernel.yama.ptrace_scope is 1 (only descendants may be attached: launch the program from this process, or `sysctl kernel.yama.ptrace_scope=0`)".into(),
                Some(2) => "; kernel.yama.ptrace_scope is 2 (only CAP_SYS_PTRACE may attach: run as root)".into(),
                Some(n) => format!("; kernel.yama.ptrace_scope is {n} (attaching is disabled until reboot)"),
            };
            format!(
                "{head}: ptrace needs the same uid (and a dumpable process) or CAP_SYS_PTRACE{yama}. Run as the thread's owner or as root"
            )
        }
        Denied::KernelAddress => format!(
            "{head}: the watch was opened for user space only and a modify cannot change that; open a new watch on the kernel address instead (privileged, CPU-wide: root or CAP_PERFMON)"
        ),
        Denied::Bpf => format!(
            "{head}: conditions and --stop run a BPF program at each hit, which needs root or CAP_BPF with CAP_PERFMON (`setcap cap_bpf,cap_perfmon+ep PROGRAM`); without them, watch without --if/--stop"
        ),
        Denied::Priority => format!(
            "{head}: SCHED_FIFO needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1, and nice -10 needs CAP_SYS_NICE or RLIMIT_NICE >= 30. Run as root, or raise the limits (`ulimit -r 1`, /etc/security/limits.conf)"
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(
        what: &str,
        errno: i32,
        rule: Denied,
        paranoid: Option<i32>,
        scope: Option<i32>,
    ) -> String {
        Error::Permission {
            what: what.into(),
            errno,
            rule,
            paranoid,
            ptrace_scope: scope,
        }
        .to_string()
    }

    /// No message repeats the errno's own text or names another kind's rules.
    fn assert_only(msg: &str, absent: &[&str]) {
        assert!(!msg.contains("os error"), "{msg}");
        assert_eq!(msg.matches("ermission denied").count(), 1, "{msg}");
        for a in absent {
            assert!(!msg.contains(a), "{a:?} does not apply: {msg}");
        }
    }

    #[test]
    fn cpu_wide_refusal_names_cap_perfmon_and_paranoid_and_no_ptrace_rule() {
        let m = denied(
            "open a CPU-wide breakpoint on CPU 0",
            libc::EACCES,
            Denied::CpuWide,
            Some(2),
            Some(1),
        );
        assert_eq!(
            m,
            "permission denied to open a CPU-wide breakpoint on CPU 0 (EACCES): a CPU-wide watch needs root or CAP_PERFMON, or kernel.perf_event_paranoid <= 0, and it is 2 (own processes, user space only; CPU-wide events and kernel space need CAP_PERFMON). Run as root, give the program CAP_PERFMON (`setcap cap_perfmon+ep PROGRAM`), or allow everyone with `sysctl kernel.perf_event_paranoid=0`; or watch a process of your own instead of every CPU"
        );
        assert_only(&m, &["ptrace", "CAP_SYS_PTRACE", "another user"]);
        // The rule allows it (paranoid 0): say something else refused.
        let m = denied(
            "open a CPU-wide breakpoint on CPU 1",
            libc::EACCES,
            Denied::CpuWide,
            Some(0),
            None,
        );
        assert_eq!(
            m,
            "permission denied to open a CPU-wide breakpoint on CPU 1 (EACCES): a CPU-wide watch needs root or CAP_PERFMON, or kernel.perf_event_paranoid <= 0; it is 0 (CPU-wide events allowed to everyone), which allows it, so something else refused: a security module (SELinux, AppArmor) or a seccomp filter may deny perf_event_open (see the audit log), or run as root"
        );
        assert_only(&m, &["ptrace", "sysctl"]);
        let m = denied(
            "open a CPU-wide breakpoint on CPU 0",
            libc::EACCES,
            Denied::CpuWide,
            None,
            None,
        );
        assert!(
            m.contains("kernel.perf_event_paranoid <= 0, and it is unreadable. Run as root"),
            "{m}"
        );
    }

    #[test]
    fn other_users_process_refusal_names_the_ptrace_read_rule_and_the_owner_only() {
        let m = denied(
            "open a breakpoint on thread 1234",
            libc::EACCES,
            Denied::OtherUser {
                owner: 0,
                me: 65534,
            },
            Some(2),
            Some(1),
        );
        assert_eq!(
            m,
            "permission denied to open a breakpoint on thread 1234 (EACCES): it belongs to uid 0 and you are uid 65534; another user's process may be watched only with ptrace read access to it: root, CAP_SYS_PTRACE or CAP_PERFMON. Run as uid 0 or as root, or launch the program yourself so that it is yours"
        );
        // paranoid does not decide this, nor does Yama (it restricts attaching only).
        assert_only(&m, &["paranoid", "ptrace_scope", "CPU-wide"]);
    }

    #[test]
    fn own_process_refusal_names_perf_event_paranoid_only() {
        let m = denied(
            "open a breakpoint on thread 7",
            libc::EACCES,
            Denied::Own,
            Some(3),
            Some(1),
        );
        assert_eq!(
            m,
            "permission denied to open a breakpoint on thread 7 (EACCES): kernel.perf_event_paranoid is 3 (a distribution patch: perf_event_open is closed to unprivileged users). Run as root or with CAP_PERFMON, or open it to your own processes with `sysctl kernel.perf_event_paranoid=2`"
        );
        assert_only(&m, &["ptrace", "CPU-wide", "another user"]);
        let m = denied(
            "open a breakpoint on thread 7",
            libc::EACCES,
            Denied::Own,
            Some(2),
            None,
        );
        assert_eq!(
            m,
            "permission denied to open a breakpoint on thread 7 (EACCES): kernel.perf_event_paranoid is 2 (own processes, user space only; CPU-wide events and kernel space need CAP_PERFMON), which allows watching your own process, so something else refused: the process may not be dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)), or a security module (SELinux, AppArmor) or a seccomp filter may deny perf_event_open (see the audit log), or run as root"
        );
        assert_only(&m, &["ptrace_scope", "CAP_SYS_PTRACE"]);
    }

    #[test]
    fn ptrace_refusal_names_ptrace_scope_and_cap_sys_ptrace_not_paranoid() {
        let what = "set the debug registers of thread 9 (it must be ptrace-stopped by this thread)";
        let m = denied(what, libc::EPERM, Denied::Ptrace, Some(2), Some(1));
        assert_eq!(
            m,
            format!("permission denied to {what} (EPERM): ptrace needs the same uid (and a dumpable process) or CAP_SYS_PTRACE; kernel.yama.ptrace_scope is 1 (only descendants may be attached: launch the program from this process, or `sysctl kernel.yama.ptrace_scope=0`). Run as the thread's owner or as root")
        );
        assert_only(&m, &["paranoid", "PERFMON"]);
        // Without Yama there is no scope to name.
        let m = denied(what, libc::EPERM, Denied::Ptrace, Some(2), None);
        assert!(!m.contains("yama"), "{m}");
        for (scope, says) in [
            (0, "classic"),
            (2, "only CAP_SYS_PTRACE"),
            (3, "disabled until reboot"),
        ] {
            let m = denied(what, libc::EPERM, Denied::Ptrace, None, Some(scope));
            assert!(
                m.contains(&format!("ptrace_scope is {scope} (")) && m.contains(says),
                "{m}"
            );
        }
    }

    #[test]
    fn kernel_address_and_priority_refusals_name_their_own_rules() {
        let m = denied(
            "move watch `v` to kernel address 0xffffffff81000000",
            libc::EINVAL,
            Denied::KernelAddress,
            Some(2),
            Some(1),
        );
        assert_eq!(
            m,
            "permission denied to move watch `v` to kernel address 0xffffffff81000000 (EINVAL): the watch was opened for user space only and a modify cannot change that; open a new watch on the kernel address instead (privileged, CPU-wide: root or CAP_PERFMON)"
        );
        assert_only(&m, &["ptrace", "paranoid"]);
        let m = denied(
            "raise the drain thread's priority",
            libc::EPERM,
            Denied::Priority,
            Some(2),
            Some(1),
        );
        assert!(m.contains("CAP_SYS_NICE or RLIMIT_RTPRIO >= 1"), "{m}");
        assert_only(&m, &["ptrace", "paranoid", "PERFMON"]);
        let m = denied(
            "load the condition's BPF program",
            libc::EPERM,
            Denied::Bpf,
            Some(2),
            Some(1),
        );
        assert!(m.contains("CAP_BPF with CAP_PERFMON"), "{m}");
        assert_only(&m, &["ptrace", "paranoid"]);
    }

    #[test]
    fn paranoid_levels_are_explained_with_their_number() {
        assert_eq!(explain_paranoid(-1), "-1 (no restrictions)");
        assert!(explain_paranoid(1).starts_with("1 (own processes, user and kernel space"));
        assert!(explain_paranoid(4).starts_with("4 (a distribution patch"));
    }
}
