//! [`DsManager`]: the one owner of every CPU's DS save area.
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::layout::{
    debugctl, is_kernel_address, BtsRecord, DsField, Msr, PebsRecord, BTS_RECORD_BYTES,
    DS_AREA_BYTES, PEBS_RECORD_BYTES,
};
use super::ring::{Entry, Ring};
use super::{DsError, DsHardware, Facility, Name};
use crate::target::{CpuId, TaskId};

/// A debug-store user's identity. Never reused within one manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub u32);

/// Whose branches a buffer collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One task's, on whichever CPU it runs.
    Task(TaskId),
    /// Everything that runs on one CPU.
    Cpu(CpuId),
}

/// How a BTS buffer is emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `BTINT` set: a PMI at the interrupt threshold drains the buffer into
    /// the consumer's ring. Loses nothing while the consumer reads in time.
    #[default]
    Stream,
    /// `BTINT` clear: the processor overwrites the oldest records, raises no
    /// interrupt, and the newest buffer-full is read on demand
    /// ([`DsManager::snapshot`]). Costs no interrupts; keeps only the tail.
    Snapshot,
}

/// Which branches a consumer may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    /// User space only: never a kernel address in `from` or `to`.
    User,
    /// Branches taken in the kernel (`from` is a kernel address).
    Kernel,
    /// Everything.
    #[default]
    All,
}

impl Privilege {
    /// Whether a consumer with this privilege may see `r` (the per-consumer
    /// address filter; it applies with and without DS-CPL, since the CPL of
    /// a `syscall` is the user's while its target is the kernel's).
    #[inline]
    pub fn admits(self, r: &BtsRecord) -> bool {
        match self {
            Privilege::All => true,
            Privilege::User => !r.touches_kernel(),
            Privilege::Kernel => is_kernel_address(r.from),
        }
    }

    /// The DEBUGCTL bits that make a DS-CPL processor skip what this
    /// privilege does not want.
    fn cpl_bits(self) -> u64 {
        match self {
            Privilege::User => debugctl::BTS_OFF_OS,
            Privilege::Kernel => debugctl::BTS_OFF_USR,
            Privilege::All => 0,
        }
    }

    fn union(self, other: Privilege) -> Privilege {
        if self == other {
            self
        } else {
            Privilege::All
        }
    }
}

/// A BTS user's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtsConfig {
    /// Named in refusals to others.
    pub name: String,
    /// Task or CPU.
    pub scope: Scope,
    /// Stream (interrupt and drain) or snapshot (overwrite).
    pub mode: Mode,
    /// Which branches the consumer sees.
    pub privilege: Privilege,
    /// Records in the hardware buffer.
    pub buffer_records: usize,
    /// Records left free above the interrupt threshold: a PMI arrives a few
    /// branches late on real hardware (Linux keeps `BTS_SAFETY_MARGIN`).
    pub margin_records: usize,
    /// Records in the consumer's ring.
    pub ring_records: usize,
}

impl BtsConfig {
    /// Stream mode, every branch, a 256-record buffer with a 4-record margin,
    /// a 4096-record ring.
    pub fn new(name: &str, scope: Scope) -> Self {
        BtsConfig {
            name: name.into(),
            scope,
            mode: Mode::Stream,
            privilege: Privilege::All,
            buffer_records: 256,
            margin_records: 4,
            ring_records: 4096,
        }
    }

    /// With `mode`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// With `privilege`.
    pub fn privilege(mut self, privilege: Privilege) -> Self {
        self.privilege = privilege;
        self
    }

    /// With a hardware buffer of `records` and an interrupt `margin`.
    pub fn buffer(mut self, records: usize, margin: usize) -> Self {
        self.buffer_records = records;
        self.margin_records = margin;
        self
    }

    /// With a ring of `records`.
    pub fn ring(mut self, records: usize) -> Self {
        self.ring_records = records;
        self
    }
}

/// A PEBS user's request: one per CPU, counting with general-purpose counter 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PebsConfig {
    /// Named in refusals to others.
    pub name: String,
    /// The CPU.
    pub cpu: CpuId,
    /// One record every `period` events (the counter reset value is `-period`).
    pub period: u64,
    /// Records in the hardware buffer.
    pub buffer_records: usize,
    /// Records left free above the interrupt threshold.
    pub margin_records: usize,
    /// Records in the consumer's ring.
    pub ring_records: usize,
}

impl PebsConfig {
    /// A 64-record buffer with a 1-record margin, a 4096-record ring.
    pub fn new(name: &str, cpu: CpuId, period: u64) -> Self {
        PebsConfig {
            name: name.into(),
            cpu,
            period,
            buffer_records: 64,
            margin_records: 1,
            ring_records: 4096,
        }
    }
}

