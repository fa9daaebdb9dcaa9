//! Location expression → address, length and type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::expr::{self, Root, Step};
use super::maps::{read_maps, MapEntry};
use super::module::{file_matches, norm, DwVar, DwarfIndex, ElfSym, Module, SymKind, Ty, TyKind};
use super::{Resolved, SymbolError, ValueKind};

/// One ELF file in the resolver's search order.
struct Slot {
    /// The path as the process sees it (`/proc/PID/maps`), or as given.
    display: String,
    /// Where to read it from.
    open: PathBuf,
    /// One mapping of it: (start address, file offset), for the load bias.
    mapping: Option<(u64, u64)>,
    /// Running: the load bias is known (0 for a fixed-address executable).
    running: bool,
    module: OnceLock<Result<Arc<Module>, LoadError>>,
}

/// Why a module could not be loaded, kept to give the same error on every use.
#[derive(Debug, Clone)]
enum LoadError {
    /// Not a parsable ELF file: (path, reason).
    BadElf(PathBuf, String),
    /// Not readable: (path, kind, message).
    Io(PathBuf, std::io::ErrorKind, String),
    /// Anything else, as its message.
    Other(String),
}

impl LoadError {
    fn of(e: SymbolError) -> LoadError {
        match e {
            SymbolError::BadElf { path, reason } => LoadError::BadElf(path, reason),
            SymbolError::Io { path, source, .. } => {
                LoadError::Io(path, source.kind(), source.to_string())
            }
            other => LoadError::Other(other.to_string()),
        }
    }

    fn to_error(&self, display: &str) -> SymbolError {
        match self.clone() {
            LoadError::BadElf(path, reason) => SymbolError::BadElf { path, reason },
            LoadError::Io(path, kind, msg) => SymbolError::io(path, std::io::Error::new(kind, msg)),
            LoadError::Other(msg) => SymbolError::BadElf {
                path: PathBuf::from(display),
                reason: msg,
            },
        }
    }
}

impl Slot {
    fn file_name(&self) -> &str {
        self.display.rsplit('/').next().unwrap_or(&self.display)
    }

    fn matches(&self, wanted: &str) -> bool {
        let f = self.file_name();
        self.display == wanted
            || f == wanted
            || (f.starts_with(wanted) && f.as_bytes().get(wanted.len()) == Some(&b'.'))
    }
}

/// Resolves location expressions in one process, or in an executable not yet
/// running. See the [module docs](super) for the grammar.
///
/// Search order for a bare name: the executable, then each shared library in
/// load order. `lib.so:NAME` searches that library only.
///
/// ```no_run
/// use hwbreak_linux::symbols::Resolver;
/// # fn main() -> Result<(), hwbreak_linux::symbols::SymbolError> {
/// // Before the command runs: link-time addresses for a PIE...
/// let mut r = Resolver::for_exe("./counter")?;
/// assert!(r.resolve("counter")?.needs_rebase);
/// // ...and once it runs (e.g. stopped at its first instruction):
/// r.rebase(4242)?;
/// let c = r.resolve("state.count")?;
/// assert!(!c.needs_rebase);
/// # Ok(()) }
/// ```
pub struct Resolver {
    pid: Option<i32>,
    maps: Vec<MapEntry>,
    slots: Vec<Slot>,
}

/// What a name denotes before steps and offsets.
enum Base<'m> {
    Var {
        link: u64,
        ty: Option<Ty>,
        dw: Option<&'m DwarfIndex>,
        size: u64,
    },
    Func {
        link: u64,
    },
}

fn natural_len(addr: u64, max: u64) -> u64 {
    [8u64, 4, 2, 1]
        .into_iter()
        .find(|&n| n <= max.max(1) && addr & (n - 1) == 0)
        .unwrap_or(1)
}

/// `base + off`, or an error if it leaves the 64-bit address space (it
/// used to wrap around, e.g. `counter-0x7fffffffffffffff` to a kernel-half
/// address).
fn offset_addr(shown: &str, base: u64, off: i64) -> Result<u64, SymbolError> {
    base.checked_add_signed(off)
        .ok_or_else(|| SymbolError::BadRange {
            expr: shown.into(),
            message: format!(
            "the offset {}{:#x} goes {}; pick an offset that stays inside the variable or near it",
            if off < 0 { "-" } else { "+" },
            off.unsigned_abs(),
            if off < 0 {
                "below address 0"
            } else {
                "past the last address (2^64 - 1)"
            },
        ),
        })
}

