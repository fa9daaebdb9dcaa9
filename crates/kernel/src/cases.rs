//! The in-kernel test cases. The host tests (`tests/`) boot the kernel with
//! `cases=...` and read `PASS`/`FAIL` lines; each case checks exact hit
//! counts on the real (QEMU-emulated) debug registers.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;
use hwbreak_core::layer::{Hit, Request};
use hwbreak_core::{BpAttr, BpId, CpuId, Error, Target, TaskId};

use crate::dr::{self, with_layer};
use crate::percpu::{self, MAX_CPUS};
use crate::trap::TrapFrame;
use crate::{fmt, kprintln, sched, smp, CaseResult};

/// Variables the cases watch: each on its own 64-byte line.
#[repr(C, align(64))]
pub struct Var(pub AtomicU64, [u64; 7]);

/// The watched variables, alone on their page: under TCG any access to a
/// watched page runs QEMU's watchpoint check, which would hide the DR6 bug
/// the four-slot case must be able to catch if the hit counters shared it.
#[repr(C, align(4096))]
pub struct Vars(pub [Var; 8]);

#[allow(clippy::declare_interior_mutable_const)]
const VAR: Var = Var(AtomicU64::new(0), [0; 7]);
/// The watched variables.
pub static VARS: Vars = Vars([VAR; 8]);

/// Hit counters the callbacks bump, `[counter][cpu]`.
static HITS: [[AtomicU64; MAX_CPUS]; 8] = [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; 8];

fn reset_hits() {
    HITS.iter()
        .flatten()
        .for_each(|h| h.store(0, Ordering::Relaxed));
}

fn hits(counter: usize) -> u64 {
    HITS[counter]
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .sum()
}

fn hits_on(counter: usize, cpu: usize) -> u64 {
    HITS[counter][cpu].load(Ordering::Relaxed)
}

/// The execute-breakpoint target.
#[inline(never)]
#[no_mangle]
pub extern "C" fn exec_target(x: u64) -> u64 {
    black_box(x.wrapping_mul(3) ^ 1)
}

fn exec_addr() -> u64 {
    exec_target as *const () as u64
}

fn var(i: usize) -> u64 {
    &VARS.0[i].0 as *const AtomicU64 as u64
}

/// Register `attr` (privileged: kernel addresses) on `target`, counting
/// hits into `HITS[counter][hit cpu]`.
fn register(attr: BpAttr, target: Target, counter: usize) -> Result<BpId, Error> {
    register_with(attr, target, counter, |_| {})
}

/// [`register`], also calling `also` on each hit.
fn register_with(
    attr: BpAttr,
    target: Target,
    counter: usize,
    also: impl Fn(&Hit) + Send + Sync + 'static,
) -> Result<BpId, Error> {
    with_layer(|l, m| {
        l.register(
            m,
            Request::new(attr.privileged(), target)
                .cookie(counter as u64)
                .callback(move |h: &Hit| {
                    HITS[counter][h.cpu.idx()].fetch_add(1, Ordering::Relaxed);
                    also(h);
                }),
        )
    })
}

/// Breakpoints a case registered: unregistered on drop, so a failing case
/// leaves nothing behind for the next one.
struct Held(Vec<BpId>);

impl Held {
    fn new() -> Self {
        Held(Vec::new())
    }

    fn add(&mut self, r: Result<BpId, Error>) -> Result<BpId, alloc::string::String> {
        let id = r.map_err(|e| fmt!("register: {e}"))?;
        self.0.push(id);
        Ok(id)
    }

