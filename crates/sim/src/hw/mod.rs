//! Debug-register hardware models: what a CPU does with the values in its
//! debug registers.
//!
//! These are written from the architecture manuals and the project's register
//! conventions (see `BRIEF.md` / `hwbreak_core::arch::Reg`), **independently of
//! `hwbreak_core::arch`'s backends**, so that a test running a backend against
//! the simulator catches encoding bugs instead of repeating them.
//!
//! Each model answers, for one instruction:
//! - *before* it runs: does an instruction breakpoint or a trigger-before
//!   watchpoint fault? ([`Hw::before`])
//! - *after* it ran: does a trigger-after watchpoint or a single-step trap?
//!   ([`Hw::after`])
//!
//! and returns the raw exception state a kernel's debug-exception entry hands
//! to the layer ([`RawStatus`]).
//!
//! Register writes that real hardware would refuse or treat as
//! UNPREDICTABLE/reserved (a register that does not exist on the configured
//! CPU, a reserved encoding in an *enabled* slot, a write to an offline CPU)
//! are recorded as [`RegFault`]s, so tests can assert there are none.

pub mod arm64;
pub mod bts;
pub mod power;
pub mod x86;

use hwbreak_core::arch::{DebugRegs, Pool, RawStatus, Reg, MAX_SLOTS};
use hwbreak_core::Access;

pub use arm64::{Arm64Hw, FarMode};
pub use power::{PowerHw, PowerMode};
pub use x86::X86Hw;

/// The privilege an access or instruction runs at. The simulator derives it
/// from the address: the kernel half (`addr >= 1 << 63`) is kernel code/data,
/// everything else is user space (x86 CPL 3, arm64 EL0, POWER problem state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// User space: x86 CPL3, arm64 EL0, POWER MSR.PR=1.
    User,
    /// Kernel: x86 CPL0, arm64 EL1, POWER supervisor.
    Kernel,
}

impl Privilege {
    /// The privilege of code at, or data at, `addr` (kernel half = kernel).
    pub fn of(addr: u64) -> Self {
        if addr >> 63 == 1 {
            Privilege::Kernel
        } else {
            Privilege::User
        }
    }
}

/// A data access made by one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemAccess {
    /// First byte.
    pub addr: u64,
    /// Bytes accessed (1..=64; wide accesses model `stp`, vector loads, ...).
    pub len: u64,
    /// [`Access::Read`] or [`Access::Write`].
    pub kind: Access,
}

impl MemAccess {
    /// Whether the access touches any byte of `[start, start + len)`.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        let a_end = self.addr.saturating_add(self.len.max(1));
        self.addr < end && start < a_end
    }
}

/// One instruction as the hardware sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Its address.
    pub ip: u64,
    /// The next instruction's address (x86 data traps report this).
    pub next_ip: u64,
    /// Its data access, if it makes one.
    pub mem: Option<MemAccess>,
}

/// Per-CPU execution flags the debug hardware looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFlags {
    /// Single-step armed (x86 RFLAGS.TF, arm64 MDSCR.SS+PSTATE.SS, POWER MSR.SE).
    pub single_step: bool,
    /// x86 RFLAGS.RF: instruction breakpoints are suppressed for one instruction.
    pub resume_flag: bool,
}

/// A register write the hardware would not accept as meaningful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegFault {
    /// The register written.
    pub reg: Reg,
    /// The value written.
    pub value: u64,
    /// What rule it broke.
    pub why: &'static str,
}

/// Which hardware, and how it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hw {
    /// x86-64 DR0–DR3, DR6, DR7.
    X86(X86Hw),
    /// arm64 DBGBVR/BCR, DBGWVR/WCR.
    Arm64(Arm64Hw),
    /// POWER DAWR/DAWRX or DABR.
    Power(PowerHw),
}

