//! libFuzzer target `spec`: the oracle `hwbreak_fuzz::spec` (crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hwbreak_fuzz::spec(data));
