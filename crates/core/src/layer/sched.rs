//! The scheduling hooks: a context switch moves task breakpoints between
//! CPUs, a task's exit unregisters them.
//!
//! The switch takes **no global lock**: only the switching CPU's install
//! table, one shard of the task index (to find the incoming task's cell) and
//! that task's cell. See [`super::tasks`] for the protocol and why a
//! concurrent registration can neither be lost nor installed twice.

use alloc::vec::Vec;

use crate::bp::BpId;
use crate::events::Record;
use crate::machine::Machine;
use crate::target::{CpuId, TaskId};

use super::Layer;

impl Layer {
    /// Context switch on `cpu` from `prev` to `next` (the machine calls this
    /// on `cpu`, after it made `next` current there). Uninstalls the
    /// outgoing task's breakpoints from `cpu`, installs the incoming task's,
    /// and records `Switch` events. Takes no global lock. An unknown CPU is
    /// ignored.
    pub fn switch_task(
        &self,
        m: &mut dyn Machine,
        cpu: CpuId,
        prev: Option<TaskId>,
        next: Option<TaskId>,
        voluntary: bool,
    ) {
        if cpu.idx() >= self.possible {
            return;
        }
        let time = m.now();
        let arch = &*self.arch;
        // Step 1: this CPU's table alone: the outgoing task's breakpoints
        // leave, the incoming task is named.
        {
            let mut t = self.tables[cpu.idx()].lock();
            t.uninstall_tasks(arch, m, cpu);
            t.task = next;
        }
        // Step 2: the incoming task's list, under its cell lock.
        if let Some(cell) = next.and_then(|n| self.tasks.get(n)) {
            let n = next.unwrap_or(TaskId(0));
            let mut st = cell.lock();
            if let Some(old) = st.on_cpu.filter(|&o| o != cpu) {
                // Migrating without a switch-out there: leave the old CPU.
                let mut ot = self.tables[old.idx()].lock();
                if ot.task == Some(n) {
                    ot.uninstall_tasks(arch, m, old);
                    ot.task = None;
                }
            }
            let mut t = self.tables[cpu.idx()].lock();
            if t.task == Some(n) {
                // From scratch: a registration may have installed some already.
                t.uninstall_tasks(arch, m, cpu);
                for bp in st.bps.iter().filter(|b| b.installs_on(cpu)) {
                    t.install(arch, m, cpu, bp.entry(n));
                }
                st.on_cpu = Some(cpu);
            }
        }
        if let Some(p) = prev {
            self.events.push(
                cpu,
                Record::Switch {
                    cpu,
                    task: p,
                    departs: true,
                    voluntary,
                    time,
                    ip: m.task_ip(p).unwrap_or(0),
                },
            );
        }
        if let Some(n) = next {
            self.events.push(
                cpu,
                Record::Switch {
                    cpu,
                    task: n,
                    departs: false,
                    voluntary,
                    time,
                    ip: m.task_ip(n).unwrap_or(0),
                },
            );
        }
    }

    /// A task exited: unregister its breakpoints (synchronously), and forget
    /// it on the CPU where it ran.
    pub fn task_exit(&self, m: &mut dyn Machine, task: TaskId) {
        let (ids, hint): (Vec<BpId>, _) = match self.tasks.get(task) {
            Some(cell) => {
                let st = cell.lock();
                (st.bps.iter().map(|b| b.id).collect(), st.on_cpu)
            }
            None => (Vec::new(), None),
        };
        for id in ids {
            let _ = self.unregister(m, id); // already gone is fine: it raced another unregister
        }
        let cpu = hint.or_else(|| m.running_on(task));
        if let Some(t) = cpu.and_then(|c| self.tables.get(c.idx())) {
            let mut t = t.lock();
            if t.task == Some(task) {
                t.task = None;
            }
        }
    }
}