    /// Unregister every held breakpoint now.
    fn release(&mut self) -> CaseResult {
        for id in core::mem::take(&mut self.0) {
            unregister(id)?;
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

fn unregister(id: BpId) -> CaseResult {
    with_layer(|l, m| l.unregister(m, id)).map_err(|e| fmt!("unregister {id:?}: {e}"))
}

/// Run `f` on `cpu` (here if it is this CPU) and wait for it.
fn on_cpu(cpu: usize, f: impl FnOnce() + Send + 'static) {
    if cpu == percpu::this_cpu() {
        f();
    } else {
        smp::run_on(cpu, f);
    }
}

/// Read DR7 of `cpu` (on that CPU).
fn dr7_of(cpu: usize) -> u64 {
    static OUT: AtomicU64 = AtomicU64::new(0);
    on_cpu(cpu, || OUT.store(dr::hw_read(7), Ordering::SeqCst));
    OUT.load(Ordering::SeqCst)
}

macro_rules! check {
    ($cond:expr, $($t:tt)*) => {
        if !$cond {
            return Err(fmt!($($t)*));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr, $what:expr) => {{
        let (a, b) = ($a, $b);
        if a != b {
            return Err(fmt!("{}: got {:?}, want {:?}", $what, a, b));
        }
    }};
}

const N: u64 = 3000;

fn writes(i: usize, n: u64) {
    for k in 0..n {
        VARS.0[i].0.store(k, Ordering::Relaxed);
    }
}

fn reads(i: usize, n: u64) -> u64 {
    (0..n).map(|_| VARS.0[i].0.load(Ordering::Relaxed)).sum()
}

fn calls(n: u64) -> u64 {
    let f: extern "C" fn(u64) -> u64 = black_box(exec_target);
    (0..n).map(|k| f(k)).fold(0, u64::wrapping_add)
}

/// A write watch counts every write and no read, exactly.
fn write_exact() -> CaseResult {
    reset_hits();
    let mut held = Held::new();
    let id = held.add(register(BpAttr::write(var(0), 8), Target::Cpu(CpuId(0)), 0))?;
    writes(0, N);
    black_box(reads(0, N));
    let layer_count = with_layer(|l, _| l.hits(id)).map_err(|e| fmt!("{e}"))?;
    held.release()?;
    writes(0, 10);
    check_eq!(hits(0), N, "callbacks for N writes");
    check_eq!(layer_count, N, "layer hit count");
    check_eq!(dr::hw_read(7) & 0xff, 0, "DR7 enables after unregister");
    Ok(())
}

/// A read-write watch counts reads and writes, exactly.
fn rw_exact() -> CaseResult {
    reset_hits();
    let mut held = Held::new();
    held.add(register(
        BpAttr::read_write(var(1), 4),
        Target::Cpu(CpuId(0)),
        1,
    ))?;
    writes(1, N);
    black_box(reads(1, N / 2));
    held.release()?;
    black_box(reads(1, 10));
    check_eq!(hits(1), N + N / 2, "callbacks for N writes + N/2 reads");
    Ok(())
}

/// An execute breakpoint fires once per call (RF makes progress), exactly.
fn exec_exact() -> CaseResult {
    reset_hits();
    let mut held = Held::new();
    held.add(register(
        BpAttr::exec(exec_addr()),
        Target::Cpu(CpuId(0)),
        2,
    ))?;
    black_box(calls(N));
    held.release()?;
    black_box(calls(10));
    check_eq!(hits(2), N, "callbacks for N calls");
    Ok(())
}

/// The four-slot workload: per iteration `k`, write A; read B when k%2==0,
/// write B when k%5==0; write D (2 bytes) when k%4==0; call F when k%3==0.
fn four_slot_workload(n: u64) {
    let f: extern "C" fn(u64) -> u64 = black_box(exec_target);
    for k in 0..n {
        VARS.0[0].0.store(k, Ordering::Relaxed);
        if k % 2 == 0 {
            black_box(VARS.0[1].0.load(Ordering::Relaxed));
        }
        if k % 5 == 0 {
            VARS.0[1].0.store(k, Ordering::Relaxed);
        }
        if k % 4 == 0 {
            // SAFETY: a 2-byte store into the first bytes of VARS.0[3]'s
            // AtomicU64, which no other CPU touches during this case.
            unsafe { (var(3) as *mut u16).write_volatile(k as u16) };
        }
        // Right after the slot-3 write, with no watched access between: the
        // execute hit is where QEMU 7.2 reports slot 3's stale B-bit.
        if k % 3 == 0 {
            black_box(f(k));
        }
    }
}

/// Register the four slots on `cpu` (from this CPU), run the workload there,
/// check every slot's exact count and that nothing is left after.
fn four_slots_on(cpu: usize) -> CaseResult {
    reset_hits();
    let t = Target::Cpu(CpuId(cpu as u32));
    let reqs = [
        (BpAttr::write(var(0), 8), 0),
        (BpAttr::read_write(var(1), 8), 1),
        (BpAttr::exec(exec_addr()), 2),
        (BpAttr::write(var(3), 2), 3),
    ];
    let mut held = Held::new();
    for (attr, c) in reqs {
        held.add(register(attr, t, c))?;
    }
    let installed = with_layer(|l, _| l.installed(CpuId(cpu as u32)));
    check_eq!(installed.len(), 4, "slots installed on the CPU");
    let dr7 = dr7_of(cpu);
    check_eq!(
        dr7 & 0x55,
        0x55,
        "DR7 local enables of all four slots (hardware)"
    );
    on_cpu(cpu, || four_slot_workload(N));
    held.release()?;
    on_cpu(cpu, || four_slot_workload(100));
    let want = [
        N,
        N.div_ceil(2) + N.div_ceil(5),
        N.div_ceil(3),
        N.div_ceil(4),
    ];
    let got: Vec<u64> = (0..4).map(hits).collect();
    kprintln!("  cpu{cpu} per-slot hits {got:?}, want {want:?}");
    for (slot, (&g, &w)) in got.iter().zip(&want).enumerate() {
        check!(
            g == w,
            "cpu{cpu} slot {slot}: {g} hits, want {w} (stale DR6 bits counted twice?)"
        );
        check_eq!(hits_on(slot, cpu), w, "hits on the CPU itself");
    }
    check_eq!(
        dr7_of(cpu) & 0xff,
        0,
        "DR7 enables after unregister (hardware)"
    );
    Ok(())
}

/// All four slots in use at once, counted per slot, on CPU 0.
fn four_slots_exact() -> CaseResult {
    four_slots_on(0)
}

/// All four slots on every CPU in turn, registered remotely from CPU 0
/// (the IPI + pending path) and hit by that CPU.
fn four_slots_every_cpu() -> CaseResult {
    for cpu in 0..percpu::ncpus() {
        four_slots_on(cpu)?;
    }
    Ok(())
}

/// A fifth breakpoint on a full CPU is refused and changes nothing.
fn fifth_refused_no_trace() -> CaseResult {
    let t = Target::Cpu(CpuId(0));
    let mut held = Held::new();
    for i in 0..4 {
        held.add(register(BpAttr::write(var(i), 8), t, i))?;
    }
    let before = with_layer(|l, _| l.snapshot());
    let r = register(BpAttr::write(var(4), 8), t, 4);
    let after = with_layer(|l, _| l.snapshot());
    held.release()?;
    check!(
        matches!(r, Err(Error::NoSlot { .. })),
        "fifth registration: {r:?}, want NoSlot"
    );
    check!(before == after, "a refused registration changed the layer");
    Ok(())
}

/// A wide write watch hits on every CPU, exactly, counted per CPU.
fn wide_hits_every_cpu() -> CaseResult {
    reset_hits();
    let mut held = Held::new();
    held.add(register(BpAttr::write(var(4), 8), Target::AllCpus, 4))?;
    let n = percpu::ncpus();
    for cpu in 0..n {
        check_eq!(dr7_of(cpu) & 0b1, 0b1, "DR7 slot 0 enabled on every CPU");
    }
    for cpu in 0..n {
        on_cpu(cpu, move || writes(4, 500 + cpu as u64));
    }
    held.release()?;
    for cpu in 0..n {
        on_cpu(cpu, || writes(4, 10));
        check_eq!(hits_on(4, cpu), 500 + cpu as u64, "hits on this CPU");
        check_eq!(dr7_of(cpu) & 0xff, 0, "DR7 after unregister");
    }
    Ok(())
}

/// A wide request that cannot fit on the last CPU leaves no booking, no
/// register written on any CPU, and no hit.
fn wide_unfit_no_trace() -> CaseResult {
    reset_hits();
    let last = percpu::ncpus() - 1;
    let t = Target::Cpu(CpuId(last as u32));
    let mut held = Held::new();
    for i in 0..4 {
        held.add(register(BpAttr::write(var(i), 8), t, i))?;
    }
    let dr7_before: Vec<u64> = (0..percpu::ncpus()).map(dr7_of).collect();
    let before = with_layer(|l, _| l.snapshot());
    let r = register(BpAttr::write(var(5), 8), Target::AllCpus, 5);
    let after = with_layer(|l, _| l.snapshot());
    let dr7_after: Vec<u64> = (0..percpu::ncpus()).map(dr7_of).collect();
    for cpu in 0..percpu::ncpus() {
        on_cpu(cpu, || writes(5, 100));
    }
    held.release()?;
    check!(
        matches!(r, Err(Error::NoSlot { cpu, .. }) if cpu.idx() == last),
        "wide registration: {r:?}, want NoSlot naming cpu{last}"
    );
    check!(
        before == after,
        "the refused wide request changed the layer"
    );
    check_eq!(dr7_after, dr7_before, "DR7 of every CPU");
    check_eq!(hits(5), 0, "hits of the refused breakpoint");
    Ok(())
}

/// Writes `VARS[6]` `n` times, yielding every 100 writes.
fn task_writer(n: u64, done: &'static AtomicU64) {
    for k in 0..n {
        VARS.0[6].0.store(k, Ordering::Relaxed);
        if k % 100 == 99 {
            sched::yield_now();
        }
    }
    done.fetch_add(1, Ordering::SeqCst);
}

/// A per-task breakpoint fires exactly for its task's writes, on whichever
/// CPU it runs, while `2*ncpus` other tasks write the same variable; the
/// task's exit releases it.
fn task_bp_follows_its_task_across_migration() -> CaseResult {
    static DONE: AtomicU64 = AtomicU64::new(0);
    static TARGET_DONE_SINK: AtomicU64 = AtomicU64::new(0);
    static WRONG: AtomicU64 = AtomicU64::new(0);
    reset_hits();
    DONE.store(0, Ordering::SeqCst);
    WRONG.store(0, Ordering::SeqCst);
    const M: u64 = 20_000;
    let ncpus = percpu::ncpus();
    let others = 2 * ncpus as u64;
    let task = sched::create(|| {
        // Ten slices, each ended by a move to another CPU (when there is one).
        for _ in 0..10 {
            task_writer(M / 10, &TARGET_DONE_SINK);
            if percpu::ncpus() > 1 {
                sched::migrate();
            }
        }
        DONE.fetch_add(1, Ordering::SeqCst);
        TARGET_DONE.store(1, Ordering::SeqCst);
    });
    let tid = TaskId(task.id);
    let id = register_with(BpAttr::write(var(6), 8), Target::Task(tid), 6, move |h| {
        if h.task != Some(tid) {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
    })
    .map_err(|e| fmt!("register: {e}"))?;
    static TARGET_DONE: AtomicU64 = AtomicU64::new(0);
    TARGET_DONE.store(0, Ordering::SeqCst);
    // The others keep writing (and rotating through the run queue) until
    // the watched task is done, so it keeps changing CPUs.
    for _ in 0..others {
        sched::spawn(|| {
            while TARGET_DONE.load(Ordering::SeqCst) == 0 {
                task_writer(500, &TARGET_DONE_SINK);
            }
            DONE.fetch_add(1, Ordering::SeqCst);
        });
    }
    // While it waits, the driver gives CPU 0 to the tasks entirely.
    sched::home_busy(0, false);
    sched::start(task);
    while DONE.load(Ordering::SeqCst) < others + 1 || sched::LIVE.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    sched::home_busy(0, true);
    let still = with_layer(|l, _| l.is_registered(id));
    if still {
        let _ = unregister(id);
    }
    let per_cpu: Vec<u64> = (0..ncpus).map(|c| hits_on(6, c)).collect();
    kprintln!("  task {} hits per CPU {per_cpu:?}", tid.0);
    check!(!still, "task exit left its breakpoint registered");
    check_eq!(hits(6), M, "hits = the task's own writes");
    check_eq!(
        WRONG.load(Ordering::SeqCst),
        0,
        "hits charged to another task"
    );
    let cpus = per_cpu.iter().filter(|&&n| n > 0).count();
    check!(
        ncpus == 1 || cpus >= 2,
        "the task never migrated (hits on {cpus} CPU)"
    );
    check!(
        with_layer(|l, _| l.registered()).is_empty(),
        "breakpoints left: {:?}",
        with_layer(|l, _| l.registered())
    );
    Ok(())
}

/// A wide breakpoint registered while a CPU is offline reaches it when it
/// comes back, leaves it when it goes again, and counts exactly per CPU.
fn hotplug_wide_follows_offline_online() -> CaseResult {
    let n = percpu::ncpus();
    check!(n >= 2, "needs at least 2 CPUs, has {n}");
    let c = n - 1;
    reset_hits();
    smp::cpu_down(c);
    check!(!percpu::is_online(c), "cpu{c} still online after cpu_down");
    let mut held = Held::new();
    let id = held.add(register(BpAttr::write(var(4), 8), Target::AllCpus, 4))?;
    let members = |id| {
        with_layer(|l, _| l.snapshot())
            .bps
            .into_iter()
            .find(|b| b.id == id)
            .map(|b| b.members.len())
    };
    check_eq!(
        members(id),
        Some(n - 1),
        "wide members while cpu{c} is offline"
    );
    for cpu in 0..c {
        on_cpu(cpu, || writes(4, 100));
    }
    smp::cpu_up(c).map_err(|(id, e)| fmt!("cpu_up: {id:?}: {e}"))?;
    check_eq!(members(id), Some(n), "wide members after cpu_up");
    check_eq!(dr7_of(c) & 1, 1, "DR7 slot 0 on the returning CPU");
    on_cpu(c, || writes(4, 77));
    smp::cpu_down(c);
    smp::cpu_up(c).map_err(|(id, e)| fmt!("second cpu_up: {id:?}: {e}"))?;
    on_cpu(c, || writes(4, 5));
    held.release()?;
    check_eq!(hits_on(4, c), 82, "hits on the CPU that went and came back");
    for cpu in 0..c {
        check_eq!(hits_on(4, cpu), 100, "hits on the CPUs that stayed");
    }
    check_eq!(dr7_of(c) & 0xff, 0, "DR7 after unregister");
    Ok(())
}

/// A CPU coming online where a wide breakpoint does not fit (four task
/// breakpoints pinned to it fill it) is reported; the wide breakpoint stays
/// on the other CPUs and never fires on that one.
fn hotplug_unfit_wide_is_reported() -> CaseResult {
    let n = percpu::ncpus();
    check!(n >= 2, "needs at least 2 CPUs, has {n}");
    let c = n - 1;
    reset_hits();
    smp::cpu_down(c);
    let mut held = Held::new();
    let ghost = Target::TaskOnCpu(TaskId(u64::MAX), CpuId(c as u32));
    for i in 0..4 {
        held.add(register(BpAttr::write(var(i), 8), ghost, i))?;
    }
    let wide = held.add(register(BpAttr::write(var(5), 8), Target::AllCpus, 5))?;
    let r = smp::cpu_up(c);
    for cpu in 0..n {
        on_cpu(cpu, move || writes(5, 10 + cpu as u64));
    }
    held.release()?;
    check!(
        matches!(&r, Err((id, Error::NoSlot { cpu, .. })) if *id == wide && cpu.idx() == c),
        "cpu_up: {r:?}, want NoSlot for {wide:?} on cpu{c}"
    );
    check_eq!(hits_on(5, c), 0, "hits on the CPU where it did not fit");
    for cpu in 0..c {
        check_eq!(hits_on(5, cpu), 10 + cpu as u64, "hits on the other CPUs");
    }
    Ok(())
}

static STEPS: AtomicU64 = AtomicU64::new(0);

/// Single-step traps nobody else claimed: counted, and stepping stops.
pub fn on_step(f: &mut TrapFrame) {
    STEPS.fetch_add(1, Ordering::SeqCst);
    f.rflags &= !crate::trap::RFLAGS_TF;
}

/// TF set by popfq traps after the next instruction (the mechanism gdb's
/// single-step relies on).
fn single_step_traps() -> CaseResult {
    STEPS.store(0, Ordering::SeqCst);
    // SAFETY: sets RFLAGS.TF; the #DB handler counts the trap and clears TF.
    unsafe {
        core::arch::asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "nop", "nop");
    }
    check_eq!(STEPS.load(Ordering::SeqCst), 1, "single-step traps");
    Ok(())
}

type Case = (&'static str, fn() -> CaseResult);

/// Every case, in run order.
pub const CASES: &[Case] = &[
    ("write_exact", write_exact),
    ("rw_exact", rw_exact),
    ("exec_exact", exec_exact),
    ("four_slots_exact", four_slots_exact),
    ("four_slots_every_cpu", four_slots_every_cpu),
    ("fifth_refused_no_trace", fifth_refused_no_trace),
    ("wide_hits_every_cpu", wide_hits_every_cpu),
    ("wide_unfit_no_trace", wide_unfit_no_trace),
    (
        "task_bp_follows_its_task_across_migration",
        task_bp_follows_its_task_across_migration,
    ),
    (
        "hotplug_wide_follows_offline_online",
        hotplug_wide_follows_offline_online,
    ),
    (
        "hotplug_unfit_wide_is_reported",
        hotplug_unfit_wide_is_reported,
    ),
    ("single_step_traps", single_step_traps),
    ("stress", crate::stress::stress),
    ("kunit", crate::kunit::kunit),
    // Driven by gdb (tests/gdb.rs); without gdb they just run through.
    ("gdb_kgdbts", crate::gdbcases::gdb_kgdbts),
    ("gdb_full", crate::gdbcases::gdb_full),
    ("gdb_books_held", crate::gdbcases::gdb_books_held),
    ("gdb_ctrl_c", crate::gdbcases::gdb_ctrl_c),
];

/// Run the cases named in `sel` (comma-separated; all when `None`). Returns
/// how many failed.
pub fn run(sel: Option<&str>) -> usize {
    let mut names: Vec<&str> = match sel {
        Some(s) => s.split(',').filter(|n| !n.is_empty()).collect(),
        None => CASES.iter().map(|c| c.0).collect(),
    };
    names.dedup();
    let (mut passed, mut failed) = (0, 0);
    for name in names {
        let r = match CASES.iter().find(|c| c.0 == name) {
            Some((_, f)) => f(),
            None => Err(fmt!("no such case")),
        };
        match r {
            Ok(()) => {
                passed += 1;
                kprintln!("PASS {name}");
            }
            Err(e) => {
                failed += 1;
                kprintln!("FAIL {name}: {e}");
            }
        }
    }
    for cpu in 0..percpu::ncpus() {
        let s = &dr::STATS[cpu];
        kprintln!(
            "STATS cpu{cpu}: db={} multi={} stale={} strays={} steps={}",
            s.exceptions.load(Ordering::Relaxed),
            s.multi.load(Ordering::Relaxed),
            s.stale.load(Ordering::Relaxed),
            s.strays.load(Ordering::Relaxed),
            s.steps.load(Ordering::Relaxed)
        );
    }
    kprintln!("DONE passed={passed} failed={failed}");
    failed
}
