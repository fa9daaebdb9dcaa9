//! The perf ring-buffer record parser: bytes in, typed records out.
//!
//! Pure and total: any input (a corrupted ring, a fuzzer) yields a record or
//! `None`, never a panic or an out-of-bounds read. Records are parsed from a
//! slice of `u64` words (perf pads every record to 8 bytes and the ring is
//! page-aligned), so a sample's callchain is a zero-copy `&[u64]` into it.
//!
//! Layouts follow `include/uapi/linux/perf_event.h` (`enum perf_event_type`).

use perf_event_open_sys::bindings as b;

/// Register `reg` (`PERF_REG_X86_*` number) of a sample's `regs`, which
/// holds the registers of `mask` in bit order; `None` if not recorded.
pub(crate) fn user_reg(regs: &[u64], mask: u64, reg: u32) -> Option<u64> {
    if reg >= 64 || mask & (1 << reg) == 0 {
        return None;
    }
    regs.get((mask & ((1u64 << reg) - 1)).count_ones() as usize)
        .copied()
}

/// `PERF_SAMPLE_*` bits this parser understands. Others are refused by
/// [`SampleLayout::new`] because their sizes would need more state.
pub const SUPPORTED_SAMPLE_BITS: u64 = (b::PERF_SAMPLE_IDENTIFIER
    | b::PERF_SAMPLE_IP
    | b::PERF_SAMPLE_TID
    | b::PERF_SAMPLE_TIME
    | b::PERF_SAMPLE_ADDR
    | b::PERF_SAMPLE_ID
    | b::PERF_SAMPLE_STREAM_ID
    | b::PERF_SAMPLE_CPU
    | b::PERF_SAMPLE_PERIOD
    | b::PERF_SAMPLE_CALLCHAIN
    | b::PERF_SAMPLE_REGS_USER
    | b::PERF_SAMPLE_STACK_USER) as u64;

/// Callchain entries at or above this value are context markers
/// (`PERF_CONTEXT_USER`, `PERF_CONTEXT_KERNEL` ...), not addresses.
pub const PERF_CONTEXT_MAX: u64 = b::PERF_CONTEXT_MAX;

/// What the records of one ring carry: the event's `sample_type`, whether
/// `sample_id_all` is set, and how many registers `sample_regs_user` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleLayout {
    /// `PERF_SAMPLE_*` bits.
    pub sample_type: u64,
    /// Non-sample records carry the sample-id trailer.
    pub sample_id_all: bool,
    /// Number of user registers per sample (popcount of `sample_regs_user`).
    pub regs_user: u32,
}

impl SampleLayout {
    /// A layout, or `None` if `sample_type` has bits this parser cannot size.
    pub fn new(sample_type: u64, sample_id_all: bool, regs_user_mask: u64) -> Option<Self> {
        if sample_type & !SUPPORTED_SAMPLE_BITS != 0 {
            return None;
        }
        Some(SampleLayout {
            sample_type,
            sample_id_all,
            regs_user: regs_user_mask.count_ones(),
        })
    }

    fn has(&self, bit: u32) -> bool {
        self.sample_type & bit as u64 != 0
    }

    /// Words in the sample-id trailer of non-sample records.
    pub fn trailer_words(&self) -> usize {
        if !self.sample_id_all {
            return 0;
        }
        [
            b::PERF_SAMPLE_TID,
            b::PERF_SAMPLE_TIME,
            b::PERF_SAMPLE_ID,
            b::PERF_SAMPLE_STREAM_ID,
            b::PERF_SAMPLE_CPU,
            b::PERF_SAMPLE_IDENTIFIER,
        ]
        .iter()
        .filter(|&&bit| self.has(bit))
        .count()
    }
}

/// One sample (`PERF_RECORD_SAMPLE`). Fields the layout does not carry are 0 / empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample<'a> {
    /// The id of the event that fired (for inherited copies, the id of the
    /// event we opened: the kernel reports the primary id).
    pub id: u64,
    /// Instruction pointer. x86 data breakpoints trap after the access, so
    /// this is the instruction *after* the one that wrote.
    pub ip: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `perf_clock` nanoseconds.
    pub time: u64,
    /// The watched address that was hit (the breakpoint's `bp_addr`).
    pub addr: u64,
    /// The CPU it ran on.
    pub cpu: u32,
    /// Period (1 for breakpoints).
    pub period: u64,
    /// Callchain as the kernel wrote it, context markers included.
    pub callchain: &'a [u64],
    /// `PERF_SAMPLE_REGS_USER` ABI (0 = none, 2 = 64-bit).
    pub regs_abi: u64,
    /// User registers, in `sample_regs_user` bit order.
    pub regs: &'a [u64],
    /// User stack bytes copied from the stack pointer upwards.
    pub stack: &'a [u8],
    /// Bytes of `stack` that are valid (`dyn_size`).
    pub stack_dyn_size: u64,
}

