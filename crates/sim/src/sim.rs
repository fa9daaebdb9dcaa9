//! [`Sim`]: the machine, the layer, tasks and a seeded scheduler, driven the
//! way a kernel drives its hw-breakpoint layer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::{Arch, RawStatus};
use hwbreak_core::layer::{Hit, Layer, OnlineError, Request};
use hwbreak_core::{Access, BpAttr, BpId, CpuId, Machine, Target, TaskId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::SimError;
use crate::hw::{Hw, Insn, MemAccess};
use crate::machine::{SimMachine, MAX_CPUS};
use crate::program::{Op, Program, INSN_LEN};

/// Where an idle CPU "executes" when a test makes it access memory: kernel text.
pub const KERNEL_TEXT: u64 = 0xffff_ffff_8100_0000;

/// How many debug exceptions one instruction may take before the simulator
/// decides the layer is not making progress (a step-over that never disables
/// the slot, an execute hit resumed without RF ...). Far above what any
/// correct layer needs: one per armed slot plus the step.
pub const MAX_TRAPS_PER_INSN: u32 = 64;

/// Options for a breakpoint registered through [`Sim::register_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BpOpts {
    /// Handed back in each [`Hit`].
    pub cookie: u64,
    /// Children spawned with `inherit` get a copy (perf `attr.inherit`).
    pub inherit: bool,
    /// A disabled breakpoint holds no slot; enabling books one.
    pub reserve_on_enable: bool,
}

#[derive(Debug, Clone)]
struct BpRec {
    attr: BpAttr,
    target: Target,
    opts: BpOpts,
}

/// A task's scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting for a CPU.
    Runnable,
    /// Running on a CPU.
    Running(CpuId),
    /// Blocked in [`Op::Join`].
    Blocked,
    /// Gone.
    Exited,
}

#[derive(Debug, Clone)]
struct Task {
    program: Arc<Program>,
    next: usize,
    pc: u64,
    state: TaskState,
    affinity: Option<CpuId>,
    parent: Option<TaskId>,
    live_children: usize,
    bps: Vec<BpId>,
    /// Index in `Sim::runnable` while runnable.
    rq_pos: Option<usize>,
}

/// What happened while one instruction ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsnOutcome {
    /// Debug exceptions taken (hits and single-steps).
    pub traps: u32,
    /// Of those, single-step completions.
    pub step_traps: u32,
    /// Hits the layer delivered.
    pub delivered: u32,
    /// Hits the layer filtered as strays.
    pub strays: u32,
}

/// A memory access that actually happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Performed {
    /// CPU.
    pub cpu: CpuId,
    /// Task, if one ran.
    pub task: Option<TaskId>,
    /// Instruction.
    pub ip: u64,
    /// The access.
    pub access: MemAccess,
    /// Machine time.
    pub time: u64,
}

/// One entry of the simulator's trace, in the order things happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEvent {
    /// A memory access was performed.
    Access(Performed),
    /// A debug exception was handed to the layer, and what the layer did.
    Exception {
        /// CPU.
        cpu: CpuId,
        /// The raw status after the kernel entry (x86: DR6 positive polarity).
        raw: RawStatus,
        /// The layer's answer.
        dispatched: hwbreak_core::layer::Dispatched,
    },
    /// A context switch.
    Switch {
        /// CPU.
        cpu: CpuId,
        /// Outgoing task.
        prev: Option<TaskId>,
        /// Incoming task.
        next: Option<TaskId>,
    },
}

/// Counters over a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Instructions completed.
    pub insns: u64,
    /// Debug exceptions taken.
    pub traps: u64,
    /// Of those, single-step completions.
    pub step_traps: u64,
    /// Hits delivered by the layer.
    pub delivered: u64,
    /// Hits filtered as strays.
    pub strays: u64,
    /// Context switches.
    pub switches: u64,
    /// Tasks created.
    pub spawned: u64,
    /// Tasks exited.
    pub exited: u64,
    /// Spawns refused because an inherited breakpoint did not fit.
    pub spawn_failed: u64,
    /// Scheduler ticks on a CPU with nothing to run.
    pub idle_ticks: u64,
    /// Callbacks for a breakpoint after its unregister returned (must stay 0).
    pub late_callbacks: u64,
    /// Times the layer said it armed a step-over but single-step was off.
    pub step_contract_broken: u64,
}

