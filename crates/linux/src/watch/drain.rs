//! The hit's way out: per-CPU rings ([`crate::ring`]) drained into core's
//! one hit record, [`Extended`], and [`TaskRecord`]s, with the copied user
//! stack handed to the unwinder ([`crate::unwind`]: DWARF CFI for a known
//! process, frame pointers for CPU-wide hits) on the drain thread.
//!
//! A drained hit is an [`Extended`] whose sample's `bp` is the watch's index
//! in [`super::Watcher::watches`], `task` the thread, `time`
//! `CLOCK_MONOTONIC` nanoseconds at the trap and `ip` the instruction (for
//! x86 data watches, the one after the access); its extension carries the
//! process, the callchain (innermost first, starting with the IP itself,
//! without context markers; `stack_truncated` when a copied stack went on
//! above the copied bytes, or, for one process, when a frame lies in code
//! whose unwind information is not known (a frame-pointer guess there
//! could skip a caller); never for the kernel's walk), the user registers
//! (those in `regs_mask`, in perf's order: AX BX CX DX SI DI BP SP IP FLAGS
//! CS SS, then R8..R15 from bit 16; read one with [`Extension::reg`]) and the
//! copied stack bytes. Its slices point into the ring buffer or the drain's
//! unwind buffer (zero copy) and are valid only during the callback.

