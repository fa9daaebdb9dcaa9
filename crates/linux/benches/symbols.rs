//! Per-hit symbolization cost: `hwbreak watch` symbolizes every hit's IP and
//! stack, so a repeated IP must be cheap.
//!
//! Peer, measured in the same run: blazesym asked directly for the same IPs
//! (it caches parsed files but not answers). Ours answers repeats from an
//! IP-keyed cache. Also: resolving a DWARF field in a running process.
//!
//! `cargo bench -p hwbreak-linux --bench symbols`

use std::hint::black_box;

use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolizer as Blaze};
use criterion::{criterion_group, criterion_main, Criterion};
use hwbreak_linux::symbols::{Resolver, Symbolizer};

#[inline(never)]
fn bench_target_a(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[inline(never)]
fn bench_target_b(x: u64) -> u64 {
    x ^ 0x55
}

/// A 16-frame "stack" of IPs inside this binary's functions.
fn stack() -> Vec<u64> {
    let fs = [
        bench_target_a as fn(u64) -> u64 as usize as u64,
        bench_target_b as fn(u64) -> u64 as usize as u64,
        stack as fn() -> Vec<u64> as usize as u64,
        main as fn() as usize as u64,
    ];
    (0..16).map(|i| fs[i % 4] + (i as u64 / 4)).collect()
}

fn symbolize(c: &mut Criterion) {
    let pid = std::process::id() as i32;
    let ips = stack();
    let mut ours = Symbolizer::new(pid).expect("own maps");
    ours.symbolize(&ips); // warm: what every hit after the first sees
    let blaze = Blaze::new();
    let src = Source::Process(Process::new((pid as u32).into()));
    let _ = blaze.symbolize(&src, Input::AbsAddr(&ips)); // warm its file cache too
    let mut g = c.benchmark_group("symbolize_16_frames");
    g.bench_function("hwbreak_cached", |b| {
        b.iter(|| black_box(ours.symbolize(black_box(&ips))))
    });
    g.bench_function("blazesym_process_peer", |b| {
        b.iter(|| {
            black_box(
                blaze
                    .symbolize(&src, Input::AbsAddr(black_box(&ips)))
                    .map(|v| v.len()),
            )
        })
    });
    g.finish();
    black_box(bench_target_a(1) + bench_target_b(2));
}

fn resolve(c: &mut Criterion) {
    let r = Resolver::for_pid(std::process::id() as i32).expect("own process");
    // A global of this very binary, through DWARF (index built on first use).
    let first = r
        .resolve("symbols::GLOBAL.count")
        .expect("the bench's own global resolves");
    assert_eq!(first.addr, std::ptr::addr_of!(GLOBAL.count) as u64);
    c.bench_function("resolve_global_field_indexed", |b| {
        b.iter(|| {
            black_box(
                r.resolve(black_box("symbols::GLOBAL.count"))
                    .map(|x| x.addr),
            )
        })
    });
    black_box(GLOBAL.flag);
}

/// A global for `resolve` to find.
struct Global {
    flag: u32,
    count: u64,
}

#[used]
static GLOBAL: Global = Global { flag: 1, count: 2 };

criterion_group!(benches, symbolize, resolve);
criterion_main!(benches);
