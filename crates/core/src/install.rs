//! Which breakpoint sits in which register of which CPU.
//!
//! Each CPU has one `CpuTable`: for every pool, which [`BpId`] and which
//! parsed [`ArchBp`] occupy each hardware slot, plus the task the layer last
//! saw running there and the hits waiting for a step-over to complete.
//!
//! The table is the only thing [`crate::dispatch`] locks: one CPU's table, for
//! a few loads. Registration (which holds the global books) takes a CPU's
//! table after the books, never the other way round, so the two cannot
//! deadlock.
//!
//! Slot choice is dynamic, as in Linux's `arch_install_hw_breakpoint`: the
//! first free register of the pool. The books ([`crate::slots`]) guarantee
//! there is one; the invariant below is checked on every install.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::arch::{Arch, ArchBp, Pool, MAX_SLOTS};
use crate::bp::{BpId, Life};
use crate::machine::Machine;
use crate::target::{CpuId, TaskId};

/// One occupied hardware slot.
#[derive(Clone)]
pub(crate) struct Installed {
    /// The breakpoint.
    pub id: BpId,
    /// What was programmed.
    pub bp: ArchBp,
    /// `Some(task)` for a task breakpoint (removed when the task leaves the CPU).
    pub task: Option<TaskId>,
    /// Callback, cookie, in-flight counter.
    pub life: Arc<Life>,
    /// The slot is disabled in hardware for a step-over and must be re-armed
    /// when the step completes.
    pub stepping: bool,
}

/// A hit waiting for its step-over to complete (arm64, POWER: trigger-before).
#[derive(Clone)]
pub(crate) struct Pending {
    pub pool: Pool,
    pub slot: usize,
    pub id: BpId,
    pub life: Arc<Life>,
    pub ip: u64,
    pub addr: u64,
    /// False for a stray that is stepped over only to make progress.
    pub deliver: bool,
}

/// Most hits one exception can carry: every slot of both pools.
pub(crate) const MAX_HITS: usize = 2 * MAX_SLOTS;

/// One CPU's install table.
///
/// Sized to the arch at creation (4 entries on x86, up to 32 on arm64) rather
/// than to [`MAX_SLOTS`]: a wide registration touches every CPU's table, and
/// small tables keep thousands of them in cache. Nothing is allocated after
/// [`CpuTable::new`]: dispatch never allocates.
pub(crate) struct CpuTable {
    /// `slots[pool][i]`: what sits in slot `i`; `len()` = the pool's slot
    /// count, the bound of the invariant below.
    slots: [Vec<Option<Installed>>; 2],
    /// The task the layer last installed for on this CPU.
    pub task: Option<TaskId>,
    /// Hits whose step-over is in progress: at most one per slot.
    pub pending: Vec<Option<Pending>>,
    /// Bit `i` of `claimed[pool]`: the debugger (kgdb path) programs register
    /// `i` itself; the layer never installs there.
    claimed: [u32; 2],
}

impl CpuTable {
    /// An empty table for an arch with `limit[pool]` slots.
    pub fn new(limit: [usize; 2]) -> Self {
        let l = [limit[0].min(MAX_SLOTS), limit[1].min(MAX_SLOTS)];
        CpuTable {
            slots: [
                (0..l[0]).map(|_| None).collect(),
                (0..l[1]).map(|_| None).collect(),
            ],
            task: None,
            pending: (0..(l[0] + l[1]).min(MAX_HITS)).map(|_| None).collect(),
            claimed: [0; 2],
        }
    }

    /// Claim a register of `pool` for the debugger: the first one neither
    /// occupied nor claimed. Never allocates.
    #[cfg(feature = "debugger")]
    pub fn claim(&mut self, pool: Pool) -> Option<usize> {
        let claimed = self.claimed[pool.idx()];
        let slot = self.slots[pool.idx()]
            .iter()
            .enumerate()
            .position(|(i, s)| s.is_none() && claimed & (1 << i) == 0)?;
        self.claimed[pool.idx()] |= 1 << slot;
        Some(slot)
    }

    /// Give a claimed register back. Returns whether it was claimed.
    #[cfg(feature = "debugger")]
    pub fn unclaim(&mut self, pool: Pool, slot: usize) -> bool {
        let bit = 1u32.checked_shl(slot as u32).unwrap_or(0);
        let was = self.claimed[pool.idx()] & bit != 0;
        self.claimed[pool.idx()] &= !bit;
        was
    }

