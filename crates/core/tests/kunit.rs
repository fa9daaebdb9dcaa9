//! Slot booking tests: the Linux KUnit suite `kernel/events/hw_breakpoint_test.c`
//! ported case by case (`kunit_test_*`), every error path, exact restore on
//! release, allocation-freedom of CPU-bound booking, and a property test
//! against a naive model. Also the one test that needs a counting allocator
//! for `core::events` (push and drain never allocate after `new`).

use hwbreak_core::arch::Pool;
use hwbreak_core::slots::Slots;
use hwbreak_core::{CpuId, Error, Target, TaskId};

#[path = "../benches/naive_slots/mod.rs"]
mod naive;

// ---------------------------------------------------------------------------
// Allocation counter: proves that CPU-bound booking never allocates. Counts
// per thread, so tests running in parallel do not disturb each other.
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: forwards to the system allocator unchanged; only counts calls.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            ALLOCS.with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            ALLOCS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made by this thread while running `f`.
    pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (usize, R) {
        let before = ALLOCS.with(|n| n.get());
        let r = f();
        (ALLOCS.with(|n| n.get()) - before, r)
    }
}
use alloc_count::allocations_in;

// ---------------------------------------------------------------------------
// The KUnit harness, mirroring hw_breakpoint_test.c: breakpoints of weight 1
// in the data pool (HW_BREAKPOINT_RW -> TYPE_DATA), `register_test_bp(cpu,
// tsk)` with cpu -1 = any CPU and tsk NULL = CPU-bound.

/// `MAX_TEST_BREAKPOINTS` in the kernel test.
const MAX_TEST_BREAKPOINTS: usize = 512;
/// `current` in the kernel test.
const CURRENT: Option<TaskId> = Some(TaskId(1));
/// `get_other_task()` in the kernel test.
const OTHER: Option<TaskId> = Some(TaskId(2));
/// `-1` as a CPU in the kernel test.
const ANY: Option<CpuId> = None;

struct Kunit {
    slots: Slots,
    nslots: usize,
    online: usize,
    test_bps: Vec<Option<Target>>,
    idx: usize,
}

impl Kunit {
    fn new(online: usize, nslots: usize) -> Self {
        Kunit {
            slots: Slots::new(online, [0, nslots]),
            nslots,
            online,
            test_bps: vec![None; MAX_TEST_BREAKPOINTS],
            idx: 0,
        }
    }

    fn target(cpu: Option<CpuId>, tsk: Option<TaskId>) -> Target {
        match (cpu, tsk) {
            (None, Some(t)) => Target::Task(t),
            (Some(c), Some(t)) => Target::TaskOnCpu(t, c),
            (Some(c), None) => Target::Cpu(c),
            (None, None) => unreachable!("the kernel test never registers cpu -1 without a task"),
        }
    }

    /// `register_test_bp`: book one slot, as perf_event_create_kernel_counter does.
    fn register_test_bp(
        &mut self,
        cpu: Option<CpuId>,
        tsk: Option<TaskId>,
    ) -> Result<Target, Error> {
        let t = Self::target(cpu, tsk);
        self.slots.reserve(Pool::Data, t, 1).map(|()| t)
    }

    /// `TEST_EXPECT_NOSPC(register_test_bp(...))`, plus: a refusal changes nothing.
    #[track_caller]
    fn expect_nospc(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>) {
        let before = self.slots.clone();
        match self.register_test_bp(cpu, tsk) {
            Err(Error::NoSlot {
                pool: Pool::Data,
                total,
                held,
                cpu_bound,
                task_max,
                ..
            }) => {
                assert_eq!(total, self.nslots);
                assert_eq!(held, cpu_bound + task_max);
                assert!(held + 1 > total, "NoSlot with room left: {held} of {total}");
            }
            other => panic!("expected NoSlot for cpu {cpu:?} task {tsk:?}, got {other:?}"),
        }
        assert_eq!(before, self.slots, "a refused booking changed the books");
        self.slots.audit().unwrap();
    }

    /// `fill_one_bp_slot`.
    #[track_caller]
    fn fill_one_bp_slot(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>) {
        let t = self
            .register_test_bp(cpu, tsk)
            .unwrap_or_else(|e| panic!("fill_one_bp_slot(cpu {cpu:?}, task {tsk:?}): {e}"));
        assert!(self.test_bps[self.idx].is_none());
        self.test_bps[self.idx] = Some(t);
        self.idx += 1;
        self.slots.audit().unwrap();
    }

