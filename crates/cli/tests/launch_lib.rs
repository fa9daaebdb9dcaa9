//! `hwbreak watch|stat SPEC -- CMD` where a SPEC is in a shared library
//! (`libwatchme.so:watchme_value`, or a name the executable does not
//! define): the command starts stopped at its entry point, the SPECs
//! resolve in the loaded process, and it is watched from there. On REAL
//! hardware breakpoints, with the C targets of testdata/targets.
//!
//! Error paths check that the launched command was killed: each runs its own
//! copy of the target, and no process runs that copy once hwbreak exits (the
//! breakpoints lived on that process and in hwbreak, so none is left).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Tests that open breakpoints take this: the 4 debug registers are few.
fn slots() -> MutexGuard<'static, ()> {
    static SLOTS: Mutex<()> = Mutex::new(());
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn hwbreak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hwbreak"))
}

/// testdata/targets, built once into a temporary directory (canonical path).
fn targets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("hwbreak-launch-lib-tests")
            .tempdir()
            .unwrap()
            .keep();
        let st = Command::new("make")
            .args(["-s", "-C"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/targets"))
            .arg(format!("OUT={}", dir.display()))
            .status()
            .expect("run make");
        assert!(st.success(), "building the C targets failed");
        dir.canonicalize().unwrap()
    })
}

/// A private copy of uselib (with its library unless `without_lib`), so a
/// test can tell afterwards that no process runs it.
fn private_uselib(without_lib: bool) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(targets().join("uselib"), d.path().join("uselib")).unwrap();
    if !without_lib {
        std::fs::copy(
            targets().join("libwatchme.so"),
            d.path().join("libwatchme.so"),
        )
        .unwrap();
    }
    let exe = d.path().canonicalize().unwrap().join("uselib");
    (d, exe)
}

/// Processes running `exe`.
fn running(exe: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|x| x == exe))
        .collect()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let o = cmd.stdin(Stdio::null()).output().expect("run hwbreak");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

/// The value on the target's output line starting with `key` (`pid=`,
/// `addr watchme_value=`, `expect watchme_value=`).
fn line_value(text: &str, key: &str) -> u64 {
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line {key} in:\n{text}"));
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.trim().parse().unwrap(),
    }
}

/// `hwbreak: ...` is the last stderr line, exit status non-zero, no panic.
fn error_line(o: &Out) -> &str {
    assert_ne!(o.code, 0, "expected failure; stdout: {}", o.stdout);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("hwbreak: "), "{}", o.stderr);
    last
}

// ------------------------------------------------------------ exact counts

