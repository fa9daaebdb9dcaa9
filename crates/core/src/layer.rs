//! The public API: register / modify / enable /
//! disable / unregister, context switch and hotplug hooks, the exception
//! entry point, and the debugger (kgdb) try-path.
//!
//! Every mutating call follows the same order, as Linux does:
//! **parse** with the arch first (a clear error before anything is booked),
//! then **book** in [`crate::slots`], then **install** through
//! [`crate::install`]. A call that fails changes nothing.
//!
//! ## Locks
//! - `books`: one global lock over the slot books, the registered set and the
//!   task tables. Every API call except dispatch and the debugger path takes it
//!   (blocking). The debugger path only ever `try_lock`s it.
//! - one lock per CPU over its install table. Taken *after* the books (never
//!   the other way round) by registration, and alone by dispatch. Dispatch thus
//!   never waits for the books, so a hit can never deadlock against a
//!   registration stuck in a slow register write on another CPU.
//!
//! ## Targets
//! - [`Target::Cpu`] and [`Target::AllCpus`] breakpoints are installed at once
//!   on their CPUs (wide ones all-or-nothing through [`crate::fanout`]).
//! - [`Target::Task`] and [`Target::TaskOnCpu`] breakpoints are installed while
//!   the task runs: [`Layer::switch_task`] moves them, and a task already running
//!   at registration time ([`Machine::current`]) gets them at once.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use crate::arch::{Arch, ArchBp, Pool, RawStatus};
use crate::attr::BpAttr;
use crate::dispatch::Shared;
use crate::error::Error;
use crate::events::{Events, Record};
use crate::fanout::{Domain, Fanout};
use crate::install::{CpuTable, Installed};
use crate::machine::Machine;
use crate::slots::Slots;
use crate::target::{CpuId, Target, TaskId};
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

/// One registered breakpoint, as the books know it.
struct Bp {
    attr: BpAttr,
    arch: ArchBp,
    target: Target,
    reserve_on_enable: bool,
    shared: Arc<Shared>,
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
    /// Task → its breakpoints (both task target kinds).
    tasks: BTreeMap<TaskId, Vec<BpId>>,
    /// Task → the CPU the layer installed it on (kept by `switch_task`).
    running: BTreeMap<TaskId, CpuId>,
    /// The layer's view of which CPUs are online (hotplug hooks, wide
    /// registration). The debugger path has no machine to ask.
    online: Vec<bool>,
    /// Debugger-held slots per CPU per pool (preallocated: the debugger path
    /// never allocates).
    dbg: Vec<[u16; 2]>,
    /// Outstanding [`DbgSlot`]s per pool.
    dbg_held: [usize; 2],
}

/// Where a wide breakpoint sits on one CPU: the slot commit used, so
/// unregister can clear it without searching. Only a hint: modify or enable
/// may move the breakpoint, and a stale hint falls back to a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hint(Option<(Pool, u8)>);

/// The wide-breakpoint domain for [`Fanout`]: every online CPU.
/// prepare = book one CPU-bound slot there; commit = program the register.
struct Wide<'a> {
    slots: &'a mut Slots,
    tables: &'a [Mutex<CpuTable>],
    arch: &'a dyn Arch,
    m: &'a mut dyn Machine,
    pool: Pool,
    id: BpId,
    /// Book a slot (false for a disabled reserve-on-enable breakpoint).
    book: bool,
    /// What to install on commit (`None` while disabled).
    install: Option<Installed>,
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

/// A registered breakpoint in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpSnapshot {
    /// Its id.
    pub id: BpId,
    /// Its attributes.
    pub attr: BpAttr,
    /// What the arch made of them.
    pub arch: ArchBp,
    /// Its target.
    pub target: Target,
    /// Registered "reserve on enable".
    pub reserve_on_enable: bool,
    /// Its cookie.
    pub cookie: u64,
    /// Wide breakpoints: the CPUs it is live on, ascending.
    pub members: Vec<CpuId>,
}

