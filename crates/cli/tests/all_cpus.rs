//! `hwbreak ... -a` (every CPU) end to end, on REAL hardware breakpoints.
//!
//! With -a there is no process: hwbreak opens one CPU-wide breakpoint per CPU
//! (`pid = -1`) on a raw address, and every task that writes that address in
//! user space is counted. So the target is `pagewriter` (testdata/targets):
//! a non-PIE program linked at an address no other program maps, writing its
//! page-aligned global `counter` exactly N times. Its address comes from `nm`.
//!
//! -a has no end of its own (no process to wait for): hwbreak runs until
//! SIGINT (Ctrl-C), then prints its summary. The tests stop it that way.
//! Each test checks with `hwbreak slots` that the CPU-wide slot it took is
//! free again afterwards.

mod common;
#[path = "../../linux/tests/nobody/mod.rs"]
mod nobody;

use common::*;
use std::process::Command;

/// The pagewriter binary and the run-time address of its `counter` (`nm`).
fn pagewriter() -> (std::path::PathBuf, u64) {
    let exe = c_targets().join("pagewriter");
    let o = Command::new("nm").arg(&exe).output().expect("run nm");
    assert!(o.status.success(), "nm failed on {}", exe.display());
    let text = String::from_utf8_lossy(&o.stdout);
    let addr = text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == "counter").then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .unwrap_or_else(|| panic!("nm shows no `counter` in {}:\n{text}", exe.display()));
    assert_eq!(addr % 4096, 0, "counter is page-aligned by its source");
    (exe, addr)
}

/// Runs pagewriter to its end with N writes; returns its pid (= its one tid).
fn write_n_times(exe: &std::path::Path, n: u64) -> u32 {
    let mut c = Command::new(exe).arg(n.to_string()).spawn().unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success(), "pagewriter failed");
    pid
}

/// Slots free for a new process before the test, or `None` (and why) when
/// another perf user already holds every one of them CPU-wide.
fn free_before(test: &str) -> Option<u64> {
    let free0 = free_slots_for_new_process();
    if free0 == 0 {
        eprintln!("SKIP {test}: no slot is free (another perf user holds CPU-wide breakpoints)");
        return None;
    }
    Some(free0)
}

#[test]
fn stat_all_cpus_counts_exactly_the_writes_and_prints_its_total_after_sigint() {
    let _g = slots();
    let Some(free0) = free_before("stat_all_cpus_counts_exactly...") else {
        return;
    };
    let (exe, addr) = pagewriter();
    let spec = format!("{addr:#x}/8:w");
    let bg = Background::start(hwbreak().args(["stat", "--json", "-a", &spec]));
    // One CPU-wide slot on every CPU: every new task has one fewer.
    assert_eq!(free_slots_for_new_process(), free0 - 1);
    write_n_times(&exe, 50_000);
    bg.interrupt();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("in every CPU"), "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["type"], "stat");
    assert_eq!(j["watches"][0]["hits"], 50_000, "{j}");
    assert_eq!(j["watches"][0]["addr"], format!("{addr:#x}"), "{j}");
    // No process of its own: nothing exited.
    assert!(j.get("target_exit").is_none(), "{j}");
    assert_eq!(
        free_slots_for_new_process(),
        free0,
        "the CPU-wide slot is freed"
    );

    // The text form also prints its total after SIGINT.
    let bg = Background::start(hwbreak().args(["stat", "-a", &spec]));
    write_n_times(&exe, 1234);
    bg.interrupt();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = o.stdout.lines().find(|l| l.contains(&spec)).unwrap();
    assert_eq!(line.split_whitespace().next(), Some("1234"), "{}", o.stdout);
    assert!(o.stdout.contains("seconds"), "{}", o.stdout);
    assert_eq!(free_slots_for_new_process(), free0);
}

