//! The overflow path's cost per BTS record: a full hardware buffer of
//! `RECORDS` branches, written by the simulator's processor model, drained
//! by `DsManager::on_pmi` into a stream consumer's ring (which has room: the
//! consumer keeps up). Filling the buffer and emptying the ring are outside
//! the timing; the figure is the drain alone, per record.
//!
//! Peer, same run, same buffer: a naive copy (`naive_drain`): copy the
//! buffer out into a fresh `Vec<u8>`, decode it into a `Vec<BtsRecord>`,
//! filter, and append that to a `VecDeque` ring — what a first version
//! that "just copies" does.
//!
//! Time is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) around each
//! drain, so preemption on a loaded machine does not count; one clock pair
//! costs about as much as a few records (see the `clock_pair` line, which
//! is included in both peers' figures and matters only for small buffers).
//!
//! Both with a `Privilege::User` consumer (the address filter runs on every
//! record; every branch here is a user branch, so every record is kept).
//!
//! ```text
//! cargo bench -p hwbreak-sim --bench bts_drain -- --warm-up-time 1 --measurement-time 3
//! ```
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hwbreak_core::ds::{BtsConfig, BtsRecord, DsHardware, Msr, Privilege, Scope, UserId};
use hwbreak_core::CpuId;
use hwbreak_sim::hw::bts::DsHw;
use hwbreak_sim::trace::{Code, Insn, TraceSim};

const CPU: CpuId = CpuId(0);

/// This thread's CPU time.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // the kernel supports on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A CPU consumer; with `fan_out`, also a task consumer of the task
/// running there, fed from the same buffer (two ring pushes per record).
fn setup(records: usize, fan_out: bool) -> (TraceSim, Vec<UserId>) {
    let mut sim = TraceSim::new(1);
    let mut users = Vec::new();
    if fan_out {
        let t = sim.spawn(Code::at(0x40_0000, &[Insn::Jmp(0x40_0000)]));
        let cfg = BtsConfig::new("task", Scope::Task(t)).ring(records * 2);
        users.push(sim.ds.add_bts(&mut sim.hw, cfg).expect("task user"));
        sim.switch(CPU, Some(t), true).expect("switch");
        sim.ds.read_bts(users[0], &mut |_| {}).expect("read");
    }
    let cfg = BtsConfig::new("bench", Scope::Cpu(CPU))
        .privilege(Privilege::User)
        .buffer(records + 1, 1)
        .ring(records * 2);
    users.insert(0, sim.ds.add_bts(&mut sim.hw, cfg).expect("BTS user"));
    for &u in &users {
        sim.ds.read_bts(u, &mut |_| {}).expect("read");
    }
    (sim, users)
}

/// `records` taken branches through the processor model (no PMI: the
/// threshold is one record past them).
fn fill(hw: &mut DsHw, records: usize) {
    for k in 0..records as u64 {
        let pmi = hw.branch(CPU, 0x40_0000 + 8 * (k & 0xfff), 0x40_8000 + (k & 0xff));
        debug_assert!(pmi.is_none());
    }
}

fn field(hw: &DsHw, off: u64) -> u64 {
    let area = hw.read_msr(CPU, Msr::DsArea);
    u64::from_le_bytes(hw.mem(area + off, 8).unwrap().try_into().unwrap())
}

/// The peer: copy out, decode into a Vec, filter, append to the ring.
fn naive_drain(hw: &mut DsHw, ring: &mut VecDeque<BtsRecord>) -> usize {
    let (base, index) = (field(hw, 0x00), field(hw, 0x08));
    let bytes = hw.mem(base, (index - base) as usize).unwrap().to_vec();
    let recs: Vec<BtsRecord> = bytes
        .chunks(24)
        .map(|c| BtsRecord::decode(c).unwrap())
        .filter(|r| Privilege::User.admits(r))
        .collect();
    let n = recs.len();
    ring.extend(recs);
    let area = hw.read_msr(CPU, Msr::DsArea);
    hw.mem_mut(area + 8, 8)
        .unwrap()
        .copy_from_slice(&base.to_le_bytes());
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bts_drain_per_record");
    g.bench_function("clock_pair", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let start = thread_cpu_time();
                t += black_box(thread_cpu_time()) - start;
            }
            t
        })
    });
    for records in [256usize, 4096, 16384] {
        g.throughput(Throughput::Elements(records as u64));
        for (name, fan_out) in [("ds_manager", false), ("ds_manager_fan_out", true)] {
            g.bench_with_input(BenchmarkId::new(name, records), &records, |b, &n| {
                let (mut sim, users) = setup(n, fan_out);
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        fill(&mut sim.hw, n);
                        let start = thread_cpu_time();
                        let out = sim.ds.on_pmi(&mut sim.hw, CPU);
                        t += thread_cpu_time() - start;
                        assert_eq!(out.bts, n);
                        for &u in &users {
                            let mut got = 0;
                            sim.ds
                                .read_bts(u, &mut |e| got += black_box(e).is_rec() as usize)
                                .unwrap();
                            assert_eq!(got, n);
                        }
                    }
                    t
                })
            });
        }
        g.bench_with_input(
            BenchmarkId::new("naive_copy", records),
            &records,
            |b, &n| {
                let (mut sim, _) = setup(n, false);
                let mut ring = VecDeque::with_capacity(n * 2);
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        fill(&mut sim.hw, n);
                        let start = thread_cpu_time();
                        let got = naive_drain(&mut sim.hw, &mut ring);
                        t += thread_cpu_time() - start;
                        assert_eq!(got, n);
                        assert_eq!(black_box(&mut ring).drain(..).count(), n);
                    }
                    t
                })
            },
        );
    }
    g.finish();
}

/// Whether an entry is a record (not a gap).
trait IsRec {
    fn is_rec(&self) -> bool;
}

impl IsRec for hwbreak_core::ds::ring::Entry<BtsRecord> {
    fn is_rec(&self) -> bool {
        matches!(self, hwbreak_core::ds::ring::Entry::Rec(_))
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
