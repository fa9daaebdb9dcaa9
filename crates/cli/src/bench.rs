//! `hwbreak bench`: hwbreak against its peers, in one run, on one target.
//!
//! Every contender watches the same thing: writes to the 8-byte global
//! `counter` of `benches/peers/target.c`, which writes it exactly N times and
//! exits. The peers' sources are embedded in this binary, compiled with `gcc`
//! into a temporary directory, and run as child processes, hwbreak included
//! (as subcommands of this very binary, `std::env::current_exe()`):
//!
//! | contender | what it does | the issue's target |
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

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The target, embedded so that the bench runs from an installed binary.
const TARGET_C: &str = include_str!("../../../benches/peers/target.c");
/// The baseline peer.
const RAW_COUNT_C: &str = include_str!("../../../benches/peers/raw_count.c");
/// gdb's auto-continue watch script.
const GDB_SCRIPT: &str = include_str!("../../../benches/peers/gdb_watch.gdb");
/// bpftrace counting script (`$1` = address).
const BPF_COUNT: &str = include_str!("../../../benches/peers/bpftrace_count.bt");
/// bpftrace per-hit printing script (`$1` = address).
const BPF_PRINTF: &str = include_str!("../../../benches/peers/bpftrace_printf.bt");

/// The watched global in the target.
const SYMBOL: &str = "counter";
/// Its size in bytes.
const WATCH_LEN: u32 = 8;

/// Arguments of `hwbreak bench`.
#[derive(clap::Args, Debug, Clone)]
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
    /// The hwbreak binary to measure (default: this executable).
    #[arg(long)]
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

/// Runs `hwbreak bench`.
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
    if args.keep {
        let path = dir.keep();
        eprintln!("hwbreak bench: kept {}", path.display());
    }
    Ok(())
}

/// Progress goes to stderr, so that stdout stays the table or the JSON.
fn progress(what: &str) {
    eprintln!("hwbreak bench: {what}");
}

// ---------------------------------------------------------------------------
// Preparation: compile the peers, find the address, find the tools.

/// Everything the contenders' commands need.
struct Env {
    dir: PathBuf,
    target: PathBuf,
    raw_count: PathBuf,
    addr: u64,
    hwbreak: Option<PathBuf>,
    gdb: Option<PathBuf>,
    perf: Option<PathBuf>,
    bpftrace: Option<PathBuf>,
    threads: u32,
}

