//! [`TraceSim`]: tasks running small branchy programs on CPUs with the
//! debug-store hardware ([`crate::hw::bts`]) under the core's
//! [`DsManager`] and [`Layer`], driven the way a kernel drives them: every
//! taken branch and load goes to the processor model, every PMI it raises to
//! [`DsManager::on_pmi`], every context switch to the layer's
//! [`Layer::switch_task`] (which writes `departs`/`arrives` records into the
//! general event buffer, BTS or not) and, where the machine offers a debug
//! store ([`Machine::debug_store`]), to [`DsManager::switch_task`].
//!
//! The simulator also keeps the ground truth ([`Truth`]): every taken branch
//! each task made, and every switch, so tests compare what consumers saw
//! against what happened.
//!
//! ```
//! use hwbreak_core::ds::{BtsConfig, Scope, ring::Entry, BtsRecord};
//! use hwbreak_sim::trace::{Code, Insn, TraceSim};
//! use hwbreak_core::CpuId;
//!
//! // A loop body of two instructions, taken twice, then done.
//! let code = Code::at(0x40_0000, &[Insn::Op, Insn::Loop { target: 0x40_0000, times: 2 }, Insn::Halt]);
//! let mut sim = TraceSim::new(1);
//! let t = sim.spawn(code);
//! let u = sim.ds.add_bts(&mut sim.hw, BtsConfig::new("me", Scope::Task(t))).unwrap();
//! sim.switch(CpuId(0), Some(t), true).unwrap();
//! sim.run(CpuId(0), 10).unwrap();
//! sim.ds.flush(&mut sim.hw, u).unwrap();
//! let mut seen = Vec::new();
//! sim.ds.read_bts(u, &mut |e| seen.push(e)).unwrap();
//! let back = Entry::Rec(BtsRecord::branch(0x40_0004, 0x40_0000));
//! assert_eq!(seen, [back, back]);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::DebugRegs;
use hwbreak_core::ds::{DsHardware, DsManager, SwitchInfo};
use hwbreak_core::layer::Layer;
use hwbreak_core::{CpuId, Machine, TaskId};

use crate::error::SimError;
use crate::hw::bts::{DsHw, Pmi};
use crate::hw::{Hw, RegFile, X86Hw};
use crate::program::INSN_LEN;

/// One instruction of the branch-tracing ISA. Every instruction is
/// [`INSN_LEN`] bytes; control falls through to the next one unless it
/// branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// No branch, no memory access.
    Op,
    /// A load of `addr` (counted by PEBS).
    Load(u64),
    /// Jump to the target.
    Jmp(u64),
    /// Branch back to `target` `times` times, then fall through (a counted
    /// loop's `dec; jnz`); the count restarts after it falls through.
    Loop {
        /// Loop head.
        target: u64,
        /// Taken branches before falling through.
        times: u32,
    },
    /// Call the target (push the return address).
    Call(u64),
    /// Return to the address on the stack.
    Ret,
    /// Enter the kernel at the target (a kernel address), saving the return.
    Syscall(u64),
    /// Return from the kernel to the saved user address.
    Sysret,
    /// Stop: the task spins here without branching (an idle loop's `hlt`).
    Halt,
}

/// A program: instructions by address.
#[derive(Debug, Clone, Default)]
pub struct Code {
    insns: BTreeMap<u64, Insn>,
    entry: u64,
}

impl Code {
    /// `insns` laid out from `base`, entry at `base`.
    pub fn at(base: u64, insns: &[Insn]) -> Arc<Code> {
        Arc::new(Code::default().with(base, insns))
    }

    /// Add `insns` from `base` (the first call's base is the entry).
    pub fn with(mut self, base: u64, insns: &[Insn]) -> Code {
        if self.insns.is_empty() {
            self.entry = base;
        }
        for (k, i) in insns.iter().enumerate() {
            self.insns.insert(base + k as u64 * INSN_LEN, *i);
        }
        self
    }

    /// Where execution starts.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The instruction at `ip`.
    pub fn get(&self, ip: u64) -> Option<Insn> {
        self.insns.get(&ip).copied()
    }
}

#[derive(Debug, Clone)]
struct TraceTask {
    code: Arc<Code>,
    pc: u64,
    stack: Vec<u64>,
    /// Taken branches so far per `Loop` instruction.
    loops: BTreeMap<u64, u32>,
    on: Option<CpuId>,
}

/// What happened, in order: the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// A taken branch retired.
    Branch {
        /// CPU.
        cpu: CpuId,
        /// Task (None: idle).
        task: Option<TaskId>,
        /// Source.
        from: u64,
        /// Target.
        to: u64,
    },
    /// A context switch.
    Switch {
        /// CPU.
        cpu: CpuId,
        /// What the manager was told.
        info: SwitchInfo,
    },
}

