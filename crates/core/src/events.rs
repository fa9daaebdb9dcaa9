//! The event buffer: per-CPU rings of records.
//! One record format for every source: simulator hits, KVM exits and perf
//! samples all become [`Record`]s.
//!
//! A hit is a [`Sample`] wherever it comes from: the simulator's dispatch,
//! the Linux drain (`hwbreak-linux`), or a record file read back
//! (`hwbreak report`). A source that knows more about a hit (its stack, the
//! registers at the trap, the value written) hands out an [`Extended`]: the
//! same [`Sample`] plus an [`Extension`] that borrows those parts, so a drain
//! extends a sample without allocating. Consumers read only these two types.
//!
//! The API:
//! - `Events::new(cpus, capacity_per_cpu)`; `push(cpu, Record) -> bool` (false = lost,
//!   counted, and a `Lost{count}` record is emitted once room returns); never allocates
//!   after `new`.
//! - `drain(cpu, &mut dyn FnMut(Record))`, `drain_all(&mut dyn FnMut(CpuId, Record))`.
//! - `lost_total() -> u64`.
//!
//! # Overflow is never silent
//!
//! Like perf's `PERF_RECORD_LOST`: when a CPU's ring is full, [`Events::push`]
//! drops the record and counts it. The reader then sees, exactly where the
//! gap is, one [`Record::Lost`] with the number dropped: either written into
//! the ring before the next record that fits, or handed out at the end of a
//! [`Events::drain`] that emptied the ring. [`Events::lost_total`] counts
//! every record ever dropped.
//!
//! ```
//! use hwbreak_core::events::{Events, Record};
//! use hwbreak_core::CpuId;
//! let ev = Events::new(1, 2);
//! let rec = |n| Record::Lost { count: n }; // any record will do here
//! assert!(ev.push(CpuId(0), rec(10)) && ev.push(CpuId(0), rec(11)));
//! assert!(!ev.push(CpuId(0), rec(12)), "full: dropped and counted");
//! let mut seen = Vec::new();
//! ev.drain(CpuId(0), &mut |r| seen.push(r));
//! assert_eq!(seen, [rec(10), rec(11), Record::Lost { count: 1 }]);
//! assert_eq!(ev.lost_total(), 1);
//! ```
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::target::{CpuId, TaskId};
use crate::BpId;

/// A breakpoint hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Which breakpoint.
    pub bp: BpId,
    /// CPU it fired on.
    pub cpu: CpuId,
    /// Task running there, if any.
    pub task: Option<TaskId>,
    /// Instruction pointer (after the access on x86 data; of the access after step-over).
    pub ip: u64,
    /// Data address (the breakpoint's address where the hardware does not report one).
    pub addr: u64,
    /// Timestamp from [`crate::Machine::now`].
    pub time: u64,
}

/// What a source knows about a hit beyond its [`Sample`]. Every part is
/// optional: empty slices, `0` and `None` mean "not known".
/// [`Extension::NONE`] is the simulator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extension<'a> {
    /// The process of [`Sample::task`] (0: not known).
    pub pid: u32,
    /// The callchain, innermost first. A source may start it with the IP
    /// itself (the Linux drain does, as the kernel's callchain does);
    /// [`Extended::callers`] is the chain without it.
    pub stack: &'a [u64],
    /// Whether the stack went on past [`Extension::stack`] (the walk was
    /// cut), so the outermost frames are missing.
    pub stack_truncated: bool,
    /// Registers at the trap: those set in [`Extension::regs_mask`], in bit
    /// order (the arch's register numbering, e.g. `PERF_REG_X86_*`).
    pub regs: &'a [u64],
    /// Which registers [`Extension::regs`] holds.
    pub regs_mask: u64,
    /// Stack bytes copied from the stack pointer upwards.
    pub stack_bytes: &'a [u8],
    /// The watched bytes after the access, when the source knows them.
    pub value: Option<u64>,
}

