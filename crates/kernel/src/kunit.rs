//! Linux's KUnit suite `kernel/events/hw_breakpoint_test.c`, the nine cases,
//! run inside the kernel against the layer on the real debug registers
//! (ported from `crates/core/tests/kunit.rs`, which runs them on the books
//! alone). They run in a task, so `current` is a real running task whose
//! breakpoints the context switch installs; `get_other_task()` is a task
//! that exists but never runs. Every refusal must change nothing, and after
//! every step the calling CPU's DR7 must enable exactly the slots its
//! install table holds.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::string::String;
use alloc::vec::Vec;
use hwbreak_core::layer::Request;
use hwbreak_core::{BpAttr, BpId, CpuId, Error, Target, TaskId};

use crate::dr::{self, with_layer};
use crate::{fmt, percpu, sched, CaseResult};

/// `MAX_TEST_BREAKPOINTS` in the kernel test.
const MAX_TEST_BREAKPOINTS: usize = 512;
const NSLOTS: usize = 4;

static ARR: [AtomicU64; MAX_TEST_BREAKPOINTS] = [const { AtomicU64::new(0) }; MAX_TEST_BREAKPOINTS];

struct Kunit {
    current: TaskId,
    other: TaskId,
    test_bps: Vec<Option<BpId>>,
    idx: usize,
}

type R = Result<(), String>;

impl Kunit {
    fn target(cpu: Option<CpuId>, tsk: Option<TaskId>) -> Target {
        match (cpu, tsk) {
            (None, Some(t)) => Target::Task(t),
            (Some(c), Some(t)) => Target::TaskOnCpu(t, c),
            (Some(c), None) => Target::Cpu(c),
            (None, None) => Target::AllCpus, // never used by the suite
        }
    }

    fn register_test_bp(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>) -> Result<BpId, Error> {
        let addr = &ARR[self.idx % MAX_TEST_BREAKPOINTS] as *const AtomicU64 as u64;
        let req = Request::new(BpAttr::write(addr, 8).privileged(), Self::target(cpu, tsk));
        with_layer(|l, m| l.register(m, req))
    }

    /// DR7 of this CPU enables exactly the slots its table holds.
    fn hw_agrees(&self) -> R {
        let (dr7, n) = with_layer(|l, _| {
            let c = percpu::this_cpu();
            (dr::hw_read(7), l.installed(CpuId(c as u32)).len())
        });
        let on = (0..4).filter(|i| dr7 & (0b11 << (2 * i)) != 0).count();
        if on != n {
            return Err(fmt!("DR7 {dr7:#x} enables {on} slots, the table holds {n}"));
        }
        Ok(())
    }

    fn expect_nospc(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>) -> R {
        let before = with_layer(|l, _| l.snapshot());
        let r = self.register_test_bp(cpu, tsk);
        let after = with_layer(|l, _| l.snapshot());
        match r {
            Err(Error::NoSlot { total, .. }) if total == NSLOTS => {}
            other => {
                if let Ok(id) = other {
                    let _ = with_layer(|l, m| l.unregister(m, id));
                }
                return Err(fmt!(
                    "expected NoSlot for cpu {cpu:?} task {tsk:?}, got {other:?}"
                ));
            }
        }
        if before != after {
            return Err(fmt!("a refused registration changed the layer"));
        }
        self.hw_agrees()
    }

    fn fill_one_bp_slot(&mut self, cpu: Option<CpuId>, tsk: Option<TaskId>) -> R {
        let id = self
            .register_test_bp(cpu, tsk)
            .map_err(|e| fmt!("fill_one_bp_slot(cpu {cpu:?}, task {tsk:?}): {e}"))?;
        self.test_bps[self.idx] = Some(id);
        self.idx += 1;
        self.hw_agrees()
    }

    fn fill_bp_slots(
        &mut self,
        cpu: Option<CpuId>,
        tsk: Option<TaskId>,
        skip: usize,
    ) -> Result<bool, String> {
        for _ in 0..NSLOTS - skip {
            self.fill_one_bp_slot(cpu, tsk)?;
        }
        Ok(self.idx + NSLOTS <= MAX_TEST_BREAKPOINTS)
    }

    fn unregister_test_bp(&mut self, i: usize) -> R {
        let id = self.test_bps[i]
            .take()
            .ok_or(fmt!("test_bps[{i}] is empty"))?;
        with_layer(|l, m| l.unregister(m, id)).map_err(|e| fmt!("{e}"))?;
        self.hw_agrees()
    }

    fn cpu(&self, n: usize) -> Option<CpuId> {
        Some(CpuId(n as u32))
    }

    fn exit(mut self) -> R {
        for i in 0..MAX_TEST_BREAKPOINTS {
            if self.test_bps[i].is_some() {
                self.unregister_test_bp(i)?;
            }
        }
        let left = with_layer(|l, _| l.registered());
        if !left.is_empty() {
            return Err(fmt!("left registered after test_exit: {left:?}"));
        }
        self.hw_agrees()
    }
}