use super::attr::{
    kernel_reads_lost, max_stack, set_monotonic_clock, Callchain, Mode, SampleSpec,
    PERF_REG_X86_BP, PERF_REG_X86_IP, PERF_REG_X86_SP,
};
use crate::error::{Error, Result};
use crate::event::{Event, EventAttr};
use crate::record::{Record, SampleLayout};
use crate::ring::{DrainStats, Ring};
use crate::symbols::MapEntry;
use crate::unwind::DwarfUnwinder;
use hwbreak_core::events::{Extended, Extension, Sample};
use hwbreak_core::{BpId, CpuId, TaskId};
use perf_event_open_sys::bindings as b;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A non-hit record seen while draining (with [`super::WatcherBuilder::task_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRecord<'a> {
    /// A thread or process was created.
    Fork {
        /// New thread id.
        tid: u32,
        /// Creating thread id.
        ptid: u32,
    },
    /// A thread exited.
    Exit {
        /// The thread.
        tid: u32,
    },
    /// The kernel throttled (`true`) or unthrottled a watch's event.
    Throttle(bool),
    /// A watched thread left (`out`) or got a CPU (with
    /// [`super::WatcherBuilder::switch_events`]). Switch records share the
    /// ring with hits: a full ring loses them like hits, counted in
    /// [`super::Watcher::lost`].
    Switch(crate::record::SwitchEvent),
    /// A launched command mapped an executable file (sampling a launched
    /// command asks for these, so that code loaded after the watch started
    /// can be unwound and symbolized even after the process is gone). If
    /// the ring is full, such a record is lost and counted in
    /// [`super::Watcher::lost_side_band`], never as a lost hit.
    Mmap {
        /// Process id.
        pid: u32,
        /// First address.
        start: u64,
        /// One past the last address.
        end: u64,
        /// File offset mapped at `start`.
        offset: u64,
        /// The file.
        path: &'a str,
    },
}

/// The per-CPU rings of a sampling request, mapped before any breakpoint
/// is opened (the breakpoints' output is redirected to them).
#[derive(Debug, Default)]
pub(crate) struct Rings {
    /// One ring per CPU.
    pub rings: Vec<Ring>,
    /// Ring index by CPU.
    pub of_cpu: HashMap<i32, usize>,
}

impl Rings {
    /// Map one ring of `ring_pages` data pages on each of `cpus`, each owned
    /// by a dummy event of ours, for samples shaped by `spec`.
    pub fn open(spec: SampleSpec, cpus: &[i32], ring_pages: usize) -> Result<Rings> {
        let ring_bytes = (ring_pages * crate::ring::page_size()) as u32;
        let layout = SampleLayout::new(spec.sample_type, true, spec.regs_mask)
            .expect("supported sample bits");
        let mut out = Rings::default();
        for &cpu in cpus {
            // The owner never samples; its own attr only sets the wakeup policy.
            let mut da = EventAttr::dummy();
            da.raw_mut().set_watermark(1);
            da.raw_mut().wakeup_watermark = (ring_bytes / 8).max(1);
            set_monotonic_clock(&mut da);
            let ev = Event::open(&da, 0, cpu, None)
                .map_err(|e| sys_or_fds(format!("open the ring owner on CPU {cpu}"), e))?;
            let ring = Ring::new(ev, ring_pages, layout).map_err(|e| {
                sys_or_fds(format!("mmap a {ring_pages}-page ring on CPU {cpu}"), e)
            })?;
            out.of_cpu.insert(cpu, out.rings.len());
            out.rings.push(ring);
        }
        Ok(out)
    }

    /// The ring owners' events, by ring index.
    pub fn events(&self) -> Vec<&Event> {
        self.rings.iter().map(|r| r.event()).collect()
    }
}

/// A failed system call: [`Error::OutOfFds`] if descriptors ran out, else
/// [`Error::Sys`].
fn sys_or_fds(what: String, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno @ (libc::EMFILE | libc::ENFILE)) => crate::procfs::out_of_fds_error(what, errno),
        _ => Error::sys(what, e),
    }
}

/// The executable file mapping a `PERF_RECORD_MMAP2` record announces.
fn exec_mapping(rec: &Record<'_>) -> Option<MapEntry> {
    let Record::Mmap {
        addr,
        len,
        pgoff,
        prot,
        filename,
        ..
    } = *rec
    else {
        return None;
    };
    if prot & libc::PROT_EXEC as u32 == 0 {
        return None;
    }
    let path = std::str::from_utf8(filename).ok()?;
    Some(MapEntry::executable(addr, addr + len, pgoff, path))
}

/// The drain's reusable unwinding state: the buffer callchains are walked
/// into, and the process's unwinder (built at the first drain).
#[derive(Debug, Default)]
struct Unwinding {
    chain: Vec<u64>,
    dwarf: Option<DwarfUnwinder>,
}

/// The sampling side of a watcher: its rings and what turns their records
/// into hits.
#[derive(Debug)]
pub(crate) struct Drain {
    rings: Vec<Mutex<Ring>>,
    /// Event id to watch index, for sample decoding.
    ids: HashMap<u64, usize>,
    lost: AtomicU64,
    malformed: AtomicU64,
    wrapped: AtomicU64,
    /// What each sample carries (None when counting).
    spec: Option<SampleSpec>,
    mode: Mode,
    /// The watched process, if one: its modules' CFI unwind the copied stacks.
    pid: Option<i32>,
    /// Its code mappings come as `PERF_RECORD_MMAP2` records (a launched
    /// program), read from every ring before any hit is unwound.
    mmap_records: bool,
    unwinding: Mutex<Unwinding>,
}

impl Drain {
    /// A drain over `rings`, decoding samples of the events in `ids`. With
    /// copied stacks of one process, its modules are read now, while it
    /// surely lives (a short-lived program may be gone by the first drain);
    /// `mmap_records` says its later mappings come as records.
    pub fn new(
        rings: Vec<Ring>,
        ids: HashMap<u64, usize>,
        spec: Option<SampleSpec>,
        mode: Mode,
        pid: Option<i32>,
        mmap_records: bool,
    ) -> Drain {
        let copied = matches!(
            mode,
            Mode::Sample {
                callchain: Callchain::Copied { .. },
                ..
            }
        );
        let dwarf = pid.filter(|_| copied).map(|p| {
            let mut d = DwarfUnwinder::new(p);
            d.refresh();
            d
        });
        Drain {
            rings: rings.into_iter().map(Mutex::new).collect(),
            ids,
            lost: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            wrapped: AtomicU64::new(0),
            spec,
            mode,
            pid,
            mmap_records,
            unwinding: Mutex::new(Unwinding {
                chain: Vec::new(),
                dwarf,
            }),
        }
    }

    /// How many rings (one fd each).
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// Block until a ring has records to drain (or `timeout`); returns whether
    /// data is ready. Without rings (counting) returns `false` at once.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.rings.is_empty() {
            return Ok(false);
        }
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.lock().unwrap().event().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::sys("poll the rings", e));
        }
        Ok(n > 0 || self.rings.iter().any(|r| r.lock().unwrap().pending() > 0))
    }

    /// Hand every pending hit to `f` and every task record to `task`
    /// (oldest first per CPU); returns the number of hits.
    pub fn drain_with_tasks(
        &self,
        mut f: impl FnMut(&Extended<'_>),
        mut task: impl FnMut(TaskRecord<'_>),
    ) -> u64 {
        let mut hits = 0;
        let copied = matches!(
            self.mode,
            Mode::Sample {
                callchain: Callchain::Copied { .. },
                ..
            }
        );
        let regs_mask = self.spec.map_or(0, |s| s.regs_mask);
        let max_depth = if copied { max_stack() as usize } else { 0 };
        // One buffer for the walked chains, reused for every hit.
        let Unwinding {
            mut chain,
            mut dwarf,
        } = std::mem::take(&mut *self.unwinding.lock().unwrap());
        // One process: walk with its modules' CFI. CPU-wide hits come from
        // any process: frame pointers only.
        if copied && dwarf.is_none() {
            dwarf = self.pid.map(DwarfUnwinder::new);
        }
        // A launched program's code mappings arrive as records, each in the
        // ring of the CPU that mapped it, which may be drained after the
        // ring holding the hits in that code: learn them all first.
        if let (true, Some(d)) = (self.mmap_records, dwarf.as_mut()) {
            for r in &self.rings {
                r.lock().unwrap().peek(
                    |h| h.kind == b::PERF_RECORD_MMAP2,
                    |rec| {
                        if let Some(m) = exec_mapping(&rec) {
                            d.add_mapping(&m);
                        }
                    },
                );
            }
        }
        for r in &self.rings {
            let mut ring = r.lock().unwrap();
            let st: DrainStats = ring.drain(|rec| match rec {
                Record::Sample(s) => {
                    let Some(&watch_idx) = self.ids.get(&s.id) else {
                        return;
                    };
                    hits += 1;
                    let stack = &s.stack[..(s.stack_dyn_size as usize).min(s.stack.len())];
                    let mut stack_truncated = false;
                    let callchain = if copied {
                        let reg = |r| crate::record::user_reg(s.regs, regs_mask, r).unwrap_or(0);
                        let ip = crate::record::user_reg(s.regs, regs_mask, PERF_REG_X86_IP)
                            .unwrap_or(s.ip);
                        let (sp, bp) = (reg(PERF_REG_X86_SP), reg(PERF_REG_X86_BP));
                        stack_truncated = match dwarf.as_mut() {
                            Some(d) => d.walk(ip, sp, bp, stack, max_depth, &mut chain),
                            None => crate::unwind::walk_frame_pointers(
                                ip, sp, bp, stack, max_depth, &mut chain,
                            ),
                        }
                        .truncated;
                        &chain[..]
                    } else {
                        s.user_callchain()
                    };
                    f(&Extended {
                        sample: Sample {
                            bp: BpId(watch_idx as u32),
                            cpu: CpuId(s.cpu),
                            task: Some(TaskId(u64::from(s.tid))),
                            ip: s.ip,
                            addr: s.addr,
                            time: s.time,
                        },
                        ext: Extension {
                            pid: s.pid,
                            stack: callchain,
                            stack_truncated,
                            regs: s.regs,
                            regs_mask,
                            stack_bytes: stack,
                            value: None,
                        },
                    });
                }
                Record::Lost { lost, .. } => {
                    self.lost.fetch_add(lost, Ordering::Relaxed);
                }
                Record::Fork(t) => task(TaskRecord::Fork {
                    tid: t.tid,
                    ptid: t.ptid,
                }),
                Record::Exit(t) => task(TaskRecord::Exit { tid: t.tid }),
                Record::Throttle { unthrottle, .. } => task(TaskRecord::Throttle(!unthrottle)),
                Record::Switch(e) => task(TaskRecord::Switch(e)),
                Record::Mmap { pid, filename, .. } => {
                    let (Some(m), Ok(path)) = (exec_mapping(&rec), std::str::from_utf8(filename))
                    else {
                        return;
                    };
                    if let Some(d) = dwarf.as_mut() {
                        d.add_mapping(&m);
                    }
                    task(TaskRecord::Mmap {
                        pid,
                        start: m.start,
                        end: m.end,
                        offset: m.offset,
                        path,
                    });
                }
                _ => {}
            });
            self.malformed.fetch_add(st.malformed, Ordering::Relaxed);
            self.wrapped.fetch_add(st.copied, Ordering::Relaxed);
        }
        *self.unwinding.lock().unwrap() = Unwinding { chain, dwarf };
        hits
    }

    /// Lost hits reported by `PERF_RECORD_LOST` records drained so far.
    pub fn lost_from_records(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether the events report their own losses (`PERF_FORMAT_LOST`).
    pub fn events_read_lost(&self) -> bool {
        self.mode != Mode::Count && kernel_reads_lost()
    }

    /// Records that crossed the end of a ring and were copied.
    pub fn wrapped(&self) -> u64 {
        self.wrapped.load(Ordering::Relaxed)
    }

    /// Records that did not parse.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Give the calling thread (a drain loop) priority over the watched
/// program's threads: `SCHED_FIFO` priority 1 if allowed, else nice -10.
/// A drainer at normal priority competing with many busy threads on few
/// CPUs may not run for 100 ms, and a ring then fills and loses records.
/// Returns which policy was applied.
pub(crate) fn boost_current_thread() -> Result<&'static str> {
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets the calling thread's policy; `p` is a live local.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        return Ok("SCHED_FIFO 1");
    }
    // SAFETY: setpriority on the calling thread (tid 0 = self) takes integers only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0 {
        return Ok("nice -10");
    }
    Err(crate::procfs::permission_error(
        "raise the drain thread's priority",
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        crate::error::Denied::Priority,
    ))
}
