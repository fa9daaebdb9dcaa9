//! x86-64 debug registers (Intel SDM vol. 3, ch. 18 "Debug, branch profile...";
//! AMD APM vol. 2, ch. 13).
//!
//! - DR0–DR3 (`Reg::Addr(Pool::Data, i)`): linear addresses. The hardware
//!   ignores the low bits below the slot's length (a 4-byte slot at `0x1003`
//!   matches `0x1000..0x1004`).
//! - DR7 (`Reg::Control`): L*i* at bit 2*i*, G*i* at 2*i*+1 (either enables
//!   slot *i*); RW*i* at 16+4*i* (00 execute, 01 write, 10 I/O, 11 read or
//!   write); LEN*i* at 18+4*i* (00 = 1, 01 = 2, 11 = 4, 10 = 8 bytes). Bit 10
//!   reads as one.
//! - DR6 (`Reg::Status`): B0–B3 bits 0–3, BS bit 14; sticky (software clears
//!   it); reserved bits read as ones (`0xFFFF0FF0`).
//! - Data breakpoints match when **any byte** of the access overlaps the
//!   slot's range and trap **after** the access (RIP = next instruction).
//!   Execute breakpoints match `RIP == DRi` and fault **before** the
//!   instruction unless RFLAGS.RF is set; RF clears when an instruction completes.
//! - TF single-step traps after the instruction with DR6.BS, in the same #DB
//!   as any data breakpoint the instruction hit.
//! - The SDM says B0–B3 "may be set even if the breakpoint is not enabled by
//!   the Ln and Gn flags": when an enabled breakpoint triggers, the model also
//!   sets the B bit of every *disabled* slot whose condition matched
//!   (`report_disabled_matches`), so dispatch must filter empty slots.
//! - AMD's address-mask extension (`DR0..3_ADDR_MASK` MSRs, represented as
//!   `Reg::Ctrl(Pool::Data, i)`) exists only with `amd_addr_mask`; set mask
//!   bits are ignored when comparing addresses.

use hwbreak_core::arch::{Pool, RawStatus, Reg};
use hwbreak_core::Access;

use super::{overlap, Armed, CpuFlags, Insn, RegValues};

/// DR7 bit 10 reads as one.
pub const DR7_FIXED_1: u64 = 1 << 10;
/// DR6 bits that read as one when clear of events (Linux `DR6_RESERVED`).
pub const DR6_FIXED_1: u64 = 0xFFFF_0FF0;
/// DR6 bits the hardware sets: B0–B3, BD (13), BS (14), BT (15).
pub const DR6_ACTIVE: u64 = 0xF | (1 << 13) | (1 << 14) | (1 << 15);
/// DR6.BS: single-step.
pub const DR6_BS: u64 = 1 << 14;

/// DR7 RW encodings.
pub const RW_EXEC: u64 = 0b00;
/// DR7 RW: data writes.
pub const RW_WRITE: u64 = 0b01;
/// DR7 RW: I/O (needs CR4.DE; never used here).
pub const RW_IO: u64 = 0b10;
/// DR7 RW: data reads or writes.
pub const RW_READ_WRITE: u64 = 0b11;

/// The x86-64 debug hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86Hw {
    /// AMD address-mask MSRs present (`Reg::Ctrl(Pool::Data, i)`).
    pub amd_addr_mask: bool,
    /// Set B bits of disabled slots whose condition matched when an enabled one triggers.
    pub report_disabled_matches: bool,
}

impl Default for X86Hw {
    fn default() -> Self {
        X86Hw {
            amd_addr_mask: false,
            report_disabled_matches: true,
        }
    }
}

/// LEN field → bytes.
pub fn len_bytes(len_field: u64) -> u64 {
    match len_field & 3 {
        0b00 => 1,
        0b01 => 2,
        0b11 => 4,
        _ => 8,
    }
}

/// DR0–DR3: the address registers x86-64 has (SDM vol. 3, 18.2). The
/// model's own count, written from the manual like the rest of it, not the
/// core backend's `NUM_SLOTS`: `backend_vs_hardware` then catches a backend
/// that disagrees with the hardware.
pub const DR_SLOTS: usize = 4;

/// One slot's fields in DR7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dr7Slot {
    /// L or G set.
    pub enabled: bool,
    /// The RW field (`RW_EXEC`, `RW_WRITE`, `RW_IO`, `RW_READ_WRITE`).
    pub rw: u64,
    /// The LEN field, in bytes.
    pub len: u64,
}

