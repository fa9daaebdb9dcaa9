//! Each core arch backend, programming the simulator's independently written
//! hardware model: every accepted (length, access, offset) must make the
//! hardware trap on exactly the requested bytes and kinds, with no register
//! fault, and the backend must decode the hardware's exception back to the slot.

use hwbreak_core::arch::aarch64::Aarch64;
use hwbreak_core::arch::powerpc::{Power, PowerMode as CoreMode};
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::{Arch, ArchBp, Pool, RawStatus};
use hwbreak_core::{Access, BpAttr};
use hwbreak_sim::hw::{
    Arm64Hw, CpuFlags, FarMode, Hw, Insn, MemAccess, PowerHw, PowerMode, RegFile, X86Hw,
};

const BASE: u64 = 0x5555_0000_1000;

fn accesses(span: u64) -> Vec<MemAccess> {
    let mut v = Vec::new();
    for addr in BASE - 16..BASE + span + 16 {
        for kind in [Access::Read, Access::Write] {
            v.push(MemAccess { addr, len: 1, kind });
        }
    }
    v
}

/// Run `m` on `f`; return the raw exception the kernel entry would hand the layer.
fn trap(f: &mut RegFile, m: MemAccess) -> Option<RawStatus> {
    let hw = *f.hw();
    let insn = Insn {
        ip: 0x40_0000,
        next_ip: 0x40_0004,
        mem: Some(m),
    };
    let raw = hw
        .before(f.values_mut(), CpuFlags::default(), &insn)
        .or_else(|| hw.after(f.values_mut(), CpuFlags::default(), &insn))?;
    Some(hw.kernel_entry(f.values_mut(), raw))
}

fn check(arch: &dyn Arch, hw: Hw, slot: usize) -> usize {
    let shapes: Vec<(u64, u64)> = (1..=8u64)
        .flat_map(|len| (0..8u64).map(move |off| (off, len)))
        .collect();
    check_shapes(arch, hw, slot, &shapes)
}

