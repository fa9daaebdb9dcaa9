//! arm64 backend: BAS byte-select rules, the kernel selftest's size × offset
//! matrix, inexact-FAR matching, slot counts and privilege.

mod arch_support;

use arch_support::RecordingRegs;
use hwbreak_core::arch::aarch64::{self, Aarch64};
use hwbreak_core::arch::{Arch, ArchBp, ArchError, DebugRegs, Decoded, Pool, RawStatus, Reg};
use hwbreak_core::attr::{Access, BpAttr};

const WINDOW: u64 = 0x0000_aaaa_0000_1000;

/// ESR for a watchpoint exception from EL0; `write` sets WnR.
fn esr_watch(write: bool) -> u64 {
    (0x34 << 26) | if write { 1 << 6 } else { 0 }
}

/// The bytes a programmed watchpoint slot matches, read back from WVR/WCR
/// the way the hardware reads them.
fn watched_bytes(regs: &RecordingRegs, slot: u8) -> Vec<u64> {
    let wvr = regs.read(Reg::Addr(Pool::Data, slot));
    let wcr = regs.read(Reg::Ctrl(Pool::Data, slot));
    if wcr & 1 == 0 {
        return vec![];
    }
    let bas = (wcr >> 5) & 0xff;
    (0..8)
        .filter(|i| bas & (1 << i) != 0)
        .map(|i| wvr + i)
        .collect()
}

#[test]
fn every_size_1_to_8_at_every_offset_0_to_7_is_accepted_iff_it_fits_the_window() {
    let arch = Aarch64::default();
    let mut accepted = 0;
    for size in 1..=8u64 {
        for offset in 0..8u64 {
            for (access, lsc) in [
                (Access::Read, 0b01u64),
                (Access::Write, 0b10),
                (Access::ReadWrite, 0b11),
            ] {
                let attr = BpAttr::new(WINDOW + offset, size, access);
                let case = format!("size={size} offset={offset} {access:?}");
                match arch.parse(&attr) {
                    Ok(bp) => {
                        assert!(offset + size <= 8, "{case} accepted but crosses the window");
                        accepted += 1;
                        let mut regs = RecordingRegs::new();
                        arch.install(&mut regs, 0, &bp);
                        let bas = ((1u64 << size) - 1) << offset;
                        assert_eq!(regs.read(Reg::Addr(Pool::Data, 0)), WINDOW, "{case}: WVR");
                        // BAS | LSC | PAC=EL0 (0b10) | E.
                        let wcr = (bas << 5) | (lsc << 3) | (0b10 << 1) | 1;
                        assert_eq!(regs.read(Reg::Ctrl(Pool::Data, 0)), wcr, "{case}: WCR");
                        let want: Vec<u64> = (offset..offset + size).map(|i| WINDOW + i).collect();
                        assert_eq!(watched_bytes(&regs, 0), want, "{case}");
                        assert_eq!((bp.req_addr, bp.req_len), (attr.addr, size), "{case}");
                        assert_eq!((bp.hw_addr, bp.hw_len), (attr.addr, size), "{case}");
                        assert_eq!(bp.pool, Pool::Data);
                    }
                    Err(e) => {
                        assert!(offset + size > 8, "{case} refused but fits: {e}");
                        assert!(
                            matches!(e, ArchError::BadRange { .. }),
                            "{case}: wrong error {e:?}"
                        );
                        assert!(e.to_string().contains("8-byte-aligned doubleword"), "{e}");
                    }
                }
            }
        }
    }
    // sum over size of (9 - size) fitting offsets, × 3 access kinds.
    assert_eq!(accepted, 3 * (8 + 7 + 6 + 5 + 4 + 3 + 2 + 1));
}

