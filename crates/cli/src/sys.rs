//! The few things the CLI asks the OS itself: whether a PID exists, and
//! explaining a refused breakpoint open (for `slots`).

use crate::error::CliError;
use std::io;

/// x86-64 has four debug address registers (DR0–DR3) per CPU.
pub const SLOTS_PER_CPU: usize = hwbreak_core::arch::x86_64::NUM_SLOTS;

/// A one-line explanation of a failed breakpoint open on `pid`.
pub fn explain_open_error(e: &io::Error, pid: i32) -> String {
    let who = if pid == 0 {
        "this process".to_string()
    } else {
        format!("process {pid}")
    };
    match e.raw_os_error() {
        Some(libc::ESRCH) => {
            format!("process {pid} does not exist (it may have exited); check the PID with `ps`")
        }
        Some(errno @ (libc::EACCES | libc::EPERM)) => hwbreak_linux::procfs::permission_error(
            format!("open a breakpoint on {who}"),
            errno,
            hwbreak_linux::procfs::denied_for_task(pid),
        )
        .to_string(),
        Some(libc::ENOSPC) => {
            format!("no free hardware breakpoint slot for {who}; see `hwbreak slots`")
        }
        _ => format!("cannot open a breakpoint event on {who}: {e}"),
    }
}

/// Refuse a PID that does not exist, before anything else.
pub fn check_pid(pid: i32) -> Result<(), CliError> {
    if pid <= 0 {
        return Err(CliError::usage(format!(
            "PID {pid} is not a process id (it must be positive)"
        )));
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(CliError::new(format!(
            "process {pid} does not exist (it may have exited); check the PID with `ps`"
        )));
    }
    Ok(())
}
