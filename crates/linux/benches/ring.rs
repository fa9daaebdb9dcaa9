//! Ring-walk throughput: our zero-copy `drain_words` against a peer that
//! copies every record out before parsing it (what a reader that does not
//! borrow from the ring must do). Same ring contents, same parser.
//!
//! `cargo bench -p hwbreak-linux --bench ring`
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hwbreak_linux::record::{parse, Header, Record, SampleLayout};
use hwbreak_linux::ring::drain_words;
use perf_event_open_sys::bindings as b;

const WORDS: usize = 1 << 16; // 512 KiB, the default ring

/// A ring full of samples with a 6-deep callchain, starting mid-ring so some records wrap.
fn ring() -> (Vec<u64>, u64, u64, SampleLayout, u64) {
    let st = (b::PERF_SAMPLE_IP
        | b::PERF_SAMPLE_TID
        | b::PERF_SAMPLE_TIME
        | b::PERF_SAMPLE_ADDR
        | b::PERF_SAMPLE_ID
        | b::PERF_SAMPLE_CPU
        | b::PERF_SAMPLE_CALLCHAIN) as u64;
    let l = SampleLayout::new(st, true, 0).unwrap();
    let rec_words = 1 + 6 + 1 + 6;
    let mut data = vec![0u64; WORDS];
    let tail = 8 * 1000u64;
    let mut pos = tail;
    let mut n = 0;
    while (pos - tail) as usize / 8 + rec_words <= WORDS {
        let mut rec = vec![
            b::PERF_RECORD_SAMPLE as u64 | ((rec_words as u64 * 8) << 48),
            0x401000,
            (7u64 << 32) | 5,
            n,
            0x601040,
            42,
            1,
            6,
        ];
        rec.extend([
            u64::MAX - 511,
            0x401000,
            0x400800,
            0x400700,
            0x400600,
            0x400500,
        ]);
        for w in rec {
            data[(pos / 8) as usize % WORDS] = w;
            pos += 8;
        }
        n += 1;
    }
    (data, pos, tail, l, n)
}

fn bench(c: &mut Criterion) {
    let (data, head, tail, l, n) = ring();
    let mut g = c.benchmark_group("ring_walk");
    g.throughput(Throughput::Elements(n));
    g.bench_function("zero_copy_drain_words", |bch| {
        let mut scratch = Vec::new();
        bch.iter(|| {
            let mut sum = 0u64;
            drain_words(
                &data,
                head,
                tail,
                &l,
                &mut scratch,
                |_| {},
                |r| {
                    if let Record::Sample(s) = r {
                        sum = sum.wrapping_add(s.ip ^ s.callchain[1]);
                    }
                },
            );
            sum
        })
    });
    g.bench_function("peer_copy_each_record", |bch| {
        bch.iter_batched(
            || (),
            |_| {
                let mut sum = 0u64;
                let mut t = tail;
                while head - t >= 8 {
                    let start = (t / 8) as usize % WORDS;
                    let len = Header::from_word(data[start]).size as usize / 8;
                    let rec: Vec<u64> = (0..len).map(|i| data[(start + i) % WORDS]).collect();
                    if let Some(Record::Sample(s)) = parse(&l, &rec) {
                        sum = sum.wrapping_add(s.ip ^ s.callchain[1]);
                    }
                    t += len as u64 * 8;
                }
                sum
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
