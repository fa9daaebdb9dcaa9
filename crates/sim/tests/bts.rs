//! The debug-store manager (`hwbreak_core::ds`) on the simulator's
//! processor model (`hwbreak_sim::hw::bts`): exact branch sequences,
//! overflow, context switches, kernel/user segregation, BTS+PEBS sharing,
//! and every refusal.
use hwbreak_core::ds::ring::Entry;
use hwbreak_core::ds::{
    BtsConfig, BtsKind, BtsRecord, DsCaps, DsError, DsHardware, Facility, Mode, Msr, PebsConfig,
    Privilege, Scope, UserId,
};
use hwbreak_core::CpuId;
use hwbreak_sim::hw::bts::DsHw;
use hwbreak_sim::trace::{Code, Insn, TraceSim, Truth};

const CPU0: CpuId = CpuId(0);
const CPU1: CpuId = CpuId(1);
const KERNEL: u64 = 0xffff_ffff_8100_0000;

fn add(sim: &mut TraceSim, cfg: BtsConfig) -> UserId {
    sim.ds.add_bts(&mut sim.hw, cfg).expect("BTS user added")
}

fn read(sim: &mut TraceSim, u: UserId) -> Vec<Entry<BtsRecord>> {
    sim.ds.flush(&mut sim.hw, u).unwrap();
    let mut v = Vec::new();
    sim.ds.read_bts(u, &mut |e| v.push(e)).unwrap();
    v
}

fn branches(v: &[Entry<BtsRecord>]) -> Vec<(u64, u64)> {
    v.iter()
        .map(|e| match e {
            Entry::Rec(r) if r.kind() == BtsKind::Branch => (r.from, r.to),
            other => panic!("expected only branches, got {other:x?}"),
        })
        .collect()
}

/// main: op; call f; loop back to main twice; halt. f: op; ret.
fn call_loop() -> std::sync::Arc<Code> {
    std::sync::Arc::new(
        Code::default()
            .with(
                0x40_0000,
                &[
                    Insn::Op,              // 0x400000
                    Insn::Call(0x40_1000), // 0x400004
                    Insn::Loop {
                        target: 0x40_0000,
                        times: 2,
                    }, // 0x400008
                    Insn::Halt,            // 0x40000c
                ],
            )
            .with(0x40_1000, &[Insn::Op, Insn::Ret]),
    )
}

#[test]
fn bts_records_exactly_the_taken_branches_of_a_loop_with_a_call() {
    let mut sim = TraceSim::new(1);
    let t = sim.spawn(call_loop());
    let u = add(&mut sim, BtsConfig::new("t", Scope::Task(t)));
    sim.switch(CPU0, Some(t), true).unwrap();
    sim.run(CPU0, 100).unwrap();
    let one_pass = [(0x40_0004, 0x40_1000), (0x40_1004, 0x40_0008)];
    let back = (0x40_0008, 0x40_0000);
    let mut expect = Vec::new();
    for pass in 0..3 {
        expect.extend(one_pass);
        if pass < 2 {
            expect.push(back);
        }
    }
    assert_eq!(branches(&read(&mut sim, u)), expect);
    assert_eq!(sim.branches(Some(t), None), expect, "the simulator agrees");
    assert_eq!(sim.hw.stats(CPU0).bts_written, 8);
}

#[test]
fn overflow_at_the_threshold_loses_nothing_while_the_consumer_keeps_up() {
    let mut sim = TraceSim::new(1);
    let spin = Code::at(0x40_0000, &[Insn::Op, Insn::Jmp(0x40_0000)]);
    let t = sim.spawn(spin);
    let cfg = BtsConfig::new("t", Scope::Task(t)).buffer(8, 2).ring(16);
    let u = add(&mut sim, cfg);
    sim.switch(CPU0, Some(t), true).unwrap();
    let mut seen = Vec::new();
    let mut pmis = 0;
    for _ in 0..100 {
        // 10 branches per round: fewer than the ring holds.
        pmis += sim.run(CPU0, 20).unwrap().pmis;
        sim.ds.read_bts(u, &mut |e| seen.push(e)).unwrap();
    }
    seen.extend(read(&mut sim, u));
    assert!(pmis >= 100, "the 8-record buffer overflowed {pmis} times");
    assert_eq!(branches(&seen), sim.branches(Some(t), None));
    assert_eq!(seen.len(), 1000);
    assert_eq!(sim.ds.lost(u).unwrap(), 0);
    assert_eq!(
        sim.hw.stats(CPU0).bts_dropped_full,
        0,
        "no record hit the absolute maximum"
    );
}

