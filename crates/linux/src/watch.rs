//! The high-level API: watch named breakpoints on a thread, a process, a CPU,
//! every CPU, or a command we launch; count hits or sample them.
//!
//! ```no_run
//! use hwbreak_linux::watch::{Callchain, Mode, Target, Watcher};
//! use hwbreak_core::BpAttr;
//! # let (pid, addr) = (1234, 0x5555_5555_8010u64);
//! let w = Watcher::builder()
//!     .target(Target::Process(pid))
//!     .watch("counter", BpAttr::write(addr, 8))
//!     .mode(Mode::Sample { callchain: Callchain::Kernel, user_regs_stack: false })
//!     .open()?;
//! w.poll(Some(std::time::Duration::from_millis(100)))?;
//! w.drain(|hit| println!("{} tid {} ip {:#x}", w.watch_name(hit.watch_idx), hit.tid, hit.ip));
//! println!("lost {}", w.lost());
//! # Ok::<(), hwbreak_linux::Error>(())
//! ```
//!
//! # How each target is opened
//!
//! | target | counting | sampling |
//! |---|---|---|
//! | `Thread(tid)` | one event per watch, `cpu = -1` | one per watch per online CPU |
//! | `Process(pid)` | one per watch per thread, `inherit` | per watch, thread and CPU, `inherit` |
//! | `Cpu(n)` / `AllCpus` | `pid = -1` on that/each CPU | same, with a ring per CPU |
//! | `Launch(cmd)` | on the child, `inherit` + `enable_on_exec` | same, per CPU |
//!
//! Sampling needs per-CPU events because the kernel refuses to mmap an
//! inherited per-task event (`perf_mmap`: "Don't allow mmap() of inherited
//! per-task counters", `cpu == -1 && inherit` gives `EINVAL`). One ring per
//! CPU is mapped on a dummy software event of ours; every breakpoint event
//! on that CPU is redirected to it with `PERF_EVENT_IOC_SET_OUTPUT`, and
//! inherited copies write to their parent's ring (`perf_output_begin`).
//!
//! All events of a request are opened **disabled**, through
//! `hwbreak_core::fanout` with the threads (or CPUs) as the domain: if any
//! thread fails, every event opened so far is closed and the error names
//! the thread. Only when all succeeded are they enabled. For a process, the
//! threads are frozen with ptrace while this runs (see [`crate::threads`]).

use crate::error::{Error, Result};
use crate::event::{Count, Event, EventAttr};
use crate::launch::Gated;
use crate::procfs;
use crate::record::{Record, SampleLayout};
use crate::ring::{DrainStats, Ring};
use crate::threads::{FreezeError, Frozen};
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::Arch;
use hwbreak_core::attr::BpAttr;
use hwbreak_core::fanout::{Domain, Fanout};
use perf_event_open_sys::bindings as b;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Slots the x86-64 hardware has per thread and CPU.
pub const HW_SLOTS: usize = 4;

/// Where watches apply.
#[derive(Debug)]
pub enum Target {
    /// One thread (no inheritance).
    Thread(i32),
    /// Every thread of a process, including threads it creates later.
    Process(i32),
    /// Everything that runs on one CPU (root or CAP_PERFMON).
    Cpu(u32),
    /// Everything on every online CPU (root or CAP_PERFMON).
    AllCpus,
    /// A command we launch, watched from its first instruction.
    Launch(Command),
}

/// What to do with hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exact counts only (no ring buffer), read with [`Watcher::counts`].
    Count,
    /// A record per hit, read with [`Watcher::drain`].
    Sample {
        /// Whether and how to record the callchain.
        callchain: Callchain,
        /// Record every user register and at least 8 KiB of user stack, for
        /// DWARF unwinding.
        user_regs_stack: bool,
    },
}

/// How a sampled hit gets its callchain ([`WatchHit::callchain`]). Both give
/// the same frames (the IP, then return addresses from the frame pointers);
/// they differ in cost and in depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callchain {
    /// No callchain.
    Off,
    /// The kernel walks the frame pointers at the hit
    /// (`PERF_SAMPLE_CALLCHAIN`, up to `perf_event_max_stack` frames). The
    /// walk ends by reading the outermost frame, which is 0 in glibc
    /// programs, so it takes a (caught) page fault at every hit: about
    /// 0.5 µs on this VM.
    Kernel,
    /// The kernel copies BP, SP, IP and `stack_bytes` of the user stack
    /// (`PERF_SAMPLE_REGS_USER` + `PERF_SAMPLE_STACK_USER`) and the drain
    /// walks the frame pointers in the copy ([`crate::unwind`]): no fault,
    /// but frames above the copy are cut, and the hit says so
    /// ([`WatchHit::stack_truncated`]). `stack_bytes` is a multiple of 8,
    /// at most [`MAX_STACK_BYTES`].
    Copied {
        /// User stack bytes copied from SP upwards per hit.
        stack_bytes: u32,
    },
}

impl Callchain {
    /// Copy this many stack bytes by default: enough for the innermost
    /// frames of most code (about 6-10 frames of 48-80 bytes), and cheap
    /// (docs/PERFORMANCE.md, "Where a sampled hit's time goes").
    pub const DEFAULT_STACK_BYTES: u32 = 512;

    /// [`Callchain::Copied`] with [`Callchain::DEFAULT_STACK_BYTES`].
    pub const COPIED: Callchain = Callchain::Copied {
        stack_bytes: Self::DEFAULT_STACK_BYTES,
    };
}

/// The most user stack a sample may copy: the kernel refuses
/// `sample_stack_user >= USHRT_MAX` (`perf_copy_attr`), and it must be a
/// multiple of 8.
pub const MAX_STACK_BYTES: u32 = 65528;

