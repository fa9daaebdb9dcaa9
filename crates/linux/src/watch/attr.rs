//! The request's *what*, in perf's terms: a [`Watch`] (a name and core's
//! `BpAttr`), the [`Mode`] and [`Callchain`] it is sampled with, and the
//! `perf_event_attr` built from them (`event_attr`). No system call here
//! except the one-time probe of the kernel's `PERF_FORMAT_LOST` support.

use crate::event::{Event, EventAttr};
use hwbreak_core::attr::BpAttr;
use perf_event_open_sys::bindings as b;

/// Slots the x86-64 hardware has per thread and CPU (core's arch rules own
/// the number).
pub const HW_SLOTS: usize = hwbreak_core::arch::x86_64::NUM_SLOTS;

/// What to do with hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exact counts only (no ring buffer), read with [`super::Watcher::counts`].
    Count,
    /// A record per hit, read with [`super::Watcher::drain`].
    Sample {
        /// Whether and how to record the callchain.
        callchain: Callchain,
        /// Record every user register and at least 8 KiB of user stack, for
        /// DWARF unwinding.
        user_regs_stack: bool,
    },
}

/// How a sampled hit gets its callchain (`Extension::stack` of a drained hit): the IP,
/// then return addresses, innermost first. They differ in how the caller
/// frames are found, in cost and in depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callchain {
    /// No callchain.
    Off,
    /// The kernel walks the frame pointers at the hit
    /// (`PERF_SAMPLE_CALLCHAIN`, up to `perf_event_max_stack` frames). The
    /// walk ends by reading the outermost frame, which is 0 in glibc
    /// programs, so it takes a (caught) page fault at every hit: about
    /// 0.5 µs on this VM. Code without frame pointers (glibc's `memset`)
    /// hides its caller from this walk.
    Kernel,
    /// The kernel copies BP, SP, IP and `stack_bytes` of the user stack
    /// (`PERF_SAMPLE_REGS_USER` + `PERF_SAMPLE_STACK_USER`) and the drain
    /// unwinds the copy ([`crate::unwind`]): for a thread or process target
    /// with the modules' DWARF call-frame information (`.eh_frame`, which
    /// also steps through code without frame pointers), for a CPU target
    /// (any process) with the frame pointers. No fault, but frames above
    /// the copy are cut, and the hit says so
    /// (`Extension::stack_truncated` of a drained hit). `stack_bytes` is a multiple of 8,
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

/// Perf's x86-64 register number (`PERF_REG_X86_*`) of BP.
pub(crate) const PERF_REG_X86_BP: u32 = 6;
/// Perf's register number of SP.
pub(crate) const PERF_REG_X86_SP: u32 = 7;
/// Perf's register number of IP.
pub(crate) const PERF_REG_X86_IP: u32 = 8;
/// The registers a copied-stack walk needs: BP, SP and IP.
pub(crate) const FP_WALK_REGS_MASK: u64 =
    1 << PERF_REG_X86_BP | 1 << PERF_REG_X86_SP | 1 << PERF_REG_X86_IP;

/// A named watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Name shown in errors and output (e.g. the symbol).
    pub name: String,
    /// What to watch.
    pub attr: BpAttr,
}

/// The deepest callchain the kernel records, capped at 127.
pub(crate) fn max_stack() -> u16 {
    crate::procfs::perf_event_max_stack()
}

/// x86-64 user registers for DWARF unwinding: every `PERF_REG_X86_*` up to R15
/// except DS, ES, FS, GS, which x86-64 refuses.
pub const X86_64_REGS_USER_MASK: u64 = 0x00ff_0fff;

/// What each sample carries in `mode`, plus the user registers `extra_regs`
/// (`None` when counting).
pub(crate) fn sample_layout(mode: Mode, extra_regs: u64) -> Option<SampleSpec> {
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
pub(crate) struct SampleSpec {
    /// `PERF_SAMPLE_*` bits.
    pub sample_type: u64,
    /// The `PERF_REG_X86_*` registers recorded.
    pub regs_mask: u64,
    /// User stack bytes copied per sample (0: none).
    pub stack_bytes: u32,
}

/// Whether the kernel takes `PERF_FORMAT_LOST` (Linux 6.0), probed once
/// with a dummy event on this thread.
pub(crate) fn kernel_reads_lost() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| Event::open(&EventAttr::dummy().read_lost(true), 0, -1, None).is_ok())
}

/// Stamp samples with `CLOCK_MONOTONIC` (`use_clockid`), so that hit times
/// compare with `clock_gettime` (the default perf clock is the scheduler's).
pub(crate) fn set_monotonic_clock(a: &mut EventAttr) {
    a.raw_mut().set_use_clockid(1);
    a.raw_mut().clockid = libc::CLOCK_MONOTONIC;
}

/// Build the event attr for one watch in one mode.
pub(crate) fn event_attr(w: &Watch, spec: Option<SampleSpec>, ring_bytes: u32) -> EventAttr {
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
        if kernel_reads_lost() {
            a = a.read_lost(true);
        }
    }
    a
}

/// The `PERF_SAMPLE_*` bits that shape the `sample_id_all` trailer of
/// non-sample records (`perf_event__id_header_size`).
const SAMPLE_ID_BITS: u64 = (b::PERF_SAMPLE_TID
    | b::PERF_SAMPLE_TIME
    | b::PERF_SAMPLE_ID
    | b::PERF_SAMPLE_STREAM_ID
    | b::PERF_SAMPLE_CPU
    | b::PERF_SAMPLE_IDENTIFIER) as u64;

/// The side-band event of a sampling request, if it needs one: a dummy
/// software event (it never samples) that carries the non-hit records,
/// thread creation and exit (`task_events`) and, for a launched program,
/// where it maps code (`PERF_RECORD_MMAP2`: the drain unwinds copied stacks
/// with it, and a reader can symbolize the hits of a program already gone
/// from /proc). It writes to the same per-CPU rings as the breakpoints,
/// with the same record trailer, but from an event of its own, so that
/// the kernel charges its lost records to it (`PERF_FORMAT_LOST`) and
/// never to a watch: a watch's lost count is lost hits only.
pub(crate) fn side_band_attr(
    spec: Option<SampleSpec>,
    task_events: bool,
    launch: bool,
) -> Option<EventAttr> {
    let spec = spec?;
    if !task_events && !launch {
        return None;
    }
    let mut a = EventAttr::dummy()
        .disabled(true)
        .sample_type(spec.sample_type & SAMPLE_ID_BITS)
        .sample_id_all(true)
        .task_events(task_events);
    set_monotonic_clock(&mut a);
    if launch {
        a.raw_mut().set_mmap(1);
        a.raw_mut().set_mmap2(1);
    }
    if kernel_reads_lost() {
        a = a.read_lost(true);
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_user_regs_mask_excludes_segment_registers() {
        // DS, ES, FS, GS are PERF_REG_X86 12..15; x86-64 refuses them.
        assert_eq!(X86_64_REGS_USER_MASK & (0xf << 12), 0);
        assert_eq!(X86_64_REGS_USER_MASK.count_ones(), 20);
    }
}
