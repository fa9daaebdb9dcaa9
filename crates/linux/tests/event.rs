//! The raw RAII handle: one method per ioctl.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::event::{Event, EventAttr};
use hwbreak_linux::procfs::open_fd_count;
use std::sync::atomic::{AtomicU64, Ordering};

static X: AtomicU64 = AtomicU64::new(0);
static Y: AtomicU64 = AtomicU64::new(0);

fn w(x: &AtomicU64, n: u64) {
    for i in 0..n {
        x.store(i, Ordering::Relaxed);
    }
}

#[test]
fn each_ioctl_does_what_it_says() {
    let _g = slots();
    let fds = open_fd_count();
    let attr = EventAttr::breakpoint(&BpAttr::write(X.as_ptr() as u64, 8)).disabled(true);
    let ev = Event::open(&attr, 0, -1, None).unwrap();
    w(&X, 3);
    assert_eq!(ev.read_count().unwrap().value, 0, "opened disabled");
    ev.enable().unwrap();
    w(&X, 3);
    assert_eq!(ev.read_count().unwrap().value, 3);
    ev.disable().unwrap();
    w(&X, 3);
    assert_eq!(ev.read_count().unwrap().value, 3);
    ev.reset().unwrap();
    assert_eq!(ev.read_count().unwrap().value, 0);
    // MODIFY_ATTRIBUTES: move to Y, armed.
    ev.modify(&attr.with_bp(&BpAttr::write(Y.as_ptr() as u64, 8)))
        .unwrap();
    w(&X, 2);
    w(&Y, 4);
    let c = ev.read_count().unwrap();
    assert_eq!(c.value, 4);
    assert_eq!(
        c.id,
        ev.id().unwrap(),
        "PERF_FORMAT_ID matches PERF_EVENT_IOC_ID"
    );
    assert!(c.time_enabled > 0 && c.time_running > 0);
    // SET_OUTPUT: send this event's samples to a ring owned by another event
    // (same task, both cpu = -1).
    let layout = hwbreak_linux::record::SampleLayout::new(0, false, 0).unwrap();
    let mut ring = hwbreak_linux::ring::Ring::new(
        Event::open(&EventAttr::dummy(), 0, -1, None).unwrap(),
        1,
        layout,
    )
    .unwrap();
    let no_ring = Event::open(&EventAttr::dummy(), 0, -1, None).unwrap();
    assert!(
        ev.set_output(&no_ring).is_err(),
        "an event without a ring cannot take output"
    );
    ev.set_output(ring.event()).unwrap();
    w(&Y, 5);
    let mut samples = 0;
    ring.drain(|r| {
        if let hwbreak_linux::record::Record::Sample(_) = r {
            samples += 1;
        }
    });
    assert_eq!(samples, 5);
    drop(ev);
    drop(no_ring);
    drop(ring);
    assert_eq!(open_fd_count(), fds, "Drop closes the fd");
    // Closed = unregistered: 4 fresh slots are available again.
    let four: Result<Vec<Event>, _> = (0..4)
        .map(|_| {
            let a = EventAttr::breakpoint(&BpAttr::write(X.as_ptr() as u64, 8));
            Event::open(&a, 0, -1, None)
        })
        .collect();
    let four = match four {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            println!(
                "SKIP (last part): another perf user holds debug-register slots on this machine"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let fifth = Event::open(
        &EventAttr::breakpoint(&BpAttr::write(Y.as_ptr() as u64, 8)),
        0,
        -1,
        None,
    );
    assert_eq!(fifth.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    drop(four);
}