/// Walk `expected` along `observed`: each record must be the next expected
/// one, each `Lost(n)` skips exactly `n`. Returns where each gap started.
fn gaps(expected: &[BtsRecord], observed: &[Entry<BtsRecord>]) -> Vec<(usize, u64)> {
    let mut at = 0;
    let mut out = Vec::new();
    for (k, e) in observed.iter().enumerate() {
        match *e {
            Entry::Rec(r) => {
                assert_eq!(
                    Some(&r),
                    expected.get(at),
                    "entry {k}: expected record {at} of {}",
                    expected.len()
                );
                at += 1;
            }
            Entry::Lost(n) => {
                assert!(n > 0, "entry {k}: an empty gap");
                out.push((at, n));
                at += n as usize;
            }
        }
    }
    assert_eq!(at, expected.len(), "every record is seen or counted lost");
    out
}

#[test]
fn a_slow_consumer_loses_exactly_the_counted_records_marked_where_they_went_missing() {
    let mut sim = TraceSim::new(1);
    let t = sim.spawn(
        Code::at(0x40_0000, &[Insn::Jmp(0x40_0100)])
            .as_ref()
            .clone()
            .with(0x40_0100, &[Insn::Jmp(0x40_0000)])
            .into(),
    );
    let cfg = BtsConfig::new("slow", Scope::Task(t)).buffer(8, 2).ring(10);
    let u = add(&mut sim, cfg);
    sim.switch(CPU0, Some(t), true).unwrap();
    sim.run(CPU0, 25).unwrap();
    // The consumer wakes up, reads, then falls behind again.
    let first = read(&mut sim, u);
    sim.run(CPU0, 30).unwrap();
    let second = read(&mut sim, u);
    let expected: Vec<_> = sim
        .branches(Some(t), None)
        .into_iter()
        .map(|(f, t)| BtsRecord::branch(f, t))
        .collect();
    assert_eq!(expected.len(), 55);
    let all: Vec<_> = first.iter().chain(&second).copied().collect();
    let g = gaps(&expected, &all);
    // Each time the ring filled at 10 records, and the rest of that burst
    // was dropped: 15 of the first 25, 20 of the next 30.
    assert_eq!(g, [(10, 15), (35, 20)]);
    assert_eq!(sim.ds.lost(u).unwrap(), 35);
    assert_eq!(
        first.last(),
        Some(&Entry::Lost(15)),
        "the gap closes the first read"
    );
}

/// Two tasks on CPU 0 that share no branch addresses.
fn two_tasks(sim: &mut TraceSim) -> (hwbreak_core::TaskId, hwbreak_core::TaskId) {
    let a = sim.spawn(Code::at(0x40_0000, &[Insn::Op, Insn::Jmp(0x40_0000)]));
    let b = sim.spawn(
        Code::at(0x50_0000, &[Insn::Call(0x50_1000), Insn::Jmp(0x50_0000)])
            .as_ref()
            .clone()
            .with(0x50_1000, &[Insn::Ret])
            .into(),
    );
    (a, b)
}

#[test]
fn two_tasks_on_one_cpu_each_see_only_their_own_branches() {
    let mut sim = TraceSim::new(1);
    let (a, b) = two_tasks(&mut sim);
    let ua = add(&mut sim, BtsConfig::new("a", Scope::Task(a)).buffer(8, 2));
    let ub = add(&mut sim, BtsConfig::new("b", Scope::Task(b)).buffer(8, 2));
    for round in 0..10 {
        let (t, v) = if round % 2 == 0 {
            (a, true)
        } else {
            (b, false)
        };
        sim.switch(CPU0, Some(t), v).unwrap();
        sim.run(CPU0, 7 + round).unwrap();
    }
    let sa = branches(&read(&mut sim, ua));
    let sb = branches(&read(&mut sim, ub));
    assert_eq!(sa, sim.branches(Some(a), None));
    assert_eq!(sb, sim.branches(Some(b), None));
    assert!(sa.iter().all(|(f, _)| *f < 0x50_0000) && !sa.is_empty());
    assert!(sb.iter().all(|(f, _)| *f >= 0x50_0000) && !sb.is_empty());
}

