//! The SPEC language: what to watch, as the user types it.
//!
//! ```text
//! SPEC     := "mem:" NUMBER ["/" LEN] [":" PACCESS]        perf's own form
//!           | LOCATION ["/" LEN] [":" ACCESS]
//! LOCATION := [MODULE ":"] TARGET
//! MODULE   := a file name with a ".so" component, or a path      (libfoo.so, libc.so.6, ./libbar)
//! TARGET   := NUMBER                                        a raw address
//!           | EXPR [("+" | "-") NUMBER]                     a symbol, optionally offset
//! EXPR     := [SCOPE "::"] PATH ("." PATH | "[" NUMBER "]")*
//! SCOPE    := "'" FILE "'" | FILE                          a source file: 'a.c'::count, a.c::count
//! PATH     := SEGMENT ("::" SEGMENT)*                      my_crate::COUNTER, main::calls, ns::Pool<int>::hwm
//! SEGMENT  := IDENT [TEMPLATE] ("[abi:" IDENT "]")*        | "(anonymous namespace)"
//! IDENT    := [A-Za-z_$][A-Za-z0-9_$]*
//! (FILE, TEMPLATE: see hwbreak_linux::symbols::expr, which scans SCOPE and SEGMENT for both parsers.)
//! NUMBER   := decimal digits | "0x" hex digits
//! LEN      := NUMBER (bytes, at least 1; the arch says which lengths it can do)
//! ACCESS   := "r" | "w" | "rw" | "wr" | "x"
//! ```
//!
//! Defaults: a symbol's length is its size (decided by the resolver), and its
//! access is `w` for data and `x` for functions. A raw address defaults to
//! 8 bytes and `w`. perf's form keeps perf's defaults: 4 bytes and `rw`.
//!
//! One ambiguity is settled by rule: text before a lone `:` that contains `/`
//! or `.so` is a library, so `libfoo.so:x` is the variable `x` in `libfoo.so`
//! (write `libfoo.so:x:x` for an execute breakpoint on a function `x`).
//!
//! Hand-written rather than generated (pest/nom) because the grammar is tiny,
//! and every error must say the column and what was expected there, in words a
//! user can act on.

use hwbreak_core::Access;
use std::fmt;

/// A parsed SPEC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Where to watch.
    pub location: Location,
    /// Bytes to watch, if given (`/LEN`).
    pub len: Option<u64>,
    /// The access, if given (`:ACCESS`).
    pub access: Option<Access>,
    /// Written in perf's `mem:ADDR` form.
    pub perf_form: bool,
}

/// The place a SPEC names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A raw virtual address.
    Addr(u64),
    /// A symbol expression, resolved later against the target's symbols.
    Symbol {
        /// Shared object to look in (`libfoo.so:`), or the main binary.
        module: Option<String>,
        /// The path and its field/index selectors, e.g. `STATE.slots[3]`.
        expr: Expr,
        /// Byte offset added to the expression's address (`+16`, `-8`).
        offset: i64,
    },
}

/// A symbol expression: a (possibly `::`-separated) path and selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// The source file the name is in (`'counter.c'::count`), if given.
    pub scope: Option<String>,
    /// The path's segments: `["my_crate", "COUNTER"]`.
    pub path: Vec<String>,
    /// Field and index selectors after the path.
    pub selectors: Vec<Selector>,
}

/// One step into an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `.name`: a struct field (`.Base::name`: a base class's).
    Field(String),
    /// `[n]`: an array element.
    Index(u64),
}

/// A SPEC that does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad SPEC {spec:?}: at column {col}, expected {expected}, found {found}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct SpecError {
    /// The SPEC as given.
    pub spec: String,
    /// 1-based column (in characters) of the problem.
    pub col: usize,
    /// What the grammar wanted at that column.
    pub expected: String,
    /// What was there instead (quoted), or "the end".
    pub found: String,
    /// What to try, when there is something useful to say.
    pub hint: Option<String>,
}

