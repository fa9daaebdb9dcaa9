//! Frames as the CLI prints them, and a cache so each distinct IP is
//! symbolized once however many hits carry it.

use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt::Write as _;
use std::rc::Rc;

/// One symbolized instruction address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The address, hex.
    #[serde(serialize_with = "hex")]
    pub ip: u64,
    /// Function name (demangled), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Offset of `ip` from the function's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Source file, when there is line information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The mapped file holding `ip` (shown when there is no function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// `ip`'s offset within `module`'s file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_offset: Option<u64>,
}

/// A stack entry that marks a cut stack: it follows the last frame that was
/// walked when the stack went on above the copied bytes
/// (`hwbreak_core::events::Extension::stack_truncated`). No return address
/// can take this value: it is in the kernel's half of the address space.
pub const CUT: u64 = u64::MAX - 1;

/// What the [`CUT`] marker reads as.
pub const CUT_TEXT: &str =
    "… deeper frames not copied (raise --stack-bytes, or use --kernel-stack)";

/// Serialize a u64 as a `0x...` string (JSON numbers lose precision past 2^53).
pub fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

impl Frame {
    /// An address with nothing known about it.
    pub fn unknown(ip: u64) -> Self {
        Frame {
            ip,
            ..Default::default()
        }
    }

    /// Whether this is the [`CUT`] marker rather than a frame.
    pub fn is_cut(&self) -> bool {
        self.ip == CUT
    }

    /// `function+0xoff (file:line)`, or `module+0xoff`, or the raw address.
    pub fn text(&self) -> String {
        if self.is_cut() {
            return CUT_TEXT.to_string();
        }
        let mut s = String::new();
        match (&self.function, &self.module) {
            (Some(f), _) => {
                s.push_str(f);
                if let Some(o) = self.offset {
                    let _ = write!(s, "+{o:#x}");
                }
            }
            (None, Some(m)) => {
                let base = m.rsplit('/').next().unwrap_or(m);
                let _ = write!(s, "{base}+{:#x}", self.module_offset.unwrap_or(0));
            }
            (None, None) => {
                let _ = write!(s, "{:#x}", self.ip);
            }
        }
        if let Some(file) = &self.file {
            let short = short_path(file);
            match self.line {
                Some(l) => {
                    let _ = write!(s, " ({short}:{l})");
                }
                None => {
                    let _ = write!(s, " ({short})");
                }
            }
        }
        s
    }
}

/// The last two components of a path: enough to recognise, short enough to read.
pub fn short_path(p: &str) -> &str {
    let mut idx = p.len();
    for _ in 0..2 {
        match p[..idx].rfind('/') {
            Some(i) => idx = i,
            None => return p,
        }
    }
    &p[idx + 1..]
}

/// Frames where a thread's own code ends and the runtime's begins (thread
/// start, `main`'s caller): text output and summaries stop there.
pub fn is_runtime_entry(f: &Frame) -> bool {
    const ENTRIES: [&str; 6] = [
        "std::sys::backtrace::__rust_begin_short_backtrace",
        "std::rt::lang_start",
        "start_thread",
        "__libc_start_call_main",
        "__libc_start_main",
        "clone3",
    ];
    f.function
        .as_deref()
        .is_some_and(|n| ENTRIES.iter().any(|e| n.starts_with(e)))
}

/// Something that turns addresses into frames.
pub trait Symbolize {
    /// One frame per address, in order.
    fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame>;
}

/// Symbolizes each distinct address once.
///
/// Addresses are looked up *inside* the instruction they belong to: a return
/// address, and the IP of an x86 data hit (the trap comes after the writing
/// instruction), point just past it, so the lookup uses `ip - 1` and the
/// frame then shows the real address. Execute hits are exact.
pub struct FrameCache<S> {
    inner: S,
    map: FxHashMap<(u64, bool), Rc<Rendered>>,
}

/// A frame with its text and JSON rendered once.
#[derive(Debug)]
pub struct Rendered {
    /// The frame.
    pub frame: Rc<Frame>,
    /// [`Frame::text`].
    pub text: String,
    /// The frame as a JSON object.
    pub json: String,
}

impl<S: Symbolize> FrameCache<S> {
    /// Wrap a symbolizer.
    pub fn new(inner: S) -> Self {
        let mut map = FxHashMap::default();
        // The cut marker is never looked up: it is no address.
        for exact in [false, true] {
            let f = Frame::unknown(CUT);
            map.insert(
                (CUT, exact),
                Rc::new(Rendered {
                    text: f.text(),
                    json: serde_json::to_string(&f).unwrap_or_default(),
                    frame: Rc::new(f),
                }),
            );
        }
        FrameCache { inner, map }
    }

