//! The simulator analogue of the kernel's
//! `perf bench breakpoint thread -b 4 -p 64 -t 64`
//! (`tools/perf/bench/breakpoint.c`, `bench_breakpoint_thread`), on 256
//! simulated x86-64 CPUs.
//!
//! What the kernel bench does, and what this does step for step:
//! - the main thread opens `-b 4` breakpoints on itself (`pid = 0, cpu = -1`,
//!   `attr.inherit = 1`, `HW_BREAKPOINT_RW`, length 1, each on its own byte):
//!   here 4 `Target::Task(main)` read-write 1-byte watches with
//!   [`BpOpts::inherit`];
//! - it starts `-p 64` "parallel" threads (each inherits the 4 breakpoints);
//! - those share one counter of `bench_repeat` (default 10) batches: whoever
//!   decrements it first creates `-t 64` passive threads (each inheriting the 4
//!   breakpoints), wakes them and joins them. So 10 of the 64 parallel threads
//!   run one batch each and the other 54 exit at once: here the first 10
//!   parallel tasks run `Spawn × 64, Join, Exit` and the rest `Exit`;
//! - a passive thread blocks on a futex until woken, then exits: here `Nop, Exit`;
//! - the figure is total time / (bench_repeat × threads) = per created thread.
//!
//! Each criterion sample builds the machine, the main task and its
//! breakpoints outside the timing, then times the run to completion and
//! reports it divided by the 640 created threads: **time per thread**, like
//! perf's `usecs/op`. The peer, measured in the same run, is the identical
//! workload without breakpoints; booking cost per thread = with − without.
//!
//! ```text
//! cargo bench -p hwbreak-sim --bench perf_bench_thread
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hwbreak_core::{BpAttr, Target};
use hwbreak_sim::{BpOpts, Program, Sim};

const CPUS: usize = 256;
const BREAKPOINTS: u64 = 4;
const PARALLEL: usize = 64;
const THREADS: usize = 64;
/// perf's default `bench_repeat`.
const REPEAT: usize = 10;
/// Threads created per run, perf's `op` count.
const OPS: u32 = (REPEAT * THREADS) as u32;

/// `struct breakpoint { int fd; char watched; }`: 8 bytes apart.
const WATCHED: u64 = 0x60_1000;

fn setup(with_breakpoints: bool) -> Sim {
    let mut sim = Sim::x86(CPUS, 42).expect("256 CPUs");
    sim.set_logging(false);
    let passive = Program::new().nop().exit();
    let mut batch = Program::new();
    for _ in 0..THREADS {
        batch = batch.spawn(passive.clone(), true);
    }
    let batch = batch.join().exit();
    let idle = Program::new().exit();
    let mut main = Program::new();
    for p in 0..PARALLEL {
        main = main.spawn(
            if p < REPEAT {
                batch.clone()
            } else {
                idle.clone()
            },
            true,
        );
    }
    let main = sim.spawn(main.join().exit());
    if with_breakpoints {
        for i in 0..BREAKPOINTS {
            sim.register_with(
                BpAttr::read_write(WATCHED + 8 * i, 1),
                Target::Task(main),
                BpOpts {
                    inherit: true,
                    ..Default::default()
                },
            )
            .expect("4 breakpoints fit one task");
        }
    }
    sim
}

fn run(mut sim: Sim) -> Sim {
    let done = sim.run_to_completion(10_000_000).expect("no layer error");
    assert!(done, "every thread exited");
    sim
}

/// Check the workload once, outside the timing: every thread was created and
/// got its 4 inherited breakpoints, and all of them were released at exit.
fn check(with_breakpoints: bool) {
    let sim = run(setup(with_breakpoints));
    let s = sim.stats();
    assert_eq!(s.spawned as usize, 1 + PARALLEL + REPEAT * THREADS);
    assert_eq!(s.exited, s.spawned);
    assert_eq!(s.spawn_failed, 0);
    assert!(
        sim.layer.registered().is_empty(),
        "exits released every copy"
    );
    assert!(sim.hw.faults().is_empty());
}

fn bench(c: &mut Criterion) {
    check(true);
    check(false);
    let mut g = c.benchmark_group("perf_bench_breakpoint_thread_b4_p64_t64_256cpus");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, with) in [("with_4_breakpoints", true), ("without_breakpoints", false)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let sim = setup(with);
                    let t = Instant::now();
                    let done = black_box(run(sim));
                    total += t.elapsed();
                    drop(done);
                }
                // Report time per created thread, as perf's usecs/op.
                total / OPS
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
