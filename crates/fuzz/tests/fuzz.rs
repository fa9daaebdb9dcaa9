//! The bounded fuzz run of `cargo test`: every checked-in corpus input, then
//! a fixed number of cases per target (by count, not time: 1000 each, or
//! `HWBREAK_FUZZ_CASES`), each a seed or corpus input with bytes flipped,
//! inserted and cut, or plain arbitrary bytes. A failing case is shrunk by
//! proptest and printed; put it in `testdata/fuzz/<target>/` once fixed.

use hwbreak_fuzz::{corpus_dir, seeds, Target, TARGETS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The checked-in inputs of a target.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn cases() -> u32 {
    std::env::var("HWBREAK_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// One edit of a mutated input.
#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Cut(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Edit::Remove),
        1 => any::<prop::sample::Index>().prop_map(Edit::Cut),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Set(i, b) if !v.is_empty() => {
                let at = i.index(v.len());
                v[at] = *b;
            }
            Edit::Insert(i, b) => {
                let at = i.index(v.len() + 1);
                v.insert(at, *b);
            }
            Edit::Remove(i) if !v.is_empty() => {
                v.remove(i.index(v.len()));
            }
            Edit::Cut(i) => v.truncate(i.index(v.len() + 1)),
            _ => {}
        }
    }
    v
}

/// Runs `cases()` mutated and arbitrary inputs through the target's oracle.
fn fuzz((name, oracle): Target) {
    let mut pool: Vec<Vec<u8>> = seeds(name);
    pool.extend(corpus(name).into_iter().map(|(_, b)| b));
    let input = prop_oneof![
        3 => (prop::sample::select(pool), prop::collection::vec(edit(), 1..8))
            .prop_map(|(seed, edits)| apply(seed, &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ];
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input, |bytes| {
        std::panic::catch_unwind(|| oracle(&bytes)).map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            TestCaseError::fail(msg)
        })
    });
    if let Err(e) = result {
        panic!("fuzz target `{name}` failed: {e}");
    }
}

fn target(name: &str) -> Target {
    *TARGETS.iter().find(|t| t.0 == name).unwrap()
}

#[test]
fn every_checked_in_corpus_input_passes_its_oracle() {
    for (name, oracle) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for (file, bytes) in inputs {
            if std::panic::catch_unwind(|| oracle(&bytes)).is_err() {
                panic!("testdata/fuzz/{name}/{file} fails its oracle");
            }
        }
    }
}

#[test]
fn the_checked_in_corpus_holds_every_seed() {
    for (name, _) in TARGETS {
        let have: Vec<Vec<u8>> = corpus(name).into_iter().map(|(_, b)| b).collect();
        for s in seeds(name) {
            assert!(
                have.contains(&s),
                "a seed of {name} is not in testdata/fuzz/{name}: run cargo run -p hwbreak-fuzz --bin hwbreak-fuzz-seed"
            );
        }
    }
}

#[test]
fn the_seeds_are_well_formed_inputs_each_parser_accepts() {
    // A seed that the parser refuses tests only its first check.
    for s in seeds("spec").iter().take(12) {
        let t = std::str::from_utf8(s).unwrap();
        assert!(hwbreak::spec::parse(t).is_ok(), "{t}");
    }
    for s in &seeds("recfile")[..3] {
        let mut r = hwbreak::recfile::Reader::new(&s[..]).unwrap();
        while r.next_hit().unwrap().is_some() {}
    }
    for s in seeds("ring_record") {
        let (l, w) = s.split_at(17);
        let bits = u64::from_le_bytes(l[..8].try_into().unwrap());
        let regs = u64::from_le_bytes(l[9..17].try_into().unwrap());
        let layout = hwbreak_linux::record::SampleLayout::new(bits, l[8] == 1, regs).unwrap();
        let words: Vec<u64> = w
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let rec = hwbreak_linux::record::parse(&layout, &words);
        assert!(
            !matches!(
                rec,
                None | Some(hwbreak_linux::record::Record::Other { .. })
            ),
            "{rec:?} from {words:x?}"
        );
    }
}

#[test]
fn spec_parser_survives_bounded_fuzzing() {
    fuzz(target("spec"));
}

#[test]
fn record_file_reader_survives_bounded_fuzzing() {
    fuzz(target("recfile"));
}

#[test]
fn ring_record_parser_survives_bounded_fuzzing() {
    fuzz(target("ring_record"));
}
