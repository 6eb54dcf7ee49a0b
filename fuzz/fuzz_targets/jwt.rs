//! Fuzz target `jwt`: see `portcullis_fuzz::checks::jwt` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::jwt::check(data));
