//! `hwbreak_core::Machine` on the real debug registers, and the #DB handler.
//!
//! ## Only a CPU writes its own debug registers
//! Each CPU has a [`DrFile`]: the values the layer *wants* in DR0–DR3/DR7
//! and the values its *hardware* holds. The layer, running on any CPU, writes
//! through a [`KMachine`]:
//! - a write to the calling CPU's own file goes to the register at once;
//! - a write to another CPU's file only changes `want` and bumps that file's
//!   request generation (the per-CPU pending state). When the layer call
//!   returns, [`KMachine::flush`] sends each such CPU the `VEC_DR_SYNC` IPI
//!   and waits until it has copied `want` into its registers
//!   ([`apply_pending`]). No CPU ever pokes another CPU's registers.
//!
//! Between the layer's table change and the remote CPU's IPI, the remote
//! hardware may still hold the old breakpoint. A #DB taken in that window
//! sees `want != hw` for that slot: the handler drops the slot's DR6 bit
//! (the hit belongs to a breakpoint the layer no longer has there) before it
//! dispatches, so a hit is never charged to the slot's new owner.
//!
//! ## The #DB handler
//! DR7 is rewritten (cleared, then restored from `want`) on every #DB.
//! This works around a
//! QEMU 7.2 TCG bug: with several data watchpoints, a hit can carry a stale
//! DR6 B-bit of another slot, because QEMU keeps a per-watchpoint "hit" flag
//! that only a re-insert (a DR7 change) clears. The `dr6fix=0` boot option
//! turns the rewrite off so the exact-count test can show the bug.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use alloc::boxed::Box;
use hwbreak_core::arch::{x86_64::X86_64, DebugRegs, Pool, RawStatus, Reg};
use hwbreak_core::layer::Layer;
use hwbreak_core::{CpuId, Machine, TaskId};

use crate::percpu::{self, MAX_CPUS};
use crate::trap::{self, TrapFrame, RFLAGS_RF, RFLAGS_TF};

/// One CPU's debug registers: what the layer wants and what the hardware has.
#[derive(Clone, Copy, Default)]
struct DrFile {
    want: [u64; 4],
    want7: u64,
    hw: [u64; 4],
    hw7: u64,
    /// Bumped on every remote write; the owner publishes it in `DONE` once
    /// its hardware matches `want`.
    requested: u64,
}

/// Bits of DR7 that belong to slot `i`: L/G enables and RW/LEN.
fn dr7_slot_bits(i: usize) -> u64 {
    (0b11 << (2 * i)) | (0b1111 << (16 + 4 * i))
}

static FILES: [spin::Mutex<DrFile>; MAX_CPUS] = [const {
    spin::Mutex::new(DrFile {
        want: [0; 4],
        want7: 0,
        hw: [0; 4],
        hw7: 0,
        requested: 0,
    })
}; MAX_CPUS];
static DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Rewrite DR7 on every #DB (the QEMU DR6 workaround). `dr6fix=0` clears it.
pub static DR6_FIX: AtomicBool = AtomicBool::new(true);

/// Per-CPU #DB statistics.
pub struct DbStats {
    /// #DB exceptions taken.
    pub exceptions: AtomicU64,
    /// Slots dropped because the hardware did not match the layer's table yet.
    pub stale: AtomicU64,
    /// Hits the layer filtered as strays.
    pub strays: AtomicU64,
    /// Single-step traps (DR6.BS) not claimed by the layer.
    pub steps: AtomicU64,
    /// Exceptions whose DR6 reported more than one slot.
    pub multi: AtomicU64,
}

/// #DB statistics per CPU.
pub static STATS: [DbStats; MAX_CPUS] = [const {
    DbStats {
        exceptions: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        strays: AtomicU64::new(0),
        steps: AtomicU64::new(0),
        multi: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Read hardware debug register `n` (0–3, 6, 7) of this CPU.
pub fn hw_read(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a debug register at CPL 0 has no side effect.
    unsafe {
        match n {
            0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
            1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
            2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
            3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
            6 => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)),
            _ => asm!("mov {}, dr7", out(reg) v, options(nomem, nostack)),
        }
    }
    v
}

/// Write hardware debug register `n` (0–3, 6, 7) of this CPU.
fn hw_write(n: u8, v: u64) {
    // SAFETY: CPL 0; the values come from the layer's x86 backend (canonical
    // addresses, valid DR7 encodings) or are the architectural reset values.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
            1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
            2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
            3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
            6 => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack)),
            _ => asm!("mov dr7, {}", in(reg) v, options(nomem, nostack)),
        }
    }
}

/// DR6's value with no condition reported.
const DR6_CLEAR: u64 = 0xffff_0ff0;

/// Copy `want` into the hardware of the calling CPU `cpu` (DR7 last when
/// arming, first when disarming, so no slot is armed with another's
/// address). Publishes the request generation it satisfied.
fn sync_locked(f: &mut DrFile, cpu: usize) {
    let disarm = f.hw7 & !f.want7;
    if disarm != 0 {
        f.hw7 &= f.want7;
        hw_write(7, f.hw7);
    }
    for i in 0..4 {
        if f.hw[i] != f.want[i] {
            hw_write(i as u8, f.want[i]);
            f.hw[i] = f.want[i];
        }
    }
    if f.hw7 != f.want7 {
        hw_write(7, f.want7);
        f.hw7 = f.want7;
    }
    DONE[cpu].store(f.requested, Ordering::Release);
}

