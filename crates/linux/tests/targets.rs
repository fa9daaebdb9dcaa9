//! CPU-wide targets, execute breakpoints, task records, sampling a launched command.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Callchain, Mode, Target as T, TaskRecord, Watcher};
use std::sync::atomic::{AtomicU64, Ordering};

#[inline(never)]
fn write_n(p: &AtomicU64, n: u64) {
    for i in 0..n {
        p.store(i, Ordering::Relaxed);
    }
}

fn is_root() -> bool {
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn all_cpus_and_one_cpu_count_every_task_that_touches_the_address() {
    let _g = slots();
    if !is_root() {
        println!("SKIP: CPU-wide watches need root or CAP_PERFMON");
        return;
    }
    static X: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::AllCpus)
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .open()
        .unwrap();
    let cpus = hwbreak_linux::procfs::online_cpus().unwrap();
    assert_eq!(w.members(), cpus.len());
    write_n(&X, 100);
    std::thread::spawn(|| write_n(&X, 50)).join().unwrap();
    assert_eq!(w.counts().unwrap(), vec![150]);
    drop(w);
    // One CPU: pin this thread there, write; the count sees exactly those.
    let cpu = *cpus.last().unwrap();
    let w = Watcher::builder()
        .target(T::Cpu(cpu))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Off,
            user_regs_stack: false,
        })
        .open()
        .unwrap();
    let h = std::thread::spawn(move || {
        // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
        assert_eq!(
            // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) },
            0
        );
        write_n(&X, 40);
    });
    h.join().unwrap();
    assert_eq!(w.counts().unwrap(), vec![40]);
    let mut n = 0;
    w.drain(|hit| {
        assert_eq!(hit.sample.cpu.0, cpu);
        n += 1;
    });
    assert_eq!(n, 40);
}

#[inline(never)]
#[no_mangle]
pub extern "C" fn hwbreak_test_target_fn(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(3))
}

#[test]
fn execute_breakpoint_counts_calls_of_a_function() {
    let _g = slots();
    let f = hwbreak_test_target_fn as *const () as u64;
    let w = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("hwbreak_test_target_fn", BpAttr::exec(f))
        .mode(Mode::Sample {
            callchain: Callchain::Kernel,
            user_regs_stack: false,
        })
        .open()
        .unwrap();
    for i in 0..25 {
        std::hint::black_box(hwbreak_test_target_fn(std::hint::black_box(i)));
    }
    assert_eq!(w.counts().unwrap(), vec![25]);
    let mut n = 0;
    w.drain(|h| {
        // Execute breakpoints fault before the instruction: IP is the function itself.
        assert_eq!(h.sample.ip, f);
        n += 1;
    });
    assert_eq!(n, 25);
}

#[test]
fn task_records_report_threads_created_and_exiting() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Off,
            user_regs_stack: false,
        })
        .task_events(true)
        .open()
        .unwrap();
    let me = gettid() as u32;
    let child = std::thread::spawn(|| {
        write_n(&X, 3);
        gettid() as u32
    })
    .join()
    .unwrap();
    let (mut forks, mut exits, mut hits) = (Vec::new(), Vec::new(), 0);
    w.drain_with_tasks(
        |h| {
            assert_eq!(h.tid(), child);
            hits += 1;
        },
        |t| match t {
            TaskRecord::Fork { tid, ptid } => forks.push((tid, ptid)),
            TaskRecord::Exit { tid } => exits.push(tid),
            TaskRecord::Throttle(_) | TaskRecord::Mmap { .. } => {}
            TaskRecord::Switch(e) => panic!("switch records are off unless asked for: {e:?}"),
        },
    );
    assert_eq!(hits, 3);
    assert!(
        forks.contains(&(child, me)),
        "{forks:?} lacks ({child}, {me})"
    );
    assert!(exits.contains(&child), "{exits:?}");
}

#[test]
fn launched_command_is_sampled_from_exec_with_no_loss() {
    use std::io::{BufRead, Write};
    let _g = slots();
    let exe = c_target("writers");
    let out = std::process::Command::new("setarch")
        .arg("-R")
        .arg(&exe)
        .args(["1", "0", "0", "0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (addr, _) = parse_addr_line(
        std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    );
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["1000", "2", "2", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let w = std::sync::Arc::new(
        Watcher::builder()
            .target(T::Launch(cmd))
            .watch("target_var", BpAttr::write(addr, 8))
            .mode(Mode::Sample {
                callchain: Callchain::Kernel,
                user_regs_stack: false,
            })
            .open()
            .unwrap(),
    );
    let pid = w.pid().unwrap() as u32;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let _ = Watcher::boost_current_thread();
            let mut n = 0u64;
            loop {
                let done = stop.load(Ordering::Acquire);
                w.poll(Some(std::time::Duration::from_millis(10))).unwrap();
                w.drain(|h| {
                    assert_eq!((h.ext.pid, h.sample.addr), (pid, addr));
                    n += 1;
                });
                if done {
                    return n;
                }
            }
        })
    };
    let mut stdin = w.take_child_stdin().unwrap();
    let mut out = std::io::BufReader::new(w.take_child_stdout().unwrap());
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    out.read_line(&mut l).unwrap();
    writeln!(stdin, "go").unwrap();
    l.clear();
    out.read_line(&mut l).unwrap();
    let writes: u64 = l.trim().strip_prefix("done ").unwrap().parse().unwrap();
    drop(stdin);
    assert!(w.wait().unwrap().success());
    stop.store(true, Ordering::Release);
    let n = drainer.join().unwrap();
    assert_eq!(writes, 1000 * (1 + 2 + 2 + 4));
    assert_eq!(w.lost(), 0);
    assert_eq!(n, writes);
}
