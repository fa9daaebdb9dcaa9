//! Tasks, programs, the seeded scheduler, and every simulator error.

mod support;

use hwbreak_core::arch::{Pool, Reg};
use hwbreak_core::{Access, BpAttr, CpuId, Machine, Target, TaskId};
use hwbreak_sim::hw::Arm64Hw;
use hwbreak_sim::{BpOpts, Program, Sim, SimError, TaskState, TraceEvent};
use support::*;

fn busy(sim: &mut Sim) {
    sim.register(watch(0x1000), Target::AllCpus).unwrap();
    let p = Program::new()
        .write(0x1000, 8)
        .read(0x1000, 8)
        .yield_now()
        .nop()
        .repeat();
    for _ in 0..5 {
        sim.spawn(p.clone());
    }
}

#[test]
fn same_seed_gives_the_same_run_and_another_seed_a_different_one() {
    let trace = |seed| {
        let mut sim = sim(Kind::Arm64, 4, seed);
        busy(&mut sim);
        sim.run(400).unwrap();
        (sim.trace().to_vec(), sim.hits())
    };
    assert_eq!(trace(11), trace(11));
    assert_ne!(trace(11).0, trace(12).0);
}

#[test]
fn scheduler_runs_tasks_on_every_cpu_and_switches_them() {
    let mut sim = sim(Kind::X86, 4, 5);
    busy(&mut sim);
    let s = sim.run(2000).unwrap();
    assert!(s.switches > 50);
    let cpus: std::collections::BTreeSet<_> = sim.hits().iter().map(|h| h.cpu).collect();
    assert_eq!(cpus.len(), 4, "hits on every CPU");
    let tasks: std::collections::BTreeSet<_> = sim.hits().iter().map(|h| h.task).collect();
    assert_eq!(tasks.len(), 5);
    // A task never runs on two CPUs at once.
    let mut running = std::collections::BTreeMap::new();
    for e in sim.trace() {
        if let TraceEvent::Switch { cpu, prev, next } = e {
            if let Some(p) = prev {
                assert_eq!(running.remove(p), Some(*cpu));
            }
            if let Some(n) = next {
                assert_eq!(running.insert(*n, *cpu), None, "{n:?} already running");
            }
        }
    }
}

#[test]
fn pinned_task_runs_only_on_its_cpu() {
    let mut sim = sim(Kind::X86, 4, 5);
    sim.register(watch(0x2000), Target::AllCpus).unwrap();
    let t = sim
        .spawn_pinned(Program::new().write(0x2000, 8).repeat(), CpuId(2))
        .unwrap();
    sim.spawn(Program::new().nop().repeat());
    sim.run(500).unwrap();
    assert!(!sim.hits().is_empty());
    assert!(sim
        .hits()
        .iter()
        .all(|h| h.cpu == CpuId(2) && h.task == Some(t)));
    let t2 = sim.spawn_pinned(Program::new().nop(), CpuId(3)).unwrap();
    assert_eq!(
        sim.switch_to(CpuId(1), Some(t2)),
        Err(SimError::TaskPinned {
            task: t2,
            cpu: CpuId(3)
        })
    );
}