    /// `fill_bp_slots`: fill, leaving `skip` slots free; true if it can be called again.
    #[track_caller]
    fn fill_bp_slots(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>, skip: usize) -> bool {
        for _ in 0..self.nslots - skip {
            self.fill_one_bp_slot(cpu, tsk);
        }
        self.idx + self.nslots <= MAX_TEST_BREAKPOINTS
    }

    /// `unregister_test_bp(&test_bps[i])`.
    #[track_caller]
    fn unregister_test_bp(&mut self, i: usize) {
        let t = self.test_bps[i]
            .take()
            .expect("unregistering an empty test_bps slot");
        assert!(self.slots.release(Pool::Data, t, 1));
        self.slots.audit().unwrap();
    }

    /// `get_test_cpu(n)`: the n-th online CPU.
    fn cpu(&self, n: usize) -> Option<CpuId> {
        assert!(n < self.online);
        Some(CpuId(n as u32))
    }

    /// `test_exit`: unregister everything; the books must be empty again.
    fn exit(mut self) {
        for i in 0..MAX_TEST_BREAKPOINTS {
            if self.test_bps[i].is_some() {
                self.unregister_test_bp(i);
            }
        }
        assert!(
            self.slots.is_empty(),
            "books not empty after test_exit: {:?}",
            self.slots
        );
        assert_eq!(self.slots, Slots::new(self.online, [0, self.nslots]));
    }
}

/// Runs a KUnit case on several machines: 2 and 5 online CPUs (the kernel
/// suite needs at least 2), with the slot counts of real hardware: POWER
/// (1, 2), x86 (4), arm64 (up to 16). `requires` is `TEST_REQUIRES_BP_SLOTS`.
fn run_kunit(name: &str, requires: usize, case: fn(&mut Kunit)) {
    for online in [2, 5] {
        for nslots in [1, 2, 4, 6, 16] {
            if nslots < requires {
                println!("{name}: skipped with {nslots} slots: requires breakpoint slots: {requires} > {nslots}");
                continue;
            }
            let mut k = Kunit::new(online, nslots);
            case(&mut k);
            k.exit();
        }
    }
}

#[test]
fn kunit_test_one_cpu() {
    run_kunit("test_one_cpu", 0, |k| {
        k.fill_bp_slots(k.cpu(0), None, 0);
        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), None);
    });
}

#[test]
fn kunit_test_many_cpus() {
    run_kunit("test_many_cpus", 0, |k| {
        // Test that CPUs are independent.
        for cpu in 0..k.online {
            let c = Some(CpuId(cpu as u32));
            let do_continue = k.fill_bp_slots(c, None, 0);
            k.expect_nospc(c, None);
            if !do_continue {
                break;
            }
        }
    });
}

#[test]
fn kunit_test_many_cpus_stops_at_max_test_breakpoints() {
    // The kernel case stops filling when its 512 test breakpoints run out;
    // with 300 CPUs x 4 slots that happens at CPU 127.
    let mut k = Kunit::new(300, 4);
    let mut filled = 0;
    for cpu in 0..k.online {
        let c = Some(CpuId(cpu as u32));
        let do_continue = k.fill_bp_slots(c, None, 0);
        k.expect_nospc(c, None);
        filled += 1;
        if !do_continue {
            break;
        }
    }
    assert_eq!(filled, 128);
    assert_eq!(k.slots.free(CpuId(128), Pool::Data), 4);
    k.exit();
}

#[test]
fn kunit_test_one_task_on_all_cpus() {
    run_kunit("test_one_task_on_all_cpus", 0, |k| {
        k.fill_bp_slots(ANY, CURRENT, 0);
        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), None);
        // Remove one and adding back CPU-target should work.
        k.unregister_test_bp(0);
        k.fill_one_bp_slot(k.cpu(0), None);
    });
}

#[test]
fn kunit_test_two_tasks_on_all_cpus() {
    run_kunit("test_two_tasks_on_all_cpus", 0, |k| {
        // Test that tasks are independent.
        k.fill_bp_slots(ANY, CURRENT, 0);
        k.fill_bp_slots(ANY, OTHER, 0);

        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(ANY, OTHER);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), OTHER);
        k.expect_nospc(k.cpu(0), None);
        // Remove one from first task and adding back CPU-target should not work.
        k.unregister_test_bp(0);
        k.expect_nospc(k.cpu(0), None);
    });
}

#[test]
fn kunit_test_one_task_on_one_cpu() {
    run_kunit("test_one_task_on_one_cpu", 0, |k| {
        k.fill_bp_slots(k.cpu(0), CURRENT, 0);
        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), None);
        // Remove one and adding back CPU-target should work; this case is
        // special vs. above because the task's constraints are CPU-dependent.
        k.unregister_test_bp(0);
        k.fill_one_bp_slot(k.cpu(0), None);
    });
}

