//! A kgdb-style gdb remote stub on COM2 (the `gdbstub` crate, `no_std`).
//!
//! ## Entering the debugger stops every CPU
//! A CPU that stops (an `int3` software breakpoint, a debugger hardware
//! breakpoint or watchpoint, a finished single-step, Ctrl-C seen by the
//! timer) becomes the *master*: it NMIs every other online CPU, which saves
//! its trap frame and spins. Each CPU is a gdb thread (tid = CPU + 1). The
//! master then serves gdb until gdb resumes; a single-step releases only the
//! stepping CPU (the others stay stopped until the step ends).
//!
//! The stopped CPUs may hold any lock (the books, the heap, the console), so
//! the master takes none of them: no allocation, output straight to the
//! UARTs, and every layer call on the layer's never-blocking debugger path.
//!
//! ## Z1–Z4 through the layer's debugger path
//! A hardware breakpoint or watchpoint books one slot on every online CPU
//! (`try_reserve`: only a slot free everywhere, never preempting anyone;
//! `Busy` at once if a stopped CPU held the books), claims a register on
//! each CPU (`try_claim`) and writes it into that CPU's pending debug
//! registers, which each CPU copies into its own registers before it resumes
//! (a CPU's registers are written only by that CPU). A refusal is an error
//! reply, and an `O` console line naming who holds the slots is sent as soon
//! as gdb waits for the target again (an `O` packet is only legal then).
//! Watch hits report `watch:`, `rwatch:` or `awatch:` with the address.
//! Detaching releases every slot and removes every software breakpoint.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};

