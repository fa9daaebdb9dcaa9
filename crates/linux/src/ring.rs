//! Our own reader for the perf mmap ring buffer.
//!
//! Layout: one metadata page (`struct perf_event_mmap_page`), then
//! `2^n` data pages. The kernel writes records at `data_head`; we consume
//! from `data_tail`. The protocol (`include/uapi/linux/perf_event.h`):
//!
//! * load `data_head` with **acquire** ordering, so record bytes written by
//!   the kernel before it advanced the head are visible to our reads;
//! * read records in `[tail, head)`;
//! * store `data_tail` with **release** ordering, so our reads of a record
//!   complete before the kernel may overwrite its space.
//!
//! A record that lies wholly before the end of the data area is handed out
//! in place (zero copy). One that crosses the end is copied, in two parts,
//! into a scratch buffer. The tail advances after each record's callback
//! returns, so the kernel can refill space while a long drain runs.
//!
//! The data area is memory the kernel writes while we read it, so it is
//! never viewed as a whole `&[u64]` (a shared reference promises that the
//! bytes do not change). [`RingData`] reads it the way rust-vmm's
//! `VolatileSlice` reads guest memory: single words (record headers) and
//! copies (a record that wraps) with volatile loads, and only the span of
//! one record that the protocol has handed to us (`[tail, head)`, which the
//! kernel does not write until we move the tail past it) is lent out as a
//! slice, for the duration of one callback.

use crate::event::Event;
use crate::record::{parse, Header, Record, SampleLayout};
use memmap2::{MmapOptions, MmapRaw};
use perf_event_open_sys::bindings::perf_event_mmap_page;
use std::io;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one [`Ring::drain`] call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainStats {
    /// Records handed to the callback.
    pub records: u64,
    /// Of those, how many crossed the end of the ring and were copied.
    pub copied: u64,
    /// Records that did not parse (skipped; a non-zero value means a bug or corruption).
    pub malformed: u64,
}

/// A mapped perf ring buffer and the event that owns it.
pub struct Ring {
    map: MmapRaw,
    owner: Event,
    data_off: usize,
    data_size: usize,
    layout: SampleLayout,
    scratch: Vec<u64>,
}

// SAFETY: the mapping is process memory that stays valid as long as `map` lives;
// all access to it goes through `&mut self` (drain) or atomics (head/tail), so moving
// the Ring to another thread is sound.
unsafe impl Send for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.owner.as_raw_fd())
            .field("data_size", &self.data_size)
            .finish_non_exhaustive()
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

