//! One ELF file: its load segments, its symbol table and its DWARF globals and types.
//!
//! `object` reads the ELF, `gimli` the DWARF. blazesym's inspect API can map
//! names to addresses too, but it gives no types, and fields, indexes and the
//! default length all need DWARF types, so names go through gimli here and
//! blazesym is used for IP → frame (see `symbolizer.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use gimli::{AttributeValue, EndianArcSlice, Reader, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::{SymbolError, ValueKind};

type R = EndianArcSlice<RunTimeEndian>;

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
}

/// What an ELF symbol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymKind {
    Func,
    Object,
    Tls,
}

/// An ELF symbol table entry we care about.
#[derive(Debug, Clone)]
pub(crate) struct ElfSym {
    /// The name as stored (mangled for Rust/C++).
    pub raw: String,
    /// Demangled without the Rust hash (`hwbreak_demo::STATE`), or `raw`.
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub kind: SymKind,
    /// For a local (static) symbol, the source file its `STT_FILE` names.
    pub file: Option<String>,
    /// A global (or weak) symbol, visible to other files.
    pub global: bool,
}

/// A type reference: unit index and DIE offset in that unit.
pub(crate) type TyRef = (usize, UnitOffset);

/// A variable with a static address (or thread-local) found in DWARF.
#[derive(Debug, Clone)]
pub(crate) struct DwVar {
    /// The qualified name as gdb prints it: `counter`, `hwbreak_demo::STATE`,
    /// `ns::Pool<int>::hwm`, `(anonymous namespace)::x`, `main::calls` (a
    /// function's static).
    pub full: String,
    /// The source file of its compilation unit (`counter.c`, `../Python/ceval.c`).
    pub file: Option<String>,
    /// A function's static: named only as `function::name`.
    pub local: bool,
    /// Visible to other files (`DW_AT_external`): not a `static`.
    pub external: bool,
    pub addr: Option<u64>,
    pub tls: bool,
    pub ty: Option<TyRef>,
}

