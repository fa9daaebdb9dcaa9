//! The command line, as clap derive types. Help text is the user's manual:
//! each subcommand's `after_help` has examples that work on the bundled demo.

use clap::{Args, Parser, Subcommand};
use hwbreak_linux::watch::{check_stack_bytes, Callchain};
use std::path::PathBuf;

const TOP_EXAMPLES: &str = "\
Examples:
  # Who writes STATE.hits, from where, and what value? (the bundled demo)
  hwbreak watch --values STATE.hits -- ./target/release/hwbreak-demo

  # Count writes to a global of a running process, in every thread
  hwbreak stat -p 1234 counter

  # Record to a file, analyse later
  hwbreak record -o hits.hwb STATE.total -- ./target/release/hwbreak-demo
  hwbreak report hits.hwb --top 5

  # How many of the 4 debug registers are free, and who holds the others?
  hwbreak slots

SPEC is LOCATION[/LEN][:ACCESS]:
  STATE.hits            a global, a struct field (default: its whole size, writes)
  STATE.table[3]/4:rw   an array element, 4 bytes, reads or writes
  my_crate::COUNTER     a Rust static by path
  libfoo.so:counter+8   a shared library's global, plus a byte offset
  record_hit            a function: execute breakpoint (default :x for functions)
  0x601040/8:w          a raw address
  mem:0x601040/8:w      perf's form (perf defaults: 4 bytes, rw)
ACCESS is r, w, rw or x (x86 cannot watch reads alone: use rw).

Hardware has few slots (x86-64: 4 per thread); a watch longer than 8 bytes
takes several. Exit status: 0 done, 1 an error (one line on stderr), 2 bad usage.";

/// hwbreak: watch any variable by name, in every thread, without stopping the program.
#[derive(Debug, Parser)]
#[command(
    name = "hwbreak",
    version,
    about = "Watch any variable by name, in every thread, without stopping the program.",
    long_about = "Watch any variable by name, in every thread, without stopping the program.\n\n\
hwbreak programs the CPU's hardware debug registers through perf_event_open, so the \
program runs at full speed between hits and is never stopped: each hit is a sample \
(thread, time, instruction, stack) that hwbreak symbolizes and prints.",
    after_help = TOP_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print every hit as it happens: time, thread, value, where, and the stack.
    #[command(after_help = "\
Examples:
  hwbreak watch --values STATE.hits -- ./target/release/hwbreak-demo
  hwbreak watch -p 1234 counter state.count
  hwbreak watch --json --no-stack STATE.total -- ./demo > hits.jsonl
  hwbreak watch record_hit -- ./target/release/hwbreak-demo   # a function: :x
  hwbreak watch --if 'new == 0' --stop -p 1234 counter        # stop at the write that zeroes it

The program keeps running; Ctrl-C stops watching (the target is left running
when attached with -p, and killed when hwbreak launched it). The summary at the
end counts hits per watch and per thread, shows the top writer stacks, and
always shows the lost count (\"lost: 0\"): records the kernel dropped.
--json prints one JSON object per line: {\"type\":\"hit\",...} then one
{\"type\":\"summary\",...}; the schema is in docs/CLI.md.")]
    Watch(WatchArgs),
    /// Count hits exactly (counting mode: no samples, no overhead per hit beyond the trap).
    #[command(after_help = "\
Examples:
  hwbreak stat STATE.hits STATE.total -- ./target/release/hwbreak-demo
  hwbreak stat -p 1234 counter
  hwbreak stat --json table[3] -- ./counter 100 2 2")]
    Stat(StatArgs),
    /// Like watch, but store the hits in a compact file for `hwbreak report`.
    #[command(after_help = "\
Examples:
  hwbreak record -o hits.hwb STATE.hits -- ./target/release/hwbreak-demo
  hwbreak report hits.hwb

The file format is described in docs/CLI.md.")]
    Record(RecordArgs),
    /// Summarize a file made by `hwbreak record`: hits per watch and thread, top stacks.
    #[command(after_help = "\
Examples:
  hwbreak report hits.hwb
  hwbreak report hits.hwb --top 3 --json")]
    Report(ReportArgs),
    /// Show free hardware breakpoint slots, and what holds the rest.
    #[command(after_help = "\
Examples:
  hwbreak slots            # for a new process
  hwbreak slots -p 1234    # for watches on process 1234 (counts what it already holds)

Slots are probed by opening disabled breakpoints until the kernel refuses,
then closing them all: nothing is left behind.")]
    Slots(SlotsArgs),
}

