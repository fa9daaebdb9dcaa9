//! IP → function+offset (file:line), through blazesym, cached by IP.
//!
//! The symbolizer keeps a snapshot of `/proc/PID/maps` and asks blazesym about
//! *file offsets* in the mapped ELF files (`Source::Elf` + `Input::FileOffset`)
//! rather than `Source::Process`: that way it still works after the process
//! exits (the summary printed when a watched program ends needs its stacks),
//! and each file is parsed once by blazesym's own cache.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};

use super::maps::{read_maps, MapEntry};
use super::module::Module;
use super::SymbolError;

/// One symbolized address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The address asked about.
    pub ip: u64,
    /// Demangled function name (Rust hashes removed), if known. Strings are
    /// shared (`Arc<str>`) so a cached frame is cloned without allocating.
    pub function: Option<Arc<str>>,
    /// Bytes from the function's start to `ip`.
    pub offset: u64,
    /// Source file (full path when the debug info has one).
    pub file: Option<Arc<str>>,
    /// Source line.
    pub line: Option<u32>,
    /// The ELF file (or `[vdso]`, `[heap]`...) holding `ip`.
    pub module: Option<Arc<str>>,
    /// `ip`'s offset within `module`'s file (file mappings only).
    pub module_offset: Option<u64>,
    /// Empty when `ip` is not in inlined code. Otherwise the inline chain as
    /// `addr2line -f -i` and gdb show it: the innermost inlined function
    /// first (its `file`:`line` is the frame's own), then each function it
    /// was inlined into, ending with `function` itself at the line of the
    /// call it inlines.
    pub inlined: Vec<InlineFrame>,
}

/// One function of an inline chain, with the line executing in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InlineFrame {
    /// The function's name (demangled).
    pub function: Arc<str>,
    /// Source file of the line executing in it.
    pub file: Option<Arc<str>>,
    /// That line.
    pub line: Option<u32>,
}

impl fmt::Display for InlineFrame {
    /// `name (file.c:34)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.function)?;
        write_place(f, self.file.as_deref(), self.line)
    }
}

/// ` (file.c:34)` with the file's last path component, or nothing.
fn write_place(f: &mut fmt::Formatter<'_>, file: Option<&str>, line: Option<u32>) -> fmt::Result {
    match (file, line) {
        (Some(file), Some(line)) => {
            let short = file.rsplit('/').next().unwrap_or(file);
            write!(f, " ({short}:{line})")
        }
        (Some(file), None) => write!(f, " ({})", file.rsplit('/').next().unwrap_or(file)),
        _ => Ok(()),
    }
}

impl fmt::Display for Frame {
    /// `function+0x12 (file.c:34)`, or `0x7f... (module)` when unknown. In
    /// inlined code, the chain innermost first, as perf prints it:
    /// `helper (util.h:7) (inlined) ← function+0x12 (file.c:34)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((outer, inner)) = self.inlined.split_last() {
            for i in inner {
                write!(f, "{i} (inlined) ← ")?;
            }
            write!(f, "{}+{:#x}", outer.function, self.offset)?;
            return write_place(f, outer.file.as_deref(), outer.line);
        }
        match &self.function {
            Some(func) => write!(f, "{func}+{:#x}", self.offset)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if self.file.is_some() {
            return write_place(f, self.file.as_deref(), self.line);
        }
        match (&self.function, &self.module) {
            (None, Some(m)) => write!(f, " ({})", m.rsplit('/').next().unwrap_or(m)),
            _ => Ok(()),
        }
    }
}

impl Frame {
    /// The functions at `ip`, innermost first, each with its file and line:
    /// the inline chain, or just this frame's function when not inlined.
    pub fn chain(&self) -> Vec<InlineFrame> {
        if !self.inlined.is_empty() {
            return self.inlined.clone();
        }
        match &self.function {
            Some(func) => vec![InlineFrame {
                function: func.clone(),
                file: self.file.clone(),
                line: self.line,
            }],
            None => Vec::new(),
        }
    }
}

