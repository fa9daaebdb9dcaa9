//! POWER backend: doubleword widening, the 512-byte boundary, DABR mode,
//! no execute, 1 vs 2 slots, and DSISR/DAR decode.

mod arch_support;

use arch_support::RecordingRegs;
use hwbreak_core::arch::powerpc::{self, Power, PowerMode};
use hwbreak_core::arch::{Arch, ArchBp, ArchError, DebugRegs, Pool, RawStatus, Reg, Trigger};
use hwbreak_core::attr::{Access, BpAttr};

const DABRMATCH: u64 = 0x0040_0000;

/// (start, len) of what a programmed DAWR slot matches, read back from the
/// registers the way the hardware reads them.
fn dawr_range(regs: &RecordingRegs, slot: u8) -> (u64, u64) {
    let dawr = regs.read(Reg::Addr(Pool::Data, slot));
    let dawrx = regs.read(Reg::Ctrl(Pool::Data, slot));
    (dawr, (((dawrx >> 10) & 0x3f) + 1) * 8)
}

#[test]
fn ranges_widen_to_whole_doublewords() {
    let arch = Power::default();
    // (addr, len) -> (hw_addr, hw_len, MRD)
    let cases = [
        (0x1003u64, 1u64, 0x1000u64, 8u64, 0u64),
        (0x1000, 8, 0x1000, 8, 0),
        (0x1007, 2, 0x1000, 16, 1),
        (0x1004, 8, 0x1000, 16, 1),
        (0x1001, 100, 0x1000, 104, 12),
        (0x1000, 512, 0x1000, 512, 63),
        (0x1001, 505, 0x1000, 512, 63),
    ];
    for (addr, len, hw_addr, hw_len, mrd) in cases {
        let bp = arch.parse(&BpAttr::write(addr, len)).unwrap();
        assert_eq!(
            (bp.hw_addr, bp.hw_len),
            (hw_addr, hw_len),
            "{addr:#x}+{len}"
        );
        assert_eq!((bp.req_addr, bp.req_len), (addr, len), "{addr:#x}+{len}");
        let mut regs = RecordingRegs::new();
        arch.install(&mut regs, 0, &bp);
        assert_eq!(dawr_range(&regs, 0), (hw_addr, hw_len));
        assert_eq!((regs.read(Reg::Ctrl(Pool::Data, 0)) >> 10) & 0x3f, mrd);
    }
}

/// Every start in a 1 KiB span × a spread of lengths, pre-POWER10: accepted
/// iff the doubleword-widened range is at most 512 bytes and stays inside
/// one 512-byte block; when accepted, the programmed DAWR covers every
/// requested byte and only doublewords that hold a requested byte.
#[test]
fn dawr_matrix_widening_and_512_byte_boundary() {
    for mode in [PowerMode::Dawr, PowerMode::DawrArch31] {
        let arch = Power::new(1, mode).unwrap();
        let (mut ok, mut crossed) = (0, 0);
        for addr in 0x10000u64..0x10000 + 1024 {
            for len in [1u64, 2, 7, 8, 9, 15, 64, 100, 255, 256, 504, 511, 512] {
                let first_dw = addr / 8;
                let last_dw = (addr + len - 1) / 8;
                let dws = last_dw - first_dw + 1;
                let crosses_512 = (first_dw * 8) / 512 != (last_dw * 8) / 512;
                let fits = dws <= 64 && !(mode == PowerMode::Dawr && crosses_512);
                match arch.parse(&BpAttr::read_write(addr, len)) {
                    Ok(bp) => {
                        assert!(fits, "{mode:?} {addr:#x}+{len} accepted");
                        ok += 1;
                        let mut regs = RecordingRegs::new();
                        arch.install(&mut regs, 0, &bp);
                        let (start, hw_len) = dawr_range(&regs, 0);
                        assert_eq!(start % 8, 0);
                        assert!(
                            start <= addr && addr + len <= start + hw_len,
                            "covers request"
                        );
                        assert_eq!(
                            (start / 8, hw_len / 8),
                            (first_dw, dws),
                            "no extra doublewords"
                        );
                    }
                    Err(e) => {
                        assert!(!fits, "{mode:?} {addr:#x}+{len} refused: {e}");
                        assert!(matches!(e, ArchError::BadRange { .. }), "{e:?}");
                        if crosses_512 && dws <= 64 {
                            crossed += 1;
                            assert!(e.to_string().contains("512-byte boundary"), "{e}");
                        }
                    }
                }
            }
        }
        assert!(ok > 0);
        if mode == PowerMode::Dawr {
            assert!(crossed > 0, "the matrix must exercise the boundary rule");
        } else {
            assert_eq!(crossed, 0, "POWER10 has no boundary rule");
        }
    }
}

