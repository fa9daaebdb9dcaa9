//! Each core arch backend, programming the simulator's independently written
//! hardware model: every accepted (length, access, offset) must make the
//! hardware trap on exactly the requested bytes and kinds, with no register
//! fault, and the backend must decode the hardware's exception back to the slot.

use hwbreak_core::arch::aarch64::Aarch64;
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::{Arch, ArchBp, Pool, RawStatus};
use hwbreak_core::{Access, BpAttr};
use hwbreak_sim::hw::{Arm64Hw, CpuFlags, FarMode, Hw, Insn, MemAccess, RegFile, X86Hw};

const BASE: u64 = 0x5555_0000_1000;

fn accesses() -> Vec<MemAccess> {
    let mut v = Vec::new();
    for addr in BASE - 16..BASE + 32 {
        for kind in [Access::Read, Access::Write] {
            v.push(MemAccess { addr, len: 1, kind });
        }
    }
    v
}

/// Run `m` on `f`; return the raw exception the kernel entry would hand the layer.
fn trap(f: &mut RegFile, m: MemAccess) -> Option<RawStatus> {
    let hw = *f.hw();
    let insn = Insn { ip: 0x40_0000, next_ip: 0x40_0004, mem: Some(m) };
    let raw = hw
        .before(f.values_mut(), CpuFlags::default(), &insn)
        .or_else(|| hw.after(f.values_mut(), CpuFlags::default(), &insn))?;
    Some(hw.kernel_entry(f.values_mut(), raw))
}

fn check(arch: &dyn Arch, hw: Hw, slot: usize) -> usize {
    let mut checked = 0;
    for len in 1..=8u64 {
        for off in 0..8u64 {
            for access in [Access::Read, Access::Write, Access::ReadWrite] {
                let attr = BpAttr::new(BASE + off, len, access);
                let Ok(bp) = arch.parse(&attr) else { continue };
                let mut f = RegFile::new(hw);
                arch.install(&mut f, slot, &bp);
                assert!(f.faults().is_empty(), "{attr:?}: {:?}", f.faults());
                let installed = |p: Pool, s: usize| -> Option<ArchBp> { (p == bp.pool && s == slot).then_some(bp) };
                for m in accesses() {
                    let want = attr.overlaps(m.addr, m.len) && access.matches(m.kind);
                    let got = trap(&mut f, m);
                    assert_eq!(got.is_some(), want, "{attr:?} {m:?}");
                    if let Some(raw) = got {
                        let d = arch.decode(&raw, &f, &installed);
                        assert!(d.hit(bp.pool, slot), "{attr:?} {m:?}: decoded {d:?} from {raw:x?}");
                        if let Some(a) = d.addr {
                            assert!(bp.in_requested(a, 1), "{attr:?}: reported address {a:#x}");
                        }
                    }
                }
                arch.uninstall(&mut f, bp.pool, slot);
                assert!(f.armed().is_empty(), "{attr:?}: still armed after uninstall");
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
        let hw = Hw::Arm64(Arm64Hw { far, ..Default::default() });
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
    let insn = Insn { ip: 0x40_1000, next_ip: 0x40_1004, mem: None };
    let raw = hw.before(f.values_mut(), CpuFlags::default(), &insn).unwrap();
    let raw = hw.kernel_entry(f.values_mut(), raw);
    let d = arch.decode(&raw, &f, &|_, s| (s == 2).then_some(bp));
    assert!(d.hit(Pool::Data, 2));
    assert_eq!(d.ip, 0x40_1000);
    assert!(arch.resume_flags(&bp).resume_flag);
    let rf = CpuFlags { resume_flag: true, ..Default::default() };
    assert_eq!(hw.before(f.values_mut(), rf, &insn), None);
}

#[test]
fn arm64_breakpoint_faults_before_and_decodes_to_its_slot() {
    let arch = Aarch64::default();
    let bp = arch.parse(&BpAttr::new(0x40_2000, 4, Access::Execute)).unwrap();
    let mut f = RegFile::new(Hw::Arm64(Arm64Hw::default()));
    arch.install(&mut f, 5, &bp);
    assert!(f.faults().is_empty(), "{:?}", f.faults());
    let hw = *f.hw();
    for ip in [0x40_1ffc, 0x40_2000, 0x40_2004] {
        let insn = Insn { ip, next_ip: ip + 4, mem: None };
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
    let raw = trap(&mut f, MemAccess { addr: 0x2ff8, len: 16, kind: Access::Write }).unwrap();
    let RawStatus::Arm64 { far, .. } = raw else { panic!() };
    assert_eq!(far, 0x2ff8);
    let d = arch.decode(&raw, &f, &|p, s| (p == Pool::Data && s == 0).then_some(wp));
    assert!(d.hit(Pool::Data, 0));
}
