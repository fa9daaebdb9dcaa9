//! POWER data address breakpoints (Power ISA 3.x book III "DAWR"; Linux
//! `arch/powerpc/include/asm/reg.h`, `arch/powerpc/kernel/dawr.c`).
//!
//! **DAWR mode** (POWER8+; 1 or 2 slots, DAWR0/DAWR1):
//! - DAWR*n* (`Reg::Addr(Pool::Data, n)`): doubleword-aligned start (bits 2:0 ignored).
//! - DAWRX*n* (`Reg::Ctrl(Pool::Data, n)`), Linux's layout: `DAWRX_USER` bit 0,
//!   `DAWRX_KERNEL` bit 1, `DAWRX_HYP` bit 2, `DAWRX_WTI` bit 3, `DAWRX_WT`
//!   bit 4, `DAWRX_DR` bit 5 (reads), `DAWRX_DW` bit 6 (writes), MRD bits
//!   15:10 = doublewords − 1 (up to 64 doublewords = 512 bytes).
//! - Before POWER10 the range must not cross a 512-byte boundary; this model
//!   then stops matching at the boundary and records a fault.
//! - The simulator's accesses run with data translation on, so a slot matches
//!   only with `DAWRX_WT` (match when translated) or `DAWRX_WTI` (ignore
//!   translation). Linux always sets WT for user breakpoints.
//!
//! **DABR mode** (one slot): `Reg::Addr(Pool::Data, 0)` = DABR, the
//! doubleword address with flags in its low bits: `DABR_DATA_READ` bit 0,
//! `DABR_DATA_WRITE` bit 1, `DABR_TRANSLATION` bit 2. With `dabrx`, the
//! privilege filter DABRX is `Reg::Ctrl(Pool::Data, 0)` (USER bit 0,
//! KERNEL bit 1, HYP bit 2, as Linux writes it); without, every privilege matches.
//!
//! Both modes trap **before** the access: a DSI with `DSISR_DABRMATCH`
//! (`0x0040_0000`, plus `DSISR_ISSTORE` `0x0200_0000` for a store), DAR = the
//! access's effective address (its first byte), NIP = the trapping
//! instruction, and `size` = the access length (what Linux's handler gets by
//! decoding the instruction with `analyse_instr`). A match is any byte of the
//! access in the doubleword range.
//! After a single-step (MSR.SE) the model reports
//! `RawStatus::Power { dsisr: 0, dar: 0, nip: next, size: 0 }`: a trace interrupt has no
//! DSISR, so dsisr 0 means "single-step completed".

use hwbreak_core::arch::{Pool, RawStatus, Reg};
use hwbreak_core::Access;

use super::{overlap, Armed, CpuFlags, Insn, Privilege, RegValues};

/// DAWRX: match problem state (user).
pub const DAWRX_USER: u64 = 1 << 0;
/// DAWRX: match privileged state.
pub const DAWRX_KERNEL: u64 = 1 << 1;
/// DAWRX: match hypervisor state.
pub const DAWRX_HYP: u64 = 1 << 2;
/// DAWRX: ignore translation.
pub const DAWRX_WTI: u64 = 1 << 3;
/// DAWRX: match when translation is on.
pub const DAWRX_WT: u64 = 1 << 4;
/// DAWRX: match reads.
pub const DAWRX_DR: u64 = 1 << 5;
/// DAWRX: match writes.
pub const DAWRX_DW: u64 = 1 << 6;
/// DAWRX MRD field shift (`63 - 53`).
pub const DAWRX_MRD_SHIFT: u64 = 10;
/// DABR: match reads.
pub const DABR_DATA_READ: u64 = 1 << 0;
/// DABR: match writes.
pub const DABR_DATA_WRITE: u64 = 1 << 1;
/// DABR: match when translated.
pub const DABR_TRANSLATION: u64 = 1 << 2;
/// DSISR: a data address breakpoint matched.
pub const DSISR_DABRMATCH: u64 = 0x0040_0000;
/// DSISR: the access was a store.
pub const DSISR_ISSTORE: u64 = 0x0200_0000;

