//! Refuse a launch whose program is set-user-ID or set-group-ID in a way
//! that would make every count 0 (issue 9 #6).
//!
//! The rule is the kernel's (`begin_new_exec`): an exec after which the
//! effective uid differs from the real uid (or the effective gid from the
//! real gid) makes the process non-dumpable, and a non-dumpable process's
//! perf events are removed at that exec (`perf_event_exit_task`). A watch
//! opened before the exec ([`super::Gated`]) then counts nothing and the
//! program exits 0. Under ptrace ([`super::StoppedAtEntry`]) the kernel
//! honours the set-ID bits only for a tracer with `CAP_SYS_PTRACE` (root),
//! and then the watches open after the exec and work; for anyone else it
//! runs the program without its privileges, which is not the program the
//! user asked for, so that is refused too.
//!
//! The bits do nothing (and nothing is refused) on a `#!` script, on a
//! `nosuid` mount, or with `no_new_privs` set.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file `execvp` would run for `cmd`: its program if it has a `/`,
/// else the first executable file of that name in its `PATH`.
fn program_file(cmd: &Command) -> Option<PathBuf> {
    let prog = cmd.get_program();
    if prog.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(prog));
    }
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == OsStr::new("PATH"))
        .and_then(|(_, v)| v.map(|v| v.to_os_string()))
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Whether the kernel ignores set-ID bits for `file` here: a `#!` script,
/// a `nosuid` mount, or `no_new_privs` on this process (inherited).
fn bits_ignored(file: &Path) -> bool {
    let mut magic = [0u8; 2];
    if std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"#!"
    {
        return true;
    }
    if let Ok(c) = std::ffi::CString::new(file.as_os_str().as_bytes()) {
        // SAFETY: statvfs is plain data; all-zero is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path, `st` a live local statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_NOSUID != 0 {
            return true;
        }
    }
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    (unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) }) == 1
}

/// Why launching `cmd` cannot be watched, or `None`. `traced`: the launch
/// stops the program under ptrace and opens the watches after its exec;
/// `no_aslr`: the launch counts on `ADDR_NO_RANDOMIZE` ([`super::Gated::spawn`]).
pub(super) fn refusal(cmd: &Command, traced: bool, no_aslr: bool) -> Option<String> {
    let file = program_file(cmd)?;
    let m = file.metadata().ok()?;
    let suid = m.mode() & libc::S_ISUID != 0;
    // Without group execute, set-group-ID means mandatory locking, not a gid.
    let sgid = m.mode() & libc::S_ISGID != 0 && m.mode() & libc::S_IXGRP != 0;
    if !suid && !sgid {
        return None;
    }
    // SAFETY: these id getters have no preconditions and cannot fail.
    let (ruid, euid, rgid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    let new_euid = if suid { m.uid() } else { euid };
    let new_egid = if sgid { m.gid() } else { egid };
    if bits_ignored(&file) {
        return None;
    }
    let changes = new_euid != ruid || new_egid != rgid;
    if !changes {
        if traced || !no_aslr {
            return None;
        }
        // Ids kept (root running a set-user-ID-root program), but any
        // honoured set-ID bit clears ADDR_NO_RANDOMIZE (PER_CLEAR_ON_SETID).
        return Some(format!(
            "{} is set-user-ID or set-group-ID, so the kernel turns address randomisation back on for it and its addresses cannot be resolved before it starts. Instead, start the program yourself and watch it with -p PID",
            file.display()
        ));
    }
    let what = match (suid && new_euid != ruid, sgid && new_egid != rgid) {
        (true, true) => format!(
            "set-user-ID (uid {}) and set-group-ID (gid {})",
            m.uid(),
            m.gid()
        ),
        (true, false) => format!("set-user-ID (uid {})", m.uid()),
        _ => format!("set-group-ID (gid {})", m.gid()),
    };
    let root = euid == 0;
    if traced {
        if root {
            // Honoured under a root tracer; the watches open after the exec.
            return None;
        }
        return Some(format!(
            "{} is {what} and you are uid {ruid}: under ptrace the kernel runs it without those privileges (only a tracer with CAP_SYS_PTRACE keeps them), so it would not be the program you asked for. Run hwbreak as root, or start the program yourself and watch it with -p PID as root",
            file.display()
        ));
    }
    let fix = "start the program yourself and watch it with -p PID as root";
    Some(format!(
        "{} is {what} and you are uid {ruid} (gid {rgid}): the exec changes its effective ids, which makes it non-dumpable, and the kernel then drops every breakpoint on it (every count would be 0). Instead, {fix}",
        file.display()
    ))
}
