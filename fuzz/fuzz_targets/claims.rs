//! Fuzz target `claims`: see `portcullis_fuzz::checks::claims` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::claims::check(data));
