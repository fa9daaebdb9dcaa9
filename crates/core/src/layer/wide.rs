//! The wide-breakpoint domain: how a [`crate::target::Target::AllCpus`]
//! breakpoint is booked and installed CPU by CPU through [`crate::fanout`].

use spin::Mutex;

use crate::arch::{Arch, Pool};
use crate::bp::BpId;
use crate::error::Error;
use crate::fanout::Domain;
use crate::install::{CpuTable, Installed};
use crate::machine::Machine;
use crate::slots::Slots;
use crate::target::{CpuId, Target};

use super::release;

/// Where a wide breakpoint sits on one CPU: the slot commit used, so
/// unregister can clear it without searching. Only a hint: modify or enable
/// may move the breakpoint, and a stale hint falls back to a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hint(pub(super) Option<(Pool, u8)>);

/// The wide-breakpoint domain for [`Fanout`]: every online CPU.
/// prepare = book one CPU-bound slot there; commit = program the register.
pub(super) struct Wide<'a> {
    pub(super) slots: &'a mut Slots,
    pub(super) tables: &'a [Mutex<CpuTable>],
    pub(super) arch: &'a dyn Arch,
    pub(super) m: &'a mut dyn Machine,
    pub(super) pool: Pool,
    pub(super) id: BpId,
    /// Book a slot (false for a disabled reserve-on-enable breakpoint).
    pub(super) book: bool,
    /// What to install on commit (`None` while disabled).
    pub(super) install: Option<Installed>,
}

impl Domain for Wide<'_> {
    type Member = CpuId;
    type Handle = Hint;
    type Error = Error;

    fn prepare(&mut self, cpu: CpuId) -> Result<Hint, Error> {
        if self.book {
            self.slots.reserve(self.pool, Target::Cpu(cpu), 1)?;
        }
        Ok(Hint(None))
    }

    fn commit(&mut self, cpu: CpuId, hint: &mut Hint) {
        if let Some(e) = &self.install {
            let pool = e.bp.pool;
            let slot = self.tables[cpu.idx()]
                .lock()
                .install(self.arch, self.m, cpu, e.clone());
            hint.0 = slot.map(|s| (pool, s as u8));
        }
    }

    fn abort(&mut self, cpu: CpuId, _: Hint) {
        if self.book {
            release(self.slots, self.pool, Target::Cpu(cpu));
        }
    }

    fn remove(&mut self, cpu: CpuId, hint: Hint) {
        let mut t = self.tables[cpu.idx()].lock();
        match hint.0 {
            Some((pool, slot)) if t.get(pool, slot as usize).is_some_and(|e| e.id == self.id) => {
                t.uninstall_slot(self.arch, self.m, cpu, pool, slot as usize);
            }
            _ => {
                t.uninstall(self.arch, self.m, cpu, self.id);
            }
        }
        drop(t);
        if self.book {
            release(self.slots, self.pool, Target::Cpu(cpu));
        }
    }
}
