//! Property test: random sequences of register, modify, enable, disable,
//! unregister, context switch, hotplug, task exit, debugger and access
//! operations, checked against a plain reference model.
//!
//! The model keeps, per breakpoint, its target, address, enabled flag,
//! reserve-on-enable flag and (wide) member CPUs, and the rule "on every CPU,
//! CPU-bound weight + heaviest task ≤ slots" as a direct count. Invariants,
//! after every step:
//! - an operation succeeds exactly when the model says it fits;
//! - a failed operation changes nothing (layer snapshot and every register);
//! - no CPU ever has more installed than it has slots, and the armed
//!   registers are exactly the install table;
//! - a task's enabled breakpoints are installed exactly while it runs, and
//!   CPU-bound ones exactly on their (online) CPUs;
//! - no callback comes after unregister, and a hit is delivered exactly to
//!   the enabled breakpoints installed at the address.

mod layer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::{DbgSlot, InstalledBp, Layer, Request};
use hwbreak_core::{Access, BpAttr, BpId, CpuId, Error, Target, TaskId};
use layer_support::*;
use proptest::prelude::*;

const CPUS: u32 = 3;
const SLOTS: usize = 2;
const ADDRS: [u64; 4] = [0x100, 0x200, 0x300, 0x400];

#[derive(Debug, Clone)]
enum Op {
    Register {
        kind: u8,
        cpu: u32,
        task: u64,
        addr: usize,
        disabled: bool,
        roe: bool,
    },
    Unregister(usize),
    Modify(usize, usize),
    Enable(usize),
    Disable(usize),
    Switch(u32, Option<u64>),
    Offline(u32),
    Online(u32),
    TaskExit(u64),
    DbgReserve,
    DbgRelease,
    Access(u32, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0..CPUS, 1u64..4, 0..ADDRS.len(), any::<bool>(), any::<bool>()).prop_map(
            |(kind, cpu, task, addr, disabled, roe)| Op::Register { kind, cpu, task, addr, disabled, roe }
        ),
        2 => any::<usize>().prop_map(Op::Unregister),
        1 => (any::<usize>(), 0..ADDRS.len()).prop_map(|(i, a)| Op::Modify(i, a)),
        1 => any::<usize>().prop_map(Op::Enable),
        1 => any::<usize>().prop_map(Op::Disable),
        3 => (0..CPUS, proptest::option::of(1u64..4)).prop_map(|(c, t)| Op::Switch(c, t)),
        1 => (0..CPUS).prop_map(Op::Offline),
        1 => (0..CPUS).prop_map(Op::Online),
        1 => (1u64..4).prop_map(Op::TaskExit),
        1 => Just(Op::DbgReserve),
        1 => Just(Op::DbgRelease),
        3 => (0..CPUS, 0..ADDRS.len()).prop_map(|(c, a)| Op::Access(c, a)),
    ]
}

#[derive(Debug, Clone)]
struct MBp {
    target: Target,
    addr: u64,
    enabled: bool,
    roe: bool,
    members: BTreeSet<u32>,
}

impl MBp {
    fn booked(&self) -> bool {
        !self.roe || self.enabled
    }
}

#[derive(Debug, Clone, Default)]
struct Model {
    bps: BTreeMap<BpId, MBp>,
    online: [bool; CPUS as usize],
    running: [Option<u64>; CPUS as usize],
    dbg: [usize; CPUS as usize],
    dbg_held: usize,
}

impl Model {
    fn fits(&self) -> bool {
        (0..CPUS).all(|c| {
            let mut cpu_bound = self.dbg[c as usize];
            let mut task: BTreeMap<u64, usize> = BTreeMap::new();
            for b in self.bps.values().filter(|b| b.booked()) {
                match b.target {
                    Target::Cpu(x) if x.0 == c => cpu_bound += 1,
                    Target::AllCpus if b.members.contains(&c) => cpu_bound += 1,
                    Target::Task(t) => *task.entry(t.0).or_default() += 1,
                    Target::TaskOnCpu(t, x) if x.0 == c => *task.entry(t.0).or_default() += 1,
                    _ => {}
                }
            }
            cpu_bound + task.values().max().copied().unwrap_or(0) <= SLOTS
        })
    }

