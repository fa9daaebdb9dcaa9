//! The 16550 UARTs: COM1 is the console (polled output, one lock so lines
//! from several CPUs do not interleave); COM2 carries the gdb remote
//! protocol.

use core::fmt::{self, Write};

use crate::port::{inb, outb};

/// COM1.
pub const COM1: u16 = 0x3f8;
/// COM2.
pub const COM2: u16 = 0x2f8;

/// Program a UART for 115200 8N1, FIFOs on, no interrupts.
pub fn init(base: u16) {
    outb(base + 1, 0x00);
    outb(base + 3, 0x80);
    outb(base, 0x01);
    outb(base + 1, 0x00);
    outb(base + 3, 0x03);
    outb(base + 2, 0xc7);
    outb(base + 4, 0x03);
}

/// Send one byte, waiting for room.
pub fn put(base: u16, b: u8) {
    while inb(base + 5) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    outb(base, b);
}

/// A byte if one has arrived.
pub fn try_get(base: u16) -> Option<u8> {
    (inb(base + 5) & 1 != 0).then(|| inb(base))
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(COM1, b'\r');
            }
            put(COM1, b);
        }
        Ok(())
    }
}

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Print to the console (interrupts off while the line is written, so a
/// handler that prints cannot deadlock against the code it interrupted).
pub fn print(args: fmt::Arguments) {
    crate::trap::without_irqs(|| {
        let _g = LOCK.lock();
        let _ = Console.write_fmt(args);
    });
}

/// Print even if another CPU died holding the console lock (panic path).
pub fn print_force(args: fmt::Arguments) {
    let _ = Console.write_fmt(args);
}

/// `print!` to the console.
#[macro_export]
macro_rules! kprint {
    ($($t:tt)*) => { $crate::serial::print(format_args!($($t)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! kprintln {
    ($($t:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($t)*))) };
}
