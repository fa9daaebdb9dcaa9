//! Dispatch: stray filtering, step-over for trap-before arches, RF on x86
//! execute hits (on the real x86-64 backend), and synchronous unregister
//! against a dispatcher running on another thread.

mod layer_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::{Pool, RawStatus, Reg};
use hwbreak_core::events::Record;
use hwbreak_core::layer::{Dispatched, Layer, Request};
use hwbreak_core::{Access, BpAttr, CpuId, Target};
use layer_support::*;

fn counter() -> (
    Arc<AtomicU64>,
    impl Fn(&hwbreak_core::layer::Hit) + Send + Sync + 'static,
) {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    (n, move |_: &hwbreak_core::layer::Hit| {
        n2.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn trap_before_hit_steps_over_then_delivers_and_rearms() {
    let l = layer(ToyArch::split(2, 2), 1);
    let mut m = TestMachine::new(1);
    let (n, cb) = counter();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 4), Target::Cpu(CpuId(0))).callback(cb),
        )
        .unwrap();
    let armed = m.armed(0);
    let st = m.status_for(0, 0x1001, Access::Write, 0x4000).unwrap();

    // The trap: nothing delivered yet, slot disabled, single-step armed.
    let d = l.handle_exception(&mut m, CpuId(0), &st);
    assert_eq!(
        d,
        Dispatched {
            delivered: 0,
            strays: 0,
            stepping: true,
            resume_flag: false
        }
    );
    assert!(
        m.armed(0).is_empty(),
        "the slot must be disabled to step over the access"
    );
    assert!(m.stepping(0));
    assert_eq!(n.load(Ordering::SeqCst), 0);

    // The step completes: delivered, re-armed, single-step off.
    let d = l.handle_exception(
        &mut m,
        CpuId(0),
        &RawStatus::Power {
            dsisr: STEP,
            dar: 0,
            nip: 0x4004,
            size: 0,
        },
    );
    assert_eq!((d.delivered, d.strays, d.stepping), (1, 0, false));
    assert_eq!(m.armed(0), armed);
    assert!(!m.stepping(0));
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(l.hits(id), Ok(1));
    let ev = events(&l);
    assert!(
        matches!(ev.as_slice(), [(_, Record::Sample(s))] if s.ip == 0x4000 && s.addr == 0x1001),
        "the sample names the access instruction and address: {ev:?}"
    );
}

#[test]
fn hit_in_the_widened_range_outside_the_requested_one_is_a_stray_but_still_stepped_over() {
    // Requested 0x1004..0x1008; the hardware watches the doubleword 0x1000..0x1008.
    let l = layer(ToyArch::split(1, 1).widening(), 1);
    let mut m = TestMachine::new(1);
    let (n, cb) = counter();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1004, 4), Target::Cpu(CpuId(0))).callback(cb),
        )
        .unwrap();
    let (d, step) = m.access(&l, 0, 0x1001, Access::Write);
    assert_eq!(
        (d.delivered, d.strays, d.stepping),
        (0, 1, true),
        "stepped so the CPU makes progress"
    );
    assert_eq!(step.unwrap().delivered, 0);
    assert!(!m.stepping(0));
    assert_eq!(m.armed(0).len(), 1, "re-armed after the step");
    assert_eq!(n.load(Ordering::SeqCst), 0);
    assert!(events(&l).is_empty(), "a stray makes no event");
    assert_eq!(l.hits(id), Ok(0));
    // Inside the requested range: delivered.
    let (_, step) = m.access(&l, 0, 0x1006, Access::Write);
    assert_eq!(step.unwrap().delivered, 1);
}

#[test]
fn a_hit_in_an_empty_slot_is_a_stray() {
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    l.register(
        &mut m,
        Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(0))),
    )
    .unwrap();
    let d = l.handle_exception(
        &mut m,
        CpuId(0),
        &RawStatus::Power {
            dsisr: 1 << 3,
            dar: 0,
            nip: 0,
            size: 0,
        },
    );
    assert_eq!((d.delivered, d.strays), (0, 1));
    assert!(events(&l).is_empty());
}

