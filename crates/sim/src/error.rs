//! Simulator errors. Each says what went wrong and what to do.

use hwbreak_core::{Access, BpId, CpuId, TaskId};

/// Why a simulator operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// CPU count out of range.
    #[error("a simulated machine has 1 to 4096 CPUs, not {cpus}")]
    BadCpuCount {
        /// Asked for.
        cpus: usize,
    },
    /// arm64 slot counts out of range.
    #[error("arm64 CPUs have 2 to 16 breakpoints and watchpoints, not {brps} and {wrps}")]
    BadSlotCount {
        /// Breakpoints asked for.
        brps: usize,
        /// Watchpoints asked for.
        wrps: usize,
    },
    /// No such CPU.
    #[error("CPU {} does not exist (the machine has {possible}); use 0..{possible}", cpu.0)]
    NoSuchCpu {
        /// Asked for.
        cpu: CpuId,
        /// How many there are.
        possible: usize,
    },
    /// The CPU is offline.
    #[error("CPU {} is offline; bring it up with cpu_up first", .0 .0)]
    CpuOffline(CpuId),
    /// The CPU is already online.
    #[error("CPU {} is already online", .0 .0)]
    CpuAlreadyOnline(CpuId),
    /// Refused to take the last CPU offline.
    #[error("CPU {} is the last online CPU; bring another one up before taking it down", .0 .0)]
    LastCpu(CpuId),
    /// No such task.
    #[error("task {} does not exist", .0 .0)]
    NoSuchTask(TaskId),
    /// The task exited.
    #[error("task {} has exited", .0 .0)]
    TaskExited(TaskId),
    /// The task is blocked.
    #[error("task {} is blocked in join; it runs again when its children exit", .0 .0)]
    TaskBlocked(TaskId),
    /// The task runs on another CPU.
    #[error("task {} is running on CPU {}; switch it out there first", task.0, cpu.0)]
    TaskRunningElsewhere {
        /// Task.
        task: TaskId,
        /// Where it runs.
        cpu: CpuId,
    },
    /// The task is pinned elsewhere.
    #[error("task {} is pinned to CPU {}", task.0, cpu.0)]
    TaskPinned {
        /// Task.
        task: TaskId,
        /// Its CPU.
        cpu: CpuId,
    },
    /// Not a data access the simulator can make.
    #[error("an access is a Read or Write of 1 to 64 bytes, not {kind:?} of {len}")]
    BadAccess {
        /// Kind asked for.
        kind: Access,
        /// Length asked for.
        len: u64,
    },
    /// The layer kept taking exceptions without letting the instruction complete.
    #[error("CPU {} took {traps} debug exceptions at ip {ip:#x} without completing the instruction: the layer is not making progress (step-over never disabled the slot, or an execute hit resumed without RF)", cpu.0)]
    NoProgress {
        /// CPU.
        cpu: CpuId,
        /// Instruction.
        ip: u64,
        /// Exceptions taken.
        traps: u32,
    },
    /// A CPU came online but a wide breakpoint did not fit there.
    #[error("CPU {} came online but wide breakpoint {} does not fit there: {error}", cpu.0, bp.0)]
    WideDidNotFit {
        /// CPU.
        cpu: CpuId,
        /// The wide breakpoint.
        bp: BpId,
        /// Why.
        error: hwbreak_core::Error,
    },
    /// The layer refused.
    #[error(transparent)]
    Layer(#[from] hwbreak_core::Error),
}
