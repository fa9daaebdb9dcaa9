//! Hits in time order across rings.
//!
//! Each CPU has its own ring, so a drain can return a hit of one CPU after a
//! later hit of another, and a hit stamped just before a drain may reach its
//! ring just after it. [`TimeOrder`] holds drained hits back until every
//! ring has been drained [`HOLD_NS`] past their stamp, then hands them out
//! sorted by time, as [`Extended`] records.
//!
//! Allocation-light: a [`Batch`] keeps every hit's slices (stack,
//! registers) in one arena, and both the batch and the held buffers are
//! reused from drain to drain.
//!
//! ```no_run
//! use hwbreak_linux::order::{Batch, TimeOrder, HOLD_NS};
//! # fn f(w: &hwbreak_linux::watch::Watcher) {
//! let (mut batch, mut order) = (Batch::default(), TimeOrder::default());
//! batch.collect(w, false);
//! let cutoff = batch.at_ns.saturating_sub(HOLD_NS);
//! order.hold(&mut batch);
//! let ready = order.pending(cutoff);
//! for i in 0..ready.ready {
//!     let hit = ready.get(i); // an hwbreak_core::events::Extended, in time order
//!     println!("{} {:#x}", hit.sample.time, hit.sample.ip);
//! }
//! let n = ready.ready;
//! order.release(n);
//! # }
//! ```

use crate::symbols::MapEntry;
use crate::watch::{TaskRecord, Watcher};
use hwbreak_core::events::{Extended, Extension, Sample};

/// How long before a drain's start a hit must be stamped to be certain to
/// be in that drain. A hit is stamped in the trap and written to its ring
/// microseconds later; the margin also covers a vCPU paused in between.
pub const HOLD_NS: u64 = 10_000_000;

/// `CLOCK_MONOTONIC` now, in ns (the clock hits are stamped with).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A drained hit without its slices: they are in the arena of the
/// [`Batch`] or [`TimeOrder`] that holds it, the stack at
/// `arena[stack_at..regs_at]` and the registers at `arena[regs_at..end]`.
#[derive(Debug, Clone, Copy)]
struct Held {
    sample: Sample,
    pid: u32,
    stack_truncated: bool,
    regs_mask: u64,
    stack_at: usize,
    regs_at: usize,
    end: usize,
}

impl Held {
    fn extended<'a>(&self, arena: &'a [u64]) -> Extended<'a> {
        Extended {
            sample: self.sample,
            ext: Extension {
                pid: self.pid,
                stack: &arena[self.stack_at..self.regs_at],
                stack_truncated: self.stack_truncated,
                regs: &arena[self.regs_at..self.end],
                regs_mask: self.regs_mask,
                ..Extension::NONE
            },
        }
    }

    fn shifted(self, by: isize) -> Held {
        let at = |i: usize| i.wrapping_add_signed(by);
        Held {
            stack_at: at(self.stack_at),
            regs_at: at(self.regs_at),
            end: at(self.end),
            ..self
        }
    }
}

/// Hits drained from the rings at one time.
#[derive(Debug, Default)]
pub struct Batch {
    hits: Vec<Held>,
    arena: Vec<u64>,
    /// `CLOCK_MONOTONIC` when the drain began: every hit stamped
    /// [`HOLD_NS`] before this was in a ring by then.
    pub at_ns: u64,
    /// Executable mappings the kernel reported in this drain
    /// (`PERF_RECORD_MMAP2`) for the watched process: a library may be gone
    /// from `/proc` by the time its hits are handled.
    pub mmaps: Vec<MapEntry>,
}

impl Batch {
    /// Empty the buffers, then take every pending hit from `w` (with their
    /// registers if `with_regs`).
    pub fn collect(&mut self, w: &Watcher, with_regs: bool) {
        self.hits.clear();
        self.arena.clear();
        self.at_ns = monotonic_ns();
        self.mmaps.clear();
        let (hits, arena, mmaps) = (&mut self.hits, &mut self.arena, &mut self.mmaps);
        let pid = w.pid();
        let task = |t: TaskRecord<'_>| {
            if let TaskRecord::Mmap {
                pid: p,
                start,
                end,
                offset,
                path,
            } = t
            {
                if pid.is_none_or(|pid| pid as u32 == p) {
                    mmaps.push(MapEntry::executable(start, end, offset, path));
                }
            }
        };
        w.drain_with_tasks(
            |e| {
                let stack_at = arena.len();
                arena.extend_from_slice(e.ext.stack);
                let regs_at = arena.len();
                if with_regs {
                    arena.extend_from_slice(e.ext.regs);
                }
                hits.push(Held {
                    sample: e.sample,
                    pid: e.ext.pid,
                    stack_truncated: e.ext.stack_truncated,
                    regs_mask: e.ext.regs_mask,
                    stack_at,
                    regs_at,
                    end: arena.len(),
                });
            },
            task,
        );
    }

    /// Hits in this batch.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether the batch holds no hit.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
}

/// Hits held back for time order (see the module docs).
#[derive(Debug, Default)]
pub struct TimeOrder {
    /// Held hits from `held.hits[start]` on; those before were released.
    held: Batch,
    start: usize,
}

