//! The layer's context-switch hook writes `departs`/`arrives` records into
//! the general event buffer for every switch, on a machine with or without
//! a debug store: ip and time in the BTS format, voluntary and preempted
//! told apart, in order per CPU. With BTS, a CPU-wide BTS consumer sees the
//! very same records between the tasks' branches.
use hwbreak_core::ds::ring::Entry;
use hwbreak_core::ds::{BtsConfig, BtsKind, BtsRecord, Scope};
use hwbreak_core::events::Record;
use hwbreak_core::{CpuId, TaskId};
use hwbreak_sim::trace::{Code, Insn, TraceSim, Truth};

const CPU0: CpuId = CpuId(0);
const CPU1: CpuId = CpuId(1);

/// Three tasks over two CPUs: yields and preemptions, a migration, idling.
fn scenario(sim: &mut TraceSim) -> [TaskId; 3] {
    let a = sim.spawn(Code::at(0x40_0000, &[Insn::Op, Insn::Jmp(0x40_0000)]));
    let b = sim.spawn(Code::at(
        0x50_0000,
        &[Insn::Op, Insn::Op, Insn::Jmp(0x50_0000)],
    ));
    let c = sim.spawn(Code::at(0x60_0000, &[Insn::Jmp(0x60_0000)]));
    let steps: [(CpuId, Option<TaskId>, bool, u64); 9] = [
        (CPU0, Some(a), true, 5),
        (CPU1, Some(b), true, 4),
        (CPU0, Some(c), false, 3), // a preempted by c
        (CPU1, Some(a), true, 7),  // b yields; a migrates to CPU 1
        (CPU0, Some(b), false, 2), // c preempted by b
        (CPU0, None, true, 0),     // b blocks, CPU 0 idles
        (CPU1, Some(c), false, 3), // a preempted by c
        (CPU0, Some(a), true, 6),
        (CPU1, None, true, 0),
    ];
    for (cpu, t, voluntary, n) in steps {
        sim.switch(cpu, t, voluntary).unwrap();
        sim.run(cpu, n).unwrap();
    }
    [a, b, c]
}

/// The departs/arrives pair of every switch on `cpu`, from the ground truth.
fn truth_switches(sim: &TraceSim, cpu: CpuId) -> Vec<(TaskId, BtsRecord)> {
    let mut v = Vec::new();
    for e in sim.truth() {
        if let Truth::Switch { cpu: c, info } = *e {
            if c != cpu {
                continue;
            }
            if let Some(p) = info.prev {
                v.push((
                    p,
                    BtsRecord::departs(info.prev_ip, info.time, info.voluntary),
                ));
            }
            if let Some(n) = info.next {
                v.push((
                    n,
                    BtsRecord::arrives(info.time, info.next_ip, info.voluntary),
                ));
            }
        }
    }
    v
}

/// A switch record of the general buffer in BTS format, with its task.
fn as_bts(r: &Record) -> Option<(TaskId, BtsRecord)> {
    match *r {
        Record::Switch {
            task,
            departs,
            ip,
            time,
            voluntary,
            ..
        } => Some((task, BtsRecord::switch(departs, ip, time, voluntary))),
        _ => None,
    }
}

/// The layer's switch records on `cpu`, in BTS format, with their task.
fn layer_switches(sim: &TraceSim) -> [Vec<(TaskId, BtsRecord)>; 2] {
    let mut per_cpu = [Vec::new(), Vec::new()];
    sim.layer.drain_events(&mut |cpu, r| {
        if let Some(x) = as_bts(&r) {
            per_cpu[cpu.idx()].push(x);
        }
    });
    per_cpu
}

