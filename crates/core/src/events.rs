//! The event buffer (owner: the slots/events work): per-CPU rings of records.
//! One record format for every source: simulator hits, KVM exits and perf
//! samples all become [`Record`]s.
//!
//! API contract (keep these signatures):
//! - `Events::new(cpus, capacity_per_cpu)`; `push(cpu, Record) -> bool` (false = lost,
//!   counted, and a `Lost{count}` record is emitted once room returns); never allocates
//!   after `new`.
//! - `drain(cpu, &mut dyn FnMut(Record))`, `drain_all(&mut dyn FnMut(CpuId, Record))`.
//! - `lost_total() -> u64`.
use crate::target::{CpuId, TaskId};
use crate::BpId;

/// A breakpoint hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Which breakpoint.
    pub bp: BpId,
    /// CPU it fired on.
    pub cpu: CpuId,
    /// Task running there, if any.
    pub task: Option<TaskId>,
    /// Instruction pointer (after the access on x86 data; of the access after step-over).
    pub ip: u64,
    /// Data address (the breakpoint's address where the hardware does not report one).
    pub addr: u64,
    /// Timestamp from [`crate::Machine::now`].
    pub time: u64,
}

/// A record in the event buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A breakpoint hit.
    Sample(Sample),
    /// A taken branch (Branch Trace Store).
    Branch {
        /// CPU.
        cpu: CpuId,
        /// Branch source.
        from: u64,
        /// Branch target.
        to: u64,
        /// Timestamp.
        time: u64,
    },
    /// A context switch.
    Switch {
        /// CPU.
        cpu: CpuId,
        /// The task departing or arriving.
        task: TaskId,
        /// True when `task` departs, false when it arrives.
        departs: bool,
        /// Whether the switch was voluntary (the task blocked).
        voluntary: bool,
        /// Timestamp.
        time: u64,
    },
    /// Records dropped because the ring was full.
    Lost {
        /// How many.
        count: u64,
    },
}
