//! The x86 debug store as the processor sees it: Branch Trace Store and a
//! PEBS-like producer writing into memory the OS described in the DS save
//! area (Intel SDM vol. 3B, "Debug Store (DS) Mechanism", "Branch Trace
//! Store (BTS)", "Adaptive PEBS").
//!
//! Written from the manual, **independently of `hwbreak_core::ds`** (its
//! offsets, bits and record layouts are restated here), so a test of the
//! manager on this model catches layout bugs instead of repeating them. Only
//! the seam is shared: [`DsHardware`] and the [`Msr`] names.
//!
//! What the processor does, per retired taken branch, with
//! `IA32_DEBUGCTL.TR` and `.BTS` set:
//! 1. With DS-CPL, skip the branch if `BTS_OFF_OS` is set and it executed at
//!    CPL 0, or `BTS_OFF_USR` and CPL > 0 (the CPL is the `from` address's
//!    side here). Without DS-CPL those two bits are reserved: setting them
//!    is a fault (#GP on `wrmsr`), recorded and not stored.
//! 2. Read the DS save area at `IA32_DS_AREA`: BTS base (+0x00), index
//!    (+0x08), absolute maximum (+0x10), interrupt threshold (+0x18).
//! 3. If a record does not fit below the absolute maximum: with `BTINT`,
//!    writing stops (the record is dropped, counted in
//!    [`DsCpuStats::bts_dropped_full`]); without it the buffer is circular
//!    and the index goes back to the base.
//! 4. Write the 24-byte record `{from, to, flags}` at the index and advance it.
//! 5. With `BTINT`, an index at or past the threshold raises a PMI.
//!
//! PEBS (GP counter 0 only): each retired load counts in `IA32_PMC0` (48
//! bits). On overflow, with `IA32_PEBS_ENABLE` bit 0, the PEBS assist writes
//! a 64-byte record (basic + memory-info groups) at the PEBS index if it fits
//! below the PEBS absolute maximum, reloads the counter from the reset value
//! at +0x40, and raises a PMI once the index reaches the PEBS threshold.

use std::collections::BTreeMap;

use hwbreak_core::ds::{DsCaps, DsHardware, Msr};
use hwbreak_core::CpuId;

use super::Privilege;

// The SDM's 64-bit DS save area offsets.
const DS_BTS_BASE: u64 = 0x00;
const DS_BTS_INDEX: u64 = 0x08;
const DS_BTS_ABS_MAX: u64 = 0x10;
const DS_BTS_THRESHOLD: u64 = 0x18;
#[cfg(test)] // the processor never reads it; software resets the index to it
const DS_PEBS_BASE: u64 = 0x20;
const DS_PEBS_INDEX: u64 = 0x28;
const DS_PEBS_ABS_MAX: u64 = 0x30;
const DS_PEBS_THRESHOLD: u64 = 0x38;
const DS_PEBS_RESET0: u64 = 0x40;

// IA32_DEBUGCTL.
const CTL_LBR: u64 = 1 << 0;
const CTL_TR: u64 = 1 << 6;
const CTL_BTS: u64 = 1 << 7;
const CTL_BTINT: u64 = 1 << 8;
const CTL_BTS_OFF_OS: u64 = 1 << 9;
const CTL_BTS_OFF_USR: u64 = 1 << 10;

const BTS_REC: u64 = 24;
const PEBS_REC: u64 = 64;
const PMC_MASK: u64 = (1 << 48) - 1;

/// Where [`DsHw::alloc`] hands out memory: the kernel's direct map.
pub const HEAP_BASE: u64 = 0xffff_8880_0000_0000;

/// One CPU's MSRs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsCpuRegs {
    /// `IA32_DS_AREA`.
    pub ds_area: u64,
    /// `IA32_DEBUGCTL`.
    pub debugctl: u64,
    /// `IA32_PEBS_ENABLE`.
    pub pebs_enable: u64,
    /// `IA32_PMC0` (48 bits).
    pub pmc0: u64,
}

