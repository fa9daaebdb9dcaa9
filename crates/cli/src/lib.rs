//! # hwbreak (the command)
//!
//! Watch any variable by name, in every thread, without stopping the
//! program. This crate is thin glue over `hwbreak-linux` (perf events and
//! symbols): it parses SPECs ([`spec`]), plans the breakpoints ([`plan`]),
//! drives a watch session ([`session`]), prints hits and summaries
//! ([`summary`], [`frames`]), and reads and writes record files
//! ([`recfile`], [`report`]). It does no perf or DWARF work of its own
//! beyond probing slots ([`slots`]) and reading watched bytes ([`sys`]).
//!
//! ```
//! use hwbreak::spec::{parse, Location};
//! let s = parse("STATE.table[3]/4:rw").unwrap();
//! assert_eq!(s.len, Some(4));
//! assert!(matches!(s.location, Location::Symbol { .. }));
//! assert!(parse("STATE.hits:q").unwrap_err().to_string().contains("column 12"));
//! ```

#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod frames;
pub mod launch_lib;
pub mod offline;
pub mod plan;
pub mod recfile;
pub mod report;
pub mod session;
pub mod slots;
pub mod spec;
pub mod summary;
pub mod sys;

use cli::{Cli, Cmd};
use error::CliError;

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Report(a) => report::run(&a),
        Cmd::Slots(a) => slots::run(&a),
        Cmd::Watch(a) => session::watch(&a),
        Cmd::Stat(a) => session::stat(&a),
        Cmd::Record(a) => session::record(&a),
    }
}
