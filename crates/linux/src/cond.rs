//! Conditions on hits (`--if EXPR`): a small expression language over what
//! a hit knows, checked once at start and then evaluated for every hit.
//!
//! ```
//! use hwbreak_linux::cond::{Cond, HitValues, ValueType};
//! let c = Cond::parse("new < old && tid != 1234")?;
//! let b = c.bind(ValueType { len: 8, signed: true })?;
//! let v = HitValues { old: 5, new: 3, tid: 77, ip: 0x1000, hits: 1 };
//! assert!(b.eval(&v, &|_, _| false));
//! # Ok::<(), hwbreak_linux::cond::CondError>(())
//! ```
//!
//! # The language
//!
//! | form | meaning |
//! |---|---|
//! | `old`, `new` | the watched value before and after the write, of the watch's type (its length and signedness) |
//! | `tid` | the thread that hit |
//! | `ip` | the instruction pointer at the trap: on x86, the instruction *after* the access |
//! | `hits` | this hit's number on its watch, from 1 |
//! | `func == "name"`, `func != "name"` | whether the access was made by an instruction of function `name` |
//! | `==` `!=` `<` `<=` `>` `>=` | comparisons of two numbers (they do not chain) |
//! | `&&` `\|\|` `!` `( )` | and, or, not (`&&` binds tighter than `\|\|`), grouping |
//! | `42`, `-1`, `0x7f`, `1_000` | integer literals |
//! | `"free_list"` | a function name, only beside `func` |
//!
//! A number alone is true when it is not 0 (`new` means `new != 0`).
//!
//! A literal compared with `old` or `new` must fit the watch's type (e.g.
//! `new == -1` on an `unsigned int` is an error at start, not a condition
//! that never matches). `tid`, `ip` and `hits` are unsigned.
//!
//! Errors give the 1-based column of the offending token ([`CondError`]).
//!
//! This crate evaluates conditions in the kernel, at the trap, with a BPF
//! program compiled from the bound expression ([`crate::filter`]);
//! [`Bound::eval`] is the same semantics in user space (the reference the
//! compiled program is tested against).

use std::fmt;

/// A variable of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The value before the write.
    Old,
    /// The value after the write.
    New,
    /// The thread id.
    Tid,
    /// The instruction pointer at the trap.
    Ip,
    /// This hit's number on its watch, from 1.
    Hits,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Old => "old",
            Var::New => "new",
            Var::Tid => "tid",
            Var::Ip => "ip",
            Var::Hits => "hits",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn swapped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            o => o,
        }
    }

    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A number in a bound condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// A variable.
    Var(Var),
    /// A literal, as the 64-bit pattern of the operand's type (a negative
    /// literal beside a signed value is its two's complement).
    Lit(u64),
}

/// A bound condition, ready to evaluate or compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Compare two numbers; `signed` says how (both sides are of one type).
    Cmp {
        /// The operator.
        op: CmpOp,
        /// Left side.
        lhs: Operand,
        /// Right side.
        rhs: Operand,
        /// Signed comparison (a signed `old`/`new` is involved).
        signed: bool,
    },
    /// Whether the access was made in function `name` (negated with [`Node::Not`]).
    InFunc(String),
    /// Both.
    And(Box<Node>, Box<Node>),
    /// Either.
    Or(Box<Node>, Box<Node>),
    /// Not.
    Not(Box<Node>),
}

/// The watched value's type: `old` and `new` are of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueType {
    /// Bytes, 1 to 8.
    pub len: u8,
    /// Two's complement signed.
    pub signed: bool,
}

impl ValueType {
    /// Widen `raw` (the low `len` bytes matter) to 64 bits as this type does:
    /// sign-extended when signed, zero-extended otherwise.
    pub fn widen(self, raw: u64) -> u64 {
        let bits = 8 * u32::from(self.len.clamp(1, 8));
        if bits == 64 {
            return raw;
        }
        let low = raw & ((1u64 << bits) - 1);
        if self.signed && low >> (bits - 1) & 1 == 1 {
            low | !((1u64 << bits) - 1)
        } else {
            low
        }
    }

