//! # hwbreak-linux: hardware breakpoints on Linux processes
//!
//! Watch a variable in a thread, a whole process (every thread, including
//! threads created later), a CPU, every CPU, or a command we launch, with
//! real debug registers through `perf_event_open(PERF_TYPE_BREAKPOINT)`.
//!
//! ```no_run
//! use hwbreak_linux::watch::{Mode, Target, Watcher};
//! use hwbreak_core::BpAttr;
//! # let (pid, addr) = (1234, 0x5555_5555_8010u64);
//! // Count every write to 8 bytes at `addr` in process `pid`, in every thread.
//! let w = Watcher::builder()
//!     .target(Target::Process(pid))
//!     .watch("counter", BpAttr::write(addr, 8))
//!     .mode(Mode::Count)
//!     .open()?;
//! std::thread::sleep(std::time::Duration::from_secs(1));
//! println!("{} writes", w.counts()?[0]);
//! # Ok::<(), hwbreak_linux::Error>(())
//! ```
//!
//! ## What it owns, and what it must not do
//!
//! * [`event`]: the RAII perf event handle (one method per ioctl).
//! * [`ring`] and [`record`]: our own mmap ring-buffer reader and record parser.
//! * [`watch`]: targets, counting and sampling, all-or-nothing over threads
//!   with `hwbreak_core::fanout`, modify in place with rollback.
//! * [`threads`]: how every thread of a process is attached with no escape.
//! * [`launch`]: a command watched from its first instruction.
//! * [`sigtrap`]: synchronous in-process callbacks on the thread that hit.
//! * [`ptrace`]: a stop-mode backend writing x86-64 debug registers directly.
//! * [`symbols`]: names to addresses and IPs to frames (the symbols work).
//!
//! It validates every request with core's x86-64 arch rules before any
//! system call, and turns the kernel's refusals into [`Error`]s that say
//! which rule was broken and what to do. It does not book slots itself: the
//! kernel owns the real registers and their books.

#![warn(missing_docs)]

pub mod error;
pub mod event;
pub mod launch;
pub mod procfs;
pub mod ptrace;
pub mod record;
pub mod ring;
pub mod sigtrap;
pub mod symbols;
pub mod threads;
pub mod watch;

pub use error::{Error, Result};
pub use watch::{Mode, Target, Watch, WatchHit, Watcher};
