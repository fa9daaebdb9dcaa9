//! x86-64 backend: the DR7 encoding rules, install/uninstall order, and DR6 decode.

mod arch_support;

use arch_support::RecordingRegs;
use hwbreak_core::arch::x86_64::{self, X86_64};
use hwbreak_core::arch::{
    Arch, ArchBp, ArchError, DebugRegs, Decoded, Pool, RawStatus, Reg, Trigger,
};
use hwbreak_core::attr::{Access, BpAttr};

const BASE: u64 = 0x5555_0000_1000;

/// What the matrix expects for one (len, access, offset) case, written as a
/// table from the Intel SDM, independent of the backend's code.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Accepted; DR7 for slot 0 must be exactly this.
    Dr7(u64),
    ReadOnly,
    BadLength,
    Unaligned(u64),
}

fn expected(len: u64, access: Access, off: u64) -> Expect {
    // DR7 LEN encoding for 1/2/4/8 bytes, SDM vol. 3 table 17-2 ordering.
    let len_enc = |l: u64| match l {
        1 => Some(0b00),
        2 => Some(0b01),
        4 => Some(0b11),
        8 => Some(0b10),
        _ => None,
    };
    match access {
        Access::Read => Expect::ReadOnly,
        Access::Execute => match len {
            // RW=00, LEN=00, L0.
            1 | 8 => Expect::Dr7(0x0000_0001),
            _ => Expect::BadLength,
        },
        Access::Write | Access::ReadWrite => {
            let rw = if access == Access::Write { 0b01 } else { 0b11 };
            match len_enc(len) {
                None => Expect::BadLength,
                Some(_) if !off.is_multiple_of(len) => Expect::Unaligned(len),
                Some(enc) => Expect::Dr7(1 | ((rw | enc << 2) << 16)),
            }
        }
    }
}

fn install_slot0(arch: &X86_64, bp: &ArchBp) -> u64 {
    let mut regs = RecordingRegs::new();
    arch.install(&mut regs, 0, bp);
    regs.read(Reg::Control)
}

#[test]
fn every_length_access_and_alignment_is_accepted_exactly_per_dr7_rules() {
    let arch = X86_64::default();
    let mut accepted = 0;
    for len in [0u64, 1, 2, 3, 4, 5, 8, 16] {
        for access in [
            Access::Read,
            Access::Write,
            Access::ReadWrite,
            Access::Execute,
        ] {
            for off in 0..=8u64 {
                let addr = BASE + off;
                let attr = BpAttr::new(addr, len, access);
                let got = arch.parse(&attr);
                let want = expected(len, access, off);
                let case = format!("len={len} access={access:?} off={off}: {got:?}");
                match (want, got) {
                    (Expect::Dr7(dr7), Ok(bp)) => {
                        accepted += 1;
                        assert_eq!(install_slot0(&arch, &bp), dr7, "{case}");
                        assert_eq!(bp.pool, Pool::Data, "{case}");
                        assert_eq!(bp.req_addr, addr, "{case}");
                        assert_eq!(bp.hw_addr, addr, "{case}");
                        if access == Access::Execute {
                            assert_eq!((bp.req_len, bp.hw_len), (1, 1), "{case}");
                            assert_eq!(bp.trigger, Trigger::Before, "{case}");
                        } else {
                            assert_eq!((bp.req_len, bp.hw_len), (len, len), "{case}");
                            assert_eq!(bp.trigger, Trigger::After, "{case}");
                        }
                    }
                    (Expect::ReadOnly, Err(ArchError::BadAccess { access: a, .. })) => {
                        assert_eq!(a, Access::Read, "{case}")
                    }
                    (Expect::BadLength, Err(ArchError::BadLength { len: l, .. })) => {
                        assert_eq!(l, len, "{case}")
                    }
                    (Expect::Unaligned(al), Err(ArchError::Unaligned { align, addr: a, .. })) => {
                        assert_eq!((align, a), (al, addr), "{case}")
                    }
                    (want, _) => panic!("{case}, expected {want:?}"),
                }
            }
        }
    }
    // 1/2/4/8 × w/rw at their aligned offsets (9,5,3,2 offsets of 0..=8) + exec 1|8 × 9.
    assert_eq!(accepted, 2 * (9 + 5 + 3 + 2) + 2 * 9);
}

