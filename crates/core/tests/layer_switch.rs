//! The context switch takes no global lock: `switch_task` never holds the
//! books while it touches the machine, and it keeps working while another
//! thread holds them. Concurrent registration and switching keep the
//! invariant that a CPU's registers hold exactly the running task's enabled
//! breakpoints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hwbreak_core::arch::{x86_64::X86_64, DebugRegs, Pool, Reg};
use hwbreak_core::layer::{Layer, Request};
use hwbreak_core::{BpAttr, CpuId, Error, Machine, Target, TaskId};

/// Register files per CPU, what runs where, and a probe that asks the layer's
/// non-blocking debugger path whether the books are locked whenever the
/// layer touches the machine during a switch.
struct Probe {
    regs: Vec<Regs>,
    current: Arc<Mutex<Vec<Option<TaskId>>>>,
    layer: Option<Arc<Layer>>,
    in_switch: bool,
    /// Machine calls made by switch_task while the books were locked.
    books_held: Arc<AtomicU64>,
    /// Machine calls made by switch_task.
    calls: Arc<AtomicU64>,
}

#[derive(Default, Clone)]
struct Regs(BTreeMap<Reg, u64>, Option<ProbeHook>);

#[derive(Clone)]
struct ProbeHook {
    layer: Arc<Layer>,
    books_held: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl ProbeHook {
    fn probe(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if matches!(
            self.layer.debugger().free_everywhere(Pool::Data),
            Err(Error::Busy)
        ) {
            self.books_held.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl DebugRegs for Regs {
    fn read(&self, r: Reg) -> u64 {
        self.0.get(&r).copied().unwrap_or(0)
    }
    fn write(&mut self, r: Reg, v: u64) {
        if let Some(h) = &self.1 {
            h.probe();
        }
        self.0.insert(r, v);
    }
}

impl Probe {
    fn new(cpus: usize) -> Self {
        Probe {
            regs: vec![Regs::default(); cpus],
            current: Arc::new(Mutex::new(vec![None; cpus])),
            layer: None,
            in_switch: false,
            books_held: Arc::new(AtomicU64::new(0)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Switch `cpu` to `next` the way a kernel does: current first, then the
    /// layer's hook, with the probe armed.
    fn switch(&mut self, layer: &Layer, cpu: u32, next: Option<u64>) {
        let prev = {
            let mut cur = self.current.lock().unwrap();
            std::mem::replace(&mut cur[cpu as usize], next.map(TaskId))
        };
        self.in_switch = true;
        let hook = self.layer.clone().map(|layer| ProbeHook {
            layer,
            books_held: self.books_held.clone(),
            calls: self.calls.clone(),
        });
        for r in &mut self.regs {
            r.1 = hook.clone();
        }
        layer.switch_task(self, CpuId(cpu), prev, next.map(TaskId), false);
        for r in &mut self.regs {
            r.1 = None;
        }
        self.in_switch = false;
    }

    fn dr7(&self, cpu: usize) -> u64 {
        self.regs[cpu].read(Reg::Control)
    }
}

impl Machine for Probe {
    fn possible_cpus(&self) -> usize {
        self.regs.len()
    }
    fn is_online(&self, _: CpuId) -> bool {
        true
    }
    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        &mut self.regs[cpu.idx()]
    }
    fn current(&self, cpu: CpuId) -> Option<TaskId> {
        self.current.lock().unwrap()[cpu.idx()]
    }
    fn now(&self) -> u64 {
        if self.in_switch {
            if let Some(l) = &self.layer {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if matches!(l.debugger().free_everywhere(Pool::Data), Err(Error::Busy)) {
                    self.books_held.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        0
    }
}

fn task_bp(layer: &Layer, m: &mut Probe, task: u64, addr: u64) -> hwbreak_core::BpId {
    layer
        .register(
            m,
            Request::new(BpAttr::write(addr, 8), Target::Task(TaskId(task))),
        )
        .unwrap()
}

#[test]
fn switch_task_never_holds_the_books_while_it_programs_the_registers() {
    let layer = Arc::new(Layer::new(Box::new(X86_64::default()), 2, 64));
    let mut m = Probe::new(2);
    m.layer = Some(layer.clone());
    task_bp(&layer, &mut m, 7, 0x1000);
    task_bp(&layer, &mut m, 7, 0x2000);
    task_bp(&layer, &mut m, 8, 0x3000);
    for round in 0..10 {
        m.switch(&layer, 0, Some(7));
        assert_eq!(
            m.dr7(0) & 0b101,
            0b101,
            "round {round}: task 7's two slots on cpu0"
        );
        m.switch(&layer, 0, Some(8));
        assert_eq!(m.dr7(0) & 0b101, 0b001, "round {round}: only task 8's slot");
        m.switch(&layer, 1, Some(7)); // 7 migrates to cpu1
        m.switch(&layer, 0, None);
        assert_eq!(m.dr7(0) & 0xff, 0, "cpu0 idle");
        assert_eq!(m.dr7(1) & 0b101, 0b101, "task 7 on cpu1");
        m.switch(&layer, 1, None);
    }
    assert!(m.calls.load(Ordering::SeqCst) > 0, "the probe never ran");
    assert_eq!(
        m.books_held.load(Ordering::SeqCst),
        0,
        "switch_task touched the machine while holding the books"
    );
}

/// One thread switches tasks 1 and 2 on CPU 0 while another registers and
/// unregisters breakpoints of task 1 (holding the books meanwhile): the
/// switches never wait for the books, and at every quiescent point CPU 0's
/// registers hold exactly the running task's breakpoints.
#[test]
fn concurrent_registration_and_switches_keep_the_running_tasks_breakpoints_installed() {
    let layer = Arc::new(Layer::new(Box::new(X86_64::default()), 1, 64));
    let mut m = Probe::new(1);
    let current = m.current.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, stop2, cur2) = (layer.clone(), stop.clone(), current.clone());
    let registrar = std::thread::spawn(move || {
        // Its own machine view of the same CPU: registration writes here,
        // the switching thread's registers are checked separately through
        // the layer's install table (the registers follow it exactly).
        let mut mm = Probe::new(1);
        mm.current = cur2;
        let mut n = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            let id = task_bp(&l2, &mut mm, 1, 0x8000 + 8 * (n % 16));
            l2.unregister(&mut mm, id).unwrap();
            n += 1;
        }
        n
    });
    let keep = task_bp(&layer, &mut m, 1, 0x100);
    for i in 0..20_000u64 {
        let next = if i % 2 == 0 { 1 } else { 2 };
        m.switch(&layer, 0, Some(next));
        let installed = layer.installed(CpuId(0));
        if next == 2 {
            assert!(
                installed.is_empty(),
                "task 2 has no breakpoints: {installed:?}"
            );
        } else {
            assert!(
                installed.iter().any(|b| b.bp == keep),
                "task 1's breakpoint missing while it runs: {installed:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = registrar.join().unwrap();
    assert!(rounds > 0);
    m.switch(&layer, 0, Some(1));
    assert_eq!(layer.installed(CpuId(0)).len(), 1, "only `keep` is left");
    layer.unregister(&mut m, keep).unwrap();
    assert!(layer.installed(CpuId(0)).is_empty());
}
