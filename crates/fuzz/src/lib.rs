//! # hwbreak-fuzz
//!
//! Fuzz oracles for the three parsers that read input hwbreak does not
//! control, the seeds they start from, and where their corpus lives:
//!
//! | target | parser | input |
//! | --- | --- | --- |
//! | `spec` | [`hwbreak::spec::parse`] | a SPEC from the command line |
//! | `recfile` | [`hwbreak::recfile::Reader`] | a record file given to `report` |
//! | `ring_record` | [`hwbreak_linux::record::parse`] | a record in the perf ring the kernel writes |
//!
//! Each oracle takes arbitrary bytes and panics only when the parser breaks
//! a promise: it panicked, read outside its input, or (for SPECs) accepted a
//! text that does not print back to itself. The same oracles run in three
//! places:
//!
//! - `cargo test -p hwbreak-fuzz`: every checked-in corpus input, then a
//!   bounded number of proptest cases (by count, not time) of seeds with
//!   bytes flipped, inserted and cut, and of arbitrary bytes;
//! - `fuzz/` (a `cargo fuzz` project, outside the workspace): libFuzzer with
//!   coverage feedback, for long runs (command in docs/RELIABILITY.md);
//! - the corpus, `testdata/fuzz/<target>/`, holds the seeds ([`seeds`]) and
//!   what libFuzzer found worth keeping; a crash found later goes there too,
//!   so it is replayed by every `cargo test`.
//!
//! This crate owns no parser: it must only call the public read entry points,
//! so that it tests what `hwbreak` runs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write as _;
use std::path::PathBuf;

use hwbreak::recfile::{Header, Module, Reader, WatchEntry, Writer};
use hwbreak_core::events::{Extended, Extension, Sample};
use hwbreak_core::{Access, BpId, CpuId, TaskId};
use hwbreak_linux::record::{parse, Record, SampleLayout, SUPPORTED_SAMPLE_BITS};
use perf_event_open_sys::bindings as b;

/// A fuzz target: its name (the corpus directory's) and its oracle.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("spec", spec),
    ("recfile", recfile),
    ("ring_record", ring_record),
];

/// The checked-in corpus of `target`: `testdata/fuzz/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fuzz")
        .join(target)
}

/// The SPEC parser: never panics; an error points at a column inside the
/// text (or just past it); an accepted SPEC prints back to text that parses
/// to the same SPEC.
pub fn spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match hwbreak::spec::parse(&text) {
        Err(e) => assert!(
            e.col >= 1 && e.col <= text.chars().count() + 1,
            "column {} outside {text:?}: {e}",
            e.col
        ),
        Ok(s) => {
            let printed = s.to_string();
            let back = hwbreak::spec::parse(&printed);
            assert_eq!(
                back.as_ref().ok(),
                Some(&s),
                "{text:?} parses, but its printed form {printed:?} gives {back:?}"
            );
        }
    }
}

/// The record-file reader: never panics, whatever the bytes; it ends (every
/// call to `next_hit` consumes input or ends the file); a hit it returns
/// names a watch of the header.
pub fn recfile(data: &[u8]) {
    let Ok(mut r) = Reader::new(data) else {
        return;
    };
    let watches = r.header.watches.len();
    let mut hits = 0u64;
    while let Ok(Some(hit)) = r.next_hit() {
        hits += 1;
        // A hit takes at least its fixed part: more hits than that is a loop.
        assert!(hits as usize <= data.len() / hwbreak::recfile::HIT_SIZE);
        assert!(
            hit.watch() < watches,
            "hit names watch {} of {watches}",
            hit.watch()
        );
    }
}

