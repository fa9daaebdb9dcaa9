//! Random sequences of layer operations, context switches, hotplug,
//! debugger reservations and memory accesses on the simulator, checked after
//! every step against a plain reference model of the kernel's rules.
//!
//! Invariants:
//! - no CPU ever has more installed than it has slots, and what is installed
//!   on each CPU (layer tables *and* armed hardware) is exactly what the model
//!   says: wide members, CPU-bound breakpoints, and the running task's;
//! - a task's enabled breakpoints are installed exactly while it runs;
//! - no callback after unregister;
//! - a failed operation changes nothing (layer snapshot and every register);
//! - each access delivers exactly the hits the model predicts.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::DbgSlot;
use hwbreak_core::{Access, BpAttr, BpId, CpuId, Error, Target, TaskId};
use hwbreak_sim::{BpOpts, Program, Sim, SimError};
use proptest::prelude::*;
use support::*;

const CPUS: u32 = 3;
const TASKS: u64 = 3;

#[derive(Debug, Clone)]
enum TSpec {
    Task(u64),
    TaskOnCpu(u64, u32),
    Cpu(u32),
    All,
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        target: TSpec,
        rw: bool,
        disabled: bool,
        roe: bool,
        /// 0..3: the shapes every arch accepts (see `attr_for`). Shape 2
        /// starts 4 bytes into the region, so the 8-byte access at the
        /// region's base covers it from below (POWER: DAR outside the request).
        shape: u8,
    },
    Modify {
        bp: usize,
        shape: u8,
    },
    Enable(usize),
    Disable(usize),
    Unregister(usize),
    Switch {
        cpu: u32,
        task: Option<u64>,
    },
    CpuDown(u32),
    CpuUp(u32),
    DbgReserve,
    DbgRelease,
    Access {
        cpu: u32,
        bp: usize,
        write: bool,
    },
    Run(u8),
}

fn tspec() -> impl Strategy<Value = TSpec> {
    prop_oneof![
        3 => (1..=TASKS).prop_map(TSpec::Task),
        2 => (1..=TASKS, 0..CPUS).prop_map(|(t, c)| TSpec::TaskOnCpu(t, c)),
        2 => (0..CPUS).prop_map(TSpec::Cpu),
        2 => Just(TSpec::All),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (tspec(), any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.3), 0..3u8)
            .prop_map(|(target, rw, disabled, roe, shape)| Op::Register { target, rw, disabled, roe, shape }),
        2 => (0..16usize, 0..4u8).prop_map(|(bp, shape)| Op::Modify { bp, shape }),
        2 => (0..16usize).prop_map(Op::Enable),
        2 => (0..16usize).prop_map(Op::Disable),
        2 => (0..16usize).prop_map(Op::Unregister),
        4 => (0..CPUS, prop::option::of(1..=TASKS)).prop_map(|(cpu, task)| Op::Switch { cpu, task }),
        1 => (0..CPUS).prop_map(Op::CpuDown),
        1 => (0..CPUS).prop_map(Op::CpuUp),
        1 => Just(Op::DbgReserve),
        1 => Just(Op::DbgRelease),
        6 => (0..CPUS, 0..16usize, any::<bool>()).prop_map(|(cpu, bp, write)| Op::Access { cpu, bp, write }),
        1 => (1..20u8).prop_map(Op::Run),
    ]
}

/// One breakpoint as the model knows it.
#[derive(Debug, Clone)]
struct MBp {
    id: BpId,
    attr: BpAttr,
    target: Target,
    roe: bool,
    alive: bool,
    /// Wide: CPUs it is a member of.
    members: BTreeSet<u32>,
    hits: u64,
}

impl MBp {
    fn booked(&self) -> bool {
        !(self.roe && self.attr.disabled)
    }
    fn base(&self) -> u64 {
        0x10_0000 + 0x100 * self.id.0 as u64
    }
}

struct Model {
    slots: usize,
    bps: Vec<MBp>,
    online: BTreeSet<u32>,
    dbg: BTreeMap<u32, usize>,
    dbg_held: usize,
}

impl Model {
    fn alive(&self) -> impl Iterator<Item = &MBp> {
        self.bps.iter().filter(|b| b.alive)
    }

