//! `watch`, `stat` and `record`: open the watches, run until the target ends
//! or Ctrl-C, drain hits as they come, then summarize. Dropping the
//! `Watcher` closes every event, so no breakpoint outlives the session, on
//! any path out of here (errors included).

use crate::cli::{RecordArgs, StatArgs, TargetArgs, WatchArgs};
use crate::error::CliError;
use crate::frames::FrameCache;
use crate::launch_lib;
use crate::offline;
use crate::plan::{self, format_value, Plan, Planned, TargetKind};
use crate::recfile;
use crate::summary::{Agg, SummaryView, WatchTotal};
use hwbreak_core::Access;
use hwbreak_linux::store;
use hwbreak_linux::symbols::{read_maps, Symbolizer, ValueKind};
use hwbreak_linux::watch::{Callchain, Mode, Target, TaskRecord, WatchHit, Watcher};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by Ctrl-C (and SIGTERM/SIGHUP): stop, drain, summarize.
fn stop_flag() -> Arc<AtomicBool> {
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

/// The target's executable mappings, kept as they grow (libraries loaded
/// later). Symbolization works from this snapshot, so stacks still resolve
/// after the process exits.
struct Maps {
    pid: Option<i32>,
    modules: Vec<recfile::Module>,
}

impl Maps {
    /// Re-read `/proc/PID/maps`; returns the mappings not seen before.
    fn refresh(&mut self) -> Vec<recfile::Module> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        let Ok(maps) = read_maps(pid) else {
            return Vec::new();
        };
        let mut new = Vec::new();
        for m in maps.iter().filter(|m| m.is_exec() && m.is_file()) {
            if self
                .modules
                .iter()
                .any(|k| k.start == m.start && k.end == m.end)
            {
                continue;
            }
            let md = crate::offline::module(m, pid);
            self.modules.push(md.clone());
            new.push(md);
        }
        new
    }

    /// Add mappings the kernel reported; returns those not seen before.
    fn add(&mut self, more: Vec<recfile::Module>) -> Vec<recfile::Module> {
        let mut new = Vec::new();
        for m in more {
            if !self
                .modules
                .iter()
                .any(|k| k.start == m.start && k.end == m.end)
            {
                self.modules.push(m.clone());
                new.push(m);
            }
        }
        new
    }

    fn covers(&self, ip: u64) -> bool {
        self.modules.iter().any(|m| m.start <= ip && ip < m.end)
    }
}

fn linux_error(e: hwbreak_linux::Error) -> CliError {
    CliError::Linux(e)
}

/// An open session: the watcher and what it was opened for.
struct Session {
    /// Each watch's value right after the watches were armed.
    initial: Vec<Option<u64>>,
    plan: Plan,
    /// The mappings read right after opening.
    maps: Option<Maps>,
    watcher: Watcher,
    /// Slot piece → user watch.
    piece_watch: Vec<usize>,
    pid: Option<i32>,
    launched: bool,
    started: Instant,
}

/// Open the watches of `t`. `user_regs`: registers each sample also records
/// (`PERF_REG_X86_*` mask; `--values` needs them, see [`store`]).
fn open(
    t: &TargetArgs,
    mode: Mode,
    user_regs: u64,
    child_stdout_to_stderr: bool,
) -> Result<Session, CliError> {
    // A SPEC in a shared library: the command starts stopped at its entry
    // point and is watched as a process from there (see crate::launch_lib).
    let (plan, at_entry) = match plan::plan(t)? {
        Planned::Ready(p) => (p, None),
        Planned::AtEntry(cmd) => {
            check_program(&cmd[0])?;
            let (p, s) = launch_lib::start(t, &cmd, child_stdout_to_stderr)?;
            (p, Some(s))
        }
    };
    let target = match (&plan.target, &at_entry) {
        (_, Some(s)) => Target::Process(s.pid()),
        (TargetKind::Pid(p), _) => Target::Process(*p),
        (TargetKind::Tid(t), _) => Target::Thread(*t),
        (TargetKind::AllCpus, _) => Target::AllCpus,
        (TargetKind::Launch(cmd), _) => {
            Target::Launch(launch_lib::command(cmd, child_stdout_to_stderr))
        }
    };
    let launched = matches!(plan.target, TargetKind::Launch(_));
    let mut b = Watcher::builder().target(target).mode(mode);
    let mut ring_note = None;
    if mode != Mode::Count {
        let (pages, note) = ring_pages_for_cli();
        b = b.ring_pages(pages).user_regs(user_regs);
        ring_note = note;
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
    let banner = |whom: &str| {
        // With the banner, once the watch starts: an error is the only line.
        if let Some(note) = &ring_note {
            eprintln!("{note}");
        }
        eprintln!(
            "hwbreak: watching {} in {whom}, {} of {} slots; Ctrl-C to stop",
            what.join(", "),
            plan.pieces.len(),
            crate::sys::SLOTS_PER_CPU
        )
    };
    let mut exe = None;
    if let TargetKind::Launch(cmd) = &plan.target {
        exe = Some(check_program(&cmd[0])?);
        // Armed from the first instruction: say so before the program's own output.
        banner(&cmd.join(" "));
    }
    let watcher = b.open().map_err(linux_error)?;
    let pid = watcher.pid();
    // Read the maps at once: a short-lived program may be gone soon.
    let mut maps = Maps {
        pid,
        modules: Vec::new(),
    };
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
    let initial: Vec<Option<u64>> = plan
        .watches
        .iter()
        .map(|w| match (pid, w.kind, &exe) {
            (_, ValueKind::Code, _) | (None, ..) => None,
            (_, _, Some(exe)) if at_entry.is_none() => {
                let link = if w.rebased {
                    w.addr.wrapping_sub(plan::NO_ASLR_PIE_BASE)
                } else {
                    w.addr
                };
                hwbreak_linux::symbols::initial_value(exe, link, w.len)
            }
            (Some(p), ..) => crate::sys::read_value(p, w.addr, w.len),
        })
        .collect();
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
    })
}

