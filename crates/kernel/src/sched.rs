//! Kernel threads and a preemptive round-robin scheduler.
//!
//! - One global run queue: a CPU takes whichever task is first, so tasks
//!   migrate between CPUs all the time (that is the point: per-task
//!   breakpoints must follow them).
//! - Each CPU also has its *home context*: the code it booted into (the BSP's
//!   test driver, an AP's work loop). It is not a task (the layer sees no
//!   task there) and never migrates. It takes turns with the tasks when it
//!   has something to do ([`home_busy`]).
//! - The local APIC timer preempts; a task can also yield or exit.
//! - Every switch calls the layer's `switch_task` on the CPU that switches,
//!   with interrupts off, before the new context runs. Layer calls made
//!   through [`crate::dr::with_layer`] disable preemption, so the timer never
//!   switches away from a CPU that holds a layer lock.
//! - A task that exits releases its breakpoints (`task_exit`) before it
//!   leaves the CPU for good; the next context frees its stack.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use hwbreak_core::{CpuId, TaskId};

use crate::dr::{layer, KMachine};
use crate::percpu::{self, CPUS, MAX_CPUS};
use crate::trap::{self, TrapFrame};

static PREEMPT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Forbid preemption on this CPU (nests).
pub fn preempt_disable() {
    trap::without_irqs(|| {
        PREEMPT[percpu::this_cpu()].fetch_add(1, Ordering::Relaxed);
    });
}

/// Allow preemption again.
pub fn preempt_enable() {
    trap::without_irqs(|| {
        PREEMPT[percpu::this_cpu()].fetch_sub(1, Ordering::Relaxed);
    });
}

global_asm!(
    r#"
    .text
    .global switch_stacks
/* switch_stacks(save: *mut u64 [rdi], next: u64 [rsi]): save the callee-saved
   registers on this stack, store rsp, continue on `next`. */
switch_stacks:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

task_trampoline:
    call task_entry
    ud2
"#
);

extern "C" {
    fn switch_stacks(save: *mut u64, next: u64);
    static task_trampoline: u8;
}

const STACK_SIZE: usize = 32 * 1024;

/// A kernel thread.
pub struct Task {
    /// Its id (the layer's `TaskId`; never 0).
    pub id: u64,
    rsp: u64,
    /// Owns the task's kernel stack (freed when the task is dropped).
    _stack: Vec<u8>,
    entry: Option<Box<dyn FnOnce() + Send>>,
    dead: bool,
    /// A CPU that must not take this task next ([`migrate`]).
    avoid: Option<usize>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RUNQ: spin::Mutex<VecDeque<Box<Task>>> = spin::Mutex::new(VecDeque::new());
/// Tasks alive (created and not yet exited).
pub static LIVE: AtomicU64 = AtomicU64::new(0);
/// Timer ticks taken (every CPU).
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// Context switches made (every CPU).
pub static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// What runs on each CPU now and what to finish after a switch.
struct CpuSched {
    current: Option<Box<Task>>,
    /// The home context's saved stack pointer while a task runs.
    home_rsp: u64,
    /// The context switched away from, to requeue or free on the new stack.
    prev: Option<Box<Task>>,
}

static SCHED: [spin::Mutex<CpuSched>; MAX_CPUS] = [const {
    spin::Mutex::new(CpuSched {
        current: None,
        home_rsp: 0,
        prev: None,
    })
}; MAX_CPUS];

/// The home context of a CPU wants the CPU back (the test driver, a work item).
static HOME_BUSY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// CPUs that take no tasks (going offline, or offline).
static NO_TASKS: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Stop (or resume) running tasks on `cpu`: its current task leaves at the
/// next tick and goes back to the run queue for the other CPUs.
pub fn take_tasks(cpu: usize, on: bool) {
    NO_TASKS[cpu].store(!on, Ordering::Release);
}

/// Mark this CPU's home context as busy (it shares the CPU with tasks) or idle
/// (it runs only when no task is ready).
pub fn home_busy(cpu: usize, busy: bool) {
    HOME_BUSY[cpu].store(busy, Ordering::Release);
}

/// Create a task running `f`; it starts when [`start`]ed.
pub fn create(f: impl FnOnce() + Send + 'static) -> Box<Task> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut stack = alloc::vec![0u8; STACK_SIZE];
    let top = (stack.as_mut_ptr() as u64 + STACK_SIZE as u64) & !15;
    // Initial frame for switch_stacks: six callee-saved zeros, the return
    // address, two zero words: task_trampoline starts with rsp = top - 16,
    // so task_entry is entered with rsp ≡ 8 (mod 16) as the ABI wants.
    let frame = top - 9 * 8;
    // SAFETY: the frame lies inside the new stack, which nothing else uses yet.
    unsafe {
        let p = frame as *mut u64;
        for i in 0..9 {
            p.add(i).write(0);
        }
        p.add(6).write(core::ptr::addr_of!(task_trampoline) as u64);
    }
    LIVE.fetch_add(1, Ordering::SeqCst);
    Box::new(Task {
        id,
        rsp: frame,
        _stack: stack,
        entry: Some(Box::new(f)),
        dead: false,
        avoid: None,
    })
}

/// Throw away a created task that never started.
pub fn discard(t: Box<Task>) {
    LIVE.fetch_sub(1, Ordering::SeqCst);
    drop(t);
}

/// Make a created task runnable.
pub fn start(t: Box<Task>) {
    trap::without_irqs(|| RUNQ.lock().push_back(t));
}

/// Create and start a task; returns its id.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> u64 {
    let t = create(f);
    let id = t.id;
    start(t);
    id
}