/// The `VEC_DR_SYNC` IPI (and anyone waiting for an IPI answer): make this
/// CPU's registers what the layer wants. Must run on `cpu` itself.
pub fn apply_pending(cpu: usize) {
    trap::without_irqs(|| sync_locked(&mut FILES[cpu].lock(), cpu));
}

/// [`apply_pending`] that never waits: from a stopped CPU that may have
/// been interrupted (by the debugger's NMI) while holding its own file's
/// lock. Then the interrupted code syncs the file itself when it resumes.
pub fn try_apply_pending(cpu: usize) {
    if let Some(mut f) = FILES[cpu].try_lock() {
        sync_locked(&mut f, cpu);
    }
}

/// The debugger's master CPU turns its breakpoints off while it serves gdb
/// (gdb reads watched memory; a #DB there would recurse onto the #DB IST
/// stack). [`try_apply_pending`] on the way out restores them.
pub fn debugger_disarm_self(cpu: usize) {
    hw_write(7, 0);
    if let Some(mut f) = FILES[cpu].try_lock() {
        f.hw7 = 0;
    }
}

/// A CPU's pending debug registers as the debugger writes them (the CPU
/// loads them itself when it leaves the debugger).
struct Pending<'a>(&'a mut DrFile);

impl DebugRegs for Pending<'_> {
    fn read(&self, r: Reg) -> u64 {
        match r {
            Reg::Addr(Pool::Data, i) if i < 4 => self.0.want[i as usize],
            Reg::Control => self.0.want7,
            _ => 0,
        }
    }
    fn write(&mut self, r: Reg, v: u64) {
        match r {
            Reg::Addr(Pool::Data, i) if i < 4 => self.0.want[i as usize] = v,
            Reg::Control => self.0.want7 = v,
            _ => return,
        }
        self.0.requested += 1;
    }
}

/// The debugger programs (`Some`) or clears (`None`) register `reg` of
/// stopped CPU `cpu`, which loads it before it resumes. Never waits:
/// fails if that CPU was stopped holding its file's lock.
pub fn debugger_program(
    cpu: usize,
    reg: usize,
    bp: Option<&hwbreak_core::arch::ArchBp>,
) -> Result<(), &'static str> {
    let mut f = FILES
        .get(cpu)
        .ok_or("no such CPU")?
        .try_lock()
        .ok_or("its debug registers are being written by that (stopped) CPU")?;
    let arch = layer().arch();
    match bp {
        Some(bp) => arch.install(&mut Pending(&mut f), reg, bp),
        None => arch.uninstall(&mut Pending(&mut f), Pool::Data, reg),
    }
    Ok(())
}

/// Whether `cpu`'s hardware has caught up with every request made so far.
fn caught_up(cpu: usize) -> bool {
    let want = trap::without_irqs(|| FILES[cpu].lock().requested);
    DONE[cpu].load(Ordering::Acquire) >= want
}

/// The CPU's debug registers as the layer sees them, reached from the CPU
/// `me`. Writes to another CPU are deferred (see the module docs).
struct Proxy {
    cpu: usize,
    /// CPUs written remotely since the last flush (bit per CPU).
    dirty: u32,
}

impl DebugRegs for Proxy {
    fn read(&self, r: Reg) -> u64 {
        // Interrupts off while the file is locked: the sync IPI takes it.
        trap::without_irqs(|| {
            let f = FILES[self.cpu].lock();
            match r {
                Reg::Addr(Pool::Data, i) if i < 4 => f.want[i as usize],
                Reg::Control => f.want7,
                Reg::Status if self.cpu == percpu::this_cpu() => hw_read(6),
                _ => 0,
            }
        })
    }

    fn write(&mut self, r: Reg, v: u64) {
        let cpu = self.cpu;
        let local = trap::without_irqs(|| {
            let local = cpu == percpu::this_cpu();
            let mut f = FILES[cpu].lock();
            match r {
                Reg::Addr(Pool::Data, i) if i < 4 => f.want[i as usize] = v,
                Reg::Control => f.want7 = v,
                Reg::Status if local => hw_write(6, v),
                _ => return local,
            }
            if local {
                sync_locked(&mut f, cpu);
            } else {
                f.requested += 1;
            }
            local
        });
        if !local {
            self.dirty |= 1 << cpu;
        }
    }
}

/// The layer's view of this kernel, for one layer call from the CPU that
/// created it. Call [`KMachine::flush`] (or use [`with_layer`]) after the
/// call so remote CPUs apply what it wrote.
pub struct KMachine {
    regs: Proxy,
    step: Option<(usize, bool)>,
}

impl KMachine {
    /// A machine handle for a layer call made on this CPU.
    pub fn new() -> Self {
        KMachine {
            regs: Proxy { cpu: 0, dirty: 0 },
            step: None,
        }
    }

