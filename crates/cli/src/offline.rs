//! Symbolize through the library's [`Symbolizer`] over a record file's
//! module map: works without the process (`report`, and `watch`'s summary
//! after the target exits).
//!
//! The library does the work (blazesym over each mapped file's symbols and
//! DWARF line tables, one batch per file, cached by IP); this module only
//! converts the record file's [`Module`]s to [`MapEntry`]s and the library's
//! frames to the CLI's [`Frame`].

use crate::frames::{Frame, Symbolize};
use crate::recfile::Module;
use hwbreak_linux::symbols::{self, read_maps, MapEntry, Symbolizer};

/// A maps entry as a record file's module: the reverse of [`map_entry`].
/// A mapping whose file was deleted is named by its `/proc/PID/map_files`
/// link, which stays readable while the process lives.
pub fn module(m: &MapEntry, pid: i32) -> Module {
    let path = if m.deleted {
        format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)
    } else {
        m.path.clone()
    };
    Module {
        start: m.start,
        end: m.end,
        file_offset: m.offset,
        path,
    }
}

/// A record file's module as a maps entry. A record file keeps only
/// executable file mappings, so the entry is marked a file (nonzero inode).
pub fn map_entry(m: &Module) -> MapEntry {
    MapEntry {
        start: m.start,
        end: m.end,
        perms: "r-xp".into(),
        offset: m.file_offset,
        inode: 1,
        path: m.path.clone(),
        deleted: false,
    }
}

/// A symbolizer over these mappings (any order).
pub fn symbolizer(modules: &[Module]) -> Symbolizer {
    Symbolizer::from_maps(modules.iter().map(map_entry).collect())
}

/// Add mappings seen later (a library loaded since).
pub fn add_modules(sym: &mut Symbolizer, more: &[Module]) {
    sym.add_maps(more.iter().map(map_entry).collect());
}

/// The library's frame as the CLI's: the offset only with a function name,
/// the module and its offset only for an address in a recorded module.
pub fn frame_from(f: &symbols::Frame) -> Frame {
    Frame {
        ip: f.ip,
        function: f.function.as_deref().map(str::to_string),
        offset: f.function.is_some().then_some(f.offset),
        file: f.file.as_deref().map(str::to_string),
        line: f.line,
        module: f.module.as_deref().map(str::to_string),
        module_offset: f.module_offset,
    }
}

/// The target's executable mappings, kept as they grow (libraries loaded
/// later). Symbolization works from this snapshot, so stacks still resolve
/// after the process exits.
pub struct Maps {
    pid: Option<i32>,
    /// Every executable file mapping seen so far.
    pub modules: Vec<Module>,
}

impl Maps {
    /// None yet, of process `pid` (`None`: CPU-wide, no process).
    pub fn new(pid: Option<i32>) -> Self {
        Maps {
            pid,
            modules: Vec::new(),
        }
    }

    /// Re-read `/proc/PID/maps`; returns the mappings not seen before.
    pub fn refresh(&mut self) -> Vec<Module> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        let Ok(maps) = read_maps(pid) else {
            return Vec::new();
        };
        let mut new = Vec::new();
        for m in maps.iter().filter(|m| m.is_exec() && m.is_file()) {
            if self
                .modules
                .iter()
                .any(|k| k.start == m.start && k.end == m.end)
            {
                continue;
            }
            let md = module(m, pid);
            self.modules.push(md.clone());
            new.push(md);
        }
        new
    }

    /// Add mappings the kernel reported; returns those not seen before.
    pub fn add(&mut self, more: Vec<Module>) -> Vec<Module> {
        let mut new = Vec::new();
        for m in more {
            if !self
                .modules
                .iter()
                .any(|k| k.start == m.start && k.end == m.end)
            {
                self.modules.push(m.clone());
                new.push(m);
            }
        }
        new
    }

    /// Whether a known mapping holds `ip`.
    pub fn covers(&self, ip: u64) -> bool {
        self.modules.iter().any(|m| m.start <= ip && ip < m.end)
    }

    /// Code bytes at `addr` from the mapped file (the program may have
    /// exited by the time its hits are handled); false if no known mapping
    /// holds them all or the file cannot be read.
    pub fn read_code(&self, addr: u64, buf: &mut [u8]) -> bool {
        use std::os::unix::fs::FileExt;
        let end = addr + buf.len() as u64;
        self.modules
            .iter()
            .find(|m| m.start <= addr && end <= m.end)
            .and_then(|m| {
                let f = std::fs::File::open(&m.path).ok()?;
                f.read_exact_at(buf, addr - m.start + m.file_offset).ok()
            })
            .is_some()
    }
}

impl Symbolize for Symbolizer {
    fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame> {
        Symbolizer::symbolize(self, ips)
            .iter()
            .map(frame_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own executable file mappings.
    fn self_modules() -> Vec<Module> {
        let pid = std::process::id() as i32;
        symbols::read_maps(pid)
            .unwrap()
            .iter()
            .filter(|m| m.is_file() && m.is_exec())
            .map(|m| module(m, pid))
            .collect()
    }

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        a_function_to_find as fn() -> u64 as usize as u64
    }

    #[test]
    fn own_function_is_found_through_the_module_map() {
        let ip = a_function_to_find();
        let mut s = symbolizer(&self_modules());
        let f = &Symbolize::symbolize(&mut s, &[ip, 1])[..];
        let name = f[0].function.clone().unwrap_or_default();
        assert!(name.contains("a_function_to_find"), "{:?}", f[0]);
        assert!(f[0].offset.is_some() && f[0].module_offset.is_some());
        assert_eq!(f[1], Frame::unknown(1));
    }

    #[test]
    fn modules_added_later_are_used() {
        let ip = a_function_to_find();
        let mut s = symbolizer(&[]);
        assert_eq!(Symbolize::symbolize(&mut s, &[ip])[0], Frame::unknown(ip));
        add_modules(&mut s, &self_modules());
        let f = &Symbolize::symbolize(&mut s, &[ip])[0];
        assert!(f
            .function
            .as_deref()
            .unwrap_or_default()
            .contains("a_function_to_find"));
    }
}
