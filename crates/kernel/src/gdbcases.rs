//! Workloads that real gdb drives (`tests/gdb.rs`), after the kgdb test
//! suite `drivers/misc/kgdbts.c`: the functions and variables gdb names are
//! `#[no_mangle]`, so a gdb script finds them by their plain names.

use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::Request;
use hwbreak_core::{BpAttr, CpuId, Machine, Target, TaskId};

use crate::dr::{self, with_layer, KMachine};
use crate::{fmt, percpu, smp, CaseResult};

/// `hw_write_break_test`: read first (must not stop), then written.
#[no_mangle]
pub static KGDBTS_WRITE_VAR: AtomicU64 = AtomicU64::new(0);
/// `hw_access_break_test`: read (must stop an access watchpoint).
#[no_mangle]
pub static KGDBTS_ACCESS_VAR: AtomicU64 = AtomicU64::new(7);

/// `hw_breakpoint_test`: a hardware breakpoint here must stop.
#[no_mangle]
#[inline(never)]
pub extern "C" fn kgdbts_break_here(x: u64) -> u64 {
    black_box(x.wrapping_add(1).wrapping_mul(5))
}

/// A stop for the gdb tests that need one before they act.
#[no_mangle]
#[inline(never)]
pub extern "C" fn kgdbts_stop_here(x: u64) -> u64 {
    black_box(x ^ 0x5a)
}

/// The kgdbts hardware cases, in the order the gdb script expects them.
pub fn gdb_kgdbts() -> CaseResult {
    black_box(kgdbts_break_here(1));
    let r = KGDBTS_WRITE_VAR.load(Ordering::Relaxed);
    KGDBTS_WRITE_VAR.store(r + 1, Ordering::Relaxed);
    black_box(KGDBTS_ACCESS_VAR.load(Ordering::Relaxed));
    Ok(())
}

/// Every slot of CPU 1 held by the layer (four CPU-bound watches that keep
/// counting): gdb's watchpoint must be refused, and the holders keep their
/// exact counts.
pub fn gdb_full() -> CaseResult {
    static HITS: AtomicU64 = AtomicU64::new(0);
    static VARS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    if percpu::ncpus() < 2 {
        return Err(fmt!("needs 2 CPUs"));
    }
    let mut ids = alloc::vec::Vec::new();
    for v in &VARS {
        let addr = v as *const AtomicU64 as u64;
        let req = Request::new(BpAttr::write(addr, 8).privileged(), Target::Cpu(CpuId(1)))
            .callback(|_| {
                HITS.fetch_add(1, Ordering::Relaxed);
            });
        ids.push(with_layer(|l, m| l.register(m, req)).map_err(|e| fmt!("{e}"))?);
    }
    let writes = || {
        for k in 0..100 {
            VARS.iter().for_each(|v| v.store(k, Ordering::Relaxed));
        }
    };
    smp::run_on(1, writes);
    black_box(kgdbts_stop_here(2)); // gdb: watch -> refused, then continue
    smp::run_on(1, writes);
    for id in ids {
        with_layer(|l, m| l.unregister(m, id)).map_err(|e| fmt!("{e}"))?;
    }
    let n = HITS.load(Ordering::Relaxed);
    if n != 800 {
        return Err(fmt!("the layer's watches counted {n} hits, want 800"));
    }
    Ok(())
}

/// A machine view that parks inside the books: `is_online` (which a wide
/// registration asks for every CPU while it holds the books) spins while
/// `HOLD` is set.
struct Holding(KMachine);

static HOLD: AtomicBool = AtomicBool::new(false);
static HELD: AtomicBool = AtomicBool::new(false);

impl Machine for Holding {
    fn possible_cpus(&self) -> usize {
        self.0.possible_cpus()
    }
    fn is_online(&self, cpu: CpuId) -> bool {
        HELD.store(true, Ordering::SeqCst);
        while HOLD.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        self.0.is_online(cpu)
    }
    fn regs(&mut self, cpu: CpuId) -> &mut dyn hwbreak_core::arch::DebugRegs {
        self.0.regs(cpu)
    }
    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.0.current(cpu)
    }
    fn now(&self) -> u64 {
        self.0.now()
    }
}

/// CPU 1 sits inside a registration holding the books while CPU 0 stops
/// for gdb: the debugger must still answer (its watchpoint refused as busy)
/// and everything must finish once gdb continues.
pub fn gdb_books_held() -> CaseResult {
    if percpu::ncpus() < 2 {
        return Err(fmt!("needs 2 CPUs"));
    }
    HOLD.store(true, Ordering::SeqCst);
    HELD.store(false, Ordering::SeqCst);
    static RESULT: AtomicU64 = AtomicU64::new(0);
    smp::start_on(1, || {
        let mut m = Holding(KMachine::new());
        let addr = &KGDBTS_WRITE_VAR as *const AtomicU64 as u64;
        let req = Request::new(BpAttr::write(addr, 8).privileged(), Target::AllCpus);
        // Preemption off while the books are held, as with_layer does.
        crate::sched::preempt_disable();
        let r = dr::layer().register(&mut m, req);
        crate::sched::preempt_enable();
        m.0.flush();
        if let Ok(id) = r {
            let _ = with_layer(|l, m| l.unregister(m, id));
            RESULT.store(1, Ordering::SeqCst);
        }
    });
    while !HELD.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    black_box(kgdbts_stop_here(3)); // gdb stops here while CPU 1 holds the books
    HOLD.store(false, Ordering::SeqCst);
    smp::wait_on(1);
    if RESULT.load(Ordering::SeqCst) != 1 {
        return Err(fmt!("CPU 1's registration did not complete"));
    }
    // gdb's hardware breakpoint was removed while the books were held: its
    // booking is released at a later timer tick, never waited for.
    let start = crate::sched::TICKS.load(Ordering::Relaxed);
    while with_layer(|l, _| l.debugger().free_everywhere(Pool::Data)) != Ok(4) {
        if crate::sched::TICKS.load(Ordering::Relaxed) - start > 1000 {
            return Err(fmt!(
                "the debugger's slot was not released: {:?} free",
                with_layer(|l, _| l.debugger().free_everywhere(Pool::Data))
            ));
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Runs until gdb has stopped the kernel once after the boot stop (a
/// Ctrl-C from gdb, which CPU 0's timer sees on COM2), then finishes.
pub fn gdb_ctrl_c() -> CaseResult {
    // Stop 1 was the boot stop; gdb's Ctrl-C may come before this starts.
    while crate::gdb::STOPS.load(Ordering::SeqCst) < 2 {
        KGDBTS_WRITE_VAR.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
