//! A breakpoint's identity and its life as every stage sees it: [`BpId`],
//! what a consumer receives on a hit ([`Hit`], [`Callback`]), and the state
//! the books, the install tables and dispatch share without a lock
//! (`Life`: registered yet? being unregistered? deliveries in flight, hits,
//! cookie, callback).
//!
//! A leaf: it imports only [`crate::target`]. The layer creates a `Life`,
//! the install tables hold it in each slot the breakpoint occupies, and
//! dispatch reads it to decide whether a hit is delivered.
//!
//! ## Synchronous unregister
//! Delivery increments the in-flight counter (`Life::enter`), then checks
//! the *dying* flag; unregister sets *dying* (`Life::kill`), uninstalls,
//! then waits for the counter to reach zero (`Life::wait_idle`). Both sides
//! use `SeqCst`, so either delivery sees *dying* and backs out, or unregister
//! sees the increment and waits for the callback to finish. After unregister
//! returns, no callback for that breakpoint runs.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::target::{CpuId, TaskId};

/// A registered breakpoint's identity. Never reused within one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BpId(pub u32);

/// What a consumer learns on each hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Which breakpoint.
    pub bp: BpId,
    /// The cookie given at registration.
    pub cookie: u64,
    /// CPU it fired on.
    pub cpu: CpuId,
    /// Task running there.
    pub task: Option<TaskId>,
    /// Instruction pointer.
    pub ip: u64,
    /// Data address.
    pub addr: u64,
    /// Timestamp.
    pub time: u64,
}

/// A hit callback. Runs in exception context: must not block or call back into the layer.
pub type Callback = Box<dyn Fn(&Hit) + Send + Sync>;

/// A breakpoint's life state, shared (behind an `Arc`) by the books, every
/// install-table slot it occupies and dispatch, so a hit can be delivered
/// without touching the books.
pub(crate) struct Life {
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

impl Life {
    pub fn new(id: BpId, cookie: u64, callback: Option<Callback>) -> Self {
        Life {
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
    pub fn enter(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.is_live() {
            true
        } else {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    /// End a delivery started with a successful [`Life::enter`].
    pub fn exit(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Unregister's half of the protocol: no new delivery starts after this.
    pub fn kill(&self) {
        self.dying.store(true, Ordering::SeqCst);
    }

    /// Wait until every delivery that started before [`Life::kill`] is done.
    /// Spins: a callback runs in exception context and never blocks.
    pub fn wait_idle(&self) {
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}
