//! `watch` and `record` after the watches are open: drain the rings, put
//! hits in time order ([`hwbreak_linux::order`]), follow values
//! ([`hwbreak_linux::values`], `--values`), count them ([`Agg`]) and hand
//! each to the [`Sink`], then the summary.
//!
//! Without `--values`, a drain thread at raised priority empties the rings
//! and hands batches over a channel, so neither symbolizing nor a slow
//! stdout delays the drain. With `--values` the watched bytes must be read
//! right after each drain, so that loop stays on this thread.

use crate::error::CliError;
use crate::frames::FrameCache;
use crate::offline::{self, Maps};
use crate::recfile::Module;
use crate::session::{End, Session};
use crate::sink::{Frames, Shown, Sink};
use crate::summary::{Agg, SummaryView};
use hwbreak_core::events::{Extended, Extension, Sample};
use hwbreak_core::BpId;
use hwbreak_linux::order::{Batch, Pending, TimeOrder, HOLD_NS};
use hwbreak_linux::symbols::ValueKind;
use hwbreak_linux::values::{self, Change, Code, Followed, Values};
use hwbreak_linux::watch::Watcher;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// The symbols and code bytes [`Values`] asks for: through the session's
/// mappings, loading those mapped since the last look.
struct CodeAccess<'a> {
    maps: &'a mut Maps,
    sym: &'a mut Frames,
    /// Mappings found while following values: for the sink, after.
    found: &'a mut Vec<Module>,
}

impl Code for CodeAccess<'_> {
    fn function_offset(&mut self, ip: u64) -> Option<u64> {
        // Symbolize with the module that holds `ip` loaded (a library
        // mapped since the last look), or its frame is cached as unknown.
        if !self.maps.covers(ip) {
            let new = self.maps.refresh();
            if !new.is_empty() {
                add_to_symbolizer(self.sym, &new);
                self.found.extend(new);
            }
        }
        self.sym.stack(&[ip], false)[0].offset
    }

    fn read_code(&mut self, pid: i32, addr: u64, buf: &mut [u8]) -> bool {
        self.maps.read_code(addr, buf) || values::read_exact(pid, addr, buf)
    }

    fn mappings(&self) -> usize {
        self.maps.modules.len()
    }
}

/// Mappings not seen before, to the symbolizer.
fn add_to_symbolizer(sym: &mut Frames, new: &[Module]) {
    offline::add_modules(sym.inner_mut(), new);
    // Addresses looked up before their module was known: look again.
    sym.forget_unknown();
}

/// The per-hit work shared by every sink.
struct Flow<'s, S: Sink> {
    s: &'s Session,
    sink: S,
    agg: Agg,
    sym: Frames,
    maps: Maps,
    /// With `--values`.
    values: Option<Values>,
    changes: Vec<Change>,
    order: TimeOrder,
    /// A drained batch's buffers, kept for the next drain.
    spare: Batch,
    first_ns: Option<u64>,
    stack_buf: Vec<u64>,
    found: Vec<Module>,
    /// The first failed write.
    err: Option<CliError>,
}

