//! One perf event: an RAII handle over the file descriptor `perf_event_open`
//! returns. Drop closes the fd, which unregisters the breakpoint (and, for an
//! `inherit` event, every copy the kernel made in threads created later).
//!
//! One ioctl, one small method: [`Event::enable`], [`Event::disable`],
//! [`Event::reset`], [`Event::modify`] (`PERF_EVENT_IOC_MODIFY_ATTRIBUTES`),
//! [`Event::set_output`], [`Event::id`]. The bindings come from the
//! `perf-event-open-sys` crate (its `perf_event_attr` already has the 5.13+
//! `sigtrap`, `remove_on_exec` and `sig_data` fields).
//!
//! ```
//! use hwbreak_linux::event::{Event, EventAttr};
//! use hwbreak_core::BpAttr;
//! static mut X: u64 = 0;
//! let addr = &raw const X as u64;
//! let attr = EventAttr::breakpoint(&BpAttr::write(addr, 8));
//! let ev = Event::open(&attr, 0, -1, None)?; // this thread, any CPU
//! // SAFETY: a volatile write to a static nobody else touches.
//! unsafe { std::ptr::write_volatile(&raw mut X, 1) };
//! assert_eq!(ev.read_count()?.value, 1);
//! # Ok::<(), std::io::Error>(())
//! ```

use hwbreak_core::attr::{Access, BpAttr};
use perf_event_open_sys as sys;
use perf_event_open_sys::bindings::perf_event_attr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A `perf_event_attr`, built for hardware breakpoints.
///
/// The read format is always `TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING | ID`,
/// so [`Event::read_count`] can parse it.
#[derive(Clone, Copy)]
pub struct EventAttr(perf_event_attr);

impl std::fmt::Debug for EventAttr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventAttr")
            .field("type", &self.0.type_)
            .field("bp_type", &self.0.bp_type)
            .field("bp_addr", &self.0.bp_addr)
            .field("bp_len", &self.0.bp_len)
            .field("sample_type", &self.0.sample_type)
            .finish_non_exhaustive()
    }
}

/// The read format every [`EventAttr`] uses.
pub const READ_FORMAT: u64 = (sys::bindings::PERF_FORMAT_TOTAL_TIME_ENABLED
    | sys::bindings::PERF_FORMAT_TOTAL_TIME_RUNNING
    | sys::bindings::PERF_FORMAT_ID) as u64;

/// The kernel's `HW_BREAKPOINT_*` type for an access.
pub fn bp_type(access: Access) -> u32 {
    match access {
        Access::Read => sys::bindings::HW_BREAKPOINT_R,
        Access::Write => sys::bindings::HW_BREAKPOINT_W,
        Access::ReadWrite => sys::bindings::HW_BREAKPOINT_RW,
        Access::Execute => sys::bindings::HW_BREAKPOINT_X,
    }
}

/// The `bp_len` the kernel wants: x86 execute breakpoints must say
/// `sizeof(long)` (arch/x86/kernel/hw_breakpoint.c, `arch_build_bp_info`).
pub fn bp_len(attr: &BpAttr) -> u64 {
    if attr.access == Access::Execute {
        std::mem::size_of::<libc::c_long>() as u64
    } else {
        attr.len
    }
}

impl EventAttr {
    /// A counting breakpoint event for `bp`: `PERF_TYPE_BREAKPOINT`, opened
    /// disabled when `bp.disabled`, kernel and hypervisor excluded unless
    /// `bp.privileged`, sample period 1 (every hit is an overflow).
    pub fn breakpoint(bp: &BpAttr) -> Self {
        // SAFETY: perf_event_attr is plain integers and unions of integers; all-zero
        // is the documented starting state ("memset(&pe, 0, sizeof(pe))").
        let mut a: perf_event_attr = unsafe { std::mem::zeroed() };
        a.type_ = sys::bindings::PERF_TYPE_BREAKPOINT;
        a.size = std::mem::size_of::<perf_event_attr>() as u32;
        a.bp_type = bp_type(bp.access);
        a.bp_addr = bp.addr;
        a.bp_len = bp_len(bp);
        a.sample_period = 1;
        a.read_format = READ_FORMAT;
        a.set_disabled(bp.disabled as u64);
        if !bp.privileged {
            a.set_exclude_kernel(1);
            a.set_exclude_hv(1);
        }
        EventAttr(a)
    }

    /// A software dummy event (counts nothing; used as a per-CPU ring owner).
    pub fn dummy() -> Self {
        // SAFETY: as in `breakpoint`: all-zero is a valid perf_event_attr.
        let mut a: perf_event_attr = unsafe { std::mem::zeroed() };
        a.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
        a.size = std::mem::size_of::<perf_event_attr>() as u32;
        a.config = sys::bindings::PERF_COUNT_SW_DUMMY as u64;
        a.read_format = READ_FORMAT;
        a.set_exclude_kernel(1);
        a.set_exclude_hv(1);
        EventAttr(a)
    }