/// Which register set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMode {
    /// DAWR/DAWRX with `slots` (1 or 2) slots.
    Dawr {
        /// 1 (POWER8/9) or 2 (POWER10).
        slots: usize,
        /// POWER10: ranges may cross a 512-byte boundary.
        power10: bool,
    },
    /// The older single 8-byte DABR.
    Dabr {
        /// DABRX exists (POWER5+).
        dabrx: bool,
    },
}

/// The POWER debug hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerHw {
    /// Register set.
    pub mode: PowerMode,
}

impl Default for PowerHw {
    /// POWER9: one DAWR.
    fn default() -> Self {
        PowerHw {
            mode: PowerMode::Dawr {
                slots: 1,
                power10: false,
            },
        }
    }
}

/// What one DAWR/DAWRX pair (or DABR) matches.
#[derive(Debug, Clone, Copy)]
struct PowerSlot {
    /// First byte matched (doubleword-aligned).
    start: u64,
    /// Bytes matched.
    len: u64,
    /// Matches loads.
    reads: bool,
    /// Matches stores.
    writes: bool,
    /// Privilege bits (user, kernel, hypervisor).
    privs: u64,
    /// Matches translated accesses (DAWRX WT/WTI, DABR BT).
    translation: bool,
}

impl PowerHw {
    /// Data slots only.
    pub fn slots(&self, pool: Pool) -> usize {
        match (pool, self.mode) {
            (Pool::Inst, _) => 0,
            (Pool::Data, PowerMode::Dawr { slots, .. }) => slots,
            (Pool::Data, PowerMode::Dabr { .. }) => 1,
        }
    }