use gdbstub::common::{Signal, Tid};
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{GdbStubBuilder, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use hwbreak_core::arch::Pool;
use hwbreak_core::layer::DbgSlot;
use hwbreak_core::{Access, BpAttr, CpuId, Error};

use crate::percpu::{self, CPUS, MAX_CPUS};
use crate::serial::{self, COM2};
use crate::trap::{TrapFrame, RFLAGS_RF, RFLAGS_TF};

/// The stub is in use (`gdb=1` on the command line).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The master CPU, or -1.
static MASTER: AtomicI32 = AtomicI32::new(-1);
/// A stop is in progress: NMIs are stop requests.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Per CPU: stopped in the debugger, its frame saved.
static STOPPED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: released by the master.
static GO: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the resume action is a single-step.
static STEP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the stopped CPU's trap frame.
static FRAMES: [AtomicPtr<TrapFrame>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Per CPU: the debug registers the debugger programs there (bit per DRn).
static DBG_REGS: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

/// Stops served so far (each entry of the debugger by a master CPU).
pub static STOPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Why a CPU stopped.
#[derive(Clone, Copy)]
pub enum Why {
    /// A software breakpoint (`int3` planted by gdb).
    SwBreak,
    /// A debugger execute breakpoint.
    HwBreak,
    /// A debugger watchpoint.
    Watch(WatchKind, u64),
    /// A single-step finished.
    Step,
    /// A trap or Ctrl-C.
    Signal(Signal),
}

/// COM2, polled.
struct Com2;

impl Connection for Com2 {
    type Error = ();
    fn write(&mut self, b: u8) -> Result<(), ()> {
        serial::put(COM2, b);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

fn read_byte() -> u8 {
    loop {
        if let Some(b) = serial::try_get(COM2) {
            return b;
        }
        core::hint::spin_loop();
    }
}

/// A debugger hardware breakpoint/watchpoint: its slot booking and the
/// register it has on each CPU.
#[derive(Clone, Copy)]
struct HwEntry {
    addr: u64,
    len: u64,
    kind: Option<WatchKind>, // None: execute breakpoint
    slot: DbgSlot,
    regs: [u8; MAX_CPUS],
}

const MAX_SW: usize = 64;

/// A fixed-size message buffer (the master never allocates).
struct Msg {
    buf: [u8; 400],
    len: usize,
}

impl core::fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// The stub's target: all state is in statics and [`State`].
struct KTarget {
    sw: [Option<(u64, u8)>; MAX_SW],
    hw: [Option<HwEntry>; 4],
    /// Console lines to send (as `O` packets) when gdb next waits.
    pending: Msg,
    /// Slot bookings whose release found the books busy (a stopped CPU held
    /// them): released at the next chance, never waited for.
    deferred: [Option<DbgSlot>; 4],
}

struct State {
    sm: Option<GdbStubStateMachine<'static, KTarget, Com2>>,
    target: KTarget,
}

static STATE: spin::Mutex<Option<State>> = spin::Mutex::new(None);
static mut PACKET_BUF: [u8; 4096] = [0; 4096];

fn tid(cpu: usize) -> Tid {
    Tid::new(cpu + 1).expect("cpu + 1 is nonzero")
}

fn cpu_of(t: Tid) -> Option<usize> {
    let c = t.get() - 1;
    (c < percpu::ncpus() && STOPPED[c].load(Ordering::Acquire)).then_some(c)
}

fn frame(cpu: usize) -> Option<&'static mut TrapFrame> {
    let p = FRAMES[cpu].load(Ordering::Acquire);
    // SAFETY: a stopped CPU's frame stays valid and untouched by it until the
    // master releases it; only the master (one at a time) reaches here.
    (!p.is_null() && STOPPED[cpu].load(Ordering::Acquire)).then(|| unsafe { &mut *p })
}

/// Whether an address range is inside the identity map (0..4 GiB).
fn mapped(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|e| e <= 1 << 32)
}

impl Target for KTarget {
    type Arch = X86_64_SSE;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for KTarget {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, t: Tid) -> TargetResult<(), Self> {
        let f = cpu_of(t).and_then(frame).ok_or(TargetError::NonFatal)?;
        regs.regs = [
            f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11,
            f.r12, f.r13, f.r14, f.r15,
        ];
        regs.rip = f.rip;
        regs.eflags = f.rflags as u32;
        regs.segments.cs = f.cs as u32;
        regs.segments.ss = f.ss as u32;
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs, t: Tid) -> TargetResult<(), Self> {
        let f = cpu_of(t).and_then(frame).ok_or(TargetError::NonFatal)?;
        let r = &regs.regs;
        (f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp) =
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6]);
        (f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15) =
            (r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
        f.rip = regs.rip;
        f.rflags = (f.rflags & !0xffff_ffff) | u64::from(regs.eflags);
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _t: Tid) -> TargetResult<usize, Self> {
        if !mapped(start, data.len()) {
            return Err(TargetError::Errno(14));
        }
        for (i, b) in data.iter_mut().enumerate() {
            // SAFETY: inside the identity map checked above; volatile so a
            // read of device memory is exactly one access per byte.
            *b = unsafe { ((start as usize + i) as *const u8).read_volatile() };
        }
        Ok(data.len())
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _t: Tid) -> TargetResult<(), Self> {
        if !mapped(start, data.len()) {
            return Err(TargetError::Errno(14));
        }
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: inside the identity map (all of it writable); gdb asked
            // for this write while every CPU is stopped.
            unsafe { ((start as usize + i) as *mut u8).write_volatile(b) };
        }
        Ok(())
    }

    fn list_active_threads(&mut self, cb: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        for c in (0..percpu::ncpus()).filter(|&c| STOPPED[c].load(Ordering::Acquire)) {
            cb(tid(c));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for KTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(()) // the master releases the CPUs once the state machine runs
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        STEP.iter().for_each(|s| s.store(false, Ordering::Release));
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _t: Tid,
        _s: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for KTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // While a CPU steps, every other CPU stays stopped anyway (see enter).
        Ok(())
    }
}

impl MultiThreadSingleStep for KTarget {
    fn set_resume_action_step(&mut self, t: Tid, _s: Option<Signal>) -> Result<(), Self::Error> {
        let c = cpu_of(t).ok_or("no such thread")?;
        STEP[c].store(true, Ordering::Release);
        Ok(())
    }
}

impl Breakpoints for KTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for KTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if !mapped(addr, 1) {
            return Ok(false);
        }
        let Some(free) = self.sw.iter_mut().find(|s| s.is_none()) else {
            return Ok(false);
        };
        // SAFETY: a byte of kernel text in the writable identity map; every
        // CPU is stopped, so none executes it while it changes.
        let old = unsafe { (addr as *const u8).read_volatile() };
        // SAFETY: as above.
        unsafe { (addr as *mut u8).write_volatile(0xcc) };
        *free = Some((addr, old));
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(s) = self
            .sw
            .iter_mut()
            .find(|s| s.is_some_and(|(a, _)| a == addr))
        else {
            return Ok(false);
        };
        let (a, old) = s.take().expect("found above");
        // SAFETY: restores the byte add_sw_breakpoint replaced, all CPUs stopped.
        unsafe { (a as *mut u8).write_volatile(old) };
        Ok(true)
    }
}

