//! Sampling: one record per hit, through our own ring-buffer reader.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Callchain, Mode, Target as T, Watcher};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Writes with one `mov` inside this function, so the sample IP (the
/// instruction after the write) is known to lie in it, even in debug builds.
#[inline(never)]
fn writer(p: &AtomicU64, n: u64) {
    let ptr = p.as_ptr();
    for i in 0..n {
        // SAFETY: `ptr` points to a live AtomicU64; a plain aligned 8-byte store.
        unsafe { std::arch::asm!("mov qword ptr [{p}], {v}", p = in(reg) ptr, v = in(reg) i) };
    }
}

fn in_writer(ip: u64) -> bool {
    let f = writer as *const () as u64;
    ip > f && ip < f + 512
}

const SAMPLE_CC: Mode = Mode::Sample {
    callchain: Callchain::Kernel,
    user_regs_stack: false,
};

#[test]
fn n_writes_give_exactly_n_samples_with_addr_ip_tid_and_callchain() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let addr = X.as_ptr() as u64;
    let w = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("x", BpAttr::write(addr, 8))
        .mode(SAMPLE_CC)
        .open()
        .unwrap();
    writer(&X, 500);
    let me = gettid() as u32;
    let mut n = 0;
    let mut last_time = 0;
    w.drain(|h| {
        n += 1;
        assert_eq!(h.watch(), 0);
        assert_eq!(h.sample.addr, addr);
        assert_eq!(h.tid(), me);
        assert_eq!(h.ext.pid, std::process::id());
        assert!(
            in_writer(h.sample.ip),
            "ip {:#x} not in writer()",
            h.sample.ip
        );
        assert_eq!(h.ext.stack.first(), Some(&h.sample.ip));
        assert!(h.ext.stack.len() >= 2, "the caller frame is missing");
        assert!(h.sample.time >= last_time);
        last_time = h.sample.time;
    });
    assert_eq!(n, 500);
    assert_eq!(w.lost(), 0);
    assert_eq!(w.malformed(), 0);
    assert_eq!(w.counts().unwrap(), vec![500]);
}

#[test]
fn user_regs_and_stack_are_recorded_for_dwarf_unwinding() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Off,
            user_regs_stack: true,
        })
        .open()
        .unwrap();
    writer(&X, 3);
    let mut n = 0;
    w.drain(|h| {
        n += 1;
        assert_eq!(h.ext.regs.len(), 20, "AX..R15 without DS/ES/FS/GS");
        assert_eq!(h.ext.regs[8], h.sample.ip, "PERF_REG_X86_IP");
        let sp = h.ext.regs[7];
        let here = &n as *const _ as u64;
        assert!(
            sp.abs_diff(here) < 1 << 20,
            "sp {sp:#x} far from this stack {here:#x}"
        );
        assert_eq!(h.ext.stack_bytes.len(), 8192);
    });
    assert_eq!(n, 3);
}

#[test]
fn small_ring_wraps_and_concurrent_drain_keeps_every_record_intact() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let addr = X.as_ptr() as u64;
    let w = Arc::new(
        Watcher::builder()
            .target(T::Thread(gettid()))
            .watch("x", BpAttr::write(addr, 8))
            .mode(SAMPLE_CC)
            .ring_pages(1)
            .open()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let me = gettid() as u32;
    let drainer = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let done = stop.load(Ordering::Acquire);
                w.poll(Some(std::time::Duration::from_millis(5))).unwrap();
                w.drain(|h| {
                    assert_eq!((h.sample.addr, h.tid()), (addr, me));
                    assert!(in_writer(h.sample.ip));
                    assert_eq!(h.ext.stack.first(), Some(&h.sample.ip));
                    n += 1;
                });
                if done {
                    return n;
                }
            }
        })
    };
    const N: u64 = 20_000;
    writer(&X, N);
    stop.store(true, Ordering::Release);
    let n = drainer.join().unwrap();
    assert_eq!(w.malformed(), 0);
    assert!(w.wrapped() > 0, "a 1-page ring must wrap with {N} records");
    assert_eq!(n + w.lost(), N, "samples {n} + lost {} != {N}", w.lost());
    eprintln!(
        "1-page ring: {n} samples, {} lost, {} wrapped records copied",
        w.lost(),
        w.wrapped()
    );
}