    /// What must be installed on `c`.
    fn expected(&self, c: u32) -> BTreeSet<BpId> {
        if !self.online[c as usize] {
            return BTreeSet::new();
        }
        self.bps
            .iter()
            .filter(|(_, b)| b.enabled)
            .filter(|(_, b)| match b.target {
                Target::Cpu(x) => x.0 == c,
                Target::AllCpus => b.members.contains(&c),
                Target::Task(t) => self.running[c as usize] == Some(t.0),
                Target::TaskOnCpu(t, x) => x.0 == c && self.running[c as usize] == Some(t.0),
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

struct Rig {
    l: Layer,
    m: TestMachine,
    model: Model,
    /// Callback counts per breakpoint, and counts frozen at unregister.
    calls: Arc<Mutex<BTreeMap<BpId, u64>>>,
    dead: BTreeMap<BpId, u64>,
    next_id: u32,
}

impl Rig {
    fn pick(&self, i: usize) -> Option<BpId> {
        let ids: Vec<BpId> = self.model.bps.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    fn kill(&mut self, id: BpId) {
        let n = self.calls.lock().unwrap().get(&id).copied().unwrap_or(0);
        self.dead.insert(id, n);
    }

    /// Run `f` on the layer; if it fails, nothing may have changed.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&Layer, &mut TestMachine) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (snap, regs) = (self.l.snapshot(), self.m.all_regs());
        let r = f(&self.l, &mut self.m);
        if r.is_err() {
            assert_eq!(
                self.l.snapshot(),
                snap,
                "a failed operation changed the layer"
            );
            assert_eq!(
                self.m.all_regs(),
                regs,
                "a failed operation wrote a register"
            );
        }
        r
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Register {
                kind,
                cpu,
                task,
                addr,
                disabled,
                roe,
            } => {
                let target = match kind {
                    0 => Target::Cpu(CpuId(cpu)),
                    1 => Target::AllCpus,
                    2 => Target::Task(TaskId(task)),
                    _ => Target::TaskOnCpu(TaskId(task), CpuId(cpu)),
                };
                let mut next = self.model.clone();
                let id = BpId(self.next_id);
                let members = match target {
                    Target::AllCpus => (0..CPUS).filter(|&c| next.online[c as usize]).collect(),
                    _ => BTreeSet::new(),
                };
                next.bps.insert(
                    id,
                    MBp {
                        target,
                        addr: ADDRS[addr],
                        enabled: !disabled,
                        roe,
                        members,
                    },
                );
                let offline = matches!(target, Target::Cpu(c) if !self.model.online[c.idx()]);
                let expect_ok = !offline && next.fits();
                let mut attr = BpAttr::write(ADDRS[addr], 8);
                attr.disabled = disabled;
                let calls = self.calls.clone();
                let mut req = Request::new(attr, target).callback(move |h| {
                    *calls.lock().unwrap().entry(h.bp).or_default() += 1;
                });
                req.reserve_on_enable = roe;
                let r = self.guarded(|l, m| l.register(m, req));
                match r {
                    Ok(got) => {
                        assert!(
                            expect_ok,
                            "register {target:?} succeeded; the model says it does not fit"
                        );
                        assert_eq!(got, id);
                        self.next_id += 1;
                        self.model = next;
                    }
                    Err(Error::CpuOffline(_)) => assert!(offline),
                    Err(e @ Error::NoSlot { .. }) => {
                        assert!(!expect_ok, "register {target:?}: {e}")
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Unregister(i) => {
                let Some(id) = self.pick(i) else { return };
                self.l.unregister(&mut self.m, id).unwrap();
                self.model.bps.remove(&id);
                self.kill(id);
            }
            Op::Modify(i, a) => {
                let Some(id) = self.pick(i) else { return };
                let attr = BpAttr {
                    addr: ADDRS[a],
                    ..self.l.attr(id).unwrap()
                };
                self.l.modify(&mut self.m, id, attr).unwrap();
                self.model.bps.get_mut(&id).unwrap().addr = ADDRS[a];
            }
            Op::Enable(i) | Op::Disable(i) => {
                let Some(id) = self.pick(i) else { return };
                let on = matches!(op, Op::Enable(_));
                let mut next = self.model.clone();
                next.bps.get_mut(&id).unwrap().enabled = on;
                let expect_ok = next.fits();
                let r = self.guarded(|l, m| {
                    if on {
                        l.enable(m, id)
                    } else {
                        l.disable(m, id)
                    }
                });
                assert_eq!(r.is_ok(), expect_ok, "{op:?}: {r:?}");
                if r.is_ok() {
                    self.model = next;
                }
            }
            Op::Switch(c, next) => {
                if !self.model.online[c as usize] {
                    return;
                }
                // A task runs on one CPU at a time.
                if next.is_some()
                    && self
                        .model
                        .running
                        .iter()
                        .enumerate()
                        .any(|(o, r)| o != c as usize && *r == next)
                {
                    return;
                }
                let prev = self.model.running[c as usize];
                self.m.set_current(c, next.map(TaskId));
                self.l.switch_task(
                    &mut self.m,
                    CpuId(c),
                    prev.map(TaskId),
                    next.map(TaskId),
                    false,
                );
                self.model.running[c as usize] = next;
            }
            Op::Offline(c) => {
                if !self.model.online[c as usize] {
                    return;
                }
                self.l.cpu_offline(&mut self.m, CpuId(c));
                self.m.set_online(c, false);
                self.m.set_current(c, None);
                let dead: Vec<BpId> = self
                    .model
                    .bps
                    .iter()
                    .filter(|(_, b)| b.target == Target::Cpu(CpuId(c)))
                    .map(|(id, _)| *id)
                    .collect();
                for id in dead {
                    self.model.bps.remove(&id);
                    self.kill(id);
                }
                for b in self.model.bps.values_mut() {
                    b.members.remove(&c);
                }
                self.model.online[c as usize] = false;
                self.model.running[c as usize] = None;
                self.model.dbg[c as usize] = 0;
            }
            Op::Online(c) => {
                if self.model.online[c as usize] {
                    return;
                }
                self.m.set_online(c, true);
                self.model.online[c as usize] = true;
                let mut first = None;
                let wide: Vec<BpId> = self
                    .model
                    .bps
                    .iter()
                    .filter(|(_, b)| b.target == Target::AllCpus)
                    .map(|(id, _)| *id)
                    .collect();
                for id in wide {
                    self.model.bps.get_mut(&id).unwrap().members.insert(c);
                    if !self.model.fits() {
                        self.model.bps.get_mut(&id).unwrap().members.remove(&c);
                        first.get_or_insert(id);
                    }
                }
                let r = self.l.cpu_online(&mut self.m, CpuId(c));
                assert_eq!(r.map_err(|e| e.bp), first.map_or(Ok(()), Err));
            }
            Op::TaskExit(t) => {
                if let Some(c) = self.model.running.iter().position(|r| *r == Some(t)) {
                    self.m.set_current(c as u32, None);
                    self.l
                        .switch_task(&mut self.m, CpuId(c as u32), Some(TaskId(t)), None, true);
                    self.model.running[c] = None;
                }
                self.l.task_exit(&mut self.m, TaskId(t));
                let dead: Vec<BpId> = self
                    .model
                    .bps
                    .iter()
                    .filter(|(_, b)| b.target.task() == Some(TaskId(t)))
                    .map(|(id, _)| *id)
                    .collect();
                for id in dead {
                    self.model.bps.remove(&id);
                    self.kill(id);
                }
            }
            Op::DbgReserve => {
                let mut next = self.model.clone();
                for c in 0..CPUS as usize {
                    if next.online[c] {
                        next.dbg[c] += 1;
                    }
                }
                next.dbg_held += 1;
                let expect_ok = next.fits();
                let r = self.guarded(|l, _| l.debugger().try_reserve(Pool::Data));
                assert_eq!(r.is_ok(), expect_ok, "{r:?}");
                if r.is_ok() {
                    self.model = next;
                }
            }
            Op::DbgRelease => {
                let r = self.guarded(|l, _| l.debugger().try_release(DbgSlot { pool: Pool::Data }));
                if self.model.dbg_held == 0 {
                    assert_eq!(r, Err(Error::NotReserved { pool: Pool::Data }));
                } else {
                    r.unwrap();
                    self.model.dbg_held -= 1;
                    for d in &mut self.model.dbg {
                        *d = d.saturating_sub(1);
                    }
                }
            }
            Op::Access(c, a) => {
                if !self.model.online[c as usize] {
                    return;
                }
                let want = self
                    .model
                    .expected(c)
                    .into_iter()
                    .filter(|id| self.model.bps[id].addr == ADDRS[a])
                    .count() as u32;
                let (d, _) = self.m.access(&self.l, c, ADDRS[a], Access::Write);
                assert_eq!(
                    (d.delivered, d.strays),
                    (want, 0),
                    "access cpu {c} at {:#x}",
                    ADDRS[a]
                );
            }
        }
    }

    fn check(&self) {
        for c in 0..CPUS {
            let installed = self.l.installed(CpuId(c));
            assert!(installed.len() <= SLOTS, "cpu {c}: {installed:?}");
            let ids: BTreeSet<BpId> = installed.iter().map(|x| x.bp).collect();
            assert_eq!(ids, self.model.expected(c), "cpu {c} installed set");
            let armed = self.m.armed(c);
            assert_eq!(armed.len(), installed.len(), "cpu {c}: registers vs table");
            for InstalledBp { pool, slot, bp: id } in installed {
                let addr = self.model.bps[&id].addr;
                assert!(
                    armed.contains(&(pool, slot as u8, addr, 8, 2)),
                    "cpu {c} slot {slot}: {armed:?}"
                );
            }
        }
        let calls = self.calls.lock().unwrap();
        for (id, n) in &self.dead {
            assert_eq!(
                calls.get(id).copied().unwrap_or(0),
                *n,
                "a callback of {id:?} ran after unregister"
            );
        }
        assert_eq!(
            self.l.registered(),
            self.model.bps.keys().copied().collect::<Vec<_>>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_operation_sequences_match_the_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut rig = Rig {
            l: layer(ToyArch::mixed(SLOTS), CPUS as usize),
            m: TestMachine::new(CPUS as usize),
            model: Model { online: [true; CPUS as usize], ..Model::default() },
            calls: Arc::default(),
            dead: BTreeMap::new(),
            next_id: 1,
        };
        for op in &ops {
            rig.step(op);
            rig.check();
        }
    }
}
