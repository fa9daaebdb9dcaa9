//! Slot booking: is there room for this breakpoint on every CPU it may run on?
//!
//! The layer relies on:
//! - `Slots::new(possible_cpus, [inst_slots, data_slots])`
//! - `reserve(pool, target, weight) -> Result<(), Error>` for `Task`, `TaskOnCpu`
//!   and `Cpu` targets. Never allocates for `Cpu` (the debugger path books through it).
//! - `reserve_cpus(pool, online, weight)`: a wide (`AllCpus`) registration books
//!   every online CPU in this one all-or-nothing call, as `Cpu` bookings, before
//!   the fan-out programs any register; `release_cpus(pool, cpus, weight)` gives
//!   them back in one call at unregister. Per CPU, as `reserve(Cpu(c))` /
//!   `release(Cpu(c))`, are only a CPU that comes online (the fan-out's `join`),
//!   one that goes offline (`leave`), and a modify or enable that re-books a wide
//!   breakpoint on its member CPUs.
//! - `release(pool, target, weight)`
//! - `check(pool, target, weight) -> Result<(), Error>`: would `reserve` succeed?
//! - `free(cpu, pool) -> usize`: slots a new CPU-bound breakpoint could still take there.
//! - `free_everywhere(pool, online) -> usize`: min of `free` over CPUs for which `online(cpu)`.
//! - `clear_cpu(cpu)`: drop every CPU-bound booking of that CPU (offline).
//!
//! # The rule
//!
//! Per pool, on every possible CPU `c`:
//!
//! ```text
//! cpu_pinned(c) + max over tasks t of weight(t, c)  <=  slots(pool)
//! ```
//!
//! where `cpu_pinned(c)` is the weight of CPU-bound breakpoints on `c` and
//! `weight(t, c)` is what task `t` holds on `c`: its CPU-independent
//! ([`Target::Task`]) breakpoints plus its [`Target::TaskOnCpu`] breakpoints
//! for `c`. Tasks never compete with each other (only one runs on a CPU at a
//! time), so a task request only has to fit beside the CPU-bound breakpoints,
//! while a CPU-bound request has to fit beside the heaviest task. These are
//! Linux's semantics (`kernel/events/hw_breakpoint.c`).
//!
//! # How it stays cheap
//!
//! Like Linux since 2022 we keep *histograms* (`count[k-1]` = how many owners
//! hold exactly `k` slots), so "the heaviest" is a scan of at most `slots`
//! buckets, never of the owners:
//!
//! - `cpu_pinned_hist`: over CPUs, of `cpu_pinned(c)`. A task request that is
//!   CPU-independent needs only `max_c cpu_pinned(c)`: O(slots), not O(CPUs).
//! - `tsk_all`: over tasks, of their CPU-independent weight `all(t)`.
//! - per CPU `c`, two histograms over the tasks that have `TaskOnCpu` weight on
//!   `c`: `tsk_excl[c]` of their `all(t)` and `tsk_here[c]` of their
//!   `all(t) + on(t, c)`. The task weights on `c` are then exactly
//!   `tsk_all - tsk_excl[c] + tsk_here[c]`.
//!
//! Linux keeps one histogram per CPU for every task that has *any* CPU-bound
//! breakpoint, and re-inserts such a task into every CPU's histogram
//! (O(CPUs)) when its first `TaskOnCpu` breakpoint arrives or any of its
//! CPU-independent ones changes. The correction histograms above make those
//! cases O(number of CPUs the task has `TaskOnCpu` breakpoints on) instead,
//! and a plain CPU-independent task booking (the common case: `perf record -e
//! mem:...` on a process, every inherited thread) is O(1) in tasks and CPUs:
//! one hash-map lookup and two histogram scans of `slots` buckets.
//!
//! `Target::Cpu` bookings touch only per-CPU arrays preallocated in
//! [`Slots::new`], so they never allocate: the debugger path books through
//! them under a try-lock.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use hashbrown::hash_map::Entry;

use crate::arch::Pool;
use crate::error::Error;
use crate::target::{CpuId, Target, TaskId};

// A hash map (hashbrown, the map behind std's HashMap, usable in no_std)
// rather than a BTreeMap for the per-task books: the benchmark target is a
// booking cost that stays flat from 1k to 100k tasks, and a B-tree lookup
// grows with log(tasks) and misses cache at every level.
type TaskMap = hashbrown::HashMap<TaskId, TaskBooks>;