/// Symbolizes IPs of one process, fast on repeats.
///
/// ```no_run
/// use hwbreak_linux::symbols::Symbolizer;
/// # fn main() -> Result<(), hwbreak_linux::symbols::SymbolError> {
/// let mut s = Symbolizer::new(1234)?;
/// for f in s.symbolize(&[0x5555_5555_5129, 0x5555_5555_5190]) {
///     println!("{f}"); // bump_counter+0x9 (counter.c:42)
/// }
/// # Ok(()) }
/// ```
pub struct Symbolizer {
    /// `None`: built from a saved maps snapshot (offline `report`).
    pid: Option<i32>,
    maps: Vec<MapEntry>,
    /// Where each file is read from (`map_files` for deleted ones).
    open: HashMap<String, PathBuf>,
    blaze: blazesym::symbolize::Symbolizer,
    cache: HashMap<u64, Frame, BuildHasherDefault<IpHasher>>,
    /// One shared copy of each module, function and file name.
    strings: HashMap<String, Arc<str>>,
    /// Each mapped file, parsed once: its program headers (file offset →
    /// address), symbol table and separate debug file. `None`: unreadable.
    modules: HashMap<String, Option<Arc<Module>>>,
}

/// A multiplicative hash for IP keys. Hand-written: the std SipHash costs more
/// than the rest of a cached lookup, and IPs are not attacker-chosen keys.
#[derive(Default)]
struct IpHasher(u64);

impl Hasher for IpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Symbolizer {
    /// Snapshot process `pid`'s mappings. Fails only if the process is gone.
    pub fn new(pid: i32) -> Result<Symbolizer, SymbolError> {
        if pid <= 0 {
            return Err(SymbolError::NoProcess { pid });
        }
        let mut s = Symbolizer {
            pid: Some(pid),
            maps: Vec::new(),
            open: HashMap::new(),
            blaze: blaze(),
            cache: HashMap::default(),
            strings: HashMap::new(),
            modules: HashMap::new(),
        };
        s.refresh()?;
        Ok(s)
    }

    /// A symbolizer over a saved snapshot of `/proc/PID/maps` (see
    /// [`Symbolizer::maps`]), for analysing a recording after the process is
    /// gone. The mapped files must still exist at their paths.
    pub fn from_maps(maps: Vec<MapEntry>) -> Symbolizer {
        let open = maps
            .iter()
            .filter(|m| m.is_file())
            .map(|m| (m.path.clone(), PathBuf::from(&m.path)))
            .collect();
        Symbolizer {
            pid: None,
            maps,
            open,
            blaze: blaze(),
            cache: HashMap::default(),
            strings: HashMap::new(),
            modules: HashMap::new(),
        }
    }

    /// Add mappings seen later (a library loaded since the snapshot), for a
    /// symbolizer made by [`Symbolizer::from_maps`]. Addresses they cover that
    /// were already looked up (and found in no mapping) are looked up again.
    pub fn add_maps(&mut self, more: Vec<MapEntry>) {
        for m in more.iter().filter(|m| m.is_file()) {
            self.open
                .entry(m.path.clone())
                .or_insert_with(|| PathBuf::from(&m.path));
        }
        self.cache
            .retain(|ip, _| !more.iter().any(|m| m.contains(*ip)));
        self.maps.extend(more);
    }

    /// The current maps snapshot (save it with a recording for [`Symbolizer::from_maps`]).
    pub fn maps(&self) -> &[MapEntry] {
        &self.maps
    }