impl Ring {
    /// Map `data_pages` (a power of two) data pages for `owner`. Records of
    /// every event redirected here with [`Event::set_output`] are parsed with
    /// `layout`.
    pub fn new(owner: Event, data_pages: usize, layout: SampleLayout) -> io::Result<Ring> {
        if !data_pages.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring size {data_pages} pages is not a power of two"),
            ));
        }
        let ps = page_size();
        // Shared read-write, as perf_event_open(2) prescribes (we write data_tail).
        let map = MmapOptions::new()
            .len((data_pages + 1) * ps)
            .map_raw(owner.as_raw_fd())?;
        let mut r = Ring {
            map,
            owner,
            data_off: ps,
            data_size: data_pages * ps,
            layout,
            scratch: Vec::new(),
        };
        // Linux >= 4.1 publishes the data area's place; older kernels leave 0.
        let off = r
            .meta_u64(offset_of!(perf_event_mmap_page, data_offset))
            .load(Ordering::Relaxed);
        let size = r
            .meta_u64(offset_of!(perf_event_mmap_page, data_size))
            .load(Ordering::Relaxed);
        if off != 0 && size != 0 {
            r.data_off = off as usize;
            r.data_size = size as usize;
        }
        Ok(r)
    }

    /// The event whose fd is mapped (other events point their output here).
    pub fn event(&self) -> &Event {
        &self.owner
    }

    /// Bytes of data area.
    pub fn data_size(&self) -> usize {
        self.data_size
    }

    fn meta_u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.data_off);
        // SAFETY: `off` is the 8-aligned offset of a u64 field inside the metadata page,
        // which is mapped for our lifetime; the kernel updates it concurrently, hence atomic.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    fn head(&self) -> &AtomicU64 {
        self.meta_u64(offset_of!(perf_event_mmap_page, data_head))
    }

    fn tail(&self) -> &AtomicU64 {
        self.meta_u64(offset_of!(perf_event_mmap_page, data_tail))
    }

    /// Bytes written by the kernel and not yet consumed.
    pub fn pending(&self) -> u64 {
        let head = self.head().load(Ordering::Acquire);
        head.wrapping_sub(self.tail().load(Ordering::Relaxed))
    }

    fn data(&self) -> RingData<'_> {
        // SAFETY: the data area is mapped for as long as `self` lives (the
        // returned value borrows `self`), page-aligned (so 8-aligned) and
        // `data_size` bytes long. The kernel writes into it concurrently;
        // `RingData` only reads it with volatile loads, and lends out a
        // record's words only under the ring protocol (see `drain_data`).
        unsafe {
            RingData::from_raw(
                self.map.as_ptr().add(self.data_off) as *const u64,
                self.data_size / 8,
            )
        }
    }

    /// Hand the pending records whose header `want` accepts to `f`, oldest
    /// first, without consuming any: a later [`Ring::drain`] sees them all
    /// again. (The drain reads a launched program's mmap records from every
    /// ring this way before unwinding any hit.)
    pub fn peek(&mut self, want: impl Fn(&Header) -> bool, f: impl FnMut(Record<'_>)) {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Relaxed);
        let mut scratch = std::mem::take(&mut self.scratch);
        let layout = self.layout;
        // The tail stays: the kernel keeps off [tail, head) meanwhile.
        walk_data(
            self.data(),
            head,
            tail,
            &layout,
            &mut scratch,
            want,
            |_| {},
            f,
        );
        self.scratch = scratch;
    }

    /// Hand every pending record to `f`, oldest first; returns what it saw.
    /// Records are zero-copy where contiguous; `f` must not keep them.
    pub fn drain(&mut self, f: impl FnMut(Record<'_>)) -> DrainStats {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Relaxed);
        let mut scratch = std::mem::take(&mut self.scratch);
        let layout = self.layout;
        let tail_ref = self.tail();
        let (_, st) = drain_data(
            self.data(),
            head,
            tail,
            &layout,
            &mut scratch,
            // Free each record's space as soon as the callback is done with it.
            |t| tail_ref.store(t, Ordering::Release),
            f,
        );
        self.scratch = scratch;
        st
    }
}

/// The data area of a ring: `words` 8-byte words that another party (the
/// kernel) may write at any time, outside the span the ring protocol hands
/// to the reader. Like rust-vmm's `VolatileSlice`, it never makes a `&[u64]`
/// over the whole area: words are read with volatile loads, and a record is
/// lent out as a slice only by [`drain_data`], inside `[tail, head)`.
#[derive(Debug, Clone, Copy)]
pub struct RingData<'a> {
    ptr: NonNull<u64>,
    words: usize,
    _mem: PhantomData<&'a [u64]>,
}

impl<'a> RingData<'a> {
    /// Memory nobody else writes (a test's or a benchmark's buffer, or a
    /// copy of a ring).
    pub fn from_slice(s: &'a [u64]) -> RingData<'a> {
        RingData {
            ptr: NonNull::from(s).cast(),
            words: s.len(),
            _mem: PhantomData,
        }
    }

    /// A ring's data area at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be non-null, 8-aligned and valid for reads of `words`
    /// words for `'a`. Others may write the memory, but only outside the
    /// `[tail, head)` span of the ring protocol that [`drain_data`] is given.
    pub unsafe fn from_raw(ptr: *const u64, words: usize) -> RingData<'a> {
        RingData {
            ptr: NonNull::new(ptr as *mut u64).expect("a mapped ring is not at address 0"),
            words,
            _mem: PhantomData,
        }
    }

    /// Its size in words.
    pub fn len(&self) -> usize {
        self.words
    }

    /// Whether it has no words.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// Word `i` (volatile: the value may change under us).
    fn load(&self, i: usize) -> u64 {
        assert!(i < self.words, "ring word {i} of {}", self.words);
        // SAFETY: `i` is in bounds and the memory is valid for reads and
        // aligned (constructor contract); a volatile load of a u64 the
        // kernel may write is a read of some value, never a reference.
        unsafe { self.ptr.as_ptr().add(i).read_volatile() }
    }