#[test]
fn exit_unregisters_the_tasks_breakpoints_and_join_waits_for_children() {
    let mut sim = sim(Kind::X86, 2, 3);
    let child = Program::new().write(0x3000, 8).exit();
    let parent = sim.spawn(
        Program::new()
            .spawn(child.clone(), true)
            .spawn(child, true)
            .join()
            .write(0x3000, 8)
            .exit(),
    );
    sim.register_with(
        watch(0x3000),
        Target::Task(parent),
        BpOpts {
            inherit: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(sim.run_to_completion(10_000).unwrap());
    let s = sim.stats();
    assert_eq!((s.spawned, s.exited, s.spawn_failed), (3, 3, 0));
    // Each child's inherited copy hit once; the parent wrote after joining.
    let hits = sim.hits();
    assert_eq!(hits.len(), 3);
    let last = hits.last().unwrap();
    assert_eq!(
        last.task,
        Some(parent),
        "the parent's write comes after both children exited"
    );
    assert!(
        sim.layer.registered().is_empty(),
        "exits unregistered every breakpoint"
    );
    assert_eq!(sim.task_state(parent), Some(TaskState::Exited));
    for c in 0..2 {
        assert!(sim.hw.armed(CpuId(c)).is_empty());
    }
}

#[test]
fn spawned_child_inherits_only_inheritable_breakpoints() {
    let mut sim = sim(Kind::X86, 2, 3);
    let parent = sim.spawn(Program::new().nop());
    let inh = BpOpts {
        inherit: true,
        ..Default::default()
    };
    sim.register_with(watch(0x4000), Target::Task(parent), inh)
        .unwrap();
    sim.register_with(watch(0x4008), Target::TaskOnCpu(parent, CpuId(1)), inh)
        .unwrap();
    sim.register(watch(0x4010), Target::Task(parent)).unwrap();
    let child = sim.spawn_child(parent, Program::new().nop(), true).unwrap();
    let snap = sim.layer.snapshot();
    let mut copies: Vec<_> = snap
        .bps
        .iter()
        .filter(|b| b.target.task() == Some(child))
        .map(|b| (b.attr.addr, b.target))
        .collect();
    copies.sort_by_key(|c| c.0);
    assert_eq!(
        copies,
        vec![
            (0x4000, Target::Task(child)),
            (0x4008, Target::TaskOnCpu(child, CpuId(1)))
        ]
    );
    let plain = sim
        .spawn_child(parent, Program::new().nop(), false)
        .unwrap();
    assert!(sim
        .layer
        .snapshot()
        .bps
        .iter()
        .all(|b| b.target.task() != Some(plain)));
}

#[test]
fn machine_of_4096_cpus_runs_a_wide_breakpoint_on_the_last_cpu() {
    let mut sim = Sim::x86(4096, 1).unwrap();
    let id = sim.register(watch(0x6000), Target::AllCpus).unwrap();
    assert_eq!(sim.access(CpuId(4095), 0x6000, 8, W).unwrap().delivered, 1);
    assert_eq!(sim.hits()[0].bp, id);
    assert_eq!(sim.hw.armed(CpuId(4095)).len(), 1);
}

#[test]
fn every_simulator_error_is_reachable_and_says_what_to_do() {
    assert_eq!(
        Sim::x86(0, 1).err(),
        Some(SimError::BadCpuCount { cpus: 0 })
    );
    assert_eq!(
        Sim::x86(4097, 1).err(),
        Some(SimError::BadCpuCount { cpus: 4097 })
    );
    assert!(matches!(
        Sim::arm64_with(
            Arm64Hw {
                brps: 1,
                ..Default::default()
            },
            1,
            1
        )
        .err(),
        Some(SimError::BadSlotCount { brps: 1, .. })
    ));
    let mut sim = sim(Kind::X86, 2, 1);
    assert_eq!(
        sim.switch_to(CpuId(0), Some(TaskId(99))),
        Err(SimError::NoSuchTask(TaskId(99)))
    );
    assert_eq!(
        sim.switch_to(CpuId(5), None),
        Err(SimError::NoSuchCpu {
            cpu: CpuId(5),
            possible: 2
        })
    );
    let t = sim.spawn(Program::new().exit());
    sim.switch_to(CpuId(0), Some(t)).unwrap();
    assert_eq!(
        sim.switch_to(CpuId(1), Some(t)),
        Err(SimError::TaskRunningElsewhere {
            task: t,
            cpu: CpuId(0)
        })
    );
    sim.tick(CpuId(0)).unwrap();
    assert_eq!(sim.task_state(t), Some(TaskState::Exited));
    assert_eq!(
        sim.switch_to(CpuId(0), Some(t)),
        Err(SimError::TaskExited(t))
    );
    assert_eq!(
        sim.spawn_child(t, Program::new(), false),
        Err(SimError::TaskExited(t))
    );
    let parent = sim.spawn(
        Program::new()
            .spawn(Program::new().nop().repeat(), false)
            .join(),
    );
    sim.switch_to(CpuId(1), Some(parent)).unwrap();
    sim.tick(CpuId(1)).unwrap(); // spawn
    sim.tick(CpuId(1)).unwrap(); // join: blocks
    assert_eq!(sim.task_state(parent), Some(TaskState::Blocked));
    assert_eq!(
        sim.switch_to(CpuId(1), Some(parent)),
        Err(SimError::TaskBlocked(parent))
    );
    assert_eq!(
        sim.access(CpuId(0), 0x1000, 0, W),
        Err(SimError::BadAccess { kind: W, len: 0 })
    );
    assert_eq!(
        sim.access(CpuId(0), 0x1000, 4, Access::Execute),
        Err(SimError::BadAccess {
            kind: Access::Execute,
            len: 4
        })
    );
    assert_eq!(
        sim.access(CpuId(0), 0x1000, 65, R),
        Err(SimError::BadAccess { kind: R, len: 65 })
    );
    let e = sim
        .register(BpAttr::read_write(0x1001, 8), Target::AllCpus)
        .unwrap_err();
    assert!(SimError::from(e).to_string().contains("aligned"));
    for e in [
        SimError::CpuOffline(CpuId(1)),
        SimError::TaskBlocked(parent),
        SimError::BadCpuCount { cpus: 0 },
    ] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn writes_to_an_offline_cpu_or_missing_register_are_recorded_as_faults() {
    let mut sim = sim(Kind::X86, 2, 1);
    sim.cpu_down(CpuId(1)).unwrap();
    sim.hw
        .regs(CpuId(1))
        .write(Reg::Addr(Pool::Data, 0), 0x1000);
    sim.hw.regs(CpuId(7)).write(Reg::Control, 1);
    sim.hw.regs(CpuId(0)).write(Reg::Ctrl(Pool::Inst, 0), 1);
    let f = sim.hw.faults();
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(f[0].cpu, Some(CpuId(0)));
    assert!(f
        .iter()
        .any(|x| x.cpu == Some(CpuId(1)) && x.fault.why.contains("offline")));
    assert!(f.iter().any(|x| x.cpu.is_none()));
}

#[test]
fn machine_knows_in_o1_where_each_task_runs_through_switches_exits_and_hotplug() {
    let mut sim = sim(Kind::X86, 4, 9);
    busy(&mut sim);
    let short = Program::new().nop().exit();
    for _ in 0..3 {
        sim.spawn(short.clone());
    }
    let scan = |sim: &Sim, t: TaskId| {
        (0..4)
            .map(CpuId)
            .find(|&c| sim.hw.is_online(c) && sim.hw.current(c) == Some(t))
    };
    for step in 0..600u32 {
        match step {
            200 => sim.cpu_down(CpuId(2)).unwrap(),
            400 => sim.cpu_up(CpuId(2)).unwrap(),
            _ => sim.run(1).map(|_| ()).unwrap(),
        }
        for (t, state) in sim.tasks().collect::<Vec<_>>() {
            let want = scan(&sim, t);
            assert_eq!(sim.hw.running_on(t), want, "step {step}: {t:?}");
            assert_eq!(
                want,
                match state {
                    TaskState::Running(c) => Some(c),
                    _ => None,
                },
                "step {step}: {t:?} is {state:?}"
            );
        }
    }
}
