//! `watch`, `stat` and `record`: open the watches, run until the target ends
//! or Ctrl-C, drain hits as they come, then summarize. Dropping the
//! `Watcher` closes every event, so no breakpoint outlives the session, on
//! any path out of here (errors included).

use crate::cli::{RecordArgs, StatArgs, TargetArgs, WatchArgs};
use crate::conds::{self, Conditions};
use crate::error::CliError;
use crate::launch_lib;
use crate::offline::Maps;
use crate::plan::{self, Plan, Planned, TargetKind};
use crate::recfile;
use crate::sampling;
use crate::sink::{Json, RecordFile, Text};
use crate::summary::WatchTotal;
use hwbreak_linux::filter::{HitFilter, StopRecord};
use hwbreak_linux::store;
use hwbreak_linux::symbols::{read_maps, ValueKind};
use hwbreak_linux::watch::{Callchain, Mode, Target, Watcher};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by Ctrl-C (and SIGTERM/SIGHUP): stop, drain, summarize.
pub(crate) fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        // If a handler cannot be installed, Ctrl-C kills hwbreak; the kernel
        // still closes every event with the process, so nothing leaks.
        let _ = ctrlc::set_handler(move || g.store(true, Ordering::SeqCst));
        f
    })
    .clone()
}

fn linux_error(e: hwbreak_linux::Error) -> CliError {
    CliError::Linux(e)
}

/// An open session: the watcher and what it was opened for.
pub(crate) struct Session {
    /// Each watch's value right after the watches were armed.
    pub(crate) initial: Vec<Option<u64>>,
    pub(crate) plan: Plan,
    /// The mappings read right after opening.
    pub(crate) maps: Option<Maps>,
    pub(crate) watcher: Watcher,
    /// Slot piece → user watch.
    pub(crate) piece_watch: Vec<usize>,
    pub(crate) pid: Option<i32>,
    launched: bool,
    pub(crate) started: Instant,
    /// The kernel filter of `--if`/`--stop`, when given.
    pub(crate) filter: Option<Arc<HitFilter>>,
}

