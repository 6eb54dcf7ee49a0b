//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same property
//! checks the fuzz targets run (`fuzz/src/checks/`), so `cargo test` covers every target's
//! properties on any machine, without a fuzzer. `scripts/fuzz` runs the fuzzer itself.
//!
//! The fuzz crate is a workspace of its own (cargo-fuzz builds it with special flags), so
//! its checks are compiled into this test from their source; the fuzz crate builds this
//! same file as its test `fuzz_corpus`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Public for the fuzz crate's targets; here only this file uses them.
#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/checks/mod.rs"]
mod checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs every input of a target's corpus; names every input whose check failed.
fn replay(target: &str) {
    let Some((_, check)) = checks::TARGETS.iter().find(|(name, _)| *name == target) else {
        panic!("no target {target}");
    };
    let dir = root().join("fuzz").join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = fs::read(f).unwrap();
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(failed.is_empty(), "properties failed for {failed:#?}");
    println!("{target}: {} inputs", files.len());
}

#[test]
fn jwt_corpus() {
    replay("jwt");
}

#[test]
fn jwks_corpus() {
    replay("jwks");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn claims_corpus() {
    replay("claims");
}

#[test]
fn path_corpus() {
    replay("path");
}

#[test]
fn decide_corpus() {
    replay("decide");
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["jwt", "jwks", "config", "claims", "path", "decide"]);
}

/// Every seed the generator makes is committed (compared by name: signatures differ from
/// run to run). `FUZZ_WRITE_SEEDS=1` rewrites them first (what `scripts/fuzz --seed` is for).
#[test]
fn seed_corpus_is_complete() {
    if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
        let n = checks::seeds::write(&root()).unwrap();
        println!("wrote {n} seeds");
    }
    let corpus = root().join("fuzz").join("corpus");
    let seeds = checks::seeds::all(&root()).unwrap();
    assert!(!seeds.is_empty());
    let missing: Vec<String> = seeds
        .iter()
        .map(|(target, name, _)| format!("{target}/seed-{name}"))
        .filter(|path| !corpus.join(path).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "seeds not committed (regenerate with FUZZ_WRITE_SEEDS=1 cargo test -p portcullis --test fuzz_corpus): {missing:?}"
    );
}

/// The decision seeds reach what they are named for, so the target starts from real
/// allows, denials and held requests rather than from refusals of malformed input.
#[test]
fn decide_seeds_reach_their_outcomes() {
    let dir = root().join("fuzz").join("corpus").join("decide");
    let trace = |name: &str| {
        let data = fs::read(dir.join(format!("seed-{name}"))).unwrap();
        checks::decide::trace(&data).join(", ")
    };
    for (seed, expected) in [
        ("presigned-00", "allow read, allow read"),
        ("presigned-03", "allow read, allow read"),
        ("presigned-04", "allow read, allow read"),
        ("presigned-07", "deny 401, deny 401"),
        ("presigned-13", "deny 401, deny 401"),
        ("built-0-0", "allow read"),
        ("built-1-2", "allow read"),
        ("built-2-3", "allow read"),
        ("built-3-5", "allow read"),
        ("built-4-6", "allow read"),
        ("built-6-0", "deny 401"),
        ("built-0-1", "allow read"),
        ("built-0-2", "allow read"),
        ("remote-fetched", "suspend, allow remote, allow remote"),
        ("remote-failed", "suspend, deny 503"),
        ("remote-adopted", "allow remote"),
        ("spoofed-claim-header", "allow read"),
        ("query-token", "allow read"),
        ("cookie-token", "allow read"),
        ("two-tokens", "deny 400"),
        ("public-anonymous", "allow public"),
        ("public-token", "deny 401"),
        ("health", "allow health"),
        ("admin", "allow admin, deny 403"),
        ("write", "allow write, deny 403"),
        ("expiring", "allow read, deny 401"),
        ("unlogged", "allow read, allow read"),
    ] {
        assert_eq!(trace(seed), expected, "seed-{seed}");
    }
}
