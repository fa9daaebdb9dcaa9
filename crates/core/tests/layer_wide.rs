//! Wide (all-CPU) breakpoints: all-or-nothing registration, rollback at every
//! failure point, no hit from a half-done request, and CPU hotplug.

mod layer_support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::{Dispatched, OnlineError, Request};
use hwbreak_core::{Access, BpAttr, CpuId, Error, Target, TaskId};
use layer_support::*;

#[test]
fn wide_breakpoint_is_installed_on_every_online_cpu_and_fires_on_each() {
    let l = layer(ToyArch::mixed(4), 4);
    let mut m = TestMachine::new(4);
    m.set_online(2, false);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x500, 8), Target::AllCpus),
        )
        .unwrap();
    for c in [0, 1, 3] {
        assert_eq!(m.armed(c), vec![(Pool::Data, 0, 0x500, 8, 2)], "cpu {c}");
        assert_eq!(m.access(&l, c, 0x507, Access::Write).0.delivered, 1);
    }
    assert!(m.armed(2).is_empty(), "an offline CPU is not written");
    assert_eq!(l.hits(id), Ok(3));
    let snap = l.snapshot();
    let bp = snap.bps.iter().find(|b| b.id == id).unwrap();
    assert_eq!(bp.members, vec![CpuId(0), CpuId(1), CpuId(3)]);
}

/// For each k, CPU k is full: the wide registration fails naming CPU k, and
/// the layer's state, every register file and the write count are exactly as
/// before; an access at the address fires nowhere.
#[test]
fn wide_register_rolls_back_when_cpu_k_is_full_for_every_k() {
    const N: u32 = 6;
    for k in 0..N {
        let l = layer(ToyArch::mixed(2), N as usize);
        let mut m = TestMachine::new(N as usize);
        for a in [0x100, 0x200] {
            l.register(
                &mut m,
                Request::new(BpAttr::write(a, 8), Target::Cpu(CpuId(k))),
            )
            .unwrap();
        }
        // Some other CPU also holds one, so rollback has real bookings to undo.
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x300, 8), Target::Cpu(CpuId((k + 1) % N))),
        )
        .unwrap();
        let (snap, regs, writes) = (l.snapshot(), m.all_regs(), m.writes());
        let called = Arc::new(AtomicBool::new(false));
        let c2 = called.clone();
        let e = l
            .register(
                &mut m,
                Request::new(BpAttr::write(0x900, 8), Target::AllCpus)
                    .callback(move |_| c2.store(true, Ordering::SeqCst)),
            )
            .unwrap_err();
        assert!(
            matches!(e, Error::NoSlot { cpu, pool: Pool::Data, held: 2, total: 2, .. } if cpu == CpuId(k)),
            "k={k}: {e}"
        );
        assert_eq!(l.snapshot(), snap, "k={k}: layer state changed");
        assert_eq!(m.all_regs(), regs, "k={k}: a register was written");
        assert_eq!(m.writes(), writes, "k={k}: a register was written");
        for c in 0..N {
            assert_eq!(
                m.access(&l, c, 0x900, Access::Write).0,
                Dispatched::default(),
                "k={k} cpu={c}"
            );
        }
        assert!(!called.load(Ordering::SeqCst));
    }
}