/// What the processor did on one CPU (for tests; the OS cannot see these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsCpuStats {
    /// Taken branches retired.
    pub branches: u64,
    /// BTS records written.
    pub bts_written: u64,
    /// Branches skipped by the DS-CPL filter.
    pub bts_skipped_cpl: u64,
    /// Records dropped because the buffer was full at the absolute maximum.
    pub bts_dropped_full: u64,
    /// Times a circular buffer wrapped.
    pub bts_wraps: u64,
    /// PEBS records written.
    pub pebs_written: u64,
    /// PEBS records dropped at the absolute maximum.
    pub pebs_dropped_full: u64,
    /// PMIs raised.
    pub pmis: u64,
}

/// A performance-monitoring interrupt the processor raised on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pmi {
    /// The BTS buffer reached its threshold.
    pub bts: bool,
    /// The PEBS buffer reached its threshold.
    pub pebs: bool,
}

/// A write the processor refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsrFault {
    /// CPU.
    pub cpu: CpuId,
    /// Register.
    pub msr: Msr,
    /// Value written.
    pub value: u64,
    /// Why.
    pub why: &'static str,
}

/// The processors' debug-store hardware and the memory it writes.
#[derive(Debug, Clone)]
pub struct DsHw {
    caps: DsCaps,
    regs: Vec<DsCpuRegs>,
    stats: Vec<DsCpuStats>,
    /// Allocations by base address.
    mem: BTreeMap<u64, Vec<u8>>,
    next: u64,
    faults: Vec<MsrFault>,
    /// Bytes the allocator may still hand out (None: unlimited).
    budget: Option<usize>,
}

impl DsHw {
    /// `cpus` CPUs with `caps`, MSRs at reset (0).
    pub fn new(cpus: usize, caps: DsCaps) -> Self {
        DsHw {
            caps,
            regs: vec![DsCpuRegs::default(); cpus],
            stats: vec![DsCpuStats::default(); cpus],
            mem: BTreeMap::new(),
            next: HEAP_BASE,
            faults: Vec::new(),
            budget: None,
        }
    }

    /// A processor with BTS, PEBS, DS-CPL and LBR.
    pub fn full(cpus: usize) -> Self {
        Self::new(
            cpus,
            DsCaps {
                bts: true,
                pebs: true,
                ds_cpl: true,
                lbr: true,
            },
        )
    }

    /// Limit what [`DsHardware::alloc`] may still hand out, in bytes.
    pub fn set_memory_budget(&mut self, bytes: Option<usize>) {
        self.budget = bytes;
    }

    /// One CPU's MSRs.
    pub fn regs(&self, cpu: CpuId) -> DsCpuRegs {
        self.regs.get(cpu.idx()).copied().unwrap_or_default()
    }

    /// What the processor did on `cpu`.
    pub fn stats(&self, cpu: CpuId) -> DsCpuStats {
        self.stats.get(cpu.idx()).copied().unwrap_or_default()
    }

    /// Refused MSR writes so far.
    pub fn faults(&self) -> &[MsrFault] {
        &self.faults
    }

    /// Live allocations (DS areas and buffers).
    pub fn allocations(&self) -> usize {
        self.mem.len()
    }