    /// Change the breakpoint fields (address, length, access, disabled), keeping
    /// everything else: the shape `PERF_EVENT_IOC_MODIFY_ATTRIBUTES` accepts.
    pub fn with_bp(mut self, bp: &BpAttr) -> Self {
        self.0.bp_type = bp_type(bp.access);
        self.0.bp_addr = bp.addr;
        self.0.bp_len = bp_len(bp);
        self.0.set_disabled(bp.disabled as u64);
        self
    }

    /// Also read how many samples of this event were lost because its ring was
    /// full (`PERF_FORMAT_LOST`, Linux 6.0), in [`Count::lost`].
    pub fn read_lost(mut self, yes: bool) -> Self {
        let bit = sys::bindings::PERF_FORMAT_LOST as u64;
        if yes {
            self.0.read_format |= bit;
        } else {
            self.0.read_format &= !bit;
        }
        self
    }

    /// Open disabled (enable later with [`Event::enable`]).
    pub fn disabled(mut self, yes: bool) -> Self {
        self.0.set_disabled(yes as u64);
        self
    }

    /// Copy the event into threads (and, without [`Self::inherit_thread`],
    /// child processes) created after it is opened, atomically at `clone`.
    pub fn inherit(mut self, yes: bool) -> Self {
        self.0.set_inherit(yes as u64);
        self
    }

    /// With `inherit`: copy only into threads (`CLONE_THREAD`), not forked processes (Linux 5.13).
    pub fn inherit_thread(mut self, yes: bool) -> Self {
        self.0.set_inherit_thread(yes as u64);
        self
    }

    /// Stay disabled until the target calls `exec`, then enable.
    pub fn enable_on_exec(mut self, yes: bool) -> Self {
        self.0.set_enable_on_exec(yes as u64);
        self
    }

    /// What each sample record carries (`PERF_SAMPLE_*` bits).
    pub fn sample_type(mut self, bits: u64) -> Self {
        self.0.sample_type = bits;
        self
    }

    /// Emit `FORK`/`EXIT` (`task`) and `COMM` records.
    pub fn task_events(mut self, yes: bool) -> Self {
        self.0.set_task(yes as u64);
        self.0.set_comm(yes as u64);
        self
    }

    /// Emit `PERF_RECORD_SWITCH` (a task-bound event) or
    /// `PERF_RECORD_SWITCH_CPU_WIDE` (`pid = -1`) at every context switch
    /// of what the event watches. No PMU needed.
    pub fn context_switch(mut self, yes: bool) -> Self {
        self.0.set_context_switch(yes as u64);
        self
    }

    /// Put the sample-id trailer (tid, time, id ...) on non-sample records too.
    pub fn sample_id_all(mut self, yes: bool) -> Self {
        self.0.set_sample_id_all(yes as u64);
        self
    }

    /// Wake a poller once `bytes` of records are pending (instead of every N events).
    pub fn wakeup_watermark(mut self, bytes: u32) -> Self {
        self.0.set_watermark(1);
        self.0.wakeup_watermark = bytes;
        self
    }

    /// Which user registers a sample copies (`PERF_SAMPLE_REGS_USER` mask).
    pub fn sample_regs_user(mut self, mask: u64) -> Self {
        self.0.sample_regs_user = mask;
        self
    }

    /// How many bytes of user stack a sample copies (`PERF_SAMPLE_STACK_USER`).
    pub fn sample_stack_user(mut self, bytes: u32) -> Self {
        self.0.sample_stack_user = bytes;
        self
    }

    /// Deepest callchain a sample carries. Set explicitly: the kernel fills a
    /// zero with the sysctl at open, and MODIFY_ATTRIBUTES wants an attr that
    /// matches the stored one except for the breakpoint fields.
    pub fn sample_max_stack(mut self, frames: u16) -> Self {
        self.0.sample_max_stack = frames;
        self
    }

    /// Deliver a synchronous `SIGTRAP` (si_code `TRAP_PERF`, `si_perf_data =
    /// sig_data`) to the thread that hit; implies `remove_on_exec` (Linux 5.13).
    pub fn sigtrap(mut self, sig_data: u64) -> Self {
        self.0.set_sigtrap(1);
        self.0.set_remove_on_exec(1);
        self.0.sig_data = sig_data;
        self
    }

    /// The raw attr, for fields this builder does not cover.
    pub fn raw(&self) -> &perf_event_attr {
        &self.0
    }

    /// The raw attr, mutable.
    pub fn raw_mut(&mut self) -> &mut perf_event_attr {
        &mut self.0
    }
}

/// A counter reading: `PERF_FORMAT_TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING | ID`.
/// For an `inherit` event the value includes every inherited copy, live or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    /// Hits counted.
    pub value: u64,
    /// Nanoseconds the event was enabled.
    pub time_enabled: u64,
    /// Nanoseconds it was actually on a CPU (in a debug register).
    pub time_running: u64,
    /// The event's kernel id.
    pub id: u64,
    /// Samples lost for a full ring (0 unless opened with [`EventAttr::read_lost`]).
    pub lost: u64,
}

/// An open perf event. Owns its fd; Drop closes it, which unregisters the
/// breakpoint everywhere it lives (including inherited copies).
#[derive(Debug)]
pub struct Event {
    fd: OwnedFd,
    read_format: u64,
}

