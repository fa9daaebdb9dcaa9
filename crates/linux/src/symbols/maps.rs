//! `/proc/PID/maps`: which file is mapped where, read and parsed by
//! [`crate::procfs`]; this module keeps the symbols' own error type.

use std::path::PathBuf;

use super::SymbolError;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// File offset mapped at `start`.
    pub offset: u64,
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// The path, `[heap]`-style name, or empty. A trailing ` (deleted)` is removed
    /// and recorded in `deleted`.
    pub path: String,
    /// The mapped file was deleted (then read it through `/proc/PID/map_files`).
    pub deleted: bool,
}

impl MapEntry {
    /// An executable mapping of the file at `path` (as a
    /// `PERF_RECORD_MMAP2` reports one: no inode is needed to use it).
    pub fn executable(start: u64, end: u64, offset: u64, path: &str) -> Self {
        MapEntry {
            start,
            end,
            perms: "r-xp".into(),
            offset,
            inode: 1,
            path: path.into(),
            deleted: false,
        }
    }

    /// Whether `addr` lies in this mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether this maps a file (not `[heap]`, `[stack]`, `[vdso]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// Executable mapping.
    pub fn is_exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

impl From<crate::procfs::Mapping> for MapEntry {
    fn from(m: crate::procfs::Mapping) -> Self {
        MapEntry {
            start: m.start,
            end: m.end,
            perms: m.perms,
            offset: m.offset,
            inode: m.inode,
            path: m.path,
            deleted: m.deleted,
        }
    }
}

/// Parse the text of a maps file. Malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    crate::procfs::parse_maps(text)
        .into_iter()
        .map(MapEntry::from)
        .collect()
}

/// Read `/proc/PID/maps`. A missing process gives [`SymbolError::NoProcess`].
pub fn read_maps(pid: i32) -> Result<Vec<MapEntry>, SymbolError> {
    let path = PathBuf::from(format!("/proc/{}/maps", crate::procfs::live_task(pid)));
    // procfs::maps reads through a live thread if the main thread has exited.
    match crate::procfs::maps(pid) {
        Ok(m) if m.is_empty() => {
            if crate::procfs::is_kernel_thread(pid) {
                return Err(SymbolError::KernelThread {
                    pid,
                    comm: crate::procfs::comm(pid),
                });
            }
            // A zombie (exited, not yet reaped) has an empty maps file.
            Err(SymbolError::NoProcess { pid })
        }
        Ok(m) => Ok(m.into_iter().map(MapEntry::from).collect()),
        Err(crate::error::Error::ProcessGone { .. }) => Err(SymbolError::NoProcess { pid }),
        Err(crate::error::Error::Permission { .. }) => Err(SymbolError::permission(pid, path)),
        Err(crate::error::Error::Sys { source, .. }) => Err(SymbolError::io(path, source)),
        Err(e) => Err(SymbolError::io(path, std::io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_deleted_lines() {
        let t = "55d4a000-55d4b000 r--p 00000000 fd:01 1234   /usr/bin/x\n\
                 55d4b000-55d4c000 r-xp 00001000 fd:01 1234   /usr/bin/x\n\
                 7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
                 7ffd0000-7ffd1000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f1000-7f2000 r-xp 00002000 fd:01 99 /tmp/lib y.so (deleted)\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].offset, 0x1000);
        assert!(m[1].is_exec() && m[1].is_file());
        assert!(!m[2].is_file());
        assert_eq!(m[3].path, "[stack]");
        assert_eq!(m[4].path, "/tmp/lib y.so");
        assert!(m[4].deleted);
    }
}
