//! Shared helpers for the symbols tests: build the C targets and the Rust demo,
//! start them stopped at their "ready" line, and read the addresses they print.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Build testdata/targets once per test binary; `None` (with a printed reason)
/// when gcc or make is missing.
pub fn c_targets() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/: make rebuilds only what changed, and nothing piles up in /tmp.
        let out = repo_root().join("target/symbols-tests/c");
        let r = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo_root().join("testdata/targets"))
            .arg(format!("OUT={}", out.display()))
            .output();
        match r {
            Ok(o) if o.status.success() => Some(out),
            Ok(o) => panic!(
                "make testdata/targets failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                eprintln!(
                    "SKIP: cannot run make to build the C targets ({e}); install gcc and make"
                );
                None
            }
        }
    })
    .as_deref()
}

/// Build and locate the `hwbreak-demo` binary (a separate target dir avoids
/// waiting on the lock of the cargo running this test).
pub fn demo_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target = repo_root().join("target/symbols-tests");
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "hwbreak-demo", "--target-dir"])
            .arg(&target)
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p hwbreak-demo");
        assert!(st.success(), "cargo build -p hwbreak-demo failed");
        target.join("debug/hwbreak-demo")
    })
}

/// A target process started with `wait`: it has printed its addresses and
/// `ready`, and blocks on stdin. Dropping it kills and reaps it.
pub struct Target {
    pub child: Child,
    stdin: Option<ChildStdin>,
    _out: BufReader<ChildStdout>,
    /// `addr NAME=0x...` lines, by NAME.
    pub addrs: HashMap<String, u64>,
    pub lines: Vec<String>,
}

impl Target {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn addr(&self, name: &str) -> u64 {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("target printed no 'addr {name}=': {:?}", self.lines))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `bin args...` and read its output up to `ready`.
pub fn start(bin: &Path, args: &[&str]) -> Target {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = HashMap::new();
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap() == 0 {
            panic!("{} exited before 'ready': {lines:?}", bin.display());
        }
        let l = l.trim_end().to_string();
        if l == "ready" {
            break;
        }
        if let Some(rest) = l.strip_prefix("addr ") {
            let (k, v) = rest.split_once('=').unwrap();
            let v = u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
            addrs.insert(k.to_string(), v);
        }
        lines.push(l);
    }
    Target {
        child,
        stdin,
        _out: out,
        addrs,
        lines,
    }
}
