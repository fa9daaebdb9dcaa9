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
//! w.drain(|hit| println!("{} tid {} ip {:#x}", w.watch_name(hit.watch()), hit.tid(), hit.sample.ip));
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
//!
//! # Layout, along the hit's path
//!
//! * [`attr`]: the request's *what* in perf's terms ([`Watch`], [`Mode`],
//!   [`Callchain`], the `perf_event_attr` of each watch);
//! * `member`: opening every watch's events on one thread or CPU (one
//!   `open_member`, shared by the fan-out domain and the self-attach helper);
//! * [`attach`]: the *where* ([`Target`]), the fan-out domain and how a
//!   process's threads are attached without escape (`selfattach` for our
//!   own process), and the kernel's refusals turned into errors;
//! * `builder`: [`WatcherBuilder`] and the open sequence;
//! * [`drain`]: rings to hits (core's one hit record,
//!   `hwbreak_core::events::Extended`) and [`TaskRecord`]s, and the
//!   hand-off of copied stacks to the unwinder;
//! * [`runtime`]: the [`Watcher`] (counts, enable, modify, lost), with a
//!   launched command kept by [`crate::launch`].
//!
//! Each imports only the ones before it (a test checks the crate's import
//! graph for cycles).

pub mod attach;
pub mod attr;
mod builder;
pub mod drain;
mod member;
pub mod runtime;
mod selfattach;

pub use attach::{Attach, Target};
pub use attr::{
    check_stack_bytes, Callchain, Mode, Watch, HW_SLOTS, MAX_STACK_BYTES, X86_64_REGS_USER_MASK,
};
pub use builder::WatcherBuilder;
pub use drain::TaskRecord;
pub use member::{Member, MemberEvents, WatchEvent};
pub use runtime::Watcher;
