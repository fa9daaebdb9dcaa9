//! The request's *where*: the [`Target`], the fan-out domain that opens
//! every watch on each of its members all-or-nothing (`PerfDomain`, over
//! `hwbreak_core::fanout`), how a process's threads are attached without
//! escape (`attach_process`: frozen with ptrace, by a forked helper for
//! our own process, else re-scanned), and the mapping of the kernel's
//! refusals to [`Error`]s that name the rule.

use super::attr::{Watch, HW_SLOTS};
use super::member::{open_member, Member, MemberEvents, OpenFailure, OpenPlan, OpenStep};
use super::selfattach;
use crate::error::{Error, Result};
use crate::procfs;
use crate::threads::{FreezeError, Frozen};
use hwbreak_core::fanout::{Domain, Fanout};
use std::collections::HashMap;
use std::process::Command;

/// Where watches apply.
#[derive(Debug)]
pub enum Target {
    /// One thread (no inheritance).
    Thread(i32),
    /// Every thread of a process, including threads it creates later.
    Process(i32),
    /// Everything that runs on one CPU (root or CAP_PERFMON).
    Cpu(u32),
    /// Everything on every online CPU (root or CAP_PERFMON).
    AllCpus,
    /// A command we launch, watched from its first instruction.
    Launch(Command),
}

/// How the threads of a process were attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Not a process target.
    NotAProcess,
    /// The process was frozen with ptrace (our own process: by a forked
    /// helper): exact, no thread escaped or was attached twice.
    Frozen,
    /// Re-scanned `/proc/PID/task` until no new thread appeared (ptrace was
    /// not possible: another tracer, not dumpable, or turned off with
    /// [`super::WatcherBuilder::freeze`]). A thread created by an attached
    /// thread *during* the attach may have been attached twice.
    Rescan {
        /// Why freezing was not possible.
        reason: String,
    },
}

/// A process target's threads, attached: the fan-out and how it was done.
#[derive(Debug)]
pub(crate) struct Attached {
    /// Every thread's events.
    pub fan: Fanout<Member, MemberEvents>,
    /// Frozen or re-scanned.
    pub how: Attach,
}

/// Turn a `perf_event_open` failure into an [`Error`] naming the rule.
pub(crate) fn map_open_error(
    e: std::io::Error,
    watches: &[Watch],
    wi: usize,
    member: Member,
    sigtrap: bool,
) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let what = match member {
        Member::Thread(t) => format!("open a breakpoint on thread {t}"),
        Member::Cpu(c) => format!("open a CPU-wide breakpoint on CPU {c}"),
    };
    if watches[wi].attr.privileged && matches!(errno, libc::EPERM | libc::EINVAL) {
        return kernel_address_refused(&watches[wi], &what, errno);
    }
    match errno {
        libc::ENOSPC => {
            let held: Vec<String> = watches[..wi].iter().map(|w| w.name.clone()).collect();
            let n = held.len();
            Error::NoSlot {
                watch: watches[wi].name.clone(),
                held_by_us: held,
                total: HW_SLOTS,
                other_users: HW_SLOTS.saturating_sub(n),
            }
        }
        libc::EACCES | libc::EPERM => {
            let rule = match member {
                Member::Thread(t) => procfs::denied_for_task(t),
                Member::Cpu(_) => crate::error::Denied::CpuWide,
            };
            procfs::permission_error(what, errno, rule)
        }
        libc::ESRCH => Error::ProcessGone {
            pid: match member {
                Member::Thread(t) => t,
                Member::Cpu(_) => -1,
            },
        },
        libc::EINVAL if above_user_space(&watches[wi]) => Error::AboveUserSpace {
            watch: watches[wi].name.clone(),
            addr: watches[wi].attr.addr,
            len: watches[wi].attr.len,
            limit: USER_SPACE_END,
        },
        libc::EMFILE | libc::ENFILE => {
            procfs::out_of_fds_error(format!("{what} for watch `{}`", watches[wi].name), errno)
        }
        libc::EINVAL | libc::E2BIG if sigtrap => Error::Unsupported {
            feature: "perf sigtrap (synchronous SIGTRAP on a hit)",
            since: "5.13",
            errno_name: crate::error::errno_name(errno),
        },
        _ => Error::sys(format!("{what} for watch `{}`", watches[wi].name), e),
    }
}