/// The layer's full state at one instant: books, registered set, install
/// tables, task placement, debugger holdings and the next id.
///
/// Included: everything a later call can observe. The next id is included
/// because a failed registration must not consume one. Excluded: hit
/// counters and the event buffer (runtime output, not state a request
/// changes) and callbacks (not comparable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The slot books.
    pub slots: Slots,
    /// The next id to be handed out.
    pub next_id: u32,
    /// Every registered breakpoint, by id.
    pub bps: Vec<BpSnapshot>,
    /// Per CPU: `(pool, slot, id, programming)` of each occupied register.
    pub installed: Vec<Vec<(Pool, usize, BpId, ArchBp)>>,
    /// Per CPU: the task whose breakpoints are installed there.
    pub cpu_task: Vec<Option<TaskId>>,
    /// The layer's view of online CPUs.
    pub online: Vec<bool>,
    /// Per CPU: debugger-held slots per pool.
    pub debugger: Vec<[u16; 2]>,
}

/// The hardware-breakpoint layer. `Sync`: share it between threads (CPUs).
pub struct Layer {
    arch: Box<dyn Arch>,
    possible: usize,
    books: Mutex<Books>,
    tables: Vec<Mutex<CpuTable>>,
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
                tasks: BTreeMap::new(),
                running: BTreeMap::new(),
                online: alloc::vec![true; possible_cpus],
                dbg: alloc::vec![[0; 2]; possible_cpus],
                dbg_held: [0; 2],
            }),
            tables: (0..possible_cpus)
                .map(|_| Mutex::new(CpuTable::new(limit)))
                .collect(),
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

    pub(crate) fn table(&self, cpu: CpuId) -> Option<&Mutex<CpuTable>> {
        self.tables.get(cpu.idx())
    }

    pub(crate) fn push_event(&self, cpu: CpuId, rec: Record) {
        self.events.push(cpu, rec);
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

    /// Parse with the arch, and check the pool exists: no booking yet.
    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, Error> {
        let bp = self.arch.parse(attr)?;
        if self.arch.slots(bp.pool) == 0 {
            return Err(Error::NoSuchPool { pool: bp.pool });
        }
        Ok(bp)
    }

    /// Register a breakpoint: parse, book, install. On error nothing changed.
    ///
    /// Errors: [`Error::Arch`] (the arch refused the attributes),
    /// [`Error::NoSuchPool`], [`Error::NoSuchCpu`], [`Error::CpuOffline`]
    /// (a [`Target::Cpu`] that is offline), [`Error::NoSlot`].
    pub fn register(&self, m: &mut dyn Machine, req: Request) -> Result<BpId, Error> {
        let target = req.target;
        if let Some(cpu) = target.cpu() {
            self.check_cpu(cpu)?;
            if matches!(target, Target::Cpu(_)) && !m.is_online(cpu) {
                return Err(Error::CpuOffline(cpu));
            }
        }
        let arch_bp = self.parse(&req.attr)?;
        let pool = arch_bp.pool;
        let book = booked(req.reserve_on_enable, &req.attr);

        let mut guard = self.books.lock();
        let b = &mut *guard;
        let id = BpId(b.next_id);
        let shared = Arc::new(Shared::new(id, req.cookie, req.callback));
        let entry = (!req.attr.disabled).then(|| Installed {
            id,
            bp: arch_bp,
            task: target.task(),
            shared: shared.clone(),
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
        if let Some(t) = target.task() {
            b.tasks.entry(t).or_default().push(id);
        }
        b.bps.insert(
            id,
            Bp {
                attr: req.attr,
                arch: arch_bp,
                target,
                reserve_on_enable: req.reserve_on_enable,
                shared: shared.clone(),
                wide,
            },
        );
        if let Some(e) = entry {
            match target {
                Target::Cpu(c) => {
                    self.tables[c.idx()].lock().install(&*self.arch, m, c, e);
                }
                Target::Task(t) | Target::TaskOnCpu(t, _) => {
                    if let Some(c) = self.locate(b, m, t) {
                        if target.cpu().is_none_or_eq(c) {
                            self.tables[c.idx()].lock().install(&*self.arch, m, c, e);
                        }
                    }
                }
                Target::AllCpus => {} // committed by the fan-out
            }
        }
        // Only now may a hit be delivered: never from a half-done request.
        shared.set_live();
        Ok(id)
    }

    /// Where task `t` runs now. The layer's own record first (kept by
    /// `switch_task`); else ask the machine, and adopt what it says, so a
    /// task already running when its first breakpoint is registered gets it
    /// at once.
    fn locate(&self, b: &mut Books, m: &mut dyn Machine, t: TaskId) -> Option<CpuId> {
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

    /// Call `f` for every CPU where `bp` is (or, if enabled, would be) installed now.
    fn for_live_cpus(&self, b: &Books, bp: &Bp, mut f: impl FnMut(CpuId)) {
        match bp.target {
            Target::Cpu(c) => f(c),
            Target::AllCpus => {
                if let Some(w) = &bp.wide {
                    for (c, _) in w.members() {
                        f(*c);
                    }
                }
            }
            Target::Task(t) => {
                if let Some(&c) = b.running.get(&t) {
                    f(c)
                }
            }
            Target::TaskOnCpu(t, c) => {
                if b.running.get(&t) == Some(&c) {
                    f(c)
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
    fn teardown(&self, b: &mut Books, m: &mut dyn Machine, id: BpId, mut bp: Bp) {
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
            self.for_live_cpus(b, &bp, |c| {
                self.tables[c.idx()].lock().uninstall(&*self.arch, m, c, id);
            });
            if bp.booked() {
                release(&mut b.slots, bp.arch.pool, bp.target);
            }
        }
        if let Some(t) = bp.target.task() {
            if let Some(list) = b.tasks.get_mut(&t) {
                list.retain(|&x| x != id);
                if list.is_empty() {
                    b.tasks.remove(&t);
                }
            }
        }
    }

    /// Unregister, synchronously: once this returns, no callback for `id`
    /// runs, even if another CPU is dispatching a hit of it right now.
    ///
    /// Must not be called from a callback (it waits for callbacks to finish).
    /// Errors: [`Error::UnknownBreakpoint`].
    pub fn unregister(&self, m: &mut dyn Machine, id: BpId) -> Result<(), Error> {
        let shared = {
            let mut guard = self.books.lock();
            let b = &mut *guard;
            let bp = b.bps.remove(&id).ok_or(Error::UnknownBreakpoint(id))?;
            let shared = bp.shared.clone();
            // Dying first: a hit from here on is a stray, whatever the hardware says.
            shared.kill();
            self.teardown(b, m, id, bp);
            shared
        };
        // Outside the books: a running callback never holds up registration.
        shared.wait_idle();
        Ok(())
    }

    /// Modify in place: address, length, access, disabled. Parses, re-books
    /// if the pool changes (Linux `modify_bp_slot`), then reprograms every
    /// CPU where the breakpoint is live. If the new shape is refused or does
    /// not fit, the old one stays, untouched.
    ///
    /// Errors: [`Error::Arch`], [`Error::NoSuchPool`], [`Error::NoSlot`],
    /// [`Error::UnknownBreakpoint`].
    pub fn modify(&self, m: &mut dyn Machine, id: BpId, attr: BpAttr) -> Result<(), Error> {
        let new = self.parse(&attr)?;
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
            shared: bp.shared.clone(),
            stepping: false,
        };
        self.for_live_cpus(b, bp, |c| {
            let mut t = self.tables[c.idx()].lock();
            match (was_on, now_on) {
                (true, true) => {
                    t.reinstall(&*self.arch, m, c, id, new);
                }
                (true, false) => {
                    t.uninstall(&*self.arch, m, c, id);
                }
                (false, true) => {
                    t.install(&*self.arch, m, c, entry.clone());
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
            .map(|bp| bp.shared.hits.load(core::sync::atomic::Ordering::Relaxed))
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

    /// What is installed on `cpu` now: `(pool, slot, id)`.
    pub fn installed(&self, cpu: CpuId) -> Vec<(Pool, usize, BpId)> {
        match self.table(cpu) {
            Some(t) => t.lock().entries().map(|(p, s, e)| (p, s, e.id)).collect(),
            None => Vec::new(),
        }
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
                                shared: bp.shared.clone(),
                                stepping: false,
                            },
                        );
                    }
                }
            }
        }
        if let Some(p) = prev {
            self.push_event(
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
            self.push_event(
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

    /// `cpu` came online (the machine marks it online first). It gets every
    /// wide breakpoint, each through the fan-out's `join`. If one does not
    /// fit, the others are still installed and the first failure is returned
    /// with its id: that breakpoint stays registered on the other CPUs only.
    /// An unknown CPU is ignored.
    pub fn cpu_online(&self, m: &mut dyn Machine, cpu: CpuId) -> Result<(), (BpId, Error)> {
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
                    shared: bp.shared.clone(),
                    stepping: false,
                }),
            };
            if let Err(e) = w.join(&mut d, cpu) {
                first.get_or_insert((id, e));
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
                    bp.shared.kill();
                    dead.push(bp.shared.clone());
                    self.teardown(b, m, id, bp);
                }
            }
            {
                let mut t = self.tables[cpu.idx()].lock();
                t.uninstall_tasks(&*self.arch, m, cpu);
                if let Some(task) = t.task.take() {
                    if b.running.get(&task) == Some(&cpu) {
                        b.running.remove(&task);
                    }
                }
                if t.has_pending() {
                    t.pending.iter_mut().for_each(|p| *p = None);
                    m.set_single_step(cpu, false);
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

    /// Debug exception on `cpu`: decode, filter strays, step over, deliver.
    /// Takes only `cpu`'s install table lock; never the books.
    pub fn handle_exception(&self, m: &mut dyn Machine, cpu: CpuId, raw: &RawStatus) -> Dispatched {
        crate::dispatch::handle(self, m, cpu, raw)
    }

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

    /// Debugger path: book one slot of `pool` on every online CPU, never
    /// blocking, never allocating, never preempting. [`Error::Busy`] at once
    /// when the books are locked; [`Error::NoSlot`] when some CPU has no
    /// free slot (nothing is booked then); [`Error::NoSuchPool`].
    pub fn try_reserve(&self, pool: Pool) -> Result<DbgSlot, Error> {
        if self.arch.slots(pool) == 0 {
            return Err(Error::NoSuchPool { pool });
        }
        let mut b = self.books.try_lock().ok_or(Error::Busy)?;
        Self::dbg_reserve_locked(&mut b, pool)?;
        Ok(DbgSlot { pool })
    }

    /// Debugger path: give it back, never blocking. [`Error::Busy`] when the
    /// books (or an install table) are locked (keep the slot and try again);
    /// [`Error::NotReserved`] when no debugger slot of that pool is held;
    /// [`Error::StillClaimed`] while the debugger still programs as many
    /// registers on some CPU as it holds slots there.
    pub fn try_release(&self, slot: DbgSlot) -> Result<(), Error> {
        let pool = slot.pool;
        let mut b = self.books.try_lock().ok_or(Error::Busy)?;
        if b.dbg_held[pool.idx()] == 0 {
            return Err(Error::NotReserved { pool });
        }
        // Every claimed register must stay covered by a booking, or the
        // layer could book a breakpoint it has no free register for.
        for (c, held) in b.dbg.iter().enumerate() {
            if held[pool.idx()] > 0 {
                let t = self.tables[c].try_lock().ok_or(Error::Busy)?;
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

    /// Debugger path: pick the register the debugger will program itself on
    /// `cpu`, from the slots it booked ([`Layer::try_reserve`] or a
    /// [`DebugSession`]). Returns the register index of `pool`; the layer
    /// never installs there until [`Layer::try_unclaim`]. Never blocks, never
    /// allocates: [`Error::Busy`] if the books or `cpu`'s install table are
    /// locked; [`Error::NotReserved`] if the debugger has no booked slot left
    /// to claim on `cpu`; [`Error::NoSuchCpu`].
    ///
    /// A hit in a claimed register is the debugger's: the layer's dispatch
    /// counts it as a stray (empty slot) and delivers nothing.
    pub fn try_claim(&self, cpu: CpuId, pool: Pool) -> Result<usize, Error> {
        self.check_cpu(cpu)?;
        let b = self.books.try_lock().ok_or(Error::Busy)?;
        let mut t = self.tables[cpu.idx()].try_lock().ok_or(Error::Busy)?;
        if usize::from(b.dbg[cpu.idx()][pool.idx()]) <= t.claims(pool) {
            return Err(Error::NotReserved { pool });
        }
        // Booked means free: the layer installs at most (slots - debugger
        // bookings) breakpoints on this CPU, so an unclaimed register is free.
        t.claim(pool).ok_or(Error::NotReserved { pool })
    }

    /// Debugger path: give back a register taken with [`Layer::try_claim`]
    /// (after clearing it). Never blocks: [`Error::Busy`] if `cpu`'s install
    /// table is locked; [`Error::NotReserved`] if it was not claimed.
    pub fn try_unclaim(&self, cpu: CpuId, pool: Pool, slot: usize) -> Result<(), Error> {
        self.check_cpu(cpu)?;
        let mut t = self.tables[cpu.idx()].try_lock().ok_or(Error::Busy)?;
        if t.unclaim(pool, slot) {
            Ok(())
        } else {
            Err(Error::NotReserved { pool })
        }
    }

    /// Debugger path: how many slots of `pool` are free on *every* online
    /// CPU right now. [`Error::Busy`] when the books are locked.
    pub fn free_everywhere(&self, pool: Pool) -> Result<usize, Error> {
        let b = self.books.try_lock().ok_or(Error::Busy)?;
        Ok(b.slots
            .free_everywhere(pool, &|c| b.online.get(c.idx()).copied().unwrap_or(false)))
    }

    /// Debugger path: start a session that books every slot free on every
    /// online CPU, in every pool. [`Error::Busy`] when the books are locked.
    /// Never allocates, never preempts: slots held by others stay theirs.
    pub fn debug_session(&self) -> Result<DebugSession<'_>, Error> {
        let mut b = self.books.try_lock().ok_or(Error::Busy)?;
        let mut held = [0usize; 2];
        for pool in Pool::ALL {
            if self.arch.slots(pool) == 0 {
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
        Ok(DebugSession { layer: self, held })
    }

    /// The layer's full state, for comparing before/after (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        let b = self.books.lock();
        let bps = b
            .bps
            .iter()
            .map(|(&id, bp)| {
                let mut members: Vec<CpuId> = bp
                    .wide
                    .as_ref()
                    .map(|w| w.members().map(|(c, _)| *c).collect())
                    .unwrap_or_default();
                members.sort();
                BpSnapshot {
                    id,
                    attr: bp.attr,
                    arch: bp.arch,
                    target: bp.target,
                    reserve_on_enable: bp.reserve_on_enable,
                    cookie: bp.shared.cookie,
                    members,
                }
            })
            .collect();
        let mut installed = Vec::with_capacity(self.possible);
        let mut cpu_task = Vec::with_capacity(self.possible);
        for t in &self.tables {
            let t = t.lock();
            installed.push(t.entries().map(|(p, s, e)| (p, s, e.id, e.bp)).collect());
            cpu_task.push(t.task);
        }
        Snapshot {
            slots: b.slots.clone(),
            next_id: b.next_id,
            bps,
            installed,
            cpu_task,
            online: b.online.clone(),
            debugger: b.dbg.clone(),
        }
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
    /// [`Layer::try_claim`]).
    pub fn claim(&self, cpu: CpuId, pool: Pool) -> Result<usize, Error> {
        self.layer.try_claim(cpu, pool)
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
                let _ = Layer::dbg_release_locked(b, pool);
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