/// For each accepted `(offset, len)` × access: the hardware traps exactly on
/// the bytes the backend says it programmed (`hw_addr`, `hw_len`), which
/// contain the requested ones; the decode names the slot, and a reported
/// address lies in the requested range exactly when the access does.
fn check_shapes(arch: &dyn Arch, hw: Hw, slot: usize, shapes: &[(u64, u64)]) -> usize {
    let mut checked = 0;
    for &(off, len) in shapes {
        {
            for access in [Access::Read, Access::Write, Access::ReadWrite] {
                let attr = BpAttr::new(BASE + off, len, access);
                let Ok(bp) = arch.parse(&attr) else { continue };
                let mut f = RegFile::new(hw);
                arch.install(&mut f, slot, &bp);
                assert!(f.faults().is_empty(), "{attr:?}: {:?}", f.faults());
                let installed = |p: Pool, s: usize| -> Option<ArchBp> {
                    (p == bp.pool && s == slot).then_some(bp)
                };
                assert!(
                    bp.hw_addr <= attr.addr && attr.addr + len <= bp.hw_addr + bp.hw_len,
                    "{attr:?} -> {bp:?}"
                );
                for m in accesses(off + len + 8) {
                    let in_hw = m.addr >= bp.hw_addr && m.addr < bp.hw_addr + bp.hw_len;
                    let want = in_hw && access.matches(m.kind);
                    let got = trap(&mut f, m);
                    assert_eq!(got.is_some(), want, "{attr:?} {m:?}");
                    if let Some(raw) = got {
                        let d = arch.decode(&raw, &f, &installed);
                        assert!(
                            d.hit(bp.pool, slot),
                            "{attr:?} {m:?}: decoded {d:?} from {raw:x?}"
                        );
                        if let Some(a) = d.addr {
                            assert_eq!(
                                bp.in_requested(a, 1),
                                attr.overlaps(m.addr, m.len),
                                "{attr:?} {m:?}: reported address {a:#x}"
                            );
                        }
                    }
                }
                arch.uninstall(&mut f, bp.pool, slot);
                assert!(
                    f.armed().is_empty(),
                    "{attr:?}: still armed after uninstall"
                );
                assert!(f.faults().is_empty());
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn x86_backend_on_x86_hardware_traps_exactly_on_requested_bytes() {
    for slot in 0..4 {
        let n = check(&X86_64::default(), Hw::X86(X86Hw::default()), slot);
        // 1 byte at 8 offsets, 2 at 4, 4 at 2, 8 at 1 = 15 shapes, write and rw.
        assert_eq!(n, 30);
    }
}

#[test]
fn arm64_backend_on_arm64_hardware_traps_exactly_on_requested_bytes() {
    for far in [FarMode::Exact, FarMode::AccessStart, FarMode::RoundDown8] {
        let hw = Hw::Arm64(Arm64Hw {
            far,
            ..Default::default()
        });
        let n = check(&Aarch64::default(), hw, 3);
        // Every contiguous run inside a doubleword: 36 shapes, r, w and rw.
        assert_eq!(n, 108);
    }
}

#[test]
fn x86_execute_breakpoint_faults_before_and_decodes_to_its_slot() {
    let arch = X86_64::default();
    let bp = arch.parse(&BpAttr::exec(0x40_1000)).unwrap();
    let mut f = RegFile::new(Hw::X86(X86Hw::default()));
    arch.install(&mut f, 2, &bp);
    let hw = *f.hw();
    let insn = Insn {
        ip: 0x40_1000,
        next_ip: 0x40_1004,
        mem: None,
    };
    let raw = hw
        .before(f.values_mut(), CpuFlags::default(), &insn)
        .unwrap();
    let raw = hw.kernel_entry(f.values_mut(), raw);
    let d = arch.decode(&raw, &f, &|_, s| (s == 2).then_some(bp));
    assert!(d.hit(Pool::Data, 2));
    assert_eq!(d.ip, 0x40_1000);
    assert!(arch.resume_flags(&bp).resume_flag);
    let rf = CpuFlags {
        resume_flag: true,
        ..Default::default()
    };
    assert_eq!(hw.before(f.values_mut(), rf, &insn), None);
}

#[test]
fn arm64_breakpoint_faults_before_and_decodes_to_its_slot() {
    let arch = Aarch64::default();
    let bp = arch
        .parse(&BpAttr::new(0x40_2000, 4, Access::Execute))
        .unwrap();
    let mut f = RegFile::new(Hw::Arm64(Arm64Hw::default()));
    arch.install(&mut f, 5, &bp);
    assert!(f.faults().is_empty(), "{:?}", f.faults());
    let hw = *f.hw();
    for ip in [0x40_1ffc, 0x40_2000, 0x40_2004] {
        let insn = Insn {
            ip,
            next_ip: ip + 4,
            mem: None,
        };
        let raw = hw.before(f.values_mut(), CpuFlags::default(), &insn);
        assert_eq!(raw.is_some(), ip == 0x40_2000);
        if let Some(raw) = raw {
            let d = arch.decode(&raw, &f, &|p, s| (p == Pool::Inst && s == 5).then_some(bp));
            assert!(d.hit(Pool::Inst, 5));
        }
    }
    // A wide store that starts below the watched bytes: FAR = access start is
    // outside them; the backend still finds the watchpoint (nearest).
    let wp = arch.parse(&BpAttr::write(0x3004, 4)).unwrap();
    arch.install(&mut f, 0, &wp);
    let raw = trap(
        &mut f,
        MemAccess {
            addr: 0x2ff8,
            len: 16,
            kind: Access::Write,
        },
    )
    .unwrap();
    let RawStatus::Arm64 { far, .. } = raw else {
        panic!()
    };
    assert_eq!(far, 0x2ff8);
    let d = arch.decode(&raw, &f, &|p, s| (p == Pool::Data && s == 0).then_some(wp));
    assert!(d.hit(Pool::Data, 0));
}

fn power_shapes() -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = (1..=16u64)
        .flat_map(|len| (0..8u64).map(move |off| (off, len)))
        .collect();
    v.extend([(0, 512), (8, 504), (3, 100), (0x1f0, 16), (0x1f8, 16)]);
    v
}

#[test]
fn power9_backend_on_dawr_hardware_traps_on_the_widened_doublewords() {
    let hw = Hw::Power(PowerHw::default());
    let n = check_shapes(&Power::default(), hw, 0, &power_shapes());
    // (0x1f8, 16) crosses the 512-byte boundary: refused on POWER9.
    assert_eq!(n, (128 + 4) * 3);
}

#[test]
fn power10_backend_on_two_dawrs_crosses_512_byte_boundaries() {
    let hw = Hw::Power(PowerHw {
        mode: PowerMode::Dawr {
            slots: 2,
            power10: true,
        },
    });
    let n = check_shapes(&Power::power10(), hw, 1, &power_shapes());
    assert_eq!(n, (128 + 5) * 3);
}

#[test]
fn power_dabr_backend_on_dabr_hardware_matches_one_doubleword() {
    let hw = Hw::Power(PowerHw {
        mode: PowerMode::Dabr { dabrx: true },
    });
    let n = check_shapes(
        &Power::new(1, CoreMode::Dabr).unwrap(),
        hw,
        0,
        &power_shapes(),
    );
    // Every run inside one doubleword: 36 shapes.
    assert_eq!(n, 36 * 3);
}
