//! Building a Rust proxy-wasm plugin from a test, so a test suite always runs the module
//! its sources describe.

use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the `cdylib` of the package at `manifest` for `wasm32-wasip1` in release mode
/// with the cargo that runs the tests (`$CARGO`, else `cargo`), and returns the `.wasm`
/// path that cargo reports (so `CARGO_TARGET_DIR` is honoured).
pub fn build_wasm(manifest: &Path) -> Result<PathBuf, HarnessError> {
    let fail = |message: String| HarnessError::Build {
        manifest: manifest.display().to_string(),
        message,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .map_err(|e| fail(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wanted = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "cdylib"));
        let from_manifest = msg["manifest_path"]
            .as_str()
            .is_some_and(|m| Path::new(m) == wanted);
        if msg["reason"] != "compiler-artifact" || !is_cdylib || !from_manifest {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(w) = wasm {
            return Ok(PathBuf::from(w));
        }
    }
    Err(fail("cargo reported no .wasm artifact".into()))
}
