//! `hwbreak-bench`: hwbreak against raw `perf_event_open`, gdb, perf and
//! bpftrace, in one run, on one target. See the library crate for the parts.

use clap::Parser;

fn main() {
    let args = hwbreak_bench::BenchArgs::parse();
    if let Err(e) = hwbreak_bench::run(args) {
        eprintln!("hwbreak-bench: {e:#}");
        std::process::exit(1);
    }
}