/// Port of tools/testing/selftests/breakpoints/breakpoint_test_arm64.c: a
/// write of `size` bytes at `var + 32 + wr` and a write watchpoint of
/// `min(size, 8)` bytes at `var + 32 + wp`; the watchpoint must fire iff
/// `wr == wp`. Firing is judged from the programmed WVR/BAS (what the
/// hardware compares), and each hit is decoded with the access start as
/// FAR, which for 16- and 32-byte stores lies outside the watched bytes.
#[test]
fn kselftest_breakpoint_test_arm64_write_matrix() {
    let arch = Aarch64::default();
    let var = 0x0000_ffff_8000_0040u64; // `var[96]` aligned to 32
    let mut cases = 0;
    let run = |wr_size: u64, wp_size: u64, wr: i64, wp: i64| -> bool {
        let wp_addr = (var as i64 + 32 + wp) as u64;
        let wr_addr = (var as i64 + 32 + wr) as u64;
        let bp = arch
            .parse(&BpAttr::write(wp_addr, wp_size))
            .unwrap_or_else(|e| panic!("selftest watchpoint refused: {e}"));
        let mut regs = RecordingRegs::new();
        arch.install(&mut regs, 0, &bp);
        let fired = watched_bytes(&regs, 0)
            .iter()
            .any(|b| (wr_addr..wr_addr + wr_size).contains(b));
        if fired {
            let installed = |pool: Pool, i: usize| (pool == Pool::Data && i == 0).then_some(bp);
            let status = RawStatus::Arm64 {
                esr: esr_watch(true),
                far: wr_addr,
                pc: 0x40_0000,
            };
            let d = arch.decode(&status, &regs, &installed);
            assert!(
                d.hit(Pool::Data, 0),
                "size {wr_size} wr {wr} wp {wp}: decode missed it"
            );
        }
        fired
    };
    let mut size = 1u64;
    while size <= 32 {
        let mut wr = 0i64;
        while wr <= 32 {
            let mut wp = wr - size as i64;
            while wp <= wr + size as i64 {
                let result = run(size, size.min(8), wr, wp);
                assert_eq!(
                    result,
                    wr == wp,
                    "size = {size} write offset = {wr} watchpoint offset = {wp}"
                );
                cases += 1;
                wp += size as i64;
            }
            wr += size as i64;
        }
        size *= 2;
    }
    size = 1;
    while size <= 32 {
        assert!(
            run(size, 8, -(size as i64), -8),
            "size = {size} write offset = -{size} watchpoint offset = -8"
        );
        cases += 1;
        size *= 2;
    }
    assert_eq!(cases, 213, "the selftest's plan has 213 cases");
}

fn two_watchpoints() -> (Aarch64, RecordingRegs, [ArchBp; 2]) {
    let arch = Aarch64::default();
    let mut regs = RecordingRegs::new();
    // Slot 0: bytes 4..8 of the window at 0x1000. Slot 1: the doubleword at 0x1010.
    let a = arch.parse(&BpAttr::write(0x1004, 4)).unwrap();
    let b = arch.parse(&BpAttr::read_write(0x1010, 8)).unwrap();
    arch.install(&mut regs, 0, &a);
    arch.install(&mut regs, 1, &b);
    (arch, regs, [a, b])
}

fn decode_watch(
    arch: &Aarch64,
    regs: &RecordingRegs,
    bps: &[ArchBp],
    write: bool,
    far: u64,
) -> Decoded {
    let installed = |pool: Pool, i: usize| {
        if pool == Pool::Data {
            bps.get(i).copied()
        } else {
            None
        }
    };
    arch.decode(
        &RawStatus::Arm64 {
            esr: esr_watch(write),
            far,
            pc: 0x40_0040,
        },
        regs,
        &installed,
    )
}

#[test]
fn exact_far_hits_the_watchpoint_that_contains_it() {
    let (arch, regs, bps) = two_watchpoints();
    let d = decode_watch(&arch, &regs, &bps, true, 0x1005);
    assert_eq!(d.hits, [0, 0b01]);
    assert_eq!(d.addr, Some(0x1005));
    assert_eq!(d.ip, 0x40_0040);
    let d = decode_watch(&arch, &regs, &bps, true, 0x1017);
    assert_eq!(d.hits, [0, 0b10]);
}

