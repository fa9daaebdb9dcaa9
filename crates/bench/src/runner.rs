//! Running: one step at a time, its stdout streamed and counted, its CPU
//! time taken from the reaped process tree, a watchdog for the timeout.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::contenders::{Count, Parser, Step, StepOutput};

/// Keeps at most this many bytes of a step's stdout head and tail (the hit
/// streams of `watch --json` or `perf script` are counted, not stored).
pub(crate) const KEEP_BYTES: usize = 64 * 1024;

/// Runs one step, streaming its stdout; returns its output and wall time.
pub(crate) fn run_step(step: &Step, timeout: Duration) -> Result<(StepOutput, Duration)> {
    let (prog, rest) = step.argv.split_first().context("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu_before = children_cpu_seconds();
    let start = Instant::now();
    // Its own process group (children::spawn), so that a timeout or a signal
    // kills gdb's or perf's child too.
    let mut child = crate::children::spawn(&mut cmd)
        .with_context(|| format!("cannot start {}", step.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let count_line = step.count_line;
    let out_thread = std::thread::spawn(move || read_stdout(stdout, count_line));
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(4 * 1024 * 1024).read_to_end(&mut buf);
        // Drain whatever is left so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    });
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on the process group we created for this child;
            // the group leader is not reaped until wait() below returns.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            return true;
        }
        false
    });
    let status = child.wait();
    crate::children::forget(pid);
    let status = status.context("wait for a contender")?;
    let elapsed = start.elapsed();
    // One step runs at a time, so the growth of our reaped children's CPU time
    // is this step's (its descendants are included once it reaped them).
    let cpu = children_cpu_seconds() - cpu_before;
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let (counted, stdout) = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let status_text = if timed_out {
        format!("killed after the {} s timeout", timeout.as_secs())
    } else {
        status.to_string()
    };
    Ok((
        StepOutput {
            counted,
            stdout,
            stderr,
            success: status.success() && !timed_out,
            status: status_text,
            cpu,
        },
        elapsed,
    ))
}

/// User + system CPU seconds of every child this process has reaped.
pub(crate) fn children_cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the buffer we own; it cannot
    // fail with RUSAGE_CHILDREN and a valid pointer.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Reads a child's stdout to the end: counts matching lines, keeps head and
/// tail, and sums bpftrace's `Lost N events` lines into a `#lost-total` line.
pub(crate) fn read_stdout(
    stdout: impl Read,
    count_line: Option<fn(&str) -> bool>,
) -> (u64, String) {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    let mut line = Vec::new();
    let (mut counted, mut lost) = (0u64, 0u64);
    let mut head = String::new();
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut tail_bytes = 0usize;
    let mut truncated = false;
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if count_line.is_some_and(|f| f(&text)) {
            counted += 1;
        }
        if let Some(n) = text
            .strip_prefix("Lost ")
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        {
            lost += n;
        }
        if head.len() + text.len() <= KEEP_BYTES {
            head.push_str(&text);
            continue;
        }
        truncated = true;
        tail_bytes += text.len();
        tail.push_back(text.into_owned());
        while tail_bytes > KEEP_BYTES {
            if let Some(old) = tail.pop_front() {
                tail_bytes -= old.len();
            }
        }
    }
    let mut out = head;
    if truncated {
        out.push_str("...\n");
    }
    for t in tail {
        out.push_str(&t);
    }
    if lost > 0 {
        let _ = writeln!(out, "#lost-total {lost}");
    }
    (counted, out)
}

/// Every run of one contender.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) skip: Option<String>,
    /// Why runs (N or N = 0) failed: a crash, a timeout, unreadable output.
    pub(crate) failures: Vec<String>,
    pub(crate) command: String,
    pub(crate) count: Option<Count>,
    /// Fastest timed seconds of the N runs.
    pub(crate) best: Option<f64>,
    /// Fastest timed seconds of the N = 0 runs.
    pub(crate) startup: Option<f64>,
    /// Least CPU seconds (timed steps) of the N runs.
    pub(crate) best_cpu: Option<f64>,
    /// Least CPU seconds of the N = 0 runs.
    pub(crate) startup_cpu: Option<f64>,
    /// Untimed setup seconds of the fastest run (e.g. `record` before `report`).
    pub(crate) setup: Option<f64>,
    /// Every completed N run: (hits delivered, timed seconds, CPU seconds),
    /// for rates per delivered hit (each run's hits over that run's time).
    pub(crate) delivered: Vec<(u64, f64, f64)>,
    pub(crate) runs: u32,
}

impl Measured {
    pub(crate) fn new(skip: Option<String>) -> Measured {
        Measured {
            skip,
            failures: Vec::new(),
            command: String::new(),
            count: None,
            best: None,
            startup: None,
            best_cpu: None,
            startup_cpu: None,
            setup: None,
            delivered: Vec::new(),
            runs: 0,
        }
    }

    pub(crate) fn record_run(
        &mut self,
        steps: Vec<Step>,
        parse: Parser,
        n: u64,
        startup: bool,
        timeout: u64,
    ) {
        let mut outs = Vec::new();
        let (mut timed, mut setup, mut cpu) = (0.0, 0.0, 0.0);
        for s in &steps {
            match run_step(s, Duration::from_secs(timeout)) {
                Ok((o, d)) => {
                    if s.timed {
                        timed += d.as_secs_f64();
                        cpu += o.cpu;
                    } else {
                        setup += d.as_secs_f64();
                    }
                    let failed = !o.success;
                    outs.push(o);
                    if failed {
                        break;
                    }
                }
                Err(e) => {
                    self.failures.push(format!("{e:#}"));
                    return;
                }
            }
        }
        let count = match parse(&outs) {
            Ok(c) => c,
            Err(e) => {
                self.failures.push(if startup {
                    format!("(N = 0 run) {e}")
                } else {
                    e
                });
                return;
            }
        };
        if startup {
            if count.hits != 0 {
                self.failures.push(format!(
                    "counted {} hits when the target wrote nothing (N = 0)",
                    count.hits
                ));
                return;
            }
            self.startup = Some(self.startup.map_or(timed, |b: f64| b.min(timed)));
            self.startup_cpu = Some(self.startup_cpu.map_or(cpu, |b: f64| b.min(cpu)));
            return;
        }
        self.runs += 1;
        if self.command.is_empty() {
            self.command = steps
                .iter()
                .map(Step::display)
                .collect::<Vec<_>>()
                .join(" && ");
        }
        self.delivered.push((count.hits, timed, cpu));
        // A miscount in any round is kept: it is a miscount.
        let wrong = |c: &Count| c.hits != n || c.lost.unwrap_or(0) > 0;
        if !self.count.as_ref().is_some_and(wrong) {
            self.count = Some(count);
        }
        self.best_cpu = Some(self.best_cpu.map_or(cpu, |b: f64| b.min(cpu)));
        if self.best.is_none_or(|b| timed < b) {
            self.best = Some(timed);
            self.setup = Some(setup);
        }
    }
}
