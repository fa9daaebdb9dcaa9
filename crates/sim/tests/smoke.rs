use hwbreak_core::{Access, BpAttr, CpuId, Target};
use hwbreak_sim::Sim;

#[test]
fn wide_write_watchpoint_hits_on_every_cpu_once_per_write() {
    let mut sim = Sim::x86(4, 1).unwrap();
    let id = sim
        .register(BpAttr::write(0x1000, 8), Target::AllCpus)
        .unwrap();
    for c in 0..4 {
        let o = sim.access(CpuId(c), 0x1004, 4, Access::Write).unwrap();
        assert_eq!(o.delivered, 1);
        sim.access(CpuId(c), 0x1004, 4, Access::Read).unwrap();
    }
    let hits = sim.hits();
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.bp == id));
    assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());
}

#[test]
fn arm64_step_over_reports_after_and_access_happens_once() {
    let mut sim = Sim::arm64(2, 1).unwrap();
    sim.register(BpAttr::write(0x2000, 4), Target::AllCpus)
        .unwrap();
    let o = sim.access(CpuId(1), 0x2000, 4, Access::Write).unwrap();
    assert_eq!((o.traps, o.step_traps, o.delivered), (2, 1, 1));
    assert_eq!(sim.performed().len(), 1);
    assert!(sim.hw.faults().is_empty(), "{:?}", sim.hw.faults());
    assert_eq!(sim.stats().step_contract_broken, 0);
}