#[test]
fn a_hit_during_wide_commit_is_a_stray_and_never_reaches_the_callback() {
    // While the layer programs CPU 2 (the last), CPU 0 (already programmed)
    // takes a hit: the request is half-done, so it must be filtered.
    let base = TestMachine::new(3);
    let l = Arc::new(layer(ToyArch::mixed(4), 3));
    let seen: Arc<Mutex<Vec<Dispatched>>> = Arc::default();
    let (l2, seen2, probe) = (l.clone(), seen.clone(), base.clone());
    let mut m = base.with_hook(Arc::new(move |cpu, _reg, _v| {
        if cpu == CpuId(2) && seen2.lock().unwrap().is_empty() {
            let mut p = probe.clone();
            let d = p.access(&l2, 0, 0x600, Access::Write).0;
            seen2.lock().unwrap().push(d);
        }
    }));
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x600, 8), Target::AllCpus).callback(move |_| {
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    let d = seen.lock().unwrap()[0];
    assert_eq!(
        (d.delivered, d.strays),
        (0, 1),
        "the hardware fired but the request was half-done"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Once registered, the same access delivers.
    assert_eq!(m.access(&l, 0, 0x600, Access::Write).0.delivered, 1);
    assert_eq!(l.hits(id), Ok(1));
}

#[test]
fn unregister_wide_clears_every_cpu_and_releases_every_booking() {
    let l = layer(ToyArch::mixed(1), 3);
    let mut m = TestMachine::new(3);
    let empty = l.snapshot();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x500, 8), Target::AllCpus),
        )
        .unwrap();
    l.unregister(&mut m, id).unwrap();
    for c in 0..3 {
        assert!(m.regs_of(c).live().is_empty(), "cpu {c}");
    }
    let after = l.snapshot();
    assert_eq!(after.slots, empty.slots);
    assert!(after.bps.is_empty());
    for c in 0..3 {
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::Cpu(CpuId(c))),
        )
        .unwrap();
    }
}

#[test]
fn cpu_coming_online_gets_every_wide_breakpoint() {
    let l = layer(ToyArch::mixed(4), 3);
    let mut m = TestMachine::new(3);
    m.set_online(2, false);
    l.cpu_offline(&mut m, CpuId(2));
    let a = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x500, 8), Target::AllCpus),
        )
        .unwrap();
    let b = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x600, 8).disabled(), Target::AllCpus),
        )
        .unwrap();
    assert!(m.armed(2).is_empty());
    m.set_online(2, true);
    assert_eq!(l.cpu_online(&mut m, CpuId(2)), Ok(()));
    assert_eq!(
        m.armed(2),
        vec![(Pool::Data, 0, 0x500, 8, 2)],
        "the disabled one is booked, not armed"
    );
    assert_eq!(m.access(&l, 2, 0x500, Access::Write).0.delivered, 1);
    l.enable(&mut m, b).unwrap();
    assert_eq!(m.armed(2).len(), 2);
    let snap = l.snapshot();
    for bp in &snap.bps {
        assert_eq!(
            bp.members,
            vec![CpuId(0), CpuId(1), CpuId(2)],
            "{:?}",
            bp.id
        );
    }
    let _ = a;
}

#[test]
fn cpu_coming_online_reports_the_wide_breakpoint_that_does_not_fit() {
    let l = layer(ToyArch::mixed(2), 3);
    let mut m = TestMachine::new(3);
    m.set_online(2, false);
    l.cpu_offline(&mut m, CpuId(2));
    // A task pinned to CPU 2 holds one of its two slots.
    l.register(
        &mut m,
        Request::new(
            BpAttr::write(0x100, 8),
            Target::TaskOnCpu(TaskId(1), CpuId(2)),
        ),
    )
    .unwrap();
    let a = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x500, 8), Target::AllCpus),
        )
        .unwrap();
    let b = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x600, 8), Target::AllCpus),
        )
        .unwrap();
    m.set_online(2, true);
    let OnlineError { bp: who, error: e } = l.cpu_online(&mut m, CpuId(2)).unwrap_err();
    assert_eq!(who, b);
    assert!(matches!(e, Error::NoSlot { cpu: CpuId(2), .. }), "{e}");
    // a joined CPU 2; b stays registered on 0 and 1.
    assert_eq!(m.armed(2), vec![(Pool::Data, 0, 0x500, 8, 2)]);
    let snap = l.snapshot();
    let members = |id| {
        snap.bps
            .iter()
            .find(|x| x.id == id)
            .unwrap()
            .members
            .clone()
    };
    assert_eq!(members(a), vec![CpuId(0), CpuId(1), CpuId(2)]);
    assert_eq!(members(b), vec![CpuId(0), CpuId(1)]);
    assert_eq!(m.access(&l, 1, 0x600, Access::Write).0.delivered, 1);
}

