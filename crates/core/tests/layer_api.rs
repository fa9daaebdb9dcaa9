//! The layer's public API on a toy arch and a tiny machine: register →
//! install → hit → deliver, task switching, modify / enable / disable,
//! and every error the layer returns.

mod layer_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hwbreak_core::arch::{ArchError, Pool};
use hwbreak_core::events::Record;
use hwbreak_core::layer::{Hit, InstalledBp, Request};

/// The data-pool register `slot`, holding `bp`.
fn slot(slot: usize, bp: BpId) -> InstalledBp {
    InstalledBp {
        pool: Pool::Data,
        slot,
        bp,
    }
}
use hwbreak_core::{Access, BpAttr, BpId, CpuId, Error, Target, TaskId};
use layer_support::*;

fn cpu(c: u32) -> Target {
    Target::Cpu(CpuId(c))
}

#[test]
fn cpu_breakpoint_is_installed_at_once_and_a_hit_runs_callback_counter_and_sample() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Hit>::new()));
    let s2 = seen.clone();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 4), cpu(1))
                .cookie(77)
                .callback(move |h| s2.lock().unwrap().push(*h)),
        )
        .unwrap();
    assert_eq!(m.armed(1), vec![(Pool::Data, 0, 0x1000, 4, 2)]);
    assert!(
        m.armed(0).is_empty(),
        "a CPU-1 breakpoint must not reach CPU 0"
    );

    // Writes on CPU 0 do not fire; a read does not fire a write watch.
    assert_eq!(m.access(&l, 0, 0x1000, Access::Write).0.delivered, 0);
    assert_eq!(m.access(&l, 1, 0x1002, Access::Read).0.delivered, 0);
    let (d, step) = m.access(&l, 1, 0x1002, Access::Write);
    assert_eq!((d.delivered, d.strays, d.stepping), (1, 0, false));
    assert!(step.is_none());
    assert_eq!(l.hits(id), Ok(1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].bp, seen[0].cookie, seen[0].cpu, seen[0].addr),
        (id, 77, CpuId(1), 0x1002)
    );
    let ev = events(&l);
    assert!(
        matches!(ev.as_slice(), [(CpuId(1), Record::Sample(s))] if s.bp == id && s.addr == 0x1002),
        "{ev:?}"
    );
}

#[test]
fn unregister_clears_the_registers_and_frees_the_slot() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let a = l
        .register(&mut m, Request::new(BpAttr::write(0x10, 8), cpu(0)))
        .unwrap();
    assert!(matches!(
        l.register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0))),
        Err(Error::NoSlot {
            pool: Pool::Data,
            cpu: CpuId(0),
            total: 1,
            ..
        })
    ));
    l.unregister(&mut m, a).unwrap();
    assert!(m.regs_of(0).live().is_empty(), "{:?}", m.regs_of(0));
    assert_eq!(l.unregister(&mut m, a), Err(Error::UnknownBreakpoint(a)));
    assert!(!l.is_registered(a));
    let b = l
        .register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0)))
        .unwrap();
    assert_ne!(a, b, "ids are never reused");
}

#[test]
fn task_breakpoint_is_installed_exactly_while_the_task_runs() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let t = TaskId(7);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x2000, 8), Target::Task(t)),
        )
        .unwrap();
    assert!(m.armed(0).is_empty() && m.armed(1).is_empty());

    m.set_current(1, Some(t));
    l.switch_task(&mut m, CpuId(1), None, Some(t), false);
    assert_eq!(m.armed(1).len(), 1);
    assert_eq!(m.access(&l, 1, 0x2000, Access::Write).0.delivered, 1);

    // Migrates to CPU 0.
    m.set_current(1, None);
    l.switch_task(&mut m, CpuId(1), Some(t), None, true);
    assert!(m.armed(1).is_empty());
    m.set_current(0, Some(t));
    l.switch_task(&mut m, CpuId(0), None, Some(t), false);
    assert_eq!(m.armed(0).len(), 1);
    assert_eq!(l.installed(CpuId(0)), vec![slot(0, id)]);

    // Another task arrives: ours leaves.
    l.switch_task(&mut m, CpuId(0), Some(t), Some(TaskId(8)), false);
    assert!(m.armed(0).is_empty());
    assert_eq!(m.access(&l, 0, 0x2000, Access::Write).0.delivered, 0);
    assert_eq!(l.hits(id), Ok(1));

    // Rings are per CPU: order by timestamp to see the global sequence.
    let mut switches: Vec<(u64, TaskId, bool, bool)> = events(&l)
        .into_iter()
        .filter_map(|(_, r)| match r {
            Record::Switch {
                task,
                departs,
                voluntary,
                time,
                ..
            } => Some((time, task, departs, voluntary)),
            _ => None,
        })
        .collect();
    switches.sort();
    let switches: Vec<(TaskId, bool, bool)> =
        switches.into_iter().map(|(_, t, d, v)| (t, d, v)).collect();
    assert_eq!(
        switches,
        vec![
            (t, false, false),
            (t, true, true),
            (t, false, false),
            (t, true, false),
            (TaskId(8), false, false)
        ]
    );
}

