//! The property checks behind every fuzz target. Each target's `check` takes the raw
//! input and panics when a property fails; the fuzz targets call it, and so does the
//! replay of the committed corpus, which is a plain `#[test]` (`filter/tests/fuzz_corpus.rs`).
//!
//! This directory is compiled twice: as the library of the fuzz crate, and as a module of
//! that test in the main workspace. It therefore uses only crates that `portcullis`'s own
//! tests can use, and `pub` here means "for the targets and the test".

pub mod claims;
pub mod config;
pub mod decide;
pub mod input;
pub mod jwks;
pub mod jwt;
pub mod oracle;
pub mod path;
pub mod seeds;

/// One fuzz target: the name of its binary and corpus directory, and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: [Target; 6] = [
    ("jwt", jwt::check),
    ("jwks", jwks::check),
    ("config", config::check),
    ("claims", claims::check),
    ("path", path::check),
    ("decide", decide::check),
];
