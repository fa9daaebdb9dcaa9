//! The CLI's output on the demo, pinned: `watch` (text, `--json`,
//! `--values`, `--no-stack`, an execute watch), `stat` (text, `--json`) and
//! `record` + `report` (text, `--json`), run on one demo worker so the order
//! of hits is fixed, and compared with the files in `tests/golden/` after
//! [`normalize`] has replaced what legitimately varies (times, pids, tids,
//! CPUs, the demo's path).
//!
//! Two modes:
//! - By default each output is compared with its golden file, normalized
//!   further by [`portable`] (addresses, offsets and frames outside the
//!   demo's source differ between compilers and libcs).
//! - With `HWBREAK_BASELINE=/path/to/old/hwbreak`, each form is run with
//!   both binaries and compared after [`normalize`] only: byte for byte
//!   what a user sees, apart from times and ids. This is how a refactor
//!   shows "no behaviour change" (`docs/CLI.md`, "Output stability").
//!
//! `HWBREAK_BLESS=1` rewrites the golden files from the binary under test.

mod common;

use common::*;
use regex::Regex;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The demo's arguments: one worker, three rounds, 20 ms apart.
const DEMO_ARGS: &[&str] = &[
    "--early",
    "1",
    "--late",
    "0",
    "--iterations",
    "3",
    "--delay-ms",
    "20",
];

/// One form of the command line, and the golden file it is compared with.
struct Form {
    name: &'static str,
    args: &'static [&'static str],
}

/// The forms that launch the demo (`-- DEMO DEMO_ARGS` is appended).
const LAUNCHED: &[Form] = &[
    Form {
        name: "watch_values",
        args: &["watch", "--values", "STATE.hits"],
    },
    Form {
        name: "watch_text",
        args: &["watch", "STATE.hits", "STATE.total"],
    },
    Form {
        name: "watch_json",
        args: &["watch", "--json", "STATE.hits", "STATE.total"],
    },
    Form {
        name: "watch_json_values",
        args: &["watch", "--json", "--values", "STATE.hits"],
    },
    Form {
        name: "watch_no_stack",
        args: &["watch", "--no-stack", "STATE.table[1]", "STATE.hits"],
    },
    Form {
        name: "watch_execute",
        args: &["watch", "record_hit"],
    },
    Form {
        name: "stat_text",
        args: &["stat", "STATE.hits", "STATE.total"],
    },
    Form {
        name: "stat_json",
        args: &["stat", "--json", "STATE.hits"],
    },
];

/// What one run printed, both streams, the demo's own lines left out (they
/// interleave with hwbreak's at random).
fn run_form(bin: &Path, args: &[&str], rec: Option<&Path>) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if let Some(r) = rec {
        cmd.arg("-o").arg(r);
    }
    if args[0] != "report" {
        cmd.arg("--").arg(demo_release()).args(DEMO_ARGS);
    }
    let o = run(&mut cmd);
    let keep = |l: &&str| {
        !["pid=", "addr ", "expect ", "done ", "ready"]
            .iter()
            .any(|p| l.starts_with(p))
    };
    let mut s = format!("exit {}\n--- stdout\n", o.code);
    for l in o.stdout.lines().filter(keep) {
        s += l;
        s.push('\n');
    }
    s += "--- stderr\n";
    for l in o.stderr.lines().filter(keep) {
        s += l;
        s.push('\n');
    }
    s
}

