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

/// Found by the fuzz suite: a head more than a ring's size ahead of the tail
/// (here 2^20 bytes over a 16-byte ring) walked 131,072 stale records, and
/// near 2^64 never ended. It is one malformed step now.
#[test]
fn head_further_ahead_than_the_ring_holds_is_one_malformed_resync_not_a_long_walk() {
    let l = layout(0x00ff_0fff, true, 0);
    let data = [9u64 | (8u64 << 48), 0];
    let mut scratch = Vec::new();
    let mut seen = 0u64;
    for head in [1u64 << 20, u64::MAX - 7] {
        let (t, st) = drain_words(&data, head, 0, &l, &mut scratch, |_| {}, |_| seen += 1);
        assert_eq!(t, head);
        assert_eq!((st.records, st.malformed), (0, 1));
    }
    assert_eq!(seen, 0);
}