impl Extension<'_> {
    /// Nothing beyond the sample.
    pub const NONE: Extension<'static> = Extension {
        pid: 0,
        stack: &[],
        stack_truncated: false,
        regs: &[],
        regs_mask: 0,
        stack_bytes: &[],
        value: None,
    };

    /// Register number `reg` (in the arch's numbering), if it was recorded.
    pub fn reg(&self, reg: u32) -> Option<u64> {
        if reg >= 64 || self.regs_mask & (1 << reg) == 0 {
            return None;
        }
        let below = self.regs_mask & ((1u64 << reg) - 1);
        self.regs.get(below.count_ones() as usize).copied()
    }
}

/// A hit as every consumer reads it: the [`Sample`] every source produces,
/// extended with what this source knows beyond it.
///
/// ```
/// use hwbreak_core::events::{Extended, Extension, Sample};
/// use hwbreak_core::{BpId, CpuId, TaskId};
/// let s = Sample { bp: BpId(0), cpu: CpuId(1), task: Some(TaskId(7)), ip: 0x40_1000, addr: 0x60_0000, time: 5 };
/// let stack = [0x40_2000, 0x40_3000];
/// let hit = Extended { sample: s, ext: Extension { pid: 7, stack: &stack, value: Some(42), ..Extension::NONE } };
/// assert_eq!(hit.callers(), &stack);
/// assert_eq!(hit.tid(), 7);
/// assert_eq!(Extended::from(s).ext, Extension::NONE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended<'a> {
    /// The hit.
    pub sample: Sample,
    /// What the source knows beyond it.
    pub ext: Extension<'a>,
}

impl Extended<'_> {
    /// The thread id of the task that hit (0: none or not known).
    pub fn tid(&self) -> u32 {
        self.sample.task.map_or(0, |t| t.0 as u32)
    }

    /// Index of the watch (the breakpoint) this hit is of.
    pub fn watch(&self) -> usize {
        self.sample.bp.0 as usize
    }

    /// The return addresses: [`Extension::stack`] without a first entry
    /// equal to the IP.
    pub fn callers(&self) -> &[u64] {
        match self.ext.stack.split_first() {
            Some((&first, rest)) if first == self.sample.ip => rest,
            _ => self.ext.stack,
        }
    }
}

impl From<Sample> for Extended<'static> {
    fn from(sample: Sample) -> Self {
        Extended {
            sample,
            ext: Extension::NONE,
        }
    }
}

/// A record in the event buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A breakpoint hit.
    Sample(Sample),
    /// A taken branch (Branch Trace Store).
    Branch {
        /// CPU.
        cpu: CpuId,
        /// Branch source.
        from: u64,
        /// Branch target.
        to: u64,
        /// Timestamp.
        time: u64,
    },
    /// A context switch: the issue-13 `departs`/`arrives` record
    /// (`crate::ds::BtsRecord::switch` gives it in the 24-byte BTS format).
    Switch {
        /// CPU.
        cpu: CpuId,
        /// The task departing or arriving.
        task: TaskId,
        /// True when `task` departs, false when it arrives.
        departs: bool,
        /// Whether the switch was voluntary (the task blocked).
        voluntary: bool,
        /// Timestamp.
        time: u64,
        /// Where the task stopped (departs) or resumes (arrives); 0 when the
        /// machine does not say ([`crate::Machine::task_ip`]).
        ip: u64,
    },
    /// Records dropped because the ring was full.
    Lost {
        /// How many.
        count: u64,
    },
}

/// One CPU's ring: a fixed buffer, oldest record at `head`.
#[derive(Debug)]
struct Ring {
    buf: Vec<Record>,
    head: usize,
    len: usize,
    /// Records dropped since the last `Lost` record was emitted.
    // Invariant: while `pending_lost > 0`, no record enters the ring before a
    // `Lost { count: pending_lost }` does, so the gap is marked where it is.
    pending_lost: u64,
}