/// The held hits, sorted by time: the first [`Pending::ready`] can be
/// handled now; the rest came later and are only to be looked at (a later
/// hit can tell what an earlier one wrote).
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    hits: &'a [Held],
    arena: &'a [u64],
    /// How many, from the first, are stamped at or before the cutoff.
    pub ready: usize,
}

impl<'a> Pending<'a> {
    /// Held hits, ready or not.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether no hit is held.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Hit `i` (in time order).
    pub fn get(&self, i: usize) -> Extended<'a> {
        self.hits[i].extended(self.arena)
    }
}

impl TimeOrder {
    /// Take the hits of `b` into the held hits; `b` is left empty with its
    /// buffers kept for the next drain (its `mmaps` are left for the caller).
    pub fn hold(&mut self, b: &mut Batch) {
        let held = &mut self.held;
        let base = held.arena.len() as isize;
        held.arena.extend_from_slice(&b.arena);
        held.hits.extend(b.hits.drain(..).map(|h| h.shifted(base)));
        b.arena.clear();
    }

    /// The held hits in time order, those stamped at or before `cutoff`
    /// (`u64::MAX`: all) ready.
    pub fn pending(&mut self, cutoff: u64) -> Pending<'_> {
        let held = &mut self.held.hits[self.start..];
        // The kept part is sorted and the new hits follow it: the stable
        // sort finds the two runs and merges them.
        held.sort_by_key(|h| h.sample.time);
        let ready = held.partition_point(|h| h.sample.time <= cutoff);
        Pending {
            hits: &self.held.hits[self.start..],
            arena: &self.held.arena,
            ready,
        }
    }

    /// The first `n` pending hits were handled: drop them.
    pub fn release(&mut self, n: usize) {
        let held = &mut self.held;
        let k = (self.start + n).min(held.hits.len());
        // Handled hits stay in the buffers until they are most of them:
        // moving the rest to the front at every drain cost more than the
        // handling (per-hit copies at 300k hits/s).
        if k == held.hits.len() {
            held.hits.clear();
            held.arena.clear();
            self.start = 0;
        } else if k > 4096 && k * 2 > held.hits.len() {
            // Sorting by time reorders hits, not their arena slices: keep
            // the arena from the lowest slice still held.
            let base = held.hits[k..].iter().map(|h| h.stack_at).min().unwrap_or(0);
            held.hits.drain(..k);
            for h in &mut held.hits {
                *h = h.shifted(-(base as isize));
            }
            held.arena.drain(..base);
            self.start = 0;
        } else {
            self.start = k;
        }
    }

    /// Hits held, not yet released.
    pub fn len(&self) -> usize {
        self.held.hits.len() - self.start
    }

    /// Whether every held hit was released.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwbreak_core::{BpId, CpuId, TaskId};

    fn held(b: &mut Batch, time: u64, stack: &[u64]) {
        let stack_at = b.arena.len();
        b.arena.extend_from_slice(stack);
        let end = b.arena.len();
        b.hits.push(Held {
            sample: Sample {
                bp: BpId(0),
                cpu: CpuId(0),
                task: Some(TaskId(1)),
                ip: time,
                addr: 0,
                time,
            },
            pid: 1,
            stack_truncated: false,
            regs_mask: 0,
            stack_at,
            regs_at: end,
            end,
        });
    }

    #[test]
    fn hits_of_two_drains_come_out_in_time_order_with_their_own_stacks() {
        let (mut b, mut order) = (Batch::default(), TimeOrder::default());
        held(&mut b, 30, &[3, 3]);
        held(&mut b, 10, &[1]);
        order.hold(&mut b);
        assert!(b.is_empty());
        let p = order.pending(20);
        assert_eq!((p.len(), p.ready), (2, 1));
        assert_eq!(p.get(0).ext.stack, &[1]);
        order.release(1);
        held(&mut b, 20, &[2, 2, 2]);
        order.hold(&mut b);
        let p = order.pending(u64::MAX);
        let got: Vec<(u64, Vec<u64>)> = (0..p.ready)
            .map(|i| (p.get(i).sample.time, p.get(i).ext.stack.to_vec()))
            .collect();
        assert_eq!(got, [(20, vec![2, 2, 2]), (30, vec![3, 3])]);
        order.release(2);
        assert!(order.is_empty());
    }

    #[test]
    fn compaction_keeps_every_held_hit_with_its_slices() {
        let (mut b, mut order) = (Batch::default(), TimeOrder::default());
        for t in 0..10_000u64 {
            held(&mut b, t, &[t; 2]);
        }
        order.hold(&mut b);
        let ready = order.pending(8_999).ready;
        assert_eq!(ready, 9_000);
        order.release(ready);
        held(&mut b, 10_000, &[7]);
        order.hold(&mut b);
        let p = order.pending(u64::MAX);
        assert_eq!(p.len(), 1_001);
        for i in 0..p.len() {
            let h = p.get(i);
            let want: &[u64] = if h.sample.time == 10_000 {
                &[7]
            } else {
                &[h.sample.time; 2]
            };
            assert_eq!(h.ext.stack, want);
        }
    }
}
