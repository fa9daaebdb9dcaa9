//! A randomized stress run across CPUs: worker tasks (migrating between
//! CPUs under the preemptive scheduler) register, modify, enable/disable and
//! unregister CPU, wide, task and task-on-CPU breakpoints and hit them, while
//! CPU 0 takes CPUs offline and online and opens debugger sessions. It checks
//! the three invariants of the issue:
//! 1. no CPU ever has more installed than it has slots (the install table,
//!    and at the end the hardware, which must be empty again);
//! 2. no hit ever comes from an unregistered or half-registered breakpoint
//!    (each callback checks its registration's generation);
//! 3. no callback comes after unregister returns (the generation moves on
//!    when unregister returns).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use hwbreak_core::arch::Pool;
use hwbreak_core::layer::Request;
use hwbreak_core::{BpAttr, BpId, CpuId, Target, TaskId};

use crate::dr::{self, with_layer};
use crate::{fmt, kprintln, percpu, sched, smp, CaseResult};

const WORKERS: usize = 8;
const PER_WORKER: usize = 6;
const HANDLES: usize = WORKERS * PER_WORKER;

/// One breakpoint handle a worker owns.
struct Handle {
    /// The registered id, valid while `state == LIVE`.
    id: AtomicU64,
    state: AtomicU8,
    /// Bumped when a registration fails or an unregister returns: a
    /// callback of an older generation is a violation.
    gen: AtomicU64,
}

const FREE: u8 = 0;
const REGISTERING: u8 = 1;
const LIVE: u8 = 2;

static H: [Handle; HANDLES] = [const {
    Handle {
        id: AtomicU64::new(0),
        state: AtomicU8::new(FREE),
        gen: AtomicU64::new(0),
    }
}; HANDLES];

/// Variables the workers hit: each on its own line.
#[repr(C, align(64))]
struct Line(AtomicU64, [u64; 7]);
static LINES: [Line; 8] = [const { Line(AtomicU64::new(0), [0; 7]) }; 8];

static OPS: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);
static BAD_HIT: AtomicU64 = AtomicU64::new(0);
static OVERFULL: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
static TASK_IDS: [AtomicU64; WORKERS] = [const { AtomicU64::new(0) }; WORKERS];

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn line(i: u64) -> u64 {
    &LINES[(i % 8) as usize].0 as *const AtomicU64 as u64
}

fn register(k: usize, r: &mut Rng, me: u64) {
    let h = &H[k];
    let gen = h.gen.load(Ordering::SeqCst);
    h.state.store(REGISTERING, Ordering::SeqCst);
    let n = percpu::ncpus() as u64;
    let cpu = CpuId(r.below(n) as u32);
    let other = TASK_IDS[r.below(WORKERS as u64) as usize].load(Ordering::SeqCst);
    let target = match r.below(6) {
        0 => Target::Cpu(cpu),
        1 => Target::AllCpus,
        2 | 3 => Target::Task(TaskId(me)),
        4 => Target::TaskOnCpu(TaskId(me), cpu),
        _ => Target::Task(TaskId(other.max(1))),
    };
    let mut attr = BpAttr::write(line(r.next()), 8).privileged();
    if r.below(4) == 0 {
        attr = attr.disabled();
    }
    let req = Request::new(attr, target).callback(move |_| {
        HITS.fetch_add(1, Ordering::Relaxed);
        let h = &H[k];
        if h.gen.load(Ordering::SeqCst) != gen || h.state.load(Ordering::SeqCst) == FREE {
            BAD_HIT.fetch_add(1, Ordering::SeqCst);
        }
    });
    match with_layer(|l, m| l.register(m, req)) {
        Ok(id) => {
            h.id.store(u64::from(id.0), Ordering::SeqCst);
            h.state.store(LIVE, Ordering::SeqCst);
        }
        Err(_) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            h.gen.fetch_add(1, Ordering::SeqCst);
            h.state.store(FREE, Ordering::SeqCst);
        }
    }
}

fn unregister(k: usize) {
    let h = &H[k];
    let id = BpId(h.id.load(Ordering::SeqCst) as u32);
    // Ok, or already gone (a CPU-bound one whose CPU went offline, or a
    // task breakpoint its task's exit released).
    let _ = with_layer(|l, m| l.unregister(m, id));
    h.gen.fetch_add(1, Ordering::SeqCst);
    h.state.store(FREE, Ordering::SeqCst);
}

