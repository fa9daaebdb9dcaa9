//! A property test of the debug-store manager against a reference model:
//! random runs, context switches, reads and flushes on two CPUs, with small
//! hardware buffers (many overflow interrupts) and small consumer rings
//! (many losses), with and without DS-CPL.
//!
//! The reference model is the simulator's ground truth: what each consumer
//! must see is every branch of its task (or, for the CPU consumer, every
//! branch on its CPU with a `departs`/`arrives` pair at every switch),
//! filtered by its privilege, in order. What it read must be exactly that,
//! except for gaps, and each gap `Lost(n)` must stand for exactly the `n`
//! records missing at that point; the counts add up to the manager's loss
//! counter; a ring large enough for everything never loses.
use hwbreak_core::ds::ring::Entry;
use hwbreak_core::ds::{BtsConfig, BtsRecord, DsCaps, Privilege, Scope, UserId};
use hwbreak_core::{CpuId, TaskId};
use hwbreak_sim::hw::bts::DsHw;
use hwbreak_sim::trace::{Code, Insn, TraceSim, Truth};
use hwbreak_sim::SimError;
use proptest::prelude::*;

const KERNEL: u64 = 0xffff_ffff_8100_0000;

#[derive(Debug, Clone)]
enum Op {
    Run {
        cpu: u32,
        insns: u64,
    },
    Switch {
        cpu: u32,
        task: Option<u64>,
        voluntary: bool,
    },
    Read {
        consumer: usize,
    },
    Flush {
        consumer: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u32, 0..40u64).prop_map(|(cpu, insns)| Op::Run { cpu, insns }),
        2 => (0..2u32, proptest::option::of(1..=3u64), any::<bool>())
            .prop_map(|(cpu, task, voluntary)| Op::Switch { cpu, task, voluntary }),
        1 => (0..3usize).prop_map(|consumer| Op::Read { consumer }),
        1 => (0..3usize).prop_map(|consumer| Op::Flush { consumer }),
    ]
}

fn privilege() -> impl Strategy<Value = Privilege> {
    prop_oneof![
        Just(Privilege::All),
        Just(Privilege::User),
        Just(Privilege::Kernel)
    ]
}

#[derive(Debug, Clone)]
struct Consumer {
    privilege: Privilege,
    buffer: usize,
    ring: usize,
}

fn consumer() -> impl Strategy<Value = Consumer> {
    (
        privilege(),
        2..12usize,
        prop_oneof![2..30usize, Just(100_000usize)],
    )
        .prop_map(|(privilege, buffer, ring)| Consumer {
            privilege,
            buffer,
            ring,
        })
}

/// Three programs: a call loop with a syscall, a plain spin, a nested loop.
fn programs() -> [std::sync::Arc<Code>; 3] {
    [
        std::sync::Arc::new(
            Code::default()
                .with(
                    0x40_0000,
                    &[
                        Insn::Call(0x40_1000),
                        Insn::Syscall(KERNEL),
                        Insn::Loop {
                            target: 0x40_0000,
                            times: 3,
                        },
                        Insn::Jmp(0x40_0000),
                    ],
                )
                .with(0x40_1000, &[Insn::Op, Insn::Ret])
                .with(KERNEL, &[Insn::Op, Insn::Jmp(KERNEL + 0x40)])
                .with(KERNEL + 0x40, &[Insn::Sysret]),
        ),
        Code::at(0x50_0000, &[Insn::Jmp(0x50_0000)]),
        Code::at(
            0x60_0000,
            &[
                Insn::Op,
                Insn::Loop {
                    target: 0x60_0000,
                    times: 2,
                },
                Insn::Syscall(KERNEL + 0x1000),
                Insn::Loop {
                    target: 0x60_0000,
                    times: 1,
                },
                Insn::Jmp(0x60_0000),
            ],
        )
        .as_ref()
        .clone()
        .with(KERNEL + 0x1000, &[Insn::Sysret])
        .into(),
    ]
}

/// What consumer `who` must see, from the ground truth.
fn expected(truth: &[Truth], who: Scope, p: Privilege) -> Vec<BtsRecord> {
    let mut out = Vec::new();
    for e in truth {
        match *e {
            Truth::Branch {
                cpu,
                task,
                from,
                to,
            } => {
                let mine = match who {
                    Scope::Task(t) => task == Some(t),
                    Scope::Cpu(c) => cpu == c,
                };
                let r = BtsRecord::branch(from, to);
                if mine && p.admits(&r) {
                    out.push(r);
                }
            }
            Truth::Switch { cpu, info } => {
                if who != Scope::Cpu(cpu) {
                    continue;
                }
                if info.prev.is_some() {
                    out.push(BtsRecord::departs(info.prev_ip, info.time, info.voluntary));
                }
                if info.next.is_some() {
                    out.push(BtsRecord::arrives(info.time, info.next_ip, info.voluntary));
                }
            }
        }
    }
    out
}

