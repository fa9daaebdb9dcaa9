//! arm64 (AArch64): separate breakpoint (DBGBVR/DBGBCR) and watchpoint
//! (DBGWVR/DBGWCR) register pairs, 2–16 of each, reported through ESR/FAR.
//!
//! Rules, as the Arm ARM and Linux's `arch/arm64/kernel/hw_breakpoint.c`
//! (`arch_build_bp_info`, `hw_breakpoint_arch_parse`, `watchpoint_handler`)
//! apply them:
//!
//! * **Slots.** `brps` breakpoint pairs ([`Pool::Inst`]) and `wrps`
//!   watchpoint pairs ([`Pool::Data`]); each between 2 and 16 (ID_AA64DFR0
//!   BRPs/WRPs fields). Common cores have 6 and 4, the [`Default`].
//! * **Watchpoints** cover any 1–8 contiguous bytes inside one 8-byte
//!   aligned doubleword: WVR = `addr & !7`, BAS (WCR bits 12:5) =
//!   `((1 << len) - 1) << (addr & 7)`. A range that crosses into the next
//!   doubleword has no encoding ([`ArchError::BadRange`]); longer ranges
//!   would need the WCR MASK field, which Linux does not use either.
//!   Read (LSC=01), write (10) and read-or-write (11) all exist.
//! * **Breakpoints** match one A64 instruction: 4 bytes, 4-byte aligned,
//!   BAS = 0b1111. We accept length 4, and 1 and 8 as aliases (our
//!   [`BpAttr::exec`] convention and perf's `sizeof(long)`, which the kernel
//!   also "fixes up" to 4). An unaligned address is refused: the kernel
//!   silently rounds it down, which would break on a different instruction.
//! * **Privilege** (PAC, bits 2:1, the kernel's encoding: EL1 = 0b01,
//!   EL0 = 0b10). A range wholly below `1 << 48` (48-bit VA) is user space
//!   and matches at EL0; with [`BpAttr::privileged`] it also matches at EL1
//!   (0b11), so kernel accesses to the user buffer are caught too. Any other
//!   range needs `privileged` and matches at EL1 only.
//! * **Trigger.** Both kinds trap *before* the access/instruction, so the
//!   layer must disable, single-step and re-enable to make progress and to
//!   report "after" (the default [`Arch::needs_step_over`]).
//! * **Decode.** ESR.EC 0x30/0x31 = breakpoint (matched against BVR/BAS and
//!   the PC), 0x34/0x35 = watchpoint, 0x32/0x33 = software step. The FAR of
//!   a watchpoint hit may be inexact (Arm ARM D2.10.5: any address the
//!   access touched, possibly rounded down). As in the kernel's
//!   `watchpoint_handler`, every enabled watchpoint whose bytes contain the
//!   FAR is hit; if none does, the hit goes to the one nearest the FAR
//!   (`get_distance_from_watchpoint`). For such an inexact match
//!   [`Decoded::addr`] is `None`: the FAR is not an address in the watched
//!   range, and the BAS matched only requested bytes, so there is no stray
//!   to filter.
//!
//! [`BpAttr::exec`]: crate::attr::BpAttr::exec
//! [`BpAttr::privileged`]: crate::attr::BpAttr::privileged

use super::{
    access_distance, nearest_slots, Arch, ArchBp, ArchError, DebugRegs, Decoded, Nearest, Pool,
    RawStatus, Reg, SlotCountError, Trigger,
};
use crate::attr::{Access, BpAttr};

const NAME: &str = "arm64";

/// Fewest breakpoint or watchpoint pairs an ARMv8 CPU has.
pub const MIN_SLOTS: usize = 2;
/// Most breakpoint or watchpoint pairs an ARMv8 CPU has.
pub const MAX_SLOTS: usize = 16;

/// BCR/WCR E: the pair is enabled.
pub const CTRL_ENABLE: u64 = 1;
/// PAC field shift (bits 2:1).
pub const PAC_SHIFT: u32 = 1;
/// PAC value: match at EL1 (kernel's `AARCH64_BREAKPOINT_EL1`).
pub const PAC_EL1: u64 = 0b01;
/// PAC value: match at EL0 (kernel's `AARCH64_BREAKPOINT_EL0`).
pub const PAC_EL0: u64 = 0b10;
/// WCR LSC field shift (bits 4:3).
pub const LSC_SHIFT: u32 = 3;
/// LSC value: loads.
pub const LSC_LOAD: u64 = 0b01;
/// LSC value: stores.
pub const LSC_STORE: u64 = 0b10;
/// BAS field shift (bits 12:5).
pub const BAS_SHIFT: u32 = 5;
/// BAS field mask, before shifting.
pub const BAS_MASK: u64 = 0xff;

