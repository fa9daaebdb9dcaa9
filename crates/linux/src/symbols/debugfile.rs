//! Separate debug info: where a stripped ELF file's DWARF and full symbol
//! table live.
//!
//! Distributions strip their binaries and ship the debug info in another
//! package (`libc6-dbg`, `python3.11-dbg`, `*-dbgsym`). The places searched,
//! in gdb's order:
//!
//! 1. `/usr/lib/debug/.build-id/xx/yyyy.debug`, from the file's GNU build-id
//!    note (`xx` is the first byte in hex, `yyyy` the rest);
//! 2. the debuginfod client cache (`$DEBUGINFOD_CACHE_PATH`, else
//!    `$XDG_CACHE_HOME/debuginfod_client`, else `~/.cache/debuginfod_client`):
//!    `<cache>/<build-id>/debuginfo`. Only files already there are used;
//!    nothing is downloaded;
//! 3. the `.gnu_debuglink` name next to the file, in its `.debug/`
//!    subdirectory, and under `/usr/lib/debug/<the file's directory>/`. A
//!    debuglink candidate is taken only when its CRC-32 matches the one the
//!    link records (a stale file is skipped);
//! 4. `/usr/lib/debug/<path>` and `/usr/lib/debug/<path>.debug`.
//!
//! A candidate that has a build-id is taken only when it equals the file's.
//! Hand-written: blazesym has its own search but keeps it private and knows
//! neither the debuginfod cache nor the `<path>` form, and the resolver needs
//! the path itself (for gimli and the symbol table).

use std::path::{Path, PathBuf};

use object::Object;

/// The directories searched for `.build-id/` trees and `<path>` copies.
const DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];

/// The GNU build-id of an ELF file, if it has one.
pub(crate) fn build_id(file: &object::File<'_>) -> Option<Vec<u8>> {
    file.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The debuginfod client cache directory, as the elfutils client computes it.
fn debuginfod_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(Path::new(&x).join("debuginfod_client"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/debuginfod_client"))
}

/// The `.gnu_debuglink` file name and CRC-32, if present.
fn debuglink(file: &object::File<'_>) -> Option<(String, u32)> {
    let (name, crc) = file.gnu_debuglink().ok().flatten()?;
    Some((String::from_utf8_lossy(name).into_owned(), crc))
}

/// Whether `cand` is debug info for a file with build-id `want` (when both
/// have one) and, for a debuglink candidate, has the recorded CRC.
fn acceptable(cand: &Path, want: Option<&[u8]>, crc: Option<u32>) -> bool {
    let Some(data) = super::map_file(cand) else {
        return false;
    };
    if let Some(crc) = crc {
        if crc32fast::hash(&data) != crc {
            return false;
        }
    }
    let Ok(f) = object::File::parse(&*data) else {
        return false;
    };
    match (want, build_id(&f)) {
        (Some(w), Some(have)) => w == have.as_slice(),
        _ => true,
    }
}

/// Find the separate debug file of the ELF file `path` (already parsed as
/// `file`), or `None` when the file carries its own DWARF or none is found.
/// `real` is where the file can be read (its path as a process maps it may
/// differ, e.g. `/proc/PID/exe`); `path` gives the directory for debuglink
/// and `/usr/lib/debug/<path>` lookups.
pub(crate) fn find(path: &Path, file: &object::File<'_>) -> Option<PathBuf> {
    if file.section_by_name(".debug_info").is_some() {
        return None;
    }
    let id = build_id(file);
    let id = id.as_deref().filter(|b| b.len() >= 2);
    if let Some(id) = id {
        let (first, rest) = (hex(&id[..1]), hex(&id[1..]));
        for d in DEBUG_DIRS {
            let p = Path::new(d)
                .join(".build-id")
                .join(&first)
                .join(format!("{rest}.debug"));
            if acceptable(&p, Some(id), None) {
                return Some(p);
            }
        }
        if let Some(cache) = debuginfod_cache() {
            let p = cache.join(hex(id)).join("debuginfo");
            if acceptable(&p, Some(id), None) {
                return Some(p);
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let rel_dir = dir.strip_prefix("/").unwrap_or(dir);
    if let Some((name, crc)) = debuglink(file) {
        let mut cands = vec![dir.join(&name), dir.join(".debug").join(&name)];
        cands.extend(
            DEBUG_DIRS
                .iter()
                .map(|d| Path::new(d).join(rel_dir).join(&name)),
        );
        for p in cands {
            // A file cannot be its own debug file.
            if p != path && acceptable(&p, id, Some(crc)) {
                return Some(p);
            }
        }
    }
    let rel = path.strip_prefix("/").unwrap_or(path);
    for d in DEBUG_DIRS {
        let p = Path::new(d).join(rel);
        let mut dbg = p.clone().into_os_string();
        dbg.push(".debug");
        for c in [p, PathBuf::from(dbg)] {
            if acceptable(&c, id, None) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_debuglink_crc_is_the_standard_crc32() {
        // The value gdb's gnu_debuglink_crc32 gives for "123456789".
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn hex_is_lower_case_without_separators() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
    }
}