    /// The wrapped symbolizer.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Symbolize (in one batch) whatever of the stack is not cached yet.
    fn fill(&mut self, ips: &[u64], exact_ip: bool) {
        let key = |i: usize, ip: u64| (ip, i == 0 && exact_ip);
        if ips
            .iter()
            .enumerate()
            .all(|(i, &ip)| self.map.contains_key(&key(i, ip)))
        {
            return;
        }
        let mut missing: Vec<(u64, bool)> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| key(i, ip))
            .filter(|k| !self.map.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let lookups: Vec<u64> = missing
            .iter()
            .map(|&(ip, exact)| if exact { ip } else { ip.saturating_sub(1) })
            .collect();
        let got = self.inner.symbolize(&lookups);
        for (i, &(ip, exact)) in missing.iter().enumerate() {
            let mut f = got.get(i).cloned().unwrap_or_else(|| Frame::unknown(ip));
            let delta = ip - lookups[i];
            f.ip = ip;
            if !exact {
                f.offset = f.offset.map(|o| o + delta);
                f.module_offset = f.module_offset.map(|o| o + delta);
            }
            let r = Rendered {
                text: f.text(),
                json: serde_json::to_string(&f).unwrap_or_else(|_| "{}".into()),
                frame: Rc::new(f),
            };
            self.map.insert((ip, exact), Rc::new(r));
        }
    }

    fn get(&self, ip: u64, exact: bool) -> Rc<Rendered> {
        self.map.get(&(ip, exact)).cloned().unwrap_or_else(|| {
            let f = Frame::unknown(ip);
            Rc::new(Rendered {
                text: f.text(),
                json: serde_json::to_string(&f).unwrap_or_default(),
                frame: Rc::new(f),
            })
        })
    }

    /// Frames for a stack `[ip, return addresses...]`; `exact_ip` says the
    /// first address is an instruction start (an execute hit).
    pub fn stack(&mut self, ips: &[u64], exact_ip: bool) -> Vec<Rc<Frame>> {
        self.fill(ips, exact_ip);
        ips.iter()
            .enumerate()
            .map(|(i, &ip)| self.get(ip, i == 0 && exact_ip).frame.clone())
            .collect()
    }

    /// Drop the cached frames of addresses that no module covered, so that
    /// they are looked up again (after new mappings were added).
    pub fn forget_unknown(&mut self) {
        self.map.retain(|&(ip, _), r| {
            ip == CUT || r.frame.module.is_some() || r.frame.function.is_some()
        });
    }

    /// Whether the return address `ip` lies in `main` or in a thread's
    /// runtime entry ([`is_runtime_entry`]): the frames above it are the
    /// runtime's, so a stack cut there lacks nothing that is shown.
    pub fn is_entry(&mut self, ip: u64) -> bool {
        self.fill(&[ip], false);
        let f = &self.get(ip, false).frame;
        f.function.as_deref() == Some("main") || is_runtime_entry(f)
    }

    /// [`Self::stack`] with rendered text and JSON, into a reused buffer
    /// (the per-hit path: no allocation once the addresses are cached).
    pub fn stack_rendered(&mut self, ips: &[u64], exact_ip: bool, out: &mut Vec<Rc<Rendered>>) {
        self.fill(ips, exact_ip);
        out.clear();
        out.extend(
            ips.iter()
                .enumerate()
                .map(|(i, &ip)| self.get(ip, i == 0 && exact_ip)),
        );
    }
}

/// A symbolizer that knows nothing (for tests).
#[cfg(test)]
pub struct NoSymbols;

#[cfg(test)]
impl Symbolize for NoSymbols {
    fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame> {
        ips.iter().map(|&ip| Frame::unknown(ip)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(usize);
    impl Symbolize for Counting {
        fn symbolize(&mut self, ips: &[u64]) -> Vec<Frame> {
            self.0 += ips.len();
            ips.iter()
                .map(|&ip| Frame {
                    ip,
                    function: Some(format!("f{ip}")),
                    offset: Some(4),
                    file: Some("/a/b/c/main.rs".into()),
                    line: Some(7),
                    ..Default::default()
                })
                .collect()
        }
    }

    #[test]
    fn each_distinct_ip_is_symbolized_once() {
        let mut c = FrameCache::new(Counting(0));
        c.stack(&[11, 12, 11], false);
        c.stack(&[12, 13], false);
        assert_eq!(c.inner.0, 3);
        // 13 was looked up as 12, shown as 13 with the offset moved by one.
        assert_eq!(c.stack(&[13], false)[0].text(), "f12+0x5 (c/main.rs:7)");
    }

    #[test]
    fn execute_hit_ip_is_looked_up_exactly() {
        let mut c = FrameCache::new(Counting(0));
        let f = c.stack(&[20, 30], true);
        assert_eq!(f[0].function.as_deref(), Some("f20"));
        assert_eq!(f[1].function.as_deref(), Some("f29"));
        assert_eq!(f[1].ip, 30);
    }

    #[test]
    fn frame_text_falls_back_to_module_then_address() {
        let f = Frame {
            ip: 0x10,
            module: Some("/usr/lib/libc.so.6".into()),
            module_offset: Some(0x1234),
            ..Default::default()
        };
        assert_eq!(f.text(), "libc.so.6+0x1234");
        assert_eq!(Frame::unknown(0xabc).text(), "0xabc");
    }
}