#[test]
fn kunit_test_one_task_mixed() {
    run_kunit("test_one_task_mixed", 3, |k| {
        k.fill_one_bp_slot(k.cpu(0), CURRENT);
        k.fill_bp_slots(ANY, CURRENT, 1);
        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), None);

        // Transition from CPU-dependent pinned count to CPU-independent.
        k.unregister_test_bp(0);
        k.unregister_test_bp(1);
        k.fill_one_bp_slot(k.cpu(0), None);
        k.fill_one_bp_slot(k.cpu(0), None);
        k.expect_nospc(k.cpu(0), None);
    });
}

#[test]
fn kunit_test_two_tasks_on_one_cpu() {
    run_kunit("test_two_tasks_on_one_cpu", 0, |k| {
        k.fill_bp_slots(k.cpu(0), CURRENT, 0);
        k.fill_bp_slots(k.cpu(0), OTHER, 0);

        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(ANY, OTHER);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), OTHER);
        k.expect_nospc(k.cpu(0), None);
        // Can still create breakpoints on some other CPU.
        k.fill_bp_slots(k.cpu(1), None, 0);
    });
}

#[test]
fn kunit_test_two_tasks_on_one_all_cpus() {
    run_kunit("test_two_tasks_on_one_all_cpus", 0, |k| {
        k.fill_bp_slots(k.cpu(0), CURRENT, 0);
        k.fill_bp_slots(ANY, OTHER, 0);

        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(ANY, OTHER);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), OTHER);
        k.expect_nospc(k.cpu(0), None);
        // Cannot create breakpoints on some other CPU either.
        k.expect_nospc(k.cpu(1), None);
    });
}

#[test]
fn kunit_test_task_on_all_and_one_cpu() {
    run_kunit("test_task_on_all_and_one_cpu", 3, |k| {
        k.fill_bp_slots(ANY, CURRENT, 2);
        // Transitioning from only all CPU breakpoints to mixed.
        let tsk_on_cpu_idx = k.idx;
        k.fill_one_bp_slot(k.cpu(0), CURRENT);
        k.fill_one_bp_slot(ANY, CURRENT);

        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), None);

        // We should still be able to use up another CPU's slots.
        let cpu_idx = k.idx;
        k.fill_one_bp_slot(k.cpu(1), None);
        k.expect_nospc(k.cpu(1), None);

        // Transitioning back to task target on all CPUs.
        k.unregister_test_bp(tsk_on_cpu_idx);
        // Still have a CPU target breakpoint in get_test_cpu(1).
        k.expect_nospc(ANY, CURRENT);
        // Remove it and try again.
        k.unregister_test_bp(cpu_idx);
        k.fill_one_bp_slot(ANY, CURRENT);

        k.expect_nospc(ANY, CURRENT);
        k.expect_nospc(k.cpu(0), CURRENT);
        k.expect_nospc(k.cpu(0), None);
        k.expect_nospc(k.cpu(1), None);
    });
}

// ---------------------------------------------------------------------------
// Error paths: every error `reserve`/`check` can return, with every field.

const D: Pool = Pool::Data;
const I: Pool = Pool::Inst;

fn t(n: u64) -> TaskId {
    TaskId(n)
}
fn c(n: u32) -> CpuId {
    CpuId(n)
}

#[test]
fn pool_with_zero_slots_refuses_every_target_with_no_such_pool() {
    // x86: instruction breakpoints share the data pool; Inst has 0 slots.
    let mut s = Slots::new(2, [0, 4]);
    for target in [
        Target::Task(t(1)),
        Target::TaskOnCpu(t(1), c(0)),
        Target::Cpu(c(0)),
        Target::AllCpus,
    ] {
        assert_eq!(s.reserve(I, target, 1), Err(Error::NoSuchPool { pool: I }));
        assert_eq!(s.check(I, target, 1), Err(Error::NoSuchPool { pool: I }));
    }
    assert_eq!(s.free(c(0), I), 0);
    assert_eq!(s.free_everywhere(I, &|_| true), 0);
    assert!(s.is_empty());
    let msg = Error::NoSuchPool { pool: I }.to_string();
    assert!(msg.contains("Inst"), "{msg}");
}

