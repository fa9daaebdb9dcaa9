//! The scheduler's hooks. Stage 4 (tasks, migration) is not built yet: the
//! timer is not started and every CPU runs the code it was given.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::percpu::MAX_CPUS;
use crate::trap::TrapFrame;

static PREEMPT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Forbid preemption on this CPU (nests).
pub fn preempt_disable() {
    crate::trap::without_irqs(|| {
        PREEMPT[crate::percpu::this_cpu()].fetch_add(1, Ordering::Relaxed);
    });
}

/// Allow preemption again.
pub fn preempt_enable() {
    crate::trap::without_irqs(|| {
        PREEMPT[crate::percpu::this_cpu()].fetch_sub(1, Ordering::Relaxed);
    });
}

/// The local APIC timer fired on `cpu`.
pub fn on_timer(_cpu: usize, _f: &mut TrapFrame) {}
