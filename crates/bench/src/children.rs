//! Every process the bench starts, and what happens to them on a signal.
//!
//! A contender's run is a tree of processes: gdb, perf, bpftrace, hwbreak or
//! the raw C peer, holding a hardware breakpoint, and under it the target,
//! spinning at 100 % CPU for N writes. Each step is started in its own process
//! group through [`spawn`], which registers the group here. On SIGINT, SIGTERM
//! or SIGHUP, [`install`]'s handler thread kills every registered group and
//! every descendant of the bench (SIGKILL: a peer must not get to run on with
//! a breakpoint), waits until they are dead, removes the bench's temporary
//! directory, and exits with 128 + the signal's number. The bench is the
//! child subreaper of its tree (`PR_SET_CHILD_SUBREAPER`), so a grandchild
//! whose parent died first is re-parented to the bench and still found.
//!
//! Hand-written rather than a crate's: the kill has to happen under the same
//! lock as the spawns, so that no step can start after the handler has run.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What the handler must clean up.
#[derive(Default)]
struct Registry {
    /// Process groups of the steps that are running (each step leads its own).
    groups: Vec<i32>,
    /// The temporary directory to remove (none with `--keep`).
    dir: Option<PathBuf>,
    /// A signal arrived: start nothing more.
    stopping: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    groups: Vec::new(),
    dir: None,
    stopping: false,
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock cannot leave the lists inconsistent
    // (each change is one push or retain), so a poisoned lock is still usable.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the handler thread for SIGINT, SIGTERM and SIGHUP, which cleans up
/// `dir` (unless `keep`) and every registered process, then exits.
pub(crate) fn install(dir: &Path, keep: bool) -> Result<()> {
    registry().dir = (!keep).then(|| dir.to_path_buf());
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointer; it only
    // marks this process as the reaper of its orphaned descendants.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_CHILD_SUBREAPER)");
    }
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install the signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // The lock is held until the exit: the main thread's next spawn,
            // forget or finish waits for it, so the bench ends here.
            let mut reg = registry();
            let killed = stop_everything(&mut reg);
            let removed = reg.dir.take().map(|d| match std::fs::remove_dir_all(&d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => (Err(e), d),
                _ => (Ok(()), d),
            });
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            let mut msg = format!("hwbreak-bench: stopped by {name}: killed {killed} process(es)");
            match removed {
                Some((Ok(()), d)) => msg.push_str(&format!(", removed {}", d.display())),
                Some((Err(e), d)) => {
                    msg.push_str(&format!(", could not remove {}: {e}", d.display()))
                }
                None => {}
            }
            eprintln!("{msg}");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// Spawns `cmd` as the leader of a new process group, registered for the
/// signal handler; refuses once a signal has arrived. Call [`forget`] with
/// the child's id once it has been waited for.
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let mut reg = registry();
    if reg.stopping {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the bench is stopping (a signal arrived)",
        ));
    }
    let child = cmd.spawn()?;
    reg.groups.push(child.id() as i32);
    Ok(child)
}

/// Unregisters a step's process group once its leader has been reaped.
pub(crate) fn forget(pid: u32) {
    registry().groups.retain(|g| *g != pid as i32);
}

/// Runs `cmd` to the end through [`spawn`], collecting its output.
pub(crate) fn output(cmd: &mut Command) -> io::Result<std::process::Output> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd)?;
    let pid = child.id();
    let out = child.wait_with_output();
    forget(pid);
    out
}

/// Kills every registered group and every descendant, waits until they are
/// dead, and returns how many it killed. The caller holds the lock, so that
/// no new step starts meanwhile.
fn stop_everything(reg: &mut Registry) -> usize {
    reg.stopping = true;
    let me = std::process::id() as i32;
    let mut killed = std::collections::BTreeSet::new();
    // Until a pass finds nobody alive: a process may fork while we look.
    loop {
        let alive: Vec<i32> = descendants(me)
            .into_iter()
            .filter(|p| !is_zombie(*p))
            .collect();
        for g in &reg.groups {
            // SAFETY: kill(2) takes no pointer; `g` is a process group this
            // bench created (its leader is our child, not yet unregistered).
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        if alive.is_empty() {
            break;
        }
        for p in &alive {
            // SAFETY: kill(2) takes no pointer; `p` is our descendant, read
            // from /proc just now (the bench is their subreaper, so they
            // cannot be re-parented away from us and their pid reused).
            unsafe { libc::kill(*p, libc::SIGKILL) };
            killed.insert(*p);
        }
        wait_dead(&alive);
    }
    killed.len()
}

/// The bench is done: from here a signal only removes the directory (if it
/// is still there) and exits; and if a signal's handler is already running,
/// this waits for it to end the process.
pub(crate) fn finish() {
    registry().stopping = true;
}

/// Waits until each of `pids` is a zombie or gone (SIGKILL is delivered when
/// the process next leaves the kernel), at most a few seconds in all.
fn wait_dead(pids: &[i32]) {
    let start = Instant::now();
    while pids
        .iter()
        .any(|p| !is_zombie(*p) && Path::new(&format!("/proc/{p}")).exists())
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Is `pid` a zombie (dead, not yet reaped)? False when it is gone.
fn is_zombie(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state == 'Z')
}

/// State and parent of `pid`, from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every process below `root` in the parent tree, from /proc.
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?.1)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_finds_a_child_and_its_grandchild() {
        let mut c = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let shell = c.id() as i32;
        // The shell forks its sleep soon after it starts.
        let below = loop {
            let d = descendants(shell);
            if !d.is_empty() || c.try_wait().unwrap().is_some() {
                break d;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let me = std::process::id() as i32;
        assert!(descendants(me).contains(&shell));
        assert_eq!(below.len(), 1, "the shell's sleep: {below:?}");
        assert!(descendants(me).contains(&below[0]));
        for p in below.iter().chain([&shell]) {
            // SAFETY: kill(2) takes no pointer; `p` is our own descendant.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        c.wait().unwrap();
    }

    #[test]
    fn proc_stat_reads_the_parent_of_a_process_whose_name_has_spaces_and_parens() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("sl ep) (x");
        std::fs::copy("/bin/sleep", &odd).unwrap();
        let mut c = Command::new(&odd).arg("30").spawn().unwrap();
        let pid = c.id() as i32;
        let (state, ppid) = proc_stat(pid).unwrap();
        assert_eq!(ppid, std::process::id() as i32);
        assert!("RSD".contains(state), "{state}");
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(proc_stat(pid), None, "reaped: gone");
    }
}
