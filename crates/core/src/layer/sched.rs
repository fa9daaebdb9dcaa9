//! The scheduling hooks: a context switch moves task breakpoints between
//! CPUs, a task's exit unregisters them, and `locate` finds where a task
//! runs when it gets its first breakpoint.

use alloc::vec::Vec;

use crate::bp::BpId;
use crate::events::Record;
use crate::install::Installed;
use crate::machine::Machine;
use crate::target::{CpuId, TaskId};

use super::{Books, Layer, NoneOrEq};

impl Layer {
    /// Where task `t` runs now. The layer's own record first (kept by
    /// `switch_task`); else ask the machine, and adopt what it says, so a
    /// task already running when its first breakpoint is registered gets it
    /// at once.
    pub(super) fn locate(&self, b: &mut Books, m: &mut dyn Machine, t: TaskId) -> Option<CpuId> {
        if let Some(&c) = b.running.get(&t) {
            return Some(c);
        }
        // O(1) on machines that know where a task runs (Machine::running_on);
        // the layer only double-checks the answer against its own view.
        let c = m
            .running_on(t)
            .filter(|&c| c.idx() < self.possible && b.online[c.idx()] && m.current(c) == Some(t))?;
        let mut table = self.tables[c.idx()].lock();
        if let Some(old) = table.task.take() {
            // The machine switched without telling us: drop the stale task's
            // breakpoints from this CPU.
            table.uninstall_tasks(&*self.arch, m, c);
            if b.running.get(&old) == Some(&c) {
                b.running.remove(&old);
            }
        }
        table.task = Some(t);
        b.running.insert(t, c);
        Some(c)
    }

    /// Context switch on `cpu` from `prev` to `next` (the machine calls this).
    /// Uninstalls the outgoing task's breakpoints from `cpu`, installs the
    /// incoming task's, and records `Switch` events. An unknown CPU is ignored.
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
        {
            let mut guard = self.books.lock();
            let b = &mut *guard;
            if let Some(n) = next {
                // A task migrating without a switch-out: drop it from its old CPU.
                if let Some(&old) = b.running.get(&n) {
                    if old != cpu {
                        let mut t = self.tables[old.idx()].lock();
                        t.uninstall_tasks(&*self.arch, m, old);
                        t.task = None;
                        b.running.remove(&n);
                    }
                }
            }
            let mut t = self.tables[cpu.idx()].lock();
            t.uninstall_tasks(&*self.arch, m, cpu);
            for gone in [t.task.take(), prev].into_iter().flatten() {
                if b.running.get(&gone) == Some(&cpu) {
                    b.running.remove(&gone);
                }
            }
            if let Some(n) = next {
                t.task = Some(n);
                b.running.insert(n, cpu);
                if let Some(list) = b.tasks.get(&n) {
                    for id in list {
                        let Some(bp) = b.bps.get(id) else { continue };
                        if bp.attr.disabled || !bp.target.cpu().is_none_or_eq(cpu) {
                            continue;
                        }
                        t.install(
                            &*self.arch,
                            m,
                            cpu,
                            Installed {
                                id: *id,
                                bp: bp.arch,
                                task: Some(n),
                                life: bp.life.clone(),
                                stepping: false,
                            },
                        );
                    }
                }
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
                },
            );
        }
    }

    /// A task exited: unregister its breakpoints (synchronously).
    pub fn task_exit(&self, m: &mut dyn Machine, task: TaskId) {
        let ids: Vec<BpId> = {
            let b = self.books.lock();
            b.tasks.get(&task).cloned().unwrap_or_default()
        };
        for id in ids {
            let _ = self.unregister(m, id); // already gone is fine: it raced another unregister
        }
        let mut guard = self.books.lock();
        let b = &mut *guard;
        if let Some(c) = b.running.remove(&task) {
            let mut t = self.tables[c.idx()].lock();
            if t.task == Some(task) {
                t.task = None;
            }
        }
    }
}
