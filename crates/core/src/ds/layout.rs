//! What the hardware sees: the 64-bit DS save area, the DEBUGCTL bits that
//! drive Branch Trace Store, and the records BTS and PEBS write.
//!
//! From the Intel SDM, vol. 3B, "Debug Store (DS) Mechanism" (64-bit DS save
//! area, 64-bit BTS record) and "Adaptive PEBS" (basic and memory-info
//! groups). The DS save area is memory the OS allocates; `IA32_DS_AREA`
//! holds its linear address. Every field is a 64-bit linear address or value:
//!
//! | offset | field                              |
//! |-------:|------------------------------------|
//! | 0x00   | BTS buffer base                    |
//! | 0x08   | BTS index (next record to write)   |
//! | 0x10   | BTS absolute maximum (byte past the buffer) |
//! | 0x18   | BTS interrupt threshold            |
//! | 0x20   | PEBS buffer base                   |
//! | 0x28   | PEBS index                         |
//! | 0x30   | PEBS absolute maximum              |
//! | 0x38   | PEBS interrupt threshold           |
//! | 0x40 + 8·i | PEBS counter reset value, GP counter i (0..8), then fixed counters 0..4 at 0x80 |

/// A field of the 64-bit DS save area, as its byte offset from `IA32_DS_AREA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DsField(pub u64);

impl DsField {
    /// BTS buffer base: the first record's linear address.
    pub const BTS_BASE: DsField = DsField(0x00);
    /// BTS index: where the next record is written.
    pub const BTS_INDEX: DsField = DsField(0x08);
    /// BTS absolute maximum: the byte past the buffer's end.
    pub const BTS_ABS_MAX: DsField = DsField(0x10);
    /// BTS interrupt threshold: with `BTINT`, reaching it raises a PMI.
    pub const BTS_THRESHOLD: DsField = DsField(0x18);
    /// PEBS buffer base.
    pub const PEBS_BASE: DsField = DsField(0x20);
    /// PEBS index.
    pub const PEBS_INDEX: DsField = DsField(0x28);
    /// PEBS absolute maximum.
    pub const PEBS_ABS_MAX: DsField = DsField(0x30);
    /// PEBS interrupt threshold.
    pub const PEBS_THRESHOLD: DsField = DsField(0x38);

    /// The reset value reloaded into general-purpose counter `i` (0..8) after
    /// each PEBS record it causes.
    pub const fn pebs_reset(i: u64) -> DsField {
        DsField(0x40 + 8 * i)
    }
}

/// Bytes in a 64-bit DS save area with 8 general-purpose and 4 fixed PEBS
/// counter reset values (what Linux's `struct debug_store` holds).
pub const DS_AREA_BYTES: usize = 0x40 + 8 * (8 + 4);

/// Model-specific registers the debug store is driven through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Msr {
    /// `IA32_DS_AREA` (0x600): linear address of the DS save area.
    DsArea,
    /// `IA32_DEBUGCTL` (0x1D9): LBR, TR, BTS, BTINT, BTS_OFF_OS, BTS_OFF_USR.
    DebugCtl,
    /// `IA32_PEBS_ENABLE` (0x3F1): bit i enables PEBS on GP counter i.
    PebsEnable,
    /// `IA32_PMC0` (0xC1): general-purpose counter 0 (48 bits wide here).
    Pmc0,
}

impl Msr {
    /// The architectural MSR number.
    pub fn number(self) -> u32 {
        match self {
            Msr::DsArea => 0x600,
            Msr::DebugCtl => 0x1d9,
            Msr::PebsEnable => 0x3f1,
            Msr::Pmc0 => 0xc1,
        }
    }
}

/// `IA32_DEBUGCTL` bits (SDM "IA32_DEBUGCTL MSR").
pub mod debugctl {
    /// Last-branch record stack on.
    pub const LBR: u64 = 1 << 0;
    /// Trace messages on (BTS needs TR and BTS).
    pub const TR: u64 = 1 << 6;
    /// Branch trace messages go to the BTS buffer.
    pub const BTS: u64 = 1 << 7;
    /// Interrupt (PMI) at the threshold; clear = circular buffer, no interrupt.
    pub const BTINT: u64 = 1 << 8;
    /// Skip branches taken at CPL 0 (needs DS-CPL, `CPUID.01H:ECX[4]`).
    pub const BTS_OFF_OS: u64 = 1 << 9;
    /// Skip branches taken at CPL > 0 (needs DS-CPL).
    pub const BTS_OFF_USR: u64 = 1 << 10;
    /// Every bit the debug store manager owns.
    pub const BTS_BITS: u64 = TR | BTS | BTINT | BTS_OFF_OS | BTS_OFF_USR;
}

/// Bytes in one 64-bit BTS record.
pub const BTS_RECORD_BYTES: usize = 24;

/// `flags` bit 4 of a hardware BTS record: the branch was predicted.
pub const BTS_PREDICTED: u64 = 1 << 4;

