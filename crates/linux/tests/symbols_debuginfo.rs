//! Separate debug info and inlined frames, on third-party code that `.ci/run`
//! installs: glibc with `libc6-dbg` (its DWARF under
//! `/usr/lib/debug/.build-id/`) and CPython with `python3.11-dbg`. Every
//! answer is checked against gdb or `addr2line -i` on the same file.

mod symbols_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hwbreak_linux::symbols::{read_maps, Resolver, Symbolizer};
use object::{Object, ObjectSymbol};

/// The separate debug file of `elf` under `/usr/lib/debug/.build-id`, found
/// the way gdb finds it (independently of the code under test).
fn build_id_debug_file(elf: &Path) -> Option<PathBuf> {
    let data = std::fs::read(elf).ok()?;
    let f = object::File::parse(&*data).ok()?;
    let id = f.build_id().ok()??;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let p = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    p.exists().then_some(p)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// This test process's libc: its path and its debug file.
fn own_libc() -> Option<(String, PathBuf)> {
    let maps = read_maps(std::process::id() as i32).unwrap();
    let libc = maps
        .iter()
        .find(|m| m.path.contains("/libc.so.6"))
        .map(|m| m.path.clone())?;
    let dbg = build_id_debug_file(Path::new(&libc));
    match dbg {
        Some(d) => Some((libc, d)),
        None => {
            eprintln!("SKIP: no debug file for {libc}; install libc6-dbg");
            None
        }
    }
}

/// One function of a chain: (name, file's last component, line).
type Link = (String, String, Option<u32>);

/// `addr2line -f -i` for each address of `file`: the inline chain, innermost first.
fn addr2line_chains(file: &Path, addrs: &[u64]) -> Vec<Vec<Link>> {
    let mut cmd = Command::new("addr2line");
    cmd.args(["-f", "-i", "-a", "-e"]).arg(file);
    for a in addrs {
        cmd.arg(format!("{a:#x}"));
    }
    let out = cmd.output().expect("run addr2line");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut chains: Vec<Vec<Link>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            chains.push(Vec::new());
            continue;
        }
        let func = l.to_string();
        let place = lines.next().unwrap_or("??:0");
        let place = place.split(" (discriminator").next().unwrap();
        let (f, line) = place.rsplit_once(':').unwrap_or((place, "?"));
        let short = f.rsplit('/').next().unwrap_or(f).to_string();
        chains
            .last_mut()
            .unwrap()
            .push((func, short, line.parse().ok().filter(|&n| n != 0)));
    }
    chains
}

