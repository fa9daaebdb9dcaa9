//! Kernel-half addresses (issue 9 #4): `-a` is the one target that watches
//! them, as a privileged (kernel-inclusive) CPU-wide event; any other target
//! refuses them naming `-a`, and a kernel that refuses names its own rule.
//! Before the fix `-a` refused every kernel address and told the user to
//! "set the privileged flag", which no option sets.

mod common;

use common::*;

/// `(address, name)` of the first of `names` that /proc/kallsyms lists with a
/// real address, or why none can be used.
fn kallsyms(names: &[&str]) -> Result<(u64, String), String> {
    let text =
        std::fs::read_to_string("/proc/kallsyms").map_err(|e| format!("/proc/kallsyms: {e}"))?;
    let mut hidden = false;
    for want in names {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 3 && f[2] == *want {
                let a = u64::from_str_radix(f[0], 16).unwrap_or(0);
                if a == 0 {
                    hidden = true;
                    continue;
                }
                return Ok((a, want.to_string()));
            }
        }
    }
    Err(if hidden {
        "kallsyms addresses are hidden (kernel.kptr_restrict, or not root)".into()
    } else {
        format!("/proc/kallsyms lists none of {names:?} (a kernel without CONFIG_KALLSYMS_ALL lists no data symbols)")
    })
}

/// Runs `hwbreak stat -a SPEC` until it says it is watching, a moment more,
/// then SIGINT. `Ok(hits)` if it watched, `Err(output)` if it was refused
/// (it exits before "watching").
fn stat_all_cpus(spec: &str) -> Result<u64, Out> {
    use std::io::{BufRead, Read};
    let mut child = hwbreak()
        .args(["stat", "--json", "-a", spec])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hwbreak");
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    let mut watching = false;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 {
        stderr.push_str(&line);
        if line.contains("watching") {
            watching = true;
            break;
        }
        line.clear();
    }
    if watching {
        // jiffies changes every tick; the count is only checked non-zero, so
        // this is no time limit, just a moment for ticks to happen.
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: kill takes integers; the pid is our own live child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let _ = err.read_to_string(&mut stderr);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let o = Out {
        code,
        stdout,
        stderr,
    };
    if !watching || o.code != 0 {
        return Err(o);
    }
    let j = &json_lines(&o.stdout)[0];
    Ok(j["watches"][0]["hits"]
        .as_u64()
        .unwrap_or_else(|| panic!("{j}")))
}

/// The refusal a kernel gives a privileged breakpoint names the kernel's
/// rule (never perf_event_paranoid, never an option that does not exist).
fn assert_kernel_rule(o: &Out, addr: u64) {
    assert_clean_error(o, &format!("the kernel refused kernel address {addr:#x}"));
    assert!(
        o.stderr.contains("CAP_SYS_ADMIN")
            || o.stderr.contains("CONFIG_KPROBES")
            || o.stderr.contains("CPU entry area"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("privileged flag"), "{}", o.stderr);
}

#[test]
fn a_kernel_address_on_a_process_target_is_refused_naming_dash_a() {
    let me = std::process::id().to_string();
    let o = run(hwbreak().args(["stat", "-p", &me, "0xffffffff81000000/8:rw"]));
    assert_clean_error(&o, "");
    assert_eq!(
        o.stderr.trim_end(),
        "hwbreak: watch `0xffffffff81000000/8:rw`: address 0xffffffff81000000 is in the kernel half, which a process or thread target cannot watch; watch it on every CPU with -a, as root (e.g. `hwbreak stat -a 0xffffffff81000000/8:rw`)"
    );
    let o = run(hwbreak().args(["watch", "0xffff888000000000:x", "--", "true"]));
    assert_clean_error(&o, "watch it on every CPU with -a");
}

#[test]
fn stat_all_cpus_counts_writes_to_jiffies_in_the_kernel() {
    let _g = slots();
    let (addr, name) = match kallsyms(&["jiffies_64", "jiffies"]) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("SKIP stat_all_cpus_counts_writes_to_jiffies_in_the_kernel: {why}");
            return;
        }
    };
    let free0 = free_slots_for_new_process();
    match stat_all_cpus(&format!("{addr:#x}/8:w")) {
        Ok(hits) => assert!(hits > 0, "{name} at {addr:#x} changes every tick"),
        Err(o) => {
            assert_kernel_rule(&o, addr);
            eprintln!(
                "SKIP stat_all_cpus_counts_writes_to_jiffies_in_the_kernel: the kernel refuses: {}",
                o.stderr.trim()
            );
        }
    }
    assert_eq!(free_slots_for_new_process(), free0, "no slot leaked");
}

/// On a kernel without data symbols in kallsyms (or one that refuses), the
/// kernel-address path still runs: `-a` asks the kernel for a kernel-inclusive
/// breakpoint on a kernel data address, and either watches it or reports the
/// kernel's rule. Before the fix it never asked (core refused first).
#[test]
fn all_cpus_asks_the_kernel_for_a_kernel_address_and_names_its_rule_if_refused() {
    let _g = slots();
    let (addr, _) = match kallsyms(&["jiffies_64", "jiffies", "__start_rodata", "_stext"]) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("SKIP all_cpus_asks_the_kernel_for_a_kernel_address...: {why}");
            return;
        }
    };
    let free0 = free_slots_for_new_process();
    if let Err(o) = stat_all_cpus(&format!("{addr:#x}/8:rw")) {
        assert_kernel_rule(&o, addr);
    }
    // An execute breakpoint on kernel text: allowed only with kprobes.
    let (text, _) = kallsyms(&["_stext"]).expect("kallsyms lists _stext");
    if let Err(o) = stat_all_cpus(&format!("{text:#x}:x")) {
        assert_kernel_rule(&o, text);
    }
    assert_eq!(free_slots_for_new_process(), free0, "no slot leaked");
}