fn check_tables() {
    for c in 0..percpu::ncpus() {
        let n = with_layer(|l, _| l.installed(CpuId(c as u32)).len());
        if n > 4 {
            OVERFULL.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn worker(w: usize, ops: u64) {
    let me = sched::current_task().unwrap_or(0);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1234_5678));
    for _ in 0..ops {
        let k = w * PER_WORKER + r.below(PER_WORKER as u64) as usize;
        match H[k].state.load(Ordering::SeqCst) {
            FREE => register(k, &mut r, me),
            _ => match r.below(4) {
                0 => unregister(k),
                1 => {
                    let id = BpId(H[k].id.load(Ordering::SeqCst) as u32);
                    let mut attr = BpAttr::write(line(r.next()), 8).privileged();
                    if r.below(3) == 0 {
                        attr = attr.disabled();
                    }
                    let _ = with_layer(|l, m| l.modify(m, id, attr));
                }
                _ => {
                    for _ in 0..4 {
                        LINES[r.below(8) as usize]
                            .0
                            .store(k as u64, Ordering::Relaxed);
                    }
                }
            },
        }
        if r.below(16) == 0 {
            check_tables();
        }
        if r.below(8) == 0 {
            sched::yield_now();
        }
        OPS.fetch_add(1, Ordering::Relaxed);
    }
    // Some handles stay registered: the task's exit releases its task
    // breakpoints; CPU-bound and wide ones the driver removes at the end.
    DONE.fetch_add(1, Ordering::SeqCst);
}

/// The stress run: at least `total` operations.
pub fn stress() -> CaseResult {
    let n = percpu::ncpus();
    let total: u64 = crate::cmdline_opt("stress_ops")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let per = total.div_ceil(WORKERS as u64);
    DONE.store(0, Ordering::SeqCst);
    let mut tasks = alloc::vec::Vec::new();
    for (w, id) in TASK_IDS.iter().enumerate() {
        let t = sched::create(move || worker(w, per));
        id.store(t.id, Ordering::SeqCst);
        tasks.push(t);
    }
    tasks.into_iter().for_each(sched::start);
    let mut r = Rng(42);
    let (mut hotplugs, mut sessions, mut unfit) = (0u64, 0u64, 0u64);
    while DONE.load(Ordering::SeqCst) < WORKERS as u64 {
        // The debugger path: a session takes every slot free everywhere,
        // never blocking; released at once (or later if busy).
        // Preemption off (with_layer) while it may hold a layer lock: the
        // timer's context switch takes this CPU's install table.
        if with_layer(|l, _| match l.debugger().session() {
            Ok(mut s) => {
                while s.end().is_err() {
                    core::hint::spin_loop();
                }
                true
            }
            Err(_) => false,
        }) {
            sessions += 1;
        }
        OPS.fetch_add(1, Ordering::Relaxed);
        if n >= 2 && r.below(4) == 0 {
            let c = 1 + r.below(n as u64 - 1) as usize;
            smp::cpu_down(c);
            if smp::cpu_up(c).is_err() {
                unfit += 1;
            }
            hotplugs += 1;
            OPS.fetch_add(2, Ordering::Relaxed);
        }
        check_tables();
    }
    while sched::LIVE.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    for (k, h) in H.iter().enumerate() {
        if h.state.load(Ordering::SeqCst) == LIVE {
            unregister(k);
        }
    }
    // A wide breakpoint that did not fit a returning CPU is still
    // registered on the others: unregister by id covers it too.
    let left = with_layer(|l, _| l.registered());
    for c in 0..n {
        on_cpu_dr7_zero(c)?;
    }
    kprintln!(
        "  stress: {} ops, {} hits, {} refused, {hotplugs} offline/online ({unfit} reported unfit), {sessions} debugger sessions, {} switches",
        OPS.load(Ordering::SeqCst),
        HITS.load(Ordering::SeqCst),
        REFUSED.load(Ordering::SeqCst),
        sched::SWITCHES.load(Ordering::SeqCst)
    );
    if OPS.load(Ordering::SeqCst) < total {
        return Err(fmt!("only {} operations", OPS.load(Ordering::SeqCst)));
    }
    if !left.is_empty() {
        return Err(fmt!("breakpoints left registered: {left:?}"));
    }
    let bad = BAD_HIT.load(Ordering::SeqCst);
    if bad != 0 {
        return Err(fmt!(
            "{bad} hits from unregistered or half-registered breakpoints"
        ));
    }
    if OVERFULL.load(Ordering::SeqCst) != 0 {
        return Err(fmt!("a CPU had more than 4 breakpoints installed"));
    }
    if with_layer(|l, _| l.debugger().free_everywhere(Pool::Data)) != Ok(4) {
        return Err(fmt!(
            "slots still booked: {:?} free everywhere",
            with_layer(|l, _| l.debugger().free_everywhere(Pool::Data))
        ));
    }
    Ok(())
}

/// CPU `c`'s hardware has no breakpoint left and its table is empty.
fn on_cpu_dr7_zero(c: usize) -> CaseResult {
    static DR7: AtomicU64 = AtomicU64::new(0);
    let read = || DR7.store(dr::hw_read(7), Ordering::SeqCst);
    if c == percpu::this_cpu() {
        read();
    } else {
        smp::run_on(c, read);
    }
    let dr7 = DR7.load(Ordering::SeqCst) & 0xff;
    let installed = with_layer(|l, _| l.installed(CpuId(c as u32)));
    if dr7 != 0 || !installed.is_empty() {
        return Err(fmt!(
            "cpu{c} after the run: DR7 enables {dr7:#x}, installed {installed:?}"
        ));
    }
    Ok(())
}