/// Whether the kernel can copy `n` bytes of user stack per sample; the
/// error names the rule and a size that works.
pub fn check_stack_bytes(n: u32) -> std::result::Result<(), String> {
    if n == 0 || !n.is_multiple_of(8) || n > MAX_STACK_BYTES {
        return Err(format!(
            "stack copy of {n} bytes: the kernel copies a multiple of 8 bytes, from 8 to {MAX_STACK_BYTES} (e.g. {})",
            (n.div_ceil(8) * 8).clamp(8, MAX_STACK_BYTES)
        ));
    }
    Ok(())
}

/// Perf's x86-64 register numbers (`PERF_REG_X86_*`) for the registers the
/// frame-pointer walk needs.
const PERF_REG_X86_BP: u32 = 6;
const PERF_REG_X86_SP: u32 = 7;
const PERF_REG_X86_IP: u32 = 8;
const FP_WALK_REGS_MASK: u64 = 1 << PERF_REG_X86_BP | 1 << PERF_REG_X86_SP | 1 << PERF_REG_X86_IP;

/// A named watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Name shown in errors and output (e.g. the symbol).
    pub name: String,
    /// What to watch.
    pub attr: BpAttr,
}

/// One hit, handed to [`Watcher::drain`]'s callback. Borrowed slices point
/// into the ring buffer (zero copy) and are valid only during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchHit<'a> {
    /// Index of the watch in [`Watcher::watches`].
    pub watch_idx: usize,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU.
    pub cpu: u32,
    /// `CLOCK_MONOTONIC` nanoseconds at the trap (as `clock_gettime` gives).
    pub time: u64,
    /// Instruction pointer. For x86 data watches, the instruction after the access.
    pub ip: u64,
    /// The watched address.
    pub addr: u64,
    /// Return addresses, innermost first (frame pointers), without context markers.
    pub callchain: &'a [u64],
    /// Whether the callchain was cut: with [`Callchain::Copied`], the stack
    /// went on above the copied bytes. Always false for the kernel's walk.
    pub stack_truncated: bool,
    /// User registers: those in `regs_mask`, in perf's order (AX BX CX DX
    /// SI DI BP SP IP FLAGS CS SS, then R8..R15 from bit 16). Read one with
    /// [`WatchHit::user_reg`].
    pub regs: &'a [u64],
    /// Which `PERF_REG_X86_*` registers `regs` holds.
    pub regs_mask: u64,
    /// User stack bytes copied from SP upwards (only the valid part).
    pub stack: &'a [u8],
}

impl WatchHit<'_> {
    /// User register `PERF_REG_X86_*` number `reg`, if it was recorded.
    pub fn user_reg(&self, reg: u32) -> Option<u64> {
        user_reg(self.regs, self.regs_mask, reg)
    }
}

/// Register `reg` of `regs`, which holds the registers of `mask` in bit order.
pub(crate) fn user_reg(regs: &[u64], mask: u64, reg: u32) -> Option<u64> {
    if reg >= 64 || mask & (1 << reg) == 0 {
        return None;
    }
    regs.get((mask & ((1u64 << reg) - 1)).count_ones() as usize)
        .copied()
}

/// A non-hit record seen while draining (with [`WatcherBuilder::task_events`]).
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
    /// A launched command mapped an executable file (sampling a launched
    /// command asks for these, so that code loaded after the watch started
    /// can be unwound and symbolized even after the process is gone). If
    /// the ring is full, such a record is lost like a hit and counted in
    /// [`Watcher::lost`].
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

/// How the threads of a process were attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Not a process target.
    NotAProcess,
    /// The process was frozen with ptrace (our own process: by a forked
    /// helper): exact, no thread escaped or was attached twice.
    Frozen,
    /// Re-scanned `/proc/PID/task` until no new thread appeared (ptrace was
    /// not possible: another tracer, not dumpable, or turned off with
    /// [`WatcherBuilder::freeze`]). A thread created by an attached
    /// thread *during* the attach may have been attached twice.
    Rescan {
        /// Why freezing was not possible.
        reason: String,
    },
}

/// Configures and opens a [`Watcher`].
#[derive(Debug)]
pub struct WatcherBuilder {
    target: Option<Target>,
    watches: Vec<Watch>,
    mode: Mode,
    ring_pages: usize,
    task_events: bool,
    freeze: bool,
    no_aslr: bool,
    check_mapped: bool,
    arch: X86_64,
    /// `sig_data` base for sigtrap watchers (crate-private; see [`crate::sigtrap`]).
    pub(crate) sig_base: Option<u64>,
    user_regs: u64,
}

/// An open set of watches. Drop closes every event (unregisters every
/// breakpoint, including inherited copies) and unmaps the rings.
#[derive(Debug)]
pub struct Watcher {
    watches: RwLock<Vec<Watch>>,
    base_attrs: RwLock<Vec<EventAttr>>,
    mode: Mode,
    members: Mutex<Fanout<Member, MemberEvents>>,
    rings: Vec<Mutex<Ring>>,
    ids: HashMap<u64, usize>,
    lost: AtomicU64,
    malformed: AtomicU64,
    wrapped: AtomicU64,
    /// What each sample carries (None when counting).
    spec: Option<SampleSpec>,
    /// The drain's buffer for callchains walked from copied stacks.
    chain_buf: Mutex<(Vec<u64>, Option<crate::unwind::DwarfUnwinder>)>,
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
    pid: Option<i32>,
    attach: Attach,
}

/// A member of the fan-out domain: a thread, or a CPU (for CPU targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// A thread id.
    Thread(i32),
    /// A CPU number.
    Cpu(i32),
}

/// The events one member holds: `(watch index, event)`.
#[derive(Debug, Default)]
pub struct MemberEvents {
    events: Vec<(usize, Event)>,
}

impl Watcher {
    /// Start configuring a watcher.
    pub fn builder() -> WatcherBuilder {
        WatcherBuilder {
            target: None,
            watches: Vec::new(),
            mode: Mode::Count,
            ring_pages: 128,
            task_events: false,
            freeze: true,
            no_aslr: true,
            check_mapped: true,
            arch: X86_64::default(),
            sig_base: None,
            user_regs: 0,
        }
    }
}

