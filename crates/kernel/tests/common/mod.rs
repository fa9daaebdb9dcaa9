//! Host side of the kernel tests: build the kernel image (a nested `cargo
//! build` with the kernel's flags into its own target directory), boot it
//! under `qemu-system-x86_64 -accel tcg`, and read its console and exit code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The flags a freestanding kernel needs on the host target (no `rustup
/// target add`): no unwinding, absolute addresses, no red zone (interrupts
/// push onto the interrupted stack).
pub const KERNEL_RUSTFLAGS: &[&str] = &[
    "-C",
    "panic=abort",
    "-C",
    "relocation-model=static",
    "-C",
    "no-redzone=yes",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the kernel image once per test binary; its path, or why not.
pub fn image() -> Result<PathBuf, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE.get_or_init(build_image).clone()
}

fn build_image() -> Result<PathBuf, String> {
    let ws = workspace();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
        .join("kernel-image");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&ws)
        .args([
            "build",
            "--release",
            "-p",
            "hwbreak-kernel",
            "--features",
            "image",
        ])
        .args([
            "--bin",
            "hwbreak-kernel",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", KERNEL_RUSTFLAGS.join("\x1f"))
        // Symbols and line tables for gdb; the image stays small.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "true")
        .env("CARGO_PROFILE_RELEASE_STRIP", "none")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo to build the kernel image: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the kernel image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/hwbreak-kernel"))
}

/// Whether QEMU is installed; prints the SKIP line when not.
pub fn have_qemu() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIP: qemu-system-x86_64 not found (apt-get install --no-install-recommends qemu-system-x86)");
    }
    ok
}

/// One boot: the console text and the kernel's exit code.
pub struct Boot {
    /// Everything the kernel printed on COM1.
    pub log: String,
    /// The kernel's code (QEMU exits with `2*code+1`): 0 all passed,
    /// 1 a case failed, 2 panic, 3 unexpected exception; `None` when QEMU
    /// ended without the kernel choosing (a triple fault, a signal).
    pub code: Option<i32>,
}

impl Boot {
    /// Lines starting with `prefix`.
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.log.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    /// Panic with the whole log unless every case named passed and the
    /// kernel exited with 0.
    pub fn assert_passed(&self, cases: &[&str]) {
        for c in cases {
            assert!(
                self.log.lines().any(|l| l == format!("PASS {c}")),
                "case {c} did not pass; log:\n{}",
                self.log
            );
        }
        assert_eq!(self.code, Some(0), "exit code; log:\n{}", self.log);
    }
}

/// QEMU arguments common to every boot: TCG, `smp` CPUs, no devices but the
/// exit port, the console on stdout.
pub fn qemu_command(image: &Path, smp: usize, append: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-m",
        "128M",
        "-nodefaults",
        "-display",
        "none",
    ])
    .args(["-smp", &smp.to_string()])
    .args([
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ])
    .args(["-serial", "stdio"])
    .arg("-kernel")
    .arg(image)
    .args(["-append", append])
    .stdin(Stdio::null());
    c
}

/// Boot the kernel on `smp` CPUs with command line `append`. `None` (after
/// printing SKIP) when QEMU is missing.
pub fn boot(smp: usize, append: &str) -> Option<Boot> {
    if !have_qemu() {
        return None;
    }
    let image = image().unwrap_or_else(|e| panic!("{e}"));
    let out = qemu_command(&image, smp, append)
        .output()
        .expect("run qemu-system-x86_64");
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let code = out.status.code().filter(|c| c & 1 == 1).map(|c| c >> 1);
    Some(Boot { log, code })
}

/// Boot with `cases=` the given cases and assert each passed.
pub fn run_cases(smp: usize, cases: &[&str]) -> Option<Boot> {
    let b = boot(smp, &format!("cases={}", cases.join(",")))?;
    b.assert_passed(cases);
    Some(b)
}
