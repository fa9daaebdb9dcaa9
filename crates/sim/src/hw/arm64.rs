//! arm64 self-hosted debug (Arm ARM D2 "AArch64 Self-hosted Debug", registers
//! DBGBVR/DBGBCR/DBGWVR/DBGWCR; Linux `arch/arm64/include/asm/hw_breakpoint.h`).
//!
//! - DBGWVR*n* (`Reg::Addr(Pool::Data, n)`): doubleword-aligned address
//!   (bits 2:0 RES0: writing them is recorded as a fault, the hardware ignores them).
//! - DBGWCR*n* (`Reg::Ctrl(Pool::Data, n)`): E bit 0; PAC bits 2:1
//!   (0b10 EL0 only, 0b01 EL1 only, 0b11 both; 0b00 reserved); LSC bits 4:3
//!   (0b01 load, 0b10 store, 0b11 both); BAS bits 12:5, bit *b* watches byte
//!   *b* of the doubleword at WVR; MASK bits 28:24 (address-range mask, BAS
//!   must then be 0xFF; 1 and 2 are reserved).
//! - DBGBVR*n*/DBGBCR*n* (`Reg::{Addr,Ctrl}(Pool::Inst, n)`): E bit 0, PMC
//!   bits 2:1, BAS bits 8:5 = 0b1111 for A64, BT bits 23:20 = 0 (unlinked
//!   address match). Matches when `PC[63:2] == BVR[63:2]`.
//! - Everything traps **before**: breakpoints before the instruction
//!   (ESR.EC 0x30 from EL0, 0x31 from EL1), watchpoints before the access
//!   (EC 0x34/0x35, ISS.WnR bit 6 set for a store, DFSC 0b100010), with
//!   `PC` = the trapping instruction. Software step completes after the
//!   instruction with EC 0x32/0x33 (ISS.ISV=1, EX=0), `PC` = the next one.
//!   ESR.IL (bit 25) is set: A64 instructions are 32 bits.
//! - **FAR is allowed to be inexact** for watchpoints: the Arm ARM only says it
//!   is an address the access touched, or lower, within the same naturally
//!   aligned block. [`FarMode`] picks what this model reports.

use hwbreak_core::arch::{Pool, RawStatus, Reg};
use hwbreak_core::Access;

use super::{overlap, Armed, CpuFlags, Insn, Privilege, RegValues};

/// ESR.EC: breakpoint from a lower EL (EL0).
pub const EC_BREAKPT_LOW: u64 = 0x30;
/// ESR.EC: breakpoint from the current EL (EL1).
pub const EC_BREAKPT_CUR: u64 = 0x31;
/// ESR.EC: software step from a lower EL.
pub const EC_SOFTSTP_LOW: u64 = 0x32;
/// ESR.EC: software step from the current EL.
pub const EC_SOFTSTP_CUR: u64 = 0x33;
/// ESR.EC: watchpoint from a lower EL.
pub const EC_WATCHPT_LOW: u64 = 0x34;
/// ESR.EC: watchpoint from the current EL.
pub const EC_WATCHPT_CUR: u64 = 0x35;
/// ESR.IL: 32-bit instruction.
pub const ESR_IL: u64 = 1 << 25;
/// ISS.WnR: the access was a write.
pub const ESR_WNR: u64 = 1 << 6;
/// ISS.DFSC for a debug exception.
pub const DFSC_DEBUG: u64 = 0b10_0010;
/// Software step ISS.ISV.
pub const ESR_ISV: u64 = 1 << 24;

/// What this model reports in FAR for a watchpoint hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FarMode {
    /// The lowest watched byte the access touched.
    Exact,
    /// The start of the access, which for a wide access (`stp`, a vector
    /// store) can lie *below* the watched bytes. Common on real cores.
    #[default]
    AccessStart,
    /// The start of the access rounded down to 8 bytes.
    RoundDown8,
}

/// The arm64 debug hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm64Hw {
    /// Breakpoint register pairs (ID_AA64DFR0_EL1.BRPs + 1; 2..=16).
    pub brps: usize,
    /// Watchpoint register pairs (ID_AA64DFR0_EL1.WRPs + 1; 2..=16).
    pub wrps: usize,
    /// What FAR reports.
    pub far: FarMode,
}

