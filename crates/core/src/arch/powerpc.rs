//! POWER (64-bit Book3S): data breakpoints only, through the DAWR/DAWRX
//! pairs (POWER8 and later) or the older single DABR.
//!
//! Rules, as Linux's `arch/powerpc/kernel/hw_breakpoint.c`
//! (`hw_breakpoint_arch_parse`, `hw_breakpoint_validate_len`), `dawr.c`
//! (`set_dawr`) and `asm/reg.h` apply them:
//!
//! * **Slots.** No instruction breakpoints ([`Pool::Inst`] has 0; the CIABR
//!   belongs to the hypervisor and xmon, not to hw_breakpoint). Data: 1 DAWR
//!   (POWER8/9) or 2 (POWER10: DAWR0, DAWR1); DABR mode has exactly 1.
//! * **Widening.** The hardware matches whole doublewords: `hw_addr = addr &
//!   !7` and the end rounds up to a multiple of 8. An access in the widened
//!   bytes but outside the requested ones still traps; [`Arch::decode`]
//!   reports it as a hit of that slot and `core::dispatch` filters it with
//!   [`ArchBp::in_requested`] (no event, but the step-over still runs).
//! * **DAWR** matches up to 512 bytes (64 doublewords: DAWRX.MRD = dw - 1).
//!   Before POWER10 ([`PowerMode::Dawr`]) the widened range must not cross a
//!   512-byte boundary; POWER10 ([`PowerMode::DawrArch31`]) lifts that rule.
//!   DAWRX bits (IBM numbering from the right, `__MASK(n) = 1 << n`):
//!   USER 0, KERNEL 1, HYP 2, WTI 3, WT 4, DR 5, DW 6, MRD 10..=15.
//! * **DABR** ([`PowerMode::Dabr`]) matches one doubleword: the widened
//!   range must be 8 bytes. The flags live in the low bits of the address
//!   register (TRANSLATION 4, DATA_WRITE 2, DATA_READ 1); privilege is in
//!   DABRX (USER 1, KERNEL 2, HYP 4), represented as `Reg::Ctrl(Data, 0)`.
//! * **Access.** Read (DR), write (DW) and both. Execute is refused.
//! * **Privilege.** A range wholly below `1 << 52` (`TASK_SIZE_USER64`) is
//!   user space and matches in problem state (USER); with
//!   [`BpAttr::privileged`] it also matches in the kernel (KERNEL), so
//!   kernel accesses to the user buffer are caught. Any other range needs
//!   `privileged` and matches in the kernel only. HYP is never set.
//! * **Trigger** before the access, so the layer steps over each hit.
//! * **Decode.** `DSISR_DABRMATCH` (0x0040_0000) says a data breakpoint
//!   matched and DAR holds the access address (its first byte). Where the
//!   kernel entry decoded the instruction, `RawStatus::Power::size` gives
//!   the access length (Linux gets it from `analyse_instr`); it is passed on
//!   as [`Decoded::len`] so dispatch checks the whole access, not just its
//!   first byte, against the requested range. Every slot whose widened range
//!   overlaps `[DAR, DAR + size)` is hit. If none does (size unknown, and a
//!   wide vector access whose start lies below the range), the hit goes to
//!   the nearest enabled slot and [`Decoded::addr`] is `None`, since the DAR
//!   is not an address in that range. The hardware reports no direction we rely
//!   on: a slot fires only for the directions its DR/DW bits allow. A
//!   single-step completion is reported (by the simulator, as MSR.SE does
//!   on hardware) as `RawStatus::Power { dsisr: 0, .. }`.
//!
//! [`BpAttr::privileged`]: crate::attr::BpAttr::privileged

use super::{
    access_distance, nearest_slots, Arch, ArchBp, ArchError, DebugRegs, Decoded, Nearest, Pool,
    RawStatus, Reg, SlotCountError, Trigger,
};
use crate::attr::{Access, BpAttr};

const NAME: &str = "POWER";

/// DAWRX: match in problem state (user).
pub const DAWRX_USER: u64 = 1 << 0;
/// DAWRX: match in privileged (kernel) state.
pub const DAWRX_KERNEL: u64 = 1 << 1;
/// DAWRX: match in hypervisor state.
pub const DAWRX_HYP: u64 = 1 << 2;
/// DAWRX: watchpoint type ignore (not used).
pub const DAWRX_WTI: u64 = 1 << 3;
/// DAWRX: match translated (virtual) addresses.
pub const DAWRX_WT: u64 = 1 << 4;
/// DAWRX: match data reads.
pub const DAWRX_DR: u64 = 1 << 5;
/// DAWRX: match data writes.
pub const DAWRX_DW: u64 = 1 << 6;
/// DAWRX MRD field shift: doublewords matched, minus one.
pub const DAWRX_MRD_SHIFT: u32 = 10;
/// DAWRX MRD field mask, before shifting.
pub const DAWRX_MRD_MASK: u64 = 0x3f;

