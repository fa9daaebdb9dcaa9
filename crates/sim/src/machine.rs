//! [`SimMachine`]: the CPUs, their debug register files and what runs on
//! them. It implements [`hwbreak_core::Machine`], the only seam the layer sees.

use std::collections::HashMap;

use hwbreak_core::arch::DebugRegs;
use hwbreak_core::{CpuId, Machine, SingleStep, TaskId};

use crate::hw::{Armed, CpuFlags, Hw, RegFault, RegFile, RegValues};

/// Most CPUs a simulated machine may have.
pub const MAX_CPUS: usize = 4096;

/// A register fault and where it happened ([`SimMachine::faults`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFault {
    /// The CPU whose register file refused the access; `None` for a CPU
    /// that does not exist.
    pub cpu: Option<CpuId>,
    /// What was refused, and why.
    pub fault: RegFault,
}

/// One simulated CPU.
#[derive(Debug, Clone)]
pub struct SimCpu {
    regs: RegFile,
    online: bool,
    current: Option<TaskId>,
    flags: CpuFlags,
    /// Slots still armed when the layer finished taking this CPU offline.
    armed_at_offline: usize,
}

impl SimCpu {
    /// Whether it is online.
    pub fn online(&self) -> bool {
        self.online
    }
    /// The task running there.
    pub fn current(&self) -> Option<TaskId> {
        self.current
    }
    /// Its debug registers.
    pub fn regs(&self) -> &RegFile {
        &self.regs
    }
    /// Single-step / RF state.
    pub fn flags(&self) -> CpuFlags {
        self.flags
    }
    /// Slots that were still armed right after `layer.cpu_offline` last ran
    /// for this CPU (0 = the layer dropped everything cleanly).
    pub fn armed_at_offline(&self) -> usize {
        self.armed_at_offline
    }
}

/// The machine: CPUs with register files that behave like [`Hw`].
#[derive(Debug, Clone)]
pub struct SimMachine {
    hw: Hw,
    cpus: Vec<SimCpu>,
    clock: u64,
    /// Where each running task runs: the inverse of `SimCpu::current`, kept
    /// in step by `set_current` (the scheduler's only way to change it), so
    /// [`Machine::running_on`] answers in O(1) like a kernel's `task_cpu()`.
    running: HashMap<TaskId, CpuId>,
    /// Where each task stopped or resumes, as the scheduler last said
    /// ([`Machine::task_ip`], for the layer's departs/arrives records).
    task_ips: HashMap<TaskId, u64>,
    /// Target for the layer's accesses to a CPU that does not exist: an
    /// offline register file, so every write there is recorded as a fault.
    void: RegFile,
    /// Whether [`Machine::single_step`] offers the capability.
    has_single_step: bool,
}

impl SimMachine {
    /// `possible` CPUs (1..=[`MAX_CPUS`]), all online, idle, registers reset.
    pub fn new(hw: Hw, possible: usize) -> Self {
        let cpu = SimCpu {
            regs: RegFile::new(hw),
            online: true,
            current: None,
            flags: CpuFlags::default(),
            armed_at_offline: 0,
        };
        let mut void = RegFile::new(hw);
        void.set_online(false);
        SimMachine {
            hw,
            cpus: vec![cpu; possible],
            clock: 0,
            running: HashMap::new(),
            task_ips: HashMap::new(),
            void,
            has_single_step: true,
        }
    }

    /// Offer (`true`, the default) or withdraw the single-step capability, to
    /// test a machine without one: the layer then refuses breakpoints that
    /// need a step-over.
    pub fn set_has_single_step(&mut self, has: bool) {
        self.has_single_step = has;
    }

    /// The hardware model.
    pub fn hw(&self) -> &Hw {
        &self.hw
    }

    /// One CPU, if it exists.
    pub fn cpu(&self, cpu: CpuId) -> Option<&SimCpu> {
        self.cpus.get(cpu.idx())
    }

