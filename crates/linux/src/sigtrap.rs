//! Synchronous in-process callbacks: a closure runs **on the thread that
//! hit**, before that thread executes its next instruction.
//!
//! Built on the perf `sigtrap` attribute (Linux 5.13): on every hit the
//! kernel sends the hitting thread a `SIGTRAP` with `si_code = TRAP_PERF`
//! and `si_perf_data = sig_data`. The events also set `remove_on_exec`
//! (the kernel requires it with `sigtrap`), so an `exec` drops them.
//! A process-wide `SIGTRAP` handler (installed once, never removed, so a
//! late signal can never kill the process) routes `sig_data` to the
//! closure registered for it.
//!
//! # What the closure may do
//!
//! It runs inside a signal handler. It must be **async-signal-safe**: no
//! allocation, no locks (a `Mutex` the interrupted code holds deadlocks), no
//! `println!`, no panics. Atomics, writes to pre-allocated memory, and
//! async-signal-safe libc calls (`write(2)`, `getpid`) are fine. Accesses
//! to the watched variable inside the closure trigger it again (recursion):
//! don't.
//!
//! # Unregistering
//!
//! Dropping the [`TrapWatcher`] closes the events, retires its table entry
//! and then waits until no handler is still running its closure, so once
//! `drop` returns the closure never runs again (as the kernel's
//! `unregister_hw_breakpoint`). Do not drop it from inside its own closure.
//!
//! ```
//! use hwbreak_linux::sigtrap::TrapWatcher;
//! use hwbreak_linux::watch::Target;
//! use hwbreak_core::BpAttr;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! static X: AtomicU64 = AtomicU64::new(0);
//! static HITS: AtomicU64 = AtomicU64::new(0);
//! let pid = std::process::id() as i32;
//! let t = TrapWatcher::open(
//!     Target::Process(pid),
//!     vec![("x".into(), BpAttr::write(X.as_ptr() as u64, 8))],
//!     |_hit| { HITS.fetch_add(1, Ordering::Relaxed); },
//! )?;
//! X.store(1, Ordering::Relaxed);
//! assert_eq!(HITS.load(Ordering::Relaxed), 1); // already ran, on this thread
//! drop(t); // unregistered: the closure never runs again
//! X.store(2, Ordering::Relaxed);
//! assert_eq!(HITS.load(Ordering::Relaxed), 1);
//! # Ok::<(), hwbreak_linux::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::watch::{Target, Watcher};
use hwbreak_core::attr::BpAttr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `si_code` of a perf sigtrap (`TRAP_PERF`, include/uapi/asm-generic/siginfo.h).
pub const TRAP_PERF: i32 = 6;

/// What the closure learns about a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapHit {
    /// Index of the watch in the list given to [`TrapWatcher::open`].
    pub watch_idx: usize,
    /// The watched address (`si_addr`).
    pub addr: u64,
    /// The instruction pointer when the trap was delivered (after the access on x86).
    pub ip: u64,
}

type Callback = Box<dyn Fn(&TrapHit) + Send + Sync + 'static>;

/// One entry of the routing table.
struct Slot {
    /// The closure, or null when free.
    f: AtomicPtr<Callback>,
    /// Handlers currently inside this slot.
    inflight: AtomicUsize,
    /// Bumped on every reuse, so a stale signal cannot reach a new owner.
    gen: AtomicU32,
    taken: AtomicBool,
}

const SLOTS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    f: AtomicPtr::new(std::ptr::null_mut()),
    inflight: AtomicUsize::new(0),
    gen: AtomicU32::new(0),
    taken: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Mutex<bool> = Mutex::new(false);
/// The SIGTRAP disposition before ours, for signals that are not perf's.
static PREV: AtomicUsize = AtomicUsize::new(0);
static PREV_SIGINFO: AtomicBool = AtomicBool::new(false);

// sig_data = slot << 40 | gen << 8 | watch index.
fn encode(slot: usize, gen: u32) -> u64 {
    ((slot as u64) << 40) | ((gen as u64 & 0xffff_ffff) << 8)
}

fn decode(data: u64) -> (usize, u32, usize) {
    (
        (data >> 40) as usize,
        ((data >> 8) & 0xffff_ffff) as u32,
        (data & 0xff) as usize,
    )
}

