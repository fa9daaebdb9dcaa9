//! `hwbreak slots`: how many hardware breakpoint slots are free, and who
//! holds the others as far as /proc shows.
//!
//! The kernel books slots per CPU: CPU-bound breakpoints plus the busiest
//! task's must fit (kernel/events/hw_breakpoint.c). So the free count depends
//! on *which* task asks: a new task only competes with CPU-bound breakpoints,
//! while `-p PID` also counts what PID's threads already hold. The honest way
//! to learn it is to ask the kernel: open disabled breakpoint events for that
//! task until it answers ENOSPC, then close them all (Drop closes each fd,
//! which unregisters it; nothing is left behind).

use crate::cli::SlotsArgs;
use crate::error::CliError;
use hwbreak_core::BpAttr;
use hwbreak_linux::event::{Event, EventAttr};
use serde::Serialize;
use std::io::Write;

/// Most slots probed (well above any arch's count: arm64 has at most 16).
const PROBE_MAX: usize = 32;

/// A word whose address the probes use (any aligned user address would do:
/// a disabled breakpoint never fires).
static PROBE_WORD: u64 = 0;

/// What the probe found for one task.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// Slots a new watch on this task could take now.
    pub free: usize,
    /// Why probing stopped (`ENOSPC` is the normal end).
    pub stopped_by: String,
}

/// Open disabled breakpoints on `pid` (0 = a fresh task: this one) until the
/// kernel refuses; return how many fitted. All are closed before returning.
pub fn probe(pid: i32) -> Result<Probe, CliError> {
    let addr = &PROBE_WORD as *const u64 as u64;
    let attr = EventAttr::breakpoint(&BpAttr::write(addr, 8).disabled());
    let mut held: Vec<Event> = Vec::new();
    let stopped_by = loop {
        if held.len() >= PROBE_MAX {
            break "limit".to_string();
        }
        match Event::open(&attr, pid, -1, None) {
            Ok(ev) => held.push(ev),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break "ENOSPC".into(),
            Err(e) if held.is_empty() => {
                return Err(CliError::new(crate::sys::explain_open_error(&e, pid)));
            }
            Err(e) => break format!("{e}"),
        }
    };
    let free = held.len();
    drop(held);
    Ok(Probe { free, stopped_by })
}

/// One process that holds perf events, possibly breakpoints.
#[derive(Debug, Serialize)]
pub struct Holder {
    /// Process id.
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// Open perf-event fds (the kernel does not say which are breakpoints).
    pub perf_fds: usize,
}

/// Processes with perf-event fds, and whether every process could be read.
pub fn holders() -> (Vec<Holder>, usize) {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let mut unreadable = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (out, 0);
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(d) => d,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let n = fds
            .flatten()
            .filter(|f| {
                std::fs::read_link(f.path())
                    .map(|l| l.to_string_lossy() == "anon_inode:[perf_event]")
                    .unwrap_or(false)
            })
            .count();
        if n > 0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            out.push(Holder {
                pid,
                comm,
                perf_fds: n,
            });
        }
    }
    out.sort_by_key(|h| h.pid);
    (out, unreadable)
}

/// The tracer of `pid` (a debugger may hold debug registers through ptrace,
/// which shows no fd), from `/proc/PID/status`.
pub fn tracer_of(pid: i32) -> Option<i32> {
    let t = hwbreak_linux::procfs::tracer_of(pid, pid)?;
    (t != 0).then_some(t)
}

#[derive(Serialize)]
struct SlotsJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: Option<i32>,
    free: usize,
    fresh_task_free: usize,
    holders: &'a [Holder],
    unreadable_processes: usize,
    tracer: Option<i32>,
}

/// Run `hwbreak slots`.
pub fn run(args: &SlotsArgs) -> Result<(), CliError> {
    if let Some(pid) = args.pid {
        crate::sys::check_pid(pid)?;
    }
    let fresh = probe(0)?;
    let target = match args.pid {
        // Through a live thread if the main thread has exited.
        Some(p) => Some(probe(hwbreak_linux::procfs::live_task(p))?),
        None => None,
    };
    let (holders, unreadable) = holders();
    let tracer = args.pid.and_then(tracer_of);
    let free = target.as_ref().map_or(fresh.free, |t| t.free);
    let mut out = std::io::stdout().lock();
    if args.json {
        let j = SlotsJson {
            kind: "slots",
            pid: args.pid,
            free,
            fresh_task_free: fresh.free,
            holders: &holders,
            unreadable_processes: unreadable,
            tracer,
        };
        serde_json::to_writer(&mut out, &j).map_err(CliError::json)?;
        writeln!(out)?;
        return Ok(());
    }
    let total = crate::sys::SLOTS_PER_CPU;
    match args.pid {
        Some(p) => writeln!(
            out,
            "free breakpoint slots for watches on process {p}: {free} of {total}"
        )?,
        None => writeln!(
            out,
            "free breakpoint slots for a new process: {free} of {total}"
        )?,
    }
    if let Some(p) = args.pid {
        let taken_by_target = fresh.free.saturating_sub(free);
        if taken_by_target > 0 {
            writeln!(
                out,
                "  {taken_by_target} held by process {p}'s own breakpoints"
            )?;
        }
    }
    let cpu_bound = total.saturating_sub(fresh.free);
    if cpu_bound > 0 {
        writeln!(
            out,
            "  {cpu_bound} held by CPU-wide breakpoints (perf record -a / hwbreak -a, or a kernel user such as kgdb)"
        )?;
    }
    if let Some(t) = tracer {
        let comm = std::fs::read_to_string(format!("/proc/{t}/comm")).unwrap_or_default();
        writeln!(
            out,
            "  process {} is traced by {t} ({}): a debugger's hardware watchpoints use these slots too",
            args.pid.unwrap_or(0),
            comm.trim()
        )?;
    }
    if holders.is_empty() {
        writeln!(out, "processes with perf events open: none seen")?;
    } else {
        writeln!(
            out,
            "processes with perf events open (the kernel does not say which are breakpoints):"
        )?;
        for h in &holders {
            writeln!(
                out,
                "  pid {:<8} {:<16} {} perf fd(s)",
                h.pid, h.comm, h.perf_fds
            )?;
        }
    }
    if unreadable > 0 {
        writeln!(
            out,
            "({unreadable} processes could not be inspected: their /proc/PID/fd is not readable by this user; run as root to see all)"
        )?;
    }
    Ok(())
}