#[test]
fn inexact_far_is_matched_to_the_nearest_watchpoint_without_an_address() {
    let (arch, regs, bps) = two_watchpoints();
    // An 8-byte store at 0x1000 touches bytes 4..8; FAR reports the start.
    let d = decode_watch(&arch, &regs, &bps, true, 0x1000);
    assert_eq!(d.hits, [0, 0b01]);
    assert_eq!(
        d.addr, None,
        "the FAR is outside the watched bytes: no address to filter on"
    );
    // 0x100c: 5 bytes above slot 0's last byte (0x1007), 4 below slot 1 (0x1010).
    let d = decode_watch(&arch, &regs, &bps, true, 0x100c);
    assert_eq!(d.hits, [0, 0b10]);
    // 0x100b: 4 and 5: slot 0 is nearer.
    let d = decode_watch(&arch, &regs, &bps, true, 0x100b);
    assert_eq!(d.hits, [0, 0b01]);
}

#[test]
fn nearest_match_ties_go_to_the_lower_slot_like_the_kernel() {
    let arch = Aarch64::default();
    let mut regs = RecordingRegs::new();
    let a = arch.parse(&BpAttr::write(0x2000, 1)).unwrap();
    let b = arch.parse(&BpAttr::write(0x2004, 1)).unwrap();
    arch.install(&mut regs, 2, &a);
    arch.install(&mut regs, 3, &b);
    let bps = [None, None, Some(a), Some(b)];
    let installed = |pool: Pool, i: usize| if pool == Pool::Data { bps[i] } else { None };
    let d = arch.decode(
        &RawStatus::Arm64 {
            esr: esr_watch(true),
            far: 0x2002,
            pc: 0,
        },
        &regs,
        &installed,
    );
    assert_eq!(d.hits, [0, 1 << 2]);
}

#[test]
fn overlapping_watchpoints_both_hit_on_an_exact_far() {
    let arch = Aarch64::default();
    let mut regs = RecordingRegs::new();
    let a = arch.parse(&BpAttr::write(0x3000, 8)).unwrap();
    let b = arch.parse(&BpAttr::write(0x3002, 2)).unwrap();
    arch.install(&mut regs, 0, &a);
    arch.install(&mut regs, 1, &b);
    let d = decode_watch(&arch, &regs, &[a, b], true, 0x3003);
    assert_eq!(d.hits, [0, 0b11]);
}

#[test]
fn watchpoint_decode_respects_load_store_control() {
    let (arch, regs, bps) = two_watchpoints();
    // A load at 0x1005: slot 0 watches stores only, so only slot 1 (rw) can take it.
    let d = decode_watch(&arch, &regs, &bps, false, 0x1005);
    assert_eq!(d.hits, [0, 0b10]);
    assert_eq!(d.addr, None);
    // With only the store watchpoint installed, a load matches nothing.
    let d = decode_watch(&arch, &regs, &bps[..1], false, 0x1005);
    assert!(d.is_empty());
}

#[test]
fn decode_skips_empty_and_disabled_slots() {
    let (arch, mut regs, bps) = two_watchpoints();
    // Slot 1 not installed according to the caller.
    let d = decode_watch(&arch, &regs, &bps[..1], true, 0x1012);
    assert_eq!(d.hits, [0, 0b01], "only slot 0 is a candidate");
    // Slot 0 disabled in hardware (E=0), as during step-over.
    let wcr = regs.read(Reg::Ctrl(Pool::Data, 0));
    regs.write(Reg::Ctrl(Pool::Data, 0), wcr & !1);
    let d = decode_watch(&arch, &regs, &bps, true, 0x1005);
    assert_eq!(d.hits, [0, 0b10]);
}

#[test]
fn tagged_far_is_untagged_before_matching() {
    let (arch, regs, bps) = two_watchpoints();
    let d = decode_watch(&arch, &regs, &bps, true, 0x0a00_0000_0000_1005);
    assert_eq!(d.hits, [0, 0b01]);
    assert_eq!(d.addr, Some(0x1005));
}

