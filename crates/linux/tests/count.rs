//! Exact counts on real debug registers.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::procfs::open_fd_count;
use hwbreak_linux::watch::{Attach, Target as T, Watcher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

#[inline(never)]
fn write_n(p: &AtomicU64, n: u64) {
    for i in 0..n {
        p.store(i, Ordering::Relaxed);
    }
}

#[test]
fn one_thread_counts_exactly_its_own_writes_not_other_threads() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let w = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .open()
        .unwrap();
    write_n(&X, 1000);
    std::thread::spawn(|| write_n(&X, 500)).join().unwrap();
    assert_eq!(w.counts().unwrap(), vec![1000]);
}

#[test]
fn own_process_counts_threads_started_before_and_after_attach() {
    let _g = slots();
    static X: AtomicU64 = AtomicU64::new(0);
    let start = Arc::new(Barrier::new(5));
    let before: Vec<_> = (0..4)
        .map(|_| {
            let s = start.clone();
            std::thread::spawn(move || {
                s.wait();
                write_n(&X, 300);
            })
        })
        .collect();
    let w = Watcher::builder()
        .target(T::Process(std::process::id() as i32))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .open()
        .unwrap();
    assert_eq!(
        w.attach(),
        &Attach::Frozen,
        "own process is frozen by a helper"
    );
    start.wait();
    let after: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(|| {
                write_n(&X, 200);
                // A thread created by a thread created after attach.
                std::thread::spawn(|| write_n(&X, 10)).join().unwrap();
            })
        })
        .collect();
    write_n(&X, 7);
    for t in before.into_iter().chain(after) {
        t.join().unwrap();
    }
    assert_eq!(w.counts().unwrap(), vec![4 * 300 + 6 * 210 + 7]);
}

#[test]
fn other_process_counts_exactly_before_and_after_threads_frozen_attach() {
    let _g = slots();
    let mut t = Target::spawn("writers", &["1000", "3", "5", "0"]);
    let w = Watcher::builder()
        .target(T::Process(t.pid))
        .watch("target_var", BpAttr::write(t.addr, 8))
        .open()
        .unwrap();
    assert_eq!(w.attach(), &Attach::Frozen);
    t.go();
    let writes = t.done();
    assert_eq!(writes, 1000 * (1 + 3 + 5));
    assert_eq!(w.counts().unwrap(), vec![writes]);
    t.finish();
    // Counts stay readable after the process exited.
    assert_eq!(w.counts().unwrap(), vec![writes]);
}