    /// Registers of `pool` the debugger claims.
    #[cfg(feature = "debugger")]
    pub fn claims(&self, pool: Pool) -> usize {
        self.claimed[pool.idx()].count_ones() as usize
    }

    /// Drop every debugger claim (session end, CPU offline).
    pub fn unclaim_all(&mut self) {
        self.claimed = [0; 2];
    }

    /// What sits in `slot` of `pool`.
    pub fn get(&self, pool: Pool, slot: usize) -> Option<&Installed> {
        self.slots[pool.idx()].get(slot)?.as_ref()
    }

    /// Mutable access to `slot` of `pool`.
    pub fn get_mut(&mut self, pool: Pool, slot: usize) -> Option<&mut Installed> {
        self.slots[pool.idx()].get_mut(slot)?.as_mut()
    }

    /// How many slots of `pool` are occupied.
    pub fn count(&self, pool: Pool) -> usize {
        self.slots[pool.idx()]
            .iter()
            .filter(|s| s.is_some())
            .count()
    }

    /// Where `id` sits, if installed here.
    pub fn find(&self, id: BpId) -> Option<(Pool, usize)> {
        for pool in Pool::ALL {
            for (i, s) in self.slots[pool.idx()].iter().enumerate() {
                if s.as_ref().is_some_and(|e| e.id == id) {
                    return Some((pool, i));
                }
            }
        }
        None
    }

    /// Program `e` into the first free slot of its pool. Returns the slot, or
    /// `None` when the pool is full (a booking bug: the books promised room).
    pub fn install(
        &mut self,
        arch: &dyn Arch,
        m: &mut dyn Machine,
        cpu: CpuId,
        e: Installed,
    ) -> Option<usize> {
        let pool = e.bp.pool;
        let limit = self.slots[pool.idx()].len();
        let claimed = self.claimed[pool.idx()];
        let slot = self.slots[pool.idx()]
            .iter()
            .enumerate()
            .position(|(i, s)| s.is_none() && claimed & (1 << i) == 0);
        // Invariant: never more installed on a CPU than the pool has slots.
        // The books guarantee room; running out here means they were bypassed.
        debug_assert!(
            slot.is_some(),
            "install table overflow on CPU {} pool {:?}: {} of {} slots in use",
            cpu.0,
            pool,
            self.count(pool),
            limit
        );
        let slot = slot?;
        arch.install(m.regs(cpu), slot, &e.bp);
        self.slots[pool.idx()][slot] = Some(e);
        debug_assert!(self.count(pool) <= limit);
        Some(slot)
    }

    /// Clear `slot` of `pool` in hardware (arch order: control, then address)
    /// and in the table. Returns what was there.
    pub fn uninstall_slot(
        &mut self,
        arch: &dyn Arch,
        m: &mut dyn Machine,
        cpu: CpuId,
        pool: Pool,
        slot: usize,
    ) -> Option<Installed> {
        // The entry leaves the table first, then the arch disarms the slot
        // (control before address: the comparator never matches a
        // half-cleared slot). No one sees the two disagree: dispatch reads
        // the table under this CPU's table lock, which the caller holds. A
        // hit raised before the disarm and dispatched after no longer finds
        // this breakpoint: an empty slot is a stray, counted, not delivered.
        let e = self.slots[pool.idx()].get_mut(slot)?.take()?;
        arch.uninstall(m.regs(cpu), pool, slot);
        Some(e)
    }

    /// Uninstall `id` from this CPU. Returns whether it was installed.
    pub fn uninstall(
        &mut self,
        arch: &dyn Arch,
        m: &mut dyn Machine,
        cpu: CpuId,
        id: BpId,
    ) -> bool {
        match self.find(id) {
            Some((pool, slot)) => self.uninstall_slot(arch, m, cpu, pool, slot).is_some(),
            None => false,
        }
    }

