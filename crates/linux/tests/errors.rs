//! Every error path: a clear error naming the rule, and nothing left behind.
mod common;
mod nobody;

use common::*;
use hwbreak_core::arch::ArchError;
use hwbreak_core::{Access, BpAttr};
use hwbreak_linux::procfs::open_fd_count;
use hwbreak_linux::watch::{Target as T, Watcher};
use hwbreak_linux::Error;
use std::sync::atomic::{AtomicU64, Ordering};

static V: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn addr(i: usize) -> u64 {
    V[i].as_ptr() as u64
}

fn thread_watcher(n: usize) -> Result<Watcher, Error> {
    let mut b = Watcher::builder().target(T::Thread(gettid()));
    for i in 0..n {
        b = b.watch(format!("v{i}"), BpAttr::write(addr(i), 8));
    }
    b.open()
}

#[test]
fn fifth_watch_in_one_request_is_refused_before_any_syscall() {
    let _g = slots();
    let fds = open_fd_count();
    let e = thread_watcher(5).unwrap_err();
    let Error::NoSlot {
        watch,
        held_by_us,
        total,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((watch.as_str(), held_by_us.len(), *total), ("v4", 4, 4));
    assert!(e.to_string().contains("remaining: 0"), "{e}");
    assert_eq!(open_fd_count(), fds);
}

#[test]
fn kernel_enospc_names_the_holders_and_what_remains() {
    let _g = slots();
    let Some(four) = all_slots(thread_watcher(4)) else {
        return;
    };
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("fifth", BpAttr::write(addr(5), 8))
        .open()
        .unwrap_err();
    let Error::NoSlot {
        watch,
        held_by_us,
        other_users,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (watch.as_str(), held_by_us.len(), *other_users),
        ("fifth", 0, 4)
    );
    let msg = e.to_string();
    assert!(
        msg.contains("4 held by other perf users") && msg.contains("remaining: 0"),
        "{msg}"
    );
    assert_eq!(open_fd_count(), fds, "the failed request left an fd");
    // Within one request: 3 held here + 1 elsewhere = the 4th of ours fails and names ours.
    drop(four);
    let one = thread_watcher(1).unwrap();
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("a", BpAttr::write(addr(1), 8))
        .watch("b", BpAttr::write(addr(2), 8))
        .watch("c", BpAttr::write(addr(3), 8))
        .watch("d", BpAttr::write(addr(4), 8))
        .open()
        .unwrap_err();
    let Error::NoSlot {
        watch, held_by_us, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(watch, "d");
    assert_eq!(held_by_us, &["a", "b", "c"]);
    drop(one);
}

#[test]
fn process_wide_failure_on_one_thread_rolls_back_every_thread() {
    let _g = slots();
    // A thread whose 4 slots are all taken.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let Some(w) = all_slots(thread_watcher(4)) else {
            tx.send(None).unwrap();
            return;
        };
        tx.send(Some(gettid())).unwrap();
        done_rx.recv().unwrap();
        drop(w);
    });
    let Some(busy) = rx.recv().unwrap() else {
        h.join().unwrap();
        return;
    };
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("x", BpAttr::write(addr(6), 8))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NoSlot { .. }), "{e:?}");
    assert_eq!(
        open_fd_count(),
        fds,
        "events opened on other threads were not rolled back"
    );
    // And nothing counts: a fresh watch on this thread sees only its own writes.
    let w = thread_watcher(1).unwrap();
    V[0].store(1, Ordering::Relaxed);
    assert_eq!(w.counts().unwrap(), vec![1]);
    let _ = busy;
    done_tx.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn unaligned_address_names_the_alignment_rule() {
    let _g = slots();
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("odd", BpAttr::write(addr(0) + 2, 4))
        .open()
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Arch {
                source: ArchError::Unaligned { align: 4, .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("not aligned"), "{e}");
    assert_eq!(open_fd_count(), fds);
}

#[test]
fn read_only_watch_is_refused_on_x86_with_rw_hint() {
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("r", BpAttr::new(addr(0), 8, Access::Read))
        .open()
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Arch {
                source: ArchError::BadAccess { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("`rw`"), "{e}");
}

#[test]
fn bad_length_and_kernel_address_are_refused() {
    let _g = slots();
    let e = thread_watcher_with(BpAttr::write(addr(0), 3)).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Arch {
                source: ArchError::BadLength { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let e = thread_watcher_with(BpAttr::write(0xffff_ffff_8100_0000, 8)).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Arch {
                source: ArchError::KernelAddress { .. },
                ..
            }
        ),
        "{e:?}"
    );
}

fn thread_watcher_with(a: BpAttr) -> Result<Watcher, Error> {
    Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("w", a)
        .open()
}

#[test]
fn dead_pid_is_process_gone() {
    let _g = slots();
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    for t in [T::Process(pid), T::Thread(pid)] {
        let e = Watcher::builder()
            .target(t)
            .watch("x", BpAttr::write(0x601000, 8))
            .open()
            .unwrap_err();
        assert!(
            matches!(e, Error::ProcessGone { pid: p } if p == pid),
            "{e:?}"
        );
        assert!(e.to_string().contains("does not exist"));
    }
}

#[test]
fn unmapped_address_is_refused_before_opening() {
    let _g = slots();
    let e = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("nowhere", BpAttr::write(0x1000, 8))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NotMapped { addr: 0x1000, .. }), "{e:?}");
    assert!(e.to_string().contains("/proc/"), "{e}");
}