/// What one task holds, per pool (`[inst, data]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct TaskBooks {
    /// Weight of the task's CPU-independent ([`Target::Task`]) breakpoints.
    all: [u32; 2],
    /// Weight of its [`Target::TaskOnCpu`] breakpoints, per CPU.
    // Invariant: no entry is `[0, 0]` (removed when it drops to zero), so
    // books that were returned compare equal to books never touched.
    // Boxed, and None while empty, so the hash-map entry of the common task
    // (CPU-independent breakpoints only) stays 24 bytes: fewer cache and TLB
    // misses when 100k tasks' entries are spread over memory.
    #[allow(clippy::box_collection)] // deliberate: 8 bytes inline, not 24
    pinned: Option<Box<BTreeMap<CpuId, [u32; 2]>>>,
}

impl TaskBooks {
    fn on(&self, cpu: CpuId, p: usize) -> u32 {
        self.pinned
            .as_ref()
            .and_then(|m| m.get(&cpu))
            .map_or(0, |w| w[p])
    }
    fn is_empty(&self) -> bool {
        self.all == [0, 0] && self.pinned.is_none()
    }
    /// The CPUs with `TaskOnCpu` weight, in CPU order, with their weights.
    fn pinned(&self) -> impl Iterator<Item = (&CpuId, &[u32; 2])> {
        self.pinned.iter().flat_map(|m| m.iter())
    }
}

/// The books of one pool. Histograms are `count[k-1]` = owners holding `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolBooks {
    /// Slots the pool has on every CPU.
    slots: usize,
    /// Weight of CPU-bound breakpoints per CPU (Linux `bp_cpuinfo::cpu_pinned`).
    cpu_pinned: Vec<u32>,
    /// Over CPUs, of `cpu_pinned` (Linux `cpu_pinned[type]`).
    cpu_pinned_hist: Vec<u32>,
    /// Over tasks, of their CPU-independent weight `all(t)` (Linux
    /// `tsk_pinned_all`, except that every task is in it).
    tsk_all: Vec<u32>,
    /// Flat `[cpu][k-1]`: over tasks with `TaskOnCpu` weight on the CPU, of
    /// their `all(t)`: the entries of `tsk_all` that are wrong for this CPU.
    tsk_excl: Vec<u32>,
    /// Flat `[cpu][k-1]`: over tasks with `TaskOnCpu` weight on the CPU, of
    /// `all(t) + on(t, cpu)`: the right entries for this CPU.
    tsk_here: Vec<u32>,
}

/// Move one owner in histogram `h` from weight `old` to weight `new`
/// (weight 0 is "not counted"), like Linux `bp_slots_histogram_add`.
fn hist_move(h: &mut [u32], old: u32, new: u32) {
    if old > 0 {
        h[old as usize - 1] -= 1;
    }
    if new > 0 {
        h[new as usize - 1] += 1;
    }
}

/// The highest weight anyone in `h` holds (Linux `bp_slots_histogram_max`).
fn hist_max(h: &[u32]) -> u32 {
    h.iter().rposition(|&n| n > 0).map_or(0, |i| i as u32 + 1)
}

impl PoolBooks {
    fn new(cpus: usize, slots: usize) -> Self {
        PoolBooks {
            slots,
            cpu_pinned: vec![0; cpus],
            cpu_pinned_hist: vec![0; slots],
            tsk_all: vec![0; slots],
            tsk_excl: vec![0; cpus * slots],
            tsk_here: vec![0; cpus * slots],
        }
    }

    fn row(&self, c: usize) -> core::ops::Range<usize> {
        c * self.slots..(c + 1) * self.slots
    }

    /// The heaviest task's weight on `c` (Linux `max_task_bp_pinned`): the
    /// top non-empty bucket of `tsk_all - tsk_excl[c] + tsk_here[c]`.
    fn task_max(&self, c: usize) -> u32 {
        let r = self.row(c);
        let (excl, here) = (&self.tsk_excl[r.clone()], &self.tsk_here[r]);
        for k in (0..self.slots).rev() {
            // Never negative: tsk_excl[c] counts a subset of tsk_all's owners.
            if self.tsk_all[k] - excl[k] + here[k] > 0 {
                return k as u32 + 1;
            }
        }
        0
    }

