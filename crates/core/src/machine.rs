//! The [`Machine`] seam: everything the layer needs from the world.
//!
//! The layer is pure: it is handed a `Machine` and never reaches past it. The
//! simulator (`hwbreak-sim`), tests, and later a VMM implement it; a kernel
//! would implement it over its per-CPU state and IPIs.

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

    /// Turn hardware single-step on or off for what runs next on `cpu`
    /// (x86 RFLAGS.TF, arm64 MDSCR.SS, POWER MSR.SE).
    fn set_single_step(&mut self, cpu: CpuId, on: bool);

    /// A monotonic timestamp for event records (nanoseconds, or simulated ticks).
    fn now(&self) -> u64;
}