#[test]
fn offline_cpu_and_empty_requests_are_invalid() {
    let _g = slots();
    let e = Watcher::builder()
        .target(T::Cpu(4095))
        .watch("x", BpAttr::write(addr(0), 8))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NoSuchCpu { cpu: 4095, .. }), "{e:?}");
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
    let e = Watcher::builder()
        .watch("x", BpAttr::write(addr(0), 8))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
}

#[test]
fn launching_a_missing_program_fails_cleanly() {
    let _g = slots();
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Launch(std::process::Command::new(
            "/nonexistent/program",
        )))
        .watch("x", BpAttr::write(0x601000, 8))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Launch { .. }), "{e:?}");
    assert_eq!(open_fd_count(), fds);
}

/// What `nobody` is told about a root process (any of its threads): the
/// ptrace read-access rule and the owner, nothing about perf_event_paranoid
/// (it does not decide this) or Yama (it restricts attaching only).
fn other_user_tail() -> String {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    format!(" (EACCES): it belongs to uid 0 and you are uid {me}; another user's process may be watched only with ptrace read access to it: root, CAP_SYS_PTRACE or CAP_PERFMON. Run as uid 0 or as root, or launch the program yourself so that it is yours")
}

/// Runs as `nobody` (re-executed by `unprivileged_user_gets_permission_error_*`).
#[test]
#[ignore]
fn child_permission_check() {
    let _g = slots();
    let Ok(pid) = std::env::var("HWBREAK_PERM_PID") else {
        return;
    };
    let pid: i32 = pid.parse().unwrap();
    let addr = u64::from_str_radix(&std::env::var("HWBREAK_PERM_ADDR").unwrap(), 16).unwrap();
    // The maps check comes first (before any perf_event_open): same rule.
    let e = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(addr, 8))
        .open()
        .unwrap_err();
    println!("MAPS: {e}");
    assert!(matches!(e, Error::Permission { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "permission denied to read /proc/{pid}/maps{}",
            other_user_tail()
        )
    );
    let e = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(addr, 8))
        .check_mapped(false)
        .open()
        .unwrap_err();
    println!("PROCESS: {e}");
    assert!(matches!(e, Error::Permission { .. }), "{e:?}");
    let msg = e.to_string();
    let tid = msg
        .strip_prefix("permission denied to open a breakpoint on thread ")
        .and_then(|r| r.split_once(' '))
        .map(|(t, _)| t.parse::<i32>().unwrap())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(hwbreak_linux::procfs::threads(pid).unwrap().contains(&tid));
    assert_eq!(
        msg,
        format!(
            "permission denied to open a breakpoint on thread {tid}{}",
            other_user_tail()
        )
    );
    // Raising a thread's priority: the scheduling rules only.
    match Watcher::boost_current_thread() {
        Ok(how) => println!("PRIORITY: skipped, nobody may use {how} here (rlimits)"),
        Err(e) => {
            println!("PRIORITY: {e}");
            assert!(matches!(e, Error::Permission { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                "permission denied to raise the drain thread's priority (EACCES): SCHED_FIFO needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1, and nice -10 needs CAP_SYS_NICE or RLIMIT_NICE >= 30. Run as root, or raise the limits (`ulimit -r 1`, /etc/security/limits.conf)"
            );
        }
    }
    let paranoid = hwbreak_linux::procfs::perf_event_paranoid().unwrap();
    if paranoid <= 0 {
        println!("ALLCPUS: skipped, perf_event_paranoid is {paranoid}: CPU-wide events are open to everyone");
        return;
    }
    let e = Watcher::builder()
        .target(T::AllCpus)
        .watch("x", BpAttr::write(addr, 8))
        .open()
        .unwrap_err();
    println!("ALLCPUS: {e}");
    assert!(matches!(e, Error::Permission { .. }), "{e:?}");
    // Only the CPU-wide rules: CAP_PERFMON or root, and perf_event_paranoid.
    let first_cpu = hwbreak_linux::procfs::online_cpus().unwrap()[0];
    assert_eq!(
        e.to_string(),
        format!(
            "permission denied to open a CPU-wide breakpoint on CPU {first_cpu} (EACCES): a CPU-wide watch needs root or CAP_PERFMON, or kernel.perf_event_paranoid <= 0, and it is {}. Run as root, give the program CAP_PERFMON (`setcap cap_perfmon+ep PROGRAM`), or allow everyone with `sysctl kernel.perf_event_paranoid=0`; or watch a process of your own instead of every CPU",
            hwbreak_linux::error::explain_paranoid(paranoid)
        )
    );
}

#[test]
fn unprivileged_user_gets_permission_error_against_root_process() {
    let _g = slots();
    let t = Target::spawn("writers", &["1", "0", "0", "0"]);
    let Some(so) = nobody::run_as_nobody(
        "child_permission_check",
        &[
            ("HWBREAK_PERM_PID", t.pid.to_string()),
            ("HWBREAK_PERM_ADDR", format!("{:x}", t.addr)),
        ],
    ) else {
        return;
    };
    // The child pins each message; here: it got that far.
    assert!(so.contains("MAPS: permission denied"), "{so}");
    assert!(so.contains("PROCESS: permission denied"), "{so}");
    assert!(so.contains("PRIORITY: "), "{so}");
    assert!(so.contains("ALLCPUS: "), "{so}");
    println!("{so}");
}

#[test]
fn other_process_failure_on_one_thread_rolls_back_and_lets_it_run() {
    let _g = slots();
    let mut t = Target::spawn("writers", &["100", "3", "0", "0"]);
    let tids = hwbreak_linux::procfs::threads(t.pid).unwrap();
    assert_eq!(tids.len(), 4);
    let busy = *tids.last().unwrap();
    // Hold all 4 slots of one thread of the target.
    let mut b = Watcher::builder().target(T::Thread(busy));
    for i in 0..4 {
        b = b.watch(
            format!("hold{i}"),
            BpAttr::write(t.addr + 8 + 8 * i as u64, 8),
        );
    }
    let Some(hold) = all_slots(b.check_mapped(false).open()) else {
        return;
    };
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Process(t.pid))
        .watch("target_var", BpAttr::write(t.addr, 8))
        .open()
        .unwrap_err();
    let Error::NoSlot { other_users, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*other_users, 4);
    assert_eq!(
        open_fd_count(),
        fds,
        "events on the other threads were not rolled back"
    );
    drop(hold);
    // The process was released (not left frozen) and runs normally.
    t.go();
    assert_eq!(t.done(), 100 * 4);
    t.finish();
}