/// ESR_ELx.EC shift (bits 31:26).
pub const ESR_EC_SHIFT: u32 = 26;
/// EC: breakpoint from a lower exception level.
pub const EC_BREAKPOINT_LOW: u64 = 0x30;
/// EC: breakpoint from the current exception level.
pub const EC_BREAKPOINT_CUR: u64 = 0x31;
/// EC: software step from a lower exception level.
pub const EC_SOFTSTEP_LOW: u64 = 0x32;
/// EC: software step from the current exception level.
pub const EC_SOFTSTEP_CUR: u64 = 0x33;
/// EC: watchpoint from a lower exception level.
pub const EC_WATCHPOINT_LOW: u64 = 0x34;
/// EC: watchpoint from the current exception level.
pub const EC_WATCHPOINT_CUR: u64 = 0x35;
/// ISS WnR (bit 6): the watchpoint access was a write.
pub const ESR_WNR: u64 = 1 << 6;

/// First address above user space (48-bit VA, `TASK_SIZE`).
pub const USER_TOP: u64 = 1 << 48;

/// The arm64 backend: how many breakpoint and watchpoint pairs each CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aarch64 {
    brps: usize,
    wrps: usize,
}

impl Default for Aarch64 {
    /// 6 breakpoints and 4 watchpoints (Cortex-A53/A57/A72/A76 and most others).
    fn default() -> Self {
        Aarch64 { brps: 6, wrps: 4 }
    }
}

impl Aarch64 {
    /// A CPU with `brps` breakpoint and `wrps` watchpoint pairs. ARMv8 has
    /// between 2 and 16 of each; other counts are refused.
    pub fn new(brps: usize, wrps: usize) -> Result<Self, SlotCountError> {
        const RULE: &str = "ARMv8 CPUs have 2 to 16 (ID_AA64DFR0_EL1.BRPs/WRPs + 1)";
        for (count, what) in [
            (brps, "breakpoint registers"),
            (wrps, "watchpoint registers"),
        ] {
            if !(MIN_SLOTS..=MAX_SLOTS).contains(&count) {
                return Err(SlotCountError {
                    arch: NAME,
                    what,
                    count,
                    rule: RULE,
                });
            }
        }
        Ok(Aarch64 { brps, wrps })
    }

    /// Breakpoint pairs (DBGBVR/DBGBCR) per CPU.
    pub fn brps(&self) -> usize {
        self.brps
    }

    /// Watchpoint pairs (DBGWVR/DBGWCR) per CPU.
    pub fn wrps(&self) -> usize {
        self.wrps
    }

    /// The PAC field for `[addr, addr+len)`, or the kernel-address error.
    fn privilege(attr: &BpAttr, addr: u64, len: u64) -> Result<u64, ArchError> {
        let user = matches!(addr.checked_add(len), Some(end) if end <= USER_TOP);
        match (user, attr.privileged) {
            (true, false) => Ok(PAC_EL0),
            (true, true) => Ok(PAC_EL0 | PAC_EL1),
            (false, true) => Ok(PAC_EL1),
            (false, false) => Err(ArchError::KernelAddress { addr }),
        }
    }

    /// Refuse a range whose last byte is past `u64::MAX`. `len` is at least 1.
    fn check_wrap(addr: u64, len: u64) -> Result<(), ArchError> {
        match addr.checked_add(len - 1) {
            Some(_) => Ok(()),
            None => Err(ArchError::Wraps { addr, len }),
        }
    }
}

/// BAS byte mask of a control register value (`ctrl.len` in the kernel).
pub fn bas(ctrl: u64) -> u64 {
    (ctrl >> BAS_SHIFT) & BAS_MASK
}

/// Undo a pointer tag: sign-extend from bit 55, as the kernel's `untagged_addr`.
fn untag(addr: u64) -> u64 {
    (((addr << 8) as i64) >> 8) as u64
}

/// Distance from `addr` to the bytes a watchpoint with value `wvr` and
/// byte-select `bas` watches; 0 inside them (the kernel's
/// `get_distance_from_watchpoint`).
pub fn distance_from_watchpoint(addr: u64, wvr: u64, bas: u64) -> u64 {
    if bas == 0 {
        return u64::MAX;
    }
    let addr = untag(addr);
    let wvr = wvr & !7; // WVR[2:0] are RES0
    let low = wvr + u64::from(bas.trailing_zeros());
    let high = wvr + u64::from(63 - bas.leading_zeros());
    access_distance(addr, addr, low, high)
}

