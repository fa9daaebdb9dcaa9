//! `hwbreak-bench` stopped by a signal mid-run leaves nothing behind: no peer
//! holding a breakpoint, no target spinning at 100 % CPU, no temporary
//! directory (issue 9, defect 8). Each test runs the real bench with a huge N,
//! waits until the target is running under its peer, sends the signal, and
//! then looks through /proc for anything of that run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_hwbreak-bench");

/// Writes for the target: far more than a run can finish while the test waits.
const HUGE_N: &str = "4000000000";

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `hwbreak` binary beside the bench in target/ (built by
/// `cargo test --workspace`, which builds every crate's binaries).
fn hwbreak_beside() -> Option<PathBuf> {
    let p = Path::new(BENCH).parent()?.join("hwbreak");
    p.is_file().then_some(p)
}

/// Every live process whose executable or command line lies under `dir`.
fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let key = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        // A zombie has neither: it holds no breakpoint and uses no CPU.
        if exe.contains(&key) || cmd.contains(&key) {
            out.push((pid, format!("{exe} | {cmd}")));
        }
    }
    out
}

/// Starts the bench with its temporary directory under `tmp`, and returns it
/// with a channel of its stderr lines.
fn start(tmp: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BENCH)
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Runs the bench until `row` has its target running under `tmp`, sends
/// `sig`, and checks that it exits with 128 + sig and leaves nothing behind.
fn interrupt_mid_run(row: &str, args: &[&str], sig: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut bench, lines) = start(tmp.path(), args);
    let mut said = Vec::new();
    // 1. The row starts (progress lines come before each run).
    loop {
        let l = lines
            .recv()
            .unwrap_or_else(|_| panic!("the bench ended before `{row}` started: {said:#?}"));
        said.push(l.clone());
        if l.ends_with(&format!(": {row}")) {
            break;
        }
    }
    // 2. Its target runs: a process executing `target` from the bench's dir.
    let running = loop {
        let ps = processes_under(tmp.path());
        if ps.iter().any(|(_, d)| d.contains("/target |")) {
            break ps;
        }
        if let Some(st) = bench.try_wait().unwrap() {
            said.extend(lines.try_iter());
            panic!("the bench ended ({st}) before the target of `{row}` ran: {said:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill(2) takes no pointer; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(bench.id() as i32, sig) }, 0);
    let status = bench.wait().unwrap();
    said.extend(lines.iter());
    assert_eq!(
        status.code(),
        Some(128 + sig),
        "exit status {status}; it said {said:#?}"
    );
    let left = processes_under(tmp.path());
    assert!(
        left.is_empty(),
        "left running: {left:#?}\n(before the signal: {running:#?})"
    );
    let dirs: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(dirs.is_empty(), "left in TMPDIR: {dirs:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("stopped by") && l.contains("removed")),
        "{said:#?}"
    );
}

#[test]
fn sigterm_while_the_raw_c_peer_holds_a_breakpoint_kills_it_and_its_target_and_removes_the_temp_dir(
) {
    if !have("gcc") {
        eprintln!("SKIP: gcc is not installed (the bench builds its peers with it)");
        return;
    }
    // raw-c always runs; `--only nothing` runs it alone.
    interrupt_mid_run(
        "raw-c",
        &["-n", HUGE_N, "--repeat", "1", "--only", "nothing"],
        libc::SIGTERM,
    );
}

#[test]
fn sigint_while_hwbreak_watches_kills_hwbreak_and_its_target_and_removes_the_temp_dir() {
    if !have("gcc") {
        eprintln!("SKIP: gcc is not installed (the bench builds its peers with it)");
        return;
    }
    let Some(hw) = hwbreak_beside() else {
        eprintln!("SKIP: no hwbreak beside {BENCH}: cargo build -p hwbreak");
        return;
    };
    // One N serves the raw C baseline (which runs first, and must finish)
    // and the watch: 20000 writes take seconds under hwbreak watch, and the
    // signal goes as soon as the target runs under it; the watch's N = 0 run
    // follows, so the signal still lands before the bench is done.
    interrupt_mid_run(
        "hwbreak watch --json",
        &[
            "-n",
            "20000",
            "--repeat",
            "1",
            "--only",
            "watch",
            "--hwbreak",
            hw.to_str().unwrap(),
        ],
        libc::SIGINT,
    );
}

#[test]
fn sigterm_while_gdb_holds_a_watchpoint_kills_gdb_and_its_target() {
    if !have("gcc") || !have("gdb") {
        eprintln!("SKIP: gcc and gdb are needed for the gdb row");
        return;
    }
    interrupt_mid_run(
        "gdb watch",
        &[
            "-n", "1", "--gdb-n", HUGE_N, "--repeat", "1", "--only", "gdb",
        ],
        libc::SIGTERM,
    );
}

#[test]
fn a_missing_hwbreak_binary_is_skipped_with_how_to_build_it() {
    if !have("gcc") {
        eprintln!("SKIP: gcc is not installed (the bench builds its peers with it)");
        return;
    }
    let out = Command::new(BENCH)
        .args(["-n", "100", "--repeat", "1", "--only", "stat"])
        .args(["--hwbreak", "/nonexistent/hwbreak"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let row = text
        .lines()
        .find(|l| l.starts_with("hwbreak stat "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.ends_with("SKIP"), "{row}");
    assert!(
        text.contains(
            "/nonexistent/hwbreak does not exist: build it (cargo build --release -p hwbreak)"
        ),
        "{text}"
    );
}
