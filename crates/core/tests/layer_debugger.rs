//! The debugger (kgdb) path: never blocks, never preempts, answers `Busy`
//! at once while another thread holds the books.

mod layer_support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::{DbgSlot, Request};
use hwbreak_core::{Access, BpAttr, CpuId, Error, Target};
use layer_support::*;

/// Thread A is inside `register`, holding the books: its machine blocks in
/// the first register write until B says go. B meanwhile gets `Busy` from
/// every debugger call at once (and dispatch on another CPU still works);
/// after A finishes, B's reservation succeeds. The order is forced by
/// channels, so this interleaving happens on every run and cannot hang.
#[test]
fn debugger_gets_busy_at_once_while_another_thread_holds_the_books() {
    let l = Arc::new(layer(ToyArch::mixed(4), 2));
    let base = TestMachine::new(2);
    // An existing breakpoint on CPU 1, to show dispatch is not blocked.
    let mut mb = base.clone();
    l.register(
        &mut mb,
        Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(1))),
    )
    .unwrap();

    let (inside_tx, inside_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((inside_tx, go_rx))));
    let mut ma = base.with_hook(Arc::new(move |_cpu, _reg, _v| {
        // Only the first write blocks.
        if let Some((inside, go)) = gate.lock().unwrap().take() {
            inside.send(()).unwrap();
            go.recv().unwrap();
        }
    }));
    let la = l.clone();
    let a = std::thread::spawn(move || {
        la.register(
            &mut ma,
            Request::new(BpAttr::write(0x20, 8), Target::Cpu(CpuId(0))),
        )
    });
    inside_rx.recv().unwrap(); // A holds the books, blocked in a register write.

    assert_eq!(l.debugger().try_reserve(Pool::Data), Err(Error::Busy));
    assert_eq!(
        l.debugger().try_release(DbgSlot { pool: Pool::Data }),
        Err(Error::Busy)
    );
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Err(Error::Busy));
    assert!(matches!(l.debugger().session(), Err(Error::Busy)));
    assert_eq!(
        l.debugger().try_claim(CpuId(1), Pool::Data),
        Err(Error::Busy)
    );
    // A holds CPU 0's install table while it writes there.
    assert!(matches!(
        l.debugger().try_holders(CpuId(0), &mut |_, _, _, _| {}),
        Err(Error::Busy)
    ));
    // Dispatch takes only CPU 1's table: not blocked by A.
    assert_eq!(mb.access(&l, 1, 0x10, Access::Write).0.delivered, 1);

    go_tx.send(()).unwrap();
    a.join().unwrap().unwrap();
    let s = l.debugger().try_reserve(Pool::Data).unwrap();
    // CPU 0: 1 booked by A + 1 debugger; CPU 1: 1 + 1. Two free everywhere.
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(2));
    l.debugger().try_release(s).unwrap();
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(3));
}

#[test]
fn try_reserve_books_a_slot_on_every_online_cpu_and_try_release_gives_it_back() {
    let l = layer(ToyArch::mixed(1), 3);
    let mut m = TestMachine::new(3);
    let empty = l.snapshot();
    let s = l.debugger().try_reserve(Pool::Data).unwrap();
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(0));
    for c in 0..3 {
        assert!(
            matches!(
                l.register(
                    &mut m,
                    Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(c)))
                ),
                Err(Error::NoSlot { .. })
            ),
            "cpu {c}"
        );
    }
    l.debugger().try_release(s).unwrap();
    assert_eq!(l.snapshot(), empty);
    assert_eq!(
        l.debugger().try_release(s),
        Err(Error::NotReserved { pool: Pool::Data })
    );
}

#[test]
fn try_reserve_never_preempts_and_fails_without_a_trace_when_one_cpu_is_full() {
    let l = layer(ToyArch::mixed(1), 3);
    let mut m = TestMachine::new(3);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(2))),
        )
        .unwrap();
    let (snap, regs) = (l.snapshot(), m.all_regs());
    let e = l.debugger().try_reserve(Pool::Data).unwrap_err();
    assert!(matches!(e, Error::NoSlot { cpu: CpuId(2), .. }), "{e}");
    assert_eq!(l.snapshot(), snap);
    assert_eq!(m.all_regs(), regs);
    assert_eq!(
        m.access(&l, 2, 0x10, Access::Write).0.delivered,
        1,
        "the owner keeps its breakpoint"
    );
    assert!(l.is_registered(id));
}

#[test]
fn free_everywhere_is_the_minimum_over_online_cpus() {
    let l = layer(ToyArch::mixed(4), 3);
    let mut m = TestMachine::new(3);
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(4));
    for a in [0x10, 0x20, 0x30] {
        l.register(
            &mut m,
            Request::new(BpAttr::write(a, 8), Target::Cpu(CpuId(1))),
        )
        .unwrap();
    }
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(1));
    // CPU 1 going offline takes its bookings with it.
    l.cpu_offline(&mut m, CpuId(1));
    m.set_online(1, false);
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(4));
}

