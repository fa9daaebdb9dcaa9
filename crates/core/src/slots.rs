//! Slot booking (owner: the slots work). See the issue for the semantics.
//!
//! API contract the layer relies on (keep these signatures):
//! - `Slots::new(possible_cpus, [inst_slots, data_slots])`
//! - `reserve(pool, target, weight) -> Result<(), Error>` for `Task`, `TaskOnCpu`,
//!   `Cpu` targets (wide requests are booked per CPU as `Target::Cpu` by the fan-out).
//!   Never allocates (the debugger path books through it).
//! - `release(pool, target, weight)`
//! - `check(pool, target, weight) -> Result<(), Error>`: would `reserve` succeed?
//! - `free(cpu, pool) -> usize`: slots a new CPU-bound breakpoint could still take there.
//! - `free_everywhere(pool, online) -> usize`: min of `free` over CPUs for which `online(cpu)`.
//! - `clear_cpu(cpu)`: drop every CPU-bound booking of that CPU (offline).
use crate::arch::Pool;
use crate::error::Error;
use crate::target::{CpuId, Target};

/// The books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    _todo: (),
}

impl Slots {
    /// Empty books for `possible_cpus` CPUs with `slots[pool.idx()]` slots per pool.
    pub fn new(possible_cpus: usize, slots: [usize; 2]) -> Self {
        let _ = (possible_cpus, slots);
        todo!("slots work")
    }
    /// Book `weight` slots.
    pub fn reserve(&mut self, pool: Pool, target: Target, weight: usize) -> Result<(), Error> {
        let _ = (pool, target, weight);
        todo!("slots work")
    }
    /// Give back what `reserve` booked.
    pub fn release(&mut self, pool: Pool, target: Target, weight: usize) {
        let _ = (pool, target, weight);
        todo!("slots work")
    }
    /// Would `reserve` succeed?
    pub fn check(&self, pool: Pool, target: Target, weight: usize) -> Result<(), Error> {
        let _ = (pool, target, weight);
        todo!("slots work")
    }
    /// Free slots for a new CPU-bound breakpoint on `cpu`.
    pub fn free(&self, cpu: CpuId, pool: Pool) -> usize {
        let _ = (cpu, pool);
        todo!("slots work")
    }
    /// The smallest `free` over online CPUs.
    pub fn free_everywhere(&self, pool: Pool, online: &dyn Fn(CpuId) -> bool) -> usize {
        let _ = (pool, online);
        todo!("slots work")
    }
    /// Drop every CPU-bound booking on `cpu`.
    pub fn clear_cpu(&mut self, cpu: CpuId) {
        let _ = cpu;
        todo!("slots work")
    }
}
