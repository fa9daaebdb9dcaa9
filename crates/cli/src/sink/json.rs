//! The JSON printer: one `hit` object per line, then one `summary`
//! (the schema is in docs/CLI.md).

use super::{Frames, Shown, Sink};
use crate::error::CliError;
use crate::frames::Rendered;
use crate::plan::{format_value, PlannedWatch};
use crate::summary::SummaryView;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::rc::Rc;

/// Hits as JSON lines on stdout.
pub struct Json {
    out: BufWriter<StdoutLock<'static>>,
    no_stack: bool,
    /// Each watch's name as a JSON string, escaped once.
    names: Vec<String>,
    line: Vec<u8>,
    frames_buf: Vec<Rc<Rendered>>,
}

impl Json {
    /// A printer to stdout for these watches.
    pub fn new(watches: &[PlannedWatch], no_stack: bool) -> Self {
        Json {
            out: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            no_stack,
            names: watches
                .iter()
                .map(|w| serde_json::to_string(&w.name).unwrap_or_else(|_| "\"?\"".into()))
                .collect(),
            line: Vec::with_capacity(1024),
            frames_buf: Vec::new(),
        }
    }
}

impl Sink for Json {
    fn prints(&self) -> bool {
        true
    }

    // Written by hand from pre-rendered pieces (each frame's JSON is
    // rendered once per address, see crate::frames): this is the per-hit
    // hot path.
    fn hit(&mut self, s: &Shown<'_>, sym: &mut Frames) -> Result<(), CliError> {
        let (h, w) = (&s.hit, s.watch);
        let exact = w.access == hwbreak_core::Access::Execute;
        let mut frames = std::mem::take(&mut self.frames_buf);
        let depth = if self.no_stack { 1 } else { s.frames.len() };
        sym.stack_rendered(&s.frames[..depth], exact, &mut frames);
        let fmt = |v: Option<u64>| v.map(|v| format_value(v, w.len, w.kind));
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"type\":\"hit\",\"t\":");
        push_micros(line, s.since_first_ns);
        line.extend_from_slice(b",\"time_ns\":");
        push_u64(line, h.sample.time);
        line.extend_from_slice(b",\"tid\":");
        push_u64(line, h.tid().into());
        line.extend_from_slice(b",\"pid\":");
        push_u64(line, h.ext.pid.into());
        line.extend_from_slice(b",\"cpu\":");
        push_u64(line, h.sample.cpu.0.into());
        line.extend_from_slice(b",\"watch\":");
        line.extend_from_slice(self.names[h.watch()].as_bytes());
        line.extend_from_slice(b",\"access\":\"");
        line.extend_from_slice(w.access.short().as_bytes());
        line.extend_from_slice(b"\",\"addr\":\"");
        push_hex(line, h.sample.addr);
        line.push(b'"');
        if let Some(o) = fmt(s.old) {
            let _ = write!(line, ",\"old\":\"{o}\"");
        }
        if let Some(n) = fmt(h.ext.value) {
            let _ = write!(line, ",\"new\":\"{n}\"");
        }
        line.extend_from_slice(b",\"ip\":\"");
        push_hex(line, h.sample.ip);
        line.extend_from_slice(b"\",\"at\":");
        line.extend_from_slice(frames[0].json.as_bytes());
        if !self.no_stack {
            line.extend_from_slice(b",\"stack\":[");
            let mut cut = false;
            for (k, f) in frames[1..].iter().enumerate() {
                if f.frame.is_cut() {
                    cut = true;
                    continue;
                }
                if k > 0 {
                    line.push(b',');
                }
                line.extend_from_slice(f.json.as_bytes());
            }
            line.push(b']');
            if cut {
                line.extend_from_slice(b",\"stack_truncated\":true");
            }
        }
        line.extend_from_slice(b"}\n");
        self.frames_buf = frames;
        self.out.write_all(&self.line).map_err(CliError::output)
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush().map_err(CliError::output)
    }

    fn finish(mut self, view: &SummaryView<'_>, sym: &mut Frames) -> Result<(), CliError> {
        let j = view.json(sym);
        serde_json::to_writer(&mut self.out, &j).map_err(CliError::json)?;
        self.out.write_all(b"\n").map_err(CliError::output)?;
        self.out.flush().map_err(CliError::output)
    }
}

// Integer writers for the per-hit JSON line: `write!` goes through
// `core::fmt` (padding, dynamic dispatch), which was the larger part of the
// per-hit CPU; these produce the same text as `{}` and `{:#x}`. (Hand-written
// rather than a new dependency: a few lines, tested below.)

/// Append `v` in decimal.
fn push_u64(s: &mut Vec<u8>, mut v: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    s.extend_from_slice(&buf[i..]);
}

/// Append `v` as `{:#x}` does (`0x` and lowercase digits, no padding).
fn push_hex(s: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    buf[i] = b'0';
    buf[i + 1] = b'x';
    s.extend_from_slice(&buf[i..]);
}

/// Append `ns` nanoseconds as seconds rounded to the microsecond, as the f64
/// `(ns / 1e9 * 1e6).round() / 1e6` prints (`0`, `1.5`, `0.000123`).
fn push_micros(s: &mut Vec<u8>, ns: u64) {
    let us = ns / 1000 + u64::from(ns % 1000 >= 500);
    push_u64(s, us / 1_000_000);
    let mut frac = us % 1_000_000;
    if frac == 0 {
        return;
    }
    let mut digits = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    s.push(b'.');
    let mut buf = [b'0'; 6];
    for k in (0..digits).rev() {
        buf[k] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    s.extend_from_slice(&buf[..digits]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_writers_print_what_core_fmt_prints() {
        let vals = [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            0x7fff_ffff_ffff,
            99,
            100,
            101,
            12_345_678_901,
            u32::MAX as u64,
            u64::MAX,
        ];
        for v in vals {
            let (mut d, mut x) = (Vec::new(), Vec::new());
            push_u64(&mut d, v);
            push_hex(&mut x, v);
            assert_eq!(d, format!("{v}").as_bytes());
            assert_eq!(x, format!("{v:#x}").as_bytes());
        }
    }

    #[test]
    fn micros_print_as_the_rounded_f64_seconds_did() {
        let vals = [
            0u64,
            499,
            500,
            1_000,
            123_456,
            1_000_000,
            1_500_000_000,
            1_000_000_499,
            2_000_010_000,
            59_999_999_999,
            3_600_123_456_789,
        ];
        for ns in vals {
            let mut s = Vec::new();
            push_micros(&mut s, ns);
            let t = ns as f64 / 1e9;
            let want = format!("{}", (t * 1e6).round() / 1e6);
            assert_eq!(String::from_utf8_lossy(&s), want, "ns = {ns}");
        }
    }
}
