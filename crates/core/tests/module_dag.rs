//! The module table in `src/lib.rs` (between `<!-- module-dag -->` markers)
//! is the crate's import rule; this test holds the code to it.
//!
//! Imports are read from the source: every `crate::<name>` outside comments
//! and outside the `#[cfg(test)]` part of a file (unit tests may use what
//! they like). `crate::<Name>` of a root re-export (`pub use error::Error;`)
//! counts as its module. A file belongs to the module of its first path
//! component under `src/` (`layer/api.rs` is `layer`).
//!
//! Hand-written rather than `cargo-modules`/`cargo-deny`: those need a
//! separate tool installed and know nothing of this crate's stage order;
//! the rule is a table in a doc comment and a few string scans.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The one import of a row above its own, allowed and documented in lib.rs:
/// fire reads the install table.
const LOOK_BACK: (&str, &str) = ("dispatch", "install");

struct Row {
    stage: String,
    imports: BTreeSet<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The table, in order (top row first).
fn table(lib: &str) -> Vec<(String, Row)> {
    const MARK: &str = "<!-- module-dag -->";
    let start = lib.find(MARK).expect("lib.rs has the module table") + MARK.len();
    let end = lib.find("<!-- /module-dag -->").expect("the table ends");
    let mut rows = Vec::new();
    for line in lib[start..end].lines() {
        let line = line.trim_start_matches("//!").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 || words[0] == "module" || words[0].starts_with('`') {
            continue;
        }
        let imports = words[2..]
            .iter()
            .filter(|w| **w != "-")
            .map(|w| w.to_string())
            .collect();
        rows.push((
            words[0].to_string(),
            Row {
                stage: words[1].to_string(),
                imports,
            },
        ));
    }
    rows
}

/// Root re-exports: name → module (`pub use attr::{Access, BpAttr};`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.to_string());
            }
        }
    }
    map
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::<name>` references in code (not comments, not unit tests).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        out.insert(name.to_string());
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module → the modules its files import (itself excluded).
fn actual_imports(lib: &str) -> BTreeMap<String, BTreeSet<String>> {
    let names = reexports(lib);
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let entry = out.entry(module.clone()).or_default();
        for r in crate_refs(&fs::read_to_string(&f).unwrap()) {
            let target = names.get(&r).cloned().unwrap_or(r);
            if target != module {
                entry.insert(target);
            }
        }
    }
    out
}

/// Every violation of the table's rule, as sentences naming the fix.
fn violations(lib: &str, actual: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rows = table(lib);
    let pos: BTreeMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, (m, _))| (m.as_str(), i))
        .collect();
    let mut v = Vec::new();
    for (module, imports) in actual {
        let Some(&i) = pos.get(module.as_str()) else {
            v.push(format!(
                "module `{module}` is not in lib.rs's module table: add a row (its stage and imports)"
            ));
            continue;
        };
        let row = &rows[i].1;
        for imp in imports.difference(&row.imports) {
            v.push(format!(
                "`{module}` ({}) imports `{imp}`, which its row in lib.rs's module table does not list",
                row.stage
            ));
        }
        for gone in row.imports.difference(imports) {
            v.push(format!(
                "lib.rs's module table says `{module}` imports `{gone}`, and it does not: remove it from the row"
            ));
        }
    }
    for (i, (module, row)) in rows.iter().enumerate() {
        if !actual.contains_key(module) {
            v.push(format!(
                "lib.rs's module table lists `{module}`, which has no file in src/"
            ));
        }
        for imp in &row.imports {
            match pos.get(imp.as_str()) {
                None => v.push(format!("`{module}`'s row lists `{imp}`, which is not a row")),
                Some(&j) if j <= i && (module.as_str(), imp.as_str()) != LOOK_BACK => v.push(
                    format!(
                        "backwards import: `{module}` ({}) imports `{imp}` ({}), a row at or above its own",
                        row.stage, rows[j].1.stage
                    ),
                ),
                _ => {}
            }
        }
    }
    if let Some(cycle) = find_cycle(&rows) {
        v.push(format!("import cycle: {}", cycle.join(" → ")));
    }
    v
}

fn find_cycle(rows: &[(String, Row)]) -> Option<Vec<String>> {
    let graph: BTreeMap<&str, &BTreeSet<String>> =
        rows.iter().map(|(m, r)| (m.as_str(), &r.imports)).collect();
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, &'a BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut c: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for next in graph.get(n).into_iter().flat_map(|s| s.iter()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(n, &graph, &mut path, &mut done) {
            return Some(c);
        }
    }
    None
}

fn lib() -> String {
    fs::read_to_string(src().join("lib.rs")).unwrap()
}

#[test]
fn every_import_in_src_follows_the_module_table_in_lib_rs() {
    let lib = lib();
    let v = violations(&lib, &actual_imports(&lib));
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_table_has_every_stage_of_the_hits_path_in_order() {
    let stages: Vec<String> = table(&lib()).into_iter().map(|(_, r)| r.stage).collect();
    let mut order: Vec<&str> = stages.iter().map(String::as_str).collect();
    order.dedup();
    assert_eq!(
        order,
        [
            "request",
            "book",
            "install",
            "fire",
            "deliver",
            "vocabulary"
        ]
    );
}

/// The checker itself: a backwards import, a cycle, an unlisted import and
/// an unknown module are each caught (on a copy of the real table and
/// imports with one thing changed).
#[test]
fn the_checker_catches_a_backwards_import_a_cycle_an_unlisted_import_and_a_new_module() {
    let lib = lib();
    let real = actual_imports(&lib);
    let table_text = |from: &str, to: &str| lib.replace(from, to);

    // events (deliver) imports dispatch (fire), a row above: backwards.
    let bad = table_text(
        "events    deliver     bp target",
        "events    deliver     dispatch bp target",
    );
    let mut imports = real.clone();
    imports.get_mut("events").unwrap().insert("dispatch".into());
    let v = violations(&bad, &imports).join("\n");
    assert!(
        v.contains("backwards import: `events` (deliver) imports `dispatch` (fire)"),
        "{v}"
    );

    // install imports dispatch: with fire's look-back at install, a cycle.
    let bad = table_text(
        "install   install     machine bp",
        "install   install     dispatch machine bp",
    );
    let mut imports = real.clone();
    imports
        .get_mut("install")
        .unwrap()
        .insert("dispatch".into());
    let v = violations(&bad, &imports).join("\n");
    assert!(
        v.contains("import cycle: dispatch → install → dispatch"),
        "{v}"
    );

    // An import the table does not list.
    let mut imports = real.clone();
    imports.get_mut("slots").unwrap().insert("layer".into());
    let v = violations(&lib, &imports).join("\n");
    assert!(v.contains("`slots` (book) imports `layer`"), "{v}");

    // A listed import that is gone.
    let mut imports = real.clone();
    imports.get_mut("events").unwrap().remove("bp");
    let v = violations(&lib, &imports).join("\n");
    assert!(v.contains("says `events` imports `bp`"), "{v}");

    // A module with no row.
    let mut imports = real;
    imports.insert("pt".into(), BTreeSet::from(["arch".to_string()]));
    let v = violations(&lib, &imports).join("\n");
    assert!(
        v.contains("module `pt` is not in lib.rs's module table"),
        "{v}"
    );
}

#[test]
fn imports_are_read_from_code_not_comments_nor_unit_tests() {
    let text = "use crate::arch::Pool;\n// crate::layer in a comment\nlet x = crate::slots::f(); // crate::dispatch\nuse crate::{bp::Hit, target};\n#[cfg(test)]\nmod tests { use crate::layer::Layer; }\n";
    let got: Vec<String> = crate_refs(text).into_iter().collect();
    assert_eq!(got, ["arch", "bp", "slots", "target"]);
}
