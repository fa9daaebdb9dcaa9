//! Names in, names out: resolve variables to addresses, and IPs to frames.
//!
//! **Names in.** A [`Resolver`] turns a location such as `counter`,
//! `state.count`, `table[3]`, `a.b[2].c`, `libwatchme.so:watchme_value`,
//! `hwbreak_demo::STATE.hits`, `counter+8`, `0x7f00dead0000` or
//! `counter:0x4010` (a file's link-time address, as `nm` prints it) into a
//! [`Resolved`]: the run-time address (PIE and ASLR load bias applied from
//! `/proc/PID/maps` and the ELF program headers), the default length (the
//! variable's or field's byte size), its type name and how to print its value.
//! Names come from DWARF (`gimli`) and the ELF symbol tables (`object`). A name
//! that does not resolve gives an error listing close matches.
//!
//! **Names out.** A [`Symbolizer`] turns IPs into [`Frame`]s (function+offset,
//! file:line) through `blazesym`, caches by IP, and keeps working after the
//! process exits (it symbolizes file offsets from a maps snapshot).
//!
//! **Wide variables.** A breakpoint watches at most 8 naturally aligned bytes;
//! [`split_into_slots`] covers a wider range with several.
//!
//! This module reads files and `/proc`; it never stops or writes to a process.
//!
//! ```no_run
//! use hwbreak_linux::symbols::{Resolver, Symbolizer, split_into_slots};
//! # fn main() -> Result<(), hwbreak_linux::symbols::SymbolError> {
//! let pid = 1234;
//! let r = Resolver::for_pid(pid)?.resolve("state.count")?;
//! println!("{} at {:#x}, {} bytes, type {:?}", r.name, r.addr, r.len, r.type_name);
//! for (addr, len) in split_into_slots(r.addr, r.len) { /* one breakpoint each */ }
//! let mut sym = Symbolizer::new(pid)?;
//! let frames = sym.symbolize(&[0x5555_5555_1234]);
//! println!("{}", frames[0]);
//! # Ok(()) }
//! ```

mod debugfile;
mod error;
pub mod expr;
mod funcs;
mod initial;
mod maps;
mod module;
mod resolver;
mod split;
mod symbolizer;

pub use error::SymbolError;

/// Map a file read-only, for parsing with `object` without reading it
/// whole (a debug build's binary is tens of MB).
pub(crate) fn map_file(path: &std::path::Path) -> Option<memmap2::Mmap> {
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: a read-only private mapping. If the file changes underneath,
    // parsers see wrong bytes (and give wrong answers or errors), which is
    // not undefined behaviour in the safe code that reads the byte slice.
    unsafe { memmap2::Mmap::map(&f) }.ok()
}
pub use funcs::{function_range, FunctionRange};
pub use initial::initial_value;
pub use maps::{parse_maps, read_maps, MapEntry};
pub use resolver::Resolver;
pub use split::{split_into_slots, split_within, MAX_SLOT_LEN};
pub use symbolizer::{Frame, InlineFrame, Symbolizer};

/// How to show a watched value (old → new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A signed integer (two's complement, little-endian on x86).
    Signed,
    /// An unsigned integer, or a character.
    Unsigned,
    /// An IEEE float (4 or 8 bytes).
    Float,
    /// `true`/`false` (0 or 1 in one byte).
    Bool,
    /// An address.
    Pointer,
    /// A struct, array or unknown type: show the bytes in hex.
    Bytes,
    /// Machine code: a function, for an execute breakpoint.
    Code,
}

impl ValueKind {
    /// Render a value read from memory (little-endian, as on x86-64 and
    /// arm64/POWER little-endian Linux) for `old → new` lines. Integers of 1,
    /// 2, 4 or 8 bytes print in decimal, pointers in hex, floats of 4 or 8
    /// bytes as floats; anything else as hex bytes.
    ///
    /// ```
    /// use hwbreak_linux::symbols::ValueKind;
    /// assert_eq!(ValueKind::Signed.format(&(-3i32).to_le_bytes()), "-3");
    /// assert_eq!(ValueKind::Unsigned.format(&7u64.to_le_bytes()), "7");
    /// assert_eq!(ValueKind::Pointer.format(&0x1000u64.to_le_bytes()), "0x1000");
    /// assert_eq!(ValueKind::Float.format(&1.5f64.to_le_bytes()), "1.5");
    /// assert_eq!(ValueKind::Bool.format(&[1]), "true");
    /// assert_eq!(ValueKind::Bytes.format(&[0xde, 0xad]), "de ad");
    /// ```
    pub fn format(self, bytes: &[u8]) -> String {
        let n = bytes.len();
        let mut buf = [0u8; 8];
        let int = matches!(n, 1 | 2 | 4 | 8);
        if int {
            buf[..n].copy_from_slice(bytes);
        }
        let u = u64::from_le_bytes(buf);
        match self {
            ValueKind::Unsigned if int => u.to_string(),
            ValueKind::Signed if int => {
                let shift = 64 - 8 * n as u32;
                (((u << shift) as i64) >> shift).to_string()
            }
            ValueKind::Pointer if int => format!("{u:#x}"),
            ValueKind::Bool if n == 1 => match bytes[0] {
                0 => "false".into(),
                1 => "true".into(),
                b => format!("{b:#x}"),
            },
            ValueKind::Float if n == 4 => f32::from_bits(u as u32).to_string(),
            ValueKind::Float if n == 8 => f64::from_bits(u).to_string(),
            _ => bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// What a location resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The address to watch. A run-time address, unless `needs_rebase`.
    pub addr: u64,
    /// Default length in bytes: the variable's or field's size; 1 for a function
    /// (an execute breakpoint covers one instruction start; the Linux backend
    /// passes the kernel's required `bp_len`). May exceed 8: see [`split_into_slots`].
    pub len: u64,
    /// Canonical name for display, e.g. `state.count`, `libwatchme.so:watchme_value`,
    /// `hwbreak_demo::STATE.hits`, `counter+0x4`.
    pub name: String,
    /// The type as written in the source (`long`, `struct state`, `AtomicU64`,
    /// `int[16]`), when debug info gives it.
    pub type_name: Option<String>,
    /// How to print the value.
    pub value_kind: ValueKind,
    /// The ELF file holding the symbol (none for a raw address).
    pub module: Option<String>,
    /// `addr` is a link-time address in a position-independent file that is not
    /// running yet ([`Resolver::for_exe`]): add the load bias once it runs, e.g.
    /// by calling [`Resolver::rebase`] and resolving again.
    pub needs_rebase: bool,
}

impl Resolved {
    /// Whether this is a function (default access: execute).
    pub fn is_function(&self) -> bool {
        self.value_kind == ValueKind::Code
    }

    /// Whether one breakpoint covers it (at most 8 bytes, naturally aligned).
    pub fn fits_one_slot(&self) -> bool {
        split_into_slots(self.addr, self.len).len() == 1
    }
}