#[test]
fn watch_all_cpus_json_gives_one_hit_per_write_from_the_writer_and_a_summary_with_lost_0() {
    let _g = slots();
    let Some(free0) = free_before("watch_all_cpus_json_gives_one_hit_per_write...") else {
        return;
    };
    let (exe, addr) = pagewriter();
    let n = 20_000;
    let spec = format!("{addr:#x}/8:w");
    let bg = Background::start(hwbreak().args(["watch", "--json", "-a", &spec]));
    let pid = write_n_times(&exe, n);
    bg.interrupt();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(hits.len() as u64, n);
    for h in &hits {
        assert_eq!(h["tid"], pid, "a hit from another task: {h}");
        assert_eq!(h["addr"], format!("{addr:#x}"), "{h}");
        assert_eq!(h["access"], "w", "{h}");
    }
    // The times are in order: one ring per CPU, merged.
    let t: Vec<u64> = hits
        .iter()
        .map(|h| h["time_ns"].as_u64().unwrap())
        .collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "hits out of time order");
    let s = lines.last().unwrap();
    assert_eq!(s["type"], "summary", "{s}");
    assert_eq!(s["hits"], n, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(
        s["threads"],
        serde_json::json!([{ "tid": pid, "hits": n }]),
        "{s}"
    );
    assert_eq!(
        free_slots_for_new_process(),
        free0,
        "the CPU-wide slot is freed"
    );

    // The text form: one line per hit, then the summary, after SIGINT too.
    let bg = Background::start(hwbreak().args(["watch", "--no-stack", "-a", &spec]));
    let pid = write_n_times(&exe, 7);
    bg.interrupt();
    let o = bg.finish();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let hit_lines = o
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("tid {pid} ")) && l.contains(&spec))
        .count();
    assert_eq!(hit_lines, 7, "{}", o.stdout);
    assert!(o.stdout.contains("summary: 7 hits"), "{}", o.stdout);
    assert!(o.stdout.contains("lost: 0"), "{}", o.stdout);
    assert_eq!(free_slots_for_new_process(), free0);
}

#[test]
fn all_cpus_with_a_symbol_name_says_to_give_an_address_and_opens_nothing() {
    let _g = slots();
    let free0 = free_slots_for_new_process();
    for cmd in ["stat", "watch"] {
        let o = run(hwbreak().args([cmd, "-a", "counter"]));
        assert_clean_error(
            &o,
            "with -a (all CPUs) there is no process to look names up in",
        );
        assert!(o.stderr.contains("give addresses (0x...)"), "{}", o.stderr);
        assert_eq!(o.code, 2, "a usage error: {}", o.stderr);
    }
    // A name mixed with an address: refused whole, the address is not opened.
    let (_, addr) = pagewriter();
    let o = run(hwbreak().args(["stat", "-a", &format!("{addr:#x}"), "state.count"]));
    assert_clean_error(&o, "no process to look names up in");
    assert_eq!(free_slots_for_new_process(), free0);
}

/// Env var: the address the `nobody` half of the permission test watches.
const NOBODY_ADDR: &str = "HWBREAK_TEST_ALL_CPUS_ADDR";

#[test]
fn all_cpus_without_privilege_is_refused_in_one_line_naming_only_the_cpu_wide_rules() {
    let _g = slots();
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    if paranoid.trim().parse::<i32>().unwrap() <= 0 {
        eprintln!("SKIP all_cpus_without_privilege...: perf_event_paranoid is {} (<= 0): anyone may open CPU-wide events here", paranoid.trim());
        return;
    }
    let free0 = free_slots_for_new_process();
    let (_, addr) = pagewriter();
    let Some(out) = nobody::run_as_nobody(
        "as_nobody_all_cpus_is_refused",
        &[(NOBODY_ADDR, format!("{addr:#x}"))],
    ) else {
        return;
    };
    // The child pins the message; here: both commands got that far.
    assert_eq!(
        out.matches("refused: hwbreak: permission denied").count(),
        2,
        "{out}"
    );
    assert_eq!(free_slots_for_new_process(), free0, "nothing was left open");
}

/// The half of the test above that runs as `nobody`.
#[test]
#[ignore = "run as nobody by all_cpus_without_privilege_is_refused_in_one_line_naming_only_the_cpu_wide_rules"]
fn as_nobody_all_cpus_is_refused() {
    let addr = std::env::var(NOBODY_ADDR).expect("run by the test that sets the address");
    let paranoid = hwbreak_linux::procfs::perf_event_paranoid().unwrap();
    let cpu = hwbreak_linux::procfs::online_cpus().unwrap()[0];
    // CAP_PERFMON or root, and perf_event_paranoid: nothing about ptrace or
    // another user's process, the errno named once, and what to do.
    let want = format!(
        "hwbreak: permission denied to open a CPU-wide breakpoint on CPU {cpu} (EACCES): a CPU-wide watch needs root or CAP_PERFMON, or kernel.perf_event_paranoid <= 0, and it is {}. Run as root, give the program CAP_PERFMON (`setcap cap_perfmon+ep PROGRAM`), or allow everyone with `sysctl kernel.perf_event_paranoid=0`; or watch a process of your own instead of every CPU\n",
        hwbreak_linux::error::explain_paranoid(paranoid)
    );
    for cmd in ["stat", "watch"] {
        let o = run(hwbreak().args([cmd, "-a", &format!("{addr}/8:w")]));
        // One line: `watch` notes its small ring (the mlock limit) only once
        // the watch starts, never before an error.
        assert_eq!(o.stderr, want, "{cmd}");
        assert_clean_error(&o, "permission denied");
        assert_eq!(o.code, 1, "{}", o.stderr);
        println!("refused: {}", o.stderr.trim());
    }
}