impl Env {
    fn prepare(dir: &Path, gcc: &Path, args: &BenchArgs) -> Result<Env> {
        for (name, text) in [
            ("target.c", TARGET_C),
            ("raw_count.c", RAW_COUNT_C),
            ("gdb_watch.gdb", GDB_SCRIPT),
            ("bpftrace_count.bt", BPF_COUNT),
            ("bpftrace_printf.bt", BPF_PRINTF),
        ] {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
        let target = dir.join("target");
        let raw_count = dir.join("raw_count");
        // Non-PIE so that `nm` gives the run-time address perf and bpftrace need;
        // -O0 keeps a frame pointer in the leaf loop for every stack walker.
        compile(
            gcc,
            &[
                "-O0",
                "-g",
                "-no-pie",
                "-fno-omit-frame-pointer",
                "-pthread",
            ],
            &dir.join("target.c"),
            &target,
        )?;
        compile(gcc, &["-O2"], &dir.join("raw_count.c"), &raw_count)?;
        let nm =
            find_in_path("nm").context("nm (binutils) is needed to find the target's address")?;
        let out = Command::new(&nm)
            .arg(&target)
            .output()
            .with_context(|| format!("cannot run {}", nm.display()))?;
        let addr = nm_address(&String::from_utf8_lossy(&out.stdout), SYMBOL)
            .with_context(|| format!("nm found no `{SYMBOL}` in {}", target.display()))?;
        let hwbreak = match &args.hwbreak {
            Some(p) => Some(p.clone()),
            None => std::env::current_exe().ok(),
        };
        Ok(Env {
            dir: dir.to_path_buf(),
            target,
            raw_count,
            addr,
            hwbreak,
            gdb: find_in_path("gdb"),
            perf: find_in_path("perf"),
            bpftrace: find_in_path("bpftrace"),
            threads: args.threads,
        })
    }
}

fn compile(gcc: &Path, flags: &[&str], src: &Path, out: &Path) -> Result<()> {
    let o = Command::new(gcc)
        .args(flags)
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .with_context(|| format!("cannot run {}", gcc.display()))?;
    if !o.status.success() {
        bail!(
            "gcc failed to build {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// The address of `symbol` in `nm` output (`ADDR TYPE NAME` lines).
fn nm_address(nm_out: &str, symbol: &str) -> Option<u64> {
    nm_out.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (a, _t, s) = (it.next()?, it.next()?, it.next()?);
        (s == symbol)
            .then(|| u64::from_str_radix(a, 16).ok())
            .flatten()
    })
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map_or_else(|e| format!("({path}: {e})"), |s| s.trim().to_string())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or_else(|| "unknown".to_string(), |m| m.trim().to_string());
    let vm = if info
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"))
    {
        " (virtual machine)"
    } else {
        ""
    };
    format!("{model}{vm}")
}

// ---------------------------------------------------------------------------
// The contenders.

/// One command of a contender's run.
#[derive(Debug, Clone)]
struct Step {
    argv: Vec<OsString>,
    /// Counted in the contender's time (a setup step, such as `record` before
    /// `report`, is not).
    timed: bool,
    /// Stdout lines for which this returns true are counted (as hits).
    count_line: Option<fn(&str) -> bool>,
}

impl Step {
    fn timed(argv: Vec<OsString>) -> Step {
        Step {
            argv,
            timed: true,
            count_line: None,
        }
    }
    fn counting(argv: Vec<OsString>, f: fn(&str) -> bool) -> Step {
        Step {
            argv,
            timed: true,
            count_line: Some(f),
        }
    }
    fn setup(argv: Vec<OsString>) -> Step {
        Step {
            argv,
            timed: false,
            count_line: None,
        }
    }
    fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                let s = a.to_string_lossy();
                if s.contains(' ') || s.contains('\'') {
                    format!("'{}'", s.replace('\'', "'\\''"))
                } else {
                    s.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a run's output says.
#[derive(Debug, Clone, Default, PartialEq)]
struct Count {
    hits: u64,
    /// Records the contender says it lost (None: it does not say).
    lost: Option<u64>,
    note: Option<String>,
}

impl Count {
    /// Hits from a contender that says nothing of losses.
    fn exact(hits: u64) -> Count {
        Count {
            hits,
            lost: None,
            note: None,
        }
    }
}

/// What came out of one step.
#[derive(Debug, Default)]
struct StepOutput {
    /// Lines matched by the step's `count_line`.
    counted: u64,
    /// The whole stdout when it is small, else its first and last lines.
    stdout: String,
    stderr: String,
    success: bool,
    status: String,
    /// User + system CPU seconds of the step's whole process tree.
    cpu: f64,
}

/// How a contender is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    /// The reference every ratio is taken against.
    Baseline,
    /// This row's hits/s ≥ factor × raw C's.
    RateVsRaw(f64),
    /// The named hwbreak row's hits/s ≥ factor × this peer's.
    HwbreakFaster(&'static str, f64),
    /// The same, for a peer that may drop hits (bpftrace's perf buffer
    /// overflows): its rate is taken over the hits it delivered, net of its
    /// start-up, so that losing hits never makes it look fast. A lossy run is
    /// still marked (`PASS lossy`, `MISS lossy`) and its loss is in the note.
    HwbreakFasterPerDelivered(&'static str, f64),
    /// The named hwbreak row's end-to-end time ≤ this peer's (same N).
    HwbreakNoSlowerEndToEnd(&'static str),
    /// This row's end-to-end time ≤ seconds.
    MaxSeconds(f64),
    /// No target in the issue: shown for information.
    Info,
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::Baseline => "baseline".into(),
            Goal::RateVsRaw(f) => format!(">= {f}x raw C"),
            Goal::HwbreakFaster(hw, f) => format!("{hw} >= {f}x this"),
            Goal::HwbreakFasterPerDelivered(hw, f) => {
                format!("{hw} >= {f}x this per delivered hit")
            }
            Goal::HwbreakNoSlowerEndToEnd(hw) => format!("{hw} e2e <= this"),
            Goal::MaxSeconds(s) => format!("<= {s} s"),
            Goal::Info => "(none)".into(),
        }
    }
}

type Parser = fn(&[StepOutput]) -> std::result::Result<Count, String>;

/// One row of the bench: how to run it for N writes and how to read it.
struct Contender {
    name: &'static str,
    n: u64,
    build: Box<dyn Fn(u64) -> Vec<Step>>,
    parse: Parser,
    goal: Goal,
    /// Subtract the N = 0 run's time before computing hits/s.
    net_of_startup: bool,
    /// Why it cannot run here.
    skip: Option<String>,
}

impl Contender {
    fn build(&self, n: u64) -> Vec<Step> {
        (self.build)(n)
    }
}

/// hwbreak's rows, named so that the peers' goals can refer to them.
const HW_STAT: &str = "hwbreak stat";
const HW_WATCH: &str = "hwbreak watch --json";

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

fn plan(env: &Env, args: &BenchArgs) -> Vec<Contender> {
    let addr_hex = format!("{:x}", env.addr);
    let mut v = Vec::new();

    // The baseline.
    {
        let (raw, a, targ) = (
            env.raw_count.clone(),
            addr_hex.clone(),
            env.clone_target_fn(),
        );
        v.push(Contender {
            name: "raw-c",
            n: args.n,
            build: Box::new(move |n| {
                let mut argv = vec![os(&raw), os(&a), os(WATCH_LEN.to_string()), os("--")];
                argv.extend(targ(n));
                vec![Step::timed(argv)]
            }),
            parse: parse_raw_count,
            goal: Goal::Baseline,
            net_of_startup: true,
            skip: None,
        });
    }

    // hwbreak itself.
    let hw_skip = match &env.hwbreak {
        None => Some(
            "cannot find this executable (std::env::current_exe failed); pass --hwbreak PATH"
                .to_string(),
        ),
        Some(p) if !p.exists() => Some(format!("{} does not exist", p.display())),
        Some(_) => None,
    };
    let hw = env.hwbreak.clone().unwrap_or_default();
    {
        let (hw, targ) = (hw.clone(), env.clone_target_fn());
        v.push(Contender {
            name: HW_STAT,
            n: args.n,
            build: Box::new(move |n| {
                let mut argv = vec![os(&hw), os("stat"), os("--json"), os(SYMBOL), os("--")];
                argv.extend(targ(n));
                vec![Step::timed(argv)]
            }),
            parse: parse_hwbreak_stat,
            goal: Goal::RateVsRaw(0.97),
            net_of_startup: true,
            skip: hw_skip.clone(),
        });
    }
    {
        let (hw, targ) = (hw.clone(), env.clone_target_fn());
        v.push(Contender {
            name: HW_WATCH,
            n: args.n,
            build: Box::new(move |n| {
                let mut argv = vec![os(&hw), os("watch"), os("--json"), os(SYMBOL), os("--")];
                argv.extend(targ(n));
                vec![Step::counting(argv, is_watch_hit_line)]
            }),
            parse: parse_hwbreak_watch,
            goal: Goal::RateVsRaw(0.85),
            net_of_startup: true,
            skip: hw_skip.clone(),
        });
    }
    {
        let (hw, targ) = (hw.clone(), env.clone_target_fn());
        let file = env.dir.join("hwbreak.rec");
        v.push(Contender {
            name: "hwbreak report",
            n: args.n,
            build: Box::new(move |n| {
                let mut rec = vec![
                    os(&hw),
                    os("record"),
                    os("-o"),
                    os(&file),
                    os(SYMBOL),
                    os("--"),
                ];
                rec.extend(targ(n));
                let report = vec![
                    os(&hw),
                    os("report"),
                    os(&file),
                    os("--json"),
                    os("--top"),
                    os("10"),
                ];
                vec![Step::setup(rec), Step::timed(report)]
            }),
            parse: parse_hwbreak_report,
            goal: Goal::MaxSeconds(2.0),
            net_of_startup: false,
            skip: hw_skip,
        });
    }

    // gdb.
    {
        let (gdb, script, targ) = (
            env.gdb.clone(),
            env.dir.join("gdb_watch.gdb"),
            env.clone_target_fn(),
        );
        v.push(Contender {
            name: "gdb watch",
            n: args.gdb_n,
            skip: gdb
                .is_none()
                .then(|| "gdb not found in PATH (apt-get install gdb)".to_string()),
            build: Box::new(move |n| {
                let mut argv = vec![
                    os(gdb.clone().unwrap_or_default()),
                    os("-nx"),
                    os("-batch"),
                    os("-x"),
                    os(&script),
                    os("--args"),
                ];
                argv.extend(targ(n));
                vec![Step::timed(argv)]
            }),
            parse: parse_gdb,
            goal: Goal::HwbreakFaster(HW_WATCH, 20.0),
            net_of_startup: true,
        });
    }

    // perf record + perf script.
    {
        let (perf, data, targ) = (
            env.perf.clone(),
            env.dir.join("perf.data"),
            env.clone_target_fn(),
        );
        let event = format!("mem:0x{addr_hex}/{WATCH_LEN}:w");
        v.push(Contender {
            name: "perf record+script",
            n: args.n,
            skip: perf
                .is_none()
                .then(|| "perf not found in PATH (apt-get install linux-perf)".to_string()),
            build: Box::new(move |n| {
                let perf = os(perf.clone().unwrap_or_default());
                let mut rec = vec![
                    perf.clone(),
                    os("record"),
                    os("-q"),
                    os("-e"),
                    os(&event),
                    os("-g"),
                    os("-o"),
                    os(&data),
                    os("--"),
                ];
                rec.extend(targ(n));
                let script = vec![
                    perf,
                    os("script"),
                    os("-i"),
                    os(&data),
                    os("-F"),
                    os("comm,tid,time,event,ip,sym"),
                ];
                vec![
                    Step::timed(rec),
                    Step::counting(script, is_perf_script_sample),
                ]
            }),
            parse: parse_perf,
            goal: Goal::HwbreakNoSlowerEndToEnd(HW_WATCH),
            net_of_startup: false,
        });
    }

    // bpftrace.
    // bpftrace's perf buffer is 64 pages per CPU by default; with one line and
    // a stack per hit it overflows, so the printing peer also runs with a big
    // buffer (BPFTRACE_PERF_RB_PAGES), the best a user can do.
    for (name, script, parse, goal, count_line, rb_pages) in [
        (
            "bpftrace count",
            "bpftrace_count.bt",
            parse_bpftrace_count as Parser,
            Goal::Info,
            None,
            None,
        ),
        (
            "bpftrace printf",
            "bpftrace_printf.bt",
            parse_bpftrace_printf as Parser,
            Goal::HwbreakFasterPerDelivered(HW_WATCH, 1.0),
            Some(is_bpftrace_hit_line as fn(&str) -> bool),
            None,
        ),
        (
            "bpftrace printf 4096pg",
            "bpftrace_printf.bt",
            parse_bpftrace_printf as Parser,
            Goal::HwbreakFasterPerDelivered(HW_WATCH, 1.0),
            Some(is_bpftrace_hit_line as fn(&str) -> bool),
            Some(4096),
        ),
    ] {
        let (bt, script, targ) = (
            env.bpftrace.clone(),
            env.dir.join(script),
            env.clone_target_fn(),
        );
        let addr = format!("0x{addr_hex}");
        v.push(Contender {
            name,
            n: args.n,
            skip: bt
                .is_none()
                .then(|| "bpftrace not found in PATH (apt-get install bpftrace)".to_string()),
            build: Box::new(move |n| {
                // bpftrace -c takes one string and splits it on spaces; the
                // temporary directory's path has none.
                let cmd = targ(n)
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut argv = Vec::new();
                if let Some(pages) = rb_pages {
                    argv.extend([os("env"), os(format!("BPFTRACE_PERF_RB_PAGES={pages}"))]);
                }
                argv.extend([
                    os(bt.clone().unwrap_or_default()),
                    os(&script),
                    os(&addr),
                    os("-c"),
                    os(cmd),
                ]);
                vec![Step {
                    argv,
                    timed: true,
                    count_line,
                }]
            }),
            parse,
            goal,
            net_of_startup: true,
        });
    }

    if !args.only.is_empty() {
        v.retain(|c| c.name == "raw-c" || args.only.iter().any(|w| c.name.contains(w.as_str())));
    }
    v
}

impl Env {
    /// A closure giving the target's argv for n writes (owned, for the builders).
    fn clone_target_fn(&self) -> impl Fn(u64) -> Vec<OsString> + 'static {
        let (target, threads) = (self.target.clone(), self.threads);
        move |n| {
            vec![
                target.clone().into(),
                n.to_string().into(),
                threads.to_string().into(),
            ]
        }
    }
}

// ---------------------------------------------------------------------------
// Parsers: each reads a contender's own output and says how many hits it saw.

/// The failure of the first step that failed: its status and the first and
/// last lines of what it said (clap and perf put the reason first, gdb last).
fn first_error(outs: &[StepOutput]) -> Option<String> {
    outs.iter().find(|o| !o.success).map(|o| {
        let msg = if o.stderr.trim().is_empty() {
            &o.stdout
        } else {
            &o.stderr
        };
        let lines: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let said = match lines.as_slice() {
            [] => "(no output)".to_string(),
            [one] => (*one).to_string(),
            [first, .., last] => format!("{first} ... {last}"),
        };
        format!("{}: {}", o.status, clip(&said))
    })
}

/// `raw_count`: `hits=N seconds=S status=C`.
fn parse_raw_count(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let hits = outs[0]
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hits="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no hits= in raw_count output: {:?}", outs[0].stdout))?;
    Ok(Count::exact(hits))
}

/// All JSON objects found one per line in `text`.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The first unsigned integer under any of `keys`, searching `v` depth first.
fn find_u64(v: &serde_json::Value, keys: &[&str]) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => keys
            .iter()
            .find_map(|k| m.get(*k).and_then(|x| x.as_u64()))
            .or_else(|| m.values().find_map(|x| find_u64(x, keys))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_u64(x, keys)),
        _ => None,
    }
}

