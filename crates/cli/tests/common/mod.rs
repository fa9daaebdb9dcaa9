//! Helpers shared by the CLI test binaries (cli.rs, all_cpus.rs): the slot
//! lock, the hwbreak binary, the C targets of testdata/targets built once,
//! running hwbreak in the foreground or in the background (stopped by
//! SIGINT), and the checks every error path makes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

static SLOTS: Mutex<()> = Mutex::new(());

/// Held by every test that opens breakpoints: the debug registers are few,
/// and tests of one binary must not compete for them.
pub fn slots() -> MutexGuard<'static, ()> {
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `hwbreak` binary under test.
pub fn hwbreak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hwbreak"))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The C targets, built once into a temporary directory.
pub fn c_targets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hwbreak-cli-tests-{}", std::process::id()));
        let st = Command::new("make")
            .args(["-s", "-C"])
            .arg(workspace().join("testdata/targets"))
            .arg(format!("OUT={}", dir.display()))
            .status()
            .expect("run make");
        assert!(st.success(), "building the C targets failed");
        dir
    })
}

/// How a finished command ended, and what it said.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run to the end (stdin closed).
pub fn run(cmd: &mut Command) -> Out {
    let o = cmd.stdin(Stdio::null()).output().expect("run hwbreak");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Every line of `s` that is a JSON object, parsed.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

/// Start hwbreak in the background and wait until its watches are open
/// (the "watching ..." banner on stderr).
pub struct Background {
    child: Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_all: std::sync::Arc<Mutex<String>>,
}

impl Background {
    pub fn start(cmd: &mut Command) -> Background {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hwbreak");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let all = std::sync::Arc::new(Mutex::new(String::new()));
        let all2 = all.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                all2.lock().unwrap().push_str(&(l.clone() + "\n"));
                let _ = tx.send(l);
            }
        });
        let b = Background {
            child,
            stderr_lines: rx,
            stderr_all: all,
        };
        let t0 = Instant::now();
        loop {
            match b.stderr_lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains("watching") => break,
                Ok(_) => {}
                Err(_) => panic!(
                    "hwbreak never opened its watches; stderr: {}",
                    b.stderr_all.lock().unwrap()
                ),
            }
            assert!(t0.elapsed() < Duration::from_secs(60));
        }
        b
    }

    /// hwbreak's stdout, to read as it comes (then [`Background::finish`]
    /// has none to collect).
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().unwrap()
    }

    /// Wait for the end; the exit status and all of stderr.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let st = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr_all.lock().unwrap().clone();
        (st, stderr)
    }

    pub fn interrupt(&self) {
        // SAFETY: kill takes integers; the pid is our own live child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    pub fn finish(mut self) -> Out {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let st = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr_all.lock().unwrap().clone();
        Out {
            code: st.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

/// Free slots for watches on `pid`, as `hwbreak slots` reports them.
pub fn free_slots(pid: i32) -> u64 {
    let o = run(hwbreak().args(["slots", "--json", "-p", &pid.to_string()]));
    assert_eq!(o.code, 0, "slots failed: {}", o.stderr);
    json_lines(&o.stdout)[0]["free"].as_u64().unwrap()
}

/// Free slots for a new process (what `hwbreak slots` prints without -p): a
/// CPU-wide breakpoint takes one from every task, so this drops by one for
/// each slot an `-a` watch holds.
pub fn free_slots_for_new_process() -> u64 {
    let o = run(hwbreak().args(["slots", "--json"]));
    assert_eq!(o.code, 0, "slots failed: {}", o.stderr);
    json_lines(&o.stdout)[0]["free"].as_u64().unwrap()
}

/// An error exit: non-zero, exactly one line on stderr, no panic or Debug dump.
pub fn assert_clean_error(o: &Out, needle: &str) {
    assert_ne!(o.code, 0, "expected failure; stdout: {}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {}", o.stderr);
    assert!(lines[0].starts_with("hwbreak: "), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert!(!o.stderr.contains(" { "), "Debug dump? {}", o.stderr);
    assert!(
        o.stderr.to_lowercase().contains(&needle.to_lowercase()),
        "want {needle:?} in: {}",
        o.stderr
    );
}

/// `hwbreak-demo`, built once (its own target dir: no fight over cargo's lock).
pub fn demo() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_demo(&[], "debug"))
}

/// The demo as the README runs it (release: its atomics compile to
/// `lock inc` / `lock add`, not the debug build's `lock xadd`).
pub fn demo_release() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_demo(&["--release"], "release"))
}

fn build_demo(flags: &[&str], profile: &str) -> PathBuf {
    let tdir = workspace().join("target/cli-tests");
    let st = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "hwbreak-demo", "--target-dir"])
        .arg(&tdir)
        .args(flags)
        .current_dir(workspace())
        .status()
        .expect("run cargo");
    assert!(st.success(), "building hwbreak-demo failed");
    tdir.join(profile).join("hwbreak-demo")
}
