//! Properties every arch backend keeps, checked with random inputs, plus the
//! promise that every `ArchError` variant is produced and names its rule.

mod arch_support;

use arch_support::RecordingRegs;
use hwbreak_core::arch::aarch64::Aarch64;
use hwbreak_core::arch::powerpc::{Power, PowerMode};
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::{Arch, ArchError, DebugRegs, Pool, RawStatus, Reg};
use hwbreak_core::attr::{Access, BpAttr};
use proptest::prelude::*;

fn backends() -> Vec<Box<dyn Arch>> {
    vec![
        Box::new(X86_64::default()),
        Box::new(X86_64::with_amd_addr_mask()),
        Box::new(Aarch64::default()),
        Box::new(Aarch64::new(16, 16).unwrap()),
        Box::new(Power::default()),
        Box::new(Power::power10()),
        Box::new(Power::new(1, PowerMode::Dabr).unwrap()),
    ]
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::Read),
        Just(Access::Write),
        Just(Access::ReadWrite),
        Just(Access::Execute)
    ]
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        0x1000u64..0x10_0000,
        (0x0000_7fff_ffff_f000u64..0x0000_8000_0000_1000),
        (0x000f_ffff_ffff_f000u64..0x0010_0000_0000_1000),
        (0xffff_ffff_ffff_f000u64..=u64::MAX),
        any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..=16, 0u64..=600, Just(1u64 << 32), any::<u64>()]
}

/// Every register a backend may touch, for the "uninstall leaves nothing" check.
fn all_regs() -> Vec<Reg> {
    let mut v = vec![Reg::Control, Reg::Status];
    for pool in Pool::ALL {
        for i in 0..16 {
            v.push(Reg::Addr(pool, i));
            v.push(Reg::Ctrl(pool, i));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// An accepted attribute's hardware range covers the requested range,
    /// lies in a pool that has slots, and installing then uninstalling it
    /// in any slot leaves every register zero. A refused one says why.
    #[test]
    fn parse_covers_the_request_and_uninstall_leaves_no_trace(
        addr in addr(), len in len(), access in access(), privileged in any::<bool>(), slot in 0usize..16,
    ) {
        for arch in backends() {
            let attr = BpAttr { addr, len, access, disabled: false, privileged };
            match arch.parse(&attr) {
                Ok(bp) => {
                    prop_assert!(bp.hw_len > 0 && bp.req_len > 0);
                    prop_assert_eq!(bp.req_addr, addr);
                    prop_assert!(bp.hw_addr <= bp.req_addr, "{}: {:?}", arch.name(), bp);
                    prop_assert!(
                        bp.req_addr - bp.hw_addr + bp.req_len <= bp.hw_len,
                        "{}: hw range must cover the request: {:?}", arch.name(), bp
                    );
                    prop_assert_eq!(bp.access, access);
                    prop_assert!(bp.in_requested(addr, 1));
                    let slots = arch.slots(bp.pool);
                    prop_assert!(slots > 0);
                    let slot = slot % slots;
                    let mut regs = RecordingRegs::new();
                    arch.install(&mut regs, slot, &bp);
                    prop_assert!(regs.log.iter().any(|(_, v)| *v != 0));
                    arch.uninstall(&mut regs, bp.pool, slot);
                    for r in all_regs() {
                        prop_assert_eq!(regs.read(r), 0, "{} left {:?} set", arch.name(), r);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.len() > 30, "{}: terse error {:?}", arch.name(), msg);
                }
            }
        }
    }

    /// Decode never panics and never reports a slot the pool does not have,
    /// whatever garbage the registers and the status hold.
    #[test]
    fn decode_is_total_on_garbage_registers(
        values in proptest::collection::vec(any::<u64>(), 66),
        a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), kind in 0u8..3, ec in 0u64..64,
    ) {
        let mut regs = RecordingRegs::new();
        for (r, v) in all_regs().into_iter().zip(values) {
            regs.write(r, v);
        }
        let status = match kind {
            0 => RawStatus::X86 { dr6: a, ip: b },
            1 => RawStatus::Arm64 { esr: (ec << 26) | (a & 0x3ff_ffff), far: b, pc: c },
            _ => RawStatus::Power { dsisr: a & 0x0640_0000, dar: b, nip: c, size: ec },
        };
        for arch in backends() {
            let some = arch.parse(&BpAttr::write(0x1000, 8)).unwrap();
            let d = arch.decode(&status, &regs, &|_, _| Some(some));
            for pool in Pool::ALL {
                let slots = arch.slots(pool);
                prop_assert_eq!(d.hits[pool.idx()] >> slots, 0, "{}", arch.name());
            }
        }
    }
}

#[test]
fn every_arch_error_variant_is_produced_and_names_its_rule() {
    let x86 = X86_64::default();
    let arm = Aarch64::default();
    let power = Power::default();
    let cases: [(Result<_, ArchError>, &str); 6] = [
        (
            x86.parse(&BpAttr::write(0x1002, 4)),
            "not aligned to 4 bytes",
        ),
        (x86.parse(&BpAttr::write(0x1000, 3)), "1, 2, 4 or 8 bytes"),
        (
            x86.parse(&BpAttr::new(0x1000, 4, Access::Read)),
            "no read-only watchpoint",
        ),
        (x86.parse(&BpAttr::write(u64::MAX, 2)), "wraps"),
        (
            x86.parse(&BpAttr::write(0xffff_8000_0000_0000, 8)),
            "kernel half",
        ),
        (
            arm.parse(&BpAttr::write(0x1006, 4)),
            "within one 8-byte-aligned doubleword",
        ),
    ];
    let mut seen = Vec::new();
    for (res, rule) in cases {
        let e = res.unwrap_err();
        assert!(e.to_string().contains(rule), "{e}");
        seen.push(core::mem::discriminant(&e));
    }
    // Each case produced a different variant: all six are covered.
    for i in 0..seen.len() {
        for j in i + 1..seen.len() {
            assert_ne!(
                seen[i], seen[j],
                "cases {i} and {j} produce the same variant"
            );
        }
    }
    // And the exhaustive match below stops compiling if a variant is added
    // without a case here.
    let e = power.parse(&BpAttr::exec(0x1000)).unwrap_err();
    match e {
        ArchError::Unaligned { .. }
        | ArchError::BadLength { .. }
        | ArchError::Wraps { .. }
        | ArchError::KernelAddress { .. }
        | ArchError::BadRange { .. } => panic!("POWER execute must be BadAccess"),
        ArchError::BadAccess { .. } => {}
    }
}