impl WatcherBuilder {
    /// Where to watch (required).
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    /// Add a watch. At most 4 fit on x86-64.
    pub fn watch(mut self, name: impl Into<String>, attr: BpAttr) -> Self {
        self.watches.push(Watch {
            name: name.into(),
            attr,
        });
        self
    }

    /// Count (default) or sample.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }

    /// Data pages per CPU ring (a power of two; default 128 = 512 KiB, about
    /// 4,500 hits with short callchains).
    pub fn ring_pages(mut self, pages: usize) -> Self {
        self.ring_pages = pages;
        self
    }

    /// Also report thread creation/exit and throttling ([`Watcher::drain_with_tasks`]).
    pub fn task_events(mut self, yes: bool) -> Self {
        self.task_events = yes;
        self
    }

    /// Freeze a process with ptrace while attaching (default on; see [`crate::threads`]).
    pub fn freeze(mut self, yes: bool) -> Self {
        self.freeze = yes;
        self
    }

    /// Launch with address-space randomisation off (default on, as gdb does).
    pub fn no_aslr(mut self, yes: bool) -> Self {
        self.no_aslr = yes;
        self
    }

    /// Also record these user registers with each sample (a mask of
    /// `PERF_REG_X86_*` bits, e.g. [`X86_64_REGS_USER_MASK`]), read with
    /// [`WatchHit::user_reg`]; [`crate::store`] needs them to tell the value
    /// each write left. Sampling modes only; each register costs 8 bytes
    /// per sample.
    pub fn user_regs(mut self, mask: u64) -> Self {
        self.user_regs = mask;
        self
    }

    /// Check each watch against `/proc/PID/maps` first (default on).
    pub fn check_mapped(mut self, yes: bool) -> Self {
        self.check_mapped = yes;
        self
    }

    /// Open every event (all-or-nothing) and enable them.
    pub fn open(self) -> Result<Watcher> {
        open(self)
    }
}

fn max_stack() -> u16 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(127)
        .min(127)
}

/// x86-64 user registers for DWARF unwinding: every `PERF_REG_X86_*` up to R15
/// except DS, ES, FS, GS, which x86-64 refuses.
pub const X86_64_REGS_USER_MASK: u64 = 0x00ff_0fff;

fn sample_layout(mode: Mode, extra_regs: u64) -> Option<SampleSpec> {
    match mode {
        Mode::Count => None,
        Mode::Sample {
            callchain,
            user_regs_stack,
        } => {
            let mut st = (b::PERF_SAMPLE_IP
                | b::PERF_SAMPLE_TID
                | b::PERF_SAMPLE_TIME
                | b::PERF_SAMPLE_ADDR
                | b::PERF_SAMPLE_ID
                | b::PERF_SAMPLE_CPU) as u64;
            let mut regs = 0;
            let mut stack = 0;
            match callchain {
                Callchain::Off => {}
                Callchain::Kernel => st |= b::PERF_SAMPLE_CALLCHAIN as u64,
                Callchain::Copied { stack_bytes } => {
                    regs = FP_WALK_REGS_MASK;
                    stack = stack_bytes;
                }
            }
            if user_regs_stack {
                regs = X86_64_REGS_USER_MASK;
                stack = stack.max(8192);
            }
            regs |= extra_regs & X86_64_REGS_USER_MASK;
            if regs != 0 {
                st |= b::PERF_SAMPLE_REGS_USER as u64;
            }
            if stack != 0 {
                st |= b::PERF_SAMPLE_STACK_USER as u64;
            }
            Some(SampleSpec {
                sample_type: st,
                regs_mask: regs,
                stack_bytes: stack,
            })
        }
    }
}

/// What each sample carries, from a [`Mode`].
#[derive(Debug, Clone, Copy)]
struct SampleSpec {
    sample_type: u64,
    regs_mask: u64,
    stack_bytes: u32,
}

/// Whether the kernel takes `PERF_FORMAT_LOST` (Linux 6.0), probed once
/// with a dummy event on this thread.
fn kernel_reads_lost() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| Event::open(&EventAttr::dummy().read_lost(true), 0, -1, None).is_ok())
}

/// Stamp samples with `CLOCK_MONOTONIC` (`use_clockid`), so that hit times
/// compare with `clock_gettime` (the default perf clock is the scheduler's).
fn set_monotonic_clock(a: &mut EventAttr) {
    a.raw_mut().set_use_clockid(1);
    a.raw_mut().clockid = libc::CLOCK_MONOTONIC;
}

/// Build the event attr for one watch in one mode.
fn event_attr(
    w: &Watch,
    spec: Option<SampleSpec>,
    task_events: bool,
    first: bool,
    launch: bool,
    ring_bytes: u32,
) -> EventAttr {
    let mut a = EventAttr::breakpoint(&w.attr).disabled(true);
    if let Some(spec) = spec {
        a = a
            .sample_type(spec.sample_type)
            .sample_id_all(true)
            .wakeup_watermark((ring_bytes / 8).max(1));
        set_monotonic_clock(&mut a);
        if spec.sample_type & b::PERF_SAMPLE_CALLCHAIN as u64 != 0 {
            a = a.sample_max_stack(max_stack());
            a.raw_mut().set_exclude_callchain_kernel(1);
        }
        if spec.regs_mask != 0 {
            a = a.sample_regs_user(spec.regs_mask);
        }
        if spec.stack_bytes != 0 {
            a = a.sample_stack_user(spec.stack_bytes);
        }
        if task_events && first {
            a = a.task_events(true);
        }
        // Where a launched program maps code (its libraries, loaded after
        // the watch began): the drain unwinds copied stacks with it, and a
        // reader can symbolize the hits of a program already gone from
        // /proc. A running process (-p) is read from /proc instead, so
        // that its side-band records never share the ring, or the lost
        // count, with hits.
        if first && launch {
            a.raw_mut().set_mmap(1);
            a.raw_mut().set_mmap2(1);
        }
        if kernel_reads_lost() {
            a = a.read_lost(true);
        }
    }
    a
}

