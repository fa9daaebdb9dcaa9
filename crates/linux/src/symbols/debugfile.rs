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

use object::{Object, ObjectSection};

/// The directories searched for `.build-id/` trees and `<path>` copies.
const DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];

/// Where to look: the system's places, or others (for tests).
pub(crate) struct SearchDirs {
    /// Roots of `.build-id/` trees and `<path>` copies.
    pub debug_dirs: Vec<PathBuf>,
    /// The debuginfod client cache.
    pub debuginfod: Option<PathBuf>,
}

impl SearchDirs {
    /// `/usr/lib/debug`, `/lib/debug` and the user's debuginfod cache.
    pub fn system() -> SearchDirs {
        SearchDirs {
            debug_dirs: DEBUG_DIRS.iter().map(PathBuf::from).collect(),
            debuginfod: debuginfod_cache(),
        }
    }
}

/// The GNU build-id of an ELF file, if it has one. Read from the
/// `.note.gnu.build-id` section, not through the program headers: in a
/// separate debug file those still describe the original file's layout, so
/// `object`'s `build_id` (which prefers them) reads the wrong bytes there.
pub(crate) fn build_id(file: &object::File<'_>) -> Option<Vec<u8>> {
    let data = file.section_by_name(".note.gnu.build-id")?.data().ok()?;
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if file.is_little_endian() {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize)
    };
    // namesz, descsz, type (3 = NT_GNU_BUILD_ID), "GNU\0", the id.
    let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
    let desc_at = 12 + namesz.div_ceil(4) * 4;
    (kind == 3 && data.get(12..12 + namesz)? == b"GNU\0")
        .then(|| data.get(desc_at..desc_at + descsz).map(<[u8]>::to_vec))
        .flatten()
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
    find_in(path, file, &SearchDirs::system())
}