#[test]
fn a_range_across_a_512_byte_boundary_is_refused_before_power10_only() {
    let attr = BpAttr::write(0x11f8, 16); // 0x11f8..0x1208 crosses 0x1200
    let e = Power::default().parse(&attr).unwrap_err();
    assert!(matches!(e, ArchError::BadRange { .. }));
    assert!(
        e.to_string().contains("must not cross a 512-byte boundary"),
        "{e}"
    );
    let bp = Power::power10().parse(&attr).unwrap();
    assert_eq!((bp.hw_addr, bp.hw_len), (0x11f8, 16));
    // Just inside the block is fine everywhere.
    assert!(Power::default().parse(&BpAttr::write(0x11f8, 8)).is_ok());
}

#[test]
fn lengths_over_512_and_zero_are_refused() {
    let arch = Power::default();
    for len in [0, 513, 4096] {
        let e = arch.parse(&BpAttr::write(0x1000, len)).unwrap_err();
        assert!(matches!(e, ArchError::BadLength { .. }), "{len}");
        assert!(e.to_string().contains("1 to 512 bytes"), "{e}");
    }
    let e = Power::power10()
        .parse(&BpAttr::write(0x1001, 512))
        .unwrap_err();
    assert!(
        matches!(e, ArchError::BadRange { .. }),
        "widened to 520 bytes"
    );
    assert!(e.to_string().contains("more than 512 bytes"), "{e}");
}

#[test]
fn dabr_mode_watches_one_doubleword() {
    let arch = Power::new(1, PowerMode::Dabr).unwrap();
    assert_eq!(arch.mode(), PowerMode::Dabr);
    for (addr, len) in [(0x2000u64, 8u64), (0x2003, 1), (0x2004, 4), (0x2001, 6)] {
        let bp = arch.parse(&BpAttr::write(addr, len)).unwrap();
        assert_eq!((bp.hw_addr, bp.hw_len), (0x2000, 8), "{addr:#x}+{len}");
    }
    let e = arch.parse(&BpAttr::write(0x2004, 8)).unwrap_err();
    assert!(matches!(e, ArchError::BadRange { .. }));
    assert!(e.to_string().contains("one aligned doubleword"), "{e}");
    let e = arch.parse(&BpAttr::write(0x2000, 16)).unwrap_err();
    assert!(matches!(e, ArchError::BadLength { .. }));
    assert!(e.to_string().contains("1 to 8 bytes"), "{e}");
}