#[test]
fn a_debug_session_books_every_free_slot_and_releases_them_at_the_end() {
    let l = layer(ToyArch::split(2, 4), 2);
    let mut m = TestMachine::new(2);
    let keep = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(0))),
        )
        .unwrap();
    let before = l.snapshot();
    let mut s = l.debugger().session().unwrap();
    assert_eq!((s.held(Pool::Inst), s.held(Pool::Data)), (2, 3));
    assert_eq!(l.debugger().free_everywhere(Pool::Data), Ok(0));
    assert_eq!(l.debugger().free_everywhere(Pool::Inst), Ok(0));
    // CPU 0 is full (its owner's one + the debugger's three); CPU 1 keeps
    // the one slot that was not free everywhere.
    assert!(matches!(
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x20, 8), Target::Cpu(CpuId(0)))
        ),
        Err(Error::NoSlot { cpu: CpuId(0), .. })
    ));
    // Never preempts: the existing breakpoint still fires.
    let (_, step) = m.access(&l, 0, 0x10, Access::Write);
    assert_eq!(step.unwrap().delivered, 1);
    s.end().unwrap();
    assert_eq!((s.held(Pool::Inst), s.held(Pool::Data)), (0, 0));
    assert_eq!(l.snapshot(), before);
    assert!(l.is_registered(keep));
}

#[test]
fn a_dropped_debug_session_does_not_leak_its_slots() {
    let l = layer(ToyArch::mixed(4), 2);
    let before = l.snapshot();
    {
        let s = l.debugger().session().unwrap();
        assert_eq!(s.held(Pool::Data), 4);
    }
    assert_eq!(l.snapshot(), before);
}

#[test]
fn a_claimed_register_is_never_used_by_the_layer() {
    // x86-like, 4 slots on one CPU. Breakpoints at registers 0..2, then the
    // one in register 1 goes: the debugger's booked slot claims register 1.
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    let ids: Vec<_> = [0x10, 0x20, 0x30]
        .iter()
        .map(|&a| {
            l.register(
                &mut m,
                Request::new(BpAttr::write(a, 8), Target::Cpu(CpuId(0))),
            )
            .unwrap()
        })
        .collect();
    l.unregister(&mut m, ids[1]).unwrap();
    let s = l.debugger().try_reserve(Pool::Data).unwrap();
    let r = l.debugger().try_claim(CpuId(0), Pool::Data).unwrap();
    assert_eq!(r, 1, "the first register neither installed nor claimed");
    assert_eq!(
        l.debugger().try_claim(CpuId(0), Pool::Data),
        Err(Error::NotReserved { pool: Pool::Data })
    );
    // The debugger programs register 1 itself.
    {
        use hwbreak_core::arch::Reg;
        use hwbreak_core::Machine;
        let regs = m.regs(CpuId(0));
        regs.write(Reg::Addr(Pool::Data, 1), 0xdead0);
        regs.write(Reg::Ctrl(Pool::Data, 1), 1 | 2 << 4 | 8 << 8);
    }
    // One more layer breakpoint fits (3 + 1 debugger = 4) and goes to register 3.
    l.register(
        &mut m,
        Request::new(BpAttr::write(0x40, 8), Target::Cpu(CpuId(0))),
    )
    .unwrap();
    assert_eq!(
        l.installed(CpuId(0))
            .iter()
            .map(|x| x.slot)
            .collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
    assert_eq!(
        m.armed(0).iter().find(|x| x.1 == 1).map(|x| x.2),
        Some(0xdead0),
        "debugger's register intact"
    );
    // A hit in the claimed register is the debugger's: no delivery.
    assert_eq!(m.access(&l, 0, 0xdead0, Access::Write).0.delivered, 0);
    // Releasing the slot while still claiming its register is refused.
    assert_eq!(
        l.debugger().try_release(s),
        Err(Error::StillClaimed {
            cpu: CpuId(0),
            pool: Pool::Data
        })
    );
    l.debugger().try_unclaim(CpuId(0), Pool::Data, 1).unwrap();
    assert_eq!(
        l.debugger().try_unclaim(CpuId(0), Pool::Data, 1),
        Err(Error::NotReserved { pool: Pool::Data })
    );
    l.debugger().try_release(s).unwrap();
    assert_eq!(
        l.debugger().try_claim(CpuId(0), Pool::Data),
        Err(Error::NotReserved { pool: Pool::Data })
    );
    assert_eq!(
        l.debugger().try_claim(CpuId(7), Pool::Data),
        Err(Error::NoSuchCpu {
            cpu: CpuId(7),
            possible: 1
        })
    );
}

#[test]
fn ending_a_session_drops_its_claims() {
    let l = layer(ToyArch::mixed(2), 2);
    let mut m = TestMachine::new(2);
    let mut s = l.debugger().session().unwrap();
    assert_eq!(s.claim(CpuId(0), Pool::Data), Ok(0));
    assert_eq!(s.claim(CpuId(1), Pool::Data), Ok(0));
    s.end().unwrap();
    drop(s);
    // Both registers are the layer's again.
    for c in 0..2 {
        for a in [0x10, 0x20] {
            l.register(
                &mut m,
                Request::new(BpAttr::write(a, 8), Target::Cpu(CpuId(c))),
            )
            .unwrap();
        }
        assert_eq!(
            l.installed(CpuId(c))
                .iter()
                .map(|x| x.slot)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
    }
}

#[test]
fn try_holders_names_what_sits_on_a_cpu_and_never_blocks() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let a = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(1))),
        )
        .unwrap();
    let mut seen = Vec::new();
    l.debugger()
        .try_holders(CpuId(1), &mut |_, slot, id, task| {
            seen.push((slot, id, task))
        })
        .unwrap();
    assert_eq!(seen, vec![(0, a, None)]);
    let mut none = 0;
    l.debugger()
        .try_holders(CpuId(0), &mut |_, _, _, _| none += 1)
        .unwrap();
    assert_eq!(none, 0);
    assert!(matches!(
        l.debugger().try_holders(CpuId(9), &mut |_, _, _, _| {}),
        Err(Error::NoSuchCpu { .. })
    ));
}