/// Check `observed` against `expected` with gaps; returns the records lost.
fn check(expected: &[BtsRecord], observed: &[Entry<BtsRecord>]) -> Result<u64, TestCaseError> {
    let mut at = 0usize;
    let mut lost = 0;
    for (k, e) in observed.iter().enumerate() {
        match *e {
            Entry::Rec(r) => {
                prop_assert_eq!(
                    Some(&r),
                    expected.get(at),
                    "entry {} vs expected record {}",
                    k,
                    at
                );
                at += 1;
            }
            Entry::Lost(n) => {
                prop_assert!(n > 0);
                prop_assert!(
                    !matches!(observed.get(k + 1), Some(Entry::Lost(_))),
                    "two gap marks in a row at {}",
                    k
                );
                at += n as usize;
                lost += n;
            }
        }
    }
    prop_assert_eq!(at, expected.len(), "every record seen or counted lost");
    Ok(lost)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn consumers_see_exactly_their_branches_and_switches_or_counted_gaps(
        ds_cpl in any::<bool>(),
        cons in proptest::collection::vec(consumer(), 3),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let caps = DsCaps { bts: true, ds_cpl, ..DsCaps::default() };
        let mut sim = TraceSim::with_hw(DsHw::new(2, caps), 2);
        for code in programs() {
            sim.spawn(code);
        }
        // Consumers 0 and 1 trace tasks 1 and 2; consumer 2 is CPU 0's.
        // Task 3 is traced only by the CPU consumer.
        let scopes = [Scope::Task(TaskId(1)), Scope::Task(TaskId(2)), Scope::Cpu(CpuId(0))];
        let ids: Vec<UserId> = scopes
            .iter()
            .zip(&cons)
            .map(|(&s, c)| {
                let cfg = BtsConfig::new("c", s).privilege(c.privilege).buffer(c.buffer, 1).ring(c.ring);
                sim.ds.add_bts(&mut sim.hw, cfg).expect("added")
            })
            .collect();
        let mut seen: Vec<Vec<Entry<BtsRecord>>> = vec![Vec::new(); 3];
        for op in &ops {
            match *op {
                Op::Run { cpu, insns } => {
                    sim.run(CpuId(cpu), insns).unwrap();
                }
                Op::Switch { cpu, task, voluntary } => {
                    let next = task.map(TaskId);
                    let elsewhere = next.and_then(|t| {
                        (0..2).map(CpuId).find(|&c| c.0 != cpu && sim.current(c) == Some(t))
                    });
                    let r = sim.switch(CpuId(cpu), next, voluntary);
                    match elsewhere {
                        Some(c) => prop_assert_eq!(
                            r,
                            Err(SimError::TaskRunningElsewhere { task: next.unwrap(), cpu: c })
                        ),
                        None => prop_assert!(r.is_ok()),
                    }
                }
                Op::Read { consumer } => {
                    sim.ds.read_bts(ids[consumer], &mut |e| seen[consumer].push(e)).unwrap();
                }
                Op::Flush { consumer } => {
                    sim.ds.flush(&mut sim.hw, ids[consumer]).unwrap();
                }
            }
        }
        for k in 0..3 {
            sim.ds.flush(&mut sim.hw, ids[k]).unwrap();
            sim.ds.read_bts(ids[k], &mut |e| seen[k].push(e)).unwrap();
        }
        prop_assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());
        for c in 0..2 {
            prop_assert_eq!(sim.hw.stats(CpuId(c)).bts_dropped_full, 0, "the PMI always came in time");
            if !ds_cpl {
                prop_assert_eq!(sim.hw.stats(CpuId(c)).bts_skipped_cpl, 0);
            }
        }
        for k in 0..3 {
            let want = expected(sim.truth(), scopes[k], cons[k].privilege);
            let lost = check(&want, &seen[k])?;
            prop_assert_eq!(lost, sim.ds.lost(ids[k]).unwrap(), "consumer {}", k);
            if cons[k].ring >= 100_000 {
                prop_assert_eq!(lost, 0, "a ring that holds everything never loses");
            }
        }
    }
}
