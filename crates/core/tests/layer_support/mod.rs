//! Shared test rig for the layer tests: a tiny `Machine` (one register file
//! per CPU, a `BTreeMap<Reg, u64>`) and a tiny arch whose pools, trigger and
//! widening are configurable, so the layer is tested independently of the
//! real arch backends (those have their own tests, and `layer_x86.rs` runs
//! the layer on the real x86-64 backend).
//!
//! Hits are *computed from the register files*, the way hardware would: a
//! test access fires only if the layer really programmed a register for it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::{
    Arch, ArchBp, ArchError, DebugRegs, Decoded, Pool, RawStatus, Reg, Trigger,
};
use hwbreak_core::layer::{Dispatched, Layer};
use hwbreak_core::{Access, BpAttr, CpuId, Machine, SingleStep, TaskId};

/// Toy arch. Registers: `Addr(pool, i)` = hardware start address;
/// `Ctrl(pool, i)` = `1 | access << 4 | hw_len << 8` (bit 0 = enabled).
/// Exceptions use `RawStatus::Power`: `dsisr` bits 0..16 = data slots hit,
/// bits 16..32 = instruction slots hit, bit 32 = step completed, bit 33 =
/// `dar` holds the data address.
#[derive(Debug, Clone)]
pub struct ToyArch {
    pub inst: usize,
    pub data: usize,
    /// Execute breakpoints share the data pool (x86-style) when true.
    pub mixed: bool,
    pub trigger: Trigger,
    /// Widen every range to its aligned 8-byte doubleword (POWER-style).
    pub widen: bool,
    /// Execute hits need RF on resume (x86-style).
    pub exec_rf: bool,
}

pub const STEP: u64 = 1 << 32;
pub const ADDR_VALID: u64 = 1 << 33;

impl ToyArch {
    /// x86-like: one shared pool of `n` slots, trap after.
    pub fn mixed(n: usize) -> Self {
        ToyArch {
            inst: 0,
            data: n,
            mixed: true,
            trigger: Trigger::After,
            widen: false,
            exec_rf: true,
        }
    }
    /// arm64-like: separate pools, trap before (needs step-over).
    pub fn split(inst: usize, data: usize) -> Self {
        ToyArch {
            inst,
            data,
            mixed: false,
            trigger: Trigger::Before,
            widen: false,
            exec_rf: false,
        }
    }
    pub fn widening(mut self) -> Self {
        self.widen = true;
        self
    }
}

fn access_code(a: Access) -> u64 {
    match a {
        Access::Read => 1,
        Access::Write => 2,
        Access::ReadWrite => 3,
        Access::Execute => 4,
    }
}

impl Arch for ToyArch {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Inst => self.inst,
            Pool::Data => self.data,
        }
    }
    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError> {
        if !matches!(attr.len, 1 | 2 | 4 | 8) {
            return Err(ArchError::BadLength {
                arch: "toy",
                len: attr.len,
                rule: "1, 2, 4 or 8 bytes",
            });
        }
        if attr.addr & (attr.len - 1) != 0 {
            return Err(ArchError::Unaligned {
                arch: "toy",
                addr: attr.addr,
                len: attr.len,
                align: attr.len,
            });
        }
        let pool = if attr.access.is_exec() && !self.mixed {
            Pool::Inst
        } else {
            Pool::Data
        };
        let (hw_addr, hw_len) = if self.widen {
            (attr.addr & !7, 8)
        } else {
            (attr.addr, attr.len)
        };
        Ok(ArchBp {
            pool,
            hw_addr,
            hw_len,
            req_addr: attr.addr,
            req_len: attr.len,
            access: attr.access,
            ctrl: access_code(attr.access) << 4 | hw_len << 8,
            trigger: if attr.access.is_exec() && self.mixed {
                Trigger::Before
            } else {
                self.trigger
            },
        })
    }
    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp) {
        regs.write(Reg::Addr(bp.pool, slot as u8), bp.hw_addr);
        regs.write(Reg::Ctrl(bp.pool, slot as u8), bp.ctrl | 1);
    }
    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize) {
        regs.write(Reg::Ctrl(pool, slot as u8), 0);
        regs.write(Reg::Addr(pool, slot as u8), 0);
    }
    fn decode(
        &self,
        status: &RawStatus,
        _regs: &dyn DebugRegs,
        _installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded {
        let RawStatus::Power {
            dsisr, dar, nip, ..
        } = *status
        else {
            return Decoded::default();
        };
        Decoded {
            hits: [((dsisr >> 16) & 0xffff) as u32, (dsisr & 0xffff) as u32],
            step: dsisr & STEP != 0,
            addr: (dsisr & ADDR_VALID != 0).then_some(dar),
            len: 1,
            ip: nip,
        }
    }
    fn needs_step_over(&self, bp: &ArchBp) -> bool {
        bp.trigger == Trigger::Before && !(self.mixed && bp.access.is_exec())
    }
    fn resume_flags(&self, bp: &ArchBp) -> hwbreak_core::arch::ResumeFlags {
        hwbreak_core::arch::ResumeFlags {
            resume_flag: self.exec_rf && bp.access.is_exec(),
        }
    }
}