    /// Add `delta` to `cpu_pinned[c]` (caller checked the bounds).
    fn add_cpu(&mut self, c: usize, delta: i64) {
        let new = (self.cpu_pinned[c] as i64 + delta) as u32;
        self.set_cpu_pinned(c, new);
    }

    /// Set `cpu_pinned[c]` to `new`.
    fn set_cpu_pinned(&mut self, c: usize, new: u32) {
        // Invariant: cpu_pinned_hist is the histogram of cpu_pinned over CPUs;
        // update both together.
        hist_move(&mut self.cpu_pinned_hist, self.cpu_pinned[c], new);
        self.cpu_pinned[c] = new;
    }
}

/// The books: which slots are booked, per pool and CPU. See the module docs.
///
/// ```
/// use hwbreak_core::{arch::Pool, arch::x86_64::NUM_SLOTS, slots::Slots, CpuId, TaskId, Target, Error};
/// let mut s = Slots::new(2, [0, NUM_SLOTS]); // x86: 4 shared slots, no separate inst pool
/// for _ in 0..NUM_SLOTS {
///     s.reserve(Pool::Data, Target::Task(TaskId(1)), 1).unwrap();
/// }
/// // Another task does not compete with task 1 ...
/// s.reserve(Pool::Data, Target::Task(TaskId(2)), 1).unwrap();
/// // ... but a CPU-bound breakpoint must fit beside the heaviest task.
/// assert!(matches!(
///     s.reserve(Pool::Data, Target::Cpu(CpuId(0)), 1),
///     Err(Error::NoSlot { held: 4, task_max: 4, cpu_bound: 0, .. })
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    cpus: usize,
    pools: [PoolBooks; 2],
    tasks: TaskMap,
}

impl Slots {
    /// Empty books for `possible_cpus` CPUs with `slots[pool.idx()]` slots per pool.
    ///
    /// Allocates every per-CPU table now (`O(possible_cpus × slots)`), so that
    /// CPU-bound bookings never allocate later. A pool with 0 slots refuses
    /// every request with [`Error::NoSuchPool`].
    pub fn new(possible_cpus: usize, slots: [usize; 2]) -> Self {
        Slots {
            cpus: possible_cpus,
            pools: [
                PoolBooks::new(possible_cpus, slots[0]),
                PoolBooks::new(possible_cpus, slots[1]),
            ],
            tasks: TaskMap::default(),
        }
    }

    /// Book `weight` slots of `pool` for `target`.
    ///
    /// - [`Target::Task`]: on every CPU, beside that CPU's CPU-bound weight.
    /// - [`Target::TaskOnCpu`]: on that CPU, beside its CPU-bound weight.
    /// - [`Target::Cpu`]: on that CPU, beside the heaviest task there.
    /// - [`Target::AllCpus`]: as `Cpu` on every possible CPU, all or nothing.
    ///   (The layer books wide breakpoints on the *online* CPUs only, with
    ///   [`reserve_cpus`](Self::reserve_cpus); this form is for callers
    ///   without hotplug.)
    ///
    /// On error nothing changed. [`Error::NoSlot`] names the first CPU without
    /// room; for a task request `task_max` is that task's own weight there
    /// (other tasks do not count against it). `weight == 0` books nothing.
    ///
    /// Never allocates for `Cpu` and `AllCpus`; a task's first booking
    /// allocates its entry in the task map.
    pub fn reserve(&mut self, pool: Pool, target: Target, weight: usize) -> Result<(), Error> {
        if !self.validate(pool, target, weight)? {
            return Ok(());
        }
        let p = pool.idx();
        let cpus = self.cpus;
        let pb = &mut self.pools[p];
        match target {
            Target::Cpu(_) | Target::AllCpus => {
                fit(pb, cpus, pool, target, weight, &EMPTY_TASK)?;
                // fit() passed, so the new weights are <= slots and fit in u32.
                let w = weight as i64;
                match target.cpu() {
                    Some(c) => pb.add_cpu(c.idx(), w),
                    None => (0..cpus).for_each(|c| pb.add_cpu(c, w)),
                }
            }
            Target::Task(t) | Target::TaskOnCpu(t, _) => {
                // One hash lookup: check and book through the same entry.
                match self.tasks.entry(t) {
                    Entry::Occupied(mut o) => {
                        fit(pb, cpus, pool, target, weight, o.get())?;
                        add_task(pb, p, o.get_mut(), target, weight as i64);
                    }
                    Entry::Vacant(v) => {
                        fit(pb, cpus, pool, target, weight, &EMPTY_TASK)?;
                        let mut books = TaskBooks::default();
                        add_task(pb, p, &mut books, target, weight as i64);
                        v.insert(books);
                    }
                }
            }
        }
        Ok(())
    }