#[test]
fn cpu_going_offline_drops_its_breakpoints_and_keeps_wide_ones_elsewhere() {
    let l = layer(ToyArch::mixed(4), 3);
    let mut m = TestMachine::new(3);
    let wide = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x500, 8), Target::AllCpus),
        )
        .unwrap();
    let bound = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x600, 8), Target::Cpu(CpuId(1))),
        )
        .unwrap();
    let t = TaskId(4);
    m.set_current(1, Some(t));
    l.switch_task(&mut m, CpuId(1), None, Some(t), false);
    let task_bp = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x700, 8), Target::Task(t)),
        )
        .unwrap();
    assert_eq!(m.armed(1).len(), 3);

    l.cpu_offline(&mut m, CpuId(1));
    m.set_online(1, false);
    m.set_current(1, None);
    assert!(m.regs_of(1).live().is_empty(), "{:?}", m.regs_of(1));
    assert!(l.installed(CpuId(1)).is_empty());
    assert!(
        !l.is_registered(bound),
        "a breakpoint bound to the offline CPU is dropped"
    );
    assert!(l.is_registered(wide) && l.is_registered(task_bp));
    for c in [0, 2] {
        assert_eq!(m.access(&l, c, 0x500, Access::Write).0.delivered, 1);
    }
    assert_eq!(
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x600, 8), Target::Cpu(CpuId(1)))
        ),
        Err(Error::CpuOffline(CpuId(1)))
    );
    // The dropped breakpoint's slot is free again once the CPU is back:
    // 4 slots = the wide one + the task's one + 2 free.
    m.set_online(1, true);
    assert_eq!(l.cpu_online(&mut m, CpuId(1)), Ok(()));
    assert_eq!(m.armed(1).len(), 1);
    for a in [0x10, 0x20] {
        l.register(
            &mut m,
            Request::new(BpAttr::write(a, 8), Target::Cpu(CpuId(1))),
        )
        .unwrap();
    }
    assert!(matches!(
        l.register(
            &mut m,
            Request::new(BpAttr::write(0x30, 8), Target::Cpu(CpuId(1)))
        ),
        Err(Error::NoSlot {
            cpu_bound: 3,
            task_max: 1,
            ..
        })
    ));
    // The task comes back on CPU 0 with its breakpoint.
    m.set_current(0, Some(t));
    l.switch_task(&mut m, CpuId(0), None, Some(t), false);
    assert_eq!(m.access(&l, 0, 0x700, Access::Write).0.delivered, 1);
}

#[test]
fn offline_and_online_round_trip_restores_the_same_books() {
    let l = layer(ToyArch::mixed(4), 4);
    let mut m = TestMachine::new(4);
    for a in [0x100, 0x200] {
        l.register(&mut m, Request::new(BpAttr::write(a, 8), Target::AllCpus))
            .unwrap();
    }
    let before = l.snapshot();
    l.cpu_offline(&mut m, CpuId(3));
    m.set_online(3, false);
    assert_ne!(l.snapshot(), before);
    m.set_online(3, true);
    l.cpu_online(&mut m, CpuId(3)).unwrap();
    let after = l.snapshot();
    assert_eq!(after.slots, before.slots);
    assert_eq!(after.bps, before.bps);
    assert_eq!(after.installed[3].len(), 2);
}

#[test]
fn modify_of_a_wide_breakpoint_rolls_back_when_one_cpu_has_no_room_in_the_new_pool() {
    // Split pools 1+1 on 3 CPUs. The wide breakpoint is an execute one; CPU 2's
    // data slot is taken, so moving it to a data watch must fail everywhere.
    let l = layer(ToyArch::split(1, 1), 3);
    let mut m = TestMachine::new(3);
    let id = l
        .register(&mut m, Request::new(BpAttr::exec(0x400), Target::AllCpus))
        .unwrap();
    l.register(
        &mut m,
        Request::new(BpAttr::write(0x800, 8), Target::Cpu(CpuId(2))),
    )
    .unwrap();
    let (snap, regs) = (l.snapshot(), m.all_regs());
    let e = l.modify(&mut m, id, BpAttr::write(0x900, 8)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSlot {
                cpu: CpuId(2),
                pool: Pool::Data,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(l.snapshot(), snap);
    assert_eq!(m.all_regs(), regs);
}