#[test]
fn unregister_during_a_step_over_cancels_the_delivery() {
    let l = layer(ToyArch::split(1, 1), 1);
    let mut m = TestMachine::new(1);
    let (n, cb) = counter();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(0))).callback(cb),
        )
        .unwrap();
    let st = m.status_for(0, 0x10, Access::Write, 0).unwrap();
    assert!(l.handle_exception(&mut m, CpuId(0), &st).stepping);
    l.unregister(&mut m, id).unwrap();
    let d = l.handle_exception(
        &mut m,
        CpuId(0),
        &RawStatus::Power {
            dsisr: STEP,
            dar: 0,
            nip: 4,
            size: 0,
        },
    );
    assert_eq!((d.delivered, d.strays), (0, 1));
    assert_eq!(n.load(Ordering::SeqCst), 0);
    assert!(
        m.regs_of(0).live().is_empty(),
        "not re-armed after unregister"
    );
    assert!(!m.stepping(0));
}

#[test]
fn a_step_completion_with_nothing_pending_is_not_a_hit() {
    let l = layer(ToyArch::split(1, 1), 1);
    let mut m = TestMachine::new(1);
    let d = l.handle_exception(
        &mut m,
        CpuId(0),
        &RawStatus::Power {
            dsisr: STEP,
            dar: 0,
            nip: 4,
            size: 0,
        },
    );
    assert_eq!(d, Dispatched::default());
}

#[test]
fn an_exception_on_an_unknown_cpu_is_ignored() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let d = l.handle_exception(
        &mut m,
        CpuId(5),
        &RawStatus::Power {
            dsisr: 1,
            dar: 0,
            nip: 0,
            size: 0,
        },
    );
    assert_eq!(d, Dispatched::default());
}

// ---- the real x86-64 backend ----

fn x86(cpus: usize) -> Layer {
    Layer::new(Box::new(X86_64::default()), cpus, 64)
}

#[test]
fn x86_execute_hit_is_delivered_with_resume_flag_and_no_step_over() {
    let l = x86(2);
    let mut m = TestMachine::new(2);
    let (n, cb) = counter();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::exec(0x40_1000), Target::AllCpus).callback(cb),
        )
        .unwrap();
    for c in 0..2 {
        let r = m.regs_of(c).0;
        assert_eq!(r.get(&Reg::Addr(Pool::Data, 0)), Some(&0x40_1000));
        let dr7 = r[&Reg::Control];
        assert_eq!(dr7 & 1, 1, "L0 set");
        assert_eq!((dr7 >> 16) & 0xf, 0, "RW=00 exec, LEN=00");
    }
    let d = l.handle_exception(
        &mut m,
        CpuId(1),
        &RawStatus::X86 {
            dr6: 1,
            ip: 0x40_1000,
        },
    );
    assert_eq!(
        d,
        Dispatched {
            delivered: 1,
            strays: 0,
            stepping: false,
            resume_flag: true
        }
    );
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(l.hits(id), Ok(1));
}

#[test]
fn x86_data_hit_is_delivered_after_the_access_without_resume_flag() {
    let l = x86(1);
    let mut m = TestMachine::new(1);
    l.register(
        &mut m,
        Request::new(BpAttr::exec(0x40_1000), Target::Cpu(CpuId(0))),
    )
    .unwrap();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x7000, 8), Target::Cpu(CpuId(0))),
        )
        .unwrap();
    let dr7 = m.regs_of(0).0[&Reg::Control];
    assert_eq!(
        (dr7 >> 20) & 0xf,
        0b1001,
        "slot 1: RW=01 write, LEN=10 (8 bytes)"
    );
    let d = l.handle_exception(
        &mut m,
        CpuId(0),
        &RawStatus::X86 {
            dr6: 0b10,
            ip: 0x40_2003,
        },
    );
    assert_eq!(
        d,
        Dispatched {
            delivered: 1,
            strays: 0,
            stepping: false,
            resume_flag: false
        }
    );
    let ev = events(&l);
    assert!(
        matches!(ev.as_slice(), [(_, Record::Sample(s))] if s.bp == id && s.ip == 0x40_2003 && s.addr == 0x7000),
        "x86 reports no data address: the sample carries the watched one: {ev:?}"
    );
}

