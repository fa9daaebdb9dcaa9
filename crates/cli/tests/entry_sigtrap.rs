//! A library SPEC launches the command stopped at its entry point with
//! ptrace `SIGTRAP`s (issue 9 #5). When hwbreak inherits `SIGTRAP` blocked,
//! the program used to run unwatched to its end and the error blamed the
//! dynamic loader; inherited ignored, it came out of the entry stop with
//! `SIGTRAP` reset to the default action. Now it is watched exactly, and it
//! runs with the `SIGTRAP` mask and disposition it inherited.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

/// `SIGTRAP`'s bit in /proc/PID/status's signal sets.
const TRAP: u64 = 1 << (libc::SIGTRAP - 1);

/// The hex set on `key`'s line of /proc/PID/status.
fn sigset(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix(key)).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// `hwbreak stat --json libwatchme.so:watchme_value -- uselib N wait`, run
/// with `SIGTRAP` blocked and/or ignored as hwbreak inherits it. Returns the
/// program's (SigBlk, SigIgn) `SIGTRAP` bits once it runs, the hits counted
/// and the writes the program made.
fn run_with(block: bool, ignore: bool) -> (bool, bool, u64, u64) {
    let _g = slots();
    let n = 3000u64;
    let mut cmd = hwbreak();
    cmd.args(["stat", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(c_targets().join("uselib"))
        .args([&n.to_string(), "wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child and only makes
    // async-signal-safe calls (sigemptyset, sigaddset, sigprocmask, signal).
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTRAP);
            if block {
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            if ignore {
                libc::signal(libc::SIGTRAP, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run hwbreak");
    // With --json the program's own stdout comes on hwbreak's stderr.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let mut pid = None;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        text.push_str(&line);
        if let Some(p) = line.trim().strip_prefix("pid=") {
            pid = Some(p.parse::<i32>().unwrap());
        }
        if line.trim() == "ready" {
            break;
        }
        line.clear();
    }
    let pid = pid.unwrap_or_else(|| panic!("the program never ran watched: {text}"));
    // The program waits for a line: its state now is what it runs with.
    let blocked = sigset(pid, "SigBlk:") & TRAP != 0;
    let ignored = sigset(pid, "SigIgn:") & TRAP != 0;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    err.read_to_string(&mut text).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{text}");
    let j = &json_lines(&out)[0];
    assert_eq!(j["target_exit"], "exited with status 0", "{j}");
    let hits = j["watches"][0]["hits"].as_u64().unwrap();
    let done = text
        .lines()
        .find_map(|l| l.strip_prefix("done watchme_value="))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    (blocked, ignored, hits, done)
}

#[test]
fn a_library_spec_counts_exactly_with_sigtrap_blocked_and_the_program_keeps_it_blocked() {
    assert_eq!(run_with(true, false), (true, false, 3000, 3000));
}

#[test]
fn a_library_spec_counts_exactly_with_sigtrap_ignored_and_the_program_keeps_it_ignored() {
    assert_eq!(run_with(false, true), (false, true, 3000, 3000));
}

#[test]
fn a_library_spec_counts_exactly_with_sigtrap_blocked_and_ignored() {
    assert_eq!(run_with(true, true), (true, true, 3000, 3000));
}

#[test]
fn a_library_spec_leaves_sigtrap_unblocked_and_default_when_inherited_so() {
    assert_eq!(run_with(false, false), (false, false, 3000, 3000));
}