impl Default for Arm64Hw {
    /// Cortex-A72-like: 6 breakpoints, 4 watchpoints, FAR = access start.
    fn default() -> Self {
        Arm64Hw {
            brps: 6,
            wrps: 4,
            far: FarMode::AccessStart,
        }
    }
}

/// Decoded WCR/BCR fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctrl {
    /// E.
    pub enabled: bool,
    /// PAC/PMC.
    pub pac: u64,
    /// LSC (WCR only).
    pub lsc: u64,
    /// BAS (8 bits for WCR, 4 for BCR).
    pub bas: u64,
    /// MASK (WCR only).
    pub mask: u64,
    /// BT (BCR only).
    pub bt: u64,
}

/// Decode a WCR value.
pub fn decode_wcr(v: u64) -> Ctrl {
    Ctrl {
        enabled: v & 1 != 0,
        pac: (v >> 1) & 3,
        lsc: (v >> 3) & 3,
        bas: (v >> 5) & 0xff,
        mask: (v >> 24) & 0x1f,
        bt: 0,
    }
}

/// Decode a BCR value.
pub fn decode_bcr(v: u64) -> Ctrl {
    Ctrl {
        enabled: v & 1 != 0,
        pac: (v >> 1) & 3,
        lsc: 0,
        bas: (v >> 5) & 0xf,
        mask: 0,
        bt: (v >> 20) & 0xf,
    }
}

fn pac_allows(pac: u64, pl: Privilege) -> bool {
    match pl {
        Privilege::User => pac & 0b10 != 0,
        Privilege::Kernel => pac & 0b01 != 0,
    }
}