#[test]
fn task_already_running_at_registration_gets_its_breakpoint_at_once() {
    let l = layer(ToyArch::mixed(4), 3);
    let mut m = TestMachine::new(3);
    m.set_current(2, Some(TaskId(5)));
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x30, 4), Target::Task(TaskId(5))),
        )
        .unwrap();
    assert_eq!(l.installed(CpuId(2)), vec![slot(0, id)]);
    assert_eq!(m.access(&l, 2, 0x30, Access::Write).0.delivered, 1);
}

/// A machine that knows where each task runs (as a kernel does through
/// `task_cpu()` + `task_curr()`) and counts how often the layer asks
/// `current` instead.
struct Knows {
    m: TestMachine,
    current_calls: std::cell::Cell<usize>,
}

impl hwbreak_core::Machine for Knows {
    fn possible_cpus(&self) -> usize {
        self.m.possible_cpus()
    }
    fn is_online(&self, cpu: CpuId) -> bool {
        self.m.is_online(cpu)
    }
    fn regs(&mut self, cpu: CpuId) -> &mut dyn hwbreak_core::arch::DebugRegs {
        self.m.regs(cpu)
    }
    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.current_calls.set(self.current_calls.get() + 1);
        self.m.current(cpu)
    }
    fn running_on(&self, task: TaskId) -> Option<CpuId> {
        let st = self.m.st.lock().unwrap();
        let c = st.current.iter().position(|&t| t == Some(task))?;
        Some(CpuId(c as u32))
    }
    fn single_step(&mut self) -> Option<&mut dyn hwbreak_core::SingleStep> {
        self.m.single_step()
    }
    fn now(&self) -> u64 {
        self.m.now()
    }
}

#[test]
fn task_registration_asks_the_machine_where_the_task_runs_instead_of_scanning_cpus() {
    let l = layer(ToyArch::mixed(4), 1024);
    let mut m = Knows {
        m: TestMachine::new(1024),
        current_calls: Default::default(),
    };
    m.m.set_current(900, Some(TaskId(7)));
    // A new thread: not running anywhere. Booked, installed nowhere, and the
    // layer did not ask every CPU's `current` (it used to: 1024 calls).
    let idle = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x30, 4), Target::Task(TaskId(8))),
        )
        .unwrap();
    assert!(
        m.current_calls.get() <= 1,
        "{} calls",
        m.current_calls.get()
    );
    // A running task: found on its CPU and installed there at once.
    m.current_calls.set(0);
    let live = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x40, 4), Target::Task(TaskId(7))),
        )
        .unwrap();
    assert!(
        m.current_calls.get() <= 1,
        "{} calls",
        m.current_calls.get()
    );
    assert_eq!(l.installed(CpuId(900)), vec![slot(0, live)]);
    assert!((0..1024).all(|c| !l.installed(CpuId(c)).iter().any(|x| x.bp == idle)));
}

#[test]
fn default_running_on_finds_the_task_only_on_an_online_cpu() {
    // TestMachine does not override `running_on`: the default scan.
    let m = TestMachine::new(3);
    m.set_current(1, Some(TaskId(5)));
    m.set_online(1, false);
    assert_eq!(hwbreak_core::Machine::running_on(&m, TaskId(5)), None);
    m.set_online(1, true);
    assert_eq!(
        hwbreak_core::Machine::running_on(&m, TaskId(5)),
        Some(CpuId(1))
    );
    assert_eq!(hwbreak_core::Machine::running_on(&m, TaskId(6)), None);
}

