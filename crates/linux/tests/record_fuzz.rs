//! Property tests over arbitrary bytes: the record parser and the ring walk
//! never panic and never read out of bounds, whatever the ring holds.
use hwbreak_linux::record::{parse, Record, SampleLayout, SUPPORTED_SAMPLE_BITS};
use hwbreak_linux::ring::drain_words;
use proptest::prelude::*;

fn layout(bits: u64, all: bool, regs: u64) -> SampleLayout {
    SampleLayout::new(bits & SUPPORTED_SAMPLE_BITS, all, regs).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_is_total_on_arbitrary_words(
        words in proptest::collection::vec(any::<u64>(), 0..64),
        bits in any::<u64>(), all in any::<bool>(), regs in any::<u64>(),
    ) {
        let l = layout(bits, all, regs);
        if let Some(Record::Sample(s)) = parse(&l, &words) {
            // Every borrowed slice lies inside the input.
            let base = words.as_ptr() as usize;
            let end = base + words.len() * 8;
            for (p, n) in [
                (s.callchain.as_ptr() as usize, s.callchain.len() * 8),
                (s.regs.as_ptr() as usize, s.regs.len() * 8),
                (s.stack.as_ptr() as usize, s.stack.len()),
            ] {
                prop_assert!(n == 0 || (p >= base && p + n <= end));
            }
        }
    }

    #[test]
    fn ring_walk_is_total_and_accounts_for_every_record(
        data in proptest::collection::vec(any::<u64>(), 0..128),
        head in any::<u64>(), tail in any::<u64>(),
        bits in any::<u64>(), all in any::<bool>(),
    ) {
        let l = layout(bits, all, 0x00ff_0fff);
        let mut scratch = Vec::new();
        let mut seen = 0u64;
        let mut last_tail = tail;
        let (t, st) = drain_words(&data, head, tail, &l, &mut scratch, |t| last_tail = t, |_| seen += 1);
        prop_assert_eq!(seen, st.records);
        prop_assert_eq!(t, last_tail);
        // The walk ends at head (or gives up there) unless fewer than 8 bytes remain.
        if !data.is_empty() {
            prop_assert!(head.wrapping_sub(t) < 8 || t == head);
        }
    }

    #[test]
    fn well_formed_records_round_trip_across_the_wrap(
        n in 1usize..40, depth in 0usize..6, start in 0u64..4096,
    ) {
        // Write n LOST-free sample records into a 64-word ring starting at `start`.
        use perf_event_open_sys::bindings as b;
        let st = (b::PERF_SAMPLE_IP | b::PERF_SAMPLE_TID | b::PERF_SAMPLE_CALLCHAIN) as u64;
        let l = SampleLayout::new(st, false, 0).unwrap();
        let ring_words = 64usize;
        let mut data = vec![0u64; ring_words];
        let rec_words = 1 + 1 + 1 + 1 + depth;
        let mut pos = start * 8;
        let tail = pos;
        let mut expected = Vec::new();
        let mut total = 0;
        for i in 0..n {
            if total + rec_words > ring_words { break; }
            let mut rec = vec![b::PERF_RECORD_SAMPLE as u64 | ((rec_words as u64 * 8) << 48), 0x1000 + i as u64, (i as u64) << 32 | 7, depth as u64];
            rec.extend((0..depth).map(|d| 0x4000 + d as u64 + i as u64));
            for w in &rec {
                data[((pos / 8) % ring_words as u64) as usize] = *w;
                pos += 8;
            }
            expected.push((0x1000 + i as u64, i as u32));
            total += rec_words;
        }
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let (t, stats) = drain_words(&data, pos, tail, &l, &mut scratch, |_| {}, |r| {
            if let Record::Sample(s) = r {
                assert_eq!(s.callchain.len(), depth);
                got.push((s.ip, s.tid));
            }
        });
        prop_assert_eq!(t, pos);
        prop_assert_eq!(stats.malformed, 0);
        prop_assert_eq!(got, expected);
    }
}

/// A head more than a ring's size ahead of the tail (here: behind it) used
/// to send the walk round and round a ring of well-formed records for up to
/// 2^64 bytes (a `ring_walk_is_total…` case that never ended). It gives up
/// at once, counted as malformed.
#[test]
fn a_head_further_ahead_than_the_ring_is_large_gives_up_at_once() {
    // One 8-byte record that fills a one-word ring: every step is valid.
    let data = [8u64 << 48];
    let l = layout(0, false, 0);
    let (mut scratch, mut seen) = (Vec::new(), 0u64);
    let (head, tail) = (1_188_440_907_383_189_162u64, 2_798_774_838_010_229_810u64);
    let (t, st) = drain_words(&data, head, tail, &l, &mut scratch, |_| {}, |_| seen += 1);
    assert_eq!((t, st.malformed, seen), (head, 1, 0));
    // Within the ring's size the same record is read.
    let (t, st) = drain_words(&data, 8, 0, &l, &mut scratch, |_| {}, |_| seen += 1);
    assert_eq!((t, st.records, st.malformed), (8, 1, 0));
}