#[test]
fn a_cpu_wide_consumer_sees_both_tasks_with_departs_and_arrives_between_them_in_order() {
    let mut sim = TraceSim::new(1);
    let (a, b) = two_tasks(&mut sim);
    let ua = add(&mut sim, BtsConfig::new("a", Scope::Task(a)));
    let uc = add(
        &mut sim,
        BtsConfig::new("cpu0", Scope::Cpu(CPU0)).buffer(8, 2),
    );
    sim.switch(CPU0, Some(a), true).unwrap();
    sim.run(CPU0, 9).unwrap();
    sim.switch(CPU0, Some(b), false).unwrap(); // a is preempted
    sim.run(CPU0, 9).unwrap();
    sim.switch(CPU0, Some(a), true).unwrap(); // b yields
    sim.run(CPU0, 4).unwrap();
    sim.switch(CPU0, None, true).unwrap();
    let seen = read(&mut sim, uc);
    // Rebuild what the CPU consumer must see from the ground truth.
    let mut expect = Vec::new();
    for e in sim.truth() {
        match *e {
            Truth::Branch { from, to, .. } => expect.push(BtsRecord::branch(from, to)),
            Truth::Switch { info, .. } => {
                if info.prev.is_some() {
                    expect.push(BtsRecord::departs(info.prev_ip, info.time, info.voluntary));
                }
                if info.next.is_some() {
                    expect.push(BtsRecord::arrives(info.time, info.next_ip, info.voluntary));
                }
            }
        }
    }
    assert_eq!(
        seen,
        expect.iter().map(|r| Entry::Rec(*r)).collect::<Vec<_>>()
    );
    let kinds: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Entry::Rec(r) if r.kind() != BtsKind::Branch => Some(r.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            BtsKind::Arrives { voluntary: true },
            BtsKind::Departs { voluntary: false },
            BtsKind::Arrives { voluntary: false },
            BtsKind::Departs { voluntary: true },
            BtsKind::Arrives { voluntary: true },
            BtsKind::Departs { voluntary: true },
        ]
    );
    // Task a's own consumer was fed from the CPU buffer: only a's branches.
    assert_eq!(branches(&read(&mut sim, ua)), sim.branches(Some(a), None));
}

/// A user task that makes a syscall: user → kernel → kernel → user.
fn syscaller() -> std::sync::Arc<Code> {
    std::sync::Arc::new(
        Code::default()
            .with(
                0x40_0000,
                &[Insn::Op, Insn::Syscall(KERNEL), Insn::Jmp(0x40_0000)],
            )
            .with(KERNEL, &[Insn::Jmp(KERNEL + 0x100)])
            .with(KERNEL + 0x100, &[Insn::Sysret]),
    )
}

fn segregation(caps: DsCaps) -> (TraceSim, Vec<Entry<BtsRecord>>, Vec<Entry<BtsRecord>>) {
    let mut sim = TraceSim::with_hw(DsHw::new(2, caps), 2);
    let t = sim.spawn(syscaller());
    let k = sim.spawn(syscaller());
    let user = BtsConfig::new("user", Scope::Task(t)).privilege(Privilege::User);
    let uu = add(&mut sim, user);
    let kern = BtsConfig::new("kern", Scope::Task(k)).privilege(Privilege::Kernel);
    let uk = add(&mut sim, kern);
    sim.switch(CPU0, Some(t), true).unwrap();
    sim.switch(CPU1, Some(k), true).unwrap();
    sim.run(CPU0, 50).unwrap();
    sim.run(CPU1, 50).unwrap();
    assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());
    let u = read(&mut sim, uu);
    let kk = read(&mut sim, uk);
    for e in &u {
        let Entry::Rec(r) = e else {
            panic!("lost {e:?}")
        };
        assert!(!r.touches_kernel(), "user consumer saw {r:x?}");
    }
    for e in &kk {
        let Entry::Rec(r) = e else {
            panic!("lost {e:?}")
        };
        assert!(r.from >= KERNEL, "kernel consumer saw a user branch {r:x?}");
    }
    // The user consumer sees exactly the user→user branches (the loop's jmp).
    let user_only: Vec<_> = sim
        .branches(Some(t), None)
        .into_iter()
        .filter(|&(f, to)| f < KERNEL && to < KERNEL)
        .collect();
    assert_eq!(branches(&u), user_only);
    assert!(!user_only.is_empty());
    let kernel_from: Vec<_> = sim
        .branches(Some(k), None)
        .into_iter()
        .filter(|&(f, _)| f >= KERNEL)
        .collect();
    assert_eq!(branches(&kk), kernel_from);
    (sim, u, kk)
}

