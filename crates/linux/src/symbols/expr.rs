//! The location grammar: what `resolve` accepts.
//!
//! ```text
//! location := [module ':'] [scope '::'] root step* [('+' | '-') number]
//! module   := a file name such as libwatchme.so or libc.so.6 (no ':' inside)
//! scope    := "'" file "'" | file          a source file: 'counter.c'::count, counter.c::count
//! file     := a name ending in a source extension (.c .h .cc .cpp .cxx .hpp .rs ...)
//! root     := path | number
//! path     := segment ('::' segment)*     counter, hwbreak_demo::STATE, main::calls (a
//!                                         function's static), ns::Pool<int>::hwm
//! segment  := ident [template] abi_tag* | '(anonymous namespace)'
//! template := '<' text with balanced '<' '>' '(' ')' '>'     Pool<std::pair<int, long> >
//! abi_tag  := '[abi:' ident ']'           name[abi:cxx11]
//! step     := '.' path | '[' number ']'   .count, [3], .Base::field (a base class's member)
//! number   := decimal | 0x hex
//! ```
//! To add a step (say `->field` or `*`): a variant of [`Step`], a match arm
//! in [`parse`]'s step loop, and its meaning in the resolver's step loop.
//! A bare number is an absolute address in the process. After a module
//! prefix (`counter:0x4010`, `libc.so.6:0x1d2a0`) it is an address as `nm` or
//! `objdump` print it for that file, and the file's load bias is added.
//! Hand-written: the grammar is a dozen lines, and a parser generator would
//! not give better column-precise errors.

use super::SymbolError;

/// One access step after the root name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.field`
    Field(String),
    /// `[index]`
    Index(u64),
}

/// What the expression starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A (possibly `::`-qualified) name.
    Name(String),
    /// A raw address.
    Addr(u64),
}

/// A parsed location expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// `lib.so` in `lib.so:name`.
    pub module: Option<String>,
    /// `counter.c` in `'counter.c'::count` or `counter.c::count`: only
    /// variables of that source file.
    pub scope: Option<String>,
    /// The name or address.
    pub root: Root,
    /// Field and index steps, in order.
    pub steps: Vec<Step>,
    /// Byte offset added at the end (`+N` or `-N`).
    pub offset: Option<i64>,
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> SymbolError {
        SymbolError::Syntax {
            expr: self.s.to_string(),
            column: at + 1,
            message: msg.into(),
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ident(&mut self) -> Result<String, SymbolError> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {}
            Some(c) => {
                return Err(self.err(start, format!("expected a name, found '{}'", c as char)))
            }
            None => return Err(self.err(start, "expected a name, found the end")),
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(self.s[start..self.i].to_string())
    }
    /// A path segment: an identifier with template arguments and ABI tags,
    /// or `(anonymous namespace)`.
    fn segment(&mut self) -> Result<String, SymbolError> {
        const ANON: &str = "(anonymous namespace)";
        if self.s[self.i..].starts_with(ANON) {
            self.i += ANON.len();
            return Ok(ANON.into());
        }
        let start = self.i;
        self.ident()?;
        if self.peek() == Some(b'<') {
            let open = self.i;
            let mut depth = 0i32;
            while let Some(c) = self.peek() {
                match c {
                    b'<' | b'(' => depth += 1,
                    b'>' | b')' => depth -= 1,
                    _ => {}
                }
                self.i += 1;
                if depth == 0 {
                    break;
                }
            }
            if depth != 0 {
                return Err(self.err(open, "unclosed '<' in template arguments"));
            }
        }
        while self.s[self.i..].starts_with("[abi:") {
            self.i += 5;
            self.ident()?;
            if self.peek() != Some(b']') {
                return Err(self.err(self.i, "expected ']' after the ABI tag"));
            }
            self.i += 1;
        }
        Ok(self.s[start..self.i].to_string())
    }

    /// `segment ('::' segment)*`.
    fn path(&mut self) -> Result<String, SymbolError> {
        let mut name = self.segment()?;
        while self.s[self.i..].starts_with("::") {
            self.i += 2;
            name.push_str("::");
            name.push_str(&self.segment()?);
        }
        Ok(name)
    }

    /// `'file'::` or `file.c::` before the name.
    fn scope(&mut self) -> Result<Option<String>, SymbolError> {
        let rest = &self.s[self.i..];
        if let Some(q) = rest.strip_prefix('\'') {
            let Some(end) = q.find('\'') else {
                return Err(self.err(self.i, "unclosed quote: write 'file.c'::name"));
            };
            let file = &q[..end];
            if file.is_empty() {
                return Err(self.err(self.i, "empty file name in quotes"));
            }
            let after = self.i + end + 2;
            if !self.s[after..].starts_with("::") {
                return Err(self.err(after, "expected '::' after the quoted file name"));
            }
            self.i = after + 2;
            return Ok(Some(file.to_string()));
        }
        let Some(end) = rest.find("::") else {
            return Ok(None);
        };
        let file = &rest[..end];
        if is_source_file(file) {
            self.i += end + 2;
            return Ok(Some(file.to_string()));
        }
        Ok(None)
    }

    fn number(&mut self) -> Result<u64, SymbolError> {
        let start = self.i;
        let (radix, digits_at) =
            if self.s[self.i..].starts_with("0x") || self.s[self.i..].starts_with("0X") {
                (16, self.i + 2)
            } else {
                (10, self.i)
            };
        self.i = digits_at;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        let digits: String = self.s[digits_at..self.i]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        if digits.is_empty() {
            return Err(self.err(start, "expected a number"));
        }
        u64::from_str_radix(&digits, radix).map_err(|e| {
            self.err(
                start,
                format!(
                    "'{}' is not a valid {} number ({e})",
                    &self.s[start..self.i],
                    if radix == 16 { "hex" } else { "decimal" }
                ),
            )
        })
    }
}