impl Event {
    /// `perf_event_open(attr, pid, cpu, group, PERF_FLAG_FD_CLOEXEC)`.
    /// `pid` 0 = this thread, -1 = every task (with `cpu` >= 0); `cpu` -1 =
    /// any CPU. Returns the raw OS error; callers map it to [`crate::Error`].
    pub fn open(attr: &EventAttr, pid: i32, cpu: i32, group: Option<&Event>) -> io::Result<Event> {
        let mut a = attr.0;
        let group_fd = group.map_or(-1, |g| g.fd.as_raw_fd());
        // SAFETY: `a` is a valid, fully initialised perf_event_attr that lives for the
        // call; the kernel copies it and keeps no pointer to it.
        let fd = unsafe {
            sys::perf_event_open(
                &mut a,
                pid,
                cpu,
                group_fd,
                sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Event {
            // SAFETY: the kernel just returned this fd to us; nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            read_format: attr.0.read_format,
        })
    }

    /// Adopt an fd that refers to a perf event (e.g. received over a socket),
    /// opened with `read_format`.
    pub(crate) fn from_owned_fd(fd: OwnedFd, read_format: u64) -> Event {
        Event { fd, read_format }
    }

    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `PERF_EVENT_IOC_ENABLE`: arm the event (and its inherited copies).
    pub fn enable(&self) -> io::Result<()> {
        // SAFETY: our own valid perf fd; the argument is an integer flag.
        Self::check(unsafe { sys::ioctls::ENABLE(self.fd.as_raw_fd(), 0) })
    }

    /// `PERF_EVENT_IOC_DISABLE`: disarm; the slot stays booked.
    pub fn disable(&self) -> io::Result<()> {
        // SAFETY: our own valid perf fd; the argument is an integer flag.
        Self::check(unsafe { sys::ioctls::DISABLE(self.fd.as_raw_fd(), 0) })
    }

    /// `PERF_EVENT_IOC_RESET`: zero the count.
    pub fn reset(&self) -> io::Result<()> {
        // SAFETY: our own valid perf fd; the argument is an integer flag.
        Self::check(unsafe { sys::ioctls::RESET(self.fd.as_raw_fd(), 0) })
    }

    /// `PERF_EVENT_IOC_MODIFY_ATTRIBUTES` (Linux 4.17): change address, length,
    /// access or disabled in place, on this event and its inherited copies.
    /// `attr` must equal the attr the event was opened with except for those
    /// fields (build it with [`EventAttr::with_bp`]).
    pub fn modify(&self, attr: &EventAttr) -> io::Result<()> {
        let mut a = attr.0;
        // SAFETY: our own perf fd; `a` is a valid attr the kernel copies during the call.
        Self::check(unsafe { sys::ioctls::MODIFY_ATTRIBUTES(self.fd.as_raw_fd(), &mut a) })
    }

    /// `PERF_EVENT_IOC_SET_BPF`: run BPF program `prog_fd` (of type
    /// `BPF_PROG_TYPE_PERF_EVENT`) at every hit; its result 0 drops the
    /// sample. Inherited copies made later take the program too.
    pub fn set_bpf(&self, prog_fd: RawFd) -> io::Result<()> {
        // SAFETY: our own valid perf fd; the argument is a program fd (an integer).
        Self::check(unsafe { sys::ioctls::SET_BPF(self.fd.as_raw_fd(), prog_fd as u32) })
    }

    /// `PERF_EVENT_IOC_SET_OUTPUT`: send this event's records to `target`'s ring
    /// (same CPU, or same task for per-task rings).
    pub fn set_output(&self, target: &Event) -> io::Result<()> {
        // SAFETY: both fds are our own open perf events.
        Self::check(unsafe { sys::ioctls::SET_OUTPUT(self.fd.as_raw_fd(), target.fd.as_raw_fd()) })
    }

    /// `PERF_EVENT_IOC_ID`: the kernel id that samples carry in `PERF_SAMPLE_ID`.
    pub fn id(&self) -> io::Result<u64> {
        let mut id = 0u64;
        // SAFETY: our own perf fd; the kernel writes one u64 to `id`, which outlives the call.
        Self::check(unsafe { sys::ioctls::ID(self.fd.as_raw_fd(), &mut id) })?;
        Ok(id)
    }

    /// Read the counter (see [`Count`]). The event must have been opened with
    /// [`READ_FORMAT`] (every [`EventAttr`] is), optionally plus `read_lost`.
    pub fn read_count(&self) -> io::Result<Count> {
        let mut buf = [0u64; 5];
        let want = if self.read_format & sys::bindings::PERF_FORMAT_LOST as u64 != 0 {
            40
        } else {
            32
        };
        // SAFETY: our own perf fd; `buf` has 40 writable bytes, at least `want`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("perf read returned {n} bytes, expected {want}"),
            ));
        }
        Ok(Count {
            value: buf[0],
            time_enabled: buf[1],
            time_running: buf[2],
            id: buf[3],
            lost: buf[4],
        })
    }
}

impl AsRawFd for Event {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