#[test]
fn cpu_beyond_possible_is_no_such_cpu_for_cpu_and_task_on_cpu() {
    let mut s = Slots::new(2, [2, 4]);
    for target in [Target::Cpu(c(2)), Target::TaskOnCpu(t(1), c(7))] {
        let cpu = target.cpu().unwrap();
        assert_eq!(
            s.reserve(D, target, 1),
            Err(Error::NoSuchCpu { cpu, possible: 2 })
        );
    }
    assert!(s.is_empty());
    assert_eq!(s.free(c(2), D), 0);
    assert_eq!(s.cpu_bound(c(2), D), 0);
    assert_eq!(s.task_max(c(2), D), 0);
    assert!(!s.release(D, Target::Cpu(c(2)), 1));
    s.clear_cpu(c(9)); // no such CPU: nothing to drop, no panic
    assert_eq!(s, Slots::new(2, [2, 4]));
}

#[test]
fn no_slot_for_cpu_target_reports_cpu_bound_and_heaviest_task() {
    let mut s = Slots::new(3, [0, 4]);
    s.reserve(D, Target::Cpu(c(1)), 1).unwrap();
    s.reserve(D, Target::Task(t(1)), 2).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(2), c(1)), 3).unwrap();
    // CPU 1: 1 CPU-bound + task 2's 3 = 4 of 4.
    let err = s.reserve(D, Target::Cpu(c(1)), 1).unwrap_err();
    assert_eq!(
        err,
        Error::NoSlot {
            pool: D,
            cpu: c(1),
            held: 4,
            total: 4,
            cpu_bound: 1,
            task_max: 3
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("CPU 1")
            && msg.contains("4 of 4")
            && msg.contains("1 CPU-bound, 3 by task breakpoints that compete with this one"),
        "{msg}"
    );
    // CPU 0 has room for 2 beside task 1.
    assert_eq!(s.free(c(0), D), 2);
    s.reserve(D, Target::Cpu(c(0)), 2).unwrap();
    assert_eq!(
        s.reserve(D, Target::Cpu(c(0)), 1),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(0),
            held: 4,
            total: 4,
            cpu_bound: 2,
            task_max: 2
        })
    );
}

#[test]
fn no_slot_for_task_names_first_full_cpu_and_the_tasks_own_weight() {
    let mut s = Slots::new(4, [0, 4]);
    s.reserve(D, Target::Cpu(c(2)), 3).unwrap();
    s.reserve(D, Target::Cpu(c(3)), 3).unwrap();
    // Another task's weight does not count against task 1.
    s.reserve(D, Target::Task(t(9)), 1).unwrap();
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    let err = s.reserve(D, Target::Task(t(1)), 1).unwrap_err();
    assert_eq!(
        err,
        Error::NoSlot {
            pool: D,
            cpu: c(2),
            held: 4,
            total: 4,
            cpu_bound: 3,
            task_max: 1
        }
    );
    // The message must not claim the 1 is "the busiest task" on CPU 2: it is
    // task 1's own weight (task 9 does not compete with it).
    let msg = err.to_string();
    assert!(
        msg.contains("3 CPU-bound, 1 by task breakpoints that compete with this one"),
        "{msg}"
    );
    assert!(!msg.contains("busiest"), "{msg}");
    // With TaskOnCpu weight on CPU 1, CPU 1 becomes the first full one.
    s.reserve(D, Target::TaskOnCpu(t(5), c(1)), 4).unwrap();
    assert_eq!(
        s.reserve(D, Target::Task(t(5)), 1),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(1),
            held: 4,
            total: 4,
            cpu_bound: 0,
            task_max: 4
        })
    );
    assert_eq!(
        s.reserve(D, Target::TaskOnCpu(t(5), c(1)), 1),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(1),
            held: 4,
            total: 4,
            cpu_bound: 0,
            task_max: 4
        })
    );
    s.audit().unwrap();
}

#[test]
fn weight_larger_than_the_pool_is_no_slot_not_overflow() {
    let mut s = Slots::new(2, [2, 4]);
    for target in [
        Target::Task(t(1)),
        Target::TaskOnCpu(t(1), c(1)),
        Target::Cpu(c(0)),
        Target::AllCpus,
    ] {
        assert!(matches!(
            s.reserve(D, target, 5),
            Err(Error::NoSlot {
                held: 0,
                total: 4,
                ..
            })
        ));
        assert!(matches!(
            s.reserve(D, target, usize::MAX),
            Err(Error::NoSlot { .. })
        ));
    }
    assert!(!s.release(D, Target::Task(t(1)), usize::MAX));
    assert!(s.is_empty());
}

