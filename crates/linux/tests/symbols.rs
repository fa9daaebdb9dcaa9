//! Symbol resolution and symbolization against real running binaries: the C
//! targets of testdata/targets (PIE, non-PIE, a shared library) and the Rust
//! demo. Every address is checked against what the target prints of `&name`.

mod symbols_common;

mod nobody;

use hwbreak_linux::symbols::{Resolver, SymbolError, Symbolizer, ValueKind};
use symbols_common::{c_targets, demo_bin, start};

macro_rules! need_c {
    () => {
        match c_targets() {
            Some(d) => d,
            None => return,
        }
    };
}

#[test]
fn pie_global_resolves_to_the_address_the_process_prints() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let c = r.resolve("counter").unwrap();
    assert_eq!(c.addr, t.addr("counter"));
    assert_eq!(c.len, 8);
    assert_eq!(c.type_name.as_deref(), Some("long int"));
    assert_eq!(c.value_kind, ValueKind::Signed);
    assert!(!c.needs_rebase);
    assert!(c.module.unwrap().ends_with("/counter"));
}

#[test]
fn struct_fields_resolve_with_their_own_size_and_type() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let count = r.resolve("state.count").unwrap();
    assert_eq!(count.addr, t.addr("state.count"));
    assert_eq!((count.len, count.value_kind), (8, ValueKind::Signed));
    let a = r.resolve("state.a").unwrap();
    assert_eq!((a.addr, a.len), (t.addr("state.a"), 4));
    assert_eq!(a.type_name.as_deref(), Some("int"));
    let name = r.resolve("state.name").unwrap();
    assert_eq!((name.addr, name.len), (t.addr("state.name"), 16));
    assert_eq!(name.type_name.as_deref(), Some("char[16]"));
    assert_eq!(name.value_kind, ValueKind::Bytes);
    let whole = r.resolve("state").unwrap();
    assert_eq!((whole.addr, whole.len), (t.addr("state"), 32));
    assert_eq!(whole.type_name.as_deref(), Some("struct state"));
}

#[test]
fn array_elements_and_nested_steps_resolve() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("table[3]").unwrap();
    assert_eq!((e.addr, e.len), (t.addr("table[3]"), 4));
    assert_eq!(e.type_name.as_deref(), Some("int"));
    let all = r.resolve("table").unwrap();
    assert_eq!((all.addr, all.len), (t.addr("table"), 64));
    assert_eq!(all.type_name.as_deref(), Some("int[16]"));
    // Nested: a field, then an index into it.
    let n = r.resolve("state.name[5]").unwrap();
    assert_eq!((n.addr, n.len), (t.addr("state.name") + 5, 1));
    assert_eq!(n.type_name.as_deref(), Some("char"));
}