/// DABR: match translated addresses.
pub const DABR_TRANSLATION: u64 = 1 << 2;
/// DABR: match data writes.
pub const DABR_DATA_WRITE: u64 = 1 << 1;
/// DABR: match data reads.
pub const DABR_DATA_READ: u64 = 1 << 0;
/// DABRX: match in problem state.
pub const DABRX_USER: u64 = 1 << 0;
/// DABRX: match in privileged state.
pub const DABRX_KERNEL: u64 = 1 << 1;

/// DSISR: the interrupt is a data breakpoint match.
pub const DSISR_DABRMATCH: u64 = 0x0040_0000;

/// Most bytes a DAWR matches (64 doublewords).
pub const DAWR_MAX_LEN: u64 = 512;
/// Bytes a DABR matches (one doubleword).
pub const DABR_MAX_LEN: u64 = 8;
/// First address above 64-bit user space (`TASK_SIZE_USER64`, 4 PiB).
pub const USER_TOP: u64 = 1 << 52;

/// Where the DABRX bits sit in [`ArchBp::ctrl`] in DABR mode (the low bits
/// hold the DABR flags).
const DABRX_CTRL_SHIFT: u32 = 32;

/// Which data breakpoint facility the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMode {
    /// DAWR/DAWRX on POWER8/POWER9: ranges up to 512 bytes that must not
    /// cross a 512-byte boundary.
    Dawr,
    /// DAWR/DAWRX on POWER10 (ISA 3.1): ranges up to 512 bytes anywhere.
    DawrArch31,
    /// The older DABR/DABRX: one doubleword.
    Dabr,
}

/// The POWER backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Power {
    slots: usize,
    mode: PowerMode,
}

impl Default for Power {
    /// POWER9: one DAWR, 512-byte boundary rule.
    fn default() -> Self {
        Power {
            slots: 1,
            mode: PowerMode::Dawr,
        }
    }
}

impl Power {
    /// A CPU with `slots` data breakpoint registers in `mode`: 1 or 2 DAWRs,
    /// or exactly 1 DABR.
    pub fn new(slots: usize, mode: PowerMode) -> Result<Self, SlotCountError> {
        let (ok, what, rule) = match mode {
            PowerMode::Dabr => (
                slots == 1,
                "DABR registers",
                "DABR mode has exactly one (DABR); use a DAWR mode for two",
            ),
            PowerMode::Dawr | PowerMode::DawrArch31 => (
                slots == 1 || slots == 2,
                "DAWR registers",
                "POWER8/9 have 1 (DAWR0) and POWER10 has 2 (DAWR0, DAWR1)",
            ),
        };
        if !ok {
            return Err(SlotCountError {
                arch: NAME,
                what,
                count: slots,
                rule,
            });
        }
        Ok(Power { slots, mode })
    }

    /// POWER10: two DAWRs, no 512-byte boundary rule.
    pub fn power10() -> Self {
        Power {
            slots: 2,
            mode: PowerMode::DawrArch31,
        }
    }

    /// The facility in use.
    pub fn mode(&self) -> PowerMode {
        self.mode
    }

    /// The doublewords `slot` matches now, read from the registers:
    /// `(start, len)`, or `None` if the slot is not armed.
    fn armed_range(&self, regs: &dyn DebugRegs, slot: usize) -> Option<(u64, u64)> {
        let addr = regs.read(Reg::Addr(Pool::Data, slot as u8));
        match self.mode {
            PowerMode::Dabr => {
                (addr & (DABR_DATA_READ | DABR_DATA_WRITE) != 0).then_some((addr & !7, 8))
            }
            PowerMode::Dawr | PowerMode::DawrArch31 => {
                let x = regs.read(Reg::Ctrl(Pool::Data, slot as u8));
                let mrd = (x >> DAWRX_MRD_SHIFT) & DAWRX_MRD_MASK;
                (x & (DAWRX_DR | DAWRX_DW) != 0).then_some((addr & !7, (mrd + 1) * 8))
            }
        }
    }
}