#[test]
fn breakpoint_exception_matches_bvr_against_the_pc() {
    let arch = Aarch64::default();
    let mut regs = RecordingRegs::new();
    let bp = arch.parse(&BpAttr::exec(0x40_1000)).unwrap();
    assert_eq!(bp.pool, Pool::Inst);
    assert_eq!((bp.hw_addr, bp.hw_len), (0x40_1000, 4));
    arch.install(&mut regs, 3, &bp);
    assert_eq!(regs.read(Reg::Addr(Pool::Inst, 3)), 0x40_1000);
    // BAS=0b1111, PAC=EL0, E.
    assert_eq!(
        regs.read(Reg::Ctrl(Pool::Inst, 3)),
        (0b1111 << 5) | (0b10 << 1) | 1
    );
    let installed = |pool: Pool, i: usize| (pool == Pool::Inst && i == 3).then_some(bp);
    for ec in [0x30u64, 0x31] {
        let d = arch.decode(
            &RawStatus::Arm64 {
                esr: ec << 26,
                far: 0,
                pc: 0x40_1000,
            },
            &regs,
            &installed,
        );
        assert_eq!(d.hits, [1 << 3, 0], "EC {ec:#x}");
        assert_eq!(d.addr, None);
        let d = arch.decode(
            &RawStatus::Arm64 {
                esr: ec << 26,
                far: 0,
                pc: 0x40_1004,
            },
            &regs,
            &installed,
        );
        assert!(d.is_empty(), "another PC is not this breakpoint");
    }
}

#[test]
fn software_step_exception_decodes_as_step() {
    let arch = Aarch64::default();
    let regs = RecordingRegs::new();
    for ec in [0x32u64, 0x33] {
        let d = arch.decode(
            &RawStatus::Arm64 {
                esr: ec << 26,
                far: 0,
                pc: 4,
            },
            &regs,
            &|_, _| None,
        );
        assert!(d.step && d.hits == [0, 0], "EC {ec:#x}");
    }
    // BRK (0x3c) and x86 status are not ours.
    let d = arch.decode(
        &RawStatus::Arm64 {
            esr: 0x3c << 26,
            far: 0,
            pc: 4,
        },
        &regs,
        &|_, _| None,
    );
    assert!(d.is_empty());
    let d = arch.decode(&RawStatus::X86 { dr6: 1, ip: 0 }, &regs, &|_, _| None);
    assert!(d.is_empty());
}

#[test]
fn execute_is_4_bytes_4_aligned_with_1_and_8_as_aliases() {
    let arch = Aarch64::default();
    let four = arch
        .parse(&BpAttr::new(0x40_1000, 4, Access::Execute))
        .unwrap();
    for len in [1, 8] {
        assert_eq!(
            arch.parse(&BpAttr::new(0x40_1000, len, Access::Execute))
                .unwrap(),
            four
        );
    }
    for len in [0, 2, 3, 5, 16] {
        let e = arch
            .parse(&BpAttr::new(0x40_1000, len, Access::Execute))
            .unwrap_err();
        assert!(matches!(e, ArchError::BadLength { .. }), "{len}: {e:?}");
        assert!(e.to_string().contains("4-byte A64 instruction"), "{e}");
    }
    for off in 1..4 {
        let e = arch.parse(&BpAttr::exec(0x40_1000 + off)).unwrap_err();
        assert_eq!(
            e,
            ArchError::Unaligned {
                arch: "arm64",
                addr: 0x40_1000 + off,
                len: 4,
                align: 4
            }
        );
    }
}

#[test]
fn watch_lengths_outside_1_to_8_are_refused() {
    let arch = Aarch64::default();
    for len in [0, 9, 16, 64] {
        let e = arch.parse(&BpAttr::write(WINDOW, len)).unwrap_err();
        assert!(matches!(e, ArchError::BadLength { .. }), "{len}");
        assert!(e.to_string().contains("1 to 8 bytes"), "{e}");
    }
}

#[test]
fn a_range_past_the_end_of_the_address_space_is_refused() {
    let arch = Aarch64::default();
    let e = arch
        .parse(&BpAttr::write(u64::MAX, 2).privileged())
        .unwrap_err();
    assert_eq!(
        e,
        ArchError::Wraps {
            addr: u64::MAX,
            len: 2
        }
    );
    let e = arch
        .parse(&BpAttr::exec(u64::MAX - 1).privileged())
        .unwrap_err();
    assert!(matches!(e, ArchError::Wraps { .. }));
    // The very last doubleword fits.
    assert!(arch
        .parse(&BpAttr::write(u64::MAX - 7, 8).privileged())
        .is_ok());
}

