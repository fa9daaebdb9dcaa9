//! Single-step is an optional capability of the machine
//! (`Machine::single_step`): a machine that traps after the access never
//! needs it, and a machine without it gets a typed refusal for breakpoints
//! that would need a step-over, never a lost or looping hit.

mod layer_support;

use hwbreak_core::arch::{Arch, ArchBp, ArchError, DebugRegs, Decoded, Pool, RawStatus};
use hwbreak_core::layer::{Dispatched, Request};
use hwbreak_core::{Access, BpAttr, CpuId, Error, Target};
use layer_support::*;

#[test]
fn a_step_over_breakpoint_on_a_machine_without_single_step_is_refused_and_books_nothing() {
    let l = layer(ToyArch::split(2, 2), 2);
    let mut m = TestMachine::new(2);
    m.set_has_single_step(false);
    let before = l.snapshot();
    for target in [Target::Cpu(CpuId(1)), Target::AllCpus] {
        let e = l
            .register(&mut m, Request::new(BpAttr::write(0x1000, 4), target))
            .unwrap_err();
        assert_eq!(e, Error::NeedsSingleStep { pool: Pool::Data });
        let msg = e.to_string();
        assert!(
            msg.contains("traps before the access") && msg.contains("single-step"),
            "the error names the rule: {msg}"
        );
    }
    assert_eq!(
        l.snapshot(),
        before,
        "a refused registration changes nothing"
    );
    assert!(m.armed(0).is_empty() && m.armed(1).is_empty());
}

#[test]
fn a_trap_after_machine_without_single_step_registers_and_delivers() {
    // x86-like: data hits trap after the access, execute hits resume with RF.
    let l = layer(ToyArch::mixed(4), 1);
    let mut m = TestMachine::new(1);
    m.set_has_single_step(false);
    let w = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x2000, 8), Target::AllCpus),
        )
        .unwrap();
    let x = l
        .register(
            &mut m,
            Request::new(BpAttr::new(0x40_0000, 1, Access::Execute), Target::AllCpus),
        )
        .unwrap();
    let (d, step) = m.access(&l, 0, 0x2004, Access::Write);
    assert_eq!((d.delivered, d.stepping, step), (1, false, None));
    let (d, step) = m.access(&l, 0, 0x40_0000, Access::Execute);
    assert_eq!((d.delivered, d.resume_flag, step), (1, true, None));
    assert_eq!((l.hits(w), l.hits(x)), (Ok(1), Ok(1)));
}

/// The toy split arch, except that only writes trap before the access: a
/// shape change (read → write) turns a breakpoint into one that needs a
/// step-over.
struct WritesTrapBefore(ToyArch);

impl Arch for WritesTrapBefore {
    fn name(&self) -> &'static str {
        "toy-writes-before"
    }
    fn slots(&self, pool: Pool) -> usize {
        self.0.slots(pool)
    }
    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError> {
        self.0.parse(attr)
    }
    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp) {
        self.0.install(regs, slot, bp)
    }
    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize) {
        self.0.uninstall(regs, pool, slot)
    }
    fn decode(
        &self,
        status: &RawStatus,
        regs: &dyn DebugRegs,
        installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded {
        self.0.decode(status, regs, installed)
    }
    fn needs_step_over(&self, bp: &ArchBp) -> bool {
        bp.access == Access::Write
    }
}

#[test]
fn modify_into_a_shape_that_needs_a_step_over_is_refused_on_a_machine_without_one() {
    let l =
        hwbreak_core::layer::Layer::new(Box::new(WritesTrapBefore(ToyArch::split(2, 2))), 1, 64);
    let mut m = TestMachine::new(1);
    m.set_has_single_step(false);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::new(0x3000, 4, Access::Read), Target::AllCpus),
        )
        .unwrap();
    let before = l.snapshot();
    let regs = m.all_regs();
    assert_eq!(
        l.modify(&mut m, id, BpAttr::write(0x3000, 4)),
        Err(Error::NeedsSingleStep { pool: Pool::Data })
    );
    assert_eq!(l.snapshot(), before, "the old shape stays, untouched");
    assert_eq!(m.all_regs(), regs);
    assert_eq!(l.attr(id).unwrap().access, Access::Read);
}

#[test]
fn a_machine_that_withdraws_single_step_gets_a_stray_and_an_armed_slot_not_a_lost_hit() {
    let l = layer(ToyArch::split(2, 2), 1);
    let mut m = TestMachine::new(1);
    let id = l
        .register(
            &mut m,
            Request::new(BpAttr::write(0x1000, 4), Target::Cpu(CpuId(0))),
        )
        .unwrap();
    let armed = m.armed(0);
    m.set_has_single_step(false); // breaks the contract: the answer must not change
    let st = m.status_for(0, 0x1000, Access::Write, 0x4000).unwrap();
    let d = l.handle_exception(&mut m, CpuId(0), &st);
    assert_eq!(
        d,
        Dispatched {
            delivered: 0,
            strays: 1,
            stepping: false,
            resume_flag: false
        }
    );
    assert_eq!(
        m.armed(0),
        armed,
        "the slot stays armed: the machine sees no progress"
    );
    assert!(!m.stepping(0));
    assert_eq!(l.hits(id), Ok(0));

    // Given back, the capability works again: step over, then deliver.
    m.set_has_single_step(true);
    let (d, step) = m.access(&l, 0, 0x1000, Access::Write);
    assert!(d.stepping);
    assert_eq!(step.map(|s| s.delivered), Some(1));
    assert_eq!(l.hits(id), Ok(1));
}