impl Ring {
    fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Caller checked `room() > 0`.
    fn put(&mut self, r: Record) {
        let cap = self.buf.len();
        self.buf[(self.head + self.len) % cap] = r;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Record> {
        if self.len == 0 {
            return None;
        }
        let r = self.buf[self.head];
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(r)
    }
}

/// Per-CPU rings of [`Record`]s. `&self` everywhere: each CPU's ring has its
/// own spin lock, so dispatch on many CPUs pushes concurrently and a reader
/// drains one CPU without stopping the others.
#[derive(Debug)]
pub struct Events {
    rings: Vec<spin::Mutex<Ring>>,
    lost: AtomicU64,
}

impl Events {
    /// Rings for `cpus` CPUs of `capacity_per_cpu` records each, all
    /// allocated now. A capacity below 2 is raised to 2, so that after a
    /// drain a `Lost` record and the next record always fit.
    pub fn new(cpus: usize, capacity_per_cpu: usize) -> Self {
        let cap = capacity_per_cpu.max(2);
        let placeholder = Record::Lost { count: 0 };
        Events {
            rings: (0..cpus)
                .map(|_| {
                    spin::Mutex::new(Ring {
                        buf: vec![placeholder; cap],
                        head: 0,
                        len: 0,
                        pending_lost: 0,
                    })
                })
                .collect(),
            lost: AtomicU64::new(0),
        }
    }

    /// Append `rec` to `cpu`'s ring. Returns false if it was dropped: the ring
    /// was full (counted, and reported by a later `Lost` record) or `cpu` has
    /// no ring (counted in [`lost_total`](Self::lost_total) only). Never
    /// allocates, never blocks except on this CPU's ring lock.
    pub fn push(&self, cpu: CpuId, rec: Record) -> bool {
        let Some(ring) = self.rings.get(cpu.idx()) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let mut r = ring.lock();
        if r.pending_lost > 0 {
            // The gap marker goes first, and only with room for `rec` after
            // it; otherwise `rec` joins the gap (see Ring::pending_lost).
            if r.room() < 2 {
                return self.drop_one(&mut r);
            }
            let count = core::mem::take(&mut r.pending_lost);
            r.put(Record::Lost { count });
        }
        if r.room() == 0 {
            return self.drop_one(&mut r);
        }
        r.put(rec);
        true
    }