#[test]
fn dr7_fields_land_at_each_slots_bit_positions() {
    let arch = X86_64::default();
    // slot, attr, expected DR7 with only that slot installed.
    let cases = [
        (0, BpAttr::write(BASE, 4), 0x000d_0001u64), // L0, RW0=01, LEN0=11
        (1, BpAttr::read_write(BASE, 2), 0x0070_0004), // L1, RW1=11, LEN1=01
        (2, BpAttr::exec(BASE + 3), 0x0000_0010),    // L2, RW2=00, LEN2=00
        (3, BpAttr::read_write(BASE, 8), 0xb000_0040), // L3, RW3=11, LEN3=10
        (3, BpAttr::write(BASE, 1), 0x1000_0040),    // L3, RW3=01, LEN3=00
    ];
    for (slot, attr, dr7) in cases {
        let bp = arch.parse(&attr).unwrap();
        let mut regs = RecordingRegs::new();
        arch.install(&mut regs, slot, &bp);
        assert_eq!(regs.read(Reg::Control), dr7, "slot {slot} {attr:?}");
        assert_eq!(regs.read(Reg::Addr(Pool::Data, slot as u8)), attr.addr);
    }
}

#[test]
fn install_writes_the_address_before_dr7_and_keeps_other_slots() {
    let arch = X86_64::default();
    let mut regs = RecordingRegs::new();
    let a = arch.parse(&BpAttr::write(BASE, 8)).unwrap();
    let b = arch.parse(&BpAttr::read_write(BASE + 0x40, 4)).unwrap();
    arch.install(&mut regs, 0, &a);
    regs.clear_log();
    arch.install(&mut regs, 2, &b);
    assert_eq!(
        regs.written(),
        vec![Reg::Addr(Pool::Data, 2), Reg::Control],
        "DRn must be written before DR7 enables it"
    );
    let dr7 = regs.read(Reg::Control);
    assert_eq!(dr7, x86_64::dr7_bits(0, &a) | x86_64::dr7_bits(2, &b));
    assert_eq!(dr7, 0x0f09_0011); // L0 RW0=01 LEN0=10, L2 RW2=11 LEN2=11
}

#[test]
fn uninstall_clears_dr7_before_the_address_and_keeps_other_slots() {
    let arch = X86_64::default();
    let mut regs = RecordingRegs::new();
    let a = arch.parse(&BpAttr::write(BASE, 8)).unwrap();
    let b = arch.parse(&BpAttr::read_write(BASE + 0x40, 4)).unwrap();
    arch.install(&mut regs, 0, &a);
    arch.install(&mut regs, 2, &b);
    regs.clear_log();
    arch.uninstall(&mut regs, Pool::Data, 2);
    assert_eq!(
        regs.written(),
        vec![Reg::Control, Reg::Addr(Pool::Data, 2)],
        "DR7 must disable the slot before DRn is cleared"
    );
    assert_eq!(regs.read(Reg::Control), x86_64::dr7_bits(0, &a));
    assert_eq!(regs.read(Reg::Addr(Pool::Data, 2)), 0);
    assert_eq!(regs.read(Reg::Addr(Pool::Data, 0)), BASE);
}

#[test]
fn install_over_a_used_slot_replaces_its_whole_dr7_field() {
    let arch = X86_64::default();
    let mut regs = RecordingRegs::new();
    arch.install(
        &mut regs,
        1,
        &arch.parse(&BpAttr::read_write(BASE, 8)).unwrap(),
    );
    // Leftover G1 from someone else must go too.
    let dr7 = regs.read(Reg::Control) | x86_64::dr7_global_enable(1);
    regs.write(Reg::Control, dr7);
    let x = arch.parse(&BpAttr::exec(BASE + 1)).unwrap();
    arch.install(&mut regs, 1, &x);
    assert_eq!(regs.read(Reg::Control), x86_64::dr7_local_enable(1));
}

fn all_slots_enabled() -> RecordingRegs {
    let arch = X86_64::default();
    let mut regs = RecordingRegs::new();
    for slot in 0..4 {
        let bp = arch
            .parse(&BpAttr::write(BASE + 8 * slot as u64, 8))
            .unwrap();
        arch.install(&mut regs, slot, &bp);
    }
    regs
}

fn decode(arch: &X86_64, regs: &RecordingRegs, dr6: u64) -> Decoded {
    arch.decode(&RawStatus::X86 { dr6, ip: 0x40_1000 }, regs, &|_, _| None)
}

#[test]
fn dr6_b0_to_b3_decode_to_their_slots() {
    let arch = X86_64::default();
    let regs = all_slots_enabled();
    for slot in 0..4 {
        let d = decode(&arch, &regs, 1 << slot);
        assert_eq!(d.hits, [0, 1 << slot], "B{slot}");
        assert!(d.hit(Pool::Data, slot));
        assert!(!d.step);
        assert_eq!(d.addr, None, "x86 does not report the data address");
        assert_eq!(d.ip, 0x40_1000);
    }
    let d = decode(&arch, &regs, 0b1010);
    assert_eq!(d.hits, [0, 0b1010], "two comparators matched one access");
}