/// Is this a summary object (as opposed to a hit) of `hwbreak watch --json`?
fn is_summary(v: &serde_json::Value) -> bool {
    v.get("lost").is_some()
        || v.get("summary").is_some()
        || v.get("type").and_then(|t| t.as_str()) == Some("summary")
}

/// The JSON of an hwbreak `--json` output (one document, or JSON lines) and
/// the first hit total in it; `what` names the command for the error.
fn json_total(
    text: &str,
    what: &str,
) -> std::result::Result<(Vec<serde_json::Value>, u64), String> {
    let text = text.trim();
    let values = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => vec![v],
        Err(_) => json_lines(text),
    };
    let hits = values
        .iter()
        .find_map(|v| find_u64(v, &["total", "hits", "count"]))
        .ok_or_else(|| format!("no hit total in `{what}` output: {:?}", clip(text)))?;
    Ok((values, hits))
}

/// `hwbreak stat --json`: the whole output as JSON (or JSON lines), total hits.
fn parse_hwbreak_stat(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let (_, hits) = json_total(&outs[0].stdout, "hwbreak stat --json")?;
    Ok(Count::exact(hits))
}

/// A stdout line of `hwbreak watch --json` that is a hit object
/// (`{"type":"hit",...}`, docs/CLI.md).
fn is_watch_hit_line(line: &str) -> bool {
    line.trim_start().starts_with('{') && line.contains("\"type\":\"hit\"")
}

/// `hwbreak watch --json`: hit lines counted while streaming, lost from the summary.
fn parse_hwbreak_watch(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let summary = json_lines(&outs[0].stdout)
        .into_iter()
        .rev()
        .find(is_summary);
    let Some(summary) = summary else {
        return Err(format!(
            "`hwbreak watch --json` printed no summary object (with \"lost\"): {:?}",
            clip(&outs[0].stdout)
        ));
    };
    let lost = find_u64(&summary, &["lost"]);
    Ok(Count {
        hits: outs[0].counted,
        lost,
        note: None,
    })
}

/// `hwbreak report --json`: the total hits in the file.
fn parse_hwbreak_report(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let (values, hits) = json_total(&outs[1].stdout, "hwbreak report --json")?;
    let lost = values.iter().find_map(|v| find_u64(v, &["lost"]));
    Ok(Count {
        hits,
        lost,
        note: None,
    })
}

/// gdb: `breakpoint already hit N time(s)` from `info watchpoints`.
fn parse_gdb(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let o = &outs[0];
    if !o.stdout.contains("exited normally") {
        return Err(format!(
            "gdb: the target did not exit normally: {:?}",
            clip(&o.stdout)
        ));
    }
    let hits = o
        .stdout
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("breakpoint already hit ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        // gdb prints no "already hit" line for a watchpoint that never fired.
        .unwrap_or(0);
    Ok(Count::exact(hits))
}

/// A `perf script -F comm,tid,time,event,ip,sym` sample header line (the
/// callchain lines below it are indented).
fn is_perf_script_sample(line: &str) -> bool {
    !line.starts_with(char::is_whitespace) && line.contains(" mem:0x")
}

/// perf: samples printed by `perf script`, lost chunks from either step.
fn parse_perf(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let lost = outs.iter().flat_map(|o| o.stderr.lines()).find_map(|l| {
        // "Processed N events and lost M chunks!"
        let i = l.find(" and lost ")?;
        l[i + 10..].split_whitespace().next()?.parse::<u64>().ok()
    });
    Ok(Count {
        hits: outs[1].counted,
        lost: Some(lost.unwrap_or(0)),
        note: None,
    })
}

/// bpftrace `count()`: `@hits: N` (absent when nothing hit).
fn parse_bpftrace_count(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let hits = outs[0]
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("@hits:")?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Count::exact(hits))
}

fn is_bpftrace_hit_line(line: &str) -> bool {
    line.starts_with("hit tid=")
}

/// bpftrace printf: `hit ...` lines; `Lost N events` lines sum to the loss.
fn parse_bpftrace_printf(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    // The lost lines are counted in the streamed output too (see run_step).
    let lost = outs[0]
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("#lost-total ")?.parse().ok())
        .unwrap_or(0);
    Ok(Count {
        hits: outs[0].counted,
        lost: Some(lost),
        note: None,
    })
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

// ---------------------------------------------------------------------------
// Running.

/// Keeps at most this many bytes of a step's stdout head and tail (the hit
/// streams of `watch --json` or `perf script` are counted, not stored).
const KEEP_BYTES: usize = 64 * 1024;

/// Runs one step, streaming its stdout; returns its output and wall time.
fn run_step(step: &Step, timeout: Duration) -> Result<(StepOutput, Duration)> {
    let (prog, rest) = step.argv.split_first().context("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills gdb's or perf's child too.
        .process_group(0);
    let cpu_before = children_cpu_seconds();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", step.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let count_line = step.count_line;
    let out_thread = std::thread::spawn(move || read_stdout(stdout, count_line));
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(4 * 1024 * 1024).read_to_end(&mut buf);
        // Drain whatever is left so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    });
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on the process group we created for this child;
            // the group leader is not reaped until wait() below returns.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            return true;
        }
        false
    });
    let status = child.wait().context("wait for a contender")?;
    let elapsed = start.elapsed();
    // One step runs at a time, so the growth of our reaped children's CPU time
    // is this step's (its descendants are included once it reaped them).
    let cpu = children_cpu_seconds() - cpu_before;
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let (counted, stdout) = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let status_text = if timed_out {
        format!("killed after the {} s timeout", timeout.as_secs())
    } else {
        status.to_string()
    };
    Ok((
        StepOutput {
            counted,
            stdout,
            stderr,
            success: status.success() && !timed_out,
            status: status_text,
            cpu,
        },
        elapsed,
    ))
}

/// User + system CPU seconds of every child this process has reaped.
fn children_cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the buffer we own; it cannot
    // fail with RUSAGE_CHILDREN and a valid pointer.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Reads a child's stdout to the end: counts matching lines, keeps head and
/// tail, and sums bpftrace's `Lost N events` lines into a `#lost-total` line.
fn read_stdout(stdout: impl Read, count_line: Option<fn(&str) -> bool>) -> (u64, String) {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    let mut line = Vec::new();
    let (mut counted, mut lost) = (0u64, 0u64);
    let mut head = String::new();
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut tail_bytes = 0usize;
    let mut truncated = false;
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if count_line.is_some_and(|f| f(&text)) {
            counted += 1;
        }
        if let Some(n) = text
            .strip_prefix("Lost ")
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        {
            lost += n;
        }
        if head.len() + text.len() <= KEEP_BYTES {
            head.push_str(&text);
            continue;
        }
        truncated = true;
        tail_bytes += text.len();
        tail.push_back(text.into_owned());
        while tail_bytes > KEEP_BYTES {
            if let Some(old) = tail.pop_front() {
                tail_bytes -= old.len();
            }
        }
    }
    let mut out = head;
    if truncated {
        out.push_str("...\n");
    }
    for t in tail {
        out.push_str(&t);
    }
    if lost > 0 {
        let _ = writeln!(out, "#lost-total {lost}");
    }
    (counted, out)
}

/// Every run of one contender.
#[derive(Debug)]
struct Measured {
    skip: Option<String>,
    /// Why runs (N or N = 0) failed: a crash, a timeout, unreadable output.
    failures: Vec<String>,
    command: String,
    count: Option<Count>,
    /// Fastest timed seconds of the N runs.
    best: Option<f64>,
    /// Fastest timed seconds of the N = 0 runs.
    startup: Option<f64>,
    /// Least CPU seconds (timed steps) of the N runs.
    best_cpu: Option<f64>,
    /// Least CPU seconds of the N = 0 runs.
    startup_cpu: Option<f64>,
    /// Untimed setup seconds of the fastest run (e.g. `record` before `report`).
    setup: Option<f64>,
    /// Every completed N run: (hits delivered, timed seconds, CPU seconds),
    /// for rates per delivered hit (each run's hits over that run's time).
    delivered: Vec<(u64, f64, f64)>,
    runs: u32,
}

