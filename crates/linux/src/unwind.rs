//! Frame-pointer unwinding of a copied user stack, in user space.
//!
//! [`crate::watch::Callchain::Copied`] asks the kernel for three registers
//! (BP, SP, IP) and the top few hundred bytes of the user stack at each hit,
//! instead of a kernel-walked callchain, and walks the frame pointers here,
//! on the drain thread. The walk is the kernel's own
//! (`perf_callchain_user` in `arch/x86/events/core.c`): the IP, then for
//! each frame at `fp` the return address at `fp + 8` and the next frame
//! pointer at `fp`.
//!
//! Why: the kernel's walk ends by reading the outermost frame, and in every
//! program started by glibc that frame pointer is 0 (`_start` and `clone`
//! clear RBP), so the last read faults. The fault is caught, but on this VM
//! it costs about 0.5 µs per hit, more than the rest of the sample put
//! together (docs/PERFORMANCE.md, "Where a sampled hit's time goes"). Here
//! the walk simply stops when a frame lies outside the copy.
//!
//! The price: frames that lie above the copied bytes are not seen. The walk
//! tells them apart from the natural end of the stack and reports the
//! chain as [`Walk::truncated`], so a cut stack is never shown as complete.
//!
//! Hand-written rather than a crate: this is the six-line frame-pointer
//! walk, run for every hit on the drain thread without allocation. It is
//! the fallback: when the process is known, [`DwarfUnwinder`] walks the
//! same copy with the modules' DWARF call-frame information (`.eh_frame`,
//! through the `framehop` crate), which also steps through code built
//! without frame pointers. That matters most where a watch hits most: in
//! glibc's `memset`/`memcpy`, which keep no frame, a frame-pointer walk
//! skips the function that called them.

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Walk {
    /// The chain stopped because the next frame lies above the copied
    /// stack bytes (a deeper stack than the copy): frames are missing.
    pub truncated: bool,
}

/// The word at `addr` of a stack copy that starts at `sp`, if it lies
/// wholly in the copy.
fn stack_word(stack: &[u8], sp: u64, addr: u64) -> Option<u64> {
    let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
    let bytes = stack.get(off..off.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// How far above SP a frame pointer may lie and still be taken for a frame
/// of the same stack that the copy did not reach: the default thread stack
/// size (8 MiB). Beyond that the value is not a frame pointer of this stack
/// (code compiled without frame pointers uses RBP as a general register),
/// and the chain ends there as the kernel's would.
const STACK_SPAN: u64 = 8 << 20;

/// Walk the frame pointers of a copied user stack.
///
/// `stack` holds the bytes copied from `sp` upwards (only the valid part:
/// the sample's `dyn_size`). Pushes `ip` and then each return address,
/// innermost first, into `out` (cleared first), at most `max` entries —
/// the same chain the kernel's `PERF_SAMPLE_CALLCHAIN` gives for user code,
/// without context markers.
pub fn walk_frame_pointers(
    ip: u64,
    sp: u64,
    bp: u64,
    stack: &[u8],
    max: usize,
    out: &mut Vec<u64>,
) -> Walk {
    out.clear();
    if max == 0 {
        return Walk::default();
    }
    out.push(ip);
    let end = sp.saturating_add(stack.len() as u64);
    let word = |at: u64| stack_word(stack, sp, at).unwrap_or(0);
    let mut fp = bp;
    while out.len() < max {
        // A frame is two words at fp: the saved frame pointer, then the
        // return address. Both must lie in the copy.
        if fp < sp || fp.checked_add(16).is_none_or(|e| e > end) {
            // Below SP (or 0) is no frame of this stack; far above it is
            // not either. In between, the frame is real but was not copied.
            return Walk {
                truncated: fp >= sp && fp - sp < STACK_SPAN,
            };
        }
        let next = word(fp);
        out.push(word(fp + 8));
        // Stacks grow down: a caller's frame lies above its callee's. A
        // frame pointer that does not move up is not a frame chain (and
        // would loop).
        if next <= fp {
            return Walk::default();
        }
        fp = next;
    }
    Walk::default()
}

/// Walks a copied user stack with each module's DWARF call-frame
/// information (`framehop`), loading the modules of one process from
/// `/proc/PID/maps` (and `PERF_RECORD_MMAP2` records) and their ELF files.
///
/// A frame in no loaded module ends the walk, flagged
/// [`Walk::truncated`]: `framehop` would step over it with the frame
/// pointers, and from code without a frame (a leaf function, glibc's
/// `memset`) that skips the caller while the chain looks complete. So a
/// chain this walk returns unflagged was unwound with CFI at every step.
pub struct DwarfUnwinder {
    pid: i32,
    unwinder: framehop::x86_64::UnwinderX86_64<Section>,
    cache: framehop::x86_64::CacheX86_64,
    /// Executable mappings added (start, end), and those tried but unusable.
    known: Vec<(u64, u64)>,
    /// The mappings whose module (and CFI) was loaded.
    loaded: Vec<(u64, u64)>,
    last_refresh: Option<std::time::Instant>,
}

impl std::fmt::Debug for DwarfUnwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DwarfUnwinder")
            .field("pid", &self.pid)
            .field("modules", &self.known.len())
            .finish()
    }
}