impl Arm64Hw {
    /// Separate pools: `brps` breakpoints, `wrps` watchpoints.
    pub fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Inst => self.brps,
            Pool::Data => self.wrps,
        }
    }

    pub(super) fn check_write(&self, r: Reg, v: u64) -> Option<&'static str> {
        match r {
            Reg::Addr(Pool::Inst, i) if (i as usize) < self.brps => {
                (v & 3 != 0).then_some("DBGBVR bits 1:0 are RES0 (A64 instructions are word aligned)")
            }
            Reg::Addr(Pool::Data, i) if (i as usize) < self.wrps => {
                (v & 7 != 0).then_some("DBGWVR bits 2:0 are RES0: the address must be doubleword aligned, select bytes with BAS")
            }
            Reg::Ctrl(Pool::Inst, i) if (i as usize) < self.brps => {
                let c = decode_bcr(v);
                if !c.enabled {
                    None
                } else if c.pac == 0 {
                    Some("DBGBCR.PMC = 0b00 is reserved")
                } else if c.bt != 0 {
                    Some("DBGBCR.BT != 0 (linked/context match) is not modelled")
                } else if c.bas != 0b1111 {
                    Some("DBGBCR.BAS must be 0b1111 for A64 instructions")
                } else {
                    None
                }
            }
            Reg::Ctrl(Pool::Data, i) if (i as usize) < self.wrps => {
                let c = decode_wcr(v);
                if !c.enabled {
                    None
                } else if c.pac == 0 {
                    Some("DBGWCR.PAC = 0b00 is reserved")
                } else if c.lsc == 0 {
                    Some("DBGWCR.LSC = 0b00 is reserved")
                } else if c.bas == 0 {
                    Some("DBGWCR.BAS = 0 never matches")
                } else if c.mask == 1 || c.mask == 2 {
                    Some("DBGWCR.MASK 1 and 2 are reserved")
                } else if c.mask != 0 && c.bas != 0xff {
                    Some("DBGWCR.MASK needs BAS = 0xFF")
                } else if !is_contiguous(c.bas) {
                    Some("DBGWCR.BAS with non-contiguous bytes is CONSTRAINED UNPREDICTABLE")
                } else {
                    None
                }
            }
            _ => Some("no such register: arm64 has BVR/BCR (Inst, 0..brps) and WVR/WCR (Data, 0..wrps) only"),
        }
    }

    /// The bytes watchpoint `i` watches: (start, len) of its BAS span or mask range.
    fn wp_range(&self, regs: &RegValues, i: usize) -> (u64, u64) {
        let c = decode_wcr(regs.ctrl[Pool::Data.idx()][i]);
        let wvr = regs.addr[Pool::Data.idx()][i];
        if c.mask != 0 {
            let size = 1u64 << c.mask;
            return (wvr & !(size - 1), size);
        }
        let base = wvr & !7;
        if c.bas == 0 {
            return (base, 0);
        }
        let first = c.bas.trailing_zeros() as u64;
        let last = 63 - c.bas.leading_zeros() as u64;
        (base + first, last - first + 1)
    }

    /// Whether watchpoint `i` matches `addr..addr+len` byte-exactly (BAS bits).
    fn wp_bytes_hit(&self, regs: &RegValues, i: usize, addr: u64, len: u64) -> Option<u64> {
        let c = decode_wcr(regs.ctrl[Pool::Data.idx()][i]);
        let wvr = regs.addr[Pool::Data.idx()][i];
        if c.mask != 0 {
            let (s, l) = self.wp_range(regs, i);
            return overlap(addr, len, s, l).then(|| addr.max(s));
        }
        let base = wvr & !7;
        (0..8)
            .filter(|b| c.bas & (1 << b) != 0)
            .map(|b| base + b)
            .find(|&byte| overlap(addr, len, byte, 1))
    }

    pub(super) fn armed(&self, regs: &RegValues) -> Vec<Armed> {
        let mut v = Vec::new();
        for i in 0..self.brps {
            let c = decode_bcr(regs.ctrl[Pool::Inst.idx()][i]);
            if c.enabled {
                v.push(Armed {
                    pool: Pool::Inst,
                    slot: i,
                    addr: regs.addr[Pool::Inst.idx()][i] & !3,
                    len: 4,
                    access: Access::Execute,
                });
            }
        }
        for i in 0..self.wrps {
            let c = decode_wcr(regs.ctrl[Pool::Data.idx()][i]);
            if c.enabled {
                let (addr, len) = self.wp_range(regs, i);
                let access = match c.lsc {
                    1 => Access::Read,
                    2 => Access::Write,
                    _ => Access::ReadWrite,
                };
                v.push(Armed {
                    pool: Pool::Data,
                    slot: i,
                    addr,
                    len,
                    access,
                });
            }
        }
        v
    }

    /// Breakpoints fault before the instruction; then watchpoints fault before the access.
    pub(super) fn before(&self, regs: &mut RegValues, insn: &Insn) -> Option<RawStatus> {
        let pl = Privilege::of(insn.ip);
        let low = pl == Privilege::User;
        for i in 0..self.brps {
            let c = decode_bcr(regs.ctrl[Pool::Inst.idx()][i]);
            if c.enabled
                && pac_allows(c.pac, pl)
                && c.bas == 0b1111
                && (insn.ip & !3) == (regs.addr[Pool::Inst.idx()][i] & !3)
            {
                let ec = if low { EC_BREAKPT_LOW } else { EC_BREAKPT_CUR };
                return Some(RawStatus::Arm64 {
                    esr: (ec << 26) | ESR_IL,
                    far: 0,
                    pc: insn.ip,
                });
            }
        }
        let m = insn.mem?;
        let dpl = Privilege::of(m.addr);
        let mut first_hit: Option<u64> = None;
        for i in 0..self.wrps {
            let c = decode_wcr(regs.ctrl[Pool::Data.idx()][i]);
            let lsc_ok = match m.kind {
                Access::Read => c.lsc & 1 != 0,
                Access::Write => c.lsc & 2 != 0,
                _ => false,
            };
            if !(c.enabled && lsc_ok && pac_allows(c.pac, dpl)) {
                continue;
            }
            if let Some(byte) = self.wp_bytes_hit(regs, i, m.addr, m.len.max(1)) {
                first_hit = Some(first_hit.map_or(byte, |b: u64| b.min(byte)));
            }
        }
        let byte = first_hit?;
        let far = match self.far {
            FarMode::Exact => byte,
            FarMode::AccessStart => m.addr,
            FarMode::RoundDown8 => m.addr & !7,
        };
        let ec = if dpl == Privilege::User {
            EC_WATCHPT_LOW
        } else {
            EC_WATCHPT_CUR
        };
        let wnr = if m.kind == Access::Write { ESR_WNR } else { 0 };
        Some(RawStatus::Arm64 {
            esr: (ec << 26) | ESR_IL | wnr | DFSC_DEBUG,
            far,
            pc: insn.ip,
        })
    }

    /// Software step completes after the instruction.
    pub(super) fn after(&self, flags: CpuFlags, insn: &Insn) -> Option<RawStatus> {
        if !flags.single_step {
            return None;
        }
        let ec = if Privilege::of(insn.ip) == Privilege::User {
            EC_SOFTSTP_LOW
        } else {
            EC_SOFTSTP_CUR
        };
        Some(RawStatus::Arm64 {
            esr: (ec << 26) | ESR_IL | ESR_ISV,
            far: 0,
            pc: insn.next_ip,
        })
    }
}