impl Measured {
    fn new(skip: Option<String>) -> Measured {
        Measured {
            skip,
            failures: Vec::new(),
            command: String::new(),
            count: None,
            best: None,
            startup: None,
            best_cpu: None,
            startup_cpu: None,
            setup: None,
            delivered: Vec::new(),
            runs: 0,
        }
    }

    fn record_run(&mut self, steps: Vec<Step>, parse: Parser, n: u64, startup: bool, timeout: u64) {
        let mut outs = Vec::new();
        let (mut timed, mut setup, mut cpu) = (0.0, 0.0, 0.0);
        for s in &steps {
            match run_step(s, Duration::from_secs(timeout)) {
                Ok((o, d)) => {
                    if s.timed {
                        timed += d.as_secs_f64();
                        cpu += o.cpu;
                    } else {
                        setup += d.as_secs_f64();
                    }
                    let failed = !o.success;
                    outs.push(o);
                    if failed {
                        break;
                    }
                }
                Err(e) => {
                    self.failures.push(format!("{e:#}"));
                    return;
                }
            }
        }
        let count = match parse(&outs) {
            Ok(c) => c,
            Err(e) => {
                self.failures.push(if startup {
                    format!("(N = 0 run) {e}")
                } else {
                    e
                });
                return;
            }
        };
        if startup {
            if count.hits != 0 {
                self.failures.push(format!(
                    "counted {} hits when the target wrote nothing (N = 0)",
                    count.hits
                ));
                return;
            }
            self.startup = Some(self.startup.map_or(timed, |b: f64| b.min(timed)));
            self.startup_cpu = Some(self.startup_cpu.map_or(cpu, |b: f64| b.min(cpu)));
            return;
        }
        self.runs += 1;
        if self.command.is_empty() {
            self.command = steps
                .iter()
                .map(Step::display)
                .collect::<Vec<_>>()
                .join(" && ");
        }
        self.delivered.push((count.hits, timed, cpu));
        // A miscount in any round is kept: it is a miscount.
        let wrong = |c: &Count| c.hits != n || c.lost.unwrap_or(0) > 0;
        if !self.count.as_ref().is_some_and(wrong) {
            self.count = Some(count);
        }
        self.best_cpu = Some(self.best_cpu.map_or(cpu, |b: f64| b.min(cpu)));
        if self.best.is_none_or(|b| timed < b) {
            self.best = Some(timed);
            self.setup = Some(setup);
        }
    }
}

// ---------------------------------------------------------------------------
// Judging and printing.

/// One line of the result.
#[derive(Debug, Clone, Serialize)]
struct Row {
    contender: String,
    command: String,
    /// Writes the target made: the hits a correct contender counts.
    n: u64,
    hits: Option<u64>,
    lost: Option<u64>,
    /// The share of the N writes this row did not deliver as hits (reported
    /// lost or vanished), when it delivered fewer than N.
    lost_share: Option<f64>,
    /// This row lost hits and its hits/s (and CPU rate) are over the hits it
    /// delivered, not over N: the per-delivered-hit comparison of
    /// [`Goal::HwbreakFasterPerDelivered`].
    per_delivered_hit: bool,
    /// End-to-end seconds of the fastest run (timed steps only).
    seconds: Option<f64>,
    /// Seconds of the fastest N = 0 run, subtracted for hits/s.
    startup_seconds: Option<f64>,
    /// Untimed setup (e.g. `hwbreak record` before `hwbreak report`).
    setup_seconds: Option<f64>,
    hits_per_sec: Option<f64>,
    ratio_vs_raw: Option<f64>,
    /// CPU seconds (user + system, whole process tree) of the least-CPU run.
    cpu_seconds: Option<f64>,
    /// CPU seconds of the N = 0 run.
    startup_cpu_seconds: Option<f64>,
    hits_per_cpu_sec: Option<f64>,
    cpu_ratio_vs_raw: Option<f64>,
    /// A WRONG row's (wall, CPU) rates over N: used only to compare hwbreak
    /// with a peer that miscounted, a comparison that favours the peer.
    #[serde(skip)]
    wrong_rate: (Option<f64>, Option<f64>),
    /// The issue's target for this row.
    target: String,
    /// The figure the target is checked on (a ratio, or seconds for `<= s`).
    value: Option<f64>,
    /// PASS, MISS (`*`: against a miscounting peer; ` lossy`: against a peer
    /// that lost hits, per delivered hit), WRONG (miscount or loss), FLAKY
    /// (some runs failed), ERROR, SKIP, baseline, or n/a.
    verdict: String,
    note: Option<String>,
    runs: u32,
}

fn judge(plan: &[Contender], results: &[Measured], metric: Metric) -> Vec<Row> {
    let mut rows: Vec<Row> = plan
        .iter()
        .zip(results)
        .map(|(c, m)| base_row(c, m))
        .collect();
    let rate = |r: &Row| match metric {
        Metric::Wall => r.hits_per_sec,
        Metric::Cpu => r.hits_per_cpu_sec,
    };
    let rate_of = |rows: &[Row], name: &str| {
        rows.iter()
            .find(|r| r.contender == name && r.verdict != "WRONG")
            .and_then(rate)
    };
    let secs_of = |rows: &[Row], name: &str| {
        rows.iter()
            .find(|r| r.contender == name && r.verdict != "WRONG")
            .and_then(|r| r.seconds.map(|s| (s, r.n)))
    };
    let raw = rate_of(&rows, "raw-c");
    for i in 0..rows.len() {
        let goal = plan[i].goal;
        let peer_goal = matches!(
            goal,
            Goal::HwbreakFaster(..) | Goal::HwbreakNoSlowerEndToEnd(_)
        );
        // A peer that miscounted did less work than N hits in its time, so
        // hwbreak can still be compared with it, marked `*`.
        let starred = rows[i].verdict == "WRONG" && peer_goal;
        // A peer judged per delivered hit that lost some: compared on the
        // rate of the hits it delivered (set in base_row), marked `lossy`.
        let lossy = rows[i].per_delivered_hit;
        if !rows[i].verdict.is_empty() && !starred && !lossy {
            continue;
        }
        let mut own = rows[i].clone();
        if starred {
            (own.hits_per_sec, own.hits_per_cpu_sec) = own.wrong_rate;
        }
        let row = &own;
        let (value, pass, missing) = match goal {
            Goal::Baseline => (None, None, None),
            Goal::RateVsRaw(f) => match (rate(row), raw) {
                (Some(r), Some(b)) => (Some(r / b), Some(r / b >= f), None),
                _ => (None, None, Some("raw-c")),
            },
            Goal::HwbreakFaster(hw, f) | Goal::HwbreakFasterPerDelivered(hw, f) => {
                match (rate_of(&rows, hw), rate(row)) {
                    (Some(h), Some(r)) => (Some(h / r), Some(h / r >= f), None),
                    _ => (None, None, Some(hw)),
                }
            }
            Goal::HwbreakNoSlowerEndToEnd(hw) => match (secs_of(&rows, hw), row.seconds) {
                (Some((h, hn)), Some(s)) if hn == row.n => (Some(s / h), Some(h <= s), None),
                _ => (None, None, Some(hw)),
            },
            Goal::MaxSeconds(max) => (row.seconds, row.seconds.map(|s| s <= max), None),
            Goal::Info => (None, None, None),
        };
        let mark = match (starred, lossy) {
            (true, _) => "*",
            (_, true) => " lossy",
            _ => "",
        };
        let verdict = match (goal, pass) {
            (Goal::Baseline, _) => "baseline".to_string(),
            (Goal::Info, _) => "info".to_string(),
            (_, Some(true)) => format!("PASS{mark}"),
            (_, Some(false)) => format!("MISS{mark}"),
            (_, None) if starred || lossy => "WRONG".to_string(),
            (_, None) => "n/a".to_string(),
        };
        rows[i].value = value;
        if starred && pass.is_some() {
            add_note(
                &mut rows[i].note,
                "*: judged against this peer anyway: it did less work than N hits in its time, which favours it".into(),
            );
        }
        if let (true, Some(v)) = (lossy, value) {
            add_note(
                &mut rows[i].note,
                format!(
                    "lossy: delivered {} of {} hits ({:.1}% lost), so judged per delivered hit: its hits/s = hits delivered / (e2e s - start s) of its best run, and {} is {v:.2}x that",
                    row.hits.unwrap_or(0),
                    row.n,
                    100.0 * row.lost_share.unwrap_or(0.0),
                    goal_hwbreak_row(goal).unwrap_or("hwbreak"),
                ),
            );
        }
        // A row whose runs failed in some rounds (a crash, such as bpftrace's
        // RLIMIT_MEMLOCK or read_symlink aborts) is FLAKY, whatever its
        // figures, and keeps its `lossy` mark; a miscount that could not be
        // compared (WRONG), or a starred comparison, says more.
        rows[i].verdict = if results[i].failures.is_empty() || starred || verdict == "WRONG" {
            verdict
        } else if lossy {
            "FLAKY lossy".to_string()
        } else {
            "FLAKY".to_string()
        };
        if let Some(m) = missing {
            add_note(
                &mut rows[i].note,
                format!("no valid `{m}` figure to compare with"),
            );
        }
    }
    let raw_row = rows
        .iter()
        .find(|r| r.contender == "raw-c" && r.verdict == "baseline");
    let (raw_wall, raw_cpu) = (
        raw_row.and_then(|r| r.hits_per_sec),
        raw_row.and_then(|r| r.hits_per_cpu_sec),
    );
    for r in rows.iter_mut() {
        r.ratio_vs_raw = r.hits_per_sec.zip(raw_wall).map(|(h, b)| h / b);
        r.cpu_ratio_vs_raw = r.hits_per_cpu_sec.zip(raw_cpu).map(|(h, b)| h / b);
    }
    rows
}