#[test]
fn dabr_flags_sit_in_the_address_register_and_privilege_in_dabrx() {
    let arch = Power::new(1, PowerMode::Dabr).unwrap();
    let mut regs = RecordingRegs::new();
    let bp = arch.parse(&BpAttr::read_write(0x2004, 2)).unwrap();
    arch.install(&mut regs, 0, &bp);
    // DABRX (USER) before DABR = addr | TRANSLATION | WRITE | READ.
    assert_eq!(
        regs.log,
        vec![
            (Reg::Ctrl(Pool::Data, 0), 0b001),
            (Reg::Addr(Pool::Data, 0), 0x2000 | 0b111)
        ]
    );
    regs.clear_log();
    arch.uninstall(&mut regs, Pool::Data, 0);
    assert_eq!(
        regs.log,
        vec![(Reg::Addr(Pool::Data, 0), 0), (Reg::Ctrl(Pool::Data, 0), 0)],
        "DABR (which arms) is cleared first"
    );
    let w = arch.parse(&BpAttr::write(0x2000, 8).privileged()).unwrap();
    arch.install(&mut regs, 0, &w);
    assert_eq!(regs.read(Reg::Addr(Pool::Data, 0)), 0x2000 | 0b110);
    assert_eq!(regs.read(Reg::Ctrl(Pool::Data, 0)), 0b011, "USER | KERNEL");
}

#[test]
fn dawrx_bits_follow_the_kernel_layout() {
    let arch = Power::default();
    let ctrl = |attr: BpAttr| arch.parse(&attr).unwrap().ctrl;
    // WT(0x10) | DW(0x40) | USER(0x1)
    assert_eq!(ctrl(BpAttr::write(0x1000, 8)), 0x51);
    // WT | DR(0x20) | USER
    assert_eq!(ctrl(BpAttr::new(0x1000, 8, Access::Read)), 0x31);
    // WT | DR | DW | USER | KERNEL, MRD=1
    assert_eq!(
        ctrl(BpAttr::read_write(0x1000, 16).privileged()),
        0x73 | (1 << 10)
    );
    let kaddr = 0xc000_0000_0100_0000;
    assert_eq!(
        ctrl(BpAttr::write(kaddr, 8).privileged()),
        0x52,
        "KERNEL only"
    );
    let e = arch.parse(&BpAttr::write(kaddr, 8)).unwrap_err();
    assert_eq!(e, ArchError::KernelAddress { addr: kaddr });
    // The top user doubleword is user space; the next byte is not.
    assert!(arch.parse(&BpAttr::write(powerpc::USER_TOP - 8, 8)).is_ok());
    assert!(arch.parse(&BpAttr::write(powerpc::USER_TOP, 8)).is_err());
}

#[test]
fn execute_is_refused_because_power_has_no_instruction_slots() {
    let arch = Power::default();
    let e = arch.parse(&BpAttr::exec(0x1000_0000)).unwrap_err();
    assert!(matches!(
        e,
        ArchError::BadAccess {
            access: Access::Execute,
            ..
        }
    ));
    assert!(
        e.to_string()
            .contains("no instruction breakpoint registers"),
        "{e}"
    );
    assert_eq!(arch.slots(Pool::Inst), 0);
}

#[test]
fn one_or_two_dawrs_and_exactly_one_dabr() {
    for mode in [PowerMode::Dawr, PowerMode::DawrArch31] {
        assert_eq!(Power::new(1, mode).unwrap().slots(Pool::Data), 1);
        assert_eq!(Power::new(2, mode).unwrap().slots(Pool::Data), 2);
        for n in [0, 3, 16] {
            let e = Power::new(n, mode).unwrap_err();
            assert!(e.to_string().contains("POWER10 has 2"), "{e}");
        }
    }
    assert!(Power::new(1, PowerMode::Dabr).is_ok());
    let e = Power::new(2, PowerMode::Dabr).unwrap_err();
    assert!(e.to_string().contains("exactly one"), "{e}");
    assert_eq!(Power::power10().slots(Pool::Data), 2);
    assert_eq!(Power::default().slots(Pool::Data), 1);
    assert_eq!(Power::default().name(), "POWER");
}