impl HwBreakpoint for KTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_hw(addr, 1, None))
    }
    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(addr, 1, None))
    }
}

impl HwWatchpoint for KTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.add_hw(addr, len, Some(kind)))
    }
    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(addr, len, Some(kind)))
    }
}

fn kind_name(kind: Option<WatchKind>) -> &'static str {
    match kind {
        None => "Z1",
        Some(WatchKind::Write) => "Z2",
        Some(WatchKind::Read) => "Z3",
        Some(WatchKind::ReadWrite) => "Z4",
    }
}

impl KTarget {
    /// Say why a Z packet was refused (sent as `O` when gdb next waits).
    fn refuse(&mut self, addr: u64, kind: Option<WatchKind>, why: core::fmt::Arguments) {
        let _ = writeln!(
            self.pending,
            "hwbreak: {} at {addr:#x} refused: {why}",
            kind_name(kind)
        );
    }

    /// Name who holds `cpu`'s registers, for a refusal.
    fn name_holders(&mut self, cpu: CpuId) {
        let mut out = Msg {
            buf: [0; 400],
            len: 0,
        };
        let r = crate::dr::layer()
            .debugger()
            .try_holders(cpu, &mut |_, slot, id, task| {
                let _ = match task {
                    Some(t) => write!(out, " DR{slot}=breakpoint {} (task {})", id.0, t.0),
                    None => write!(out, " DR{slot}=breakpoint {} (cpu-bound)", id.0),
                };
            });
        if r.is_err() {
            let _ = write!(out, " (its table is locked by a stopped CPU)");
        }
        let _ = writeln!(
            self.pending,
            "hwbreak: cpu{} holds:{}",
            cpu.0,
            core::str::from_utf8(&out.buf[..out.len]).unwrap_or("?")
        );
    }

    fn add_hw(&mut self, addr: u64, len: u64, kind: Option<WatchKind>) -> bool {
        self.retry_deferred();
        let access = match kind {
            None => Access::Execute,
            Some(WatchKind::Write) => Access::Write,
            Some(WatchKind::Read) => Access::Read,
            Some(WatchKind::ReadWrite) => Access::ReadWrite,
        };
        let layer = crate::dr::layer().debugger();
        let attr = BpAttr::new(addr, len, access).privileged();
        let bp = match crate::dr::layer().arch().parse(&attr) {
            Ok(bp) => bp,
            Err(e) => {
                self.refuse(addr, kind, format_args!("{e}"));
                return false;
            }
        };
        let Some(entry_slot) = self.hw.iter().position(|h| h.is_none()) else {
            self.refuse(
                addr,
                kind,
                format_args!("the debugger already uses 4 registers"),
            );
            return false;
        };
        let slot = match layer.try_reserve(Pool::Data) {
            Ok(s) => s,
            Err(Error::Busy) => {
                self.refuse(
                    addr,
                    kind,
                    format_args!("the breakpoint books are held by a stopped CPU; try again after continuing"),
                );
                return false;
            }
            Err(e) => {
                self.refuse(addr, kind, format_args!("{e}"));
                if let Error::NoSlot { cpu, .. } = e {
                    self.name_holders(cpu);
                }
                return false;
            }
        };
        let mut regs = [u8::MAX; MAX_CPUS];
        for c in (0..percpu::ncpus()).filter(|&c| percpu::is_online(c)) {
            let r = layer
                .try_claim(CpuId(c as u32), Pool::Data)
                .map_err(|e| e.to_string_static())
                .and_then(|r| crate::dr::debugger_program(c, r, Some(&bp)).map(|()| r));
            match r {
                Ok(r) => regs[c] = r as u8,
                Err(why) => {
                    self.undo(&regs, slot);
                    self.refuse(addr, kind, format_args!("cpu{c}: {why}"));
                    return false;
                }
            }
        }
        for (c, &r) in regs.iter().enumerate() {
            if r != u8::MAX {
                DBG_REGS[c].fetch_or(1 << r, Ordering::AcqRel);
            }
        }
        self.hw[entry_slot] = Some(HwEntry {
            addr,
            len,
            kind,
            slot,
            regs,
        });
        true
    }

