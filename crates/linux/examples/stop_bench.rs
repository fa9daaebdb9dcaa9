//! Measure the ways to filter hits by a condition and stop at the first
//! match, side by side on one target (`testdata/targets/seq.c`, non-PIE):
//!
//! | row | what |
//! |---|---|
//! | `raw-c` | `crates/bench/peers/raw_count.c`: plain counting, the floor |
//! | `bpf-filter` | our BPF filter, condition never true: every hit evaluated, none delivered |
//! | `bpf-stop` | our BPF filter with the stop: time to the stopped process |
//! | `sigtrap-ptrace` | the other design: `sigtrap` perf events on a `PTRACE_SEIZE`d target; each hit is a signal-delivery-stop, the tracer reads the value and continues |
//! | `gdb` | `watch value if value == K`, `run` (time to the stop, gdb's start-up included; `gdb-startup` is the same with a match at the first write) |
//!
//! ```sh
//! cargo run --release -p hwbreak-linux --example stop_bench -- ROUNDS THREADS [REPEAT] [--no-gdb]
//! ```
//!
//! Each thread of the target writes `value = i` for i in 0..ROUNDS; the
//! condition is `new == ROUNDS - 1`, so the first thread to finish its
//! rounds stops the process. Figures are the best of REPEAT runs.

use hwbreak_core::BpAttr;
use hwbreak_linux::cond::{Cond, ValueType};
use hwbreak_linux::event::{Event, EventAttr};
use hwbreak_linux::filter::{FilterWatch, HitFilter};
use hwbreak_linux::stop;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const I64: ValueType = ValueType {
    len: 8,
    signed: true,
};

fn build(dir: &Path) -> (PathBuf, PathBuf, u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let seq = dir.join("seq");
    let raw = dir.join("raw_count");
    for (src, out, extra) in [
        (
            "testdata/targets/seq.c",
            &seq,
            &["-no-pie", "-fno-pie", "-pthread"][..],
        ),
        ("crates/bench/peers/raw_count.c", &raw, &[][..]),
    ] {
        let st = Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer"])
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(root.join(src))
            .status()
            .expect("gcc");
        assert!(st.success());
    }
    let nm = Command::new("nm").arg(&seq).output().expect("nm");
    let addr = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == "value").then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .expect("value in nm");
    (seq, raw, addr)
}

/// The target, started and waiting for "go".
fn spawn(seq: &Path, rounds: u64, threads: u32) -> (Child, i32) {
    let mut c = Command::new(seq)
        .args([
            rounds.to_string(),
            (rounds + 1).to_string(),
            threads.to_string(),
        ])
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut pid = 0;
    loop {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        if let Some(p) = l.trim().strip_prefix("pid=") {
            pid = p.parse().unwrap();
        }
        if l.trim() == "ready" {
            break;
        }
    }
    std::mem::forget(out);
    (c, pid)
}

fn go(c: &mut Child) -> Instant {
    let t = Instant::now();
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    t
}

struct Row {
    name: &'static str,
    hits: u64,
    secs: f64,
    /// CPU seconds of everything involved (the target, the tool, the
    /// tracer): on a loaded machine, wall time mostly measures waiting.
    cpu: f64,
}

