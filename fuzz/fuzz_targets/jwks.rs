//! Fuzz target `jwks`: see `portcullis_fuzz::checks::jwks` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::checks::jwks::check(data));
