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
//!    single-step off and delivers;
//! 5. delivery: callback, per-breakpoint counter, `Record::Sample`.
//!
//! ## Synchronous unregister
//! Each breakpoint has an in-flight counter (`Shared`). Delivery increments
//! it, then checks the *dying* flag; unregister sets *dying*, uninstalls, then
//! waits for the counter to reach zero. Both sides use `SeqCst`, so either
//! delivery sees *dying* and backs out, or unregister sees the increment and
//! waits for the callback to finish. After unregister returns, no callback for
//! that breakpoint runs.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use alloc::sync::Arc;

use crate::arch::{Pool, RawStatus};
use crate::events::{Record, Sample};
use crate::install::{Pending, MAX_HITS};
use crate::layer::{Callback, Dispatched, Hit, Layer};
use crate::machine::Machine;
use crate::target::CpuId;
use crate::BpId;

/// What dispatch needs of a breakpoint without touching the books.
pub(crate) struct Shared {
    pub id: BpId,
    pub cookie: u64,
    pub callback: Option<Callback>,
    /// Set once registration has committed on every CPU.
    live: AtomicBool,
    /// Set when unregister starts.
    dying: AtomicBool,
    /// Deliveries running now.
    in_flight: AtomicU32,
    /// Hits delivered.
    pub hits: AtomicU64,
}

impl Shared {
    pub fn new(id: BpId, cookie: u64, callback: Option<Callback>) -> Self {
        Shared {
            id,
            cookie,
            callback,
            live: AtomicBool::new(false),
            dying: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Registration finished: hits may be delivered from now on.
    pub fn set_live(&self) {
        self.live.store(true, Ordering::SeqCst);
    }

    /// Fully registered and not being unregistered.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst) && !self.dying.load(Ordering::SeqCst)
    }

    /// Start a delivery. False when the breakpoint is dying or not live: no callback.
    fn enter(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.is_live() {
            true
        } else {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    fn exit(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Unregister's half of the protocol: no new delivery starts after this.
    pub fn kill(&self) {
        self.dying.store(true, Ordering::SeqCst);
    }

    /// Wait until every delivery that started before [`Shared::kill`] is done.
    /// Spins: a callback runs in exception context and never blocks.
    pub fn wait_idle(&self) {
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// A hit to deliver once the table lock is dropped.
struct Delivery {
    shared: Arc<Shared>,
    ip: u64,
    addr: u64,
}

pub(crate) fn handle(
    layer: &Layer,
    m: &mut dyn Machine,
    cpu: CpuId,
    raw: &RawStatus,
) -> Dispatched {
    let mut out = Dispatched::default();
    let Some(table) = layer.table(cpu) else {
        return out;
    };
    let arch = layer.arch();
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
                            shared: p.shared,
                            ip: p.ip,
                            addr: p.addr,
                        },
                    );
                }
            }
            m.set_single_step(cpu, false);
        }

        let mut stepping = false;
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
                let ok = in_range && e.shared.is_live();
                if !ok {
                    out.strays += 1;
                }
                if arch.needs_step_over(&e.bp) {
                    // Trap-before: the access has not happened. Disable the slot
                    // here, step one instruction, deliver on completion. Strays
                    // are stepped over too, or the CPU would trap forever.
                    e.stepping = true;
                    let p = Pending {
                        pool,
                        slot,
                        id: e.id,
                        shared: e.shared.clone(),
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
                                shared: e.shared.clone(),
                                ip: decoded.ip,
                                addr,
                            },
                        );
                    }
                }
            }
        }
        if stepping {
            m.set_single_step(cpu, true);
            out.stepping = true;
        }
    }

    // Deliver outside the table lock: a slow callback delays no install.
    let task = m.current(cpu);
    let time = m.now();
    for d in todo.iter_mut().take(n) {
        let Some(d) = d.take() else { continue };
        if !d.shared.enter() {
            out.strays += 1; // unregistered between the trap and now
            continue;
        }
        let hit = Hit {
            bp: d.shared.id,
            cookie: d.shared.cookie,
            cpu,
            task,
            ip: d.ip,
            addr: d.addr,
            time,
        };
        if let Some(cb) = &d.shared.callback {
            cb(&hit);
        }
        d.shared.hits.fetch_add(1, Ordering::Relaxed);
        layer.push_event(
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
        d.shared.exit();
        out.delivered += 1;
    }
    out
}