/// User + system CPU seconds of `who` (RUSAGE_SELF or RUSAGE_CHILDREN).
fn cpu_of(who: i32) -> f64 {
    // SAFETY: getrusage writes one rusage struct, a live local.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(who, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

/// Run `f` and fill in its row's CPU time: ours plus our reaped children's.
fn with_cpu(f: &dyn Fn() -> Row) -> Row {
    let c0 = cpu_of(libc::RUSAGE_SELF) + cpu_of(libc::RUSAGE_CHILDREN);
    let mut r = f();
    r.cpu = cpu_of(libc::RUSAGE_SELF) + cpu_of(libc::RUSAGE_CHILDREN) - c0;
    r
}

fn raw_c(raw: &Path, seq: &Path, addr: u64, rounds: u64, threads: u32) -> Row {
    let o = Command::new(raw)
        .arg(format!("{addr:x}"))
        .arg("8")
        .arg("--")
        .arg(seq)
        .args([
            rounds.to_string(),
            (rounds + 1).to_string(),
            threads.to_string(),
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    let field = |k: &str| {
        s.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {s}"))
            .to_string()
    };
    Row {
        name: "raw-c",
        hits: field("hits=").parse().unwrap(),
        secs: field("seconds=").parse().unwrap(),
        cpu: 0.0,
    }
}

fn bpf(seq: &Path, addr: u64, rounds: u64, threads: u32, stop_at_end: bool) -> Row {
    let (mut c, pid) = spawn(seq, rounds, threads);
    let k = if stop_at_end { rounds - 1 } else { rounds + 7 };
    let f = HitFilter::new(
        &[FilterWatch {
            addr,
            ty: I64,
            cond: Cond::parse(&format!("new == {k}"))
                .unwrap()
                .bind(I64)
                .unwrap(),
            initial: 0,
        }],
        stop_at_end,
        &|_| Ok(vec![]),
    )
    .unwrap();
    let a = EventAttr::breakpoint(&BpAttr::write(addr, 8))
        .disabled(true)
        .inherit(true);
    let ev = Event::open(&a, pid, -1, None).unwrap();
    f.attach(0, &ev).unwrap();
    ev.enable().unwrap();
    let t0 = go(&mut c);
    let secs = if stop_at_end {
        loop {
            if f.stopped().unwrap().is_some() {
                break t0.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    } else {
        c.wait().unwrap();
        t0.elapsed().as_secs_f64()
    };
    if stop_at_end {
        stop::wait_group_stop(pid).unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
    Row {
        name: if stop_at_end {
            "bpf-stop"
        } else {
            "bpf-filter"
        },
        hits: f.counts(0).unwrap().hits,
        secs,
        cpu: 0.0,
    }
}

/// The alternative design: sigtrap events + PTRACE_SEIZE, the condition
/// evaluated by the tracer at each signal-delivery-stop.
fn sigtrap_ptrace(seq: &Path, addr: u64, rounds: u64, threads: u32) -> Row {
    let (mut c, pid) = spawn(seq, rounds, threads);
    let k = rounds - 1;
    // SAFETY: plain ptrace requests on our own child; no pointers passed.
    unsafe {
        assert_eq!(
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid,
                0,
                libc::PTRACE_O_TRACECLONE as libc::c_long
            ),
            0
        );
    }
    let a = EventAttr::breakpoint(&BpAttr::write(addr, 8))
        .disabled(true)
        .inherit(true)
        .sigtrap(1);
    let ev = Event::open(&a, pid, -1, None).unwrap();
    ev.enable().unwrap();
    let t0 = go(&mut c);
    let mut hits = 0u64;
    let secs = loop {
        let mut st = 0;
        // SAFETY: waitpid writes one int.
        let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
        assert!(tid > 0);
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            if tid == pid {
                panic!("target ended before the stop");
            }
            continue;
        }
        let sig = libc::WSTOPSIG(st);
        if std::env::var_os("DEBUG").is_some() {
            eprintln!("tid {tid} sig {sig} event {}", st >> 16);
        }
        let mut pass = 0;
        if sig == libc::SIGTRAP && st >> 16 == 0 {
            hits += 1;
            if stop::read_u64(pid, addr, 8).unwrap() == k {
                break t0.elapsed().as_secs_f64();
            }
        } else if sig != libc::SIGTRAP && st >> 16 == 0 && sig != libc::SIGSTOP {
            pass = sig;
        }
        // SAFETY: the tracee `tid` is in a ptrace stop of ours.
        unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, pass as libc::c_long) };
    };
    drop(ev);
    let _ = c.kill();
    // The traced threads are reaped by us (the tracer) before the leader.
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes one int.
        let t = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
        if t < 0 || (t == pid && (libc::WIFEXITED(st) || libc::WIFSIGNALED(st))) {
            break;
        }
    }
    Row {
        name: "sigtrap-ptrace",
        hits,
        secs,
        cpu: 0.0,
    }
}

fn gdb(seq: &Path, rounds: u64, threads: u32, k: u64, name: &'static str) -> Row {
    let t0 = Instant::now();
    let o = Command::new("gdb")
        .args([
            "-nx",
            "-batch",
            "-ex",
            "set pagination off",
            "-ex",
            "set print thread-events off",
        ])
        .args([
            "-ex",
            &format!("watch value if value == {k}"),
            "-ex",
            "run",
            "-ex",
            "print value",
            "-ex",
            "kill",
        ])
        .arg("--args")
        .arg(seq)
        .args([
            rounds.to_string(),
            (rounds + 1).to_string(),
            threads.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains(&format!("= {k}")),
        "gdb did not stop at {k}: {s}"
    );
    Row {
        name,
        hits: 0,
        secs,
        cpu: 0.0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let threads: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let repeat: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let no_gdb = args.iter().any(|a| a == "--no-gdb");
    let dir = tempfile::tempdir().unwrap();
    let (seq, raw, addr) = build(dir.path());
    let best = |f: &dyn Fn() -> Row| {
        (0..repeat)
            .map(|_| {
                let r = with_cpu(f);
                eprintln!(
                    "  {} {} hits {:.4} s, cpu {:.4} s",
                    r.name, r.hits, r.secs, r.cpu
                );
                r
            })
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap()
    };
    if std::env::var_os("DEBUG").is_some() {
        sigtrap_ptrace(&seq, addr, rounds, threads);
        return;
    }
    let mut rows = vec![
        best(&|| raw_c(&raw, &seq, addr, rounds, threads)),
        best(&|| bpf(&seq, addr, rounds, threads, false)),
        best(&|| bpf(&seq, addr, rounds, threads, true)),
        best(&|| sigtrap_ptrace(&seq, addr, rounds, threads)),
    ];
    if !no_gdb {
        rows.push(best(&|| gdb(&seq, rounds, threads, 1, "gdb-startup")));
        rows.push(with_cpu(&|| gdb(&seq, rounds, threads, rounds - 1, "gdb")));
    }
    let raw_rate = rows[0].hits as f64 / rows[0].secs;
    let raw_cpu_rate = rows[0].hits as f64 / rows[0].cpu;
    println!(
        "seq {rounds} rounds x {threads} threads, condition new == {}, best of {repeat}",
        rounds - 1
    );
    println!(
        "{:<16} {:>8} {:>9} {:>11} {:>7} {:>9} {:>11} {:>7}",
        "row", "hits", "wall s", "hits/s", "x raw", "cpu s", "hits/cpu-s", "x raw"
    );
    for r in &rows {
        let (rate, cpu_rate) = (r.hits as f64 / r.secs, r.hits as f64 / r.cpu);
        println!(
            "{:<16} {:>8} {:>9.4} {:>11.0} {:>7.3} {:>9.4} {:>11.0} {:>7.3}",
            r.name,
            r.hits,
            r.secs,
            rate,
            rate / raw_rate,
            r.cpu,
            cpu_rate,
            cpu_rate / raw_cpu_rate
        );
    }
    let stop_row = rows.iter().find(|r| r.name == "bpf-stop").unwrap();
    let (stop, stop_cpu) = (stop_row.secs, stop_row.cpu);
    if let (Some(g), Some(s)) = (
        rows.iter().find(|r| r.name == "gdb"),
        rows.iter().find(|r| r.name == "gdb-startup"),
    ) {
        println!(
            "time to the stop: gdb {:.3} s ({:.3} s past its start-up), bpf-stop {:.4} s: {:.1}x faster ({:.1}x past start-up)",
            g.secs,
            g.secs - s.secs,
            stop,
            g.secs / stop,
            (g.secs - s.secs) / stop
        );
        println!(
            "CPU to the stop: gdb + target {:.3} s, bpf-stop {:.4} s: {:.1}x less",
            g.cpu,
            stop_cpu,
            g.cpu / stop_cpu
        );
    }
}
