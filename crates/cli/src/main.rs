//! `hwbreak`: watch any variable by name, in every thread, without stopping
//! the program. See the library crate for the parts.

use clap::Parser;

fn main() {
    let cli = match hwbreak::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match hwbreak::cli::usage_line(&e) {
            // A usage error: one line, status 2 (as clap's own).
            Some(line) => {
                eprintln!("{line}");
                std::process::exit(2);
            }
            // --help, --version: clap prints them and exits 0.
            None => e.exit(),
        },
    };
    if let Err(e) = hwbreak::run(cli) {
        hwbreak::error::exit_with(&e);
    }
}