    /// Clear and unclaim the registers in `regs`, give the slot back.
    fn undo(&mut self, regs: &[u8; MAX_CPUS], slot: DbgSlot) -> bool {
        let layer = crate::dr::layer().debugger();
        let mut ok = true;
        for (c, &r) in regs.iter().enumerate() {
            if r == u8::MAX {
                continue;
            }
            DBG_REGS[c].fetch_and(!(1 << r), Ordering::AcqRel);
            ok &= crate::dr::debugger_program(c, r as usize, None).is_ok();
            ok &= layer
                .try_unclaim(CpuId(c as u32), Pool::Data, r as usize)
                .is_ok();
        }
        if layer.try_release(slot).is_err() {
            // The registers are clear and unclaimed; only the booking waits.
            match self.deferred.iter_mut().find(|d| d.is_none()) {
                Some(d) => *d = Some(slot),
                None => ok = false,
            }
        }
        ok
    }

    /// Retry the releases that found the books busy.
    fn retry_deferred(&mut self) {
        let layer = crate::dr::layer().debugger();
        for d in self.deferred.iter_mut() {
            if let Some(slot) = *d {
                if layer.try_release(slot).is_ok() {
                    *d = None;
                }
            }
        }
    }

    fn remove_hw(&mut self, addr: u64, len: u64, kind: Option<WatchKind>) -> bool {
        let Some(i) = self.hw.iter().position(|h| {
            h.is_some_and(|h| h.addr == addr && (kind.is_none() || h.len == len) && h.kind == kind)
        }) else {
            return false;
        };
        let h = self.hw[i].take().expect("found above");
        self.undo(&h.regs, h.slot)
    }

    /// Which debugger entry owns register `reg` on `cpu`.
    fn entry_for(&self, cpu: usize, reg: usize) -> Option<&HwEntry> {
        self.hw
            .iter()
            .flatten()
            .find(|h| h.regs[cpu] as usize == reg)
    }

    /// Remove everything gdb planted (detach).
    fn clear_all(&mut self) {
        for i in 0..MAX_SW {
            if let Some((a, old)) = self.sw[i].take() {
                // SAFETY: restores the original byte, all CPUs stopped.
                unsafe { (a as *mut u8).write_volatile(old) };
            }
        }
        for i in 0..self.hw.len() {
            if let Some(h) = self.hw[i].take() {
                self.undo(&h.regs, h.slot);
            }
        }
    }

    /// Whether `addr` holds one of gdb's software breakpoints.
    fn is_sw(&self, addr: u64) -> bool {
        self.sw.iter().flatten().any(|&(a, _)| a == addr)
    }
}

/// A static description of a layer error (no allocation).
trait StaticMsg {
    fn to_string_static(&self) -> &'static str;
}

impl StaticMsg for Error {
    fn to_string_static(&self) -> &'static str {
        match self {
            Error::Busy => "its install table is held by a stopped CPU",
            Error::NotReserved { .. } => "no booked slot left to claim",
            _ => "the layer refused the claim",
        }
    }
}

/// Start the stub (`gdb=1`): COM2 speaks the gdb remote protocol.
pub fn init() {
    // SAFETY: the packet buffer is handed to the one stub, once.
    let buf: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(PACKET_BUF) };
    let stub = GdbStubBuilder::new(Com2)
        .with_packet_buffer(buf)
        .build()
        .expect("a 4 KiB packet buffer is enough");
    let mut target = KTarget {
        sw: [None; MAX_SW],
        hw: [None; 4],
        pending: Msg {
            buf: [0; 400],
            len: 0,
        },
        deferred: [None; 4],
    };
    let sm = stub
        .run_state_machine(&mut target)
        .expect("the stub starts");
    *STATE.lock() = Some(State {
        sm: Some(sm),
        target,
    });
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Whether gdb is attached (the stub runs).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// `int3` on `cpu`: gdb's software breakpoint (or the boot-time stop).
/// Returns false if it is not the debugger's.
pub fn on_int3(cpu: usize, f: &mut TrapFrame) -> bool {
    if !active() {
        return false;
    }
    let at = f.rip - 1;
    let sw = STATE
        .try_lock()
        .and_then(|s| s.as_ref().map(|s| s.target.is_sw(at)))
        .unwrap_or(true);
    if sw {
        f.rip = at;
        enter(cpu, f, Why::SwBreak);
    } else {
        enter(cpu, f, Why::Signal(Signal::SIGTRAP));
    }
    true
}

