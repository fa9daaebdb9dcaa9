//! Wide registration is all-or-nothing: for each k, CPU k is full, the wide
//! request fails naming CPU k, and nothing changed anywhere.

mod support;

use hwbreak_core::{BpAttr, CpuId, Error, Target};
use hwbreak_sim::Program;
use support::*;

const CPUS: usize = 6;
const WIDE: u64 = 0x7000;

/// Fill every data slot of CPU `k` with breakpoints bound to it, at
/// addresses away from `WIDE`.
fn fill_cpu_bound(sim: &mut hwbreak_sim::Sim, k: u32) {
    for i in 0..data_slots(sim) {
        sim.register(watch(0x10_0000 + 0x1000 * i as u64), Target::Cpu(CpuId(k)))
            .expect("an empty CPU has room");
    }
}

/// Fill CPU `k` with one task's breakpoints bound to that CPU.
fn fill_task_on_cpu(sim: &mut hwbreak_sim::Sim, k: u32) {
    let t = sim.spawn(Program::new().nop());
    for i in 0..data_slots(sim) {
        sim.register(
            watch(0x20_0000 + 0x1000 * i as u64),
            Target::TaskOnCpu(t, CpuId(k)),
        )
        .expect("room for one task");
    }
}

fn rollback_at_every_cpu(kind: Kind, fill: fn(&mut hwbreak_sim::Sim, u32)) {
    for k in 0..CPUS as u32 {
        let mut sim = sim(kind, CPUS, 1);
        fill(&mut sim, k);
        let layer_before = sim.layer.snapshot();
        let regs_before = sim.hw.reg_snapshot();
        let writes_before = sim.hw.reg_writes();

        let err = sim.register(watch(WIDE), Target::AllCpus).unwrap_err();
        match err {
            Error::NoSlot { cpu, .. } => assert_eq!(cpu, CpuId(k), "{kind:?}: error names CPU {k}"),
            e => panic!("{kind:?} k={k}: expected NoSlot, got {e:?}"),
        }
        assert_eq!(
            sim.layer.snapshot(),
            layer_before,
            "{kind:?} k={k}: layer state changed"
        );
        assert_eq!(
            sim.hw.reg_snapshot(),
            regs_before,
            "{kind:?} k={k}: a register changed"
        );
        assert_eq!(
            sim.hw.reg_writes(),
            writes_before,
            "{kind:?} k={k}: a register was written"
        );

        // No hit can come from the half-done request, on any CPU.
        let hits_before = sim.hits().len();
        for c in 0..CPUS as u32 {
            let o = sim.access(CpuId(c), WIDE, 8, W).unwrap();
            assert_eq!((o.traps, o.delivered), (0, 0), "{kind:?} k={k} cpu {c}");
        }
        assert_eq!(sim.hits().len(), hits_before);
        assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());

        // The refused request did not leak: freeing CPU k makes it fit.
        for id in sim.layer.registered() {
            sim.unregister(id).unwrap();
        }
        let id = sim.register(watch(WIDE), Target::AllCpus).unwrap();
        for c in 0..CPUS as u32 {
            assert_eq!(sim.access(CpuId(c), WIDE, 8, W).unwrap().delivered, 1);
        }
        assert!(sim.hits().iter().all(|h| h.bp == id));
    }
}

#[test]
fn wide_register_rolls_back_when_cpu_k_is_full_of_cpu_bound_breakpoints() {
    for kind in ALL {
        rollback_at_every_cpu(kind, fill_cpu_bound);
    }
}

#[test]
fn wide_register_rolls_back_when_cpu_k_is_full_of_one_tasks_breakpoints() {
    for kind in ALL {
        rollback_at_every_cpu(kind, fill_task_on_cpu);
    }
}

#[test]
fn failed_wide_register_does_not_consume_an_id_or_disturb_a_running_task() {
    let mut sim = sim(Kind::X86, CPUS, 3);
    let t = sim.spawn(Program::new().write(0x20_0000, 8).repeat());
    sim.switch_to(CpuId(2), Some(t)).unwrap();
    fill_task_on_cpu(&mut sim, 4);
    let mine = sim.register(watch(0x20_0000), Target::Task(t)).unwrap();
    let before = sim.layer.snapshot();
    // Task t has 1, the CPU-4 task has 4: CPU 4 is full for CPU-bound requests.
    let err = sim
        .register(BpAttr::write(WIDE, 4), Target::AllCpus)
        .unwrap_err();
    assert!(
        matches!(err, Error::NoSlot { cpu: CpuId(4), .. }),
        "{err:?}"
    );
    assert_eq!(sim.layer.snapshot(), before);
    let next = sim
        .register(watch(0x30_0000), Target::Cpu(CpuId(0)))
        .unwrap();
    assert_eq!(next.0, mine.0 + 1, "the failed request did not take an id");
    assert_eq!(sim.access(CpuId(2), 0x20_0000, 8, W).unwrap().delivered, 1);
}
