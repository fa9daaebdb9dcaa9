//! Splitting a byte range over hardware breakpoint slots.
//!
//! One x86 debug register watches 1, 2, 4 or 8 bytes at an address aligned to
//! that length. A wider variable, or one that is not naturally aligned, needs
//! several registers. This is the greedy cover: at each step take the largest
//! length that is aligned at the current address and fits in what is left. It
//! is minimal for a contiguous range under natural alignment, because any
//! cover must split at the same alignment boundaries.

use super::SymbolError;

/// The widest single watch on x86-64 (DR7 LEN = 8 bytes).
pub const MAX_SLOT_LEN: u64 = 8;

/// Cover `[addr, addr+len)` with naturally aligned pieces of 1, 2, 4 or 8 bytes,
/// in address order, using as few pieces as possible.
///
/// ```
/// use hwbreak_linux::symbols::split_into_slots;
/// assert_eq!(split_into_slots(0x1000, 16), vec![(0x1000, 8), (0x1008, 8)]);
/// assert_eq!(split_into_slots(0x1006, 4), vec![(0x1006, 2), (0x1008, 2)]);
/// assert!(split_into_slots(0x1000, 0).is_empty());
/// ```
pub fn split_into_slots(addr: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = addr;
    let Some(end) = addr.checked_add(len) else {
        return out;
    };
    while at < end {
        let left = end - at;
        let mut size = MAX_SLOT_LEN;
        while size > 1 && (at & (size - 1) != 0 || size > left) {
            size /= 2;
        }
        out.push((at, size));
        at += size;
    }
    out
}

/// Like [`split_into_slots`], but fails with [`SymbolError::TooWide`] (which
/// says how many slots are needed) when more than `free` slots would be used.
///
/// ```
/// use hwbreak_linux::symbols::split_within;
/// assert_eq!(split_within(0x1000, 16, 4).unwrap().len(), 2);
/// let e = split_within(0x1000, 40, 4).unwrap_err();
/// assert!(e.to_string().contains("need 5 breakpoint slots"));
/// ```
pub fn split_within(addr: u64, len: u64, free: usize) -> Result<Vec<(u64, u64)>, SymbolError> {
    let pieces = split_into_slots(addr, len);
    if pieces.len() > free {
        return Err(SymbolError::TooWide {
            addr,
            len,
            needs: pieces.len(),
            free,
        });
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_eight_bytes_is_one_slot() {
        assert_eq!(split_into_slots(0x10, 8), vec![(0x10, 8)]);
    }

    #[test]
    fn unaligned_range_is_split_at_alignment_boundaries() {
        assert_eq!(
            split_into_slots(0x1003, 8),
            vec![(0x1003, 1), (0x1004, 4), (0x1008, 2), (0x100a, 1)]
        );
    }

    #[test]
    fn every_piece_is_naturally_aligned_and_the_cover_is_exact() {
        for addr in 0x100u64..0x120 {
            for len in 1u64..40 {
                let p = split_into_slots(addr, len);
                let mut at = addr;
                for &(a, l) in &p {
                    assert_eq!(a, at);
                    assert!(matches!(l, 1 | 2 | 4 | 8));
                    assert_eq!(a % l, 0);
                    at += l;
                }
                assert_eq!(at, addr + len);
            }
        }
    }

    #[test]
    fn too_wide_error_says_how_many_slots() {
        let e = split_within(0x1000, 64, 4).unwrap_err();
        match e {
            SymbolError::TooWide { needs, free, .. } => assert_eq!((needs, free), (8, 4)),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn overflowing_range_gives_no_pieces() {
        assert!(split_into_slots(u64::MAX, 2).is_empty());
    }
}