    /// Book `weight` CPU-bound slots of `pool` on every CPU `c` with
    /// `cpus[c]` (a wide breakpoint on the online CPUs): the same as
    /// [`reserve`](Self::reserve)`(pool, Target::Cpu(c), weight)` for each
    /// such CPU in ascending order, all or nothing. On error nothing changed,
    /// and [`Error::NoSlot`] names the lowest CPU without room. Entries of
    /// `cpus` past the possible CPUs are ignored.
    ///
    /// One validation for the whole set, and when no task books anything
    /// (no task weight on any CPU) and even the fullest CPU has room, no
    /// per-CPU check at all: the cost is one add per CPU. Otherwise each CPU
    /// is checked beside its heaviest task, O(CPUs × slots) as one by one.
    /// Never allocates.
    pub fn reserve_cpus(&mut self, pool: Pool, cpus: &[bool], weight: usize) -> Result<(), Error> {
        if !self.validate(pool, Target::AllCpus, weight)? {
            return Ok(());
        }
        let n = cpus.len().min(self.cpus);
        let pb = &mut self.pools[pool.idx()];
        let room = |held: u32| (held as usize).saturating_add(weight) <= pb.slots;
        // Without task bookings every task_max is 0, and the histogram's top
        // bounds every CPU's CPU-bound weight, online or not.
        let all_fit = self.tasks.is_empty() && room(hist_max(&pb.cpu_pinned_hist));
        if !all_fit {
            for c in (0..n).filter(|&c| cpus[c]) {
                fit(
                    pb,
                    self.cpus,
                    pool,
                    Target::Cpu(CpuId(c as u32)),
                    weight,
                    &EMPTY_TASK,
                )?;
            }
        }
        // Every CPU fits, so every new weight is <= slots and fits in u32.
        let w = weight as i64;
        for c in (0..n).filter(|&c| cpus[c]) {
            pb.add_cpu(c, w);
        }
        Ok(())
    }

    /// Give back what [`reserve`](Self::reserve) booked for the same
    /// `pool`, `target` and `weight`.
    ///
    /// Returns `false`, and changes nothing, if `target` does not hold
    /// `weight` slots of `pool` (a double release, or a release of something
    /// never booked): the books never go negative. Never allocates.
    pub fn release(&mut self, pool: Pool, target: Target, weight: usize) -> bool {
        let p = pool.idx();
        if weight == 0 {
            return true;
        }
        let Ok(w) = u32::try_from(weight) else {
            return false;
        };
        let pb = &mut self.pools[p];
        match target {
            Target::Cpu(c) => {
                // A CPU that does not exist holds 0, and w >= 1.
                if pb.cpu_pinned.get(c.idx()).copied().unwrap_or(0) < w {
                    return false;
                }
                pb.add_cpu(c.idx(), -(w as i64));
            }
            Target::AllCpus => {
                if pb.cpu_pinned.iter().any(|&n| n < w) {
                    return false;
                }
                (0..self.cpus).for_each(|c| pb.add_cpu(c, -(w as i64)));
            }
            Target::Task(t) | Target::TaskOnCpu(t, _) => {
                let Entry::Occupied(mut o) = self.tasks.entry(t) else {
                    return false;
                };
                let books = o.get_mut();
                let held = match target {
                    Target::TaskOnCpu(_, c) => books.on(c, p),
                    _ => books.all[p],
                };
                if held < w {
                    return false;
                }
                add_task(pb, p, books, target, -(w as i64));
                // Invariant: tasks holding nothing have no entry, so returned
                // books compare equal to books never touched.
                if books.is_empty() {
                    o.remove();
                }
            }
        }
        true
    }

