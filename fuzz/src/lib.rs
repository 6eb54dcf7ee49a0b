//! Fuzz targets for Portcullis: the property checks they run are in [`checks`], shared
//! with the corpus replay test (`filter/tests/fuzz_corpus.rs`), so every property is
//! checked the same way with or without a fuzzer. See `fuzz/README.md`.

pub mod checks;