    /// Re-read the mappings (new libraries from `dlopen`). On error (the
    /// process has exited) the old snapshot is kept. No-op for a snapshot
    /// made by [`Symbolizer::from_maps`].
    pub fn refresh(&mut self) -> Result<(), SymbolError> {
        let Some(pid) = self.pid else { return Ok(()) };
        let maps = read_maps(pid)?;
        let live = crate::procfs::live_task(pid);
        for m in maps.iter().filter(|m| m.is_file()) {
            if !self.open.contains_key(&m.path) {
                let p = if m.deleted {
                    PathBuf::from(format!("/proc/{live}/map_files/{:x}-{:x}", m.start, m.end))
                } else {
                    PathBuf::from(&m.path)
                };
                self.open.insert(m.path.clone(), p);
            }
        }
        self.maps = maps;
        Ok(())
    }

    /// Number of IPs cached so far.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Symbolize `ips`, in order. Unknown addresses give a frame with only `ip`
    /// (and the module when it is mapped). Return addresses from a stack point
    /// after the call: pass `ip - 1` for the caller's line.
    pub fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame> {
        let missing: Vec<u64> = ips
            .iter()
            .copied()
            .filter(|ip| !self.cache.contains_key(ip))
            .collect();
        if !missing.is_empty() {
            if missing
                .iter()
                .any(|&ip| !self.maps.iter().any(|m| m.contains(ip)))
            {
                let _ = self.refresh(); // a library loaded since the snapshot
            }
            self.fill(&missing);
        }
        ips.iter()
            .map(|ip| {
                self.cache.get(ip).cloned().unwrap_or(Frame {
                    ip: *ip,
                    ..Frame::default()
                })
            })
            .collect()
    }

    /// Symbolize one IP.
    pub fn symbolize_one(&mut self, ip: u64) -> Frame {
        self.symbolize(&[ip]).pop().unwrap_or_default()
    }

    fn fill(&mut self, ips: &[u64]) {
        // Group by file so blazesym gets one batch per file.
        let mut by_file: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for &ip in ips {
            match self.maps.iter().find(|m| m.contains(ip)) {
                Some(m) if m.is_file() => {
                    by_file
                        .entry(m.path.clone())
                        .or_default()
                        .push((ip, ip - m.start + m.offset));
                }
                Some(m) => {
                    let module = (!m.path.is_empty()).then(|| intern(&mut self.strings, &m.path));
                    self.cache.insert(
                        ip,
                        Frame {
                            ip,
                            module,
                            ..Frame::default()
                        },
                    );
                }
                None => {
                    self.cache.insert(
                        ip,
                        Frame {
                            ip,
                            ..Frame::default()
                        },
                    );
                }
            }
        }
        for (path, pairs) in by_file {
            let open = self
                .open
                .get(&path)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&path));
            let module = self
                .modules
                .entry(path.clone())
                .or_insert_with(|| Module::load(Path::new(&path), &open).ok().map(Arc::new))
                .clone();
            // Addresses as the file links them, asked of the file that has the
            // debug info (the separate debug file, wherever it was found).
            let vaddrs: Option<Vec<u64>> = module
                .as_ref()
                .and_then(|m| pairs.iter().map(|p| m.vaddr_of_file_offset(p.1)).collect());
            let syms = match (&module, &vaddrs) {
                (Some(m), Some(v)) => {
                    let src = m.debug_file.clone().unwrap_or_else(|| open.clone());
                    self.blaze
                        .symbolize(&Source::Elf(Elf::new(src)), Input::VirtOffset(v))
                }
                _ => {
                    let offs: Vec<u64> = pairs.iter().map(|p| p.1).collect();
                    self.blaze
                        .symbolize(&Source::Elf(Elf::new(open)), Input::FileOffset(&offs))
                }
            }
            .unwrap_or_default();
            let module_name = intern(&mut self.strings, &path);
            for (k, &(ip, off)) in pairs.iter().enumerate() {
                let mut f = Frame {
                    ip,
                    module: Some(module_name.clone()),
                    module_offset: Some(off),
                    ..Frame::default()
                };
                let vaddr = vaddrs.as_ref().map(|v| v[k]);
                if let Some(Symbolized::Sym(s)) = syms.get(k) {
                    fill_frame(&mut self.strings, &mut f, s, vaddr, module.as_deref());
                }
                self.cache.insert(ip, f);
            }
        }
    }
}

