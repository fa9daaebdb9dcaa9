//! Trap-before hardware (arm64, POWER) needs step-over to report a hit after
//! the access; x86 execute breakpoints resume with RF. The access happens
//! exactly once and nothing re-traps forever.

mod support;

use hwbreak_core::arch::{Pool, Reg};
use hwbreak_core::{Access, BpAttr, CpuId, Machine, Target};
use hwbreak_sim::hw::{Arm64Hw, FarMode};
use hwbreak_sim::{Program, Sim, SimError, TraceEvent};
use support::*;

/// Index in the trace of the access, of the exception that armed the step,
/// and of the one that delivered.
fn order(sim: &Sim) -> (usize, usize, usize) {
    let t = sim.trace();
    let access = t
        .iter()
        .position(|e| matches!(e, TraceEvent::Access(_)))
        .expect("access");
    let armed = t
        .iter()
        .position(|e| matches!(e, TraceEvent::Exception { dispatched, .. } if dispatched.stepping))
        .expect("step-over armed");
    let delivered = t
        .iter()
        .position(
            |e| matches!(e, TraceEvent::Exception { dispatched, .. } if dispatched.delivered > 0),
        )
        .expect("delivered");
    (access, armed, delivered)
}

fn step_over_reports_after_the_access(kind: Kind) {
    let mut sim = sim(kind, 2, 1);
    let id = sim
        .register(BpAttr::write(0x4000, 4), Target::AllCpus)
        .unwrap();
    let t = sim.spawn(Program::new().write(0x4000, 4).exit());
    sim.switch_to(CpuId(1), Some(t)).unwrap();
    let o = sim.access(CpuId(1), 0x4000, 4, W).unwrap();
    assert_eq!(
        (o.traps, o.step_traps, o.delivered, o.strays),
        (2, 1, 1, 0),
        "{kind:?}"
    );
    let (access, armed, delivered) = order(&sim);
    assert!(
        armed < access && access < delivered,
        "{kind:?}: trap, access, then report"
    );
    assert_eq!(
        sim.performed().len(),
        1,
        "{kind:?}: the store happened exactly once"
    );
    let hits = sim.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].bp, hits[0].cpu, hits[0].task, hits[0].addr),
        (id, CpuId(1), Some(t), 0x4000)
    );
    assert_eq!(hits[0].ip, 0x40_0000, "{kind:?}: ip of the store");
    // Afterwards: slot re-armed, single-step off, and the next store hits again.
    assert!(!sim.hw.cpu(CpuId(1)).unwrap().flags().single_step);
    assert_eq!(sim.hw.armed(CpuId(1)).len(), 1);
    assert_eq!(sim.access(CpuId(1), 0x4000, 4, W).unwrap().delivered, 1);
    assert_eq!(drain_samples(&sim), 2);
    assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());
    assert_eq!(sim.stats().step_contract_broken, 0);
}

#[test]
fn arm64_watchpoint_step_over_reports_after_the_access_once() {
    step_over_reports_after_the_access(Kind::Arm64);
}

#[test]
fn power_dawr_step_over_reports_after_the_access_once() {
    step_over_reports_after_the_access(Kind::Power9);
    step_over_reports_after_the_access(Kind::Power10);
}

#[test]
fn arm64_breakpoint_steps_over_the_instruction_once() {
    let mut sim = sim(Kind::Arm64, 1, 1);
    let id = sim
        .register(
            BpAttr::new(0x40_0100, 4, Access::Execute),
            Target::Cpu(CpuId(0)),
        )
        .unwrap();
    let o = sim.exec(CpuId(0), 0x40_0100).unwrap();
    assert_eq!((o.traps, o.step_traps, o.delivered), (2, 1, 1));
    assert_eq!(sim.stats().insns, 1);
    assert_eq!(sim.hits()[0].bp, id);
    assert_eq!(sim.hits()[0].ip, 0x40_0100);
    assert_eq!(
        sim.exec(CpuId(0), 0x40_0100).unwrap().delivered,
        1,
        "re-armed"
    );
}

