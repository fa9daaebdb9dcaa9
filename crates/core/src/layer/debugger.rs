//! The debugger (kgdb) path: book, claim and release slots without ever
//! blocking, allocating or preempting another user.
//!
//! An optional part of the layer, the way gdbstub's target extensions are
//! optional: it is compiled only with the `debugger` cargo feature (on by
//! default), and reached through its own handle, [`Layer::debugger`], so the
//! rest of the API carries none of it. Without the feature the layer keeps
//! only its (zeroed) debugger bookkeeping: one `[u16; 2]` per CPU and the
//! claim bits of each install table, which hotplug and snapshots read.
//!
//! Every call here only `try_lock`s: [`Error::Busy`] at once when another
//! CPU holds the books or the install table it needs. None allocates.
//!
//! ```
//! use hwbreak_core::arch::{x86_64::X86_64, Pool};
//! use hwbreak_core::layer::Layer;
//! let layer = Layer::new(Box::new(X86_64::default()), 2, 16);
//! let dbg = layer.debugger();
//! let mut session = dbg.session()?; // every free slot on every CPU
//! assert_eq!(session.held(Pool::Data), 4);
//! let reg = session.claim(hwbreak_core::CpuId(1), Pool::Data)?; // DR0..DR3
//! assert_eq!(reg, 0);
//! session.end()?;
//! assert_eq!(dbg.free_everywhere(Pool::Data)?, 4);
//! # Ok::<(), hwbreak_core::Error>(())
//! ```

use crate::arch::Pool;
use crate::bp::BpId;
use crate::error::Error;
use crate::target::{CpuId, Target, TaskId};

use super::{release, Books, Layer};

/// A debugger-held slot (the kgdb path): one slot of a pool on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbgSlot {
    /// Pool.
    pub pool: Pool,
}

impl Layer {
    /// The debugger path: a handle whose calls never block, never allocate
    /// and never preempt another user of the slots.
    pub fn debugger(&self) -> Debugger<'_> {
        Debugger { layer: self }
    }
}

/// The debugger path of one [`Layer`] (see the module doc). Copy it freely:
/// it is a reference.
#[derive(Clone, Copy)]
pub struct Debugger<'a> {
    layer: &'a Layer,
}

impl<'a> Debugger<'a> {
    /// Book one slot of `pool` on every online CPU (books held). Never allocates.
    fn dbg_reserve_locked(b: &mut Books, pool: Pool) -> Result<(), Error> {
        let Books {
            slots, online, dbg, ..
        } = b;
        for c in 0..online.len() {
            if !online[c] {
                continue;
            }
            if let Err(e) = slots.reserve(pool, Target::Cpu(CpuId(c as u32)), 1) {
                for k in (0..c).filter(|&k| online[k]) {
                    release(slots, pool, Target::Cpu(CpuId(k as u32)));
                    dbg[k][pool.idx()] -= 1;
                }
                return Err(e);
            }
            dbg[c][pool.idx()] += 1;
        }
        b.dbg_held[pool.idx()] += 1;
        Ok(())
    }

    /// Give back one debugger slot of `pool` on every CPU that holds one (books held).
    fn dbg_release_locked(b: &mut Books, pool: Pool) -> Result<(), Error> {
        if b.dbg_held[pool.idx()] == 0 {
            return Err(Error::NotReserved { pool });
        }
        for c in 0..b.dbg.len() {
            if b.dbg[c][pool.idx()] > 0 {
                release(&mut b.slots, pool, Target::Cpu(CpuId(c as u32)));
                b.dbg[c][pool.idx()] -= 1;
            }
        }
        b.dbg_held[pool.idx()] -= 1;
        Ok(())
    }

    /// book one slot of `pool` on every online CPU, never
    /// blocking, never allocating, never preempting. [`Error::Busy`] at once
    /// when the books are locked; [`Error::NoSlot`] when some CPU has no
    /// free slot (nothing is booked then); [`Error::NoSuchPool`].
    pub fn try_reserve(&self, pool: Pool) -> Result<DbgSlot, Error> {
        if self.layer.arch.slots(pool) == 0 {
            return Err(Error::NoSuchPool { pool });
        }
        let mut b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        Self::dbg_reserve_locked(&mut b, pool)?;
        Ok(DbgSlot { pool })
    }

    /// give it back, never blocking. [`Error::Busy`] when the
    /// books (or an install table) are locked (keep the slot and try again);
    /// [`Error::NotReserved`] when no debugger slot of that pool is held;
    /// [`Error::StillClaimed`] while the debugger still programs as many
    /// registers on some CPU as it holds slots there.
    pub fn try_release(&self, slot: DbgSlot) -> Result<(), Error> {
        let pool = slot.pool;
        let mut b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        if b.dbg_held[pool.idx()] == 0 {
            return Err(Error::NotReserved { pool });
        }
        // Every claimed register must stay covered by a booking, or the
        // layer could book a breakpoint it has no free register for.
        for (c, held) in b.dbg.iter().enumerate() {
            if held[pool.idx()] > 0 {
                let t = self.layer.tables[c].try_lock().ok_or(Error::Busy)?;
                if t.claims(pool) >= usize::from(held[pool.idx()]) {
                    return Err(Error::StillClaimed {
                        cpu: CpuId(c as u32),
                        pool,
                    });
                }
            }
        }
        Self::dbg_release_locked(&mut b, pool)
    }

