//! Arch backends: the hardware rules, one file per architecture.
//!
//! The backend answers the questions Linux's arch files answer, and nothing
//! more: *can this CPU do it* ([`Arch::parse`]), *install it* and *uninstall
//! it* ([`Arch::install`], [`Arch::uninstall`]), and *whose hit is this*
//! ([`Arch::decode`]). It never sees slots bookings, tasks or CPUs: the caller
//! (`crate::install`) tells it which register index to use.
//!
//! Registers are reached through [`DebugRegs`], one CPU's debug register file,
//! which a [`crate::Machine`] provides (the simulator models the hardware; a
//! kernel or VMM would write the real registers).

pub mod aarch64;
pub mod powerpc;
pub mod x86_64;

use crate::attr::{Access, BpAttr};

/// A pool of hardware slots. Linux calls these `TYPE_INST` and `TYPE_DATA`.
/// Arches whose instruction and data breakpoints share one set of registers
/// (x86: `CONFIG_HAVE_MIXED_BREAKPOINTS_REGS`) map both kinds to [`Pool::Data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    /// Instruction breakpoints (arm64 BVR/BCR).
    Inst = 0,
    /// Data watchpoints; on x86 also instruction breakpoints (DR0–DR3).
    Data = 1,
}

impl Pool {
    /// Both pools, in index order.
    pub const ALL: [Pool; 2] = [Pool::Inst, Pool::Data];

    /// Index into per-pool tables.
    pub fn idx(self) -> usize {
        self as usize
    }
}

/// Most slots any pool may have (arm64 architectural maximum).
pub const MAX_SLOTS: usize = 16;

/// When the hardware reports a hit relative to the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The exception is taken after the access completed (x86 data).
    After,
    /// The exception is taken before the access (arm64, POWER; x86 execute).
    /// Reporting "after" needs step-over: disable, single-step, re-enable.
    Before,
}

/// A breakpoint as the arch will program it: the result of [`Arch::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchBp {
    /// Which slot pool it draws from.
    pub pool: Pool,
    /// The range the hardware actually matches (aligned/widened).
    pub hw_addr: u64,
    /// Length of the hardware range in bytes.
    pub hw_len: u64,
    /// The range the consumer asked for; hits outside it are strays.
    pub req_addr: u64,
    /// Length of the requested range.
    pub req_len: u64,
    /// The access as requested.
    pub access: Access,
    /// Arch-specific control bits for one slot (e.g. x86 DR7 RW/LEN field,
    /// arm64 BCR/WCR, POWER DAWRX). Opaque outside the backend.
    pub ctrl: u64,
    /// Trap before or after the access.
    pub trigger: Trigger,
}

impl ArchBp {
    /// Whether an access at `addr` of `len` bytes touches the requested range.
    pub fn in_requested(&self, addr: u64, len: u64) -> bool {
        let req_end = self.req_addr.saturating_add(self.req_len);
        let end = addr.saturating_add(len.max(1));
        addr < req_end && self.req_addr < end
    }
}

/// Names of one CPU's debug registers, arch-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reg {
    /// Per-slot address register (x86 DRn, arm64 BVRn/WVRn, POWER DAWRn).
    Addr(Pool, u8),
    /// Per-slot control register (arm64 BCRn/WCRn, POWER DAWRXn). Unused on x86.
    Ctrl(Pool, u8),
    /// The global control register (x86 DR7). Unused on arm64 and POWER.
    Control,
    /// The status register (x86 DR6). arm64 and POWER report through the
    /// exception syndrome instead (see [`RawStatus`]).
    Status,
}

/// One CPU's debug register file.
pub trait DebugRegs {
    /// Read a register. Registers never written read as zero.
    fn read(&self, r: Reg) -> u64;
    /// Write a register.
    fn write(&mut self, r: Reg, v: u64);
}

/// The raw exception state a CPU hands to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawStatus {
    /// x86 #DB: DR6 and the instruction pointer (after the access for data).
    X86 {
        /// DR6 as read in the handler.
        dr6: u64,
        /// RIP at the exception.
        ip: u64,
    },
    /// arm64 debug exception: ESR_ELx, FAR_ELx and the PC.
    Arm64 {
        /// Exception syndrome (EC in bits 31:26).
        esr: u64,
        /// Fault address (for watchpoints; may be inexact).
        far: u64,
        /// PC of the instruction that trapped.
        pc: u64,
    },
    /// POWER DSI/data breakpoint: DSISR, DAR and NIP.
    Power {
        /// DSISR (DSISR_DABRMATCH set for a data breakpoint).
        dsisr: u64,
        /// Data address register.
        dar: u64,
        /// Next instruction pointer (the one that trapped).
        nip: u64,
        /// Bytes the trapping instruction accesses from `dar`, where the
        /// kernel entry decoded it (Linux: `analyse_instr()` then
        /// `GETSIZE(op.type)` in `hw_breakpoint_handler`); 0 when unknown
        /// (then only the byte at `dar` is known to be accessed). The
        /// hardware matches whole doublewords, and DAR is the access's first
        /// byte: without the size, an 8-byte store at 0x8000 that writes a
        /// watched 0x8004 looks like a stray. 0 for a single-step completion.
        size: u64,
    },
}

