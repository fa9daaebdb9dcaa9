//! End-to-end tests of the `hwbreak` binary on REAL hardware breakpoints:
//! the C targets of testdata/targets and the Rust `hwbreak-demo`.
//!
//! Every test that opens breakpoints holds `SLOTS` (the debug registers are
//! few; tests in this binary must not compete for them). Each error-path
//! test checks afterwards, with `hwbreak slots -p PID`, that the target has
//! all four slots free again: no breakpoint was left behind.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// `expect NAME=N ...` from a target's output.
fn expected(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("expect "))
        .unwrap_or_else(|| panic!("no expect line in:\n{text}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .unwrap()
}

fn hits_of(v: &serde_json::Value, watch: &str) -> u64 {
    v["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == watch)
        .unwrap_or_else(|| panic!("no watch {watch} in {v}"))["hits"]
        .as_u64()
        .unwrap()
}

/// Function names of a hit: `at`, then the stack.
fn names(hit: &serde_json::Value) -> Vec<String> {
    let mut v = vec![hit["at"]["function"].as_str().unwrap_or("").to_string()];
    for f in hit["stack"].as_array().into_iter().flatten() {
        v.push(f["function"].as_str().unwrap_or("").to_string());
    }
    v
}

/// A target started with `wait`: it prints its lines, then `ready`, and
/// blocks until we send a line.
struct Waiting {
    child: Child,
    out: BufReader<ChildStdout>,
    text: String,
    /// Slots free for it before the test did anything (a CPU-wide
    /// breakpoint of another perf user on this shared machine takes one
    /// from every task, so "all free" means "as many as before").
    free0: u64,
}

impl Waiting {
    fn start(cmd: &mut Command) -> Waiting {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start target");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap() == 0 {
                panic!("target ended before ready:\n{text}");
            }
            text.push_str(&l);
            if l.trim() == "ready" {
                break;
            }
        }
        let mut w = Waiting {
            child,
            out,
            text,
            free0: 0,
        };
        w.free0 = free_slots(w.pid());
        w
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn addr(&self, name: &str) -> u64 {
        let l = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("addr {name}=")))
            .unwrap();
        u64::from_str_radix(l.trim_start_matches("0x"), 16).unwrap()
    }

    /// Let it run to the end; returns all of its output.
    fn release(mut self) -> String {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        self.child.wait().unwrap();
        format!("{}{rest}", self.text)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counter_waiting() -> Waiting {
    Waiting::start(Command::new(c_targets().join("counter")).args(["200", "2", "2", "wait"]))
}

// ------------------------------------------------------------ exact counts

#[test]
fn stat_counts_exactly_on_launched_c_target() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["stat", "--json", "counter", "state.count", "table[3]", "--"])
        .arg(c_targets().join("counter"))
        .args(["3000", "2", "2"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["type"], "stat");
    // The launched target's stdout goes to stderr with --json.
    assert_eq!(hits_of(j, "counter"), expected(&o.stderr, "counter"));
    assert_eq!(
        hits_of(j, "state.count"),
        expected(&o.stderr, "state.count")
    );
    assert_eq!(hits_of(j, "table[3]"), expected(&o.stderr, "table[3]"));
    assert_eq!(hits_of(j, "counter"), 12_000);
}

#[test]
fn a_struct_wider_than_8_bytes_is_split_over_slots_and_counted_whole() {
    let _g = slots();
    // struct state { int a; long count; char name[16]; }: 32 bytes, 4 slots.
    let o = run(hwbreak()
        .args(["stat", "--json", "state", "--"])
        .arg(c_targets().join("counter"))
        .args(["400", "1", "1"]));
    if o.stderr.contains("no free hardware breakpoint slot") {
        eprintln!("SKIP a_struct_wider_than_8_bytes...: another perf user holds CPU-wide slots");
        return;
    }
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("4 of 4 slots"), "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    let want = expected(&o.stderr, "state.count") + expected(&o.stderr, "state.a");
    assert_eq!(hits_of(j, "state"), want);
    // Six watches' worth of slots in one request is refused before any syscall.
    let o = run(hwbreak()
        .args(["stat", "state", "counter", "--"])
        .arg(c_targets().join("counter"))
        .args(["1", "1", "1"]));
    assert_clean_error(&o, "state takes 4");
}

