//! CPUs: the ACPI MADT lists them, the BSP starts each AP with
//! INIT-SIPI-SIPI, and every CPU can be asked to run a closure
//! ([`run_on`]) through an IPI.

use core::sync::atomic::{AtomicBool, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::percpu::{self, CPUS, MAX_CPUS};
use crate::trap::{self, TrapFrame};

/// Vector of the "run your work item" IPI.
pub const VEC_WORK: u8 = 0xf1;

type Work = Box<dyn FnOnce() + Send>;

static WORK: [spin::Mutex<Option<Work>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];
static WORK_DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(true) }; MAX_CPUS];

fn read_u32(addr: u64) -> u32 {
    // SAFETY: ACPI tables lie in identity-mapped low memory below 4 GiB; the
    // firmware wrote them before we started and nobody changes them.
    unsafe { (addr as *const u32).read_unaligned() }
}

fn read_u8(addr: u64) -> u8 {
    // SAFETY: as for read_u32.
    unsafe { (addr as *const u8).read() }
}

fn find_rsdp() -> Option<u64> {
    let info = crate::boot::start_info();
    // hvm_start_info.rsdp_paddr (version >= 1), else the BIOS area scan.
    // SAFETY: QEMU's start_info block is identity-mapped low memory.
    let from_info = unsafe { ((info + 32) as *const u64).read_unaligned() };
    if from_info != 0 {
        return Some(from_info);
    }
    (0xe0000u64..0x100000)
        .step_by(16)
        // SAFETY: the BIOS read-only area is identity-mapped and readable.
        .find(|&a| unsafe { (a as *const [u8; 8]).read() } == *b"RSD PTR ")
}

/// APIC IDs of the enabled processors in the MADT, BSP first.
pub fn discover() -> Vec<u8> {
    let bsp = crate::apic::id();
    let mut ids = alloc::vec![bsp];
    let Some(rsdp) = find_rsdp() else {
        return ids;
    };
    let rsdt = u64::from(read_u32(rsdp + 16));
    let n = (read_u32(rsdt + 4) as u64 - 36) / 4;
    for i in 0..n {
        let sdt = u64::from(read_u32(rsdt + 36 + 4 * i));
        if read_u32(sdt) != u32::from_le_bytes(*b"APIC") {
            continue;
        }
        let end = sdt + u64::from(read_u32(sdt + 4));
        let mut p = sdt + 44;
        while p + 2 <= end {
            let (kind, len) = (read_u8(p), u64::from(read_u8(p + 1)));
            if len == 0 {
                break;
            }
            if kind == 0 && read_u32(p + 4) & 1 != 0 {
                let id = read_u8(p + 3);
                if id != bsp && ids.len() < MAX_CPUS {
                    ids.push(id);
                }
            }
            p += len;
        }
    }
    ids
}

/// Start every AP the MADT listed; returns when all are online.
pub fn start_aps() {
    for pc in CPUS.iter().take(percpu::ncpus()).skip(1) {
        let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; 64 * 1024].into_boxed_slice());
        let top = (stack.as_ptr() as u64 + stack.len() as u64) & !15;
        crate::boot::prepare_ap(top);
        let apic = pc.apic_id.load(Ordering::Relaxed);
        crate::apic::start_ap(apic, (crate::boot::TRAMPOLINE >> 12) as u8);
        while !pc.online.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        while !crate::boot::ap_took_stack() {
            core::hint::spin_loop();
        }
    }
}

/// Bring up this CPU's tables, APIC and debug registers, then mark it online.
pub fn cpu_setup(cpu: usize) {
    trap::init_cpu(cpu);
    crate::apic::enable();
    crate::dr::apply_pending(cpu);
    CPUS[cpu].online.store(true, Ordering::Release);
}

/// An AP's life after the trampoline.
#[no_mangle]
extern "C" fn kernel_ap_main() -> ! {
    let cpu = percpu::this_cpu();
    cpu_setup(cpu);
    crate::sched::start_timer();
    idle_loop(cpu)
}