/// The kernel's `siginfo_t` prefix for `_sigfault` with the `_perf` member
/// (x86-64 layout: `si_addr` at 16, `_perf._data` at 24, `_type` at 32).
#[repr(C)]
struct PerfSiginfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    addr: u64,
    perf_data: u64,
    perf_type: u32,
    perf_flags: u32,
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; the
    // prefix read here lies within siginfo_t's 128 bytes.
    let si = unsafe { &*(info as *const PerfSiginfo) };
    if si.code != TRAP_PERF {
        chain(sig, info, uc);
        return;
    }
    let (slot, gen, watch_idx) = decode(si.perf_data);
    let Some(s) = TABLE.get(slot) else { return };
    s.inflight.fetch_add(1, Ordering::SeqCst);
    let f = s.f.load(Ordering::SeqCst);
    if !f.is_null() && s.gen.load(Ordering::SeqCst) == gen {
        // SAFETY: `uc` is the ucontext the kernel passed; RIP is at a fixed index.
        let ip = unsafe {
            (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as u64
        };
        let hit = TrapHit {
            watch_idx,
            addr: si.addr,
            ip,
        };
        // SAFETY: non-null `f` points to a live Box: drop() nulls it and then waits
        // for `inflight` to reach 0 before freeing, and we incremented it first.
        unsafe { (*f)(&hit) };
    }
    s.inflight.fetch_sub(1, Ordering::SeqCst);
}

/// Hand a SIGTRAP that is not ours to the previous handler, if it was one.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let prev = PREV.load(Ordering::SeqCst);
    if prev == libc::SIG_DFL || prev == libc::SIG_IGN {
        return;
    }
    if PREV_SIGINFO.load(Ordering::SeqCst) {
        // SAFETY: `prev` was installed as an SA_SIGINFO handler with this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev) };
        f(sig, info, uc);
    } else {
        // SAFETY: `prev` was installed as a plain handler with this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
        f(sig);
    }
}

fn install_handler() -> Result<()> {
    let mut done = INSTALL.lock().unwrap();
    if *done {
        return Ok(());
    }
    // SAFETY: sigaction with a zeroed, then filled, struct; `old` receives the previous one.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGTRAP, &sa, &mut old) != 0 {
            return Err(Error::sys(
                "install the SIGTRAP handler",
                std::io::Error::last_os_error(),
            ));
        }
        PREV.store(old.sa_sigaction, Ordering::SeqCst);
        PREV_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::SeqCst);
    }
    *done = true;
    Ok(())
}

/// Watches whose hits run a closure synchronously on the hitting thread.
/// Drop unregisters (see the module docs).
pub struct TrapWatcher {
    watcher: Option<Watcher>,
    slot: usize,
}

impl std::fmt::Debug for TrapWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrapWatcher")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl TrapWatcher {
    /// Open `watches` on `target` (this process or one of its threads), and
    /// run `f` on every hit. See the module docs for what `f` may do.
    pub fn open(
        target: Target,
        watches: Vec<(String, BpAttr)>,
        f: impl Fn(&TrapHit) + Send + Sync + 'static,
    ) -> Result<TrapWatcher> {
        let me = std::process::id() as i32;
        match target {
            Target::Process(p) if p == me => {}
            Target::Thread(t) if crate::procfs::threads(me)?.contains(&t) => {}
            _ => return Err(Error::Invalid(
                "sigtrap callbacks run in this process: target this process or one of its threads"
                    .into(),
            )),
        }
        if watches.len() > 255 {
            return Err(Error::Invalid("too many watches".into()));
        }
        install_handler()?;
        let slot = (0..SLOTS)
            .find(|&i| {
                TABLE[i]
                    .taken
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| Error::Invalid(format!("more than {SLOTS} sigtrap watchers at once")))?;
        let s = &TABLE[slot];
        let gen = s.gen.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        let cb: Box<Callback> = Box::new(Box::new(f));
        s.f.store(Box::into_raw(cb), Ordering::SeqCst);
        let mut b = Watcher::builder().target(target);
        for (n, a) in watches {
            b = b.watch(n, a);
        }
        b.sig_base = Some(encode(slot, gen));
        match b.open() {
            Ok(w) => Ok(TrapWatcher {
                watcher: Some(w),
                slot,
            }),
            Err(e) => {
                release(slot);
                Err(e)
            }
        }
    }

    /// The underlying watcher (counts, enable/disable, modify).
    pub fn watcher(&self) -> &Watcher {
        self.watcher.as_ref().expect("open watcher")
    }
}

fn release(slot: usize) {
    let s = &TABLE[slot];
    s.gen.fetch_add(1, Ordering::SeqCst);
    let f = s.f.swap(std::ptr::null_mut(), Ordering::SeqCst);
    while s.inflight.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    if !f.is_null() {
        // SAFETY: `f` came from Box::into_raw in open(); no handler can reach it now
        // (nulled, and inflight was observed 0 after nulling).
        drop(unsafe { Box::from_raw(f) });
    }
    s.taken.store(false, Ordering::SeqCst);
}

impl Drop for TrapWatcher {
    fn drop(&mut self) {
        // Close the events first: no new hit can be raised after this.
        self.watcher.take();
        release(self.slot);
    }
}
