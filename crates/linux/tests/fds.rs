//! Running out of file descriptors (its own test binary: it lowers this
//! process's descriptor limit, which would break tests running beside it).
mod common;

use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::watch::{Callchain, Mode, Target as T, Watcher};
use hwbreak_linux::Error;
use std::sync::atomic::{AtomicU64, Ordering};

static X: AtomicU64 = AtomicU64::new(0);

/// Issue 9, defect 12: out of descriptors, the error said only "Too many
/// open files". It now counts them, names both limits and says to raise
/// `ulimit -n`; and nothing is left open. The limit can be lowered but not
/// raised again without privilege, so the check runs in a child process
/// (this test binary, re-run with `HWBREAK_FDS_CHILD` set).
#[test]
fn out_of_file_descriptors_names_the_limit_and_ulimit_n() {
    const NAME: &str = "out_of_file_descriptors_names_the_limit_and_ulimit_n";
    if std::env::var_os("HWBREAK_FDS_CHILD").is_some() {
        return out_of_fds_in_this_process();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("HWBREAK_FDS_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("checked: ") && text.contains("(EMFILE)"),
        "{text}"
    );
}

fn out_of_fds_in_this_process() {
    let _g = slots();
    // The count includes the descriptor that reads /proc/self/fd: room
    // for one more, not for an event per CPU plus a ring per CPU.
    let open = hwbreak_linux::procfs::open_fd_count() as u64;
    let low = libc::rlimit {
        rlim_cur: open,
        rlim_max: open,
    };
    // SAFETY: setrlimit reads one rlimit struct, a live local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let r = Watcher::builder()
        .target(T::Thread(gettid()))
        .watch("x", BpAttr::write(X.as_ptr() as u64, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Off,
            user_regs_stack: false,
        })
        .open();
    let after = hwbreak_linux::procfs::open_fd_count() as u64;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfFds {
                errno: libc::EMFILE,
                ..
            }
        ),
        "{e:?}"
    );
    let m = e.to_string();
    assert!(m.contains("out of file descriptors (EMFILE)"), "{m}");
    assert!(m.contains(&format!("limit {open}")), "{m}");
    assert!(m.contains("`ulimit -n "), "{m}");
    assert!(!m.contains("os error"), "{m}");
    assert_eq!(after, open, "every descriptor opened was closed again");
    X.store(1, Ordering::Relaxed);
    println!("checked: {m}");
}
