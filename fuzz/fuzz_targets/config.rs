//! Fuzz target `config`: see `portcullis_fuzz::checks::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::config::check(data));
