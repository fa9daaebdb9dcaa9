//! Following a watched variable's values through its hits
//! (`hwbreak watch --values`), without stopping the program.
//!
//! The program runs on while its hits are drained, so memory read at drain
//! time may already hold later writes. [`Values`] works each hit's values
//! out in this order of trust:
//!
//! 1. the writing instruction and the registers at the trap ([`store`]):
//!    `mov`, `add`, `inc`, `xchg`, `cmpxchg`, `xadd` ...;
//! 2. the value before the watch's next hit, taken from that hit's own
//!    registers, when nothing can have written in between (same thread, or
//!    well apart in time);
//! 3. for the last hit of a drain, the memory read just before the drain,
//!    when that hit came well before the read.
//!
//! Anything else is unknown (`None`), never guessed. The hits come from an
//! [`order::TimeOrder`](crate::order::TimeOrder), in time order.

use crate::order::{monotonic_ns, Pending, HOLD_NS};
use crate::store::{self, Store};
use hwbreak_core::events::Extended;
use std::collections::HashMap;

/// One followed watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// First byte watched.
    pub addr: u64,
    /// Bytes watched.
    pub len: u64,
    /// Code, not data: it has no value to follow.
    pub code: bool,
}

/// What [`Values`] needs from its caller: where functions start (the
/// symbols) and the code bytes (the mapped files, or the process).
pub trait Code {
    /// How far `ip` is past the start of its function, if the symbols say.
    fn function_offset(&mut self, ip: u64) -> Option<u64>;
    /// Fill `buf` with the code at `addr` of process `pid`; false if it
    /// cannot be read.
    fn read_code(&mut self, pid: i32, addr: u64, buf: &mut [u8]) -> bool;
    /// How many mappings the caller knows: when it grows, a code address
    /// looked up before may now be found.
    fn mappings(&self) -> usize;
}

/// A hit's values, either side of the access (`None`: not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// The watched bytes before the access.
    pub old: Option<u64>,
    /// The watched bytes after the access.
    pub new: Option<u64>,
}

/// The values of every followed watch, carried from drain to drain.
#[derive(Debug)]
pub struct Values {
    watches: Vec<Followed>,
    /// Hit `bp` (a slot piece) → followed watch.
    piece_watch: Vec<usize>,
    pid: Option<i32>,
    last_value: Vec<Option<u64>>,
    /// The writing instruction at each data-hit IP.
    stores: HashMap<u64, Option<Store>>,
    mappings_seen: usize,
    /// Each watch's bytes read just before the latest drain, and when
    /// (`CLOCK_MONOTONIC`).
    snapshot: (u64, Vec<Option<u64>>),
}

/// Read up to 8 bytes at `addr` in process `pid` (little-endian, zero-extended).
pub fn read_value(pid: i32, addr: u64, len: u64) -> Option<u64> {
    let n = len.min(8) as usize;
    let mut buf = [0u8; 8];
    read_exact(pid, addr, &mut buf[..n]).then(|| u64::from_le_bytes(buf))
}

/// Fill `buf` from `addr` in process `pid`; false unless every byte was read.
pub fn read_exact(pid: i32, addr: u64, buf: &mut [u8]) -> bool {
    let n = buf.len();
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: n,
    };
    // SAFETY: `local` points at `buf`, which is live and `n` bytes long; the
    // remote side is only read by the kernel, which checks it.
    let got = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    got == n as isize
}

impl Values {
    /// Follow `watches` in process `pid`, from the values they held when
    /// the watch began (`initial`, one per watch). `piece_watch` maps a
    /// hit's `bp` (a slot piece: a wide variable is split over several) to
    /// its watch.
    pub fn new(
        watches: Vec<Followed>,
        piece_watch: Vec<usize>,
        pid: Option<i32>,
        initial: Vec<Option<u64>>,
    ) -> Self {
        Values {
            watches,
            piece_watch,
            pid,
            last_value: initial,
            stores: HashMap::new(),
            mappings_seen: 0,
            snapshot: (0, Vec::new()),
        }
    }