    /// Append words `from..to` to `out`, with volatile loads.
    fn copy_to(&self, from: usize, to: usize, out: &mut Vec<u64>) {
        out.extend((from..to).map(|i| self.load(i)));
    }

    /// Words `start..start + n` as a slice.
    ///
    /// # Safety
    /// Nobody may write those words while the slice lives: they must lie in
    /// the `[tail, head)` span of the ring protocol, and the tail must not
    /// be moved past them until the slice is dropped.
    unsafe fn borrow(&self, start: usize, n: usize) -> &'a [u64] {
        assert!(start <= self.words && n <= self.words - start);
        // SAFETY: in bounds (checked above), aligned and valid for reads
        // (constructor contract), and unchanging while borrowed (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), n) }
    }
}

/// [`drain_data`] over a word slice nobody else writes (tests, benchmarks,
/// a saved copy of a ring).
pub fn drain_words(
    data: &[u64],
    head: u64,
    tail: u64,
    layout: &SampleLayout,
    scratch: &mut Vec<u64>,
    set_tail: impl FnMut(u64),
    f: impl FnMut(Record<'_>),
) -> (u64, DrainStats) {
    drain_data(
        RingData::from_slice(data),
        head,
        tail,
        layout,
        scratch,
        set_tail,
        f,
    )
}

/// The walk of [`drain_data`], handing to `f` only records whose header
/// `want` accepts (the others are stepped over unparsed).
#[allow(clippy::too_many_arguments)]
fn walk_data(
    data: RingData<'_>,
    head: u64,
    mut tail: u64,
    layout: &SampleLayout,
    scratch: &mut Vec<u64>,
    want: impl Fn(&Header) -> bool,
    mut set_tail: impl FnMut(u64),
    mut f: impl FnMut(Record<'_>),
) -> (u64, DrainStats) {
    let mut st = DrainStats::default();
    let words = data.len();
    if words == 0 {
        return (tail, st);
    }
    let size = words as u64 * 8;
    while head.wrapping_sub(tail) >= 8 {
        let avail = head.wrapping_sub(tail);
        let start = ((tail % size) / 8) as usize;
        let hdr = Header::from_word(data.load(start));
        let len = hdr.size as u64;
        // More pending than the ring holds (a head behind the tail): no
        // sane writer does that, and walking it would go round the ring
        // for up to 2^64 bytes.
        if avail > size || len < 8 || !len.is_multiple_of(8) || len > avail {
            // Cannot happen with a sane kernel; resynchronise rather than loop.
            st.malformed += 1;
            tail = head;
            break;
        }
        let n = (len / 8) as usize;
        if want(&hdr) {
            let rec = if start + n <= words {
                // SAFETY: the record's words lie in [tail, tail + len), inside
                // [tail, head) (len <= avail): the writer leaves them alone
                // until `set_tail` moves past them, after `f` returned and the
                // slice is gone.
                let words = unsafe { data.borrow(start, n) };
                parse(layout, words).map(&mut f)
            } else {
                st.copied += 1;
                scratch.clear();
                data.copy_to(start, words, scratch);
                data.copy_to(0, n - (words - start), scratch);
                parse(layout, scratch).map(&mut f)
            };
            match rec {
                Some(()) => st.records += 1,
                None => st.malformed += 1,
            }
        }
        tail = tail.wrapping_add(len);
        set_tail(tail);
    }
    set_tail(tail);
    (tail, st)
}

/// The ring walk itself: records in `[tail, head)` (byte positions, taken
/// modulo the data's size), each handed to `f` in place or, if it crosses
/// the end, copied into `scratch`. `set_tail` is called after each record
/// (after `f` returned: only then may the writer reuse its space). Never
/// reads outside `data`, whatever `head`, `tail` and the bytes are.
/// Returns the final tail.
pub fn drain_data(
    data: RingData<'_>,
    head: u64,
    tail: u64,
    layout: &SampleLayout,
    scratch: &mut Vec<u64>,
    set_tail: impl FnMut(u64),
    f: impl FnMut(Record<'_>),
) -> (u64, DrainStats) {
    walk_data(data, head, tail, layout, scratch, |_| true, set_tail, f)
}
