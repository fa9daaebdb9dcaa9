//! Symbolize addresses from a record file's module map, without the process.
//!
//! Each address is mapped to `(file, file offset)` through the stored
//! mappings, and blazesym reads that file's symbols and DWARF line tables.
//! Addresses of one file go to blazesym in one batch.

use crate::frames::{Frame, Symbolize};
use crate::recfile::Module;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use std::collections::BTreeMap;

/// Symbolizes through a stored module map.
pub struct OfflineSymbolizer {
    modules: Vec<Module>,
    sym: Symbolizer,
}

impl OfflineSymbolizer {
    /// Use these mappings (any order).
    pub fn new(modules: &[Module]) -> Self {
        let mut modules = modules.to_vec();
        modules.sort_by_key(|m| m.start);
        OfflineSymbolizer {
            modules,
            sym: Symbolizer::new(),
        }
    }

    /// Add mappings seen later (a library loaded since).
    pub fn add_modules(&mut self, more: &[Module]) {
        self.modules.extend_from_slice(more);
        self.modules.sort_by_key(|m| m.start);
    }

    fn module_of(&self, ip: u64) -> Option<usize> {
        let i = self.modules.partition_point(|m| m.start <= ip);
        let i = i.checked_sub(1)?;
        (ip < self.modules[i].end).then_some(i)
    }
}

/// Convert one blazesym answer into our frame.
pub fn frame_from(ip: u64, s: &Symbolized<'_>, module: Option<(&str, u64)>) -> Frame {
    let mut f = Frame::unknown(ip);
    if let Some((path, off)) = module {
        f.module = Some(path.to_string());
        f.module_offset = Some(off);
    }
    if let Symbolized::Sym(sym) = s {
        f.function = Some(sym.name.to_string());
        f.offset = Some(sym.offset as u64);
        if let Some(ci) = &sym.code_info {
            f.file = Some(ci.to_path().display().to_string());
            f.line = ci.line;
        }
    }
    f
}

impl Symbolize for OfflineSymbolizer {
    fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame> {
        let mut out: Vec<Frame> = ips.iter().map(|&ip| Frame::unknown(ip)).collect();
        let mut by_module: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, &ip) in ips.iter().enumerate() {
            if let Some(m) = self.module_of(ip) {
                let md = &self.modules[m];
                by_module
                    .entry(m)
                    .or_default()
                    .push((i, ip - md.start + md.file_offset));
            }
        }
        for (m, items) in by_module {
            let md = &self.modules[m];
            let offs: Vec<u64> = items.iter().map(|x| x.1).collect();
            let src = Source::Elf(Elf::new(&md.path));
            let res = self.sym.symbolize(&src, Input::FileOffset(&offs));
            for (k, (i, off)) in items.iter().enumerate() {
                out[*i] = match &res {
                    Ok(v) => frame_from(ips[*i], &v[k], Some((&md.path, *off))),
                    Err(_) => {
                        let mut f = Frame::unknown(ips[*i]);
                        f.module = Some(md.path.clone());
                        f.module_offset = Some(*off);
                        f
                    }
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own mappings, read from /proc/self/maps.
    fn self_modules() -> Vec<Module> {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let range = it.next()?;
                let perms = it.next()?;
                let off = u64::from_str_radix(it.next()?, 16).ok()?;
                let path = it.nth(2)?;
                if !perms.contains('x') || !path.starts_with('/') {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                Some(Module {
                    start: u64::from_str_radix(a, 16).ok()?,
                    end: u64::from_str_radix(b, 16).ok()?,
                    file_offset: off,
                    path: path.to_string(),
                })
            })
            .collect()
    }

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        a_function_to_find as fn() -> u64 as usize as u64
    }

    #[test]
    fn own_function_is_found_through_the_module_map() {
        let ip = a_function_to_find();
        let mut s = OfflineSymbolizer::new(&self_modules());
        let f = &s.symbolize(&[ip, 1])[..];
        let name = f[0].function.clone().unwrap_or_default();
        assert!(name.contains("a_function_to_find"), "{:?}", f[0]);
        assert_eq!(f[1], Frame::unknown(1));
    }
}
