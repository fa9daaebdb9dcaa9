//! # hwbreak (the command)
//!
//! Watch any variable by name, in every thread, without stopping the
//! program. This crate is thin glue over `hwbreak-linux` (perf events,
//! symbols, hit order, values) and `hwbreak-core` (the one hit record,
//! `events::Extended`).
//!
//! ## What it owns
//!
//! * The command line ([`cli`]), SPECs ([`spec`]) and the breakpoint plan
//!   ([`plan`], [`launch_lib`] for SPECs in shared libraries).
//! * Session glue: [`session`] opens the watches and runs `stat`;
//!   [`sampling`] runs the drain loop of `watch` and `record`.
//! * Output: one [`sink::Sink`] per format ([`sink::Text`], [`sink::Json`],
//!   [`sink::RecordFile`]), the summary ([`summary`]) and symbolized frames
//!   ([`frames`], [`offline`]).
//! * Record files ([`recfile`]) and `report` ([`report`]).
//! * Errors ([`error`]): typed, each with its source, printed as one line.
//!
//! ## What it must not do
//!
//! No perf, ptrace or DWARF work of its own (beyond probing slots,
//! [`slots`]): ring sizing, time order and value tracking belong to
//! `hwbreak-linux` (`ringsize`, `order`, `values`). No per-format flags in
//! the hit path: a new output is a new [`sink::Sink`].
//!
//! ## Example
//!
//! A SPEC, parsed as `hwbreak watch` parses it:
//!
//! ```
//! use hwbreak::spec::{parse, Location};
//! let s = parse("STATE.table[3]/4:rw").unwrap();
//! assert_eq!(s.len, Some(4));
//! assert!(matches!(s.location, Location::Symbol { .. }));
//! assert!(parse("STATE.hits:q").unwrap_err().to_string().contains("column 12"));
//! ```

#![warn(missing_docs)]

pub mod branches;
pub mod cli;
pub mod conds;
pub mod error;
pub mod frames;
pub mod launch_lib;
pub mod offline;
pub mod plan;
pub mod recfile;
pub mod report;
pub mod sampling;
pub mod session;
pub mod sink;
pub mod slots;
pub mod spec;
pub mod summary;
pub mod sys;

use std::path::Path;

use cli::{Cli, Cmd};
use error::CliError;

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Report(a) => report::run(&a),
        Cmd::Slots(a) => slots::run(&a),
        Cmd::Watch(a) if a.branches => Err(branches::refuse(Path::new(branches::DEVICES))),
        Cmd::Record(a) if a.branches => Err(branches::refuse(Path::new(branches::DEVICES))),
        Cmd::Watch(a) => session::watch(&a),
        Cmd::Stat(a) => session::stat(&a),
        Cmd::Record(a) => session::record(&a),
    }
}