impl Hw {
    /// Short arch name.
    pub fn name(&self) -> &'static str {
        match self {
            Hw::X86(_) => "x86-64",
            Hw::Arm64(_) => "arm64",
            Hw::Power(_) => "POWER",
        }
    }

    /// Slots the hardware has in `pool`.
    pub fn slots(&self, pool: Pool) -> usize {
        match self {
            Hw::X86(h) => h.slots(pool),
            Hw::Arm64(h) => h.slots(pool),
            Hw::Power(h) => h.slots(pool),
        }
    }

    /// Why writing `v` to `r` is not meaningful on this hardware, if it is not.
    fn check_write(&self, regs: &RegValues, r: Reg, v: u64) -> Option<&'static str> {
        match self {
            Hw::X86(h) => h.check_write(regs, r, v),
            Hw::Arm64(h) => h.check_write(r, v),
            Hw::Power(h) => h.check_write(regs, r, v),
        }
    }

    /// The register file's value after reset (CPU power-on or hotplug).
    pub fn reset_values(&self) -> RegValues {
        let mut v = RegValues::default();
        if let Hw::X86(_) = self {
            v.status = x86::DR6_FIXED_1;
            v.control = x86::DR7_FIXED_1;
        }
        v
    }

    /// The slots armed right now, as the hardware would match them.
    pub fn armed(&self, regs: &RegValues) -> Vec<Armed> {
        match self {
            Hw::X86(h) => h.armed(regs),
            Hw::Arm64(h) => h.armed(regs),
            Hw::Power(h) => h.armed(regs),
        }
    }

    /// Exceptions taken *before* `insn` executes (instruction breakpoints;
    /// arm64/POWER watchpoints). `None` means the instruction may run.
    pub fn before(&self, regs: &mut RegValues, flags: CpuFlags, insn: &Insn) -> Option<RawStatus> {
        match self {
            Hw::X86(h) => h.before(regs, flags, insn),
            Hw::Arm64(h) => h.before(regs, insn),
            Hw::Power(h) => h.before(regs, insn),
        }
    }

    /// Exceptions taken *after* `insn` completed (x86 data breakpoints;
    /// single-step on every arch).
    pub fn after(&self, regs: &mut RegValues, flags: CpuFlags, insn: &Insn) -> Option<RawStatus> {
        match self {
            Hw::X86(h) => h.after(regs, flags, insn),
            Hw::Arm64(h) => h.after(flags, insn),
            Hw::Power(h) => h.after(flags, insn),
        }
    }

    /// What the kernel's exception entry does before calling the layer.
    /// x86: read DR6, reset it (Linux writes `DR6_RESERVED`), and hand the
    /// layer DR6 in positive polarity (`dr6 ^ DR6_RESERVED`: B0–B3, BS set,
    /// reserved bits clear), as Linux's `exc_debug` does. Others: unchanged.
    pub fn kernel_entry(&self, regs: &mut RegValues, raw: RawStatus) -> RawStatus {
        match (self, raw) {
            (Hw::X86(_), RawStatus::X86 { ip, .. }) => {
                let dr6 = regs.status_read();
                regs.status = x86::DR6_FIXED_1;
                RawStatus::X86 {
                    dr6: dr6 ^ x86::DR6_FIXED_1,
                    ip,
                }
            }
            (_, raw) => raw,
        }
    }
}

/// One armed slot as the hardware would match it (for inspection and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Armed {
    /// Pool.
    pub pool: Pool,
    /// Slot index.
    pub slot: usize,
    /// First byte the hardware matches.
    pub addr: u64,
    /// Bytes matched from `addr` (for arm64 BAS, the span from the first to the
    /// last selected byte).
    pub len: u64,
    /// Access that triggers.
    pub access: Access,
}

/// The raw contents of one CPU's debug registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegValues {
    /// `Reg::Addr(pool, i)`.
    pub addr: [[u64; MAX_SLOTS]; 2],
    /// `Reg::Ctrl(pool, i)`.
    pub ctrl: [[u64; MAX_SLOTS]; 2],
    /// `Reg::Control` (x86 DR7, as stored; see [`RegValues::read`]).
    pub control: u64,
    /// `Reg::Status` (x86 DR6, as stored; see [`RegValues::read`]).
    pub status: u64,
}

