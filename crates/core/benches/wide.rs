//! Wide registration (core::layer): register + unregister one `AllCpus`
//! breakpoint at 64, 1024 and 4096 CPUs on x86-64, against a peer measured in
//! the same run: the same number of `Target::Cpu` registrations done one by
//! one (then unregistered one by one), i.e. what a caller without wide
//! registration would do. Issue target: wide ≤ 100 µs at 1024 CPUs.
//!
//! The machine is minimal on purpose (a flat array of registers per CPU) so
//! the figure is the layer's cost: booking, fan-out, install tables, arch
//! encoding. Run: `cargo bench -p hwbreak-core --bench wide`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::{DebugRegs, Pool, Reg};
use hwbreak_core::layer::{Layer, Request};
use hwbreak_core::{BpAttr, CpuId, Machine, Target, TaskId};

/// One CPU's x86 debug registers: DR0..3, DR6, DR7, and the AMD mask MSRs.
#[derive(Default, Clone, Copy)]
struct Dr([u64; 10]);

fn index(r: Reg) -> usize {
    match r {
        Reg::Addr(_, i) => i as usize & 3,
        Reg::Ctrl(_, i) => 4 + (i as usize & 3),
        Reg::Status => 8,
        Reg::Control => 9,
    }
}

impl DebugRegs for Dr {
    fn read(&self, r: Reg) -> u64 {
        self.0[index(r)]
    }
    fn write(&mut self, r: Reg, v: u64) {
        self.0[index(r)] = v;
    }
}

struct Flat {
    regs: Vec<Dr>,
}

impl Machine for Flat {
    fn possible_cpus(&self) -> usize {
        self.regs.len()
    }
    fn is_online(&self, cpu: CpuId) -> bool {
        cpu.idx() < self.regs.len()
    }
    fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs {
        &mut self.regs[cpu.idx()]
    }
    fn current(&self, _cpu: CpuId) -> Option<TaskId> {
        None
    }
    fn now(&self) -> u64 {
        0
    }
}

/// This thread's CPU time. The machine these figures come from is shared
/// (many builds on 2 cores), so wall time includes time spent descheduled;
/// thread CPU time does not. Both are reported.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // the kernel supports on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Run `f` `iters` times, timed by this thread's CPU time.
fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t0 = thread_cpu_time();
    for _ in 0..iters {
        f();
    }
    thread_cpu_time() - t0
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wide_register_unregister");
    for n in [64usize, 1024, 4096] {
        let layer = Layer::new(Box::new(X86_64::default()), n, 16);
        let mut m = Flat {
            regs: vec![Dr::default(); n],
        };
        // One resident wide breakpoint, so the booked one is not the only one.
        layer
            .register(
                &mut m,
                Request::new(BpAttr::write(0x1000, 8), Target::AllCpus),
            )
            .unwrap();
        let wide = |m: &mut Flat| {
            let id = layer
                .register(m, Request::new(BpAttr::write(0x2000, 8), Target::AllCpus))
                .unwrap();
            layer.unregister(m, id).unwrap();
        };
        g.bench_with_input(BenchmarkId::new("wide", n), &n, |b, _| {
            b.iter(|| wide(&mut m))
        });
        g.bench_with_input(BenchmarkId::new("wide_cpu_time", n), &n, |b, _| {
            b.iter_custom(|iters| cpu_timed(iters, || wide(&mut m)))
        });
        let mut ids = Vec::with_capacity(n);
        let mut one_by_one = |m: &mut Flat| {
            for cpu in 0..n {
                let req = Request::new(BpAttr::write(0x2000, 8), Target::Cpu(CpuId(cpu as u32)));
                ids.push(layer.register(m, req).unwrap());
            }
            for id in ids.drain(..) {
                layer.unregister(m, id).unwrap();
            }
        };
        g.bench_with_input(BenchmarkId::new("per_cpu_one_by_one", n), &n, |b, _| {
            b.iter(|| one_by_one(&mut m))
        });
        g.bench_with_input(
            BenchmarkId::new("per_cpu_one_by_one_cpu_time", n),
            &n,
            |b, _| b.iter_custom(|iters| cpu_timed(iters, || one_by_one(&mut m))),
        );
        assert_eq!(layer.registered().len(), 1, "the bench leaks nothing");
        assert_eq!(
            layer.debugger().free_everywhere(Pool::Data),
            Ok(3),
            "every booking of the bench was given back"
        );
    }
    // With a task breakpoint booked too, `Slots::reserve_cpus` cannot take
    // its no-task fast path and checks every CPU beside its heaviest task:
    // the slow path, at 1024 CPUs only.
    let n = 1024;
    let layer = Layer::new(Box::new(X86_64::default()), n, 16);
    let mut m = Flat {
        regs: vec![Dr::default(); n],
    };
    for req in [
        Request::new(BpAttr::write(0x1000, 8), Target::AllCpus),
        Request::new(BpAttr::write(0x3000, 8), Target::Task(TaskId(7))),
    ] {
        layer.register(&mut m, req).unwrap();
    }
    g.bench_with_input(
        BenchmarkId::new("wide_cpu_time_beside_a_task_breakpoint", n),
        &n,
        |b, _| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    let id = layer
                        .register(
                            &mut m,
                            Request::new(BpAttr::write(0x2000, 8), Target::AllCpus),
                        )
                        .unwrap();
                    layer.unregister(&mut m, id).unwrap();
                })
            })
        },
    );
    assert_eq!(layer.debugger().free_everywhere(Pool::Data), Ok(2));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
