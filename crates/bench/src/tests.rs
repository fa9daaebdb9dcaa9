//! The harness's unit tests: parsers on real tools' output, judging, running.

use std::fmt::Write as _;
use std::time::Duration;

use crate::contenders::*;
use crate::judge::*;
use crate::parse::*;
use crate::prepare::*;
use crate::runner::*;
use crate::*;

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
    let e =
        parse_raw_count(&[failed("raw_count: perf_event_open: Permission denied\n")]).unwrap_err();
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
    let mut o = out(
        "{\"type\":\"hit\"}\n{\"type\":\"hit\"}\n{\"type\":\"summary\",\"hits\":2,\"lost\":7}\n",
    );
    o.counted = 2;
    let c = parse_hwbreak_watch(&[o]).unwrap();
    assert_eq!((c.hits, c.lost), (2, Some(7)));
    let e = parse_hwbreak_watch(&[out("{\"type\":\"hit\"}\n")]).unwrap_err();
    assert!(e.contains("no summary"), "{e}");
}

#[test]
fn stat_json_total_is_found_in_nested_output() {
    let c = parse_hwbreak_stat(&[out(r#"{"watches":[{"name":"counter","hits":42}]}"#)]).unwrap();
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
