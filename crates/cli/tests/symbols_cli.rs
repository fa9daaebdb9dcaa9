//! Symbols as the CLI uses them. `hwbreak watch|stat SPEC -- SCRIPT`: a `#!`
//! script or a wrapper; names resolve in the ELF program that actually runs:
//! the script's interpreter, or the program a wrapper `exec`s (CPython as
//! Debian ships it, with python3.11-dbg, for the interpreter cases). And raw
//! addresses copied from `nm` for a PIE: refused, with the run-time address.
//! Real hardware breakpoints.

mod common;

use common::{c_targets, hwbreak, run, slots};
use std::path::{Path, PathBuf};

/// An executable script with `body` in a fresh temp dir (kept alive by the dir).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `hwbreak stat SPEC -- WRAPPER ITER 1 1`, where WRAPPER is a shell script
/// running the counter target: with `exec` when `exec` is "exec ".
fn stat_through_wrapper(spec: &str, exec: &str, iters: &str) -> common::Out {
    let t = tempfile::tempdir().unwrap();
    let counter = c_targets().join("counter");
    let w = script(
        t.path(),
        "wrap.sh",
        &format!("#!/bin/sh\n{exec}{} \"$@\"\n", counter.display()),
    );
    run(hwbreak()
        .args(["stat", spec, "--"])
        .arg(&w)
        .args([iters, "1", "1"]))
}

#[test]
fn wrapper_script_that_execs_the_program_is_followed_to_it_and_counts_exactly() {
    let _g = slots();
    let o = stat_through_wrapper("state.count", "exec ", "100");
    assert_eq!(o.code, 0, "{}", o.stderr);
    // counter's 2 threads write state.count 100 times each.
    let line = o
        .stdout
        .lines()
        .find(|l| {
            l.contains("state.count")
                && !l.starts_with("addr")
                && !l.starts_with("expect")
                && !l.starts_with("done")
        })
        .unwrap_or_else(|| panic!("{}", o.stdout));
    assert_eq!(line.split_whitespace().next(), Some("200"), "{line}");
    assert!(!o.stderr.contains("not a readable ELF"), "{}", o.stderr);
}

#[test]
fn wrapper_that_runs_the_program_without_exec_is_a_clear_error() {
    let _g = slots();
    let o = stat_through_wrapper("counter", "", "10");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one error line: {}", o.stderr);
    assert!(
        o.stderr.contains("without running another program"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("must `exec` the program"), "{}", o.stderr);
}

/// Debian's CPython 3.11, or `None` (SKIP printed).
fn python() -> Option<&'static Path> {
    let py = Path::new("/usr/bin/python3.11");
    if !py.exists() {
        eprintln!("SKIP: /usr/bin/python3.11 missing; install python3.11");
        return None;
    }
    Some(py)
}

#[test]
fn script_whose_interpreter_lacks_the_name_is_refused_before_it_runs() {
    let _g = slots();
    let Some(py) = python() else { return };
    let t = tempfile::tempdir().unwrap();
    let marker = t.path().join("ran");
    let s = script(
        t.path(),
        "s.py",
        &format!(
            "#!{}\nopen({:?}, 'w').write('x')\n",
            py.display(),
            marker.display()
        ),
    );
    let o = run(hwbreak()
        .args(["stat", "no_such_variable_xyz", "--"])
        .arg(&s));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one error line: {}", o.stderr);
    assert!(
        o.stderr.contains("is a script run by /usr/bin/python3.11"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("no_such_variable_xyz"), "{}", o.stderr);
    assert!(!marker.exists(), "the script must not have run");
}

#[test]
fn script_names_resolve_in_its_interpreter_with_debug_symbols() {
    let _g = slots();
    let Some(py) = python() else { return };
    let t = tempfile::tempdir().unwrap();
    let s = script(
        t.path(),
        "s.py",
        &format!(
            "#!{}\nimport gc\nfor _ in range(3): gc.collect()\n",
            py.display()
        ),
    );
    // A field of CPython's runtime state, from python3.11-dbg's DWARF.
    let o = run(hwbreak()
        .args([
            "stat",
            "--json",
            "_PyRuntime.gilstate.check_enabled:rw",
            "--",
        ])
        .arg(&s));
    if o.stderr.contains("has no debug info") || o.stderr.contains("no variable or function") {
        eprintln!("SKIP: no debug info for python3.11; install python3.11-dbg");
        return;
    }
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("watching _PyRuntime.gilstate.check_enabled"),
        "{}",
        o.stderr
    );
}

/// `nm`'s address for `name` in `file`, or `None` (SKIP printed) without nm.
fn nm_address(file: &Path, name: &str) -> Option<u64> {
    let out = match std::process::Command::new("nm").arg(file).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run nm ({e}); install binutils");
            return None;
        }
    };
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 3 && f[2] == name).then(|| u64::from_str_radix(f[0], 16).unwrap())
    })
}

#[test]
fn link_time_address_of_a_pie_symbol_is_refused_naming_the_symbol() {
    let _g = slots();
    let counter = c_targets().join("counter");
    let Some(link) = nm_address(&counter, "counter") else {
        return;
    };
    // Launched: the PIE is not loaded yet, so the address cannot be its.
    let o = run(hwbreak()
        .args(["stat", &format!("{link:#x}"), "--"])
        .arg(&counter)
        .args(["10", "1", "1"]));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one error line: {}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("{link:#x} is the link-time address of 'counter'")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("watch 'counter' by name"), "{}", o.stderr);
    assert!(
        !o.stdout.contains("done counter="),
        "the program must not have run"
    );
}
