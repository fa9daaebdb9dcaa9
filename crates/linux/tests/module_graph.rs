//! The crate's modules import each other without cycles (issue 8: the
//! `error ↔ procfs` and `selfattach ↔ watch` knots must not come back).
//!
//! Reads the sources: every `crate::NAME` (and, inside a module directory,
//! every `super::NAME`) outside comments is an edge from the file's module
//! to NAME. Two graphs are checked: the crate's top-level modules (a
//! directory module is one node), and the files of `watch/` (a child that
//! reaches its parent's re-exports, `super::Item` or `crate::watch::Item`,
//! is an edge to the parent, which in turn depends on every child).
//! Hand-written scanning: the rule is about `crate::`/`super::` paths only,
//! and a full parser (syn) would be a heavy dependency for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The identifiers a path prefix like `crate::` names at each occurrence in
/// `code`: `crate::a::b` gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        // Not the tail of a longer identifier (`my_crate::`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.push(ident(part.trim()));
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The file's code without comments (whole-line and trailing `//`, which
/// covers doc comments and intra-doc links).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal ("http://...") keeps the line.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(rs_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// A cycle in `g`, as the path that closes it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        on_path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = on_path.iter().position(|p| p == n) {
            let mut c = on_path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        on_path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, on_path, done) {
                return Some(c);
            }
        }
        on_path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a source file belongs to (`None` for lib.rs, the
/// crate's face, which declares and re-exports every module).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "lib.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

fn top_level_graph() -> Graph {
    let files = rs_files(&src());
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(m) = top_module(f) else { continue };
        let deps = g.entry(m.clone()).or_default();
        for n in names_after(&code_of(f), "crate::") {
            if n != m && modules.contains(&n) {
                deps.insert(n);
            }
        }
    }
    g
}

/// The graph of the files of module directory `dir` (e.g. `watch`): node
/// `dir` is its `mod.rs`, the others are its children.
fn directory_graph(dir: &str) -> Graph {
    let root = src().join(dir);
    let children: BTreeSet<String> = rs_files(&root)
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_string())
        .filter(|s| s != "mod")
        .collect();
    let mut g = Graph::new();
    for f in rs_files(&root) {
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let code = code_of(&f);
        if stem == "mod" {
            // The parent declares and re-exports every child.
            g.insert(dir.to_string(), children.clone());
            continue;
        }
        let mut refs = names_after(&code, "super::");
        refs.extend(names_after(&code, &format!("crate::{dir}::")));
        let deps = g.entry(stem.clone()).or_default();
        for n in refs {
            if n == stem {
                continue;
            }
            deps.insert(if children.contains(&n) {
                n
            } else {
                dir.to_string()
            });
        }
    }
    g
}

#[test]
fn the_cycle_finder_finds_a_two_module_cycle_and_accepts_a_chain() {
    let mut g = Graph::new();
    g.entry("error".into()).or_default().insert("procfs".into());
    g.entry("procfs".into()).or_default().insert("error".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["error".into(), "procfs".into(), "error".into()])
    );
    g.get_mut("error").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
    assert_eq!(
        names_after("use crate::{error::Error, procfs};", "crate::"),
        ["error", "procfs"]
    );
    assert_eq!(
        names_after("x = hwbreak_crate::a; crate::watch::attr::Mode", "crate::"),
        ["watch"]
    );
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let g = top_level_graph();
    // The graph was read: the known edges are there.
    assert!(g["procfs"].contains("error"), "{g:?}");
    assert!(g["watch"].contains("threads"), "{g:?}");
    assert!(!g["error"].contains("procfs"), "error is plain data: {g:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle between modules: {}", c.join(" -> "));
    }
}

#[test]
fn watch_submodules_import_each_other_without_cycles() {
    let g = directory_graph("watch");
    assert!(g["attach"].contains("selfattach"), "{g:?}");
    assert!(g["selfattach"].contains("member"), "{g:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle inside watch/: {}", c.join(" -> "));
    }
}
