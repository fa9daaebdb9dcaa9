//! The few things the CLI asks the OS itself: reading a watched variable's
//! bytes, and explaining a refused breakpoint open (for `slots`).

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

/// Read up to 8 bytes at `addr` in process `pid` (little-endian, zero-extended).
pub fn read_value(pid: i32, addr: u64, len: u64) -> Option<u64> {
    let n = len.min(8) as usize;
    let mut buf = [0u8; 8];
    read_exact(pid, addr, &mut buf[..n]).then(|| u64::from_le_bytes(buf))
}

/// Fill `buf` from `addr` in process `pid`; false unless every byte was read.
pub fn read_exact(pid: i32, addr: u64, buf: &mut [u8]) -> bool {
    let n = buf.len();
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: n,
    };
    // SAFETY: `local` points at `buf`, which is live and `n` bytes long; the
    // remote side is only read by the kernel, which checks it.
    let got = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    got == n as isize
}