impl<S: Sink> Flow<'_, S> {
    /// One hit (its `bp` a slot piece), with its values.
    fn on_hit(&mut self, h: &Extended<'_>, change: Change) {
        let wi = self.s.watch_of(h.watch());
        // The kernel's user callchain starts with the IP itself.
        let ip = h.sample.ip;
        self.stack_buf.clear();
        self.stack_buf.push(ip);
        self.stack_buf.extend(
            h.callers()
                .iter()
                .copied()
                .filter(|&a| !hwbreak_linux::record::is_context_marker(a) && a != 0),
        );
        let callers = self.stack_buf.len();
        // A stack cut above `main` (or a thread's entry) lacks only runtime
        // frames, which are never shown: not worth a warning.
        let cut = h.ext.stack_truncated && !self.sym.is_entry(self.stack_buf[callers - 1]);
        if cut {
            self.stack_buf.push(crate::frames::CUT);
        }
        // The hit as the summary, the record file and the printers see it:
        // of the user's watch, its stack cleaned, its value after.
        let sample = Sample {
            bp: BpId(wi as u32),
            ..h.sample
        };
        let ext = Extension {
            stack: &[],
            stack_truncated: cut,
            value: change.new,
            ..h.ext
        };
        self.agg.add_hit(&Extended {
            sample,
            ext: Extension {
                stack: &self.stack_buf[1..callers],
                ..ext
            },
        });
        let first = *self.first_ns.get_or_insert(h.sample.time);
        if self
            .stack_buf
            .iter()
            .any(|&ip| ip != crate::frames::CUT && !self.maps.covers(ip))
        {
            let new = self.maps.refresh();
            self.add_modules(new);
        }
        let shown = Shown {
            hit: Extended {
                sample,
                ext: Extension {
                    stack: &self.stack_buf[1..callers],
                    ..ext
                },
            },
            watch: &self.s.plan.watches[wi],
            old: change.old,
            frames: &self.stack_buf,
            since_first_ns: h.sample.time.saturating_sub(first),
        };
        if let Err(e) = self.sink.hit(&shown, &mut self.sym) {
            self.err.get_or_insert(e);
        }
    }

    /// Mappings not seen before: to the symbolizer and the sink.
    fn add_modules(&mut self, new: Vec<Module>) {
        if new.is_empty() {
            return;
        }
        add_to_symbolizer(&mut self.sym, &new);
        if let Err(e) = self.sink.modules(&new) {
            self.err.get_or_insert(e);
        }
    }

    /// Pick up new mappings for the symbolizer and the sink.
    fn refresh_maps(&mut self) {
        let new = self.maps.refresh();
        self.add_modules(new);
    }

    /// Take a drained batch into the held hits; its buffers are kept.
    fn hold(&mut self, mut b: Batch) {
        if !b.mmaps.is_empty() {
            let pid = self.s.pid.unwrap_or(0);
            let mods = b
                .mmaps
                .drain(..)
                .map(|m| offline::module(&m, pid))
                .collect();
            let fresh = self.maps.add(mods);
            self.add_modules(fresh);
        }
        self.order.hold(&mut b);
        self.spare = b;
    }

    /// Handle, in time order, the held hits stamped at or before `cutoff`
    /// (`u64::MAX`: all), calling `before_output` first if any is printed.
    fn emit(&mut self, cutoff: u64, before_output: &mut dyn FnMut()) {
        let mut order = std::mem::take(&mut self.order);
        let p = order.pending(cutoff);
        let k = match self.values.as_mut() {
            Some(v) => {
                let mut code = CodeAccess {
                    maps: &mut self.maps,
                    sym: &mut self.sym,
                    found: &mut self.found,
                };
                v.ready(&p, cutoff, &mut code)
            }
            None => p.ready,
        };
        if k > 0 {
            self.handle(&p, k, before_output);
        }
        order.release(k);
        self.order = order;
    }

    /// Handle the first `k` hits of `p`.
    fn handle(&mut self, p: &Pending<'_>, k: usize, before_output: &mut dyn FnMut()) {
        if self.sink.prints() {
            before_output();
        }
        let Some(v) = self.values.as_mut() else {
            for i in 0..k {
                self.on_hit(&p.get(i), Change::default());
            }
            return;
        };
        let mut changes = std::mem::take(&mut self.changes);
        let mut code = CodeAccess {
            maps: &mut self.maps,
            sym: &mut self.sym,
            found: &mut self.found,
        };
        v.follow(p, k, &mut code, &mut changes);
        let found = std::mem::take(&mut self.found);
        if !found.is_empty() {
            if let Err(e) = self.sink.modules(&found) {
                self.err.get_or_insert(e);
            }
        }
        for (i, &c) in changes.iter().enumerate() {
            self.on_hit(&p.get(i), c);
        }
        self.changes = changes;
    }

    /// Drain the rings on this thread (`--values`, and the final drains),
    /// calling `before_output` once before the first hit is printed.
    fn drain_with(&mut self, w: &Watcher, before_output: &mut dyn FnMut()) {
        if let Some(v) = self.values.as_mut() {
            v.snapshot();
        }
        let mut b = std::mem::take(&mut self.spare);
        b.collect(w, self.values.is_some());
        let at = b.at_ns;
        self.hold(b);
        self.emit(at.saturating_sub(HOLD_NS), before_output);
    }

    fn drain(&mut self, w: &Watcher) {
        self.drain_with(w, &mut || {});
    }

    /// A failed write: a closed pipe stops the session quietly, anything
    /// else is returned.
    fn take_error(&mut self, pipe_closed: &mut bool) -> Result<(), CliError> {
        match self.err.take() {
            None => Ok(()),
            Some(CliError::BrokenPipe) => {
                *pipe_closed = true;
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// `--stop`: whether a write matched and stopped the process.
fn at_write(s: &Session) -> Result<Option<hwbreak_linux::filter::StopRecord>, CliError> {
    match &s.filter {
        Some(f) => f.stopped().map_err(CliError::Linux),
        None => Ok(None),
    }
}

/// Run a sampling session on `s` into `sink` until the target ends or
/// Ctrl-C (or, with `--stop`, a write matches), then summarize. `top`:
/// stacks in the summary.
pub(crate) fn run<S: Sink>(
    s: &mut Session,
    sink: S,
    values: bool,
    top: usize,
) -> Result<(), CliError> {
    if values {
        // This thread drains the rings itself (see the module docs);
        // otherwise only the drain thread is boosted, and formatting
        // competes with the target as an equal.
        let _ = Watcher::boost_current_thread();
    }
    let maps = s.maps.take().unwrap_or_else(|| Maps::new(s.pid));
    let values = values.then(|| {
        let followed = s
            .plan
            .watches
            .iter()
            .map(|w| Followed {
                addr: w.addr,
                len: w.len,
                code: w.kind == ValueKind::Code,
            })
            .collect();
        Values::new(followed, s.piece_watch.clone(), s.pid, s.initial.clone())
    });
    let s: &Session = s;
    let mut flow = Flow {
        s,
        sink,
        agg: Agg::new(crate::session::watch_totals(&s.plan)),
        sym: FrameCache::new(offline::symbolizer(&maps.modules)),
        maps,
        values,
        changes: Vec::new(),
        order: TimeOrder::default(),
        spare: Batch::default(),
        first_ns: None,
        stack_buf: Vec::with_capacity(128),
        found: Vec::new(),
        err: None,
    };
    let stop = crate::session::stop_flag();
    let mut status = Status::new();
    let mut last_refresh = Instant::now();
    // The queue is bounded by hits, not dropped from: past `QUEUE_CAP` hits
    // waiting (a reader far slower than the target, ~100 MB queued) the
    // drain thread waits, the rings fill, and the kernel counts what it
    // cannot record, which the summary reports as lost.
    const QUEUE_CAP: usize = 1 << 20;
    let threaded = flow.values.is_none();
    let finishing = AtomicBool::new(false);
    let queued = AtomicUsize::new(0);
    let queued = &queued;
    // The start time of the drain thread's latest pass, stored after that
    // pass's batch was sent: hits stamped well before it are all received.
    let last_pass = AtomicU64::new(0);
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
                    let (n, at) = (b.len(), b.at_ns);
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
                    let n = b.len();
                    flow.hold(b);
                    queued.fetch_sub(n, Ordering::Relaxed);
                    let _ = back_tx.send(std::mem::take(&mut flow.spare));
                    if end.is_some() {
                        next = rx.recv().ok();
                    } else {
                        next = rx.try_recv().ok();
                    }
                }
                flow.emit(pass.saturating_sub(HOLD_NS), &mut || {
                    status.clear();
                    cleared = true;
                });
                if end.is_some() {
                    // The drain thread has made its last pass and hung up.
                    break;
                }
            } else {
                let _ = watcher.poll(Some(Duration::from_millis(5)));
                flow.drain_with(watcher, &mut || {
                    status.clear();
                    cleared = true;
                });
            }
            if let Err(e) = flow.sink.flush() {
                flow.err.get_or_insert(e);
            }
            let was_closed = pipe_closed;
            if let Err(e) = flow.take_error(&mut pipe_closed) {
                finishing.store(true, Ordering::SeqCst);
                return Err(e);
            }
            if pipe_closed && !was_closed {
                end = Some(End::Stopped);
            }
            if end.is_none() {
                status.update(flow.agg.hits, watcher.lost(), cleared);
                if last_refresh.elapsed() > Duration::from_secs(1) {
                    last_refresh = Instant::now();
                    flow.refresh_maps();
                }
                if stop.load(Ordering::SeqCst) {
                    end = Some(End::Stopped);
                } else if let Some(r) = at_write(s).inspect_err(|_| {
                    finishing.store(true, Ordering::SeqCst);
                })? {
                    end = Some(End::AtWrite(r));
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
    flow.drain(&s.watcher);
    let (exit, stop) = match &end {
        End::Exited(e) => (Some(e.clone()), None),
        End::Stopped => (s.finish_child(), None),
        // Left stopped for the debugger: not ended, not killed.
        End::AtWrite(r) => (None, Some(*r)),
    };
    flow.drain(&s.watcher);
    flow.emit(u64::MAX, &mut || {});
    flow.take_error(&mut pipe_closed)?;
    flow.agg.lost = s.watcher.lost();
    status.clear();
    if let Some(f) = &s.filter {
        crate::conds::count_into(f, &s.piece_watch, &mut flow.agg).map_err(CliError::Linux)?;
    }
    let stopped = match (stop, s.pid) {
        (Some(r), Some(pid)) => {
            hwbreak_linux::stop::wait_group_stop(pid).map_err(CliError::Linux)?;
            let at = flow.sym.stack(&[r.ip], false)[0].text();
            let line = crate::conds::stop_line(pid, &r, &s.plan, &s.piece_watch, &at);
            eprintln!("hwbreak: {line}");
            Some(line)
        }
        _ => None,
    };
    let view = SummaryView {
        agg: &flow.agg,
        duration_s: s.started.elapsed().as_secs_f64(),
        top,
        target_exit: exit,
        stopped,
    };
    if !pipe_closed {
        flow.sink.finish(&view, &mut flow.sym)?;
    }
    if pipe_closed {
        return Err(CliError::BrokenPipe);
    }
    Ok(())
}
