//! A stop-mode backend: write a stopped tracee's x86-64 debug registers
//! directly with `PTRACE_POKEUSER` at `offsetof(struct user, u_debugreg)`,
//! as gdb does. The encoding (DR7 L/RW/LEN bits, install order: address
//! before control; uninstall: control before address) is core's x86-64
//! backend, driven through the [`DebugRegs`] trait.
//!
//! Use it when you already trace the thread and want it to *stop* at a hit
//! (a debugger). For non-stop watching use [`crate::watch`].
//!
//! ```no_run
//! use hwbreak_linux::ptrace::PtraceBreakpoints;
//! use hwbreak_core::BpAttr;
//! # let (tid, addr) = (1234, 0x601040u64);
//! // `tid` is ptrace-stopped by us.
//! let mut bps = PtraceBreakpoints::new(tid);
//! bps.set(0, &BpAttr::write(addr, 4))?;
//! // PTRACE_CONT ... waitpid sees SIGTRAP ...
//! let hit = bps.hit_slots()?; // bit 0 set: DR0 fired
//! # Ok::<(), hwbreak_linux::Error>(())
//! ```

use crate::error::{Error, Result};
use hwbreak_core::arch::x86_64::{NUM_SLOTS, X86_64};
use hwbreak_core::arch::{Arch, ArchBp, DebugRegs, Pool, RawStatus, Reg};
use hwbreak_core::attr::BpAttr;
use std::cell::Cell;
use std::io;
use std::mem::offset_of;

/// Byte offset of `u_debugreg[0]` in `struct user` (848 on x86-64).
pub const U_DEBUGREG_OFFSET: usize = offset_of!(libc::user, u_debugreg);

/// Read debug register `n` (0-3 address, 6 status, 7 control) of stopped tracee `tid`.
pub fn peek_dr(tid: i32, n: usize) -> io::Result<u64> {
    // PEEKUSER returns the value; -1 is also a valid value, so errno decides.
    // SAFETY: __errno_location points to this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PTRACE_PEEKUSER takes an offset into `struct user` and no pointer.
    let v = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKUSER,
            tid,
            (U_DEBUGREG_OFFSET + 8 * n) as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let e = io::Error::last_os_error();
    if v == -1 && e.raw_os_error() != Some(0) {
        return Err(e);
    }
    Ok(v as u64)
}

/// Write debug register `n` of stopped tracee `tid`. The kernel validates
/// the value (`ptrace_set_debugreg`) and books the slot as a perf event.
pub fn poke_dr(tid: i32, n: usize, v: u64) -> io::Result<()> {
    // SAFETY: PTRACE_POKEUSER takes an offset into `struct user` and the value as data.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_POKEUSER,
            tid,
            (U_DEBUGREG_OFFSET + 8 * n) as *mut libc::c_void,
            v as *mut libc::c_void,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One tracee's debug registers as core's [`DebugRegs`]. Errors are kept
/// (the trait's methods cannot return them) and reported by [`Self::take_error`].
pub struct PtraceRegs {
    tid: i32,
    err: Cell<Option<io::Error>>,
}

impl std::fmt::Debug for PtraceRegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtraceRegs")
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

impl PtraceRegs {
    /// Registers of stopped tracee `tid`.
    pub fn new(tid: i32) -> Self {
        PtraceRegs {
            tid,
            err: Cell::new(None),
        }
    }

    /// The first error since the last call, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        self.err.take()
    }

    fn index(r: Reg) -> Option<usize> {
        match r {
            Reg::Addr(Pool::Data, i) if (i as usize) < NUM_SLOTS => Some(i as usize),
            Reg::Status => Some(6),
            Reg::Control => Some(7),
            _ => None,
        }
    }

    fn keep(&self, e: io::Error) {
        let prev = self.err.take();
        self.err.set(Some(prev.unwrap_or(e)));
    }
}

impl DebugRegs for PtraceRegs {
    fn read(&self, r: Reg) -> u64 {
        let Some(n) = Self::index(r) else { return 0 };
        peek_dr(self.tid, n).unwrap_or_else(|e| {
            self.keep(e);
            0
        })
    }

    fn write(&mut self, r: Reg, v: u64) {
        let Some(n) = Self::index(r) else { return };
        if let Err(e) = poke_dr(self.tid, n, v) {
            self.keep(e);
        }
    }
}

/// Up to four breakpoints in one stopped tracee's debug registers.
#[derive(Debug)]
pub struct PtraceBreakpoints {
    regs: PtraceRegs,
    arch: X86_64,
    slots: [Option<ArchBp>; NUM_SLOTS],
}

