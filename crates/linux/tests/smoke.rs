use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Mode, Target, Watcher};
static mut X: u64 = 0;
#[test]
fn smoke() {
    let addr = &raw const X as u64;
    let tid = unsafe { libc::gettid() };
    let w = Watcher::builder()
        .target(Target::Thread(tid))
        .watch("x", BpAttr::write(addr, 8))
        .open()
        .unwrap();
    for i in 0..10 {
        unsafe { std::ptr::write_volatile(&raw mut X, i) };
    }
    assert_eq!(w.counts().unwrap(), vec![10]);
    let w2 = Watcher::builder()
        .target(Target::Thread(tid))
        .watch("x", BpAttr::write(addr, 8))
        .mode(Mode::Sample {
            callchain: true,
            user_regs_stack: false,
        })
        .open()
        .unwrap();
    for i in 0..10 {
        unsafe { std::ptr::write_volatile(&raw mut X, i) };
    }
    let mut n = 0;
    w2.drain(|h| {
        n += 1;
        eprintln!("{:?}", h);
    });
    assert_eq!(n, 10);
}
