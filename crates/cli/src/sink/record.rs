//! The record-file writer: hits to a `hwbreak record` file, the summary to
//! stderr (stdout stays free for the program's own output).

use super::{Frames, Shown, Sink};
use crate::error::CliError;
use crate::recfile::{self, Module};
use crate::summary::SummaryView;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;

/// Hits into a record file.
pub struct RecordFile {
    w: recfile::Writer<BufWriter<File>>,
    path: PathBuf,
}

impl RecordFile {
    /// Write `header` to `file` (created as `path`).
    pub fn new(file: File, path: PathBuf, header: &recfile::Header) -> Result<Self, CliError> {
        let w = recfile::Writer::new(BufWriter::with_capacity(1 << 20, file), header).map_err(
            |source| CliError::RecordWrite {
                path: path.clone(),
                source,
            },
        )?;
        Ok(RecordFile { w, path })
    }

    fn error(&self, source: io::Error) -> CliError {
        CliError::RecordWrite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for RecordFile {
    fn prints(&self) -> bool {
        false
    }

    fn hit(&mut self, s: &Shown<'_>, _: &mut Frames) -> Result<(), CliError> {
        self.w.hit(&s.hit).map_err(|e| self.error(e))
    }

    fn modules(&mut self, new: &[Module]) -> Result<(), CliError> {
        for m in new {
            self.w.module(m).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        Ok(())
    }

    fn finish(mut self, view: &SummaryView<'_>, sym: &mut Frames) -> Result<(), CliError> {
        self.w.lost(view.agg.lost).map_err(|e| self.error(e))?;
        let path = self.path.clone();
        let (t, _) = self.w.finish().map_err(|source| CliError::RecordWrite {
            path: path.clone(),
            source,
        })?;
        let path = path.display();
        eprintln!(
            "hwbreak: recorded {} hits (lost: {}) to {path}; analyse with `hwbreak report {path}`",
            t.hits, t.lost
        );
        let mut e = io::stderr().lock();
        view.text(&mut e, sym)?;
        Ok(())
    }
}
