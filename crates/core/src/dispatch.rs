//! Raw exception status → hit breakpoints → stray filter → step-over → deliver.
//!
//! [`crate::layer::Layer::handle_exception`] runs here. It takes **only the
//! faulting CPU's install table lock**, never the global books, so a hit on
//! one CPU can never deadlock against a registration (or the debugger path)
//! on another, and it never allocates.
//!
//! Steps, for one exception on one CPU:
//! 1. the arch decodes the raw status into the slots that fired;
//! 2. each slot is mapped to the breakpoint the install table says sits there;
//! 3. strays are filtered and counted, with no event and no callback: an empty
//!    slot; a breakpoint not yet fully registered (a wide request still being
//!    committed) or being unregistered; a hardware-reported address outside
//!    the requested range ([`crate::arch::ArchBp::in_requested`]);
//! 4. where the arch traps *before* the access ([`crate::arch::Arch::needs_step_over`]),
//!    the slot is disabled on this CPU, single-step is armed and the hit is
//!    parked; the step-completion exception re-arms the slot, turns
//!    single-step off and delivers. Single-step is the machine's optional
//!    [`crate::machine::SingleStep`]; registration refuses a breakpoint that
//!    needs it on a machine without it ([`crate::Error::NeedsSingleStep`]);
//!    should the machine withdraw it later, the hit is counted as a stray and
//!    the slot stays armed (the machine sees no progress, never a lost hit);
//! 5. delivery: callback, per-breakpoint counter, `Record::Sample`.
//!
//! Delivery follows the synchronous-unregister protocol of [`crate::bp`]:
//! after `unregister` returns, no callback for that breakpoint runs.

use core::sync::atomic::Ordering;

use alloc::sync::Arc;
use spin::Mutex;

use crate::arch::{Arch, Pool, RawStatus};
use crate::bp::{Hit, Life};
use crate::events::{Events, Record, Sample};
use crate::install::{CpuTable, Pending, MAX_HITS};
use crate::machine::{set_single_step, Machine};
use crate::target::CpuId;

/// What dispatch did with an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dispatched {
    /// Hits delivered now.
    pub delivered: u32,
    /// Hits filtered as strays.
    pub strays: u32,
    /// Dispatch armed a single-step (step-over); the machine must run one
    /// instruction and call `handle_exception` again with the step status.
    pub stepping: bool,
    /// x86: set RF on resume.
    pub resume_flag: bool,
}

/// What a hit on one CPU needs of the layer, and nothing more: that CPU's
/// install table (the only lock dispatch takes), the arch that decodes the
/// status and reprograms slots, and the event buffer delivery writes to.
pub(crate) struct Fire<'a> {
    /// The faulting CPU's install table.
    pub table: &'a Mutex<CpuTable>,
    /// The arch backend.
    pub arch: &'a dyn Arch,
    /// Where delivered hits are recorded.
    pub events: &'a Events,
}

/// A hit to deliver once the table lock is dropped.
struct Delivery {
    life: Arc<Life>,
    ip: u64,
    addr: u64,
}