/// Who holds something a request needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Their id.
    pub user: UserId,
    /// The name they registered with.
    pub name: String,
    /// What they hold.
    pub facility: Facility,
    /// Where.
    pub scope: Scope,
}

/// A context switch as the scheduler reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchInfo {
    /// Outgoing task (None: the CPU was idle).
    pub prev: Option<TaskId>,
    /// Incoming task (None: the CPU goes idle).
    pub next: Option<TaskId>,
    /// The outgoing task blocked or yielded (false: preempted).
    pub voluntary: bool,
    /// Machine time of the switch.
    pub time: u64,
    /// Where `prev` stopped.
    pub prev_ip: u64,
    /// Where `next` resumes.
    pub next_ip: u64,
}

/// Records a PMI drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PmiOutcome {
    /// BTS records read from the hardware buffer.
    pub bts: usize,
    /// PEBS records read from the hardware buffer.
    pub pebs: usize,
}

/// A hardware buffer's geometry (what the DS area's four fields hold).
#[derive(Debug, Clone, Copy)]
struct HwBuf {
    base: u64,
    abs_max: u64,
    threshold: u64,
}

impl HwBuf {
    fn alloc(
        hw: &mut dyn DsHardware,
        facility: Facility,
        records: usize,
        margin: usize,
        rec_bytes: usize,
    ) -> Result<HwBuf, DsError> {
        let min = margin + 1;
        if records < min {
            return Err(DsError::BufferTooSmall {
                facility,
                records,
                min,
            });
        }
        let bytes = records
            .checked_mul(rec_bytes)
            .ok_or(DsError::NoMemory { bytes: usize::MAX })?;
        let base = hw.alloc(bytes).ok_or(DsError::NoMemory { bytes })?;
        Ok(HwBuf {
            base,
            abs_max: base + bytes as u64,
            threshold: base + ((records - margin) * rec_bytes) as u64,
        })
    }
}

#[derive(Debug)]
struct BtsUser {
    buf: HwBuf,
    /// The BTS index while the buffer is not in a DS area.
    saved_index: u64,
    /// The CPU whose DS area holds this buffer now.
    loaded_on: Option<CpuId>,
    mode: Mode,
    privilege: Privilege,
    ring: Ring<BtsRecord>,
}

#[derive(Debug)]
struct PebsUser {
    buf: HwBuf,
    ring: Ring<PebsRecord>,
}

#[derive(Debug)]
enum Kind {
    Bts(BtsUser),
    Pebs(PebsUser),
    Lbr,
}

#[derive(Debug)]
struct User {
    name: Name,
    scope: Scope,
    kind: Kind,
}

impl User {
    fn facility(&self) -> Facility {
        match self.kind {
            Kind::Bts(_) => Facility::Bts,
            Kind::Pebs(_) => Facility::Pebs,
            Kind::Lbr => Facility::Lbr,
        }
    }

    fn holder(&self, id: UserId) -> Holder {
        Holder {
            user: id,
            name: self.name.clone(),
            facility: self.facility(),
            scope: self.scope,
        }
    }

    fn snapshot_bts(&self) -> bool {
        matches!(&self.kind, Kind::Bts(b) if b.mode == Mode::Snapshot)
    }
}

/// One CPU's debug-store state.
#[derive(Debug, Clone, Default)]
struct CpuDs {
    /// The DS save area's address (0: none; `IA32_DS_AREA` is 0 too).
    area: u64,
    /// The task running, as the last switch said.
    current: Option<TaskId>,
    /// The BTS user whose buffer the DS area describes now.
    // Invariant: `loaded == Some(u)` iff user `u`'s `loaded_on == Some(this
    // CPU)`; and `loaded` is `cpu_bts` when that is set, else the current
    // task's BTS user, else None (`relayout` restores it after any change).
    loaded: Option<UserId>,
    /// The CPU-scope BTS user.
    cpu_bts: Option<UserId>,
    /// The PEBS user.
    pebs: Option<UserId>,
}

/// The debug-store manager: one per machine, owning every CPU's DS area.
///
/// Methods take the hardware as `&mut dyn DsHardware` per call, like the
/// layer takes its `Machine`, so a kernel embeds the manager beside its own
/// per-CPU state.
#[derive(Debug)]
pub struct DsManager {
    cpus: Vec<CpuDs>,
    /// Index = `UserId.0`; `None` once removed (ids are never reused).
    users: Vec<Option<User>>,
    /// Task-scope BTS users by task.
    task_bts: BTreeMap<TaskId, UserId>,
}