    /// CPU-bound weight on `c` (wide members, Cpu(c), debugger).
    fn cpu_bound(&self, c: u32) -> usize {
        let bps = self
            .alive()
            .filter(|b| b.booked())
            .filter(|b| match b.target {
                Target::AllCpus => b.members.contains(&c),
                Target::Cpu(x) => x.0 == c,
                _ => false,
            })
            .count();
        bps + self.dbg.get(&c).copied().unwrap_or(0)
    }

    fn task_weight(&self, t: TaskId, c: u32) -> usize {
        self.alive()
            .filter(|b| b.booked())
            .filter(|b| match b.target {
                Target::Task(x) => x == t,
                Target::TaskOnCpu(x, y) => x == t && y.0 == c,
                _ => false,
            })
            .count()
    }

    fn task_max(&self, c: u32) -> usize {
        (1..=TASKS)
            .map(|t| self.task_weight(TaskId(t), c))
            .max()
            .unwrap_or(0)
    }

    /// Would one more CPU-bound slot fit on `c`?
    fn cpu_fits(&self, c: u32) -> bool {
        self.cpu_bound(c) + self.task_max(c) < self.slots
    }

    /// Would one more slot for task `t` (on `c`, or everywhere) fit?
    fn task_fits(&self, t: TaskId, only: Option<u32>) -> bool {
        // Linux semantics: a CPU-independent task breakpoint must fit on every possible CPU.
        (0..CPUS)
            .filter(|c| !matches!(only, Some(o) if o != *c))
            .all(|c| self.cpu_bound(c) + self.task_weight(t, c) < self.slots)
    }

    /// Would booking one slot for `b` (its target) fit? Err(cpu) names the first CPU that is full.
    fn fits(&self, target: Target, members: &BTreeSet<u32>) -> Result<(), Option<u32>> {
        match target {
            Target::AllCpus => match members.iter().find(|c| !self.cpu_fits(**c)) {
                Some(c) => Err(Some(*c)),
                None => Ok(()),
            },
            Target::Cpu(c) => self.cpu_fits(c.0).then_some(()).ok_or(Some(c.0)),
            Target::Task(t) => self.task_fits(t, None).then_some(()).ok_or(None),
            Target::TaskOnCpu(t, c) => self.task_fits(t, Some(c.0)).then_some(()).ok_or(Some(c.0)),
        }
    }

    /// Breakpoint ids that must be installed on `c` now.
    fn expected_installed(&self, c: u32, current: Option<TaskId>) -> BTreeSet<BpId> {
        self.alive()
            .filter(|b| !b.attr.disabled)
            .filter(|b| match b.target {
                Target::AllCpus => b.members.contains(&c),
                Target::Cpu(x) => x.0 == c,
                Target::Task(t) => current == Some(t),
                Target::TaskOnCpu(t, x) => current == Some(t) && x.0 == c,
            })
            .map(|b| b.id)
            .collect()
    }
}

fn target_of(t: &TSpec) -> Target {
    match *t {
        TSpec::Task(t) => Target::Task(TaskId(t)),
        TSpec::TaskOnCpu(t, c) => Target::TaskOnCpu(TaskId(t), CpuId(c)),
        TSpec::Cpu(c) => Target::Cpu(CpuId(c)),
        TSpec::All => Target::AllCpus,
    }
}

struct Frozen {
    layer: hwbreak_core::layer::Snapshot,
    regs: Vec<hwbreak_sim::hw::RegValues>,
}

fn freeze(sim: &Sim) -> Frozen {
    Frozen {
        layer: sim.layer.snapshot(),
        regs: sim.hw.reg_snapshot(),
    }
}

fn unchanged(sim: &Sim, f: &Frozen, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        sim.layer.snapshot() == f.layer,
        "{}: failed op changed the layer",
        what
    );
    prop_assert!(
        sim.hw.reg_snapshot() == f.regs,
        "{}: failed op changed a register",
        what
    );
    Ok(())
}