/// One CPU's register file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Regs(pub BTreeMap<Reg, u64>);

impl Regs {
    /// Non-zero registers only (a zero write equals never written).
    pub fn live(&self) -> BTreeMap<Reg, u64> {
        self.0
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(r, v)| (*r, *v))
            .collect()
    }
}

/// Called on every register write, with the CPU, *after* the machine's own
/// lock is dropped: it may block, or dispatch through another handle.
pub type Hook = Arc<dyn Fn(CpuId, Reg, u64) + Send + Sync>;

#[derive(Default)]
pub struct State {
    pub regs: Vec<Regs>,
    pub online: Vec<bool>,
    pub current: Vec<Option<TaskId>>,
    pub single_step: Vec<bool>,
    /// The machine offers no single-step capability (`Machine::single_step` is `None`).
    pub no_single_step: bool,
    pub writes: u64,
    pub time: u64,
}

/// The test machine. Clones share state (one handle per thread).
#[derive(Clone)]
pub struct TestMachine {
    pub st: Arc<Mutex<State>>,
    pub hook: Option<Hook>,
    /// Scratch register file handed out by `regs()`; flushed into the
    /// shared state on every write.
    scratch: Box<Scratch>,
}

#[derive(Clone)]
struct Scratch {
    st: Arc<Mutex<State>>,
    cpu: CpuId,
    hook: Option<Hook>,
}

impl DebugRegs for Scratch {
    fn read(&self, r: Reg) -> u64 {
        let st = self.st.lock().unwrap();
        st.regs[self.cpu.idx()].0.get(&r).copied().unwrap_or(0)
    }
    fn write(&mut self, r: Reg, v: u64) {
        {
            let mut st = self.st.lock().unwrap();
            st.regs[self.cpu.idx()].0.insert(r, v);
            st.writes += 1;
        }
        if let Some(h) = &self.hook {
            h(self.cpu, r, v);
        }
    }
}

impl TestMachine {
    pub fn new(cpus: usize) -> Self {
        let st = Arc::new(Mutex::new(State {
            regs: vec![Regs::default(); cpus],
            online: vec![true; cpus],
            current: vec![None; cpus],
            single_step: vec![false; cpus],
            no_single_step: false,
            writes: 0,
            time: 0,
        }));
        TestMachine {
            scratch: Box::new(Scratch {
                st: st.clone(),
                cpu: CpuId(0),
                hook: None,
            }),
            st,
            hook: None,
        }
    }

    /// A handle whose register writes call `hook`.
    pub fn with_hook(&self, hook: Hook) -> Self {
        let mut m = self.clone();
        m.hook = Some(hook.clone());
        m.scratch.hook = Some(hook);
        m
    }

    pub fn regs_of(&self, cpu: u32) -> Regs {
        self.st.lock().unwrap().regs[cpu as usize].clone()
    }

    pub fn all_regs(&self) -> Vec<Regs> {
        self.st.lock().unwrap().regs.clone()
    }

    pub fn writes(&self) -> u64 {
        self.st.lock().unwrap().writes
    }

    pub fn set_online(&self, cpu: u32, on: bool) {
        self.st.lock().unwrap().online[cpu as usize] = on;
    }

    pub fn set_current(&self, cpu: u32, t: Option<TaskId>) {
        self.st.lock().unwrap().current[cpu as usize] = t;
    }

    /// Offer (`true`, the default) or withdraw the single-step capability.
    pub fn set_has_single_step(&self, has: bool) {
        self.st.lock().unwrap().no_single_step = !has;
    }

