//! `hwbreak-bench`: hwbreak against its peers, in one run, on one target.
//!
//! Every contender watches the same thing: writes to the 8-byte global
//! `counter` of `crates/bench/peers/target.c`, which writes it exactly N times and
//! exits. The peers' sources are embedded in this binary, compiled with `gcc`
//! into a temporary directory, and run as child processes, hwbreak included:
//! the `hwbreak` binary next to this one in `target/` (or `--hwbreak PATH`, or
//! `$HWBREAK`), driven through its command line as a user would.
//!
//! | contender | what it does | the target |
//! | --- | --- | --- |
//! | `raw-c` | plain counting `perf_event_open`, armed from exec | the baseline |
//! | `hwbreak stat` | exact counts | ≥ 0.97 × raw C hits/s |
//! | `hwbreak watch --json` | one JSON line per hit, with stack | ≥ 0.85 × raw C, 0 lost |
//! | `hwbreak report` | top-N of an N-hit record file | ≤ 2 s |
//! | `gdb watch` | `commands; silent; continue; end` (smaller N) | hwbreak watch ≥ 20 × gdb |
//! | `perf record+script` | `mem:ADDR/8:w -g`, then `perf script` | hwbreak watch no slower end to end |
//! | `bpftrace count` | `watchpoint:` + `count()` | none (information) |
//! | `bpftrace printf` | `watchpoint:` + `printf` + `ustack` | hwbreak watch faster per delivered hit |
//! | `bpftrace printf 4096pg` | the same with `BPFTRACE_PERF_RB_PAGES=4096` | hwbreak watch faster per delivered hit |
//!
//! Rules: a contender whose tool is missing is skipped with the reason; a
//! contender whose count differs from N is reported `WRONG`, never fast; every
//! contender also runs once with N = 0, and "hits/s" is N over (time − that
//! startup time), so a slow start (gdb, bpftrace's compiler) is not charged per
//! hit. End-to-end seconds are shown too (the perf comparison uses them). Each
//! contender runs `--repeat` times, interleaved round by round so that load
//! from elsewhere hits all of them alike, and its fastest run is reported.
//! Beside wall time, each run's CPU time (user + system of the contender's
//! whole process tree, from `getrusage(RUSAGE_CHILDREN)`) gives hits per CPU
//! second, which stays steady on a busy machine; `--metric cpu` judges on it.
//! A peer that miscounts is never called fast, but hwbreak is still compared
//! with it (`PASS*`/`MISS*`): its time covers less work, which favours it.
//! bpftrace's printing peer drops hits when its perf buffer overflows (most
//! of them at the default 64 pages), so it is judged per *delivered* hit:
//! its hits/s is the hits it printed over its time net of start-up, hwbreak
//! watch's is N over its own, and the verdict says `lossy` (`PASS lossy`,
//! `MISS lossy`, `FLAKY lossy`) with the loss in the note. A run that crashes
//! (bpftrace aborts now and then on RLIMIT_MEMLOCK or `read_symlink`) is not
//! counted, and makes the row `FLAKY`.
//!
//! This crate is not published (`publish = false`) and is not part of the
//! shipped `hwbreak` binary: it owns the peers (`crates/bench/peers/`), their
//! build, the parsers of each tool's output, and the judging. It must not link
//! hwbreak's internals; it measures the binary a user runs.

#![warn(missing_docs)]

mod children;
mod contenders;
mod judge;
mod parse;
mod prepare;
mod runner;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use contenders::plan;
use judge::{judge, render_table, run_perf_bench, Conditions, JsonOut};
use prepare::{cpu_model, find_in_path, read_trimmed, Env};
use runner::Measured;

/// The target, embedded so that the bench runs from an installed binary.
pub(crate) const TARGET_C: &str = include_str!("../peers/target.c");
/// The baseline peer.
pub(crate) const RAW_COUNT_C: &str = include_str!("../peers/raw_count.c");
/// gdb's auto-continue watch script.
pub(crate) const GDB_SCRIPT: &str = include_str!("../peers/gdb_watch.gdb");
/// bpftrace counting script (`$1` = address).
pub(crate) const BPF_COUNT: &str = include_str!("../peers/bpftrace_count.bt");
/// bpftrace per-hit printing script (`$1` = address).
pub(crate) const BPF_PRINTF: &str = include_str!("../peers/bpftrace_printf.bt");

const AFTER_HELP: &str = "\
Examples:
  cargo build --release -p hwbreak -p hwbreak-bench
  ./target/release/hwbreak-bench                  # N = 10^6 writes, gdb 10^4, best of 3
  ./target/release/hwbreak-bench -n 100000 --repeat 1 --only stat,gdb
  ./target/release/hwbreak-bench --json --perf-bench > bench.json