#[test]
fn other_process_sampling_inherits_per_cpu_and_loses_nothing_at_default_size() {
    let _g = slots();
    let mut t = Target::spawn("writers", &["2000", "3", "5", "20"]);
    let w = Arc::new(
        Watcher::builder()
            .target(T::Process(t.pid))
            .watch("target_var", BpAttr::write(t.addr, 8))
            .mode(SAMPLE_CC)
            .open()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let addr = t.addr;
    let drainer = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut per_tid: HashMap<u32, u64> = HashMap::new();
            eprintln!("drainer: {}", Watcher::boost_current_thread().unwrap());
            loop {
                let done = stop.load(Ordering::Acquire);
                w.poll(Some(std::time::Duration::from_millis(10))).unwrap();
                w.drain(|h| {
                    assert_eq!(h.sample.addr, addr);
                    assert!(h.ext.stack.len() >= 2);
                    *per_tid.entry(h.tid()).or_default() += 1;
                });
                if done {
                    return per_tid;
                }
            }
        })
    };
    t.go();
    let writes = t.done();
    stop.store(true, Ordering::Release);
    let per_tid = drainer.join().unwrap();
    let total: u64 = per_tid.values().sum();
    eprintln!(
        "writes {writes} samples {total} lost {} threads {}",
        w.lost(),
        per_tid.len()
    );
    assert_eq!(w.lost(), 0);
    assert_eq!(total, writes);
    assert_eq!(w.counts().unwrap(), vec![writes]);
    // main + 3 before + 5 after + 20 storm + 20 grandchildren, 2000 each.
    assert_eq!(per_tid.len(), 1 + 3 + 5 + 40);
    assert!(per_tid.values().all(|&c| c == 2000), "{per_tid:?}");
    t.finish();
}

#[test]
fn losses_of_inherited_copies_are_counted_exactly_on_a_full_ring() {
    let _g = slots();
    static Y: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("y", BpAttr::write(Y.as_ptr() as u64, 8))
        .mode(SAMPLE_CC)
        .ring_pages(1)
        .open()
        .unwrap();
    // Nobody drains while threads created after open (inherited copies) write.
    let hs: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| writer(&Y, 2000)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let mut n = 0;
    w.drain(|_| n += 1);
    assert!(w.lost() > 0, "a 1-page ring cannot hold 8000 records");
    assert_eq!(n + w.lost(), 8000, "samples {n} + lost {}", w.lost());
    assert_eq!(w.counts().unwrap(), vec![8000]);
}

/// `depth` nested calls (each with its own frame) before the writes, so the
/// stack at the hit is deeper than a small copy.
#[inline(never)]
fn nested(depth: u32, p: &AtomicU64, n: u64) {
    let pad = std::hint::black_box([depth as u8; 64]);
    if depth == 0 {
        writer(p, n);
    } else {
        nested(depth - 1, p, n);
    }
    std::hint::black_box(pad);
}