    fn describe(self) -> String {
        format!(
            "{}, {} byte{}",
            if self.signed { "signed" } else { "unsigned" },
            self.len,
            if self.len == 1 { "" } else { "s" }
        )
    }

    /// The range of this type, as i128.
    fn range(self) -> (i128, i128) {
        let bits = 8 * u32::from(self.len.clamp(1, 8));
        if self.signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        }
    }
}

/// What a hit knows, for [`Bound::eval`]. `old` and `new` are widened to
/// 64 bits as their type says ([`ValueType::widen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitValues {
    /// The value before the write.
    pub old: u64,
    /// The value after the write.
    pub new: u64,
    /// Thread id.
    pub tid: u64,
    /// Instruction pointer at the trap.
    pub ip: u64,
    /// This hit's number on its watch, from 1.
    pub hits: u64,
}

/// A bad condition: what is wrong, and where (1-based column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{src}`, column {column}: {msg}")]
pub struct CondError {
    /// The condition as given.
    pub src: String,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong and what to write instead.
    pub msg: String,
}

impl CondError {
    /// The condition with a caret under the column, on two lines.
    pub fn pointer(&self) -> String {
        format!("{}\n{:>width$}", self.src, "^", width = self.column)
    }
}

/// A parsed condition (not yet bound to a watch's type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    src: String,
    tree: Syn,
}

/// The syntax tree, with each token's column kept for errors at bind time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Syn {
    Or(Box<Syn>, Box<Syn>),
    And(Box<Syn>, Box<Syn>),
    Not(Box<Syn>),
    Cmp(CmpOp, Box<Syn>, Box<Syn>, usize),
    Var(Var, usize),
    Func(usize),
    Int(i128, usize),
    Str(String, usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i128),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(n) => write!(f, "`{n}`"),
            Tok::Str(s) => write!(f, "\"{s}\""),
            Tok::Op(o) => write!(f, "`{o}`"),
            Tok::LParen => write!(f, "`(`"),
            Tok::RParen => write!(f, "`)`"),
            Tok::End => write!(f, "the end of the condition"),
        }
    }
}

const VARS: [&str; 6] = ["old", "new", "tid", "ip", "hits", "func"];

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
}