/// `s` with the spaces a C++ demangler and a user may place differently
/// removed (`Pool<std::pair<int, long> >` → `Pool<std::pair<int,long>>`);
/// a space between two words (`unsigned int`, `(anonymous namespace)`) stays.
pub(crate) fn norm(s: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && out.chars().last().is_some_and(word) && word(c) {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// gdb's `(anonymous namespace)` for the `_GLOBAL__N_1` that the demangler
/// leaves in names from an anonymous namespace.
fn anon_namespace(d: &str) -> String {
    let mut out = String::with_capacity(d.len());
    let mut rest = d;
    while let Some(i) = rest.find("_GLOBAL__N_") {
        out.push_str(&rest[..i]);
        out.push_str("(anonymous namespace)");
        rest = rest[i + "_GLOBAL__N_".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// `s` without its ABI tags (`name[abi:cxx11]` → `name`): gdb finds a
/// tagged name without them too.
fn strip_abi_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("[abi:") {
        out.push_str(&rest[..i]);
        match rest[i..].find(']') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The byte offsets of each top-level `::` in `s` (not inside `<>` or `()`).
pub(crate) fn top_level_seps(s: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' | b'(' => depth += 1,
            b'>' | b')' => depth -= 1,
            b':' if depth == 0 && b.get(i + 1) == Some(&b':') => {
                v.push(i);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    v
}

/// Whether `file` (a compilation unit's name) is the source file `scope`
/// names: the same path, or a path ending in `/scope`.
pub(crate) fn file_matches(file: &str, scope: &str) -> bool {
    file == scope || file.ends_with(&format!("/{scope}"))
}

/// The shape of a (typedef- and qualifier-stripped) type.
#[derive(Debug, Clone)]
pub(crate) enum TyKind {
    Scalar(ValueKind),
    Struct(Vec<Member>),
    Array {
        elem: Option<TyRef>,
        dims: Vec<Option<u64>>,
        stride: Option<u64>,
    },
    Other,
}

/// A struct or union member, or a base class (`DW_TAG_inheritance`).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub name: Option<String>,
    /// For a base class: its name as written (`Base`, `_Vector_base<int, std::allocator<int> >`).
    pub base: Option<String>,
    pub offset: u64,
    pub ty: Option<TyRef>,
}

/// A described type.
#[derive(Debug, Clone)]
pub(crate) struct Ty {
    pub name: String,
    pub size: Option<u64>,
    pub kind: TyKind,
}

pub(crate) struct DwarfIndex {
    dwarf: gimli::Dwarf<R>,
    units: Vec<gimli::Unit<R>>,
    /// Each unit's `.debug_info` offset, ascending, to follow cross-unit references.
    starts: Vec<u64>,
    rust: Vec<bool>,
    /// Globals by full path and by last path segment.
    by_name: HashMap<String, Vec<usize>>,
    pub vars: Vec<DwVar>,
}

/// One ELF file, parsed once; DWARF indexed on first use.
pub(crate) struct Module {
    pub path: PathBuf,
    /// The separate debug file its DWARF came from (see `debugfile.rs`).
    pub debug_file: Option<PathBuf>,
    /// The GNU build-id, if the file has one.
    #[allow(dead_code)]
    pub build_id: Option<Vec<u8>>,
    /// `ET_DYN`: loaded at a bias chosen at run time (PIE or shared library).
    pub is_dyn: bool,
    pub loads: Vec<Load>,
    pub syms: Vec<ElfSym>,
    sym_by_name: HashMap<String, Vec<usize>>,
    /// The file holding the DWARF: `debug_file`, or the file itself.
    dwarf_src: Option<PathBuf>,
    endian: RunTimeEndian,
    dwarf: OnceLock<Result<Option<DwarfIndex>, String>>,
}

fn last_segment(s: &str) -> &str {
    s.rsplit("::").next().unwrap_or(s)
}

/// Demangle a Rust symbol without its hash; other names are returned as they are.
pub(crate) fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

impl Module {
    /// Read and parse the ELF file at `open` (reported as `path`).
    pub fn load(path: &Path, open: &Path) -> Result<Module, SymbolError> {
        let data = {
            let f = std::fs::File::open(open).map_err(|e| SymbolError::io(open, e))?;
            // SAFETY: a read-only private mapping, as in `super::map_file`.
            unsafe { memmap2::Mmap::map(&f) }.map_err(|e| SymbolError::io(open, e))?
        };
        let bad = |reason: String| SymbolError::BadElf {
            path: path.to_path_buf(),
            reason,
        };
        let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(bad("not an ELF file".into()));
        }
        let is_dyn = file.kind() == object::ObjectKind::Dynamic;
        let mut loads = Vec::new();
        for seg in file.segments() {
            let (offset, filesz) = seg.file_range();
            loads.push(Load {
                vaddr: seg.address(),
                offset,
                filesz,
            });
        }
        let mut syms = Vec::new();
        let mut seen = std::collections::HashSet::new();
        collect_syms(&file, &mut syms, &mut seen);
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let build_id = super::debugfile::build_id(&file);
        // A stripped file: DWARF and the full symbol table (statics such as
        // glibc's `main_arena`) come from its separate debug file.
        let debug_file = super::debugfile::find(path, &file);
        let debug_map = debug_file.as_deref().and_then(super::map_file);
        let debug_obj = match &debug_map {
            Some(d) => Some(object::File::parse(&**d).map_err(|e| SymbolError::BadElf {
                path: debug_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        if let Some(d) = &debug_obj {
            collect_syms(d, &mut syms, &mut seen);
        }
        // DWARF is read on first use (`dwarf`), from wherever it is.
        let dwarf_src = if debug_obj.is_some() {
            debug_file.clone()
        } else {
            file.section_by_name(".debug_info")
                .is_some()
                .then(|| open.to_path_buf())
        };
        let mut sym_by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in syms.iter().enumerate() {
            sym_by_name.entry(s.raw.clone()).or_default().push(i);
            if s.name != s.raw {
                sym_by_name.entry(s.name.clone()).or_default().push(i);
                let last = last_segment(&s.name);
                if last != s.name {
                    sym_by_name.entry(last.to_string()).or_default().push(i);
                }
            }
        }
        Ok(Module {
            path: path.to_path_buf(),
            debug_file,
            build_id,
            is_dyn,
            loads,
            syms,
            sym_by_name,
            dwarf_src,
            endian,
            dwarf: OnceLock::new(),
        })
    }

    /// The DWARF index, built on first use. `Ok(None)`: no debug info.
    pub fn dwarf(&self) -> Result<Option<&DwarfIndex>, SymbolError> {
        let r = self.dwarf.get_or_init(|| {
            let Some(src) = &self.dwarf_src else {
                return Ok(None);
            };
            let data =
                super::map_file(src).ok_or_else(|| format!("cannot map {}", src.display()))?;
            let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
            match load_dwarf(&file, self.endian).map_err(|e| e.to_string())? {
                None => Ok(None),
                Some(s) => DwarfIndex::build(&s, self.endian)
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
        });
        match r {
            Ok(d) => Ok(d.as_ref()),
            Err(reason) => Err(SymbolError::Dwarf {
                path: self.dwarf_src.clone().unwrap_or_else(|| self.path.clone()),
                reason: reason.clone(),
            }),
        }
    }

    /// ELF symbols with this raw, demangled or last-segment name.
    pub fn syms_named(&self, name: &str) -> impl Iterator<Item = &ElfSym> {
        self.sym_by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.syms[i])
    }

    /// The data or function symbol whose range holds link-time address `addr`.
    pub fn sym_containing(&self, addr: u64) -> Option<&ElfSym> {
        self.syms
            .iter()
            .filter(|s| s.kind != SymKind::Tls)
            .filter(|s| s.addr <= addr && addr < s.addr + s.size.max(1))
            .min_by_key(|s| s.size)
    }

    /// The function symbol whose range holds link-time address `addr`.
    pub fn func_containing(&self, addr: u64) -> Option<&ElfSym> {
        self.syms
            .iter()
            .filter(|s| s.kind == SymKind::Func)
            .filter(|s| s.addr <= addr && addr < s.addr + s.size.max(1))
            .min_by_key(|s| s.size)
    }

    /// The link-time address that file offset `off` is loaded at.
    pub fn vaddr_of_file_offset(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| l.offset <= off && off < l.offset + l.filesz)
            .map(|l| off - l.offset + l.vaddr)
    }

    /// Load bias from one mapping of this file: `map_start` maps file offset `map_offset`.
    pub fn bias_from_mapping(&self, map_start: u64, map_offset: u64) -> Option<u64> {
        self.loads.iter().find_map(|l| {
            let page_start = l.offset & !0xfff;
            if page_start <= map_offset && map_offset < l.offset + l.filesz.max(1) {
                let vaddr = map_offset.wrapping_add(l.vaddr).wrapping_sub(l.offset);
                Some(map_start.wrapping_sub(vaddr))
            } else {
                None
            }
        })
    }

    /// Names for "did you mean": demangled ELF names and DWARF full paths.
    pub fn candidate_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .syms
            .iter()
            .filter(|s| !s.name.starts_with('_') || s.name.contains("::"))
            .map(|s| s.name.clone())
            .collect();
        if let Ok(Some(d)) = self.dwarf() {
            v.extend(d.vars.iter().map(|x| x.full.clone()));
        }
        v.sort();
        v.dedup();
        v
    }
}

/// Add `file`'s function, data and TLS symbols (full table, then dynamic) to
/// `syms`, skipping (name, address) pairs already in `seen`.
fn collect_syms(
    file: &object::File<'_>,
    syms: &mut Vec<ElfSym>,
    seen: &mut std::collections::HashSet<(String, u64)>,
) {
    let mut cur_file: Option<String> = None;
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() == object::SymbolKind::File {
            cur_file = sym.name().ok().map(str::to_string);
            continue;
        }
        let kind = match sym.kind() {
            object::SymbolKind::Text => SymKind::Func,
            object::SymbolKind::Data => SymKind::Object,
            object::SymbolKind::Tls => SymKind::Tls,
            _ => continue,
        };
        if sym.is_undefined() || sym.address() == 0 && kind != SymKind::Tls {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        // GNU symbol versions in .dynsym ("name@@GLIBC_2.2.5") are not part of the name.
        let raw = raw.split('@').next().unwrap_or(raw);
        if raw.is_empty() || !seen.insert((raw.to_string(), sym.address())) {
            continue;
        }
        syms.push(ElfSym {
            name: demangle(raw),
            raw: raw.to_string(),
            addr: sym.address(),
            size: sym.size(),
            kind,
            file: if sym.is_local() {
                cur_file.clone()
            } else {
                None
            },
            global: !sym.is_local(),
        });
    }
}

/// The DWARF sections of `file`, decompressed; `None` without `.debug_info`.
fn load_dwarf(
    file: &object::File<'_>,
    endian: RunTimeEndian,
) -> Result<Option<gimli::DwarfSections<R>>, object::Error> {
    if file.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let load = |id: gimli::SectionId| -> Result<R, object::Error> {
        let bytes: Arc<[u8]> = match file.section_by_name(id.name()) {
            Some(s) => Arc::from(&*s.uncompressed_data()?),
            None => Arc::from(&[][..]),
        };
        Ok(EndianArcSlice::new(bytes, endian))
    };
    gimli::DwarfSections::load(load).map(Some)
}

fn attr_u64(v: AttributeValue<R>) -> Option<u64> {
    match v {
        AttributeValue::Udata(x) => Some(x),
        AttributeValue::Data1(x) => Some(x.into()),
        AttributeValue::Data2(x) => Some(x.into()),
        AttributeValue::Data4(x) => Some(x.into()),
        AttributeValue::Data8(x) => Some(x),
        AttributeValue::Sdata(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

impl DwarfIndex {
    fn build(
        sections: &gimli::DwarfSections<R>,
        endian: RunTimeEndian,
    ) -> gimli::Result<DwarfIndex> {
        let _ = endian;
        let dwarf = sections.borrow(|s| s.clone());
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(h) = headers.next()? {
            units.push(dwarf.unit(h)?);
        }
        let starts: Vec<u64> = units.iter().map(|u| u.header.offset().0 as u64).collect();
        let mut rust = Vec::with_capacity(units.len());
        let mut files = Vec::with_capacity(units.len());
        for unit in &units {
            let mut c = unit.entries();
            let root = c.next_dfs()?.cloned();
            let lang = root
                .as_ref()
                .and_then(|e| e.attr_value(gimli::DW_AT_language));
            rust.push(matches!(
                lang,
                Some(AttributeValue::Language(gimli::DW_LANG_Rust))
            ));
            files.push(
                unit.name
                    .as_ref()
                    .and_then(|n| n.to_string_lossy().ok().map(|c| c.into_owned())),
            );
        }
        let mut idx = DwarfIndex {
            dwarf,
            units,
            starts,
            rust,
            by_name: HashMap::new(),
            vars: Vec::new(),
        };
        let mut vars = Vec::new();
        let mut decl_scopes = HashMap::new();
        for (ui, file) in files.into_iter().enumerate() {
            idx.walk(ui, file, &mut vars, &mut decl_scopes)?;
        }
        // The same variable in several units (a C++ inline or template static,
        // emitted wherever it is used) is one variable.
        let mut seen = std::collections::HashSet::new();
        vars.retain(|v: &DwVar| seen.insert((v.full.clone(), v.addr, v.tls)));
        for (i, v) in vars.iter().enumerate() {
            let key = norm(&v.full);
            let untagged = strip_abi_tags(&key);
            let keys = if untagged != key {
                vec![key, untagged]
            } else {
                vec![key]
            };
            for key in keys {
                // Non-local names are also found by each `::`-suffix: `STATE` for
                // `hwbreak_demo::STATE`, `Pool<int>::hwm` for `ns::Pool<int>::hwm`.
                if !v.local {
                    for sep in top_level_seps(&key) {
                        idx.by_name
                            .entry(key[sep + 2..].to_string())
                            .or_default()
                            .push(i);
                    }
                }
                idx.by_name.entry(key).or_default().push(i);
            }
        }
        idx.vars = vars;
        Ok(idx)
    }

    /// Variables named `name` (a qualified name or a `::`-suffix of one),
    /// in source file `scope` if given. Exact full names win over suffix
    /// matches, and the program's names over Rust's standard library's; one
    /// entry per address. More than one entry: the name is ambiguous.
    pub fn vars_named(&self, name: &str, scope: Option<&str>) -> Vec<&DwVar> {
        let q = norm(name);
        let all: Vec<&DwVar> = self
            .by_name
            .get(&q)
            .into_iter()
            .flatten()
            .map(|&i| &self.vars[i])
            .filter(|v| match scope {
                Some(s) => v.file.as_deref().is_some_and(|f| file_matches(f, s)),
                None => true,
            })
            .collect();
        let exact: Vec<&DwVar> = all
            .iter()
            .copied()
            .filter(|v| {
                let f = norm(&v.full);
                f == q || strip_abi_tags(&f) == q
            })
            .collect();
        let mut v = if exact.is_empty() { all } else { exact };
        let std_lib = |f: &str| {
            ["std::", "core::", "alloc::"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        if v.iter().any(|x| !std_lib(&x.full)) {
            v.retain(|x| !std_lib(&x.full));
        }
        let mut seen = std::collections::HashSet::new();
        v.retain(|x| seen.insert((x.addr, x.tls.then(|| x.full.clone()))));
        v
    }

    /// Whether any compilation unit is the source file `scope`.
    pub fn has_file(&self, scope: &str) -> bool {
        self.units.iter().any(|u| {
            u.name
                .as_ref()
                .and_then(|n| n.to_string_lossy().ok())
                .is_some_and(|n| file_matches(&n, scope))
        })
    }

    /// The unit holding `.debug_info` offset `o`.
    fn unit_of(&self, o: gimli::DebugInfoOffset) -> Option<TyRef> {
        let k = self
            .starts
            .partition_point(|&s| s <= o.0 as u64)
            .checked_sub(1)?;
        o.to_unit_offset(&self.units[k].header).map(|uo| (k, uo))
    }

    /// Follow reference attribute `a` of a DIE in unit `ui`.
    fn follow(&self, ui: usize, a: Option<AttributeValue<R>>) -> Option<TyRef> {
        match a? {
            AttributeValue::UnitRef(o) => Some((ui, o)),
            AttributeValue::DebugInfoRef(o) => self.unit_of(o),
            _ => None,
        }
    }

    /// The DIEs a declaration chain goes through: `e`'s
    /// `DW_AT_specification` / `DW_AT_abstract_origin`, and theirs.
    fn origins(
        &self,
        ui: usize,
        e: &gimli::DebuggingInformationEntry<R>,
    ) -> Vec<(usize, gimli::DebuggingInformationEntry<R>)> {
        let mut out = Vec::new();
        let mut cur = (ui, e.clone());
        for _ in 0..3 {
            let next = self
                .follow(cur.0, cur.1.attr_value(gimli::DW_AT_specification))
                .or_else(|| self.follow(cur.0, cur.1.attr_value(gimli::DW_AT_abstract_origin)));
            let Some(r) = next else { break };
            let Ok(d) = self.entry(r) else { break };
            out.push((r.0, d.clone()));
            cur = (r.0, d);
        }
        out
    }

    /// The first of `attr` on `e` or its origins, with the unit it is in.
    fn attr_through(
        &self,
        ui: usize,
        e: &gimli::DebuggingInformationEntry<R>,
        origins: &[(usize, gimli::DebuggingInformationEntry<R>)],
        attr: gimli::DwAt,
    ) -> Option<(usize, AttributeValue<R>)> {
        e.attr_value(attr).map(|v| (ui, v)).or_else(|| {
            origins
                .iter()
                .find_map(|(u, d)| d.attr_value(attr).map(|v| (*u, v)))
        })
    }

    fn string(&self, ui: usize, v: AttributeValue<R>) -> Option<String> {
        let s = self.dwarf.attr_string(&self.units[ui], v).ok()?;
        s.to_string_lossy().ok().map(|c| c.into_owned())
    }

    /// The name of a function DIE (through its origins).
    fn func_name(&self, ui: usize, e: &gimli::DebuggingInformationEntry<R>) -> String {
        let origins = self.origins(ui, e);
        self.attr_through(ui, e, &origins, gimli::DW_AT_name)
            .and_then(|(u, v)| self.string(u, v))
            .unwrap_or_else(|| "??".into())
    }

    /// Collect unit `ui`'s variables with a static address (globals,
    /// namespace and class statics, and functions' statics).
    /// `decl_scopes`: the enclosing scopes of each declaration seen so far,
    /// for a definition elsewhere that names it by `DW_AT_specification`
    /// (a namespace's variable defined at file level).
    fn walk(
        &self,
        ui: usize,
        file: Option<String>,
        out: &mut Vec<DwVar>,
        decl_scopes: &mut HashMap<(usize, UnitOffset), Vec<String>>,
    ) -> gimli::Result<()> {
        let unit = &self.units[ui];
        // Enclosing scopes: (depth, name, is a function).
        let mut scopes: Vec<(isize, String, bool)> = Vec::new();
        let mut cursor = unit.entries();
        while let Some(e) = cursor.next_dfs()? {
            let depth = e.depth();
            while scopes.last().is_some_and(|s| s.0 >= depth) {
                scopes.pop();
            }
            match e.tag() {
                gimli::DW_TAG_namespace => {
                    let n = e
                        .attr_value(gimli::DW_AT_name)
                        .and_then(|v| self.string(ui, v))
                        .unwrap_or_else(|| "(anonymous namespace)".into());
                    scopes.push((depth, n, false));
                }
                gimli::DW_TAG_structure_type
                | gimli::DW_TAG_class_type
                | gimli::DW_TAG_union_type => {
                    let n = e
                        .attr_value(gimli::DW_AT_name)
                        .and_then(|v| self.string(ui, v))
                        .unwrap_or_else(|| "<anonymous>".into());
                    scopes.push((depth, n, false));
                }
                gimli::DW_TAG_subprogram | gimli::DW_TAG_inlined_subroutine => {
                    let n = self.func_name(ui, e);
                    scopes.push((depth, n, true));
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_member
                    if e.attr_value(gimli::DW_AT_declaration).is_some() && !scopes.is_empty() =>
                {
                    decl_scopes.insert(
                        (ui, e.offset()),
                        scopes.iter().map(|s| s.1.clone()).collect(),
                    );
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_member
                    if e.attr_value(gimli::DW_AT_declaration).is_some() => {}
                gimli::DW_TAG_variable => {
                    let Some(AttributeValue::Exprloc(x)) = e.attr_value(gimli::DW_AT_location)
                    else {
                        continue; // optimised out, or on the stack
                    };
                    let mut addr = None;
                    let mut tls = false;
                    let mut ops = x.operations(unit.encoding());
                    let mut other = false;
                    while let Ok(Some(op)) = ops.next() {
                        match op {
                            gimli::Operation::Address { address } => addr = Some(address),
                            gimli::Operation::AddressIndex { index } => {
                                addr = self.dwarf.address(unit, index).ok();
                            }
                            gimli::Operation::TLS => tls = true,
                            gimli::Operation::PlusConstant { .. }
                            | gimli::Operation::UnsignedConstant { .. } => {}
                            _ => other = true,
                        }
                    }
                    if !tls && (addr.is_none() || other) {
                        continue; // not at a fixed address
                    }
                    let origins = self.origins(ui, e);
                    let Some(name) = self
                        .attr_through(ui, e, &origins, gimli::DW_AT_name)
                        .and_then(|(u, v)| self.string(u, v))
                    else {
                        continue;
                    };
                    let linkage = self
                        .attr_through(ui, e, &origins, gimli::DW_AT_linkage_name)
                        .or_else(|| {
                            self.attr_through(ui, e, &origins, gimli::DW_AT_MIPS_linkage_name)
                        })
                        .and_then(|(u, v)| self.string(u, v));
                    let ty = self
                        .attr_through(ui, e, &origins, gimli::DW_AT_type)
                        .and_then(|(u, v)| self.follow(u, Some(v)));
                    let local = scopes.iter().any(|s| s.2);
                    let external = self
                        .attr_through(ui, e, &origins, gimli::DW_AT_external)
                        .is_some_and(|(_, v)| v != AttributeValue::Flag(false));
                    let demangled = linkage
                        .filter(|l| l.starts_with("_Z") && !self.rust[ui])
                        .and_then(|l| {
                            let opts = cpp_demangle::DemangleOptions::new()
                                .no_params()
                                .no_return_type();
                            cpp_demangle::Symbol::new(l.as_bytes())
                                .ok()?
                                .demangle_with_options(&opts)
                                .ok()
                                .map(|d| anon_namespace(&d))
                        });
                    // The scopes of the declaration this defines, if it is elsewhere.
                    let spec_scopes = self
                        .follow(ui, e.attr_value(gimli::DW_AT_specification))
                        .and_then(|r| decl_scopes.get(&r));
                    let mut path: Vec<&str> = match spec_scopes {
                        Some(s) if scopes.is_empty() => s.iter().map(String::as_str).collect(),
                        _ => scopes.iter().map(|s| s.1.as_str()).collect(),
                    };
                    let full = match demangled {
                        Some(d) => d,
                        None => {
                            path.push(&name);
                            path.join("::")
                        }
                    };
                    out.push(DwVar {
                        full,
                        file: file.clone(),
                        local,
                        external,
                        addr: if tls { None } else { addr },
                        tls,
                        ty,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn entry(&self, r: TyRef) -> gimli::Result<gimli::DebuggingInformationEntry<R>> {
        self.units[r.0].entry(r.1)
    }

    /// Follow a reference attribute (`DW_AT_type`, ...) to its DIE.
    fn deref(&self, unit: usize, v: Option<AttributeValue<R>>) -> Option<TyRef> {
        match v? {
            AttributeValue::UnitRef(o) => Some((unit, o)),
            AttributeValue::DebugInfoRef(o) => self.unit_of(o),
            _ => None,
        }
    }

    fn name_of(&self, unit: usize, e: &gimli::DebuggingInformationEntry<R>) -> Option<String> {
        let v = e.attr_value(gimli::DW_AT_name)?;
        let s = self.dwarf.attr_string(&self.units[unit], v).ok()?;
        s.to_string_lossy().ok().map(|c| c.into_owned())
    }

    /// Describe the type at `r`.
    pub fn ty(&self, r: TyRef) -> gimli::Result<Ty> {
        self.ty_depth(r, 0)
    }

    fn ty_depth(&self, r: TyRef, depth: u32) -> gimli::Result<Ty> {
        let unknown = Ty {
            name: "?".into(),
            size: None,
            kind: TyKind::Other,
        };
        if depth > 32 {
            return Ok(unknown);
        }
        let (u, _) = r;
        let e = self.entry(r)?;
        let name = self.name_of(u, &e);
        let size = e.attr_value(gimli::DW_AT_byte_size).and_then(attr_u64);
        let inner = self.deref(u, e.attr_value(gimli::DW_AT_type));
        let rust = self.rust[u];
        let ty = match e.tag() {
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_atomic_type
            | gimli::DW_TAG_restrict_type => {
                let mut t = match inner {
                    Some(i) => self.ty_depth(i, depth + 1)?,
                    None => Ty {
                        name: "void".into(),
                        size: Some(0),
                        kind: TyKind::Other,
                    },
                };
                let qual = match e.tag() {
                    gimli::DW_TAG_const_type => Some("const"),
                    gimli::DW_TAG_volatile_type => Some("volatile"),
                    gimli::DW_TAG_atomic_type => Some("_Atomic"),
                    _ => None,
                };
                if let Some(n) = name {
                    t.name = n;
                } else if let Some(q) = qual {
                    t.name = format!("{q} {}", t.name);
                }
                t
            }
            gimli::DW_TAG_base_type => {
                let enc = match e.attr_value(gimli::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(x)) => x,
                    _ => gimli::DwAte(0),
                };
                let vk = match enc {
                    gimli::DW_ATE_boolean => ValueKind::Bool,
                    gimli::DW_ATE_float => ValueKind::Float,
                    gimli::DW_ATE_signed | gimli::DW_ATE_signed_char => ValueKind::Signed,
                    gimli::DW_ATE_address => ValueKind::Pointer,
                    _ => ValueKind::Unsigned,
                };
                Ty {
                    name: name.unwrap_or_else(|| "?".into()),
                    size,
                    kind: TyKind::Scalar(vk),
                }
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type
            | gimli::DW_TAG_ptr_to_member_type => {
                let n = match name {
                    Some(n) => n,
                    None => {
                        let pointee = match inner {
                            Some(i) => self.ty_depth(i, depth + 1)?.name,
                            None => "void".into(),
                        };
                        format!("{pointee} *")
                    }
                };
                Ty {
                    name: n,
                    size: Some(size.unwrap_or(u64::from(self.units[u].encoding().address_size))),
                    kind: TyKind::Scalar(ValueKind::Pointer),
                }
            }
            gimli::DW_TAG_enumeration_type => {
                let vk = match inner.map(|i| self.ty_depth(i, depth + 1)).transpose()? {
                    Some(Ty {
                        kind: TyKind::Scalar(k),
                        ..
                    }) => k,
                    _ => ValueKind::Unsigned,
                };
                let n = name.unwrap_or_else(|| "<anonymous>".into());
                Ty {
                    name: if rust { n } else { format!("enum {n}") },
                    size,
                    kind: TyKind::Scalar(vk),
                }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type => {
                let mut members = Vec::new();
                let mut tree = self.units[u].entries_tree(Some(r.1))?;
                let node = tree.root()?;
                let mut children = node.children();
                while let Some(c) = children.next()? {
                    let ce = c.entry();
                    let is_base = ce.tag() == gimli::DW_TAG_inheritance;
                    if ce.tag() != gimli::DW_TAG_member && !is_base {
                        continue;
                    }
                    // Static members have no location within the object.
                    if ce.attr_value(gimli::DW_AT_external).is_some()
                        || ce.attr_value(gimli::DW_AT_declaration).is_some()
                    {
                        continue;
                    }
                    let offset = match ce.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Exprloc(x)) => {
                            // Old DWARF: DW_OP_plus_uconst N.
                            let mut ops = x.operations(self.units[u].encoding());
                            match ops.next()? {
                                Some(gimli::Operation::PlusConstant { value }) => value,
                                _ => 0,
                            }
                        }
                        Some(v) => attr_u64(v).unwrap_or(0),
                        None => ce
                            .attr_value(gimli::DW_AT_data_bit_offset)
                            .and_then(attr_u64)
                            .map_or(0, |b| b / 8),
                    };
                    let ty = self.deref(u, ce.attr_value(gimli::DW_AT_type));
                    members.push(Member {
                        name: if is_base { None } else { self.name_of(u, ce) },
                        base: if is_base {
                            ty.and_then(|t| self.entry(t).ok().and_then(|e| self.name_of(t.0, &e)))
                        } else {
                            None
                        },
                        offset,
                        ty,
                    });
                }
                let n = name.unwrap_or_else(|| "<anonymous>".into());
                let n = if rust {
                    n
                } else {
                    let kw = if e.tag() == gimli::DW_TAG_union_type {
                        "union"
                    } else if e.tag() == gimli::DW_TAG_class_type {
                        "class"
                    } else {
                        "struct"
                    };
                    format!("{kw} {n}")
                };
                Ty {
                    name: n,
                    size,
                    kind: TyKind::Struct(members),
                }
            }
            gimli::DW_TAG_array_type => {
                let mut dims = Vec::new();
                let mut tree = self.units[u].entries_tree(Some(r.1))?;
                let node = tree.root()?;
                let mut children = node.children();
                while let Some(c) = children.next()? {
                    let ce = c.entry();
                    if ce.tag() != gimli::DW_TAG_subrange_type {
                        continue;
                    }
                    let count = ce
                        .attr_value(gimli::DW_AT_count)
                        .and_then(attr_u64)
                        .or_else(|| {
                            let lo = ce
                                .attr_value(gimli::DW_AT_lower_bound)
                                .and_then(attr_u64)
                                .unwrap_or(0);
                            ce.attr_value(gimli::DW_AT_upper_bound)
                                .and_then(attr_u64)
                                .map(|hi| (hi + 1).saturating_sub(lo))
                        });
                    dims.push(count);
                }
                if dims.is_empty() {
                    dims.push(None);
                }
                let elem_ty = inner.map(|i| self.ty_depth(i, depth + 1)).transpose()?;
                let stride = e
                    .attr_value(gimli::DW_AT_byte_stride)
                    .and_then(attr_u64)
                    .or_else(|| elem_ty.as_ref().and_then(|t| t.size));
                let elem_name = elem_ty.as_ref().map_or("?".to_string(), |t| t.name.clone());
                array_ty(elem_name, inner, dims, stride, rust, size)
            }
            gimli::DW_TAG_subroutine_type | gimli::DW_TAG_subprogram => Ty {
                name: name.unwrap_or_else(|| "fn".into()),
                size: None,
                kind: TyKind::Other,
            },
            _ => Ty {
                name: name.unwrap_or_else(|| "?".into()),
                size,
                kind: TyKind::Other,
            },
        };
        Ok(ty)
    }

    /// The element type of an array after indexing its first dimension.
    pub fn index_ty(&self, arr: &Ty) -> gimli::Result<Option<Ty>> {
        let TyKind::Array {
            elem, dims, stride, ..
        } = &arr.kind
        else {
            return Ok(None);
        };
        if dims.len() > 1 {
            let rest: Vec<Option<u64>> = dims[1..].to_vec();
            let elem_name = match elem {
                Some(e) => self.ty(*e)?.name,
                None => "?".into(),
            };
            let rust = elem.is_some_and(|e| self.rust[e.0]);
            let total = rest
                .iter()
                .try_fold(1u64, |a, d| d.and_then(|d| a.checked_mul(d)));
            let size = total.and_then(|t| stride.and_then(|s| s.checked_mul(t)));
            return Ok(Some(array_ty(elem_name, *elem, rest, *stride, rust, size)));
        }
        elem.map(|e| self.ty(e)).transpose()
    }

    /// The value kind of a type, looking through one-member wrappers
    /// (`AtomicU64` → `UnsafeCell<u64>` → `u64`).
    pub fn value_kind(&self, t: &Ty) -> ValueKind {
        let mut t = t.clone();
        for _ in 0..8 {
            match &t.kind {
                TyKind::Scalar(k) => return *k,
                TyKind::Struct(m) if m.len() == 1 && m[0].offset == 0 => {
                    let Some(inner) = m[0].ty.and_then(|r| self.ty(r).ok()) else {
                        break;
                    };
                    if inner.size != t.size {
                        break;
                    }
                    t = inner;
                }
                _ => break,
            }
        }
        ValueKind::Bytes
    }
}

fn array_ty(
    elem_name: String,
    elem: Option<TyRef>,
    dims: Vec<Option<u64>>,
    stride: Option<u64>,
    rust: bool,
    size: Option<u64>,
) -> Ty {
    let dim_str = |d: &Option<u64>| d.map_or(String::new(), |n| n.to_string());
    let name = if rust {
        dims.iter()
            .rev()
            .fold(elem_name, |acc, d| format!("[{acc}; {}]", dim_str(d)))
    } else {
        let mut n = elem_name;
        for d in &dims {
            n.push_str(&format!("[{}]", dim_str(d)));
        }
        n
    };
    let computed = dims
        .iter()
        .try_fold(1u64, |a, d| d.and_then(|d| a.checked_mul(d)))
        .and_then(|n| stride.and_then(|s| s.checked_mul(n)));
    Ty {
        name,
        size: computed.or(size),
        kind: TyKind::Array { elem, dims, stride },
    }
}