#[test]
fn a_user_consumer_never_sees_a_kernel_address_with_ds_cpl() {
    let (sim, _, _) = segregation(DsCaps {
        bts: true,
        ds_cpl: true,
        ..Default::default()
    });
    // The processor skipped the CPL-0 branches itself: the kernel jmp and
    // sysret for the user task, the user jmp for the kernel one.
    assert!(sim.hw.stats(CPU0).bts_skipped_cpl > 0);
    assert!(sim.hw.stats(CPU1).bts_skipped_cpl > 0);
    assert_ne!(
        sim.hw.read_msr(CPU0, Msr::DebugCtl) & (1 << 9),
        0,
        "BTS_OFF_OS"
    );
    assert_ne!(
        sim.hw.read_msr(CPU1, Msr::DebugCtl) & (1 << 10),
        0,
        "BTS_OFF_USR"
    );
}

#[test]
fn a_user_consumer_never_sees_a_kernel_address_without_ds_cpl() {
    let (sim, _, _) = segregation(DsCaps {
        bts: true,
        ..Default::default()
    });
    // No CPL filter in hardware: everything was written, and filtered per
    // consumer by address; the reserved DEBUGCTL bits were never set.
    assert_eq!(sim.hw.stats(CPU0).bts_skipped_cpl, 0);
    assert_eq!(sim.hw.stats(CPU0).bts_written, sim.hw.stats(CPU0).branches);
    assert_eq!(sim.hw.read_msr(CPU0, Msr::DebugCtl) & (3 << 9), 0);
}

#[test]
fn bts_and_pebs_share_a_cpus_ds_area_without_corrupting_each_other() {
    let mut sim = TraceSim::new(1);
    // Loads and branches interleaved.
    let code = Code::at(
        0x40_0000,
        &[
            Insn::Load(0x7000),
            Insn::Op,
            Insn::Load(0x7008),
            Insn::Jmp(0x40_0000),
        ],
    );
    let t = sim.spawn(code);
    let ub = add(
        &mut sim,
        BtsConfig::new("bts", Scope::Cpu(CPU0)).buffer(6, 1),
    );
    let mut pc = PebsConfig::new("pebs", CPU0, 3);
    pc.buffer_records = 4;
    let up = sim.ds.add_pebs(&mut sim.hw, pc).unwrap();
    sim.switch(CPU0, Some(t), true).unwrap();
    sim.run(CPU0, 400).unwrap(); // 100 branches, 200 loads
    let bts: Vec<_> = read(&mut sim, ub)
        .into_iter()
        .filter(|e| matches!(e, Entry::Rec(r) if r.kind() == BtsKind::Branch))
        .collect();
    assert_eq!(branches(&bts), sim.branches(Some(t), None));
    assert_eq!(bts.len(), 100);
    sim.ds.flush(&mut sim.hw, up).unwrap();
    let mut pebs = Vec::new();
    sim.ds.read_pebs(up, &mut |e| pebs.push(e)).unwrap();
    // Every third load: loads alternate 0x7000 / 0x7008 at ips +0 / +8.
    assert_eq!(pebs.len(), 200 / 3);
    for (k, e) in pebs.iter().enumerate() {
        let Entry::Rec(p) = e else {
            panic!("lost {e:?}")
        };
        let n = 3 * k as u64 + 2; // the (n+1)-th load, 0-based n
        assert_eq!(
            (p.ip, p.addr),
            (0x40_0000 + 8 * (n % 2), 0x7000 + 8 * (n % 2)),
            "record {k}"
        );
        assert_eq!(p.format >> 48, 64);
    }
    let s = sim.hw.stats(CPU0);
    assert_eq!((s.bts_dropped_full, s.pebs_dropped_full), (0, 0));
    assert_eq!(sim.ds.lost(ub).unwrap() + sim.ds.lost(up).unwrap(), 0);
}

