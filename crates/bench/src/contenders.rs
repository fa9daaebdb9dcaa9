//! The contenders: how each one's run is built (its commands for N writes),
//! how it is read, and what it is judged on.

use std::ffi::OsString;

use crate::parse::*;
use crate::prepare::Env;
use crate::{BenchArgs, SYMBOL, WATCH_LEN};

/// One command of a contender's run.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) argv: Vec<OsString>,
    /// Counted in the contender's time (a setup step, such as `record` before
    /// `report`, is not).
    pub(crate) timed: bool,
    /// Stdout lines for which this returns true are counted (as hits).
    pub(crate) count_line: Option<fn(&str) -> bool>,
}

impl Step {
    pub(crate) fn timed(argv: Vec<OsString>) -> Step {
        Step {
            argv,
            timed: true,
            count_line: None,
        }
    }
    pub(crate) fn counting(argv: Vec<OsString>, f: fn(&str) -> bool) -> Step {
        Step {
            argv,
            timed: true,
            count_line: Some(f),
        }
    }
    pub(crate) fn setup(argv: Vec<OsString>) -> Step {
        Step {
            argv,
            timed: false,
            count_line: None,
        }
    }
    pub(crate) fn display(&self) -> String {
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
pub(crate) struct Count {
    pub(crate) hits: u64,
    /// Records the contender says it lost (None: it does not say).
    pub(crate) lost: Option<u64>,
    pub(crate) note: Option<String>,
}

impl Count {
    /// Hits from a contender that says nothing of losses.
    pub(crate) fn exact(hits: u64) -> Count {
        Count {
            hits,
            lost: None,
            note: None,
        }
    }
}

/// What came out of one step.
#[derive(Debug, Default)]
pub(crate) struct StepOutput {
    /// Lines matched by the step's `count_line`.
    pub(crate) counted: u64,
    /// The whole stdout when it is small, else its first and last lines.
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) success: bool,
    pub(crate) status: String,
    /// User + system CPU seconds of the step's whole process tree.
    pub(crate) cpu: f64,
}

/// How a contender is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Goal {
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
    pub(crate) fn describe(self) -> String {
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

pub(crate) type Parser = fn(&[StepOutput]) -> std::result::Result<Count, String>;

/// One row of the bench: how to run it for N writes and how to read it.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    pub(crate) n: u64,
    pub(crate) build: Box<dyn Fn(u64) -> Vec<Step>>,
    pub(crate) parse: Parser,
    pub(crate) goal: Goal,
    /// Subtract the N = 0 run's time before computing hits/s.
    pub(crate) net_of_startup: bool,
    /// Why it cannot run here.
    pub(crate) skip: Option<String>,
}

impl Contender {
    pub(crate) fn build(&self, n: u64) -> Vec<Step> {
        (self.build)(n)
    }
}

/// hwbreak's rows, named so that the peers' goals can refer to them.
pub(crate) const HW_STAT: &str = "hwbreak stat";
pub(crate) const HW_WATCH: &str = "hwbreak watch --json";

pub(crate) fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

pub(crate) fn plan(env: &Env, args: &BenchArgs) -> Vec<Contender> {
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
            "cannot find this executable (std::env::current_exe failed), so not the hwbreak beside it; pass --hwbreak PATH"
                .to_string(),
        ),
        Some(p) if !p.is_file() => Some(format!(
            "{} does not exist: build it (cargo build --release -p hwbreak) or pass --hwbreak PATH",
            p.display()
        )),
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
    pub(crate) fn clone_target_fn(&self) -> impl Fn(u64) -> Vec<OsString> + 'static {
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