fn ptrace_err(tid: i32, what: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ESRCH) if !crate::procfs::process_exists(tid) => Error::ProcessGone { pid: tid },
        Some(libc::ESRCH) => Error::Invalid(format!(
            "cannot {what} of thread {tid}: it is not ptrace-stopped by this thread; PTRACE_ATTACH or PTRACE_SEIZE it and wait for the stop first"
        )),
        Some(libc::EPERM) | Some(libc::EACCES) => crate::procfs::permission_error(
            format!("{what} of thread {tid} (it must be ptrace-stopped by this thread)"),
            e.raw_os_error().unwrap_or(0),
            crate::error::Denied::Ptrace,
        ),
        Some(libc::ENOSPC) => Error::NoSlot {
            watch: format!("debug register of thread {tid}"),
            held_by_us: vec![],
            total: NUM_SLOTS,
            other_users: NUM_SLOTS,
        },
        _ => Error::sys(format!("{what} of thread {tid}"), e),
    }
}

impl PtraceBreakpoints {
    /// Breakpoints of `tid`, which must be ptrace-stopped by the calling thread.
    pub fn new(tid: i32) -> Self {
        PtraceBreakpoints {
            regs: PtraceRegs::new(tid),
            arch: X86_64::default(),
            slots: [None; NUM_SLOTS],
        }
    }

    /// Program slot `slot` (DR0-DR3) with `attr`, checked by core's x86 rules first.
    pub fn set(&mut self, slot: usize, attr: &BpAttr) -> Result<()> {
        if slot >= NUM_SLOTS {
            return Err(Error::Invalid(format!(
                "x86-64 has debug registers DR0-DR3; slot {slot} does not exist"
            )));
        }
        let bp = self.arch.parse(attr).map_err(|source| Error::Arch {
            watch: format!("DR{slot}"),
            source,
        })?;
        if self.slots[slot].is_some() {
            self.clear(slot)?;
        }
        self.arch.install(&mut self.regs, slot, &bp);
        if let Some(e) = self.regs.take_error() {
            // Leave nothing half-written.
            self.arch.uninstall(&mut self.regs, Pool::Data, slot);
            self.regs.take_error();
            return Err(ptrace_err(self.regs.tid, "set a debug register", e));
        }
        self.slots[slot] = Some(bp);
        Ok(())
    }

    /// Clear slot `slot` (DR7 first, then the address).
    pub fn clear(&mut self, slot: usize) -> Result<()> {
        if slot >= NUM_SLOTS {
            return Ok(());
        }
        self.arch.uninstall(&mut self.regs, Pool::Data, slot);
        self.slots[slot] = None;
        match self.regs.take_error() {
            Some(e) => Err(ptrace_err(self.regs.tid, "clear a debug register", e)),
            None => Ok(()),
        }
    }

    /// DR7 as the kernel holds it for the tracee.
    pub fn dr7(&self) -> Result<u64> {
        peek_dr(self.regs.tid, 7).map_err(|e| ptrace_err(self.regs.tid, "read DR7", e))
    }

    /// DR6 as the kernel reports it after a stop.
    pub fn dr6(&self) -> Result<u64> {
        peek_dr(self.regs.tid, 6).map_err(|e| ptrace_err(self.regs.tid, "read DR6", e))
    }

    /// Which slots fired (bit n = DRn), decoded by core's x86 backend from
    /// DR6 (only enabled slots count), and whether a single step completed.
    pub fn hit_slots(&self) -> Result<(u32, bool)> {
        let dr6 = self.dr6()?;
        let d = self
            .arch
            .decode(&RawStatus::X86 { dr6, ip: 0 }, &self.regs, &|_, _| None);
        if let Some(e) = self.regs.take_error() {
            return Err(ptrace_err(self.regs.tid, "read DR7", e));
        }
        Ok((d.hits[Pool::Data.idx()], d.step))
    }

    /// Zero DR6 before resuming, so the next stop's bits are fresh.
    pub fn clear_status(&mut self) -> Result<()> {
        poke_dr(self.regs.tid, 6, 0).map_err(|e| ptrace_err(self.regs.tid, "clear DR6", e))
    }

    /// Clear every slot (best effort; the thread may be gone).
    pub fn clear_all(&mut self) {
        for s in 0..NUM_SLOTS {
            if self.slots[s].is_some() {
                let _ = self.clear(s);
            }
        }
    }
}