#[test]
fn all_cpus_is_all_or_nothing_and_names_the_first_full_cpu() {
    let mut s = Slots::new(4, [0, 4]);
    s.reserve(D, Target::TaskOnCpu(t(1), c(2)), 4).unwrap();
    let before = s.clone();
    assert_eq!(
        s.reserve(D, Target::AllCpus, 1),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(2),
            held: 4,
            total: 4,
            cpu_bound: 0,
            task_max: 4
        })
    );
    assert_eq!(s, before, "a refused wide booking left a trace");
    s.release(D, Target::TaskOnCpu(t(1), c(2)), 1);
    s.reserve(D, Target::AllCpus, 1).unwrap();
    for n in 0..4 {
        assert_eq!(s.cpu_bound(c(n), D), 1);
    }
    assert!(s.release(D, Target::AllCpus, 1));
    assert!(
        !s.release(D, Target::AllCpus, 1),
        "double release of a wide booking"
    );
    s.release(D, Target::TaskOnCpu(t(1), c(2)), 3);
    assert!(s.is_empty());
}

#[test]
fn check_answers_like_reserve_and_changes_nothing() {
    let mut s = Slots::new(2, [1, 2]);
    s.reserve(D, Target::Task(t(1)), 2).unwrap();
    let before = s.clone();
    for (pool, target) in [
        (D, Target::Task(t(1))),
        (D, Target::Task(t(2))),
        (D, Target::TaskOnCpu(t(1), c(1))),
        (D, Target::Cpu(c(0))),
        (I, Target::Cpu(c(0))),
        (I, Target::Cpu(c(5))),
    ] {
        let checked = s.check(pool, target, 1);
        assert_eq!(s, before);
        let mut copy = s.clone();
        assert_eq!(
            copy.reserve(pool, target, 1),
            checked,
            "{pool:?} {target:?}"
        );
    }
}

#[test]
fn zero_weight_books_nothing_but_still_validates() {
    let mut s = Slots::new(2, [0, 4]);
    assert_eq!(s.reserve(D, Target::Task(t(1)), 0), Ok(()));
    assert_eq!(s.reserve(D, Target::Cpu(c(1)), 0), Ok(()));
    assert!(s.is_empty() && s.tasks() == 0);
    assert_eq!(
        s.reserve(I, Target::Cpu(c(1)), 0),
        Err(Error::NoSuchPool { pool: I })
    );
    assert!(matches!(
        s.reserve(D, Target::Cpu(c(2)), 0),
        Err(Error::NoSuchCpu { .. })
    ));
}

// ---------------------------------------------------------------------------
// Release restores the exact prior state; bad releases change nothing.

#[test]
fn release_of_what_was_not_booked_returns_false_and_changes_nothing() {
    let mut s = Slots::new(2, [2, 4]);
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(1), c(0)), 1).unwrap();
    s.reserve(D, Target::Cpu(c(1)), 1).unwrap();
    let before = s.clone();
    assert!(!s.release(D, Target::Task(t(1)), 2), "more than held");
    assert!(!s.release(D, Target::Task(t(2)), 1), "unknown task");
    assert!(!s.release(I, Target::Task(t(1)), 1), "other pool");
    assert!(!s.release(D, Target::TaskOnCpu(t(1), c(1)), 1), "other CPU");
    assert!(
        !s.release(D, Target::TaskOnCpu(t(3), c(0)), 1),
        "unknown task on CPU"
    );
    assert!(
        !s.release(D, Target::Cpu(c(0)), 1),
        "CPU with no CPU-bound booking"
    );
    assert!(
        !s.release(D, Target::Cpu(c(1)), 2),
        "more than the CPU holds"
    );
    assert_eq!(s, before);
    s.audit().unwrap();
}

#[test]
fn release_restores_the_exact_prior_books_for_every_target_and_transition() {
    let mut s = Slots::new(3, [2, 4]);
    // A busy starting state: all four kinds of owners, both pools.
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(1), c(2)), 1).unwrap();
    s.reserve(D, Target::Task(t(2)), 2).unwrap();
    s.reserve(D, Target::Cpu(c(0)), 1).unwrap();
    s.reserve(I, Target::TaskOnCpu(t(2), c(1)), 1).unwrap();
    let base = s.clone();
    // Each booking below crosses a transition (first booking of a task, first
    // TaskOnCpu of a task, Task weight under TaskOnCpu weight, ...).
    let cases = [
        (D, Target::Task(t(3)), 1),
        (D, Target::Task(t(1)), 1),
        (D, Target::Task(t(2)), 1),
        (D, Target::TaskOnCpu(t(2), c(0)), 1),
        (D, Target::TaskOnCpu(t(1), c(2)), 1),
        (D, Target::TaskOnCpu(t(4), c(1)), 2),
        (D, Target::Cpu(c(1)), 2),
        (D, Target::AllCpus, 1),
        (I, Target::Task(t(2)), 1),
        (I, Target::Cpu(c(1)), 1),
    ];
    for (pool, target, w) in cases {
        s.reserve(pool, target, w)
            .unwrap_or_else(|e| panic!("{target:?}: {e}"));
        s.audit().unwrap();
        assert_ne!(s, base);
        assert!(s.release(pool, target, w));
        assert_eq!(
            s, base,
            "release of {pool:?} {target:?} x{w} did not restore the books"
        );
    }
    // And unwinding everything gives books equal to fresh ones.
    s.release(D, Target::Task(t(1)), 1);
    s.release(D, Target::TaskOnCpu(t(1), c(2)), 1);
    s.release(D, Target::Task(t(2)), 2);
    s.release(D, Target::Cpu(c(0)), 1);
    s.release(I, Target::TaskOnCpu(t(2), c(1)), 1);
    assert!(s.is_empty());
    assert_eq!(s, Slots::new(3, [2, 4]));
}

