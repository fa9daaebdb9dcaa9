//! Targets: *where* a breakpoint applies.
//!
//! "Wide" means a fan-out over a domain: [`Target::AllCpus`] books the same
//! breakpoint on every online CPU, all-or-nothing (see [`crate::fanout`]).

/// A task (thread) as the machine names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// A CPU index, `0..machine.possible_cpus()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuId(pub u32);

impl CpuId {
    /// The index as `usize`, for tables.
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

/// Where a breakpoint applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// One task, on whichever CPU it runs ("CPU-independent task breakpoint").
    Task(TaskId),
    /// One task, only while it runs on one CPU.
    TaskOnCpu(TaskId, CpuId),
    /// Everything that runs on one CPU.
    Cpu(CpuId),
    /// Every online CPU, and every CPU that comes online later ("wide").
    AllCpus,
}

impl Target {
    /// The task, for task targets.
    pub fn task(&self) -> Option<TaskId> {
        match *self {
            Target::Task(t) | Target::TaskOnCpu(t, _) => Some(t),
            _ => None,
        }
    }

    /// The CPU the target is bound to, if one.
    pub fn cpu(&self) -> Option<CpuId> {
        match *self {
            Target::TaskOnCpu(_, c) | Target::Cpu(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the target is CPU-bound (not a task): it occupies its slot on
    /// the CPU permanently rather than only while a task runs.
    pub fn is_cpu_bound(&self) -> bool {
        matches!(self, Target::Cpu(_) | Target::AllCpus)
    }
}