impl<'a> Sample<'a> {
    /// The callchain without leading context markers (`PERF_CONTEXT_USER`),
    /// as a sub-slice (zero copy). Markers further in are left in place; see
    /// [`is_context_marker`].
    pub fn user_callchain(&self) -> &'a [u64] {
        let skip = self
            .callchain
            .iter()
            .take_while(|&&ip| is_context_marker(ip))
            .count();
        &self.callchain[skip..]
    }
}

/// Whether a callchain entry is a `PERF_CONTEXT_*` marker.
pub fn is_context_marker(ip: u64) -> bool {
    ip >= PERF_CONTEXT_MAX
}

/// A task event (`PERF_RECORD_FORK` / `PERF_RECORD_EXIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskEvent {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent (creating) thread id.
    pub ptid: u32,
    /// Time.
    pub time: u64,
}

/// A context switch (`PERF_RECORD_SWITCH` / `PERF_RECORD_SWITCH_CPU_WIDE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchEvent {
    /// The thread switched out (`true`) or in.
    pub out: bool,
    /// Switched out while still runnable: preempted (`PERF_RECORD_MISC_SWITCH_OUT_PREEMPT`,
    /// Linux ≥ 4.17). False for a voluntary switch and for every switch-in.
    pub preempt: bool,
    /// CPU-wide records only: the thread switched to (`out`) or from, as
    /// `(pid, tid)`.
    pub other: Option<(u32, u32)>,
    /// Process id of the thread the record is about (sample-id trailer).
    pub pid: u32,
    /// Its thread id.
    pub tid: u32,
    /// When (the event's clock).
    pub time: u64,
    /// Which CPU.
    pub cpu: u32,
}

/// The sample-id trailer of a non-sample record (`sample_id_all`): the
/// fields `layout` carries, in the kernel's order, from `c`.
fn parse_trailer(layout: &SampleLayout, c: &mut Cursor<'_>, e: &mut SwitchEvent) -> Option<()> {
    if !layout.sample_id_all {
        return Some(());
    }
    if layout.has(b::PERF_SAMPLE_TID) {
        (e.pid, e.tid) = c.u32x2()?;
    }
    if layout.has(b::PERF_SAMPLE_TIME) {
        e.time = c.u64()?;
    }
    for bit in [b::PERF_SAMPLE_ID, b::PERF_SAMPLE_STREAM_ID] {
        if layout.has(bit) {
            c.u64()?;
        }
    }
    if layout.has(b::PERF_SAMPLE_CPU) {
        e.cpu = c.u32x2()?.0;
    }
    Some(())
}

/// A parsed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A hit.
    Sample(Sample<'a>),
    /// The kernel dropped `lost` records because the ring was full.
    Lost {
        /// Event id.
        id: u64,
        /// How many records were dropped.
        lost: u64,
    },
    /// The kernel throttled (`unthrottle = false`) or resumed an event.
    Throttle {
        /// Time.
        time: u64,
        /// Event id.
        id: u64,
        /// `PERF_RECORD_UNTHROTTLE` rather than `THROTTLE`.
        unthrottle: bool,
    },
    /// A thread or process was created.
    Fork(TaskEvent),
    /// A thread or process exited.
    Exit(TaskEvent),
    /// A thread's name changed (or `exec`).
    Comm {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// The new name (without the NUL).
        name: &'a [u8],
    },
    /// A file was mapped (`PERF_RECORD_MMAP2`; executable mappings only
    /// unless `mmap_data` is set): where a library's code now lies.
    Mmap {
        /// Process id.
        pid: u32,
        /// First address.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// File offset mapped at `addr`.
        pgoff: u64,
        /// `PROT_*` bits.
        prot: u32,
        /// The mapped file's path (without the NUL).
        filename: &'a [u8],
    },
    /// A context switch of a watched thread (`PERF_RECORD_SWITCH`, or
    /// `PERF_RECORD_SWITCH_CPU_WIDE` for a CPU-wide event, which also names
    /// the other thread). Who, when and where come from the sample-id
    /// trailer (0 where the layout lacks them).
    Switch(SwitchEvent),
    /// A record type this parser does not decode.
    Other {
        /// `perf_event_header.type`.
        kind: u32,
    },
}