#[test]
fn clear_cpu_drops_cpu_bound_bookings_of_both_pools_and_keeps_tasks() {
    let mut s = Slots::new(2, [2, 4]);
    s.reserve(D, Target::Cpu(c(1)), 3).unwrap();
    s.reserve(I, Target::Cpu(c(1)), 2).unwrap();
    s.reserve(D, Target::Cpu(c(0)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(1), c(1)), 1).unwrap();
    assert_eq!(s.free(c(1), D), 0);
    s.clear_cpu(c(1));
    assert_eq!((s.cpu_bound(c(1), D), s.cpu_bound(c(1), I)), (0, 0));
    assert_eq!(s.cpu_bound(c(0), D), 1, "other CPUs keep theirs");
    assert_eq!(s.task_max(c(1), D), 1, "task bookings stay");
    assert_eq!(s.free(c(1), D), 3);
    s.audit().unwrap();
}

#[test]
fn free_everywhere_is_the_minimum_over_online_cpus_only() {
    let mut s = Slots::new(4, [0, 4]);
    s.reserve(D, Target::Cpu(c(0)), 3).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(1), c(1)), 2).unwrap();
    assert_eq!(s.free_everywhere(D, &|_| true), 1);
    assert_eq!(s.free_everywhere(D, &|cpu| cpu != c(0)), 2);
    assert_eq!(s.free_everywhere(D, &|cpu| cpu.0 >= 2), 4);
    assert_eq!(
        s.free_everywhere(D, &|_| false),
        4,
        "no CPU online: nothing limits"
    );
}

#[test]
fn inspection_reports_weights_per_task_and_cpu() {
    let mut s = Slots::new(2, [0, 4]);
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(1), c(1)), 2).unwrap();
    assert_eq!(s.task_weight(t(1), None, D), 1);
    assert_eq!(s.task_weight(t(1), Some(c(0)), D), 1);
    assert_eq!(s.task_weight(t(1), Some(c(1)), D), 3);
    assert_eq!(s.task_weight(t(2), Some(c(1)), D), 0);
    assert_eq!((s.task_max(c(0), D), s.task_max(c(1), D)), (1, 3));
    assert_eq!(
        (s.slots(D), s.slots(I), s.possible_cpus(), s.tasks()),
        (4, 0, 2, 1)
    );
}

// ---------------------------------------------------------------------------
// CPU-bound booking never allocates (the debugger books through it under a
// try-lock, where allocating could deadlock or fail).

#[test]
fn cpu_bound_booking_check_free_and_release_never_allocate() {
    let mut s = Slots::new(64, [2, 4]);
    // Tasks present, including TaskOnCpu weight, so task_max has work to do.
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(2), c(3)), 2).unwrap();
    let (n, ()) = allocations_in(|| {
        for cpu in 0..64 {
            s.reserve(D, Target::Cpu(c(cpu)), 1).unwrap();
            s.check(D, Target::Cpu(c(cpu)), 1).unwrap();
            assert!(s.free(c(cpu), D) <= 2);
        }
        assert!(s.reserve(D, Target::Cpu(c(3)), 2).is_err());
        s.reserve(D, Target::AllCpus, 1).unwrap();
        assert_eq!(s.free_everywhere(D, &|_| true), 0);
        assert!(s.release(D, Target::AllCpus, 1));
        for cpu in 0..64 {
            assert!(s.release(D, Target::Cpu(c(cpu)), 1));
        }
        s.clear_cpu(c(3));
        // Releasing a task's whole booking frees, never allocates.
        assert!(s.release(D, Target::TaskOnCpu(t(2), c(3)), 2));
    });
    assert_eq!(n, 0, "CPU-bound booking allocated {n} times");
    // The counter works: a task's first booking does allocate its entry.
    let (n, r) = allocations_in(|| s.reserve(D, Target::TaskOnCpu(t(7), c(1)), 1));
    r.unwrap();
    assert!(
        n > 0,
        "allocation counter saw nothing; the test above proves nothing"
    );
}

