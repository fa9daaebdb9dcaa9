//! A set-user-ID program launched with `-- CMD` (issue 9 #6). Run by a normal
//! user, the exec changes its effective uid, the kernel makes it
//! non-dumpable and drops its perf events, and hwbreak used to report 0 hits
//! with exit status 0. Now it refuses before launching, naming the rule and
//! what to do. The unprivileged half re-runs as `nobody` (setpriv).

mod common;
#[path = "../../linux/tests/nobody/mod.rs"]
mod nobody;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory of the set-user-ID-root copies, for the `nobody` half.
const SETID_DIR: &str = "HWBREAK_TEST_SETID_DIR";

/// A directory anyone may enter holding set-user-ID-root copies of counter
/// and uselib (with libwatchme.so beside it, found by uselib's RUNPATH).
fn setuid_copies() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("hwbreak-setid")
        .tempdir()
        .unwrap();
    let dir = d.path().canonicalize().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (f, mode) in [
        ("counter", 0o4755),
        ("uselib", 0o4755),
        ("libwatchme.so", 0o755),
    ] {
        std::fs::copy(c_targets().join(f), dir.join(f)).unwrap();
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    (d, dir)
}

/// Whether the kernel honours set-ID bits in `dir` (not a `nosuid` mount).
fn suid_honoured(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a live local statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_flag & libc::ST_NOSUID == 0
}

#[test]
fn a_setuid_program_launched_by_a_normal_user_is_refused_instead_of_counting_0() {
    let _g = slots();
    let (_keep, dir) = setuid_copies();
    if !suid_honoured(&dir) {
        println!("SKIP: {} is on a nosuid mount", dir.display());
        return;
    }
    let Some(out) = nobody::run_as_nobody(
        "as_nobody_a_setuid_program_is_refused",
        &[(SETID_DIR, dir.display().to_string())],
    ) else {
        return;
    };
    assert_eq!(
        out.matches("refused: hwbreak: cannot launch").count(),
        2,
        "{out}"
    );
}

/// The half of the test above that runs as `nobody`.
#[test]
#[ignore = "run as nobody by a_setuid_program_launched_by_a_normal_user_is_refused_instead_of_counting_0"]
fn as_nobody_a_setuid_program_is_refused() {
    let dir = PathBuf::from(std::env::var(SETID_DIR).expect("run by the test that sets it"));
    let counter = dir.join("counter");
    let o = run(hwbreak()
        .args(["stat", "counter", "--"])
        .arg(&counter)
        .args(["100", "0", "1"]));
    assert_eq!(
        o.stderr,
        format!(
            "hwbreak: cannot launch `{0}`: {0} is set-user-ID (uid 0) and you are uid 65534 (gid 65534): the exec changes its effective ids, which makes it non-dumpable, and the kernel then drops every breakpoint on it (every count would be 0). Instead, start the program yourself and watch it with -p PID as root\n",
            counter.display()
        )
    );
    assert_clean_error(&o, "set-user-ID");
    assert!(
        !o.stdout.contains("pid="),
        "the program never ran: {}",
        o.stdout
    );
    println!("refused: {}", o.stderr.trim());

    // A library SPEC (ptrace): the kernel would run it without its privileges.
    let uselib = dir.join("uselib");
    let o = run(hwbreak()
        .args(["stat", "libwatchme.so:watchme_value", "--"])
        .arg(&uselib)
        .arg("10"));
    assert_eq!(
        o.stderr,
        format!(
            "hwbreak: cannot launch `{0}`: {0} is set-user-ID (uid 0) and you are uid 65534: under ptrace the kernel runs it without those privileges (only a tracer with CAP_SYS_PTRACE keeps them), so it would not be the program you asked for. Run hwbreak as root, or start the program yourself and watch it with -p PID as root\n",
            uselib.display()
        )
    );
    assert!(
        !o.stdout.contains("pid="),
        "the program never ran: {}",
        o.stdout
    );
    println!("refused: {}", o.stderr.trim());
}

#[test]
fn root_launching_a_setuid_root_program_is_refused_plainly_or_watched_exactly_at_its_entry() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root");
        return;
    }
    let _g = slots();
    let (_keep, dir) = setuid_copies();
    if !suid_honoured(&dir) {
        println!("SKIP: {} is on a nosuid mount", dir.display());
        return;
    }
    // Resolved before it starts, with randomisation off: the set-ID exec
    // turns it back on, so that is refused, naming -p.
    let counter = dir.join("counter");
    let o = run(hwbreak()
        .args(["stat", "counter", "--"])
        .arg(&counter)
        .args(["100", "0", "1"]));
    assert_clean_error(&o, "turns address randomisation back on for it");
    assert!(o.stderr.contains("watch it with -p PID"), "{}", o.stderr);
    assert!(
        !o.stdout.contains("pid="),
        "the program never ran: {}",
        o.stdout
    );
    // Stopped at its entry point under a root tracer: the bits are honoured,
    // the watches open after the exec, and every write is counted.
    let o = run(hwbreak()
        .args(["stat", "--json", "libwatchme.so:watchme_value", "--"])
        .arg(dir.join("uselib"))
        .arg("700"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        json_lines(&o.stdout)[0]["watches"][0]["hits"],
        700,
        "{}",
        o.stdout
    );
}
