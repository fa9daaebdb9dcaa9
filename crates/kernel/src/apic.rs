//! The local APIC (xAPIC, memory-mapped at 0xFEE0_0000): IDs, IPIs, EOI and
//! the timer that drives preemption.

use crate::trap::{VEC_SPURIOUS, VEC_TIMER};

const BASE: usize = 0xfee0_0000;
const ID: usize = 0x20;
const EOI: usize = 0xb0;
const SVR: usize = 0xf0;
const ICR_LO: usize = 0x300;
const ICR_HI: usize = 0x310;
const LVT_TIMER: usize = 0x320;
const TIMER_INIT: usize = 0x380;
const TIMER_DIV: usize = 0x3e0;

fn read(reg: usize) -> u32 {
    // SAFETY: the local APIC page is identity-mapped; registers are 32-bit
    // and read with one aligned volatile load, as the SDM requires.
    unsafe { ((BASE + reg) as *const u32).read_volatile() }
}

fn write(reg: usize, v: u32) {
    // SAFETY: as for read; writes go to this CPU's own APIC.
    unsafe { ((BASE + reg) as *mut u32).write_volatile(v) }
}

/// This CPU's APIC ID.
pub fn id() -> u8 {
    (read(ID) >> 24) as u8
}

/// Software-enable this CPU's APIC with the spurious vector.
pub fn enable() {
    write(SVR, 0x100 | u32::from(VEC_SPURIOUS));
}

/// End of interrupt.
pub fn eoi() {
    write(EOI, 0);
}

fn wait_idle() {
    while read(ICR_LO) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Send a fixed-delivery IPI with `vector` to the CPU with APIC ID `apic`.
pub fn send_ipi(apic: u8, vector: u8) {
    crate::trap::without_irqs(|| {
        wait_idle();
        write(ICR_HI, u32::from(apic) << 24);
        write(ICR_LO, u32::from(vector));
        wait_idle();
    });
}

/// Send an NMI to the CPU with APIC ID `apic`.
pub fn send_nmi(apic: u8) {
    crate::trap::without_irqs(|| {
        wait_idle();
        write(ICR_HI, u32::from(apic) << 24);
        write(ICR_LO, 0x400);
        wait_idle();
    });
}

/// INIT, then two STARTUP IPIs at `page` (the real-mode entry is `page << 12`).
pub fn start_ap(apic: u8, page: u8) {
    wait_idle();
    write(ICR_HI, u32::from(apic) << 24);
    write(ICR_LO, 0x4500); // INIT, assert
    wait_idle();
    crate::delay(10_000);
    for _ in 0..2 {
        write(ICR_HI, u32::from(apic) << 24);
        write(ICR_LO, 0x4600 | u32::from(page)); // STARTUP
        wait_idle();
        crate::delay(200);
    }
}

/// Start the periodic timer with `count` ticks (bus clock / 16).
pub fn start_timer(count: u32) {
    write(TIMER_DIV, 0x3);
    write(LVT_TIMER, u32::from(VEC_TIMER) | (1 << 17));
    write(TIMER_INIT, count);
}

/// Stop the timer.
pub fn stop_timer() {
    write(LVT_TIMER, 1 << 16);
    write(TIMER_INIT, 0);
}
