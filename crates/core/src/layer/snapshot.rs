//! The layer's whole state at one instant, for before/after comparisons
//! (a failed call must change nothing).

use alloc::vec::Vec;

use crate::arch::{ArchBp, Pool};
use crate::attr::BpAttr;
use crate::bp::BpId;
use crate::slots::Slots;
use crate::target::{CpuId, Target, TaskId};

use super::Layer;

/// A registered breakpoint in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpSnapshot {
    /// Its id.
    pub id: BpId,
    /// Its attributes.
    pub attr: BpAttr,
    /// What the arch made of them.
    pub arch: ArchBp,
    /// Its target.
    pub target: Target,
    /// Registered "reserve on enable".
    pub reserve_on_enable: bool,
    /// Its cookie.
    pub cookie: u64,
    /// Wide breakpoints: the CPUs it is live on, ascending.
    pub members: Vec<CpuId>,
}

/// One occupied debug register in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// The register's pool.
    pub pool: Pool,
    /// The register's index in its pool.
    pub slot: usize,
    /// The breakpoint programmed there.
    pub bp: BpId,
    /// What was programmed (address, length, control bits).
    pub arch: ArchBp,
}

/// The layer's full state at one instant: books, registered set, install
/// tables, task placement, debugger holdings and the next id.
///
/// Included: everything a later call can observe. The next id is included
/// because a failed registration must not consume one. Excluded: hit
/// counters and the event buffer (runtime output, not state a request
/// changes) and callbacks (not comparable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The slot books.
    pub slots: Slots,
    /// The next id to be handed out.
    pub next_id: u32,
    /// Every registered breakpoint, by id.
    pub bps: Vec<BpSnapshot>,
    /// Per CPU: each occupied register, by pool then slot.
    pub installed: Vec<Vec<SlotSnapshot>>,
    /// Per CPU: the task whose breakpoints are installed there.
    pub cpu_task: Vec<Option<TaskId>>,
    /// The layer's view of online CPUs.
    pub online: Vec<bool>,
    /// Per CPU: debugger-held slots per pool.
    pub debugger: Vec<[u16; 2]>,
}

impl Layer {
    /// The layer's full state, for comparing before/after (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        let b = self.books.lock();
        let bps = b
            .bps
            .iter()
            .map(|(&id, bp)| {
                let mut members: Vec<CpuId> = bp
                    .wide
                    .as_ref()
                    .map(|w| w.members().map(|(c, _)| *c).collect())
                    .unwrap_or_default();
                members.sort();
                BpSnapshot {
                    id,
                    attr: bp.attr,
                    arch: bp.arch,
                    target: bp.target,
                    reserve_on_enable: bp.reserve_on_enable,
                    cookie: bp.life.cookie,
                    members,
                }
            })
            .collect();
        let mut installed = Vec::with_capacity(self.possible);
        let mut cpu_task = Vec::with_capacity(self.possible);
        for t in &self.tables {
            let t = t.lock();
            installed.push(
                t.entries()
                    .map(|(pool, slot, e)| SlotSnapshot {
                        pool,
                        slot,
                        bp: e.id,
                        arch: e.bp,
                    })
                    .collect(),
            );
            cpu_task.push(t.task);
        }
        Snapshot {
            slots: b.slots.clone(),
            next_id: b.next_id,
            bps,
            installed,
            cpu_task,
            online: b.online.clone(),
            debugger: b.dbg.clone(),
        }
    }
}