/// Raise the soft fd limit to the hard one: a process target opens
/// threads x CPUs x watches events.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write one rlimit struct, a live local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Turn a `perf_event_open` failure into an [`Error`] naming the rule.
pub(crate) fn map_open_error(
    e: std::io::Error,
    watches: &[Watch],
    wi: usize,
    member: Member,
    sigtrap: bool,
) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let what = match member {
        Member::Thread(t) => format!("open a breakpoint on thread {t}"),
        Member::Cpu(c) => format!("open a CPU-wide breakpoint on CPU {c}"),
    };
    match errno {
        libc::ENOSPC => {
            let held: Vec<String> = watches[..wi].iter().map(|w| w.name.clone()).collect();
            let n = held.len();
            Error::NoSlot {
                watch: watches[wi].name.clone(),
                held_by_us: held,
                total: HW_SLOTS,
                other_users: HW_SLOTS.saturating_sub(n),
            }
        }
        libc::EACCES | libc::EPERM => {
            let rule = match member {
                Member::Thread(t) => crate::error::Denied::for_task(t),
                Member::Cpu(_) => crate::error::Denied::CpuWide,
            };
            Error::permission(what, errno, rule)
        }
        libc::ESRCH => Error::ProcessGone {
            pid: match member {
                Member::Thread(t) => t,
                Member::Cpu(_) => -1,
            },
        },
        libc::EINVAL | libc::E2BIG if sigtrap => Error::Unsupported {
            feature: "perf sigtrap (synchronous SIGTRAP on a hit)",
            since: "5.13",
            errno_name: crate::error::errno_name(errno),
        },
        _ => Error::sys(format!("{what} for watch `{}`", watches[wi].name), e),
    }
}

/// The fan-out domain: opening every watch's events on one member.
pub(crate) struct PerfDomain<'a> {
    pub watches: &'a [Watch],
    pub attrs: &'a [EventAttr],
    /// CPUs a thread member is opened on: `[-1]` (counting) or the online CPUs.
    pub cpus: &'a [i32],
    /// Per-CPU rings to redirect output to (sampling), by CPU.
    pub rings: &'a HashMap<i32, usize>,
    pub ring_events: &'a [&'a Event],
    /// Enable at commit (false when `enable_on_exec` does it).
    pub enable: bool,
    /// A thread that vanished (ESRCH) is skipped, not an error.
    pub skip_gone: bool,
    pub sigtrap: bool,
}

impl Domain for PerfDomain<'_> {
    type Member = Member;
    type Handle = MemberEvents;
    type Error = Error;

    fn prepare(&mut self, m: Member) -> Result<MemberEvents> {
        let one_cpu;
        let (pid, cpus): (i32, &[i32]) = match m {
            Member::Thread(t) => (t, self.cpus),
            Member::Cpu(c) => {
                one_cpu = [c];
                (-1, &one_cpu)
            }
        };
        let mut h = MemberEvents::default();
        for (wi, attr) in self.attrs.iter().enumerate() {
            for &cpu in cpus {
                let ev = match Event::open(attr, pid, cpu, None) {
                    Ok(ev) => ev,
                    Err(e) if self.skip_gone && e.raw_os_error() == Some(libc::ESRCH) => {
                        return Ok(MemberEvents::default());
                    }
                    Err(e) => return Err(map_open_error(e, self.watches, wi, m, self.sigtrap)),
                };
                if let Some(&ri) = self.rings.get(&cpu) {
                    ev.set_output(self.ring_events[ri]).map_err(|e| {
                        Error::sys(format!("redirect output of {m:?} to the CPU {cpu} ring"), e)
                    })?;
                }
                h.events.push((wi, ev));
            }
        }
        Ok(h)
    }

    fn commit(&mut self, _m: Member, h: &mut MemberEvents) {
        if !self.enable {
            return;
        }
        for (wi, ev) in &h.events {
            if !self.watches[*wi].attr.disabled {
                // Cannot fail on a live event; a thread that exited meanwhile keeps its count.
                let _ = ev.enable();
            }
        }
    }

    fn abort(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }

    fn remove(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
}

fn online_cpus_i32() -> Result<Vec<i32>> {
    Ok(procfs::online_cpus()?
        .into_iter()
        .map(|c| c as i32)
        .collect())
}

