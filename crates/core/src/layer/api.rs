//! The request and the API over it: register / modify / enable / disable /
//! unregister, and the queries (attributes, hits, what is installed).
//!
//! Every mutating call **parses** with the arch first, then **books** in
//! [`crate::slots`], then **installs** through [`crate::install`]; a call
//! that fails changes nothing.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::arch::Pool;
use crate::attr::BpAttr;
use crate::bp::{BpId, Callback, Hit, Life};
use crate::error::Error;
use crate::fanout::Fanout;
use crate::install::{CpuTable, Installed};
use crate::machine::Machine;
use crate::slots::Slots;
use crate::target::{CpuId, Target};

use super::tasks::{self, TaskBp};
use super::wide::Wide;
use super::{booked, release, Books, Bp, Layer, NoneOrEq};

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

    /// The same request with `callback` called on each hit.
    pub fn callback(mut self, callback: impl Fn(&Hit) + Send + Sync + 'static) -> Self {
        self.callback = Some(Box::new(callback));
        self
    }

    /// The same request with `cookie` handed back in each hit.
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.cookie = cookie;
        self
    }

    /// The same request, "reserve on enable": while disabled it holds no slot.
    pub fn reserve_on_enable(mut self) -> Self {
        self.reserve_on_enable = true;
        self
    }
}

/// One occupied debug register of a CPU, as [`Layer::installed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledBp {
    /// The register's pool.
    pub pool: Pool,
    /// The register's index in its pool (x86: DR0–DR3).
    pub slot: usize,
    /// The breakpoint programmed there.
    pub bp: BpId,
}

