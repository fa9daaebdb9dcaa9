//! Scoped and language-specific names, as a debugger names them: C++ with the
//! standard library (testdata/targets/scoped.cc, built with g++), and glibc's
//! file statics from `libc6-dbg`. Every address is checked against the one
//! the program prints of `&name` and against gdb's `print &name`.

mod symbols_common;

use std::process::Command;

use hwbreak_linux::symbols::{Resolver, SymbolError};
use symbols_common::{c_targets, start, Target};

fn scoped() -> Option<Target> {
    let dir = c_targets()?;
    Some(start(&dir.join("scoped"), &["wait"]))
}

/// gdb's `print &EXPR` for each expression, or `None` (SKIP printed) without gdb.
fn gdb_addresses(pid: i32, exprs: &[&str]) -> Option<Vec<Option<u64>>> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch", "-p", &pid.to_string()]);
    for e in exprs {
        cmd.args([
            "-ex",
            "echo @@\\n",
            "-ex",
            &format!("print/x (unsigned long)&{e}"),
        ]);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run gdb ({e}); install gdb");
            return None;
        }
    };
    // gdb's errors go to stderr: each "@@" on stdout starts one answer.
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Option<u64>> = text
        .split("@@\n")
        .skip(1)
        .map(|chunk| {
            chunk
                .lines()
                .find_map(|l| l.split_once(" = 0x"))
                .map(|(_, h)| u64::from_str_radix(h.trim(), 16).unwrap())
        })
        .collect();
    assert_eq!(answers.len(), exprs.len(), "{text}");
    Some(answers)
}

#[test]
fn cpp_templates_abi_tags_anonymous_namespaces_bases_and_statics_resolve_as_gdb_does() {
    let Some(t) = scoped() else { return };
    let r = Resolver::for_pid(t.pid()).unwrap();
    // (our name, the program's `addr` line, gdb's spelling of the same)
    let cases = [
        (
            "ns::Pool<int>::hwm",
            "ns::Pool<int>::hwm",
            "'ns::Pool<int>::hwm'",
        ),
        (
            "ns::Pool<long>::hwm",
            "ns::Pool<long>::hwm",
            "'ns::Pool<long>::hwm'",
        ),
        (
            "Pool<long>::hwm",
            "ns::Pool<long>::hwm",
            "'ns::Pool<long>::hwm'",
        ),
        ("ns::Pool<std::pair<int, long> >::hwm", "", ""),
        (
            "cfg::name[abi:cxx11]",
            "cfg::name",
            "'cfg::name[abi:cxx11]'",
        ),
        ("cfg::name", "cfg::name", "cfg::name"),
        (
            "(anonymous namespace)::hidden",
            "hidden",
            "'(anonymous namespace)::hidden'",
        ),
        ("hidden", "hidden", "'(anonymous namespace)::hidden'"),
        ("g_der.b", "g_der.b", "g_der.b"),
        ("g_der.shared", "g_der.shared", "g_der.shared"),
        (
            "g_der.Base::shared",
            "g_der.Base::shared",
            "g_der.Base::shared",
        ),
        ("'scoped.cc'::count", "count", "'scoped.cc'::count"),
        ("scoped2.cc::count", "scoped2::count", "'scoped2.cc'::count"),
        ("bump::calls", "", "'bump()::calls'"),
        ("g_vec._M_impl._M_start", "", "g_vec._M_impl._M_start"),
        (
            "g_vec._Vector_base<int, std::allocator<int> >::_M_impl",
            "",
            "g_vec._M_impl",
        ),
    ];
    let gdb_exprs: Vec<&str> = cases
        .iter()
        .map(|c| c.2)
        .filter(|e| !e.is_empty())
        .collect();
    let gdb = gdb_addresses(t.pid(), &gdb_exprs);
    let mut gdb_it = gdb.iter().flatten();
    for (ours, printed, by_gdb) in cases {
        let got = r.resolve(ours);
        if ours.contains("std::pair") {
            // No such instance: an error naming the name, never a wrong pick.
            assert!(matches!(got, Err(SymbolError::NotFound { .. })), "{got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{ours}: {e}"));
        if !printed.is_empty() {
            assert_eq!(
                got.addr,
                t.addr(printed),
                "{ours} vs the program's &{printed}"
            );
        }
        if !by_gdb.is_empty() {
            if let Some(g) = gdb_it.next() {
                assert_eq!(Some(got.addr), *g, "{ours} vs gdb's &{by_gdb}");
            }
        }
    }
    assert_eq!(r.resolve("g_der.b").unwrap().len, 8);
    assert_eq!(
        r.resolve("ns::Pool<int>::hwm")
            .unwrap()
            .type_name
            .as_deref(),
        Some("int")
    );
}

