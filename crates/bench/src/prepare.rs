//! Preparation: compile the peers, find the address, find the tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{BenchArgs, BPF_COUNT, BPF_PRINTF, GDB_SCRIPT, RAW_COUNT_C, SYMBOL, TARGET_C};

/// Everything the contenders' commands need.
pub(crate) struct Env {
    pub(crate) dir: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) raw_count: PathBuf,
    pub(crate) addr: u64,
    pub(crate) hwbreak: Option<PathBuf>,
    pub(crate) gdb: Option<PathBuf>,
    pub(crate) perf: Option<PathBuf>,
    pub(crate) bpftrace: Option<PathBuf>,
    pub(crate) threads: u32,
}

impl Env {
    pub(crate) fn prepare(dir: &Path, gcc: &Path, args: &BenchArgs) -> Result<Env> {
        for (name, text) in [
            ("target.c", TARGET_C),
            ("raw_count.c", RAW_COUNT_C),
            ("gdb_watch.gdb", GDB_SCRIPT),
            ("bpftrace_count.bt", BPF_COUNT),
            ("bpftrace_printf.bt", BPF_PRINTF),
        ] {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
        let target = dir.join("target");
        let raw_count = dir.join("raw_count");
        // Non-PIE so that `nm` gives the run-time address perf and bpftrace need;
        // -O0 keeps a frame pointer in the leaf loop for every stack walker.
        compile(
            gcc,
            &[
                "-O0",
                "-g",
                "-no-pie",
                "-fno-omit-frame-pointer",
                "-pthread",
            ],
            &dir.join("target.c"),
            &target,
        )?;
        compile(gcc, &["-O2"], &dir.join("raw_count.c"), &raw_count)?;
        let nm =
            find_in_path("nm").context("nm (binutils) is needed to find the target's address")?;
        let out = crate::children::output(Command::new(&nm).arg(&target))
            .with_context(|| format!("cannot run {}", nm.display()))?;
        let addr = nm_address(&String::from_utf8_lossy(&out.stdout), SYMBOL)
            .with_context(|| format!("nm found no `{SYMBOL}` in {}", target.display()))?;
        let hwbreak = match &args.hwbreak {
            Some(p) => Some(p.clone()),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.join("hwbreak"))),
        };
        Ok(Env {
            dir: dir.to_path_buf(),
            target,
            raw_count,
            addr,
            hwbreak,
            gdb: find_in_path("gdb"),
            perf: find_in_path("perf"),
            bpftrace: find_in_path("bpftrace"),
            threads: args.threads,
        })
    }
}

pub(crate) fn compile(gcc: &Path, flags: &[&str], src: &Path, out: &Path) -> Result<()> {
    let o = crate::children::output(Command::new(gcc).args(flags).arg(src).arg("-o").arg(out))
        .with_context(|| format!("cannot run {}", gcc.display()))?;
    if !o.status.success() {
        bail!(
            "gcc failed to build {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// The address of `symbol` in `nm` output (`ADDR TYPE NAME` lines).
pub(crate) fn nm_address(nm_out: &str, symbol: &str) -> Option<u64> {
    nm_out.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (a, _t, s) = (it.next()?, it.next()?, it.next()?);
        (s == symbol)
            .then(|| u64::from_str_radix(a, 16).ok())
            .flatten()
    })
}

pub(crate) fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

pub(crate) fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map_or_else(|e| format!("({path}: {e})"), |s| s.trim().to_string())
}

pub(crate) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or_else(|| "unknown".to_string(), |m| m.trim().to_string());
    let vm = if info
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"))
    {
        " (virtual machine)"
    } else {
        ""
    };
    format!("{model}{vm}")
}