#[test]
fn non_pie_binary_resolves_to_its_fixed_link_address() {
    let dir = need_c!();
    let t = start(&dir.join("counter-nopie"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    assert_eq!(r.resolve("counter").unwrap().addr, t.addr("counter"));
    assert_eq!(
        r.resolve("state.count").unwrap().addr,
        t.addr("state.count")
    );
    // And the same without running it: no rebase needed for a fixed-address file.
    let exe = Resolver::for_exe(dir.join("counter-nopie")).unwrap();
    let c = exe.resolve("counter").unwrap();
    assert!(!c.needs_rebase);
    assert_eq!(c.addr, t.addr("counter"));
}

#[test]
fn pie_exe_not_running_gives_link_address_then_rebase_gives_runtime() {
    let dir = need_c!();
    let mut r = Resolver::for_exe(dir.join("counter")).unwrap();
    let link = r.resolve("state.count").unwrap();
    assert!(link.needs_rebase);
    assert!(
        link.addr < 0x10_0000,
        "link-time address of a PIE is small: {:#x}",
        link.addr
    );
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    r.rebase(t.pid()).unwrap();
    let run = r.resolve("state.count").unwrap();
    assert!(!run.needs_rebase);
    assert_eq!(run.addr, t.addr("state.count"));
    assert_eq!(
        run.addr & 0xfff,
        link.addr & 0xfff,
        "the bias is page-aligned"
    );
}

#[test]
fn shared_library_global_resolves_with_lib_prefix_and_without() {
    let dir = need_c!();
    let t = start(&dir.join("uselib"), &["5", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let v = r.resolve("libwatchme.so:watchme_value").unwrap();
    assert_eq!(v.addr, t.addr("watchme_value"));
    assert_eq!(v.len, 8);
    assert!(v.module.as_deref().unwrap().ends_with("libwatchme.so"));
    // A bare name falls through the executable to the library.
    assert_eq!(r.resolve("watchme_value").unwrap().addr, v.addr);
    let right = r.resolve("libwatchme.so:watchme_pair.right").unwrap();
    assert_eq!((right.addr, right.len), (t.addr("watchme_pair.right"), 4));
}

#[test]
fn unloaded_library_prefix_lists_the_loaded_modules() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("libnothere.so:x").unwrap_err();
    assert!(matches!(e, SymbolError::NoModule { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("libnothere.so") && msg.contains("counter") && msg.contains("libc"),
        "{msg}"
    );
}

#[test]
fn function_resolves_as_code_for_execute_watches() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let f = r.resolve("bump_counter").unwrap();
    assert_eq!(f.addr, t.addr("fn bump_counter"));
    assert!(f.is_function());
    assert_eq!(f.len, 1);
    let g = r.resolve("bump_counter+4").unwrap();
    assert_eq!(g.addr, f.addr + 4);
    assert!(g.is_function());
}

#[test]
fn name_plus_offset_and_raw_address() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let o = r.resolve("state+8").unwrap();
    assert_eq!((o.addr, o.len), (t.addr("state.count"), 8));
    let hex = r.resolve("table+0xc").unwrap();
    assert_eq!(
        (hex.addr, hex.len),
        (t.addr("table[3]"), 4),
        "an int-aligned offset into an int array"
    );
    let raw = r.resolve(&format!("{:#x}", t.addr("counter"))).unwrap();
    assert_eq!((raw.addr, raw.len), (t.addr("counter"), 8));
    assert!(raw.module.as_deref().unwrap().ends_with("/counter"));
    let raw4 = r.resolve(&format!("{:#x}", t.addr("state.a"))).unwrap();
    assert_eq!(raw4.addr, t.addr("state.a"));
}

#[test]
fn rust_static_resolves_by_path_and_field() {
    let t = start(
        demo_bin(),
        &["--wait", "--iterations", "1", "--delay-ms", "0"],
    );
    let r = Resolver::for_pid(t.pid()).unwrap();
    let hits = r.resolve("hwbreak_demo::STATE.hits").unwrap();
    assert_eq!(hits.addr, t.addr("STATE.hits"));
    assert_eq!(hits.len, 8);
    assert_eq!(hits.type_name.as_deref(), Some("AtomicU64"));
    assert_eq!(
        hits.value_kind,
        ValueKind::Unsigned,
        "AtomicU64 is read through to its u64"
    );
    let short = r.resolve("STATE.last_writer").unwrap();
    assert_eq!((short.addr, short.len), (t.addr("STATE.last_writer"), 4));
    let tab = r.resolve("hwbreak_demo::STATE.table[2]").unwrap();
    assert_eq!((tab.addr, tab.len), (t.addr("STATE.table") + 16, 8));
    let whole = r.resolve("hwbreak_demo::STATE").unwrap();
    assert_eq!(
        (whole.addr, whole.type_name.as_deref()),
        (t.addr("STATE"), Some("Stats"))
    );
    assert_eq!(whole.len, 8 + 4 + 4 + 64 + 8);
    let f = r.resolve("hwbreak_demo::record_hit").unwrap();
    assert_eq!(f.addr, t.addr("fn record_hit"));
    assert!(f.is_function());
}

#[test]
fn unknown_name_lists_close_matches() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("countr").unwrap_err();
    let SymbolError::NotFound { suggestions, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        suggestions.first().map(String::as_str),
        Some("counter"),
        "{e}"
    );
    assert!(e.to_string().contains("Did you mean: counter"), "{e}");
    let e = r.resolve("stte.count").unwrap_err();
    let SymbolError::NotFound { suggestions, .. } = &e else {
        panic!("{e}")
    };
    assert!(suggestions.iter().any(|s| s == "state"), "{e}");
}

#[test]
fn bad_expression_syntax_names_the_column() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    for (bad, col) in [
        ("table[3", 8),
        ("state..a", 7),
        ("counter+", 9),
        ("counter!", 8),
    ] {
        match r.resolve(bad) {
            Err(SymbolError::Syntax { column, .. }) => assert_eq!(column, col, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn index_out_of_bounds_says_the_valid_range() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("table[16]").unwrap_err();
    assert!(
        matches!(
            e,
            SymbolError::OutOfBounds {
                index: 16,
                len: 16,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("0..=15"), "{e}");
    assert!(r.resolve("table[15]").is_ok());
}

#[test]
fn missing_field_lists_the_fields_and_wrong_steps_say_why() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("state.cnt").unwrap_err();
    assert!(matches!(e, SymbolError::NoField { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("a, count, name") && msg.contains("struct state"),
        "{msg}"
    );
    assert!(matches!(
        r.resolve("counter.x"),
        Err(SymbolError::NotAStruct { .. })
    ));
    assert!(matches!(
        r.resolve("state[1]"),
        Err(SymbolError::NotAnArray { .. })
    ));
    assert!(matches!(
        r.resolve("bump_counter.x"),
        Err(SymbolError::BadRange { .. })
    ));
}

#[test]
fn dead_pid_is_reported_as_gone() {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    let e = Resolver::for_pid(pid)
        .err()
        .expect("a reaped process must not resolve");
    assert!(matches!(e, SymbolError::NoProcess { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"));
    assert!(matches!(
        Symbolizer::new(pid),
        Err(SymbolError::NoProcess { .. })
    ));
    assert!(matches!(
        Resolver::for_pid(-5),
        Err(SymbolError::NoProcess { .. })
    ));
}

#[test]
fn address_outside_every_mapping_is_refused() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    assert!(matches!(
        r.resolve("0x10"),
        Err(SymbolError::NotMapped { .. })
    ));
    assert!(matches!(
        r.resolve("counter+0x100000000"),
        Err(SymbolError::NotMapped { .. })
    ));
}

#[test]
fn missing_executable_is_an_io_error() {
    let e = Resolver::for_exe("/nonexistent/prog").err().unwrap();
    assert!(matches!(e, SymbolError::Io { .. }), "{e}");
    let e = Resolver::for_exe("/etc/hostname").err().unwrap();
    assert!(matches!(e, SymbolError::BadElf { .. }), "{e}");
}

#[test]
fn ip_inside_a_known_function_symbolizes_to_name_and_line() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let mut s = Symbolizer::new(t.pid()).unwrap();
    let f = t.addr("fn bump_counter");
    let frames = s.symbolize(&[f, f + 1]);
    assert_eq!(frames[0].function.as_deref(), Some("bump_counter"));
    assert_eq!(frames[0].offset, 0);
    assert_eq!(frames[1].offset, 1);
    assert!(
        frames[0].file.as_deref().unwrap().ends_with("counter.c"),
        "{:?}",
        frames[0]
    );
    let src =
        std::fs::read_to_string(symbols_common::repo_root().join("testdata/targets/counter.c"))
            .unwrap();
    let def = src
        .lines()
        .position(|l| l.contains("void bump_counter(void)"))
        .unwrap() as u32
        + 1;
    let line = frames[0].line.unwrap();
    assert!(
        (def..def + 3).contains(&line),
        "bump_counter is defined at line {def}, got {line}"
    );
    assert!(
        frames[0]
            .to_string()
            .starts_with("bump_counter+0x0 (counter.c:"),
        "{}",
        frames[0]
    );
    assert_eq!(s.cached(), 2);
    // Cached: the same answer again.
    assert_eq!(s.symbolize_one(f), frames[0]);
}

#[test]
fn symbolizer_keeps_working_after_the_process_exits() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let mut s = Symbolizer::new(t.pid()).unwrap();
    let f = t.addr("fn bump_counter");
    drop(t);
    let fr = s.symbolize_one(f + 2);
    assert_eq!(fr.function.as_deref(), Some("bump_counter"));
}

#[test]
fn rust_function_symbolizes_demangled_with_its_file() {
    let t = start(
        demo_bin(),
        &["--wait", "--iterations", "1", "--delay-ms", "0"],
    );
    let mut s = Symbolizer::new(t.pid()).unwrap();
    let fr = s.symbolize_one(t.addr("fn record_hit") + 1);
    assert_eq!(fr.function.as_deref(), Some("hwbreak_demo::record_hit"));
    assert!(fr.file.as_deref().unwrap().ends_with("main.rs"), "{fr:?}");
    let unknown = s.symbolize_one(0x10);
    assert_eq!((unknown.function, unknown.ip), (None, 0x10));
}

#[test]
fn copy_relocated_library_variable_resolves_to_the_executables_copy() {
    let dir = need_c!();
    let t = start(&dir.join("usecopy"), &["5", "wait"]);
    // The program itself shows the library writes to the copy.
    assert_eq!(t.addr("watchme_value"), t.addr("lib watchme_value"));
    let r = Resolver::for_pid(t.pid()).unwrap();
    for spec in ["libwatchme.so:watchme_value", "watchme_value"] {
        let v = r.resolve(spec).unwrap();
        assert_eq!(v.addr, t.addr("watchme_value"), "{spec}");
        assert_eq!(v.len, 8, "{spec}");
        assert_eq!(
            v.type_name.as_deref(),
            Some("long int"),
            "{spec}: the type comes from the library"
        );
    }
}

#[test]
fn saved_maps_symbolize_offline_like_the_live_process() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let mut live = Symbolizer::new(t.pid()).unwrap();
    let f = t.addr("fn bump_counter");
    let want = live.symbolize_one(f + 3);
    let mut offline = Symbolizer::from_maps(live.maps().to_vec());
    drop(t);
    assert_eq!(offline.symbolize_one(f + 3), want);
}

#[test]
fn targets_print_counts_that_they_then_reach() {
    // The C and Rust targets announce exact counts; the watch tests compare
    // against those numbers, so the targets must reach them themselves.
    let dir = need_c!();
    let out = std::process::Command::new(dir.join("counter"))
        .args(["37", "2", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("expect counter=185 state.count=185"),
        "{text}"
    );
    assert!(text.contains("done counter=185 state.count=185"), "{text}");
    let out = std::process::Command::new(demo_bin())
        .args([
            "--iterations",
            "9",
            "--delay-ms",
            "0",
            "--late-after-ms",
            "0",
            "--early",
            "2",
            "--late",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("expect hits=27 ")
            && text.contains(" table[0]=6 ")
            && text.contains(" table[1]=3 "),
        "{text}"
    );
    assert!(text.contains("done hits=27 rounds=27"), "{text}");
}

#[test]
fn thread_local_variable_is_refused_with_the_reason() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("tls_rounds").unwrap_err();
    assert!(matches!(e, SymbolError::ThreadLocal { .. }), "{e}");
    assert!(e.to_string().contains("thread-local"));
}

/// Start `bin` stopped at its exec (PTRACE_TRACEME), as `hwbreak ... -- CMD` does.
fn spawn_stopped_at_exec(bin: &std::path::Path, args: &[&str]) -> (std::process::Child, i32) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).stdout(std::process::Stdio::piped());
    // SAFETY: PTRACE_TRACEME in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: waiting for our own child's exec stop.
    let w = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(w, pid);
    assert!(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP);
    (child, pid)
}

/// Let a child stopped by [`spawn_stopped_at_exec`] run to its end; its stdout.
fn detach_and_finish(child: std::process::Child, pid: i32) -> String {
    // SAFETY: detach from our own stopped child; it continues without a signal.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

fn printed_addr(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("addr {name}=")))
        .unwrap_or_else(|| panic!("no addr {name} in {text}"));
    u64::from_str_radix(line.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn launched_command_resolves_at_its_first_instruction() {
    // The child stops at exec, before ld.so has run: the executable's names
    // must already resolve to the addresses it will use.
    let dir = need_c!();
    let (child, pid) = spawn_stopped_at_exec(&dir.join("counter"), &["3", "1", "1"]);
    let r = Resolver::for_pid(pid).unwrap();
    let count = r.resolve("state.count").unwrap();
    let func = r.resolve("bump_counter").unwrap();
    assert!(!count.needs_rebase && func.is_function());
    let text = detach_and_finish(child, pid);
    assert!(text.contains("done counter=6"), "{text}");
    assert_eq!(count.addr, printed_addr(&text, "state.count"));
    assert_eq!(func.addr, printed_addr(&text, "fn bump_counter"));
}

#[test]
fn launched_command_library_not_loaded_yet_says_so() {
    let dir = need_c!();
    let (child, pid) = spawn_stopped_at_exec(&dir.join("uselib"), &["3"]);
    let r = Resolver::for_pid(pid).unwrap();
    assert!(
        !r.modules().iter().any(|m| m.contains("libwatchme")),
        "{:?}",
        r.modules()
    );
    let e = r.resolve("libwatchme.so:watchme_value").unwrap_err();
    assert!(matches!(e, SymbolError::NoModule { .. }), "{e}");
    assert!(e.to_string().contains("loaded later"), "{e}");
    let text = detach_and_finish(child, pid);
    assert!(text.contains("done watchme_value=3"), "{text}");
}

#[test]
fn close_match_ranking_prefers_the_programs_own_names() {
    let t = start(
        demo_bin(),
        &["--wait", "--iterations", "1", "--delay-ms", "0"],
    );
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("STATEx").unwrap_err();
    let SymbolError::NotFound { suggestions, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(suggestions[0], "hwbreak_demo::STATE", "{e}");
}

#[test]
fn nested_array_of_structs_multi_dimensional_arrays_and_anonymous_unions() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let y = r.resolve("outer.p[1].y").unwrap();
    assert_eq!(
        (y.addr, y.len, y.type_name.as_deref()),
        (t.addr("outer.p[1].y"), 4, Some("int"))
    );
    let p = r.resolve("outer.p").unwrap();
    assert_eq!(
        (p.len, p.type_name.as_deref()),
        (16, Some("struct point[2]"))
    );
    let g = r.resolve("grid[2][3]").unwrap();
    assert_eq!((g.addr, g.len), (t.addr("grid[2][3]"), 4));
    let row = r.resolve("grid[1]").unwrap();
    assert_eq!(
        (row.addr, row.len, row.type_name.as_deref()),
        (t.addr("grid[1]"), 16, Some("int[4]"))
    );
    assert_eq!(
        r.resolve("grid").unwrap().type_name.as_deref(),
        Some("int[3][4]")
    );
    let e = r.resolve("grid[1][4]").unwrap_err();
    assert!(
        matches!(
            e,
            SymbolError::OutOfBounds {
                index: 4,
                len: 4,
                ..
            }
        ),
        "{e}"
    );
    // A member of an anonymous union is found through it, with its own kind.
    let d = r.resolve("tagged.d").unwrap();
    assert_eq!(
        (d.addr, d.len, d.value_kind),
        (t.addr("tagged.d"), 8, ValueKind::Float)
    );
    let f = r.resolve("flags[3]").unwrap();
    assert_eq!(
        (f.addr, f.len, f.value_kind),
        (t.addr("flags[3]"), 1, ValueKind::Unsigned)
    );
    // 5 unaligned-sized bytes: the caller splits over slots.
    let all = r.resolve("flags").unwrap();
    assert_eq!(all.len, 5);
    let pieces = hwbreak_linux::symbols::split_into_slots(all.addr, all.len);
    assert_eq!(pieces.iter().map(|p| p.1).sum::<u64>(), 5);
    assert!(pieces.iter().all(|&(a, l)| a % l == 0));
}

#[test]
fn file_relative_address_from_nm_gets_the_load_bias() {
    // The complaint about perf: `mem:ADDR` with a PIE's `nm` address
    // watches nothing. `counter:0xNM` adds the bias.
    let dir = need_c!();
    let nm = std::process::Command::new("nm")
        .arg(dir.join("counter"))
        .output();
    let Ok(nm) = nm else {
        eprintln!("SKIP: nm (binutils) is not installed");
        return;
    };
    let text = String::from_utf8(nm.stdout).unwrap();
    let link = text
        .lines()
        .find_map(|l| {
            l.strip_suffix(" B counter")
                .map(|a| u64::from_str_radix(a, 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no counter in nm output: {text}"));
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let v = r.resolve(&format!("counter:{link:#x}")).unwrap();
    assert_eq!((v.addr, v.len), (t.addr("counter"), 8));
    assert_ne!(v.addr, link, "a PIE does not run at its link address");
    // Not running yet: the same spec is flagged for rebasing.
    let exe = Resolver::for_exe(dir.join("counter")).unwrap();
    let pending = exe.resolve(&format!("counter:{link:#x}")).unwrap();
    assert!(pending.needs_rebase);
    assert_eq!(pending.addr, link);
}

#[test]
fn compressed_debug_sections_and_dwarf4_resolve_the_same() {
    let dir = need_c!();
    for bin in ["counter-gz", "counter-dwarf4"] {
        let t = start(&dir.join(bin), &["10", "1", "1", "wait"]);
        let r = Resolver::for_pid(t.pid()).unwrap();
        for name in [
            "state.count",
            "table[3]",
            "outer.p[1].y",
            "grid[2][3]",
            "tagged.d",
        ] {
            assert_eq!(r.resolve(name).unwrap().addr, t.addr(name), "{bin}: {name}");
        }
        let mut s = Symbolizer::new(t.pid()).unwrap();
        let f = s.symbolize_one(t.addr("fn bump_counter"));
        assert_eq!(f.function.as_deref(), Some("bump_counter"), "{bin}");
        assert!(f.line.is_some(), "{bin}: {f:?}");
    }
}

/// Runs as `nobody` (re-executed by `unprivileged_user_cannot_read_a_root_process`).
#[test]
#[ignore]
fn child_symbols_permission_check() {
    let Ok(pid) = std::env::var("HWBREAK_SYM_PERM_PID") else {
        return;
    };
    let pid: i32 = pid.parse().unwrap();
    let e = Resolver::for_pid(pid)
        .err()
        .expect("nobody must not read root's process");
    println!("RESOLVER: {e}");
    assert!(matches!(e, SymbolError::Permission { .. }), "{e:?}");
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    // The same words as a refused watch on another user's process: the
    // ptrace read-access rule, not Yama (it restricts attaching only).
    let want = format!("permission denied to read /proc/{pid}/maps (EACCES): it belongs to uid 0 and you are uid {me}; another user's process may be watched only with ptrace read access to it: root, CAP_SYS_PTRACE or CAP_PERFMON. Run as uid 0 or as root, or launch the program yourself so that it is yours");
    assert_eq!(e.to_string(), want);
    let e = Symbolizer::new(pid)
        .err()
        .expect("nobody must not read root's maps");
    println!("SYMBOLIZER: {e}");
    assert!(matches!(e, SymbolError::Permission { .. }), "{e:?}");
    assert_eq!(e.to_string(), want);
}

#[test]
fn unprivileged_user_cannot_read_a_root_process() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let Some(so) = nobody::run_as_nobody(
        "child_symbols_permission_check",
        &[("HWBREAK_SYM_PERM_PID", t.pid().to_string())],
    ) else {
        return;
    };
    // The child pins the messages; here: it got that far.
    assert!(so.contains("RESOLVER: permission denied"), "{so}");
    assert!(so.contains("SYMBOLIZER: permission denied"), "{so}");
    println!("{so}");
}

#[test]
fn program_started_through_the_dynamic_loader_still_resolves() {
    // `ld.so ./counter`: /proc/PID/exe is the loader, and the program is
    // mapped like a library. Its names must still resolve with the right bias.
    let dir = need_c!();
    let ld = std::path::Path::new("/lib64/ld-linux-x86-64.so.2");
    if !ld.exists() {
        println!("SKIP: no {} on this system", ld.display());
        return;
    }
    let prog = dir.join("counter");
    let t = start(ld, &[prog.to_str().unwrap(), "10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    assert!(r.modules()[0].contains("ld-linux"), "{:?}", r.modules());
    let c = r.resolve("state.count").unwrap();
    assert_eq!(c.addr, t.addr("state.count"));
    assert!(!c.needs_rebase);
    assert_eq!(r.resolve("counter:state.count").unwrap().addr, c.addr);
}

#[test]
fn describe_names_the_field_or_element_at_an_address() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    for name in [
        "counter",
        "state.count",
        "state.a",
        "table[3]",
        "outer.p[1].y",
        "grid[2][3]",
        "flags[3]",
    ] {
        let d = r
            .describe(t.addr(name))
            .unwrap_or_else(|| panic!("{name}: nothing"));
        assert_eq!(d.name, name);
        assert_eq!(d.len, r.resolve(name).unwrap().len, "{name}");
    }
    // Inside a scalar: an offset; an anonymous union: its first member.
    assert_eq!(
        r.describe(t.addr("counter") + 2).unwrap().name,
        "counter+0x2"
    );
    assert_eq!(r.describe(t.addr("tagged.d")).unwrap().name, "tagged.l");
    assert_eq!(
        r.describe(t.addr("state.name") + 5).unwrap().name,
        "state.name[5]"
    );
    let f = r.describe(t.addr("fn bump_counter") + 4).unwrap();
    assert_eq!(
        (f.name.as_str(), f.value_kind),
        ("bump_counter+0x4", ValueKind::Code)
    );
    assert!(r.describe(0x10).is_none());
    // A module-relative address takes the described type.
    let raw = r.resolve(&format!("{:#x}", t.addr("state.a"))).unwrap();
    assert_eq!((raw.len, raw.type_name.as_deref()), (4, Some("int")));
}

#[test]
fn describe_stops_at_rust_atomics() {
    let t = start(
        demo_bin(),
        &["--wait", "--iterations", "1", "--delay-ms", "0"],
    );
    let r = Resolver::for_pid(t.pid()).unwrap();
    assert_eq!(
        r.describe(t.addr("STATE.hits")).unwrap().name,
        "hwbreak_demo::STATE.hits"
    );
    let e = r.describe(t.addr("STATE.table") + 16).unwrap();
    assert_eq!(
        (e.name.as_str(), e.len),
        ("hwbreak_demo::STATE.table[2]", 8)
    );
}

#[test]
fn a_script_is_not_an_elf_file_said_once() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("s.sh");
    std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
    let e = Resolver::for_exe(&p)
        .err()
        .expect("a script has no ELF symbols");
    assert!(matches!(e, SymbolError::BadElf { .. }), "{e}");
    let text = e.to_string();
    assert_eq!(
        text.matches("is not a readable ELF file").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("s.sh").count(), 1, "{text}");
}

#[test]
fn link_time_address_of_a_pie_symbol_is_refused_with_its_runtime_address() {
    let dir = need_c!();
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    let run = t.addr("state.count");
    let exe = Resolver::for_exe(dir.join("counter")).unwrap();
    let link = exe.resolve("state.count").unwrap().addr;
    assert_ne!(link, run);
    // The run-time address is fine; the link-time one is refused, with the way out.
    r.check_raw_address(run).unwrap();
    let e = r.check_raw_address(link).unwrap_err();
    match &e {
        SymbolError::LinkTimeAddress {
            symbol, runtime, ..
        } => {
            assert_eq!(symbol, "state+0x8");
            assert_eq!(*runtime, Some(run));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&format!("{run:#x}")), "{e}");
    // Before it runs: no run-time address yet, the name is the way.
    let e = exe.check_raw_address(link).unwrap_err();
    assert!(e.to_string().contains("watch 'state+0x8' by name"), "{e}");
    // A fixed-address program's link-time addresses are its run-time ones.
    let t2 = start(&dir.join("counter-nopie"), &["10", "1", "1", "wait"]);
    let r2 = Resolver::for_pid(t2.pid()).unwrap();
    r2.check_raw_address(t2.addr("state.count")).unwrap();
    // An unmapped address that is no symbol's is left alone (it may be mapped later).
    r.check_raw_address(0x10_0000_0000).unwrap();
}