/// Scan one path segment (an identifier with template arguments and ABI
/// tags, or `(anonymous namespace)`) at the start of `s`: its length in
/// bytes, or the byte position and text of the problem. For other parsers of
/// names (the CLI's SPEC), so the two accept the same names.
pub fn scan_segment(s: &str) -> Result<usize, (usize, String)> {
    let mut p = P {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    p.segment().map(|_| p.i).map_err(syntax_pos)
}

/// Scan a file scope (`'file.c'::` or `file.c::`) at the start of `s`: the
/// file and the bytes consumed, `None` when there is none, or the byte
/// position and text of the problem.
pub fn scan_scope(s: &str) -> Result<Option<(String, usize)>, (usize, String)> {
    let mut p = P {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    match p.scope() {
        Ok(Some(f)) => Ok(Some((f, p.i))),
        Ok(None) => Ok(None),
        Err(e) => Err(syntax_pos(e)),
    }
}

fn syntax_pos(e: SymbolError) -> (usize, String) {
    match e {
        SymbolError::Syntax {
            column, message, ..
        } => (column - 1, message),
        other => (0, other.to_string()),
    }
}

/// Whether `s` names a source file (`counter.c`, `src/lib.rs`): file-name
/// characters and a source extension, so `obj.Base::field` is not one.
pub fn is_source_file(s: &str) -> bool {
    const EXT: &[&str] = &[
        "c", "h", "cc", "cp", "cpp", "cxx", "c++", "C", "hh", "hpp", "hxx", "h++", "rs", "m", "mm",
        "s", "S", "go", "d", "f", "f90", "zig",
    ];
    let ok = |c: char| c.is_ascii_alphanumeric() || "_./+-".contains(c);
    match s.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && s.chars().all(ok) && EXT.contains(&ext),
        None => false,
    }
}

/// Parse a location expression. Whitespace around it is ignored; inside it is an error.
pub fn parse(input: &str) -> Result<Expr, SymbolError> {
    let s = input.trim();
    let mut p = P {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    if s.is_empty() {
        return Err(p.err(0, "the location is empty"));
    }
    // A module prefix is everything before a ':' that is not part of '::'.
    let mut module = None;
    let bytes = s.as_bytes();
    for (k, &c) in bytes.iter().enumerate() {
        if c == b':' {
            let dbl = bytes.get(k + 1) == Some(&b':') || (k > 0 && bytes[k - 1] == b':');
            if !dbl {
                if k == 0 {
                    return Err(p.err(0, "empty module name before ':'"));
                }
                let m = &s[..k];
                if let Some(bad) = m.find(|c: char| c.is_whitespace() || c == '[' || c == ']') {
                    return Err(p.err(bad, "a module name cannot contain spaces or brackets"));
                }
                module = Some(m.to_string());
                p.i = k + 1;
                break;
            }
        }
        if c == b'[' || c == b'+' {
            break;
        }
    }
    let scope = p.scope()?;
    let root = match p.peek() {
        Some(c) if c.is_ascii_digit() && scope.is_none() => Root::Addr(p.number()?),
        _ => Root::Name(p.path()?),
    };
    let mut steps = Vec::new();
    let mut offset = None;
    while let Some(c) = p.peek() {
        match c {
            b'.' => {
                if matches!(root, Root::Addr(_)) {
                    return Err(p.err(p.i, "a raw address has no fields"));
                }
                p.i += 1;
                steps.push(Step::Field(p.path()?));
            }
            b'[' => {
                if matches!(root, Root::Addr(_)) {
                    return Err(p.err(p.i, "a raw address cannot be indexed"));
                }
                p.i += 1;
                let n = p.number()?;
                if p.peek() != Some(b']') {
                    return Err(p.err(p.i, "expected ']'"));
                }
                p.i += 1;
                steps.push(Step::Index(n));
            }
            b'+' | b'-' => {
                let at = p.i;
                p.i += 1;
                let n = p.number()?;
                let n = i64::try_from(n).map_err(|_| p.err(at + 1, "offset too large"))?;
                offset = Some(if c == b'-' { -n } else { n });
                if p.i < s.len() {
                    return Err(p.err(p.i, "nothing may follow the +OFFSET"));
                }
            }
            _ => {
                return Err(p.err(
                    p.i,
                    format!("unexpected '{}'", s[p.i..].chars().next().unwrap_or('?')),
                ))
            }
        }
    }
    Ok(Expr {
        module,
        scope,
        root,
        steps,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(e: SymbolError) -> usize {
        match e {
            SymbolError::Syntax { column, .. } => column,
            other => panic!("not a syntax error: {other}"),
        }
    }

    #[test]
    fn plain_name() {
        let e = parse("counter").unwrap();
        assert_eq!(e.root, Root::Name("counter".into()));
        assert!(e.steps.is_empty() && e.module.is_none() && e.offset.is_none());
    }

    #[test]
    fn nested_fields_and_indexes() {
        let e = parse("a.b[2].c").unwrap();
        assert_eq!(
            e.steps,
            vec![
                Step::Field("b".into()),
                Step::Index(2),
                Step::Field("c".into())
            ]
        );
    }

    #[test]
    fn module_prefix_with_dots() {
        let e = parse("libwatchme.so:watchme_value").unwrap();
        assert_eq!(e.module.as_deref(), Some("libwatchme.so"));
        assert_eq!(e.root, Root::Name("watchme_value".into()));
    }

    #[test]
    fn rust_path_is_not_a_module_prefix() {
        let e = parse("hwbreak_demo::STATE.hits").unwrap();
        assert_eq!(e.module, None);
        assert_eq!(e.root, Root::Name("hwbreak_demo::STATE".into()));
        assert_eq!(e.steps, vec![Step::Field("hits".into())]);
    }

    #[test]
    fn offsets_hex_and_decimal() {
        assert_eq!(parse("counter+0x10").unwrap().offset, Some(16));
        assert_eq!(parse("counter+4").unwrap().offset, Some(4));
        assert_eq!(parse("table[2]-4").unwrap().offset, Some(-4));
    }

    #[test]
    fn raw_address() {
        assert_eq!(parse("0x7ffd1234").unwrap().root, Root::Addr(0x7ffd1234));
        assert_eq!(parse(" 4096 ").unwrap().root, Root::Addr(4096));
    }

    #[test]
    fn file_scopes_quoted_and_bare() {
        let e = parse("'counter.c'::count").unwrap();
        assert_eq!(e.scope.as_deref(), Some("counter.c"));
        assert_eq!(e.root, Root::Name("count".into()));
        let e = parse("src/a.c::count.x").unwrap();
        assert_eq!(e.scope.as_deref(), Some("src/a.c"));
        assert_eq!(e.steps, vec![Step::Field("x".into())]);
        let e = parse("libc.so.6:'malloc.c'::main_arena.top").unwrap();
        assert_eq!(e.module.as_deref(), Some("libc.so.6"));
        assert_eq!(e.scope.as_deref(), Some("malloc.c"));
        // Not a file: a field step naming a base class's member.
        let e = parse("obj.Base::field").unwrap();
        assert_eq!((e.scope, e.root), (None, Root::Name("obj".into())));
        assert_eq!(e.steps, vec![Step::Field("Base::field".into())]);
    }

    #[test]
    fn cpp_names_with_templates_abi_tags_and_anonymous_namespaces() {
        let name = |s: &str| parse(s).unwrap().root;
        assert_eq!(
            name("ns::Pool<std::pair<int, long> >::hwm"),
            Root::Name("ns::Pool<std::pair<int, long> >::hwm".into())
        );
        assert_eq!(name("cfg[abi:cxx11]"), Root::Name("cfg[abi:cxx11]".into()));
        assert_eq!(
            name("(anonymous namespace)::hidden"),
            Root::Name("(anonymous namespace)::hidden".into())
        );
        let e = parse("Pool<int>::hwm[2]").unwrap();
        assert_eq!(e.steps, vec![Step::Index(2)]);
        assert_eq!(col(parse("Pool<int::hwm").unwrap_err()), 5);
        assert_eq!(col(parse("x[abi:cxx11").unwrap_err()), 12);
        assert_eq!(col(parse("'a.c::x").unwrap_err()), 1);
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(col(parse("state..count").unwrap_err()), 7);
        assert_eq!(col(parse("table[3").unwrap_err()), 8);
        assert_eq!(col(parse("table[x]").unwrap_err()), 7);
        assert_eq!(col(parse("0xZZ").unwrap_err()), 1);
        assert_eq!(col(parse("counter+").unwrap_err()), 9);
        assert_eq!(col(parse("counter+1.a").unwrap_err()), 10);
        assert_eq!(col(parse("").unwrap_err()), 1);
        assert_eq!(col(parse(":x").unwrap_err()), 1);
        assert_eq!(col(parse("a b").unwrap_err()), 2);
        assert_eq!(col(parse("0x10.a").unwrap_err()), 5);
    }
}