impl Arch for Aarch64 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Inst => self.brps,
            Pool::Data => self.wrps,
        }
    }

    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError> {
        let lsc = match attr.access {
            Access::Execute => {
                if !matches!(attr.len, 1 | 4 | 8) {
                    return Err(ArchError::BadLength {
                        arch: NAME,
                        len: attr.len,
                        rule: "a breakpoint covers one 4-byte A64 instruction; give length 4 (1 and 8 are accepted as aliases)",
                    });
                }
                Self::check_wrap(attr.addr, 4)?;
                if attr.addr & 3 != 0 {
                    return Err(ArchError::Unaligned {
                        arch: NAME,
                        addr: attr.addr,
                        len: 4,
                        align: 4,
                    });
                }
                let pac = Self::privilege(attr, attr.addr, 4)?;
                return Ok(ArchBp {
                    pool: Pool::Inst,
                    hw_addr: attr.addr,
                    hw_len: 4,
                    req_addr: attr.addr,
                    req_len: 4,
                    access: Access::Execute,
                    ctrl: (0b1111 << BAS_SHIFT) | (pac << PAC_SHIFT),
                    trigger: Trigger::Before,
                });
            }
            Access::Read => LSC_LOAD,
            Access::Write => LSC_STORE,
            Access::ReadWrite => LSC_LOAD | LSC_STORE,
        };
        if attr.len == 0 || attr.len > 8 {
            return Err(ArchError::BadLength {
                arch: NAME,
                len: attr.len,
                rule: "a watchpoint's byte-select (BAS) covers 1 to 8 bytes of one aligned doubleword; split longer ranges over several watchpoints",
            });
        }
        Self::check_wrap(attr.addr, attr.len)?;
        let offset = attr.addr & 7;
        if offset + attr.len > 8 {
            return Err(ArchError::BadRange {
                arch: NAME,
                addr: attr.addr,
                len: attr.len,
                rule: "BAS selects contiguous bytes within one 8-byte-aligned doubleword and this range crosses into the next one; split it at the 8-byte boundary",
            });
        }
        let pac = Self::privilege(attr, attr.addr, attr.len)?;
        let bas = ((1u64 << attr.len) - 1) << offset;
        Ok(ArchBp {
            pool: Pool::Data,
            // BAS matches exactly the requested bytes: nothing is widened.
            hw_addr: attr.addr,
            hw_len: attr.len,
            req_addr: attr.addr,
            req_len: attr.len,
            access: attr.access,
            ctrl: (bas << BAS_SHIFT) | (lsc << LSC_SHIFT) | (pac << PAC_SHIFT),
            trigger: Trigger::Before,
        })
    }

    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp) {
        debug_assert!(slot < self.slots(bp.pool), "no such arm64 slot");
        // BVR holds the 4-aligned instruction address, WVR the doubleword.
        let value = match bp.pool {
            Pool::Inst => bp.hw_addr & !3,
            Pool::Data => bp.hw_addr & !7,
        };
        regs.write(Reg::Addr(bp.pool, slot as u8), value);
        regs.write(Reg::Ctrl(bp.pool, slot as u8), bp.ctrl | CTRL_ENABLE);
    }

    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize) {
        debug_assert!(slot < self.slots(pool), "no such arm64 slot");
        // Control (E=0) first, so the comparator is off before its value changes.
        regs.write(Reg::Ctrl(pool, slot as u8), 0);
        regs.write(Reg::Addr(pool, slot as u8), 0);
    }

    fn decode(
        &self,
        status: &RawStatus,
        regs: &dyn DebugRegs,
        installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded {
        let RawStatus::Arm64 { esr, far, pc } = *status else {
            return Decoded::default();
        };
        let mut out = Decoded {
            ip: pc,
            ..Decoded::default()
        };
        let live = |pool: Pool, i: usize| {
            let ctrl = regs.read(Reg::Ctrl(pool, i as u8));
            (installed(pool, i).is_some() && ctrl & CTRL_ENABLE != 0).then_some(ctrl)
        };
        match (esr >> ESR_EC_SHIFT) & 0x3f {
            EC_BREAKPOINT_LOW | EC_BREAKPOINT_CUR => {
                for i in 0..self.brps {
                    let Some(ctrl) = live(Pool::Inst, i) else {
                        continue;
                    };
                    let bvr = regs.read(Reg::Addr(Pool::Inst, i as u8));
                    if bvr == pc & !3 && bas(ctrl) & (1 << (pc & 3)) != 0 {
                        out.hits[Pool::Inst.idx()] |= 1 << i;
                    }
                }
            }
            EC_WATCHPOINT_LOW | EC_WATCHPOINT_CUR => {
                let wanted = if esr & ESR_WNR != 0 {
                    LSC_STORE
                } else {
                    LSC_LOAD
                };
                let armed = (0..self.wrps).filter_map(|i| {
                    let ctrl = live(Pool::Data, i)?;
                    if (ctrl >> LSC_SHIFT) & wanted == 0 {
                        return None;
                    }
                    let wvr = regs.read(Reg::Addr(Pool::Data, i as u8));
                    Some((i, distance_from_watchpoint(far, wvr, bas(ctrl))))
                });
                match nearest_slots(armed) {
                    Some(Nearest::Exact(mask)) => {
                        out.hits[Pool::Data.idx()] = mask;
                        // `len` stays unknown (0): unlike POWER's DAR, an exact
                        // FAR lies inside the BAS-selected bytes, and arm64 never
                        // widens a watch (BAS selects exactly the requested
                        // bytes), so the FAR byte alone is always in the request
                        // and no real hit is lost for want of the access length.
                        out.addr = Some(untag(far));
                    }
                    Some(Nearest::Closest(i)) => out.hits[Pool::Data.idx()] = 1 << i,
                    None => {}
                }
            }
            EC_SOFTSTEP_LOW | EC_SOFTSTEP_CUR => out.step = true,
            _ => {}
        }
        out
    }
}