#[test]
fn a_refused_bts_request_names_the_lbr_holder_and_lbr_names_the_bts_holder() {
    let mut sim = TraceSim::new(2);
    let l = sim
        .ds
        .claim_lbr(&sim.hw, "perf-lbr-callstack", Scope::Cpu(CPU1))
        .unwrap();
    let t = sim.spawn(call_loop());
    let err = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("tracer", Scope::Task(t)))
        .unwrap_err();
    let DsError::Conflict { wanted, holder } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (*wanted, holder.facility, holder.user),
        (Facility::Bts, Facility::Lbr, l)
    );
    assert_eq!(holder.name, "perf-lbr-callstack");
    assert!(err.to_string().contains("\"perf-lbr-callstack\""), "{err}");
    // PEBS may still come: it is not exclusive with LBR.
    sim.ds
        .add_pebs(&mut sim.hw, PebsConfig::new("pebs", CPU0, 10))
        .expect("PEBS is not exclusive with LBR");
    sim.ds.remove(&mut sim.hw, l).unwrap();
    let b = add(&mut sim, BtsConfig::new("tracer", Scope::Task(t)));
    let err = sim
        .ds
        .claim_lbr(&sim.hw, "lbr", Scope::Cpu(CPU0))
        .unwrap_err();
    assert!(
        matches!(&err, DsError::Conflict { wanted: Facility::Lbr, holder } if holder.user == b && holder.name == "tracer"),
        "{err}"
    );
}

#[test]
fn a_task_moving_between_cpus_keeps_one_continuous_trace() {
    let mut sim = TraceSim::new(2);
    let t = sim.spawn(call_loop());
    let spin = sim.spawn(Code::at(0x60_0000, &[Insn::Jmp(0x60_0000)]));
    let u = add(&mut sim, BtsConfig::new("t", Scope::Task(t)).buffer(32, 4));
    sim.switch(CPU0, Some(t), true).unwrap();
    sim.run(CPU0, 5).unwrap();
    sim.switch(CPU0, Some(spin), false).unwrap();
    assert_eq!(
        sim.ds.loaded(CPU0),
        None,
        "an untraced task runs with BTS off"
    );
    assert_eq!(sim.hw.read_msr(CPU0, Msr::DebugCtl) & (1 << 7), 0);
    sim.run(CPU0, 5).unwrap();
    sim.switch(CPU1, Some(t), true).unwrap();
    assert_eq!(sim.ds.loaded(CPU1), Some(u));
    sim.run(CPU1, 100).unwrap();
    assert_eq!(branches(&read(&mut sim, u)), sim.branches(Some(t), None));
    assert_eq!(sim.branches(Some(t), None).len(), 8);
}

#[test]
fn snapshot_mode_keeps_the_newest_records_without_an_interrupt() {
    let mut sim = TraceSim::new(1);
    let spin = Code::at(0x40_0000, &[Insn::Op, Insn::Jmp(0x40_0000)])
        .as_ref()
        .clone()
        .with(0x40_0008, &[])
        .into();
    let (t, _) = two_tasks(&mut sim);
    let _ = t;
    let s = sim.spawn(spin);
    let cfg = BtsConfig::new("snap", Scope::Cpu(CPU0))
        .mode(Mode::Snapshot)
        .buffer(5, 0);
    let u = add(&mut sim, cfg);
    sim.switch(CPU0, Some(s), true).unwrap();
    let out = sim.run(CPU0, 40).unwrap();
    assert_eq!(out.pmis, 0, "no interrupt in snapshot mode");
    sim.switch(CPU0, None, false).unwrap();
    let snap = sim.ds.snapshot(&sim.hw, u).unwrap();
    let all = sim.branches(Some(s), None);
    // 5 slots: the newest 4 branches, then the departs record.
    let mut expect: Vec<_> = all[all.len() - 4..]
        .iter()
        .map(|&(f, t)| BtsRecord::branch(f, t))
        .collect();
    let Truth::Switch { info, .. } = *sim.truth().last().unwrap() else {
        unreachable!()
    };
    expect.push(BtsRecord::departs(info.prev_ip, info.time, false));
    assert_eq!(snap, expect);
    assert!(sim.hw.stats(CPU0).bts_wraps > 0);
    // Stream-only calls refuse it, and say what it is.
    let err = sim.ds.read_bts(u, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            DsError::WrongKind {
                is: "a snapshot BTS user",
                ..
            }
        ),
        "{err}"
    );
    assert!(sim.ds.flush(&mut sim.hw, u).is_err());
}

