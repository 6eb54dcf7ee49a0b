//! Fuzz target `decide`: see `portcullis_fuzz::checks::decide` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: portcullis_fuzz::checks::decide::warm_up(),
    |data: &[u8]| portcullis_fuzz::checks::decide::check(data)
);