/// The magic in `flags` bits 56..64 that marks a record software wrote in
/// the BTS format (hardware leaves bits 5..64 reserved, zero).
const MAGIC_SHIFT: u32 = 56;
/// `departs` record (the task left the CPU): `from` = its ip, `to` = time.
pub const MAGIC_DEPARTS: u64 = 0xd1;
/// `arrives` record (the task got the CPU): `from` = time, `to` = its ip.
pub const MAGIC_ARRIVES: u64 = 0xa1;
/// Added to a departs/arrives magic for an involuntary (preempted) switch.
pub const MAGIC_PREEMPTED: u64 = 0x01;

/// One 64-bit BTS record: the SDM's 24-byte `{from, to, flags}`, and the
/// `departs`/`arrives` records software writes in the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BtsRecord {
    /// Last branch from (linear address), or for `arrives`, the time.
    pub from: u64,
    /// Last branch to, or for `departs`, the time.
    pub to: u64,
    /// Bit 4: predicted. Bits 56..64: 0 for a branch, else a switch magic.
    pub flags: u64,
}

/// What a [`BtsRecord`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BtsKind {
    /// A taken branch `from → to`.
    Branch,
    /// The task left the CPU at ip `from`, at time `to`.
    Departs {
        /// It blocked or yielded (false: it was preempted).
        voluntary: bool,
    },
    /// The task got the CPU at time `from`, resuming at ip `to`.
    Arrives {
        /// The switch was voluntary on the outgoing side.
        voluntary: bool,
    },
    /// Flags this crate does not write (a hardware record never has them).
    Unknown,
}

impl BtsRecord {
    /// A taken branch.
    pub const fn branch(from: u64, to: u64) -> Self {
        BtsRecord { from, to, flags: 0 }
    }

    /// "departs: {from = ip, to = time, flag = MAGIC1}".
    pub const fn departs(ip: u64, time: u64, voluntary: bool) -> Self {
        let m = MAGIC_DEPARTS + if voluntary { 0 } else { MAGIC_PREEMPTED };
        BtsRecord {
            from: ip,
            to: time,
            flags: m << MAGIC_SHIFT,
        }
    }

    /// "arrives: {from = time, to = ip, flag = MAGIC2}".
    pub const fn arrives(time: u64, ip: u64, voluntary: bool) -> Self {
        let m = MAGIC_ARRIVES + if voluntary { 0 } else { MAGIC_PREEMPTED };
        BtsRecord {
            from: time,
            to: ip,
            flags: m << MAGIC_SHIFT,
        }
    }

    /// The BTS-format twin of a context-switch record of the general event
    /// buffer (`crate::events::Record::Switch`): [`departs`](Self::departs)
    /// or [`arrives`](Self::arrives) of the task's `ip` at `time`.
    ///
    /// ```
    /// use hwbreak_core::ds::{BtsKind, BtsRecord};
    /// use hwbreak_core::events::Record;
    /// let r = Record::Switch { cpu: hwbreak_core::CpuId(0), task: hwbreak_core::TaskId(3),
    ///                          departs: true, voluntary: false, time: 90, ip: 0x40_0010 };
    /// let Record::Switch { departs, ip, time, voluntary, .. } = r else { unreachable!() };
    /// let b = BtsRecord::switch(departs, ip, time, voluntary);
    /// assert_eq!((b.from, b.to, b.kind()), (0x40_0010, 90, BtsKind::Departs { voluntary: false }));
    /// ```
    pub const fn switch(departs: bool, ip: u64, time: u64, voluntary: bool) -> Self {
        if departs {
            Self::departs(ip, time, voluntary)
        } else {
            Self::arrives(time, ip, voluntary)
        }
    }

    /// What the record says.
    pub fn kind(&self) -> BtsKind {
        match self.flags >> MAGIC_SHIFT {
            0 => BtsKind::Branch,
            m if m == MAGIC_DEPARTS => BtsKind::Departs { voluntary: true },
            m if m == MAGIC_DEPARTS + MAGIC_PREEMPTED => BtsKind::Departs { voluntary: false },
            m if m == MAGIC_ARRIVES => BtsKind::Arrives { voluntary: true },
            m if m == MAGIC_ARRIVES + MAGIC_PREEMPTED => BtsKind::Arrives { voluntary: false },
            _ => BtsKind::Unknown,
        }
    }

    /// Whether `from` or `to` is a kernel address. Only meaningful for
    /// branches; the switch records carry times.
    pub fn touches_kernel(&self) -> bool {
        is_kernel_address(self.from) || is_kernel_address(self.to)
    }

    /// Decode the 24 bytes at the start of `b` (little-endian), as written by
    /// the hardware. `None` if `b` is shorter.
    #[inline]
    pub fn decode(b: &[u8]) -> Option<Self> {
        let [from, to, flags] = le_words(b)?;
        Some(BtsRecord { from, to, flags })
    }

    /// The 24 bytes the hardware would write.
    pub fn encode(&self) -> [u8; BTS_RECORD_BYTES] {
        to_le_bytes([self.from, self.to, self.flags])
    }
}