/// Handle one debug exception on `cpu` (see the module doc).
pub(crate) fn handle(
    fire: Fire<'_>,
    m: &mut dyn Machine,
    cpu: CpuId,
    raw: &RawStatus,
) -> Dispatched {
    let mut out = Dispatched::default();
    let Fire {
        table,
        arch,
        events,
    } = fire;
    // Fixed-size: dispatch never allocates.
    let mut todo: [Option<Delivery>; MAX_HITS] = core::array::from_fn(|_| None);
    let mut n = 0usize;
    let mut push = |todo: &mut [Option<Delivery>; MAX_HITS], d: Delivery| {
        if n < MAX_HITS {
            todo[n] = Some(d);
            n += 1;
        }
    };
    {
        let mut t = table.lock();
        let decoded = {
            let regs = m.regs(cpu);
            let t_ref = &*t;
            arch.decode(raw, &*regs, &|pool, slot| {
                t_ref.get(pool, slot).map(|e| e.bp)
            })
        };

        // A step-over completed: re-arm the parked slots, stop stepping, deliver.
        if decoded.step && t.has_pending() {
            for i in 0..t.pending.len() {
                let Some(p) = t.pending[i].take() else {
                    continue;
                };
                let rearm = match t.get_mut(p.pool, p.slot) {
                    Some(e) if e.id == p.id && e.stepping => {
                        e.stepping = false;
                        Some(e.bp)
                    }
                    _ => None, // unregistered or modified meanwhile: nothing to re-arm
                };
                if let Some(bp) = rearm {
                    arch.install(m.regs(cpu), p.slot, &bp);
                }
                if p.deliver {
                    push(
                        &mut todo,
                        Delivery {
                            life: p.life,
                            ip: p.ip,
                            addr: p.addr,
                        },
                    );
                }
            }
            set_single_step(m, cpu, false);
        }

        let mut stepping = false;
        // Asked once, and only for a trap-before hit (never on x86).
        let mut can_step = None;
        for pool in Pool::ALL {
            for slot in 0..arch.slots(pool).min(crate::arch::MAX_SLOTS) {
                if !decoded.hit(pool, slot) {
                    continue;
                }
                let Some(e) = t.get_mut(pool, slot) else {
                    out.strays += 1; // empty slot
                    continue;
                };
                if e.stepping {
                    continue; // already parked for this step
                }
                let addr = decoded.addr.unwrap_or(e.bp.req_addr);
                let in_range = match decoded.addr {
                    // The whole access where the arch knows its length
                    // (POWER: the decoded instruction's size), else its
                    // first byte.
                    Some(a) => e.bp.in_requested(a, decoded.len.max(1)),
                    None => true,
                };
                let ok = in_range && e.life.is_live();
                if !ok {
                    out.strays += 1;
                }
                let step_over = arch.needs_step_over(&e.bp);
                if step_over && !*can_step.get_or_insert_with(|| m.single_step().is_some()) {
                    // Registration refuses a step-over breakpoint on a machine
                    // without single-step (Error::NeedsSingleStep), so only a
                    // machine that withdrew the capability gets here. Neither
                    // park (the hit would be lost) nor deliver a hit that has
                    // not happened: leave the slot armed, so the machine
                    // traps again and sees no progress.
                    if ok {
                        out.strays += 1;
                    }
                } else if step_over {
                    // Trap-before: the access has not happened. Disable the slot
                    // here, step one instruction, deliver on completion. Strays
                    // are stepped over too, or the CPU would trap forever.
                    e.stepping = true;
                    let p = Pending {
                        pool,
                        slot,
                        id: e.id,
                        life: e.life.clone(),
                        ip: decoded.ip,
                        addr,
                        deliver: ok,
                    };
                    arch.uninstall(m.regs(cpu), pool, slot);
                    t.push_pending(p);
                    stepping = true;
                } else {
                    if arch.resume_flags(&e.bp).resume_flag {
                        out.resume_flag = true;
                    }
                    if ok {
                        push(
                            &mut todo,
                            Delivery {
                                life: e.life.clone(),
                                ip: decoded.ip,
                                addr,
                            },
                        );
                    }
                }
            }
        }
        if stepping {
            set_single_step(m, cpu, true);
            out.stepping = true;
        }
    }

    // Deliver outside the table lock: a slow callback delays no install.
    let task = m.current(cpu);
    let time = m.now();
    for d in todo.iter_mut().take(n) {
        let Some(d) = d.take() else { continue };
        if !d.life.enter() {
            out.strays += 1; // unregistered between the trap and now
            continue;
        }
        let hit = Hit {
            bp: d.life.id,
            cookie: d.life.cookie,
            cpu,
            task,
            ip: d.ip,
            addr: d.addr,
            time,
        };
        if let Some(cb) = &d.life.callback {
            cb(&hit);
        }
        d.life.hits.fetch_add(1, Ordering::Relaxed);
        events.push(
            cpu,
            Record::Sample(Sample {
                bp: hit.bp,
                cpu,
                task,
                ip: hit.ip,
                addr: hit.addr,
                time,
            }),
        );
        d.life.exit();
        out.delivered += 1;
    }
    out
}