#[test]
fn dawr_install_writes_address_before_dawrx_and_uninstall_the_reverse() {
    let arch = Power::power10();
    let mut regs = RecordingRegs::new();
    let bp = arch.parse(&BpAttr::write(0x3004, 8)).unwrap();
    arch.install(&mut regs, 1, &bp);
    assert_eq!(
        regs.log,
        vec![
            (Reg::Addr(Pool::Data, 1), 0x3000),
            (Reg::Ctrl(Pool::Data, 1), bp.ctrl)
        ]
    );
    regs.clear_log();
    arch.uninstall(&mut regs, Pool::Data, 1);
    assert_eq!(
        regs.log,
        vec![(Reg::Ctrl(Pool::Data, 1), 0), (Reg::Addr(Pool::Data, 1), 0)]
    );
}

fn installed_pair(arch: &Power) -> (RecordingRegs, [ArchBp; 2]) {
    let mut regs = RecordingRegs::new();
    let a = arch.parse(&BpAttr::write(0x4003, 2)).unwrap(); // widened 0x4000..0x4008
    let b = arch.parse(&BpAttr::read_write(0x4100, 32)).unwrap();
    arch.install(&mut regs, 0, &a);
    arch.install(&mut regs, 1, &b);
    (regs, [a, b])
}

fn decode(
    arch: &Power,
    regs: &RecordingRegs,
    bps: &[ArchBp],
    dsisr: u64,
    dar: u64,
) -> hwbreak_core::arch::Decoded {
    decode_sized(arch, regs, bps, dsisr, dar, 0)
}

/// As the kernel entry would pass it after decoding the instruction.
fn decode_sized(
    arch: &Power,
    regs: &RecordingRegs,
    bps: &[ArchBp],
    dsisr: u64,
    dar: u64,
    size: u64,
) -> hwbreak_core::arch::Decoded {
    let installed = |pool: Pool, i: usize| {
        if pool == Pool::Data {
            bps.get(i).copied()
        } else {
            None
        }
    };
    arch.decode(
        &RawStatus::Power {
            dsisr,
            dar,
            nip: 0x1000_0100,
            size,
        },
        regs,
        &installed,
    )
}

#[test]
fn dar_in_the_requested_range_hits_its_slot() {
    let arch = Power::power10();
    let (regs, bps) = installed_pair(&arch);
    let d = decode(&arch, &regs, &bps, DABRMATCH, 0x4004);
    assert_eq!(d.hits, [0, 0b01]);
    assert_eq!(d.addr, Some(0x4004));
    assert_eq!(d.ip, 0x1000_0100);
    assert!(bps[0].in_requested(0x4004, 1));
    let d = decode(&arch, &regs, &bps, DABRMATCH, 0x411f);
    assert_eq!(d.hits, [0, 0b10]);
}

#[test]
fn dar_in_the_widened_bytes_is_a_slot_hit_that_dispatch_filters_as_stray() {
    let arch = Power::power10();
    let (regs, bps) = installed_pair(&arch);
    for dar in [0x4000, 0x4002, 0x4005, 0x4007] {
        let d = decode(&arch, &regs, &bps, DABRMATCH, dar);
        assert_eq!(d.hits, [0, 0b01], "{dar:#x}: the hardware did fire");
        assert_eq!(d.addr, Some(dar));
        assert!(
            !bps[0].in_requested(dar, 1),
            "{dar:#x} is outside 0x4003+2: a stray"
        );
    }
}

#[test]
fn dar_outside_every_range_goes_to_the_nearest_slot_without_an_address() {
    let arch = Power::power10();
    let (regs, bps) = installed_pair(&arch);
    // A 32-byte vector store starting at 0x40f0 overlaps slot 1 (0x4100..).
    let d = decode(&arch, &regs, &bps, DABRMATCH, 0x40f0);
    assert_eq!(d.hits, [0, 0b10]);
    assert_eq!(d.addr, None);
}

