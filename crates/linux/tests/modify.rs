//! Modify in place (PERF_EVENT_IOC_MODIFY_ATTRIBUTES), enable and disable.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Target as T, Watcher};
use hwbreak_linux::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

static A: AtomicU64 = AtomicU64::new(0);
static B: AtomicU64 = AtomicU64::new(0);
static C: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn w(x: &AtomicU64, n: u64) {
    for i in 0..n {
        x.store(i, Ordering::Relaxed);
    }
}

#[test]
fn modify_moves_the_watch_on_every_thread_including_inherited_ones() {
    let _g = slots();
    let go = Arc::new(Barrier::new(4));
    let watcher = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("v", BpAttr::write(A.as_ptr() as u64, 8))
        .open()
        .unwrap();
    // Threads created after open carry inherited copies.
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let go = go.clone();
            std::thread::spawn(move || {
                w(&A, 10);
                go.wait();
                go.wait();
                w(&A, 100);
                w(&B, 7);
            })
        })
        .collect();
    go.wait();
    assert_eq!(watcher.counts().unwrap(), vec![30]);
    watcher
        .modify(0, BpAttr::write(B.as_ptr() as u64, 8))
        .unwrap();
    go.wait();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(
        watcher.counts().unwrap(),
        vec![30 + 3 * 7],
        "writes to A after the move must not count"
    );
    assert_eq!(watcher.watches()[0].attr.addr, B.as_ptr() as u64);
}

#[test]
fn refused_modify_keeps_the_old_shape() {
    let _g = slots();
    let watcher = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("v", BpAttr::write(C[0].as_ptr() as u64, 8))
        .open()
        .unwrap();
    // Arch rule: refused before any ioctl.
    let e = watcher
        .modify(0, BpAttr::write(C[1].as_ptr() as u64 + 1, 8))
        .unwrap_err();
    assert!(matches!(e, Error::Arch { .. }), "{e:?}");
    // Kernel refusal (a kernel address on an event that excludes the kernel): rolled back.
    let e = watcher
        .modify(0, BpAttr::write(0xffff_ffff_8100_0000, 8).privileged())
        .unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "permission denied to move watch `v` to kernel address 0xffffffff81000000 (EINVAL): the watch was opened for user space only and a modify cannot change that; open a new watch on the kernel address instead (privileged, CPU-wide: root or CAP_PERFMON)"
    );
    w(&C[0], 5);
    w(&C[1], 5);
    assert_eq!(watcher.counts().unwrap(), vec![5]);
    assert_eq!(watcher.watches()[0].attr.addr, C[0].as_ptr() as u64);
    let e = watcher
        .modify(3, BpAttr::write(C[1].as_ptr() as u64, 8))
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
}

#[test]
fn disable_stops_counting_and_enable_resumes_and_modify_can_change_length_and_access() {
    let _g = slots();
    static D: AtomicU64 = AtomicU64::new(0);
    let watcher = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("v", BpAttr::write(D.as_ptr() as u64, 8))
        .open()
        .unwrap();
    w(&D, 3);
    watcher.disable().unwrap();
    w(&D, 50);
    watcher.enable().unwrap();
    w(&D, 4);
    assert_eq!(watcher.counts().unwrap(), vec![7]);
    // rw on 4 bytes: a read of those bytes now counts too.
    watcher
        .modify(0, BpAttr::read_write(D.as_ptr() as u64, 4))
        .unwrap();
    let _ = D.load(Ordering::Relaxed);
    assert_eq!(watcher.counts().unwrap(), vec![8]);
    // Opened disabled: holds the slot, counts nothing until enabled.
    let w2 = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("off", BpAttr::write(A.as_ptr() as u64, 8).disabled())
        .open()
        .unwrap();
    w(&A, 5);
    assert_eq!(w2.counts().unwrap(), vec![0]);
    w2.enable().unwrap();
    w(&A, 5);
    assert_eq!(w2.counts().unwrap(), vec![5]);
}
