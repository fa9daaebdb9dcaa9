//! `hwbreak`: watch any variable by name, in every thread, without stopping
//! the program. Thin glue over `hwbreak-linux` (perf events, symbols): this
//! crate parses SPECs, drives a watch session, and prints.

mod bench;
mod cli;
mod error;
mod frames;
mod offline;
mod plan;
mod recfile;
mod report;
mod session;
mod slots;
mod spec;
mod summary;
mod sys;

use clap::Parser;
use cli::{Cli, Cmd};
use error::CliError;

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Report(a) => report::run(&a),
        Cmd::Slots(a) => slots::run(&a),
        Cmd::Watch(a) => session::watch(&a),
        Cmd::Stat(a) => session::stat(&a),
        Cmd::Record(a) => session::record(&a),
        Cmd::Bench(a) => bench::run(a).map_err(|e| CliError::new(format!("{e:#}"))),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("hwbreak: {e}");
        std::process::exit(e.code);
    }
}
