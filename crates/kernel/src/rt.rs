//! What a freestanding Rust binary must provide itself: the C memory
//! functions the compiler calls, the heap, the panic handler and an (empty)
//! unwinding personality.
//!
//! The memory functions are hand-written because the host target's
//! `compiler_builtins` expects them from libc. They use `rep movsb`/`rep
//! stosb` and volatile loops, so the compiler cannot turn their bodies back
//! into calls to themselves.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::asm;
use core::ptr::NonNull;

use linked_list_allocator::Heap;

/// `memcpy`.
///
/// # Safety
/// `d` and `s` valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; rep movsb copies exactly n bytes forward.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") d => _, inout("rsi") s => _, options(nostack));
    }
    d
}

/// `memmove`.
///
/// # Safety
/// `d` and `s` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) <= (s as usize) || (d as usize) >= (s as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when d is below s or past its end.
        return unsafe { memcpy(d, s, n) };
    }
    // SAFETY: overlapping with d above s: copy backwards (DF set, then cleared).
    unsafe {
        asm!(
            "std", "rep movsb", "cld",
            inout("rcx") n => _,
            inout("rdi") d.add(n - 1) => _,
            inout("rsi") s.add(n - 1) => _,
            options(nostack)
        );
    }
    d
}

/// `memset`.
///
/// # Safety
/// `d` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; rep stosb stores exactly n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") d => _, in("al") c as u8, options(nostack));
    }
    d
}

/// `memcmp`.
///
/// # Safety
/// `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, within both buffers by the caller's contract.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// `bcmp`.
///
/// # Safety
/// `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// `panic=abort` code never unwinds, but libcore's objects name this symbol.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// The heap: a first-fit list allocator over a static arena, locked with
/// interrupts off so an interrupt handler that allocates cannot deadlock
/// against the code it interrupted.
struct KernelHeap(spin::Mutex<Heap>);

const HEAP_SIZE: usize = 32 << 20;
#[repr(align(4096))]
struct Arena([u8; HEAP_SIZE]);
static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

// SAFETY: every access goes through the spin lock with interrupts off.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        crate::trap::without_irqs(|| {
            self.0
                .lock()
                .allocate_first_fit(l)
                .map_or(core::ptr::null_mut(), |p| p.as_ptr())
        })
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if let Some(p) = NonNull::new(p) {
            // SAFETY: p came from alloc with layout l (GlobalAlloc contract).
            crate::trap::without_irqs(|| unsafe { self.0.lock().deallocate(p, l) });
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(spin::Mutex::new(Heap::empty()));

/// Hand the arena to the allocator (once, on the BSP, before any allocation).
pub fn init_heap() {
    // SAFETY: the arena is a static used only by the allocator, handed over once.
    unsafe {
        let base = core::ptr::addr_of_mut!(ARENA.0) as *mut u8;
        HEAP.0.lock().init(base, HEAP_SIZE);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::trap::disable_irqs();
    crate::serial::print_force(format_args!(
        "PANIC cpu{}: {}\n",
        crate::percpu::this_cpu(),
        info
    ));
    crate::port::qemu_exit(2)
}

/// The precompiled `alloc` has landing pads that name this; with
/// `panic=abort` no unwind ever starts, so it is never called.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    crate::port::qemu_exit(2)
}
