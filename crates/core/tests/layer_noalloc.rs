//! The debugger path and dispatch never allocate: counted by a global
//! allocator that tallies allocations made by the current thread.

mod layer_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hwbreak_core::arch::{Pool, RawStatus};
use hwbreak_core::layer::Request;
use hwbreak_core::{Access, BpAttr, CpuId, Target};
use layer_support::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator unchanged; the counter
// is a const-initialised thread-local Cell, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

#[test]
fn debugger_path_never_allocates() {
    let l = layer(ToyArch::mixed(4), 64);
    let mut m = TestMachine::new(64);
    l.register(
        &mut m,
        Request::new(BpAttr::write(0x10, 8), Target::AllCpus),
    )
    .unwrap();
    let before = allocs();
    let s = l.debugger().try_reserve(Pool::Data).unwrap();
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(2));
    l.debugger().try_release(s).unwrap();
    assert!(l.debugger().try_release(s).is_err());
    let mut session = l.debugger().session().unwrap();
    assert_eq!(session.held(Pool::Data), 3);
    let r = session.claim(CpuId(5), Pool::Data).unwrap();
    l.debugger().try_unclaim(CpuId(5), Pool::Data, r).unwrap();
    session.claim(CpuId(6), Pool::Data).unwrap();
    assert!(
        l.debugger().try_reserve(Pool::Data).is_err(),
        "NoSlot is built without allocating too"
    );
    session.end().unwrap();
    drop(session);
    assert_eq!(allocs(), before, "the debugger path allocated");
}

#[test]
fn dispatch_never_allocates_on_either_path() {
    // Trap-after (deliver at once) and trap-before (step-over) arches.
    for arch in [ToyArch::mixed(4), ToyArch::split(2, 2)] {
        let l = layer(arch, 2);
        let mut m = TestMachine::new(2);
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(1))).callback(|_| {}),
        )
        .unwrap();
        let st = m.status_for(1, 0x10, Access::Write, 0x400).unwrap();
        let step = RawStatus::Power {
            dsisr: STEP,
            dar: 0,
            nip: 0x404,
            size: 0,
        };
        let before = allocs();
        let d = l.handle_exception(&mut m, CpuId(1), &st);
        let d2 = d
            .stepping
            .then(|| l.handle_exception(&mut m, CpuId(1), &step));
        let stray = l.handle_exception(
            &mut m,
            CpuId(1),
            &RawStatus::Power {
                dsisr: 1 << 1,
                dar: 0,
                nip: 0,
                size: 0,
            },
        );
        assert_eq!(allocs(), before, "dispatch allocated");
        assert_eq!(d.delivered + d2.map_or(0, |d| d.delivered), 1);
        assert_eq!(stray.strays, 1);
    }
}