/// The first `N` little-endian 64-bit words of `b`; `None` if `b` is shorter.
#[inline]
fn le_words<const N: usize>(b: &[u8]) -> Option<[u64; N]> {
    let b = b.get(..N * 8)?;
    let mut out = [0u64; N];
    for (w, c) in out.iter_mut().zip(b.chunks_exact(8)) {
        *w = u64::from_le_bytes(c.try_into().ok()?);
    }
    Some(out)
}

/// `words` as little-endian bytes (`B` = 8 × `N`).
fn to_le_bytes<const N: usize, const B: usize>(words: [u64; N]) -> [u8; B] {
    let mut out = [0u8; B];
    for (c, w) in out.chunks_exact_mut(8).zip(words) {
        c.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Whether `addr` is in the kernel half of the 64-bit address space (x86-64
/// canonical upper half: bit 63 set). The address filter for consumers on a
/// CPU without DS-CPL uses this, like Linux's `kernel_ip()`.
pub fn is_kernel_address(addr: u64) -> bool {
    addr >> 63 == 1
}

/// Bytes in one PEBS record as modelled: the adaptive-PEBS basic group
/// (format/size, ip, applicable counters, TSC) and memory-info group
/// (address, latency, data source, transaction abort info).
pub const PEBS_RECORD_BYTES: usize = 64;

/// One PEBS record (adaptive PEBS, basic + memory-info groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PebsRecord {
    /// Bits 0..48: record format (groups present); bits 48..64: record size.
    pub format: u64,
    /// The instruction that caused the sample.
    pub ip: u64,
    /// Bit i: counter i overflowed.
    pub applicable: u64,
    /// Time stamp counter.
    pub tsc: u64,
    /// The data linear address of the load or store.
    pub addr: u64,
    /// Access latency (cycles).
    pub latency: u64,
    /// Data source encoding.
    pub data_source: u64,
    /// Transaction abort information.
    pub tx_abort: u64,
}

impl PebsRecord {
    /// Decode the 64 bytes at the start of `b`. `None` if `b` is shorter.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let [format, ip, applicable, tsc, addr, latency, data_source, tx_abort] = le_words(b)?;
        Some(PebsRecord {
            format,
            ip,
            applicable,
            tsc,
            addr,
            latency,
            data_source,
            tx_abort,
        })
    }

    /// The 64 bytes the hardware would write.
    pub fn encode(&self) -> [u8; PEBS_RECORD_BYTES] {
        to_le_bytes([
            self.format,
            self.ip,
            self.applicable,
            self.tsc,
            self.addr,
            self.latency,
            self.data_source,
            self.tx_abort,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bts_record_round_trips_through_its_24_hardware_bytes() {
        let r = BtsRecord {
            from: 0x40_1000,
            to: 0xffff_ffff_8100_0000,
            flags: BTS_PREDICTED,
        };
        let b = r.encode();
        assert_eq!(&b[0..8], &0x40_1000u64.to_le_bytes());
        assert_eq!(BtsRecord::decode(&b), Some(r));
        assert_eq!(BtsRecord::decode(&b[..23]), None);
        assert_eq!(r.kind(), BtsKind::Branch, "predicted is still a branch");
    }

    #[test]
    fn departs_and_arrives_carry_ip_and_time_as_the_thread_gave_them() {
        let d = BtsRecord::departs(0x40_0010, 77, false);
        assert_eq!((d.from, d.to), (0x40_0010, 77));
        assert_eq!(d.kind(), BtsKind::Departs { voluntary: false });
        let a = BtsRecord::arrives(78, 0x40_0200, true);
        assert_eq!((a.from, a.to), (78, 0x40_0200));
        assert_eq!(a.kind(), BtsKind::Arrives { voluntary: true });
        assert_eq!(BtsRecord::decode(&a.encode()), Some(a));
        let odd = BtsRecord {
            flags: 0x42 << 56,
            ..a
        };
        assert_eq!(odd.kind(), BtsKind::Unknown);
    }

    #[test]
    fn ds_area_fields_sit_at_the_sdm_offsets() {
        assert_eq!(DsField::BTS_THRESHOLD.0, 0x18);
        assert_eq!(DsField::PEBS_BASE.0, 0x20);
        assert_eq!(DsField::pebs_reset(0).0, 0x40);
        assert_eq!(DsField::pebs_reset(3).0, 0x58);
        assert_eq!(DS_AREA_BYTES, 0xa0);
        assert_eq!(Msr::DsArea.number(), 0x600);
    }

    #[test]
    fn pebs_record_round_trips() {
        let r = PebsRecord {
            format: 0x40 << 48 | 0b11,
            ip: 0x40_0004,
            applicable: 1,
            tsc: 9,
            addr: 0x7000,
            latency: 3,
            data_source: 1,
            tx_abort: 0,
        };
        assert_eq!(PebsRecord::decode(&r.encode()), Some(r));
        assert_eq!(PebsRecord::decode(&[0; 63]), None);
    }
}