fn is_contiguous(bas: u64) -> bool {
    let shifted = bas >> bas.trailing_zeros();
    shifted & (shifted + 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::{Hw, MemAccess, RegFile};
    use hwbreak_core::arch::DebugRegs;

    /// Linux `encode_ctrl_reg`: len(BAS) << 5 | type(LSC) << 3 | privilege << 1 | enabled.
    fn wcr(bas: u64, lsc: u64) -> u64 {
        (bas << 5) | (lsc << 3) | (0b10 << 1) | 1
    }

    fn file(far: FarMode) -> RegFile {
        RegFile::new(Hw::Arm64(Arm64Hw {
            far,
            ..Default::default()
        }))
    }

    fn access(f: &mut RegFile, addr: u64, len: u64, kind: Access) -> Option<RawStatus> {
        let hw = *f.hw();
        let insn = Insn {
            ip: 0x40_0000,
            next_ip: 0x40_0004,
            mem: Some(MemAccess { addr, len, kind }),
        };
        hw.before(f.values_mut(), CpuFlags::default(), &insn)
    }

    fn ec(raw: RawStatus) -> u64 {
        let RawStatus::Arm64 { esr, .. } = raw else {
            panic!()
        };
        esr >> 26
    }

    #[test]
    fn bas_selects_exact_bytes_within_the_doubleword() {
        let mut f = file(FarMode::Exact);
        f.write(Reg::Addr(Pool::Data, 0), 0x1000);
        f.write(Reg::Ctrl(Pool::Data, 0), wcr(0b0011_0000, 0b10)); // bytes 4,5; store
        assert!(f.faults().is_empty());
        assert_eq!(access(&mut f, 0x1003, 1, Access::Write), None);
        assert_eq!(access(&mut f, 0x1006, 2, Access::Write), None);
        let raw = access(&mut f, 0x1005, 1, Access::Write).unwrap();
        assert_eq!(
            raw,
            RawStatus::Arm64 {
                esr: (0x34 << 26) | ESR_IL | ESR_WNR | DFSC_DEBUG,
                far: 0x1005,
                pc: 0x40_0000
            }
        );
        // An 8-byte store covering bytes 4,5: FAR exact = first watched byte touched.
        let RawStatus::Arm64 { far, .. } = access(&mut f, 0x1000, 8, Access::Write).unwrap() else {
            panic!()
        };
        assert_eq!(far, 0x1004);
    }

    #[test]
    fn lsc_load_ignores_stores_and_wnr_reports_direction() {
        let mut f = file(FarMode::Exact);
        f.write(Reg::Addr(Pool::Data, 1), 0x2000);
        f.write(Reg::Ctrl(Pool::Data, 1), wcr(0xff, 0b01));
        assert_eq!(access(&mut f, 0x2000, 8, Access::Write), None);
        let RawStatus::Arm64 { esr, .. } = access(&mut f, 0x2000, 8, Access::Read).unwrap() else {
            panic!()
        };
        assert_eq!(esr & ESR_WNR, 0);
        f.write(Reg::Ctrl(Pool::Data, 1), wcr(0xff, 0b11));
        let RawStatus::Arm64 { esr, .. } = access(&mut f, 0x2000, 8, Access::Write).unwrap() else {
            panic!()
        };
        assert_eq!(esr & ESR_WNR, ESR_WNR);
    }

    #[test]
    fn inexact_far_reports_access_start_or_rounded_down() {
        for (mode, want) in [
            (FarMode::AccessStart, 0x2ffa),
            (FarMode::RoundDown8, 0x2ff8),
            (FarMode::Exact, 0x3004),
        ] {
            let mut f = file(mode);
            f.write(Reg::Addr(Pool::Data, 0), 0x3000);
            f.write(Reg::Ctrl(Pool::Data, 0), wcr(0b1111_0000, 0b10)); // 0x3004..0x3008
                                                                       // A 16-byte `stp` from 0x2ffa covers 0x3004.
            let RawStatus::Arm64 { far, .. } = access(&mut f, 0x2ffa, 16, Access::Write).unwrap()
            else {
                panic!()
            };
            assert_eq!(far, want, "{mode:?}");
        }
    }

    #[test]
    fn pac_el0_only_ignores_kernel_accesses() {
        let mut f = file(FarMode::Exact);
        let k = 0xffff_8000_0000_1000;
        f.write(Reg::Addr(Pool::Data, 0), k);
        f.write(Reg::Ctrl(Pool::Data, 0), wcr(0xff, 0b11));
        assert_eq!(access(&mut f, k, 8, Access::Read), None);
        f.write(Reg::Ctrl(Pool::Data, 0), wcr(0xff, 0b11) | (0b11 << 1));
        assert_eq!(
            ec(access(&mut f, k, 8, Access::Read).unwrap()),
            EC_WATCHPT_CUR
        );
    }

    #[test]
    fn breakpoint_traps_before_with_ec_0x30_and_step_reports_0x32_after() {
        let mut f = file(FarMode::Exact);
        f.write(Reg::Addr(Pool::Inst, 0), 0x40_0010);
        f.write(Reg::Ctrl(Pool::Inst, 0), (0b1111 << 5) | (0b10 << 1) | 1);
        assert!(f.faults().is_empty());
        let hw = *f.hw();
        let insn = Insn {
            ip: 0x40_0010,
            next_ip: 0x40_0014,
            mem: None,
        };
        let raw = hw
            .before(f.values_mut(), CpuFlags::default(), &insn)
            .unwrap();
        assert_eq!(
            raw,
            RawStatus::Arm64 {
                esr: (0x30 << 26) | ESR_IL,
                far: 0,
                pc: 0x40_0010
            }
        );
        let ss = CpuFlags {
            single_step: true,
            ..Default::default()
        };
        let raw = hw.after(f.values_mut(), ss, &insn).unwrap();
        assert_eq!(ec(raw), EC_SOFTSTP_LOW);
        let RawStatus::Arm64 { pc, .. } = raw else {
            panic!()
        };
        assert_eq!(pc, 0x40_0014);
        assert_eq!(hw.after(f.values_mut(), CpuFlags::default(), &insn), None);
    }

    #[test]
    fn mask_watches_a_power_of_two_range() {
        let mut f = file(FarMode::Exact);
        f.write(Reg::Addr(Pool::Data, 0), 0x10000);
        f.write(Reg::Ctrl(Pool::Data, 0), wcr(0xff, 0b11) | (12 << 24)); // 4 KiB
        assert!(f.faults().is_empty());
        assert!(access(&mut f, 0x10ff8, 8, Access::Read).is_some());
        assert!(access(&mut f, 0x11000, 8, Access::Read).is_none());
    }

    #[test]
    fn reserved_encodings_and_missing_registers_are_faults() {
        let mut f = file(FarMode::Exact);
        f.write(Reg::Addr(Pool::Data, 0), 0x1004); // RES0 bits
        f.write(Reg::Ctrl(Pool::Data, 0), 1 | (0b10 << 1) | (0xff << 5)); // LSC=0
        f.write(Reg::Ctrl(Pool::Data, 1), wcr(0b0101, 0b11)); // non-contiguous
        f.write(Reg::Ctrl(Pool::Data, 4), 0); // only 4 WRPs
        f.write(Reg::Control, 0);
        f.write(Reg::Ctrl(Pool::Inst, 0), 1 | (0b10 << 1) | (0b0011 << 5)); // BAS != 1111
        assert_eq!(f.faults().len(), 6, "{:?}", f.faults());
        // Disabled control values are never checked.
        f.write(Reg::Ctrl(Pool::Data, 0), 0);
        assert_eq!(f.faults().len(), 6);
    }
}
