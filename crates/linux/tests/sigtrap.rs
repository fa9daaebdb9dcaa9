//! Synchronous callbacks on the hitting thread (perf sigtrap).
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::sigtrap::TrapWatcher;
use hwbreak_linux::watch::Target as T;
use hwbreak_linux::Error;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static X: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);
static WRONG_TID: AtomicU64 = AtomicU64::new(0);
static EXPECT_TID: AtomicI32 = AtomicI32::new(0);
static LAST_ADDR: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Hits seen by the handler on this thread (const-initialised: no lazy init in the handler).
    static MINE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[inline(never)]
fn writer(n: u64) {
    let p = X.as_ptr();
    for i in 0..n {
        // SAFETY: a plain aligned store to a live static.
        unsafe { std::arch::asm!("mov qword ptr [{p}], {v}", p = in(reg) p, v = in(reg) i) };
    }
}

#[test]
fn callback_runs_on_the_hitting_thread_exactly_once_per_hit_and_never_after_drop() {
    let _g = slots();
    let t = TrapWatcher::open(
        T::Process(std::process::id() as i32),
        vec![("x".into(), BpAttr::write(X.as_ptr() as u64, 8))],
        |hit| {
            HITS.fetch_add(1, Ordering::Relaxed);
            MINE.with(|m| m.set(m.get() + 1));
            LAST_ADDR.store(hit.addr, Ordering::Relaxed);
            // gettid is async-signal-safe.
            // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
            let me = unsafe { libc::gettid() };
            let want = EXPECT_TID.load(Ordering::Relaxed);
            if want != 0 && me != want {
                WRONG_TID.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .unwrap();
    EXPECT_TID.store(gettid(), Ordering::Relaxed);
    writer(1000);
    // Synchronous: the count is exact right after the writes, without waiting.
    assert_eq!(HITS.load(Ordering::Relaxed), 1000);
    assert_eq!(MINE.with(|m| m.get()), 1000);
    assert_eq!(LAST_ADDR.load(Ordering::Relaxed), X.as_ptr() as u64);
    EXPECT_TID.store(0, Ordering::Relaxed);
    // Threads created after open inherit the event; each callback runs on its own thread.
    let hs: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                writer(250);
                // The closure ran on this very thread, once per write.
                assert_eq!(MINE.with(|m| m.get()), 250);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(HITS.load(Ordering::Relaxed), 2000);
    assert_eq!(t.watcher().counts().unwrap(), vec![2000]);
    assert_eq!(WRONG_TID.load(Ordering::Relaxed), 0);
    drop(t);
    writer(10);
    assert_eq!(
        HITS.load(Ordering::Relaxed),
        2000,
        "callback ran after drop"
    );
}

#[test]
fn sigtrap_on_another_process_is_refused() {
    let e = TrapWatcher::open(
        T::Process(1),
        vec![("x".into(), BpAttr::write(0x601000, 8))],
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
}
