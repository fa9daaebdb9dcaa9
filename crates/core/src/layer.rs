//! The public API (owner: the layer work). Signatures below are the contract
//! the simulator and other crates build against; bodies are being written.
use alloc::boxed::Box;

use crate::arch::{Pool, RawStatus};
use crate::attr::BpAttr;
use crate::error::Error;
use crate::machine::Machine;
use crate::target::{CpuId, TaskId, Target};
use crate::BpId;

/// What a consumer learns on each hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Which breakpoint.
    pub bp: BpId,
    /// The cookie given at registration.
    pub cookie: u64,
    /// CPU it fired on.
    pub cpu: CpuId,
    /// Task running there.
    pub task: Option<TaskId>,
    /// Instruction pointer.
    pub ip: u64,
    /// Data address.
    pub addr: u64,
    /// Timestamp.
    pub time: u64,
}

/// A hit callback. Runs in exception context: must not block or call back into the layer.
pub type Callback = Box<dyn Fn(&Hit) + Send + Sync>;

/// A registration request.
pub struct Request {
    /// What to watch.
    pub attr: BpAttr,
    /// Where.
    pub target: Target,
    /// Called on each hit.
    pub callback: Option<Callback>,
    /// Handed back in each [`Hit`].
    pub cookie: u64,
    /// A disabled breakpoint holds no slot; enabling books one (and may fail).
    pub reserve_on_enable: bool,
}

impl Request {
    /// A request with no callback, cookie 0, slot held while disabled.
    pub fn new(attr: BpAttr, target: Target) -> Self {
        Request {
            attr,
            target,
            callback: None,
            cookie: 0,
            reserve_on_enable: false,
        }
    }
}

/// What dispatch did with an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dispatched {
    /// Hits delivered now.
    pub delivered: u32,
    /// Hits filtered as strays.
    pub strays: u32,
    /// Dispatch armed a single-step (step-over); the machine must run one
    /// instruction and call `handle_exception` again with the step status.
    pub stepping: bool,
    /// x86: set RF on resume.
    pub resume_flag: bool,
}

/// A debugger-held slot (the kgdb path): one slot of a pool on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbgSlot {
    /// Pool.
    pub pool: Pool,
}

/// The hardware-breakpoint layer.
pub struct Layer {
    _todo: (),
}
impl Layer {
    /// A layer for `arch` over a machine with `possible_cpus` CPUs, with an
    /// event ring of `ring_capacity` records per CPU.
    pub fn new(arch: Box<dyn crate::arch::Arch>, possible_cpus: usize, ring_capacity: usize) -> Self {
        let _ = (arch, possible_cpus, ring_capacity);
        todo!()
    }
    /// Register.
    pub fn register(&self, m: &mut dyn Machine, req: Request) -> Result<BpId, Error> {
        let _ = (m, req);
        todo!()
    }
    /// Unregister, synchronously.
    pub fn unregister(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let _ = (m, id);
        todo!()
    }
    /// Modify in place.
    pub fn modify(&self, m: &mut dyn Machine, id: BpId, attr: BpAttr) -> Result<(), Error> {
        let _ = (m, id, attr);
        todo!()
    }
    /// Enable.
    pub fn enable(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let _ = (m, id);
        todo!()
    }
    /// Disable.
    pub fn disable(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let _ = (m, id);
        todo!()
    }
    /// Context switch on `cpu` from `prev` to `next` (machine calls this).
    pub fn switch_task(&self, m: &mut dyn Machine, cpu: CpuId, prev: Option<TaskId>, next: Option<TaskId>, voluntary: bool) {
        let _ = (m, cpu, prev, next, voluntary);
        todo!()
    }
    /// A task exited: unregister its breakpoints.
    pub fn task_exit(&self, m: &mut dyn Machine, task: TaskId) {
        let _ = (m, task);
        todo!()
    }
    /// `cpu` came online (machine marks it online first). Installs every wide breakpoint.
    pub fn cpu_online(&self, m: &mut dyn Machine, cpu: CpuId) -> Result<(), (BpId, Error)> {
        let _ = (m, cpu);
        todo!()
    }
    /// `cpu` is going offline (machine marks it offline after).
    pub fn cpu_offline(&self, m: &mut dyn Machine, cpu: CpuId) {
        let _ = (m, cpu);
        todo!()
    }
    /// Debug exception on `cpu`.
    pub fn handle_exception(&self, m: &mut dyn Machine, cpu: CpuId, raw: &RawStatus) -> Dispatched {
        let _ = (m, cpu, raw);
        todo!()
    }
    /// Debugger path: book one slot of `pool` on every CPU, never blocking.
    pub fn try_reserve(&self, pool: Pool) -> Result<DbgSlot, Error> {
        let _ = pool;
        todo!()
    }
    /// Debugger path: give it back, never blocking.
    pub fn try_release(&self, slot: DbgSlot) -> Result<(), Error> {
        let _ = slot;
        todo!()
    }
}