    /// Online CPUs, ascending.
    pub fn online_cpus(&self) -> impl Iterator<Item = CpuId> + '_ {
        self.cpus
            .iter()
            .enumerate()
            .filter(|(_, c)| c.online)
            .map(|(i, _)| CpuId(i as u32))
    }

    /// The slots armed on `cpu` now, as the hardware would match them.
    pub fn armed(&self, cpu: CpuId) -> Vec<Armed> {
        self.cpus
            .get(cpu.idx())
            .map(|c| c.regs.armed())
            .unwrap_or_default()
    }

    /// Every CPU's register values, for before/after comparisons.
    pub fn reg_snapshot(&self) -> Vec<RegValues> {
        self.cpus.iter().map(|c| *c.regs.values()).collect()
    }

    /// Every fault recorded on any CPU (or on a CPU that does not exist).
    pub fn faults(&self) -> Vec<CpuFault> {
        let mut v: Vec<_> = self
            .cpus
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                c.regs.faults().iter().map(move |f| CpuFault {
                    cpu: Some(CpuId(i as u32)),
                    fault: f.clone(),
                })
            })
            .collect();
        v.extend(self.void.faults().iter().map(|f| CpuFault {
            cpu: None,
            fault: f.clone(),
        }));
        v
    }

    /// Register writes the layer made so far, over all CPUs.
    pub fn reg_writes(&self) -> u64 {
        self.cpus.iter().map(|c| c.regs.writes()).sum()
    }

    pub(crate) fn tick(&mut self) {
        self.clock += 1;
    }

    pub(crate) fn set_current(&mut self, cpu: CpuId, t: Option<TaskId>) {
        let prev = std::mem::replace(&mut self.cpus[cpu.idx()].current, t);
        if let Some(p) = prev {
            if self.running.get(&p) == Some(&cpu) {
                self.running.remove(&p);
            }
        }
        if let Some(n) = t {
            let old = self.running.insert(n, cpu);
            // A task runs on one CPU at a time: the scheduler switches it out
            // there before it runs elsewhere (`switch_to` refuses otherwise).
            debug_assert!(old.is_none() || old == Some(cpu), "{n:?} on two CPUs");
        }
    }

    /// Record where `task` stopped (or resumes): its next instruction.
    pub(crate) fn set_task_ip(&mut self, task: TaskId, ip: u64) {
        self.task_ips.insert(task, ip);
    }

    pub(crate) fn set_online(&mut self, cpu: CpuId, online: bool) {
        let c = &mut self.cpus[cpu.idx()];
        c.online = online;
        c.regs.set_online(online);
        if online {
            // A CPU comes up from reset: no debug state survives hotplug.
            c.regs.reset();
            c.flags = CpuFlags::default();
        }
    }

    pub(crate) fn note_offline_leftovers(&mut self, cpu: CpuId) {
        let c = &mut self.cpus[cpu.idx()];
        c.armed_at_offline = c.regs.armed().len();
    }

    pub(crate) fn set_resume_flag(&mut self, cpu: CpuId, on: bool) {
        self.cpus[cpu.idx()].flags.resume_flag = on;
    }

    pub(crate) fn regs_file_mut(&mut self, cpu: CpuId) -> &mut RegFile {
        &mut self.cpus[cpu.idx()].regs
    }
}

impl Machine for SimMachine {
    fn possible_cpus(&self) -> usize {
        self.cpus.len()
    }

    fn is_online(&self, cpu: CpuId) -> bool {
        self.cpus.get(cpu.idx()).is_some_and(|c| c.online)
    }

    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        match self.cpus.get_mut(cpu.idx()) {
            Some(c) => &mut c.regs,
            None => &mut self.void,
        }
    }

    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.cpus.get(cpu.idx()).and_then(|c| c.current)
    }

    /// The task's next instruction when the scheduler last switched it.
    fn task_ip(&self, task: TaskId) -> Option<u64> {
        self.task_ips.get(&task).copied()
    }

    /// O(1): the scheduler keeps the task → CPU map in step with `current`.
    fn running_on(&self, task: TaskId) -> Option<CpuId> {
        self.running
            .get(&task)
            .copied()
            .filter(|&c| self.is_online(c))
    }

    /// Every simulated CPU has single-step (x86 TF, arm64 MDSCR.SS, POWER
    /// MSR.SE), unless a test withdrew it ([`SimMachine::set_has_single_step`]).
    fn single_step(&mut self) -> Option<&mut dyn SingleStep> {
        if self.has_single_step {
            Some(self)
        } else {
            None
        }
    }

    fn now(&self) -> u64 {
        self.clock
    }
}

impl SingleStep for SimMachine {
    fn set_single_step(&mut self, cpu: CpuId, on: bool) {
        if let Some(c) = self.cpus.get_mut(cpu.idx()) {
            c.flags.single_step = on;
        }
    }
}
