//! The debug store: one owner of each CPU's DS save area, shared by Branch
//! Trace Store (BTS) and PEBS users.
//!
//! On x86 the processor writes branch records (BTS) and precise samples
//! (PEBS) into memory buffers that one per-CPU table, the DS save area,
//! describes (base, index, absolute maximum and interrupt threshold for each;
//! see [`layout`]). Whoever owns that table must share it: this module is that
//! owner. It is `no_std`, does no I/O, and reaches the hardware only through
//! [`DsHardware`], which a [`crate::Machine`] offers from
//! [`crate::Machine::debug_store`] — `None` on a machine without a debug
//! store, the way `gdbstub` targets return `None` for a capability they lack.
//!
//! What [`DsManager`] does:
//! - **Who may have what.** BTS and LBR users exclude each other machine-wide
//!   (as Linux's `x86_add_exclusive`); PEBS and BTS share a CPU's DS area,
//!   each with its own buffer. A refusal is a [`DsError::Conflict`] naming
//!   the holder.
//! - **Buffers per task or per CPU** ([`Scope`]). A CPU buffer stays loaded;
//!   a task's buffer is loaded while the task runs where no CPU buffer is.
//!   A context switch saves the outgoing task's index and loads the
//!   incoming task's buffer.
//! - **Overflow.** In [`Mode::Stream`] the hardware raises a PMI at the
//!   interrupt threshold and [`DsManager::on_pmi`] drains the buffer into the
//!   consumer's [`ring::Ring`]; a consumer that does not read in time loses
//!   records, counted and marked where they went missing
//!   ([`ring::Entry::Lost`]). In [`Mode::Snapshot`] the buffer is circular
//!   with no interrupt and is read on demand ([`DsManager::snapshot`]).
//! - **Kernel and user stay apart.** With DS-CPL the hardware skips the other
//!   side's branches (`BTS_OFF_OS`/`BTS_OFF_USR`); every consumer is also
//!   filtered by address, so a [`Privilege::User`] consumer never sees a
//!   kernel address in `from` or `to`.
//! - **Switch records.** A CPU-wide BTS consumer gets `departs`/`arrives`
//!   records ([`BtsRecord::departs`]) between the tasks' branches.
//!
//! ```
//! use hwbreak_core::ds::{BtsConfig, DsError, DsManager, Facility, Scope};
//! # use hwbreak_core::ds::{DsCaps, DsHardware, Msr};
//! # use hwbreak_core::CpuId;
//! # struct NoDs;
//! # impl DsHardware for NoDs {
//! #     fn caps(&self) -> DsCaps { DsCaps::default() }
//! #     fn alloc(&mut self, _: usize) -> Option<u64> { None }
//! #     fn free(&mut self, _: u64) {}
//! #     fn mem(&self, _: u64, _: usize) -> Option<&[u8]> { None }
//! #     fn mem_mut(&mut self, _: u64, _: usize) -> Option<&mut [u8]> { None }
//! #     fn read_msr(&self, _: CpuId, _: Msr) -> u64 { 0 }
//! #     fn write_msr(&mut self, _: CpuId, _: Msr, _: u64) {}
//! # }
//! let mut ds = DsManager::new(2);
//! // A CPU without BTS says so instead of pretending.
//! let err = ds.add_bts(&mut NoDs, BtsConfig::new("perf", Scope::Cpu(CpuId(0)))).unwrap_err();
//! assert_eq!(err, DsError::Unsupported { facility: Facility::Bts });
//! ```

pub mod layout;
mod manager;
pub mod ring;

use alloc::string::String;

use crate::target::{CpuId, TaskId};

pub use layout::{BtsKind, BtsRecord, DsField, Msr, PebsRecord};
pub use manager::{
    BtsConfig, DsManager, Holder, Mode, PebsConfig, PmiOutcome, Privilege, Scope, SwitchInfo,
    UserId,
};

/// What a CPU's debug store can do (CPUID and `IA32_MISC_ENABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsCaps {
    /// Branch Trace Store (`IA32_MISC_ENABLE` bit 11 clear).
    pub bts: bool,
    /// PEBS (`IA32_MISC_ENABLE` bit 12 clear).
    pub pebs: bool,
    /// CPL-qualified BTS: `BTS_OFF_OS`/`BTS_OFF_USR` (`CPUID.01H:ECX[4]`).
    pub ds_cpl: bool,
    /// Last-branch records (`DEBUGCTL.LBR`).
    pub lbr: bool,
}