/// The perf ring-record parser: the first 17 bytes choose the layout
/// (`sample_type` masked to what the parser supports, `sample_id_all`, the
/// user-register mask), the rest are the record's words. Never panics, and
/// every slice a record borrows lies inside the words.
pub fn ring_record(data: &[u8]) {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        if let Some(s) = data.get(at..at + 8) {
            w.copy_from_slice(s);
        }
        u64::from_le_bytes(w)
    };
    let bits = word(0) & SUPPORTED_SAMPLE_BITS;
    let all = data.get(8).is_some_and(|b| b & 1 == 1);
    let regs = word(9);
    let Some(layout) = SampleLayout::new(bits, all, regs) else {
        panic!("a layout of supported bits {bits:#x} was refused");
    };
    let words: Vec<u64> = data
        .get(17..)
        .unwrap_or_default()
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    let (base, end) = (
        words.as_ptr() as usize,
        words.as_ptr() as usize + words.len() * 8,
    );
    let inside = |p: *const u8, n: usize| n == 0 || (p as usize >= base && p as usize + n <= end);
    match parse(&layout, &words) {
        Some(Record::Sample(s)) => {
            assert!(inside(s.callchain.as_ptr().cast(), s.callchain.len() * 8));
            assert!(inside(s.regs.as_ptr().cast(), s.regs.len() * 8));
            assert!(inside(s.stack.as_ptr(), s.stack.len()));
            let _ = s.user_callchain();
        }
        Some(Record::Comm { name, .. }) => assert!(inside(name.as_ptr(), name.len())),
        Some(Record::Mmap { filename, .. }) => {
            assert!(inside(filename.as_ptr(), filename.len()))
        }
        _ => {}
    }
}

/// Well-formed inputs for `target`, made with the same code that makes real
/// ones (the SPEC grammar's examples, hwbreak's record-file writer, perf's
/// record layouts), so that mutations start from deep inside each parser.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "spec" => SPEC_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        "recfile" => recfile_seeds(),
        "ring_record" => ring_seeds(),
        _ => Vec::new(),
    }
}

/// SPECs from `hwbreak --help` and docs/CLI.md, and near misses.
const SPEC_SEEDS: &[&str] = &[
    "STATE.hits",
    "STATE.table[3]/4:rw",
    "my_crate::COUNTER",
    "hwbreak_demo::STATE.hits",
    "libfoo.so:counter+8",
    "record_hit",
    "record_hit:x",
    "0x601040/8:w",
    "mem:0x601040/8:w",
    "mem:0x601040",
    "a.b[2].c",
    "table[3]",
    "counter-0x7fffffffffffffff",
    "counter+0x10/2:r",
    "STATE.hits:q",
    "x/0",
    "x/9",
    "[",
    "a..b",
    "0xffffffffffffffffff",
];

fn recfile_seeds() -> Vec<Vec<u8>> {
    let header = |values: bool, watches: usize, modules: usize| Header {
        values,
        pid: 4242,
        start_ns: 1_000_000,
        watches: (0..watches)
            .map(|i| WatchEntry {
                name: format!("STATE.table[{i}]"),
                addr: 0x5555_5555_8000 + 8 * i as u64,
                len: 8,
                access: [
                    Access::Write,
                    Access::ReadWrite,
                    Access::Execute,
                    Access::Read,
                ][i % 4],
            })
            .collect(),
        modules: (0..modules)
            .map(|i| Module {
                start: 0x5555_5555_4000 + 0x10_0000 * i as u64,
                end: 0x5555_5555_9000 + 0x10_0000 * i as u64,
                file_offset: 0x1000,
                path: format!("/usr/lib/lib{i}.so"),
            })
            .collect(),
    };
    let file = |h: &Header, hits: usize, lost: u64, late_module: bool| {
        let mut w = Writer::new(Vec::new(), h).expect("writing to a Vec");
        for i in 0..hits {
            let stack: Vec<u64> = (0..i % 5).map(|d| 0x5555_5555_6000 + d as u64).collect();
            w.hit(&Extended {
                sample: Sample {
                    bp: BpId((i % h.watches.len().max(1)) as u32),
                    cpu: CpuId(i as u32 % 2),
                    task: Some(TaskId(100 + i as u64 % 3)),
                    ip: 0x5555_5555_5123 + i as u64,
                    addr: 0x5555_5555_8000,
                    time: 1_000_000 + 1000 * i as u64,
                },
                ext: Extension {
                    pid: 4242,
                    stack: &stack,
                    stack_truncated: i == 3,
                    value: h.values.then_some(i as u64),
                    ..Extension::NONE
                },
            })
            .expect("writing to a Vec");
            if i == 1 && late_module {
                w.module(&Module {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0001_0000,
                    file_offset: 0,
                    path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                })
                .expect("writing to a Vec");
            }
        }
        if lost > 0 {
            w.lost(lost).expect("writing to a Vec");
        }
        w.finish().expect("writing to a Vec").1
    };
    let mut v = vec![
        file(&header(false, 1, 1), 3, 0, false),
        file(&header(true, 4, 2), 6, 7, true),
        file(&header(false, 0, 0), 0, 0, false),
    ];
    // One cut short, as when the recorder is killed.
    let mut cut = file(&header(true, 2, 1), 4, 1, false);
    cut.truncate(cut.len() - 30);
    v.push(cut);
    v
}