#[test]
fn a_task_snapshot_buffer_is_saved_and_reloaded_across_switches() {
    let mut sim = TraceSim::new(1);
    let (a, b) = two_tasks(&mut sim);
    let cfg = BtsConfig::new("snap", Scope::Task(a))
        .mode(Mode::Snapshot)
        .buffer(64, 0);
    let u = add(&mut sim, cfg);
    for k in 0..4 {
        sim.switch(CPU0, Some(if k % 2 == 0 { a } else { b }), true)
            .unwrap();
        sim.run(CPU0, 6).unwrap();
    }
    let snap = sim.ds.snapshot(&sim.hw, u).unwrap();
    let want: Vec<_> = sim
        .branches(Some(a), None)
        .into_iter()
        .map(|(f, t)| BtsRecord::branch(f, t))
        .collect();
    assert_eq!(snap, want);
}

#[test]
fn snapshot_users_do_not_share_cpus_with_the_other_scope() {
    let mut sim = TraceSim::new(1);
    let (a, _) = two_tasks(&mut sim);
    let ut = add(&mut sim, BtsConfig::new("task", Scope::Task(a)));
    let err = sim
        .ds
        .add_bts(
            &mut sim.hw,
            BtsConfig::new("snap", Scope::Cpu(CPU0)).mode(Mode::Snapshot),
        )
        .unwrap_err();
    assert!(
        matches!(&err, DsError::Conflict { holder, .. } if holder.user == ut),
        "{err}"
    );
    sim.ds.remove(&mut sim.hw, ut).unwrap();
    let us = add(
        &mut sim,
        BtsConfig::new("snap", Scope::Cpu(CPU0)).mode(Mode::Snapshot),
    );
    let err = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("task", Scope::Task(a)))
        .unwrap_err();
    assert!(
        matches!(&err, DsError::Conflict { holder, .. } if holder.user == us),
        "{err}"
    );
    let err = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("again", Scope::Cpu(CPU0)))
        .unwrap_err();
    assert!(
        matches!(&err, DsError::Conflict { holder, .. } if holder.user == us),
        "{err}"
    );
}