    /// Give back `weight` CPU-bound slots of `pool` on each CPU of `cpus`
    /// (what [`reserve_cpus`](Self::reserve_cpus), or `reserve(Cpu(c))` per
    /// CPU, booked): the same as [`release`](Self::release)`(pool,
    /// Target::Cpu(c), weight)` for each, but all or nothing: returns `false`,
    /// and changes nothing, if any of them does not hold `weight` (or does
    /// not exist). Each CPU at most once in `cpus`. Never allocates.
    pub fn release_cpus<I>(&mut self, pool: Pool, cpus: I, weight: usize) -> bool
    where
        I: IntoIterator<Item = CpuId>,
        I::IntoIter: Clone,
    {
        if weight == 0 {
            return true;
        }
        let Ok(w) = u32::try_from(weight) else {
            return false;
        };
        let pb = &mut self.pools[pool.idx()];
        let cpus = cpus.into_iter();
        if cpus
            .clone()
            .any(|c| pb.cpu_pinned.get(c.idx()).copied().unwrap_or(0) < w)
        {
            return false;
        }
        for c in cpus {
            pb.add_cpu(c.idx(), -(w as i64));
        }
        true
    }

    /// Would [`reserve`](Self::reserve) succeed? The same errors, no change.
    pub fn check(&self, pool: Pool, target: Target, weight: usize) -> Result<(), Error> {
        if !self.validate(pool, target, weight)? {
            return Ok(());
        }
        let tb = target.task().and_then(|t| self.tasks.get(&t));
        let pb = &self.pools[pool.idx()];
        fit(
            pb,
            self.cpus,
            pool,
            target,
            weight,
            tb.unwrap_or(&EMPTY_TASK),
        )
    }

    /// The errors that do not depend on the books. `Ok(false)`: weight 0,
    /// nothing to book.
    fn validate(&self, pool: Pool, target: Target, weight: usize) -> Result<bool, Error> {
        if self.pools[pool.idx()].slots == 0 {
            return Err(Error::NoSuchPool { pool });
        }
        if let Some(c) = target.cpu() {
            if c.idx() >= self.cpus {
                return Err(Error::NoSuchCpu {
                    cpu: c,
                    possible: self.cpus,
                });
            }
        }
        Ok(weight > 0)
    }

    /// Free slots of `pool` for a new CPU-bound breakpoint on `cpu`: slots
    /// minus CPU-bound weight minus the heaviest task there. 0 for a CPU that
    /// does not exist or a pool with no slots. O(slots).
    pub fn free(&self, cpu: CpuId, pool: Pool) -> usize {
        let b = &self.pools[pool.idx()];
        if cpu.idx() >= self.cpus {
            return 0;
        }
        let held = (b.cpu_pinned[cpu.idx()] + b.task_max(cpu.idx())) as usize;
        b.slots.saturating_sub(held)
    }

    /// The smallest [`free`](Self::free) over the CPUs for which `online`
    /// says true (the debugger's "is a slot free everywhere?"). If no CPU is
    /// online, the pool's slot count. Never allocates. O(CPUs × slots).
    pub fn free_everywhere(&self, pool: Pool, online: &dyn Fn(CpuId) -> bool) -> usize {
        (0..self.cpus)
            .map(|c| CpuId(c as u32))
            .filter(|&c| online(c))
            .map(|c| self.free(c, pool))
            .min()
            .unwrap_or(self.pools[pool.idx()].slots)
    }

    /// Drop every CPU-bound booking on `cpu`, in both pools (the CPU went
    /// offline). Task bookings stay: they are the tasks' until released.
    /// Never allocates.
    pub fn clear_cpu(&mut self, cpu: CpuId) {
        if cpu.idx() >= self.cpus {
            return;
        }
        for b in &mut self.pools {
            b.set_cpu_pinned(cpu.idx(), 0);
        }
    }

    /// Possible CPUs the books cover.
    pub fn possible_cpus(&self) -> usize {
        self.cpus
    }

    /// Slots `pool` has on every CPU.
    pub fn slots(&self, pool: Pool) -> usize {
        self.pools[pool.idx()].slots
    }

    /// Weight of CPU-bound breakpoints of `pool` on `cpu` (0 for no such CPU).
    pub fn cpu_bound(&self, cpu: CpuId, pool: Pool) -> usize {
        self.pools[pool.idx()]
            .cpu_pinned
            .get(cpu.idx())
            .map_or(0, |&n| n as usize)
    }

    /// The heaviest single task's weight of `pool` on `cpu` (0 for no such CPU).
    pub fn task_max(&self, cpu: CpuId, pool: Pool) -> usize {
        if cpu.idx() >= self.cpus {
            return 0;
        }
        self.pools[pool.idx()].task_max(cpu.idx()) as usize
    }