Needs gcc (the target and the raw C peer are built at bench time); gdb, perf
and bpftrace are used when installed and skipped with the reason otherwise.
Figures and method: docs/PERFORMANCE.md.";

/// The watched global in the target.
pub(crate) const SYMBOL: &str = "counter";
/// Its size in bytes.
pub(crate) const WATCH_LEN: u32 = 8;

/// Arguments of `hwbreak-bench`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "hwbreak-bench",
    version,
    about = "Measure hwbreak against raw perf_event_open, gdb, perf and bpftrace on one target, in one run.",
    after_help = AFTER_HELP
)]
pub struct BenchArgs {
    /// Writes the target makes, so hits expected, for every contender but gdb.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub n: u64,
    /// Writes for gdb, which stops the target on every hit (a few thousand hits/s).
    #[arg(long, default_value_t = 10_000)]
    pub gdb_n: u64,
    /// Threads of the target that share the N writes (1 = the main thread writes).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Rounds; each contender's fastest round is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Run only the contenders whose name contains one of these words (comma separated);
    /// the raw C baseline always runs.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Print one JSON object (conditions, rows) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The hwbreak binary to measure (default: $HWBREAK, else the `hwbreak`
    /// next to this executable, as `cargo build --release` puts them).
    #[arg(long, env = "HWBREAK", value_name = "PATH")]
    pub hwbreak: Option<PathBuf>,
    /// Kill a contender's run after this many seconds (it is then reported as an error).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Keep the temporary directory (compiled peers, record files) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Also run `perf bench breakpoint thread -b 4 -p 64 -t 64` and `perf bench breakpoint enable`.
    #[arg(long)]
    pub perf_bench: bool,
    /// Which hits/s the targets are judged on: wall-clock, or CPU seconds of
    /// the contender's whole process tree (steadier when the machine is busy).
    #[arg(long, value_enum, default_value_t = Metric::Wall)]
    pub metric: Metric,
}

/// The time a hit rate is taken over.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Wall-clock seconds, less the N = 0 run's.
    Wall,
    /// User + system CPU seconds of the contender and its children, less the N = 0 run's.
    Cpu,
}
/// Runs the bench: builds the peers, runs every contender `--repeat` times,
/// judges them and prints the table (or the JSON) on stdout.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.n == 0 || args.gdb_n == 0 {
        bail!("-n and --gdb-n must be at least 1 (they are the hits every contender must count)");
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if args.threads == 0 || args.threads > 1024 {
        bail!("--threads must be between 1 and 1024 (the target's limit)");
    }
    let gcc = find_in_path("gcc").context(
        "gcc is needed to build the bench target and the raw C peer: apt-get install gcc",
    )?;
    let dir = tempfile::Builder::new()
        .prefix("hwbreak-bench-")
        .tempdir()
        .context("cannot create a temporary directory for the bench")?;
    // From here on, SIGINT/SIGTERM/SIGHUP kill every peer and target this
    // bench started and remove `dir` before exiting (children.rs).
    children::install(dir.path(), args.keep)?;
    let env = Env::prepare(dir.path(), &gcc, &args)?;
    let load_before = read_trimmed("/proc/loadavg");

    let plan = plan(&env, &args);
    let mut results: Vec<Measured> = plan.iter().map(|c| Measured::new(c.skip.clone())).collect();
    for round in 0..args.repeat {
        for (c, m) in plan.iter().zip(results.iter_mut()) {
            if m.skip.is_some() {
                continue;
            }
            progress(&format!("round {}/{}: {}", round + 1, args.repeat, c.name));
            m.record_run(c.build(c.n), c.parse, c.n, false, args.timeout);
            if c.net_of_startup {
                m.record_run(c.build(0), c.parse, 0, true, args.timeout);
            }
        }
    }
    let load_after = read_trimmed("/proc/loadavg");
    let rows = judge(&plan, &results, args.metric);

    let perf_bench = if args.perf_bench {
        run_perf_bench(&args)
    } else {
        Vec::new()
    };
    let conditions = Conditions {
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu: cpu_model(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before: load_before,
        loadavg_after: load_after,
        n: args.n,
        gdb_n: args.gdb_n,
        threads: args.threads,
        repeat: args.repeat,
        metric: args.metric,
        watch_address: format!("{:#x}", env.addr),
    };
    if args.json {
        let out = JsonOut {
            conditions: &conditions,
            rows: &rows,
            perf_bench: &perf_bench,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_table(&conditions, &rows, &perf_bench));
    }
    children::finish();
    if args.keep {
        let path = dir.keep();
        eprintln!("hwbreak-bench: kept {}", path.display());
    }
    Ok(())
}

/// Progress goes to stderr, so that stdout stays the table or the JSON.
pub(crate) fn progress(what: &str) {
    eprintln!("hwbreak-bench: {what}");
}