/// The machine side of the debug store: memory the OS allocates for the DS
/// area and buffers, which the processor reads and writes, and the MSRs
/// that point the processor at them.
///
/// A kernel implements this over its allocator and `rdmsr`/`wrmsr` (an MSR
/// write to another CPU needs an IPI; the implementation hides that). The
/// simulator's processor model (`hwbreak-sim`'s `hw::bts`) implements it
/// independently of this module.
pub trait DsHardware {
    /// What the CPUs can do.
    fn caps(&self) -> DsCaps;
    /// `bytes` of zeroed memory the processor may write, 64-byte aligned;
    /// `None` if there is none.
    fn alloc(&mut self, bytes: usize) -> Option<u64>;
    /// Give back memory from [`alloc`](Self::alloc).
    fn free(&mut self, addr: u64);
    /// `len` bytes at `addr`, if inside one allocation.
    fn mem(&self, addr: u64, len: usize) -> Option<&[u8]>;
    /// `len` bytes at `addr` for writing, if inside one allocation.
    fn mem_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]>;
    /// `cpu`'s value of `msr`.
    fn read_msr(&self, cpu: CpuId, msr: Msr) -> u64;
    /// Set `cpu`'s `msr`.
    fn write_msr(&mut self, cpu: CpuId, msr: Msr, v: u64);
}

/// One of the three users of the branch-recording and debug-store hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Facility {
    /// Branch Trace Store.
    Bts,
    /// Precise event-based sampling.
    Pebs,
    /// The last-branch-record stack.
    Lbr,
}

impl core::fmt::Display for Facility {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Facility::Bts => "BTS",
            Facility::Pebs => "PEBS",
            Facility::Lbr => "LBR",
        })
    }
}

/// Why the debug store refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsError {
    /// The CPU lacks the facility.
    #[error("this CPU has no {facility} (CPUID/IA32_MISC_ENABLE say so); use a machine that has it, or a software tracer")]
    Unsupported {
        /// What was asked for.
        facility: Facility,
    },
    /// Someone holds what the request needs.
    #[error("{wanted} refused: {holder}; stop that user first")]
    Conflict {
        /// What was asked for.
        wanted: Facility,
        /// Who holds it.
        holder: Holder,
    },
    /// No memory for a buffer or DS area.
    #[error("no memory for a {bytes}-byte debug-store buffer; ask for fewer records")]
    NoMemory {
        /// Bytes asked for.
        bytes: usize,
    },
    /// A buffer too small to hold the interrupt margin and one record.
    #[error("a {facility} buffer needs at least {min} records (the interrupt margin plus one), not {records}")]
    BufferTooSmall {
        /// Which buffer.
        facility: Facility,
        /// Asked for.
        records: usize,
        /// Least allowed.
        min: usize,
    },
    /// The CPU does not exist.
    #[error("CPU {} does not exist (the machine has {cpus}); use 0..{cpus}", cpu.0)]
    NoSuchCpu {
        /// Asked for.
        cpu: CpuId,
        /// How many there are.
        cpus: usize,
    },
    /// The user id is not (or no longer) registered.
    #[error("debug-store user {} is not registered (already removed?)", .0 .0)]
    UnknownUser(UserId),
    /// The call does not fit the user's kind or mode.
    #[error("debug-store user {} is {is}, but this call needs {needs}", user.0)]
    WrongKind {
        /// The user.
        user: UserId,
        /// What it is.
        is: &'static str,
        /// What the call needs.
        needs: &'static str,
    },
    /// The PEBS sample period does not fit a 48-bit counter.
    #[error("a PEBS period must be 1..2^47, not {period}")]
    BadPeriod {
        /// Asked for.
        period: u64,
    },
}

impl core::fmt::Display for Holder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} is held by \"{}\" (user {}, {})",
            self.facility, self.name, self.user.0, self.scope
        )
    }
}

impl core::fmt::Display for Scope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Scope::Task(TaskId(t)) => write!(f, "task {t}"),
            Scope::Cpu(CpuId(c)) => write!(f, "CPU {c}"),
        }
    }
}

/// A name given by a user, kept for refusals.
pub(crate) type Name = String;