#[test]
fn launched_child_is_watched_from_first_instruction_with_exact_counts() {
    let _g = slots();
    // Learn the address with ASLR off (as the watcher launches it), then launch watched.
    let exe = c_target("writers");
    let mut probe = std::process::Command::new("setarch");
    probe
        .args(["-R"])
        .arg(&exe)
        .args(["1", "0", "0", "0"])
        .stdin(std::process::Stdio::null());
    let out = probe.output().unwrap();
    let (addr, _) = parse_addr_line(
        std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    );
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["500", "2", "3", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let w = Watcher::builder()
        .target(T::Launch(cmd))
        .watch("target_var", BpAttr::write(addr, 8))
        .open()
        .unwrap();
    let pid = w.pid().unwrap();
    assert!(pid > 0);
    // Nothing written yet: the program is waiting for "go" (and ld.so does not touch it).
    assert_eq!(w.counts().unwrap(), vec![0]);
    let mut child_io = (
        w.take_child_stdin().unwrap(),
        std::io::BufReader::new(w.take_child_stdout().unwrap()),
    );
    use std::io::{BufRead, Write};
    let mut l = String::new();
    child_io.1.read_line(&mut l).unwrap();
    assert_eq!(
        parse_addr_line(&l).0,
        addr,
        "ASLR must be off for the launched child"
    );
    l.clear();
    child_io.1.read_line(&mut l).unwrap();
    writeln!(child_io.0, "go").unwrap();
    child_io.0.flush().unwrap();
    l.clear();
    child_io.1.read_line(&mut l).unwrap();
    let writes: u64 = l.trim().strip_prefix("done ").unwrap().parse().unwrap();
    assert_eq!(writes, 500 * (1 + 2 + 3 + 2 * 4));
    drop(child_io);
    assert!(w.wait().unwrap().success());
    assert_eq!(w.counts().unwrap(), vec![writes]);
}

#[test]
fn enumeration_race_no_thread_escapes_and_none_is_attached_twice() {
    let _g = slots();
    for round in 0..3 {
        let mut t = Target::spawn("spawner", &["50", "300"]);
        // Threads are being created and exiting while we attach.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let w = Watcher::builder()
            .target(T::Process(t.pid))
            .watch("target_var", BpAttr::write(t.addr, 8))
            .open()
            .unwrap();
        assert_eq!(w.attach(), &Attach::Frozen);
        t.go();
        let writes = t.done();
        assert!(writes >= 50 * 2 * 300, "round {round}: {writes}");
        assert_eq!(w.counts().unwrap(), vec![writes], "round {round}");
        t.finish();
    }
}

#[test]
fn thread_storm_counts_exact_and_leaks_no_fds() {
    let _g = slots();
    let fds_before = open_fd_count();
    {
        let mut t = Target::spawn("writers", &["20", "2", "2", "400"]);
        let w = Watcher::builder()
            .target(T::Process(t.pid))
            .watch("target_var", BpAttr::write(t.addr, 8))
            .open()
            .unwrap();
        t.go();
        let writes = t.done();
        assert_eq!(writes, 20 * (1 + 2 + 2 + 2 * 400));
        assert_eq!(w.counts().unwrap(), vec![writes]);
        t.finish();
    }
    // In-process storm while watched.
    static X: AtomicU64 = AtomicU64::new(0);
    {
        let w = Watcher::builder()
            .target(T::Process(std::process::id() as i32))
            .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
            .open()
            .unwrap();
        for _ in 0..10 {
            let hs: Vec<_> = (0..30)
                .map(|_| std::thread::spawn(|| write_n(&X, 3)))
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
        assert_eq!(w.counts().unwrap(), vec![300 * 3]);
    }
    assert_eq!(open_fd_count(), fds_before, "fds leaked");
}

/// Why the freeze exists: without it (re-scan until stable), threads created
/// by already-attached threads during the attach get a direct event on top of
/// the inherited one and count twice. Measured here; asserted only for the
/// frozen path (the over-count is timing-dependent). Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn experiment_rescan_without_freeze_can_double_count() {
    let _g = slots();
    for round in 0..10 {
        let mut t = Target::spawn("spawner", &["50", "300"]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let w = Watcher::builder()
            .target(T::Process(t.pid))
            .watch("v", BpAttr::write(t.addr, 8))
            .freeze(false)
            .open()
            .unwrap();
        t.go();
        let writes = t.done();
        let c = w.counts().unwrap()[0];
        eprintln!(
            "round {round}: writes {writes} counted {c} (threads attached directly: {})",
            w.members()
        );
        t.finish();
    }
}

#[test]
fn command_stopped_at_entry_resolves_pie_address_with_aslr_and_counts_exactly() {
    use hwbreak_linux::launch::StoppedAtEntry;
    use std::io::{BufRead, Write};
    let _g = slots();
    let exe = c_target("writers");
    // The symbol's offset in the file (PIE: relative to the load base).
    let nm = std::process::Command::new("nm").arg(&exe).output().unwrap();
    let off = String::from_utf8(nm.stdout)
        .unwrap()
        .lines()
        .find(|l| l.ends_with(" target_var"))
        .map(|l| u64::from_str_radix(l.split_whitespace().next().unwrap(), 16).unwrap())
        .expect("target_var in nm output");
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["300", "1", "2", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let stopped = StoppedAtEntry::spawn(cmd, false).unwrap();
    let pid = stopped.pid();
    // At the entry point the loader has run: the executable is mapped.
    let maps = hwbreak_linux::procfs::maps(pid).unwrap();
    let canon = std::fs::canonicalize(&exe).unwrap();
    let base = maps
        .iter()
        .find(|m| std::path::Path::new(&m.path) == canon && m.offset == 0)
        .expect("executable mapping")
        .start;
    let addr = base + off;
    assert!(
        maps.iter().any(|m| m.path.contains("libc")),
        "shared libraries are mapped at entry"
    );
    let w = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(addr, 8))
        .open()
        .unwrap();
    assert_eq!(w.attach(), &Attach::Frozen);
    let mut child = stopped.resume().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(
        parse_addr_line(&l).0,
        addr,
        "our resolved address is where the program writes"
    );
    l.clear();
    out.read_line(&mut l).unwrap();
    writeln!(stdin, "go").unwrap();
    l.clear();
    out.read_line(&mut l).unwrap();
    let writes: u64 = l.trim().strip_prefix("done ").unwrap().parse().unwrap();
    assert_eq!(writes, 300 * (1 + 1 + 2 + 2 * 3));
    assert_eq!(w.counts().unwrap(), vec![writes]);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn watcher_is_send_and_sync_for_drain_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Watcher>();
    assert_send_sync::<hwbreak_linux::sigtrap::TrapWatcher>();
}

#[test]
fn drop_unregisters_every_breakpoint_including_inherited_copies() {
    let _g = slots();
    static S: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    fn open4() -> Result<Watcher, hwbreak_linux::Error> {
        let mut b = Watcher::builder().target(T::Process(std::process::id() as i32));
        for (i, s) in S.iter().enumerate() {
            b = b.watch(format!("s{i}"), BpAttr::write(s.as_ptr() as u64, 8));
        }
        b.open()
    }
    for _ in 0..3 {
        let Some(w) = all_slots(open4()) else { return };
        // A thread created now carries 4 inherited copies; it can take no 5th slot.
        let h = std::thread::spawn(|| {
            static E: AtomicU64 = AtomicU64::new(0);
            let e = Watcher::builder()
                .target(T::Thread(gettid()))
                .watch("fifth", BpAttr::write(E.as_ptr() as u64, 8))
                .open()
                .unwrap_err();
            assert!(matches!(e, hwbreak_linux::Error::NoSlot { .. }), "{e:?}");
            write_n(&S[0], 5);
        });
        h.join().unwrap();
        assert_eq!(w.counts().unwrap(), vec![5, 0, 0, 0]);
        drop(w);
        // All four slots are free again on a new thread.
        std::thread::spawn(|| {
            let w = open4().unwrap();
            write_n(&S[1], 2);
            assert_eq!(w.counts().unwrap(), vec![0, 2, 0, 0]);
        })
        .join()
        .unwrap();
    }
}

#[test]
fn own_process_enumeration_race_is_exact_with_the_helper_freeze() {
    use std::sync::atomic::AtomicBool;
    let _g = slots();
    static Y: AtomicU64 = AtomicU64::new(0);
    static GO: AtomicBool = AtomicBool::new(false);
    static STOP: AtomicBool = AtomicBool::new(false);
    static WRITES: AtomicU64 = AtomicU64::new(0);
    for round in 0..3 {
        GO.store(false, Ordering::SeqCst);
        STOP.store(false, Ordering::SeqCst);
        WRITES.store(0, Ordering::SeqCst);
        // Two spawners create lingering threads before, during and after the attach.
        let spawners: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut hs = Vec::new();
                    while !STOP.load(Ordering::SeqCst) {
                        hs.push(std::thread::spawn(|| {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            if GO.load(Ordering::SeqCst) {
                                write_n(&Y, 20);
                                WRITES.fetch_add(20, Ordering::SeqCst);
                            }
                        }));
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    }
                    for h in hs {
                        h.join().unwrap();
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let w = Watcher::builder()
            .target(T::Process(std::process::id() as i32))
            .watch("y", BpAttr::write(Y.as_ptr() as u64, 8))
            .open()
            .unwrap();
        assert_eq!(w.attach(), &Attach::Frozen);
        GO.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(30));
        STOP.store(true, Ordering::SeqCst);
        for s in spawners {
            s.join().unwrap();
        }
        let writes = WRITES.load(Ordering::SeqCst);
        assert!(writes > 0);
        assert_eq!(w.counts().unwrap(), vec![writes], "round {round}");
    }
}

/// Issue 9, defect 1: the main thread waits for a `vfork` child (an
/// uninterruptible wait) while the watcher attaches. It used to be seized,
/// fail to stop within 5 s, and then enter a tracing stop when it woke and
/// stay stopped for the whole session. Now it is held (it cannot run user
/// code before it stops), attached with the others, and released by the
/// tracer thread's exit: nothing is traced once `open` returns, and the
/// writes it makes after waking are counted exactly.
#[test]
fn a_thread_in_uninterruptible_wait_is_held_not_left_stopped() {
    use hwbreak_linux::procfs::{thread_state, threads, tracer_of};
    use std::io::{BufRead, Write};
    let _g = slots();
    let mut t = Target::spawn("vforker", &["1000"]);
    let pid = t.pid;
    writeln!(t.stdin.as_mut().unwrap(), "vfork").unwrap();
    t.stdin.as_mut().unwrap().flush().unwrap();
    // The vfork child blocks on stdin: the main thread waits in the kernel.
    let since = std::time::Instant::now();
    while thread_state(pid, pid) != Some('D') {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(60),
            "the main thread never entered its vfork wait: {:?}",
            thread_state(pid, pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let opened = std::time::Instant::now();
    let w = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(t.addr, 8))
        .open()
        .unwrap();
    println!("attach took {:?}", opened.elapsed());
    let tids = threads(pid).unwrap();
    assert_eq!(tids.len(), 2, "{tids:?}");
    for tid in tids {
        assert_eq!(tracer_of(pid, tid), Some(0), "thread {tid} is left traced");
        assert_ne!(
            thread_state(pid, tid),
            Some('t'),
            "thread {tid} is left stopped"
        );
    }
    assert_eq!(w.attach(), &Attach::Frozen, "held, not a fallback re-scan");
    // Wake it: the vfork child exits, the main thread and then the second
    // thread write; a thread left stopped would never say "done".
    writeln!(t.stdin.as_mut().unwrap(), "release").unwrap();
    t.stdin.as_mut().unwrap().flush().unwrap();
    let mut l = String::new();
    t.out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "done");
    assert_eq!(w.counts().unwrap(), vec![2000]);
    t.finish();
}

/// Issue 9, defect 10: a live process whose main thread has exited (a
/// zombie leader, whose `/proc/PID/maps` is empty and `exe` unreadable) is
/// still a process: its names resolve, its maps are read through a live
/// thread, and every write of its surviving thread is counted.
#[test]
fn a_process_whose_main_thread_exited_is_watched_through_its_live_threads() {
    use hwbreak_linux::procfs::{live_task, maps, thread_state};
    let _g = slots();
    let mut t = Target::spawn("leaderexit", &["700"]);
    let pid = t.pid;
    let since = std::time::Instant::now();
    while thread_state(pid, pid) != Some('Z') {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(60),
            "the main thread never exited: {:?}",
            thread_state(pid, pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_ne!(
        live_task(pid),
        pid,
        "a live thread stands in for the leader"
    );
    assert!(!maps(pid).unwrap().is_empty());
    let v = hwbreak_linux::symbols::Resolver::for_pid(pid)
        .unwrap()
        .resolve("target_var")
        .unwrap();
    assert_eq!(v.addr, t.addr);
    let w = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(v.addr, 8))
        .open()
        .unwrap();
    t.go();
    assert_eq!(t.done(), 700);
    assert_eq!(w.counts().unwrap(), vec![700]);
    t.finish();
}
