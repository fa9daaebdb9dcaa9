//! The stop-mode backend: DR0/DR7 on a stopped child, SIGTRAP at the write.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::ptrace::{peek_dr, PtraceBreakpoints};
use hwbreak_linux::Error;

fn waitstop(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
    assert_eq!(r, pid);
    assert!(libc::WIFSTOPPED(st), "status {st:#x}");
    libc::WSTOPSIG(st)
}

fn rip(pid: i32) -> u64 {
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) };
    assert_eq!(r, 0);
    regs.rip
}

#[test]
fn dr0_write_watch_on_stopped_child_traps_after_the_write() {
    let _g = slots();
    let mut t = Target::spawn("writers", &["3", "0", "0", "0"]);
    let pid = t.pid;
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) }, 0);
    assert_eq!(waitstop(pid), libc::SIGSTOP);
    let mut bps = PtraceBreakpoints::new(pid);
    bps.set(0, &BpAttr::write(t.addr, 8)).unwrap();
    assert_eq!(peek_dr(pid, 0).unwrap(), t.addr);
    let dr7 = bps.dr7().unwrap();
    assert_eq!(dr7 & 1, 1, "L0 set");
    assert_eq!(
        (dr7 >> 16) & 0xf,
        0b1001,
        "RW0=01 (write), LEN0=10 (8 bytes)"
    );
    // Let it run to the first write.
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) }, 0);
    t.go();
    let mut traps = 0;
    loop {
        let sig = waitstop(pid);
        if sig != libc::SIGTRAP {
            // Not ours (e.g. SIGCHLD); pass it on.
            // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
            unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, sig) };
            continue;
        }
        let (hits, step) = bps.hit_slots().unwrap();
        assert_eq!((hits, step), (1, false), "DR6 must say DR0 fired");
        // x86 data breakpoints trap after the access: the value is already written.
        // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
        let v = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, pid, t.addr, 0) };
        assert_eq!(v as u64, traps, "write number {traps} already visible");
        assert!(rip(pid) > 0x1000);
        traps += 1;
        bps.clear_status().unwrap();
        if traps == 3 {
            break;
        }
        // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
    }
    bps.clear(0).unwrap();
    assert_eq!(bps.dr7().unwrap() & 0xff, 0, "DR7 enable bits cleared");
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) }, 0);
    assert_eq!(t.done(), 3);
    t.finish();
}

#[test]
fn ptrace_backend_checks_arch_rules_and_needs_a_stopped_tracee() {
    let mut bps = PtraceBreakpoints::new(1);
    let e = bps.set(0, &BpAttr::write(0x601001, 4)).unwrap_err();
    assert!(matches!(e, Error::Arch { .. }), "{e:?}");
    let e = bps.set(4, &BpAttr::write(0x601000, 4)).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    // pid 1 is alive but not traced by us: ESRCH from ptrace, explained.
    let e = bps.set(0, &BpAttr::write(0x601000, 4)).unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("not ptrace-stopped")),
        "{e:?}"
    );
}