fn attr_for(base: u64, rw: bool, shape: u8, disabled: bool) -> BpAttr {
    let access = if rw { Access::ReadWrite } else { Access::Write };
    let mut a = match shape {
        0 => BpAttr::new(base, 8, access),
        1 => BpAttr::new(base, 4, access),
        2 => BpAttr::new(base + 4, 4, access),
        // Unaligned 8 bytes: x86 refuses (alignment), arm64 refuses (crosses a doubleword).
        _ => BpAttr::new(base + 2, 8, access),
    };
    a.disabled = disabled;
    a
}

fn run_case(kind: Kind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut sim = sim(kind, CPUS as usize, 7);
    sim.set_preempt_per_mille(200);
    for _ in 0..TASKS {
        sim.spawn(Program::new().nop().yield_now().repeat());
    }
    let mut m = Model {
        slots: data_slots(&sim),
        bps: Vec::new(),
        online: (0..CPUS).collect(),
        dbg: BTreeMap::new(),
        dbg_held: 0,
    };
    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step} {op:?}");
        let before = freeze(&sim);
        match op {
            Op::Register {
                target,
                rw,
                disabled,
                roe,
                shape,
            } => {
                let target = target_of(&target);
                let next_id = BpId(before.layer.next_id);
                let base = 0x10_0000 + 0x100 * next_id.0 as u64;
                let attr = attr_for(base, rw, shape, disabled);
                let members: BTreeSet<u32> = if target == Target::AllCpus {
                    m.online.clone()
                } else {
                    BTreeSet::new()
                };
                let offline_cpu = matches!(target, Target::Cpu(c) if !m.online.contains(&c.0));
                let want = if offline_cpu {
                    Err(None)
                } else if roe && disabled {
                    Ok(())
                } else {
                    m.fits(target, &members)
                };
                let got = sim.register_with(
                    attr,
                    target,
                    BpOpts {
                        reserve_on_enable: roe,
                        ..Default::default()
                    },
                );
                match (&want, &got) {
                    (Ok(()), Ok(id)) => {
                        prop_assert_eq!(*id, next_id);
                        m.bps.push(MBp {
                            id: *id,
                            attr,
                            target,
                            roe,
                            alive: true,
                            members,
                            hits: 0,
                        });
                    }
                    (Err(cpu), Err(e)) => {
                        if offline_cpu {
                            prop_assert!(matches!(e, Error::CpuOffline(_)), "{}: {:?}", what, e);
                        } else if let (Some(c), Error::NoSlot { cpu: ec, .. }) = (cpu, e) {
                            if target == Target::AllCpus {
                                prop_assert_eq!(
                                    ec.0,
                                    *c,
                                    "{}: wide error names the first full CPU",
                                    what
                                );
                            }
                        } else {
                            prop_assert!(matches!(e, Error::NoSlot { .. }), "{}: {:?}", what, e);
                        }
                        unchanged(&sim, &before, &what)?;
                    }
                    _ => prop_assert!(false, "{}: model {:?}, layer {:?}", what, want, got),
                }
            }
            Op::Modify { bp, shape } => {
                let Some(b) = m.bps.get(bp).cloned() else {
                    continue;
                };
                let attr = attr_for(
                    b.base(),
                    b.attr.access == Access::ReadWrite,
                    shape,
                    b.attr.disabled,
                );
                let got = sim.modify(b.id, attr);
                // POWER widens an unaligned range to doublewords; the others refuse it.
                let valid = shape < 3 || matches!(kind, Kind::Power9 | Kind::Power10);
                match (b.alive, valid, got) {
                    (true, true, Ok(())) => m.bps[bp].attr = attr,
                    (true, false, Err(Error::Arch(_))) | (false, _, Err(_)) => {
                        unchanged(&sim, &before, &what)?
                    }
                    (_, _, got) => prop_assert!(false, "{}: alive={} got {:?}", what, b.alive, got),
                }
            }
            Op::Enable(bp) => {
                let Some(b) = m.bps.get(bp).cloned() else {
                    continue;
                };
                let want = if !b.alive {
                    Err(())
                } else if b.attr.disabled && b.roe {
                    m.fits(b.target, &b.members).map_err(|_| ())
                } else {
                    Ok(())
                };
                let got = sim.enable(b.id);
                prop_assert_eq!(want.is_ok(), got.is_ok(), "{}: {:?}", what, got);
                if got.is_ok() {
                    m.bps[bp].attr.disabled = false;
                } else {
                    unchanged(&sim, &before, &what)?;
                }
            }
            Op::Disable(bp) => {
                let Some(b) = m.bps.get(bp).cloned() else {
                    continue;
                };
                let got = sim.disable(b.id);
                prop_assert_eq!(b.alive, got.is_ok(), "{}: {:?}", what, got);
                if got.is_ok() {
                    m.bps[bp].attr.disabled = true;
                } else {
                    unchanged(&sim, &before, &what)?;
                }
            }
            Op::Unregister(bp) => {
                let Some(b) = m.bps.get(bp).cloned() else {
                    continue;
                };
                let got = sim.unregister(b.id);
                prop_assert_eq!(b.alive, got.is_ok(), "{}: {:?}", what, got);
                if got.is_ok() {
                    m.bps[bp].alive = false;
                } else {
                    let unknown = matches!(got, Err(Error::UnknownBreakpoint(_)));
                    prop_assert!(unknown, "{}", what);
                    unchanged(&sim, &before, &what)?;
                }
            }
            Op::Switch { cpu, task } => {
                if !m.online.contains(&cpu) {
                    prop_assert_eq!(
                        sim.switch_to(CpuId(cpu), task.map(TaskId)),
                        Err(SimError::CpuOffline(CpuId(cpu)))
                    );
                    continue;
                }
                if let Some(t) = task {
                    // Migrate: take it off the CPU it runs on first.
                    if let Some(c) = (0..CPUS).find(|c| {
                        *c != cpu && sim.hw.cpu(CpuId(*c)).unwrap().current() == Some(TaskId(t))
                    }) {
                        sim.switch_to(CpuId(c), None).unwrap();
                    }
                }
                sim.switch_to(CpuId(cpu), task.map(TaskId)).unwrap();
            }
            Op::CpuDown(cpu) => {
                let got = sim.cpu_down(CpuId(cpu));
                if !m.online.contains(&cpu) {
                    prop_assert_eq!(got, Err(SimError::CpuOffline(CpuId(cpu))));
                } else if m.online.len() == 1 {
                    prop_assert_eq!(got, Err(SimError::LastCpu(CpuId(cpu))));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    m.online.remove(&cpu);
                    m.dbg.remove(&cpu);
                    for b in m.bps.iter_mut().filter(|b| b.alive) {
                        b.members.remove(&cpu);
                        if b.target == Target::Cpu(CpuId(cpu)) {
                            b.alive = false;
                        }
                    }
                    prop_assert_eq!(sim.hw.cpu(CpuId(cpu)).unwrap().armed_at_offline(), 0);
                }
            }
            Op::CpuUp(cpu) => {
                if m.online.contains(&cpu) {
                    prop_assert_eq!(
                        sim.cpu_up(CpuId(cpu)),
                        Err(SimError::CpuAlreadyOnline(CpuId(cpu)))
                    );
                    continue;
                }
                m.online.insert(cpu);
                // Wide breakpoints join in id order; the first that does not fit is reported.
                let mut first_fail = None;
                for i in 0..m.bps.len() {
                    let b = &m.bps[i];
                    if !b.alive || b.target != Target::AllCpus {
                        continue;
                    }
                    if !b.booked() || m.cpu_fits(cpu) {
                        m.bps[i].members.insert(cpu);
                    } else if first_fail.is_none() {
                        first_fail = Some(b.id);
                    }
                }
                match (sim.cpu_up(CpuId(cpu)), first_fail) {
                    (Ok(()), None) => {}
                    (Err(SimError::WideDidNotFit { bp, .. }), Some(f)) => prop_assert_eq!(bp, f),
                    (got, want) => {
                        prop_assert!(false, "{}: got {:?}, model fails {:?}", what, got, want)
                    }
                }
            }
            Op::DbgReserve => {
                let want = m.online.iter().all(|c| m.cpu_fits(*c));
                let got = sim.layer.debugger().try_reserve(Pool::Data);
                prop_assert_eq!(want, got.is_ok(), "{}: {:?}", what, got);
                if want {
                    for c in &m.online {
                        *m.dbg.entry(*c).or_default() += 1;
                    }
                    m.dbg_held += 1;
                } else {
                    unchanged(&sim, &before, &what)?;
                }
            }
            Op::DbgRelease => {
                let got = sim
                    .layer
                    .debugger()
                    .try_release(DbgSlot { pool: Pool::Data });
                prop_assert_eq!(m.dbg_held > 0, got.is_ok(), "{}: {:?}", what, got);
                if got.is_ok() {
                    m.dbg_held -= 1;
                    for v in m.dbg.values_mut() {
                        *v = v.saturating_sub(1);
                    }
                } else {
                    let not_reserved = matches!(got, Err(Error::NotReserved { .. }));
                    prop_assert!(not_reserved, "{}: {:?}", what, got);
                    unchanged(&sim, &before, &what)?;
                }
            }
            Op::Access { cpu, bp, write } => {
                let Some(b) = m.bps.get(bp).cloned() else {
                    continue;
                };
                if !m.online.contains(&cpu) {
                    continue;
                }
                let kind = if write { Access::Write } else { Access::Read };
                let current = sim.hw.cpu(CpuId(cpu)).unwrap().current();
                // An 8-byte access at the region's base covers every shape,
                // on every arch: on POWER it starts below some requests
                // (DAR = the base), and dispatch must still deliver them
                // (the status carries the access size).
                let (addr, len) = (b.base(), 8);
                let expect: Vec<usize> = m
                    .bps
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| m.expected_installed(cpu, current).contains(&x.id))
                    .filter(|(_, x)| x.attr.overlaps(addr, len) && x.attr.access.matches(kind))
                    .map(|(i, _)| i)
                    .collect();
                let before_hits = sim.hits().len();
                let o = sim
                    .access(CpuId(cpu), addr, len, kind)
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                prop_assert_eq!(o.delivered as usize, expect.len(), "{}", what);
                let new: Vec<BpId> = sim.hits()[before_hits..].iter().map(|h| h.bp).collect();
                let want: Vec<BpId> = expect.iter().map(|i| m.bps[*i].id).collect();
                prop_assert_eq!(new, want, "{}", what);
                for i in expect {
                    m.bps[i].hits += 1;
                }
            }
            Op::Run(n) => {
                sim.run(n as u64)
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
            }
        }

        // Invariants after every step.
        for c in 0..CPUS {
            let installed: BTreeSet<BpId> = sim
                .layer
                .installed(CpuId(c))
                .into_iter()
                .map(|x| x.bp)
                .collect();
            let online = m.online.contains(&c);
            let current = sim.hw.cpu(CpuId(c)).unwrap().current();
            let want = if online {
                m.expected_installed(c, current)
            } else {
                BTreeSet::new()
            };
            prop_assert!(
                installed.len() <= m.slots,
                "{}: CPU {} over its slots",
                what,
                c
            );
            prop_assert_eq!(
                &installed,
                &want,
                "{}: CPU {} installed (running {:?})",
                what,
                c,
                current
            );
            let armed = sim.hw.armed(CpuId(c));
            prop_assert_eq!(
                armed.len(),
                want.len(),
                "{}: CPU {} armed {:?}",
                what,
                c,
                armed
            );
            for id in &want {
                let b = m.bps.iter().find(|b| b.id == *id).unwrap();
                prop_assert!(
                    armed.iter().any(
                        |a| a.addr <= b.attr.addr && b.attr.addr + b.attr.len <= a.addr + a.len
                    ),
                    "{}: bp {:?} not armed on CPU {}",
                    what,
                    id,
                    c
                );
            }
        }
        prop_assert_eq!(sim.stats().late_callbacks, 0, "{}", what);
        prop_assert!(
            sim.hw.faults().is_empty(),
            "{}: {:?}",
            what,
            sim.hw.faults()
        );
    }
    for b in &m.bps {
        if b.alive {
            prop_assert_eq!(sim.layer.hits(b.id).unwrap(), b.hits);
        }
        prop_assert_eq!(
            sim.hits().iter().filter(|h| h.bp == b.id).count() as u64,
            b.hits
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn x86_layer_matches_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        run_case(Kind::X86, ops)?;
    }

    #[test]
    fn arm64_layer_matches_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        run_case(Kind::Arm64, ops)?;
    }

    #[test]
    fn power10_layer_matches_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        run_case(Kind::Power10, ops)?;
    }
}