fn open(bld: WatcherBuilder) -> Result<Watcher> {
    let WatcherBuilder {
        target,
        watches,
        mode,
        ring_pages,
        task_events,
        freeze,
        no_aslr,
        check_mapped,
        arch,
        sig_base,
        user_regs,
    } = bld;
    let spec = sample_layout(mode, user_regs);
    let target = target.ok_or_else(|| Error::Invalid("no target: call .target(...)".into()))?;
    if watches.is_empty() {
        return Err(Error::Invalid("no watch: call .watch(name, attr)".into()));
    }
    if watches.len() > HW_SLOTS {
        return Err(Error::NoSlot {
            watch: watches[HW_SLOTS].name.clone(),
            held_by_us: watches[..HW_SLOTS].iter().map(|w| w.name.clone()).collect(),
            total: HW_SLOTS,
            other_users: 0,
        });
    }
    // Arch rules first: no syscall for a request the CPU cannot do.
    for w in &watches {
        arch.parse(&w.attr).map_err(|source| Error::Arch {
            watch: w.name.clone(),
            source,
        })?;
    }
    if let Mode::Sample {
        callchain: Callchain::Copied { stack_bytes },
        ..
    } = mode
    {
        check_stack_bytes(stack_bytes).map_err(Error::Invalid)?;
    }
    if !ring_pages.is_power_of_two() {
        return Err(Error::Invalid(format!(
            "ring size {ring_pages} pages: must be a power of two"
        )));
    }
    raise_nofile();
    let ring_bytes = (ring_pages * crate::ring::page_size()) as u32;

    // Who and where.
    let online = online_cpus_i32()?;
    let sampling = mode != Mode::Count;
    let mut pid = None;
    let mut attach = Attach::NotAProcess;
    let (members_cpu, inherit): (Option<Vec<i32>>, bool) = match &target {
        Target::Thread(t) => {
            check_target(*t, &watches, check_mapped)?;
            pid = Some(*t);
            (None, false)
        }
        Target::Process(p) => {
            check_target(*p, &watches, check_mapped)?;
            pid = Some(*p);
            (None, true)
        }
        Target::Cpu(c) => {
            if !online.contains(&(*c as i32)) {
                return Err(Error::NoSuchCpu {
                    cpu: *c,
                    online: procfs::online_cpus_text()?,
                });
            }
            (Some(vec![*c as i32]), false)
        }
        Target::AllCpus => (Some(online.clone()), false),
        Target::Launch(_) => (None, true),
    };
    let thread_cpus: Vec<i32> = if sampling { online.clone() } else { vec![-1] };

    // Per-watch attrs.
    let launch = matches!(target, Target::Launch(_));
    let attrs: Vec<EventAttr> = watches
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut a = event_attr(w, spec, task_events, i == 0, launch, ring_bytes)
                .inherit(inherit)
                .inherit_thread(inherit);
            if launch && !w.attr.disabled {
                a = a.enable_on_exec(true);
            }
            if let Some(base) = sig_base {
                a = a
                    .sigtrap(base | i as u64)
                    .sample_type(b::PERF_SAMPLE_ADDR as u64);
            }
            a
        })
        .collect();

    // Rings: one per CPU, owned by a dummy event on this thread.
    let mut rings = Vec::new();
    let mut ring_of_cpu = HashMap::new();
    if let Some(spec) = spec {
        let layout = SampleLayout::new(spec.sample_type, true, spec.regs_mask)
            .expect("supported sample bits");
        let cpus = members_cpu.clone().unwrap_or_else(|| online.clone());
        for cpu in cpus {
            // The owner never samples; its own attr only sets the wakeup policy.
            let mut da = EventAttr::dummy();
            da.raw_mut().set_watermark(1);
            da.raw_mut().wakeup_watermark = (ring_bytes / 8).max(1);
            set_monotonic_clock(&mut da);
            let ev = Event::open(&da, 0, cpu, None)
                .map_err(|e| Error::sys(format!("open the ring owner on CPU {cpu}"), e))?;
            let ring = Ring::new(ev, ring_pages, layout).map_err(|e| {
                Error::sys(format!("mmap a {ring_pages}-page ring on CPU {cpu}"), e)
            })?;
            ring_of_cpu.insert(cpu, rings.len());
            rings.push(ring);
        }
    }
    let ring_events: Vec<&Event> = rings.iter().map(|r| r.event()).collect();

    let mut child = None;
    let fan = {
        let mut dom = PerfDomain {
            watches: &watches,
            attrs: &attrs,
            cpus: &thread_cpus,
            rings: &ring_of_cpu,
            ring_events: &ring_events,
            enable: !launch,
            skip_gone: matches!(target, Target::Process(_)),
            sigtrap: sig_base.is_some(),
        };
        let reg =
            |dom: &mut PerfDomain, ms: Vec<Member>| Fanout::register(dom, ms).map_err(|f| f.error);
        match target {
            Target::Cpu(_) | Target::AllCpus => reg(
                &mut dom,
                members_cpu.unwrap().into_iter().map(Member::Cpu).collect(),
            )?,
            Target::Thread(t) => reg(&mut dom, vec![Member::Thread(t)])?,
            Target::Launch(cmd) => {
                let gated = Gated::spawn(cmd, no_aslr)?;
                pid = Some(gated.pid());
                // On error `gated` drops: the child exits without running the program.
                let fan = reg(&mut dom, vec![Member::Thread(gated.pid())])?;
                child = Some(gated.release()?);
                fan
            }
            Target::Process(p) => {
                let (fan, how) = attach_process(&mut dom, p, freeze)?;
                attach = how;
                fan
            }
        }
    };
    drop(ring_events);

    // Map event ids to watches for sample decoding.
    let mut ids = HashMap::new();
    for (_, h) in fan.members() {
        for (wi, ev) in &h.events {
            if let Ok(id) = ev.id() {
                ids.insert(id, *wi);
            }
        }
    }
    Ok(Watcher {
        watches: RwLock::new(watches),
        base_attrs: RwLock::new(attrs),
        mode,
        members: Mutex::new(fan),
        rings: rings.into_iter().map(Mutex::new).collect(),
        ids,
        lost: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        wrapped: AtomicU64::new(0),
        chain_buf: Mutex::new((Vec::new(), None)),
        spec,
        child: Mutex::new(child),
        exit: Mutex::new(None),
        pid,
        attach,
    })
}

/// Apply `apply` to every item in order; on the first failure, `undo` the
/// items already applied, newest first, and return which failed. The
/// all-or-nothing rule of modify-in-place.
pub(crate) fn apply_all<T, E>(
    items: &[T],
    mut apply: impl FnMut(&T) -> std::result::Result<(), E>,
    mut undo: impl FnMut(&T),
) -> std::result::Result<(), (usize, E)> {
    for (k, it) in items.iter().enumerate() {
        if let Err(e) = apply(it) {
            for back in items[..k].iter().rev() {
                undo(back);
            }
            return Err((k, e));
        }
    }
    Ok(())
}

/// The process exists and every watch is mapped in it.
fn check_target(pid: i32, watches: &[Watch], check_mapped: bool) -> Result<()> {
    if !procfs::process_exists(pid) {
        return Err(Error::ProcessGone { pid });
    }
    if !check_mapped {
        return Ok(());
    }
    let maps = procfs::maps(pid)?;
    for w in watches {
        if w.attr.privileged {
            continue;
        }
        if !procfs::is_mapped(&maps, w.attr.addr, w.attr.len) {
            return Err(Error::NotMapped {
                watch: w.name.clone(),
                addr: w.attr.addr,
                len: w.attr.len,
                pid,
            });
        }
    }
    Ok(())
}

