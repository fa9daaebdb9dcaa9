//! The public API: register / modify / enable /
//! disable / unregister, context switch and hotplug hooks, the exception
//! entry point, and the debugger (kgdb) try-path.
//!
//! One file per job, all methods of one [`Layer`]:
//! - [`api`]: the request ([`Request`]), register / modify / enable /
//!   disable / unregister, and the queries;
//! - [`sched`]: the scheduling hooks (`switch_task`, `task_exit`) and where a
//!   task runs;
//! - [`hotplug`]: `cpu_online` / `cpu_offline`;
//! - `debugger`: the kgdb try-path, an optional part behind the `debugger`
//!   cargo feature (on by default) and its own handle, `Layer::debugger()`;
//! - [`snapshot`]: the layer's whole state, for before/after comparisons;
//! - `wide`: the [`crate::fanout::Domain`] that books and installs a wide
//!   breakpoint CPU by CPU;
//! - `tasks`: per-task breakpoint lists the context switch reads without
//!   the books, and the protocol that keeps them and the registers in step.
//!
//! Every mutating call follows the same order, as Linux does:
//! **parse** with the arch first (a clear error before anything is booked),
//! then **book** in [`crate::slots`], then **install** through
//! [`crate::install`]. A call that fails changes nothing.
//!
//! ## Locks
//! - `books`: one global lock over the slot books and the registered set.
//!   Every API call except dispatch, the context switch and the debugger path
//!   takes it (blocking). The debugger path only ever `try_lock`s it.
//! - one lock per task with breakpoints over its list (`tasks`: what the
//!   context switch installs), found through a sharded index. Taken after the
//!   books by the API, and without them by [`Layer::switch_task`]: the
//!   switch takes no global lock.
//! - one lock per CPU over its install table. Taken *after* the books and the
//!   task lock (never the other way round) by registration and the switch,
//!   and alone by dispatch. Dispatch thus never waits for the books, so a hit
//!   can never deadlock against a registration stuck in a slow register write
//!   on another CPU.
//!
//! ## Targets
//! - [`Target::Cpu`] and [`Target::AllCpus`] breakpoints are installed at once
//!   on their CPUs (wide ones all-or-nothing through [`crate::fanout`]).
//! - [`Target::Task`] and [`Target::TaskOnCpu`] breakpoints are installed while
//!   the task runs: [`Layer::switch_task`] moves them, and a task already running
//!   at registration time ([`Machine::current`]) gets them at once.

pub mod api;
#[cfg(feature = "debugger")]
pub mod debugger;
pub mod hotplug;
pub mod sched;
pub mod snapshot;
mod tasks;
mod wide;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use crate::arch::{Arch, ArchBp, Pool, RawStatus, Trigger};
use crate::attr::BpAttr;
use crate::bp::{BpId, Life};
use crate::dispatch::Fire;
use crate::error::Error;
use crate::events::{Events, Record};
use crate::fanout::Fanout;
use crate::install::CpuTable;
use crate::machine::Machine;
use crate::slots::Slots;
use crate::target::{CpuId, Target};

pub use crate::bp::{Callback, Hit};
pub use crate::dispatch::Dispatched;
pub use api::{InstalledBp, Request};
#[cfg(feature = "debugger")]
pub use debugger::{DbgSlot, DebugSession, Debugger};
pub use hotplug::OnlineError;
pub use snapshot::{BpSnapshot, SlotSnapshot, Snapshot};
use wide::Hint;

/// One registered breakpoint, as the books know it.
struct Bp {
    attr: BpAttr,
    arch: ArchBp,
    target: Target,
    reserve_on_enable: bool,
    life: Arc<Life>,
    /// Wide breakpoints: the CPUs it is live (booked) on.
    wide: Option<Fanout<CpuId, Hint>>,
}

impl Bp {
    /// Whether it holds a booking now: always, except a disabled
    /// reserve-on-enable breakpoint.
    fn booked(&self) -> bool {
        booked(self.reserve_on_enable, &self.attr)
    }
}

/// Give back one slot booked for `target`. The books refuse (and report) a
/// release of something never booked; that would be a layer bug.
fn release(slots: &mut Slots, pool: Pool, target: Target) {
    let ok = slots.release(pool, target, 1);
    debug_assert!(
        ok,
        "released a {pool:?} slot for {target:?} that was not booked"
    );
}

fn booked(reserve_on_enable: bool, attr: &BpAttr) -> bool {
    !(reserve_on_enable && attr.disabled)
}