/// `u64` at `addr` in the hardware's memory (0 if unmapped).
#[inline]
fn read_u64(hw: &dyn DsHardware, addr: u64) -> u64 {
    hw.mem(addr, 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn write_u64(hw: &mut dyn DsHardware, addr: u64, v: u64) {
    if let Some(b) = hw.mem_mut(addr, 8) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// Mutable borrows of two different users (`b` may be absent).
fn two_mut(
    users: &mut [Option<User>],
    a: usize,
    b: Option<usize>,
) -> (&mut User, Option<&mut User>) {
    match b {
        Some(b) if b != a => {
            let (lo, hi) = users.split_at_mut(a.max(b));
            let (x, y) = if a < b {
                (lo[a].as_mut(), hi[0].as_mut())
            } else {
                (hi[0].as_mut(), lo[b].as_mut())
            };
            (x.expect("live user"), y)
        }
        _ => (users[a].as_mut().expect("live user"), None),
    }
}

impl DsManager {
    /// A manager for `cpus` CPUs. Nothing is allocated on the hardware until
    /// the first user arrives.
    pub fn new(cpus: usize) -> Self {
        DsManager {
            cpus: alloc::vec![CpuDs::default(); cpus],
            users: Vec::new(),
            task_bts: BTreeMap::new(),
        }
    }

    fn user(&self, id: UserId) -> Result<&User, DsError> {
        self.users
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(DsError::UnknownUser(id))
    }

    fn bts(&self, id: UserId) -> &BtsUser {
        match &self.users[id.0 as usize].as_ref().expect("live user").kind {
            Kind::Bts(b) => b,
            _ => unreachable!("BTS user expected"),
        }
    }

    fn bts_mut(&mut self, id: UserId) -> &mut BtsUser {
        match &mut self.users[id.0 as usize].as_mut().expect("live user").kind {
            Kind::Bts(b) => b,
            _ => unreachable!("BTS user expected"),
        }
    }

    fn live(&self) -> impl Iterator<Item = (UserId, &User)> {
        self.users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.as_ref().map(|u| (UserId(i as u32), u)))
    }

    fn find(&self, pred: impl Fn(&User) -> bool) -> Option<Holder> {
        self.live()
            .find(|(_, u)| pred(u))
            .map(|(id, u)| u.holder(id))
    }

    fn check_cpu(&self, cpu: CpuId) -> Result<(), DsError> {
        if cpu.idx() < self.cpus.len() {
            Ok(())
        } else {
            Err(DsError::NoSuchCpu {
                cpu,
                cpus: self.cpus.len(),
            })
        }
    }

    fn add_user(&mut self, name: &str, scope: Scope, kind: Kind) -> UserId {
        let id = UserId(self.users.len() as u32);
        self.users.push(Some(User {
            name: name.into(),
            scope,
            kind,
        }));
        id
    }

    /// Every CPU gets its DS area with the first user (160 bytes each), so
    /// a context switch never has to allocate.
    fn ensure_areas(&mut self, hw: &mut dyn DsHardware) -> Result<(), DsError> {
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if c.area == 0 {
                c.area = hw.alloc(DS_AREA_BYTES).ok_or(DsError::NoMemory {
                    bytes: DS_AREA_BYTES,
                })?;
                hw.write_msr(CpuId(i as u32), Msr::DsArea, c.area);
            }
        }
        Ok(())
    }

    /// A hardware buffer and, with the first user, the DS areas; on failure
    /// nothing is left allocated.
    fn alloc_buffer(
        &mut self,
        hw: &mut dyn DsHardware,
        facility: Facility,
        records: usize,
        margin: usize,
        rec_bytes: usize,
    ) -> Result<HwBuf, DsError> {
        let buf = HwBuf::alloc(hw, facility, records, margin, rec_bytes)?;
        if let Err(e) = self.ensure_areas(hw) {
            hw.free(buf.base);
            self.release_areas_if_unused(hw);
            return Err(e);
        }
        Ok(buf)
    }

    /// With the last user gone, the DS areas go too.
    fn release_areas_if_unused(&mut self, hw: &mut dyn DsHardware) {
        if self.live().next().is_some() {
            return;
        }
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if c.area != 0 {
                // The MSR is cleared before the memory goes, so the processor
                // never writes into freed memory.
                hw.write_msr(CpuId(i as u32), Msr::DsArea, 0);
                hw.free(core::mem::take(&mut c.area));
            }
        }
    }

    /// Register a BTS user. Refused while anyone holds LBR (named in the
    /// error); while another user holds this scope; and a snapshot user
    /// cannot share CPUs with users of the other scope (a CPU buffer and a
    /// task buffer feed each other only by draining, which snapshot mode
    /// never does).
    pub fn add_bts(&mut self, hw: &mut dyn DsHardware, cfg: BtsConfig) -> Result<UserId, DsError> {
        if !hw.caps().bts {
            return Err(DsError::Unsupported {
                facility: Facility::Bts,
            });
        }
        let conflict = |holder| DsError::Conflict {
            wanted: Facility::Bts,
            holder,
        };
        if let Scope::Cpu(c) = cfg.scope {
            self.check_cpu(c)?;
        }
        if let Some(h) = self.find(|u| matches!(u.kind, Kind::Lbr)) {
            return Err(conflict(h));
        }
        let snap = cfg.mode == Mode::Snapshot;
        let clash = match cfg.scope {
            Scope::Cpu(c) => self.cpus[c.idx()]
                .cpu_bts
                .map(|id| self.user(id).expect("live").holder(id))
                .or_else(|| {
                    self.find(|u| {
                        matches!(u.scope, Scope::Task(_))
                            && matches!(u.kind, Kind::Bts(_))
                            && (snap || u.snapshot_bts())
                    })
                }),
            Scope::Task(t) => self
                .task_bts
                .get(&t)
                .map(|&id| self.user(id).expect("live").holder(id))
                .or_else(|| {
                    self.find(|u| {
                        matches!(u.scope, Scope::Cpu(_))
                            && matches!(u.kind, Kind::Bts(_))
                            && (snap || u.snapshot_bts())
                    })
                }),
        };
        if let Some(h) = clash {
            return Err(conflict(h));
        }
        let margin = if snap { 0 } else { cfg.margin_records };
        let buf = self.alloc_buffer(
            hw,
            Facility::Bts,
            cfg.buffer_records,
            margin,
            BTS_RECORD_BYTES,
        )?;
        let id = self.add_user(
            &cfg.name,
            cfg.scope,
            Kind::Bts(BtsUser {
                buf,
                saved_index: buf.base,
                loaded_on: None,
                mode: cfg.mode,
                privilege: cfg.privilege,
                ring: Ring::new(if snap { 0 } else { cfg.ring_records }),
            }),
        );
        match cfg.scope {
            Scope::Cpu(c) => {
                self.cpus[c.idx()].cpu_bts = Some(id);
                self.relayout(hw, c);
                self.drain_task_behind_cpu_buffer(hw, c);
            }
            Scope::Task(t) => {
                self.task_bts.insert(t, id);
                if let Some(c) = self.cpu_running(t) {
                    self.relayout(hw, c);
                }
            }
        }
        Ok(id)
    }

    /// Register the PEBS user of `cfg.cpu`: it shares the CPU's DS area with
    /// BTS, with its own buffer. One per CPU (a refusal names the holder).
    pub fn add_pebs(
        &mut self,
        hw: &mut dyn DsHardware,
        cfg: PebsConfig,
    ) -> Result<UserId, DsError> {
        if !hw.caps().pebs {
            return Err(DsError::Unsupported {
                facility: Facility::Pebs,
            });
        }
        self.check_cpu(cfg.cpu)?;
        if cfg.period == 0 || cfg.period >= 1 << 47 {
            return Err(DsError::BadPeriod { period: cfg.period });
        }
        if let Some(id) = self.cpus[cfg.cpu.idx()].pebs {
            return Err(DsError::Conflict {
                wanted: Facility::Pebs,
                holder: self.user(id)?.holder(id),
            });
        }
        let buf = self.alloc_buffer(
            hw,
            Facility::Pebs,
            cfg.buffer_records,
            cfg.margin_records,
            PEBS_RECORD_BYTES,
        )?;
        let id = self.add_user(
            &cfg.name,
            Scope::Cpu(cfg.cpu),
            Kind::Pebs(PebsUser {
                buf,
                ring: Ring::new(cfg.ring_records),
            }),
        );
        let c = &mut self.cpus[cfg.cpu.idx()];
        c.pebs = Some(id);
        let area = c.area;
        // The counter counts up from -period (48 bits) and overflows after
        // `period` events; the processor reloads it from the reset field.
        let reset = (1u64 << 48).wrapping_sub(cfg.period) & ((1 << 48) - 1);
        write_u64(hw, area + DsField::PEBS_BASE.0, buf.base);
        write_u64(hw, area + DsField::PEBS_INDEX.0, buf.base);
        write_u64(hw, area + DsField::PEBS_ABS_MAX.0, buf.abs_max);
        write_u64(hw, area + DsField::PEBS_THRESHOLD.0, buf.threshold);
        write_u64(hw, area + DsField::pebs_reset(0).0, reset);
        hw.write_msr(cfg.cpu, Msr::Pmc0, reset);
        // Enable last: the area is complete before the processor may use it.
        let en = hw.read_msr(cfg.cpu, Msr::PebsEnable);
        hw.write_msr(cfg.cpu, Msr::PebsEnable, en | 1);
        Ok(id)
    }

    /// Book the LBR stack for `name` (the LBR code programs it). Refused while
    /// any BTS user exists, naming it: BTS and LBR exclude each other.
    pub fn claim_lbr(
        &mut self,
        hw: &dyn DsHardware,
        name: &str,
        scope: Scope,
    ) -> Result<UserId, DsError> {
        if !hw.caps().lbr {
            return Err(DsError::Unsupported {
                facility: Facility::Lbr,
            });
        }
        if let Scope::Cpu(c) = scope {
            self.check_cpu(c)?;
        }
        if let Some(h) = self.find(|u| matches!(u.kind, Kind::Bts(_))) {
            return Err(DsError::Conflict {
                wanted: Facility::Lbr,
                holder: h,
            });
        }
        Ok(self.add_user(name, scope, Kind::Lbr))
    }

    /// Remove a user. A BTS or PEBS user's hardware is stopped before its
    /// buffer is freed; records not yet read are gone with it (read first).
    pub fn remove(&mut self, hw: &mut dyn DsHardware, id: UserId) -> Result<(), DsError> {
        self.user(id)?;
        match self.users[id.0 as usize]
            .as_ref()
            .map(|u| (u.scope, u.facility()))
        {
            Some((scope, Facility::Bts)) => {
                let loaded_on = self.bts(id).loaded_on;
                if matches!(scope, Scope::Cpu(_)) {
                    // The running task's user was fed from this buffer:
                    // hand it what is there before the buffer goes.
                    if self.bts(id).mode == Mode::Stream && loaded_on.is_some() {
                        self.drain_bts(hw, id);
                    }
                }
                if let Some(c) = loaded_on {
                    // DEBUGCTL first: the processor stops writing before the
                    // buffer it writes to is forgotten.
                    let v = hw.read_msr(c, Msr::DebugCtl);
                    hw.write_msr(c, Msr::DebugCtl, v & !debugctl::BTS_BITS);
                    self.cpus[c.idx()].loaded = None;
                }
                match scope {
                    Scope::Cpu(c) => self.cpus[c.idx()].cpu_bts = None,
                    Scope::Task(t) => {
                        self.task_bts.remove(&t);
                    }
                }
                let base = self.bts(id).buf.base;
                self.users[id.0 as usize] = None;
                hw.free(base);
                if let Some(c) = loaded_on {
                    self.relayout(hw, c);
                }
            }
            Some((Scope::Cpu(c), Facility::Pebs)) => {
                let en = hw.read_msr(c, Msr::PebsEnable);
                hw.write_msr(c, Msr::PebsEnable, en & !1);
                let area = self.cpus[c.idx()].area;
                for f in [
                    DsField::PEBS_BASE,
                    DsField::PEBS_INDEX,
                    DsField::PEBS_ABS_MAX,
                    DsField::PEBS_THRESHOLD,
                ] {
                    write_u64(hw, area + f.0, 0);
                }
                self.cpus[c.idx()].pebs = None;
                if let Some(User {
                    kind: Kind::Pebs(p),
                    ..
                }) = self.users[id.0 as usize].take()
                {
                    hw.free(p.buf.base);
                }
            }
            _ => self.users[id.0 as usize] = None,
        }
        self.release_areas_if_unused(hw);
        Ok(())
    }

    fn cpu_running(&self, t: TaskId) -> Option<CpuId> {
        self.cpus
            .iter()
            .position(|c| c.current == Some(t))
            .map(|i| CpuId(i as u32))
    }

    /// Point `cpu`'s DS area and DEBUGCTL at the BTS buffer that belongs
    /// there now (see the invariant on `CpuDs::loaded`).
    fn relayout(&mut self, hw: &mut dyn DsHardware, cpu: CpuId) {
        let c = &self.cpus[cpu.idx()];
        let task_user = c.current.and_then(|t| self.task_bts.get(&t).copied());
        let want = c.cpu_bts.or(task_user);
        let area = c.area;
        let ctl = hw.read_msr(cpu, Msr::DebugCtl) & !debugctl::BTS_BITS;
        if c.loaded != want {
            // BTS off while the area's BTS fields change, so the processor
            // never writes through a half-written description.
            hw.write_msr(cpu, Msr::DebugCtl, ctl);
            if let Some(old) = c.loaded {
                let idx = read_u64(hw, area + DsField::BTS_INDEX.0);
                let b = self.bts_mut(old);
                b.saved_index = idx;
                b.loaded_on = None;
            }
            if let Some(new) = want {
                if let Some(other) = self.bts(new).loaded_on {
                    // The task moved without a switch-out on its old CPU.
                    self.unload(hw, other);
                }
                let b = self.bts_mut(new);
                b.loaded_on = Some(cpu);
                let (buf, idx) = (b.buf, b.saved_index);
                write_u64(hw, area + DsField::BTS_BASE.0, buf.base);
                write_u64(hw, area + DsField::BTS_INDEX.0, idx);
                write_u64(hw, area + DsField::BTS_ABS_MAX.0, buf.abs_max);
                write_u64(hw, area + DsField::BTS_THRESHOLD.0, buf.threshold);
            }
            self.cpus[cpu.idx()].loaded = want;
        }
        let Some(u) = want else {
            hw.write_msr(cpu, Msr::DebugCtl, ctl);
            return;
        };
        let b = self.bts(u);
        let mut bits = debugctl::TR | debugctl::BTS;
        if b.mode == Mode::Stream {
            bits |= debugctl::BTINT;
        }
        if hw.caps().ds_cpl {
            // The hardware filter must let through what every consumer fed
            // from this buffer wants; each consumer then filters by address.
            let mut p = b.privilege;
            if let Some(t) = task_user.filter(|&t| t != u) {
                p = p.union(self.bts(t).privilege);
            }
            bits |= p.cpl_bits();
        }
        hw.write_msr(cpu, Msr::DebugCtl, ctl | bits);
    }

    /// Take whatever BTS buffer is loaded off `cpu` (index saved), BTS off.
    fn unload(&mut self, hw: &mut dyn DsHardware, cpu: CpuId) {
        let c = &mut self.cpus[cpu.idx()];
        let Some(old) = c.loaded.take() else { return };
        let area = c.area;
        let ctl = hw.read_msr(cpu, Msr::DebugCtl);
        hw.write_msr(cpu, Msr::DebugCtl, ctl & !debugctl::BTS_BITS);
        let idx = read_u64(hw, area + DsField::BTS_INDEX.0);
        let b = self.bts_mut(old);
        b.saved_index = idx;
        b.loaded_on = None;
    }

    /// The BTS index of `id`'s buffer, wherever it is now.
    fn bts_index(&self, hw: &dyn DsHardware, id: UserId) -> u64 {
        let b = self.bts(id);
        match b.loaded_on {
            Some(c) => read_u64(hw, self.cpus[c.idx()].area + DsField::BTS_INDEX.0),
            None => b.saved_index,
        }
    }

    fn set_bts_index(&mut self, hw: &mut dyn DsHardware, id: UserId, v: u64) {
        match self.bts(id).loaded_on {
            Some(c) => write_u64(hw, self.cpus[c.idx()].area + DsField::BTS_INDEX.0, v),
            None => self.bts_mut(id).saved_index = v,
        }
    }

    /// Move the records of stream user `id`'s hardware buffer into its ring
    /// (and, for a CPU buffer, the running task's BTS user's ring), then
    /// reset the index to the base. The overflow path: a record costs a
    /// decode, a filter and a ring push, with no allocation.
    fn drain_bts(&mut self, hw: &mut dyn DsHardware, id: UserId) -> usize {
        let buf = self.bts(id).buf;
        let index = self.bts_index(hw, id).clamp(buf.base, buf.abs_max);
        let n = ((index - buf.base) as usize) / BTS_RECORD_BYTES;
        if n == 0 {
            return 0;
        }
        // A CPU buffer also feeds the BTS user of the task that ran there.
        let fan = match (self.user(id).map(|u| u.scope), self.bts(id).loaded_on) {
            (Ok(Scope::Cpu(c)), Some(on)) if on == c => self.cpus[c.idx()]
                .current
                .and_then(|t| self.task_bts.get(&t).copied())
                .filter(|&t| self.bts(t).mode == Mode::Stream),
            _ => None,
        };
        let (main, task) = two_mut(&mut self.users, id.0 as usize, fan.map(|t| t.0 as usize));
        let Kind::Bts(main) = &mut main.kind else {
            unreachable!()
        };
        let task = task.and_then(|t| match &mut t.kind {
            Kind::Bts(b) => Some(b),
            _ => None,
        });
        let Some(bytes) = hw.mem(buf.base, n * BTS_RECORD_BYTES) else {
            self.set_bts_index(hw, id, buf.base);
            return n;
        };
        let recs = bytes
            .chunks_exact(BTS_RECORD_BYTES)
            .filter_map(BtsRecord::decode);
        match task {
            // One consumer: a filtered bulk copy.
            None => {
                let p = main.privilege;
                main.ring.push_all(recs.filter(|r| p.admits(r)));
            }
            Some(t) => {
                for r in recs {
                    if main.privilege.admits(&r) {
                        main.ring.push(r);
                    }
                    if t.privilege.admits(&r) {
                        t.ring.push(r);
                    }
                }
            }
        }
        self.set_bts_index(hw, id, buf.base);
        n
    }

    fn drain_pebs(&mut self, hw: &mut dyn DsHardware, cpu: CpuId) -> usize {
        let c = &self.cpus[cpu.idx()];
        let (Some(id), area) = (c.pebs, c.area) else {
            return 0;
        };
        let Some(User {
            kind: Kind::Pebs(p),
            ..
        }) = self.users[id.0 as usize].as_mut()
        else {
            return 0;
        };
        let index = read_u64(hw, area + DsField::PEBS_INDEX.0).clamp(p.buf.base, p.buf.abs_max);
        let n = ((index - p.buf.base) as usize) / PEBS_RECORD_BYTES;
        if let Some(bytes) = hw.mem(p.buf.base, n * PEBS_RECORD_BYTES) {
            for chunk in bytes.chunks_exact(PEBS_RECORD_BYTES) {
                if let Some(r) = PebsRecord::decode(chunk) {
                    p.ring.push(r);
                }
            }
        }
        let base = p.buf.base;
        write_u64(hw, area + DsField::PEBS_INDEX.0, base);
        n
    }

    /// The performance-monitoring interrupt on `cpu` (the machine calls
    /// this): drain the loaded stream BTS buffer and the PEBS buffer into
    /// their consumers' rings.
    pub fn on_pmi(&mut self, hw: &mut dyn DsHardware, cpu: CpuId) -> PmiOutcome {
        let Some(c) = self.cpus.get(cpu.idx()) else {
            return PmiOutcome::default();
        };
        let bts = match c.loaded {
            Some(u) if self.bts(u).mode == Mode::Stream => self.drain_bts(hw, u),
            _ => 0,
        };
        let pebs = self.drain_pebs(hw, cpu);
        PmiOutcome { bts, pebs }
    }

    /// A context switch on `cpu` (the scheduler calls this, on that CPU).
    /// A CPU buffer is drained first, so the outgoing task's user gets its
    /// branches and the CPU user gets `departs`/`arrives` records after
    /// them; then the outgoing task's buffer state is saved and the incoming
    /// one's loaded.
    pub fn switch_task(&mut self, hw: &mut dyn DsHardware, cpu: CpuId, s: &SwitchInfo) {
        let Some(c) = self.cpus.get(cpu.idx()) else {
            return;
        };
        if let Some(u) = c.cpu_bts {
            let recs = [
                s.prev
                    .map(|_| BtsRecord::departs(s.prev_ip, s.time, s.voluntary)),
                s.next
                    .map(|_| BtsRecord::arrives(s.time, s.next_ip, s.voluntary)),
            ];
            match self.bts(u).mode {
                Mode::Stream => {
                    self.drain_bts(hw, u);
                    let ring = &mut self.bts_mut(u).ring;
                    for r in recs.into_iter().flatten() {
                        ring.push(r);
                    }
                }
                Mode::Snapshot => {
                    for r in recs.into_iter().flatten() {
                        self.append_snapshot(hw, u, r);
                    }
                }
            }
        }
        self.cpus[cpu.idx()].current = s.next;
        self.relayout(hw, cpu);
        self.drain_task_behind_cpu_buffer(hw, cpu);
    }

    /// While a CPU buffer is loaded, the running task's user is fed from it;
    /// records still in the task's own buffer (written where no CPU buffer
    /// was) are older, so they go to its ring first, keeping it in order.
    fn drain_task_behind_cpu_buffer(&mut self, hw: &mut dyn DsHardware, cpu: CpuId) {
        let c = &self.cpus[cpu.idx()];
        if c.cpu_bts.is_none() {
            return;
        }
        let Some(tu) = c.current.and_then(|t| self.task_bts.get(&t).copied()) else {
            return;
        };
        if self.bts(tu).mode == Mode::Stream && self.bts(tu).loaded_on.is_none() {
            self.drain_bts(hw, tu);
        }
    }

    /// Write `r` into snapshot user `u`'s circular buffer at its index, as
    /// the processor would.
    fn append_snapshot(&mut self, hw: &mut dyn DsHardware, u: UserId, r: BtsRecord) {
        let buf = self.bts(u).buf;
        let mut idx = self.bts_index(hw, u);
        if idx < buf.base || idx + BTS_RECORD_BYTES as u64 > buf.abs_max {
            idx = buf.base;
        }
        if let Some(b) = hw.mem_mut(idx, BTS_RECORD_BYTES) {
            b.copy_from_slice(&r.encode());
        }
        self.set_bts_index(hw, u, idx + BTS_RECORD_BYTES as u64);
    }

    /// Drain a stream user's hardware buffer now (BTS or PEBS), without
    /// waiting for the threshold: before reading at the end of a run, or for
    /// a task that is not running. For a task running under a CPU buffer,
    /// that buffer is drained too. Returns the hardware records read.
    pub fn flush(&mut self, hw: &mut dyn DsHardware, id: UserId) -> Result<usize, DsError> {
        let u = self.user(id)?;
        match &u.kind {
            Kind::Bts(b) if b.mode == Mode::Stream => {
                // A running task's newest records may sit in a CPU buffer
                // that feeds it; they come out with it (and go to the CPU
                // user's ring too, in order).
                let mut n = 0;
                if let Scope::Task(t) = u.scope {
                    let cpu_user = self
                        .cpu_running(t)
                        .and_then(|c| self.cpus[c.idx()].cpu_bts)
                        .filter(|&c| self.bts(c).mode == Mode::Stream);
                    if let Some(c) = cpu_user {
                        n += self.drain_bts(hw, c);
                    }
                }
                Ok(n + self.drain_bts(hw, id))
            }
            Kind::Pebs(_) => match u.scope {
                Scope::Cpu(c) => Ok(self.drain_pebs(hw, c)),
                Scope::Task(_) => Ok(0),
            },
            _ => Err(self.wrong_kind(id, "a stream BTS or PEBS user")),
        }
    }

    fn wrong_kind(&self, id: UserId, needs: &'static str) -> DsError {
        let is = match self.user(id).map(|u| &u.kind) {
            Ok(Kind::Bts(b)) if b.mode == Mode::Snapshot => "a snapshot BTS user",
            Ok(Kind::Bts(_)) => "a stream BTS user",
            Ok(Kind::Pebs(_)) => "a PEBS user",
            _ => "an LBR user",
        };
        DsError::WrongKind {
            user: id,
            is,
            needs,
        }
    }

    /// Hand a stream BTS user's ring to `f`, oldest first, emptying it.
    /// Returns how many entries.
    pub fn read_bts(
        &mut self,
        id: UserId,
        f: &mut dyn FnMut(Entry<BtsRecord>),
    ) -> Result<usize, DsError> {
        self.user(id)?;
        match &mut self.users[id.0 as usize].as_mut().expect("live").kind {
            Kind::Bts(b) if b.mode == Mode::Stream => Ok(b.ring.read(f)),
            _ => Err(self.wrong_kind(id, "a stream BTS user")),
        }
    }

    /// Hand a PEBS user's ring to `f`, oldest first, emptying it.
    pub fn read_pebs(
        &mut self,
        id: UserId,
        f: &mut dyn FnMut(Entry<PebsRecord>),
    ) -> Result<usize, DsError> {
        self.user(id)?;
        match &mut self.users[id.0 as usize].as_mut().expect("live").kind {
            Kind::Pebs(p) => Ok(p.ring.read(f)),
            _ => Err(self.wrong_kind(id, "a PEBS user")),
        }
    }

    /// A snapshot user's buffer, oldest record first: from the index to the
    /// end, then from the base to the index, skipping slots never written.
    pub fn snapshot(&self, hw: &dyn DsHardware, id: UserId) -> Result<Vec<BtsRecord>, DsError> {
        match &self.user(id)?.kind {
            Kind::Bts(b) if b.mode == Mode::Snapshot => {
                let buf = b.buf;
                let mut idx = self.bts_index(hw, id);
                if idx < buf.base || idx >= buf.abs_max {
                    idx = buf.base;
                }
                let mut out = Vec::new();
                for (from, to) in [(idx, buf.abs_max), (buf.base, idx)] {
                    if let Some(bytes) = hw.mem(from, (to - from) as usize) {
                        out.extend(
                            bytes
                                .chunks_exact(BTS_RECORD_BYTES)
                                .filter_map(BtsRecord::decode)
                                .filter(|r| *r != BtsRecord::default())
                                .filter(|r| b.privilege.admits(r)),
                        );
                    }
                }
                Ok(out)
            }
            _ => Err(self.wrong_kind(id, "a snapshot BTS user")),
        }
    }

    /// Records `id`'s ring dropped so far.
    pub fn lost(&self, id: UserId) -> Result<u64, DsError> {
        match &self.user(id)?.kind {
            Kind::Bts(b) => Ok(b.ring.lost_total()),
            Kind::Pebs(p) => Ok(p.ring.lost_total()),
            Kind::Lbr => Ok(0),
        }
    }

    /// The BTS user whose buffer `cpu`'s DS area describes now.
    pub fn loaded(&self, cpu: CpuId) -> Option<UserId> {
        self.cpus.get(cpu.idx()).and_then(|c| c.loaded)
    }

    /// `cpu`'s DS save area address (0 when no user needs one).
    pub fn area(&self, cpu: CpuId) -> u64 {
        self.cpus.get(cpu.idx()).map_or(0, |c| c.area)
    }

    /// Every live user, as a refusal would name it.
    pub fn holders(&self) -> Vec<Holder> {
        self.live().map(|(id, u)| u.holder(id)).collect()
    }
}
