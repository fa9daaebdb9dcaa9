//! Where hits go: one [`Sink`] per output, the way ripgrep's printer has
//! one sink per format. `watch` prints with [`Text`] or [`Json`];
//! `record` writes with [`RecordFile`]. The session glue
//! ([`crate::sampling`]) knows nothing of formats: it hands each sink the
//! same [`Shown`] hit, then the summary.
//!
//! A sink is chosen once per session and the glue is generic over it, so a
//! hit costs no dynamic dispatch.

mod json;
mod record;
mod text;

pub use json::Json;
pub use record::RecordFile;
pub use text::Text;

use crate::error::CliError;
use crate::frames::FrameCache;
use crate::plan::PlannedWatch;
use crate::recfile::Module;
use crate::summary::SummaryView;
use hwbreak_core::events::Extended;
use hwbreak_linux::symbols::Symbolizer;

/// One hit as the sinks see it.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    /// The hit: `sample.bp` is the index of [`Shown::watch`] in the plan,
    /// `ext.stack` the return addresses (no IP, no context markers),
    /// `ext.stack_truncated` whether the stack is shown cut, and
    /// `ext.value` the value after the access when followed.
    pub hit: Extended<'a>,
    /// The watch it is of.
    pub watch: &'a PlannedWatch,
    /// The value before the access, when followed (`--values`).
    pub old: Option<u64>,
    /// The IP, then the return addresses, then [`crate::frames::CUT`] if
    /// the stack is cut: what a printer symbolizes.
    pub frames: &'a [u64],
    /// Nanoseconds since the session's first hit.
    pub since_first_ns: u64,
}

/// Symbolized frames, shared by the hits and the summary.
pub type Frames = FrameCache<Symbolizer>;

/// An output of `watch` or `record`.
pub trait Sink {
    /// Whether hits appear on the terminal's stdout (the live status line
    /// is cleared before them).
    fn prints(&self) -> bool;

    /// One hit, in time order.
    fn hit(&mut self, hit: &Shown<'_>, frames: &mut Frames) -> Result<(), CliError>;

    /// Executable mappings seen since the start (a library loaded later).
    fn modules(&mut self, _new: &[Module]) -> Result<(), CliError> {
        Ok(())
    }

    /// Write out what is buffered (after each drain).
    fn flush(&mut self) -> Result<(), CliError>;

    /// The end: the summary, and what closes the output.
    fn finish(self, view: &SummaryView<'_>, frames: &mut Frames) -> Result<(), CliError>;
}