    /// What `task` holds of `pool` on `cpu`: its CPU-independent weight plus
    /// its `TaskOnCpu` weight there. With `cpu == None`, the CPU-independent
    /// weight alone.
    pub fn task_weight(&self, task: TaskId, cpu: Option<CpuId>, pool: Pool) -> usize {
        let p = pool.idx();
        self.tasks
            .get(&task)
            .map_or(0, |b| (b.all[p] + cpu.map_or(0, |c| b.on(c, p))) as usize)
    }

    /// Tasks holding any booking.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Nothing is booked anywhere (Linux `hw_breakpoint_is_used` negated).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self
                .pools
                .iter()
                .all(|b| b.cpu_pinned_hist.iter().all(|&n| n == 0))
    }

    /// Recompute every histogram from the per-task and per-CPU weights and
    /// compare, and check the rule on every CPU. O(tasks × CPUs): for tests
    /// and debugging. Returns which invariant broke.
    pub fn audit(&self) -> Result<(), &'static str> {
        for (p, b) in self.pools.iter().enumerate() {
            let mut cpu_hist = vec![0; b.slots];
            for &n in &b.cpu_pinned {
                if n as usize > b.slots {
                    return Err("cpu_pinned exceeds the slot count");
                }
                hist_move(&mut cpu_hist, 0, n);
            }
            if cpu_hist != b.cpu_pinned_hist {
                return Err("cpu_pinned_hist is not the histogram of cpu_pinned");
            }
            let mut all = vec![0; b.slots];
            let mut excl = vec![0; b.tsk_excl.len()];
            let mut here = vec![0; b.tsk_here.len()];
            for tb in self.tasks.values() {
                if tb.is_empty()
                    || tb.pinned().any(|(_, w)| *w == [0, 0])
                    || tb.pinned.as_ref().is_some_and(|m| m.is_empty())
                {
                    return Err("an empty task entry was kept");
                }
                if tb
                    .pinned()
                    .any(|(_, on)| (tb.all[p] + on[p]) as usize > b.slots)
                    || tb.all[p] as usize > b.slots
                {
                    return Err("a task holds more than the slot count");
                }
                hist_move(&mut all, 0, tb.all[p]);
                for (c, on) in tb.pinned() {
                    if on[p] > 0 {
                        let r = b.row(c.idx());
                        hist_move(&mut excl[r.clone()], 0, tb.all[p]);
                        hist_move(&mut here[r], 0, tb.all[p] + on[p]);
                    }
                }
            }
            if all != b.tsk_all {
                return Err("tsk_all is not the histogram of CPU-independent task weights");
            }
            if excl != b.tsk_excl || here != b.tsk_here {
                return Err("per-CPU task histograms do not match the TaskOnCpu bookings");
            }
            for c in 0..self.cpus {
                let heaviest = self
                    .tasks
                    .values()
                    .map(|tb| tb.all[p] + tb.on(CpuId(c as u32), p))
                    .max()
                    .unwrap_or(0);
                if heaviest != b.task_max(c) {
                    return Err("task_max disagrees with the heaviest task");
                }
                if (b.cpu_pinned[c] + heaviest) as usize > b.slots {
                    return Err("a CPU holds more than its slots");
                }
            }
        }
        Ok(())
    }
}

/// A task that holds nothing (for tasks not in the map).
const EMPTY_TASK: TaskBooks = TaskBooks {
    all: [0, 0],
    pinned: None,
};