#[test]
fn arm64_wide_store_below_the_watch_is_delivered_with_inexact_far() {
    for far in [FarMode::Exact, FarMode::AccessStart, FarMode::RoundDown8] {
        let mut sim = Sim::arm64_with(
            Arm64Hw {
                far,
                ..Default::default()
            },
            1,
            1,
        )
        .unwrap();
        sim.register(BpAttr::write(0x5004, 4), Target::AllCpus)
            .unwrap();
        // A 16-byte `stp` at 0x4ffc covers 0x5004..0x5008.
        let o = sim.access(CpuId(0), 0x4ffc, 16, W).unwrap();
        assert_eq!((o.traps, o.delivered), (2, 1), "{far:?}");
        assert_eq!(sim.performed().len(), 1);
    }
}

#[test]
fn x86_execute_breakpoint_resumes_with_rf_and_runs_the_instruction_once() {
    let mut sim = sim(Kind::X86, 1, 1);
    let id = sim
        .register(BpAttr::exec(0x40_0200), Target::Cpu(CpuId(0)))
        .unwrap();
    let o = sim.exec(CpuId(0), 0x40_0200).unwrap();
    assert_eq!(
        (o.traps, o.step_traps, o.delivered),
        (1, 0, 1),
        "one fault, no step-over"
    );
    assert_eq!(sim.stats().insns, 1);
    let h = sim.hits()[0];
    assert_eq!(
        (h.bp, h.ip),
        (id, 0x40_0200),
        "reported before, at the instruction"
    );
    // RF cleared after one instruction: the next fetch there faults again.
    assert!(!sim.hw.cpu(CpuId(0)).unwrap().flags().resume_flag);
    assert_eq!(sim.exec(CpuId(0), 0x40_0200).unwrap().delivered, 1);
    assert_eq!(sim.exec(CpuId(0), 0x40_0204).unwrap().traps, 0);
}

#[test]
fn x86_data_breakpoint_reports_after_with_rip_of_the_next_instruction() {
    let mut sim = sim(Kind::X86, 1, 1);
    sim.register(BpAttr::read_write(0x6000, 4), Target::AllCpus)
        .unwrap();
    let o = sim.access_at(CpuId(0), 0x40_0300, 0x6002, 1, R).unwrap();
    assert_eq!((o.traps, o.step_traps, o.delivered), (1, 0, 1));
    let t = sim.trace();
    assert!(matches!(t[0], TraceEvent::Access(_)) && matches!(t[1], TraceEvent::Exception { .. }));
    assert_eq!(sim.hits()[0].ip, 0x40_0304);
}