#[test]
fn an_access_starting_below_the_range_with_its_size_known_is_an_exact_in_request_hit() {
    let arch = Power::power10();
    let (regs, bps) = installed_pair(&arch);
    // A 32-byte vector store at 0x40f0 writes 0x4100..0x4110 of slot 1's
    // request: with the size, an exact hit whose whole access is checked.
    let d = decode_sized(&arch, &regs, &bps, DABRMATCH, 0x40f0, 32);
    assert_eq!(d.hits, [0, 0b10]);
    assert_eq!((d.addr, d.len), (Some(0x40f0), 32));
    assert!(bps[1].in_requested(0x40f0, d.len));
    // An 8-byte store at 0x3ffc writes 0x4000..0x4004: slot 0 fires, and
    // its request (0x4003+2) is written, so it is no stray.
    let d = decode_sized(&arch, &regs, &bps, DABRMATCH, 0x3ffc, 8);
    assert_eq!((d.hits, d.addr, d.len), ([0, 0b01], Some(0x3ffc), 8));
    assert!(bps[0].in_requested(0x3ffc, d.len));
    // A 4-byte store at 0x3ffc ends before slot 0's doubleword: the
    // nearest-slot fallback, as without a size.
    let d = decode_sized(&arch, &regs, &bps, DABRMATCH, 0x3ffc, 4);
    assert_eq!((d.hits, d.addr), ([0, 0b01], None));
    // Size unknown (0): only the DAR byte counts, len reports 1.
    let d = decode_sized(&arch, &regs, &bps, DABRMATCH, 0x4004, 0);
    assert_eq!((d.addr, d.len), (Some(0x4004), 1));
}

#[test]
fn dsisr_zero_is_a_completed_step_and_other_dsisr_is_not_ours() {
    let arch = Power::default();
    let (regs, bps) = installed_pair(&Power::power10());
    let d = decode(&arch, &regs, &bps[..1], 0, 0);
    assert!(d.step && d.hits == [0, 0]);
    // A page fault (DSISR_NOHPTE) is no breakpoint.
    let d = decode(&arch, &regs, &bps[..1], 0x4000_0000, 0x4004);
    assert!(d.is_empty());
    // Nothing installed: nothing hit, even with DABRMATCH.
    let d = decode(&arch, &regs, &[], DABRMATCH, 0x4004);
    assert!(d.is_empty());
    let d = arch.decode(&RawStatus::X86 { dr6: 1, ip: 0 }, &regs, &|_, _| None);
    assert!(d.is_empty());
}

#[test]
fn dabr_decode_uses_the_doubleword_in_the_address_register() {
    let arch = Power::new(1, PowerMode::Dabr).unwrap();
    let mut regs = RecordingRegs::new();
    let bp = arch.parse(&BpAttr::write(0x5002, 2)).unwrap();
    arch.install(&mut regs, 0, &bp);
    let d = decode(&arch, &regs, &[bp], DABRMATCH, 0x5006);
    assert_eq!(d.hits, [0, 1]);
    assert_eq!(d.addr, Some(0x5006));
    assert!(!bp.in_requested(0x5006, 1));
    // Disarmed DABR (no R/W flags) cannot have fired.
    arch.uninstall(&mut regs, Pool::Data, 0);
    assert!(decode(&arch, &regs, &[bp], DABRMATCH, 0x5006).is_empty());
}

#[test]
fn a_range_past_the_end_of_the_address_space_is_refused() {
    let e = Power::default()
        .parse(&BpAttr::write(u64::MAX - 2, 8).privileged())
        .unwrap_err();
    assert_eq!(
        e,
        ArchError::Wraps {
            addr: u64::MAX - 2,
            len: 8
        }
    );
    assert!(Power::default()
        .parse(&BpAttr::write(u64::MAX - 7, 8).privileged())
        .is_ok());
}

#[test]
fn hits_trigger_before_and_need_step_over() {
    let arch = Power::default();
    let bp = arch.parse(&BpAttr::new(0x1000, 4, Access::Read)).unwrap();
    assert_eq!(bp.trigger, Trigger::Before);
    assert!(arch.needs_step_over(&bp));
    assert!(!arch.resume_flags(&bp).resume_flag);
}