/// The 8-byte `perf_event_header` packed in one little-endian word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `type`.
    pub kind: u32,
    /// `misc`.
    pub misc: u16,
    /// `size` in bytes, header included.
    pub size: u16,
}

impl Header {
    /// Split the first word of a record.
    pub fn from_word(w: u64) -> Header {
        Header {
            kind: w as u32,
            misc: (w >> 32) as u16,
            size: (w >> 48) as u16,
        }
    }
}

/// A cursor over words that never reads out of bounds.
struct Cursor<'a> {
    w: &'a [u64],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn u64(&mut self) -> Option<u64> {
        let v = *self.w.get(self.i)?;
        self.i += 1;
        Some(v)
    }
    fn u32x2(&mut self) -> Option<(u32, u32)> {
        let v = self.u64()?;
        Some((v as u32, (v >> 32) as u32))
    }
    fn take(&mut self, n: u64) -> Option<&'a [u64]> {
        let n = usize::try_from(n).ok()?;
        let end = self.i.checked_add(n)?;
        let s = self.w.get(self.i..end)?;
        self.i = end;
        Some(s)
    }
}

/// Parse one record from `words` (header word first; `words.len()` must be
/// `header.size / 8`). Returns `None` if the record is malformed.
pub fn parse<'a>(layout: &SampleLayout, words: &'a [u64]) -> Option<Record<'a>> {
    let hdr = Header::from_word(*words.first()?);
    let n = hdr.size as usize;
    if n < 8 || !n.is_multiple_of(8) || n / 8 > words.len() {
        return None;
    }
    let body = &words[1..n / 8];
    let mut c = Cursor { w: body, i: 0 };
    let rec = match hdr.kind {
        b::PERF_RECORD_SAMPLE => Record::Sample(parse_sample(layout, &mut c)?),
        b::PERF_RECORD_LOST => Record::Lost {
            id: c.u64()?,
            lost: c.u64()?,
        },
        b::PERF_RECORD_THROTTLE | b::PERF_RECORD_UNTHROTTLE => Record::Throttle {
            time: c.u64()?,
            id: c.u64()?,
            unthrottle: hdr.kind == b::PERF_RECORD_UNTHROTTLE,
        },
        b::PERF_RECORD_FORK | b::PERF_RECORD_EXIT => {
            let (pid, ppid) = c.u32x2()?;
            let (tid, ptid) = c.u32x2()?;
            let t = TaskEvent {
                pid,
                ppid,
                tid,
                ptid,
                time: c.u64()?,
            };
            if hdr.kind == b::PERF_RECORD_FORK {
                Record::Fork(t)
            } else {
                Record::Exit(t)
            }
        }
        b::PERF_RECORD_COMM => {
            let (pid, tid) = c.u32x2()?;
            let name_words = body.len().checked_sub(1 + layout.trailer_words())?;
            let bytes: &[u8] = bytemuck::cast_slice(c.take(name_words as u64)?);
            let end = bytes.iter().position(|&x| x == 0).unwrap_or(bytes.len());
            Record::Comm {
                pid,
                tid,
                name: &bytes[..end],
            }
        }
        b::PERF_RECORD_MMAP2 => {
            let (pid, _tid) = c.u32x2()?;
            let (addr, len, pgoff) = (c.u64()?, c.u64()?, c.u64()?);
            c.take(3)?; // device and inode, or build id
            let (prot, _flags) = c.u32x2()?;
            let name_words = body.len().checked_sub(8 + layout.trailer_words())?;
            let bytes: &[u8] = bytemuck::cast_slice(c.take(name_words as u64)?);
            let end = bytes.iter().position(|&x| x == 0).unwrap_or(bytes.len());
            Record::Mmap {
                pid,
                addr,
                len,
                pgoff,
                prot,
                filename: &bytes[..end],
            }
        }
        b::PERF_RECORD_SWITCH | b::PERF_RECORD_SWITCH_CPU_WIDE => {
            let out = hdr.misc & b::PERF_RECORD_MISC_SWITCH_OUT as u16 != 0;
            let mut e = SwitchEvent {
                out,
                preempt: out && hdr.misc & b::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT as u16 != 0,
                other: None,
                pid: 0,
                tid: 0,
                time: 0,
                cpu: 0,
            };
            if hdr.kind == b::PERF_RECORD_SWITCH_CPU_WIDE {
                e.other = Some(c.u32x2()?);
            }
            parse_trailer(layout, &mut c, &mut e)?;
            Record::Switch(e)
        }
        kind => Record::Other { kind },
    };
    Some(rec)
}