/// Which threads to watch, and what.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Watch every thread of this running process (and threads it creates later).
    #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with_all = ["tid", "all_cpus"])]
    pub pid: Option<i32>,
    /// Watch one thread of a running process.
    #[arg(
        short = 't',
        long = "tid",
        value_name = "TID",
        conflicts_with = "all_cpus"
    )]
    pub tid: Option<i32>,
    /// Watch every CPU (system-wide; the only target for a kernel address: needs root, and a kernel that allows it).
    #[arg(short = 'a', long = "all-cpus")]
    pub all_cpus: bool,
    // The brackets below are --help text (clap prints the doc comment as it
    // is), not intra-doc links: escaping them would print the backslashes.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// What to watch: LOCATION[/LEN][:ACCESS], e.g. STATE.hits, table[3]/4:rw, 0x601040/8:w.
    #[arg(value_name = "SPEC", required = true)]
    pub specs: Vec<String>,
    /// Launch this command and watch it from its first instruction. With a SPEC in a
    /// shared library (libfoo.so:x, or a name the executable does not define), from its
    /// entry point instead: writes made before it, by ld.so and library constructors,
    /// are not seen.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `hwbreak watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Target and SPECs.
    #[command(flatten)]
    pub target: TargetArgs,
    /// JSON lines on stdout: one object per hit, then a summary object.
    #[arg(long)]
    pub json: bool,
    /// How call stacks are collected.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Read the watched bytes after each hit and show old → new.
    #[arg(long)]
    pub values: bool,
    /// Top writer stacks shown in the summary.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
    /// Show only the hits for which EXPR holds, evaluated in the kernel at
    /// each hit (the program never stops for it): old, new, tid, ip, hits,
    /// func == "name", with == != < <= > >= && || ! and parentheses, e.g.
    /// 'new == 0', 'new < old && tid != 1234'. The summary counts every hit
    /// and the matches. Needs root or CAP_BPF + CAP_PERFMON.
    #[arg(long = "if", value_name = "EXPR")]
    pub cond: Option<String>,
    /// Stop the whole process right after the first matching write (the
    /// first write, without --if), print where, and leave it stopped for a
    /// debugger (`gdb -p PID`).
    #[arg(long)]
    pub stop: bool,
    /// Also trace the threads' taken branches with the CPU's branch-tracing
    /// hardware (intel_bts, intel_pt, LBR). Not read on Linux yet: refused,
    /// saying what this machine has.
    #[arg(long)]
    pub branches: bool,
}

/// How `watch` and `record` collect each hit's call stack.
#[derive(Debug, Args, Clone, Copy)]
pub struct StackArgs {
    /// Do not collect or print call stacks.
    #[arg(long, conflicts_with_all = ["stack_bytes", "kernel_stack"])]
    pub no_stack: bool,
    /// Bytes of user stack copied at each hit, in which hwbreak walks the
    /// frame pointers (a multiple of 8, at most 65528). Frames above the copy
    /// are cut, and the output says so; more bytes cost more per hit.
    #[arg(long, value_name = "BYTES", default_value_t = Callchain::DEFAULT_STACK_BYTES,
          value_parser = parse_stack_bytes)]
    pub stack_bytes: u32,
    /// Let the kernel walk the frame pointers instead: every frame, never cut,
    /// but about 0.5 µs more per hit (its walk faults at the outermost frame).
    #[arg(long, conflicts_with = "stack_bytes")]
    pub kernel_stack: bool,
}

impl StackArgs {
    /// The library's callchain mode for these flags.
    pub fn callchain(&self) -> Callchain {
        if self.no_stack {
            Callchain::Off
        } else if self.kernel_stack {
            Callchain::Kernel
        } else {
            Callchain::Copied {
                stack_bytes: self.stack_bytes,
            }
        }
    }
}

