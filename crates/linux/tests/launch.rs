//! A command launched stopped at its entry point ([`StoppedAtEntry`]),
//! watched as a process, and adopted by the watcher
//! ([`Watcher::adopt_child`]): a shared library's global counted exactly, on
//! real debug registers.
mod common;
mod symbols_common;
use common::slots;
use hwbreak_core::BpAttr;
use hwbreak_linux::launch::StoppedAtEntry;
use hwbreak_linux::symbols::Resolver;
use hwbreak_linux::watch::{Attach, Target, Watcher};
use std::io::Read;
use std::process::{Command, Stdio};

/// The value of uselib's output line that starts with `key`
/// (`expect watchme_value=`, `addr watchme_value=`).
fn value(out: &str, key: &str) -> u64 {
    let v = out
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {out}"));
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

#[test]
fn library_global_of_a_command_stopped_at_entry_is_counted_exactly_and_its_child_adopted() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    let _g = slots();
    let mut cmd = Command::new(dir.join("uselib"));
    cmd.arg("400").stdout(Stdio::piped());
    let stopped = StoppedAtEntry::spawn(cmd, false).unwrap();
    let pid = stopped.pid();
    // At the entry point ld.so has mapped the library: its global resolves.
    let r = Resolver::for_pid(pid).unwrap();
    let v = r.resolve("libwatchme.so:watchme_value").unwrap();
    assert!(!v.needs_rebase);
    let w = Watcher::builder()
        .target(Target::Process(pid))
        .watch("watchme_value", BpAttr::write(v.addr, 8))
        .open()
        .unwrap();
    assert_eq!(w.attach(), &Attach::Frozen, "the stopped child is borrowed");
    assert_eq!(w.try_wait().unwrap(), None, "no child adopted yet");
    w.adopt_child(stopped.resume().unwrap()).unwrap();
    let mut out = String::new();
    w.take_child_stdout()
        .expect("the adopted child's stdout")
        .read_to_string(&mut out)
        .unwrap();
    assert!(w.wait().unwrap().success());
    assert_eq!(
        value(&out, "addr watchme_value="),
        v.addr,
        "where it writes: {out}"
    );
    assert_eq!(value(&out, "expect watchme_value="), 400);
    assert_eq!(w.counts().unwrap(), vec![400]);
    assert_eq!(w.try_wait().unwrap().map(|s| s.success()), Some(true));
}

#[test]
fn adopt_child_gives_back_a_child_the_watcher_does_not_watch() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    let _g = slots();
    let stopped = StoppedAtEntry::spawn(Command::new(dir.join("uselib")), false).unwrap();
    let r = Resolver::for_pid(stopped.pid()).unwrap();
    let v = r.resolve("libwatchme.so:watchme_value").unwrap();
    let w = Watcher::builder()
        .target(Target::Process(stopped.pid()))
        .watch("watchme_value", BpAttr::write(v.addr, 8))
        .open()
        .unwrap();
    let other = Command::new("sleep").arg("30").spawn().unwrap();
    let other_pid = other.id();
    let mut back = w.adopt_child(other).expect_err("another process");
    assert_eq!(back.id(), other_pid, "given back untouched");
    back.kill().unwrap();
    back.wait().unwrap();
    assert!(
        w.wait().is_err(),
        "still no launched child: {:?}",
        w.try_wait()
    );
    // Dropped without resume: the stopped command is killed.
}

#[test]
fn a_command_that_ends_before_its_entry_point_is_a_clear_error_and_is_reaped() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    // uselib without its libwatchme.so beside it: ld.so fails, exit 127.
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("uselib");
    std::fs::copy(dir.join("uselib"), &exe).unwrap();
    // The copy was just written: a child another test forks meanwhile may
    // hold the written file open until its own exec (close-on-exec), and our
    // exec then fails with ETXTBSY. That race is the test's, so try again.
    let mut e = String::new();
    for _ in 0..50 {
        let mut cmd = Command::new(&exe);
        cmd.arg("3").stderr(Stdio::null());
        e = StoppedAtEntry::spawn(cmd, false).unwrap_err().to_string();
        if !e.contains("Text file busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(e.contains("exited with status 127"), "{e}");
    assert!(e.contains("before reaching its entry point"), "{e}");
    assert!(e.contains("shared library"), "{e}");
    assert!(e.contains(&exe.display().to_string()), "{e}");
}

#[test]
fn a_signal_before_the_entry_point_is_delivered_and_its_death_is_a_clear_error() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    // libwatchme.so's constructor raises SIGTERM: delivered, not swallowed.
    let mut cmd = Command::new(dir.join("uselib"));
    cmd.arg("3").env("WATCHME_DIE", libc::SIGTERM.to_string());
    let e = StoppedAtEntry::spawn(cmd, false).unwrap_err().to_string();
    assert!(
        e.contains(&format!("killed by signal {}", libc::SIGTERM)),
        "{e}"
    );
    assert!(e.contains("before reaching its entry point"), "{e}");
}

#[test]
fn dropping_a_command_stopped_at_entry_kills_and_reaps_it() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    let stopped = StoppedAtEntry::spawn(Command::new(dir.join("uselib")), false).unwrap();
    let pid = stopped.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(stopped);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped, not left stopped or a zombie"
    );
}

#[test]
fn a_command_stopped_at_entry_leaves_all_four_slots_to_the_watcher() {
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    let _g = slots();
    let mut cmd = Command::new(dir.join("uselib"));
    cmd.arg("50").stdout(Stdio::null());
    let stopped = StoppedAtEntry::spawn(cmd, false).unwrap();
    let r = Resolver::for_pid(stopped.pid()).unwrap();
    let mut b = Watcher::builder().target(Target::Process(stopped.pid()));
    for name in [
        "watchme_value",
        "watchme_pair.left",
        "watchme_pair.right",
        "watchme_init",
    ] {
        let v = r.resolve(&format!("libwatchme.so:{name}")).unwrap();
        b = b.watch(name, BpAttr::write(v.addr, v.len));
    }
    // Another perf user's CPU-wide breakpoints take slots from every task:
    // skip if a fresh process cannot get all four either.
    let mut fresh = Command::new("sleep").arg("30").spawn().unwrap();
    let probe = (0..4).fold(
        Watcher::builder().target(Target::Process(fresh.id() as i32)),
        |b, i| b.watch(format!("probe{i}"), BpAttr::write(0x1000 + 8 * i, 8)),
    );
    let free = common::all_slots(probe.check_mapped(false).open()).is_some();
    fresh.kill().unwrap();
    fresh.wait().unwrap();
    if !free {
        return;
    }
    // How it stopped at its entry must not hold a debug register of the program.
    let w = b.open().unwrap();
    w.adopt_child(stopped.resume().unwrap()).unwrap();
    assert!(w.wait().unwrap().success());
    // watchme_touch writes the value and pair.right; the rest stay as they were.
    assert_eq!(w.counts().unwrap(), vec![50, 0, 50, 0]);
}