impl DwarfUnwinder {
    /// An unwinder for process `pid`; modules are loaded on first use.
    pub fn new(pid: i32) -> Self {
        DwarfUnwinder {
            pid,
            unwinder: framehop::x86_64::UnwinderX86_64::new(),
            cache: framehop::x86_64::CacheX86_64::new(),
            known: Vec::new(),
            loaded: Vec::new(),
            last_refresh: None,
        }
    }

    fn covers(&self, ip: u64) -> bool {
        self.known.iter().any(|&(s, e)| s <= ip && ip < e)
    }

    /// Add the executable mappings of the process not seen yet. Returns
    /// how many modules were added.
    pub fn refresh(&mut self) -> usize {
        self.last_refresh = Some(std::time::Instant::now());
        let Ok(maps) = crate::symbols::read_maps(self.pid) else {
            return 0;
        };
        let before = self.known.len();
        for m in &maps {
            self.add_mapping(m);
        }
        self.known.len() - before
    }

    /// Add one executable mapping (e.g. from a `PERF_RECORD_MMAP2`), if not
    /// known yet.
    pub fn add_mapping(&mut self, m: &crate::symbols::MapEntry) {
        use framehop::Unwinder;
        if !m.is_exec() || !m.is_file() || self.known.contains(&(m.start, m.end)) {
            return;
        }
        self.known.push((m.start, m.end));
        if let Some(module) = load_module(m) {
            self.unwinder.add_module(module);
            self.loaded.push((m.start, m.end));
        }
    }

    /// Like [`walk_frame_pointers`], with DWARF CFI where the modules have it.
    pub fn walk(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        max: usize,
        out: &mut Vec<u64>,
    ) -> Walk {
        use framehop::Unwinder;
        out.clear();
        if max == 0 {
            return Walk::default();
        }
        // A module not known yet (a library loaded since): look again, but
        // at most every 100 ms (code outside any file, e.g. JIT, never is).
        if !self.covers(ip)
            && self
                .last_refresh
                .is_none_or(|t| t.elapsed() > std::time::Duration::from_millis(100))
        {
            self.refresh();
        }
        let mut read_stack = |addr: u64| stack_word(stack, sp, addr).ok_or(());
        let regs = framehop::x86_64::UnwindRegsX86_64::new(ip, sp, bp);
        let loaded = &self.loaded;
        let mut frames = self
            .unwinder
            .iter_frames(ip, regs, &mut self.cache, &mut read_stack);
        while out.len() < max {
            match frames.next() {
                Ok(Some(f)) => {
                    out.push(f.address());
                    // The next step would guess with the frame pointers.
                    let at = f.address_for_lookup();
                    if !loaded.iter().any(|&(s, e)| s <= at && at < e) {
                        return Walk { truncated: true };
                    }
                }
                Ok(None) => break,
                Err(framehop::Error::CouldNotReadStack(a)) => {
                    return Walk {
                        truncated: a >= sp && a - sp < STACK_SPAN,
                    };
                }
                Err(_) => break,
            }
        }
        Walk::default()
    }
}