/// The [start, end) link-time ranges of the named functions in `dbg`'s symbol table.
fn func_ranges(dbg: &Path, names: &[&str]) -> Vec<(String, u64, u64)> {
    let data = std::fs::read(dbg).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let mut v = Vec::new();
    for s in f.symbols() {
        if let Ok(n) = s.name() {
            if names.contains(&n) && s.size() > 0 {
                v.push((n.to_string(), s.address(), s.address() + s.size()));
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

#[test]
fn libc_inline_chains_match_addr2line_i_at_every_sampled_address() {
    if !have("addr2line") {
        eprintln!("SKIP: addr2line missing; install binutils");
        return;
    }
    let Some((libc, dbg)) = own_libc() else {
        return;
    };
    let pid = std::process::id() as i32;
    let maps = read_maps(pid).unwrap();
    // glibc's allocator and stdio, built with -O2: full of inlined helpers.
    let ranges = func_ranges(
        &dbg,
        &[
            "_int_malloc",
            "_int_free",
            "__libc_malloc",
            "_IO_new_file_xsputn",
        ],
    );
    assert_eq!(ranges.len(), 4, "{ranges:?}");
    // libc's text is mapped at file offset == link-time address (its PT_LOADs say so).
    let text = maps
        .iter()
        .find(|m| m.path == libc && m.is_exec())
        .expect("libc text mapping");
    let bias = text.start - text.offset;
    let mut vaddrs = Vec::new();
    for (_, lo, hi) in &ranges {
        vaddrs.extend((*lo..*hi).step_by(5));
    }
    let want = addr2line_chains(&dbg, &vaddrs);
    assert_eq!(want.len(), vaddrs.len());
    let mut sym = Symbolizer::new(pid).unwrap();
    let ips: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let got = sym.symbolize(&ips);
    let mut inlined = 0;
    let mut mismatches = Vec::new();
    for ((v, w), g) in vaddrs.iter().zip(&want).zip(&got) {
        let chain: Vec<Link> = g
            .chain()
            .iter()
            .map(|l| {
                let f = l.file.as_deref().unwrap_or("??");
                (
                    l.function.to_string(),
                    f.rsplit('/').next().unwrap_or(f).to_string(),
                    l.line,
                )
            })
            .collect();
        if chain.len() > 1 {
            inlined += 1;
        }
        if &chain != w {
            mismatches.push(format!(
                "{v:#x}: addr2line {w:?}\n          hwbreak  {chain:?}"
            ));
        }
    }
    eprintln!(
        "{inlined} of {} sampled addresses are in inlined code; e.g. {}",
        vaddrs.len(),
        got.iter()
            .find(|g| g.inlined.len() > 2)
            .map(|g| g.to_string())
            .unwrap_or_default()
    );
    assert!(
        inlined > 100,
        "expected many inlined addresses in glibc's malloc, got {inlined} of {}",
        vaddrs.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} addresses differ from addr2line -f -i:\n{}",
        mismatches.len(),
        vaddrs.len(),
        mismatches[..mismatches.len().min(15)].join("\n")
    );
}

/// `print &EXPR` for each expression in process `pid`, by gdb: the addresses.
fn gdb_addresses(pid: i32, exprs: &[&str]) -> Option<Vec<u64>> {
    if !have("gdb") {
        eprintln!("SKIP: gdb missing; install gdb");
        return None;
    }
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch", "-p", &pid.to_string()]);
    for e in exprs {
        cmd.args(["-ex", &format!("print/x (unsigned long)&{e}")]);
    }
    let out = cmd.output().expect("run gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(" = 0x"))
        .map(|(_, h)| u64::from_str_radix(h.trim(), 16).unwrap())
        .collect();
    assert_eq!(
        v.len(),
        exprs.len(),
        "gdb answered {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(v)
}

/// A process that has loaded libc and waits on stdin (killed on drop).
fn waiting_c_program() -> Option<symbols_common::Target> {
    let dir = symbols_common::c_targets()?;
    Some(symbols_common::start(
        &dir.join("counter"),
        &["10", "1", "1", "wait"],
    ))
}

#[test]
fn glibc_statics_resolve_down_to_fields_from_the_split_debug_file_as_gdb_does() {
    if own_libc().is_none() {
        return;
    }
    let Some(t) = waiting_c_program() else { return };
    let exprs = [
        "main_arena.top",
        "main_arena.bins[3]",
        "main_arena.mutex",
        "_IO_2_1_stdout_.file._IO_write_ptr",
        "mp_.n_mmaps_max",
    ];
    let Some(want) = gdb_addresses(t.pid(), &exprs) else {
        return;
    };
    let r = Resolver::for_pid(t.pid()).unwrap();
    for (e, w) in exprs.iter().zip(&want) {
        let got = r.resolve(e).unwrap_or_else(|err| panic!("{e}: {err}"));
        assert_eq!(got.addr, *w, "{e}: hwbreak {:#x}, gdb {w:#x}", got.addr);
        assert!(got.module.as_deref().unwrap().contains("libc.so.6"), "{e}");
        assert!(got.type_name.is_some(), "{e} has a type from DWARF");
    }
    let top = r.resolve("libc.so.6:main_arena.top").unwrap();
    assert_eq!((top.addr, top.len), (want[0], 8));
    assert_eq!(top.type_name.as_deref(), Some("mchunkptr"));
}

/// CPython 3.11 as Debian ships it (stripped, not PIE), waiting on stdin.
fn waiting_python() -> Option<(std::process::Child, PathBuf)> {
    let py = PathBuf::from("/usr/bin/python3.11");
    if !py.exists() {
        eprintln!("SKIP: {} missing; install python3.11", py.display());
        return None;
    }
    let Some(dbg) = build_id_debug_file(&py) else {
        eprintln!(
            "SKIP: no debug file for {}; install python3.11-dbg",
            py.display()
        );
        return None;
    };
    let mut c = Command::new(&py)
        .args([
            "-c",
            "import sys; print('ready', flush=True); sys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Some((c, dbg))
}

#[test]
fn python_runtime_fields_resolve_from_python3_dbg_as_gdb_does() {
    let Some((mut c, _dbg)) = waiting_python() else {
        return;
    };
    let pid = c.id() as i32;
    let exprs = [
        "_PyRuntime.gilstate.check_enabled",
        "_PyRuntime.interpreters.main",
        "_PyRuntime.ceval.signals_pending",
    ];
    let want = gdb_addresses(pid, &exprs);
    let r = Resolver::for_pid(pid).map(|r| {
        exprs
            .iter()
            .map(|e| r.resolve(e).map(|x| x.addr))
            .collect::<Vec<_>>()
    });
    let _ = c.kill();
    let _ = c.wait();
    let Some(want) = want else { return };
    let got = r.unwrap();
    for ((e, w), g) in exprs.iter().zip(&want).zip(got) {
        let g = g.unwrap_or_else(|err| panic!("{e}: {err}"));
        assert_eq!(g, *w, "{e}: hwbreak {g:#x}, gdb {w:#x}");
    }
}

#[test]
fn functions_split_into_hot_and_cold_parts_get_offsets_within_the_function() {
    // CPython's -O2 build splits functions into a hot part and a `.cold`
    // part; their DWARF has no single start address. The offset shown must
    // be from the symbol holding the address, never the absolute address.
    let Some((mut c, dbg)) = waiting_python() else {
        return;
    };
    let pid = c.id() as i32;
    let ranges = func_ranges(
        &dbg,
        &[
            "_Py_PreInitializeFromPyArgv",
            "_Py_PreInitializeFromPyArgv.cold",
        ],
    );
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let mut sym = Symbolizer::new(pid).unwrap();
    let _ = c.kill();
    let _ = c.wait();
    // Not PIE: link-time addresses are run-time addresses.
    for (name, lo, hi) in ranges {
        let ips: Vec<u64> = (lo..hi).step_by(7).collect();
        let want = addr2line_chains(&dbg, &ips);
        for (ip, (f, w)) in ips.iter().zip(sym.symbolize(&ips).iter().zip(want)) {
            assert_eq!(f.function.as_deref(), Some(name.as_str()), "{f}");
            assert_eq!(f.offset, ip - lo, "{f}");
            assert_eq!(f.line, w[0].2, "{f} vs addr2line {w:?}");
        }
    }
}

#[test]
fn fully_stripped_program_with_a_debuglink_resolves_and_symbolizes_from_its_debug_file() {
    // As a distribution ships a program: `strip --strip-all` (no DWARF, no
    // .symtab) plus a .gnu_debuglink to the file holding both.
    let Some(dir) = symbols_common::c_targets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let prog = t.path().join("counter");
    let dbg = t.path().join("counter.debug");
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !ok(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(dir.join("counter"))
        .arg(&dbg))
    {
        eprintln!("SKIP: objcopy missing; install binutils");
        return;
    }
    assert!(ok(Command::new("objcopy")
        .current_dir(t.path())
        .args(["--strip-all", "--add-gnu-debuglink=counter.debug"])
        .arg(dir.join("counter"))
        .arg(&prog)));
    let target = symbols_common::start(&prog, &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(target.pid()).unwrap();
    let c = r.resolve("state.count").unwrap();
    assert_eq!(c.addr, target.addr("state.count"));
    assert_eq!(c.type_name.as_deref(), Some("long int"));
    let f = r.resolve("bump_state").unwrap();
    assert!(f.is_function());
    let mut s = Symbolizer::new(target.pid()).unwrap();
    let frame = s.symbolize_one(f.addr);
    assert_eq!(frame.function.as_deref(), Some("bump_state"), "{frame}");
    assert_eq!(frame.offset, 0);
    assert!(
        frame
            .file
            .as_deref()
            .is_some_and(|p| p.ends_with("counter.c")),
        "{frame}"
    );
    // Without the debug file the program has no names, and the error says so.
    drop(target);
    std::fs::remove_file(&dbg).unwrap();
    let target = symbols_common::start(&prog, &["10", "1", "1", "wait"]);
    let e = Resolver::for_pid(target.pid())
        .unwrap()
        .resolve("counter:state.count")
        .unwrap_err();
    assert!(
        matches!(e, hwbreak_linux::symbols::SymbolError::NotFound { .. }),
        "{e}"
    );
}