/// Every form's output from `bin`, by name, each normalized.
fn outputs(bin: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in LAUNCHED {
        out.push((f.name.to_string(), normalize(&run_form(bin, f.args, None))));
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("demo.rec");
    let recorded = run_form(
        bin,
        &["record", "--values", "STATE.hits", "STATE.total"],
        Some(&rec),
    );
    let r = rec.to_str().unwrap();
    for (name, args) in [
        ("report_text", vec!["report", r]),
        ("report_json", vec!["report", "--json", r]),
        ("report_top1", vec!["report", "--top", "1", r]),
    ] {
        out.push((name.to_string(), normalize(&run_form(bin, &args, None))));
    }
    out.push(("record".to_string(), normalize(&recorded)));
    for (_, s) in &mut out {
        *s = s.replace(r, "RECFILE");
    }
    out
}

/// Replace what differs from run to run: times and rates, pids and tids
/// (numbered by first appearance), CPUs, and the demo's path.
fn normalize(s: &str) -> String {
    let demo = demo_release();
    let canonical = std::fs::canonicalize(demo).unwrap();
    let mut s = s.replace(demo.to_str().unwrap(), "DEMO");
    s = s.replace(canonical.to_str().unwrap(), "DEMO");
    let subs: &[(&str, &str)] = &[
        (r#""t":[0-9.]+"#, r#""t":T"#),
        (r#""time_ns":[0-9]+"#, r#""time_ns":N"#),
        (r#""cpu":[0-9]+"#, r#""cpu":C"#),
        (r#""duration_s":[0-9.e-]+"#, r#""duration_s":D"#),
        (r"(?m)^ *[0-9]+\.[0-9]{6}  tid", "T  tid"),
        (r"hits in [0-9.]+ s \([0-9]+/s\)", "hits in D s (R/s)"),
        (r"(?m)^[0-9]+\.[0-9]{3} seconds$", "D seconds"),
        // A stack copied before the libc holding `start_thread` is mapped
        // in the symbolizer is marked cut above `start_thread`: a race of
        // the launch, not of the code under test (issue 9, item 2).
        (r#","stack_truncated":true"#, ""),
        (r#""stacks_cut":[0-9]+"#, r#""stacks_cut":K"#),
        (r"(?m)^ *← … deeper frames not copied.*\n", ""),
        (r"(?m)^[0-9]+ of the stacks were deeper .*\n", ""),
    ];
    for (re, to) in subs {
        s = Regex::new(re).unwrap().replace_all(&s, *to).into_owned();
    }
    // Thread and process ids: every number that appears as one, wherever it
    // appears (the summary's thread table prints them bare).
    let ids = Regex::new(
        r#"(?:"tid":|"pid":|tid |pid |process |record of pid )([0-9]+)|(?m)^ +([0-9]{3,}) +[0-9]+$"#,
    )
    .unwrap();
    let mut seen: Vec<String> = Vec::new();
    for c in ids.captures_iter(&s) {
        let id = c.get(1).or(c.get(2)).unwrap().as_str().to_string();
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    for (k, id) in seen.iter().enumerate() {
        let re = Regex::new(&format!(r"\b{id}\b")).unwrap();
        s = re.replace_all(&s, format!("ID{k}")).into_owned();
    }
    // A thread's name is read from /proc when its first hit is printed: a
    // thread that has exited by then is shown by number alone.
    Regex::new(r"tid (ID[0-9]+)( [^ ]+)? +")
        .unwrap()
        .replace_all(&s, "tid $1 COMM ")
        .into_owned()
}

/// Further: what a different compiler or libc changes (addresses, offsets,
/// the frames outside the demo's own source, column widths of the thread
/// table).
fn portable(s: &str) -> String {
    let mut out = String::new();
    for l in s.lines() {
        // Text frames outside the demo (std, libc).
        if l.trim_start().starts_with("← ") && !l.contains("src/main.rs") {
            continue;
        }
        out += l;
        out.push('\n');
    }
    // JSON frames outside the demo.
    let frame = Regex::new(r#",?\{"ip":"0x[0-9a-f]+"[^{}]*\}"#).unwrap();
    let out = frame
        .replace_all(&out, |c: &regex::Captures| {
            let f = c.get(0).unwrap().as_str();
            if f.contains("crates/demo/src/main.rs") {
                f.to_string()
            } else {
                String::new()
            }
        })
        .into_owned();
    let subs: &[(&str, &str)] = &[
        (r"0x[0-9a-f]+", "0xA"),
        (r#""(offset|module_offset)":[0-9]+"#, r#""$1":N"#),
        (
            r#""file":"[^"]*crates/demo/src/main.rs""#,
            r#""file":"main.rs""#,
        ),
        (r"\[,", "["),
        (r"[ ]+", " "),
    ];
    let mut out = out;
    for (re, to) in subs {
        out = Regex::new(re).unwrap().replace_all(&out, *to).into_owned();
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn demo_output_is_unchanged_in_every_form() {
    let _slots = slots();
    let new = outputs(Path::new(env!("CARGO_BIN_EXE_hwbreak")));
    if let Some(old) = std::env::var_os("HWBREAK_BASELINE") {
        let old = outputs(Path::new(&old));
        let mut differ = Vec::new();
        for ((name, a), (_, b)) in old.iter().zip(&new) {
            if a != b {
                eprintln!("=== {name}: baseline\n{a}=== {name}: now\n{b}");
                differ.push(name.clone());
            }
        }
        assert!(differ.is_empty(), "output changed in {differ:?}");
        eprintln!(
            "{} forms byte-identical to the baseline (times and ids aside)",
            new.len()
        );
    }
    let bless = std::env::var_os("HWBREAK_BLESS").is_some();
    let mut differ = Vec::new();
    for (name, s) in &new {
        let path = golden_dir().join(format!("{name}.txt"));
        let got = portable(s);
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with HWBREAK_BLESS=1", path.display()));
        if got != want {
            eprintln!("=== {name}: golden\n{want}=== {name}: now\n{got}");
            differ.push(name.clone());
        }
    }
    assert!(
        differ.is_empty(),
        "output differs from tests/golden in {differ:?}"
    );
}

#[test]
fn normalize_numbers_ids_by_first_appearance_and_keeps_counts() {
    let s = "  0.005106  tid 25343 early-1     STATE.hits w\n  thread          hits\n  25343              3\n";
    let n = normalize(s);
    assert_eq!(
        n,
        "T  tid ID0 COMM STATE.hits w\n  thread          hits\n  ID0              3\n"
    );
    assert!(portable("  ← std::rt::lang_start (/rustc/x/rt.rs:1)\n").is_empty());
}