/// The hwbreak row a peer's goal compares with.
fn goal_hwbreak_row(goal: Goal) -> Option<&'static str> {
    match goal {
        Goal::HwbreakFaster(hw, _)
        | Goal::HwbreakFasterPerDelivered(hw, _)
        | Goal::HwbreakNoSlowerEndToEnd(hw) => Some(hw),
        _ => None,
    }
}

/// Appends `more` to a row's note.
fn add_note(note: &mut Option<String>, more: String) {
    *note = Some(match note.take() {
        Some(n) => format!("{n}; {more}"),
        None => more,
    });
}

/// The row's own figures, with the verdict set when the row cannot be
/// compared (SKIP, ERROR, WRONG) and left empty otherwise.
fn base_row(c: &Contender, m: &Measured) -> Row {
    let mut row = Row {
        contender: c.name.to_string(),
        command: if m.command.is_empty() {
            c.build(c.n)
                .iter()
                .map(Step::display)
                .collect::<Vec<_>>()
                .join(" && ")
        } else {
            m.command.clone()
        },
        n: c.n,
        hits: m.count.as_ref().map(|k| k.hits),
        lost: m.count.as_ref().and_then(|k| k.lost),
        lost_share: None,
        per_delivered_hit: false,
        seconds: m.best,
        startup_seconds: m.startup,
        setup_seconds: m.setup.filter(|s| *s > 0.0),
        hits_per_sec: None,
        ratio_vs_raw: None,
        cpu_seconds: m.best_cpu,
        startup_cpu_seconds: m.startup_cpu,
        hits_per_cpu_sec: None,
        cpu_ratio_vs_raw: None,
        wrong_rate: (None, None),
        target: c.goal.describe(),
        value: None,
        verdict: String::new(),
        note: m.count.as_ref().and_then(|k| k.note.clone()),
        runs: m.runs,
    };
    if let Some(why) = &m.skip {
        row.verdict = "SKIP".into();
        row.note = Some(why.clone());
        return row;
    }
    let Some(count) = &m.count else {
        row.verdict = "ERROR".into();
        row.note = Some(
            m.failures
                .first()
                .cloned()
                .unwrap_or_else(|| "no run completed".into()),
        );
        return row;
    };
    if let Some(first) = m.failures.first() {
        row.note = Some(format!(
            "{} run(s) failed, the figures are from the {} that did not; first failure: {first}",
            m.failures.len(),
            m.runs
        ));
    }
    if c.name != "hwbreak report" {
        if let Some(best) = m.best {
            let net = match m.startup {
                Some(st) if c.net_of_startup && best > st => best - st,
                _ => best,
            };
            row.hits_per_sec = Some(c.n as f64 / net);
        }
        if let Some(best) = m.best_cpu {
            let net = match m.startup_cpu {
                Some(st) if c.net_of_startup && best > st => best - st,
                _ => best,
            };
            if net > 0.0 {
                row.hits_per_cpu_sec = Some(c.n as f64 / net);
            }
        }
    }
    if count.hits != c.n || count.lost.unwrap_or(0) > 0 {
        // Not fast: a miscount shows no rate. The rate over the N writes it
        // was exposed to is kept aside, for a peer's comparison (see judge).
        row.wrong_rate = (row.hits_per_sec.take(), row.hits_per_cpu_sec.take());
        row.verdict = "WRONG".into();
        let mut why = format!("counted {} hits, the target wrote {}", count.hits, c.n);
        if let Some(l) = count.lost.filter(|l| *l > 0) {
            let _ = write!(why, "; reported {l} lost");
        }
        let accounted = count.hits + count.lost.unwrap_or(0);
        if accounted < c.n {
            let _ = write!(why, "; {} vanished without a loss report", c.n - accounted);
        }
        add_note(&mut row.note, why);
        if count.hits < c.n {
            row.lost_share = Some((c.n - count.hits) as f64 / c.n as f64);
        }
        if matches!(c.goal, Goal::HwbreakFasterPerDelivered(..)) && (1..c.n).contains(&count.hits) {
            (row.hits_per_sec, row.hits_per_cpu_sec) = delivered_rates(c, m);
            row.per_delivered_hit = true;
        }
        return row;
    }
    if c.name == "hwbreak report" {
        if let Some(s) = m.setup {
            add_note(
                &mut row.note,
                format!(
                    "`hwbreak record` of the {} hits took {s:.2} s (untimed setup)",
                    c.n
                ),
            );
        }
        return row;
    }
    row
}

/// The best (wall, CPU) rates of a peer over the hits it delivered: for each
/// run, its hits over its own time net of the fastest N = 0 run (the peer's
/// best figure, so the comparison never favours hwbreak); a run that
/// delivered more than N is not a delivery rate and is left out.
fn delivered_rates(c: &Contender, m: &Measured) -> (Option<f64>, Option<f64>) {
    let net = |t: f64, start: Option<f64>| match start {
        Some(st) if c.net_of_startup && t > st => t - st,
        _ => t,
    };
    let best = |f: &dyn Fn(&(u64, f64, f64)) -> f64| {
        m.delivered
            .iter()
            .filter(|d| d.0 <= c.n)
            .map(f)
            .filter(|r| r.is_finite())
            .reduce(f64::max)
    };
    (
        best(&|&(h, t, _)| h as f64 / net(t, m.startup)),
        best(&|&(h, _, cpu)| h as f64 / net(cpu, m.startup_cpu)),
    )
}

/// Where and how the bench ran.
#[derive(Debug, Serialize)]
struct Conditions {
    kernel: String,
    cpu: String,
    cpus: usize,
    loadavg_before: String,
    loadavg_after: String,
    n: u64,
    gdb_n: u64,
    threads: u32,
    repeat: u32,
    metric: Metric,
    watch_address: String,
}

/// Output of one `perf bench breakpoint` run.
#[derive(Debug, Serialize)]
struct PerfBench {
    command: String,
    output: String,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    conditions: &'a Conditions,
    rows: &'a [Row],
    perf_bench: &'a [PerfBench],
}

fn run_perf_bench(args: &BenchArgs) -> Vec<PerfBench> {
    let Some(perf) = find_in_path("perf") else {
        return vec![PerfBench {
            command: "perf bench breakpoint".into(),
            output: "SKIP: perf not found in PATH".into(),
        }];
    };
    [
        vec![
            "bench",
            "breakpoint",
            "thread",
            "-b",
            "4",
            "-p",
            "64",
            "-t",
            "64",
        ],
        vec!["bench", "breakpoint", "enable"],
    ]
    .into_iter()
    .map(|a| {
        let mut argv = vec![os(&perf)];
        argv.extend(a.iter().map(os));
        let step = Step::timed(argv);
        progress(&step.display());
        let output = match run_step(&step, Duration::from_secs(args.timeout)) {
            Ok((o, _)) if o.success => o.stdout.trim_end().to_string(),
            Ok((o, _)) => format!("ERROR {}: {}", o.status, o.stderr.trim()),
            Err(e) => format!("ERROR: {e:#}"),
        };
        PerfBench {
            command: format!("perf {}", a.join(" ")),
            output,
        }
    })
    .collect()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.0}"))
}

