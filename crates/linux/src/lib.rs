//! # hwbreak-linux: hardware breakpoints on Linux processes
//!
//! Watch a variable in a thread, a whole process (every thread, including
//! threads created later), a CPU, every CPU, or a command we launch, with
//! real debug registers through `perf_event_open(PERF_TYPE_BREAKPOINT)`.
//!
//! ```
//! use hwbreak_linux::watch::{Callchain, Mode, Target, Watcher};
//! use hwbreak_core::BpAttr;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! static COUNTER: AtomicU64 = AtomicU64::new(0);
//!
//! // Watch every write to COUNTER in this process: all threads, including
//! // threads started later. (For another process: Target::Process(pid).)
//! let w = Watcher::builder()
//!     .target(Target::Process(std::process::id() as i32))
//!     .watch("COUNTER", BpAttr::write(COUNTER.as_ptr() as u64, 8))
//!     .mode(Mode::Sample { callchain: Callchain::Kernel, user_regs_stack: false })
//!     .open()?;
//! std::thread::spawn(|| COUNTER.store(1, Ordering::Relaxed)).join().unwrap();
//! COUNTER.store(2, Ordering::Relaxed);
//!
//! assert_eq!(w.counts()?, vec![2]); // exact
//! let mut tids = Vec::new();
//! // One record per hit, core's `events::Extended`: the sample (ip, thread,
//! // time) and what the drain adds (process, callchain, registers).
//! w.drain(|hit| tids.push(hit.tid()));
//! assert_eq!(tids.len(), 2);
//! assert_eq!(w.lost(), 0);
//! # Ok::<(), hwbreak_linux::Error>(())
//! ```
//!
//! ## What it owns
//!
//! Laid out along the hit's path (request → attr → attach → ring → drain);
//! each module imports only those before it, with no cycles
//! (`tests/module_graph.rs`).
//!
//! * [`error`]: typed errors, plain data (no I/O).
//! * [`procfs`]: every `/proc` and `/sys` read (outside [`symbols`]).
//! * [`event`]: the RAII perf event handle (one method per ioctl).
//! * [`watch`]: targets, counting and sampling, all-or-nothing over threads
//!   with `hwbreak_core::fanout`, modify in place with rollback; split into
//!   [`watch::attr`] (what), `member` (one `open_member`), [`watch::attach`]
//!   (where, and the attach strategy), [`watch::drain`] (rings to hits) and
//!   [`watch::runtime`] (the [`Watcher`]).
//! * [`threads`]: how every thread of a process is attached with no escape.
//! * [`ring`] and [`record`]: our own mmap ring-buffer reader (volatile
//!   reads of memory the kernel writes, zero copy where contiguous) and
//!   record parser.
//! * [`launch`]: a command watched from its first instruction
//!   ([`launch::Gated`], used by `Target::Launch`), or stopped at its entry
//!   point so names can be resolved in the loaded image first
//!   ([`launch::StoppedAtEntry`]).
//! * [`unwind`] and [`store`]: a hit's callchain from its copied stack, and
//!   the value a write left.
//! * After the drain, for a consumer of every hit (the `hwbreak` command):
//!   [`ringsize`] (how large a ring to ask for within
//!   `perf_event_mlock_kb`), [`order`] (hits as core's one hit record,
//!   `hwbreak_core::events::Extended`, in time order across rings) and
//!   [`values`] (`old → new` of each write, from [`store`]).
//! * [`sigtrap`]: synchronous in-process callbacks on the thread that hit.
//! * [`cond`], [`bpf`], [`filter`], [`stop`]: conditions on hits (`--if`)
//!   compiled to a BPF program that runs at each trap, and the stop of the
//!   whole process right after the first matching write (`--stop`).
//! * [`ptrace`]: a stop-mode backend writing x86-64 debug registers directly.
//! * [`symbols`]: names to addresses and IPs to frames (the symbols work).
//!
//! ## What it must not do
//!
//! * Book slots: the kernel owns the real registers and their books. It
//!   validates every request with core's x86-64 arch rules before any
//!   system call, and turns the kernel's refusals into [`Error`]s that say
//!   which rule was broken and what to do.
//! * Print, or decide output formats: it hands out hits and errors; the
//!   `hwbreak` command formats them.
//! * Leave a thread stopped, or a breakpoint behind: every attach is
//!   all-or-nothing, and Drop closes every event. The one exception is
//!   asked for: a [`filter::HitFilter`] built with `stop` stops the process
//!   at the matching write, for a debugger.
//!
//! ## Choosing a mode
//!
//! * [`watch::Mode::Count`]: exact counts, cheapest (no records).
//! * [`watch::Mode::Sample`]: one record per hit (IP, TID, time, address,
//!   callchain, optionally registers and stack) through our ring reader;
//!   drain from a dedicated thread (boost it with
//!   [`watch::Watcher::boost_current_thread`]) so a busy target cannot
//!   fill the rings.
//! * [`sigtrap::TrapWatcher`]: a closure on the hitting thread, in this
//!   process only, async-signal-safe code only.
//! * [`ptrace::PtraceBreakpoints`]: stop-mode, for a debugger that already
//!   traces the thread.

#![warn(missing_docs)]

pub mod bpf;
pub mod cond;
pub mod error;
pub mod event;
pub mod filter;
pub mod launch;
pub mod order;
pub mod procfs;
pub mod ptrace;
pub mod record;
pub mod ring;
pub mod ringsize;
pub mod sigtrap;
pub mod stop;
pub mod store;
pub mod symbols;
pub mod threads;
pub mod unwind;
pub mod values;
pub mod watch;

pub use error::{Error, Result};
pub use watch::{Mode, Target, Watch, Watcher};
