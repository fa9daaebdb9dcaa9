//! CPU hotplug with wide breakpoints: they follow a CPU that comes online,
//! leave cleanly when it goes offline, and hit only where installed.

mod support;

use hwbreak_core::{CpuId, Target};
use hwbreak_sim::{Program, SimError, TaskState};
use support::*;

const V: u64 = 0x9000;

fn armed_on(sim: &hwbreak_sim::Sim, cpu: u32, addr: u64) -> bool {
    sim.hw
        .armed(CpuId(cpu))
        .iter()
        .any(|a| a.addr <= addr && addr < a.addr + a.len)
}

#[test]
fn wide_breakpoint_follows_a_cpu_that_comes_online() {
    for kind in ALL {
        let mut sim = sim(kind, 4, 1);
        sim.cpu_down(CpuId(2)).unwrap();
        let id = sim.register(watch(V), Target::AllCpus).unwrap();
        assert!(!armed_on(&sim, 2, V), "{kind:?}: not on the offline CPU");
        assert_eq!(
            sim.access(CpuId(2), V, 8, W),
            Err(SimError::CpuOffline(CpuId(2))),
            "an offline CPU runs nothing"
        );
        sim.cpu_up(CpuId(2)).unwrap();
        assert!(armed_on(&sim, 2, V), "{kind:?}: followed CPU 2 online");
        assert_eq!(sim.access(CpuId(2), V, 8, W).unwrap().delivered, 1);
        let snap = sim.layer.snapshot();
        let members = &snap.bps.iter().find(|b| b.id == id).unwrap().members;
        assert_eq!(members, &[CpuId(0), CpuId(1), CpuId(2), CpuId(3)]);
        assert!(
            sim.hw.faults().is_empty(),
            "{kind:?}: {:?}",
            sim.hw.faults()
        );
    }
}

#[test]
fn offline_drops_every_breakpoint_of_the_cpu_cleanly() {
    for kind in ALL {
        let mut sim = sim(kind, 4, 1);
        let wide = sim.register(watch(V), Target::AllCpus).unwrap();
        let t = sim.spawn(Program::new().write(V + 0x100, 8).repeat());
        sim.switch_to(CpuId(1), Some(t)).unwrap();
        if data_slots(&sim) > 1 {
            sim.register(watch(V + 0x100), Target::Task(t)).unwrap();
        }
        let bound = if data_slots(&sim) > 2 {
            Some(
                sim.register(watch(V + 0x200), Target::Cpu(CpuId(1)))
                    .unwrap(),
            )
        } else {
            None
        };
        sim.cpu_down(CpuId(1)).unwrap();
        assert_eq!(
            sim.hw.cpu(CpuId(1)).unwrap().armed_at_offline(),
            0,
            "{kind:?}"
        );
        assert_eq!(sim.task_state(t), Some(TaskState::Runnable), "migrated off");
        assert!(
            sim.layer.is_registered(wide),
            "wide stays registered on the others"
        );
        if let Some(b) = bound {
            assert!(
                !sim.layer.is_registered(b),
                "a CPU-bound breakpoint goes with its CPU"
            );
        }
        // The task's breakpoint follows it to another CPU.
        if data_slots(&sim) > 1 {
            sim.switch_to(CpuId(3), Some(t)).unwrap();
            assert_eq!(sim.access(CpuId(3), V + 0x100, 8, W).unwrap().delivered, 1);
        }
        for c in [0, 2, 3] {
            assert_eq!(
                sim.access(CpuId(c), V, 8, W).unwrap().delivered,
                1,
                "{kind:?} cpu {c}"
            );
        }
        // Back online: only the wide one returns.
        sim.cpu_up(CpuId(1)).unwrap();
        let armed = sim.hw.armed(CpuId(1));
        assert_eq!(armed.len(), 1, "{kind:?}: {armed:?}");
        assert!(armed_on(&sim, 1, V));
        assert!(
            sim.hw.faults().is_empty(),
            "{kind:?}: {:?}",
            sim.hw.faults()
        );
    }
}

#[test]
fn hits_come_only_from_cpus_where_the_breakpoint_is_installed() {
    let mut sim = sim(Kind::X86, 4, 9);
    sim.cpu_down(CpuId(3)).unwrap();
    let id = sim.register(watch(V), Target::AllCpus).unwrap();
    let writer = Program::new().write(V, 8).yield_now().repeat();
    for _ in 0..6 {
        sim.spawn(writer.clone());
    }
    sim.run(300).unwrap();
    sim.cpu_up(CpuId(3)).unwrap();
    sim.run(300).unwrap();
    sim.cpu_down(CpuId(0)).unwrap();
    sim.run(300).unwrap();
    let hits = sim.hits();
    let writes = sim
        .performed()
        .into_iter()
        .filter(|p| p.access.addr == V)
        .collect::<Vec<_>>();
    assert_eq!(
        hits.len(),
        writes.len(),
        "one hit per write, on every CPU it ran"
    );
    assert!(hits.iter().all(|h| h.bp == id));
    for (h, w) in hits.iter().zip(&writes) {
        assert_eq!((h.cpu, h.task), (w.cpu, w.task));
    }
    assert!(
        hits.iter().any(|h| h.cpu == CpuId(3)),
        "CPU 3 ran writers after coming online"
    );
    assert_eq!(sim.hw.cpu(CpuId(0)).unwrap().armed_at_offline(), 0);
}

#[test]
fn cpu_online_names_the_wide_breakpoint_that_does_not_fit() {
    let mut sim = sim(Kind::X86, 4, 1);
    sim.cpu_down(CpuId(3)).unwrap();
    let w1 = sim.register(watch(V), Target::AllCpus).unwrap();
    let t = sim.spawn(Program::new().nop());
    for i in 0..3 {
        sim.register(watch(0x50_0000 + 8 * i), Target::TaskOnCpu(t, CpuId(3)))
            .unwrap();
    }
    let w2 = sim.register(watch(V + 8), Target::AllCpus).unwrap();
    let err = sim.cpu_up(CpuId(3)).unwrap_err();
    match err {
        SimError::WideDidNotFit { cpu, bp, .. } => assert_eq!((cpu, bp), (CpuId(3), w2)),
        e => panic!("expected WideDidNotFit, got {e:?}"),
    }
    // CPU 3 is online with the one that fit.
    assert!(sim.online_cpus().contains(&CpuId(3)));
    assert!(armed_on(&sim, 3, V));
    assert!(!armed_on(&sim, 3, V + 8));
    assert_eq!(sim.access(CpuId(3), V + 8, 8, W).unwrap().delivered, 0);
    assert_eq!(sim.access(CpuId(3), V, 8, W).unwrap().delivered, 1);
    assert_eq!(sim.hits().iter().filter(|h| h.bp == w1).count(), 1);
}

#[test]
fn hotplug_errors_name_the_rule() {
    let mut sim = sim(Kind::Arm64, 2, 1);
    assert_eq!(
        sim.cpu_up(CpuId(0)),
        Err(SimError::CpuAlreadyOnline(CpuId(0)))
    );
    assert_eq!(
        sim.cpu_up(CpuId(9)),
        Err(SimError::NoSuchCpu {
            cpu: CpuId(9),
            possible: 2
        })
    );
    sim.cpu_down(CpuId(0)).unwrap();
    assert_eq!(sim.cpu_down(CpuId(0)), Err(SimError::CpuOffline(CpuId(0))));
    assert_eq!(sim.cpu_down(CpuId(1)), Err(SimError::LastCpu(CpuId(1))));
    assert!(SimError::LastCpu(CpuId(1))
        .to_string()
        .contains("bring another one up"));
}