/// What an exception means, as decoded by the arch. Fixed-size: decode never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Bit `n` of `hits[pool.idx()]` = slot `n` of that pool fired.
    pub hits: [u32; 2],
    /// A single-step completed (x86 DR6.BS; arm64 software-step EC).
    pub step: bool,
    /// The data address reported by the hardware, where it reports one
    /// (arm64 FAR, POWER DAR). x86 does not report it.
    pub addr: Option<u64>,
    /// Bytes accessed from `addr`, where known (POWER with a decoded
    /// instruction, `RawStatus::Power::size`). 0 or 1 = unknown: only the
    /// byte at `addr` is known to be accessed. Dispatch filters strays on
    /// `[addr, addr + len.max(1))`, so a wide access that starts below the
    /// requested range but covers it is delivered.
    pub len: u64,
    /// The instruction pointer at the exception.
    pub ip: u64,
}

impl Decoded {
    /// Whether slot `slot` of `pool` fired.
    pub fn hit(&self, pool: Pool, slot: usize) -> bool {
        self.hits[pool.idx()] & (1 << slot) != 0
    }

    /// Whether nothing fired and no step completed.
    pub fn is_empty(&self) -> bool {
        self.hits == [0, 0] && !self.step
    }
}

/// Bytes between an access `[first, last]` and a watched range `[lo, hi]`
/// (both inclusive); 0 when they overlap. Trap-before hardware (arm64 FAR,
/// POWER DAR) may report an address outside every armed range: an
/// unaligned or wide access that starts below it, or an imprecise address.
pub fn access_distance(first: u64, last: u64, lo: u64, hi: u64) -> u64 {
    if last < lo {
        lo - last
    } else if first < lo {
        0
    } else {
        first.saturating_sub(hi)
    }
}

/// Which armed data slots a trap-before hit belongs to: see [`nearest_slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nearest {
    /// Bit `n` = slot `n`'s range overlaps the access (distance 0).
    Exact(u32),
    /// No range overlaps it: the one slot nearest to it.
    Closest(usize),
}

/// From `(slot, distance)` pairs of the armed slots that may match (see
/// [`access_distance`]): every slot at distance 0, or else the nearest one,
/// ties going to the lower slot. This is the search of the kernel's arm64
/// `watchpoint_handler` (the nearest watchpoint takes an inexact FAR), used
/// by POWER for a DAR outside every range too. `None` when no slot is armed.
/// Never allocates.
pub fn nearest_slots(candidates: impl IntoIterator<Item = (usize, u64)>) -> Option<Nearest> {
    let mut exact = 0u32;
    let mut closest: Option<(u64, usize)> = None;
    for (slot, dist) in candidates {
        if dist == 0 {
            exact |= 1 << slot;
        } else if !matches!(closest, Some(best) if best <= (dist, slot)) {
            closest = Some((dist, slot));
        }
    }
    if exact != 0 {
        Some(Nearest::Exact(exact))
    } else {
        closest.map(|(_, slot)| Nearest::Closest(slot))
    }
}

/// Why the arch refused an attribute. Each names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// The address is not aligned as the hardware requires.
    #[error("address {addr:#x} is not aligned to {align} bytes: {arch} needs a {len}-byte watch to start on a multiple of {align}; round the address down or split the watch")]
    Unaligned {
        /// Arch name.
        arch: &'static str,
        /// Requested address.
        addr: u64,
        /// Requested length.
        len: u64,
        /// Required alignment.
        align: u64,
    },
    /// The hardware has no encoding for this length.
    #[error("length {len} is not supported by {arch}: {rule}")]
    BadLength {
        /// Arch name.
        arch: &'static str,
        /// Requested length.
        len: u64,
        /// What the arch can do.
        rule: &'static str,
    },
    /// The hardware cannot trap this kind of access.
    #[error("{arch} cannot watch {access:?} accesses: {hint}")]
    BadAccess {
        /// Arch name.
        arch: &'static str,
        /// Requested access.
        access: Access,
        /// What to use instead.
        hint: &'static str,
    },
    /// The range wraps past the top of the address space.
    #[error("range {addr:#x}+{len} wraps past the end of the address space")]
    Wraps {
        /// Requested address.
        addr: u64,
        /// Requested length.
        len: u64,
    },
    /// A kernel-half address without the privileged flag.
    #[error("address {addr:#x} is in the kernel half; only a privileged attribute watches it (`BpAttr::privileged`: root, CPU-wide targets)")]
    KernelAddress {
        /// Requested address.
        addr: u64,
    },
    /// A range the hardware's range mode cannot cover.
    #[error("{arch} cannot cover {addr:#x}+{len}: {rule}")]
    BadRange {
        /// Arch name.
        arch: &'static str,
        /// Requested address.
        addr: u64,
        /// Requested length.
        len: u64,
        /// The rule broken.
        rule: &'static str,
    },
}