#[test]
fn privilege_field_follows_the_address_half_and_the_privileged_flag() {
    let arch = Aarch64::default();
    let pac = |bp: ArchBp| (bp.ctrl >> 1) & 0b11;
    assert_eq!(
        pac(arch.parse(&BpAttr::write(0x1000, 8)).unwrap()),
        0b10,
        "EL0"
    );
    assert_eq!(
        pac(arch.parse(&BpAttr::write(0x1000, 8).privileged()).unwrap()),
        0b11,
        "EL0+EL1"
    );
    let kaddr = 0xffff_8000_1000_0000;
    let e = arch.parse(&BpAttr::write(kaddr, 8)).unwrap_err();
    assert_eq!(e, ArchError::KernelAddress { addr: kaddr });
    assert!(e.to_string().contains("privileged"));
    assert_eq!(
        pac(arch.parse(&BpAttr::write(kaddr, 8).privileged()).unwrap()),
        0b01,
        "EL1"
    );
    assert_eq!(
        pac(arch.parse(&BpAttr::exec(kaddr).privileged()).unwrap()),
        0b01
    );
    assert!(matches!(
        arch.parse(&BpAttr::exec(kaddr)),
        Err(ArchError::KernelAddress { .. })
    ));
    // The last user doubleword ends exactly at 1 << 48.
    assert!(arch.parse(&BpAttr::write(aarch64::USER_TOP - 8, 8)).is_ok());
}

#[test]
fn install_writes_value_before_control_and_uninstall_the_reverse() {
    let arch = Aarch64::default();
    let mut regs = RecordingRegs::new();
    let w = arch.parse(&BpAttr::read_write(0x5003, 2)).unwrap();
    arch.install(&mut regs, 1, &w);
    assert_eq!(
        regs.written(),
        vec![Reg::Addr(Pool::Data, 1), Reg::Ctrl(Pool::Data, 1)]
    );
    assert_eq!(regs.read(Reg::Addr(Pool::Data, 1)), 0x5000);
    regs.clear_log();
    arch.uninstall(&mut regs, Pool::Data, 1);
    assert_eq!(
        regs.log,
        vec![(Reg::Ctrl(Pool::Data, 1), 0), (Reg::Addr(Pool::Data, 1), 0)]
    );
}

#[test]
fn slot_counts_outside_2_to_16_are_refused() {
    for (b, w) in [(1, 4), (17, 4), (6, 0), (6, 1), (6, 17), (0, 0)] {
        let e = Aarch64::new(b, w).unwrap_err();
        assert!(e.to_string().contains("2 to 16"), "{b}/{w}: {e}");
        assert_eq!(e.count, if !(2..=16).contains(&b) { b } else { w });
    }
    let a = Aarch64::new(2, 16).unwrap();
    assert_eq!((a.slots(Pool::Inst), a.slots(Pool::Data)), (2, 16));
    assert_eq!((a.brps(), a.wrps()), (2, 16));
    let d = Aarch64::default();
    assert_eq!((d.slots(Pool::Inst), d.slots(Pool::Data)), (6, 4));
    assert_eq!(d.name(), "arm64");
}

#[test]
fn every_hit_triggers_before_and_needs_step_over() {
    let arch = Aarch64::default();
    for attr in [
        BpAttr::exec(0x40_0000),
        BpAttr::write(0x1000, 4),
        BpAttr::new(0x1000, 1, Access::Read),
    ] {
        let bp = arch.parse(&attr).unwrap();
        assert_eq!(bp.trigger, hwbreak_core::arch::Trigger::Before);
        assert!(arch.needs_step_over(&bp));
        assert!(!arch.resume_flags(&bp).resume_flag, "RF is x86 only");
    }
}

#[test]
fn distance_from_watchpoint_matches_the_kernel_formula() {
    // bas 0b0011_1100 at 0x1000 watches 0x1002..=0x1005.
    assert_eq!(
        aarch64::distance_from_watchpoint(0x1000, 0x1000, 0b0011_1100),
        2
    );
    assert_eq!(
        aarch64::distance_from_watchpoint(0x1003, 0x1000, 0b0011_1100),
        0
    );
    assert_eq!(
        aarch64::distance_from_watchpoint(0x1009, 0x1000, 0b0011_1100),
        4
    );
    assert_eq!(
        aarch64::distance_from_watchpoint(0x1009, 0x1000, 0),
        u64::MAX
    );
}