/// The task running on this CPU, if any.
pub fn current_task() -> Option<u64> {
    let t = CPUS[percpu::this_cpu()].current.load(Ordering::Acquire);
    (t != 0).then_some(t)
}

/// First code of a new task (on its own stack, interrupts off).
#[no_mangle]
extern "C" fn task_entry() -> ! {
    finish_switch();
    let cpu = percpu::this_cpu();
    let entry = SCHED[cpu]
        .lock()
        .current
        .as_mut()
        .and_then(|t| t.entry.take());
    trap::enable_irqs();
    if let Some(f) = entry {
        f();
    }
    exit()
}

/// End the calling task: release its breakpoints, then leave for good.
pub fn exit() -> ! {
    let id = current_task().expect("exit() called outside a task");
    crate::dr::with_layer(|l, m| l.task_exit(m, TaskId(id)));
    trap::disable_irqs();
    let cpu = percpu::this_cpu();
    if let Some(t) = SCHED[cpu].lock().current.as_mut() {
        t.dead = true;
    }
    LIVE.fetch_sub(1, Ordering::SeqCst);
    schedule(cpu, true);
    unreachable!("a dead task was scheduled again");
}

/// Leave this CPU: the calling task yields and only another CPU may take
/// it next (if another task is ready to run here meanwhile).
pub fn migrate() {
    trap::without_irqs(|| {
        let cpu = percpu::this_cpu();
        if let Some(t) = SCHED[cpu].lock().current.as_mut() {
            t.avoid = Some(cpu);
        }
    });
    yield_now();
}

/// Give the CPU to another ready context, if any.
pub fn yield_now() {
    let was = trap::disable_irqs();
    if PREEMPT[percpu::this_cpu()].load(Ordering::Relaxed) == 0 {
        schedule(percpu::this_cpu(), true);
    }
    if was {
        trap::enable_irqs();
    }
}

/// The timer fired on `cpu`: preempt unless a layer call is in progress.
pub fn on_timer(cpu: usize, f: &mut TrapFrame) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    if cpu == 0 {
        crate::gdb::poll(cpu, f); // Ctrl-C from gdb
    }
    if PREEMPT[cpu].load(Ordering::Relaxed) == 0 {
        schedule(cpu, false);
    }
}

/// Pick the next context for `cpu` and switch to it (interrupts off).
fn schedule(cpu: usize, voluntary: bool) {
    let mut s = SCHED[cpu].lock();
    let dead = s.current.as_ref().is_some_and(|t| t.dead);
    let in_task = s.current.is_some();
    // The home context gets the CPU back after a task's turn when it is busy.
    let tasks_ok = !NO_TASKS[cpu].load(Ordering::Acquire);
    let to_home = in_task && (dead || !tasks_ok || HOME_BUSY[cpu].load(Ordering::Acquire));
    let next = if (to_home && !dead) || !tasks_ok {
        None
    } else {
        // The first ready task that does not avoid this CPU.
        let mut q = RUNQ.lock();
        let at = q.iter().position(|t| t.avoid != Some(cpu));
        at.and_then(|i| q.remove(i)).map(|mut t| {
            t.avoid = None;
            t
        })
    };
    if next.is_none() && !(in_task && (dead || to_home)) {
        return; // nothing else to run: keep going
    }
    let prev_id = s.current.as_ref().map(|t| t.id);
    let next_id = next.as_ref().map(|t| t.id);
    let next_rsp = next.as_ref().map_or(s.home_rsp, |t| t.rsp);
    let prev = s.current.take();
    s.current = next;
    let save: *mut u64 = match &prev {
        Some(t) => &t.rsp as *const u64 as *mut u64,
        None => &mut s.home_rsp,
    };
    s.prev = prev;
    drop(s);
    CPUS[cpu]
        .current
        .store(next_id.unwrap_or(0), Ordering::Release);
    let mut m = KMachine::new();
    layer().switch_task(
        &mut m,
        CpuId(cpu as u32),
        prev_id.map(TaskId),
        next_id.map(TaskId),
        voluntary,
    );
    m.flush();
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `save` points into the outgoing context's Task (boxed, kept in
    // s.prev until finish_switch on the new stack requeues or frees it) or
    // this CPU's home slot; `next_rsp` is a stack saved by switch_stacks or
    // built by create(). Interrupts are off until the new context enables them.
    unsafe { switch_stacks(save, next_rsp) };
    finish_switch();
}

/// On the new stack: requeue the previous task (or free it if it died).
fn finish_switch() {
    let cpu = percpu::this_cpu();
    let prev = SCHED[cpu].lock().prev.take();
    if let Some(t) = prev {
        if t.dead {
            drop(t);
        } else {
            RUNQ.lock().push_back(t);
        }
    }
}

/// Start preempting on this CPU: the APIC timer every ~1 ms of guest time.
pub fn start_timer() {
    crate::apic::start_timer(62_500);
}