type Case = (&'static str, usize, fn(&mut Kunit) -> R);

const ANY: Option<CpuId> = None;

const CASES: &[Case] = &[
    ("test_one_cpu", 0, |k| {
        k.fill_bp_slots(k.cpu(0), None, 0)?;
        k.expect_nospc(ANY, Some(k.current))?;
        k.expect_nospc(k.cpu(0), None)
    }),
    ("test_many_cpus", 0, |k| {
        for cpu in 0..percpu::ncpus() {
            let c = k.cpu(cpu);
            let more = k.fill_bp_slots(c, None, 0)?;
            k.expect_nospc(c, None)?;
            if !more {
                break;
            }
        }
        Ok(())
    }),
    ("test_one_task_on_all_cpus", 0, |k| {
        let cur = Some(k.current);
        k.fill_bp_slots(ANY, cur, 0)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.unregister_test_bp(0)?;
        k.fill_one_bp_slot(k.cpu(0), None)
    }),
    ("test_two_tasks_on_all_cpus", 0, |k| {
        let (cur, oth) = (Some(k.current), Some(k.other));
        k.fill_bp_slots(ANY, cur, 0)?;
        k.fill_bp_slots(ANY, oth, 0)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(ANY, oth)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), oth)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.unregister_test_bp(0)?;
        k.expect_nospc(k.cpu(0), None)
    }),
    ("test_one_task_on_one_cpu", 0, |k| {
        let cur = Some(k.current);
        k.fill_bp_slots(k.cpu(0), cur, 0)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.unregister_test_bp(0)?;
        k.fill_one_bp_slot(k.cpu(0), None)
    }),
    ("test_one_task_mixed", 3, |k| {
        let cur = Some(k.current);
        k.fill_one_bp_slot(k.cpu(0), cur)?;
        k.fill_bp_slots(ANY, cur, 1)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.unregister_test_bp(0)?;
        k.unregister_test_bp(1)?;
        k.fill_one_bp_slot(k.cpu(0), None)?;
        k.fill_one_bp_slot(k.cpu(0), None)?;
        k.expect_nospc(k.cpu(0), None)
    }),
    ("test_two_tasks_on_one_cpu", 0, |k| {
        let (cur, oth) = (Some(k.current), Some(k.other));
        k.fill_bp_slots(k.cpu(0), cur, 0)?;
        k.fill_bp_slots(k.cpu(0), oth, 0)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(ANY, oth)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), oth)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.fill_bp_slots(k.cpu(1), None, 0).map(|_| ())
    }),
    ("test_two_tasks_on_one_all_cpus", 0, |k| {
        let (cur, oth) = (Some(k.current), Some(k.other));
        k.fill_bp_slots(k.cpu(0), cur, 0)?;
        k.fill_bp_slots(ANY, oth, 0)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(ANY, oth)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), oth)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.expect_nospc(k.cpu(1), None)
    }),
    ("test_task_on_all_and_one_cpu", 3, |k| {
        let cur = Some(k.current);
        k.fill_bp_slots(ANY, cur, 2)?;
        let tsk_on_cpu_idx = k.idx;
        k.fill_one_bp_slot(k.cpu(0), cur)?;
        k.fill_one_bp_slot(ANY, cur)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), None)?;
        let cpu_idx = k.idx;
        k.fill_one_bp_slot(k.cpu(1), None)?;
        k.expect_nospc(k.cpu(1), None)?;
        k.unregister_test_bp(tsk_on_cpu_idx)?;
        k.expect_nospc(ANY, cur)?;
        k.unregister_test_bp(cpu_idx)?;
        k.fill_one_bp_slot(ANY, cur)?;
        k.expect_nospc(ANY, cur)?;
        k.expect_nospc(k.cpu(0), cur)?;
        k.expect_nospc(k.cpu(0), None)?;
        k.expect_nospc(k.cpu(1), None)
    }),
];

static FAILED: spin::Mutex<Option<String>> = spin::Mutex::new(None);

/// The nine cases, each in a fresh kernel task (the suite's `current`).
pub fn kunit() -> CaseResult {
    if percpu::ncpus() < 2 {
        return Err(fmt!("the suite needs at least 2 CPUs"));
    }
    // get_other_task(): a task that exists and never runs.
    let other = sched::create(|| {});
    let other_id = TaskId(other.id);
    for &(name, _requires, case) in CASES {
        static DONE: AtomicU64 = AtomicU64::new(0);
        DONE.store(0, Ordering::SeqCst);
        sched::spawn(move || {
            let current = TaskId(sched::current_task().unwrap_or(0));
            let mut k = Kunit {
                current,
                other: other_id,
                test_bps: alloc::vec![None; MAX_TEST_BREAKPOINTS],
                idx: 0,
            };
            let r = case(&mut k).and(k.exit());
            if let Err(e) = r {
                *FAILED.lock() = Some(fmt!("{name}: {e}"));
            }
            DONE.store(1, Ordering::SeqCst);
        });
        while DONE.load(Ordering::SeqCst) == 0 {
            core::hint::spin_loop();
        }
        if let Some(e) = FAILED.lock().take() {
            return Err(e);
        }
        crate::kprintln!("  kunit {name}: ok");
    }
    sched::discard(other);
    Ok(())
}