/// Slot `i`'s decoded DR7 fields.
pub fn dr7_slot(dr7: u64, i: usize) -> Dr7Slot {
    Dr7Slot {
        enabled: dr7 & (0b11 << (2 * i)) != 0,
        rw: (dr7 >> (16 + 4 * i)) & 3,
        len: len_bytes((dr7 >> (18 + 4 * i)) & 3),
    }
}

impl X86Hw {
    /// DR0–DR3 in the one shared pool.
    pub fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Data => DR_SLOTS,
            Pool::Inst => 0,
        }
    }

    pub(super) fn check_write(&self, _regs: &RegValues, r: Reg, v: u64) -> Option<&'static str> {
        match r {
            Reg::Addr(Pool::Data, i) if usize::from(i) < DR_SLOTS => None,
            Reg::Ctrl(Pool::Data, i) if usize::from(i) < DR_SLOTS && self.amd_addr_mask => None,
            Reg::Ctrl(Pool::Data, _) if !self.amd_addr_mask => {
                Some("no such register: x86 has no per-slot control register (AMD address masks are off on this CPU model)")
            }
            Reg::Status => None,
            Reg::Control => {
                if v >> 32 != 0 {
                    return Some("DR7 bits 63:32 are reserved and must be zero (#GP)");
                }
                for i in 0..DR_SLOTS {
                    let Dr7Slot {
                        enabled: en, rw, ..
                    } = dr7_slot(v, i);
                    let len_field = (v >> (18 + 4 * i)) & 3;
                    if en && rw == RW_IO {
                        return Some("DR7 RW=10 (I/O breakpoint) needs CR4.DE; not a memory breakpoint");
                    }
                    if en && rw == RW_EXEC && len_field != 0 {
                        return Some("DR7 execute breakpoint with LEN != 00 is undefined (SDM 18.2.5)");
                    }
                }
                None
            }
            _ => Some("no such register: x86-64 has DR0-DR3 (Addr(Data, 0..4)), DR6 (Status) and DR7 (Control)"),
        }
    }

    /// The range slot `i` matches: (start, len).
    fn range(&self, regs: &RegValues, i: usize) -> (u64, u64) {
        let Dr7Slot { rw, len, .. } = dr7_slot(regs.control, i);
        let len = if rw == RW_EXEC { 1 } else { len };
        let mut start = regs.addr[Pool::Data.idx()][i] & !(len - 1);
        let mut span = len;
        if self.amd_addr_mask {
            let mask = regs.ctrl[Pool::Data.idx()][i];
            if mask != 0 {
                start &= !mask;
                span = span.max(mask.wrapping_add(1));
            }
        }
        (start, span)
    }

    pub(super) fn armed(&self, regs: &RegValues) -> Vec<Armed> {
        (0..DR_SLOTS)
            .filter_map(|i| {
                let Dr7Slot {
                    enabled: en, rw, ..
                } = dr7_slot(regs.control, i);
                if !en {
                    return None;
                }
                let (addr, len) = self.range(regs, i);
                let access = match rw {
                    RW_EXEC => Access::Execute,
                    RW_WRITE => Access::Write,
                    RW_READ_WRITE => Access::ReadWrite,
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

    /// Bitmask of slots whose *condition* matches (enabled or not), and of
    /// those that are enabled.
    fn matches(&self, regs: &RegValues, insn: &Insn, exec: bool) -> (u64, u64) {
        let (mut cond, mut enabled) = (0, 0);
        for i in 0..DR_SLOTS {
            let Dr7Slot {
                enabled: en, rw, ..
            } = dr7_slot(regs.control, i);
            let (start, len) = self.range(regs, i);
            let hit = if exec {
                rw == RW_EXEC && overlap(insn.ip, 1, start, len)
            } else {
                match insn.mem {
                    Some(m) => {
                        let kind_ok = match rw {
                            RW_WRITE => m.kind == Access::Write,
                            RW_READ_WRITE => matches!(m.kind, Access::Read | Access::Write),
                            _ => false,
                        };
                        kind_ok && overlap(m.addr, m.len.max(1), start, len)
                    }
                    None => false,
                }
            };
            if hit {
                cond |= 1 << i;
                if en {
                    enabled |= 1 << i;
                }
            }
        }
        (cond, enabled)
    }

    fn b_bits(&self, cond: u64, enabled: u64) -> u64 {
        if self.report_disabled_matches {
            cond
        } else {
            enabled
        }
    }

    /// Instruction breakpoints fault before the instruction, unless RF is set.
    pub(super) fn before(
        &self,
        regs: &mut RegValues,
        flags: CpuFlags,
        insn: &Insn,
    ) -> Option<RawStatus> {
        if flags.resume_flag {
            return None;
        }
        let (cond, enabled) = self.matches(regs, insn, true);
        if enabled == 0 {
            return None;
        }
        regs.status |= self.b_bits(cond, enabled);
        Some(RawStatus::X86 {
            dr6: regs.read(Reg::Status),
            ip: insn.ip,
        })
    }

    /// Data breakpoints and TF trap after the instruction, RIP = next.
    pub(super) fn after(
        &self,
        regs: &mut RegValues,
        flags: CpuFlags,
        insn: &Insn,
    ) -> Option<RawStatus> {
        let (cond, enabled) = self.matches(regs, insn, false);
        if enabled == 0 && !flags.single_step {
            return None;
        }
        if enabled != 0 {
            regs.status |= self.b_bits(cond, enabled);
        }
        if flags.single_step {
            regs.status |= DR6_BS;
        }
        Some(RawStatus::X86 {
            dr6: regs.read(Reg::Status),
            ip: insn.next_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::{Hw, MemAccess, RegFile};
    use hwbreak_core::arch::DebugRegs;

    fn file() -> RegFile {
        RegFile::new(Hw::X86(X86Hw::default()))
    }

    fn data(ip: u64, addr: u64, len: u64, kind: Access) -> Insn {
        Insn {
            ip,
            next_ip: ip + 3,
            mem: Some(MemAccess { addr, len, kind }),
        }
    }

    fn run(
        f: &mut RegFile,
        flags: CpuFlags,
        insn: &Insn,
    ) -> (Option<RawStatus>, Option<RawStatus>) {
        let hw = *f.hw();
        let b = hw.before(f.values_mut(), flags, insn);
        let a = if b.is_none() {
            hw.after(f.values_mut(), flags, insn)
        } else {
            None
        };
        (b, a)
    }

    #[test]
    fn reset_values_read_like_hardware() {
        let f = file();
        assert_eq!(f.read(Reg::Status), 0xFFFF_0FF0);
        assert_eq!(f.read(Reg::Control), 0x400);
    }

    #[test]
    fn four_byte_write_slot_traps_after_with_b1_and_next_rip() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 1), 0x1000);
        // L1 (bit 2), RW1 = 01 (bits 20-21), LEN1 = 11 (bits 22-23).
        f.write(Reg::Control, (1 << 2) | (0b01 << 20) | (0b11 << 22));
        assert!(f.faults().is_empty());
        let (b, a) = run(
            &mut f,
            CpuFlags::default(),
            &data(0x40_0000, 0x1002, 1, Access::Write),
        );
        assert_eq!(b, None, "data breakpoints never fault before");
        let RawStatus::X86 { dr6, ip } = a.unwrap() else {
            panic!()
        };
        assert_eq!(ip, 0x40_0003, "RIP is the next instruction");
        assert_eq!(dr6 & 0xF, 0b0010);
        assert_eq!(dr6 & DR6_BS, 0);
    }

    #[test]
    fn write_slot_ignores_reads_and_rw_slot_sees_both() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 0), 0x2000);
        f.write(Reg::Control, 1 | (0b01 << 16) | (0b10 << 18)); // 8-byte write
        assert_eq!(
            run(
                &mut f,
                CpuFlags::default(),
                &data(0, 0x2004, 4, Access::Read)
            )
            .1,
            None
        );
        f.write(Reg::Control, 1 | (0b11 << 16) | (0b10 << 18)); // 8-byte rw
        assert!(run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x2007, 1, Access::Read)
        )
        .1
        .is_some());
    }

    #[test]
    fn any_overlap_matches_and_adjacent_bytes_do_not() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 0), 0x1004);
        f.write(Reg::Control, 1 | (0b01 << 16) | (0b11 << 18)); // 4 bytes at 0x1004
        let flags = CpuFlags::default();
        assert!(run(&mut f, flags, &data(0, 0x1000, 8, Access::Write))
            .1
            .is_some());
        assert!(run(&mut f, flags, &data(0, 0x1007, 2, Access::Write))
            .1
            .is_some());
        assert!(run(&mut f, flags, &data(0, 0x1000, 4, Access::Write))
            .1
            .is_none());
        assert!(run(&mut f, flags, &data(0, 0x1008, 1, Access::Write))
            .1
            .is_none());
    }

    #[test]
    fn unaligned_dr_address_is_masked_by_length() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 0), 0x1003);
        f.write(Reg::Control, 1 | (0b01 << 16) | (0b11 << 18)); // 4 bytes
        assert_eq!(f.armed()[0].addr, 0x1000);
        assert!(run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x1000, 1, Access::Write)
        )
        .1
        .is_some());
    }

    #[test]
    fn len_encoding_10_is_eight_bytes_and_11_is_four() {
        assert_eq!(len_bytes(0b00), 1);
        assert_eq!(len_bytes(0b01), 2);
        assert_eq!(len_bytes(0b11), 4);
        assert_eq!(len_bytes(0b10), 8);
    }

    #[test]
    fn execute_slot_faults_before_unless_rf() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 3), 0x40_1000);
        f.write(Reg::Control, 1 << 6); // L3, RW3=00, LEN3=00
        let insn = Insn {
            ip: 0x40_1000,
            next_ip: 0x40_1004,
            mem: None,
        };
        let (b, a) = run(&mut f, CpuFlags::default(), &insn);
        let RawStatus::X86 { dr6, ip } = b.unwrap() else {
            panic!()
        };
        assert_eq!((dr6 & 0xF, ip), (0b1000, 0x40_1000));
        assert_eq!(a, None);
        let rf = CpuFlags {
            resume_flag: true,
            ..Default::default()
        };
        assert_eq!(run(&mut f, rf, &insn), (None, None));
    }

    #[test]
    fn dr6_is_sticky_until_software_clears_it() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 0), 0x3000);
        f.write(Reg::Control, 1 | (0b01 << 16));
        run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x3000, 1, Access::Write),
        );
        assert_eq!(f.read(Reg::Status) & 0xF, 1);
        run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x9000, 1, Access::Write),
        );
        assert_eq!(f.read(Reg::Status) & 0xF, 1, "still set");
        let hw = *f.hw();
        let raw = hw.kernel_entry(f.values_mut(), RawStatus::X86 { dr6: 0, ip: 0 });
        assert_eq!(raw, RawStatus::X86 { dr6: 1, ip: 0 }, "positive polarity");
        assert_eq!(f.read(Reg::Status), DR6_FIXED_1);
    }

    #[test]
    fn single_step_sets_bs_together_with_data_hit() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 2), 0x5000);
        f.write(Reg::Control, (1 << 4) | (0b11 << 24)); // L2, RW2 = rw, 1 byte
        let ss = CpuFlags {
            single_step: true,
            ..Default::default()
        };
        let RawStatus::X86 { dr6, .. } = run(&mut f, ss, &data(0, 0x5000, 1, Access::Read))
            .1
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(dr6 & (DR6_BS | 0xF), DR6_BS | 0b100);
        let RawStatus::X86 { dr6, .. } = run(&mut f, ss, &data(0, 0x9000, 1, Access::Read))
            .1
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(dr6 & DR6_BS, DR6_BS);
    }

    #[test]
    fn disabled_matching_slot_reports_b_bit_alongside_enabled_hit() {
        let mut f = file();
        f.write(Reg::Addr(Pool::Data, 0), 0x6000);
        f.write(Reg::Addr(Pool::Data, 1), 0x6000);
        // slot 0 enabled write, slot 1 disabled but RW1=write too.
        f.write(Reg::Control, 1 | (0b01 << 16) | (0b01 << 20));
        let RawStatus::X86 { dr6, .. } = run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x6000, 1, Access::Write),
        )
        .1
        .unwrap() else {
            panic!()
        };
        assert_eq!(dr6 & 0xF, 0b11);
        // Disabled alone never traps.
        f.write(Reg::Control, 0b01 << 20);
        assert_eq!(
            run(
                &mut f,
                CpuFlags::default(),
                &data(0, 0x6000, 1, Access::Write)
            ),
            (None, None)
        );
    }

    #[test]
    fn reserved_encodings_and_missing_registers_are_faults() {
        let mut f = file();
        f.write(Reg::Control, 1 | (0b10 << 16));
        f.write(Reg::Control, 1 | (0b11 << 18)); // exec with LEN=4
        f.write(Reg::Addr(Pool::Data, 4), 1);
        f.write(Reg::Addr(Pool::Inst, 0), 1);
        f.write(Reg::Ctrl(Pool::Data, 0), 0xff);
        assert_eq!(f.faults().len(), 5);
    }

    #[test]
    fn amd_address_mask_widens_the_match() {
        let mut f = RegFile::new(Hw::X86(X86Hw {
            amd_addr_mask: true,
            ..Default::default()
        }));
        f.write(Reg::Ctrl(Pool::Data, 0), 0xff); // ignore low 8 bits
        f.write(Reg::Addr(Pool::Data, 0), 0x7000);
        f.write(Reg::Control, 1 | (0b01 << 16));
        assert!(f.faults().is_empty());
        assert!(run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x70fe, 1, Access::Write)
        )
        .1
        .is_some());
        assert!(run(
            &mut f,
            CpuFlags::default(),
            &data(0, 0x7100, 1, Access::Write)
        )
        .1
        .is_none());
    }
}
