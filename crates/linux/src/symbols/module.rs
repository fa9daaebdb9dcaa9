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
}

/// A type reference: unit index and DIE offset in that unit.
pub(crate) type TyRef = (usize, UnitOffset);

/// A global variable found in DWARF.
#[derive(Debug, Clone)]
pub(crate) struct DwVar {
    pub full: String,
    pub addr: Option<u64>,
    pub tls: bool,
    pub ty: Option<TyRef>,
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

/// A struct or union member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub name: Option<String>,
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
    for sym in file.symbols().chain(file.dynamic_symbols()) {
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
        let mut rust = Vec::with_capacity(units.len());
        let mut vars = Vec::new();
        for (ui, unit) in units.iter().enumerate() {
            let mut tree = unit.entries_tree(None)?;
            let root = tree.root()?;
            let lang = root.entry().attr_value(gimli::DW_AT_language);
            rust.push(matches!(
                lang,
                Some(AttributeValue::Language(gimli::DW_LANG_Rust))
            ));
            let mut ns = Vec::new();
            walk(&dwarf, unit, ui, root, &mut ns, &mut vars)?;
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, v) in vars.iter().enumerate() {
            by_name.entry(v.full.clone()).or_default().push(i);
            let last = last_segment(&v.full);
            if last != v.full {
                by_name.entry(last.to_string()).or_default().push(i);
            }
        }
        Ok(DwarfIndex {
            dwarf,
            units,
            rust,
            by_name,
            vars,
        })
    }

    /// Globals with this full path or last segment; definitions with an address first.
    pub fn vars_named(&self, name: &str) -> Vec<&DwVar> {
        let mut v: Vec<&DwVar> = self
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.vars[i])
            .collect();
        // Exact full-path matches first, then definitions, then names outside
        // Rust's standard library, then the shortest paths: `STATE` means the
        // program's `demo::STATE`, not some `std::...::STATE`.
        let std_lib = |f: &str| {
            ["std::", "core::", "alloc::"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        v.sort_by_key(|x| {
            (
                x.full != name,
                x.addr.is_none() && !x.tls,
                std_lib(&x.full),
                x.full.matches("::").count(),
            )
        });
        v
    }

    fn entry(&self, r: TyRef) -> gimli::Result<gimli::DebuggingInformationEntry<R>> {
        self.units[r.0].entry(r.1)
    }

    /// Follow a reference attribute (`DW_AT_type`, ...) to its DIE.
    fn deref(&self, unit: usize, v: Option<AttributeValue<R>>) -> Option<TyRef> {
        match v? {
            AttributeValue::UnitRef(o) => Some((unit, o)),
            AttributeValue::DebugInfoRef(o) => self
                .units
                .iter()
                .enumerate()
                .find_map(|(i, u)| o.to_unit_offset(&u.header).map(|uo| (i, uo))),
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
                    if ce.tag() != gimli::DW_TAG_member {
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
                    members.push(Member {
                        name: self.name_of(u, ce),
                        offset,
                        ty: self.deref(u, ce.attr_value(gimli::DW_AT_type)),
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

/// Collect global variables under `node`, descending only into namespaces.
fn walk(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    ui: usize,
    node: gimli::EntriesTreeNode<'_, '_, R>,
    ns: &mut Vec<String>,
    out: &mut Vec<DwVar>,
) -> gimli::Result<()> {
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let e = child.entry();
        let name = |e: &gimli::DebuggingInformationEntry<R>| -> Option<String> {
            let v = e.attr_value(gimli::DW_AT_name)?;
            let s = dwarf.attr_string(unit, v).ok()?;
            s.to_string_lossy().ok().map(|c| c.into_owned())
        };
        match e.tag() {
            gimli::DW_TAG_namespace => {
                let n = name(e).unwrap_or_else(|| "{anonymous}".into());
                ns.push(n);
                walk(dwarf, unit, ui, child, ns, out)?;
                ns.pop();
            }
            gimli::DW_TAG_variable => {
                // A definition of an earlier declaration names it through DW_AT_specification.
                let spec = match e.attr_value(gimli::DW_AT_specification) {
                    Some(AttributeValue::UnitRef(o)) => unit.entry(o).ok(),
                    _ => None,
                };
                let Some(n) = name(e).or_else(|| spec.as_ref().and_then(name)) else {
                    continue;
                };
                let mut addr = None;
                let mut tls = false;
                if let Some(AttributeValue::Exprloc(x)) = e.attr_value(gimli::DW_AT_location) {
                    let mut ops = x.operations(unit.encoding());
                    while let Ok(Some(op)) = ops.next() {
                        match op {
                            gimli::Operation::Address { address } => addr = Some(address),
                            gimli::Operation::AddressIndex { index } => {
                                addr = dwarf.address(unit, index).ok();
                            }
                            gimli::Operation::TLS => tls = true,
                            _ => {}
                        }
                    }
                }
                if addr.is_none() && !tls {
                    continue; // a declaration, or optimised out
                }
                let ty_attr = e
                    .attr_value(gimli::DW_AT_type)
                    .or_else(|| spec.as_ref().and_then(|s| s.attr_value(gimli::DW_AT_type)));
                let ty = match ty_attr {
                    Some(AttributeValue::UnitRef(o)) => Some((ui, o)),
                    _ => None,
                };
                let full = if ns.is_empty() {
                    n
                } else {
                    format!("{}::{n}", ns.join("::"))
                };
                out.push(DwVar {
                    full,
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
