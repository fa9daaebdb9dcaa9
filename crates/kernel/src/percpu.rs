//! Per-CPU data: which CPU am I, is it online, what runs there.
//!
//! A CPU finds its index from its local APIC ID (QEMU numbers APIC IDs as
//! given in the MADT; we map them to dense indices `0..ncpus`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Most CPUs this kernel supports (the issue asks for 1 to 8).
pub const MAX_CPUS: usize = 8;

/// One CPU's shared state. Fields are atomics: other CPUs read them.
pub struct PerCpu {
    /// Its local APIC ID.
    pub apic_id: AtomicU8,
    /// Online: takes interrupts, runs tasks, carries wide breakpoints.
    pub online: AtomicBool,
    /// The task running there (`0` = idle).
    pub current: AtomicU64,
}

/// Every CPU's state, indexed by CPU index.
pub static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        apic_id: AtomicU8::new(0),
        online: AtomicBool::new(false),
        current: AtomicU64::new(0),
    }
}; MAX_CPUS];

static APIC_TO_CPU: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];
static NCPUS: AtomicUsize = AtomicUsize::new(1);

/// How many CPUs the firmware described (possible CPUs).
pub fn ncpus() -> usize {
    NCPUS.load(Ordering::Relaxed)
}

/// Record the CPUs the firmware described: `ids[i]` is CPU `i`'s APIC ID.
pub fn set_cpus(ids: &[u8]) {
    for (i, &id) in ids.iter().enumerate().take(MAX_CPUS) {
        CPUS[i].apic_id.store(id, Ordering::Relaxed);
        APIC_TO_CPU[id as usize].store(i as u8, Ordering::Relaxed);
    }
    NCPUS.store(ids.len().clamp(1, MAX_CPUS), Ordering::Release);
}

/// The index of the CPU running this code.
pub fn this_cpu() -> usize {
    APIC_TO_CPU[crate::apic::id() as usize].load(Ordering::Relaxed) as usize
}

/// Whether CPU `cpu` is online.
pub fn is_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && CPUS[cpu].online.load(Ordering::Acquire)
}
