//! `hwbreak report` on a 10^6-hit record file: read, aggregate, symbolize the
//! top 10 stacks. Target: ≤ 2 s. The peer, measured in the same run, is the
//! floor: reading the same file's bytes with `std::fs::read`.
//!
//! The file's stacks are real addresses of this benchmark binary's own
//! functions, with its real module map, so symbolization is real work
//! (blazesym over DWARF). 1000 distinct stacks of depth 8, 4 watches, 64 threads.

use criterion::{criterion_group, criterion_main, Criterion};
use hwbreak::recfile::{Header, Module, WatchEntry, Writer};
use hwbreak_core::events::{Extended, Extension, Sample};
use hwbreak_core::Access;
use hwbreak_core::{BpId, CpuId, TaskId};
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// This binary's executable file mappings, from the library's maps reader.
fn self_modules() -> Vec<Module> {
    let pid = std::process::id() as i32;
    hwbreak_linux::symbols::read_maps(pid)
        .unwrap()
        .iter()
        .filter(|m| m.is_file() && m.is_exec())
        .map(|m| hwbreak::offline::module(m, pid))
        .collect()
}

fn make_file(dir: &Path, hits: u64) -> PathBuf {
    let path = dir.join("million.hwb");
    let modules = self_modules();
    // Code addresses inside this binary: spread over its text mapping.
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let text = modules
        .iter()
        .find(|m| Path::new(&m.path) == exe)
        .expect("own text mapping")
        .clone();
    let span = (text.end - text.start).max(1);
    let ip = |k: u64| text.start + (k.wrapping_mul(2_654_435_761) % span);
    let header = Header {
        values: false,
        pid: 1,
        start_ns: 0,
        watches: (0..4)
            .map(|i| WatchEntry {
                name: format!("w{i}"),
                addr: 0x1000 + 8 * i,
                len: 8,
                access: Access::Write,
            })
            .collect(),
        modules,
    };
    let f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = Writer::new(f, &header).unwrap();
    for i in 0..hits {
        let s = i % 1000;
        let stack: Vec<u64> = (1..8).map(|d| ip(s * 8 + d)).collect();
        w.hit(&Extended {
            sample: Sample {
                bp: BpId((s % 4) as u32),
                cpu: CpuId(0),
                task: Some(TaskId(i % 64)),
                ip: ip(s),
                addr: 0x1000,
                time: i * 1000,
            },
            ext: Extension {
                stack: &stack,
                ..Extension::NONE
            },
        })
        .unwrap();
    }
    w.finish().unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1_000_000);
    let mut g = c.benchmark_group("report_1M_hits");
    g.sample_size(10);
    g.bench_function("hwbreak_report_top10", |b| {
        b.iter(|| {
            let (agg, frames) = hwbreak::report::analyse(black_box(&path), 10).unwrap();
            assert_eq!(agg.hits, 1_000_000);
            black_box(frames)
        })
    });
    g.bench_function("peer_read_file_bytes", |b| {
        b.iter(|| black_box(std::fs::read(black_box(&path)).unwrap().len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