    /// Send each remotely written CPU the sync IPI and wait until it has
    /// applied the writes. While waiting, this CPU applies its own pending
    /// writes, so two CPUs flushing towards each other never deadlock.
    pub fn flush(&mut self) {
        let me = percpu::this_cpu();
        let dirty = core::mem::take(&mut self.regs.dirty);
        for cpu in (0..MAX_CPUS).filter(|c| dirty & (1 << c) != 0) {
            if !percpu::is_online(cpu) {
                // An offline CPU syncs its file when it comes back.
                continue;
            }
            let apic = percpu::CPUS[cpu].apic_id.load(Ordering::Relaxed);
            crate::apic::send_ipi(apic, trap::VEC_DR_SYNC);
            while !caught_up(cpu) {
                apply_pending(me);
                core::hint::spin_loop();
            }
        }
    }
}

impl Default for KMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine for KMachine {
    fn possible_cpus(&self) -> usize {
        percpu::ncpus()
    }

    fn is_online(&self, cpu: CpuId) -> bool {
        percpu::is_online(cpu.idx())
    }

    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        self.regs.cpu = cpu.idx().min(MAX_CPUS - 1);
        &mut self.regs
    }

    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        let t = percpu::CPUS.get(cpu.idx())?.current.load(Ordering::Acquire);
        (t != 0).then_some(TaskId(t))
    }

    fn now(&self) -> u64 {
        crate::rdtsc()
    }
}

static LAYER: spin::Once<Layer> = spin::Once::new();

/// The layer (x86-64 backend, one event ring of 256 records per CPU).
///
/// Call it through [`with_layer`] from anywhere preemptible: a layer call
/// may hold an install table, and the timer's context switch takes this
/// CPU's table (a spin lock), so a switch in the middle would deadlock.
pub fn layer() -> &'static Layer {
    LAYER.call_once(|| Layer::new(Box::new(X86_64::default()), percpu::ncpus(), 256))
}

/// Run one layer call `f` on this CPU, then flush its remote writes.
pub fn with_layer<R>(f: impl FnOnce(&'static Layer, &mut KMachine) -> R) -> R {
    crate::sched::preempt_disable();
    let mut m = KMachine::new();
    let r = f(layer(), &mut m);
    m.flush();
    crate::sched::preempt_enable();
    r
}

/// The #DB handler: debug registers → layer dispatch → RF/TF on resume.
pub fn on_debug_exception(cpu: usize, f: &mut TrapFrame) {
    let dr6 = hw_read(6);
    let fix = DR6_FIX.load(Ordering::Relaxed);
    STATS[cpu].exceptions.fetch_add(1, Ordering::Relaxed);
    if (dr6 & 0xf).count_ones() > 1 {
        STATS[cpu].multi.fetch_add(1, Ordering::Relaxed);
    }
    // Slots whose hardware does not hold what the layer's table says.
    let stale = {
        let mut file = FILES[cpu].lock();
        let mut stale = 0u64;
        for i in 0..4 {
            if file.want[i] != file.hw[i] || (file.want7 ^ file.hw7) & dr7_slot_bits(i) != 0 {
                stale |= 1 << i;
            }
        }
        if fix {
            // Clear, then (sync_locked) restore: QEMU re-inserts every slot.
            hw_write(7, 0);
            file.hw7 = 0;
        }
        sync_locked(&mut file, cpu);
        stale
    };
    if stale != 0 {
        STATS[cpu]
            .stale
            .fetch_add(u64::from(stale.count_ones()), Ordering::Relaxed);
    }
    let mut hits = dr6 & 0xf & !stale;
    // Registers the debugger claimed are its own: their hits stop here.
    hits &= !crate::gdb::on_debug_hits(cpu, hits, f);
    let mut step_claimed = false;
    if hits != 0 || dr6 & (1 << 14) != 0 {
        let mut m = KMachine::new();
        let raw = RawStatus::X86 {
            dr6: (dr6 & !0xf) | hits,
            ip: f.rip,
        };
        let d = layer().handle_exception(&mut m, CpuId(cpu as u32), &raw);
        m.flush();
        STATS[cpu]
            .strays
            .fetch_add(u64::from(d.strays), Ordering::Relaxed);
        if d.resume_flag {
            f.rflags |= RFLAGS_RF;
        }
        if let Some((c, on)) = m.step {
            if c == cpu {
                step_claimed = true;
                if on {
                    f.rflags |= RFLAGS_TF;
                } else {
                    f.rflags &= !RFLAGS_TF;
                }
            }
        }
    }
    hw_write(6, DR6_CLEAR);
    if dr6 & (1 << 14) != 0 && !step_claimed {
        STATS[cpu].steps.fetch_add(1, Ordering::Relaxed);
        crate::on_single_step(cpu, f);
    }
    if dr6 & 0xf != 0 && hits == 0 && dr6 & (1 << 14) == 0 {
        // Only stale slots fired: an execute breakpoint must still resume.
        f.rflags |= RFLAGS_RF;
    }
}