#[test]
fn task_on_cpu_breakpoint_is_installed_only_on_its_cpu() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let t = TaskId(3);
    l.register(
        &mut m,
        Request::new(BpAttr::write(0x40, 4), Target::TaskOnCpu(t, CpuId(1))),
    )
    .unwrap();
    m.set_current(0, Some(t));
    l.switch_task(&mut m, CpuId(0), None, Some(t), false);
    assert!(m.armed(0).is_empty());
    l.switch_task(&mut m, CpuId(0), Some(t), None, false);
    m.set_current(1, Some(t));
    l.switch_task(&mut m, CpuId(1), None, Some(t), false);
    assert_eq!(m.armed(1).len(), 1);
}

#[test]
fn tasks_do_not_compete_but_cpu_breakpoints_do() {
    // 2 slots: two tasks with 2 each fit (only one runs at a time); a CPU
    // breakpoint beside a task with 2 does not.
    let l = layer(ToyArch::mixed(2), 1);
    let mut m = TestMachine::new(1);
    for t in [1, 2] {
        for a in [0x100, 0x200] {
            l.register(
                &mut m,
                Request::new(BpAttr::write(a, 8), Target::Task(TaskId(t))),
            )
            .unwrap();
        }
    }
    assert!(matches!(
        l.register(&mut m, Request::new(BpAttr::write(0x300, 8), cpu(0))),
        Err(Error::NoSlot { .. })
    ));
    l.switch_task(&mut m, CpuId(0), None, Some(TaskId(1)), false);
    assert_eq!(m.armed(0).len(), 2);
    l.switch_task(&mut m, CpuId(0), Some(TaskId(1)), Some(TaskId(2)), false);
    assert_eq!(
        m.armed(0).len(),
        2,
        "the outgoing task's breakpoints left, the incoming's arrived"
    );
}

#[test]
fn task_exit_unregisters_its_breakpoints() {
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    let t = TaskId(9);
    m.set_current(0, Some(t));
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x40, 4), Target::Task(t)),
        )
        .unwrap();
    assert_eq!(m.armed(0).len(), 1);
    l.task_exit(&mut m, t);
    assert!(!l.is_registered(id));
    assert!(m.armed(0).is_empty());
}

#[test]
fn bad_cpu_targets_are_refused_with_no_such_cpu_or_cpu_offline() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let before = l.snapshot();
    assert_eq!(
        l.register(&mut m, Request::new(BpAttr::write(0x10, 4), cpu(2))),
        Err(Error::NoSuchCpu {
            cpu: CpuId(2),
            possible: 2
        })
    );
    assert_eq!(
        l.register(
            &mut m,
            Request::new(
                BpAttr::write(0x10, 4),
                Target::TaskOnCpu(TaskId(1), CpuId(9))
            )
        ),
        Err(Error::NoSuchCpu {
            cpu: CpuId(9),
            possible: 2
        })
    );
    m.set_online(1, false);
    assert_eq!(
        l.register(&mut m, Request::new(BpAttr::write(0x10, 4), cpu(1))),
        Err(Error::CpuOffline(CpuId(1)))
    );
    assert_eq!(l.snapshot(), before);
}

#[test]
fn arch_errors_come_before_any_booking() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let before = l.snapshot();
    let e = l
        .register(&mut m, Request::new(BpAttr::write(0x1002, 4), cpu(0)))
        .unwrap_err();
    assert!(matches!(e, Error::Arch(ArchError::Unaligned { .. })), "{e}");
    let e = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 3), Target::AllCpus),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Arch(ArchError::BadLength { .. })), "{e}");
    assert_eq!(
        l.snapshot(),
        before,
        "a refused attribute books nothing and takes no id"
    );
    assert_eq!(m.writes(), 0);
}

#[test]
fn a_pool_the_arch_lacks_is_no_such_pool() {
    // Split pools with no instruction slots: an execute breakpoint has nowhere to go.
    let l = layer(ToyArch::split(0, 2), 1);
    let mut m = TestMachine::new(1);
    assert_eq!(
        l.register(&mut m, Request::new(BpAttr::exec(0x400), cpu(0))),
        Err(Error::NoSuchPool { pool: Pool::Inst })
    );
    assert_eq!(
        l.debugger().try_reserve(Pool::Inst),
        Err(Error::NoSuchPool { pool: Pool::Inst })
    );
    let id = l
        .register(&mut m, Request::new(BpAttr::write(0x400, 4), cpu(0)))
        .unwrap();
    assert_eq!(
        l.modify(&mut m, id, BpAttr::exec(0x400)),
        Err(Error::NoSuchPool { pool: Pool::Inst })
    );
}