#[derive(Default)]
struct HitSink {
    hits: Vec<Hit>,
    gone: BTreeSet<BpId>,
    late: u64,
    record: bool,
    count: u64,
}

/// The simulated SMP machine with the layer on it.
///
/// Fields are public so a test can drive the layer directly without borrow
/// fights: `sim.layer.register(&mut sim.hw, req)`.
pub struct Sim {
    /// The machine (implements [`Machine`]).
    pub hw: SimMachine,
    /// The layer under test.
    pub layer: Layer,
    tasks: Vec<Task>,
    runnable: Vec<TaskId>,
    online: Vec<CpuId>,
    rng: ChaCha8Rng,
    bps: BTreeMap<BpId, BpRec>,
    sink: Arc<Mutex<HitSink>>,
    trace: Vec<TraceEvent>,
    log_enabled: bool,
    stats: Stats,
    preempt_per_mille: u32,
    /// CPUs with a task running now.
    busy_cpus: usize,
}

impl Sim {
    /// A machine of `cpus` CPUs (1..=4096), all online, with hardware `hw`, the
    /// layer over `arch`, the scheduler seeded with `seed`, and an event ring of
    /// 64 records per CPU.
    pub fn new(hw: Hw, arch: Box<dyn Arch>, cpus: usize, seed: u64) -> Result<Sim, SimError> {
        Self::with_ring(hw, arch, cpus, seed, 64)
    }

    /// x86-64 CPUs (Intel-like: no AMD address mask) with the core's x86 backend.
    pub fn x86(cpus: usize, seed: u64) -> Result<Sim, SimError> {
        Self::new(
            Hw::X86(crate::hw::X86Hw::default()),
            Box::new(hwbreak_core::arch::x86_64::X86_64::default()),
            cpus,
            seed,
        )
    }

    /// arm64 CPUs (6 breakpoints, 4 watchpoints, FAR = access start) with the
    /// core's arm64 backend.
    pub fn arm64(cpus: usize, seed: u64) -> Result<Sim, SimError> {
        Self::arm64_with(crate::hw::Arm64Hw::default(), cpus, seed)
    }

    /// arm64 CPUs as `hw` describes them, with a matching core backend.
    pub fn arm64_with(hw: crate::hw::Arm64Hw, cpus: usize, seed: u64) -> Result<Sim, SimError> {
        let arch = hwbreak_core::arch::aarch64::Aarch64::new(hw.brps, hw.wrps).map_err(|_| {
            SimError::BadSlotCount {
                brps: hw.brps,
                wrps: hw.wrps,
            }
        })?;
        Self::new(Hw::Arm64(hw), Box::new(arch), cpus, seed)
    }

    /// POWER9 CPUs (one DAWR) with the core's POWER backend.
    pub fn power(cpus: usize, seed: u64) -> Result<Sim, SimError> {
        Self::power_with(crate::hw::PowerHw::default(), cpus, seed)
    }

    /// POWER CPUs as `hw` describes them, with a matching core backend.
    pub fn power_with(hw: crate::hw::PowerHw, cpus: usize, seed: u64) -> Result<Sim, SimError> {
        use crate::hw::PowerMode;
        use hwbreak_core::arch::powerpc::{Power, PowerMode as Core};
        let (slots, mode) = match hw.mode {
            PowerMode::Dawr {
                slots,
                power10: false,
            } => (slots, Core::Dawr),
            PowerMode::Dawr {
                slots,
                power10: true,
            } => (slots, Core::DawrArch31),
            PowerMode::Dabr { .. } => (1, Core::Dabr),
        };
        let arch = Power::new(slots, mode).map_err(|_| SimError::BadSlotCount {
            brps: 0,
            wrps: slots,
        })?;
        Self::new(Hw::Power(hw), Box::new(arch), cpus, seed)
    }