fn ring_seeds() -> Vec<Vec<u8>> {
    let layout = |bits: u64, all: bool, regs: u64| {
        let mut v = Vec::new();
        v.extend_from_slice(&bits.to_le_bytes());
        v.push(all as u8);
        v.extend_from_slice(&regs.to_le_bytes());
        v
    };
    let record = |kind: u32, body: &[u64]| {
        let size = ((body.len() + 1) * 8) as u64;
        let mut w = vec![kind as u64 | (size << 48)];
        w.extend_from_slice(body);
        w
    };
    let with = |prefix: Vec<u8>, words: Vec<u64>| {
        let mut v = prefix;
        for w in words {
            v.write_all(&w.to_le_bytes()).expect("writing to a Vec");
        }
        v
    };
    let watch_bits = (b::PERF_SAMPLE_IP
        | b::PERF_SAMPLE_TID
        | b::PERF_SAMPLE_TIME
        | b::PERF_SAMPLE_ADDR
        | b::PERF_SAMPLE_ID
        | b::PERF_SAMPLE_CPU
        | b::PERF_SAMPLE_CALLCHAIN) as u64;
    let copied_bits = (b::PERF_SAMPLE_IP
        | b::PERF_SAMPLE_TID
        | b::PERF_SAMPLE_TIME
        | b::PERF_SAMPLE_REGS_USER
        | b::PERF_SAMPLE_STACK_USER) as u64;
    let user = b::PERF_CONTEXT_USER;
    let tid = 7u64 << 32 | 7;
    vec![
        // A hit: ip, pid/tid, time, addr, id, cpu, callchain of 3.
        with(
            layout(watch_bits, true, 0),
            record(
                b::PERF_RECORD_SAMPLE,
                &[
                    0x401223, tid, 99, 0x406000, 5, 1, 3, user, 0x401223, 0x401300,
                ],
            ),
        ),
        // A hit with user registers (abi, 2 regs) and 16 bytes of stack.
        with(
            layout(copied_bits, false, 0b11),
            record(
                b::PERF_RECORD_SAMPLE,
                &[0x401223, tid, 99, 2, 0x7ffe_0000, 0x7ffe_0010, 16, 1, 2, 16],
            ),
        ),
        // Lost, with the sample-id trailer (tid, time, id, cpu).
        with(
            layout(watch_bits, true, 0),
            record(b::PERF_RECORD_LOST, &[5, 1000, tid, 99, 5, 1]),
        ),
        // A comm record ("demo\0" padded), no trailer.
        with(
            layout(watch_bits, false, 0),
            record(
                b::PERF_RECORD_COMM,
                &[tid, u64::from_le_bytes(*b"demo\0\0\0\0")],
            ),
        ),
        // An mmap2 record: pid/tid, addr, len, pgoff, maj/min, ino, ino_gen, prot/flags, "/a.so".
        with(
            layout(0, false, 0),
            record(
                b::PERF_RECORD_MMAP2,
                &[
                    tid,
                    0x7f00_0000_0000,
                    0x1000,
                    0,
                    0,
                    0,
                    0,
                    5,
                    u64::from_le_bytes(*b"/a.so\0\0\0"),
                ],
            ),
        ),
        // Fork and exit: pid, ppid, tid, ptid, time.
        with(
            layout(0, false, 0),
            record(b::PERF_RECORD_FORK, &[7 | 1 << 32, 8 | 1 << 32, 1000]),
        ),
        with(
            layout(0, false, 0),
            record(b::PERF_RECORD_EXIT, &[7 | 1 << 32, 8 | 1 << 32, 1000]),
        ),
        // Throttle: time, id, stream id.
        with(
            layout(watch_bits, false, 0),
            record(b::PERF_RECORD_THROTTLE, &[1000, 5, 5]),
        ),
    ]
}

/// A stable name for a corpus input (FNV-1a of its bytes, in hex), so that
/// writing the same input twice makes one file.
pub fn input_name(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
