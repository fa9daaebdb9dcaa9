//! What context-switch records cost `watch`: a context-switch-heavy target
//! (`tests/c/yielder.c`: 2 threads pinned to CPU 0, each writing the watched
//! variable then calling `sched_yield()`, 20 000 times) watched in sampling
//! mode with and without `WatcherBuilder::switch_events`, draining while it
//! runs as `hwbreak watch` does. Figure: the target's run time (go → done,
//! all records drained) and the drain thread's CPU time, median of 7
//! alternating rounds; the ratio with/without is the cost.
//!
//! Hand-rolled timing rather than criterion: one sample is a whole target
//! run (tens of ms), and the two peers must alternate on a noisy machine.
//!
//! ```text
//! cargo bench -p hwbreak-linux --bench switch_cost
//! ```
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Callchain, Mode, Target, TaskRecord, Watcher};

const N: &str = "20000";
const ROUNDS: usize = 7;

fn build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hwbreak-switch-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("yielder");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/yielder.c");
    let st = Command::new("gcc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc builds the bench target");
    assert!(st.success());
    out
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One watched run: (wall go → drained, drain CPU, hits, switch records, lost).
fn run(exe: &PathBuf, switches: bool) -> Option<(Duration, Duration, u64, u64, u64)> {
    let mut child = Command::new(exe)
        .args([N, "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    let f: Vec<&str> = l.split_whitespace().collect();
    let addr = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
    let pid: i32 = f[3].parse().unwrap();
    out.read_line(&mut l).unwrap();
    let w = match Watcher::builder()
        .target(Target::Process(pid))
        .watch("target_var", BpAttr::write(addr, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Off,
            user_regs_stack: false,
        })
        .switch_events(switches)
        .ring_pages(1024)
        .open()
    {
        Ok(w) => w,
        Err(e) => {
            println!("SKIP: cannot watch the target: {e}");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    let (mut hits, mut sw) = (0u64, 0u64);
    let start = Instant::now();
    let cpu0 = thread_cpu();
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    let done = std::thread::spawn(move || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l
    });
    loop {
        let finished = done.is_finished();
        let _ = w.poll(Some(Duration::from_millis(10)));
        hits += w.drain_with_tasks(
            |_| {},
            |r| {
                if let TaskRecord::Switch(_) = r {
                    sw += 1;
                }
            },
        );
        if finished {
            break;
        }
    }
    let wall = start.elapsed();
    let cpu = thread_cpu() - cpu0;
    let line = done.join().unwrap();
    assert!(line.starts_with("done"), "{line}");
    drop(stdin);
    child.wait().unwrap();
    Some((wall, cpu, hits, sw, w.lost()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: run once.
    let exe = build();
    let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut counts = [(0, 0, 0); 2];
    for _ in 0..ROUNDS {
        for (k, sw) in [false, true].into_iter().enumerate() {
            let Some((w, c, hits, s, lost)) = run(&exe, sw) else {
                return;
            };
            wall[k].push(w);
            cpu[k].push(c);
            counts[k] = (hits, s, lost);
        }
    }
    for (k, name) in ["without switch records", "with switch records"]
        .iter()
        .enumerate()
    {
        let (hits, s, lost) = counts[k];
        println!(
            "{name:>24}: wall {:>8.2?} (median of {ROUNDS}), drain CPU {:>8.2?}; last run: {hits} hits, {s} switch records, {lost} lost",
            median(wall[k].clone()),
            median(cpu[k].clone()),
        );
    }
    let r = |v: &[Vec<Duration>; 2]| {
        median(v[1].clone()).as_secs_f64() / median(v[0].clone()).as_secs_f64()
    };
    println!(
        "ratio with/without: wall {:.3}, drain CPU {:.3}",
        r(&wall),
        r(&cpu)
    );
}