impl RegValues {
    fn status_read(&self) -> u64 {
        (self.status & x86::DR6_ACTIVE) | x86::DR6_FIXED_1
    }

    /// Read `r` as software would. x86 DR6 and DR7 read with their fixed-one
    /// bits set (DR6 `0xFFFF0FF0`, DR7 bit 10), like the hardware.
    pub fn read(&self, r: Reg) -> u64 {
        match r {
            Reg::Addr(p, i) => self.addr[p.idx()].get(i as usize).copied().unwrap_or(0),
            Reg::Ctrl(p, i) => self.ctrl[p.idx()].get(i as usize).copied().unwrap_or(0),
            Reg::Control => self.control,
            Reg::Status => self.status_read(),
        }
    }

    fn store(&mut self, r: Reg, v: u64) {
        match r {
            Reg::Addr(p, i) => {
                if let Some(s) = self.addr[p.idx()].get_mut(i as usize) {
                    *s = v
                }
            }
            Reg::Ctrl(p, i) => {
                if let Some(s) = self.ctrl[p.idx()].get_mut(i as usize) {
                    *s = v
                }
            }
            Reg::Control => self.control = v | x86::DR7_FIXED_1,
            Reg::Status => self.status = v,
        }
    }
}

/// One CPU's debug register file: values, the hardware that interprets them,
/// and the faults recorded on writes. Implements [`DebugRegs`].
#[derive(Debug, Clone)]
pub struct RegFile {
    hw: Hw,
    values: RegValues,
    online: bool,
    writes: u64,
    faults: Vec<RegFault>,
}

impl RegFile {
    /// A register file in its reset state.
    pub fn new(hw: Hw) -> Self {
        RegFile {
            hw,
            values: hw.reset_values(),
            online: true,
            writes: 0,
            faults: Vec::new(),
        }
    }

    /// The hardware model.
    pub fn hw(&self) -> &Hw {
        &self.hw
    }

    /// The register values.
    pub fn values(&self) -> &RegValues {
        &self.values
    }

    /// Mutable values, for the hardware's own updates (DR6 bits).
    pub fn values_mut(&mut self) -> &mut RegValues {
        &mut self.values
    }

    /// Reset to power-on values (hotplug brings a CPU up reset).
    pub fn reset(&mut self) {
        self.values = self.hw.reset_values();
    }

    /// Mark online/offline; writes while offline are faults (no IPI can reach
    /// an offline CPU).
    pub fn set_online(&mut self, online: bool) {
        self.online = online;
    }

    /// Software writes so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Faults recorded so far.
    pub fn faults(&self) -> &[RegFault] {
        &self.faults
    }

    /// The slots armed now.
    pub fn armed(&self) -> Vec<Armed> {
        self.hw.armed(&self.values)
    }
}

impl DebugRegs for RegFile {
    fn read(&self, r: Reg) -> u64 {
        self.values.read(r)
    }

    fn write(&mut self, r: Reg, v: u64) {
        self.writes += 1;
        if !self.online {
            self.faults.push(RegFault {
                reg: r,
                value: v,
                why: "write to an offline CPU's debug registers (no IPI reaches it)",
            });
            return;
        }
        if let Some(why) = self.hw.check_write(&self.values, r, v) {
            self.faults.push(RegFault {
                reg: r,
                value: v,
                why,
            });
            // A register that does not exist is not written.
            if why.starts_with("no such register") {
                return;
            }
        }
        self.values.store(r, v);
    }
}

/// Whether `[a, a+alen)` and `[b, b+blen)` share a byte.
pub(crate) fn overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let a_end = a.saturating_add(alen);
    let b_end = b.saturating_add(blen);
    a < b_end && b < a_end
}