/// Does `weight` more fit for `target` in pool books `b`? `tb` is the task's
/// books (ignored for CPU-bound targets). The caller validated pool and CPU.
fn fit(
    b: &PoolBooks,
    cpus: usize,
    pool: Pool,
    target: Target,
    weight: usize,
    tb: &TaskBooks,
) -> Result<(), Error> {
    let p = pool.idx();
    let total = b.slots;
    let no_slot = |cpu: usize, cpu_bound: u32, task_max: u32| Error::NoSlot {
        pool,
        cpu: CpuId(cpu as u32),
        held: (cpu_bound + task_max) as usize,
        total,
        cpu_bound: cpu_bound as usize,
        task_max: task_max as usize,
    };
    let fits = |held: u32| (held as usize).saturating_add(weight) <= total;
    match target {
        Target::Cpu(c) => {
            let (bound, tmax) = (b.cpu_pinned[c.idx()], b.task_max(c.idx()));
            if !fits(bound + tmax) {
                return Err(no_slot(c.idx(), bound, tmax));
            }
        }
        Target::AllCpus => {
            for c in 0..cpus {
                let (bound, tmax) = (b.cpu_pinned[c], b.task_max(c));
                if !fits(bound + tmax) {
                    return Err(no_slot(c, bound, tmax));
                }
            }
        }
        Target::TaskOnCpu(_, c) => {
            let own = tb.all[p] + tb.on(c, p);
            let bound = b.cpu_pinned[c.idx()];
            if !fits(bound + own) {
                return Err(no_slot(c.idx(), bound, own));
            }
        }
        Target::Task(_) => {
            let all = tb.all[p];
            // Fast path (Linux max_bp_pinned_slots): where the task has no
            // TaskOnCpu weight it holds all(t) on every CPU, so the worst
            // such CPU is the one with the most CPU-bound weight, read off
            // the histogram without visiting CPUs. The CPUs where it does
            // have TaskOnCpu weight are checked one by one; together this is
            // the exact max over all CPUs (a CPU in both sets is only worse
            // in the second).
            let mut worst = hist_max(&b.cpu_pinned_hist) + all;
            for (c, on) in tb.pinned() {
                worst = worst.max(b.cpu_pinned[c.idx()] + all + on[p]);
            }
            if !fits(worst) {
                // Error path only: name the first CPU without room. One
                // exists, because `worst` is the exact max over CPUs.
                let first = (0..cpus)
                    .map(|c| (c, b.cpu_pinned[c], all + tb.on(CpuId(c as u32), p)))
                    .find(|&(_, bound, own)| !fits(bound + own));
                let (c, bound, own) = first.unwrap_or((0, worst - all, all));
                return Err(no_slot(c, bound, own));
            }
        }
    }
    Ok(())
}

/// Add `delta` to the task's weight for `target` (`Task` or `TaskOnCpu`).
fn add_task(b: &mut PoolBooks, p: usize, books: &mut TaskBooks, target: Target, delta: i64) {
    match target {
        Target::TaskOnCpu(_, c) => add_task_on(b, p, books, c, delta),
        _ => add_task_all(b, p, books, delta),
    }
}

/// Add `delta` to task `books`' CPU-independent weight in pool `p`.
fn add_task_all(b: &mut PoolBooks, p: usize, books: &mut TaskBooks, delta: i64) {
    let old = books.all[p];
    let new = (old as i64 + delta) as u32;
    // Invariant: tsk_all is the histogram over tasks of all(t).
    hist_move(&mut b.tsk_all, old, new);
    // Invariant: for each CPU c where the task has TaskOnCpu weight,
    // tsk_excl[c] holds all(t) and tsk_here[c] holds all(t) + on(t, c);
    // only those CPUs change (O(|CPUs the task is pinned on|), usually 0).
    for (c, on) in books.pinned() {
        if on[p] > 0 {
            let r = b.row(c.idx());
            hist_move(&mut b.tsk_excl[r.clone()], old, new);
            hist_move(&mut b.tsk_here[r], old + on[p], new + on[p]);
        }
    }
    books.all[p] = new;
}

/// Add `delta` to task `books`' weight on CPU `c` in pool `p`.
fn add_task_on(b: &mut PoolBooks, p: usize, books: &mut TaskBooks, c: CpuId, delta: i64) {
    let all = books.all[p];
    let map = books.pinned.get_or_insert_with(Default::default);
    let entry = map.entry(c).or_insert([0, 0]);
    let old = entry[p];
    let new = (old as i64 + delta) as u32;
    let r = b.row(c.idx());
    // Invariant: a task is in tsk_excl[c] (at all(t)) and tsk_here[c] (at
    // all(t) + on(t, c)) exactly while on(t, c) > 0, so that
    // tsk_all - tsk_excl[c] + tsk_here[c] counts it once, at its weight on c.
    match (old > 0, new > 0) {
        (false, true) => hist_move(&mut b.tsk_excl[r.clone()], 0, all),
        (true, false) => hist_move(&mut b.tsk_excl[r.clone()], all, 0),
        _ => {}
    }
    let at = |on: u32| if on > 0 { all + on } else { 0 };
    hist_move(&mut b.tsk_here[r], at(old), at(new));
    entry[p] = new;
    // Invariant: no `[0, 0]` entries (see TaskBooks::on).
    if *entry == [0, 0] {
        map.remove(&c);
        if map.is_empty() {
            books.pinned = None;
        }
    }
}
