//! A consumer's ring: what the overflow interrupt drains into.
//!
//! Hand-written rather than reusing [`crate::events::Events`]: that buffer is
//! per CPU and holds the layer's general records behind a lock, while a
//! debug-store consumer owns one ring of 24-byte BTS records (or PEBS
//! records), filled by a drain that must stay within a few nanoseconds per
//! record. The loss rule is the same as `events`: never silent.
use alloc::collections::VecDeque;

/// What a consumer reads: a record, or the mark of a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<T> {
    /// A record.
    Rec(T),
    /// `n` records were dropped here because the ring was full.
    Lost(u64),
}

/// A bounded FIFO of records. When full, records are dropped and counted;
/// the count is written as one [`Entry::Lost`] where the gap is, before the
/// next record that fits (or at the end of a read that empties the ring).
#[derive(Debug, Clone)]
pub struct Ring<T> {
    buf: VecDeque<Entry<T>>,
    cap: usize,
    // Invariant: while `pending_lost > 0`, no record enters before a
    // `Lost(pending_lost)` does, so the gap is marked where it happened.
    pending_lost: u64,
    lost_total: u64,
}

impl<T: Copy> Ring<T> {
    /// A ring of `cap` entries (at least 2, so a gap mark and a record fit
    /// after a read), allocated now.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(2);
        Ring {
            buf: VecDeque::with_capacity(cap),
            cap,
            pending_lost: 0,
            lost_total: 0,
        }
    }

    /// Append `rec`; false if it was dropped (counted). Never allocates.
    #[inline]
    pub fn push(&mut self, rec: T) -> bool {
        if self.pending_lost > 0 {
            if self.cap - self.buf.len() < 2 {
                return self.drop_one();
            }
            let n = core::mem::take(&mut self.pending_lost);
            self.buf.push_back(Entry::Lost(n));
        }
        if self.buf.len() == self.cap {
            return self.drop_one();
        }
        self.buf.push_back(Entry::Rec(rec));
        true
    }

    /// Append every record of `recs`, as [`push`](Self::push) one by one
    /// would; when no gap is pending and all of them fit, in one bulk copy
    /// (the overflow drain's fast path).
    #[inline]
    pub fn push_all(&mut self, recs: impl Iterator<Item = T>) {
        let room = self.cap - self.buf.len();
        if self.pending_lost == 0 && recs.size_hint().1.is_some_and(|most| most <= room) {
            self.buf.extend(recs.map(Entry::Rec));
        } else {
            for r in recs {
                self.push(r);
            }
        }
    }

    fn drop_one(&mut self) -> bool {
        self.pending_lost += 1;
        self.lost_total += 1;
        false
    }

    /// Room for how many records before the next drop (a pending gap mark
    /// takes one entry).
    pub fn room(&self) -> usize {
        (self.cap - self.buf.len()).saturating_sub((self.pending_lost > 0) as usize)
    }

    /// Hand every entry to `f`, oldest first, and empty the ring; a gap after
    /// the last record comes as a final `Lost`. Returns how many entries.
    pub fn read(&mut self, f: &mut dyn FnMut(Entry<T>)) -> usize {
        let mut n = 0;
        while let Some(e) = self.buf.pop_front() {
            f(e);
            n += 1;
        }
        let lost = core::mem::take(&mut self.pending_lost);
        if lost > 0 {
            f(Entry::Lost(lost));
            n += 1;
        }
        n
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing waits (no entry, no unreported gap).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.pending_lost == 0
    }

    /// Records dropped since `new` (a read does not reset it).
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn read(r: &mut Ring<u32>) -> Vec<Entry<u32>> {
        let mut v = Vec::new();
        r.read(&mut |e| v.push(e));
        v
    }

    #[test]
    fn full_ring_marks_the_gap_before_the_next_record_that_fits() {
        let mut r = Ring::new(3);
        assert!(r.push(1) && r.push(2) && r.push(3));
        assert!(!r.push(4) && !r.push(5));
        assert_eq!(r.room(), 0);
        let first = read(&mut r);
        assert_eq!(
            first,
            [Entry::Rec(1), Entry::Rec(2), Entry::Rec(3), Entry::Lost(2)]
        );
        assert!(r.push(6));
        assert!(r.push(7) && r.push(8));
        assert!(!r.push(9));
        // Partial room: the mark and the next record go in together.
        assert_eq!(
            read(&mut r),
            [6, 7, 8]
                .map(Entry::Rec)
                .into_iter()
                .chain([Entry::Lost(1)])
                .collect::<Vec<_>>()
        );
        assert_eq!(r.lost_total(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn push_all_equals_pushing_one_by_one_with_and_without_room() {
        for (cap, pre, n) in [
            (8usize, 0u32, 5u32),
            (8, 3, 5),
            (8, 6, 5),
            (4, 4, 3),
            (3, 0, 9),
        ] {
            let (mut a, mut b) = (Ring::new(cap), Ring::new(cap));
            for i in 0..pre {
                a.push(i);
                b.push(i);
            }
            // A pending gap forces the slow path even with room.
            if pre as usize == cap {
                a.push(99);
                b.push(99);
                a.buf.clear();
                b.buf.clear();
            }
            a.push_all(100..100 + n);
            for i in 100..100 + n {
                b.push(i);
            }
            assert_eq!(read(&mut a), read(&mut b), "cap {cap} pre {pre} n {n}");
            assert_eq!(a.lost_total(), b.lost_total());
        }
    }

    #[test]
    fn gap_mark_sits_between_the_records_around_it_when_room_returns_before_a_read() {
        let mut r = Ring::new(4);
        for i in 0..4 {
            r.push(i);
        }
        assert!(!r.push(4));
        r.buf.pop_front(); // one entry consumed: room 1, not enough for mark + record
        assert!(!r.push(5));
        r.buf.pop_front();
        assert!(r.push(6));
        assert_eq!(
            read(&mut r),
            [Entry::Rec(2), Entry::Rec(3), Entry::Lost(2), Entry::Rec(6)]
        );
    }
}