/// Issue 9, defect 12: `-p 2` (kthreadd) used to be called a process that
/// "does not exist". A kernel thread is named as such, by the watcher and
/// by symbol resolution, and nothing is opened.
#[test]
fn a_kernel_thread_is_named_a_kernel_thread_not_a_dead_process() {
    // Serialized with the other tests that count descriptors.
    let _g = slots();
    let fds = open_fd_count();
    for target in [T::Process(2), T::Thread(2)] {
        let e = Watcher::builder()
            .target(target)
            .watch("x", BpAttr::write(0x1000, 8))
            .open()
            .unwrap_err();
        assert!(
            matches!(&e, Error::KernelThread { pid: 2, comm } if comm == "kthreadd"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "process 2 (kthreadd) is a kernel thread: it has no user-space memory to watch. Pass the PID of a user process (`ps -o pid,comm` shows kernel threads in [brackets]), or watch a kernel address CPU-wide as root"
        );
    }
    let Err(e) = hwbreak_linux::symbols::Resolver::for_pid(2) else {
        panic!("a kernel thread has no symbols to resolve");
    };
    assert!(
        e.to_string()
            .starts_with("process 2 (kthreadd) is a kernel thread"),
        "{e}"
    );
    assert_eq!(open_fd_count(), fds);
}

/// Issue 9, defect 12: a user-space watch on the guard page below the
/// kernel half got the kernel's raw "Invalid argument (os error 22)". It
/// now names the end of user space.
#[test]
fn an_address_above_user_space_is_named_not_a_raw_einval() {
    let _g = slots();
    let fds = open_fd_count();
    let e = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("top", BpAttr::write(0x7fff_ffff_fff8, 8))
        .check_mapped(false)
        .open()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::AboveUserSpace {
                addr: 0x7fff_ffff_fff8,
                limit: 0x7fff_ffff_f000,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "watch `top`: address 0x7ffffffffff8+8 is not below 0x7ffffffff000, where x86-64 user space ends (the last page below the kernel half is a guard page, never mapped), so the kernel refuses a user-space breakpoint there; pick an address below 0x7ffffffff000"
    );
    assert!(!e.to_string().contains("os error"));
    // Moving a live watch there is refused the same way, and it stays put.
    let w = thread_watcher(1).unwrap();
    let e = w.modify(0, BpAttr::write(0x7fff_ffff_f000, 8)).unwrap_err();
    assert!(matches!(e, Error::AboveUserSpace { .. }), "{e:?}");
    assert_eq!(w.watches()[0].attr.addr, addr(0));
    drop(w);
    assert_eq!(open_fd_count(), fds);
}

/// Issue 9, defect 12: `counter-0x7fffffffffffffff` wrapped around below
/// address 0 to a kernel-half address, and was refused as "kernel half".
/// An offset that leaves the address space is named as such.
#[test]
fn an_offset_below_address_zero_is_refused_not_wrapped_into_the_kernel_half() {
    use hwbreak_linux::symbols::{Resolver, SymbolError};
    // Its pipes would upset the tests that count descriptors.
    let _g = slots();
    let t = Target::spawn("writers", &["1", "1", "1", "0"]);
    let r = Resolver::for_pid(t.pid).unwrap();
    assert_eq!(r.resolve("target_var").unwrap().addr, t.addr);
    let e = r.resolve("target_var-0x7fffffffffffffff").unwrap_err();
    assert!(matches!(e, SymbolError::BadRange { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.ends_with(
            "the offset -0x7fffffffffffffff goes below address 0; pick an offset that stays inside the variable or near it"
        ),
        "{m}"
    );
    assert!(!m.contains("kernel"), "{m}");
    // An offset that stays in the address space still works.
    assert_eq!(r.resolve("target_var-8").unwrap().addr, t.addr - 8);
}
