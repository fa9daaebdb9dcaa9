//! Judging and printing: rates net of start-up, verdicts against the
//! issue's goals, the table and the JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::contenders::{os, Contender, Goal, Step};
use crate::prepare::find_in_path;
use crate::runner::{run_step, Measured};
use crate::{progress, BenchArgs, Metric, SYMBOL, WATCH_LEN};

/// One line of the result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) contender: String,
    pub(crate) command: String,
    /// Writes the target made: the hits a correct contender counts.
    pub(crate) n: u64,
    pub(crate) hits: Option<u64>,
    pub(crate) lost: Option<u64>,
    /// The share of the N writes this row did not deliver as hits (reported
    /// lost or vanished), when it delivered fewer than N.
    pub(crate) lost_share: Option<f64>,
    /// This row lost hits and its hits/s (and CPU rate) are over the hits it
    /// delivered, not over N: the per-delivered-hit comparison of
    /// [`Goal::HwbreakFasterPerDelivered`].
    pub(crate) per_delivered_hit: bool,
    /// End-to-end seconds of the fastest run (timed steps only).
    pub(crate) seconds: Option<f64>,
    /// Seconds of the fastest N = 0 run, subtracted for hits/s.
    pub(crate) startup_seconds: Option<f64>,
    /// Untimed setup (e.g. `hwbreak record` before `hwbreak report`).
    pub(crate) setup_seconds: Option<f64>,
    pub(crate) hits_per_sec: Option<f64>,
    pub(crate) ratio_vs_raw: Option<f64>,
    /// CPU seconds (user + system, whole process tree) of the least-CPU run.
    pub(crate) cpu_seconds: Option<f64>,
    /// CPU seconds of the N = 0 run.
    pub(crate) startup_cpu_seconds: Option<f64>,
    pub(crate) hits_per_cpu_sec: Option<f64>,
    pub(crate) cpu_ratio_vs_raw: Option<f64>,
    /// A WRONG row's (wall, CPU) rates over N: used only to compare hwbreak
    /// with a peer that miscounted, a comparison that favours the peer.
    #[serde(skip)]
    pub(crate) wrong_rate: (Option<f64>, Option<f64>),
    /// The target for this row.
    pub(crate) target: String,
    /// The figure the target is checked on (a ratio, or seconds for `<= s`).
    pub(crate) value: Option<f64>,
    /// PASS, MISS (`*`: against a miscounting peer; ` lossy`: against a peer
    /// that lost hits, per delivered hit), WRONG (miscount or loss), FLAKY
    /// (some runs failed), ERROR, SKIP, baseline, or n/a.
    pub(crate) verdict: String,
    pub(crate) note: Option<String>,
    pub(crate) runs: u32,
}

pub(crate) fn judge(plan: &[Contender], results: &[Measured], metric: Metric) -> Vec<Row> {
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
pub(crate) fn goal_hwbreak_row(goal: Goal) -> Option<&'static str> {
    match goal {
        Goal::HwbreakFaster(hw, _)
        | Goal::HwbreakFasterPerDelivered(hw, _)
        | Goal::HwbreakNoSlowerEndToEnd(hw) => Some(hw),
        _ => None,
    }
}

/// Appends `more` to a row's note.
pub(crate) fn add_note(note: &mut Option<String>, more: String) {
    *note = Some(match note.take() {
        Some(n) => format!("{n}; {more}"),
        None => more,
    });
}

/// The row's own figures, with the verdict set when the row cannot be
/// compared (SKIP, ERROR, WRONG) and left empty otherwise.
pub(crate) fn base_row(c: &Contender, m: &Measured) -> Row {
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
pub(crate) fn delivered_rates(c: &Contender, m: &Measured) -> (Option<f64>, Option<f64>) {
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
pub(crate) struct Conditions {
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) loadavg_before: String,
    pub(crate) loadavg_after: String,
    pub(crate) n: u64,
    pub(crate) gdb_n: u64,
    pub(crate) threads: u32,
    pub(crate) repeat: u32,
    pub(crate) metric: Metric,
    pub(crate) watch_address: String,
}

/// Output of one `perf bench breakpoint` run.
#[derive(Debug, Serialize)]
pub(crate) struct PerfBench {
    pub(crate) command: String,
    pub(crate) output: String,
}

#[derive(Serialize)]
pub(crate) struct JsonOut<'a> {
    pub(crate) conditions: &'a Conditions,
    pub(crate) rows: &'a [Row],
    pub(crate) perf_bench: &'a [PerfBench],
}

pub(crate) fn run_perf_bench(args: &BenchArgs) -> Vec<PerfBench> {
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

pub(crate) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

pub(crate) fn fmt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.0}"))
}

pub(crate) fn render_table(c: &Conditions, rows: &[Row], perf_bench: &[PerfBench]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "hwbreak-bench: kernel {}, {} ({} CPUs), N = {}, gdb N = {}, threads = {}, best of {}",
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