impl Arch for Power {
    fn name(&self) -> &'static str {
        NAME
    }

    fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Inst => 0,
            Pool::Data => self.slots,
        }
    }

    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError> {
        let (read, write) = match attr.access {
            Access::Execute => {
                return Err(ArchError::BadAccess {
                    arch: NAME,
                    access: Access::Execute,
                    hint: "POWER has no instruction breakpoint registers for this layer (the CIABR belongs to the hypervisor); use a software breakpoint, or watch data instead",
                })
            }
            Access::Read => (true, false),
            Access::Write => (false, true),
            Access::ReadWrite => (true, true),
        };
        let dabr = self.mode == PowerMode::Dabr;
        let max = if dabr { DABR_MAX_LEN } else { DAWR_MAX_LEN };
        if attr.len == 0 || attr.len > max {
            return Err(ArchError::BadLength {
                arch: NAME,
                len: attr.len,
                rule: if dabr {
                    "the DABR matches one doubleword: 1 to 8 bytes"
                } else {
                    "a DAWR matches 1 to 512 bytes (64 doublewords, the DAWRX MRD field); split longer ranges"
                },
            });
        }
        let Some(last) = attr.addr.checked_add(attr.len - 1) else {
            return Err(ArchError::Wraps {
                addr: attr.addr,
                len: attr.len,
            });
        };
        // Widen to whole doublewords (the kernel's hw_breakpoint_validate_len).
        let hw_addr = attr.addr & !7;
        let hw_last = last | 7;
        let hw_len = hw_last - hw_addr + 1;
        if hw_len > max {
            return Err(ArchError::BadRange {
                arch: NAME,
                addr: attr.addr,
                len: attr.len,
                rule: if dabr {
                    "the DABR matches one aligned doubleword and this range crosses into the next; split it at the 8-byte boundary"
                } else {
                    "widened to whole doublewords it needs more than 512 bytes; split it"
                },
            });
        }
        if self.mode == PowerMode::Dawr && hw_addr >> 9 != hw_last >> 9 {
            return Err(ArchError::BadRange {
                arch: NAME,
                addr: attr.addr,
                len: attr.len,
                rule: "before POWER10 a DAWR range must not cross a 512-byte boundary; split it at the boundary",
            });
        }
        let user = hw_last < USER_TOP;
        let (user_bit, kernel_bit) = match (user, attr.privileged) {
            (true, false) => (true, false),
            (true, true) => (true, true),
            (false, true) => (false, true),
            (false, false) => return Err(ArchError::KernelAddress { addr: attr.addr }),
        };
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        let ctrl = if dabr {
            let flags = DABR_TRANSLATION | bit(read, DABR_DATA_READ) | bit(write, DABR_DATA_WRITE);
            let dabrx = bit(user_bit, DABRX_USER) | bit(kernel_bit, DABRX_KERNEL);
            flags | (dabrx << DABRX_CTRL_SHIFT)
        } else {
            let mrd = hw_len / 8 - 1;
            DAWRX_WT
                | bit(read, DAWRX_DR)
                | bit(write, DAWRX_DW)
                | bit(user_bit, DAWRX_USER)
                | bit(kernel_bit, DAWRX_KERNEL)
                | (mrd << DAWRX_MRD_SHIFT)
        };
        Ok(ArchBp {
            pool: Pool::Data,
            hw_addr,
            hw_len,
            req_addr: attr.addr,
            req_len: attr.len,
            access: attr.access,
            ctrl,
            trigger: Trigger::Before,
        })
    }

    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp) {
        debug_assert!(slot < self.slots, "no such POWER slot");
        let (addr, ctrl) = (
            Reg::Addr(Pool::Data, slot as u8),
            Reg::Ctrl(Pool::Data, slot as u8),
        );
        match self.mode {
            PowerMode::Dabr => {
                // DABRX first: the DABR write both sets the address and arms it.
                regs.write(ctrl, bp.ctrl >> DABRX_CTRL_SHIFT);
                regs.write(addr, bp.hw_addr | (bp.ctrl & 7));
            }
            PowerMode::Dawr | PowerMode::DawrArch31 => {
                regs.write(addr, bp.hw_addr);
                regs.write(ctrl, bp.ctrl);
            }
        }
    }

    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize) {
        debug_assert_eq!(pool, Pool::Data, "POWER has data breakpoints only");
        debug_assert!(slot < self.slots, "no such POWER slot");
        let (addr, ctrl) = (
            Reg::Addr(Pool::Data, slot as u8),
            Reg::Ctrl(Pool::Data, slot as u8),
        );
        // Disarm first (DABR's R/W flags, or DAWRX), then clear the rest.
        let (first, second) = match self.mode {
            PowerMode::Dabr => (addr, ctrl),
            PowerMode::Dawr | PowerMode::DawrArch31 => (ctrl, addr),
        };
        regs.write(first, 0);
        regs.write(second, 0);
    }

    fn decode(
        &self,
        status: &RawStatus,
        regs: &dyn DebugRegs,
        installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded {
        let RawStatus::Power {
            dsisr,
            dar,
            nip,
            size,
        } = *status
        else {
            return Decoded::default();
        };
        let mut out = Decoded {
            ip: nip,
            ..Decoded::default()
        };
        if dsisr == 0 {
            out.step = true;
            return out;
        }
        if dsisr & DSISR_DABRMATCH == 0 {
            return out;
        }
        // The access is [dar, dar_last]; 0 bytes (unknown) = just dar.
        let dar_last = dar.saturating_add(size.max(1) - 1);
        let armed = (0..self.slots).filter_map(|slot| {
            installed(Pool::Data, slot)?;
            let (start, len) = self.armed_range(regs, slot)?;
            let last = start.saturating_add(len - 1);
            Some((slot, access_distance(dar, dar_last, start, last)))
        });
        match nearest_slots(armed) {
            Some(Nearest::Exact(mask)) => {
                out.hits[Pool::Data.idx()] = mask;
                out.addr = Some(dar);
                out.len = size.max(1);
            }
            Some(Nearest::Closest(slot)) => out.hits[Pool::Data.idx()] = 1 << slot,
            None => {}
        }
        out
    }
}