/// Attach to every thread of `pid`: frozen if we can, else re-scan until stable.
fn attach_process(
    dom: &mut PerfDomain,
    pid: i32,
    freeze: bool,
) -> Result<(Fanout<Member, MemberEvents>, Attach)> {
    let frozen = if freeze {
        Frozen::freeze(pid)
    } else {
        Err(FreezeError::Refused(0))
    };
    match frozen {
        Ok(fz) => {
            let tids = fz.threads();
            let fan =
                Fanout::register(dom, tids.into_iter().map(Member::Thread)).map_err(|f| f.error)?;
            // Events are live and inherited from here on; let the threads run.
            drop(fz);
            Ok((fan, Attach::Frozen))
        }
        Err(FreezeError::Gone) => Err(Error::ProcessGone { pid }),
        // Our own process: freeze it from a forked helper (see crate::selfattach).
        Err(FreezeError::OwnProcess) => match crate::selfattach::attach(dom, pid) {
            Ok(crate::selfattach::Outcome::Opened(evs)) => {
                let mut by_tid: HashMap<i32, Vec<(usize, Event)>> = HashMap::new();
                for (tid, wi, ev) in evs {
                    by_tid.entry(tid).or_default().push((wi, ev));
                }
                let mut tids: Vec<i32> = by_tid.keys().copied().collect();
                tids.sort_unstable();
                let mut adopt = Adopt { by_tid };
                let fan = Fanout::register(&mut adopt, tids.into_iter().map(Member::Thread))
                    .map_err(|f| f.error)?;
                Ok((fan, Attach::Frozen))
            }
            Ok(crate::selfattach::Outcome::OpenFailed { errno, wi, tid }) => Err(map_open_error(
                std::io::Error::from_raw_os_error(errno),
                dom.watches,
                wi,
                Member::Thread(tid),
                dom.sigtrap,
            )),
            Ok(crate::selfattach::Outcome::FreezeFailed(why)) => rescan(
                dom,
                pid,
                format!("the attach helper could not freeze this process: {why}"),
            ),
            Err(e) => rescan(dom, pid, format!("the attach helper failed: {e}")),
        },
        Err(why) => {
            let reason = match why {
                FreezeError::OwnProcess => "the target is this process".to_string(),
                FreezeError::Traced { tid, tracer } => {
                    format!("thread {tid} is traced by {tracer}")
                }
                FreezeError::Refused(0) => "freezing was turned off".to_string(),
                FreezeError::Refused(e) => {
                    format!("ptrace refused ({})", crate::error::errno_name(e))
                }
                FreezeError::Timeout { tid } => format!(
                    "thread {tid} did not stop within {:?}",
                    crate::threads::FREEZE_TIMEOUT
                ),
                FreezeError::Gone => "the process exited".to_string(),
            };
            rescan(dom, pid, reason)
        }
    }
}

/// Attach to every listed thread, then re-scan until no new thread appears.
/// See [`crate::threads`] for the window this leaves.
fn rescan(
    dom: &mut PerfDomain,
    pid: i32,
    reason: String,
) -> Result<(Fanout<Member, MemberEvents>, Attach)> {
    let tids = procfs::threads(pid)?;
    let mut fan =
        Fanout::register(dom, tids.into_iter().map(Member::Thread)).map_err(|f| f.error)?;
    // A thread created by a not-yet-attached thread escaped inheritance:
    // attach it directly, until a scan shows nothing new.
    loop {
        let now = match procfs::threads(pid) {
            Ok(t) => t,
            Err(Error::ProcessGone { .. }) => break,
            Err(e) => return Err(e),
        };
        let new: Vec<i32> = now
            .into_iter()
            .filter(|t| !fan.contains(Member::Thread(*t)))
            .collect();
        if new.is_empty() {
            break;
        }
        for t in new {
            if let Err(e) = fan.join(dom, Member::Thread(t)) {
                fan.remove_all(dom);
                return Err(e);
            }
        }
    }
    Ok((fan, Attach::Rescan { reason }))
}

/// A domain that hands out events a helper already opened and enabled.
struct Adopt {
    by_tid: HashMap<i32, Vec<(usize, Event)>>,
}

impl Domain for Adopt {
    type Member = Member;
    type Handle = MemberEvents;
    type Error = Error;

    fn prepare(&mut self, m: Member) -> Result<MemberEvents> {
        let events = match m {
            Member::Thread(t) => self.by_tid.remove(&t).unwrap_or_default(),
            Member::Cpu(_) => Vec::new(),
        };
        Ok(MemberEvents { events })
    }
    fn commit(&mut self, _m: Member, _h: &mut MemberEvents) {}
    fn abort(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
    fn remove(&mut self, _m: Member, h: MemberEvents) {
        drop(h);
    }
}

impl Watcher {
    /// The watches, in index order.
    pub fn watches(&self) -> Vec<Watch> {
        self.watches.read().unwrap().clone()
    }