/// Walking a copied stack gives the kernel's callchain: the same frames
/// (and, through code without frame pointers, more) when the copy holds the
/// whole stack, a flagged prefix when it does not. Three watchers sample the same writes at once.
#[test]
fn copied_stack_walk_gives_the_kernel_callchain_or_a_flagged_prefix() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let addr = X.as_ptr() as u64;
    let open = |callchain| {
        Watcher::builder()
            .target(T::Thread(gettid()))
            .watch("x", BpAttr::write(addr, 8))
            .mode(Mode::Sample {
                callchain,
                user_regs_stack: false,
            })
            // 40 samples of up to 64 KiB each.
            .ring_pages(1024)
            .open()
            .unwrap()
    };
    let kernel = open(Callchain::Kernel);
    let full = open(Callchain::Copied {
        stack_bytes: hwbreak_linux::watch::MAX_STACK_BYTES,
    });
    let small = open(Callchain::Copied { stack_bytes: 256 });
    nested(12, &X, 40);
    let chains = |w: &Watcher| {
        let mut v = Vec::new();
        w.drain(|h| v.push((h.ext.stack.to_vec(), h.ext.stack_truncated, h.sample.ip)));
        v
    };
    let (k, f, s) = (chains(&kernel), chains(&full), chains(&small));
    assert_eq!((k.len(), f.len(), s.len()), (40, 40, 40));
    for i in 0..40 {
        let (kc, ktrunc, kip) = &k[i];
        assert!(!ktrunc, "the kernel's walk is never flagged");
        assert!(kc.len() > 14, "12 nested frames + writer + test: {kc:x?}");
        assert_eq!(f[i].2, *kip);
        // The copy is walked with DWARF CFI where the modules have it, so
        // it can go on past where the kernel's frame-pointer walk stops
        // (glibc's `start_thread` keeps no frame pointer).
        assert!(
            f[i].0.starts_with(kc),
            "hit {i}: a 64 KiB copy holds the whole test stack: {:x?} vs the kernel's {kc:x?}",
            f[i].0
        );
        assert!(!f[i].1, "hit {i}: a complete walk is not flagged");
        let (sc, strunc, _) = &s[i];
        assert!(
            *strunc,
            "hit {i}: 12 frames of 64+ bytes do not fit in 256 bytes"
        );
        assert!(sc.len() >= 2 && sc.len() < kc.len(), "hit {i}: {sc:x?}");
        assert_eq!(
            &kc[..sc.len()],
            &sc[..],
            "hit {i}: a prefix of the real chain"
        );
    }
    assert_eq!(small.lost() + full.lost() + kernel.lost(), 0);
}

#[test]
fn a_stack_copy_the_kernel_cannot_take_is_refused_before_any_syscall() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    for bytes in [0, 12, hwbreak_linux::watch::MAX_STACK_BYTES + 8] {
        let e = Watcher::builder()
            .target(T::Thread(gettid()))
            .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
            .mode(Mode::Sample {
                callchain: Callchain::Copied { stack_bytes: bytes },
                user_regs_stack: false,
            })
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 8"), "{bytes}: {e}");
    }
}

/// Issue 9, defect 9: with side-band records in the ring (thread creation
/// and exit, or a launched program's mmaps), a full ring loses those too,
/// and `lost` used to count them as lost hits (hits + lost = 4,000,004 for
/// 4,000,000 writes). Side-band records now come from an event of their
/// own, so `lost` counts hits only, exactly, and `lost_side_band` the rest.
#[test]
fn lost_counts_hits_only_when_side_band_records_are_lost_too() {
    let _g = slots();
    static Z: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("z", BpAttr::write(Z.as_ptr() as u64, 8))
        .mode(SAMPLE_CC)
        .ring_pages(1)
        .task_events(true)
        .open()
        .unwrap();
    // Nobody drains while 40 threads are created, write, and exit: each
    // makes a fork and an exit record, and the 1-page ring overflows.
    let writes_per_thread = 200;
    for _ in 0..4 {
        let hs: Vec<_> = (0..10)
            .map(|_| std::thread::spawn(move || writer(&Z, writes_per_thread)))
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    let total = 40 * writes_per_thread;
    let (mut hits, mut tasks) = (0u64, 0u64);
    w.drain_with_tasks(|_| hits += 1, |_| tasks += 1);
    println!(
        "hits {hits} lost {} side-band drained {tasks} lost {}",
        w.lost(),
        w.lost_side_band()
    );
    assert!(w.lost() > 0, "a 1-page ring cannot hold {total} records");
    assert_eq!(
        hits + w.lost(),
        total,
        "hits {hits} + lost {} != writes {total}",
        w.lost()
    );
    assert!(
        w.lost_side_band() > 0,
        "fork/exit records were lost too, and are counted apart"
    );
    assert_eq!(w.counts().unwrap(), vec![total]);
}