    fn drop_one(&self, r: &mut Ring) -> bool {
        r.pending_lost += 1;
        self.lost.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Hand `cpu`'s records to `f`, oldest first, removing them. Ends with a
    /// `Lost` record if records were dropped after the last one handed out.
    /// Returns how many records `f` got. `f` runs without the ring's lock
    /// held, so it may push (to any CPU); records pushed meanwhile wait for
    /// the next drain. Never allocates.
    pub fn drain(&self, cpu: CpuId, f: &mut dyn FnMut(Record)) -> usize {
        let Some(ring) = self.rings.get(cpu.idx()) else {
            return 0;
        };
        // Snapshot the length so a producer pushing as fast as we drain
        // cannot keep us here forever.
        let n = ring.lock().len;
        let mut delivered = 0;
        for _ in 0..n {
            // Lock per record: the lock is never held while `f` runs.
            let Some(rec) = ring.lock().pop() else { break };
            f(rec);
            delivered += 1;
        }
        // Drops counted while the ring is empty came after everything handed
        // out, so their marker belongs here, at the end.
        let count = {
            let mut r = ring.lock();
            if r.len == 0 {
                core::mem::take(&mut r.pending_lost)
            } else {
                0
            }
        };
        if count > 0 {
            f(Record::Lost { count });
            delivered += 1;
        }
        delivered
    }

    /// [`drain`](Self::drain) every CPU in CPU order. Returns how many
    /// records `f` got.
    pub fn drain_all(&self, f: &mut dyn FnMut(CpuId, Record)) -> usize {
        (0..self.rings.len())
            .map(|c| {
                let cpu = CpuId(c as u32);
                self.drain(cpu, &mut |r| f(cpu, r))
            })
            .sum()
    }

    /// Records dropped since `new`, on every CPU (a drain does not reset it).
    pub fn lost_total(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Records waiting in `cpu`'s ring (0 for no such CPU).
    pub fn len(&self, cpu: CpuId) -> usize {
        self.rings.get(cpu.idx()).map_or(0, |r| r.lock().len)
    }

    /// Whether every ring is empty and no drop awaits its `Lost` record.
    pub fn is_empty(&self) -> bool {
        self.rings.iter().all(|r| {
            let r = r.lock();
            r.len == 0 && r.pending_lost == 0
        })
    }

    /// Records each CPU's ring holds.
    pub fn capacity(&self) -> usize {
        self.rings.first().map_or(0, |r| r.lock().buf.len())
    }

    /// CPUs with a ring.
    pub fn cpus(&self) -> usize {
        self.rings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Record {
        Record::Sample(Sample {
            bp: BpId(1),
            cpu: CpuId(0),
            task: None,
            ip: n,
            addr: 0x1000,
            time: n,
        })
    }

    fn drained(ev: &Events, cpu: u32) -> Vec<Record> {
        let mut v = Vec::new();
        let n = ev.drain(CpuId(cpu), &mut |r| v.push(r));
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn extension_reads_a_register_by_its_number_from_the_packed_set() {
        // Registers 1, 4 and 63 recorded, packed in bit order.
        let regs = [10, 40, 630];
        let e = Extension {
            regs: &regs,
            regs_mask: (1 << 1) | (1 << 4) | (1 << 63),
            ..Extension::NONE
        };
        assert_eq!(e.reg(1), Some(10));
        assert_eq!(e.reg(4), Some(40));
        assert_eq!(e.reg(63), Some(630));
        assert_eq!(e.reg(2), None);
        assert_eq!(e.reg(64), None);
        assert_eq!(Extension::NONE.reg(0), None);
    }

    #[test]
    fn ring_keeps_push_order_across_wrap_around() {
        let ev = Events::new(1, 4);
        let mut next = 0;
        let mut expect = 0;
        // Interleave pushes and partial drains so head walks round the ring
        // several times.
        for round in 0..10 {
            for _ in 0..(round % 4 + 1) {
                assert!(ev.push(CpuId(0), s(next)));
                next += 1;
            }
            for r in drained(&ev, 0) {
                assert_eq!(r, s(expect));
                expect += 1;
            }
        }
        assert_eq!(expect, next);
        assert_eq!(ev.lost_total(), 0);
        assert!(ev.is_empty());
    }

    #[test]
    fn full_ring_drops_counts_and_marks_the_gap_before_the_next_record() {
        let ev = Events::new(1, 4);
        for n in 0..4 {
            assert!(ev.push(CpuId(0), s(n)));
        }
        for n in 4..7 {
            assert!(!ev.push(CpuId(0), s(n)), "record {n} should not fit");
        }
        assert_eq!(ev.lost_total(), 3);
        // The drain empties the ring, so the gap marker comes at its end,
        // after everything that was pushed before the drops.
        assert_eq!(
            drained(&ev, 0),
            [s(0), s(1), s(2), s(3), Record::Lost { count: 3 }]
        );
        assert!(ev.push(CpuId(0), s(7)));
        assert_eq!(drained(&ev, 0), [s(7)]);
        assert_eq!(ev.lost_total(), 3, "lost_total is not reset by drain");
    }

    #[test]
    fn lost_record_is_written_into_the_ring_when_room_returns_mid_drain() {
        let ev = Events::new(1, 3);
        for n in 0..3 {
            assert!(ev.push(CpuId(0), s(n)));
        }
        assert!(!ev.push(CpuId(0), s(3)));
        assert!(!ev.push(CpuId(0), s(4)));
        // The consumer pushes while draining (room appears one by one).
        let mut seen = Vec::new();
        let mut pushes = 5;
        ev.drain(CpuId(0), &mut |r| {
            seen.push(r);
            // After the first pop there is room for 1: not enough for the
            // marker plus a record, so record 5 is dropped too.
            // After the second pop there is room for 2: marker + record.
            let ok = ev.push(CpuId(0), s(pushes));
            if seen.len() == 1 {
                assert!(!ok);
            }
            pushes += 1;
        });
        assert_eq!(seen, [s(0), s(1), s(2)]);
        assert_eq!(drained(&ev, 0), [Record::Lost { count: 3 }, s(6), s(7)]);
        assert_eq!(ev.lost_total(), 3);
    }

    #[test]
    fn every_drop_is_reported_exactly_once() {
        let ev = Events::new(2, 5);
        let (mut pushed, mut delivered, mut reported) = (0u64, 0u64, 0u64);
        for round in 0..50u64 {
            for _ in 0..(round * 7 % 11) {
                ev.push(CpuId((round % 2) as u32), s(pushed));
                pushed += 1;
            }
            if round % 3 == 0 {
                ev.drain_all(&mut |_, r| match r {
                    Record::Lost { count } => reported += count,
                    _ => delivered += 1,
                });
            }
        }
        ev.drain_all(&mut |_, r| match r {
            Record::Lost { count } => reported += count,
            _ => delivered += 1,
        });
        assert!(
            ev.lost_total() > 0,
            "the test must overflow to mean anything"
        );
        assert_eq!(reported, ev.lost_total());
        assert_eq!(delivered + reported, pushed);
        assert!(ev.is_empty());
    }

    #[test]
    fn drain_all_visits_each_cpu_in_order_with_its_own_records() {
        let ev = Events::new(3, 4);
        ev.push(CpuId(2), s(20));
        ev.push(CpuId(0), s(0));
        ev.push(CpuId(2), s(21));
        ev.push(CpuId(0), s(1));
        let mut seen = Vec::new();
        assert_eq!(ev.drain_all(&mut |c, r| seen.push((c.0, r))), 4);
        assert_eq!(seen, [(0, s(0)), (0, s(1)), (2, s(20)), (2, s(21))]);
        assert_eq!(ev.drain_all(&mut |_, _| panic!("drained twice")), 0);
    }

    #[test]
    fn push_to_a_cpu_without_a_ring_is_counted_as_lost() {
        let ev = Events::new(2, 4);
        assert!(!ev.push(CpuId(2), s(0)));
        assert_eq!(ev.lost_total(), 1);
        assert_eq!(ev.drain(CpuId(2), &mut |_| panic!("no ring")), 0);
        assert_eq!((ev.len(CpuId(2)), ev.len(CpuId(0))), (0, 0));
    }

    #[test]
    fn capacity_below_two_is_raised_so_a_gap_and_a_record_fit_after_drain() {
        let ev = Events::new(1, 0);
        assert_eq!((ev.capacity(), ev.cpus()), (2, 1));
        assert!(ev.push(CpuId(0), s(0)) && ev.push(CpuId(0), s(1)));
        assert!(!ev.push(CpuId(0), s(2)));
        assert_eq!(drained(&ev, 0), [s(0), s(1), Record::Lost { count: 1 }]);
        assert!(ev.push(CpuId(0), s(3)));
    }

    #[test]
    fn pushes_from_many_threads_are_all_delivered_or_reported_in_order() {
        extern crate std;
        use std::sync::Mutex;
        let ev = Events::new(4, 64);
        // (samples delivered, highest ip seen, drops reported) per CPU.
        let seen = Mutex::new([(0u64, None::<u64>, 0u64); 4]);
        let take = |c: CpuId, r: Record| {
            let mut seen = seen.lock().unwrap();
            let e = &mut seen[c.idx()];
            match r {
                Record::Sample(x) => {
                    // Order within a CPU survives concurrency.
                    if let Some(last) = e.1 {
                        assert!(last < x.ip, "{} after {last}", x.ip);
                    }
                    e.1 = Some(x.ip);
                    e.0 += 1;
                }
                Record::Lost { count } => e.2 += count,
                _ => unreachable!(),
            }
        };
        std::thread::scope(|sc| {
            for cpu in 0..4u32 {
                let ev = &ev;
                sc.spawn(move || {
                    for n in 0..1000 {
                        ev.push(CpuId(cpu), s(n));
                    }
                });
            }
            // A reader drains concurrently.
            sc.spawn(|| {
                for _ in 0..200 {
                    ev.drain_all(&mut |c, r| take(c, r));
                }
            });
        });
        ev.drain_all(&mut |c, r| take(c, r));
        let seen = seen.into_inner().unwrap();
        let reported: u64 = seen.iter().map(|e| e.2).sum();
        assert_eq!(reported, ev.lost_total());
        for (delivered, _, lost) in seen {
            assert_eq!(delivered + lost, 1000);
        }
        assert!(ev.is_empty());
    }
}
