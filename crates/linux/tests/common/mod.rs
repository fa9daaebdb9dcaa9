//! Shared test helpers: a lock for the 4 hardware slots, C targets built
//! with gcc into a temp dir, and a line protocol to drive them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Tests that hold debug-register slots take this, so they never run in
/// parallel and steal each other's slots (4 per thread and CPU).
pub fn slots() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn build_dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("hwbreak-linux-tests")
            .tempdir()
            .unwrap();
        d.keep()
    })
}

/// Compile `tests/c/<name>.c` (once per test binary) and return the executable.
pub fn c_target(name: &str) -> PathBuf {
    build_c(
        name,
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c")),
    )
}

/// Compile `testdata/targets/<name>.c` (once per test binary).
pub fn testdata_target(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/targets");
    build_c(name, &root.join(format!("{name}.c")))
}

fn build_c(name: &str, src: &std::path::Path) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let out = build_dir().join(name);
    if out.exists() {
        return out;
    }
    let st = Command::new("gcc")
        .args(["-O1", "-g", "-pthread", "-fno-omit-frame-pointer", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("gcc must be installed to build the C test targets");
    assert!(st.success(), "gcc failed on {}", src.display());
    out
}

/// A running C target speaking the line protocol.
pub struct Target {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: BufReader<ChildStdout>,
    pub addr: u64,
    pub pid: i32,
}

impl Target {
    pub fn spawn(name: &str, args: &[&str]) -> Target {
        let mut child = Command::new(c_target(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        let (addr, pid) = parse_addr_line(&l);
        l.clear();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        Target {
            child,
            stdin,
            out,
            addr,
            pid,
        }
    }

    /// Tell it to start writing.
    pub fn go(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    /// Wait for "done <writes>" and return the writes it made.
    pub fn done(&mut self) -> u64 {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim()
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("bad line {l:?}"))
            .parse()
            .unwrap()
    }

    /// Let it exit and reap it.
    pub fn finish(mut self) {
        self.stdin.take();
        self.child.wait().unwrap();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_addr_line(l: &str) -> (u64, i32) {
    let f: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(f[0], "addr", "bad line {l:?}");
    let addr = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
    (addr, f[3].parse().unwrap())
}

pub fn gettid() -> i32 {
    // SAFETY: a libc call with no preconditions beyond valid pointers to live locals.
    unsafe { libc::gettid() }
}

/// Setup that needs all 4 slots of a thread: `None` (after printing why) if
/// the kernel says another perf user holds some, e.g. a CPU-wide breakpoint
/// of another tool on this shared machine, which takes a slot from every task.
pub fn all_slots<T>(r: Result<T, hwbreak_linux::Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e @ hwbreak_linux::Error::NoSlot { .. }) => {
            println!("SKIP: the 4 debug-register slots are not all free on this machine: {e}");
            None
        }
        Err(e) => panic!("setup failed: {e:?}"),
    }
}