#[test]
fn thread_storm_of_300_threads_counts_exactly() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["stat", "--json", "counter", "--"])
        .arg(c_targets().join("counter"))
        .args(["20", "100", "200"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(hits_of(&json_lines(&o.stdout)[0], "counter"), 6000);
    let o = run(hwbreak()
        .args(["watch", "--json", "--no-stack", "state.count", "--"])
        .arg(c_targets().join("counter"))
        .args(["20", "100", "200"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    assert_eq!(lines.iter().filter(|l| l["type"] == "hit").count(), 6000);
    assert_eq!(lines.last().unwrap()["lost"], 0);
    assert_eq!(
        lines.last().unwrap()["threads"].as_array().unwrap().len(),
        300
    );
}

#[test]
fn stat_counts_exactly_on_launched_non_pie_c_target() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["stat", "--json", "counter", "--"])
        .arg(c_targets().join("counter-nopie"))
        .args(["1000", "1", "2"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(hits_of(&json_lines(&o.stdout)[0], "counter"), 3000);
}

#[test]
fn stat_counts_exactly_on_launched_demo() {
    let _g = slots();
    let o = run(hwbreak()
        .args([
            "stat",
            "--json",
            "STATE.hits",
            "STATE.table[2]",
            "hwbreak_demo::ROUNDS_DONE",
            "--",
        ])
        .arg(demo())
        .args([
            "--iterations",
            "200",
            "--delay-ms",
            "0",
            "--late-after-ms",
            "20",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(hits_of(j, "STATE.hits"), expected(&o.stderr, "hits"));
    assert_eq!(
        hits_of(j, "STATE.table[2]"),
        expected(&o.stderr, "table[2]")
    );
    assert_eq!(hits_of(j, "STATE.hits"), 800);
    // A Rust static by path.
    let rounds = j["watches"][2]["hits"].as_u64().unwrap();
    assert_eq!(rounds, 800, "{j}");
}

#[test]
fn stat_attached_with_pid_counts_threads_started_before_and_after_attach() {
    let _g = slots();
    let t = counter_waiting();
    let pid = t.pid();
    let bg = Background::start(hwbreak().args([
        "stat",
        "--json",
        "-p",
        &pid.to_string(),
        "counter",
        "state.a",
    ]));
    let text = t.release();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(hits_of(j, "counter"), expected(&text, "counter"));
    assert_eq!(hits_of(j, "state.a"), expected(&text, "state.a"));
    assert!(j["target_exit"].as_str().unwrap().contains("exited"), "{j}");
}

#[test]
fn stat_attached_counts_a_shared_library_global() {
    let _g = slots();
    let t = Waiting::start(Command::new(c_targets().join("uselib")).args(["700", "wait"]));
    let bg = Background::start(hwbreak().args([
        "stat",
        "--json",
        "-p",
        &t.pid().to_string(),
        "libwatchme.so:watchme_value",
    ]));
    let text = t.release();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(
        j["watches"][0]["hits"].as_u64().unwrap(),
        expected(&text, "watchme_value")
    );
}

#[test]
fn stat_attached_to_demo_counts_early_and_late_threads() {
    let _g = slots();
    let t = Waiting::start(Command::new(demo()).args([
        "--iterations",
        "100",
        "--delay-ms",
        "0",
        "--wait",
    ]));
    let bg = Background::start(hwbreak().args([
        "stat",
        "--json",
        "-p",
        &t.pid().to_string(),
        "STATE.total",
    ]));
    let text = t.release();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        hits_of(&json_lines(&o.stdout)[0], "STATE.total"),
        expected(&text, "total")
    );
}

#[test]
fn watch_json_prints_exactly_one_object_per_hit_and_a_summary_with_lost_0() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["watch", "--json", "--values", "STATE.hits", "--"])
        .arg(demo())
        .args([
            "--iterations",
            "50",
            "--delay-ms",
            "1",
            "--late-after-ms",
            "20",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stderr.contains("\x1b[K"),
        "no live status line on a pipe"
    );
    let lines = json_lines(&o.stdout);
    let want = expected(&o.stderr, "hits");
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(hits.len() as u64, want);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["hits"].as_u64().unwrap(), want);
    // Hits carry names: the writer function (in a debug build, the inlined
    // atomic helper may come first) and a stack.
    assert!(
        names(hits[0])
            .iter()
            .take(2)
            .any(|n| n.contains("record_hit")),
        "{}",
        hits[0]
    );
    assert!(
        names(hits[0]).iter().any(|n| n.contains("worker")),
        "{}",
        hits[0]
    );
    // Hits come in time order, and each value read is a count reached by
    // then: the values shown never go down and stay within 1..=want.
    let times: Vec<u64> = hits
        .iter()
        .map(|h| h["time_ns"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "hits out of time order"
    );
    let news: Vec<u64> = hits
        .iter()
        .filter_map(|h| h["new"].as_str())
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(!news.is_empty(), "no value was read");
    assert!(
        news.windows(2).all(|w| w[0] <= w[1]),
        "values went down: {news:?}"
    );
    assert!(news.iter().all(|&v| (1..=want).contains(&v)), "{news:?}");
    let tops = summary["top_stacks"].as_array().unwrap();
    let top: Vec<&str> = tops[0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(top.iter().any(|n| n.contains("worker")), "{}", tops[0]);
}

#[test]
fn watch_json_attached_counts_every_hit_of_threads_before_and_after_attach() {
    let _g = slots();
    let t = counter_waiting();
    let bg = Background::start(hwbreak().args([
        "watch",
        "--json",
        "-p",
        &t.pid().to_string(),
        "state.count",
    ]));
    let text = t.release();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    let want = expected(&text, "state.count");
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "hit").count() as u64,
        want
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["hits"].as_u64().unwrap(), want);
    assert_eq!(
        summary["threads"].as_array().unwrap().len(),
        4,
        "2 threads from before the attach, 2 after"
    );
    let f = summary["top_stacks"][0]["frames"][0]["function"]
        .as_str()
        .unwrap();
    assert_eq!(f, "bump_state");
}

#[test]
fn execute_watch_on_a_function_counts_its_calls() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["stat", "--json", "bump_counter", "--"])
        .arg(c_targets().join("counter"))
        .args(["500", "1", "1"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["watches"][0]["access"], "x");
    assert_eq!(
        hits_of(j, "bump_counter"),
        expected(&o.stderr, "bump_counter")
    );

    let o = run(hwbreak()
        .args(["watch", "--json", "record_hit", "--"])
        .arg(demo())
        .args([
            "--iterations",
            "5",
            "--delay-ms",
            "0",
            "--late-after-ms",
            "10",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(hits.len() as u64, expected(&o.stderr, "hits"));
    assert_eq!(
        hits[0]["at"]["offset"], 0,
        "an execute hit is at the function's start: {}",
        hits[0]
    );
}

#[test]
fn record_then_report_gives_the_same_counts_and_stacks() {
    let _g = slots();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.hwb");
    let o = run(hwbreak()
        .args(["record", "-o"])
        .arg(&file)
        .args(["STATE.hits", "STATE.total", "--"])
        .arg(demo())
        .args([
            "--iterations",
            "40",
            "--delay-ms",
            "0",
            "--late-after-ms",
            "10",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = expected(&o.stderr, "hits");
    let r = run(hwbreak()
        .arg("report")
        .arg(&file)
        .args(["--json", "--top", "2"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = &json_lines(&r.stdout)[0];
    assert_eq!(hits_of(j, "STATE.hits"), want);
    assert_eq!(hits_of(j, "STATE.total"), want);
    assert_eq!(j["lost"], 0);
    let top: Vec<&str> = j["top_stacks"][0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(top.iter().take(2).any(|n| n.contains("record_hit")), "{j}");
    let text = run(hwbreak().arg("report").arg(&file));
    assert!(text.stdout.contains("lost: 0"), "{}", text.stdout);
}

#[test]
fn report_refuses_a_truncated_file_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.hwb");
    std::fs::write(&file, b"HWBRKREC\x01\x00").unwrap();
    assert_clean_error(&run(hwbreak().arg("report").arg(&file)), "truncated");
    std::fs::write(&file, b"not a record").unwrap();
    assert_clean_error(
        &run(hwbreak().arg("report").arg(&file)),
        "not an hwbreak record file",
    );
    assert_clean_error(
        &run(hwbreak().arg("report").arg(dir.path().join("none"))),
        "cannot open",
    );
}

// ------------------------------------------------------------ ending

#[test]
fn target_exiting_mid_watch_still_prints_the_summary() {
    let _g = slots();
    let t = counter_waiting();
    let bg = Background::start(hwbreak().args(["watch", "-p", &t.pid().to_string(), "counter"]));
    let text = t.release();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("── summary:"), "{}", o.stdout);
    assert!(o.stdout.contains("lost: 0"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains(&format!("process {} exited", t_pid(&text))),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("bump_counter"), "{}", o.stdout);
}

/// `hwbreak watch ... | head -1`, in text and JSON: hwbreak ends by SIGPIPE
/// as other Unix filters do (the shell shows status 141) and prints nothing
/// after its banner: no "Broken pipe" error.
#[test]
fn a_closed_output_pipe_ends_watch_quietly_by_sigpipe_in_text_and_json() {
    use std::os::unix::process::ExitStatusExt;
    let _g = slots();
    for json in [false, true] {
        let t = Waiting::start(
            Command::new(c_targets().join("counter")).args(["2000", "2", "2", "wait"]),
        );
        let pid = t.pid().to_string();
        let mut args = vec!["watch", "-p", &pid, "counter"];
        if json {
            args.insert(1, "--json");
        }
        let mut bg = Background::start(hwbreak().args(&args));
        let mut out = BufReader::new(bg.take_stdout());
        let target = std::thread::spawn(move || t.release());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.contains("counter"), "first line: {first}");
        // `head -1` exits: the pipe's read end closes with 8000 hits to come.
        drop(out);
        target.join().unwrap();
        let (st, stderr) = bg.wait();
        assert_eq!(
            st.signal(),
            Some(libc::SIGPIPE),
            "json {json}: {st:?}; {stderr}"
        );
        let after_banner: Vec<&str> = stderr.lines().filter(|l| !l.contains("watching")).collect();
        assert!(after_banner.is_empty(), "json {json}: {stderr}");
    }
}

fn t_pid(text: &str) -> i32 {
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn ctrl_c_stops_drains_summarizes_and_frees_the_slots() {
    let _g = slots();
    let t = counter_waiting();
    if t.free0 < 2 {
        eprintln!("SKIP ctrl_c_stops_drains_summarizes_and_frees_the_slots: only {} slots free (another perf user holds CPU-wide breakpoints)", t.free0);
        return;
    }
    let pid = t.pid();
    let bg = Background::start(hwbreak().args([
        "watch",
        "--json",
        "-p",
        &pid.to_string(),
        "counter",
        "state.count",
    ]));
    assert_eq!(
        free_slots(pid),
        t.free0 - 2,
        "two watches hold two slots of the target"
    );
    bg.interrupt();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert_eq!(lines.last().unwrap()["lost"], 0);
    assert_eq!(
        free_slots(pid),
        t.free0,
        "every breakpoint is gone after Ctrl-C"
    );
    // The attached target was left running.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

// ------------------------------------------------------------ error paths

#[test]
fn bad_spec_syntax_names_the_column_and_leaves_nothing() {
    let _g = slots();
    let t = counter_waiting();
    let o = run(hwbreak().args(["stat", "-p", &t.pid().to_string(), "counter:q"]));
    assert_clean_error(&o, "column 9");
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn unaligned_address_is_refused_before_any_breakpoint() {
    let _g = slots();
    let t = counter_waiting();
    let a = t.addr("counter") + 2;
    let o = run(hwbreak().args(["stat", "-p", &t.pid().to_string(), &format!("{a:#x}/4")]));
    assert_clean_error(&o, "align");
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn bad_length_is_refused() {
    let _g = slots();
    let t = counter_waiting();
    let o = run(hwbreak().args(["stat", "-p", &t.pid().to_string(), "counter/3"]));
    assert_clean_error(&o, "length");
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn read_only_watch_on_x86_suggests_rw() {
    let _g = slots();
    let t = counter_waiting();
    let o = run(hwbreak().args(["stat", "-p", &t.pid().to_string(), "counter:r"]));
    assert_clean_error(&o, "rw");
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn unknown_name_lists_close_matches() {
    let _g = slots();
    let t = counter_waiting();
    let o = run(hwbreak().args(["stat", "-p", &t.pid().to_string(), "countr"]));
    assert_clean_error(&o, "counter");
    assert!(o.stderr.contains("countr"), "{}", o.stderr);
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn dead_pid_is_named() {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let o = run(hwbreak().args(["watch", "-p", &pid.to_string(), "counter"]));
    assert_clean_error(&o, "does not exist");
    let o = run(hwbreak().args(["stat", "-p", &pid.to_string(), "0x1000"]));
    assert_clean_error(&o, "does not exist");
}

#[test]
fn missing_command_is_named() {
    let o = run(hwbreak().args(["stat", "0x1000", "--", "/nonexistent/prog"]));
    assert_clean_error(&o, "/nonexistent/prog");
}

#[test]
fn a_directory_given_as_the_command_is_named_as_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(hwbreak()
        .args(["watch", "STATE.hits", "--"])
        .arg(dir.path()));
    assert_clean_error(&o, "is a directory");
    assert!(!o.stderr.contains("no such file"), "{}", o.stderr);
}

/// A launched command's SPEC refused when the watches open: the error is
/// the only line, no "watching ..." banner before it (issue 9, item 12).
#[test]
fn a_refused_spec_of_a_launched_command_prints_no_banner_before_the_error() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["watch", "STATE.hits:r", "--"])
        .arg(demo_release())
        .args(["--early", "1", "--late", "0", "--iterations", "1"]));
    assert_clean_error(&o, "use `rw`");
    assert!(!o.stdout.contains("pid="), "the program ran: {}", o.stdout);
}

/// `record -o /dev/full`: the error names the file (issue 9, item 12).
#[test]
fn record_into_a_full_device_names_the_file() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["record", "-o", "/dev/full", "STATE.hits", "--"])
        .arg(demo_release())
        .args([
            "--early",
            "1",
            "--late",
            "0",
            "--iterations",
            "3",
            "--delay-ms",
            "1",
        ]));
    assert_eq!(o.code, 1, "{}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "hwbreak: cannot write record file /dev/full: No space left on device (os error 28)"
    );
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

/// A record header with one write watch `x` at 0x1000 and these modules.
fn one_watch_header(modules: Vec<hwbreak::recfile::Module>) -> hwbreak::recfile::Header {
    hwbreak::recfile::Header {
        pid: 1,
        watches: vec![hwbreak::recfile::WatchEntry {
            name: "x".into(),
            addr: 0x1000,
            len: 8,
            access: hwbreak_core::Access::Write,
        }],
        modules,
        ..Default::default()
    }
}

/// A hit of watch 0 by thread 7 at `time`, with `stack`.
fn hit_at(time: u64, stack: &[u64]) -> hwbreak_core::events::Extended<'_> {
    use hwbreak_core::events::{Extended, Extension, Sample};
    Extended {
        sample: Sample {
            bp: hwbreak_core::BpId(0),
            cpu: hwbreak_core::CpuId(0),
            task: Some(hwbreak_core::TaskId(7)),
            ip: 0x40_1000,
            addr: 0x1000,
            time,
        },
        ext: Extension {
            stack,
            ..Extension::NONE
        },
    }
}

/// A record file whose module map names a FIFO: `report` does not open it
/// (it would block forever) and reports the hits (issue 9, item 3).
#[test]
fn report_of_a_record_whose_module_map_names_a_fifo_finishes() {
    use hwbreak::recfile::{Module, Writer};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads one NUL-terminated path, live for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let header = one_watch_header(vec![Module {
        start: 0x40_0000,
        end: 0x50_0000,
        file_offset: 0,
        path: fifo.to_str().unwrap().into(),
    }]);
    let file = dir.path().join("fifo.rec");
    let mut w = Writer::new(std::fs::File::create(&file).unwrap(), &header).unwrap();
    let stack = [0x40_2000];
    w.hit(&hit_at(1, &stack)).unwrap();
    w.finish().unwrap();
    for top in ["0", "5"] {
        let mut child = hwbreak()
            .args(["report", "--top", top])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A watchdog, not a time limit: a report that blocks is ended so
        // the test fails instead of hanging the suite.
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > std::time::Duration::from_secs(120) {
                let _ = child.kill();
                panic!("report --top {top} blocked on the FIFO");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains("1 hits"), "{out}");
    }
}

/// A record file with one flipped byte: `report` names the damaged block by
/// offset, says how much it skipped, and reports the rest (issue 9, item 11).
#[test]
fn report_skips_a_damaged_block_by_offset_and_reports_the_rest() {
    use hwbreak::recfile::Writer;
    let header = one_watch_header(Vec::new());
    let mut w = Writer::new(Vec::new(), &header).unwrap();
    let stack = [0x40_2000u64; 20];
    for i in 0..3000u64 {
        w.hit(&hit_at(i, &stack)).unwrap();
    }
    let mut bytes = w.finish().unwrap().1;
    let blocks: Vec<usize> = (0..bytes.len() - 8)
        .filter(|&i| &bytes[i..i + 8] == b"HWBRKBLK")
        .collect();
    assert!(blocks.len() >= 3, "{} blocks", blocks.len());
    bytes[blocks[1] + 1000] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.rec");
    std::fs::write(&file, &bytes).unwrap();
    let o = run(hwbreak().args(["report", "--json"]).arg(&file));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = format!(
        "skipped 1 damaged block ({} bytes at byte {}, holding ",
        blocks[2] - blocks[1],
        blocks[1]
    );
    assert!(o.stderr.contains(&want), "want {want:?} in {}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    let held: u64 = o
        .stderr
        .split("holding ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["hits"].as_u64().unwrap() + held, 3000);
}

/// `runuser -u nobody -- hwbreak ARGS`, or `None` (and why) when it cannot run here.
fn as_nobody(test: &str, args: &[&str]) -> Option<Out> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIP {test}: needs root to switch to user nobody");
        return None;
    }
    if Command::new("runuser").arg("--help").output().is_err() {
        eprintln!("SKIP {test}: runuser is not installed");
        return None;
    }
    let o = run(Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(env!("CARGO_BIN_EXE_hwbreak"))
        .args(args));
    if o.stderr.contains("Permission denied")
        && o.stderr.contains("os error 13")
        && !o.stderr.contains("hwbreak:")
    {
        eprintln!("SKIP {test}: nobody cannot execute the test binary");
        return None;
    }
    Some(o)
}

#[test]
fn no_permission_as_an_unprivileged_user() {
    let _g = slots();
    let t = counter_waiting();
    let a = t.addr("counter");
    let pid = t.pid();
    // The uid `runuser -u nobody` runs as.
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    // Another user's process: the ptrace read-access rule and its owner,
    // nothing about perf_event_paranoid, CPU-wide watches or Yama.
    let tail = format!(" (EACCES): it belongs to uid 0 and you are uid {nobody}; another user's process may be watched only with ptrace read access to it: root, CAP_SYS_PTRACE or CAP_PERFMON. Run as uid 0 or as root, or launch the program yourself so that it is yours\n");
    let raw = format!("{a:#x}/8");
    // A raw address (the maps check) and a name (the symbol resolver) alike.
    for (cmd, spec) in [("stat", &*raw), ("watch", &*raw), ("watch", "counter")] {
        let Some(o) = as_nobody(
            "no_permission_as_an_unprivileged_user",
            &[cmd, "-p", &pid.to_string(), spec],
        ) else {
            return;
        };
        // The maps check comes first; `watch` prints no ring note before it.
        assert_clean_error(&o, "permission denied");
        assert_eq!(
            o.stderr,
            format!("hwbreak: permission denied to read /proc/{pid}/maps{tail}"),
            "{cmd} {spec}"
        );
    }
    let Some(o) = as_nobody(
        "no_permission_as_an_unprivileged_user",
        &["slots", "-p", &pid.to_string()],
    ) else {
        return;
    };
    assert_clean_error(&o, "permission denied");
    assert_eq!(
        o.stderr,
        format!("hwbreak: permission denied to open a breakpoint on process {pid}{tail}")
    );
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn unprivileged_watch_notes_its_smaller_ring_with_the_banner_once_it_starts() {
    let _g = slots();
    let exe = c_targets().join("pagewriter");
    let nm = Command::new("nm").arg(&exe).output().unwrap();
    let addr = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == "counter").then(|| format!("0x{}", f[0]))
        })
        .expect("pagewriter has `counter`");
    let exe = exe.to_str().unwrap();
    let Some(o) = as_nobody(
        "unprivileged_watch_notes_its_smaller_ring...",
        &[
            "watch",
            "--no-stack",
            &format!("{addr}/8:w"),
            "--",
            exe,
            "3",
        ],
    ) else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mlock_kb: usize = std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lines: Vec<&str> = o.stderr.lines().collect();
    if mlock_kb >= 8 * 1024 + 4 {
        eprintln!("SKIP unprivileged_watch_notes_its_smaller_ring...: perf_event_mlock_kb = {mlock_kb} fits the full 8 MiB ring; no note is due");
        assert!(!o.stderr.contains("sampling ring"), "{}", o.stderr);
        return;
    }
    // The note, then the banner: the watch started.
    assert_eq!(lines.len(), 2, "{}", o.stderr);
    assert!(
        lines[0].starts_with("hwbreak: sampling ring ")
            && lines[0].contains(&format!("(perf_event_mlock_kb = {mlock_kb} for non-root)")),
        "{}",
        o.stderr
    );
    assert!(lines[1].starts_with("hwbreak: watching "), "{}", o.stderr);
    assert!(o.stdout.contains("summary: 3 hits"), "{}", o.stdout);
}

#[test]
fn fifth_watch_when_four_slots_are_held_is_refused() {
    let _g = slots();
    let t = counter_waiting();
    if t.free0 < 4 {
        eprintln!(
            "SKIP fifth_watch_when_four_slots_are_held_is_refused: only {} slots are free (another perf user holds CPU-wide breakpoints)",
            t.free0
        );
        return;
    }
    let pid = t.pid().to_string();
    let holder = Background::start(hwbreak().args([
        "stat",
        "-p",
        &pid,
        "counter",
        "state.count",
        "table[0]",
        "table[1]",
    ]));
    assert_eq!(free_slots(t.pid()), 0);
    let o = run(hwbreak().args(["stat", "-p", &pid, "table[2]"]));
    assert_clean_error(&o, "no free hardware breakpoint slot");
    holder.interrupt();
    assert_eq!(holder.finish().code, 0);
    assert_eq!(free_slots(t.pid()), t.free0);
    // Five in one request: refused before any system call.
    let o = run(hwbreak().args([
        "stat",
        "-p",
        &pid,
        "counter",
        "state.count",
        "table[0]",
        "table[1]",
        "table[2]",
    ]));
    assert_clean_error(&o, "5 hardware slots");
    assert_eq!(free_slots(t.pid()), t.free0);
}

#[test]
fn slots_reports_all_four_free_for_a_new_process() {
    let _g = slots();
    let o = run(hwbreak().arg("slots"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("of 4"), "{}", o.stdout);
}

#[test]
fn help_teaches_with_examples() {
    let o = run(hwbreak().arg("--help"));
    assert!(
        o.stdout.contains("hwbreak watch --values STATE.hits"),
        "{}",
        o.stdout
    );
    let o = run(hwbreak().args(["watch", "--help"]));
    assert!(o.stdout.contains("Examples:"), "{}", o.stdout);
}

// ------------------------------------------------------------ stacks

/// `watch --json` on the demo with extra flags; the JSON lines.
fn watch_demo_json(extra: &[&str]) -> Vec<serde_json::Value> {
    let o = run(hwbreak()
        .args(["watch", "--json"])
        .args(extra)
        .args(["STATE.hits", "--"])
        .arg(demo())
        .args([
            "--iterations",
            "5",
            "--delay-ms",
            "1",
            "--late-after-ms",
            "2",
        ]));
    assert_eq!(o.code, 0, "{extra:?}: {}", o.stderr);
    let lines = json_lines(&o.stdout);
    let want = expected(&o.stderr, "hits");
    assert_eq!(
        lines.last().unwrap()["hits"].as_u64(),
        Some(want),
        "{extra:?}"
    );
    lines
}

#[test]
fn copied_stacks_match_the_kernel_walk_and_a_short_copy_is_flagged_as_cut() {
    let _g = slots();
    let top = |lines: &[serde_json::Value]| -> Vec<String> {
        lines.last().unwrap()["top_stacks"][0]["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let kernel = watch_demo_json(&["--kernel-stack"]);
    let copied = watch_demo_json(&["--stack-bytes", "8192"]);
    for lines in [&kernel, &copied] {
        let s = lines.last().unwrap();
        assert_eq!(s["stacks_cut"], 0, "{s}");
        assert!(lines.iter().all(|l| l.get("stack_truncated").is_none()));
    }
    assert_eq!(top(&kernel), top(&copied), "the same frames either way");
    assert!(top(&copied).iter().any(|f| f.contains("worker")));

    // 8 bytes hold no frame: every hit is flagged, and so is the summary.
    let short = watch_demo_json(&["--stack-bytes", "8"]);
    let s = short.last().unwrap();
    let hits: Vec<_> = short.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(s["stacks_cut"], s["hits"], "{s}");
    assert!(hits.iter().all(|h| h["stack_truncated"] == true));
    assert_eq!(s["top_stacks"][0]["truncated"], true, "{s}");
    assert!(
        !top(&short).iter().any(|f| f.contains("worker")),
        "8 bytes cannot reach the caller: {:?}",
        top(&short)
    );

    // The text output says where a stack is cut, and why, once per hit.
    let o = run(hwbreak()
        .args(["watch", "--stack-bytes", "8", "STATE.hits", "--"])
        .arg(demo())
        .args([
            "--iterations",
            "2",
            "--delay-ms",
            "1",
            "--late-after-ms",
            "2",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Without --json the demo's own lines share stdout with the hits.
    let want = expected(&o.stdout, "hits") as usize;
    assert_eq!(
        o.stdout.matches("deeper frames not copied").count(),
        want + 1,
        "one per hit and one in the top stack:\n{}",
        o.stdout
    );
    assert!(o.stdout.contains("raise --stack-bytes"), "{}", o.stdout);
}

#[test]
fn a_stack_copy_the_kernel_cannot_take_is_refused_with_the_rule() {
    for (args, needle) in [
        (vec!["--stack-bytes", "12"], "multiple of 8"),
        (vec!["--stack-bytes", "70000"], "65528"),
        (vec!["--stack-bytes", "lots"], "not a byte count"),
        (
            vec!["--stack-bytes", "64", "--kernel-stack"],
            "cannot be used with",
        ),
        (vec!["--no-stack", "--kernel-stack"], "cannot be used with"),
    ] {
        let o = run(hwbreak()
            .arg("watch")
            .args(&args)
            .args(["0x1000/8:w", "-p", "1"]));
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
}

// ------------------------------------------------------------ values

/// `--values` follows each write from its instruction and registers: every
/// hit has `old` and `new`, each hit's `old` is the previous hit's `new`, and
/// the values count up as the program wrote them, however many hits arrive
/// in one drain: a locked increment (`STATE.hits`), a locked add of a
/// register (`STATE.total`), a plain store (`STATE.last_writer`) and an
/// indexed increment (`STATE.table[3]`), in the release demo of the README.
#[test]
fn values_follow_every_write_exactly_from_the_writing_instruction() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["watch", "--json", "--values"])
        .args([
            "STATE.hits",
            "STATE.total",
            "STATE.last_writer",
            "STATE.table[3]",
        ])
        .arg("--")
        .arg(demo_release())
        // No delay: the four threads' hits pile up in each drain.
        .args([
            "--iterations",
            "200",
            "--delay-ms",
            "0",
            "--late-after-ms",
            "0",
        ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    let want = |name| expected(&o.stderr, name);
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    let of = |w: &str| -> Vec<(u64, u64)> {
        let v: Vec<_> = hits
            .iter()
            .filter(|h| h["watch"] == w)
            .map(|h| {
                let v = |k: &str| {
                    h[k].as_str()
                        .unwrap_or_else(|| panic!("no `{k}` in {h}"))
                        .parse::<u64>()
                        .unwrap()
                };
                (v("old"), v("new"))
            })
            .collect();
        for p in v.windows(2) {
            assert_eq!(p[0].1, p[1].0, "{w}: a break in the chain: {p:?}");
        }
        v
    };
    for (w, n) in [
        ("STATE.hits", want("hits")),
        ("STATE.table[3]", want("table[3]")),
    ] {
        let v = of(w);
        assert_eq!(v.len() as u64, n, "{w}");
        for (k, &(old, new)) in v.iter().enumerate() {
            assert_eq!((old, new), (k as u64, k as u64 + 1), "{w} hit {k}");
        }
    }
    // STATE.total gains the writer's id (1..=4) at each write.
    let t = of("STATE.total");
    assert_eq!(t.len() as u64, want("total"));
    assert_eq!(t[0].0, 0, "the value before the first write");
    assert!(
        t.iter().all(|(old, new)| (1..=4).contains(&(new - old))),
        "{t:?}"
    );
    let lw = of("STATE.last_writer");
    assert_eq!(lw.len() as u64, want("last_writer"));
    assert_eq!(lw[0].0, 0, "the value before the first write");
    assert!(lw.iter().all(|&(_, new)| (1..=4).contains(&new)), "{lw:?}");
    assert_eq!(lines.last().unwrap()["lost"], 0);
}

/// A write made inside glibc's `memset`, which keeps no frame pointer: the
/// stack still shows `memset`'s caller (the copied stack is walked with the
/// modules' DWARF CFI; a frame-pointer walk, as the kernel's, skips it).
#[test]
fn a_write_inside_a_libc_function_without_frame_pointer_shows_its_caller() {
    let _g = slots();
    let stack_of = |extra: &[&str]| -> Vec<String> {
        let o = run(hwbreak()
            .args(["watch", "--json"])
            .args(extra)
            .args(["blob.a[0]", "--"])
            .arg(c_targets().join("memsetter"))
            .arg("3"));
        assert_eq!(o.code, 0, "{}", o.stderr);
        let lines = json_lines(&o.stdout);
        let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
        assert_eq!(hits.len(), 3, "{}", o.stdout);
        assert!(
            hits[0]["at"]["function"]
                .as_str()
                .is_some_and(|f| f.contains("memset")),
            "{}",
            hits[0]
        );
        names(hits[0])
    };
    let dwarf = stack_of(&[]);
    assert!(
        dwarf.iter().any(|f| f == "outer"),
        "memset's caller is missing: {dwarf:?}"
    );
    assert!(dwarf.iter().any(|f| f == "main"), "{dwarf:?}");
    let kernel = stack_of(&["--kernel-stack"]);
    for f in &kernel {
        assert!(
            dwarf.contains(f),
            "{f} is in the kernel's walk {kernel:?} but not in {dwarf:?}"
        );
    }
    println!("frame-pointer walk (kernel): {kernel:?}; DWARF walk: {dwarf:?}");
}

/// Issue 9 #12: a usage error was clap's several lines without the
/// `hwbreak:` prefix every other error has.
#[test]
fn usage_errors_are_one_prefixed_line_with_status_2() {
    for (args, needle) in [
        (
            &["watch", "--bogus", "x"][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["watch"][..],
            "required arguments were not provided: <SPEC>",
        ),
        (&["stat", "-p", "1", "-a", "x"][..], "cannot be used with"),
    ] {
        let o = run(hwbreak().args(args));
        assert_clean_error(&o, needle);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("; usage: hwbreak "), "{}", o.stderr);
    }
    let o = run(hwbreak().args(["watch", "--help"]));
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("Usage: hwbreak watch"), "{}", o.stdout);
}