/// An architecture backend. Object-safe, `Send + Sync`, stateless beyond its
/// configuration (slot counts, CPU model features).
pub trait Arch: Send + Sync {
    /// Short name used in errors: `"x86-64"`, `"arm64"`, `"POWER"`.
    fn name(&self) -> &'static str;

    /// How many slots `pool` has on each CPU (0 if the arch has none of that kind).
    fn slots(&self, pool: Pool) -> usize;

    /// Check `attr` against the hardware rules and encode it. Never touches registers.
    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError>;

    /// Program slot `slot` of `bp.pool` with `bp`, enabled. Write the address
    /// before the control bits, so the slot is never enabled on a stale address.
    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp);

    /// Clear slot `slot` of `pool`. Disable (control) first, then the address,
    /// so a hit can never come from a half-cleared slot.
    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize);

    /// Decode a raw exception into the slots that fired. `installed(pool, slot)`
    /// returns what the caller believes is in that slot (arm64 uses it to match
    /// an inexact fault address to the nearest watchpoint). Never allocates.
    fn decode(
        &self,
        status: &RawStatus,
        regs: &dyn DebugRegs,
        installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded;

    /// Whether resuming after a hit in `bp` needs the step-over protocol
    /// (disable, single-step, re-enable) to make progress or to report "after".
    /// Only a [`Trigger::Before`] breakpoint may need it (a hit reported
    /// after the access has nothing left to step over): the layer asks only
    /// for those.
    fn needs_step_over(&self, bp: &ArchBp) -> bool {
        bp.trigger == Trigger::Before
    }

    /// Work the arch needs before resuming from a hit without step-over
    /// (x86: set RFLAGS.RF after an execute hit). Returns flags the machine
    /// must apply on resume.
    fn resume_flags(&self, bp: &ArchBp) -> ResumeFlags {
        let _ = bp;
        ResumeFlags::default()
    }
}

/// What the machine must do when resuming the interrupted context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeFlags {
    /// x86 RFLAGS.RF: suppress instruction breakpoints for one instruction.
    pub resume_flag: bool,
}

/// A backend configured with a register count its hardware cannot have
/// (arm64: 2–16 breakpoints and watchpoints; POWER: 1 or 2 DAWRs, 1 DABR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arch} cannot have {count} {what}: {rule}")]
pub struct SlotCountError {
    /// Arch name.
    pub arch: &'static str,
    /// Which registers (`"breakpoint registers"`, `"watchpoint registers"`, ...).
    pub what: &'static str,
    /// The count asked for.
    pub count: usize,
    /// What the architecture allows.
    pub rule: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_distance_is_zero_on_overlap_and_counts_bytes_to_the_nearer_end() {
        // Watched [0x1008, 0x100f].
        assert_eq!(access_distance(0x1008, 0x1008, 0x1008, 0x100f), 0);
        assert_eq!(access_distance(0x100f, 0x100f, 0x1008, 0x100f), 0);
        assert_eq!(access_distance(0x1005, 0x1005, 0x1008, 0x100f), 3);
        assert_eq!(access_distance(0x1012, 0x1012, 0x1008, 0x100f), 3);
        // A wide access that starts below the range and reaches into it.
        assert_eq!(access_distance(0x1000, 0x1009, 0x1008, 0x100f), 0);
        // ... or ends just short of it.
        assert_eq!(access_distance(0x1000, 0x1006, 0x1008, 0x100f), 2);
        // No overflow at the top of the address space.
        assert_eq!(access_distance(u64::MAX, u64::MAX, 0, 7), u64::MAX - 7);
    }

    #[test]
    fn nearest_slots_takes_every_exact_slot_else_the_nearest_and_the_lower_on_a_tie() {
        assert_eq!(nearest_slots([]), None);
        assert_eq!(
            nearest_slots([(0, 4), (1, 0), (3, 0)]),
            Some(Nearest::Exact(0b1010))
        );
        assert_eq!(
            nearest_slots([(0, 9), (2, 3), (3, 5)]),
            Some(Nearest::Closest(2))
        );
        // A tie goes to the lower slot, whatever order the slots come in.
        assert_eq!(nearest_slots([(1, 3), (3, 3)]), Some(Nearest::Closest(1)));
        assert_eq!(nearest_slots([(3, 3), (1, 3)]), Some(Nearest::Closest(1)));
        // A slot that cannot match at all (arm64 BAS 0) never wins over one that can.
        assert_eq!(
            nearest_slots([(0, u64::MAX), (5, 100)]),
            Some(Nearest::Closest(5))
        );
    }
}