#[test]
fn power_access_in_widened_doubleword_outside_request_is_filtered_without_event() {
    for kind in [Kind::Power9, Kind::Power10] {
        let mut sim = sim(kind, 1, 1);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c2 = calls.clone();
        let req = hwbreak_core::layer::Request::new(BpAttr::write(0x8004, 2), Target::AllCpus)
            .callback(move |_| {
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        let id = sim.layer.register(&mut sim.hw, req).unwrap();
        // 0x8000..0x8004 and 0x8006..0x8008 are widened bytes: trap, but stray.
        for addr in [0x8000, 0x8003, 0x8006, 0x8007] {
            let o = sim.access(CpuId(0), addr, 1, W).unwrap();
            assert_eq!((o.delivered, o.strays), (0, 1), "{kind:?} {addr:#x}");
            assert!(o.traps >= 1, "the hardware did trap");
        }
        assert_eq!(
            sim.performed().len(),
            4,
            "each stray access still happened, once"
        );
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no callback"
        );
        assert_eq!(drain_samples(&sim), 0, "no event");
        assert_eq!(sim.layer.hits(id).unwrap(), 0);
        // A requested byte is delivered.
        assert_eq!(sim.access(CpuId(0), 0x8005, 1, W).unwrap().delivered, 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(drain_samples(&sim), 1);
        assert!(!sim.hw.cpu(CpuId(0)).unwrap().flags().single_step);
    }
}

#[test]
fn x86_hit_in_a_slot_the_layer_never_programmed_is_a_stray() {
    let mut sim = sim(Kind::X86, 1, 1);
    // Behind the layer's back: DR3 = 0xa000, 8-byte write.
    let r = sim.hw.regs(CpuId(0));
    r.write(Reg::Addr(Pool::Data, 3), 0xa000);
    r.write(Reg::Control, (1 << 6) | (0b01 << 28) | (0b10 << 30));
    let o = sim.access(CpuId(0), 0xa000, 8, W).unwrap();
    assert_eq!((o.traps, o.delivered, o.strays), (1, 0, 1));
    assert_eq!(drain_samples(&sim), 0);
}

#[test]
fn trap_before_slot_the_layer_cannot_step_over_is_an_error_not_a_hang() {
    let mut sim = sim(Kind::Arm64, 1, 1);
    // A watchpoint the layer does not know: it can neither deliver nor step
    // over it, so the store can never complete.
    let r = sim.hw.regs(CpuId(0));
    r.write(Reg::Addr(Pool::Data, 2), 0xb000);
    r.write(
        Reg::Ctrl(Pool::Data, 2),
        1 | (0b10 << 1) | (0b10 << 3) | (0xff << 5),
    );
    let e = sim.access(CpuId(0), 0xb000, 8, W).unwrap_err();
    assert!(
        matches!(e, SimError::NoProgress { cpu: CpuId(0), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("not making progress"));
    assert!(sim.performed().is_empty(), "the store never happened");
}

/// DAR is the store's first byte, outside the request; only the access
/// length (`RawStatus::Power::size`, which Linux gets from `analyse_instr`)
/// shows the store writes requested bytes. Without it dispatch dropped this
/// real hit as a stray.
#[test]
fn power_store_covering_the_request_from_below_is_delivered() {
    // An 8-byte store at 0x8000 writes the requested bytes 0x8004..0x8006;
    // DAR is the store's address, 0x8000, outside the request.
    for kind in [Kind::Power9, Kind::Power10] {
        let mut sim = sim(kind, 1, 1);
        sim.register(BpAttr::write(0x8004, 2), Target::AllCpus)
            .unwrap();
        let o = sim.access(CpuId(0), 0x8000, 8, W).unwrap();
        assert_eq!((o.delivered, o.strays), (1, 0), "{kind:?}");
    }
}

#[test]
fn arm64_breakpoint_and_watchpoint_on_one_instruction_both_report_and_it_runs_once() {
    let mut sim = sim(Kind::Arm64, 1, 1);
    let bp = sim
        .register(BpAttr::new(0x40_0400, 4, Access::Execute), Target::AllCpus)
        .unwrap();
    let wp = sim
        .register(BpAttr::write(0x7000, 8), Target::AllCpus)
        .unwrap();
    let o = sim.access_at(CpuId(0), 0x40_0400, 0x7000, 8, W).unwrap();
    assert_eq!(o.delivered, 2, "{o:?}");
    assert!(o.traps <= 4, "{o:?}");
    assert_eq!(sim.performed().len(), 1);
    let mut ids: Vec<_> = sim.hits().iter().map(|h| h.bp).collect();
    ids.sort();
    assert_eq!(ids, vec![bp, wp]);
    assert_eq!(sim.hw.armed(CpuId(0)).len(), 2, "both re-armed");
    assert!(!sim.hw.cpu(CpuId(0)).unwrap().flags().single_step);
}

#[test]
fn two_slots_matching_one_access_are_both_delivered_once() {
    for kind in [Kind::X86, Kind::Arm64, Kind::Power10] {
        let mut sim = sim(kind, 1, 1);
        let a = sim
            .register(BpAttr::write(0x7100, 8), Target::AllCpus)
            .unwrap();
        let b = sim
            .register(BpAttr::write(0x7100, 8), Target::Cpu(CpuId(0)))
            .unwrap();
        let o = sim.access(CpuId(0), 0x7100, 8, W).unwrap();
        assert_eq!(o.delivered, 2, "{kind:?}: {o:?}");
        assert_eq!(sim.performed().len(), 1, "{kind:?}");
        let mut ids: Vec<_> = sim.hits().iter().map(|h| h.bp).collect();
        ids.sort();
        assert_eq!(ids, vec![a, b], "{kind:?}");
        assert_eq!(sim.hw.armed(CpuId(0)).len(), 2, "{kind:?}");
    }
}

#[test]
fn unregister_between_trap_and_step_completion_delivers_nothing_late() {
    // The layer parks a hit while it single-steps; unregistering then must
    // not let the callback run afterwards.
    let mut sim = sim(Kind::Arm64, 1, 1);
    let id = sim
        .register(BpAttr::write(0x7200, 8), Target::AllCpus)
        .unwrap();
    // Take the watchpoint exception by hand, as the CPU would.
    let raw = hwbreak_core::arch::RawStatus::Arm64 {
        esr: (0x34 << 26) | (1 << 25) | (1 << 6) | 0x22,
        far: 0x7200,
        pc: 0x40_0000,
    };
    let d = sim.layer.handle_exception(&mut sim.hw, CpuId(0), &raw);
    assert!(d.stepping);
    sim.unregister(id).unwrap();
    // The step completes: the instruction runs with single-step armed.
    let o = sim.access_at(CpuId(0), 0x40_0000, 0x7200, 8, W).unwrap();
    assert_eq!(o.delivered, 0);
    assert_eq!(sim.stats().late_callbacks, 0);
    assert!(sim.hits().is_empty());
    assert!(
        sim.hw.armed(CpuId(0)).is_empty(),
        "nothing re-armed for a dead breakpoint"
    );
    assert!(!sim.hw.cpu(CpuId(0)).unwrap().flags().single_step);
}

/// A machine without single-step (`Machine::single_step` is `None`): the
/// trap-before arches refuse every breakpoint with a typed error and leave
/// the registers alone; x86 needs no step-over and works as before.
#[test]
fn a_machine_without_single_step_refuses_trap_before_breakpoints_and_x86_needs_none() {
    for kind in [Kind::Arm64, Kind::Power9, Kind::Power10] {
        let mut sim = sim(kind, 2, 1);
        sim.hw.set_has_single_step(false);
        let e = sim
            .register(BpAttr::write(0x4000, 4), Target::AllCpus)
            .unwrap_err();
        assert_eq!(
            e,
            hwbreak_core::Error::NeedsSingleStep { pool: Pool::Data },
            "{kind:?}"
        );
        assert!(sim.hw.armed(CpuId(0)).is_empty() && sim.hw.armed(CpuId(1)).is_empty());
        let o = sim.access(CpuId(0), 0x4000, 4, W).unwrap();
        assert_eq!((o.traps, o.delivered), (0, 0), "{kind:?}");
    }
    let mut sim = sim(Kind::X86, 2, 1);
    sim.hw.set_has_single_step(false);
    sim.register(BpAttr::write(0x4000, 4), Target::AllCpus)
        .unwrap();
    sim.register(BpAttr::new(0x40_0400, 1, Access::Execute), Target::AllCpus)
        .unwrap();
    let o = sim.access(CpuId(1), 0x4000, 4, W).unwrap();
    assert_eq!((o.traps, o.step_traps, o.delivered), (1, 0, 1));
    let o = sim.exec(CpuId(1), 0x40_0400).unwrap();
    assert_eq!((o.traps, o.step_traps, o.delivered), (1, 0, 1));
}

/// A machine that withdraws single-step after registering (breaking the
/// contract that the answer never changes) gets strays and an armed slot,
/// so the simulator reports no progress: never a hang, never a silently
/// lost hit.
#[test]
fn single_step_withdrawn_after_registration_is_no_progress_not_a_lost_hit() {
    let mut sim = sim(Kind::Arm64, 1, 1);
    let id = sim
        .register(BpAttr::write(0x4000, 4), Target::AllCpus)
        .unwrap();
    sim.hw.set_has_single_step(false);
    let e = sim.access(CpuId(0), 0x4000, 4, W).unwrap_err();
    assert!(
        matches!(e, SimError::NoProgress { cpu: CpuId(0), .. }),
        "{e:?}"
    );
    assert!(sim.performed().is_empty(), "the store never happened");
    assert_eq!(sim.layer.hits(id), Ok(0));
    assert_eq!(sim.hw.armed(CpuId(0)).len(), 1, "the slot stays armed");
}