/// Everything the global lock protects.
struct Books {
    slots: Slots,
    bps: BTreeMap<BpId, Bp>,
    /// The next id to hand out. Taken only when a registration succeeds, so a
    /// failed registration leaves it unchanged.
    next_id: u32,
    /// The layer's view of which CPUs are online (hotplug hooks, wide
    /// registration). The debugger path has no machine to ask.
    online: Vec<bool>,
    /// Debugger-held slots per CPU per pool (preallocated: the debugger path
    /// never allocates).
    dbg: Vec<[u16; 2]>,
    /// Outstanding debugger slots (`DbgSlot`) per pool.
    #[cfg(feature = "debugger")]
    dbg_held: [usize; 2],
}

/// The hardware-breakpoint layer. `Sync`: share it between threads (CPUs).
pub struct Layer {
    arch: Box<dyn Arch>,
    possible: usize,
    books: Mutex<Books>,
    tables: Vec<Mutex<CpuTable>>,
    /// Per-task breakpoint lists for the context switch (see [`tasks`]).
    tasks: tasks::TaskIndex,
    events: Events,
}

impl Layer {
    /// A layer for `arch` over a machine with `possible_cpus` CPUs, with an
    /// event ring of `ring_capacity` records per CPU.
    ///
    /// Every CPU starts online in the layer's view. A machine with CPUs
    /// offline at start calls [`Layer::cpu_offline`] for them (wide
    /// registration also re-reads online state from the machine).
    pub fn new(arch: Box<dyn Arch>, possible_cpus: usize, ring_capacity: usize) -> Self {
        let limit = [arch.slots(Pool::Inst), arch.slots(Pool::Data)];
        Layer {
            books: Mutex::new(Books {
                slots: Slots::new(possible_cpus, limit),
                bps: BTreeMap::new(),
                next_id: 1,
                online: alloc::vec![true; possible_cpus],
                dbg: alloc::vec![[0; 2]; possible_cpus],
                #[cfg(feature = "debugger")]
                dbg_held: [0; 2],
            }),
            tables: (0..possible_cpus)
                .map(|_| Mutex::new(CpuTable::new(limit)))
                .collect(),
            tasks: tasks::TaskIndex::new(),
            events: Events::new(possible_cpus, ring_capacity),
            arch,
            possible: possible_cpus,
        }
    }

    /// The arch backend.
    pub fn arch(&self) -> &dyn Arch {
        &*self.arch
    }

    /// CPUs this layer was built for.
    pub fn possible_cpus(&self) -> usize {
        self.possible
    }

    /// Take every buffered event record of every CPU, oldest first per CPU.
    /// Returns how many were taken.
    pub fn drain_events(&self, f: &mut dyn FnMut(CpuId, Record)) -> usize {
        self.events.drain_all(f)
    }

    /// The event buffer (per-CPU rings of samples and switches), for
    /// consumers that drain one CPU or watch the lost count.
    pub fn events(&self) -> &Events {
        &self.events
    }

    fn check_cpu(&self, cpu: CpuId) -> Result<(), Error> {
        if cpu.idx() >= self.possible {
            return Err(Error::NoSuchCpu {
                cpu,
                possible: self.possible,
            });
        }
        Ok(())
    }

    /// Parse with the arch, check the pool exists and that the machine can
    /// step over what traps before the access: no booking yet.
    fn parse(&self, m: &mut dyn Machine, attr: &BpAttr) -> Result<ArchBp, Error> {
        let bp = self.arch.parse(attr)?;
        if self.arch.slots(bp.pool) == 0 {
            return Err(Error::NoSuchPool { pool: bp.pool });
        }
        // A field test first: a trap-after breakpoint (x86 data) costs no
        // call here.
        if bp.trigger == Trigger::Before
            && self.arch.needs_step_over(&bp)
            && m.single_step().is_none()
        {
            return Err(Error::NeedsSingleStep { pool: bp.pool });
        }
        Ok(bp)
    }

    /// Debug exception on `cpu`: decode, filter strays, step over, deliver.
    /// Takes only `cpu`'s install table lock; never the books.
    pub fn handle_exception(&self, m: &mut dyn Machine, cpu: CpuId, raw: &RawStatus) -> Dispatched {
        let Some(table) = self.tables.get(cpu.idx()) else {
            return Dispatched::default();
        };
        let fire = Fire {
            table,
            arch: &*self.arch,
            events: &self.events,
        };
        crate::dispatch::handle(fire, m, cpu, raw)
    }
}

/// `Option<CpuId>` is `None` or equal to `c` (a task-on-any-CPU target, or
/// a task-on-this-CPU target).
trait NoneOrEq {
    fn is_none_or_eq(&self, c: CpuId) -> bool;
}

impl NoneOrEq for Option<CpuId> {
    fn is_none_or_eq(&self, c: CpuId) -> bool {
        match self {
            None => true,
            Some(x) => *x == c,
        }
    }
}