    pub fn stepping(&self, cpu: u32) -> bool {
        self.st.lock().unwrap().single_step[cpu as usize]
    }

    /// Enabled slots on `cpu`: `(pool, slot, hw_addr, hw_len, access code)`.
    pub fn armed(&self, cpu: u32) -> Vec<(Pool, u8, u64, u64, u64)> {
        let st = self.st.lock().unwrap();
        let r = &st.regs[cpu as usize].0;
        let mut out = vec![];
        for (&reg, &ctrl) in r {
            if let Reg::Ctrl(pool, i) = reg {
                if ctrl & 1 != 0 {
                    let addr = r.get(&Reg::Addr(pool, i)).copied().unwrap_or(0);
                    out.push((pool, i, addr, ctrl >> 8, (ctrl >> 4) & 0xf));
                }
            }
        }
        out
    }

    /// What the hardware reports for an access of `kind` at `addr` on
    /// `cpu`, computed from the register file. `None`: nothing fires.
    pub fn status_for(&self, cpu: u32, addr: u64, kind: Access, ip: u64) -> Option<RawStatus> {
        let mut dsisr = 0u64;
        for (pool, i, a, len, code) in self.armed(cpu) {
            let fires = if kind == Access::Execute {
                code == 4 && addr == a
            } else {
                let want = match code {
                    1 => Access::Read,
                    2 => Access::Write,
                    3 => Access::ReadWrite,
                    _ => continue,
                };
                want.matches(kind) && addr >= a && addr < a + len
            };
            if fires {
                dsisr |= match pool {
                    Pool::Data => 1 << i,
                    Pool::Inst => 1 << (16 + i),
                };
            }
        }
        (dsisr != 0).then_some(RawStatus::Power {
            dsisr: dsisr | ADDR_VALID,
            dar: addr,
            nip: ip,
            size: 1,
        })
    }

    /// Run one access on `cpu` through the layer as the hardware would:
    /// exception if a register matches; and if dispatch asks for a
    /// step-over, the step-completion exception. Returns both dispatch results.
    pub fn access(
        &mut self,
        layer: &Layer,
        cpu: u32,
        addr: u64,
        kind: Access,
    ) -> (Dispatched, Option<Dispatched>) {
        let ip = 0x40_0000 + addr % 0x1000;
        let Some(st) = self.status_for(cpu, addr, kind, ip) else {
            return (Dispatched::default(), None);
        };
        let d = layer.handle_exception(self, CpuId(cpu), &st);
        if !d.stepping {
            return (d, None);
        }
        assert!(
            self.stepping(cpu),
            "dispatch said stepping but single-step is off"
        );
        let step = RawStatus::Power {
            dsisr: STEP,
            dar: 0,
            nip: ip + 4,
            size: 0,
        };
        let d2 = layer.handle_exception(self, CpuId(cpu), &step);
        (d, Some(d2))
    }
}

impl Machine for TestMachine {
    fn possible_cpus(&self) -> usize {
        self.st.lock().unwrap().regs.len()
    }
    fn is_online(&self, cpu: CpuId) -> bool {
        self.st
            .lock()
            .unwrap()
            .online
            .get(cpu.idx())
            .copied()
            .unwrap_or(false)
    }
    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        self.scratch.cpu = cpu;
        &mut *self.scratch
    }
    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.st
            .lock()
            .unwrap()
            .current
            .get(cpu.idx())
            .copied()
            .flatten()
    }
    fn single_step(&mut self) -> Option<&mut dyn SingleStep> {
        if self.st.lock().unwrap().no_single_step {
            None
        } else {
            Some(self)
        }
    }
    fn now(&self) -> u64 {
        let mut st = self.st.lock().unwrap();
        st.time += 1;
        st.time
    }
}

impl SingleStep for TestMachine {
    fn set_single_step(&mut self, cpu: CpuId, on: bool) {
        self.st.lock().unwrap().single_step[cpu.idx()] = on;
    }
}

/// A layer over the toy arch.
pub fn layer(arch: ToyArch, cpus: usize) -> Layer {
    Layer::new(Box::new(arch), cpus, 64)
}

/// Every event drained from the layer.
pub fn events(l: &Layer) -> Vec<(CpuId, hwbreak_core::events::Record)> {
    let mut v = vec![];
    l.drain_events(&mut |c, r| v.push((c, r)));
    v
}