/// Open the watches of `t`. `user_regs`: registers each sample also records
/// (`PERF_REG_X86_*` mask; `--values` needs them, see [`store`]).
fn open(
    t: &TargetArgs,
    mode: Mode,
    user_regs: u64,
    child_stdout_to_stderr: bool,
    conds: &Conditions,
) -> Result<Session, CliError> {
    // A bad condition is an error before anything is launched.
    conds.parse()?;
    // A command to launch must be one before its SPECs are looked up in it.
    if let Ok(TargetKind::Launch(cmd)) = plan::target_of(t) {
        check_program(&cmd[0])?;
    }
    // A SPEC in a shared library: the command starts stopped at its entry
    // point and is watched as a process from there (see crate::launch_lib).
    let (plan, at_entry) = match plan::plan(t)? {
        Planned::Ready(p) => (p, None),
        Planned::AtEntry(cmd) => {
            check_program(&cmd[0])?;
            let (p, s) = launch_lib::start(t, &cmd, child_stdout_to_stderr, conds.stop)?;
            (p, Some(s))
        }
    };
    let target = match (&plan.target, &at_entry) {
        (_, Some(s)) => Target::Process(s.pid()),
        (TargetKind::Pid(p), _) => Target::Process(*p),
        (TargetKind::Tid(t), _) => Target::Thread(*t),
        (TargetKind::AllCpus, _) => Target::AllCpus,
        (TargetKind::Launch(cmd), _) => {
            Target::Launch(launch_lib::command(cmd, child_stdout_to_stderr, conds.stop))
        }
    };
    let launched = matches!(plan.target, TargetKind::Launch(_));
    let mut b = Watcher::builder().target(target).mode(mode);
    let mut ring_note = None;
    if mode != Mode::Count {
        let ring = hwbreak_linux::ringsize::for_sampling();
        b = b.ring_pages(ring.pages).user_regs(user_regs);
        ring_note = ring.note;
    }
    for (wi, attr) in &plan.pieces {
        let w = &plan.watches[*wi];
        let name = if plan.pieces.iter().filter(|p| p.0 == *wi).count() > 1 {
            format!("{}@{:#x}/{}", w.name, attr.addr, attr.len)
        } else {
            w.name.clone()
        };
        b = b.watch(name, *attr);
    }
    stop_flag();
    let what: Vec<String> = plan.watches.iter().map(|w| w.describe()).collect();
    let banner_line = |whom: &str| {
        format!(
            "hwbreak: watching {} in {whom}, {} of {} slots; Ctrl-C to stop",
            what.join(", "),
            plan.pieces.len(),
            crate::sys::SLOTS_PER_CPU
        )
    };
    let banner = |whom: &str| {
        // With the banner, once the watch starts: an error is the only line.
        if let Some(note) = &ring_note {
            eprintln!("{note}");
        }
        eprintln!("{}", banner_line(whom));
    };
    let mut exe = None;
    if let TargetKind::Launch(cmd) = &plan.target {
        exe = Some(check_program(&cmd[0])?);
        if at_entry.is_none() {
            // Armed from the first instruction: say so before the program's
            // own output, once every watch is open (a refusal is the only line).
            let line = banner_line(&cmd.join(" "));
            let note = ring_note.clone();
            b = b.on_armed(move || {
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                eprintln!("{line}");
            });
        }
    }
    // The filter is attached as each event is opened, with the values
    // before the first hit (read now: the events are not armed yet).
    let known_pid = match (&at_entry, &plan.target) {
        (Some(s), _) => Some(s.pid()),
        (None, TargetKind::Pid(p) | TargetKind::Tid(p)) => Some(*p),
        _ => None,
    };
    let filter = if conds.active() {
        let before = initial_values(&plan, known_pid, exe.as_deref(), at_entry.is_some());
        conds::build(conds, &plan, &before, known_pid)?
    } else {
        None
    };
    if let Some(f) = &filter {
        b = b.filter(f.clone());
    }
    let watcher = b.open().map_err(linux_error)?;
    if let (TargetKind::Launch(cmd), Some(_)) = (&plan.target, &at_entry) {
        // Stopped at its entry point: armed before it runs on.
        banner(&cmd.join(" "));
    }
    let pid = watcher.pid();
    // Read the maps at once: a short-lived program may be gone soon.
    let mut maps = Maps::new(pid);
    // A launched program's `exec` may still be mapping it: wait (briefly)
    // until its executable is mapped, or its hits cannot be symbolized.
    if let (Some(p), Some(exe), None) = (pid, &exe, &at_entry) {
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.clone());
        let exe = exe.to_string_lossy();
        for _ in 0..200 {
            let mapped = read_maps(p)
                .map(|m| m.iter().any(|e| e.is_exec() && e.path == exe))
                .unwrap_or(true);
            if mapped {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let raw_maps = pid.and_then(|p| read_maps(p).ok()).unwrap_or_default();
    maps.refresh();
    // The values before any hit. A launched program is already running, so
    // its memory may hold writes by now: take the values it started with
    // from the executable file. Otherwise read them first thing.
    let initial = initial_values(&plan, pid, exe.as_deref(), at_entry.is_some());
    if let Some(s) = at_entry {
        s.resume_into(&watcher)?;
    }
    if let (true, Some(p)) = (launched, pid) {
        if let Err(e) = plan::verify_rebased(&plan, &raw_maps, p) {
            // SAFETY: kill takes integers; p is our own child.
            unsafe { libc::kill(p, libc::SIGKILL) };
            let _ = watcher.wait();
            return Err(e);
        }
    }
    let piece_watch = plan.pieces.iter().map(|p| p.0).collect();
    match (&plan.target, pid) {
        (TargetKind::Launch(_), _) => {}
        (TargetKind::Pid(_), Some(p)) => banner(&format!("every thread of process {p}")),
        (TargetKind::Tid(_), Some(t)) => banner(&format!("thread {t}")),
        _ => banner("every CPU"),
    }
    Ok(Session {
        initial,
        plan,
        maps: Some(maps),
        watcher,
        piece_watch,
        pid,
        launched,
        started: Instant::now(),
        filter,
    })
}

/// Each watch's value before any hit. A launched program (not stopped at
/// its entry) may already be running: take the values it started with
/// from the executable file `exe`. Otherwise read process `pid`'s memory.
fn initial_values(
    plan: &Plan,
    pid: Option<i32>,
    exe: Option<&std::path::Path>,
    at_entry: bool,
) -> Vec<Option<u64>> {
    plan.watches
        .iter()
        .map(|w| match (pid, w.kind, exe) {
            (_, ValueKind::Code, _) => None,
            (_, _, Some(exe)) if !at_entry => {
                let link = if w.rebased {
                    w.addr.wrapping_sub(plan::NO_ASLR_PIE_BASE)
                } else {
                    w.addr
                };
                hwbreak_linux::symbols::initial_value(exe, link, w.len)
            }
            (Some(p), ..) => hwbreak_linux::values::read_value(p, w.addr, w.len),
            (None, ..) => None,
        })
        .collect()
}

/// How the run ended.
pub(crate) enum End {
    Stopped,
    Exited(String),
    /// `--stop`: a write matched and the process is stopped at it.
    AtWrite(StopRecord),
}

impl Session {
    /// The user's watch (index into `plan.watches`) that slot piece
    /// `piece` belongs to (a wide variable is split over several).
    pub(crate) fn watch_of(&self, piece: usize) -> usize {
        self.piece_watch.get(piece).copied().unwrap_or(0)
    }

    /// Whether the target is gone (and how), checked without blocking.
    pub(crate) fn ended(&self) -> Option<String> {
        if self.launched {
            return match self.watcher.try_wait() {
                Ok(Some(s)) => Some(describe_exit(s)),
                _ => None,
            };
        }
        match self.plan.target {
            TargetKind::Pid(p) | TargetKind::Tid(p) => {
                let alive = match self.plan.target {
                    TargetKind::Tid(t) => !matches!(
                        hwbreak_linux::procfs::thread_state(t, t).or_else(|| {
                            std::fs::read_to_string(format!("/proc/{t}/stat"))
                                .ok()
                                .map(|_| 'R')
                        }),
                        None | Some('Z') | Some('X')
                    ),
                    _ => hwbreak_linux::procfs::threads(p)
                        .map(|v| !v.is_empty())
                        .unwrap_or(false),
                };
                (!alive).then(|| format!("process {p} exited"))
            }
            _ => None,
        }
    }

    /// Stop: the launched child is ended if it still runs (an attached
    /// process is left alone).
    pub(crate) fn finish_child(&self) -> Option<String> {
        if !self.launched {
            return None;
        }
        if let Ok(Some(s)) = self.watcher.try_wait() {
            return Some(describe_exit(s));
        }
        if let Some(p) = self.pid {
            // SAFETY: kill takes integers; p is our own child, not yet reaped.
            unsafe { libc::kill(p, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(s)) = self.watcher.try_wait() {
                    return Some(describe_exit(s));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        self.watcher.wait().ok().map(describe_exit)
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

pub(crate) fn watch_totals(plan: &Plan) -> Vec<WatchTotal> {
    plan.watches
        .iter()
        .map(|w| WatchTotal::new(&w.name, w.addr, w.len, w.access))
        .collect()
}

// ---------------------------------------------------------------- stat

#[derive(Serialize)]
struct StatJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    duration_s: f64,
    watches: &'a [WatchTotal],
    #[serde(skip_serializing_if = "Option::is_none")]
    target_exit: Option<String>,
}

/// Run `hwbreak stat`.
pub fn stat(a: &StatArgs) -> Result<(), CliError> {
    let s = open(&a.target, Mode::Count, 0, a.json, &Conditions::default())?;
    let stop = stop_flag();
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break End::Stopped;
        }
        if let Some(e) = s.ended() {
            break End::Exited(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let counts = s.watcher.counts().map_err(linux_error)?;
    let exit = match end {
        End::Exited(e) => Some(e),
        End::Stopped | End::AtWrite(_) => s.finish_child(),
    };
    let mut totals = watch_totals(&s.plan);
    for (piece, c) in counts.iter().enumerate() {
        totals[s.piece_watch[piece]].hits += c;
    }
    let dur = s.started.elapsed().as_secs_f64();
    drop(s.watcher);
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = StatJson {
            kind: "stat",
            duration_s: (dur * 1000.0).round() / 1000.0,
            watches: &totals,
            target_exit: exit,
        };
        serde_json::to_writer(&mut out, &j).map_err(CliError::json)?;
        writeln!(out)?;
    } else {
        if let Some(e) = &exit {
            writeln!(out, "target {e}")?;
        }
        let wn = totals
            .iter()
            .map(|w| w.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(out, "{:>14}  {:<wn$}  where", "hits", "watch")?;
        for w in &totals {
            writeln!(
                out,
                "{:>14}  {:<wn$}  {:#x}/{}:{}",
                w.hits, w.name, w.addr, w.len, w.access
            )?;
        }
        writeln!(out, "\n{dur:.3} seconds")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- watch / record

/// Run `hwbreak watch`.
pub fn watch(a: &WatchArgs) -> Result<(), CliError> {
    let callchain = a.stack.callchain();
    let conds = Conditions {
        expr: a.cond.clone(),
        stop: a.stop,
    };
    let mut s = open_sampling(&a.target, callchain, a.values, a.json, &conds)?;
    let no_stack = callchain == Callchain::Off;
    if a.json {
        let sink = Json::new(&s.plan.watches, no_stack);
        sampling::run(&mut s, sink, a.values, a.top)
    } else {
        sampling::run(&mut s, Text::new(a.values, no_stack), a.values, a.top)
    }
}

/// Run `hwbreak record`.
pub fn record(a: &RecordArgs) -> Result<(), CliError> {
    // Create the output first: a bad path fails before any breakpoint exists.
    let path = a.output.clone();
    let file = std::fs::File::create(&path).map_err(|source| CliError::RecordCreate {
        path: path.clone(),
        source,
    })?;
    let mut s = open_sampling(
        &a.target,
        a.stack.callchain(),
        a.values,
        true,
        &Conditions::default(),
    )?;
    let header = recfile::Header {
        values: a.values,
        pid: s.pid.unwrap_or(0) as u32,
        start_ns: 0,
        watches: s
            .plan
            .watches
            .iter()
            .map(|w| recfile::WatchEntry {
                name: w.name.clone(),
                addr: w.addr,
                len: w.len,
                access: w.access,
            })
            .collect(),
        modules: s
            .maps
            .as_ref()
            .map(|m| m.modules.clone())
            .unwrap_or_default(),
    };
    let sink = RecordFile::new(file, path, &header)?;
    sampling::run(&mut s, sink, a.values, 5)
}

/// Open a sampling session (`watch`, `record`). `quiet_stdout`: the
/// launched command's stdout goes to stderr (stdout carries JSON).
fn open_sampling(
    t: &TargetArgs,
    callchain: Callchain,
    values: bool,
    quiet_stdout: bool,
    conds: &Conditions,
) -> Result<Session, CliError> {
    let mode = Mode::Sample {
        callchain,
        user_regs_stack: false,
    };
    let regs = if values { store::REGS_MASK } else { 0 };
    open(t, mode, regs, quiet_stdout, conds)
}

/// The program to launch exists and is executable (checked before anything
/// is printed or opened, so the error is the only line).
fn check_program(prog: &str) -> Result<std::path::PathBuf, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<std::path::PathBuf> = if prog.contains('/') {
        vec![prog.into()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(prog)).collect())
            .unwrap_or_default()
    };
    let found = candidates.into_iter().find(|c| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if let Some(path) = found {
        Ok(path)
    } else if prog.contains('/') && std::path::Path::new(prog).is_dir() {
        Err(CliError::new(format!(
            "cannot launch `{prog}`: it is a directory; give the program to run after `--`"
        )))
    } else {
        Err(CliError::new(format!(
            "cannot launch `{prog}`: no such executable{}; check the path after `--`",
            if prog.contains('/') { "" } else { " in $PATH" }
        )))
    }
}
