//! Stacks of short-lived targets (issue 9, defect 2): a stack shown as
//! complete is complete. The program exits right after its hits, so the
//! drain runs when its `/proc` files are gone; its modules must have been
//! learned before (at attach, and from its mmap records).
mod common;

use common::*;
use hwbreak_core::events::Extended;
use hwbreak_core::BpAttr;
use hwbreak_linux::launch::StoppedAtEntry;
use hwbreak_linux::symbols::Resolver;
use hwbreak_linux::watch::{Callchain, Mode, Target as T, Watcher};
use std::collections::BTreeMap;
use std::process::Command;

const N: u64 = 50;

/// One hit: its chain (IP first), and whether the chain was flagged cut.
#[derive(Debug, Clone)]
struct Hit {
    chain: Vec<u64>,
    truncated: bool,
}

fn hit(h: &Extended<'_>) -> Hit {
    let mut chain = h.ext.stack.to_vec();
    // Both walks start with the IP; make sure of it.
    if chain.first() != Some(&h.sample.ip) {
        chain.insert(0, h.sample.ip);
    }
    Hit {
        chain,
        truncated: h.ext.stack_truncated,
    }
}

/// The link-time address range of each symbol of `exe` (`nm -S`).
fn symbols(exe: &std::path::Path) -> BTreeMap<String, std::ops::Range<u64>> {
    let out = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(exe)
        .output()
        .expect("nm (binutils) must be installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [addr, size, _, name] = f[..] else {
                return None;
            };
            let a = u64::from_str_radix(addr, 16).ok()?;
            let n = u64::from_str_radix(size, 16).ok()?;
            Some((name.to_string(), a..a + n))
        })
        .collect()
}

/// Start `shortlived` stopped at its entry, with `target_var` and the
/// run-time ranges of worker, bump_framed and bump_leaf.
fn start() -> (StoppedAtEntry, u64, [std::ops::Range<u64>; 3]) {
    let exe = c_target("shortlived");
    let mut cmd = Command::new(&exe);
    cmd.arg(N.to_string());
    let stopped = StoppedAtEntry::spawn(cmd, true).unwrap();
    let r = Resolver::for_pid(stopped.pid()).unwrap();
    let var = r.resolve("target_var").unwrap().addr;
    let syms = symbols(&exe);
    // PIE: the load bias, from where target_var landed.
    let bias = var - syms["target_var"].start;
    let at = |name: &str| syms[name].start + bias..syms[name].end + bias;
    let fns = [at("worker"), at("bump_framed"), at("bump_leaf")];
    (stopped, var, fns)
}

/// Per thread, in order: the hits of a watcher drained after the program
/// exited.
fn hits_after_exit(w: &Watcher) -> BTreeMap<u32, Vec<Hit>> {
    w.wait().unwrap();
    let mut by_tid: BTreeMap<u32, Vec<Hit>> = BTreeMap::new();
    w.drain(|h| by_tid.entry(h.tid()).or_default().push(hit(h)));
    assert_eq!(w.lost(), 0);
    by_tid
}

/// Both walks see the same hits; where the kernel's frame-pointer walk is
/// exact (bump_framed keeps a frame), ours gives the same frames, and where
/// it is not (bump_leaf has none: the kernel skips worker), ours still has
/// worker. Never a chain that looks complete and is not.
#[test]
fn short_lived_stacks_match_the_kernel_callchain_and_never_skip_a_caller() {
    let _g = slots();
    let (stopped, var, [worker, framed, leaf]) = start();
    let pid = stopped.pid();
    let kernel = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(var, 8))
        .mode(Mode::Sample {
            callchain: Callchain::Kernel,
            user_regs_stack: false,
        })
        .open()
        .unwrap();
    let copied = Watcher::builder()
        .target(T::Process(pid))
        .watch("target_var", BpAttr::write(var, 8))
        .mode(Mode::Sample {
            callchain: Callchain::COPIED,
            user_regs_stack: false,
        })
        .open()
        .unwrap();
    let child = stopped.resume().unwrap();
    copied.adopt_child(child).unwrap();
    let ours = hits_after_exit(&copied);
    let theirs = {
        let mut m: BTreeMap<u32, Vec<Hit>> = BTreeMap::new();
        kernel.drain(|h| m.entry(h.tid()).or_default().push(hit(h)));
        m
    };
    assert_eq!(ours.len(), 2, "two worker threads");
    let (mut framed_hits, mut leaf_hits) = (0, 0);
    for (tid, mine) in &ours {
        let k = &theirs[tid];
        assert_eq!(mine.len(), k.len(), "thread {tid}: both saw every hit");
        assert_eq!(mine.len() as u64, 2 * N);
        for (o, k) in mine.iter().zip(k) {
            assert_eq!(o.chain[0], k.chain[0], "the same hit, the same IP");
            assert!(!o.truncated, "modules known: nothing cut: {o:?}");
            let ip = o.chain[0];
            assert!(
                worker.contains(&o.chain[1]),
                "worker is the caller: {o:?} (kernel {k:?})"
            );
            if framed.contains(&ip) {
                framed_hits += 1;
                // The kernel's walk is exact here: up to start_thread.
                assert_eq!(o.chain[..3], k.chain[..3], "ours {o:?} kernel {k:?}");
            } else {
                assert!(leaf.contains(&ip), "{o:?}");
                leaf_hits += 1;
                // The kernel's walk skips worker from a frameless leaf;
                // ours has it, then the same start_thread frame.
                assert!(!worker.contains(&k.chain[1]), "kernel {k:?}");
                assert_eq!(o.chain[2], k.chain[1], "ours {o:?} kernel {k:?}");
            }
        }
    }
    assert_eq!((framed_hits, leaf_hits), (2 * N, 2 * N));
    println!(
        "SHORT-LIVED: {} hits, every copied stack exact against the kernel's",
        framed_hits + leaf_hits
    );
}

/// A launched program (its code mapped after the watch began, announced
/// by mmap records in whichever CPU's ring) drained after it exited:
/// every stack has worker, or says it was cut. Ten runs: the rings are
/// drained in CPU order, and a record in a later ring used to come too late.
#[test]
fn a_launched_short_lived_program_drained_after_exit_has_every_caller() {
    let _g = slots();
    let (stopped, var, [worker, _, _]) = start();
    drop(stopped);
    for run in 0..10 {
        let mut cmd = Command::new(c_target("shortlived"));
        cmd.arg(N.to_string());
        let w = Watcher::builder()
            .target(T::Launch(cmd))
            .watch("target_var", BpAttr::write(var, 8))
            .mode(Mode::Sample {
                callchain: Callchain::COPIED,
                user_regs_stack: false,
            })
            .open()
            .unwrap();
        let hits = hits_after_exit(&w);
        let all: Vec<&Hit> = hits.values().flatten().collect();
        assert_eq!(all.len() as u64, 4 * N, "run {run}");
        for h in all {
            assert!(
                h.truncated || worker.contains(&h.chain[1]),
                "run {run}: worker skipped and not flagged: {h:?}"
            );
            assert!(!h.truncated, "run {run}: modules known, nothing cut: {h:?}");
        }
    }
}
