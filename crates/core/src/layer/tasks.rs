//! Per-task breakpoint state, read by the context switch without the books.
//!
//! A kernel cannot take a global lock on every context switch. So what a
//! switch needs — a task's installable breakpoints and where the layer last
//! installed them — lives in one [`TaskCell`] per task (its own lock),
//! found through a [`TaskIndex`] sharded by task id (a shard lock is held only
//! to clone the cell's `Arc`). The books keep the bookings.
//!
//! ## Locks and their order
//! `books → task cell → CPU table` for every API call; the switch takes a
//! CPU table alone, a shard alone, then `task cell → CPU table`. A shard
//! lock is never held while another lock is taken, except `shard → task cell`
//! in [`TaskIndex::remove_if_empty`], which runs with nothing else held
//! after a change under the books.
//!
//! ## Invariants
//! - A task's list of breakpoints changes only under the books *and* its
//!   cell lock; the switch reads it under the cell lock alone.
//! - Task `t`'s breakpoints sit in CPU `c`'s table only while
//!   `tables[c].task == Some(t)`. `on_cpu` is a hint checked against that
//!   (under the table lock), so nobody has to clear it when `t` leaves `c`.
//! - The switch on `c` first empties `c`'s task slots and names the incoming
//!   task in `tables[c].task` (step 1), then, under the task's cell lock,
//!   installs its whole list (step 2). A registration for that task either
//!   comes before step 2 (step 2 installs it) or sees the name from step 1
//!   under the table lock and installs it itself; both install the same
//!   list, and step 2 reinstalls from scratch, so nothing is lost or doubled.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::{Mutex, MutexGuard};

use crate::arch::{Arch, ArchBp};
use crate::bp::{BpId, Life};
use crate::install::{CpuTable, Installed};
use crate::machine::Machine;
use crate::target::{CpuId, TaskId};

use super::NoneOrEq;

/// One task breakpoint as the context switch installs it.
pub(super) struct TaskBp {
    pub id: BpId,
    pub arch: ArchBp,
    /// `Some(c)` for [`crate::Target::TaskOnCpu`]: installed only on `c`.
    pub cpu: Option<CpuId>,
    pub enabled: bool,
    pub life: Arc<Life>,
}

impl TaskBp {
    /// Whether it belongs in the registers while its task runs on `cpu`.
    pub fn installs_on(&self, cpu: CpuId) -> bool {
        self.enabled && self.cpu.is_none_or_eq(cpu)
    }

    /// The install-table entry for task `task`.
    pub fn entry(&self, task: TaskId) -> Installed {
        Installed {
            id: self.id,
            bp: self.arch,
            task: Some(task),
            life: self.life.clone(),
            stepping: false,
        }
    }
}

/// A task's breakpoints and where the layer last installed them.
#[derive(Default)]
pub(super) struct TaskState {
    /// Hint: the CPU whose table last named this task (see the invariants).
    pub on_cpu: Option<CpuId>,
    pub bps: Vec<TaskBp>,
}

/// A task's state behind its own lock.
pub(super) type TaskCell = Arc<Mutex<TaskState>>;

const SHARDS: usize = 64;

/// Task id → its cell, in shards so lookups on different CPUs rarely meet.
pub(super) struct TaskIndex {
    shards: Vec<Mutex<BTreeMap<TaskId, TaskCell>>>,
}

impl TaskIndex {
    pub fn new() -> Self {
        TaskIndex {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
        }
    }

    fn shard(&self, t: TaskId) -> &Mutex<BTreeMap<TaskId, TaskCell>> {
        &self.shards[(t.0 as usize) % SHARDS]
    }

    /// The task's cell, if it has breakpoints. Never allocates.
    pub fn get(&self, t: TaskId) -> Option<TaskCell> {
        self.shard(t).lock().get(&t).cloned()
    }

    /// The task's cell, created empty if needed (under the books).
    pub fn get_or_insert(&self, t: TaskId) -> TaskCell {
        self.shard(t).lock().entry(t).or_default().clone()
    }

    /// Drop the task's cell once its list is empty (under the books).
    pub fn remove_if_empty(&self, t: TaskId) {
        let mut s = self.shard(t).lock();
        if s.get(&t).is_some_and(|c| c.lock().bps.is_empty()) {
            s.remove(&t);
        }
    }
}

/// The CPU table where task `t`'s breakpoints are installed now, locked:
/// the `on_cpu` hint, if that table still names `t`.
pub(super) fn installed_table<'a>(
    tables: &'a [Mutex<CpuTable>],
    t: TaskId,
    st: &TaskState,
) -> Option<(CpuId, MutexGuard<'a, CpuTable>)> {
    let c = st.on_cpu?;
    let table = tables.get(c.idx())?.lock();
    (table.task == Some(t)).then_some((c, table))
}

/// Like [`installed_table`], but a task the layer has not seen running is
/// looked up through the machine and *adopted* on the CPU where it runs (a
/// task already running when it gets its first breakpoint gets it at once).
/// The machine's answer is re-checked under the table lock, so a switch that
/// just moved the task away is never undone.
pub(super) fn running_table<'a>(
    tables: &'a [Mutex<CpuTable>],
    arch: &dyn Arch,
    online: &[bool],
    m: &mut dyn Machine,
    t: TaskId,
    st: &mut TaskState,
) -> Option<(CpuId, MutexGuard<'a, CpuTable>)> {
    if let Some(found) = installed_table(tables, t, st) {
        return Some(found);
    }
    let c = m
        .running_on(t)
        .filter(|&c| online.get(c.idx()).copied().unwrap_or(false))?;
    let mut table = tables.get(c.idx())?.lock();
    if m.current(c) != Some(t) {
        return None;
    }
    if table.task != Some(t) {
        // The machine switched without telling us: the old task's
        // breakpoints leave this CPU.
        table.uninstall_tasks(arch, m, c);
        table.task = Some(t);
    }
    st.on_cpu = Some(c);
    Some((c, table))
}