    /// Replace `id`'s programming in place (modify): same slot if the pool is
    /// unchanged, else uninstall and install in the new pool.
    pub fn reinstall(
        &mut self,
        arch: &dyn Arch,
        m: &mut dyn Machine,
        cpu: CpuId,
        id: BpId,
        bp: ArchBp,
    ) -> bool {
        let Some((pool, slot)) = self.find(id) else {
            return false;
        };
        if pool == bp.pool {
            // Disable first, then program the new shape: no hit can come from
            // a slot holding half of the old and half of the new breakpoint.
            arch.uninstall(m.regs(cpu), pool, slot);
            arch.install(m.regs(cpu), slot, &bp);
            if let Some(e) = self.get_mut(pool, slot) {
                e.bp = bp;
                e.stepping = false;
            }
            true
        } else {
            let Some(mut e) = self.uninstall_slot(arch, m, cpu, pool, slot) else {
                return false;
            };
            e.bp = bp;
            e.stepping = false;
            self.install(arch, m, cpu, e).is_some()
        }
    }

    /// Uninstall every task breakpoint (context switch out, CPU offline).
    pub fn uninstall_tasks(&mut self, arch: &dyn Arch, m: &mut dyn Machine, cpu: CpuId) {
        for pool in Pool::ALL {
            for slot in 0..self.slots[pool.idx()].len() {
                if self.get(pool, slot).is_some_and(|e| e.task.is_some()) {
                    self.uninstall_slot(arch, m, cpu, pool, slot);
                }
            }
        }
    }

    /// What is installed, for snapshots and tests: `(pool, slot, id, bp)`.
    pub fn entries(&self) -> impl Iterator<Item = (Pool, usize, &Installed)> {
        Pool::ALL.into_iter().flat_map(move |pool| {
            self.slots[pool.idx()]
                .iter()
                .enumerate()
                .filter_map(move |(i, s)| s.as_ref().map(|e| (pool, i, e)))
        })
    }

    /// Whether a step-over is in progress on this CPU.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|p| p.is_some())
    }

    /// Queue a step-over hit. Returns false if the queue is full (cannot
    /// happen: one entry per slot at most).
    pub fn push_pending(&mut self, p: Pending) -> bool {
        match self.pending.iter_mut().find(|s| s.is_none()) {
            Some(s) => {
                *s = Some(p);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::X86_64;
    use crate::arch::{DebugRegs, Reg};
    use crate::attr::BpAttr;
    use alloc::collections::BTreeMap;

    struct One(BTreeMap<Reg, u64>);
    impl DebugRegs for One {
        fn read(&self, r: Reg) -> u64 {
            self.0.get(&r).copied().unwrap_or(0)
        }
        fn write(&mut self, r: Reg, v: u64) {
            self.0.insert(r, v);
        }
    }
    impl Machine for One {
        fn possible_cpus(&self) -> usize {
            1
        }
        fn is_online(&self, _: CpuId) -> bool {
            true
        }
        fn regs(&mut self, _: CpuId) -> &mut dyn DebugRegs {
            self
        }
        fn current(&self, _: CpuId) -> Option<TaskId> {
            None
        }
        fn now(&self) -> u64 {
            0
        }
    }

    fn entry(arch: &X86_64, id: u32) -> Installed {
        Installed {
            id: BpId(id),
            bp: arch
                .parse(&BpAttr::write(0x1000 + 8 * id as u64, 8))
                .unwrap(),
            task: None,
            life: Arc::new(Life::new(BpId(id), 0, None)),
            stepping: false,
        }
    }

    #[test]
    fn install_takes_the_first_free_slot_and_uninstall_frees_it() {
        let arch = X86_64::default();
        let mut m = One(BTreeMap::new());
        let mut t = CpuTable::new([0, 4]);
        for i in 0..4 {
            assert_eq!(
                t.install(&arch, &mut m, CpuId(0), entry(&arch, i + 1)),
                Some(i as usize)
            );
        }
        assert!(t.uninstall(&arch, &mut m, CpuId(0), BpId(2)));
        assert_eq!(t.find(BpId(2)), None);
        assert_eq!(t.install(&arch, &mut m, CpuId(0), entry(&arch, 9)), Some(1));
        assert_eq!(t.count(Pool::Data), 4);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "install table overflow")]
    fn installing_more_than_the_pool_has_slots_is_caught_in_debug() {
        let arch = X86_64::default();
        let mut m = One(BTreeMap::new());
        let mut t = CpuTable::new([0, 4]);
        for i in 0..5 {
            t.install(&arch, &mut m, CpuId(0), entry(&arch, i + 1));
        }
    }
}
