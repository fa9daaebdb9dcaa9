//! `hwbreak report FILE`: totals and the top-N writer stacks of a record file.
//!
//! One pass over the file aggregates hits by `(watch, ip, stack)` without
//! allocating per hit; only the addresses of the stacks shown are symbolized,
//! each once, through the module map stored in the file.

use crate::cli::ReportArgs;
use crate::error::CliError;
use crate::frames::{FrameCache, Symbolize};
use crate::offline;
use crate::recfile::Reader;
use crate::summary::{Agg, SummaryView, WatchTotal};
use std::io::{BufReader, Write};

/// One line on what the reader skipped, if anything: how many damaged
/// blocks, where, how many bytes and hits.
pub fn damage_note(damage: &[crate::recfile::Damage], hits: u64) -> Option<String> {
    if damage.is_empty() {
        return None;
    }
    let bytes: u64 = damage.iter().map(|d| d.bytes).sum();
    let mut at: Vec<String> = damage
        .iter()
        .take(5)
        .map(|d| d.offset.to_string())
        .collect();
    if damage.len() > 5 {
        at.push("...".into());
    }
    Some(format!(
        "skipped {} damaged block{} ({bytes} bytes at byte {}, holding {hits} hits); the rest is reported",
        damage.len(),
        if damage.len() == 1 { "" } else { "s" },
        at.join(", ")
    ))
}

/// Read a record file into totals.
pub fn aggregate(path: &std::path::Path) -> Result<(crate::recfile::Header, Agg), CliError> {
    let f = std::fs::File::open(path).map_err(|source| CliError::RecordOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let read_error = |source| CliError::RecordRead {
        path: path.to_path_buf(),
        source,
    };
    let mut r = Reader::new(BufReader::with_capacity(1 << 20, f)).map_err(read_error)?;
    let watches = r
        .header
        .watches
        .iter()
        .map(|w| WatchTotal::new(&w.name, w.addr, w.len, w.access))
        .collect();
    let mut agg = Agg::new(watches);
    while let Some(hit) = r.next_hit().map_err(read_error)? {
        agg.add_hit(&hit);
    }
    if let Some(note) = damage_note(r.damage(), r.skipped_hits()) {
        eprintln!("hwbreak: {}: {note}", path.display());
    }
    agg.lost = r.totals().lost;
    Ok((r.header, agg))
}

/// Read a record file and symbolize its top `top` writer stacks: all the
/// work of `hwbreak report` except printing (for benchmarks and tests).
/// Returns the totals and the number of frames shown.
pub fn analyse(path: &std::path::Path, top: usize) -> Result<(Agg, usize), CliError> {
    let (header, agg) = aggregate(path)?;
    let mut sym = FrameCache::new(offline::symbolizer(&header.modules));
    let view = SummaryView {
        agg: &agg,
        duration_s: 0.0,
        top,
        target_exit: None,
        stopped: None,
    };
    let frames = view
        .shown_stacks(&mut sym)
        .iter()
        .map(|s| s.frames.len())
        .sum();
    Ok((agg, frames))
}

/// Run `hwbreak report`.
pub fn run(args: &ReportArgs) -> Result<(), CliError> {
    let (header, agg) = aggregate(&args.file)?;
    let sym = offline::symbolizer(&header.modules);
    print(&agg, args.top, args.json, FrameCache::new(sym), &header)
}

fn print<S: Symbolize>(
    agg: &Agg,
    top: usize,
    json: bool,
    mut sym: FrameCache<S>,
    header: &crate::recfile::Header,
) -> Result<(), CliError> {
    let view = SummaryView {
        agg,
        duration_s: agg.span_s(),
        top,
        target_exit: None,
        stopped: None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        let j = view.json(&mut sym);
        serde_json::to_writer(&mut out, &j).map_err(CliError::json)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "record of pid {}: {} watches, {} modules, {} distinct stacks",
            header.pid,
            header.watches.len(),
            header.modules.len(),
            agg.distinct_stacks()
        )?;
        view.text(&mut out, &mut sym)?;
    }
    out.flush()?;
    Ok(())
}