    fn rd(&self, addr: u64) -> Option<u64> {
        self.mem(addr, 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn wr(&mut self, addr: u64, v: u64) -> bool {
        match self.mem_mut(addr, 8) {
            Some(b) => {
                b.copy_from_slice(&v.to_le_bytes());
                true
            }
            None => false,
        }
    }

    /// A taken branch `from → to` retired on `cpu`. Returns the PMI it
    /// raised, if any.
    pub fn branch(&mut self, cpu: CpuId, from: u64, to: u64) -> Option<Pmi> {
        let i = cpu.idx();
        let r = *self.regs.get(i)?;
        self.stats[i].branches += 1;
        if r.debugctl & (CTL_TR | CTL_BTS) != CTL_TR | CTL_BTS {
            return None;
        }
        if self.caps.ds_cpl {
            let skip = match Privilege::of(from) {
                Privilege::Kernel => r.debugctl & CTL_BTS_OFF_OS != 0,
                Privilege::User => r.debugctl & CTL_BTS_OFF_USR != 0,
            };
            if skip {
                self.stats[i].bts_skipped_cpl += 1;
                return None;
            }
        }
        let area = r.ds_area;
        let (Some(base), Some(mut index), Some(max), Some(thresh)) = (
            self.rd(area + DS_BTS_BASE),
            self.rd(area + DS_BTS_INDEX),
            self.rd(area + DS_BTS_ABS_MAX),
            self.rd(area + DS_BTS_THRESHOLD),
        ) else {
            // A DS area outside memory: real hardware would fault the
            // store; the model drops the record.
            self.stats[i].bts_dropped_full += 1;
            return None;
        };
        let interrupt = r.debugctl & CTL_BTINT != 0;
        if index.saturating_add(BTS_REC) > max {
            if interrupt {
                self.stats[i].bts_dropped_full += 1;
                return None;
            }
            index = base;
            self.stats[i].bts_wraps += 1;
        }
        let mut rec = [0u8; BTS_REC as usize];
        rec[0..8].copy_from_slice(&from.to_le_bytes());
        rec[8..16].copy_from_slice(&to.to_le_bytes());
        // flags: bit 4 "predicted"; the model predicts nothing.
        match self.mem_mut(index, BTS_REC as usize) {
            Some(b) => b.copy_from_slice(&rec),
            None => {
                self.stats[i].bts_dropped_full += 1;
                return None;
            }
        }
        index += BTS_REC;
        self.wr(area + DS_BTS_INDEX, index);
        self.stats[i].bts_written += 1;
        if interrupt && index >= thresh {
            self.stats[i].pmis += 1;
            return Some(Pmi {
                bts: true,
                pebs: false,
            });
        }
        None
    }

    /// A load of `addr` by the instruction at `ip` retired on `cpu` at time
    /// `tsc` (the PEBS event: all retired loads). Returns the PMI it raised.
    pub fn load(&mut self, cpu: CpuId, ip: u64, addr: u64, tsc: u64) -> Option<Pmi> {
        let i = cpu.idx();
        let r = *self.regs.get(i)?;
        if r.pebs_enable & 1 == 0 {
            return None;
        }
        let pmc = (r.pmc0 + 1) & PMC_MASK;
        self.regs[i].pmc0 = pmc;
        if pmc != 0 {
            return None;
        }
        let area = r.ds_area;
        let (Some(index), Some(max), Some(thresh), Some(reset)) = (
            self.rd(area + DS_PEBS_INDEX),
            self.rd(area + DS_PEBS_ABS_MAX),
            self.rd(area + DS_PEBS_THRESHOLD),
            self.rd(area + DS_PEBS_RESET0),
        ) else {
            self.stats[i].pebs_dropped_full += 1;
            return None;
        };
        self.regs[i].pmc0 = reset & PMC_MASK;
        if index.saturating_add(PEBS_REC) > max {
            self.stats[i].pebs_dropped_full += 1;
            return None;
        }
        // Basic group: format (bit 0 = memory-info group) | size << 48, ip,
        // applicable counters, TSC; memory-info group: address, latency,
        // data source, TX abort.
        let words = [1 | (PEBS_REC << 48), ip, 1, tsc, addr, 4, 1, 0];
        let Some(b) = self.mem_mut(index, PEBS_REC as usize) else {
            self.stats[i].pebs_dropped_full += 1;
            return None;
        };
        for (k, w) in words.iter().enumerate() {
            b[k * 8..k * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let index = index + PEBS_REC;
        self.wr(area + DS_PEBS_INDEX, index);
        self.stats[i].pebs_written += 1;
        if index >= thresh {
            self.stats[i].pmis += 1;
            return Some(Pmi {
                bts: false,
                pebs: true,
            });
        }
        None
    }

    fn alloc_at(&mut self, bytes: usize) -> Option<u64> {
        if let Some(b) = self.budget.as_mut() {
            *b = b.checked_sub(bytes)?;
        }
        let base = self.next;
        // 64-byte aligned, with a guard gap so a record past one buffer's
        // end never lands in the next.
        self.next += (bytes as u64).div_ceil(64) * 64 + 4096;
        self.mem.insert(base, vec![0; bytes]);
        Some(base)
    }
}

impl DsHardware for DsHw {
    fn caps(&self) -> DsCaps {
        self.caps
    }

    fn alloc(&mut self, bytes: usize) -> Option<u64> {
        self.alloc_at(bytes)
    }

    fn free(&mut self, addr: u64) {
        if let Some(v) = self.mem.remove(&addr) {
            if let Some(b) = self.budget.as_mut() {
                *b += v.len();
            }
        }
    }

    fn mem(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (&base, v) = self.mem.range(..=addr).next_back()?;
        let off = (addr - base) as usize;
        v.get(off..off.checked_add(len)?)
    }

    fn mem_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (&base, v) = self.mem.range_mut(..=addr).next_back()?;
        let off = (addr - base) as usize;
        v.get_mut(off..off.checked_add(len)?)
    }

    fn read_msr(&self, cpu: CpuId, msr: Msr) -> u64 {
        let r = self.regs(cpu);
        match msr {
            Msr::DsArea => r.ds_area,
            Msr::DebugCtl => r.debugctl,
            Msr::PebsEnable => r.pebs_enable,
            Msr::Pmc0 => r.pmc0,
        }
    }

    fn write_msr(&mut self, cpu: CpuId, msr: Msr, v: u64) {
        let caps = self.caps;
        let fault = |why| MsrFault {
            cpu,
            msr,
            value: v,
            why,
        };
        let Some(r) = self.regs.get_mut(cpu.idx()) else {
            self.faults.push(fault("no such CPU"));
            return;
        };
        let why = match msr {
            Msr::DebugCtl if !caps.ds_cpl && v & (CTL_BTS_OFF_OS | CTL_BTS_OFF_USR) != 0 => {
                Some("BTS_OFF_OS/BTS_OFF_USR are reserved without DS-CPL (#GP)")
            }
            Msr::DebugCtl if !caps.bts && v & (CTL_BTS | CTL_TR) != 0 => {
                Some("BTS is unavailable (IA32_MISC_ENABLE.BTS_UNAVAILABLE)")
            }
            Msr::DebugCtl if !caps.lbr && v & CTL_LBR != 0 => Some("no LBR stack"),
            Msr::PebsEnable if !caps.pebs && v != 0 => {
                Some("PEBS is unavailable (IA32_MISC_ENABLE.PEBS_UNAVAILABLE)")
            }
            _ => None,
        };
        if let Some(why) = why {
            self.faults.push(fault(why));
            return;
        }
        match msr {
            Msr::DsArea => r.ds_area = v,
            Msr::DebugCtl => r.debugctl = v,
            Msr::PebsEnable => r.pebs_enable = v,
            Msr::Pmc0 => r.pmc0 = v & PMC_MASK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DS area with a `records`-record BTS buffer, threshold at `thresh`
    /// records, DEBUGCTL = `ctl`.
    fn setup(records: u64, thresh: u64, ctl: u64) -> (DsHw, u64, u64) {
        let mut hw = DsHw::full(1);
        let area = hw.alloc(0xa0).unwrap();
        let base = hw.alloc((records * BTS_REC) as usize).unwrap();
        hw.wr(area + DS_BTS_BASE, base);
        hw.wr(area + DS_BTS_INDEX, base);
        hw.wr(area + DS_BTS_ABS_MAX, base + records * BTS_REC);
        hw.wr(area + DS_BTS_THRESHOLD, base + thresh * BTS_REC);
        hw.write_msr(CpuId(0), Msr::DsArea, area);
        hw.write_msr(CpuId(0), Msr::DebugCtl, ctl);
        (hw, area, base)
    }

    #[test]
    fn writing_stops_at_the_absolute_maximum_when_the_interrupt_is_not_served() {
        let (mut hw, area, base) = setup(4, 3, CTL_TR | CTL_BTS | CTL_BTINT);
        let pmis: Vec<_> = (0..6u64)
            .map(|k| hw.branch(CpuId(0), 0x1000 + k, 0x2000).is_some())
            .collect();
        // The third record reaches the threshold; the fourth is past it too;
        // then the buffer is full.
        assert_eq!(pmis, [false, false, true, true, false, false]);
        assert_eq!(hw.rd(area + DS_BTS_INDEX), Some(base + 4 * BTS_REC));
        let s = hw.stats(CpuId(0));
        assert_eq!((s.bts_written, s.bts_dropped_full), (4, 2));
        assert_eq!(hw.rd(base + 3 * BTS_REC), Some(0x1003), "4th record's from");
    }

    #[test]
    fn without_btint_the_buffer_is_circular_and_raises_no_interrupt() {
        let (mut hw, area, base) = setup(3, 1, CTL_TR | CTL_BTS);
        for k in 0..5u64 {
            assert!(hw.branch(CpuId(0), 0x1000 + k, 0x2000).is_none());
        }
        // Records 3 and 4 overwrote slots 0 and 1.
        assert_eq!(hw.rd(area + DS_BTS_INDEX), Some(base + 2 * BTS_REC));
        assert_eq!(hw.rd(base), Some(0x1003));
        assert_eq!(hw.rd(base + BTS_REC), Some(0x1004));
        assert_eq!(hw.rd(base + 2 * BTS_REC), Some(0x1002));
        assert_eq!(hw.stats(CpuId(0)).bts_wraps, 1, "one wrap, before record 3");
    }

    #[test]
    fn ds_cpl_skips_kernel_branches_with_bts_off_os() {
        let (mut hw, _, _) = setup(8, 8, CTL_TR | CTL_BTS | CTL_BTS_OFF_OS);
        hw.branch(CpuId(0), 0x40_0000, 0xffff_ffff_8100_0000); // syscall: CPL 3
        hw.branch(CpuId(0), 0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100);
        hw.branch(CpuId(0), 0xffff_ffff_8100_0100, 0x40_0004); // sysret: CPL 0
        let s = hw.stats(CpuId(0));
        assert_eq!((s.bts_written, s.bts_skipped_cpl), (1, 2));
    }

    #[test]
    fn cpl_bits_without_ds_cpl_fault_and_are_not_stored() {
        let mut hw = DsHw::new(
            1,
            DsCaps {
                bts: true,
                ..DsCaps::default()
            },
        );
        hw.write_msr(CpuId(0), Msr::DebugCtl, CTL_TR | CTL_BTS | CTL_BTS_OFF_OS);
        assert_eq!(hw.faults().len(), 1);
        assert_eq!(hw.regs(CpuId(0)).debugctl, 0);
    }

    #[test]
    fn pebs_writes_a_record_every_period_loads_and_reloads_the_counter() {
        let mut hw = DsHw::full(1);
        let area = hw.alloc(0xa0).unwrap();
        let base = hw.alloc(4 * PEBS_REC as usize).unwrap();
        hw.wr(area + DS_PEBS_BASE, base);
        hw.wr(area + DS_PEBS_INDEX, base);
        hw.wr(area + DS_PEBS_ABS_MAX, base + 4 * PEBS_REC);
        hw.wr(area + DS_PEBS_THRESHOLD, base + 2 * PEBS_REC);
        let reset = (1u64 << 48) - 3; // period 3
        hw.wr(area + DS_PEBS_RESET0, reset);
        hw.write_msr(CpuId(0), Msr::DsArea, area);
        hw.write_msr(CpuId(0), Msr::Pmc0, reset);
        hw.write_msr(CpuId(0), Msr::PebsEnable, 1);
        let pmis: Vec<_> = (0..6u64)
            .map(|k| {
                hw.load(CpuId(0), 0x40_0000 + 4 * k, 0x7000 + k, k)
                    .is_some()
            })
            .collect();
        assert_eq!(pmis, [false, false, false, false, false, true]);
        assert_eq!(hw.stats(CpuId(0)).pebs_written, 2);
        assert_eq!(
            hw.rd(base + 8),
            Some(0x40_0008),
            "first record's ip: the 3rd load"
        );
        assert_eq!(
            hw.rd(base + PEBS_REC + 32),
            Some(0x7005),
            "second record's address"
        );
    }

    #[test]
    fn memory_outside_any_allocation_is_not_readable() {
        let mut hw = DsHw::full(1);
        let a = hw.alloc(16).unwrap();
        assert!(hw.mem(a, 16).is_some());
        assert!(hw.mem(a + 8, 9).is_none());
        assert!(hw.mem(a - 1, 1).is_none());
        hw.free(a);
        assert!(hw.mem(a, 1).is_none());
        assert_eq!(hw.allocations(), 0);
    }
}