#[test]
fn dr6_bs_decodes_as_a_completed_single_step() {
    let arch = X86_64::default();
    let regs = all_slots_enabled();
    let d = decode(&arch, &regs, x86_64::DR6_BS);
    assert!(d.step);
    assert_eq!(d.hits, [0, 0]);
    let d = decode(&arch, &regs, x86_64::DR6_BS | 0b0100);
    assert!(d.step && d.hit(Pool::Data, 2));
    // Reserved-1 bits of DR6 (0xffff0ff0 on real hardware) are not hits.
    let d = decode(&arch, &regs, 0xffff_0ff0);
    assert!(d.is_empty());
}

#[test]
fn dr6_b_bits_of_slots_disabled_in_dr7_are_ignored() {
    // SDM 17.2.3: Bn may be set for a breakpoint not enabled in DR7.
    let arch = X86_64::default();
    let mut regs = all_slots_enabled();
    arch.uninstall(&mut regs, Pool::Data, 1);
    let d = decode(&arch, &regs, 0b0011);
    assert_eq!(d.hits, [0, 0b0001]);
}

#[test]
fn decode_ignores_other_arches_status() {
    let arch = X86_64::default();
    let regs = all_slots_enabled();
    let d = arch.decode(
        &RawStatus::Arm64 {
            esr: 0x35 << 26,
            far: BASE,
            pc: 0,
        },
        &regs,
        &|_, _| None,
    );
    assert!(d.is_empty());
}

#[test]
fn read_only_is_refused_with_a_hint_to_use_rw() {
    let err = X86_64::default()
        .parse(&BpAttr::new(BASE, 4, Access::Read))
        .unwrap_err();
    assert!(matches!(
        err,
        ArchError::BadAccess {
            access: Access::Read,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("no read-only watchpoint"), "{msg}");
    assert!(msg.contains("`rw`"), "{msg}");
}

#[test]
fn unaligned_and_bad_length_errors_name_the_rule() {
    let arch = X86_64::default();
    let msg = arch
        .parse(&BpAttr::write(0x1002, 4))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not aligned to 4 bytes"), "{msg}");
    let msg = arch
        .parse(&BpAttr::write(0x1000, 3))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1, 2, 4 or 8 bytes"), "{msg}");
    let msg = arch
        .parse(&BpAttr::write(0x1000, 0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("length 0"), "{msg}");
    let msg = arch
        .parse(&BpAttr::new(0x1000, 4, Access::Execute))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("execute breakpoint"), "{msg}");
}

#[test]
fn a_range_that_wraps_the_address_space_is_refused() {
    let arch = X86_64::default();
    for attr in [
        BpAttr::read_write(u64::MAX, 2).privileged(),
        BpAttr::write(u64::MAX - 2, 8).privileged(),
    ] {
        let err = arch.parse(&attr).unwrap_err();
        assert_eq!(
            err,
            ArchError::Wraps {
                addr: attr.addr,
                len: attr.len
            }
        );
        assert!(err.to_string().contains("wraps"), "{err}");
    }
    // The last aligned doubleword does not wrap.
    assert!(arch
        .parse(&BpAttr::write(u64::MAX - 7, 8).privileged())
        .is_ok());
}

#[test]
fn kernel_half_and_non_canonical_addresses_need_privileged() {
    let arch = X86_64::default();
    for addr in [
        0xffff_8000_0000_0000u64, // first kernel-half byte
        0xffff_ffff_8100_0000,    // kernel text
        0x0000_8000_0000_0000,    // first non-canonical byte
        0x1234_0000_0000_0000,    // non-canonical
    ] {
        let err = arch.parse(&BpAttr::write(addr, 8)).unwrap_err();
        assert_eq!(err, ArchError::KernelAddress { addr });
        assert!(err.to_string().contains("privileged"), "{err}");
        assert!(arch.parse(&BpAttr::write(addr, 8).privileged()).is_ok());
        assert_eq!(
            arch.parse(&BpAttr::exec(addr)).unwrap_err(),
            ArchError::KernelAddress { addr }
        );
        assert!(arch.parse(&BpAttr::exec(addr).privileged()).is_ok());
    }
    // The top user doubleword ends exactly at the boundary: fine.
    assert!(arch.parse(&BpAttr::write(0x0000_7fff_ffff_fff8, 8)).is_ok());
    // An execute breakpoint on the very last byte does not overflow the check.
    assert!(arch.parse(&BpAttr::exec(u64::MAX)).is_err());
    assert!(arch.parse(&BpAttr::exec(u64::MAX).privileged()).is_ok());
}

#[test]
fn execute_length_8_is_the_kernel_convention_and_normalises_to_1() {
    let arch = X86_64::default();
    let a = arch
        .parse(&BpAttr::new(BASE + 5, 8, Access::Execute))
        .unwrap();
    let b = arch.parse(&BpAttr::exec(BASE + 5)).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.hw_len, a.req_len), (1, 1));
    for len in [0, 2, 4, 16] {
        assert!(matches!(
            arch.parse(&BpAttr::new(BASE, len, Access::Execute)),
            Err(ArchError::BadLength { .. })
        ));
    }
}

