//! A variable's value before its program runs, from the executable file.
//!
//! A launched command runs from `exec` on, so a value read from its memory
//! after the watches are armed may already include writes. The loaded
//! image starts as the file's bytes: `.data` holds the initial value and
//! `.bss` is zero, unless the dynamic loader relocates that word (a pointer
//! in a PIE), in which case the value is not known from the file.

use object::{Object, ObjectSection, SectionKind};
use std::path::Path;

/// The `len` (≤ 8) bytes at link-time address `addr` of the ELF file at
/// `path` as the program starts, little-endian; `None` if the file cannot
/// be read, no section holds them, or a dynamic relocation rewrites them.
pub fn initial_value(path: &Path, addr: u64, len: u64) -> Option<u64> {
    if len == 0 || len > 8 {
        return None;
    }
    let data = super::map_file(path)?;
    let file = object::File::parse(&*data).ok()?;
    if let Some(relocs) = file.dynamic_relocations() {
        for (off, _) in relocs {
            if off < addr + len && off + 8 > addr {
                return None;
            }
        }
    }
    let sec = file
        .sections()
        .find(|s| s.address() <= addr && addr + len <= s.address() + s.size())?;
    let mut buf = [0u8; 8];
    match sec.kind() {
        SectionKind::UninitializedData => {}
        SectionKind::Data | SectionKind::ReadOnlyData => {
            let bytes = sec.data_range(addr, len).ok()??;
            buf[..len as usize].copy_from_slice(bytes);
        }
        _ => return None,
    }
    Some(u64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Globals of this test binary: one in `.data`, one in `.bss`, one pointer.
    #[used]
    static DATA: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0x1234_5678_9abc_def0);
    #[used]
    static BSS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    #[used]
    static PTR: std::sync::atomic::AtomicPtr<u64> =
        std::sync::atomic::AtomicPtr::new(&BSS as *const _ as *mut u64);

    /// This executable's load bias: runtime address minus link-time address.
    fn link_addr(runtime: u64) -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = crate::symbols::read_maps(std::process::id() as i32).unwrap();
        let first = maps
            .iter()
            .filter(|m| m.path == exe.to_string_lossy())
            .min_by_key(|m| m.start)
            .unwrap();
        // The first mapping of a PIE maps file offset 0 at link address 0.
        runtime - (first.start - first.offset)
    }

    #[test]
    fn data_and_bss_values_come_from_the_file_and_relocated_words_do_not() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        // Change the runtime values: the file's must still be the initial ones.
        DATA.store(1, std::sync::atomic::Ordering::Relaxed);
        BSS.store(2, std::sync::atomic::Ordering::Relaxed);
        let a = link_addr(DATA.as_ptr() as u64);
        assert_eq!(initial_value(&exe, a, 8), Some(0x1234_5678_9abc_def0));
        assert_eq!(initial_value(&exe, a, 2), Some(0xdef0));
        assert_eq!(
            initial_value(&exe, link_addr(BSS.as_ptr() as u64), 8),
            Some(0)
        );
        // A pointer in a PIE is relocated at load: unknown from the file.
        assert_eq!(initial_value(&exe, link_addr(PTR.as_ptr() as u64), 8), None);
        assert_eq!(initial_value(&exe, a, 9), None, "at most 8 bytes");
        assert_eq!(initial_value(Path::new("/nonexistent"), a, 8), None);
        assert_eq!(initial_value(&exe, 0x10, 8), None, "no section there");
    }
}