    fn watch_of(&self, h: &Extended<'_>) -> usize {
        self.piece_watch.get(h.watch()).copied().unwrap_or(0)
    }

    /// Read every watch's bytes: call just before a drain. Memory then holds
    /// the value after a watch's last drained hit if no write came between
    /// (any write would be in the drain).
    pub fn snapshot(&mut self) {
        let t = monotonic_ns();
        let vals = self
            .watches
            .iter()
            .map(|w| {
                if w.code {
                    return None;
                }
                self.pid.and_then(|p| read_value(p, w.addr, w.len))
            })
            .collect();
        self.snapshot = (t, vals);
    }

    /// How many of the ready hits of `p` can be handled now (drained up to
    /// `cutoff`; `u64::MAX` at the end). A hit whose value after cannot be
    /// followed from its own instruction (`xadd`, `xchg`) gets it from the
    /// next hit of its watch, so the last such hit waits for that next hit
    /// (up to a second; at the end, not at all), rather than show a value
    /// read later from memory.
    pub fn ready(&mut self, p: &Pending<'_>, cutoff: u64, code: &mut dyn Code) -> usize {
        const WAIT_NS: u64 = 1_000_000_000;
        if cutoff == u64::MAX {
            return p.ready;
        }
        for i in 0..p.ready {
            let h = p.get(i);
            if h.sample.time.saturating_add(WAIT_NS) < cutoff {
                continue;
            }
            let wi = self.watch_of(&h);
            let has_next = (i + 1..p.len()).any(|j| self.watch_of(&p.get(j)) == wi);
            if has_next {
                continue;
            }
            let (after, before) = self.value_at(&h, wi, Some(0), code);
            if after.is_none() && before.is_some() {
                return i;
            }
        }
        p.ready
    }

    /// The values of the first `k` hits of `p` (into `out`, which is
    /// cleared); the later hits of `p` are only looked at.
    pub fn follow(
        &mut self,
        p: &Pending<'_>,
        k: usize,
        code: &mut dyn Code,
        out: &mut Vec<Change>,
    ) {
        out.clear();
        let n = self.watches.len();
        // The memory read before the drain is the value after a watch's
        // last drained hit when that hit came well before the read (a later
        // write would have been drained too).
        let mut last = vec![usize::MAX; n];
        for i in 0..p.len() {
            last[self.watch_of(&p.get(i))] = i;
        }
        let (read_at, read) = &self.snapshot;
        let now: Vec<Option<u64>> = (0..n)
            .map(|wi| {
                let i = last[wi];
                let settled = i < k && p.get(i).sample.time.saturating_add(HOLD_NS) < *read_at;
                if settled {
                    read.get(wi).copied().flatten()
                } else {
                    None
                }
            })
            .collect();
        // Pass 1: the value before each hit, where its registers keep it
        // (xchg, xadd, cmpxchg), and each hit's next hit of the same watch.
        let mut before = Vec::with_capacity(p.len());
        let mut next = vec![usize::MAX; p.len()];
        let mut prev_of = vec![usize::MAX; n];
        for i in 0..p.len() {
            let h = p.get(i);
            let wi = self.watch_of(&h);
            before.push(self.value_at(&h, wi, None, code).1);
            if prev_of[wi] != usize::MAX {
                next[prev_of[wi]] = i;
            }
            prev_of[wi] = i;
        }
        // The value before the watch's next hit is the value after this one
        // if nothing wrote in between: true in memory order, and hits are in
        // trap-time order. Two threads' traps can land in the other order
        // when their writes are close together, so take it only from the
        // same thread, or from a hit well after this one.
        const SAFE_GAP_NS: u64 = 100_000;
        let next_before = |i: usize| -> Option<u64> {
            let j = *next.get(i)?;
            if j >= p.len() {
                return None;
            }
            let (hi, hj) = (p.get(i), p.get(j));
            let ordered =
                hi.tid() == hj.tid() || hj.sample.time.saturating_sub(hi.sample.time) > SAFE_GAP_NS;
            if ordered {
                before[j]
            } else {
                None
            }
        };
        // Pass 2: the value before a hit is what its registers say, or the
        // value after the watch's previous hit; the value after it comes
        // from the writing instruction, or else from the next hit's
        // registers, or else (for the last hit of a drain) from memory.
        for (i, &bef) in before.iter().enumerate().take(k) {
            let h = p.get(i);
            let wi = self.watch_of(&h);
            let old = bef.or(self.last_value[wi]);
            let new = self
                .value_at(&h, wi, old, code)
                .0
                .or(next_before(i))
                .or(if last[wi] == i { now[wi] } else { None });
            self.last_value[wi] = new;
            out.push(Change { old, new });
        }
        for (last, now) in self.last_value.iter_mut().zip(&now) {
            // Followed values stand (memory may already hold later writes,
            // whose hits come in the next drain); lost track: resynchronise.
            if last.is_none() {
                *last = *now;
            }
        }
    }