    /// who holds `cpu`'s registers now — `f(pool, slot, id,
    /// task)` for each installed breakpoint (`task` is `None` for CPU-bound
    /// ones) — so a refused request can name them. Never blocks, never
    /// allocates: [`Error::Busy`] if `cpu`'s install table is locked;
    /// [`Error::NoSuchCpu`].
    pub fn try_holders(
        &self,
        cpu: CpuId,
        f: &mut dyn FnMut(Pool, usize, BpId, Option<TaskId>),
    ) -> Result<(), Error> {
        self.layer.check_cpu(cpu)?;
        let t = self.layer.tables[cpu.idx()].try_lock().ok_or(Error::Busy)?;
        for (pool, slot, e) in t.entries() {
            f(pool, slot, e.id, e.task);
        }
        Ok(())
    }

    /// pick the register the debugger will program itself on
    /// `cpu`, from the slots it booked ([`Debugger::try_reserve`] or a
    /// [`DebugSession`]). Returns the register index of `pool`; the layer
    /// never installs there until [`Debugger::try_unclaim`]. Never blocks, never
    /// allocates: [`Error::Busy`] if the books or `cpu`'s install table are
    /// locked; [`Error::NotReserved`] if the debugger has no booked slot left
    /// to claim on `cpu`; [`Error::NoSuchCpu`].
    ///
    /// A hit in a claimed register is the debugger's: the layer's dispatch
    /// counts it as a stray (empty slot) and delivers nothing.
    pub fn try_claim(&self, cpu: CpuId, pool: Pool) -> Result<usize, Error> {
        self.layer.check_cpu(cpu)?;
        let b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        let mut t = self.layer.tables[cpu.idx()].try_lock().ok_or(Error::Busy)?;
        if usize::from(b.dbg[cpu.idx()][pool.idx()]) <= t.claims(pool) {
            return Err(Error::NotReserved { pool });
        }
        // Booked means free: the layer installs at most (slots - debugger
        // bookings) breakpoints on this CPU, so an unclaimed register is free.
        t.claim(pool).ok_or(Error::NotReserved { pool })
    }

    /// give back a register taken with [`Debugger::try_claim`]
    /// (after clearing it). Never blocks: [`Error::Busy`] if `cpu`'s install
    /// table is locked; [`Error::NotReserved`] if it was not claimed.
    pub fn try_unclaim(&self, cpu: CpuId, pool: Pool, slot: usize) -> Result<(), Error> {
        self.layer.check_cpu(cpu)?;
        let mut t = self.layer.tables[cpu.idx()].try_lock().ok_or(Error::Busy)?;
        if t.unclaim(pool, slot) {
            Ok(())
        } else {
            Err(Error::NotReserved { pool })
        }
    }

    /// how many slots of `pool` are free on *every* online
    /// CPU right now. [`Error::Busy`] when the books are locked.
    pub fn free_everywhere(&self, pool: Pool) -> Result<usize, Error> {
        let b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        Ok(b.slots
            .free_everywhere(pool, &|c| b.online.get(c.idx()).copied().unwrap_or(false)))
    }

    /// start a session that books every slot free on every
    /// online CPU, in every pool. [`Error::Busy`] when the books are locked.
    /// Never allocates, never preempts: slots held by others stay theirs.
    pub fn session(&self) -> Result<DebugSession<'a>, Error> {
        let mut b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        let mut held = [0usize; 2];
        for pool in Pool::ALL {
            if self.layer.arch.slots(pool) == 0 {
                continue;
            }
            let online = &b.online;
            let n = b
                .slots
                .free_everywhere(pool, &|c| online.get(c.idx()).copied().unwrap_or(false));
            for _ in 0..n {
                if Self::dbg_reserve_locked(&mut b, pool).is_err() {
                    break;
                }
                held[pool.idx()] += 1;
            }
        }
        Ok(DebugSession {
            layer: self.layer,
            held,
        })
    }
}

/// A debugger session (kgdb): every slot that was free on every online CPU
/// when it started, booked for the debugger. Give them back with
/// [`DebugSession::end`] (non-blocking). If the session is dropped still
/// holding slots, drop waits for the books to release them (it never leaks).
pub struct DebugSession<'a> {
    layer: &'a Layer,
    held: [usize; 2],
}

impl DebugSession<'_> {
    /// Slots of `pool` the session holds (on every online CPU).
    pub fn held(&self, pool: Pool) -> usize {
        self.held[pool.idx()]
    }

    /// Register `pool`'s register on `cpu` for the debugger to program (see
    /// [`Debugger::try_claim`]).
    pub fn claim(&self, cpu: CpuId, pool: Pool) -> Result<usize, Error> {
        self.layer.debugger().try_claim(cpu, pool)
    }

    /// Drop every debugger claim and release every held slot, never
    /// blocking. [`Error::Busy`] when the books or an install table are
    /// locked: nothing was released, try again. The debugger clears the
    /// registers it programmed before calling this.
    pub fn end(&mut self) -> Result<(), Error> {
        let mut b = self.layer.books.try_lock().ok_or(Error::Busy)?;
        // Claims first: a retry after Busy clears the rest (idempotent).
        for t in &self.layer.tables {
            t.try_lock().ok_or(Error::Busy)?.unclaim_all();
        }
        Self::release_all(&mut b, &mut self.held);
        Ok(())
    }

    fn release_all(b: &mut Books, held: &mut [usize; 2]) {
        for pool in Pool::ALL {
            while held[pool.idx()] > 0 {
                // Cannot fail: the session's slots are counted in dbg_held.
                let _ = Debugger::dbg_release_locked(b, pool);
                held[pool.idx()] -= 1;
            }
        }
    }
}

impl Drop for DebugSession<'_> {
    fn drop(&mut self) {
        if self.held != [0, 0] {
            let mut b = self.layer.books.lock();
            for t in &self.layer.tables {
                t.lock().unclaim_all();
            }
            Self::release_all(&mut b, &mut self.held);
        }
    }
}
