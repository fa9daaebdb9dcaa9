//! # hwbreak-kernel: the layer in a real kernel
//!
//! A small x86-64 SMP kernel that boots under `qemu-system-x86_64 -kernel`
//! (PVH entry) and hosts `hwbreak-core` on the CPUs' real debug registers,
//! as emulated independently by QEMU's TCG. It exists to test the layer
//! where it belongs: real #DB exceptions, IPIs and several CPUs.
//!
//! - [`boot`]: PVH entry → long mode; the AP trampoline.
//! - [`trap`]: GDT/TSS (IST stacks for #DB, NMI, #DF), IDT, entry stubs.
//! - [`dr`]: `hwbreak_core::Machine` over DR0–DR7; the #DB handler. Only a
//!   CPU writes its own debug registers (IPI + per-CPU pending state).
//! - [`smp`]: MADT, INIT-SIPI-SIPI, work items run on another CPU.
//! - [`cases`]: the in-kernel test cases the host tests select by name.
//!
//! The kernel command line (`-append`) selects what runs:
//! `cases=NAME,NAME,...` (default: every case), `dr6fix=0` (leave the QEMU
//! DR6 workaround off). It prints `PASS name` / `FAIL name: why` per case and
//! `DONE passed=P failed=F`, then exits QEMU through `isa-debug-exit` with
//! code 0 when every case passed, 1 otherwise (QEMU reports `2*code+1`); a
//! panic exits with 2, an unexpected exception with 3.
//!
//! It owns the machine side: boot, CPUs, tasks, interrupts and the gdb
//! stub. It must not book slots or decide where a breakpoint goes (the
//! layer does), write another CPU's debug registers, or call the layer from
//! preemptible code outside `dr::with_layer` (the timer's context switch
//! would deadlock on this CPU's install table).
//!
//! This crate builds only with `--features image` and the kernel's
//! RUSTFLAGS; `tests/` does that (see `tests/common/mod.rs`).
#![no_std]
#![no_main]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod apic;
pub mod boot;
pub mod cases;
pub mod dr;
pub mod gdb;
pub mod gdbcases;
pub mod kunit;
pub mod percpu;
pub mod port;
pub mod rt;
pub mod sched;
pub mod serial;
pub mod smp;
pub mod stress;
pub mod trap;

use core::sync::atomic::Ordering;

use alloc::string::String;

use trap::TrapFrame;

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter; no memory is touched.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Wait roughly `us` microseconds (port 0x80 writes take about 1 µs on real
/// hardware; under QEMU far less, which the INIT-SIPI protocol tolerates).
pub fn delay(us: u32) {
    for _ in 0..us {
        port::outb(0x80, 0);
    }
}

/// The kernel command line QEMU passed (`-append`).
pub fn cmdline() -> &'static str {
    let info = boot::start_info();
    if info == 0 {
        return "";
    }
    // SAFETY: hvm_start_info.cmdline_paddr (offset 24) points at a
    // NUL-terminated string in identity-mapped low memory, or is 0.
    unsafe {
        let p = ((info + 24) as *const u64).read_unaligned() as *const u8;
        if p.is_null() {
            return "";
        }
        let mut n = 0;
        while p.add(n).read_volatile() != 0 {
            n += 1;
        }
        core::str::from_utf8(core::slice::from_raw_parts(p, n)).unwrap_or("")
    }
}

/// The value of `key=value` on the command line.
pub fn cmdline_opt(key: &str) -> Option<&'static str> {
    cmdline()
        .split_ascii_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The BSP's life after the PVH entry.
#[no_mangle]
extern "C" fn kernel_bsp_main() -> ! {
    serial::init(serial::COM1);
    serial::init(serial::COM2);
    rt::init_heap();
    mask_pic();
    trap::init_idt();
    let ids = smp::discover();
    percpu::set_cpus(&ids);
    smp::cpu_setup(0);
    if cmdline_opt("dr6fix") == Some("0") {
        dr::DR6_FIX.store(false, Ordering::Relaxed);
    }
    kprintln!(
        "hwbreak-kernel: {} CPUs, cmdline \"{}\"",
        ids.len(),
        cmdline()
    );
    smp::start_aps();
    kprintln!("hwbreak-kernel: all {} CPUs online", percpu::ncpus());
    let _ = dr::layer();
    if cmdline_opt("gdb") == Some("1") {
        gdb::init();
        kprintln!("hwbreak-kernel: waiting for gdb on COM2");
        // SAFETY: a breakpoint trap; the stub takes it as the first stop.
        unsafe { core::arch::asm!("int3") };
    }
    // The test driver shares CPU 0 with tasks.
    sched::home_busy(0, true);
    sched::start_timer();
    trap::enable_irqs();
    let failed = cases::run(cmdline_opt("cases"));
    port::qemu_exit(u32::from(failed > 0))
}

/// Silence the legacy 8259 PICs: remap them to 0xf8..0xff (their IRQ 0
/// would otherwise arrive as vector 8, #DF) and mask every line. Only a
/// spurious IRQ 7 can still come, as vector 0xff, which is ignored.
fn mask_pic() {
    use port::outb;
    for (cmd, data, base, cascade) in [(0x20, 0x21, 0xf8, 4), (0xa0, 0xa1, 0xf8, 2)] {
        outb(cmd, 0x11);
        outb(data, base);
        outb(data, cascade);
        outb(data, 0x01);
        outb(data, 0xff);
    }
}

/// An exception nobody handles: print the frame and leave QEMU with code 3.
pub fn fatal_trap(cpu: usize, vector: u8, f: &TrapFrame) -> ! {
    trap::disable_irqs();
    serial::print_force(format_args!(
        "FATAL cpu{cpu}: exception {vector} error {:#x} at rip {:#x} rsp {:#x} cr2 {:#x}\n",
        f.error,
        f.rip,
        f.rsp,
        cr2()
    ));
    port::qemu_exit(3)
}

fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

/// `int3`: gdb's software breakpoints (or the boot-time stop for gdb).
pub fn on_breakpoint(cpu: usize, f: &mut TrapFrame) {
    if !gdb::on_int3(cpu, f) {
        fatal_trap(cpu, 3, f)
    }
}

/// A single-step trap the layer did not ask for: gdb's, else a case's.
pub fn on_single_step(cpu: usize, f: &mut TrapFrame) {
    if !gdb::on_step(cpu, f) {
        cases::on_step(f);
    }
}

/// Format into a `String` (for failure messages).
#[macro_export]
macro_rules! fmt {
    ($($t:tt)*) => { alloc::format!($($t)*) };
}

/// A case's result: `Err` says what went wrong.
pub type CaseResult = Result<(), String>;