/// How the run ended.
enum End {
    Stopped,
    Exited(String),
}

impl Session {
    /// The user's watch (index into `plan.watches`) that slot piece
    /// `piece` belongs to (a wide variable is split over several).
    fn watch_of(&self, piece: usize) -> usize {
        self.piece_watch.get(piece).copied().unwrap_or(0)
    }

    /// Whether the target is gone (and how), checked without blocking.
    fn ended(&self) -> Option<String> {
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
    fn finish_child(&self) -> Option<String> {
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

fn watch_totals(plan: &Plan) -> Vec<WatchTotal> {
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
    let s = open(&a.target, Mode::Count, 0, a.json)?;
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
        End::Stopped => s.finish_child(),
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

/// Live status on a terminal: hits, rate, lost. Never on a pipe.
struct Status {
    on: bool,
    shown: bool,
    last: Instant,
    last_hits: u64,
    rate: f64,
}

impl Status {
    fn new() -> Self {
        Status {
            on: std::io::stderr().is_terminal(),
            shown: false,
            last: Instant::now(),
            last_hits: 0,
            rate: 0.0,
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }

    fn update(&mut self, hits: u64, lost: u64, force: bool) {
        if !self.on {
            return;
        }
        let dt = self.last.elapsed();
        if dt >= Duration::from_millis(250) {
            // The rate is measured over windows of at least 250 ms.
            self.rate = (hits - self.last_hits) as f64 / dt.as_secs_f64();
            self.last = Instant::now();
            self.last_hits = hits;
        } else if !force {
            return;
        }
        eprint!(
            "\r\x1b[K[hwbreak] {hits} hits, {:.0}/s, lost {lost}  (Ctrl-C to stop)",
            self.rate
        );
        self.shown = true;
    }
}

/// The per-hit work shared by watch and record.
struct HitSink<'a> {
    s: &'a Session,
    agg: Agg,
    sym: FrameCache<Symbolizer>,
    maps: Maps,
    values: bool,
    last_value: Vec<Option<u64>>,
    /// The writing instruction at each data-hit IP (`--values`).
    stores: HashMap<u64, Option<store::Store>>,
    first_ns: Option<u64>,
    stack_buf: Vec<u64>,
    comm: HashMap<u32, String>,
    out: Box<dyn Write + 'a>,
    json: bool,
    no_stack: bool,
    print: bool,
    rec: Option<Recorder>,
    err: Option<std::io::Error>,
    batch: Vec<(WatchHit<'static>, usize, usize, usize)>,
    arena: Vec<u64>,
    /// With `--values`: each watch's bytes read just before the latest
    /// drain, and when (`CLOCK_MONOTONIC`).
    snapshot: (u64, Vec<Option<u64>>),
    /// Hits drained but not handled yet (see [`HitSink::emit`]), from
    /// `held.hits[held_start]` on; those before it were handled.
    held: Batch,
    held_start: usize,
    frames_buf: Vec<std::rc::Rc<crate::frames::Rendered>>,
    line_buf: Vec<u8>,
    /// Each watch's name as a JSON string, escaped once.
    json_names: Vec<String>,
}

/// Hits drained from the rings at one time: each hit without its slices,
/// with its callchain in `arena[a..b]` and (with `--values`) its registers
/// in `arena[b..c]`.
#[derive(Default)]
struct Batch {
    hits: Vec<(WatchHit<'static>, usize, usize, usize)>,
    arena: Vec<u64>,
    /// `CLOCK_MONOTONIC` when the drain began: every hit stamped well
    /// before this was in a ring by then.
    at_ns: u64,
    /// Executable mappings reported by the kernel in this drain
    /// (`PERF_RECORD_MMAP2`): a library may be gone from `/proc` by the
    /// time its hits are handled.
    mmaps: Vec<recfile::Module>,
}

/// How long before a drain's start a hit must be stamped to be certain to
/// be in that drain. A hit is stamped in the trap and written to its ring
/// microseconds later; the margin also covers a vCPU paused in between.
const HOLD_NS: u64 = 10_000_000;

/// `CLOCK_MONOTONIC` now, in ns (the clock hits are stamped with).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Batch {
    /// Empty the buffers, then take every pending hit from `w`.
    fn collect(&mut self, w: &Watcher, with_regs: bool) {
        self.hits.clear();
        self.arena.clear();
        self.at_ns = monotonic_ns();
        self.mmaps.clear();
        let (hits, arena, mmaps) = (&mut self.hits, &mut self.arena, &mut self.mmaps);
        let pid = w.pid();
        let task = |t: TaskRecord<'_>| {
            if let TaskRecord::Mmap {
                pid: p,
                start,
                end,
                offset,
                path,
            } = t
            {
                if pid.is_none_or(|pid| pid as u32 == p) {
                    mmaps.push(recfile::Module {
                        start,
                        end,
                        file_offset: offset,
                        path: path.to_string(),
                    });
                }
            }
        };
        w.drain_with_tasks(
            |h| {
                let a = arena.len();
                arena.extend_from_slice(h.callchain);
                let b = arena.len();
                if with_regs {
                    arena.extend_from_slice(h.regs);
                }
                hits.push((h_owned(h), a, b, arena.len()));
            },
            task,
        );
    }
}

/// A hit without its borrowed slices (they are re-attached from an arena).
fn h_owned(h: &WatchHit<'_>) -> WatchHit<'static> {
    WatchHit {
        callchain: &[],
        regs: &[],
        stack: &[],
        ..*h
    }
}

struct Recorder {
    w: recfile::Writer<std::io::BufWriter<std::fs::File>>,
}

impl HitSink<'_> {
    /// One hit. `old`/`new` are the values shown on either side of the arrow
    /// (`None` shows `…`: the value was not seen at that point).
    fn on_hit(&mut self, h: &WatchHit<'_>, old: Option<u64>, value: Option<u64>) {
        let wi = self.s.watch_of(h.watch_idx);
        let w = &self.s.plan.watches[wi];
        // The kernel's user callchain starts with the IP itself.
        self.stack_buf.clear();
        self.stack_buf.push(h.ip);
        let cc = match h.callchain.first() {
            Some(&first) if first == h.ip => &h.callchain[1..],
            _ => h.callchain,
        };
        self.stack_buf.extend(
            cc.iter()
                .copied()
                .filter(|&a| !hwbreak_linux::record::is_context_marker(a) && a != 0),
        );
        // A stack cut above `main` (or a thread's entry) lacks only runtime
        // frames, which are never shown: not worth a warning.
        if h.stack_truncated && !self.sym.is_entry(*self.stack_buf.last().unwrap_or(&0)) {
            self.stack_buf.push(crate::frames::CUT);
        }
        self.agg.add(wi, h.tid, h.time, h.ip, &self.stack_buf[1..]);
        let first = *self.first_ns.get_or_insert(h.time);
        if self
            .stack_buf
            .iter()
            .any(|&ip| ip != crate::frames::CUT && !self.maps.covers(ip))
        {
            self.refresh_maps();
        }
        if let Some(rec) = &mut self.rec {
            let r = rec.w.hit(&recfile::Hit {
                watch: wi as u16,
                tid: h.tid,
                cpu: h.cpu,
                time_ns: h.time,
                ip: h.ip,
                addr: h.addr,
                value,
                stack: self.stack_buf[1..].to_vec(),
            });
            if let Err(e) = r {
                self.err.get_or_insert(e);
            }
        }
        if !self.print {
            return;
        }
        let exact = w.access == Access::Execute;
        let mut frames = std::mem::take(&mut self.frames_buf);
        let depth = if self.no_stack {
            1
        } else {
            self.stack_buf.len()
        };
        self.sym
            .stack_rendered(&self.stack_buf[..depth], exact, &mut frames);
        let fmt = |v: Option<u64>| v.map(|v| format_value(v, w.len, w.kind));
        let (old_s, new_s) = (fmt(old), fmt(value));
        let r = if self.json {
            // Written by hand from pre-rendered pieces: this is the per-hit
            // hot path (the schema is in docs/CLI.md).
            let mut line = std::mem::take(&mut self.line_buf);
            line.clear();
            line.extend_from_slice(b"{\"type\":\"hit\",\"t\":");
            push_micros(&mut line, h.time.saturating_sub(first));
            line.extend_from_slice(b",\"time_ns\":");
            push_u64(&mut line, h.time);
            line.extend_from_slice(b",\"tid\":");
            push_u64(&mut line, h.tid.into());
            line.extend_from_slice(b",\"pid\":");
            push_u64(&mut line, h.pid.into());
            line.extend_from_slice(b",\"cpu\":");
            push_u64(&mut line, h.cpu.into());
            line.extend_from_slice(b",\"watch\":");
            line.extend_from_slice(self.json_names[wi].as_bytes());
            line.extend_from_slice(b",\"access\":\"");
            line.extend_from_slice(w.access.short().as_bytes());
            line.extend_from_slice(b"\",\"addr\":\"");
            push_hex(&mut line, h.addr);
            line.push(b'"');
            if let Some(o) = &old_s {
                let _ = write!(line, ",\"old\":\"{o}\"");
            }
            if let Some(n) = &new_s {
                let _ = write!(line, ",\"new\":\"{n}\"");
            }
            line.extend_from_slice(b",\"ip\":\"");
            push_hex(&mut line, h.ip);
            line.extend_from_slice(b"\",\"at\":");
            line.extend_from_slice(frames[0].json.as_bytes());
            if !self.no_stack {
                line.extend_from_slice(b",\"stack\":[");
                let mut cut = false;
                for (k, f) in frames[1..].iter().enumerate() {
                    if f.frame.is_cut() {
                        cut = true;
                        continue;
                    }
                    if k > 0 {
                        line.push(b',');
                    }
                    line.extend_from_slice(f.json.as_bytes());
                }
                line.push(b']');
                if cut {
                    line.extend_from_slice(b",\"stack_truncated\":true");
                }
            }
            line.extend_from_slice(b"}\n");
            let r = self.out.write_all(&line);
            self.line_buf = line;
            r
        } else {
            let t = h.time.saturating_sub(first) as f64 / 1e9;
            let comm = self.comm.entry(h.tid).or_insert_with(|| {
                let pid = if h.pid != 0 { h.pid } else { h.tid };
                std::fs::read_to_string(format!("/proc/{pid}/task/{}/comm", h.tid))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            });
            let who = if comm.is_empty() {
                format!("tid {}", h.tid)
            } else {
                format!("tid {} {comm}", h.tid)
            };
            let val = if self.values && w.kind != ValueKind::Code {
                format!(
                    "  {} → {}",
                    old_s.as_deref().unwrap_or("…"),
                    new_s.as_deref().unwrap_or("…")
                )
            } else {
                String::new()
            };
            let mut line = format!(
                "{t:>10.6}  {who:<20}  {} {}{val}  at {}\n",
                w.name,
                w.access.short(),
                frames[0].text
            );
            if !self.no_stack {
                let max = 8;
                for (k, f) in frames.iter().enumerate().skip(1) {
                    if k > max {
                        line.push_str(&format!("                ← … {} more\n", frames.len() - k));
                        break;
                    }
                    if crate::frames::is_runtime_entry(&f.frame) {
                        break;
                    }
                    line.push_str("                ← ");
                    line.push_str(&f.text);
                    line.push('\n');
                }
            }
            self.out.write_all(line.as_bytes())
        };
        self.frames_buf = frames;
        if let Err(e) = r {
            self.err.get_or_insert(e);
        }
    }
}

// Integer writers for the per-hit JSON line: `write!` goes through
// `core::fmt` (padding, dynamic dispatch), which was the larger part of the
// per-hit CPU; these produce the same text as `{}` and `{:#x}`. (Hand-written
// rather than a new dependency: a few lines, tested below.)

/// Append `v` in decimal.
fn push_u64(s: &mut Vec<u8>, mut v: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    s.extend_from_slice(&buf[i..]);
}

/// Append `v` as `{:#x}` does (`0x` and lowercase digits, no padding).
fn push_hex(s: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    buf[i] = b'0';
    buf[i + 1] = b'x';
    s.extend_from_slice(&buf[i..]);
}

/// Append `ns` nanoseconds as seconds rounded to the microsecond, as the f64
/// `(ns / 1e9 * 1e6).round() / 1e6` prints (`0`, `1.5`, `0.000123`).
fn push_micros(s: &mut Vec<u8>, ns: u64) {
    let us = ns / 1000 + u64::from(ns % 1000 >= 500);
    push_u64(s, us / 1_000_000);
    let mut frac = us % 1_000_000;
    if frac == 0 {
        return;
    }
    let mut digits = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    s.push(b'.');
    let mut buf = [b'0'; 6];
    for k in (0..digits).rev() {
        buf[k] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    s.extend_from_slice(&buf[..digits]);
}

/// Run `hwbreak watch`.
pub fn watch(a: &WatchArgs) -> Result<(), CliError> {
    run_sampling(
        &a.target,
        a.json,
        a.stack.callchain(),
        a.values,
        a.top,
        None,
    )
}

/// Run `hwbreak record`.
pub fn record(a: &RecordArgs) -> Result<(), CliError> {
    run_sampling(
        &a.target,
        false,
        a.stack.callchain(),
        a.values,
        5,
        Some(&a.output),
    )
}

fn run_sampling(
    t: &TargetArgs,
    json: bool,
    callchain: Callchain,
    values: bool,
    top: usize,
    output: Option<&std::path::Path>,
) -> Result<(), CliError> {
    // Create the output first: a bad path fails before any breakpoint exists.
    let file = match output {
        Some(p) => Some(
            std::fs::File::create(p).map_err(|source| CliError::RecordCreate {
                path: p.to_path_buf(),
                source,
            })?,
        ),
        None => None,
    };
    let no_stack = callchain == Callchain::Off;
    let mode = Mode::Sample {
        callchain,
        user_regs_stack: false,
    };
    let regs = if values { store::REGS_MASK } else { 0 };
    let mut s = open(t, mode, regs, json || output.is_some())?;
    if values {
        // This thread drains the rings itself (see below); otherwise only the
        // drain thread is boosted, and formatting competes with the target
        // as an equal.
        let _ = Watcher::boost_current_thread();
    }
    let maps = s.maps.take().unwrap_or(Maps {
        pid: s.pid,
        modules: Vec::new(),
    });
    let first_maps = maps.modules.clone();
    let rec = match file {
        Some(f) => {
            let header = recfile::Header {
                values,
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
                modules: first_maps.clone(),
            };
            let w = recfile::Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), &header)?;
            Some(Recorder { w })
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut sink = HitSink {
        s: &s,
        agg: Agg::new(watch_totals(&s.plan)),
        sym: FrameCache::new(offline::symbolizer(&first_maps)),
        maps,
        values,
        stores: HashMap::new(),
        last_value: if values {
            s.initial.clone()
        } else {
            vec![None; s.plan.watches.len()]
        },
        first_ns: None,
        stack_buf: Vec::with_capacity(128),
        comm: HashMap::new(),
        out: Box::new(std::io::BufWriter::with_capacity(1 << 16, stdout.lock())),
        json,
        no_stack,
        print: output.is_none(),
        rec,
        err: None,
        batch: Vec::new(),
        held: Batch::default(),
        held_start: 0,
        snapshot: (0, Vec::new()),
        arena: Vec::new(),
        frames_buf: Vec::new(),
        line_buf: Vec::with_capacity(1024),
        json_names: s
            .plan
            .watches
            .iter()
            .map(|w| serde_json::to_string(&w.name).unwrap_or_else(|_| "\"?\"".into()))
            .collect(),
    };
    let stop = stop_flag();
    let mut status = Status::new();
    let mut last_refresh = Instant::now();
    // Without `--values`, a drain thread at raised priority empties the rings
    // and hands batches over a channel, so neither symbolizing nor a slow
    // stdout delays the drain. The queue is bounded by hits, not dropped from:
    // past `QUEUE_CAP` hits waiting (a reader far slower than the target,
    // ~100 MB queued) the drain thread waits, the rings fill, and the kernel
    // counts what it cannot record, which the summary reports as lost. With
    // `--values` the watched bytes must be read right after each drain, so
    // that loop stays on this thread.
    const QUEUE_CAP: usize = 1 << 20;
    let threaded = !values;
    let finishing = AtomicBool::new(false);
    let queued = std::sync::atomic::AtomicUsize::new(0);
    let queued = &queued;
    // The start time of the drain thread's latest pass, stored after that
    // pass's batch was sent: hits stamped well before it are all received.
    let last_pass = std::sync::atomic::AtomicU64::new(0);
    let last_pass = &last_pass;
    let watcher = &s.watcher;
    // The reader of stdout went away: stop, close every event, then end
    // by SIGPIPE (see crate::error).
    let mut pipe_closed = false;
    let end = std::thread::scope(|sc| -> Result<End, CliError> {
        let (tx, rx) = std::sync::mpsc::channel::<Batch>();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
        if threaded {
            let finishing = &finishing;
            sc.spawn(move || {
                let _ = Watcher::boost_current_thread();
                loop {
                    let last = finishing.load(Ordering::SeqCst);
                    if !last {
                        // The rings wake us at an eighth full; the timeout
                        // keeps slow trickles of hits timely.
                        let _ = watcher.poll(Some(Duration::from_millis(5)));
                    }
                    if !last && queued.load(Ordering::Relaxed) > QUEUE_CAP {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let mut b = back_rx.try_recv().unwrap_or_default();
                    b.collect(watcher, false);
                    let (n, at) = (b.hits.len(), b.at_ns);
                    if n > 0 {
                        queued.fetch_add(n, Ordering::Relaxed);
                        if tx.send(b).is_err() {
                            break;
                        }
                    }
                    last_pass.store(at, Ordering::SeqCst);
                    if last {
                        break;
                    }
                }
            });
        } else {
            drop(tx);
        }
        let mut end = None;
        loop {
            let mut cleared = false;
            if threaded {
                // Handle every batch ready now (waiting up to 20 ms for one;
                // at the end, every batch until the drain thread hangs up).
                let pass = last_pass.load(Ordering::SeqCst);
                let mut next = if end.is_some() {
                    rx.recv().ok()
                } else {
                    rx.recv_timeout(Duration::from_millis(20)).ok()
                };
                while let Some(b) = next {
                    let n = b.hits.len();
                    sink.hold(b);
                    queued.fetch_sub(n, Ordering::Relaxed);
                    let _ = back_tx.send(Batch {
                        hits: std::mem::take(&mut sink.batch),
                        arena: std::mem::take(&mut sink.arena),
                        ..Batch::default()
                    });
                    if end.is_some() {
                        next = rx.recv().ok();
                    } else {
                        next = rx.try_recv().ok();
                    }
                }
                sink.emit(pass.saturating_sub(HOLD_NS), &mut || {
                    status.clear();
                    cleared = true;
                });
                if end.is_some() {
                    // The drain thread has made its last pass and hung up.
                    break;
                }
            } else {
                let _ = watcher.poll(Some(Duration::from_millis(5)));
                sink.drain_with(watcher, &mut || {
                    status.clear();
                    cleared = true;
                });
            }
            let _ = sink.out.flush();
            if let Some(e) = sink.err.take() {
                match CliError::output(e) {
                    CliError::BrokenPipe => {
                        pipe_closed = true;
                        end = Some(End::Stopped);
                    }
                    e => {
                        finishing.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
            }
            if end.is_none() {
                status.update(sink.agg.hits, watcher.lost(), cleared);
                if last_refresh.elapsed() > Duration::from_secs(1) {
                    last_refresh = Instant::now();
                    sink.refresh_maps();
                }
                if stop.load(Ordering::SeqCst) {
                    end = Some(End::Stopped);
                } else if let Some(e) = s.ended() {
                    end = Some(End::Exited(e));
                }
            }
            if end.is_some() {
                finishing.store(true, Ordering::SeqCst);
                if !threaded {
                    break;
                }
            }
        }
        Ok(end.unwrap_or(End::Stopped))
    })?;
    // Final drain: everything the kernel wrote before the end.
    sink.drain(&s.watcher);
    let exit = match end {
        End::Exited(e) => Some(e),
        End::Stopped => s.finish_child(),
    };
    sink.drain(&s.watcher);
    sink.finish();
    if let Some(e) = sink.err.take() {
        match CliError::output(e) {
            CliError::BrokenPipe => pipe_closed = true,
            e => return Err(e),
        }
    }
    sink.agg.lost = s.watcher.lost();
    status.clear();
    let dur = s.started.elapsed().as_secs_f64();
    if let Some(mut r) = sink.rec.take() {
        r.w.lost(sink.agg.lost)?;
        let (t, _) = r.w.finish()?;
        let path = output.map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!(
            "hwbreak: recorded {} hits (lost: {}) to {path}; analyse with `hwbreak report {path}`",
            t.hits, t.lost
        );
    }
    let view = SummaryView {
        agg: &sink.agg,
        duration_s: dur,
        top,
        target_exit: exit,
    };
    if output.is_some() {
        // record: the summary goes to stderr, stdout stays free.
        let mut e = std::io::stderr().lock();
        view.text(&mut e, &mut sink.sym)?;
    } else if !pipe_closed {
        let r = if json {
            let j = view.json(&mut sink.sym);
            serde_json::to_writer(&mut sink.out, &j).map_err(CliError::json)
        } else {
            view.text(&mut sink.out, &mut sink.sym)
                .map_err(CliError::output)
        };
        let r = r.and_then(|_| {
            if json {
                sink.out.write_all(b"\n").map_err(CliError::output)?;
            }
            sink.out.flush().map_err(CliError::output)
        });
        if let Err(e) = r {
            drop(sink);
            drop(s);
            return Err(e);
        }
    }
    drop(sink);
    drop(s);
    if pipe_closed {
        return Err(CliError::BrokenPipe);
    }
    Ok(())
}

impl HitSink<'_> {
    /// Drain the rings. Hits are handled a drain at a time, in time order
    /// across CPUs (each CPU has its own ring). With `--values`, the watched
    /// bytes are read once per watch after the drain, so the last hit of a
    /// watch shows `old → new`, and earlier hits of the same drain show `…`
    /// where the value was never seen (the program does not stop, so
    /// intermediate values are gone by the time we look).
    fn drain(&mut self, w: &Watcher) {
        self.drain_with(w, &mut || {});
    }

    /// [`Self::drain`], calling `before_output` once before the first hit
    /// is printed (to clear the status line), and only if there is one.
    fn drain_with(&mut self, w: &Watcher, before_output: &mut dyn FnMut()) {
        let mut b = Batch {
            hits: std::mem::take(&mut self.batch),
            arena: std::mem::take(&mut self.arena),
            ..Batch::default()
        };
        if self.values {
            // Memory before the drain: the value after a watch's last hit
            // if no write came between (any write would be in this drain).
            let t = monotonic_ns();
            let vals = (0..self.s.plan.watches.len())
                .map(|wi| {
                    let pw = &self.s.plan.watches[wi];
                    if pw.kind == ValueKind::Code {
                        return None;
                    }
                    self.s
                        .pid
                        .and_then(|p| crate::sys::read_value(p, pw.addr, pw.len))
                })
                .collect();
            self.snapshot = (t, vals);
        }
        b.collect(w, self.values);
        let at = b.at_ns;
        self.hold(b);
        self.emit(at.saturating_sub(HOLD_NS), before_output);
    }

    /// Take the hits of a drained [`Batch`] into the held hits; its buffers
    /// are kept for reuse (`self.batch`, `self.arena`).
    fn hold(&mut self, b: Batch) {
        let Batch {
            hits: mut batch,
            mut arena,
            mmaps,
            ..
        } = b;
        if !mmaps.is_empty() {
            let fresh = self.maps.add(mmaps);
            self.add_modules(fresh);
        }
        let held = &mut self.held;
        for (h, a, b, c) in batch.drain(..) {
            let off = held.arena.len();
            held.arena.extend_from_slice(&arena[a..c]);
            held.hits.push((h, off, off + (b - a), off + (c - a)));
        }
        arena.clear();
        self.batch = batch;
        self.arena = arena;
    }

    /// Handle, in time order, the held hits stamped at or before `cutoff`
    /// (`u64::MAX`: all). Each CPU has its own ring, so a hit of one CPU can
    /// be drained after a later hit of another; holding hits back until
    /// every ring has been drained past their time keeps the output (and the
    /// value chain of `--values`) in time order across drains.
    fn emit(&mut self, cutoff: u64, before_output: &mut dyn FnMut()) {
        let mut held = std::mem::take(&mut self.held);
        let start = self.held_start;
        // The kept part is sorted and the new hits follow it: the stable
        // sort finds the two runs and merges them.
        held.hits[start..].sort_by_key(|(h, ..)| h.time);
        let mut k = start + held.hits[start..].partition_point(|(h, ..)| h.time <= cutoff);
        if self.values && cutoff != u64::MAX {
            k = self.wait_for_next(&held, start, k, cutoff);
        }
        if k > start {
            self.handle(&held.hits[start..], k - start, &held.arena, before_output);
        }
        // Handled hits stay in the buffers until they are most of them:
        // moving the rest to the front at every drain cost more than the
        // handling (per-hit copies at 300k hits/s).
        let mut next_start = k;
        if next_start == held.hits.len() {
            held.hits.clear();
            held.arena.clear();
            next_start = 0;
        } else if next_start > 4096 && next_start * 2 > held.hits.len() {
            // Sorting by time reorders hits, not their arena slices: keep
            // the arena from the lowest slice still held.
            let base = held.hits[next_start..]
                .iter()
                .map(|&(_, a, ..)| a)
                .min()
                .unwrap_or(0);
            held.hits.drain(..next_start);
            for (_, a, b, c) in &mut held.hits {
                *a -= base;
                *b -= base;
                *c -= base;
            }
            held.arena.drain(..base);
            next_start = 0;
        }
        self.held = held;
        self.held_start = next_start;
    }

    /// With `--values`: how many of the first `k` held hits can be handled
    /// now. A hit whose value after cannot be followed from its own
    /// instruction (`xadd`, `xchg`) gets it from the next hit of its watch,
    /// so the last such hit waits for that next hit (up to a second; at the
    /// end, not at all), rather than show a value read later from memory.
    fn wait_for_next(&mut self, held: &Batch, start: usize, k: usize, cutoff: u64) -> usize {
        const WAIT_NS: u64 = 1_000_000_000;
        for i in start..k {
            let (h, a, b, c) = &held.hits[i];
            if h.time.saturating_add(WAIT_NS) < cutoff {
                continue;
            }
            let wi = self.s.watch_of(h.watch_idx);
            let has_next = held.hits[i + 1..]
                .iter()
                .any(|(n, ..)| self.s.watch_of(n.watch_idx) == wi);
            if has_next {
                continue;
            }
            let hit = WatchHit {
                callchain: &held.arena[*a..*b],
                regs: &held.arena[*b..*c],
                ..*h
            };
            let (after, before) = self.value_at(&hit, wi, Some(0));
            if after.is_none() && before.is_some() {
                return i;
            }
        }
        k
    }

    /// Every hit still held (at the end).
    fn finish(&mut self) {
        self.emit(u64::MAX, &mut || {});
    }

    /// Handle the first `k` of `all`, hits sorted by time with their slices
    /// in `arena`; the rest are only looked at (for `--values`: the value
    /// before a later hit can be the value after an earlier one).
    fn handle(
        &mut self,
        all: &[(WatchHit<'static>, usize, usize, usize)],
        k: usize,
        arena: &[u64],
        before_output: &mut dyn FnMut(),
    ) {
        let batch = &all[..k];
        if self.print && !batch.is_empty() {
            before_output();
        }
        if !self.values {
            for (h, a, b, _) in batch {
                let hit = WatchHit {
                    callchain: &arena[*a..*b],
                    ..*h
                };
                self.on_hit(&hit, None, None);
            }
            return;
        }
        let n = self.s.plan.watches.len();
        // The memory read before the drain is the value after a watch's
        // last drained hit when that hit came well before the read (a later
        // write would have been drained too).
        let mut last = vec![usize::MAX; n];
        for (i, (h, ..)) in all.iter().enumerate() {
            last[self.s.watch_of(h.watch_idx)] = i;
        }
        let (read_at, read) = &self.snapshot;
        let now: Vec<Option<u64>> = (0..n)
            .map(|wi| {
                let i = last[wi];
                let settled = i < batch.len() && all[i].0.time.saturating_add(HOLD_NS) < *read_at;
                if settled {
                    read.get(wi).copied().flatten()
                } else {
                    None
                }
            })
            .collect();
        let hit_at = |i: usize| {
            let (h, a, b, c) = &all[i];
            WatchHit {
                callchain: &arena[*a..*b],
                regs: &arena[*b..*c],
                ..*h
            }
        };
        let session = self.s;
        let watch_of = |h: &WatchHit<'_>| session.watch_of(h.watch_idx);
        // Pass 1: the value before each hit, where its registers keep it
        // (xchg, xadd, cmpxchg), and each hit's next hit of the same watch.
        let mut before = Vec::with_capacity(all.len());
        let mut next = vec![usize::MAX; all.len()];
        let mut prev_of = vec![usize::MAX; n];
        for i in 0..all.len() {
            let h = hit_at(i);
            let wi = watch_of(&h);
            before.push(self.value_at(&h, wi, None).1);
            if prev_of[wi] != usize::MAX {
                next[prev_of[wi]] = i;
            }
            prev_of[wi] = i;
        }
        // The value before the watch's next hit is the value after this one
        // if nothing wrote in between: true in memory order, and hits are in
        // trap-time order. Two threads' traps can land in the other order
        // when their writes are close together, so take it only from the
        // same thread, or from a hit well after this one.
        const SAFE_GAP_NS: u64 = 100_000;
        let next_before = |i: usize| -> Option<u64> {
            let j = *next.get(i)?;
            let (hi, hj) = (&all.get(i)?.0, &all.get(j)?.0);
            let ordered = hi.tid == hj.tid || hj.time.saturating_sub(hi.time) > SAFE_GAP_NS;
            if ordered {
                before[j]
            } else {
                None
            }
        };
        // Pass 2: the value before a hit is what its registers say, or the
        // value after the watch's previous hit; the value after it comes
        // from the writing instruction, or else from the next hit's
        // registers, or else (for the last hit of a drain) from memory.
        for (i, &bef) in before.iter().enumerate().take(batch.len()) {
            let h = hit_at(i);
            let wi = watch_of(&h);
            let old = bef.or(self.last_value[wi]);
            let new = self
                .value_at(&h, wi, old)
                .0
                .or(next_before(i))
                .or(if last[wi] == i { now[wi] } else { None });
            self.last_value[wi] = new;
            self.on_hit(&h, old, new);
        }
        for (last, now) in self.last_value.iter_mut().zip(&now) {
            // Followed values stand (memory may already hold later writes,
            // whose hits come in the next drain); lost track: resynchronise.
            if last.is_none() {
                *last = *now;
            }
        }
    }

    /// The watched value (after, before) hit `h` of watch `wi`, worked out
    /// from the writing instruction and the registers at the trap
    /// ([`hwbreak_linux::store`]), given the value before (`old`) if known;
    /// `None` where it cannot be.
    fn value_at(
        &mut self,
        h: &WatchHit<'_>,
        wi: usize,
        old: Option<u64>,
    ) -> (Option<u64>, Option<u64>) {
        let w = &self.s.plan.watches[wi];
        let (addr, len) = (w.addr, w.len);
        if w.kind == ValueKind::Code || h.regs.is_empty() || len > 8 {
            return (None, None);
        }
        let Some(pid) = (if h.pid != 0 {
            Some(h.pid as i32)
        } else {
            self.s.pid
        }) else {
            return (None, None);
        };
        if !self.stores.contains_key(&h.ip) {
            let store = self.find_store(pid, h.ip);
            self.stores.insert(h.ip, store);
        }
        let Some(Some(store)) = self.stores.get(&h.ip) else {
            return (None, None);
        };
        let regs = store::Regs {
            regs: h.regs,
            mask: h.regs_mask,
        };
        let known = |w: store::Written| match w {
            store::Written::Value(v) => Some(v),
            store::Written::Unknown => None,
        };
        (
            known(store.written(regs, addr, len, old)),
            known(store.before(regs, addr, len)),
        )
    }

    /// Decode the instruction that ends at `ip` (a data hit's IP is just
    /// past the write), from the function's start when the symbols give it.
    fn find_store(&mut self, pid: i32, ip: u64) -> Option<store::Store> {
        const MAX_FN: u64 = 4096;
        // Symbolize with the module that holds `ip` loaded (a library
        // mapped since the last look), or its frame is cached as unknown.
        if !self.maps.covers(ip) {
            self.refresh_maps();
        }
        let start = self.sym.stack(&[ip], false)[0]
            .offset
            .filter(|&o| o > 0 && o <= MAX_FN)
            .map(|o| ip - o);
        let (from, boundary) = match start {
            Some(s) => (s, true),
            None => (ip.saturating_sub(64), false),
        };
        let mut code = vec![0u8; (ip - from) as usize];
        self.read_code(pid, from, &mut code)
            .then(|| store::Store::find(&code, ip, boundary))
            .flatten()
    }

    /// Code bytes at `addr`: from the mapped file (the program may have
    /// exited by the time its hits are handled), else from its memory.
    fn read_code(&self, pid: i32, addr: u64, buf: &mut [u8]) -> bool {
        use std::os::unix::fs::FileExt;
        let end = addr + buf.len() as u64;
        let in_file = self
            .maps
            .modules
            .iter()
            .find(|m| m.start <= addr && end <= m.end)
            .and_then(|m| {
                let f = std::fs::File::open(&m.path).ok()?;
                f.read_exact_at(buf, addr - m.start + m.file_offset).ok()
            });
        in_file.is_some() || crate::sys::read_exact(pid, addr, buf)
    }

    /// Pick up new mappings for the symbolizer and the record file.
    fn refresh_maps(&mut self) {
        let new = self.maps.refresh();
        self.add_modules(new);
    }

    /// Mappings not seen before: to the symbolizer and the record file.
    fn add_modules(&mut self, new: Vec<recfile::Module>) {
        if new.is_empty() {
            return;
        }
        offline::add_modules(self.sym.inner_mut(), &new);
        // Addresses looked up before their module was known: look again.
        self.sym.forget_unknown();
        self.stores.retain(|_, st| st.is_some());
        if let Some(r) = &mut self.rec {
            for m in &new {
                if let Err(e) = r.w.module(m) {
                    self.err.get_or_insert(e);
                }
            }
        }
    }
}

/// The CLI's ring size per CPU, in pages. The library's 512 KiB holds about
/// 15 ms of hits at 300k/s, so a drain thread that misses a beat loses records;
/// the CLI asks for 8 MiB. Root (or `CAP_IPC_LOCK`) is not bound by
/// `perf_event_mlock_kb`; others get the largest power of two that fits it
/// (the kernel's per-user budget, per CPU), and a note for stderr.
fn ring_pages_for_cli() -> (usize, Option<String>) {
    const WANT: usize = 2048;
    const DEFAULT: usize = 128;
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return (WANT, None);
    }
    let page_kb = (hwbreak_linux::ring::page_size() / 1024).max(1);
    let Some(kb) = std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return (DEFAULT, None);
    };
    let pages = ring_pages_within(kb, page_kb, WANT);
    let note = (pages < WANT).then(|| format!(
        "hwbreak: sampling ring {} KiB per CPU (perf_event_mlock_kb = {kb} for non-root); at high hit rates records may be lost: raise kernel.perf_event_mlock_kb or run as root",
        pages * page_kb
    ));
    (pages, note)
}

/// The largest power-of-two ring (in pages, at most `want`) whose pages plus
/// the ring's header page fit `mlock_kb` KiB; at least 1.
fn ring_pages_within(mlock_kb: usize, page_kb: usize, want: usize) -> usize {
    let fit = (mlock_kb / page_kb.max(1)).saturating_sub(1);
    if fit >= want {
        return want;
    }
    if fit == 0 {
        1
    } else {
        1usize << (usize::BITS - 1 - fit.leading_zeros())
    }
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
    } else {
        Err(CliError::new(format!(
            "cannot launch `{prog}`: no such executable{}; check the path after `--`",
            if prog.contains('/') { "" } else { " in $PATH" }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_writers_print_what_core_fmt_prints() {
        let vals = [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            0x7fff_ffff_ffff,
            99,
            100,
            101,
            12_345_678_901,
            u32::MAX as u64,
            u64::MAX,
        ];
        for v in vals {
            let (mut d, mut x) = (Vec::new(), Vec::new());
            push_u64(&mut d, v);
            push_hex(&mut x, v);
            assert_eq!(d, format!("{v}").as_bytes());
            assert_eq!(x, format!("{v:#x}").as_bytes());
        }
    }

    #[test]
    fn non_root_ring_is_the_largest_power_of_two_within_perf_event_mlock_kb() {
        // The kernel default 516 KiB = 128 data pages + the header page.
        assert_eq!(ring_pages_within(516, 4, 2048), 128);
        assert_eq!(ring_pages_within(515, 4, 2048), 64);
        assert_eq!(ring_pages_within(8196, 4, 2048), 2048);
        assert_eq!(ring_pages_within(1 << 30, 4, 2048), 2048);
        assert_eq!(ring_pages_within(4, 4, 2048), 1);
        assert_eq!(ring_pages_within(0, 4, 2048), 1);
    }

    #[test]
    fn micros_print_as_the_rounded_f64_seconds_did() {
        let vals = [
            0u64,
            499,
            500,
            1_000,
            123_456,
            1_000_000,
            1_500_000_000,
            1_000_000_499,
            2_000_010_000,
            59_999_999_999,
            3_600_123_456_789,
        ];
        for ns in vals {
            let mut s = Vec::new();
            push_micros(&mut s, ns);
            let t = ns as f64 / 1e9;
            let want = format!("{}", (t * 1e6).round() / 1e6);
            assert_eq!(String::from_utf8_lossy(&s), want, "ns = {ns}");
        }
    }
}
