//! libFuzzer target `recfile`: the oracle `hwbreak_fuzz::recfile` (crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hwbreak_fuzz::recfile(data));
