//! Re-run one `#[ignore]`d test of this test binary as the user `nobody`, to
//! check what an unprivileged user is told about a root process.

/// Run test `name` of the current test binary as uid/gid 65534 with `env`.
/// Returns its stdout once it ran and succeeded (the caller checks the
/// message); prints `SKIP` and why and returns `None` when it cannot run here
/// (not root, no setpriv, the binary not runnable as nobody).
pub fn run_as_nobody(name: &str, env: &[(&str, String)]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root to run a check as `nobody` against a root process");
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("SKIP: cannot run setpriv ({e})");
            return None;
        }
    };
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr);
    if !so.contains("running 1 test") {
        println!("SKIP: the test binary cannot run as nobody: {so}{se}");
        return None;
    }
    assert!(out.status.success(), "child failed:\n{so}\n{se}");
    Some(so)
}
