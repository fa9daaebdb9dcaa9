//! Book and release one CPU-independent task breakpoint (`Target::Task`)
//! while 1k, 10k or 100k tasks already hold breakpoints, on 256 and 4096
//! CPUs: `core::slots::Slots` (histograms) against its same-run peer, the
//! naive max-scan model in `naive_slots` (O(bookings × CPUs) per request, the
//! shape of Linux's accounting before the 2022 histogram rewrite).
//!
//! Run: `cargo bench -p hwbreak-core --bench slots -- --warm-up-time 1 --measurement-time 3`
//! Figures: docs/PERFORMANCE.md, "Slot booking (core::slots)".
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use hwbreak_core::arch::Pool;
use hwbreak_core::slots::Slots;
use hwbreak_core::{CpuId, Target, TaskId};

mod naive_slots;
use naive_slots::Naive;

const SIZES: [(usize, usize); 6] = [
    (256, 1_000),
    (256, 10_000),
    (256, 100_000),
    (4096, 1_000),
    (4096, 10_000),
    (4096, 100_000),
];

/// x86-64: one shared pool of 4 slots.
const SLOTS: [usize; 2] = [0, 4];

/// The standing load: task `i` holds `i % 2 + 1` slots on every CPU, and
/// CPU 0 has one CPU-bound breakpoint (so the CPU-bound histogram is not
/// trivially empty). Every task then has room for one more.
fn load(tasks: usize, mut book: impl FnMut(Target, usize)) {
    book(Target::Cpu(CpuId(0)), 1);
    for i in 0..tasks as u64 {
        book(Target::Task(TaskId(i)), (i % 2 + 1) as usize);
    }
}

fn bench_histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("slots_task_book_release/histogram");
    for (cpus, tasks) in SIZES {
        let mut s = Slots::new(cpus, SLOTS);
        load(tasks, |t, w| s.reserve(Pool::Data, t, w).unwrap());
        let size = format!("{cpus}cpus/{tasks}tasks");
        // One task that already holds a breakpoint books one more: the
        // algorithm's own cost, its entry warm in cache.
        let hot = Target::Task(TaskId(tasks as u64 / 2));
        g.bench_function(BenchmarkId::new("hot-task", &size), |b| {
            b.iter(|| {
                s.reserve(Pool::Data, black_box(hot), 1).unwrap();
                assert!(s.release(Pool::Data, black_box(hot), 1));
            })
        });
        // A task's first booking (a new thread inheriting a breakpoint):
        // inserts, then removes, its entry.
        let new = Target::Task(TaskId(u64::MAX));
        g.bench_function(BenchmarkId::new("new-task", &size), |b| {
            b.iter(|| {
                s.reserve(Pool::Data, black_box(new), 1).unwrap();
                assert!(s.release(Pool::Data, black_box(new), 1));
            })
        });
        // A different task each time, scattered over all `tasks`: adds the
        // cache and TLB misses of reaching a cold entry among 100k.
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("random-task", &size), |b| {
            b.iter(|| {
                let t = Target::Task(TaskId(i % tasks as u64));
                i = i.wrapping_add(7919);
                s.reserve(Pool::Data, black_box(t), 1).unwrap();
                assert!(s.release(Pool::Data, black_box(t), 1));
            })
        });
    }
    g.finish();
}

fn bench_naive(c: &mut Criterion) {
    let mut g = c.benchmark_group("slots_task_book_release/naive");
    // One booking costs up to a second at 100k tasks x 4096 CPUs: take few,
    // equal samples rather than criterion's growing ones.
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (cpus, tasks) in SIZES {
        let mut m = Naive::new(cpus, SLOTS);
        load(tasks, |t, w| m.load(Pool::Data, t, w));
        let mut i = 0u64;
        g.bench_function(
            BenchmarkId::from_parameter(format!("{cpus}cpus/{tasks}tasks")),
            |b| {
                b.iter(|| {
                    let t = Target::Task(TaskId(i % tasks as u64));
                    i = i.wrapping_add(7919);
                    m.reserve(Pool::Data, black_box(t), 1).unwrap();
                    assert!(m.release(Pool::Data, black_box(t), 1));
                })
            },
        );
    }
    g.finish();
}

/// Both answer alike on the loaded books before anything is timed.
fn agree(c: &mut Criterion) {
    let _ = c;
    let (cpus, tasks) = (64, 500);
    let mut s = Slots::new(cpus, SLOTS);
    let mut m = Naive::new(cpus, SLOTS);
    load(tasks, |t, w| {
        s.reserve(Pool::Data, t, w).unwrap();
        m.reserve(Pool::Data, t, w).unwrap();
    });
    for i in 0..tasks as u64 {
        for w in 1..=3 {
            let t = Target::Task(TaskId(i));
            assert_eq!(s.reserve(Pool::Data, t, w), m.reserve(Pool::Data, t, w));
            assert_eq!(s.release(Pool::Data, t, w), m.release(Pool::Data, t, w));
        }
    }
    for cpu in 0..cpus as u32 {
        assert_eq!(
            s.free(CpuId(cpu), Pool::Data),
            m.free(CpuId(cpu), Pool::Data)
        );
    }
}

criterion_group!(benches, agree, bench_histogram, bench_naive);
criterion_main!(benches);
