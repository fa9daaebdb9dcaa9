//! libFuzzer target `ring_record`: the oracle `hwbreak_fuzz::ring_record` (crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hwbreak_fuzz::ring_record(data));