#[test]
fn unknown_ids_are_refused_by_every_call() {
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    let x = BpId(4242);
    assert_eq!(l.unregister(&mut m, x), Err(Error::UnknownBreakpoint(x)));
    assert_eq!(
        l.modify(&mut m, x, BpAttr::write(0, 1)),
        Err(Error::UnknownBreakpoint(x))
    );
    assert_eq!(l.enable(&mut m, x), Err(Error::UnknownBreakpoint(x)));
    assert_eq!(l.disable(&mut m, x), Err(Error::UnknownBreakpoint(x)));
    assert_eq!(l.hits(x), Err(Error::UnknownBreakpoint(x)));
    assert_eq!(l.attr(x), Err(Error::UnknownBreakpoint(x)));
}

#[test]
fn a_failed_registration_takes_no_id() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let a = l
        .register(&mut m, Request::new(BpAttr::write(0x10, 8), cpu(0)))
        .unwrap();
    let before = l.snapshot();
    assert!(l
        .register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0)))
        .is_err());
    assert_eq!(l.snapshot(), before);
    l.unregister(&mut m, a).unwrap();
    let b = l
        .register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0)))
        .unwrap();
    assert_eq!(b.0, a.0 + 1);
}

#[test]
fn modify_moves_the_watch_on_every_cpu_where_it_is_live() {
    let l = layer(ToyArch::mixed(4), 3);
    let mut m = TestMachine::new(3);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 4), Target::AllCpus),
        )
        .unwrap();
    l.modify(&mut m, id, BpAttr::read_write(0x2000, 8)).unwrap();
    for c in 0..3 {
        assert_eq!(m.armed(c), vec![(Pool::Data, 0, 0x2000, 8, 3)], "cpu {c}");
        assert_eq!(m.access(&l, c, 0x1000, Access::Write).0.delivered, 0);
        assert_eq!(m.access(&l, c, 0x2004, Access::Read).0.delivered, 1);
    }
    assert_eq!(l.attr(id).unwrap(), BpAttr::read_write(0x2000, 8));
    assert_eq!(l.hits(id), Ok(3));
}

#[test]
fn modify_that_the_arch_refuses_leaves_the_old_shape_untouched() {
    let l = layer(ToyArch::mixed(4), 2);
    let mut m = TestMachine::new(2);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 4), Target::AllCpus),
        )
        .unwrap();
    let (snap, regs) = (l.snapshot(), m.all_regs());
    assert!(matches!(
        l.modify(&mut m, id, BpAttr::write(0x1001, 4)),
        Err(Error::Arch(_))
    ));
    assert_eq!((l.snapshot(), m.all_regs()), (snap, regs));
}