/// A #DB on `cpu`: its DR6 hit bits `hits` that belong to the debugger stop
/// here (the layer sees only the others). Returns the bits it took.
pub fn on_debug_hits(cpu: usize, hits: u64, f: &mut TrapFrame) -> u64 {
    let mine = hits & u64::from(DBG_REGS[cpu].load(Ordering::Acquire));
    if mine == 0 || !active() {
        return 0;
    }
    let reg = mine.trailing_zeros() as usize;
    let why = STATE
        .lock()
        .as_ref()
        .and_then(|s| s.target.entry_for(cpu, reg).copied())
        .map_or(Why::HwBreak, |h| match h.kind {
            None => Why::HwBreak,
            Some(k) => Why::Watch(k, h.addr),
        });
    if matches!(why, Why::HwBreak) {
        f.rflags |= RFLAGS_RF;
    }
    enter(cpu, f, why);
    mine
}

/// A single-step trap nobody else wanted: the debugger's.
pub fn on_step(cpu: usize, f: &mut TrapFrame) -> bool {
    if !active() || !STEP[cpu].swap(false, Ordering::AcqRel) {
        return false;
    }
    f.rflags &= !RFLAGS_TF;
    enter(cpu, f, Why::Step);
    true
}

/// The timer on CPU 0 while gdb is attached and the target runs: poll COM2
/// for Ctrl-C (or any packet gdb sends meanwhile).
pub fn poll(cpu: usize, f: &mut TrapFrame) {
    if !active() || MASTER.load(Ordering::Acquire) >= 0 {
        return;
    }
    let stop = {
        let Some(mut g) = STATE.try_lock() else {
            return;
        };
        let Some(st) = g.as_mut() else { return };
        st.target.retry_deferred();
        let Some(b) = serial::try_get(COM2) else {
            return;
        };
        match st.sm.take() {
            Some(GdbStubStateMachine::Running(r)) => match r.incoming_data(&mut st.target, b) {
                Ok(sm) => {
                    let stop = matches!(sm, GdbStubStateMachine::CtrlCInterrupt(_));
                    st.sm = Some(sm);
                    stop
                }
                Err(_) => false,
            },
            other => {
                st.sm = other;
                false
            }
        }
    };
    if stop {
        enter(cpu, f, Why::Signal(Signal::SIGINT));
    }
}

/// An NMI during a stop: park here as a stopped CPU. Returns false if no
/// stop is in progress.
pub fn on_nmi(cpu: usize, f: &mut TrapFrame) -> bool {
    if !STOPPING.load(Ordering::Acquire) {
        return false;
    }
    wait_stopped(cpu, f);
    true
}

/// A stopped CPU: publish the frame, spin until released, then load the
/// debug registers the debugger set for it.
fn wait_stopped(cpu: usize, f: &mut TrapFrame) {
    FRAMES[cpu].store(f, Ordering::Release);
    STOPPED[cpu].store(true, Ordering::Release);
    while !GO[cpu].swap(false, Ordering::AcqRel) {
        core::hint::spin_loop();
    }
    if STEP[cpu].load(Ordering::Acquire) {
        f.rflags |= RFLAGS_TF;
    }
    STOPPED[cpu].store(false, Ordering::Release);
    crate::dr::try_apply_pending(cpu);
}

