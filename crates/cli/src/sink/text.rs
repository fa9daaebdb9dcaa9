//! The text printer: one line per hit, its callers below it, then the
//! summary (see docs/CLI.md).

use super::{Frames, Shown, Sink};
use crate::error::CliError;
use crate::frames::Rendered;
use crate::plan::format_value;
use crate::summary::SummaryView;
use hwbreak_core::Access;
use hwbreak_linux::symbols::ValueKind;
use std::collections::HashMap;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::rc::Rc;

/// Hits as text on stdout.
pub struct Text {
    out: BufWriter<StdoutLock<'static>>,
    /// Show `old → new` (`--values`).
    values: bool,
    no_stack: bool,
    /// Thread names, read from `/proc` at a thread's first hit.
    comm: HashMap<u32, String>,
    frames_buf: Vec<Rc<Rendered>>,
}

impl Text {
    /// A printer to stdout.
    pub fn new(values: bool, no_stack: bool) -> Self {
        Text {
            out: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            values,
            no_stack,
            comm: HashMap::new(),
            frames_buf: Vec::new(),
        }
    }
}

impl Sink for Text {
    fn prints(&self) -> bool {
        true
    }

    fn hit(&mut self, s: &Shown<'_>, sym: &mut Frames) -> Result<(), CliError> {
        let (h, w) = (&s.hit, s.watch);
        let exact = w.access == Access::Execute;
        let mut frames = std::mem::take(&mut self.frames_buf);
        let depth = if self.no_stack { 1 } else { s.frames.len() };
        sym.stack_rendered(&s.frames[..depth], exact, &mut frames);
        let fmt = |v: Option<u64>| v.map(|v| format_value(v, w.len, w.kind));
        let t = s.since_first_ns as f64 / 1e9;
        let tid = h.tid();
        let comm = self.comm.entry(tid).or_insert_with(|| {
            let pid = if h.ext.pid != 0 { h.ext.pid } else { tid };
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        });
        let who = if comm.is_empty() {
            format!("tid {tid}")
        } else {
            format!("tid {tid} {comm}")
        };
        let val = if self.values && w.kind != ValueKind::Code {
            format!(
                "  {} → {}",
                fmt(s.old).as_deref().unwrap_or("…"),
                fmt(h.ext.value).as_deref().unwrap_or("…")
            )
        } else {
            String::new()
        };
        let mut line = format!(
            "{t:>10.6}  {who:<20}  {} {}{val}  at {}\n",
            w.name,
            w.access.short(),
            frames[0].text
        );
        if !self.no_stack {
            let max = 8;
            for (k, f) in frames.iter().enumerate().skip(1) {
                if k > max {
                    line.push_str(&format!("                ← … {} more\n", frames.len() - k));
                    break;
                }
                if crate::frames::is_runtime_entry(&f.frame) {
                    break;
                }
                line.push_str("                ← ");
                line.push_str(&f.text);
                line.push('\n');
            }
        }
        self.frames_buf = frames;
        self.out
            .write_all(line.as_bytes())
            .map_err(CliError::output)
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush().map_err(CliError::output)
    }

    fn finish(mut self, view: &SummaryView<'_>, sym: &mut Frames) -> Result<(), CliError> {
        view.text(&mut self.out, sym).map_err(CliError::output)?;
        self.out.flush().map_err(CliError::output)
    }
}