/// What one [`TraceSim::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOutcome {
    /// Instructions retired.
    pub insns: u64,
    /// Taken branches.
    pub branches: u64,
    /// PMIs the processor raised (each handled by the manager).
    pub pmis: u64,
}

/// CPUs, tasks, the processor's debug store, and the core's manager and
/// layer.
///
/// Fields are public so a test drives the manager directly:
/// `sim.ds.add_bts(&mut sim.hw, cfg)`.
pub struct TraceSim {
    /// The processor model.
    pub hw: DsHw,
    /// The manager under test.
    pub ds: DsManager,
    /// The hw-breakpoint layer, whose context-switch hook writes the
    /// general `departs`/`arrives` records ([`Layer::drain_events`]).
    pub layer: Layer,
    /// x86 debug registers per CPU, for the layer.
    regs: Vec<RegFile>,
    /// Whether the machine offers its debug store to the layer side
    /// ([`Machine::debug_store`]); a machine without one traces no branches.
    has_debug_store: bool,
    tasks: Vec<TraceTask>,
    current: Vec<Option<TaskId>>,
    clock: u64,
    truth: Vec<Truth>,
    /// When false, PMIs are raised but not handled (an interrupt masked
    /// for a while); the hardware then fills up to its absolute maximum.
    pub handle_pmis: bool,
}

impl TraceSim {
    /// `cpus` CPUs with BTS, PEBS, DS-CPL and LBR.
    pub fn new(cpus: usize) -> Self {
        Self::with_hw(DsHw::full(cpus), cpus)
    }

    /// `cpus` CPUs with the hardware `hw` (made for as many CPUs).
    pub fn with_hw(hw: DsHw, cpus: usize) -> Self {
        let x86 = Hw::X86(X86Hw::default());
        TraceSim {
            hw,
            ds: DsManager::new(cpus),
            layer: Layer::new(Box::new(X86_64::default()), cpus, 1024),
            regs: vec![RegFile::new(x86); cpus],
            has_debug_store: true,
            tasks: Vec::new(),
            current: vec![None; cpus],
            clock: 0,
            truth: Vec::new(),
            handle_pmis: true,
        }
    }

    /// A new task running `code` from its entry. Not running anywhere yet.
    pub fn spawn(&mut self, code: Arc<Code>) -> TaskId {
        let pc = code.entry();
        self.tasks.push(TraceTask {
            code,
            pc,
            stack: Vec::new(),
            loops: BTreeMap::new(),
            on: None,
        });
        TaskId(self.tasks.len() as u64)
    }

    /// A machine whose `Machine::debug_store()` is `None` (no BTS): switches
    /// still reach the layer, and the debug-store manager is never called.
    pub fn without_debug_store(mut self) -> Self {
        self.has_debug_store = false;
        self
    }

    /// Everything that happened so far, in order.
    pub fn truth(&self) -> &[Truth] {
        &self.truth
    }

    /// The machine's time (one tick per instruction and per switch).
    pub fn now(&self) -> u64 {
        self.clock
    }