    /// Code addresses looked up before their module was known: look again
    /// once the caller knows more mappings.
    fn forget_unknown_if_mapped(&mut self, code: &dyn Code) {
        if code.mappings() != self.mappings_seen {
            self.mappings_seen = code.mappings();
            self.stores.retain(|_, st| st.is_some());
        }
    }

    /// The watched value (after, before) hit `h` of watch `wi`, worked out
    /// from the writing instruction and the registers at the trap
    /// ([`store`]), given the value before (`old`) if known; `None` where
    /// it cannot be.
    fn value_at(
        &mut self,
        h: &Extended<'_>,
        wi: usize,
        old: Option<u64>,
        code: &mut dyn Code,
    ) -> (Option<u64>, Option<u64>) {
        let w = self.watches[wi];
        let (addr, len) = (w.addr, w.len);
        if w.code || h.ext.regs.is_empty() || len > 8 {
            return (None, None);
        }
        let Some(pid) = (if h.ext.pid != 0 {
            Some(h.ext.pid as i32)
        } else {
            self.pid
        }) else {
            return (None, None);
        };
        let ip = h.sample.ip;
        self.forget_unknown_if_mapped(code);
        if !self.stores.contains_key(&ip) {
            let store = find_store(pid, ip, code);
            self.forget_unknown_if_mapped(code);
            self.stores.insert(ip, store);
        }
        let Some(Some(store)) = self.stores.get(&ip) else {
            return (None, None);
        };
        let regs = store::Regs {
            regs: h.ext.regs,
            mask: h.ext.regs_mask,
        };
        let known = |w: store::Written| match w {
            store::Written::Value(v) => Some(v),
            store::Written::Unknown => None,
        };
        (
            known(store.written(regs, addr, len, old)),
            known(store.before(regs, addr, len)),
        )
    }
}

/// Decode the instruction that ends at `ip` (a data hit's IP is just past
/// the write), from the function's start when the symbols give it.
fn find_store(pid: i32, ip: u64, code: &mut dyn Code) -> Option<Store> {
    const MAX_FN: u64 = 4096;
    let start = code
        .function_offset(ip)
        .filter(|&o| o > 0 && o <= MAX_FN)
        .map(|o| ip - o);
    let (from, boundary) = match start {
        Some(s) => (s, true),
        None => (ip.saturating_sub(64), false),
    };
    let mut buf = vec![0u8; (ip - from) as usize];
    code.read_code(pid, from, &mut buf)
        .then(|| Store::find(&buf, ip, boundary))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_value_reads_this_process_and_refuses_an_unmapped_address() {
        let x: u64 = 0x1122_3344_5566_7788;
        let pid = std::process::id() as i32;
        let addr = &x as *const u64 as u64;
        assert_eq!(read_value(pid, addr, 8), Some(x));
        assert_eq!(read_value(pid, addr, 2), Some(0x7788));
        assert_eq!(read_value(pid, 8, 8), None);
    }
}