#[test]
fn amd_address_mask_ranges_only_when_the_model_has_bpext() {
    let intel = X86_64::default();
    let amd = X86_64::with_amd_addr_mask();
    let attr = BpAttr::read_write(0x7000_0000_0100, 256);

    let err = intel.parse(&attr).unwrap_err();
    assert!(matches!(err, ArchError::BadLength { len: 256, .. }));
    assert!(err.to_string().contains("AMD address-mask"), "{err}");

    let bp = amd.parse(&attr).unwrap();
    assert_eq!((bp.hw_addr, bp.hw_len), (attr.addr, 256));
    assert_eq!((bp.req_addr, bp.req_len), (attr.addr, 256));
    let mut regs = RecordingRegs::new();
    amd.install(&mut regs, 1, &bp);
    assert_eq!(
        regs.log,
        vec![
            (Reg::Addr(Pool::Data, 1), attr.addr),
            (Reg::Ctrl(Pool::Data, 1), 255),
            // L1, RW1=11, LEN1=00: the mask, not LEN, gives the size.
            (Reg::Control, 0x0030_0004),
        ]
    );
    regs.clear_log();
    amd.uninstall(&mut regs, Pool::Data, 1);
    assert_eq!(
        regs.log,
        vec![
            (Reg::Control, 0),
            (Reg::Addr(Pool::Data, 1), 0),
            (Reg::Ctrl(Pool::Data, 1), 0),
        ]
    );
}

#[test]
fn amd_address_mask_needs_power_of_two_alignment_and_data_access() {
    let amd = X86_64::with_amd_addr_mask();
    assert!(matches!(
        amd.parse(&BpAttr::write(0x1000 + 8, 16)),
        Err(ArchError::Unaligned { align: 16, .. })
    ));
    let err = amd.parse(&BpAttr::write(0x1000, 24)).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
    assert!(matches!(
        amd.parse(&BpAttr::write(0, 1 << 33)),
        Err(ArchError::BadLength { .. })
    ));
    assert!(amd.parse(&BpAttr::write(0, 1 << 32)).is_ok());
    assert!(matches!(
        amd.parse(&BpAttr::new(0x1000, 16, Access::Execute)),
        Err(ArchError::BadLength { .. })
    ));
    // A normal 8-byte watch on an AMD model still programs mask 0.
    let mut regs = RecordingRegs::new();
    regs.write(Reg::Ctrl(Pool::Data, 0), 0xff);
    amd.install(&mut regs, 0, &amd.parse(&BpAttr::write(0x1000, 8)).unwrap());
    assert_eq!(regs.read(Reg::Ctrl(Pool::Data, 0)), 0);
}

#[test]
fn intel_model_never_touches_the_mask_registers() {
    let arch = X86_64::default();
    let mut regs = RecordingRegs::new();
    arch.install(
        &mut regs,
        3,
        &arch.parse(&BpAttr::write(0x1000, 8)).unwrap(),
    );
    arch.uninstall(&mut regs, Pool::Data, 3);
    assert!(regs.log.iter().all(|(r, _)| !matches!(r, Reg::Ctrl(..))));
}

#[test]
fn four_shared_slots_and_no_separate_instruction_pool() {
    let arch = X86_64::default();
    assert_eq!(arch.slots(Pool::Data), 4);
    assert_eq!(arch.slots(Pool::Inst), 0);
    assert_eq!(arch.parse(&BpAttr::exec(BASE)).unwrap().pool, Pool::Data);
    assert_eq!(arch.name(), "x86-64");
}

#[test]
fn execute_hits_resume_with_rf_and_nothing_needs_step_over() {
    let arch = X86_64::default();
    let x = arch.parse(&BpAttr::exec(BASE)).unwrap();
    let w = arch.parse(&BpAttr::write(BASE, 8)).unwrap();
    assert!(arch.resume_flags(&x).resume_flag);
    assert!(!arch.resume_flags(&w).resume_flag);
    assert!(
        !arch.needs_step_over(&x),
        "RF, not step-over, gets past an execute fault"
    );
    assert!(
        !arch.needs_step_over(&w),
        "data traps come after the access"
    );
    assert_eq!(x.trigger, Trigger::Before);
    assert_eq!(w.trigger, Trigger::After);
}
