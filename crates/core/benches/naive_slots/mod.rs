//! A deliberately simple slot-booking model: a flat list of bookings and a
//! max-scan over every booking on every CPU, O(bookings × CPUs) per request.
//! It is how the rule reads in words, with no histograms to get wrong, so it
//! is both the benchmark's peer (`benches/slots.rs`) and the oracle the
//! property test in `tests/kunit.rs` compares `core::slots::Slots` against.
#![allow(dead_code)]

use hwbreak_core::arch::Pool;
use hwbreak_core::{CpuId, Error, Target, TaskId};

/// The naive books.
#[derive(Debug, Clone)]
pub struct Naive {
    cpus: usize,
    slots: [usize; 2],
    /// One entry per (pool, target), `AllCpus` spelled out as `Cpu` per CPU.
    books: Vec<(Pool, Target, usize)>,
}

impl Naive {
    /// Empty books.
    pub fn new(cpus: usize, slots: [usize; 2]) -> Self {
        Naive {
            cpus,
            slots,
            books: Vec::new(),
        }
    }

    /// Weight of CPU-bound breakpoints on `c`.
    pub fn cpu_bound(&self, c: CpuId, pool: Pool) -> usize {
        self.books
            .iter()
            .filter(|(p, t, _)| *p == pool && *t == Target::Cpu(c))
            .map(|b| b.2)
            .sum()
    }

    /// What task `t` holds on `c`.
    pub fn task_on(&self, t: TaskId, c: CpuId, pool: Pool) -> usize {
        self.books
            .iter()
            .filter(|(p, tg, _)| {
                *p == pool && (*tg == Target::Task(t) || *tg == Target::TaskOnCpu(t, c))
            })
            .map(|b| b.2)
            .sum()
    }

    /// The heaviest task on `c`.
    pub fn task_max(&self, c: CpuId, pool: Pool) -> usize {
        self.books
            .iter()
            .filter_map(|(_, t, _)| t.task())
            .map(|t| self.task_on(t, c, pool))
            .max()
            .unwrap_or(0)
    }

    /// Free slots for a new CPU-bound breakpoint on `c`.
    pub fn free(&self, c: CpuId, pool: Pool) -> usize {
        if c.idx() >= self.cpus {
            return 0;
        }
        self.slots[pool.idx()].saturating_sub(self.cpu_bound(c, pool) + self.task_max(c, pool))
    }

    /// Book, or say why not (the same errors as `Slots::reserve`).
    pub fn reserve(&mut self, pool: Pool, target: Target, w: usize) -> Result<(), Error> {
        let total = self.slots[pool.idx()];
        if total == 0 {
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
        if w == 0 {
            return Ok(());
        }
        let cpus: Vec<CpuId> = match target {
            Target::Cpu(c) | Target::TaskOnCpu(_, c) => vec![c],
            Target::Task(_) | Target::AllCpus => (0..self.cpus as u32).map(CpuId).collect(),
        };
        for &c in &cpus {
            let cpu_bound = self.cpu_bound(c, pool);
            let task_max = match target.task() {
                Some(t) => self.task_on(t, c, pool),
                None => self.task_max(c, pool),
            };
            if cpu_bound + task_max + w > total {
                return Err(Error::NoSlot {
                    pool,
                    cpu: c,
                    held: cpu_bound + task_max,
                    total,
                    cpu_bound,
                    task_max,
                });
            }
        }
        match target {
            Target::AllCpus => cpus.iter().for_each(|&c| self.add(pool, Target::Cpu(c), w)),
            _ => self.add(pool, target, w),
        }
        Ok(())
    }

    /// Give back; false (and no change) if not held.
    pub fn release(&mut self, pool: Pool, target: Target, w: usize) -> bool {
        if w == 0 {
            return true;
        }
        let keys: Vec<Target> = match target {
            Target::AllCpus => (0..self.cpus as u32)
                .map(|c| Target::Cpu(CpuId(c)))
                .collect(),
            t => vec![t],
        };
        let held = |k: &Target| {
            self.books
                .iter()
                .find(|b| b.0 == pool && b.1 == *k)
                .map_or(0, |b| b.2)
        };
        if keys.iter().any(|k| held(k) < w) {
            return false;
        }
        for k in keys {
            self.add(pool, k, 0);
            let i = self
                .books
                .iter()
                .position(|b| b.0 == pool && b.1 == k)
                .unwrap();
            self.books[i].2 -= w;
            if self.books[i].2 == 0 {
                self.books.swap_remove(i);
            }
        }
        true
    }

    /// Benchmark setup: append a booking without checking it or looking for
    /// an existing entry (the caller loads each target once, validly), so
    /// loading 100k tasks is not itself quadratic.
    pub fn load(&mut self, pool: Pool, target: Target, w: usize) {
        self.books.push((pool, target, w));
    }

    /// Drop every CPU-bound booking on `c`.
    pub fn clear_cpu(&mut self, c: CpuId) {
        self.books.retain(|b| b.1 != Target::Cpu(c));
    }

    fn add(&mut self, pool: Pool, target: Target, w: usize) {
        match self.books.iter_mut().find(|b| b.0 == pool && b.1 == target) {
            Some(b) => b.2 += w,
            None => self.books.push((pool, target, w)),
        }
    }
}