    /// A watch's name (empty if out of range).
    pub fn watch_name(&self, idx: usize) -> String {
        self.watches
            .read()
            .unwrap()
            .get(idx)
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    /// The mode it was opened in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The watched (or launched) process, if the target is one.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// How the threads of a process target were attached.
    pub fn attach(&self) -> &Attach {
        &self.attach
    }

    /// How many threads (or CPUs) events were opened on directly (threads
    /// created later carry inherited copies and are not counted here).
    pub fn members(&self) -> usize {
        self.members.lock().unwrap().len()
    }

    /// How many perf fds this watcher holds (rings included).
    pub fn fds(&self) -> usize {
        let m = self.members.lock().unwrap();
        m.members().map(|(_, h)| h.events.len()).sum::<usize>() + self.rings.len()
    }

    /// Exact hits per watch, summed over every thread/CPU and every inherited
    /// copy (live or exited).
    pub fn counts(&self) -> Result<Vec<u64>> {
        Ok(self.count_details()?.iter().map(|c| c.value).collect())
    }

    /// Per-watch [`Count`] sums (value, time enabled, time running).
    pub fn count_details(&self) -> Result<Vec<Count>> {
        let n = self.watches.read().unwrap().len();
        let mut out = vec![Count::default(); n];
        let m = self.members.lock().unwrap();
        for (_, h) in m.members() {
            for (wi, ev) in &h.events {
                let c = ev
                    .read_count()
                    .map_err(|e| Error::sys("read a counter", e))?;
                out[*wi].value += c.value;
                out[*wi].time_enabled += c.time_enabled;
                out[*wi].time_running += c.time_running;
                out[*wi].id = c.id;
                out[*wi].lost += c.lost;
            }
        }
        Ok(out)
    }

    /// Enable every watch's events.
    pub fn enable(&self) -> Result<()> {
        self.set_disabled(false)?;
        self.each_event(|_, ev| ev.enable().map_err(|e| Error::sys("enable", e)))
    }

    /// Disable every watch's events (they keep their slots).
    pub fn disable(&self) -> Result<()> {
        self.set_disabled(true)?;
        self.each_event(|_, ev| ev.disable().map_err(|e| Error::sys("disable", e)))
    }

    fn set_disabled(&self, yes: bool) -> Result<()> {
        for w in self.watches.write().unwrap().iter_mut() {
            w.attr.disabled = yes;
        }
        Ok(())
    }

    fn each_event(&self, mut f: impl FnMut(usize, &Event) -> Result<()>) -> Result<()> {
        let m = self.members.lock().unwrap();
        for (_, h) in m.members() {
            for (wi, ev) in &h.events {
                f(*wi, ev)?;
            }
        }
        Ok(())
    }

    /// Change watch `idx` in place (`PERF_EVENT_IOC_MODIFY_ATTRIBUTES`) on
    /// every thread/CPU and its inherited copies. Checked against the arch
    /// rules first; if any event refuses, the ones already changed are put
    /// back and the old shape stays.
    /// The new attr's `disabled` decides whether the watch is armed after the change.
    pub fn modify(&self, idx: usize, attr: BpAttr) -> Result<()> {
        let mut watches = self.watches.write().unwrap();
        let name = match watches.get(idx) {
            Some(w) => w.name.clone(),
            None => return Err(Error::Invalid(format!("no watch number {idx}"))),
        };
        X86_64::default()
            .parse(&attr)
            .map_err(|source| Error::Arch {
                watch: name.clone(),
                source,
            })?;
        let old = watches[idx].attr;
        let mut base = self.base_attrs.write().unwrap();
        // The kernel compares the whole attr except the breakpoint fields, so
        // start from what we opened with, and keep `disabled` set as opened.
        let new_a = base[idx].with_bp(&BpAttr {
            disabled: true,
            ..attr
        });
        let old_a = base[idx].with_bp(&BpAttr {
            disabled: true,
            ..old
        });
        let m = self.members.lock().unwrap();
        let evs: Vec<&Event> = m
            .members()
            .flat_map(|(_, h)| h.events.iter().filter(|(wi, _)| *wi == idx).map(|(_, e)| e))
            .collect();
        let applied = apply_all(
            &evs,
            |ev| ev.modify(&new_a.disabled(attr.disabled)),
            |ev| {
                let _ = ev.modify(&old_a.disabled(old.disabled));
            },
        );
        if let Err((k, e)) = applied {
            // The kernel disables an event before modifying it and re-enables it
            // only if the attr it was *opened* with said enabled; ours were opened
            // disabled (enabled later by ioctl), so put the failed one back on.
            if !old.disabled {
                let _ = evs[k].enable();
            }
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => Error::NoSlot {
                    watch: name.clone(),
                    held_by_us: watches
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != idx)
                        .map(|(_, w)| w.name.clone())
                        .collect(),
                    total: HW_SLOTS,
                    other_users: 0,
                },
                Some(libc::EINVAL) if attr.privileged => Error::permission(
                    format!("move watch `{name}` to kernel address {:#x}", attr.addr),
                    libc::EINVAL,
                    crate::error::Denied::KernelAddress,
                ),
                _ => Error::sys(format!("modify watch `{name}`"), e),
            });
        }
        watches[idx].attr = attr;
        base[idx] = new_a;
        Ok(())
    }

    /// Block until a ring has records to drain (or `timeout`); returns whether
    /// data is ready. Counting watchers return `false` at once.
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

    /// Give the calling thread (a drain loop) priority over the watched
    /// program's threads: `SCHED_FIFO` priority 1 if allowed, else nice -10.
    /// A drainer at normal priority competing with many busy threads on few
    /// CPUs may not run for 100 ms, and a ring then fills and loses records.
    /// Returns which policy was applied.
    pub fn boost_current_thread() -> Result<&'static str> {
        let p = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets the calling thread's policy; `p` is a live local.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
            return Ok("SCHED_FIFO 1");
        }
        // SAFETY: setpriority on the calling thread (tid 0 = self) takes integers only.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0 {
            return Ok("nice -10");
        }
        Err(Error::permission(
            "raise the drain thread's priority",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            crate::error::Denied::Priority,
        ))
    }

    /// Hand every pending hit to `f` (oldest first per CPU). Safe to call
    /// from a dedicated thread while others read counts. Returns the number of hits.
    pub fn drain(&self, mut f: impl FnMut(&WatchHit<'_>)) -> u64 {
        self.drain_with_tasks(&mut f, |_| {})
    }

    /// [`Self::drain`], also reporting fork/exit/throttle records.
    pub fn drain_with_tasks(
        &self,
        mut f: impl FnMut(&WatchHit<'_>),
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
        let (mut chain, mut dwarf) = std::mem::take(&mut *self.chain_buf.lock().unwrap());
        // One process: walk with its modules' CFI. CPU-wide hits come from
        // any process: frame pointers only.
        if copied && dwarf.is_none() {
            dwarf = self.pid.map(crate::unwind::DwarfUnwinder::new);
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
                        let reg = |r| user_reg(s.regs, regs_mask, r).unwrap_or(0);
                        let ip = user_reg(s.regs, regs_mask, PERF_REG_X86_IP).unwrap_or(s.ip);
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
                    f(&WatchHit {
                        watch_idx,
                        pid: s.pid,
                        tid: s.tid,
                        cpu: s.cpu,
                        time: s.time,
                        ip: s.ip,
                        addr: s.addr,
                        callchain,
                        stack_truncated,
                        regs: s.regs,
                        regs_mask,
                        stack,
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
                Record::Mmap {
                    pid,
                    addr,
                    len,
                    pgoff,
                    prot,
                    filename,
                } if prot & libc::PROT_EXEC as u32 != 0 => {
                    let Ok(path) = std::str::from_utf8(filename) else {
                        return;
                    };
                    let m = crate::symbols::MapEntry::executable(addr, addr + len, pgoff, path);
                    if let Some(d) = dwarf.as_mut() {
                        d.add_mapping(&m);
                    }
                    task(TaskRecord::Mmap {
                        pid,
                        start: addr,
                        end: addr + len,
                        offset: pgoff,
                        path,
                    });
                }
                _ => {}
            });
            self.malformed.fetch_add(st.malformed, Ordering::Relaxed);
            self.wrapped.fetch_add(st.copied, Ordering::Relaxed);
        }
        *self.chain_buf.lock().unwrap() = (chain, dwarf);
        hits
    }

    /// Hits the kernel could not record because a ring was full. Exact and
    /// immediate where the kernel reports per-event losses (`PERF_FORMAT_LOST`,
    /// Linux 6.0); otherwise the sum of `PERF_RECORD_LOST` records drained so
    /// far (the kernel writes one only once space frees up again).
    pub fn lost(&self) -> u64 {
        let from_records = self.lost.load(Ordering::Relaxed);
        if self.mode == Mode::Count || !kernel_reads_lost() {
            return from_records;
        }
        match self.count_details() {
            Ok(c) => c.iter().map(|c| c.lost).sum::<u64>().max(from_records),
            Err(_) => from_records,
        }
    }

    /// Records that crossed the end of a ring and were copied (the rest were
    /// handed out in place).
    pub fn wrapped(&self) -> u64 {
        self.wrapped.load(Ordering::Relaxed)
    }

    /// Records that did not parse (0 unless something is badly wrong).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// For a launched command: wait for it to exit. Counts stay readable after.
    pub fn wait(&self) -> Result<ExitStatus> {
        if let Some(s) = *self.exit.lock().unwrap() {
            return Ok(s);
        }
        let mut c = self.child.lock().unwrap();
        let child = c.as_mut().ok_or_else(|| {
            Error::Invalid("wait: the target was not launched by this watcher".into())
        })?;
        let s = child
            .wait()
            .map_err(|e| Error::sys("wait for the launched command", e))?;
        *self.exit.lock().unwrap() = Some(s);
        Ok(s)
    }

    /// Take charge of a command started outside the watcher, so that
    /// [`Watcher::wait`], [`Watcher::try_wait`] and the `take_child_*`
    /// methods work as for [`Target::Launch`]. For a command stopped at its
    /// entry point by [`crate::launch::StoppedAtEntry`]: open the watcher on
    /// `Target::Process(pid)`, call `resume()`, and adopt the `Child` it
    /// returns. Gives `child` back, untouched, if this watcher does not
    /// watch `child`'s process.
    pub fn adopt_child(&self, child: Child) -> std::result::Result<(), Child> {
        if self.pid != Some(child.id() as i32) {
            return Err(child);
        }
        *self.child.lock().unwrap() = Some(child);
        Ok(())
    }

    /// For a launched command: take its stdin (if it was `Stdio::piped()`).
    pub fn take_child_stdin(&self) -> Option<std::process::ChildStdin> {
        self.child.lock().unwrap().as_mut()?.stdin.take()
    }

    /// For a launched command: take its stdout (if it was `Stdio::piped()`).
    pub fn take_child_stdout(&self) -> Option<std::process::ChildStdout> {
        self.child.lock().unwrap().as_mut()?.stdout.take()
    }

    /// For a launched command: its exit status if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        if let Some(s) = *self.exit.lock().unwrap() {
            return Ok(Some(s));
        }
        let mut c = self.child.lock().unwrap();
        let Some(child) = c.as_mut() else {
            return Ok(None);
        };
        let s = child
            .try_wait()
            .map_err(|e| Error::sys("check the launched command", e))?;
        if let Some(s) = s {
            *self.exit.lock().unwrap() = Some(s);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_all_rolls_back_newest_first_when_item_k_fails() {
        for k in 0..5usize {
            let items: Vec<usize> = (0..5).collect();
            let mut log = Vec::new();
            let log_ref = std::cell::RefCell::new(&mut log);
            let r = apply_all(
                &items,
                |&i| {
                    log_ref.borrow_mut().push(("apply", i));
                    if i == k {
                        Err("refused")
                    } else {
                        Ok(())
                    }
                },
                |&i| log_ref.borrow_mut().push(("undo", i)),
            );
            assert_eq!(r, Err((k, "refused")));
            let undone: Vec<usize> = log.iter().filter(|e| e.0 == "undo").map(|e| e.1).collect();
            assert_eq!(undone, (0..k).rev().collect::<Vec<_>>(), "k={k}");
        }
    }

    #[test]
    fn x86_user_regs_mask_excludes_segment_registers() {
        // DS, ES, FS, GS are PERF_REG_X86 12..15; x86-64 refuses them.
        assert_eq!(X86_64_REGS_USER_MASK & (0xf << 12), 0);
        assert_eq!(X86_64_REGS_USER_MASK.count_ones(), 20);
    }
}
