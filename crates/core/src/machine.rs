//! The [`Machine`] seam: everything the layer needs from the world.
//!
//! The layer is pure: it is handed a `Machine` and never reaches past it. The
//! simulator (`hwbreak-sim`), tests, and later a VMM implement it; a kernel
//! would implement it over its per-CPU state and IPIs.
//!
//! ## Optional capabilities
//! What only some machines have is an *extension*, the way gdbstub's
//! `Target` offers `support_breakpoints()`: a method that returns
//! `Option<&mut dyn Ext>`, `None` by default. A machine that lacks the
//! capability writes nothing; the layer asks and takes the other road.
//!
//! - [`SingleStep`] ([`Machine::single_step`]): needed only where the arch
//!   traps *before* the access ([`crate::arch::Arch::needs_step_over`]:
//!   arm64, POWER), to step over it and report it after. x86 reports data
//!   hits after the access and resumes execute hits with RF, so an x86
//!   machine leaves it out. Without it, the layer refuses a breakpoint that
//!   would need a step-over with [`crate::Error::NeedsSingleStep`], as Linux
//!   arm64 refuses what its ptrace/perf split cannot step over, instead of
//!   losing or looping on its hits.
//! - [`crate::ds::DsHardware`] ([`Machine::debug_store`]): the x86 debug
//!   store (DS area, BTS and PEBS buffers, their MSRs) for
//!   [`crate::ds::DsManager`]. Without it there is no branch tracing; the
//!   context-switch records of the general event buffer do not need it.
//! - [`Machine::task_ip`]: where a task stopped, for those records (0 where
//!   the machine does not say).

use crate::arch::DebugRegs;
use crate::target::{CpuId, TaskId};

/// A machine the layer drives.
pub trait Machine {
    /// CPUs that may ever exist (`0..possible_cpus()`); online or not.
    fn possible_cpus(&self) -> usize;

    /// Whether `cpu` is online now.
    fn is_online(&self, cpu: CpuId) -> bool;

    /// `cpu`'s debug register file. On real hardware a write to another CPU's
    /// file needs an IPI; the machine hides that.
    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs;

    /// The task running on `cpu` now, if any.
    fn current(&self, cpu: CpuId) -> Option<TaskId>;

    /// The online CPU on which `task` runs now, if any: the `cpu` with
    /// `is_online(cpu) && current(cpu) == Some(task)`.
    ///
    /// The default scans every possible CPU through [`current`](Self::current),
    /// O(CPUs). Machines that know — a kernel's `task_cpu()` + `task_curr()` —
    /// override it with an O(1) answer; the layer asks this whenever a task
    /// it has not seen running gets a breakpoint (always so for a new thread).
    fn running_on(&self, task: TaskId) -> Option<CpuId> {
        (0..self.possible_cpus())
            .map(|c| CpuId(c as u32))
            .find(|&c| self.is_online(c) && self.current(c) == Some(task))
    }

    /// The hardware single-step capability, if the machine has one. The
    /// answer must not change over the machine's life: the layer decides at
    /// registration whether a breakpoint can be stepped over.
    fn single_step(&mut self) -> Option<&mut dyn SingleStep> {
        None
    }

    /// A monotonic timestamp for event records (nanoseconds, or simulated ticks).
    fn now(&self) -> u64;

    /// The debug store (BTS and PEBS buffers, `IA32_DS_AREA`), if this
    /// machine has one. The default is `None`: a machine without branch
    /// tracing says so instead of implementing a store that fails at run
    /// time, and [`crate::ds`] users take the other road.
    fn debug_store(&mut self) -> Option<&mut dyn crate::ds::DsHardware> {
        None
    }

    /// Where `task` stopped (or resumes): its saved instruction pointer, if
    /// the machine knows it. The context-switch hook puts it in the
    /// `departs`/`arrives` records; the default `None` records 0, unknown.
    fn task_ip(&self, task: TaskId) -> Option<u64> {
        let _ = task;
        None
    }
}

/// Set single-step on `cpu` where the machine has it; `false` where it has
/// none (nothing to set).
pub(crate) fn set_single_step(m: &mut dyn Machine, cpu: CpuId, on: bool) -> bool {
    match m.single_step() {
        Some(s) => {
            s.set_single_step(cpu, on);
            true
        }
        None => false,
    }
}

/// Hardware single-step: an optional capability of a [`Machine`], reached
/// through [`Machine::single_step`].
pub trait SingleStep {
    /// Turn hardware single-step on or off for what runs next on `cpu`
    /// (x86 RFLAGS.TF, arm64 MDSCR.SS, POWER MSR.SE).
    fn set_single_step(&mut self, cpu: CpuId, on: bool);
}