impl Spec {
    /// The location part, as the symbol resolver takes it
    /// (`libfoo.so:state.count+8`, or `0x1000`).
    pub fn location_text(&self) -> String {
        match &self.location {
            Location::Addr(a) => format!("{a:#x}"),
            Location::Symbol {
                module,
                expr,
                offset,
            } => {
                let mut s = String::new();
                if let Some(m) = module {
                    s.push_str(m);
                    s.push(':');
                }
                s.push_str(&expr.to_string());
                match offset.cmp(&0) {
                    std::cmp::Ordering::Greater => s.push_str(&format!("+{offset}")),
                    std::cmp::Ordering::Less => s.push_str(&format!("-{}", offset.unsigned_abs())),
                    std::cmp::Ordering::Equal => {}
                }
                s
            }
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(sc) = &self.scope {
            write!(f, "'{sc}'::")?;
        }
        f.write_str(&self.path.join("::"))?;
        for s in &self.selectors {
            match s {
                Selector::Field(n) => write!(f, ".{n}")?,
                Selector::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Spec {
    /// The canonical text; it parses back to an equal `Spec`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.perf_form {
            f.write_str("mem:")?;
        }
        f.write_str(&self.location_text())?;
        if let Some(l) = self.len {
            write!(f, "/{l}")?;
        }
        if let Some(a) = self.access {
            write!(f, ":{}", a.short())?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Spec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        parse(s)
    }
}

/// Parse one SPEC.
pub fn parse(spec: &str) -> Result<Spec, SpecError> {
    let mut p = Parser {
        src: spec,
        chars: spec.chars().collect(),
        pos: 0,
    };
    p.spec()
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
}

/// Whether the text before a lone ':' names a shared object: file-name
/// characters only, not ending in a `/LEN`, and either containing `.so` as a
/// suffix component (`libc.so.6`) or being a path (`/x`, `./x`, `../x`).
fn looks_like_library(prefix: &str) -> bool {
    let file_chars = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-/@".contains(c));
    let ends_in_len = prefix.rsplit_once('/').is_some_and(|(_, n)| {
        !n.is_empty() && (n.chars().all(|c| c.is_ascii_digit()) || n.starts_with("0x"))
    });
    let so = prefix
        .match_indices(".so")
        .any(|(i, _)| matches!(prefix[i + 3..].chars().next(), None | Some('.')));
    let path = prefix.starts_with('/') || prefix.starts_with("./") || prefix.starts_with("../");
    file_chars && !ends_in_len && (so || path)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    fn rest(&self) -> String {
        self.chars[self.pos..].iter().collect()
    }

    fn found(&self) -> String {
        self.found_at(self.pos)
    }

    fn found_at(&self, pos: usize) -> String {
        match self.chars.get(pos) {
            None => "the end".into(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn err_at(&self, pos: usize, expected: &str, found: String, hint: Option<&str>) -> SpecError {
        SpecError {
            spec: self.src.to_string(),
            col: pos + 1,
            expected: expected.to_string(),
            found,
            hint: hint.map(str::to_string),
        }
    }

    fn err(&self, expected: &str, hint: Option<&str>) -> SpecError {
        self.err_at(self.pos, expected, self.found(), hint)
    }

    fn spec(&mut self) -> Result<Spec, SpecError> {
        if self.chars.is_empty() {
            return Err(self.err(
                "a location (a variable name, a function, or an address)",
                Some("e.g. STATE.hits, my_crate::COUNTER, 0x601040/8:w or mem:0x601040"),
            ));
        }
        if self.rest().starts_with("mem:") {
            self.pos += 4;
            let addr = self.number("an address after \"mem:\" (hex 0x... or decimal)")?;
            let len = self.len()?;
            let access = self.access()?;
            self.end()?;
            return Ok(Spec {
                location: Location::Addr(addr),
                len,
                access,
                perf_form: true,
            });
        }
        let module = self.module()?;
        let location = match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                let a = self.number("an address")?;
                if module.is_some() {
                    return Err(self.err_at(
                        start,
                        "a symbol name after the library prefix",
                        format!("the address {a:#x}"),
                        Some("a raw address is absolute: drop the library prefix"),
                    ));
                }
                Location::Addr(a)
            }
            Some(c) if is_ident_start(c) || c == '\'' || c == '(' => {
                let expr = self.expr()?;
                let offset = self.offset()?;
                Location::Symbol {
                    module,
                    expr,
                    offset,
                }
            }
            _ => {
                return Err(self.err(
                    "a variable or function name, or an address",
                    Some("names start with a letter, '_' or '$'; addresses with a digit"),
                ))
            }
        };
        let len = self.len()?;
        let access = self.access()?;
        self.end()?;
        Ok(Spec {
            location,
            len,
            access,
            perf_form: false,
        })
    }

    /// `MODULE ":"`, when the text before the first lone ':' names a file.
    fn module(&mut self) -> Result<Option<String>, SpecError> {
        let mut i = self.pos;
        while i < self.chars.len() {
            if self.chars[i] == ':' {
                if self.chars.get(i + 1) == Some(&':') {
                    i += 2;
                    continue;
                }
                let prefix: String = self.chars[self.pos..i].iter().collect();
                if looks_like_library(&prefix) {
                    if prefix.chars().any(char::is_whitespace) {
                        return Err(self.err_at(
                            self.pos + prefix.chars().position(char::is_whitespace).unwrap_or(0),
                            "a library file name without spaces",
                            "a space".into(),
                            None,
                        ));
                    }
                    self.pos = i + 1;
                    return Ok(Some(prefix));
                }
                return Ok(None);
            }
            i += 1;
        }
        Ok(None)
    }

    /// One path segment (`name`, `Pool<int>`, `name[abi:cxx11]`,
    /// `(anonymous namespace)`), scanned by the symbol resolver's own grammar.
    fn segment(&mut self, what: &str) -> Result<String, SpecError> {
        match self.peek() {
            Some(c) if is_ident_start(c) || c == '(' => {}
            _ => return Err(self.err(what, None)),
        }
        let rest = self.rest();
        match hwbreak_linux::symbols::expr::scan_segment(&rest) {
            Ok(n) => {
                let seg = rest[..n].to_string();
                self.pos += seg.chars().count();
                Ok(seg)
            }
            Err((at, msg)) => {
                let at = self.pos + rest[..at.min(rest.len())].chars().count();
                Err(self.err_at(at, what, self.found_at(at), Some(&msg)))
            }
        }
    }

    /// `SEGMENT ("::" SEGMENT)*`.
    fn path(&mut self, what: &str) -> Result<Vec<String>, SpecError> {
        let mut path = vec![self.segment(what)?];
        while self.peek() == Some(':') && self.peek_at(1) == Some(':') {
            self.pos += 2;
            path.push(self.segment("a path segment after \"::\"")?);
        }
        Ok(path)
    }

    fn expr(&mut self) -> Result<Expr, SpecError> {
        let rest = self.rest();
        let scope = match hwbreak_linux::symbols::expr::scan_scope(&rest) {
            Ok(Some((file, n))) => {
                self.pos += rest[..n].chars().count();
                Some(file)
            }
            Ok(None) => None,
            Err((at, msg)) => {
                let at = self.pos + rest[..at.min(rest.len())].chars().count();
                return Err(self.err_at(at, "'FILE'::NAME", self.found_at(at), Some(&msg)));
            }
        };
        let path = self.path("a name")?;
        let mut selectors = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    let f = self.path("a field name after '.'")?;
                    selectors.push(Selector::Field(f.join("::")));
                }
                Some('[') => {
                    self.pos += 1;
                    let i = self.number("an array index (a number) after '['")?;
                    if self.peek() != Some(']') {
                        return Err(self.err("']' to close the array index", None));
                    }
                    self.pos += 1;
                    selectors.push(Selector::Index(i));
                }
                _ => break,
            }
        }
        Ok(Expr {
            scope,
            path,
            selectors,
        })
    }

    fn offset(&mut self) -> Result<i64, SpecError> {
        let neg = match self.peek() {
            Some('+') => false,
            Some('-') => true,
            _ => return Ok(0),
        };
        self.pos += 1;
        let start = self.pos;
        let n = self.number("a byte offset (a number) after '+' or '-'")?;
        let v = i64::try_from(n)
            .map_err(|_| self.err_at(start, "an offset below 2^63", format!("{n}"), None))?;
        Ok(if neg { -v } else { v })
    }

    fn len(&mut self) -> Result<Option<u64>, SpecError> {
        if self.peek() != Some('/') {
            return Ok(None);
        }
        self.pos += 1;
        let start = self.pos;
        let n = self.number("a length in bytes after '/' (1, 2, 4 or 8 on x86)")?;
        if n == 0 {
            return Err(self.err_at(
                start,
                "a length of at least 1 byte",
                "0".into(),
                Some("leave out /LEN to watch the whole variable"),
            ));
        }
        Ok(Some(n))
    }

    fn access(&mut self) -> Result<Option<Access>, SpecError> {
        if self.peek() != Some(':') {
            return Ok(None);
        }
        self.pos += 1;
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        let a = match word.as_str() {
            "r" => Access::Read,
            "w" => Access::Write,
            "rw" | "wr" => Access::ReadWrite,
            "x" => Access::Execute,
            _ => {
                let found = if word.is_empty() {
                    self.pos = start;
                    self.found()
                } else {
                    format!("{word:?}")
                };
                let hint = if word.contains('x') && word.len() > 1 {
                    Some("an execute breakpoint cannot also watch reads or writes: use two SPECs")
                } else if !word.is_empty() && word.chars().all(char::is_alphanumeric) {
                    Some("a library prefix needs a file name with '/' or \".so\", like libfoo.so:name")
                } else {
                    None
                };
                return Err(self.err_at(start, "an access: r, w, rw or x", found, hint));
            }
        };
        Ok(Some(a))
    }

    fn end(&self) -> Result<(), SpecError> {
        if self.pos == self.chars.len() {
            return Ok(());
        }
        let hint = match self.peek() {
            Some(c) if c.is_whitespace() => {
                Some("one SPEC per argument: quote it or remove the space")
            }
            Some(':') => Some("the access comes last, once"),
            _ => None,
        };
        Err(self.err("the end of the SPEC, or /LEN or :ACCESS", hint))
    }

    fn number(&mut self, what: &str) -> Result<u64, SpecError> {
        let start = self.pos;
        let hex = self.peek() == Some('0') && matches!(self.peek_at(1), Some('x' | 'X'));
        if hex {
            self.pos += 2;
        }
        let dstart = self.pos;
        let radix = if hex { 16 } else { 10 };
        while matches!(self.peek(), Some(c) if c.is_digit(radix)) {
            self.pos += 1;
        }
        if self.pos == dstart {
            let exp = if hex { "hex digits after \"0x\"" } else { what };
            return Err(self.err(exp, None));
        }
        // A digit run followed by a letter ("12ab", "0x10g") is a typo, not two tokens.
        if let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                let hint = if !hex && c.is_ascii_hexdigit() {
                    Some("hex numbers start with 0x")
                } else {
                    None
                };
                return Err(self.err(
                    if hex {
                        "a hex digit"
                    } else {
                        "a decimal digit"
                    },
                    hint,
                ));
            }
        }
        let digits: String = self.chars[dstart..self.pos].iter().collect();
        u64::from_str_radix(&digits, radix).map_err(|_| {
            self.err_at(
                start,
                "a number that fits in 64 bits",
                format!(
                    "{:?}",
                    self.chars[start..self.pos].iter().collect::<String>()
                ),
                None,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sym(path: &[&str], sel: Vec<Selector>) -> Location {
        Location::Symbol {
            module: None,
            expr: Expr {
                scope: None,
                path: path.iter().map(|s| s.to_string()).collect(),
                selectors: sel,
            },
            offset: 0,
        }
    }

    #[test]
    fn plain_name_has_no_len_and_no_access() {
        let s = parse("counter").unwrap();
        assert_eq!(s.location, sym(&["counter"], vec![]));
        assert_eq!((s.len, s.access, s.perf_form), (None, None, false));
    }

    #[test]
    fn field_index_len_and_access_all_parse() {
        let s = parse("STATE.slots[3].hits/4:rw").unwrap();
        assert_eq!(
            s.location,
            sym(
                &["STATE"],
                vec![
                    Selector::Field("slots".into()),
                    Selector::Index(3),
                    Selector::Field("hits".into())
                ]
            )
        );
        assert_eq!(s.len, Some(4));
        assert_eq!(s.access, Some(Access::ReadWrite));
    }

    #[test]
    fn scoped_cpp_and_base_class_names_parse_and_print_back() {
        for (text, canon) in [
            ("'counter.c'::count:w", "'counter.c'::count:w"),
            ("counter.c::count", "'counter.c'::count"),
            ("main::calls/4", "main::calls/4"),
            (
                "ns::Pool<std::pair<int, long> >::hwm",
                "ns::Pool<std::pair<int, long> >::hwm",
            ),
            ("cfg::name[abi:cxx11]:rw", "cfg::name[abi:cxx11]:rw"),
            (
                "(anonymous namespace)::hidden",
                "(anonymous namespace)::hidden",
            ),
            ("g_der.Base::shared:w", "g_der.Base::shared:w"),
            ("libc.so.6:'mblen.c'::state", "libc.so.6:'mblen.c'::state"),
        ] {
            let s = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.to_string(), canon);
            assert_eq!(parse(canon).unwrap(), s, "{canon}");
        }
        let s = parse("'a.c'::x.f").unwrap();
        let Location::Symbol { expr, .. } = &s.location else {
            panic!()
        };
        assert_eq!(expr.scope.as_deref(), Some("a.c"));
        assert_eq!(expr.selectors, vec![Selector::Field("f".into())]);
    }

    #[test]
    fn unclosed_template_or_quote_names_the_column() {
        let e = parse("Pool<int::hwm").unwrap_err();
        assert_eq!(e.col, 5, "{e}");
        assert!(e.to_string().contains("unclosed '<'"), "{e}");
        let e = parse("'a.c::x").unwrap_err();
        assert_eq!(e.col, 1, "{e}");
    }

    #[test]
    fn rust_path_double_colon_is_not_an_access() {
        let s = parse("my_crate::x").unwrap();
        assert_eq!(s.location, sym(&["my_crate", "x"], vec![]));
        assert_eq!(s.access, None);
        let s = parse("my_crate::COUNTER:w").unwrap();
        assert_eq!(s.location, sym(&["my_crate", "COUNTER"], vec![]));
        assert_eq!(s.access, Some(Access::Write));
    }

    #[test]
    fn library_prefix_with_so_or_slash_is_a_module() {
        let s = parse("libfoo.so:counter+8/8:w").unwrap();
        match &s.location {
            Location::Symbol { module, offset, .. } => {
                assert_eq!(module.as_deref(), Some("libfoo.so"));
                assert_eq!(*offset, 8);
            }
            l => panic!("{l:?}"),
        }
        let s = parse("/usr/lib/libc.so.6:errno").unwrap();
        assert!(
            matches!(&s.location, Location::Symbol { module: Some(m), .. } if m == "/usr/lib/libc.so.6")
        );
        assert_eq!(s.location_text(), "/usr/lib/libc.so.6:errno");
    }

    #[test]
    fn raw_address_hex_and_decimal() {
        assert_eq!(
            parse("0x601040").unwrap().location,
            Location::Addr(0x601040)
        );
        assert_eq!(parse("4096/8:x").unwrap().location, Location::Addr(4096));
    }

    #[test]
    fn perf_mem_form_parses_with_perf_access_letters() {
        let s = parse("mem:0x1000/8:wr").unwrap();
        assert!(s.perf_form);
        assert_eq!(s.location, Location::Addr(0x1000));
        assert_eq!(s.len, Some(8));
        assert_eq!(s.access, Some(Access::ReadWrite));
        assert_eq!(parse("mem:0x1000:x").unwrap().access, Some(Access::Execute));
        assert_eq!(parse("mem:4096").unwrap().len, None);
    }

    #[test]
    fn negative_offset_round_trips() {
        let s = parse("table-16").unwrap();
        assert_eq!(s.to_string(), "table-16");
    }

    fn err(s: &str) -> SpecError {
        parse(s).unwrap_err()
    }

    #[test]
    fn empty_spec_says_what_a_location_is() {
        let e = err("");
        assert_eq!(e.col, 1);
        assert!(e.to_string().contains("a location"), "{e}");
    }

    #[test]
    fn unknown_access_points_at_its_column() {
        let e = err("counter:q");
        assert_eq!(e.col, 9);
        assert!(e.to_string().contains("an access: r, w, rw or x"), "{e}");
        assert!(e.to_string().contains("\"q\""), "{e}");
    }

    #[test]
    fn exec_combined_with_read_is_explained() {
        let e = err("counter:rx");
        assert!(
            e.to_string().contains("execute breakpoint cannot also"),
            "{e}"
        );
    }

    #[test]
    fn zero_length_is_refused() {
        let e = err("counter/0");
        assert_eq!(e.col, 9);
        assert!(e.to_string().contains("at least 1 byte"), "{e}");
    }

    #[test]
    fn missing_length_after_slash() {
        let e = err("counter/:w");
        assert_eq!(e.col, 9);
        assert!(e.expected.contains("length"), "{e}");
    }

    #[test]
    fn hex_without_prefix_gets_a_hint() {
        let e = err("601a40");
        assert!(e.to_string().contains("hex numbers start with 0x"), "{e}");
        let e = err("0x");
        assert!(e.expected.contains("hex digits"), "{e}");
        let e = err("0x10g");
        assert_eq!(e.col, 5);
    }

    #[test]
    fn overflowing_address_is_refused() {
        let e = err("0x1_0000_0000_0000_0000");
        assert!(e.col >= 1, "{e}");
        let e = err("0x10000000000000000");
        assert!(e.expected.contains("64 bits"), "{e}");
    }

    #[test]
    fn unclosed_index_and_trailing_garbage() {
        assert!(err("t[3").expected.contains("']'"));
        assert!(err("t[x]").expected.contains("array index"));
        let e = err("a b");
        assert_eq!(e.col, 2);
        assert!(e.to_string().contains("one SPEC per argument"), "{e}");
        assert!(err("a:w:w").to_string().contains("access comes last"));
        assert!(err("a.").expected.contains("field name"));
        assert!(err("a::").expected.contains("path segment"));
        assert!(err("+3").expected.contains("name"));
        assert!(err("a+").expected.contains("offset"));
    }

    #[test]
    fn library_prefix_before_an_address_is_refused() {
        let e = err("libfoo.so:0x10");
        assert!(e.to_string().contains("drop the library prefix"), "{e}");
    }

    #[test]
    fn error_is_one_line() {
        for s in ["", "a b", "x:q", "0x", "mem:", "mem:zz", "a/0", "\n"] {
            let e = err(s).to_string();
            assert!(!e.contains('\n') || s.contains('\n'), "{e}");
        }
    }

    fn ident() -> impl Strategy<Value = String> {
        "[A-Za-z_$][A-Za-z0-9_$]{0,8}"
    }

    fn access() -> impl Strategy<Value = Option<Access>> {
        prop_oneof![
            Just(None),
            Just(Some(Access::Read)),
            Just(Some(Access::Write)),
            Just(Some(Access::ReadWrite)),
            Just(Some(Access::Execute)),
        ]
    }

    fn selector() -> impl Strategy<Value = Selector> {
        prop_oneof![
            ident().prop_map(Selector::Field),
            any::<u64>().prop_map(Selector::Index)
        ]
    }

    fn location() -> impl Strategy<Value = Location> {
        prop_oneof![
            any::<u64>().prop_map(Location::Addr),
            (
                proptest::option::of("[a-z]{1,6}(/[a-z]{1,4})?\\.so(\\.[0-9])?"),
                proptest::collection::vec(ident(), 1..3),
                proptest::collection::vec(selector(), 0..3),
                any::<i64>().prop_filter("not MIN", |o| *o != i64::MIN),
            )
                .prop_map(|(module, path, selectors, offset)| Location::Symbol {
                    module,
                    expr: Expr {
                        scope: None,
                        path,
                        selectors,
                    },
                    offset,
                }),
        ]
    }

    fn valid_spec() -> impl Strategy<Value = Spec> {
        prop_oneof![
            (
                location().prop_filter("not library-like", |l| !matches!(l,
                Location::Symbol { module: None, expr, .. } if expr.to_string().contains(".so"))),
                proptest::option::of(1u64..),
                access()
            )
                .prop_map(|(location, len, access)| Spec {
                    location,
                    len,
                    access,
                    perf_form: false
                }),
            (any::<u64>(), proptest::option::of(1u64..), access()).prop_map(|(a, len, access)| {
                Spec {
                    location: Location::Addr(a),
                    len,
                    access,
                    perf_form: true,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_spec_like_strings(s in "[a-z0-9x:/.\\[\\]+\\- _$]{0,24}") {
            if let Err(e) = parse(&s) {
                prop_assert!(e.col >= 1 && e.col <= s.chars().count() + 1, "{e}");
            }
        }

        #[test]
        fn valid_specs_round_trip_through_display(spec in valid_spec()) {
            let text = spec.to_string();
            let back = parse(&text);
            prop_assert_eq!(back, Ok(spec), "text: {}", text);
        }
    }
}
