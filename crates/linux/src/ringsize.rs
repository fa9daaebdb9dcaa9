//! How large a sampling ring to ask for, within what the kernel lets this
//! user lock (`perf_event_mlock_kb`).
//!
//! ```
//! use hwbreak_linux::ringsize::pages_within;
//! // The kernel default 516 KiB = 128 data pages + the header page.
//! assert_eq!(pages_within(516, 4, 2048), 128);
//! ```

/// The ring size per CPU, in pages, for a watch that records every hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSize {
    /// Data pages per CPU (a power of two).
    pub pages: usize,
    /// Set when the ring is smaller than asked for: one line for stderr
    /// saying why and what to do.
    pub note: Option<String>,
}

/// Pages wanted: 8 MiB. The library's default 512 KiB holds about 15 ms
/// of hits at 300k/s, so a drain thread that misses a beat loses records.
pub const WANT_PAGES: usize = 2048;

/// Pages when the limit cannot be read (the kernel's default budget).
const DEFAULT_PAGES: usize = 128;

/// The ring for a sampling session: [`WANT_PAGES`] for root (or
/// `CAP_IPC_LOCK`), which `perf_event_mlock_kb` does not bind; others get
/// the largest power of two that fits it (the kernel's per-user budget, per
/// CPU), and a note.
pub fn for_sampling() -> RingSize {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return RingSize {
            pages: WANT_PAGES,
            note: None,
        };
    }
    let page_kb = (crate::ring::page_size() / 1024).max(1);
    let Some(kb) = crate::procfs::perf_event_mlock_kb() else {
        return RingSize {
            pages: DEFAULT_PAGES,
            note: None,
        };
    };
    let pages = pages_within(kb, page_kb, WANT_PAGES);
    let note = (pages < WANT_PAGES).then(|| format!(
        "hwbreak: sampling ring {} KiB per CPU (perf_event_mlock_kb = {kb} for non-root); at high hit rates records may be lost: raise kernel.perf_event_mlock_kb or run as root",
        pages * page_kb
    ));
    RingSize { pages, note }
}

/// The largest power-of-two ring (in pages, at most `want`) whose pages plus
/// the ring's header page fit `mlock_kb` KiB; at least 1.
pub fn pages_within(mlock_kb: usize, page_kb: usize, want: usize) -> usize {
    let fit = (mlock_kb / page_kb.max(1)).saturating_sub(1);
    if fit >= want {
        return want;
    }
    if fit == 0 {
        1
    } else {
        1usize << (usize::BITS - 1 - fit.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_ring_is_the_largest_power_of_two_within_perf_event_mlock_kb() {
        // The kernel default 516 KiB = 128 data pages + the header page.
        assert_eq!(pages_within(516, 4, 2048), 128);
        assert_eq!(pages_within(515, 4, 2048), 64);
        assert_eq!(pages_within(8196, 4, 2048), 2048);
        assert_eq!(pages_within(1 << 30, 4, 2048), 2048);
        assert_eq!(pages_within(4, 4, 2048), 1);
        assert_eq!(pages_within(0, 4, 2048), 1);
    }
}