/// Stop the world on `cpu` and serve gdb until it resumes.
pub fn enter(cpu: usize, f: &mut TrapFrame, why: Why) {
    if MASTER
        .compare_exchange(-1, cpu as i32, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another CPU is the master: be one of its stopped CPUs.
        wait_stopped(cpu, f);
        return;
    }
    STOPPING.store(true, Ordering::Release);
    STOPS.fetch_add(1, Ordering::SeqCst);
    crate::dr::debugger_disarm_self(cpu);
    FRAMES[cpu].store(f, Ordering::Release);
    STOPPED[cpu].store(true, Ordering::Release);
    for c in 0..percpu::ncpus() {
        if c != cpu && percpu::is_online(c) && !STOPPED[c].load(Ordering::Acquire) {
            crate::apic::send_nmi(CPUS[c].apic_id.load(Ordering::Relaxed));
        }
    }
    for (c, stopped) in STOPPED.iter().enumerate().take(percpu::ncpus()) {
        while percpu::is_online(c) && !stopped.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    let reason = match why {
        Why::SwBreak => MultiThreadStopReason::SwBreak(tid(cpu)),
        Why::HwBreak => MultiThreadStopReason::HwBreak(tid(cpu)),
        Why::Watch(kind, addr) => MultiThreadStopReason::Watch {
            tid: tid(cpu),
            kind,
            addr,
        },
        // A finished step is a SIGTRAP of the stepping thread.
        Why::Step => MultiThreadStopReason::SignalWithThread {
            tid: tid(cpu),
            signal: Signal::SIGTRAP,
        },
        Why::Signal(s) => MultiThreadStopReason::SignalWithThread {
            tid: tid(cpu),
            signal: s,
        },
    };
    let detached = serve(reason);

    // Resume: release every stopped CPU, or only the stepping ones.
    let stepping = (0..percpu::ncpus()).any(|c| STEP[c].load(Ordering::Acquire));
    MASTER.store(-1, Ordering::Release);
    let mut released = [false; MAX_CPUS];
    for c in (0..percpu::ncpus()).filter(|&c| c != cpu) {
        if STOPPED[c].load(Ordering::Acquire) && (!stepping || STEP[c].load(Ordering::Acquire)) {
            GO[c].store(true, Ordering::Release);
            released[c] = true;
        }
    }
    // Wait until each released CPU has left: a stop that starts before it
    // did would count it as stopped and never NMI it.
    for c in (0..MAX_CPUS).filter(|&c| released[c]) {
        while STOPPED[c].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    if detached || !stepping {
        STOPPING.store(false, Ordering::Release);
    }
    if stepping && !STEP[cpu].load(Ordering::Acquire) {
        // Stay stopped while another CPU steps; its trap makes it master.
        wait_stopped(cpu, f);
        return;
    }
    if STEP[cpu].load(Ordering::Acquire) {
        f.rflags |= RFLAGS_TF;
    }
    STOPPED[cpu].store(false, Ordering::Release);
    crate::dr::try_apply_pending(cpu);
}

/// Drive the gdb state machine from a stop until gdb resumes the target.
/// Returns true when gdb detached.
fn serve(reason: MultiThreadStopReason<u64>) -> bool {
    let mut g = STATE.lock();
    let Some(st) = g.as_mut() else { return true };
    let mut sm = match st.sm.take() {
        Some(GdbStubStateMachine::Running(r)) => r.report_stop(&mut st.target, reason),
        Some(GdbStubStateMachine::CtrlCInterrupt(c)) => {
            c.interrupt_handled(&mut st.target, Some(reason))
        }
        Some(other) => Ok(other),
        None => return true,
    };
    loop {
        let next = match sm {
            Ok(GdbStubStateMachine::Idle(i)) => {
                let b = read_byte();
                i.incoming_data(&mut st.target, b)
            }
            Ok(GdbStubStateMachine::Running(r)) => {
                // gdb waits for a stop now: the only time `O` output is legal.
                flush_console(&mut st.target);
                st.sm = Some(GdbStubStateMachine::Running(r));
                return false;
            }
            Ok(GdbStubStateMachine::CtrlCInterrupt(c)) => c.interrupt_handled(
                &mut st.target,
                Some(MultiThreadStopReason::Signal(Signal::SIGINT)),
            ),
            Ok(GdbStubStateMachine::Disconnected(_)) | Err(_) => {
                st.target.clear_all();
                STEP.iter().for_each(|s| s.store(false, Ordering::Release));
                ACTIVE.store(false, Ordering::Release);
                st.sm = None;
                return true;
            }
        };
        sm = next;
    }
}

/// Send pending console lines as `O` packets.
fn flush_console(t: &mut KTarget) {
    if t.pending.len == 0 {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut sum: u8 = b'O';
    serial::put(COM2, b'$');
    serial::put(COM2, b'O');
    for &b in &t.pending.buf[..t.pending.len] {
        for h in [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]] {
            sum = sum.wrapping_add(h);
            serial::put(COM2, h);
        }
    }
    serial::put(COM2, b'#');
    serial::put(COM2, HEX[(sum >> 4) as usize]);
    serial::put(COM2, HEX[(sum & 15) as usize]);
    t.pending.len = 0;
}