#[test]
fn two_file_statics_with_one_name_are_an_error_listing_each_and_how_to_name_it() {
    let Some(t) = scoped() else { return };
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("count").unwrap_err();
    let SymbolError::Ambiguous { name, matches, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(name, "count");
    assert_eq!(matches.len(), 2, "{matches:?}");
    let text = e.to_string();
    assert!(text.contains("'scoped.cc'::count"), "{text}");
    assert!(text.contains("'scoped2.cc'::count"), "{text}");
    // Link-time addresses, as `nm` prints them.
    let link = t.addr("count") - base(&t);
    assert!(text.contains(&format!("at {link:#x} ")), "{text}");
    // Each way the message suggests resolves to its own variable.
    assert_eq!(
        r.resolve("'scoped.cc'::count").unwrap().addr,
        t.addr("count")
    );
    assert_eq!(
        r.resolve("'scoped2.cc'::count").unwrap().addr,
        t.addr("scoped2::count")
    );
    // A name in two template instances: both listed, by their full names.
    let e = r.resolve("hwm").unwrap_err().to_string();
    assert!(
        e.contains("ns::Pool<int>::hwm") && e.contains("ns::Pool<long>::hwm"),
        "{e}"
    );
}

/// The load bias of the `scoped` PIE (its first mapping).
fn base(t: &Target) -> u64 {
    let maps = hwbreak_linux::symbols::read_maps(t.pid()).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid())).unwrap();
    maps.iter()
        .find(|m| m.path == exe.to_string_lossy() && m.offset == 0)
        .unwrap()
        .start
}

#[test]
fn unknown_file_scope_is_an_error_naming_the_file() {
    let Some(t) = scoped() else { return };
    let r = Resolver::for_pid(t.pid()).unwrap();
    let e = r.resolve("'nosuch.cc'::count").unwrap_err();
    assert!(matches!(e, SymbolError::NoScope { .. }), "{e}");
    assert!(e.to_string().contains("no source file 'nosuch.cc'"), "{e}");
    // A known file without that name: not found, not a scope error.
    let e = r.resolve("'scoped2.cc'::hidden").unwrap_err();
    assert!(matches!(e, SymbolError::NotFound { .. }), "{e}");
}

#[test]
fn glibc_file_statics_are_ambiguous_until_scoped_and_then_match_gdb() {
    // glibc has thirteen `static mbstate_t state;`, one per multibyte function's file.
    let Some(dir) = c_targets() else { return };
    let t = start(&dir.join("counter"), &["10", "1", "1", "wait"]);
    let r = Resolver::for_pid(t.pid()).unwrap();
    if r.resolve("libc.so.6:main_arena").is_err() {
        eprintln!("SKIP: glibc has no debug info here; install libc6-dbg");
        return;
    }
    let e = r.resolve("libc.so.6:state").unwrap_err();
    let SymbolError::Ambiguous { matches, .. } = &e else {
        panic!("{e}")
    };
    assert!(matches.len() > 5, "{matches:?}");
    assert!(
        matches.iter().any(|m| m.starts_with("'mblen.c'::state")),
        "{matches:?}"
    );
    let ours = r.resolve("libc.so.6:'mblen.c'::state").unwrap();
    assert_eq!(ours.type_name.as_deref(), Some("mbstate_t"));
    if let Some(g) = gdb_addresses(t.pid(), &["'mblen.c'::state"]) {
        assert_eq!(Some(ours.addr), g[0]);
    }
}
