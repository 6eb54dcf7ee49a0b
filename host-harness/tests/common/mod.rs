//! Shared test helpers: build the test plugin's wasm once, compile it once per test binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use proxy_wasm_harness::{Harness, HarnessBuilder, Plugin};

/// Builds `harness-test-plugin` for wasm32-wasip1 (release) and returns the `.wasm` path. Panics (fails the
/// test) if the build fails.
pub(crate) fn wasm_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-plugin/Cargo.toml");
        proxy_wasm_harness::build_wasm(&manifest).expect("the test plugin builds")
    })
    .clone()
}

/// The test plugin, compiled once per test binary.
pub(crate) fn plugin() -> Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN
        .get_or_init(|| Plugin::from_file(wasm_path()).expect("test plugin compiles"))
        .clone()
}

/// A builder with the test plugin and the given configuration lines.
pub(crate) fn builder(config: &str) -> HarnessBuilder {
    Harness::builder()
        .plugin(&plugin())
        .plugin_config(config.as_bytes().to_vec())
}

/// A harness with the test plugin and the given configuration lines.
pub(crate) fn harness(config: &str) -> Harness {
    builder(config).build().expect("harness builds")
}