#[test]
fn the_layer_writes_departs_and_arrives_with_ip_and_time_on_a_machine_without_bts() {
    let mut sim = TraceSim::new(2).without_debug_store();
    let [a, _, _] = scenario(&mut sim);
    let got = layer_switches(&sim);
    for cpu in [CPU0, CPU1] {
        assert_eq!(got[cpu.idx()], truth_switches(&sim, cpu), "CPU {}", cpu.0);
    }
    // Spot-check one pair by hand: a was preempted on CPU 0 after 5
    // instructions of its 2-instruction loop (stopped at 0x400004), and
    // resumed there on CPU 1 after b yielded.
    let (t, d) = got[0][1];
    assert_eq!(
        (t, d.from, d.kind()),
        (a, 0x40_0004, BtsKind::Departs { voluntary: false })
    );
    let (t, r) = got[1][2];
    assert_eq!(
        (t, r.to, r.kind()),
        (a, 0x40_0004, BtsKind::Arrives { voluntary: true })
    );
    assert!(
        d.to < r.from,
        "departs time {} before arrives time {}",
        d.to,
        r.from
    );
    assert_eq!(
        sim.hw.stats(CPU0).bts_written,
        0,
        "no debug store, no branch records"
    );
    assert_eq!(sim.hw.allocations(), 0);
}

#[test]
fn voluntary_and_preempted_switches_are_told_apart_in_both_records() {
    let mut sim = TraceSim::new(2).without_debug_store();
    scenario(&mut sim);
    let kinds: Vec<BtsKind> = layer_switches(&sim)[0]
        .iter()
        .map(|(_, r)| r.kind())
        .collect();
    use BtsKind::*;
    assert_eq!(
        kinds,
        [
            Arrives { voluntary: true },
            Departs { voluntary: false },
            Arrives { voluntary: false },
            Departs { voluntary: false },
            Arrives { voluntary: false },
            Departs { voluntary: true },
            Arrives { voluntary: true },
        ]
    );
}

#[test]
fn with_bts_a_cpu_consumer_sees_the_layers_switch_records_between_the_branches() {
    let mut sim = TraceSim::new(2);
    let u = sim
        .ds
        .add_bts(
            &mut sim.hw,
            BtsConfig::new("cpu0", Scope::Cpu(CPU0)).buffer(8, 2),
        )
        .unwrap();
    scenario(&mut sim);
    sim.ds.flush(&mut sim.hw, u).unwrap();
    let mut seen = Vec::new();
    sim.ds.read_bts(u, &mut |e| seen.push(e)).unwrap();
    let bts_switches: Vec<BtsRecord> = seen
        .iter()
        .filter_map(|e| match e {
            Entry::Rec(r) if r.kind() != BtsKind::Branch => Some(*r),
            Entry::Rec(_) => None,
            Entry::Lost(n) => panic!("lost {n}"),
        })
        .collect();
    let layer: Vec<BtsRecord> = layer_switches(&sim)[0].iter().map(|&(_, r)| r).collect();
    assert_eq!(
        bts_switches, layer,
        "one switch record format, two buffers, same records"
    );
    // And each task's branches sit between its arrives and its departs.
    let mut running = false;
    for e in &seen {
        let Entry::Rec(r) = e else { unreachable!() };
        match r.kind() {
            BtsKind::Arrives { .. } => running = true,
            BtsKind::Departs { .. } => running = false,
            _ => assert!(running, "a branch outside any task's time on CPU 0: {r:x?}"),
        }
    }
    assert!(seen.len() > layer.len(), "branches were traced too");
}

#[test]
fn the_main_simulator_s_switch_records_carry_where_the_task_stopped() {
    use hwbreak_sim::{Program, Sim};
    let mut sim = Sim::x86(1, 7).unwrap();
    sim.set_preempt_per_mille(0);
    let t = sim.spawn(Program::new().nop().nop().nop().nop());
    sim.switch_to(CPU0, Some(t)).unwrap();
    sim.tick(CPU0).unwrap();
    sim.tick(CPU0).unwrap();
    sim.switch_to(CPU0, None).unwrap(); // preempted after 2 nops
    sim.switch_to(CPU0, Some(t)).unwrap();
    let mut got = Vec::new();
    sim.layer.drain_events(&mut |_, r| {
        if let Some((task, b)) = as_bts(&r) {
            assert_eq!(task, t);
            got.push(b);
        }
    });
    let code = hwbreak_sim::program::CODE_BASE;
    let kinds: Vec<_> = got
        .iter()
        .map(|r| {
            (
                r.kind(),
                if r.kind() == (BtsKind::Departs { voluntary: false }) {
                    r.from
                } else {
                    r.to
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (BtsKind::Arrives { voluntary: false }, code),
            (BtsKind::Departs { voluntary: false }, code + 8),
            (BtsKind::Arrives { voluntary: false }, code + 8),
        ]
    );
}