#[test]
fn x86_fifth_breakpoint_on_a_cpu_is_no_slot() {
    let l = x86(1);
    let mut m = TestMachine::new(1);
    for i in 0..4 {
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x1000 + 8 * i, 8), Target::Cpu(CpuId(0))),
        )
        .unwrap();
    }
    let e = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x2000, 8), Target::Cpu(CpuId(0))),
        )
        .unwrap_err();
    assert!(
        matches!(e, hwbreak_core::Error::NoSlot { total: 4, .. }),
        "{e}"
    );
    assert_eq!(l.installed(CpuId(0)).len(), 4);
}

#[test]
fn x86_read_only_is_refused_by_the_arch_before_booking() {
    let l = x86(1);
    let mut m = TestMachine::new(1);
    let e = l
        .register(
            &mut m,
            Request::new(BpAttr::new(0x1000, 4, Access::Read), Target::Cpu(CpuId(0))),
        )
        .unwrap_err();
    assert!(matches!(e, hwbreak_core::Error::Arch(_)), "{e}");
    assert!(e.to_string().contains("rw"), "the error suggests rw: {e}");
    assert_eq!(m.writes(), 0);
}

/// Thread B dispatches hits of one breakpoint in a loop; thread A unregisters
/// it. Any callback that *starts* after `unregister` returned is a bug.
#[test]
fn no_callback_runs_after_unregister_returns_while_another_thread_dispatches() {
    for round in 0..20 {
        let l = Arc::new(x86(2));
        let base = TestMachine::new(2);
        let mut ma = base.clone();
        let returned = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(AtomicU64::new(0));
        let (r2, late2, del2) = (returned.clone(), late.clone(), delivered.clone());
        let id = l
            .register(
                &mut ma,
                Request::new(BpAttr::write(0x8000, 8), Target::Cpu(CpuId(1))).callback(move |_| {
                    if r2.load(Ordering::SeqCst) {
                        late2.fetch_add(1, Ordering::SeqCst);
                    }
                    // Stay inside a while, so unregister really has to wait.
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                    if r2.load(Ordering::SeqCst) {
                        late2.fetch_add(1, Ordering::SeqCst);
                    }
                    del2.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (lb, stop2) = (l.clone(), stop.clone());
        let mut mb = base.clone();
        let b = std::thread::spawn(move || {
            let mut strays = 0;
            while !stop2.load(Ordering::SeqCst) {
                // The hardware status as DR6 would read it; the decode masks it
                // by DR7, so after the uninstall nothing fires.
                let d = lb.handle_exception(&mut mb, CpuId(1), &RawStatus::X86 { dr6: 1, ip: 0 });
                strays += d.strays;
            }
            strays
        });
        // Let B deliver some hits first, so the race is real.
        while delivered.load(Ordering::SeqCst) < 5 {
            std::hint::spin_loop();
        }
        l.unregister(&mut ma, id).unwrap();
        returned.store(true, Ordering::SeqCst);
        let after = delivered.load(Ordering::SeqCst);
        for _ in 0..1000 {
            std::hint::spin_loop();
        }
        stop.store(true, Ordering::SeqCst);
        b.join().unwrap();
        assert_eq!(
            late.load(Ordering::SeqCst),
            0,
            "round {round}: a callback ran after unregister returned"
        );
        assert_eq!(delivered.load(Ordering::SeqCst), after, "round {round}");
    }
}