/// [`find`], searching `dirs`.
pub(crate) fn find_in(path: &Path, file: &object::File<'_>, dirs: &SearchDirs) -> Option<PathBuf> {
    if file.section_by_name(".debug_info").is_some() {
        return None;
    }
    let id = build_id(file);
    let id = id.as_deref().filter(|b| b.len() >= 2);
    if let Some(id) = id {
        let (first, rest) = (hex(&id[..1]), hex(&id[1..]));
        for d in &dirs.debug_dirs {
            let p = d
                .join(".build-id")
                .join(&first)
                .join(format!("{rest}.debug"));
            if acceptable(&p, Some(id), None) {
                return Some(p);
            }
        }
        if let Some(cache) = &dirs.debuginfod {
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
        cands.extend(dirs.debug_dirs.iter().map(|d| d.join(rel_dir).join(&name)));
        for p in cands {
            // A file cannot be its own debug file.
            if p != path && acceptable(&p, id, Some(crc)) {
                return Some(p);
            }
        }
    }
    let rel = path.strip_prefix("/").unwrap_or(path);
    for d in &dirs.debug_dirs {
        let p = d.join(rel);
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

    /// A C program built with -g in `dir`, then split as distributions do:
    /// `prog` stripped of DWARF (with a debuglink when `link`), `prog.debug`
    /// holding it. `None` (SKIP printed) without gcc/objcopy.
    fn split_program(dir: &Path, link: bool) -> Option<(PathBuf, PathBuf)> {
        use std::process::Command;
        let src = dir.join("p.c");
        std::fs::write(
            &src,
            "int g_split = 1; int main(void) { return g_split; }\n",
        )
        .unwrap();
        let full = dir.join("full");
        let run = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
        if !run(Command::new("gcc").args(["-g", "-o"]).arg(&full).arg(&src)) {
            eprintln!("SKIP: gcc cannot build a test program; install gcc");
            return None;
        }
        let dbg = dir.join("prog.debug");
        let prog = dir.join("prog");
        assert!(run(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&dbg)));
        let mut strip = Command::new("objcopy");
        strip.arg("--strip-debug");
        if link {
            strip.current_dir(dir).arg("--add-gnu-debuglink=prog.debug");
        }
        assert!(run(strip.arg(&full).arg(&prog)));
        Some((prog, dbg))
    }

    fn find_for(prog: &Path, dirs: &SearchDirs) -> Option<PathBuf> {
        let data = std::fs::read(prog).unwrap();
        let f = object::File::parse(&*data).unwrap();
        find_in(prog, &f, dirs)
    }

    fn no_dirs() -> SearchDirs {
        SearchDirs {
            debug_dirs: Vec::new(),
            debuginfod: None,
        }
    }

    fn id_of(p: &Path) -> String {
        let data = std::fs::read(p).unwrap();
        hex(&build_id(&object::File::parse(&*data).unwrap()).unwrap())
    }

    #[test]
    fn debuglink_beside_the_file_is_found_and_a_wrong_crc_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let Some((prog, dbg)) = split_program(t.path(), true) else {
            return;
        };
        assert_eq!(find_for(&prog, &no_dirs()), Some(dbg.clone()));
        // The same name in .debug/ is found too.
        let sub = t.path().join(".debug");
        std::fs::create_dir(&sub).unwrap();
        std::fs::rename(&dbg, sub.join("prog.debug")).unwrap();
        assert_eq!(find_for(&prog, &no_dirs()), Some(sub.join("prog.debug")));
        // A changed file no longer has the CRC the link records.
        let mut bytes = std::fs::read(sub.join("prog.debug")).unwrap();
        bytes.push(0);
        std::fs::write(sub.join("prog.debug"), bytes).unwrap();
        assert_eq!(find_for(&prog, &no_dirs()), None);
    }

    #[test]
    fn build_id_tree_debuginfod_cache_and_path_copy_are_found() {
        let t = tempfile::tempdir().unwrap();
        let Some((prog, dbg)) = split_program(t.path(), false) else {
            return;
        };
        let id = id_of(&prog);
        assert_eq!(
            find_for(&prog, &no_dirs()),
            None,
            "no link, nothing in place"
        );
        // /usr/lib/debug/.build-id/xx/yyyy.debug
        let root = t.path().join("debugroot");
        let bid = root.join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&bid).unwrap();
        let in_tree = bid.join(format!("{}.debug", &id[2..]));
        std::fs::copy(&dbg, &in_tree).unwrap();
        let dirs = SearchDirs {
            debug_dirs: vec![root.clone()],
            debuginfod: None,
        };
        assert_eq!(find_for(&prog, &dirs), Some(in_tree.clone()));
        std::fs::remove_file(&in_tree).unwrap();
        // <debuginfod cache>/<build-id>/debuginfo
        let cache = t.path().join("cache");
        std::fs::create_dir_all(cache.join(&id)).unwrap();
        std::fs::copy(&dbg, cache.join(&id).join("debuginfo")).unwrap();
        let dirs = SearchDirs {
            debug_dirs: vec![root.clone()],
            debuginfod: Some(cache.clone()),
        };
        assert_eq!(
            find_for(&prog, &dirs),
            Some(cache.join(&id).join("debuginfo"))
        );
        std::fs::remove_dir_all(&cache).unwrap();
        // /usr/lib/debug/<path>.debug
        let rel = prog.strip_prefix("/").unwrap();
        let copy = root.join(format!("{}.debug", rel.display()));
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&dbg, &copy).unwrap();
        let dirs = SearchDirs {
            debug_dirs: vec![root],
            debuginfod: None,
        };
        assert_eq!(find_for(&prog, &dirs), Some(copy));
    }

    #[test]
    fn a_debug_file_of_another_build_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let Some((prog, _)) = split_program(t.path(), false) else {
            return;
        };
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let Some((_, other_dbg)) = split_program(&other, false) else {
            return;
        };
        // Same source, but gcc's build-id hashes the output, and the path differs.
        let id = id_of(&prog);
        if id == id_of(&other_dbg) {
            eprintln!("SKIP: two builds got the same build-id");
            return;
        }
        let root = t.path().join("debugroot");
        let bid = root.join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&bid).unwrap();
        std::fs::copy(&other_dbg, bid.join(format!("{}.debug", &id[2..]))).unwrap();
        let dirs = SearchDirs {
            debug_dirs: vec![root],
            debuginfod: None,
        };
        assert_eq!(find_for(&prog, &dirs), None);
    }

    #[test]
    fn hex_is_lower_case_without_separators() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
    }
}