fn parse_sample<'a>(l: &SampleLayout, c: &mut Cursor<'a>) -> Option<Sample<'a>> {
    let mut s = Sample::default();
    if l.has(b::PERF_SAMPLE_IDENTIFIER) {
        s.id = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_IP) {
        s.ip = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_TID) {
        (s.pid, s.tid) = c.u32x2()?;
    }
    if l.has(b::PERF_SAMPLE_TIME) {
        s.time = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_ADDR) {
        s.addr = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_ID) {
        s.id = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_STREAM_ID) {
        c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_CPU) {
        s.cpu = c.u32x2()?.0;
    }
    if l.has(b::PERF_SAMPLE_PERIOD) {
        s.period = c.u64()?;
    }
    if l.has(b::PERF_SAMPLE_CALLCHAIN) {
        let nr = c.u64()?;
        s.callchain = c.take(nr)?;
    }
    if l.has(b::PERF_SAMPLE_REGS_USER) {
        s.regs_abi = c.u64()?;
        if s.regs_abi != 0 {
            s.regs = c.take(l.regs_user as u64)?;
        }
    }
    if l.has(b::PERF_SAMPLE_STACK_USER) {
        let size = c.u64()?;
        if size != 0 {
            // The kernel rounds the dump to whole words.
            let words = c.take(size.div_ceil(8))?;
            let bytes: &[u8] = bytemuck::cast_slice(words);
            s.stack = &bytes[..(size as usize).min(bytes.len())];
            s.stack_dyn_size = c.u64()?;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(kind: u32, words: usize) -> u64 {
        kind as u64 | ((words as u64 * 8) << 48)
    }

    #[test]
    fn switch_records_give_direction_preemption_the_other_thread_and_the_trailer() {
        // TID, TIME, ID and CPU in the trailer, as the watcher asks.
        let st = (b::PERF_SAMPLE_TID | b::PERF_SAMPLE_TIME | b::PERF_SAMPLE_ID | b::PERF_SAMPLE_CPU)
            as u64;
        let l = SampleLayout::new(st, true, 0).unwrap();
        let misc = |m: u32| (m as u64) << 32;
        let trailer = [(12u64 << 32) | 11, 900, 77, 3];
        let out_preempt = b::PERF_RECORD_MISC_SWITCH_OUT | b::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT;
        let mut w = vec![hdr(b::PERF_RECORD_SWITCH, 5) | misc(out_preempt)];
        w.extend(trailer);
        let want = SwitchEvent {
            out: true,
            preempt: true,
            other: None,
            pid: 11,
            tid: 12,
            time: 900,
            cpu: 3,
        };
        assert_eq!(parse(&l, &w), Some(Record::Switch(want)));
        // A switch-in never counts as preempted, whatever misc says.
        w[0] = hdr(b::PERF_RECORD_SWITCH, 5) | misc(b::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT);
        let Some(Record::Switch(e)) = parse(&l, &w) else {
            panic!()
        };
        assert_eq!((e.out, e.preempt), (false, false));
        // CPU-wide: the other thread comes first.
        let mut w = vec![
            hdr(b::PERF_RECORD_SWITCH_CPU_WIDE, 6) | misc(b::PERF_RECORD_MISC_SWITCH_OUT),
            (21u64 << 32) | 20,
        ];
        w.extend(trailer);
        let Some(Record::Switch(e)) = parse(&l, &w) else {
            panic!()
        };
        assert_eq!(
            (e.out, e.preempt, e.other, e.tid),
            (true, false, Some((20, 21)), 12)
        );
        // Cut short: refused.
        assert_eq!(
            parse(&l, &[hdr(b::PERF_RECORD_SWITCH_CPU_WIDE, 2) | misc(0), 0]),
            None
        );
    }

    #[test]
    fn mmap2_gives_the_mapping_and_its_path() {
        let l = SampleLayout::new(b::PERF_SAMPLE_TID as u64, false, 0).unwrap();
        let mut name = [0u8; 16];
        name[..13].copy_from_slice(b"/lib/libc.so6");
        let n: [u64; 2] = bytemuck::cast(name);
        let w = [
            hdr(b::PERF_RECORD_MMAP2, 11),
            7 | (8 << 32),
            0x7f00_0000_0000,
            0x1000,
            0x2000,
            1,
            2,
            3,
            5,
            n[0],
            n[1],
        ];
        assert_eq!(
            parse(&l, &w),
            Some(Record::Mmap {
                pid: 7,
                addr: 0x7f00_0000_0000,
                len: 0x1000,
                pgoff: 0x2000,
                prot: 5,
                filename: b"/lib/libc.so6",
            })
        );
        // Cut short: refused, not read past.
        assert_eq!(parse(&l, &w[..8]), None);
    }

    #[test]
    fn sample_with_callchain_parses_zero_copy() {
        let st = (b::PERF_SAMPLE_IP
            | b::PERF_SAMPLE_TID
            | b::PERF_SAMPLE_TIME
            | b::PERF_SAMPLE_ADDR
            | b::PERF_SAMPLE_ID
            | b::PERF_SAMPLE_CALLCHAIN) as u64;
        let l = SampleLayout::new(st, true, 0).unwrap();
        let ctx_user = (-512i64) as u64;
        let w = [
            hdr(b::PERF_RECORD_SAMPLE, 10),
            0x401000,
            (7u64 << 32) | 5,
            99,
            0x601040,
            42,
            3,
            ctx_user,
            0x401000,
            0x400500,
        ];
        let Some(Record::Sample(s)) = parse(&l, &w) else {
            panic!("not a sample")
        };
        assert_eq!(
            (s.ip, s.pid, s.tid, s.time, s.addr, s.id),
            (0x401000, 5, 7, 99, 0x601040, 42)
        );
        assert_eq!(s.user_callchain(), &[0x401000, 0x400500]);
        assert!(std::ptr::eq(s.callchain.as_ptr(), &w[7]));
    }

    #[test]
    fn truncated_or_oversized_records_are_refused() {
        let l = SampleLayout::new(b::PERF_SAMPLE_CALLCHAIN as u64, false, 0).unwrap();
        // nr = 1000 but only 1 word follows.
        let w = [hdr(b::PERF_RECORD_SAMPLE, 3), 1000, 5];
        assert_eq!(parse(&l, &w), None);
        // size larger than the slice.
        assert_eq!(parse(&l, &[hdr(b::PERF_RECORD_LOST, 9), 1, 2]), None);
        // size zero.
        assert_eq!(parse(&l, &[0]), None);
    }

    #[test]
    fn lost_fork_comm_parse() {
        let l =
            SampleLayout::new((b::PERF_SAMPLE_TID | b::PERF_SAMPLE_TIME) as u64, true, 0).unwrap();
        assert_eq!(l.trailer_words(), 2);
        let w = [hdr(b::PERF_RECORD_LOST, 5), 9, 17, 0, 0];
        assert_eq!(parse(&l, &w), Some(Record::Lost { id: 9, lost: 17 }));
        let w = [
            hdr(b::PERF_RECORD_FORK, 6),
            (1u64 << 32) | 2,
            (3u64 << 32) | 4,
            5,
            0,
            0,
        ];
        assert_eq!(
            parse(&l, &w),
            Some(Record::Fork(TaskEvent {
                pid: 2,
                ppid: 1,
                tid: 4,
                ptid: 3,
                time: 5
            }))
        );
        let name = u64::from_le_bytes(*b"worker\0\0");
        let w = [hdr(b::PERF_RECORD_COMM, 5), (2u64 << 32) | 2, name, 0, 0];
        assert_eq!(
            parse(&l, &w),
            Some(Record::Comm {
                pid: 2,
                tid: 2,
                name: b"worker"
            })
        );
    }

    #[test]
    fn unsupported_sample_bits_are_refused() {
        assert!(SampleLayout::new(b::PERF_SAMPLE_RAW as u64, false, 0).is_none());
    }
}