// ---------------------------------------------------------------------------
// Property test: random reserve/release/clear sequences against the naive model.

mod prop {
    use super::*;
    use naive::Naive;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(Pool, Target, usize),
        Release(Pool, Target, usize),
        ClearCpu(CpuId),
    }

    const CPUS: u32 = 3;

    fn target() -> impl Strategy<Value = Target> {
        // One CPU beyond the possible ones, to hit NoSuchCpu too.
        prop_oneof![
            (0..4u64).prop_map(|n| Target::Task(TaskId(n))),
            (0..4u64, 0..=CPUS).prop_map(|(n, c)| Target::TaskOnCpu(TaskId(n), CpuId(c))),
            (0..=CPUS).prop_map(|c| Target::Cpu(CpuId(c))),
            Just(Target::AllCpus),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let pool = prop_oneof![Just(Pool::Inst), Just(Pool::Data)];
        prop_oneof![
            5 => (pool.clone(), target(), 0..4usize).prop_map(|(p, t, w)| Op::Reserve(p, t, w)),
            4 => (pool, target(), 0..3usize).prop_map(|(p, t, w)| Op::Release(p, t, w)),
            1 => (0..CPUS).prop_map(|c| Op::ClearCpu(CpuId(c))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn slots_agree_with_the_naive_model(
            inst in 0..3usize,
            data in 1..5usize,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let mut s = Slots::new(CPUS as usize, [inst, data]);
            let mut m = Naive::new(CPUS as usize, [inst, data]);
            for op in ops {
                let before = s.clone();
                match op {
                    Op::Reserve(p, t, w) => {
                        let (got, want) = (s.reserve(p, t, w), m.reserve(p, t, w));
                        prop_assert_eq!(&got, &want, "reserve {:?} {:?} x{}", p, t, w);
                        if got.is_err() {
                            prop_assert_eq!(&s, &before, "a refused reserve changed the books");
                        }
                    }
                    Op::Release(p, t, w) => {
                        let (got, want) = (s.release(p, t, w), m.release(p, t, w));
                        prop_assert_eq!(got, want, "release {:?} {:?} x{}", p, t, w);
                        if !got {
                            prop_assert_eq!(&s, &before, "a refused release changed the books");
                        }
                    }
                    Op::ClearCpu(c) => {
                        s.clear_cpu(c);
                        m.clear_cpu(c);
                    }
                }
                prop_assert_eq!(s.audit(), Ok(()));
                for pool in Pool::ALL {
                    for cpu in 0..=CPUS {
                        let cpu = CpuId(cpu);
                        prop_assert_eq!(s.free(cpu, pool), m.free(cpu, pool), "free {:?} {:?}", cpu, pool);
                        prop_assert_eq!(s.cpu_bound(cpu, pool), m.cpu_bound(cpu, pool));
                        if cpu.0 < CPUS {
                            prop_assert_eq!(s.task_max(cpu, pool), m.task_max(cpu, pool));
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Events: after `new`, push and drain never allocate (dispatch pushes from
// exception context).

#[test]
fn events_push_overflow_and_drain_never_allocate_after_new() {
    use hwbreak_core::events::{Events, Record};
    let ev = Events::new(4, 8);
    let rec = |n: u64| Record::Branch {
        cpu: CpuId(1),
        from: n,
        to: n + 4,
        time: n,
    };
    let (n, delivered) = allocations_in(|| {
        let mut delivered = 0;
        for i in 0..100 {
            // Overflows CPU 1 (capacity 8), so the Lost path runs too.
            ev.push(CpuId(1), rec(i));
            ev.push(CpuId(9), rec(i)); // no such CPU: counted
            if i % 30 == 0 {
                delivered += ev.drain(CpuId(1), &mut |_| {});
            }
        }
        delivered + ev.drain_all(&mut |_, _| {})
    });
    assert_eq!(n, 0, "events allocated {n} times after new");
    assert!(ev.lost_total() > 100, "the overflow path did not run");
    assert!(delivered > 8);
}

/// `reserve_cpus` must equal `reserve(Cpu(c))` on each selected CPU in
/// ascending order, all or nothing, on both of its paths: the fast one (no
/// task books anything) and the per-CPU one.
#[test]
fn reserve_cpus_books_the_selected_cpus_all_or_nothing_like_one_by_one() {
    let online = [true, false, true, true];
    // Fast path: no tasks, room everywhere.
    let mut s = Slots::new(4, [0, 4]);
    let mut one_by_one = s.clone();
    s.reserve_cpus(D, &online, 2).unwrap();
    for n in [0, 2, 3] {
        one_by_one.reserve(D, Target::Cpu(c(n)), 2).unwrap();
    }
    assert_eq!(s, one_by_one);
    assert_eq!(s.cpu_bound(c(1), D), 0, "offline CPU 1 not booked");
    s.audit().unwrap();

    // No tasks, but CPU 3 is full: the fast path's bound fails, the per-CPU
    // check names CPU 3 and nothing changed.
    s.reserve(D, Target::Cpu(c(3)), 2).unwrap();
    let before = s.clone();
    assert_eq!(
        s.reserve_cpus(D, &online, 1),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(3),
            held: 4,
            total: 4,
            cpu_bound: 4,
            task_max: 0
        })
    );
    assert_eq!(s, before);
    // A full CPU that is not selected does not count.
    s.reserve_cpus(D, &[true, true, true, false], 1).unwrap();
    assert_eq!(
        (0..4).map(|n| s.cpu_bound(c(n), D)).collect::<Vec<_>>(),
        [3, 1, 3, 4]
    );

    // With task books: a task pinned to CPU 2 makes CPU 2 the first full one.
    let mut s = Slots::new(4, [0, 4]);
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    s.reserve(D, Target::TaskOnCpu(t(2), c(2)), 3).unwrap();
    let before = s.clone();
    assert_eq!(
        s.reserve_cpus(D, &online, 2),
        Err(Error::NoSlot {
            pool: D,
            cpu: c(2),
            held: 3,
            total: 4,
            cpu_bound: 0,
            task_max: 3
        })
    );
    assert_eq!(s, before, "a refused wide booking left a trace");
    s.reserve_cpus(D, &online, 1).unwrap();
    assert_eq!(s.free(c(2), D), 0);
    assert_eq!(s.free(c(0), D), 2);
    s.audit().unwrap();

    // The same validation as reserve: no such pool; weight 0 books nothing;
    // entries past the possible CPUs are ignored.
    assert_eq!(
        s.reserve_cpus(Pool::Inst, &online, 1),
        Err(Error::NoSuchPool { pool: Pool::Inst })
    );
    let before = s.clone();
    s.reserve_cpus(D, &online, 0).unwrap();
    assert_eq!(s, before);
    let mut s = Slots::new(2, [0, 4]);
    s.reserve_cpus(D, &[true, true, true, true], 1).unwrap();
    assert_eq!((s.cpu_bound(c(0), D), s.cpu_bound(c(1), D)), (1, 1));
}

#[test]
fn reserve_cpus_never_allocates() {
    let mut s = Slots::new(64, [0, 4]);
    let online = vec![true; 64];
    s.reserve(D, Target::Task(t(1)), 1).unwrap();
    let (n, r) = allocations_in(|| s.reserve_cpus(D, &online, 1));
    assert_eq!((n, r), (0, Ok(())));
}

#[test]
fn release_cpus_gives_back_what_reserve_cpus_booked_all_or_nothing() {
    let mut s = Slots::new(4, [0, 4]);
    let empty = s.clone();
    s.reserve_cpus(D, &[true, false, true, true], 1).unwrap();
    let booked = s.clone();
    // CPU 1 holds nothing: refused, nothing released.
    assert!(!s.release_cpus(D, [c(0), c(1), c(2)], 1));
    assert_eq!(s, booked);
    // A CPU that does not exist, and more than is held: refused.
    assert!(!s.release_cpus(D, [c(0), c(9)], 1));
    assert!(!s.release_cpus(D, [c(0)], 2));
    assert!(!s.release_cpus(D, [c(0)], usize::MAX));
    assert_eq!(s, booked);
    // In any order; weight 0 is a no-op.
    assert!(s.release_cpus(D, [c(0)], 0));
    assert!(s.release_cpus(D, [c(3), c(0), c(2)], 1));
    assert_eq!(s, empty, "books equal to never touched");
    s.audit().unwrap();
    // Equal to per-CPU release.
    s.reserve(D, Target::Cpu(c(1)), 2).unwrap();
    let mut one_by_one = s.clone();
    assert!(one_by_one.release(D, Target::Cpu(c(1)), 1));
    assert!(s.release_cpus(D, [c(1)], 1));
    assert_eq!(s, one_by_one);
}