fn parse_stack_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (e.g. 512, 2048)"))?;
    check_stack_bytes(n)?;
    Ok(n)
}

/// `hwbreak stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// Target and SPECs.
    #[command(flatten)]
    pub target: TargetArgs,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `hwbreak record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Target and SPECs.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How call stacks are collected.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Read the watched bytes after each hit.
    #[arg(long)]
    pub values: bool,
    /// Also trace the threads' taken branches with the CPU's branch-tracing
    /// hardware (intel_bts, intel_pt, LBR). Not read on Linux yet: refused,
    /// saying what this machine has.
    #[arg(long)]
    pub branches: bool,
}

/// `hwbreak report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A file written by `hwbreak record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// How many writer stacks to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

/// `hwbreak slots`.
#[derive(Debug, Args)]
pub struct SlotsArgs {
    /// Count free slots for watches on this process.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<i32>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A command-line error as the one line every other hwbreak error is:
/// `hwbreak: <what is wrong>[; tip]; usage: <usage>; more: hwbreak <cmd> --help`.
/// clap's own rendering spans several lines and lacks the prefix. `None` for
/// what is not an error (`--help`, `--version`), which clap prints itself.
pub fn usage_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let text = e.render().to_string();
    let mut what = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if let Some(t) = line.strip_prefix("tip: ") {
            tips.push(t.to_string());
        } else if line.starts_with("For more information") {
            // Said once below, with the subcommand.
        } else {
            what.push(line.strip_prefix("error: ").unwrap_or(line).to_string());
        }
    }
    let mut out = format!("hwbreak: {}", what.join(" "));
    for t in tips {
        out.push_str("; ");
        out.push_str(&t);
    }
    if let Some(u) = &usage {
        out.push_str("; usage: ");
        out.push_str(u);
    }
    // `Usage: hwbreak watch ...` names the subcommand whose help to read.
    let cmd = usage
        .as_deref()
        .and_then(|u| u.split_whitespace().nth(1))
        .filter(|w| !w.starts_with('[') && !w.starts_with('<'));
    match cmd {
        Some(c) => out.push_str(&format!("; more: hwbreak {c} --help")),
        None => out.push_str("; more: hwbreak --help"),
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn specs_then_command_after_double_dash() {
        let c = Cli::try_parse_from([
            "hwbreak", "watch", "--values", "A.b", "c", "--", "./demo", "-x",
        ])
        .unwrap();
        let Cmd::Watch(w) = c.cmd else { panic!() };
        assert_eq!(w.target.specs, ["A.b", "c"]);
        assert_eq!(w.target.command, ["./demo", "-x"]);
        assert!(w.values);
    }

    #[test]
    fn pid_and_all_cpus_conflict() {
        assert!(Cli::try_parse_from(["hwbreak", "stat", "-p", "1", "-a", "x"]).is_err());
    }

    #[test]
    fn a_spec_is_required() {
        assert!(Cli::try_parse_from(["hwbreak", "stat", "-p", "1"]).is_err());
    }

    #[test]
    fn an_unknown_flag_is_one_line_with_the_prefix_the_usage_and_where_help_is() {
        let e = Cli::try_parse_from(["hwbreak", "watch", "--bogus", "x"]).unwrap_err();
        let l = usage_line(&e).unwrap();
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.starts_with("hwbreak: unexpected argument '--bogus' found"),
            "{l}"
        );
        assert!(l.contains("; usage: hwbreak watch"), "{l}");
        assert!(l.ends_with("; more: hwbreak watch --help"), "{l}");
    }

    #[test]
    fn a_missing_spec_is_one_line_naming_it() {
        let e = Cli::try_parse_from(["hwbreak", "watch"]).unwrap_err();
        let l = usage_line(&e).unwrap();
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.starts_with("hwbreak: the following required arguments were not provided: <SPEC>..."),
            "{l}"
        );
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [["hwbreak", "--help"], ["hwbreak", "--version"]] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(usage_line(&e), None);
        }
    }
}