fn render_table(c: &Conditions, rows: &[Row], perf_bench: &[PerfBench]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "hwbreak bench: kernel {}, {} ({} CPUs), N = {}, gdb N = {}, threads = {}, best of {}",
        c.kernel, c.cpu, c.cpus, c.n, c.gdb_n, c.threads, c.repeat
    );
    let _ = writeln!(
        s,
        "loadavg before: {}   after: {}",
        c.loadavg_before, c.loadavg_after
    );
    let _ = writeln!(
        s,
        "watching `{SYMBOL}` ({WATCH_LEN} bytes at {}) for writes\n",
        c.watch_address
    );
    let header = [
        "contender",
        "N",
        "hits",
        "lost",
        "e2e s",
        "start s",
        "hits/s",
        "vs raw C",
        "cpu s",
        "hits/cpu-s",
        "cpu vs raw",
        "target",
        "value",
        "verdict",
    ];
    let cells: Vec<[String; 14]> = rows
        .iter()
        .map(|r| {
            [
                r.contender.clone(),
                r.n.to_string(),
                r.hits.map_or("-".into(), |h| h.to_string()),
                r.lost.map_or("-".into(), |h| h.to_string()),
                fmt_opt(r.seconds, 3),
                fmt_opt(r.startup_seconds, 3),
                fmt_rate(r.hits_per_sec),
                fmt_opt(r.ratio_vs_raw, 3),
                fmt_opt(r.cpu_seconds, 3),
                fmt_rate(r.hits_per_cpu_sec),
                fmt_opt(r.cpu_ratio_vs_raw, 3),
                r.target.clone(),
                fmt_opt(r.value, 2),
                r.verdict.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |s: &mut String, cols: &[String]| {
        for (i, (cell, w)) in cols.iter().zip(&widths).enumerate() {
            if i == 0 || i == 11 {
                let _ = write!(s, "{cell:<w$}  ");
            } else {
                let _ = write!(s, "{cell:>w$}  ");
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
    };
    line(&mut s, &header.map(String::from));
    for row in &cells {
        line(&mut s, row);
    }
    s.push('\n');
    s.push_str("hits/s = N / (e2e s - start s), start s = the same command with N = 0.\n");
    s.push_str("A row that lost hits shows no rate, except where it is judged per delivered hit (bpftrace printf):\n");
    s.push_str("  there hits/s = hits delivered / (e2e s - start s), its verdict says `lossy`, and its note gives the loss.\n");
    s.push_str("cpu s = user + system CPU of the contender's process tree (target included); hits/cpu-s nets out its N = 0 run too.\n");
    let _ = writeln!(
        s,
        "targets are judged on {} hits/s.",
        match c.metric {
            Metric::Wall => "wall-clock",
            Metric::Cpu => "CPU-time",
        }
    );
    s.push_str("value: the ratio the target is checked on (for `e2e <= this`: this e2e / hwbreak e2e; for `<= s`: seconds).\n");
    let notes: Vec<&Row> = rows.iter().filter(|r| r.note.is_some()).collect();
    if !notes.is_empty() {
        s.push_str("\nnotes:\n");
        for r in notes {
            let _ = writeln!(s, "  {}: {}", r.contender, r.note.as_deref().unwrap_or(""));
        }
    }
    s.push_str("\ncommands (fastest run):\n");
    for r in rows {
        let _ = writeln!(s, "  {}: {}", r.contender, r.command);
    }
    for p in perf_bench {
        let _ = writeln!(s, "\n$ {}\n{}", p.command, p.output);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(stdout: &str) -> StepOutput {
        StepOutput {
            stdout: stdout.into(),
            success: true,
            status: "exit status: 0".into(),
            ..Default::default()
        }
    }

    fn failed(stderr: &str) -> StepOutput {
        StepOutput {
            stderr: stderr.into(),
            success: false,
            status: "exit status: 2".into(),
            ..Default::default()
        }
    }

    fn args() -> BenchArgs {
        BenchArgs {
            n: 1000,
            gdb_n: 10,
            threads: 3,
            repeat: 1,
            only: vec![],
            json: false,
            hwbreak: None,
            timeout: 60,
            keep: false,
            perf_bench: false,
            metric: Metric::Wall,
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_the_rule() {
        let e = run(BenchArgs { n: 0, ..args() }).unwrap_err().to_string();
        assert!(e.contains("-n and --gdb-n must be at least 1"), "{e}");
        let e = run(BenchArgs {
            repeat: 0,
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--repeat"), "{e}");
        let e = run(BenchArgs {
            threads: 5000,
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--threads"), "{e}");
    }

    #[test]
    fn nm_address_finds_the_symbol_and_ignores_undefined_lines() {
        let nm = "                 U strtol@GLIBC_2.2.5\n0000000000406000 B counter\n0000000000401202 t write_counter\n";
        assert_eq!(nm_address(nm, "counter"), Some(0x406000));
        assert_eq!(nm_address(nm, "count"), None);
    }

    #[test]
    fn raw_count_output_gives_hits_and_a_failure_gives_its_reason() {
        assert_eq!(
            parse_raw_count(&[out("hits=1000 seconds=0.01 status=0\n")])
                .unwrap()
                .hits,
            1000
        );
        assert!(parse_raw_count(&[out("garbage\n")])
            .unwrap_err()
            .contains("no hits="));
        let e = parse_raw_count(&[failed("raw_count: perf_event_open: Permission denied\n")])
            .unwrap_err();
        assert!(e.contains("Permission denied"), "{e}");
    }

    #[test]
    fn first_error_shows_first_and_last_lines() {
        let e = first_error(&[failed(
            "error: unrecognized subcommand 'stat'\n\nUsage: hwbreak <COMMAND>\n",
        )])
        .unwrap();
        assert!(
            e.contains("unrecognized subcommand") && e.contains("Usage"),
            "{e}"
        );
    }

    #[test]
    fn gdb_hit_count_is_read_from_info_watchpoints() {
        let text = "[Inferior 1 (process 1) exited normally]\nNum Type\n1 hw watchpoint keep y -location counter\n\tbreakpoint already hit 5000 times\n";
        assert_eq!(parse_gdb(&[out(text)]).unwrap().hits, 5000);
        // No "already hit" line: the watchpoint never fired.
        assert_eq!(
            parse_gdb(&[out("[Inferior 1 (process 1) exited normally]\n")])
                .unwrap()
                .hits,
            0
        );
        assert!(parse_gdb(&[out("Program received signal SIGSEGV\n")]).is_err());
    }

    #[test]
    fn perf_script_sample_lines_are_headers_not_callchain_lines() {
        assert!(is_perf_script_sample(
            "target 10095   513.268282: mem:0x406000: "
        ));
        assert!(!is_perf_script_sample("\t            1223 write_counter"));
        assert!(!is_perf_script_sample(""));
    }

    #[test]
    fn perf_lost_chunks_are_reported_as_lost() {
        let mut s = out("");
        s.counted = 10;
        let mut r = failed("Processed 12 events and lost 3 chunks!\n");
        r.success = true;
        let c = parse_perf(&[r, s]).unwrap();
        assert_eq!((c.hits, c.lost), (10, Some(3)));
    }

    #[test]
    fn watch_json_needs_a_summary_and_takes_lost_from_it() {
        assert!(is_watch_hit_line(
            r#"{"type":"hit","tid":1,"ip":"0x401223"}"#
        ));
        assert!(!is_watch_hit_line(
            r#"{"type":"summary","hits":2,"lost":0}"#
        ));
        assert!(!is_watch_hit_line("hwbreak: watching counter"));
        let mut o = out("{\"type\":\"hit\"}\n{\"type\":\"hit\"}\n{\"type\":\"summary\",\"hits\":2,\"lost\":7}\n");
        o.counted = 2;
        let c = parse_hwbreak_watch(&[o]).unwrap();
        assert_eq!((c.hits, c.lost), (2, Some(7)));
        let e = parse_hwbreak_watch(&[out("{\"type\":\"hit\"}\n")]).unwrap_err();
        assert!(e.contains("no summary"), "{e}");
    }

    #[test]
    fn stat_json_total_is_found_in_nested_output() {
        let c =
            parse_hwbreak_stat(&[out(r#"{"watches":[{"name":"counter","hits":42}]}"#)]).unwrap();
        assert_eq!(c.hits, 42);
        assert!(parse_hwbreak_stat(&[out("not json")]).is_err());
    }

    #[test]
    fn bpftrace_count_reads_the_map_and_printf_sums_lost_lines() {
        assert_eq!(
            parse_bpftrace_count(&[out("Attaching 1 probe...\n\n@hits: 77\n")])
                .unwrap()
                .hits,
            77
        );
        assert_eq!(
            parse_bpftrace_count(&[out("Attaching 1 probe...\n")])
                .unwrap()
                .hits,
            0
        );
        let (counted, text) = read_stdout(
            "hit tid=1 ns=2\n\tstack\nLost 5 events\nhit tid=1 ns=3\nLost 6 events\n".as_bytes(),
            Some(is_bpftrace_hit_line),
        );
        assert_eq!(counted, 2);
        let mut o = out(&text);
        o.counted = counted;
        let c = parse_bpftrace_printf(&[o]).unwrap();
        assert_eq!((c.hits, c.lost), (2, Some(11)));
    }

    #[test]
    fn read_stdout_keeps_head_and_tail_of_a_long_stream() {
        let mut big = String::new();
        for i in 0..100_000 {
            let _ = writeln!(big, "{{\"type\":\"hit\",\"n\":{i}}}");
        }
        big.push_str("{\"type\":\"summary\",\"lost\":0}\n");
        let (counted, text) = read_stdout(big.as_bytes(), Some(is_watch_hit_line));
        assert_eq!(counted, 100_000);
        assert!(text.len() <= 2 * KEEP_BYTES + 8);
        assert!(text.starts_with("{\"type\":\"hit\",\"n\":0}") && text.contains("...\n"));
        assert!(text.ends_with("{\"type\":\"summary\",\"lost\":0}\n"));
    }

    #[test]
    fn run_step_kills_a_command_that_outlives_the_timeout() {
        let step = Step::timed(vec![os("sleep"), os("30")]);
        let (o, _) = run_step(&step, Duration::from_secs(0)).unwrap();
        assert!(!o.success);
        assert!(o.status.contains("timeout"), "{}", o.status);
    }

    #[test]
    fn run_step_charges_the_cpu_of_the_whole_process_tree() {
        // The shell's child burns the CPU; the shell only waits for it.
        let burn = "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'";
        let step = Step::timed(vec![os("sh"), os("-c"), os(burn)]);
        let (o, _) = run_step(&step, Duration::from_secs(120)).unwrap();
        assert!(o.success);
        assert!(o.cpu > 0.01, "cpu {}", o.cpu);
        let (idle, _) = run_step(&Step::timed(vec![os("true")]), Duration::from_secs(60)).unwrap();
        assert!(idle.cpu < o.cpu);
    }

    #[test]
    fn run_step_reports_a_missing_program() {
        let step = Step::timed(vec![os("/nonexistent/hwbreak-bench-peer")]);
        let e = run_step(&step, Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e:#}").contains("cannot start"), "{e:#}");
    }

    fn contender(name: &'static str, n: u64, goal: Goal) -> Contender {
        Contender {
            name,
            n,
            build: Box::new(|_| vec![Step::timed(vec![os("true")])]),
            parse: parse_raw_count,
            goal,
            net_of_startup: true,
            skip: None,
        }
    }

    fn measured(hits: u64, lost: Option<u64>, best: f64, startup: f64) -> Measured {
        let mut m = Measured::new(None);
        m.count = Some(Count {
            hits,
            lost,
            note: None,
        });
        m.best = Some(best);
        m.startup = Some(startup);
        m.delivered = vec![(hits, best, 0.0)];
        m.runs = 1;
        m
    }

    #[test]
    fn judge_compares_rates_net_of_startup_and_never_calls_a_miscount_fast() {
        let plan = vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_STAT, 1000, Goal::RateVsRaw(0.97)),
            contender(HW_WATCH, 1000, Goal::RateVsRaw(0.85)),
            contender("gdb watch", 100, Goal::HwbreakFaster(HW_WATCH, 20.0)),
            contender(
                "perf record+script",
                1000,
                Goal::HwbreakFaster(HW_WATCH, 1.0),
            ),
        ];
        let results = vec![
            measured(1000, None, 1.1, 0.1),      // 1000 hits/s
            measured(1000, None, 1.09, 0.05),    // 961.5 hits/s: 0.96 < 0.97
            measured(1000, Some(0), 1.15, 0.05), // 909 hits/s: 0.91 >= 0.85
            measured(100, None, 2.0, 0.5),       // 66.7 hits/s: 909/66.7 = 13.6 < 20
            measured(900, Some(100), 0.2, 0.1),  // lost 100: wrong, whatever its speed
        ];
        let rows = judge(&plan, &results, Metric::Wall);
        let v: Vec<&str> = rows.iter().map(|r| r.verdict.as_str()).collect();
        // The lossy peer is still compared (its time is for less work), starred.
        assert_eq!(v, ["baseline", "MISS", "PASS", "MISS", "MISS*"]);
        assert!((rows[0].hits_per_sec.unwrap() - 1000.0).abs() < 1e-6);
        assert!(rows[4].hits_per_sec.is_none() && rows[4].ratio_vs_raw.is_none());
        assert!(rows[4].note.as_deref().unwrap().contains("lost"));
        assert!(rows[4].note.as_deref().unwrap().contains("favours it"));
    }

    /// A bpftrace printf row of N = 1000, judged as the bench judges it.
    fn bpftrace_printf(name: &'static str) -> Contender {
        contender(name, 1000, Goal::HwbreakFasterPerDelivered(HW_WATCH, 1.0))
    }

    /// raw C, hwbreak watch at 1000 hits/s, and two bpftrace printf rows.
    fn bpftrace_plan() -> Vec<Contender> {
        vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_WATCH, 1000, Goal::RateVsRaw(0.85)),
            bpftrace_printf("bpftrace printf"),
            bpftrace_printf("bpftrace printf 4096pg"),
        ]
    }

    #[test]
    fn a_lossy_peer_is_judged_per_delivered_hit_and_marked_lossy() {
        let rows = judge(
            &bpftrace_plan(),
            &[
                measured(1000, None, 1.1, 0.1),      // 1000 hits/s
                measured(1000, Some(0), 1.05, 0.05), // 1000 hits/s
                // 140 of 1000 delivered in 0.2 s net: 700 delivered hits/s
                // (per write it would be 5000/s, and hwbreak a MISS).
                measured(140, Some(860), 0.3, 0.1),
                // Nothing lost: the ordinary comparison, 2000 hits/s.
                measured(1000, Some(0), 0.6, 0.1),
            ],
            Metric::Wall,
        );
        let lossy = &rows[2];
        assert_eq!(lossy.verdict, "PASS lossy");
        assert!((lossy.hits_per_sec.unwrap() - 700.0).abs() < 1e-6);
        assert!((lossy.value.unwrap() - 1000.0 / 700.0).abs() < 1e-6);
        assert!(lossy.per_delivered_hit);
        assert!((lossy.lost_share.unwrap() - 0.86).abs() < 1e-9);
        let note = lossy.note.as_deref().unwrap();
        assert!(note.contains("86.0% lost"), "{note}");
        assert!(note.contains("reported 860 lost"), "{note}");
        assert!(note.contains("per delivered hit"), "{note}");
        assert!(note.contains("1.43x"), "{note}");
        assert!(lossy.target.contains("per delivered hit"));
        let j = serde_json::to_value(lossy).unwrap();
        assert_eq!(j["per_delivered_hit"], true);
        assert_eq!(j["verdict"], "PASS lossy");
        assert!((j["lost_share"].as_f64().unwrap() - 0.86).abs() < 1e-9);
        let whole = &rows[3];
        assert_eq!(whole.verdict, "MISS");
        assert!(!whole.per_delivered_hit && whole.lost_share.is_none());
        assert!((whole.value.unwrap() - 0.5).abs() < 1e-9);
        // The table shows the delivered rate, the loss and the mark.
        let t = render_table(&conditions(), &rows, &[]);
        let line = t
            .lines()
            .find(|l| l.starts_with("bpftrace printf  "))
            .unwrap();
        assert!(
            line.contains(" 700 ") && line.contains("PASS lossy"),
            "{line}"
        );
        assert!(t.contains("hits delivered / (e2e s - start s)"), "{t}");
    }

    #[test]
    fn a_lossy_peer_s_rate_is_each_run_s_hits_over_that_run_s_time() {
        let mut m = measured(100, Some(900), 0.2, 0.1);
        // Round 1: 100 hits in 0.1 s net (1000/s); round 2: 300 in 0.4 s (750/s).
        m.delivered = vec![(100, 0.2, 0.0), (300, 0.5, 0.0)];
        m.runs = 2;
        let rows = judge(
            &bpftrace_plan()[..3],
            &[
                measured(1000, None, 1.1, 0.1),
                measured(1000, Some(0), 1.05, 0.05),
                m,
            ],
            Metric::Wall,
        );
        assert!((rows[2].hits_per_sec.unwrap() - 1000.0).abs() < 1e-6);
        assert_eq!(rows[2].verdict, "PASS lossy");
    }

    #[test]
    fn a_peer_that_counts_more_than_n_or_delivers_nothing_stays_wrong() {
        let rows = judge(
            &bpftrace_plan(),
            &[
                measured(1000, None, 1.1, 0.1),
                measured(1000, Some(0), 1.05, 0.05),
                measured(1001, Some(0), 0.3, 0.1),
                measured(0, Some(1000), 0.3, 0.1),
            ],
            Metric::Wall,
        );
        for r in &rows[2..] {
            assert_eq!(r.verdict, "WRONG", "{r:?}");
            assert!(r.hits_per_sec.is_none() && r.value.is_none(), "{r:?}");
            assert!(!r.per_delivered_hit);
        }
        assert_eq!(rows[3].lost_share, Some(1.0));
    }

    /// A bpftrace crash (it aborts now and then: RLIMIT_MEMLOCK, or a
    /// `read_symlink` of a gone process) through the real run path: the run
    /// does not count, and the row is FLAKY, keeping its lossy mark.
    #[test]
    fn a_bpftrace_crash_in_one_round_makes_the_row_flaky() {
        let crash = || {
            vec![Step::counting(
                vec![
                    os("sh"),
                    os("-c"),
                    os("echo 'hit tid=1 ns=1'; echo 'terminate called: filesystem error: read_symlink' >&2; kill -ABRT $$"),
                ],
                is_bpftrace_hit_line,
            )]
        };
        let lossy_run = || {
            vec![Step::counting(
                vec![
                    os("sh"),
                    os("-c"),
                    os("printf 'hit tid=1 ns=1\\nhit tid=1 ns=2\\nLost 998 events\\n'"),
                ],
                is_bpftrace_hit_line,
            )]
        };
        let mut m = Measured::new(None);
        m.record_run(crash(), parse_bpftrace_printf, 1000, false, 60);
        assert_eq!(m.runs, 0, "a crashed run is not a run");
        assert!(m.failures[0].contains("read_symlink"), "{:?}", m.failures);
        m.record_run(lossy_run(), parse_bpftrace_printf, 1000, false, 60);
        m.record_run(
            vec![Step::timed(vec![os("true")])],
            parse_bpftrace_printf,
            0,
            true,
            60,
        );
        assert_eq!(m.count.as_ref().unwrap().hits, 2);
        assert_eq!(m.count.as_ref().unwrap().lost, Some(998));
        let plan = &bpftrace_plan()[..3];
        let rows = judge(
            plan,
            &[
                measured(1000, None, 1.1, 0.1),
                measured(1000, Some(0), 1.05, 0.05),
                m,
            ],
            Metric::Wall,
        );
        assert_eq!(rows[2].verdict, "FLAKY lossy");
        let note = rows[2].note.as_deref().unwrap();
        assert!(
            note.contains("1 run(s) failed") && note.contains("99.8% lost"),
            "{note}"
        );
        // Every round crashed: no figure at all.
        let mut all = Measured::new(None);
        all.record_run(crash(), parse_bpftrace_printf, 1000, false, 60);
        let rows = judge(
            plan,
            &[
                measured(1000, None, 1.1, 0.1),
                measured(1000, Some(0), 1.05, 0.05),
                all,
            ],
            Metric::Wall,
        );
        assert_eq!(rows[2].verdict, "ERROR");
    }

    fn conditions() -> Conditions {
        Conditions {
            kernel: "6.1".into(),
            cpu: "test".into(),
            cpus: 2,
            loadavg_before: String::new(),
            loadavg_after: String::new(),
            n: 1000,
            gdb_n: 100,
            threads: 1,
            repeat: 1,
            metric: Metric::Wall,
            watch_address: "0x406000".into(),
        }
    }

    #[test]
    fn report_json_total_and_lost_are_read_through_the_shared_json_reader() {
        let c = parse_hwbreak_report(&[out(""), out(r#"{"total":5,"lost":0}"#)]).unwrap();
        assert_eq!((c.hits, c.lost), (5, Some(0)));
        let e = parse_hwbreak_report(&[out(""), out("oops")]).unwrap_err();
        assert!(e.contains("`hwbreak report --json`"), "{e}");
    }

    #[test]
    fn a_hwbreak_row_that_loses_hits_is_wrong_and_no_peer_is_judged_against_it() {
        let plan = vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_WATCH, 1000, Goal::RateVsRaw(0.85)),
            contender("gdb watch", 100, Goal::HwbreakFaster(HW_WATCH, 20.0)),
        ];
        let results = vec![
            measured(1000, None, 1.0, 0.0),
            measured(999, Some(1), 0.5, 0.0), // fast, but lost one
            measured(100, None, 2.0, 0.0),
        ];
        let rows = judge(&plan, &results, Metric::Wall);
        let v: Vec<&str> = rows.iter().map(|r| r.verdict.as_str()).collect();
        assert_eq!(v, ["baseline", "WRONG", "n/a"]);
        assert!(rows[1].hits_per_sec.is_none() && rows[1].ratio_vs_raw.is_none());
    }

    #[test]
    fn judge_says_n_a_when_hwbreak_failed_and_skip_when_a_tool_is_missing() {
        let plan = vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_WATCH, 1000, Goal::RateVsRaw(0.85)),
            contender("gdb watch", 100, Goal::HwbreakFaster(HW_WATCH, 20.0)),
            contender("bpftrace count", 1000, Goal::HwbreakFaster(HW_STAT, 1.0)),
        ];
        let mut hw = Measured::new(None);
        hw.failures = vec!["exit status: 2: unrecognized subcommand".into()];
        let results = vec![
            measured(1000, None, 1.0, 0.0),
            hw,
            measured(100, None, 2.0, 0.5),
            Measured::new(Some("bpftrace not found in PATH".into())),
        ];
        let rows = judge(&plan, &results, Metric::Wall);
        let v: Vec<&str> = rows.iter().map(|r| r.verdict.as_str()).collect();
        assert_eq!(v, ["baseline", "ERROR", "n/a", "SKIP"]);
        assert!(rows[3].note.as_deref().unwrap().contains("not found"));
    }

    #[test]
    fn judge_on_cpu_uses_cpu_rates() {
        let plan = vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_STAT, 1000, Goal::RateVsRaw(0.97)),
        ];
        let mut raw = measured(1000, None, 1.0, 0.0);
        let mut stat = measured(1000, None, 2.0, 0.0); // slow on the wall clock (load)
        (raw.best_cpu, raw.startup_cpu) = (Some(0.50), Some(0.0));
        (stat.best_cpu, stat.startup_cpu) = (Some(0.51), Some(0.0)); // 0.98x raw on CPU
        let wall = judge(
            &plan,
            &[
                measured(1000, None, 1.0, 0.0),
                measured(1000, None, 2.0, 0.0),
            ],
            Metric::Wall,
        );
        assert_eq!(wall[1].verdict, "MISS");
        let rows = judge(&plan, &[raw, stat], Metric::Cpu);
        assert_eq!(rows[1].verdict, "PASS");
        assert!((rows[1].cpu_ratio_vs_raw.unwrap() - 0.50 / 0.51).abs() < 1e-9);
        assert!((rows[1].ratio_vs_raw.unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_contender_that_fails_in_one_round_is_flaky_not_passed() {
        let mut stat = measured(1000, None, 1.0, 0.0);
        stat.failures = vec!["signal: 6 (SIGABRT)".into()];
        let mut lossy = measured(10, Some(990), 1.0, 0.0);
        lossy.failures = vec!["signal: 6 (SIGABRT)".into()];
        let plan = vec![
            contender("raw-c", 1000, Goal::Baseline),
            contender(HW_STAT, 1000, Goal::RateVsRaw(0.97)),
            bpftrace_printf("bpftrace printf"),
        ];
        let rows = judge(
            &plan,
            &[measured(1000, None, 1.0, 0.0), stat, lossy],
            Metric::Wall,
        );
        assert_eq!(rows[1].verdict, "FLAKY");
        // A miscount stays WRONG even when some of its rounds also crashed.
        assert_eq!(rows[2].verdict, "WRONG");
        assert!(rows[1].value.is_some());
        assert!(rows[1].note.as_deref().unwrap().contains("SIGABRT"));
    }

    #[test]
    fn record_run_keeps_a_miscount_from_any_round() {
        let mut m = Measured::new(None);
        let steps = || vec![Step::timed(vec![os("echo"), os("hits=999")])];
        m.record_run(steps(), parse_raw_count, 1000, false, 10);
        let steps_ok = vec![Step::timed(vec![os("echo"), os("hits=1000")])];
        m.record_run(steps_ok, parse_raw_count, 1000, false, 10);
        assert_eq!(m.count.as_ref().unwrap().hits, 999);
        assert_eq!(m.runs, 2);
    }

    #[test]
    fn startup_run_that_counts_hits_is_an_error() {
        let mut m = Measured::new(None);
        m.record_run(
            vec![Step::timed(vec![os("echo"), os("hits=3")])],
            parse_raw_count,
            0,
            true,
            10,
        );
        assert!(m.failures[0].contains("N = 0"));
        assert!(m.startup.is_none());
    }

    /// The real thing: gcc builds the target and the raw C peer, and the raw
    /// counter counts exactly the writes on this machine's hardware breakpoints.
    #[test]
    fn raw_c_peer_counts_every_write_of_the_target_exactly() {
        let Some(gcc) = find_in_path("gcc") else {
            eprintln!("SKIP raw_c_peer_counts_every_write_of_the_target_exactly: no gcc in PATH");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let env = Env::prepare(dir.path(), &gcc, &args()).unwrap();
        let mut argv = vec![
            os(&env.raw_count),
            os(format!("{:x}", env.addr)),
            os("8"),
            os("--"),
        ];
        argv.extend(env.clone_target_fn()(1000));
        let (o, _) = run_step(&Step::timed(argv), Duration::from_secs(60)).unwrap();
        if o.stderr.contains("perf_event_open") {
            eprintln!(
                "SKIP raw_c_peer_counts_every_write_of_the_target_exactly: {}",
                o.stderr.trim()
            );
            return;
        }
        assert_eq!(parse_raw_count(&[o]).unwrap().hits, 1000);
    }
}