/// A kernel-address (privileged) breakpoint the kernel refused: its rules
/// are not perf's paranoia level but the hw-breakpoint layer's own
/// (`hw_breakpoint_parse`: `CAP_SYS_ADMIN` for a kernel-space address; x86's
/// `hw_breakpoint_arch_parse`: an execute breakpoint only where a kprobe may
/// go, on a kernel built with kprobes, and never on the CPU entry area).
fn kernel_address_refused(w: &Watch, what: &str, errno: i32) -> Error {
    let why = if errno == libc::EPERM {
        "kernel-space breakpoints need CAP_SYS_ADMIN in the initial user namespace; run as root there, and if you are, a security module or the machine's sandbox refuses them"
    } else if w.attr.access == hwbreak_core::Access::Execute {
        "an execute breakpoint in the kernel is allowed only where a kprobe may go, on a kernel built with CONFIG_KPROBES; pick another address or watch data instead"
    } else {
        "the address is not one the kernel lets a breakpoint cover (the CPU entry area, a misaligned or wrong-sized range); pick another address"
    };
    Error::Invalid(format!(
        "{what} for watch `{}`: the kernel refused kernel address {:#x} ({}): {why}",
        w.name,
        w.attr.addr,
        crate::error::errno_name(errno)
    ))
}

/// The end of x86-64 user space with 4-level paging (`TASK_SIZE_MAX`: one
/// guard page below the kernel half). The kernel refuses a user breakpoint
/// that reaches it with `EINVAL` (`arch_check_bp_in_kernelspace`); with
/// 5-level paging user space goes on, and the kernel accepts.
pub const USER_SPACE_END: u64 = 0x7fff_ffff_f000;

/// Whether a user-space watch reaches [`USER_SPACE_END`].
pub(crate) fn above_user_space(w: &Watch) -> bool {
    !w.attr.privileged && w.attr.addr.saturating_add(w.attr.len.max(1)) > USER_SPACE_END
}

/// The fan-out domain: opening every watch's events on one member
/// ([`open_member`]), enabling them at commit.
pub(crate) struct PerfDomain<'a> {
    /// The request's watches.
    pub watches: &'a [Watch],
    /// What each member's events are opened with.
    pub plan: OpenPlan<'a>,
    /// Enable at commit (false when `enable_on_exec` does it).
    pub enable: bool,
    /// A thread that vanished (ESRCH) is skipped, not an error.
    pub skip_gone: bool,
    /// The events are sigtrap events (for the error message).
    pub sigtrap: bool,
}

impl PerfDomain<'_> {
    /// The [`Error`] for a failure to open member `m`.
    fn open_error(&self, f: OpenFailure, m: Member) -> Error {
        let Some(wi) = f.watch else {
            let what = format!("open the side-band event (thread and mmap records) of {m:?}");
            return match f.error.raw_os_error() {
                Some(errno @ (libc::EMFILE | libc::ENFILE)) => {
                    procfs::out_of_fds_error(what, errno)
                }
                _ => Error::sys(what, f.error),
            };
        };
        match f.step {
            OpenStep::Open => map_open_error(f.error, self.watches, wi, m, self.sigtrap),
            OpenStep::Redirect { cpu } => Error::sys(
                format!("redirect output of {m:?} to the CPU {cpu} ring"),
                f.error,
            ),
            OpenStep::Bpf => Error::sys(
                format!(
                    "attach the condition's BPF program to watch `{}` on {m:?}",
                    self.watches[wi].name
                ),
                f.error,
            ),
        }
    }
}

impl Domain for PerfDomain<'_> {
    type Member = Member;
    type Handle = MemberEvents;
    type Error = Error;

    fn prepare(&mut self, m: Member) -> Result<MemberEvents> {
        match open_member(&self.plan, m) {
            Ok(h) => Ok(h),
            Err(f) if self.skip_gone && f.thread_gone() => Ok(MemberEvents::default()),
            Err(f) => Err(self.open_error(f, m)),
        }
    }

    fn commit(&mut self, _m: Member, h: &mut MemberEvents) {
        if self.enable {
            h.enable(self.watches);
        }
    }

    fn abort(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }

    fn remove(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
}

/// The process exists and every watch is mapped in it.
pub(crate) fn check_target(pid: i32, watches: &[Watch], check_mapped: bool) -> Result<()> {
    procfs::check_user_process(pid)?;
    if !check_mapped {
        return Ok(());
    }
    let maps = procfs::maps(pid)?;
    for w in watches {
        if w.attr.privileged {
            continue;
        }
        if !procfs::is_mapped(&maps, w.attr.addr, w.attr.len) {
            return Err(Error::NotMapped {
                watch: w.name.clone(),
                addr: w.attr.addr,
                len: w.attr.len,
                pid,
            });
        }
    }
    Ok(())
}

