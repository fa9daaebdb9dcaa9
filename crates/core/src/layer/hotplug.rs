//! CPU hotplug: a CPU coming online gets every wide breakpoint; a CPU going
//! offline loses everything bound to it.

use alloc::vec::Vec;

use crate::arch::Pool;
use crate::bp::BpId;
use crate::error::Error;
use crate::install::Installed;
use crate::machine::{set_single_step, Machine};
use crate::target::{CpuId, Target};

use super::wide::Wide;
use super::{booked, Layer};

/// A wide breakpoint that did not fit on a CPU coming online
/// ([`Layer::cpu_online`]); it stays registered on the other CPUs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wide breakpoint {} stays off the CPU coming online: {error}", bp.0)]
pub struct OnlineError {
    /// The breakpoint that did not fit (the first, by id).
    pub bp: BpId,
    /// Why (the booking's [`Error::NoSlot`]).
    pub error: Error,
}

impl Layer {
    /// `cpu` came online (the machine marks it online first). It gets every
    /// wide breakpoint, each through the fan-out's `join`. If one does not
    /// fit, the others are still installed and the first failure is returned
    /// as an [`OnlineError`]: that breakpoint stays registered on the other
    /// CPUs only. An unknown CPU is ignored.
    pub fn cpu_online(&self, m: &mut dyn Machine, cpu: CpuId) -> Result<(), OnlineError> {
        if cpu.idx() >= self.possible {
            return Ok(());
        }
        let mut guard = self.books.lock();
        let b = &mut *guard;
        b.online[cpu.idx()] = true;
        let mut first = None;
        for (&id, bp) in b.bps.iter_mut() {
            let Some(w) = bp.wide.as_mut() else { continue };
            let book = booked(bp.reserve_on_enable, &bp.attr);
            let mut d = Wide {
                slots: &mut b.slots,
                tables: &self.tables,
                arch: &*self.arch,
                m: &mut *m,
                pool: bp.arch.pool,
                id,
                book,
                install: (!bp.attr.disabled).then(|| Installed {
                    id,
                    bp: bp.arch,
                    task: None,
                    life: bp.life.clone(),
                    stepping: false,
                }),
            };
            if let Err(error) = w.join(&mut d, cpu) {
                first.get_or_insert(OnlineError { bp: id, error });
            }
        }
        match first {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// `cpu` is going offline (the machine marks it offline after). Wide
    /// breakpoints leave it (and stay registered on the other CPUs);
    /// breakpoints bound to it alone ([`Target::Cpu`]) are unregistered;
    /// task breakpoints installed there are uninstalled; its CPU-bound
    /// bookings (including debugger-held slots) are cleared. An unknown CPU
    /// is ignored.
    pub fn cpu_offline(&self, m: &mut dyn Machine, cpu: CpuId) {
        if cpu.idx() >= self.possible {
            return;
        }
        let mut dead = Vec::new();
        {
            let mut guard = self.books.lock();
            let b = &mut *guard;
            for (&id, bp) in b.bps.iter_mut() {
                let Some(w) = bp.wide.as_mut() else { continue };
                let mut d = Wide {
                    slots: &mut b.slots,
                    tables: &self.tables,
                    arch: &*self.arch,
                    m: &mut *m,
                    pool: bp.arch.pool,
                    id,
                    book: booked(bp.reserve_on_enable, &bp.attr),
                    install: None,
                };
                w.leave(&mut d, cpu);
            }
            let bound: Vec<BpId> = b
                .bps
                .iter()
                .filter(|(_, bp)| bp.target == Target::Cpu(cpu))
                .map(|(&id, _)| id)
                .collect();
            for id in bound {
                if let Some(bp) = b.bps.remove(&id) {
                    bp.life.kill();
                    dead.push(bp.life.clone());
                    self.teardown(b, m, id, bp);
                }
            }
            {
                let mut t = self.tables[cpu.idx()].lock();
                t.uninstall_tasks(&*self.arch, m, cpu);
                // The task's on_cpu hint goes stale with this: checked
                // against the table, it no longer counts (layer::tasks).
                t.task = None;
                if t.has_pending() {
                    t.pending.iter_mut().for_each(|p| *p = None);
                    set_single_step(m, cpu, false);
                }
                t.unclaim_all();
                debug_assert_eq!(t.count(Pool::Inst) + t.count(Pool::Data), 0);
            }
            b.slots.clear_cpu(cpu);
            b.dbg[cpu.idx()] = [0; 2];
            b.online[cpu.idx()] = false;
        }
        for s in dead {
            s.wait_idle();
        }
    }
}