/// Wait for work items, run them, forever.
pub fn idle_loop(cpu: usize) -> ! {
    loop {
        trap::disable_irqs();
        let w = WORK[cpu].lock().take();
        match w {
            Some(w) => {
                trap::enable_irqs();
                w();
                crate::sched::home_busy(cpu, false);
                WORK_DONE[cpu].store(true, Ordering::Release);
            }
            // SAFETY: `sti; hlt` sleeps until the next interrupt; the STI
            // shadow means an IPI that arrives after the check still wakes us.
            None => unsafe { core::arch::asm!("sti; hlt", options(nomem, nostack)) },
        }
    }
}

/// Run `f` on CPU `cpu` (not the caller's) and wait for it to finish.
pub fn run_on(cpu: usize, f: impl FnOnce() + Send + 'static) {
    start_on(cpu, f);
    wait_on(cpu);
}

/// Start `f` on CPU `cpu` without waiting; pair with [`wait_on`].
pub fn start_on(cpu: usize, f: impl FnOnce() + Send + 'static) {
    assert!(cpu != percpu::this_cpu(), "run_on targets another CPU");
    wait_on(cpu);
    WORK_DONE[cpu].store(false, Ordering::Release);
    *WORK[cpu].lock() = Some(Box::new(f));
    // The work loop shares the CPU with tasks until the item is done.
    crate::sched::home_busy(cpu, true);
    crate::apic::send_ipi(CPUS[cpu].apic_id.load(Ordering::Relaxed), VEC_WORK);
}

/// Wait until CPU `cpu` finished its work item.
pub fn wait_on(cpu: usize) {
    while !WORK_DONE[cpu].load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// Asks a CPU's home context to park (set by [`cpu_down`], cleared by [`cpu_up`]).
static PARK: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Take CPU `cpu` offline (not the caller's, not CPU 0): its task leaves,
/// the layer's `cpu_offline` runs while it can still answer IPIs (its wide
/// breakpoints leave, its CPU-bound ones are unregistered), then it parks
/// with interrupts off, marked offline.
pub fn cpu_down(cpu: usize) {
    assert!(cpu != 0 && cpu != percpu::this_cpu(), "cpu_down({cpu})");
    crate::sched::take_tasks(cpu, false);
    run_on(cpu, || {}); // returns once the home context runs there: no task does
    crate::dr::with_layer(|l, m| l.cpu_offline(m, hwbreak_core::CpuId(cpu as u32)));
    PARK[cpu].store(true, Ordering::SeqCst);
    start_on(cpu, move || park(cpu));
    while CPUS[cpu].online.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// Bring a parked CPU back: it comes online, gets every wide breakpoint
/// (the layer's `cpu_online`), then takes tasks again. A wide breakpoint
/// that does not fit there is returned (it stays on the other CPUs).
pub fn cpu_up(cpu: usize) -> Result<(), (hwbreak_core::BpId, hwbreak_core::Error)> {
    PARK[cpu].store(false, Ordering::SeqCst);
    wait_on(cpu);
    let r = crate::dr::with_layer(|l, m| l.cpu_online(m, hwbreak_core::CpuId(cpu as u32)))
        .map_err(|e| (e.bp, e.error));
    if let Err((id, e)) = &r {
        crate::kprintln!(
            "cpu{cpu} online: wide breakpoint {} does not fit there: {e}",
            id.0
        );
    }
    crate::sched::take_tasks(cpu, true);
    r
}

/// A parked CPU: offline, interrupts and timer off, still applying the
/// debug-register writes meant for it (there should be none) until woken.
fn park(cpu: usize) {
    trap::disable_irqs();
    crate::apic::stop_timer();
    CPUS[cpu].online.store(false, Ordering::SeqCst);
    while PARK[cpu].load(Ordering::SeqCst) {
        crate::dr::apply_pending(cpu);
        core::hint::spin_loop();
    }
    crate::dr::apply_pending(cpu);
    CPUS[cpu].online.store(true, Ordering::SeqCst);
    crate::sched::start_timer();
    trap::enable_irqs();
}

/// An NMI: the debugger stopping this CPU, else unexpected.
pub fn on_nmi(cpu: usize, f: &mut TrapFrame) {
    if !crate::gdb::on_nmi(cpu, f) {
        crate::serial::print_force(format_args!("cpu{cpu}: unexpected NMI\n"));
    }
}

/// The stop IPI: not used yet.
pub fn on_stop_ipi(_cpu: usize, _f: &mut TrapFrame) {}
