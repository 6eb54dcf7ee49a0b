//! The compiled plugin in the harness, with keys and tokens made on the spot.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use portcullis_testkit::NOW;
use proxy_wasm_harness::{build_wasm, Harness, HarnessBuilder, Outcome, Plugin, Request};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

/// The plugin, built from this crate's sources and compiled once per test binary.
pub(crate) fn plugin() -> Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
            let wasm = build_wasm(&manifest).expect("the plugin builds for wasm32-wasip1");
            Plugin::from_file(wasm).expect("the plugin compiles in wasmtime")
        })
        .clone()
}

/// A harness at the test kit's `NOW`, with `config` as plugin configuration.
pub(crate) fn builder(config: &Value) -> HarnessBuilder {
    Harness::builder()
        .plugin(&plugin())
        .plugin_config(config.to_string().into_bytes())
        .start_time(UNIX_EPOCH + Duration::from_secs(NOW))
}

/// `GET path` with a bearer token.
pub(crate) fn get(path: &str, token: Option<&str>) -> Request {
    let r = Request::get(path).authority("api.test");
    match token {
        Some(t) => r.header("authorization", &format!("Bearer {t}")),
        None => r,
    }
}

/// A policy with one provider whose key settings are `keys` (inline `jwks` or `remote_jwks`).
pub(crate) fn policy(keys: Value, extra: Value) -> Value {
    let mut provider = json!({"issuer": "https://idp.test", "audiences": ["api"]});
    if let (Value::Object(p), Value::Object(k)) = (&mut provider, keys) {
        p.extend(k);
    }
    let mut c = json!({
        "providers": {"idp": provider},
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "read", "match": {"path": {"prefix": "/api/"}, "methods": ["GET"]},
             "scopes": {"all_of": ["read"]}}
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-jwt-sub"},
            {"claim": "scope", "header": "x-jwt-scope"}
        ]
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

/// The status the client got, or a description of why there was none.
pub(crate) fn status(o: &Outcome) -> u32 {
    o.status()
        .unwrap_or_else(|| panic!("request did not finish: {o:?}"))
}

/// Fails the test when the plugin did anything Envoy would refuse or ignore.
pub(crate) fn assert_clean(h: &Harness) {
    let violations = h.violations();
    assert!(
        violations.is_empty(),
        "ABI violations: {}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
}