#[test]
fn modify_to_a_full_pool_fails_with_no_slot_and_keeps_the_old_shape() {
    // Split pools: 1 instruction slot, 1 data slot. The data slot is taken;
    // moving the execute breakpoint to a data watch must fail and leave it as it was.
    let l = layer(ToyArch::split(1, 1), 1);
    let mut m = TestMachine::new(1);
    let x = l
        .register(&mut m, Request::new(BpAttr::exec(0x400), cpu(0)))
        .unwrap();
    l.register(&mut m, Request::new(BpAttr::write(0x800, 8), cpu(0)))
        .unwrap();
    let (snap, regs) = (l.snapshot(), m.all_regs());
    let e = l.modify(&mut m, x, BpAttr::write(0x900, 8)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSlot {
                pool: Pool::Data,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(l.snapshot(), snap);
    assert_eq!(m.all_regs(), regs, "no register written by a failed modify");
    assert_eq!(l.attr(x).unwrap(), BpAttr::exec(0x400));
}

#[test]
fn modify_across_pools_rebooks_and_reinstalls() {
    let l = layer(ToyArch::split(1, 1), 1);
    let mut m = TestMachine::new(1);
    let x = l
        .register(&mut m, Request::new(BpAttr::exec(0x400), cpu(0)))
        .unwrap();
    l.modify(&mut m, x, BpAttr::write(0x900, 8)).unwrap();
    assert_eq!(m.armed(0), vec![(Pool::Data, 0, 0x900, 8, 2)]);
    // The instruction slot is free again, the data slot is taken.
    l.register(&mut m, Request::new(BpAttr::exec(0x404), cpu(0)))
        .unwrap();
    assert!(l
        .register(&mut m, Request::new(BpAttr::write(0x100, 8), cpu(0)))
        .is_err());
}

#[test]
fn disabled_breakpoint_keeps_its_slot_and_is_not_armed() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let id = l
        .register(&mut m, Request::new(BpAttr::write(0x10, 8), cpu(0)))
        .unwrap();
    l.disable(&mut m, id).unwrap();
    l.disable(&mut m, id).unwrap(); // idempotent
    assert!(m.armed(0).is_empty());
    assert_eq!(m.access(&l, 0, 0x10, Access::Write).0.delivered, 0);
    assert!(matches!(
        l.register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0))),
        Err(Error::NoSlot { .. })
    ));
    l.enable(&mut m, id).unwrap();
    assert_eq!(m.armed(0).len(), 1);
    assert_eq!(m.access(&l, 0, 0x10, Access::Write).0.delivered, 1);
}

#[test]
fn registered_disabled_is_armed_only_on_enable() {
    let l = layer(ToyArch::mixed(2), 2);
    let mut m = TestMachine::new(2);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8).disabled(), Target::AllCpus),
        )
        .unwrap();
    assert!(m.armed(0).is_empty() && m.armed(1).is_empty());
    l.enable(&mut m, id).unwrap();
    assert_eq!((m.armed(0).len(), m.armed(1).len()), (1, 1));
}

#[test]
fn reserve_on_enable_releases_on_disable_and_enable_can_fail_with_no_slot() {
    let l = layer(ToyArch::mixed(1), 2);
    let mut m = TestMachine::new(2);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), Target::AllCpus).reserve_on_enable(),
        )
        .unwrap();
    l.disable(&mut m, id).unwrap();
    assert!(m.armed(0).is_empty());
    // The slot is free for someone else now.
    let other = l
        .register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(1)))
        .unwrap();
    let (snap, regs) = (l.snapshot(), m.all_regs());
    let e = l.enable(&mut m, id).unwrap_err();
    assert!(matches!(e, Error::NoSlot { cpu: CpuId(1), .. }), "{e}");
    assert_eq!(
        (l.snapshot(), m.all_regs()),
        (snap, regs),
        "a failed enable changes nothing"
    );
    assert!(l.attr(id).unwrap().disabled);
    l.unregister(&mut m, other).unwrap();
    l.enable(&mut m, id).unwrap();
    assert_eq!((m.armed(0).len(), m.armed(1).len()), (1, 1));
}

#[test]
fn reserve_on_enable_registered_disabled_books_nothing() {
    let l = layer(ToyArch::mixed(1), 1);
    let mut m = TestMachine::new(1);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8).disabled(), cpu(0)).reserve_on_enable(),
        )
        .unwrap();
    let other = l
        .register(&mut m, Request::new(BpAttr::write(0x20, 8), cpu(0)))
        .unwrap();
    assert!(matches!(l.enable(&mut m, id), Err(Error::NoSlot { .. })));
    l.unregister(&mut m, other).unwrap();
    l.enable(&mut m, id).unwrap();
    assert_eq!(m.armed(0), vec![(Pool::Data, 0, 0x10, 8, 2)]);
}

#[test]
fn callback_gets_the_cookie_and_counter_counts_only_delivered_hits() {
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x10, 8), cpu(0))
                .cookie(5)
                .callback(move |h| {
                    assert_eq!(h.cookie, 5);
                    n2.fetch_add(1, Ordering::SeqCst);
                }),
        )
        .unwrap();
    for _ in 0..10 {
        m.access(&l, 0, 0x14, Access::Write);
    }
    assert_eq!(n.load(Ordering::SeqCst), 10);
    assert_eq!(l.hits(id), Ok(10));
}

#[test]
fn layer_is_send_and_sync_so_cpus_can_share_it() {
    fn shared<T: Send + Sync>() {}
    shared::<hwbreak_core::layer::Layer>();
}