impl Resolver {
    /// A resolver for running process `pid`: reads `/proc/PID/maps` and the
    /// executable now, and each library on first use.
    pub fn for_pid(pid: i32) -> Result<Resolver, SymbolError> {
        Self::for_pid_reusing(pid, HashMap::new())
    }

    fn for_pid_reusing(
        pid: i32,
        mut cache: HashMap<PathBuf, Arc<Module>>,
    ) -> Result<Resolver, SymbolError> {
        if pid <= 0 {
            return Err(SymbolError::NoProcess { pid });
        }
        let maps = read_maps(pid)?;
        // Through a live thread if the main thread has exited.
        let live = crate::procfs::live_task(pid);
        let exe_link = PathBuf::from(format!("/proc/{live}/exe"));
        let exe_path = match std::fs::read_link(&exe_link) {
            Ok(p) => p
                .to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SymbolError::NoProcess { pid })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(SymbolError::permission(pid, exe_link))
            }
            Err(e) => return Err(SymbolError::io(exe_link, e)),
        };
        let mut slots: Vec<Slot> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in maps.iter().filter(|m| m.is_file()) {
            if seen.contains_key(&m.path) {
                continue;
            }
            let is_exe = m.path == exe_path;
            let open = if is_exe {
                exe_link.clone()
            } else if m.deleted || !Path::new(&m.path).exists() {
                PathBuf::from(format!("/proc/{live}/map_files/{:x}-{:x}", m.start, m.end))
            } else {
                PathBuf::from(&m.path)
            };
            // Only ELF files: skip locale archives, fonts and other data mappings cheaply.
            if !is_exe && !is_elf(&open) {
                continue;
            }
            let slot = Slot {
                display: m.path.clone(),
                open,
                mapping: Some((m.start, m.offset)),
                running: true,
                module: OnceLock::new(),
            };
            if let Some(md) = cache.remove(Path::new(&m.path)) {
                let _ = slot.module.set(Ok(md));
            }
            seen.insert(m.path.clone(), slots.len());
            if is_exe {
                slots.insert(0, slot);
            } else {
                slots.push(slot);
            }
        }
        if slots.first().map(|s| s.display != exe_path).unwrap_or(true) {
            // The executable is not mapped under the name /proc/PID/exe gives
            // (started through ld.so, say): read it anyway; a PIE's names then
            // come back with `needs_rebase`, since its load address is unknown.
            let slot = Slot {
                display: exe_path.clone(),
                open: exe_link.clone(),
                mapping: None,
                running: true,
                module: OnceLock::new(),
            };
            slots.insert(0, slot);
        }
        let r = Resolver {
            pid: Some(pid),
            maps,
            slots,
        };
        // Parse the executable now so a bad file is reported here, not on first use.
        r.module(0)?;
        Ok(r)
    }

    /// A resolver for an executable that is not running yet. Names in the
    /// executable resolve to link-time addresses; for a PIE they come back with
    /// `needs_rebase` set. Names in shared libraries need the process: call
    /// [`Resolver::rebase`] once it runs and the library is loaded.
    pub fn for_exe(path: impl AsRef<Path>) -> Result<Resolver, SymbolError> {
        let path = path.as_ref();
        let found = find_in_path(path).ok_or_else(|| {
            SymbolError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file, and not found in $PATH",
                ),
            )
        })?;
        let slot = Slot {
            display: found.to_string_lossy().into_owned(),
            open: found,
            mapping: None,
            running: false,
            module: OnceLock::new(),
        };
        let r = Resolver {
            pid: None,
            maps: Vec::new(),
            slots: vec![slot],
        };
        r.module(0)?;
        Ok(r)
    }

    /// Switch to process `pid` (the executable now running), keeping the files
    /// already parsed. Also picks up libraries loaded since the last call.
    pub fn rebase(&mut self, pid: i32) -> Result<(), SymbolError> {
        let mut cache = HashMap::new();
        for s in self.slots.drain(..) {
            if let Some(Ok(m)) = s.module.into_inner() {
                cache.insert(PathBuf::from(&s.display), m);
            }
        }
        *self = Self::for_pid_reusing(pid, cache)?;
        Ok(())
    }

    /// The process, if running.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Paths of the ELF files searched, executable first.
    pub fn modules(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.display.clone()).collect()
    }

    fn module(&self, i: usize) -> Result<&Arc<Module>, SymbolError> {
        let s = &self.slots[i];
        let r = s.module.get_or_init(|| {
            Module::load(Path::new(&s.display), &s.open)
                .map(Arc::new)
                .map_err(LoadError::of)
        });
        r.as_ref().map_err(|e| e.to_error(&s.display))
    }

    /// Load bias of slot `i`: `Some` when running (0 for fixed-address files).
    fn bias(&self, i: usize, m: &Module) -> Option<u64> {
        let s = &self.slots[i];
        match s.mapping {
            Some((start, off)) if s.running => m.bias_from_mapping(start, off),
            // Not running, or not found in the maps: only a fixed-address file is known.
            _ => (!m.is_dyn).then_some(0),
        }
    }

    /// Resolve a location expression (see the [module docs](super)).
    pub fn resolve(&self, input: &str) -> Result<Resolved, SymbolError> {
        let e = expr::parse(input)?;
        let shown = input.trim().to_string();
        let order: Vec<usize> = match &e.module {
            Some(m) => {
                let v: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| self.slots[i].matches(m))
                    .collect();
                if v.is_empty() {
                    return Err(SymbolError::NoModule {
                        module: m.clone(),
                        where_: self
                            .pid
                            .map_or(" (the program is not running yet)".into(), |p| {
                                format!(" in process {p}")
                            }),
                        loaded: self
                            .slots
                            .iter()
                            .map(|s| s.file_name().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                v
            }
            None => (0..self.slots.len()).collect(),
        };
        match &e.root {
            Root::Addr(a) if e.module.is_some() => {
                // `file:0xADDR`: an address as `nm`/`objdump` print it for that
                // file; the load bias is added here (perf's `mem:` cannot do this).
                let i = order[0];
                let m = self.module(i)?;
                match self.bias(i, m) {
                    Some(b) => {
                        let mut r = self.resolve_addr(&shown, a.wrapping_add(b), e.offset)?;
                        r.module = Some(self.slots[i].display.clone());
                        Ok(r)
                    }
                    None => {
                        let mut r = self.resolve_addr(&shown, *a, e.offset)?;
                        r.module = Some(self.slots[i].display.clone());
                        r.needs_rebase = true;
                        Ok(r)
                    }
                }
            }
            Root::Addr(a) => self.resolve_addr(&shown, *a, e.offset),
            Root::Name(n) => {
                // As gdb looks names up: globals in every module first (the
                // executable, then libraries in load order), then statics.
                // A file scope asks for that file's names, global or not.
                let passes: &[bool] = if e.scope.is_some() {
                    &[false]
                } else {
                    &[true, false]
                };
                for &globals_only in passes {
                    for &i in &order {
                        let m = match self.module(i) {
                            Ok(m) => m,
                            // A library we cannot read is skipped, unless asked for by name.
                            Err(err) if i != 0 && e.module.is_none() => {
                                let _ = err;
                                continue;
                            }
                            Err(err) => return Err(err),
                        };
                        if let Some(base) = self.find(m, n, e.scope.as_deref(), globals_only)? {
                            // Only a global is copy-relocated; a static stays in its file.
                            let (slot, base) = if globals_only {
                                self.copy_relocated(i, base, n)?
                            } else {
                                (i, base)
                            };
                            let m = self.module(slot)?;
                            return self.finish(slot, m, base, &e, n, &shown);
                        }
                    }
                }
                if let Some(scope) = &e.scope {
                    if !order
                        .iter()
                        .any(|&i| self.module(i).is_ok_and(|m| module_has_file(m, scope)))
                    {
                        return Err(self.no_scope(scope, &order));
                    }
                }
                Err(self.not_found(n, &order))
            }
        }
    }

    /// Copy relocations: a PIE that names a library's variable gets its own
    /// copy (`R_X86_64_COPY`) and every write, the library's too, goes there.
    /// So a library variable the executable also defines resolves to the
    /// executable's copy; and the executable's copy, which has no DWARF of its
    /// own, borrows the library's type.
    fn copy_relocated<'s>(
        &'s self,
        slot: usize,
        base: Base<'s>,
        name: &str,
    ) -> Result<(usize, Base<'s>), SymbolError> {
        let Base::Var { link, ty, dw, size } = base else {
            return Ok((slot, base));
        };
        if slot != 0 {
            let exe = self.module(0)?;
            let copy = exe
                .syms_named(name)
                .find(|s| s.kind == SymKind::Object && s.raw == name);
            if let Some(c) = copy {
                return Ok((
                    0,
                    Base::Var {
                        link: c.addr,
                        ty,
                        dw,
                        size: c.size,
                    },
                ));
            }
            return Ok((slot, Base::Var { link, ty, dw, size }));
        }
        if ty.is_none() {
            for i in 1..self.slots.len() {
                let Ok(m) = self.module(i) else { continue };
                if let Ok(Some(Base::Var {
                    ty: Some(t),
                    dw: Some(d),
                    ..
                })) = self.find(m, name, None, false)
                {
                    return Ok((
                        0,
                        Base::Var {
                            link,
                            ty: Some(t),
                            dw: Some(d),
                            size,
                        },
                    ));
                }
            }
        }
        Ok((0, Base::Var { link, ty, dw, size }))
    }

    /// Look `name` up in one module (in source file `scope` if given):
    /// DWARF variables first (they carry types), then the ELF symbol tables.
    /// A name that denotes several variables is an error listing them.
    /// `globals_only`: only names visible to other files.
    fn find<'m>(
        &self,
        m: &'m Module,
        name: &str,
        scope: Option<&str>,
        globals_only: bool,
    ) -> Result<Option<Base<'m>>, SymbolError> {
        let dw = m.dwarf()?;
        if let Some(d) = dw {
            let mut vars = d.vars_named(name, scope);
            if globals_only {
                vars.retain(|v| v.external);
            }
            if vars.len() > 1 {
                return Err(ambiguous(m, name, &vars));
            }
            if let Some(v) = vars.first() {
                if v.tls {
                    return Err(SymbolError::ThreadLocal { name: name.into() });
                }
                if let Some(link) = v.addr {
                    let ty =
                        v.ty.map(|t| d.ty(t))
                            .transpose()
                            .map_err(|e| dwarf_err(m, e))?;
                    let size = ty.as_ref().and_then(|t| t.size).unwrap_or(0);
                    return Ok(Some(Base::Var {
                        link,
                        ty,
                        dw: Some(d),
                        size,
                    }));
                }
            }
        }
        let mut syms: Vec<&ElfSym> = m
            .syms_named(name)
            .filter(|s| s.global || !globals_only)
            .filter(|s| match scope {
                Some(sc) => s.file.as_deref().is_some_and(|f| file_matches(f, sc)),
                None => true,
            })
            .collect();
        // Statics of the same name in several files, without debug info to tell them apart.
        let mut statics: Vec<&ElfSym> = syms
            .iter()
            .copied()
            .filter(|s| s.kind == SymKind::Object && s.raw == name && s.file.is_some())
            .collect();
        statics.sort_by_key(|s| s.addr);
        statics.dedup_by_key(|s| s.addr);
        if statics.len() > 1
            && !syms
                .iter()
                .any(|s| s.kind == SymKind::Object && s.file.is_none() && s.raw == name)
        {
            let matches = statics
                .iter()
                .map(|s| {
                    let f = s.file.as_deref().unwrap_or("?");
                    format!("'{f}'::{name} (at {:#x} in {f})", s.addr)
                })
                .collect();
            return Err(SymbolError::Ambiguous {
                name: name.into(),
                module: m.path.display().to_string(),
                matches,
            });
        }
        let std_lib = |f: &str| {
            ["std::", "core::", "alloc::"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        syms.sort_by_key(|s| {
            (
                s.name != name && s.raw != name,
                s.kind == SymKind::Func,
                std_lib(&s.name),
                s.name.matches("::").count(),
            )
        });
        let Some(s) = syms.first() else {
            return Ok(None);
        };
        match s.kind {
            SymKind::Tls => Err(SymbolError::ThreadLocal { name: name.into() }),
            SymKind::Func => Ok(Some(Base::Func { link: s.addr })),
            SymKind::Object => {
                // A symbol DWARF knows under another name (a C static, say): take its type.
                let mut ty = None;
                if let Some(d) = dw {
                    if let Some(v) = d.vars.iter().find(|v| v.addr == Some(s.addr)) {
                        ty =
                            v.ty.map(|t| d.ty(t))
                                .transpose()
                                .map_err(|e| dwarf_err(m, e))?;
                    }
                }
                Ok(Some(Base::Var {
                    link: s.addr,
                    size: s.size,
                    ty,
                    dw,
                }))
            }
        }
    }

    fn finish(
        &self,
        slot: usize,
        m: &Module,
        base: Base<'_>,
        e: &expr::Expr,
        root: &str,
        shown: &str,
    ) -> Result<Resolved, SymbolError> {
        let bias = self.bias(slot, m);
        let needs_rebase = bias.is_none();
        let module = Some(self.slots[slot].display.clone());
        let (link, len, type_name, value_kind) = match base {
            Base::Func { link } => {
                if let Some(s) = e.steps.first() {
                    let what = match s {
                        Step::Field(_) => "has no fields",
                        Step::Index(_) => "cannot be indexed",
                    };
                    return Err(SymbolError::BadRange {
                        expr: shown.into(),
                        message: format!(
                            "'{root}' is a function, which {what}; a function takes only +OFFSET"
                        ),
                    });
                }
                (link, 1, None, ValueKind::Code)
            }
            Base::Var { link, ty, dw, size } => {
                let mut addr = link;
                let mut cur = ty;
                let mut path = root.to_string();
                for step in &e.steps {
                    let (Some(t), Some(d)) = (cur.take(), dw) else {
                        return Err(SymbolError::NoDebugInfo {
                            name: root.into(),
                            module: self.slots[slot].display.clone(),
                            expr: shown.into(),
                        });
                    };
                    match step {
                        Step::Field(f) => {
                            let TyKind::Struct(members) = &t.kind else {
                                return Err(SymbolError::NotAStruct {
                                    expr: path,
                                    type_name: t.name,
                                });
                            };
                            let Some((off, mty)) = find_member(d, members, f, 0) else {
                                let fields: Vec<String> =
                                    members.iter().filter_map(|m| m.name.clone()).collect();
                                return Err(SymbolError::NoField {
                                    expr: path,
                                    field: f.clone(),
                                    type_name: t.name,
                                    fields: fields.join(", "),
                                });
                            };
                            addr = addr.wrapping_add(off);
                            cur = Some(mty);
                            path = format!("{path}.{f}");
                        }
                        Step::Index(i) => {
                            let TyKind::Array { dims, stride, .. } = &t.kind else {
                                return Err(SymbolError::NotAnArray {
                                    expr: path,
                                    type_name: t.name,
                                });
                            };
                            if let Some(n) = dims[0] {
                                if *i >= n {
                                    return Err(SymbolError::OutOfBounds {
                                        expr: path,
                                        index: *i,
                                        len: n,
                                        type_name: t.name,
                                    });
                                }
                            }
                            // One step of the first dimension spans every inner dimension.
                            let inner = dims[1..]
                                .iter()
                                .try_fold(1u64, |a, d| d.and_then(|d| a.checked_mul(d)));
                            let Some(stride) =
                                stride.and_then(|s| inner.and_then(|n| s.checked_mul(n)))
                            else {
                                return Err(SymbolError::BadRange {
                                    expr: shown.into(),
                                    message: format!("the element size of {} is unknown", t.name),
                                });
                            };
                            let off =
                                i.checked_mul(stride).ok_or_else(|| SymbolError::BadRange {
                                    expr: shown.into(),
                                    message: "index overflows the address space".into(),
                                })?;
                            addr = addr.wrapping_add(off);
                            cur = d.index_ty(&t).map_err(|e| dwarf_err(m, e))?;
                            path = format!("{path}[{i}]");
                        }
                    }
                }
                match cur {
                    Some(t) => {
                        let vk = dw.map_or(ValueKind::Bytes, |d| d.value_kind(&t));
                        let len = t
                            .size
                            .filter(|&s| s > 0)
                            .unwrap_or_else(|| natural_len(addr, 8));
                        (addr, len, Some(t.name), vk)
                    }
                    None => {
                        let len = if size > 0 { size } else { natural_len(addr, 8) };
                        let vk = if matches!(len, 1 | 2 | 4 | 8) {
                            ValueKind::Unsigned
                        } else {
                            ValueKind::Bytes
                        };
                        (addr, len, None, vk)
                    }
                }
            }
        };
        let (mut link, mut len, mut type_name, mut value_kind) = (link, len, type_name, value_kind);
        if let Some(off) = e.offset.filter(|&o| o != 0) {
            let whole = len;
            link = offset_addr(shown, link, off)?;
            if value_kind == ValueKind::Code {
                len = 1;
            } else {
                // Inside the variable: up to its end; outside: a natural width.
                let left = if off > 0 && (off as u64) < whole {
                    whole - off as u64
                } else {
                    8
                };
                len = natural_len(link, left.min(8));
                value_kind = ValueKind::Unsigned;
                type_name = None;
            }
        }
        let addr = match bias {
            Some(b) => link.wrapping_add(b),
            None => link,
        };
        if let Some(pid) = self.pid {
            if !self.maps.iter().any(|mp| mp.contains(addr)) {
                return Err(SymbolError::NotMapped {
                    expr: shown.into(),
                    addr,
                    pid,
                });
            }
        }
        Ok(Resolved {
            addr,
            len,
            name: shown.into(),
            type_name,
            value_kind,
            module,
            needs_rebase,
        })
    }

    fn resolve_addr(&self, shown: &str, a: u64, off: Option<i64>) -> Result<Resolved, SymbolError> {
        let addr = offset_addr(shown, a, off.unwrap_or(0))?;
        let mut out = Resolved {
            addr,
            len: natural_len(addr, 8),
            name: shown.into(),
            type_name: None,
            value_kind: ValueKind::Unsigned,
            module: None,
            needs_rebase: false,
        };
        let Some(pid) = self.pid else { return Ok(out) };
        let Some(map) = self.maps.iter().find(|m| m.contains(addr)) else {
            return Err(SymbolError::NotMapped {
                expr: shown.into(),
                addr,
                pid,
            });
        };
        if map.is_exec() {
            out.value_kind = ValueKind::Code;
            out.len = 1;
        }
        // What lies there: a variable's field or element gives its type and size.
        if let Some(d) = self.describe(addr) {
            out.module = d.module;
            if d.value_kind != ValueKind::Code {
                out.len = d.len;
                out.type_name = d.type_name;
                out.value_kind = d.value_kind;
            }
        }
        Ok(out)
    }

    /// Refuse a raw address that is a link-time address (as `nm` or
    /// `objdump` print it) of a symbol in the executable when it is
    /// position-independent (a PIE, loaded at a bias chosen at run time) and
    /// is not mapped in the process (or the program is not running yet, so
    /// nothing is). Such an address would watch nothing, silently; the error
    /// names the symbol and its run-time address. Other unmapped addresses
    /// are allowed (memory may be mapped later). Libraries are not checked:
    /// every library's link-time range starts at 0, so a bare address cannot
    /// say which one it was copied from.
    pub fn check_raw_address(&self, addr: u64) -> Result<(), SymbolError> {
        if self.pid.is_some() && self.maps.iter().any(|m| m.contains(addr)) {
            return Ok(());
        }
        // Slot 0 is the executable.
        if let Some(i) = (!self.slots.is_empty()).then_some(0) {
            let Ok(m) = self.module(i) else {
                return Ok(());
            };
            if !m.is_dyn {
                return Ok(());
            }
            let Some(sym) = m.sym_containing(addr) else {
                return Ok(());
            };
            let within = addr - sym.addr;
            let name = if within == 0 {
                sym.name.clone()
            } else {
                format!("{}+{within:#x}", sym.name)
            };
            let running = self.slots[i].running;
            let runtime = if running {
                self.bias(i, m).map(|b| addr.wrapping_add(b))
            } else {
                None
            };
            return Err(SymbolError::LinkTimeAddress {
                addr,
                symbol: name,
                module: self.slots[i].display.clone(),
                pid: self.pid.filter(|_| running),
                runtime,
            });
        }
        Ok(())
    }

    /// Name what lies at run-time address `addr`: the variable, field or
    /// element holding it (`state.count`, `table[3]`, `outer.p[1].y`,
    /// `counter+0x2` inside a scalar), or the function (`bump_counter+0x4`).
    /// The result's `addr` is `addr`; `len` runs to the end of the scalar there
    /// (at most 8 bytes unless it starts exactly at a wider leaf). `None`
    /// when no symbol covers it or the resolver is not for a running process.
    ///
    /// ```no_run
    /// # use hwbreak_linux::symbols::Resolver;
    /// # fn main() -> Result<(), hwbreak_linux::symbols::SymbolError> {
    /// let r = Resolver::for_pid(1234)?;
    /// let a = r.resolve("state.count")?.addr;
    /// assert_eq!(r.describe(a).unwrap().name, "state.count");
    /// # Ok(()) }
    /// ```
    pub fn describe(&self, addr: u64) -> Option<Resolved> {
        self.pid?;
        for i in 0..self.slots.len() {
            let Ok(m) = self.module(i) else { continue };
            let Some(b) = self.bias(i, m) else { continue };
            let link = addr.wrapping_sub(b);
            let module = Some(self.slots[i].display.clone());
            if let Ok(Some(d)) = m.dwarf() {
                for v in &d.vars {
                    let (Some(va), Some(tr)) = (v.addr, v.ty) else {
                        continue;
                    };
                    if link < va {
                        continue;
                    }
                    let Ok(ty) = d.ty(tr) else { continue };
                    let Some(size) = ty.size else { continue };
                    if link - va >= size {
                        continue;
                    }
                    let (path, leaf, off) = descend(d, ty, link - va, v.full.clone());
                    return Some(if off == 0 {
                        Resolved {
                            addr,
                            len: leaf.size.filter(|&s| s > 0).unwrap_or(1),
                            name: path,
                            value_kind: d.value_kind(&leaf),
                            type_name: Some(leaf.name),
                            module,
                            needs_rebase: false,
                        }
                    } else {
                        let left = leaf.size.unwrap_or(off + 1) - off;
                        Resolved {
                            addr,
                            len: natural_len(addr, left.min(8)),
                            name: format!("{path}+{off:#x}"),
                            type_name: None,
                            value_kind: ValueKind::Unsigned,
                            module,
                            needs_rebase: false,
                        }
                    });
                }
            }
            if let Some(s) = m.sym_containing(link) {
                let within = link - s.addr;
                let name = if within == 0 {
                    s.name.clone()
                } else {
                    format!("{}+{within:#x}", s.name)
                };
                let (len, value_kind) = match s.kind {
                    SymKind::Func => (1, ValueKind::Code),
                    _ => (
                        natural_len(addr, s.size.saturating_sub(within).clamp(1, 8)),
                        ValueKind::Unsigned,
                    ),
                };
                return Some(Resolved {
                    addr,
                    len,
                    name,
                    type_name: None,
                    value_kind,
                    module,
                    needs_rebase: false,
                });
            }
        }
        None
    }

    fn no_scope(&self, scope: &str, order: &[usize]) -> SymbolError {
        let names: Vec<&str> = order.iter().map(|&i| self.slots[i].file_name()).collect();
        SymbolError::NoScope {
            scope: scope.into(),
            searched: names.join(", "),
        }
    }

    fn not_found(&self, name: &str, order: &[usize]) -> SymbolError {
        // Rank: edit distance ignoring case, then with case, then names in the
        // executable before libraries, then outside Rust's std, then shorter.
        type Key = (usize, usize, usize, bool, usize);
        let mut scored: Vec<(Key, String)> = Vec::new();
        let q = name.to_ascii_lowercase();
        let q_last = q.rsplit("::").next().unwrap_or(&q).to_string();
        let name_last = name.rsplit("::").next().unwrap_or(name);
        let limit = (q_last.len() / 3).max(2);
        let std_lib = |f: &str| {
            ["std::", "core::", "alloc::"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        for (rank, &i) in order.iter().enumerate() {
            let Ok(m) = self.module(i) else { continue };
            for c in m.candidate_names() {
                let cl = c.to_ascii_lowercase();
                let c_last = cl.rsplit("::").next().unwrap_or(&cl);
                let d = strsim::levenshtein(&q, &cl).min(strsim::levenshtein(&q_last, c_last));
                let sub = q_last.len() >= 3 && c_last.contains(&q_last);
                if d <= limit || sub {
                    let d = if sub { d.min(limit) } else { d };
                    let exact_case =
                        strsim::levenshtein(name_last, c.rsplit("::").next().unwrap_or(&c));
                    scored.push(((d, exact_case, rank.min(1), std_lib(&c), c.len()), c));
                }
            }
        }
        scored.sort();
        let mut suggestions: Vec<String> = Vec::new();
        for (_, s) in scored {
            if !suggestions.contains(&s) {
                suggestions.push(s);
            }
            if suggestions.len() == 5 {
                break;
            }
        }
        let names: Vec<&str> = order.iter().map(|&i| self.slots[i].file_name()).collect();
        let searched = match self.pid {
            Some(p) => format!("process {p} ({})", names.join(", ")),
            None => names.join(", "),
        };
        SymbolError::NotFound {
            name: name.into(),
            searched,
            suggestions,
        }
    }
}

/// Find member `f`, looking into anonymous struct/union members and base
/// classes too. `Base::field` looks only in base class `Base` (a C++ name
/// hidden by the derived class, or to say which base).
fn find_member(
    d: &DwarfIndex,
    members: &[super::module::Member],
    f: &str,
    depth: u32,
) -> Option<(u64, Ty)> {
    if depth > 8 {
        return None;
    }
    if let Some(&sep) = super::module::top_level_seps(f).first() {
        let (want, rest) = (norm(&f[..sep]), &f[sep + 2..]);
        for m in members {
            let Some(b) = &m.base else { continue };
            let b = norm(b);
            // `Base` names `Base` and `ns::Base`; `Vec<int>` the instance.
            if b == want || b.ends_with(&format!("::{want}")) {
                let t = m.ty.and_then(|r| d.ty(r).ok())?;
                if let TyKind::Struct(inner) = &t.kind {
                    let (o, t) = find_member(d, inner, rest, depth + 1)?;
                    return Some((m.offset + o, t));
                }
            }
        }
        // A base further up: `Grand::field` through `Base`.
        for m in members.iter().filter(|m| m.base.is_some()) {
            let t = m.ty.and_then(|r| d.ty(r).ok())?;
            if let TyKind::Struct(inner) = &t.kind {
                if let Some((o, t)) = find_member(d, inner, f, depth + 1) {
                    return Some((m.offset + o, t));
                }
            }
        }
        return None;
    }
    for m in members {
        if m.name.as_deref() == Some(f) {
            let t = m.ty.and_then(|r| d.ty(r).ok())?;
            return Some((m.offset, t));
        }
    }
    // Anonymous members and base classes, after the type's own members (a
    // derived class's member hides its base's, as in C++).
    for m in members.iter().filter(|m| m.name.is_none()) {
        let t = m.ty.and_then(|r| d.ty(r).ok())?;
        if let TyKind::Struct(inner) = &t.kind {
            if let Some((o, t)) = find_member(d, inner, f, depth + 1) {
                return Some((m.offset + o, t));
            }
        }
    }
    None
}

/// The error for a name that denotes several variables: each with how to name it.
fn ambiguous(m: &Module, name: &str, vars: &[&DwVar]) -> SymbolError {
    let short = |f: &str| f.rsplit('/').next().unwrap_or(f).to_string();
    let matches = vars
        .iter()
        .map(|v| {
            let same_full = vars.iter().filter(|w| w.full == v.full).count() > 1;
            let file = v.file.as_deref().unwrap_or("?");
            let how = if same_full {
                // Same name: the file tells them apart (its full name if the
                // last component does not).
                let s = short(file);
                let unique = vars
                    .iter()
                    .filter(|w| w.full == v.full)
                    .filter(|w| w.file.as_deref().map(short).as_deref() == Some(s.as_str()))
                    .count()
                    == 1;
                format!(
                    "'{}'::{}",
                    if unique { s } else { file.to_string() },
                    v.full
                )
            } else {
                v.full.clone()
            };
            let at = v.addr.map(|a| format!("at {a:#x} ")).unwrap_or_default();
            format!("{how} ({at}in {file})")
        })
        .collect();
    SymbolError::Ambiguous {
        name: name.into(),
        module: m.path.display().to_string(),
        matches,
    }
}

/// Whether module `m` has a compilation unit or `STT_FILE` symbol for source file `scope`.
fn module_has_file(m: &Module, scope: &str) -> bool {
    if let Ok(Some(d)) = m.dwarf() {
        if d.has_file(scope) {
            return true;
        }
    }
    m.syms
        .iter()
        .any(|s| s.file.as_deref().is_some_and(|f| file_matches(f, scope)))
}

fn dwarf_err(m: &Module, e: gimli::Error) -> SymbolError {
    SymbolError::Dwarf {
        path: m.path.clone(),
        reason: e.to_string(),
    }
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// `path` itself if it names a file, else the first match in `$PATH` for a bare name.
fn find_in_path(path: &Path) -> Option<PathBuf> {
    if path.components().count() > 1 || path.is_file() {
        return path.is_file().then(|| path.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(path))
        .find(|p| p.is_file())
}

/// Walk from a variable of type `ty` down to the leaf holding byte `off`:
/// the access path, the leaf's type, and the offset left inside the leaf.
fn descend(d: &DwarfIndex, mut ty: Ty, mut off: u64, mut path: String) -> (String, Ty, u64) {
    for _ in 0..64 {
        // A scalar, or a wrapper of one (`AtomicU64`): stop, do not name its insides.
        if d.value_kind(&ty) != ValueKind::Bytes {
            break;
        }
        match &ty.kind {
            TyKind::Struct(members) => {
                let hit = members.iter().filter(|m| m.offset <= off).find_map(|m| {
                    let t = d.ty(m.ty?).ok()?;
                    (off - m.offset < t.size?).then_some((m, t))
                });
                let Some((m, t)) = hit else { break };
                if let Some(n) = &m.name {
                    path = format!("{path}.{n}");
                }
                off -= m.offset;
                ty = t;
            }
            TyKind::Array { dims, stride, .. } => {
                let inner = dims[1..]
                    .iter()
                    .try_fold(1u64, |a, d| d.and_then(|d| a.checked_mul(d)));
                let Some(row) = stride
                    .and_then(|s| inner.and_then(|n| s.checked_mul(n)))
                    .filter(|&r| r > 0)
                else {
                    break;
                };
                let i = off / row;
                if dims[0].is_some_and(|n| i >= n) {
                    break;
                }
                let Ok(Some(t)) = d.index_ty(&ty) else { break };
                path = format!("{path}[{i}]");
                off -= i * row;
                ty = t;
            }
            _ => break,
        }
    }
    (path, ty, off)
}