impl Layer {
    /// Register a breakpoint: parse, book, install. On error nothing changed.
    ///
    /// Errors: [`Error::Arch`] (the arch refused the attributes),
    /// [`Error::NoSuchPool`], [`Error::NoSuchCpu`], [`Error::CpuOffline`]
    /// (a [`Target::Cpu`] that is offline), [`Error::NoSlot`],
    /// [`Error::NeedsSingleStep`] (the arch traps before this access and the
    /// machine cannot step over it).
    pub fn register(&self, m: &mut dyn Machine, req: Request) -> Result<BpId, Error> {
        let target = req.target;
        if let Some(cpu) = target.cpu() {
            self.check_cpu(cpu)?;
            if matches!(target, Target::Cpu(_)) && !m.is_online(cpu) {
                return Err(Error::CpuOffline(cpu));
            }
        }
        let arch_bp = self.parse(m, &req.attr)?;
        let pool = arch_bp.pool;
        let book = booked(req.reserve_on_enable, &req.attr);

        let mut guard = self.books.lock();
        let b = &mut *guard;
        let id = BpId(b.next_id);
        let life = Arc::new(Life::new(id, req.cookie, req.callback));
        let entry = (!req.attr.disabled).then(|| Installed {
            id,
            bp: arch_bp,
            task: target.task(),
            life: life.clone(),
            stepping: false,
        });

        let wide = match target {
            Target::AllCpus => {
                for c in 0..self.possible {
                    b.online[c] = m.is_online(CpuId(c as u32));
                }
                // Book every online CPU in one call (all or nothing, naming
                // the first CPU without room), then let the fan-out program
                // every CPU: nothing is written before every booking holds.
                // Booking in one pass instead of in the fan-out's per-CPU
                // prepare saves a validation and, without task bookings,
                // every per-CPU fit check (docs/PERFORMANCE.md, wide).
                if book {
                    b.slots.reserve_cpus(pool, &b.online, 1)?;
                }
                let online = &b.online;
                let cpus = (0..self.possible)
                    .filter(|&c| online[c])
                    .map(|c| CpuId(c as u32));
                let mut d = Wide {
                    slots: &mut b.slots,
                    tables: &self.tables,
                    arch: &*self.arch,
                    m: &mut *m,
                    pool,
                    id,
                    // Already booked above: prepare has nothing left to do
                    // and cannot fail, so the fan-out never aborts.
                    book: false,
                    install: entry.clone(),
                };
                match Fanout::register(&mut d, cpus) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        // Unreachable (prepare without booking is Ok), but
                        // if it ever fails, leave no booking behind.
                        if book {
                            for c in (0..self.possible).filter(|&c| b.online[c]) {
                                release(&mut b.slots, pool, Target::Cpu(CpuId(c as u32)));
                            }
                        }
                        return Err(e.error);
                    }
                }
            }
            _ => {
                if book {
                    b.slots.reserve(pool, target, 1)?;
                }
                None
            }
        };
        b.next_id += 1;
        b.bps.insert(
            id,
            Bp {
                attr: req.attr,
                arch: arch_bp,
                target,
                reserve_on_enable: req.reserve_on_enable,
                life: life.clone(),
                wide,
            },
        );
        if let Some(e) = entry {
            match target {
                Target::Cpu(c) => {
                    self.tables[c.idx()].lock().install(&*self.arch, m, c, e);
                }
                Target::Task(_) | Target::TaskOnCpu(..) => {} // below
                Target::AllCpus => {}                         // committed by the fan-out
            }
        }
        if let Some(t) = target.task() {
            // The task's own list, which the context switch reads without
            // the books; installed at once where the task runs now.
            let cell = self.tasks.get_or_insert(t);
            let mut st = cell.lock();
            let tbp = TaskBp {
                id,
                arch: arch_bp,
                cpu: target.cpu(),
                enabled: !req.attr.disabled,
                life: life.clone(),
            };
            if tbp.enabled {
                let found =
                    tasks::running_table(&self.tables, &*self.arch, &b.online, m, t, &mut st);
                if let Some((c, mut table)) = found {
                    if tbp.installs_on(c) {
                        table.install(&*self.arch, m, c, tbp.entry(t));
                    }
                }
            }
            st.bps.push(tbp);
        }
        // Only now may a hit be delivered: never from a half-done request.
        life.set_live();
        Ok(id)
    }

    /// Call `f` with each CPU's table where `bp` is (or, if enabled, would
    /// be) installed now. For a task breakpoint, `f` runs under the task's
    /// cell lock, after `edit` changed its entry in the task's list (or
    /// removed it), so a context switch sees the list and the registers agree.
    fn for_live_tables(
        &self,
        id: BpId,
        bp: &Bp,
        online: &[bool],
        m: &mut dyn Machine,
        edit: impl FnOnce(&mut tasks::TaskState),
        mut f: impl FnMut(&mut dyn Machine, CpuId, &mut CpuTable),
    ) {
        match bp.target {
            Target::Cpu(c) => f(m, c, &mut self.tables[c.idx()].lock()),
            Target::AllCpus => {
                if let Some(w) = &bp.wide {
                    for (c, _) in w.members() {
                        f(m, *c, &mut self.tables[c.idx()].lock());
                    }
                }
            }
            Target::Task(t) | Target::TaskOnCpu(t, _) => {
                let Some(cell) = self.tasks.get(t) else {
                    debug_assert!(false, "task breakpoint {id:?} missing from its task's list");
                    return;
                };
                let mut st = cell.lock();
                edit(&mut st);
                let found = tasks::running_table(&self.tables, &*self.arch, online, m, t, &mut st);
                if let Some((c, mut table)) = found {
                    if bp.target.cpu().is_none_or_eq(c) {
                        f(m, c, &mut table);
                    }
                }
            }
        }
    }

    /// Book `pool` for `bp`'s target: all its member CPUs for a wide one,
    /// all-or-nothing.
    fn book(slots: &mut Slots, bp: &Bp, pool: Pool) -> Result<(), Error> {
        match &bp.wide {
            Some(w) => {
                for (done, (c, _)) in w.members().enumerate() {
                    if let Err(e) = slots.reserve(pool, Target::Cpu(*c), 1) {
                        for (c, _) in w.members().take(done) {
                            release(slots, pool, Target::Cpu(*c));
                        }
                        return Err(e);
                    }
                }
                Ok(())
            }
            None => slots.reserve(pool, bp.target, 1),
        }
    }

    fn unbook(slots: &mut Slots, bp: &Bp, pool: Pool) {
        match &bp.wide {
            Some(w) => {
                for (c, _) in w.members() {
                    release(slots, pool, Target::Cpu(*c));
                }
            }
            None => release(slots, pool, bp.target),
        }
    }

    /// Uninstall and unbook `bp` (already removed from `b.bps` and killed).
    pub(super) fn teardown(&self, b: &mut Books, m: &mut dyn Machine, id: BpId, mut bp: Bp) {
        if let Some(mut w) = bp.wide.take() {
            // Release every member's booking in one call (as registration
            // booked them), then uninstall member by member without
            // per-CPU releases. Both under the books lock, so nobody sees
            // the books freed before the registers are.
            if bp.booked() {
                let ok = b
                    .slots
                    .release_cpus(bp.arch.pool, w.members().map(|&(c, _)| c), 1);
                debug_assert!(ok, "released wide {id:?}'s slots, not all booked");
            }
            let mut d = Wide {
                slots: &mut b.slots,
                tables: &self.tables,
                arch: &*self.arch,
                m,
                pool: bp.arch.pool,
                id,
                book: false,
                install: None,
            };
            w.remove_all(&mut d);
        } else {
            let arch = &*self.arch;
            self.for_live_tables(
                id,
                &bp,
                &b.online,
                m,
                |st| st.bps.retain(|x| x.id != id),
                |m, c, t| {
                    t.uninstall(arch, m, c, id);
                },
            );
            if bp.booked() {
                release(&mut b.slots, bp.arch.pool, bp.target);
            }
        }
        if let Some(t) = bp.target.task() {
            self.tasks.remove_if_empty(t);
        }
    }

    /// Unregister, synchronously: once this returns, no callback for `id`
    /// runs, even if another CPU is dispatching a hit of it right now.
    ///
    /// Must not be called from a callback (it waits for callbacks to finish).
    /// Errors: [`Error::UnknownBreakpoint`].
    pub fn unregister(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let life = {
            let mut guard = self.books.lock();
            let b = &mut *guard;
            let bp = b.bps.remove(&id).ok_or(Error::UnknownBreakpoint(id))?;
            let life = bp.life.clone();
            // Dying first: a hit from here on is a stray, whatever the hardware says.
            life.kill();
            self.teardown(b, m, id, bp);
            life
        };
        // Outside the books: a running callback never holds up registration.
        life.wait_idle();
        Ok(())
    }

    /// Modify in place: address, length, access, disabled. Parses, re-books
    /// if the pool changes (Linux `modify_bp_slot`), then reprograms every
    /// CPU where the breakpoint is live. If the new shape is refused or does
    /// not fit, the old one stays, untouched.
    ///
    /// Errors: [`Error::Arch`], [`Error::NoSuchPool`], [`Error::NoSlot`],
    /// [`Error::NeedsSingleStep`], [`Error::UnknownBreakpoint`].
    pub fn modify(&self, m: &mut dyn Machine, id: BpId, attr: BpAttr) -> Result<(), Error> {
        let new = self.parse(m, &attr)?;
        let mut guard = self.books.lock();
        let b = &mut *guard;
        let bp = b.bps.get(&id).ok_or(Error::UnknownBreakpoint(id))?;
        let old_booked = bp.booked();
        let new_booked = booked(bp.reserve_on_enable, &attr);
        let old_pool = bp.arch.pool;
        // Book the new shape before giving up the old one: on failure the old
        // booking was never touched.
        if new_booked && (!old_booked || new.pool != old_pool) {
            Self::book(&mut b.slots, bp, new.pool)?;
        }
        if old_booked && (!new_booked || new.pool != old_pool) {
            Self::unbook(&mut b.slots, bp, old_pool);
        }
        let was_on = !bp.attr.disabled;
        let now_on = !attr.disabled;
        let entry = Installed {
            id,
            bp: new,
            task: bp.target.task(),
            life: bp.life.clone(),
            stepping: false,
        };
        let arch = &*self.arch;
        let edit = |st: &mut tasks::TaskState| {
            if let Some(x) = st.bps.iter_mut().find(|x| x.id == id) {
                x.arch = new;
                x.enabled = now_on;
            }
        };
        self.for_live_tables(id, bp, &b.online, m, edit, |m, c, t| {
            match (was_on, now_on) {
                (true, true) => {
                    t.reinstall(arch, m, c, id, new);
                }
                (true, false) => {
                    t.uninstall(arch, m, c, id);
                }
                (false, true) => {
                    t.install(arch, m, c, entry.clone());
                }
                (false, false) => {}
            }
        });
        if let Some(bp) = b.bps.get_mut(&id) {
            bp.attr = attr;
            bp.arch = new;
        }
        Ok(())
    }

    /// Enable: arm it wherever it is live. A reserve-on-enable breakpoint
    /// books its slot now, and may fail with [`Error::NoSlot`] (nothing
    /// changes then). Enabling an enabled breakpoint does nothing.
    pub fn enable(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let attr = self.attr(id)?;
        if !attr.disabled {
            return Ok(());
        }
        self.modify(
            m,
            id,
            BpAttr {
                disabled: false,
                ..attr
            },
        )
    }

    /// Disable: disarm it everywhere. It keeps its slot, unless it was
    /// registered reserve-on-enable. Disabling a disabled breakpoint does nothing.
    pub fn disable(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let attr = self.attr(id)?;
        if attr.disabled {
            return Ok(());
        }
        self.modify(
            m,
            id,
            BpAttr {
                disabled: true,
                ..attr
            },
        )
    }

    /// The current attributes of `id`.
    pub fn attr(&self, id: BpId) -> Result<BpAttr, Error> {
        let b = self.books.lock();
        b.bps
            .get(&id)
            .map(|bp| bp.attr)
            .ok_or(Error::UnknownBreakpoint(id))
    }

    /// Hits delivered for `id` so far.
    pub fn hits(&self, id: BpId) -> Result<u64, Error> {
        let b = self.books.lock();
        b.bps
            .get(&id)
            .map(|bp| bp.life.hits.load(core::sync::atomic::Ordering::Relaxed))
            .ok_or(Error::UnknownBreakpoint(id))
    }

    /// Whether `id` is registered.
    pub fn is_registered(&self, id: BpId) -> bool {
        self.books.lock().bps.contains_key(&id)
    }

    /// The registered ids, ascending.
    pub fn registered(&self) -> Vec<BpId> {
        self.books.lock().bps.keys().copied().collect()
    }

    /// What is installed on `cpu` now, by pool then slot.
    pub fn installed(&self, cpu: CpuId) -> Vec<InstalledBp> {
        match self.tables.get(cpu.idx()) {
            Some(t) => t
                .lock()
                .entries()
                .map(|(pool, slot, e)| InstalledBp {
                    pool,
                    slot,
                    bp: e.id,
                })
                .collect(),
            None => Vec::new(),
        }
    }
}