    /// The task on `cpu`.
    pub fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.current.get(cpu.idx()).copied().flatten()
    }

    /// A task's next instruction address.
    pub fn pc(&self, t: TaskId) -> Option<u64> {
        self.task(t).map(|x| x.pc)
    }

    fn task(&self, t: TaskId) -> Option<&TraceTask> {
        self.tasks.get((t.0 as usize).wrapping_sub(1))
    }

    fn check_cpu(&self, cpu: CpuId) -> Result<(), SimError> {
        if cpu.idx() < self.current.len() {
            Ok(())
        } else {
            Err(SimError::NoSuchCpu {
                cpu,
                possible: self.current.len(),
            })
        }
    }

    /// Context switch on `cpu` to `next` (None: idle). `voluntary`: the
    /// outgoing task yielded (else it was preempted). A task running on
    /// another CPU must be switched out there first.
    pub fn switch(
        &mut self,
        cpu: CpuId,
        next: Option<TaskId>,
        voluntary: bool,
    ) -> Result<(), SimError> {
        self.check_cpu(cpu)?;
        let prev = self.current(cpu);
        if let Some(n) = next {
            let t = self.task(n).ok_or(SimError::NoSuchTask(n))?;
            if let Some(c) = t.on.filter(|&c| c != cpu) {
                return Err(SimError::TaskRunningElsewhere { task: n, cpu: c });
            }
        }
        if prev == next {
            return Ok(());
        }
        self.clock += 1;
        let ip = |t: Option<TaskId>| t.and_then(|t| self.pc(t)).unwrap_or(0);
        let info = SwitchInfo {
            prev,
            next,
            voluntary,
            time: self.clock,
            prev_ip: ip(prev),
            next_ip: ip(next),
        };
        if let Some(p) = prev {
            self.tasks[p.0 as usize - 1].on = None;
        }
        if let Some(n) = next {
            self.tasks[n.0 as usize - 1].on = Some(cpu);
        }
        self.current[cpu.idx()] = next;
        // The kernel's context-switch path: the layer first (task
        // breakpoints, the general departs/arrives records), then the debug
        // store if this machine has one.
        let mut m = View {
            hw: &mut self.hw,
            regs: &mut self.regs,
            current: &self.current,
            tasks: &self.tasks,
            clock: self.clock,
            has_debug_store: self.has_debug_store,
        };
        self.layer.switch_task(&mut m, cpu, prev, next, voluntary);
        if let Some(ds_hw) = m.debug_store() {
            self.ds.switch_task(ds_hw, cpu, &info);
        }
        self.truth.push(Truth::Switch { cpu, info });
        Ok(())
    }

    fn pmi(&mut self, cpu: CpuId, p: Option<Pmi>, out: &mut RunOutcome) {
        if p.is_some() {
            out.pmis += 1;
            if self.handle_pmis {
                self.ds.on_pmi(&mut self.hw, cpu);
            }
        }
    }

    /// Retire up to `insns` instructions of the task on `cpu` (none on an
    /// idle CPU).
    pub fn run(&mut self, cpu: CpuId, insns: u64) -> Result<RunOutcome, SimError> {
        self.check_cpu(cpu)?;
        let mut out = RunOutcome::default();
        let Some(t) = self.current(cpu) else {
            return Ok(out);
        };
        for _ in 0..insns {
            self.clock += 1;
            let task = &mut self.tasks[t.0 as usize - 1];
            let pc = task.pc;
            let insn = task.code.get(pc).unwrap_or(Insn::Halt);
            let fall = pc + INSN_LEN;
            let next = match insn {
                Insn::Op | Insn::Load(_) => fall,
                Insn::Jmp(to) => to,
                Insn::Loop { target, times } => {
                    let n = task.loops.entry(pc).or_insert(0);
                    if *n < times {
                        *n += 1;
                        target
                    } else {
                        *n = 0;
                        fall
                    }
                }
                Insn::Call(to) | Insn::Syscall(to) => {
                    task.stack.push(fall);
                    to
                }
                Insn::Ret | Insn::Sysret => task.stack.pop().unwrap_or(fall),
                Insn::Halt => pc,
            };
            task.pc = next;
            out.insns += 1;
            if let Insn::Load(addr) = insn {
                let p = self.hw.load(cpu, pc, addr, self.clock);
                self.pmi(cpu, p, &mut out);
            }
            if next != fall && next != pc {
                out.branches += 1;
                self.truth.push(Truth::Branch {
                    cpu,
                    task: Some(t),
                    from: pc,
                    to: next,
                });
                let p = self.hw.branch(cpu, pc, next);
                self.pmi(cpu, p, &mut out);
            }
        }
        Ok(out)
    }

    /// The ground-truth branches of `task` (None: everything on `cpu`),
    /// with `cpu` filtering when given.
    pub fn branches(&self, task: Option<TaskId>, cpu: Option<CpuId>) -> Vec<(u64, u64)> {
        self.truth
            .iter()
            .filter_map(|e| match *e {
                Truth::Branch {
                    cpu: c,
                    task: t,
                    from,
                    to,
                } if task.is_none_or(|x| t == Some(x)) && cpu.is_none_or(|x| c == x) => {
                    Some((from, to))
                }
                _ => None,
            })
            .collect()
    }
}

/// The machine as the layer sees it during one call: borrowed parts of a
/// [`TraceSim`].
struct View<'a> {
    hw: &'a mut DsHw,
    regs: &'a mut [RegFile],
    current: &'a [Option<TaskId>],
    tasks: &'a [TraceTask],
    clock: u64,
    has_debug_store: bool,
}

impl Machine for View<'_> {
    fn possible_cpus(&self) -> usize {
        self.current.len()
    }

    fn is_online(&self, cpu: CpuId) -> bool {
        cpu.idx() < self.current.len()
    }

    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        let last = self.regs.len() - 1;
        &mut self.regs[cpu.idx().min(last)]
    }

    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.current.get(cpu.idx()).copied().flatten()
    }

    fn now(&self) -> u64 {
        self.clock
    }

    fn task_ip(&self, task: TaskId) -> Option<u64> {
        self.tasks
            .get((task.0 as usize).wrapping_sub(1))
            .map(|t| t.pc)
    }

    fn debug_store(&mut self) -> Option<&mut dyn DsHardware> {
        if self.has_debug_store {
            Some(self.hw)
        } else {
            None
        }
    }
}
