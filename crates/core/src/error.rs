//! Typed errors. Each names the rule that was broken and what to try.

use crate::arch::{ArchError, Pool};
use crate::target::CpuId;
use crate::BpId;

/// An error from the layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The arch cannot do what was asked.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Booking failed: a CPU has no room.
    #[error("no free {pool:?} slot on CPU {}: {held} of {total} are booked ({cpu_bound} CPU-bound, {task_max} by task breakpoints that compete with this one); unregister or disable (with reserve-on-enable) a breakpoint there, or target one task instead of the whole CPU", cpu.0)]
    NoSlot {
        /// The pool that is full.
        pool: Pool,
        /// The first CPU that had no room.
        cpu: CpuId,
        /// Slots booked there before the request.
        held: usize,
        /// Slots the pool has.
        total: usize,
        /// Of `held`, weight of CPU-bound breakpoints.
        cpu_bound: usize,
        /// Of `held`, the weight of task breakpoints that compete with the
        /// request there. For a CPU-bound request: the heaviest single task
        /// on that CPU. For a task request: that task's own weight on that
        /// CPU (tasks never compete with each other, only with CPU-bound
        /// breakpoints and with themselves).
        task_max: usize,
    },
    /// The arch has no slots of that kind at all.
    #[error("this CPU has no {pool:?} breakpoint registers")]
    NoSuchPool {
        /// The pool asked for.
        pool: Pool,
    },
    /// The id is not (or no longer) registered.
    #[error("breakpoint {} is not registered (already unregistered?)", .0 .0)]
    UnknownBreakpoint(BpId),
    /// The CPU does not exist.
    #[error("CPU {} does not exist (the machine has {possible} possible CPUs)", cpu.0)]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: CpuId,
        /// How many there are.
        possible: usize,
    },
    /// The CPU exists but is offline.
    #[error("CPU {} is offline; bring it online or target all CPUs (wide breakpoints follow CPUs as they come online)", .0 .0)]
    CpuOffline(CpuId),
    /// The arch traps before this access and reports it after only by
    /// stepping over it, and the machine has no single-step
    /// ([`crate::Machine::single_step`] is `None`).
    #[error("this {pool:?} breakpoint traps before the access, and reporting it needs a hardware single-step over the access, which this machine does not provide; give the machine a SingleStep capability (Machine::single_step), or watch on an arch that traps after the access (x86 data)")]
    NeedsSingleStep {
        /// The pool of the refused breakpoint.
        pool: Pool,
    },
    /// The debugger path released a slot it does not hold.
    #[error("no debugger-held {pool:?} slot to release: try_release was called more often than try_reserve")]
    NotReserved {
        /// The pool named in the release.
        pool: Pool,
    },
    /// The debugger tried to release a slot whose register it still programs.
    #[error("the debugger still programs a {pool:?} register on CPU {}; try_unclaim it before releasing its slot", cpu.0)]
    StillClaimed {
        /// The CPU where the claim is.
        cpu: CpuId,
        /// The pool.
        pool: Pool,
    },
    /// The debugger path found the books locked; it never waits.
    #[error(
        "the breakpoint books are locked by another CPU; try again (the debugger path never waits)"
    )]
    Busy,
}