    pub(super) fn check_write(&self, regs: &RegValues, r: Reg, v: u64) -> Option<&'static str> {
        match (self.mode, r) {
            (PowerMode::Dawr { slots, .. }, Reg::Addr(Pool::Data, i)) if (i as usize) < slots => None,
            (PowerMode::Dawr { slots, .. }, Reg::Ctrl(Pool::Data, i)) if (i as usize) < slots => {
                let mut after = *regs;
                after.ctrl[Pool::Data.idx()][i as usize] = v;
                let armed = v & (DAWRX_DR | DAWRX_DW) != 0;
                (armed && self.crosses_512(&after, i as usize))
                    .then_some("DAWR range crosses a 512-byte boundary: pre-POWER10 hardware stops matching at the boundary")
            }
            (PowerMode::Dabr { .. }, Reg::Addr(Pool::Data, 0)) => None,
            (PowerMode::Dabr { dabrx: true }, Reg::Ctrl(Pool::Data, 0)) => None,
            _ => Some("no such register: POWER has DAWRn/DAWRXn (Addr/Ctrl(Data, 0..slots)) or DABR (Addr(Data, 0)) [+ DABRX (Ctrl(Data, 0))]"),
        }
    }

    /// What slot `i` matches.
    fn slot(&self, regs: &RegValues, i: usize) -> PowerSlot {
        let a = regs.addr[Pool::Data.idx()][i];
        let x = regs.ctrl[Pool::Data.idx()][i];
        match self.mode {
            PowerMode::Dawr { power10, .. } => {
                let start = a & !7;
                let mut len = (((x >> DAWRX_MRD_SHIFT) & 0x3f) + 1) * 8;
                if !power10 {
                    // Pre-POWER10 hardware does not match past the 512-byte block.
                    let block_end = (start | 511) + 1;
                    len = len.min(block_end - start);
                }
                let wt = x & (DAWRX_WT | DAWRX_WTI) != 0;
                PowerSlot {
                    start,
                    len,
                    reads: x & DAWRX_DR != 0,
                    writes: x & DAWRX_DW != 0,
                    privs: x & 7,
                    translation: wt,
                }
            }
            PowerMode::Dabr { dabrx } => {
                let privs = if dabrx { x & 7 } else { 7 };
                PowerSlot {
                    start: a & !7,
                    len: 8,
                    reads: a & DABR_DATA_READ != 0,
                    writes: a & DABR_DATA_WRITE != 0,
                    privs,
                    translation: a & DABR_TRANSLATION != 0,
                }
            }
        }
    }

    /// Whether DAWRX*n* describes a range crossing a 512-byte boundary
    /// (pre-POWER10 hardware cannot).
    pub fn crosses_512(&self, regs: &RegValues, i: usize) -> bool {
        let PowerMode::Dawr { power10: false, .. } = self.mode else {
            return false;
        };
        let start = regs.addr[Pool::Data.idx()][i] & !7;
        let x = regs.ctrl[Pool::Data.idx()][i];
        let len = (((x >> DAWRX_MRD_SHIFT) & 0x3f) + 1) * 8;
        (start >> 9) != ((start + len - 1) >> 9)
    }

    pub(super) fn armed(&self, regs: &RegValues) -> Vec<Armed> {
        (0..self.slots(Pool::Data))
            .filter_map(|i| {
                let PowerSlot {
                    start: addr,
                    len,
                    reads: r,
                    writes: w,
                    ..
                } = self.slot(regs, i);
                let access = match (r, w) {
                    (true, true) => Access::ReadWrite,
                    (true, false) => Access::Read,
                    (false, true) => Access::Write,
                    _ => return None,
                };
                Some(Armed {
                    pool: Pool::Data,
                    slot: i,
                    addr,
                    len,
                    access,
                })
            })
            .collect()
    }

    /// A matching slot raises a DSI before the access.
    pub(super) fn before(&self, regs: &mut RegValues, insn: &Insn) -> Option<RawStatus> {
        let m = insn.mem?;
        let pl_bit = match Privilege::of(m.addr) {
            Privilege::User => DAWRX_USER,
            Privilege::Kernel => DAWRX_KERNEL,
        };
        let hit = (0..self.slots(Pool::Data)).any(|i| {
            let PowerSlot {
                start,
                len,
                reads: r,
                writes: w,
                privs,
                translation: xlate,
            } = self.slot(regs, i);
            let kind_ok = match m.kind {
                Access::Read => r,
                Access::Write => w,
                _ => false,
            };
            kind_ok && xlate && privs & pl_bit != 0 && overlap(m.addr, m.len.max(1), start, len)
        });
        if !hit {
            return None;
        }
        let store = if m.kind == Access::Write {
            DSISR_ISSTORE
        } else {
            0
        };
        Some(RawStatus::Power {
            dsisr: DSISR_DABRMATCH | store,
            dar: m.addr,
            nip: insn.ip,
            // As Linux's handler learns it from analyse_instr().
            size: m.len,
        })
    }

    /// MSR.SE: a trace interrupt after the instruction, reported as dsisr 0.
    pub(super) fn after(&self, flags: CpuFlags, insn: &Insn) -> Option<RawStatus> {
        flags.single_step.then_some(RawStatus::Power {
            dsisr: 0,
            dar: 0,
            nip: insn.next_ip,
            size: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::{Hw, MemAccess, RegFile};
    use hwbreak_core::arch::DebugRegs;

    /// As Linux `set_dawr` builds it: RW << 5 | WT | USER | MRD << 10.
    fn dawrx(dw: u64, read: bool, write: bool) -> u64 {
        ((read as u64) << 5)
            | ((write as u64) << 6)
            | DAWRX_WT
            | DAWRX_USER
            | ((dw - 1) << DAWRX_MRD_SHIFT)
    }

    fn run(f: &mut RegFile, addr: u64, len: u64, kind: Access) -> Option<RawStatus> {
        let hw = *f.hw();
        let insn = Insn {
            ip: 0x1000_0000,
            next_ip: 0x1000_0004,
            mem: Some(MemAccess { addr, len, kind }),
        };
        hw.before(f.values_mut(), CpuFlags::default(), &insn)
    }

    #[test]
    fn dawr_matches_whole_doublewords_and_reports_dabrmatch_dar_nip() {
        let mut f = RegFile::new(Hw::Power(PowerHw::default()));
        f.write(Reg::Addr(Pool::Data, 0), 0x2000);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(2, false, true)); // 0x2000..0x2010
        assert!(f.faults().is_empty());
        assert_eq!(
            run(&mut f, 0x2000, 1, Access::Read),
            None,
            "reads not watched"
        );
        assert_eq!(run(&mut f, 0x2010, 1, Access::Write), None);
        assert_eq!(
            run(&mut f, 0x200f, 1, Access::Write),
            Some(RawStatus::Power {
                dsisr: DSISR_DABRMATCH | DSISR_ISSTORE,
                dar: 0x200f,
                nip: 0x1000_0000,
                size: 1
            })
        );
        assert_eq!(
            run(&mut f, 0x1ffc, 8, Access::Write).map(|r| match r {
                RawStatus::Power { dar, .. } => dar,
                _ => 0,
            }),
            Some(0x1ffc)
        );
    }

    #[test]
    fn dawr_needs_translation_bit_and_user_privilege() {
        let mut f = RegFile::new(Hw::Power(PowerHw::default()));
        f.write(Reg::Addr(Pool::Data, 0), 0x2000);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(1, true, true) & !DAWRX_WT);
        assert_eq!(run(&mut f, 0x2000, 1, Access::Read), None);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(1, true, true) & !DAWRX_USER);
        assert_eq!(run(&mut f, 0x2000, 1, Access::Read), None);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(1, true, true));
        assert!(run(&mut f, 0x2000, 1, Access::Read).is_some());
    }

    #[test]
    fn pre_power10_stops_matching_at_512_byte_boundary() {
        let mut f = RegFile::new(Hw::Power(PowerHw::default()));
        f.write(Reg::Addr(Pool::Data, 0), 0x21f8);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(2, true, true)); // would be 0x21f8..0x2208
        assert_eq!(f.faults().len(), 1);
        let hw = PowerHw::default();
        assert!(hw.crosses_512(f.values(), 0));
        assert!(run(&mut f, 0x21f8, 1, Access::Read).is_some());
        assert!(run(&mut f, 0x2200, 1, Access::Read).is_none());
        let mut p10 = RegFile::new(Hw::Power(PowerHw {
            mode: PowerMode::Dawr {
                slots: 2,
                power10: true,
            },
        }));
        p10.write(Reg::Addr(Pool::Data, 1), 0x21f8);
        p10.write(Reg::Ctrl(Pool::Data, 1), dawrx(2, true, true));
        assert!(run(&mut p10, 0x2200, 1, Access::Read).is_some());
        assert!(p10.faults().is_empty());
    }

    #[test]
    fn max_mrd_is_64_doublewords() {
        let mut f = RegFile::new(Hw::Power(PowerHw::default()));
        f.write(Reg::Addr(Pool::Data, 0), 0x4000);
        f.write(Reg::Ctrl(Pool::Data, 0), dawrx(64, true, false));
        assert_eq!(f.armed()[0].len, 512);
        assert!(run(&mut f, 0x41ff, 1, Access::Read).is_some());
        assert!(run(&mut f, 0x4200, 1, Access::Read).is_none());
    }

    #[test]
    fn dabr_flags_live_in_the_low_address_bits() {
        let mut f = RegFile::new(Hw::Power(PowerHw {
            mode: PowerMode::Dabr { dabrx: true },
        }));
        f.write(
            Reg::Addr(Pool::Data, 0),
            0x3000 | DABR_TRANSLATION | DABR_DATA_WRITE,
        );
        f.write(Reg::Ctrl(Pool::Data, 0), DAWRX_USER); // DABRX_USER
        assert!(f.faults().is_empty());
        assert!(run(&mut f, 0x3007, 1, Access::Write).is_some());
        assert!(run(&mut f, 0x3007, 1, Access::Read).is_none());
        assert!(run(&mut f, 0x3008, 1, Access::Write).is_none());
        f.write(Reg::Ctrl(Pool::Data, 1), 0);
        assert_eq!(f.faults().len(), 1);
    }

    #[test]
    fn single_step_completion_is_dsisr_zero_at_next_nip() {
        let hw = Hw::Power(PowerHw::default());
        let mut v = hw.reset_values();
        let insn = Insn {
            ip: 0x100,
            next_ip: 0x104,
            mem: None,
        };
        let ss = CpuFlags {
            single_step: true,
            ..Default::default()
        };
        assert_eq!(
            hw.after(&mut v, ss, &insn),
            Some(RawStatus::Power {
                dsisr: 0,
                dar: 0,
                nip: 0x104,
                size: 0
            })
        );
        assert_eq!(hw.after(&mut v, CpuFlags::default(), &insn), None);
    }
}