/// Fill `f` from blazesym's answer `s` for link-time address `vaddr`.
fn fill_frame(
    strings: &mut HashMap<String, Arc<str>>,
    f: &mut Frame,
    s: &Sym<'_>,
    vaddr: Option<u64>,
    m: Option<&Module>,
) {
    {
        f.function = (!s.name.is_empty()).then(|| intern(strings, &s.name));
        f.offset = s.offset as u64;
        // blazesym gives a function whose code is in several ranges (a hot
        // and a `.cold` part) address 0, so its offset would be the absolute
        // address: take the offset from the symbol table's entry for the
        // part holding the address instead, as perf and gdb's `x/i` do.
        let sane = s.addr != 0
            && vaddr.is_none_or(|v| s.addr <= v && s.size.is_none_or(|z| v - s.addr < z as u64));
        if !sane {
            if let Some(sym) =
                vaddr.and_then(|v| m.and_then(|m| m.func_containing(v).map(|s| (v, s))))
            {
                let (v, sym) = sym;
                f.offset = v - sym.addr;
                if f.function.as_deref() != Some(sym.name.as_str()) {
                    f.function = Some(intern(strings, &sym.name));
                }
            }
        }
        let place = |strings: &mut HashMap<String, Arc<str>>, ci: Option<&CodeInfo<'_>>| {
            (
                ci.map(|c| intern(strings, &c.to_path().to_string_lossy())),
                ci.and_then(|c| c.line),
            )
        };
        let (file, line) = place(strings, s.code_info.as_deref());
        if s.inlined.is_empty() {
            (f.file, f.line) = (file, line);
            return;
        }
        // blazesym lists inlined functions outermost first, each with the
        // line executing in it; `code_info` is the line in the outer function.
        let mut chain: Vec<InlineFrame> = Vec::with_capacity(s.inlined.len() + 1);
        for i in s.inlined.iter().rev() {
            let (file, line) = place(strings, i.code_info.as_ref());
            chain.push(InlineFrame {
                function: intern(strings, &i.name),
                file,
                line,
            });
        }
        chain.push(InlineFrame {
            function: f.function.clone().unwrap_or_else(|| intern(strings, "??")),
            file,
            line,
        });
        f.file = chain[0].file.clone();
        f.line = chain[0].line;
        f.inlined = chain;
    }
}

/// The blazesym symbolizer: file and line, and inlined functions.
fn blaze() -> blazesym::symbolize::Symbolizer {
    blazesym::symbolize::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .build()
}

fn intern(strings: &mut HashMap<String, Arc<str>>, s: &str) -> Arc<str> {
    if let Some(a) = strings.get(s) {
        return a.clone();
    }
    let a: Arc<str> = Arc::from(s);
    strings.insert(s.to_string(), a.clone());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        a_function_to_find as fn() -> u64 as usize as u64
    }

    #[test]
    fn added_maps_symbolize_an_address_first_seen_unmapped() {
        let ip = a_function_to_find();
        let mut s = Symbolizer::from_maps(Vec::new());
        assert_eq!(
            s.symbolize_one(ip),
            Frame {
                ip,
                ..Frame::default()
            }
        );
        let own: Vec<MapEntry> = read_maps(std::process::id() as i32)
            .unwrap()
            .into_iter()
            .filter(|m| m.is_file() && m.is_exec())
            .collect();
        let text = own.iter().find(|m| m.contains(ip)).unwrap().clone();
        s.add_maps(own);
        let f = s.symbolize_one(ip);
        let name = f.function.as_deref().unwrap_or_default();
        assert!(name.contains("a_function_to_find"), "{f:?}");
        assert_eq!(f.module.as_deref(), Some(text.path.as_str()));
        assert_eq!(f.module_offset, Some(ip - text.start + text.offset));
    }
}
