//! Fuzz target `decide`: see `portcullis_fuzz::checks::decide` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::decide::check(data));