/// The unwind sections of the ELF file behind one executable mapping.
/// A section of a mapped file, handed to `framehop` without copying it (a
/// large program's `.text` is tens of MB).
struct Section {
    map: std::sync::Arc<memmap2::Mmap>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Section {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

fn load_module(m: &crate::symbols::MapEntry) -> Option<framehop::Module<Section>> {
    use object::{Object, ObjectSection, ObjectSegment};
    let map = std::sync::Arc::new(crate::symbols::map_file(std::path::Path::new(&m.path))?);
    let file = object::File::parse(&**map).ok()?;
    // The load bias: where the segment behind this mapping was meant to be,
    // against where it is. The mapping starts at the segment's offset
    // rounded down to a page, which can lie inside the previous segment:
    // take the executable segment whose page range holds it.
    let page = 4096u64;
    let seg = file.segments().find(|s| {
        let (off, size) = s.file_range();
        let exec = matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags & object::elf::PF_X != object::elf::ProgramFlags(0));
        exec && off & !(page - 1) <= m.offset && m.offset < off + size
    })?;
    let (seg_off, _) = seg.file_range();
    let svma_at_start = (seg.address() + m.offset).wrapping_sub(seg_off);
    let bias = m.start.wrapping_sub(svma_at_start);
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        let (off, size) = s.file_range()?;
        let range = usize::try_from(off).ok()?..usize::try_from(off + size).ok()?;
        map.get(range.clone())?;
        let data = Section {
            map: map.clone(),
            range,
        };
        Some((s.address()..s.address() + s.size(), data))
    };
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    let (text_svma, text) = section(".text").unzip();
    eh_frame.as_ref()?;
    let info = framehop::ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        text,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        stubs_svma: None,
        stub_helper_svma: None,
        got_svma: None,
        unwind_info: None,
        debug_frame: None,
        text_segment_svma: None,
        text_segment: None,
    };
    Some(framehop::Module::new(
        m.path.clone(),
        m.start..m.end,
        bias,
        info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stack image of `len` bytes with frames `(offset, saved frame
    /// pointer, return address)`.
    fn image(len: usize, frames: &[(usize, u64, u64)]) -> Vec<u8> {
        let mut s = vec![0u8; len];
        for &(off, next, ret) in frames {
            s[off..off + 8].copy_from_slice(&next.to_ne_bytes());
            s[off + 8..off + 16].copy_from_slice(&ret.to_ne_bytes());
        }
        s
    }

    const SP: u64 = 0x7ffd_0000_1000;

    #[test]
    fn walks_every_frame_and_stops_cleanly_at_a_zero_frame_pointer() {
        // write_counter's frame at +0x10, main's at +0x40 whose saved frame
        // pointer is 0, as under glibc's __libc_start_call_main.
        let s = image(
            0x100,
            &[(0x10, SP + 0x40, 0x401234), (0x40, 0, 0x7f00_0000_1111)],
        );
        let mut out = Vec::new();
        let w = walk_frame_pointers(0x401100, SP, SP + 0x10, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234, 0x7f00_0000_1111]);
        assert!(!w.truncated);
    }

    #[test]
    fn a_frame_above_the_copy_is_reported_as_truncated() {
        // The second frame's saved frame pointer points 4 KiB up the stack,
        // past the 256 copied bytes.
        let s = image(
            0x100,
            &[(0x10, SP + 0x40, 0x401234), (0x40, SP + 0x1000, 0x401500)],
        );
        let mut out = Vec::new();
        let w = walk_frame_pointers(0x401100, SP, SP + 0x10, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234, 0x401500]);
        assert!(w.truncated, "frames above the copy must be flagged");
    }

    #[test]
    fn a_frame_straddling_the_end_of_the_copy_is_truncated() {
        let s = image(0x100, &[(0x10, SP + 0xf8, 0x401234)]);
        let mut out = Vec::new();
        let w = walk_frame_pointers(0x401100, SP, SP + 0x10, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234]);
        assert!(w.truncated);
    }

    #[test]
    fn rbp_used_as_a_general_register_ends_the_chain_without_truncation() {
        // Code without frame pointers: RBP holds a small integer, a heap
        // pointer or a pointer below SP. None of these is a cut stack.
        let s = image(0x100, &[]);
        let mut out = Vec::new();
        for bp in [0, 1, 0x5555_0000_0000, SP - 0x100, SP + (64 << 20)] {
            let w = walk_frame_pointers(0x401100, SP, bp, &s, 127, &mut out);
            assert_eq!(out, vec![0x401100], "bp {bp:#x}");
            assert!(!w.truncated, "bp {bp:#x}");
        }
    }

    #[test]
    fn a_frame_pointer_that_does_not_move_up_ends_the_chain() {
        // A self-loop and a downward link: stop after the frame, no loop.
        let s = image(0x100, &[(0x20, SP + 0x20, 0x401234)]);
        let mut out = Vec::new();
        walk_frame_pointers(0x401100, SP, SP + 0x20, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234]);
        let s = image(0x100, &[(0x20, SP + 0x10, 0x401234)]);
        walk_frame_pointers(0x401100, SP, SP + 0x20, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234]);
    }

    #[test]
    fn max_bounds_the_chain_including_the_ip() {
        let s = image(
            0x100,
            &[(0x10, SP + 0x40, 1), (0x40, SP + 0x80, 2), (0x80, 0, 3)],
        );
        let mut out = Vec::new();
        walk_frame_pointers(9, SP, SP + 0x10, &s, 2, &mut out);
        assert_eq!(out, vec![9, 1]);
        walk_frame_pointers(9, SP, SP + 0x10, &s, 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn an_empty_copy_gives_the_ip_alone() {
        let mut out = Vec::new();
        let w = walk_frame_pointers(7, SP, SP + 0x10, &[], 127, &mut out);
        assert_eq!(out, vec![7]);
        assert!(
            w.truncated,
            "a frame pointer just above SP with no bytes copied is a cut stack"
        );
    }

    #[test]
    fn a_frame_in_no_loaded_module_ends_the_dwarf_walk_flagged_cut() {
        // No process, no modules: a frame-pointer guess would give
        // 0x401234 as the caller (the frame of the caller's caller when the
        // hit is in a leaf without a frame); the walk stops and says so.
        let s = image(0x100, &[(0x20, 0, 0x401234)]);
        let mut d = DwarfUnwinder::new(i32::MAX);
        let mut out = Vec::new();
        let w = d.walk(0x401100, SP, SP + 0x20, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100]);
        assert!(w.truncated, "an unwind without CFI is never shown complete");
        // The frame-pointer walk (CPU-wide hits) still takes the guess.
        walk_frame_pointers(0x401100, SP, SP + 0x20, &s, 127, &mut out);
        assert_eq!(out, vec![0x401100, 0x401234]);
    }

    proptest! {
        /// Any bytes, any registers: never panics, never loops, stays within `max`.
        #[test]
        fn never_panics_on_arbitrary_stacks(
            stack in proptest::collection::vec(any::<u8>(), 0..600),
            sp in any::<u64>(),
            bp in any::<u64>(),
            max in 0usize..200,
        ) {
            let mut out = Vec::new();
            walk_frame_pointers(1, sp, bp, &stack, max, &mut out);
            prop_assert!(out.len() <= max);
        }
    }
}