#[test]
fn every_refusal_names_its_rule() {
    // No BTS, no PEBS, no LBR.
    let mut sim = TraceSim::with_hw(DsHw::new(1, DsCaps::default()), 1);
    let t = sim.spawn(call_loop());
    for (e, f) in [
        (
            sim.ds
                .add_bts(&mut sim.hw, BtsConfig::new("x", Scope::Task(t)))
                .unwrap_err(),
            Facility::Bts,
        ),
        (
            sim.ds
                .add_pebs(&mut sim.hw, PebsConfig::new("x", CPU0, 1))
                .unwrap_err(),
            Facility::Pebs,
        ),
        (
            sim.ds.claim_lbr(&sim.hw, "x", Scope::Task(t)).unwrap_err(),
            Facility::Lbr,
        ),
    ] {
        assert_eq!(e, DsError::Unsupported { facility: f });
        assert!(e.to_string().contains(&format!("no {f}")), "{e}");
    }
    let mut sim = TraceSim::new(1);
    let e = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("x", Scope::Cpu(CpuId(1))))
        .unwrap_err();
    assert_eq!(
        e,
        DsError::NoSuchCpu {
            cpu: CpuId(1),
            cpus: 1
        }
    );
    let e = sim
        .ds
        .add_pebs(&mut sim.hw, PebsConfig::new("x", CpuId(3), 1))
        .unwrap_err();
    assert!(matches!(e, DsError::NoSuchCpu { .. }));
    let e = sim
        .ds
        .add_bts(
            &mut sim.hw,
            BtsConfig::new("x", Scope::Task(t)).buffer(4, 4),
        )
        .unwrap_err();
    assert_eq!(
        e,
        DsError::BufferTooSmall {
            facility: Facility::Bts,
            records: 4,
            min: 5
        }
    );
    for period in [0, 1 << 47] {
        let e = sim
            .ds
            .add_pebs(&mut sim.hw, PebsConfig::new("x", CPU0, period))
            .unwrap_err();
        assert_eq!(e, DsError::BadPeriod { period });
    }
    sim.hw.set_memory_budget(Some(100));
    let e = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("x", Scope::Task(t)))
        .unwrap_err();
    assert_eq!(e, DsError::NoMemory { bytes: 256 * 24 });
    // Room for the buffer but not the DS area: nothing is left behind.
    sim.hw.set_memory_budget(Some(24 * 8 + 10));
    let e = sim
        .ds
        .add_bts(
            &mut sim.hw,
            BtsConfig::new("x", Scope::Task(t)).buffer(8, 1),
        )
        .unwrap_err();
    assert_eq!(e, DsError::NoMemory { bytes: 0xa0 });
    assert_eq!(sim.hw.allocations(), 0);
    sim.hw.set_memory_budget(None);
    let e = sim.ds.remove(&mut sim.hw, UserId(99)).unwrap_err();
    assert_eq!(e, DsError::UnknownUser(UserId(99)));
    let p = sim
        .ds
        .add_pebs(&mut sim.hw, PebsConfig::new("p", CPU0, 5))
        .unwrap();
    let e = sim
        .ds
        .add_pebs(&mut sim.hw, PebsConfig::new("q", CPU0, 5))
        .unwrap_err();
    assert!(matches!(&e, DsError::Conflict { wanted: Facility::Pebs, holder } if holder.user == p));
    let e = sim.ds.read_bts(p, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            DsError::WrongKind {
                is: "a PEBS user",
                ..
            }
        ),
        "{e}"
    );
    assert!(sim.ds.snapshot(&sim.hw, p).is_err());
    let b = add(&mut sim, BtsConfig::new("b", Scope::Task(t)));
    let e = sim.ds.read_pebs(b, &mut |_| {});
    assert!(
        matches!(
            e,
            Err(DsError::WrongKind {
                is: "a stream BTS user",
                ..
            })
        ),
        "{e:?}"
    );
    let e = sim
        .ds
        .add_bts(&mut sim.hw, BtsConfig::new("b2", Scope::Task(t)))
        .unwrap_err();
    assert!(matches!(
        e,
        DsError::Conflict {
            wanted: Facility::Bts,
            ..
        }
    ));
}

#[test]
fn removing_the_last_user_stops_the_hardware_and_frees_every_buffer() {
    let mut sim = TraceSim::new(2);
    let (a, b) = two_tasks(&mut sim);
    let ua = add(&mut sim, BtsConfig::new("a", Scope::Task(a)));
    let uc = add(&mut sim, BtsConfig::new("c", Scope::Cpu(CPU1)));
    let up = sim
        .ds
        .add_pebs(&mut sim.hw, PebsConfig::new("p", CPU0, 2))
        .unwrap();
    sim.switch(CPU0, Some(a), true).unwrap();
    sim.switch(CPU1, Some(b), true).unwrap();
    sim.run(CPU0, 10).unwrap();
    sim.run(CPU1, 10).unwrap();
    assert_ne!(sim.ds.area(CPU0), 0);
    assert_eq!(sim.hw.read_msr(CPU0, Msr::DsArea), sim.ds.area(CPU0));
    for u in [ua, uc, up] {
        sim.ds.remove(&mut sim.hw, u).unwrap();
    }
    assert_eq!(sim.hw.allocations(), 0);
    for c in [CPU0, CPU1] {
        let r = sim.hw.regs(c);
        assert_eq!((r.ds_area, r.debugctl & 0x7c0, r.pebs_enable), (0, 0, 0));
    }
    let before = sim.hw.stats(CPU0).bts_written;
    sim.run(CPU0, 10).unwrap();
    assert_eq!(
        sim.hw.stats(CPU0).bts_written,
        before,
        "nothing writes after removal"
    );
    assert!(sim.hw.faults().is_empty());
}
