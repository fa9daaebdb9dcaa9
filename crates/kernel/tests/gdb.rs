//! The kgdb case: real gdb (batch mode) attached to the kernel's stub on
//! COM2 through a unix socket. After Linux's `drivers/misc/kgdbts.c`:
//! `hw_breakpoint_test`, `hw_write_break_test`, `hw_access_break_test`,
//! plus single-step, a refused watchpoint when no slot is free everywhere,
//! and a stop while another CPU holds the layer's books.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{have_qemu, image, qemu_command, Boot};

fn have_gdb() -> bool {
    let ok = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIP: gdb not found (apt-get install gdb)");
    }
    ok
}

/// Boot the kernel with `gdb=1 cases=CASE` on `smp` CPUs, run gdb with the
/// `-ex` commands (after connecting), and return gdb's output and the boot.
fn with_gdb(smp: usize, case: &str, cmds: &[&str]) -> Option<(String, Boot)> {
    if !have_qemu() || !have_gdb() {
        return None;
    }
    let image = image().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("hwbreak-kgdb-{}-{case}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("com2.sock");
    let _ = std::fs::remove_file(&sock);
    let mut qemu = qemu_command(&image, smp, &format!("gdb=1 cases={case}"));
    qemu.args([
        "-serial",
        &format!("unix:{},server=on,wait=off", sock.display()),
    ])
    .stdout(Stdio::piped());
    let child = qemu.spawn().expect("run qemu-system-x86_64");
    // QEMU creates the socket before the guest runs; wait for it to appear.
    while !Path::new(&sock).exists() {
        std::thread::yield_now();
    }
    let mut gdb = Command::new("gdb");
    gdb.args(["-q", "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "set confirm off"])
        .args(["-ex", "set language c"])
        .args(["-ex", &format!("target remote {}", sock.display())]);
    for c in cmds {
        gdb.args(["-ex", c]);
    }
    let out = gdb
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let gdb_out =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let q = child.wait_with_output().expect("wait for qemu");
    let _ = std::fs::remove_dir_all(&dir);
    let boot = Boot {
        log: String::from_utf8_lossy(&q.stdout).replace('\r', ""),
        code: q.status.code().filter(|c| c & 1 == 1).map(|c| c >> 1),
    };
    Some((gdb_out, boot))
}

fn assert_in(out: &str, what: &str, log: &str) {
    assert!(
        out.contains(what),
        "gdb output lacks {what:?}\n--- gdb:\n{out}\n--- kernel:\n{log}"
    );
}

#[test]
fn kgdbts_hw_break_write_and_access_tests_and_single_step_pass_under_real_gdb() {
    let Some((out, boot)) = with_gdb(
        2,
        "gdb_kgdbts",
        &[
            "info threads",
            // hw_breakpoint_test: Z1 stops at the function.
            "hbreak kgdbts_break_here",
            "continue",
            "printf \"STOP1 %d\\n\", $pc >= (long)&kgdbts_break_here && $pc < (long)&kgdbts_break_here + 64",
            // single-step: two instructions, the PC moves each time.
            "set $a = $pc",
            "stepi",
            "set $b = $pc",
            "stepi",
            "printf \"STEP %d %d\\n\", $b != $a, $pc != $b",
            "delete",
            // hw_write_break_test: the read before the write does not stop.
            "watch *(unsigned long *)&KGDBTS_WRITE_VAR",
            "continue",
            "delete",
            // hw_access_break_test: Z4 stops on the read.
            "awatch *(unsigned long *)&KGDBTS_ACCESS_VAR",
            "continue",
            "delete",
            "continue",
        ],
    ) else {
        return;
    };
    let log = &boot.log;
    assert_in(&out, "Thread 1.2", log); // each CPU is a thread
    assert_in(&out, "STOP1 1", log);
    assert_in(&out, "STEP 1 1", log);
    assert_in(&out, "hit Hardware watchpoint 2", log);
    assert_in(&out, "Old value = 0\nNew value = 1", log);
    assert_in(&out, "hit Hardware access (read/write) watchpoint 3", log);
    assert_in(&out, "Value = 7", log);
    boot.assert_passed(&["gdb_kgdbts"]);
}

#[test]
fn gdb_cannot_insert_a_watchpoint_when_no_slot_is_free_everywhere_and_the_kernel_runs_on() {
    let Some((out, boot)) = with_gdb(
        2,
        "gdb_full",
        &[
            "break kgdbts_stop_here",
            "continue",
            "delete",
            "watch *(unsigned long *)&KGDBTS_WRITE_VAR",
            "continue",
            "delete",
            "continue",
        ],
    ) else {
        return;
    };
    let log = &boot.log;
    assert_in(&out, "Could not insert hardware watchpoint", log);
    // The O console line names the refusal and who holds CPU 1's registers.
    assert_in(&out, "hwbreak: Z2 at 0x", log);
    assert_in(&out, "refused: no free Data slot on CPU 1", log);
    assert_in(&out, "hwbreak: cpu1 holds: DR0=breakpoint", log);
    assert_in(&out, "(cpu-bound) DR1=breakpoint", log);
    // The layer's four watches kept counting exactly (checked in-kernel).
    boot.assert_passed(&["gdb_full"]);
}

#[test]
fn entering_the_debugger_while_another_cpu_holds_the_books_never_deadlocks() {
    let Some((out, boot)) = with_gdb(
        2,
        "gdb_books_held",
        &[
            // A hardware breakpoint: removing it while the books are held
            // defers its slot's release (checked in-kernel).
            "hbreak kgdbts_stop_here",
            "continue",
            "info threads",
            "delete",
            "watch *(unsigned long *)&KGDBTS_WRITE_VAR",
            "continue",
            "delete",
            "continue",
        ],
    ) else {
        return;
    };
    let log = &boot.log;
    assert_in(&out, "Thread 1.2", log);
    assert_in(&out, "Could not insert hardware watchpoint", log);
    assert_in(&out, "the breakpoint books are held by a stopped CPU", log);
    boot.assert_passed(&["gdb_books_held"]);
}

/// One remote-protocol packet `$data#cs`.
fn packet(data: &str) -> Vec<u8> {
    let sum = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${data}#{sum:02x}").into_bytes()
}

/// Read the next packet's data (skipping acks), and ack it.
fn read_packet(s: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    let mut data = Vec::new();
    loop {
        s.read_exact(&mut byte).expect("read from the stub");
        if byte[0] == b'$' {
            break;
        }
    }
    loop {
        s.read_exact(&mut byte).expect("read from the stub");
        if byte[0] == b'#' {
            break;
        }
        data.push(byte[0]);
    }
    let mut cs = [0u8; 2];
    s.read_exact(&mut cs).expect("read the checksum");
    s.write_all(b"+").unwrap();
    String::from_utf8_lossy(&data).to_string()
}

/// Ctrl-C (a raw 0x03 byte while the target runs) stops every CPU and is
/// reported as SIGINT; after detaching the kernel runs on to the end.
#[test]
fn ctrl_c_from_the_debugger_stops_the_running_kernel_with_sigint() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    if !have_qemu() {
        return;
    }
    let image = image().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("hwbreak-kgdb-{}-ctrlc", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("com2.sock");
    let _ = std::fs::remove_file(&sock);
    let mut qemu = qemu_command(&image, 2, "gdb=1 cases=gdb_ctrl_c");
    qemu.args([
        "-serial",
        &format!("unix:{},server=on,wait=off", sock.display()),
    ])
    .stdout(Stdio::piped());
    let mut child = qemu.spawn().expect("run qemu-system-x86_64");
    // Bytes sent before the kernel programs COM2 are lost (its FIFO reset):
    // wait for the kernel to say it waits for gdb (gdb itself would resend).
    let mut console = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut early = String::new();
    while !early.contains("waiting for gdb on COM2") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut console, &mut line).unwrap_or(0) == 0 {
            panic!("the kernel ended before waiting for gdb:\n{early}");
        }
        early.push_str(&line);
    }
    let mut s = UnixStream::connect(&sock).expect("connect to COM2");
    s.write_all(&packet("?")).unwrap();
    let boot_stop = read_packet(&mut s);
    assert!(boot_stop.starts_with("T05"), "boot stop: {boot_stop}");
    s.write_all(&packet("c")).unwrap();
    s.write_all(&[0x03]).unwrap();
    let stop = read_packet(&mut s);
    s.write_all(&packet("D")).unwrap();
    let detach = read_packet(&mut s);
    drop(s);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut console, &mut rest).unwrap();
    let status = child.wait().expect("wait for qemu");
    let _ = std::fs::remove_dir_all(&dir);
    let boot = Boot {
        log: (early + &rest).replace('\r', ""),
        code: status.code().filter(|c| c & 1 == 1).map(|c| c >> 1),
    };
    assert!(
        stop.starts_with("T02"),
        "stop after Ctrl-C: {stop}; log:\n{}",
        boot.log
    );
    assert_eq!(detach, "OK");
    boot.assert_passed(&["gdb_ctrl_c"]);
}
