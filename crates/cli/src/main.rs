//! `hwbreak`: watch any variable by name, in every thread, without stopping
//! the program. See the library crate for the parts.

use clap::Parser;

fn main() {
    let cli = hwbreak::cli::Cli::parse();
    if let Err(e) = hwbreak::run(cli) {
        hwbreak::error::exit_with(&e);
    }
}