/// Attach to every thread of `pid`: frozen if we can, else re-scan until stable.
pub(crate) fn attach_process(dom: &mut PerfDomain, pid: i32, freeze: bool) -> Result<Attached> {
    let frozen = if freeze {
        Frozen::freeze(pid)
    } else {
        Err(FreezeError::Refused(0))
    };
    match frozen {
        Ok(fz) => {
            let tids = fz.threads();
            let fan =
                Fanout::register(dom, tids.into_iter().map(Member::Thread)).map_err(|f| f.error)?;
            // Events are live and inherited from here on; let the threads run.
            drop(fz);
            Ok(Attached {
                fan,
                how: Attach::Frozen,
            })
        }
        Err(FreezeError::Gone) => Err(Error::ProcessGone { pid }),
        // Our own process: freeze it from a forked helper (see crate::selfattach).
        Err(FreezeError::OwnProcess) => {
            match selfattach::attach(&dom.plan, dom.watches, dom.enable, pid) {
                Ok(selfattach::Outcome::Opened(by_tid)) => {
                    let mut tids: Vec<i32> = by_tid.keys().copied().collect();
                    tids.sort_unstable();
                    let mut adopt = Adopt { by_tid };
                    let fan = Fanout::register(&mut adopt, tids.into_iter().map(Member::Thread))
                        .map_err(|f| f.error)?;
                    Ok(Attached {
                        fan,
                        how: Attach::Frozen,
                    })
                }
                Ok(selfattach::Outcome::OpenFailed { tid, failure }) => {
                    Err(dom.open_error(failure, Member::Thread(tid)))
                }
                Ok(selfattach::Outcome::FreezeFailed(why)) => rescan(
                    dom,
                    pid,
                    format!("the attach helper could not freeze this process: {why}"),
                ),
                Err(e) => rescan(dom, pid, format!("the attach helper failed: {e}")),
            }
        }
        Err(why) => {
            let reason = match why {
                FreezeError::OwnProcess => "the target is this process".to_string(),
                FreezeError::Traced { tid, tracer } => {
                    format!("thread {tid} is traced by {tracer}")
                }
                FreezeError::Refused(0) => "freezing was turned off".to_string(),
                FreezeError::Refused(e) => {
                    format!("ptrace refused ({})", crate::error::errno_name(e))
                }
                FreezeError::Timeout { tid } => format!(
                    "thread {tid} did not stop within {:?}",
                    crate::threads::FREEZE_TIMEOUT
                ),
                FreezeError::Gone => "the process exited".to_string(),
            };
            rescan(dom, pid, reason)
        }
    }
}

/// Attach to every listed thread, then re-scan until no new thread appears.
/// See [`crate::threads`] for the window this leaves.
fn rescan(dom: &mut PerfDomain, pid: i32, reason: String) -> Result<Attached> {
    let tids = procfs::threads(pid)?;
    let mut fan =
        Fanout::register(dom, tids.into_iter().map(Member::Thread)).map_err(|f| f.error)?;
    // A thread created by a not-yet-attached thread escaped inheritance:
    // attach it directly, until a scan shows nothing new.
    loop {
        let now = match procfs::threads(pid) {
            Ok(t) => t,
            Err(Error::ProcessGone { .. }) => break,
            Err(e) => return Err(e),
        };
        let new: Vec<i32> = now
            .into_iter()
            .filter(|t| !fan.contains(Member::Thread(*t)))
            .collect();
        if new.is_empty() {
            break;
        }
        for t in new {
            if let Err(e) = fan.join(dom, Member::Thread(t)) {
                fan.remove_all(dom);
                return Err(e);
            }
        }
    }
    Ok(Attached {
        fan,
        how: Attach::Rescan { reason },
    })
}

/// A domain that hands out events a helper already opened and enabled.
struct Adopt {
    by_tid: HashMap<i32, MemberEvents>,
}

impl Domain for Adopt {
    type Member = Member;
    type Handle = MemberEvents;
    type Error = Error;

    fn prepare(&mut self, m: Member) -> Result<MemberEvents> {
        Ok(match m {
            Member::Thread(t) => self.by_tid.remove(&t).unwrap_or_default(),
            Member::Cpu(_) => MemberEvents::default(),
        })
    }
    fn commit(&mut self, _m: Member, _h: &mut MemberEvents) {}
    fn abort(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
    fn remove(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
}
