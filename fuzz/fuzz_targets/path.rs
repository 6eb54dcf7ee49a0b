//! Fuzz target `path`: see `portcullis_fuzz::checks::path` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::path::check(data));