    /// As [`Sim::new`] with `ring` records per CPU.
    pub fn with_ring(
        hw: Hw,
        arch: Box<dyn Arch>,
        cpus: usize,
        seed: u64,
        ring: usize,
    ) -> Result<Sim, SimError> {
        if cpus == 0 || cpus > MAX_CPUS {
            return Err(SimError::BadCpuCount { cpus });
        }
        let layer = Layer::new(arch, cpus, ring);
        Ok(Sim {
            hw: SimMachine::new(hw, cpus),
            layer,
            tasks: Vec::new(),
            runnable: Vec::new(),
            online: (0..cpus as u32).map(CpuId).collect(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            bps: BTreeMap::new(),
            sink: Arc::new(Mutex::new(HitSink {
                record: true,
                ..Default::default()
            })),
            trace: Vec::new(),
            log_enabled: true,
            stats: Stats::default(),
            preempt_per_mille: 125,
            busy_cpus: 0,
        })
    }

    /// How often (per mille of scheduler ticks) a running task is preempted.
    pub fn set_preempt_per_mille(&mut self, p: u32) {
        self.preempt_per_mille = p.min(1000);
    }

    /// Keep the trace (accesses, exceptions, switches) and the hit log (on by
    /// default; benches turn it off).
    pub fn set_logging(&mut self, on: bool) {
        self.log_enabled = on;
        if let Ok(mut s) = self.sink.lock() {
            s.record = on;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        if let Ok(sink) = self.sink.lock() {
            s.late_callbacks = sink.late;
        }
        s
    }

    /// Hits delivered to the simulator's callbacks so far, in order.
    pub fn hits(&self) -> Vec<Hit> {
        self.sink.lock().map(|s| s.hits.clone()).unwrap_or_default()
    }

    /// Hits delivered so far (also counted when logging is off).
    pub fn hit_count(&self) -> u64 {
        self.sink.lock().map(|s| s.count).unwrap_or(0)
    }

    /// Take the hit log.
    pub fn take_hits(&mut self) -> Vec<Hit> {
        self.sink
            .lock()
            .map(|mut s| std::mem::take(&mut s.hits))
            .unwrap_or_default()
    }

    /// Accesses that actually happened, in order.
    pub fn performed(&self) -> Vec<Performed> {
        self.trace
            .iter()
            .filter_map(|e| match e {
                TraceEvent::Access(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// Everything that happened, in order.
    pub fn trace(&self) -> &[TraceEvent] {
        &self.trace
    }

    /// Clear the trace and the hit log.
    pub fn clear_trace(&mut self) {
        self.trace.clear();
        if let Ok(mut s) = self.sink.lock() {
            s.hits.clear();
        }
    }

    // ---------------------------------------------------------------- breakpoints

    /// Register through the layer with a callback that records hits here.
    pub fn register(&mut self, attr: BpAttr, target: Target) -> Result<BpId, hwbreak_core::Error> {
        self.register_with(attr, target, BpOpts::default())
    }

    /// [`Sim::register`] with options (cookie, inheritance, reserve-on-enable).
    pub fn register_with(
        &mut self,
        attr: BpAttr,
        target: Target,
        opts: BpOpts,
    ) -> Result<BpId, hwbreak_core::Error> {
        let sink = self.sink.clone();
        let req = Request {
            attr,
            target,
            callback: Some(Box::new(move |h: &Hit| {
                if let Ok(mut s) = sink.lock() {
                    if s.gone.contains(&h.bp) {
                        s.late += 1;
                    }
                    s.count += 1;
                    if s.record {
                        s.hits.push(*h);
                    }
                }
            })),
            cookie: opts.cookie,
            reserve_on_enable: opts.reserve_on_enable,
        };
        let id = self.layer.register(&mut self.hw, req)?;
        self.bps.insert(id, BpRec { attr, target, opts });
        if let Some(t) = target.task() {
            if let Some(task) = self.task_mut(t) {
                task.bps.push(id);
            }
        }
        Ok(id)
    }

    fn forget_bp(&mut self, id: BpId) {
        if let Some(rec) = self.bps.remove(&id) {
            if let Some(t) = rec.target.task() {
                if let Some(task) = self.task_mut(t) {
                    task.bps.retain(|b| *b != id);
                }
            }
        }
        if let Ok(mut s) = self.sink.lock() {
            s.gone.insert(id);
        }
    }

    /// Unregister. After this returns no callback for `id` may run; one that
    /// does is counted in [`Stats::late_callbacks`].
    pub fn unregister(&mut self, id: BpId) -> Result<(), hwbreak_core::Error> {
        self.layer.unregister(&mut self.hw, id)?;
        self.forget_bp(id);
        Ok(())
    }

    /// Modify in place.
    pub fn modify(&mut self, id: BpId, attr: BpAttr) -> Result<(), hwbreak_core::Error> {
        self.layer.modify(&mut self.hw, id, attr)?;
        if let Some(b) = self.bps.get_mut(&id) {
            b.attr = attr;
        }
        Ok(())
    }

    /// Enable.
    pub fn enable(&mut self, id: BpId) -> Result<(), hwbreak_core::Error> {
        self.layer.enable(&mut self.hw, id)?;
        if let Some(b) = self.bps.get_mut(&id) {
            b.attr.disabled = false;
        }
        Ok(())
    }

    /// Disable.
    pub fn disable(&mut self, id: BpId) -> Result<(), hwbreak_core::Error> {
        self.layer.disable(&mut self.hw, id)?;
        if let Some(b) = self.bps.get_mut(&id) {
            b.attr.disabled = true;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- tasks

    fn task(&self, t: TaskId) -> Option<&Task> {
        self.tasks.get((t.0 as usize).wrapping_sub(1))
    }

    fn task_mut(&mut self, t: TaskId) -> Option<&mut Task> {
        self.tasks.get_mut((t.0 as usize).wrapping_sub(1))
    }

    /// A task's state.
    pub fn task_state(&self, t: TaskId) -> Option<TaskState> {
        self.task(t).map(|x| x.state)
    }

    /// Every task ever created (ids are never reused).
    pub fn tasks(&self) -> impl Iterator<Item = (TaskId, TaskState)> + '_ {
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (TaskId(i as u64 + 1), t.state))
    }

    /// Tasks not yet exited.
    pub fn live_tasks(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.state != TaskState::Exited)
            .count()
    }

    /// A new runnable task running `program`, on any CPU.
    pub fn spawn(&mut self, program: Program) -> TaskId {
        self.new_task(Arc::new(program), None, None)
    }

    /// A new runnable task that only runs on `cpu` (until `cpu` goes offline,
    /// when its affinity is broken, as Linux does).
    pub fn spawn_pinned(&mut self, program: Program, cpu: CpuId) -> Result<TaskId, SimError> {
        self.check_cpu(cpu)?;
        Ok(self.new_task(Arc::new(program), Some(cpu), None))
    }

    fn new_task(
        &mut self,
        program: Arc<Program>,
        affinity: Option<CpuId>,
        parent: Option<TaskId>,
    ) -> TaskId {
        let id = TaskId(self.tasks.len() as u64 + 1);
        let pc = program.code();
        self.tasks.push(Task {
            program,
            next: 0,
            pc,
            state: TaskState::Exited,
            affinity,
            parent,
            live_children: 0,
            bps: Vec::new(),
            rq_pos: None,
        });
        self.make_runnable(id);
        self.stats.spawned += 1;
        id
    }

    /// Spawn a child of `parent`; with `inherit`, copy each of `parent`'s
    /// inheritable breakpoints to it, all-or-nothing (like `fork` with perf
    /// inherited events: if one does not fit, the child never runs).
    pub fn spawn_child(
        &mut self,
        parent: TaskId,
        program: Program,
        inherit: bool,
    ) -> Result<TaskId, SimError> {
        self.spawn_child_arc(parent, Arc::new(program), inherit)
    }

    fn spawn_child_arc(
        &mut self,
        parent: TaskId,
        program: Arc<Program>,
        inherit: bool,
    ) -> Result<TaskId, SimError> {
        let p = self.task(parent).ok_or(SimError::NoSuchTask(parent))?;
        if p.state == TaskState::Exited {
            return Err(SimError::TaskExited(parent));
        }
        let inherited: Vec<BpRec> = if inherit {
            p.bps
                .iter()
                .filter_map(|id| self.bps.get(id))
                .filter(|b| b.opts.inherit)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        // The child exists but is not runnable until its breakpoints are in place.
        let id = TaskId(self.tasks.len() as u64 + 1);
        let pc = program.code();
        self.tasks.push(Task {
            program,
            next: 0,
            pc,
            state: TaskState::Blocked,
            affinity: None,
            parent: Some(parent),
            live_children: 0,
            bps: Vec::new(),
            rq_pos: None,
        });
        for rec in inherited {
            let target = match rec.target {
                Target::TaskOnCpu(_, c) => Target::TaskOnCpu(id, c),
                _ => Target::Task(id),
            };
            if let Err(e) = self.register_with(rec.attr, target, rec.opts) {
                // Undo: the child's copies go away with it.
                self.layer.task_exit(&mut self.hw, id);
                let ids = std::mem::take(&mut self.tasks[id.0 as usize - 1].bps);
                for b in ids {
                    self.forget_bp(b);
                }
                self.tasks[id.0 as usize - 1].state = TaskState::Exited;
                self.stats.spawn_failed += 1;
                return Err(SimError::Layer(e));
            }
        }
        self.stats.spawned += 1;
        if let Some(p) = self.task_mut(parent) {
            p.live_children += 1;
        }
        self.make_runnable(id);
        Ok(id)
    }

    fn make_runnable(&mut self, t: TaskId) {
        let pos = self.runnable.len();
        self.runnable.push(t);
        let task = &mut self.tasks[t.0 as usize - 1];
        task.state = TaskState::Runnable;
        task.rq_pos = Some(pos);
    }

    fn dequeue(&mut self, t: TaskId) {
        if let Some(pos) = self.tasks[t.0 as usize - 1].rq_pos.take() {
            self.runnable.swap_remove(pos);
            if let Some(&moved) = self.runnable.get(pos) {
                self.tasks[moved.0 as usize - 1].rq_pos = Some(pos);
            }
        }
    }

    /// Pick a runnable task allowed on `cpu`, at random.
    fn pick(&mut self, cpu: CpuId) -> Option<TaskId> {
        let n = self.runnable.len();
        if n == 0 {
            return None;
        }
        let start = self.rng.gen_range(0..n);
        (0..n)
            .map(|k| self.runnable[(start + k) % n])
            .find(|t| !matches!(self.tasks[t.0 as usize - 1].affinity, Some(c) if c != cpu))
    }

    /// Context switch on `cpu` to `next`; `prev` (the current task) goes to
    /// `prev_state`. Calls `layer.switch_task` as a kernel's scheduler calls
    /// perf's sched-out/sched-in hooks.
    fn switch(&mut self, cpu: CpuId, next: Option<TaskId>, voluntary: bool, prev_state: TaskState) {
        let prev = self.hw.current(cpu);
        if prev == next {
            return;
        }
        if let Some(n) = next {
            self.dequeue(n);
            self.tasks[n.0 as usize - 1].state = TaskState::Running(cpu);
        }
        if let Some(p) = prev {
            if prev_state == TaskState::Runnable {
                self.make_runnable(p);
            } else {
                self.tasks[p.0 as usize - 1].state = prev_state;
            }
        }
        self.busy_cpus = self.busy_cpus + next.is_some() as usize - prev.is_some() as usize;
        self.hw.set_current(cpu, next);
        // Where each side stops or resumes, for the layer's switch records.
        for t in [prev, next].into_iter().flatten() {
            let pc = self.tasks[t.0 as usize - 1].pc;
            self.hw.set_task_ip(t, pc);
        }
        // A new context does not inherit the old one's RF/TF.
        self.hw.set_resume_flag(cpu, false);
        self.layer
            .switch_task(&mut self.hw, cpu, prev, next, voluntary);
        if self.log_enabled {
            self.trace.push(TraceEvent::Switch { cpu, prev, next });
        }
        self.stats.switches += 1;
    }

    /// Switch `cpu` to run `task` (or nothing) now, whatever the scheduler
    /// would have chosen. The task that was running becomes runnable.
    pub fn switch_to(&mut self, cpu: CpuId, task: Option<TaskId>) -> Result<(), SimError> {
        self.check_online(cpu)?;
        if let Some(t) = task {
            let x = self.task(t).ok_or(SimError::NoSuchTask(t))?;
            match x.state {
                TaskState::Exited => return Err(SimError::TaskExited(t)),
                TaskState::Blocked => return Err(SimError::TaskBlocked(t)),
                TaskState::Running(c) if c != cpu => {
                    return Err(SimError::TaskRunningElsewhere { task: t, cpu: c })
                }
                _ => {}
            }
            if let Some(a) = x.affinity {
                if a != cpu {
                    return Err(SimError::TaskPinned { task: t, cpu: a });
                }
            }
        }
        self.switch(cpu, task, false, TaskState::Runnable);
        Ok(())
    }

    fn exit_current(&mut self, cpu: CpuId, t: TaskId) {
        // As in do_exit: the task's events go while it is still current, then
        // the final schedule switches away from it.
        self.layer.task_exit(&mut self.hw, t);
        let ids = std::mem::take(&mut self.tasks[t.0 as usize - 1].bps);
        for b in ids {
            self.forget_bp(b);
        }
        let next = self.pick(cpu);
        self.switch(cpu, next, true, TaskState::Exited);
        self.stats.exited += 1;
        if let Some(p) = self.tasks[t.0 as usize - 1].parent {
            let parent = &mut self.tasks[p.0 as usize - 1];
            parent.live_children = parent.live_children.saturating_sub(1);
            if parent.live_children == 0 && parent.state == TaskState::Blocked {
                self.make_runnable(p);
            }
        }
    }

    // ---------------------------------------------------------------- CPUs

    fn check_cpu(&self, cpu: CpuId) -> Result<(), SimError> {
        if cpu.idx() >= self.hw.possible_cpus() {
            return Err(SimError::NoSuchCpu {
                cpu,
                possible: self.hw.possible_cpus(),
            });
        }
        Ok(())
    }

    fn check_online(&self, cpu: CpuId) -> Result<(), SimError> {
        self.check_cpu(cpu)?;
        if !self.hw.is_online(cpu) {
            return Err(SimError::CpuOffline(cpu));
        }
        Ok(())
    }

    /// Online CPUs.
    pub fn online_cpus(&self) -> &[CpuId] {
        &self.online
    }

    /// Bring `cpu` online: mark it online (registers reset), then
    /// `layer.cpu_online`, which installs every wide breakpoint there. If one
    /// does not fit, the CPU stays online without it and the error names it.
    pub fn cpu_up(&mut self, cpu: CpuId) -> Result<(), SimError> {
        self.check_cpu(cpu)?;
        if self.hw.is_online(cpu) {
            return Err(SimError::CpuAlreadyOnline(cpu));
        }
        self.hw.set_online(cpu, true);
        let pos = self.online.partition_point(|c| *c < cpu);
        self.online.insert(pos, cpu);
        self.layer
            .cpu_online(&mut self.hw, cpu)
            .map_err(|OnlineError { bp, error }| SimError::WideDidNotFit { cpu, bp, error })
    }

    /// Take `cpu` offline: migrate its task away (tasks pinned there lose
    /// their affinity), `layer.cpu_offline`, then mark it offline.
    pub fn cpu_down(&mut self, cpu: CpuId) -> Result<(), SimError> {
        self.check_online(cpu)?;
        if self.online.len() == 1 {
            return Err(SimError::LastCpu(cpu));
        }
        self.switch(cpu, None, false, TaskState::Runnable);
        for t in self.tasks.iter_mut() {
            if t.affinity == Some(cpu) {
                t.affinity = None;
            }
        }
        self.layer.cpu_offline(&mut self.hw, cpu);
        self.hw.note_offline_leftovers(cpu);
        self.hw.set_online(cpu, false);
        self.online.retain(|c| *c != cpu);
        Ok(())
    }

    // ---------------------------------------------------------------- instructions

    /// The current task's pc on `cpu`, advanced past one instruction; kernel
    /// text on an idle CPU.
    fn next_ip(&mut self, cpu: CpuId) -> u64 {
        match self.hw.current(cpu) {
            Some(t) => {
                let task = &mut self.tasks[t.0 as usize - 1];
                let ip = task.pc;
                task.pc += INSN_LEN;
                ip
            }
            None => KERNEL_TEXT,
        }
    }

    /// The task on `cpu` makes a data access of `len` bytes at `addr`
    /// (`kind` is [`Access::Read`] or [`Access::Write`]) as one instruction at
    /// its pc. Debug exceptions go to the layer as a kernel would deliver them.
    pub fn access(
        &mut self,
        cpu: CpuId,
        addr: u64,
        len: u64,
        kind: Access,
    ) -> Result<InsnOutcome, SimError> {
        self.check_online(cpu)?;
        let ip = self.next_ip(cpu);
        self.access_at(cpu, ip, addr, len, kind)
    }

    /// [`Sim::access`] made by the instruction at `ip`.
    pub fn access_at(
        &mut self,
        cpu: CpuId,
        ip: u64,
        addr: u64,
        len: u64,
        kind: Access,
    ) -> Result<InsnOutcome, SimError> {
        self.check_online(cpu)?;
        if !matches!(kind, Access::Read | Access::Write) || len == 0 || len > 64 {
            return Err(SimError::BadAccess { kind, len });
        }
        self.run_insn(
            cpu,
            Insn {
                ip,
                next_ip: ip.wrapping_add(INSN_LEN),
                mem: Some(MemAccess { addr, len, kind }),
            },
        )
    }

    /// `cpu` executes the (memory-less) instruction at `ip`.
    pub fn exec(&mut self, cpu: CpuId, ip: u64) -> Result<InsnOutcome, SimError> {
        self.check_online(cpu)?;
        if let Some(t) = self.hw.current(cpu) {
            self.tasks[t.0 as usize - 1].pc = ip.wrapping_add(INSN_LEN);
        }
        self.run_insn(
            cpu,
            Insn {
                ip,
                next_ip: ip.wrapping_add(INSN_LEN),
                mem: None,
            },
        )
    }

    /// Run one instruction to completion:
    ///
    /// 1. Ask the hardware whether it faults *before* running (x86 execute
    ///    breakpoint without RF; arm64 breakpoint or watchpoint; POWER DAWR).
    ///    If so, enter the layer and try again: for trigger-before hardware the
    ///    layer disables the slot and arms single-step, so the retry runs.
    /// 2. Perform the access; RF clears.
    /// 3. Ask the hardware whether it traps *after* (x86 data breakpoint, any
    ///    single-step) and enter the layer once more.
    ///
    /// More than [`MAX_TRAPS_PER_INSN`] exceptions without completing is an
    /// error ([`SimError::NoProgress`]), never a hang.
    fn run_insn(&mut self, cpu: CpuId, insn: Insn) -> Result<InsnOutcome, SimError> {
        let hw = *self.hw.hw();
        let mut out = InsnOutcome::default();
        loop {
            if out.traps >= MAX_TRAPS_PER_INSN {
                return Err(SimError::NoProgress {
                    cpu,
                    ip: insn.ip,
                    traps: out.traps,
                });
            }
            let flags = self.hw.cpu(cpu).map(|c| c.flags()).unwrap_or_default();
            let raw = hw.before(self.hw.regs_file_mut(cpu).values_mut(), flags, &insn);
            match raw {
                Some(raw) => self.raise(cpu, raw, &mut out),
                None => break,
            }
        }
        self.hw.tick();
        if let Some(m) = insn.mem {
            if self.log_enabled {
                self.trace.push(TraceEvent::Access(Performed {
                    cpu,
                    task: self.hw.current(cpu),
                    ip: insn.ip,
                    access: m,
                    time: self.hw.now(),
                }));
            }
        }
        self.stats.insns += 1;
        let flags = self.hw.cpu(cpu).map(|c| c.flags()).unwrap_or_default();
        // RF is cleared once an instruction completes.
        self.hw.set_resume_flag(cpu, false);
        if let Some(raw) = hw.after(self.hw.regs_file_mut(cpu).values_mut(), flags, &insn) {
            self.raise(cpu, raw, &mut out);
        }
        Ok(out)
    }

    /// Kernel debug-exception entry: fix up the raw state, call the layer,
    /// apply what it asks for on resume.
    fn raise(&mut self, cpu: CpuId, raw: RawStatus, out: &mut InsnOutcome) {
        let hw = *self.hw.hw();
        let raw = hw.kernel_entry(self.hw.regs_file_mut(cpu).values_mut(), raw);
        let is_step = match raw {
            RawStatus::X86 { dr6, .. } => dr6 & crate::hw::x86::DR6_BS != 0,
            RawStatus::Arm64 { esr, .. } => matches!(esr >> 26, 0x32 | 0x33),
            RawStatus::Power { dsisr, .. } => dsisr == 0,
        };
        let d = self.layer.handle_exception(&mut self.hw, cpu, &raw);
        if self.log_enabled {
            self.trace.push(TraceEvent::Exception {
                cpu,
                raw,
                dispatched: d,
            });
        }
        out.traps += 1;
        out.delivered += d.delivered;
        out.strays += d.strays;
        self.stats.traps += 1;
        self.stats.delivered += d.delivered as u64;
        self.stats.strays += d.strays as u64;
        if is_step {
            out.step_traps += 1;
            self.stats.step_traps += 1;
        }
        if d.resume_flag {
            self.hw.set_resume_flag(cpu, true);
        }
        if d.stepping && !self.hw.cpu(cpu).is_some_and(|c| c.flags().single_step) {
            self.stats.step_contract_broken += 1;
        }
    }

    // ---------------------------------------------------------------- scheduler

    /// Advance the seeded scheduler `ticks` times. Each tick picks an online
    /// CPU at random; it may preempt the running task; an idle CPU picks a
    /// runnable task; then the running task executes its next op.
    pub fn run(&mut self, ticks: u64) -> Result<Stats, SimError> {
        for _ in 0..ticks {
            let cpu = self.online[self.rng.gen_range(0..self.online.len())];
            self.tick(cpu)?;
        }
        Ok(self.stats())
    }

    /// Run until no task is left or `max_ticks` pass; returns whether every task exited.
    pub fn run_to_completion(&mut self, max_ticks: u64) -> Result<bool, SimError> {
        for _ in 0..max_ticks {
            if self.runnable.is_empty() && self.busy_cpus == 0 {
                return Ok(true);
            }
            let cpu = self.online[self.rng.gen_range(0..self.online.len())];
            self.tick(cpu)?;
        }
        Ok(self.runnable.is_empty() && self.busy_cpus == 0)
    }

    /// One scheduler tick on `cpu`.
    pub fn tick(&mut self, cpu: CpuId) -> Result<(), SimError> {
        self.check_online(cpu)?;
        if self.hw.current(cpu).is_some() && self.rng.gen_range(0..1000) < self.preempt_per_mille {
            if let Some(next) = self.pick(cpu) {
                self.switch(cpu, Some(next), false, TaskState::Runnable);
            }
        }
        let t = match self.hw.current(cpu) {
            Some(t) => t,
            None => match self.pick(cpu) {
                Some(n) => {
                    self.switch(cpu, Some(n), false, TaskState::Runnable);
                    n
                }
                None => {
                    self.stats.idle_ticks += 1;
                    return Ok(());
                }
            },
        };
        self.step_task(cpu, t)
    }

    fn step_task(&mut self, cpu: CpuId, t: TaskId) -> Result<(), SimError> {
        let task = &mut self.tasks[t.0 as usize - 1];
        if task.next >= task.program.ops().len() {
            if task.program.repeats() && !task.program.ops().is_empty() {
                task.next = 0;
                task.pc = task.program.code();
            } else {
                self.exit_current(cpu, t);
                return Ok(());
            }
        }
        let op = task.program.ops()[task.next].clone();
        task.next += 1;
        match op {
            Op::Read { addr, len } => self.access(cpu, addr, len, Access::Read).map(|_| ()),
            Op::Write { addr, len } => self.access(cpu, addr, len, Access::Write).map(|_| ()),
            Op::Exec { ip } => self.exec(cpu, ip).map(|_| ()),
            Op::Nop => {
                let ip = self.next_ip(cpu);
                self.exec(cpu, ip).map(|_| ())
            }
            Op::Yield => {
                if let Some(next) = self.pick(cpu) {
                    self.switch(cpu, Some(next), true, TaskState::Runnable);
                }
                Ok(())
            }
            Op::Spawn { program, inherit } => {
                // A refused spawn is like fork() failing: counted, the parent goes on.
                let _ = self.spawn_child_arc(t, program, inherit);
                Ok(())
            }
            Op::Join => {
                if self.tasks[t.0 as usize - 1].live_children > 0 {
                    let next = self.pick(cpu);
                    self.switch(cpu, next, true, TaskState::Blocked);
                }
                Ok(())
            }
            Op::Exit => {
                self.exit_current(cpu, t);
                Ok(())
            }
        }
    }
}