impl Lexer<'_> {
    /// Column (1-based, in characters) of character index `i`.
    fn tokens(&mut self) -> Result<Vec<(Tok, usize)>, (usize, String)> {
        let mut out = Vec::new();
        loop {
            while self.i < self.chars.len() && self.chars[self.i].1.is_whitespace() {
                self.i += 1;
            }
            let col = self.i + 1;
            let Some(&(_, c)) = self.chars.get(self.i) else {
                out.push((Tok::End, col));
                return Ok(out);
            };
            let next = self.chars.get(self.i + 1).map(|p| p.1);
            // The two-character operators, longest match first.
            const TWO: [&str; 6] = ["==", "!=", "<=", ">=", "&&", "||"];
            let pair = TWO.iter().find(|op| {
                let mut b = op.chars();
                b.next() == Some(c) && b.next() == next
            });
            let tok = if let Some(op) = pair {
                self.i += 2;
                Tok::Op(op)
            } else if c == '=' {
                return Err((col, "`=` assigns; compare with `==`".into()));
            } else if c == '&' || c == '|' {
                return Err((col, format!("`{c}` alone is not an operator: use `{c}{c}`")));
            } else if c == '<' || c == '>' || c == '!' {
                self.i += 1;
                Tok::Op(match c {
                    '<' => "<",
                    '>' => ">",
                    _ => "!",
                })
            } else if c == '(' {
                self.i += 1;
                Tok::LParen
            } else if c == ')' {
                self.i += 1;
                Tok::RParen
            } else if c == '"' {
                self.string(col)?
            } else if c.is_ascii_digit() {
                self.number(col)?
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = self.i;
                while self
                    .chars
                    .get(self.i)
                    .is_some_and(|p| p.1.is_ascii_alphanumeric() || p.1 == '_')
                {
                    self.i += 1;
                }
                Tok::Ident(self.slice(start, self.i).to_string())
            } else {
                return Err((
                    col,
                    format!("unexpected `{c}`: a condition has numbers, old, new, tid, ip, func, hits, comparisons, &&, ||, ! and parentheses"),
                ));
            };
            out.push((tok, col));
        }
    }

    fn slice(&self, from: usize, to: usize) -> &str {
        let a = self.chars[from].0;
        let b = self.chars.get(to).map_or(self.src.len(), |p| p.0);
        &self.src[a..b]
    }

    fn number(&mut self, col: usize) -> Result<Tok, (usize, String)> {
        let start = self.i;
        while self
            .chars
            .get(self.i)
            .is_some_and(|p| p.1.is_ascii_alphanumeric() || p.1 == '_')
        {
            self.i += 1;
        }
        let text = self.slice(start, self.i).replace('_', "");
        let (digits, radix) = match text.get(..2) {
            Some("0x") | Some("0X") => (&text[2..], 16),
            Some("0b") | Some("0B") => (&text[2..], 2),
            _ => (&text[..], 10),
        };
        let n = u64::from_str_radix(digits, radix).map_err(|_| {
            (
                col,
                format!(
                    "`{}` is not a number that fits 64 bits (write decimal 42, hex 0x2a or binary 0b101010)",
                    self.slice(start, self.i)
                ),
            )
        })?;
        Ok(Tok::Int(i128::from(n)))
    }

    fn string(&mut self, col: usize) -> Result<Tok, (usize, String)> {
        self.i += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.i).map(|p| p.1) {
                None => return Err((col, "this string has no closing `\"`".into())),
                Some('"') => {
                    self.i += 1;
                    return Ok(Tok::Str(s));
                }
                Some('\\') => {
                    match self.chars.get(self.i + 1).map(|p| p.1) {
                        Some(c @ ('"' | '\\')) => s.push(c),
                        _ => {
                            return Err((
                                self.i + 1,
                                "only \\\" and \\\\ are escapes in a string".into(),
                            ))
                        }
                    }
                    self.i += 2;
                }
                Some(c) => {
                    s.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

type PResult<T> = Result<T, (usize, String)>;

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(&self.peek().0, Tok::Op(o) if *o == op)
    }

    fn or(&mut self) -> PResult<Syn> {
        let mut l = self.and()?;
        while self.is_op("||") {
            self.bump();
            let r = self.and()?;
            l = Syn::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and(&mut self) -> PResult<Syn> {
        let mut l = self.not()?;
        while self.is_op("&&") {
            self.bump();
            let r = self.not()?;
            l = Syn::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn not(&mut self) -> PResult<Syn> {
        if self.is_op("!") {
            self.bump();
            return Ok(Syn::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp_op(&self) -> Option<CmpOp> {
        match &self.peek().0 {
            Tok::Op("==") => Some(CmpOp::Eq),
            Tok::Op("!=") => Some(CmpOp::Ne),
            Tok::Op("<") => Some(CmpOp::Lt),
            Tok::Op("<=") => Some(CmpOp::Le),
            Tok::Op(">") => Some(CmpOp::Gt),
            Tok::Op(">=") => Some(CmpOp::Ge),
            _ => None,
        }
    }

    fn cmp(&mut self) -> PResult<Syn> {
        let l = self.atom()?;
        let Some(op) = self.cmp_op() else {
            return Ok(l);
        };
        let col = self.bump().1;
        let r = self.atom()?;
        if let Some(op2) = self.cmp_op() {
            return Err((
                self.peek().1,
                format!(
                    "comparisons do not chain: write `a {} b && b {} c`",
                    op.text(),
                    op2.text()
                ),
            ));
        }
        Ok(Syn::Cmp(op, Box::new(l), Box::new(r), col))
    }

    fn atom(&mut self) -> PResult<Syn> {
        let (t, col) = self.bump();
        match t {
            Tok::LParen => {
                let e = self.or()?;
                let (t2, c2) = self.bump();
                if t2 != Tok::RParen {
                    return Err((c2, format!("expected `)` to close the `(` at column {col}, found {t2}")));
                }
                Ok(e)
            }
            Tok::Int(n) => Ok(Syn::Int(n, col)),
            Tok::Str(s) => Ok(Syn::Str(s, col)),
            Tok::Ident(id) => match id.as_str() {
                "old" => Ok(Syn::Var(Var::Old, col)),
                "new" => Ok(Syn::Var(Var::New, col)),
                "tid" => Ok(Syn::Var(Var::Tid, col)),
                "ip" => Ok(Syn::Var(Var::Ip, col)),
                "hits" => Ok(Syn::Var(Var::Hits, col)),
                "func" => Ok(Syn::Func(col)),
                other => {
                    let near = VARS
                        .iter()
                        .map(|v| (strsim::levenshtein(v, other), v))
                        .min()
                        .filter(|(d, _)| *d <= 2)
                        .map(|(_, v)| format!(" (did you mean `{v}`?)"))
                        .unwrap_or_default();
                    Err((
                        col,
                        format!("unknown name `{other}`{near}: a condition knows old, new, tid, ip, func and hits"),
                    ))
                }
            },
            other => Err((
                col,
                format!("expected a value (a number, old, new, tid, ip, func, hits, or `(`), found {other}"),
            )),
        }
    }
}

impl Cond {
    /// Parse `src`. Errors name the column and what was expected.
    pub fn parse(src: &str) -> Result<Cond, CondError> {
        let err = |(column, msg): (usize, String)| CondError {
            src: src.to_string(),
            column,
            msg,
        };
        // `-` is only ever the sign of a literal: fold it into the number here.
        let mut chars: Vec<(usize, char)> = src.char_indices().collect();
        let mut neg_at = Vec::new();
        let mut k = 0;
        while k < chars.len() {
            if chars[k].1 == '-' {
                let next = chars.get(k + 1).map(|p| p.1);
                if !next.is_some_and(|c| c.is_ascii_digit()) {
                    return Err(err((
                        k + 1,
                        "`-` is only the sign of a number (e.g. new == -1); there is no subtraction".into(),
                    )));
                }
                neg_at.push(k);
                // Blank it out; the number that follows is negated below.
                chars[k].1 = ' ';
            }
            k += 1;
        }
        let blanked: String = chars.iter().map(|p| p.1).collect();
        let chars: Vec<(usize, char)> = blanked.char_indices().collect();
        let mut lx = Lexer {
            src: &blanked,
            chars,
            i: 0,
        };
        let mut toks = lx.tokens().map_err(err)?;
        for n in neg_at {
            // The number starts at column n + 2 (1-based, after the sign).
            if let Some(t) = toks.iter_mut().find(|t| t.1 == n + 2) {
                if let Tok::Int(v) = &mut t.0 {
                    *v = -*v;
                    t.1 = n + 1;
                }
            }
        }
        if toks.len() == 1 {
            return Err(err((
                1,
                "the condition is empty (e.g. --if 'new == 0')".into(),
            )));
        }
        let mut p = Parser { toks, i: 0 };
        let tree = p.or().map_err(err)?;
        let (t, col) = p.peek().clone();
        if t != Tok::End {
            let msg = if t == Tok::RParen {
                "this `)` closes nothing".to_string()
            } else {
                format!("expected `&&`, `||` or the end of the condition, found {t}")
            };
            return Err(err((col, msg)));
        }
        Ok(Cond {
            src: src.to_string(),
            tree,
        })
    }

    /// The condition as given.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Whether the condition reads `old` (a filter must then keep the last value).
    pub fn uses(&self, v: Var) -> bool {
        fn walk(s: &Syn, v: Var) -> bool {
            match s {
                Syn::Or(a, b) | Syn::And(a, b) | Syn::Cmp(_, a, b, _) => walk(a, v) || walk(b, v),
                Syn::Not(a) => walk(a, v),
                Syn::Var(x, _) => *x == v,
                _ => false,
            }
        }
        walk(&self.tree, v)
    }

    /// Check the condition against a watch whose value is of type `ty`, and
    /// give the bound form: types checked, literals in range.
    pub fn bind(&self, ty: ValueType) -> Result<Bound, CondError> {
        let node = self
            .bind_bool(&self.tree, ty)
            .map_err(|(column, msg)| CondError {
                src: self.src.clone(),
                column,
                msg,
            })?;
        Ok(Bound { node, ty })
    }

    fn bind_bool(&self, s: &Syn, ty: ValueType) -> PResult<Node> {
        Ok(match s {
            Syn::Or(a, b) => Node::Or(
                Box::new(self.bind_bool(a, ty)?),
                Box::new(self.bind_bool(b, ty)?),
            ),
            Syn::And(a, b) => Node::And(
                Box::new(self.bind_bool(a, ty)?),
                Box::new(self.bind_bool(b, ty)?),
            ),
            Syn::Not(a) => Node::Not(Box::new(self.bind_bool(a, ty)?)),
            Syn::Cmp(op, a, b, col) => self.bind_cmp(*op, a, b, *col, ty)?,
            Syn::Var(v, _) => Node::Cmp {
                op: CmpOp::Ne,
                lhs: Operand::Var(*v),
                rhs: Operand::Lit(0),
                signed: false,
            },
            Syn::Int(n, _) => Node::Cmp {
                op: CmpOp::Ne,
                lhs: Operand::Lit(*n as u64),
                rhs: Operand::Lit(0),
                signed: false,
            },
            Syn::Func(col) => {
                return Err((
                    *col,
                    "`func` is tested against a function name: func == \"name\"".into(),
                ))
            }
            Syn::Str(_, col) => {
                return Err((
                    *col,
                    "a string is only compared with func: func == \"name\"".into(),
                ))
            }
        })
    }

    fn bind_cmp(&self, op: CmpOp, a: &Syn, b: &Syn, col: usize, ty: ValueType) -> PResult<Node> {
        // func == "name" (either order).
        let func_test = |name: &str| -> PResult<Node> {
            let n = Node::InFunc(name.to_string());
            match op {
                CmpOp::Eq => Ok(n),
                CmpOp::Ne => Ok(Node::Not(Box::new(n))),
                _ => Err((
                    col,
                    format!("`func` is compared with == or !=, not {}", op.text()),
                )),
            }
        };
        match (a, b) {
            (Syn::Func(_), Syn::Str(s, _)) | (Syn::Str(s, _), Syn::Func(_)) => return func_test(s),
            (Syn::Func(c), _) | (_, Syn::Func(c)) => {
                return Err((
                    *c,
                    "`func` is compared with a function name in quotes: func == \"name\"".into(),
                ))
            }
            (Syn::Str(_, c), _) | (_, Syn::Str(_, c)) => {
                return Err((
                    *c,
                    "a string is only compared with func: func == \"name\"".into(),
                ))
            }
            _ => {}
        }
        let (Some(l), Some(r)) = (self.operand(a, ty), self.operand(b, ty)) else {
            let bad = if self.operand(a, ty).is_none() { a } else { b };
            let c = first_col(bad);
            return Err((
                c,
                format!(
                    "`{}` compares numbers, not the result of a condition",
                    op.text()
                ),
            ));
        };
        let value_side = |o: &(Operand, usize)| matches!(o.0, Operand::Var(Var::Old | Var::New));
        let signed = ty.signed && (value_side(&l) || value_side(&r));
        // Literals must fit the type of what they are compared with.
        let (lit_ty, what) = if value_side(&l) || value_side(&r) {
            let v = if value_side(&l) { l.0 } else { r.0 };
            (ty, format!("`{}` ({})", var_name(v), ty.describe()))
        } else {
            (
                ValueType {
                    len: 8,
                    signed: false,
                },
                "an unsigned 64-bit number".to_string(),
            )
        };
        let fix = |o: (Operand, usize), raw: Option<i128>| -> PResult<Operand> {
            let Some(n) = raw else { return Ok(o.0) };
            let (lo, hi) = lit_ty.range();
            if n < lo || n > hi {
                return Err((
                    o.1,
                    format!("{n} does not fit {what}: it holds {lo} to {hi}"),
                ));
            }
            Ok(Operand::Lit(n as i64 as u64))
        };
        let lhs = fix(l, lit_of(a))?;
        let rhs = fix(r, lit_of(b))?;
        Ok(Node::Cmp {
            op,
            lhs,
            rhs,
            signed,
        })
    }

    fn operand(&self, s: &Syn, _ty: ValueType) -> Option<(Operand, usize)> {
        match s {
            Syn::Var(v, c) => Some((Operand::Var(*v), *c)),
            Syn::Int(n, c) => Some((Operand::Lit(*n as u64), *c)),
            _ => None,
        }
    }
}

fn var_name(o: Operand) -> &'static str {
    match o {
        Operand::Var(v) => v.name(),
        Operand::Lit(_) => "literal",
    }
}

fn lit_of(s: &Syn) -> Option<i128> {
    match s {
        Syn::Int(n, _) => Some(*n),
        _ => None,
    }
}

/// The column where `s` begins.
fn first_col(s: &Syn) -> usize {
    match s {
        Syn::Or(a, _) | Syn::And(a, _) | Syn::Cmp(_, a, _, _) | Syn::Not(a) => first_col(a),
        Syn::Var(_, c) | Syn::Func(c) | Syn::Int(_, c) | Syn::Str(_, c) => *c,
    }
}

/// A condition bound to a watch's value type: what the filter compiles
/// and [`Bound::eval`] evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The checked tree.
    pub node: Node,
    /// The type of `old` and `new`.
    pub ty: ValueType,
}

impl Bound {
    /// The condition that every hit matches (`--stop` without `--if`).
    pub fn always(ty: ValueType) -> Bound {
        Bound {
            node: Node::Cmp {
                op: CmpOp::Eq,
                lhs: Operand::Lit(0),
                rhs: Operand::Lit(0),
                signed: false,
            },
            ty,
        }
    }

    /// The function names the condition tests `func` against.
    pub fn functions(&self) -> Vec<String> {
        fn walk(n: &Node, out: &mut Vec<String>) {
            match n {
                Node::And(a, b) | Node::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Node::Not(a) => walk(a, out),
                Node::InFunc(f) if !out.contains(f) => out.push(f.clone()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.node, &mut out);
        out
    }

    /// Evaluate for one hit. `in_func(name, ip)` says whether `ip` (the
    /// trap's IP) is in function `name`.
    pub fn eval(&self, v: &HitValues, in_func: &dyn Fn(&str, u64) -> bool) -> bool {
        eval(&self.node, v, in_func)
    }
}

fn value(o: Operand, v: &HitValues) -> u64 {
    match o {
        Operand::Lit(n) => n,
        Operand::Var(Var::Old) => v.old,
        Operand::Var(Var::New) => v.new,
        Operand::Var(Var::Tid) => v.tid,
        Operand::Var(Var::Ip) => v.ip,
        Operand::Var(Var::Hits) => v.hits,
    }
}

fn eval(n: &Node, v: &HitValues, in_func: &dyn Fn(&str, u64) -> bool) -> bool {
    match n {
        Node::And(a, b) => eval(a, v, in_func) && eval(b, v, in_func),
        Node::Or(a, b) => eval(a, v, in_func) || eval(b, v, in_func),
        Node::Not(a) => !eval(a, v, in_func),
        Node::InFunc(name) => in_func(name, v.ip),
        Node::Cmp {
            op,
            lhs,
            rhs,
            signed,
        } => {
            let (a, b) = (value(*lhs, v), value(*rhs, v));
            let ord = if *signed {
                (a as i64).cmp(&(b as i64))
            } else {
                a.cmp(&b)
            };
            match op {
                CmpOp::Eq => ord.is_eq(),
                CmpOp::Ne => ord.is_ne(),
                CmpOp::Lt => ord.is_lt(),
                CmpOp::Le => ord.is_le(),
                CmpOp::Gt => ord.is_gt(),
                CmpOp::Ge => ord.is_ge(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I64: ValueType = ValueType {
        len: 8,
        signed: true,
    };
    const U32: ValueType = ValueType {
        len: 4,
        signed: false,
    };

    fn hv(old: u64, new: u64) -> HitValues {
        HitValues {
            old,
            new,
            tid: 10,
            ip: 0x1000,
            hits: 3,
        }
    }

    fn yes(src: &str, ty: ValueType, v: HitValues) -> bool {
        Cond::parse(src)
            .unwrap()
            .bind(ty)
            .unwrap()
            .eval(&v, &|n, ip| n == "f" && ip == 0x1000)
    }

    fn err(src: &str, ty: ValueType) -> CondError {
        match Cond::parse(src) {
            Err(e) => e,
            Ok(c) => c.bind(ty).unwrap_err(),
        }
    }

    #[test]
    fn comparisons_and_logic_follow_c_precedence() {
        assert!(yes("new == 0", I64, hv(1, 0)));
        assert!(!yes("new == 0", I64, hv(0, 1)));
        assert!(yes("new < old && tid != 1234", I64, hv(5, 3)));
        assert!(yes("new == 1 || new == 2 && old == 9", I64, hv(0, 1)));
        assert!(!yes("(new == 1 || new == 2) && old == 9", I64, hv(0, 1)));
        assert!(yes("!(new == 1)", I64, hv(0, 2)));
        assert!(yes("!!new", I64, hv(0, 2)));
        assert!(yes("hits >= 3 && hits <= 3 && ip > 0xfff", I64, hv(0, 0)));
        assert!(yes("func == \"f\"", I64, hv(0, 0)));
        assert!(yes("\"g\" != func", I64, hv(0, 0)));
        assert!(yes("1_000 == 1000 && 0b101 == 5", I64, hv(0, 0)));
    }

    #[test]
    fn signed_values_compare_signed_and_unsigned_values_do_not() {
        let m1 = I64.widen(u64::MAX);
        assert!(yes("new < 0", I64, hv(0, m1)));
        assert!(yes("new == -1", I64, hv(0, m1)));
        let s8 = ValueType {
            len: 1,
            signed: true,
        };
        assert_eq!(s8.widen(0xff), u64::MAX);
        assert!(yes("new == -1 && new < old", s8, hv(0, s8.widen(0xff))));
        assert!(yes("new > 5", U32, hv(0, U32.widen(0xffff_ffff))));
        assert_eq!(U32.widen(0x1_ffff_ffff), 0xffff_ffff);
    }

    #[test]
    fn literal_outside_the_watch_type_is_an_error_with_its_column() {
        let e = err("new == -1", U32);
        assert_eq!(e.column, 8);
        assert!(
            e.msg.contains("does not fit `new` (unsigned, 4 bytes)"),
            "{e}"
        );
        let e = err(
            "old > 300",
            ValueType {
                len: 1,
                signed: false,
            },
        );
        assert_eq!(e.column, 7);
        assert!(e.msg.contains("0 to 255"), "{e}");
        let e = err("tid == -5", I64);
        assert!(e.msg.contains("unsigned 64-bit"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_column() {
        for (src, col, needle) in [
            ("new = 0", 5, "compare with `==`"),
            ("new == ", 8, "expected a value"),
            ("nwe == 0", 1, "did you mean `new`"),
            ("new == 0 &", 10, "use `&&`"),
            ("(new == 0", 10, "expected `)`"),
            ("new == 0)", 9, "closes nothing"),
            ("a < b < c", 1, "unknown name"),
            ("old < new < 5", 11, "do not chain"),
            ("new - 1", 5, "no subtraction"),
            ("func == 3", 1, "function name in quotes"),
            ("func < \"f\"", 6, "== or !="),
            ("new == \"x\"", 8, "only compared with func"),
            ("\"x", 1, "no closing"),
            ("0x == 1", 1, "not a number"),
            ("99999999999999999999 == 1", 1, "fits 64 bits"),
            ("", 1, "empty"),
            ("new == 1 new", 10, "expected `&&`"),
            ("new @ 1", 5, "unexpected `@`"),
            ("(new == 1) == 1", 2, "compares numbers"),
            ("func", 1, "tested against a function name"),
        ] {
            let e = err(src, I64);
            assert_eq!(
                (e.column, e.msg.contains(needle)),
                (col, true),
                "{src}: {e}"
            );
            // The caret sits under the column.
            let last = e.pointer().lines().last().unwrap().to_string();
            assert_eq!(last.find('^'), Some(col - 1), "{src}: {e}");
            assert_eq!(e.to_string().lines().count(), 1);
        }
    }

    #[test]
    fn uses_and_functions_report_what_the_condition_reads() {
        let c = Cond::parse("old < new || func == \"a\" && func != \"b\"").unwrap();
        assert!(c.uses(Var::Old) && c.uses(Var::New) && !c.uses(Var::Tid));
        assert_eq!(c.bind(I64).unwrap().functions(), ["a", "b"]);
    }
}