#[test]
fn stat_counts_a_library_global_of_a_launched_command_exactly() {
    let _g = slots();
    let o = run(hwbreak()
        .args(["stat", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(targets().join("uselib"))
        .arg("2500"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    let w = &j["watches"][0];
    // The target's own stdout goes to stderr with --json.
    assert_eq!(line_value(&o.stderr, "expect watchme_value="), 2500);
    assert_eq!(w["hits"].as_u64().unwrap(), 2500, "{j}");
    assert_eq!(
        w["addr"].as_str().unwrap(),
        format!("{:#x}", line_value(&o.stderr, "addr watchme_value=")),
        "resolved where the library writes"
    );
    assert_eq!(j["target_exit"], "exited with status 0");
}

#[test]
fn a_name_only_a_library_defines_is_found_once_the_command_is_loaded() {
    let _g = slots();
    let o = run(hwbreak()
        .args([
            "stat",
            "--json",
            "watchme_value",
            "libwatchme.so:watchme_pair.right",
            "--",
        ])
        .arg(targets().join("uselib"))
        .arg("700"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["watches"][0]["hits"], 700, "{j}");
    assert_eq!(j["watches"][1]["hits"], 700, "{j}");
    assert_eq!(j["watches"][1]["len"], 4, "an int field: its own size");
}

#[test]
fn watch_json_on_a_library_global_prints_one_hit_per_write_and_lost_0() {
    let _g = slots();
    let n = 300;
    let o = run(hwbreak()
        .args(["watch", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(targets().join("uselib"))
        .arg(n.to_string()));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = json_lines(&o.stdout);
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(hits.len(), n, "one object per write");
    assert!(
        hits.iter().all(|h| h["at"]["function"] == "watchme_touch"),
        "every hit is in the library's writer: {}",
        hits[0]
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["hits"], n as u64);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["target_exit"], "exited with status 0");
}

#[test]
fn all_four_slots_take_library_globals_of_a_command_launched_at_its_entry_point() {
    let _g = slots();
    let o = run(hwbreak().args(["slots", "--json"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let free = json_lines(&o.stdout)[0]["fresh_task_free"]
        .as_u64()
        .unwrap();
    if free < 4 {
        eprintln!("SKIP all_four_slots_take_library_globals_...: only {free} slots free for a new task (another perf user holds CPU-wide breakpoints)");
        return;
    }
    let o = run(hwbreak()
        .args(["stat", "--json"])
        .args([
            "libwatchme.so:watchme_value",
            "libwatchme.so:watchme_pair.left",
            "libwatchme.so:watchme_pair.right",
            "libwatchme.so:watchme_init",
            "--",
        ])
        .arg(targets().join("uselib"))
        .arg("60"));
    assert_eq!(
        o.code, 0,
        "stopping at the entry holds no slot: {}",
        o.stderr
    );
    let hits: Vec<u64> = json_lines(&o.stdout)[0]["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["hits"].as_u64().unwrap())
        .collect();
    // watchme_touch writes the value and pair.right; the rest stay as they were.
    assert_eq!(hits, vec![60, 0, 60, 0]);
}

#[test]
fn record_then_report_of_a_library_global_has_every_hit_and_its_writer() {
    let _g = slots();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("lib.hwb");
    let o = run(hwbreak()
        .args(["record", "-o"])
        .arg(&file)
        .args(["libwatchme.so:watchme_value", "--"])
        .arg(targets().join("uselib"))
        .arg("450"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(hwbreak().args(["report", "--json"]).arg(&file));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["hits"], 450, "{j}");
    assert_eq!(j["lost"], 0, "{j}");
    // The library was mapped when the record began: its writer is named.
    assert_eq!(
        j["top_stacks"][0]["frames"][0]["function"], "watchme_touch",
        "{j}"
    );
}

#[test]
fn a_copy_relocated_library_global_is_watched_where_the_writes_go() {
    let _g = slots();
    // usecopy names watchme_value, so the linker moved it into the executable.
    let o = run(hwbreak()
        .args(["stat", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(targets().join("usecopy"))
        .arg("900"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(j["watches"][0]["hits"], 900, "{j}");
    assert_eq!(
        j["watches"][0]["addr"].as_str().unwrap(),
        format!("{:#x}", line_value(&o.stderr, "addr watchme_value=")),
    );
}

#[test]
fn threads_a_command_creates_after_its_entry_point_are_counted_exactly() {
    let _g = slots();
    // A module given by path (the executable itself) also takes the
    // entry-point path; counter's workers are all created after the entry.
    let exe = targets().join("counter");
    let spec = format!("{}:counter", exe.display());
    let o = run(hwbreak()
        .args(["stat", "--json", &spec, "--"])
        .arg(&exe)
        .args(["400", "3", "4"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    let want = o
        .stderr
        .lines()
        .find(|l| l.starts_with("expect "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("counter="))
        })
        .unwrap_or_else(|| panic!("no expect line: {}", o.stderr))
        .parse::<u64>()
        .unwrap();
    assert_eq!(want, 400 * 7);
    assert_eq!(j["watches"][0]["hits"].as_u64().unwrap(), want, "{j}");
}

#[test]
fn a_library_constructor_write_is_not_watched_at_the_entry_point_but_is_by_its_raw_address() {
    let _g = slots();
    // libwatchme.so's constructor sets watchme_init once, before the entry point.
    let o = run(hwbreak()
        .args(["stat", "--json", "libwatchme.so:watchme_init", "--"])
        .arg(targets().join("uselib"))
        .arg("5"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j = &json_lines(&o.stdout)[0];
    assert_eq!(
        j["watches"][0]["hits"], 0,
        "armed after the constructor: {j}"
    );
    // Launched commands run without ASLR: the library loads there again,
    // and a raw address is armed from the first instruction.
    let addr = j["watches"][0]["addr"].as_str().unwrap();
    let o = run(hwbreak()
        .args(["watch", "--json", &format!("{addr}/4"), "--"])
        .arg(targets().join("uselib"))
        .arg("5"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    // The program is gone before hwbreak reads the library's mapping, so
    // place the constructor with nm: load base = watchme_init's address
    // minus its file address.
    let nm = Command::new("nm")
        .arg("-S")
        .arg(targets().join("libwatchme.so"))
        .output()
        .expect("run nm");
    let nm = String::from_utf8_lossy(&nm.stdout);
    let sym = |name: &str| -> (u64, u64) {
        let f: Vec<&str> = nm
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no {name} in nm output:\n{nm}"))
            .split_whitespace()
            .collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        (hex(f[0]), hex(f[1]))
    };
    let base =
        u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap() - sym("watchme_init").0;
    let (ctor, size) = sym("watchme_constructor");
    let ctor = base + ctor..=base + ctor + size;
    // x86 reports the instruction after the store: inside the constructor.
    let ips: Vec<u64> = json_lines(&o.stdout)
        .iter()
        .filter(|h| h["type"] == "hit")
        .map(|h| {
            u64::from_str_radix(h["ip"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        })
        .collect();
    assert!(
        ips.iter().any(|ip| ctor.contains(ip)),
        "the constructor's write ({ctor:#x?}) is among the hits at {ips:#x?}"
    );
}

#[test]
fn ctrl_c_ends_a_command_launched_at_its_entry_point_and_summarizes() {
    let _g = slots();
    let (_d, exe) = private_uselib(false);
    let mut hb = hwbreak()
        .args(["stat", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(&exe)
        .args(["2000000000", "wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The target's stdout (on hwbreak's stderr with --json): up to "ready".
    let mut err = BufReader::new(hb.stderr.take().unwrap());
    let mut text = String::new();
    while !text.ends_with("ready\n") {
        assert_ne!(err.read_line(&mut text).unwrap(), 0, "ended early: {text}");
    }
    let pid = line_value(&text, "pid=") as i32;
    assert_eq!(
        running(&exe),
        vec![pid],
        "the check used by the error tests sees it"
    );
    // It reads this line from hwbreak's stdin, then writes for a long time.
    writeln!(hb.stdin.take().unwrap(), "go").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill takes integers; the pid is our own live child.
    unsafe { libc::kill(hb.id() as i32, libc::SIGINT) };
    let o = hb.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{text}");
    let j = &json_lines(&String::from_utf8_lossy(&o.stdout))[0];
    assert!(j["watches"][0]["hits"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["target_exit"], "was killed by signal 15", "{j}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    assert!(running(&exe).is_empty());
}

// ------------------------------------------------------------ error paths

#[test]
fn a_command_missing_its_library_is_a_clear_error_before_its_entry_point() {
    let _g = slots();
    let (_d, exe) = private_uselib(true);
    let o = run(hwbreak()
        .args(["stat", "libwatchme.so:watchme_value", "--"])
        .arg(&exe)
        .arg("10"));
    let e = error_line(&o);
    assert_eq!(o.code, 1);
    assert!(e.contains("exited with status 127"), "{e}");
    assert!(e.contains("before reaching its entry point"), "{e}");
    // ld.so's own message is shown above ours.
    assert!(o.stderr.contains("libwatchme.so"), "{}", o.stderr);
    assert!(running(&exe).is_empty());
}

#[test]
fn a_library_the_command_does_not_load_lists_the_loaded_ones_and_mentions_dlopen() {
    let _g = slots();
    let (_d, exe) = private_uselib(false);
    let o = run(hwbreak()
        .args(["stat", "libnothere.so:x", "--"])
        .arg(&exe)
        .arg("10"));
    let e = error_line(&o);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(e.contains("'libnothere.so'"), "{e}");
    assert!(e.contains("libwatchme.so, "), "lists the loaded: {e}");
    assert!(e.contains("libc.so.6"), "{e}");
    assert!(e.contains("dlopen"), "{e}");
    assert!(e.contains("-p PID"), "{e}");
    assert!(running(&exe).is_empty(), "the stopped command was killed");
}

#[test]
fn an_unknown_name_in_a_library_lists_close_matches() {
    let _g = slots();
    let (_d, exe) = private_uselib(false);
    for spec in ["libwatchme.so:watchme_valu", "watchme_valu"] {
        let o = run(hwbreak().args(["watch", spec, "--"]).arg(&exe).arg("10"));
        let e = error_line(&o);
        assert_eq!(o.code, 1);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(e.contains("'watchme_valu'"), "{e}");
        assert!(e.contains("Did you mean: watchme_value"), "{e}");
        // Named by its command, not by the pid of a process now gone.
        assert!(e.contains(&format!("`{}`", exe.display())), "{e}");
        assert!(!e.contains("in process"), "{e}");
        assert!(running(&exe).is_empty(), "the stopped command was killed");
    }
}

#[test]
fn too_many_slots_for_library_globals_kills_the_stopped_command() {
    let _g = slots();
    let (_d, exe) = private_uselib(false);
    let o = run(hwbreak()
        .args(["stat"])
        .args(["libwatchme.so:watchme_value"; 5])
        .arg("--")
        .arg(&exe)
        .arg("10"));
    let e = error_line(&o);
    assert!(e.contains("need 5 hardware slots"), "{e}");
    assert!(running(&exe).is_empty());
}
