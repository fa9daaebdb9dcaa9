//! x86 port I/O.

use core::arch::asm;

/// Write a byte to an I/O port.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to devices this kernel owns (UARTs, debug-exit);
    // no memory is touched.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) }
}

/// Read a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for outb.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// Write a dword to an I/O port.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for outb.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack)) }
}

/// Leave QEMU through `isa-debug-exit` (iobase 0xf4): QEMU exits with
/// `(code << 1) | 1`. Halts forever if the device is absent.
pub fn qemu_exit(code: u32) -> ! {
    outl(0xf4, code);
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}
