//! Benchmarks for Portcullis live in `benches/`; run them with `cargo bench -p portcullis-bench`.
//! This library holds what the benchmarks share.

use portcullis_testkit as testkit;
use serde_json::{json, Value};

/// The benchmarks' policy: one provider with the test kit's RSA key, a public route and an
/// API route needing scope `read`.
pub fn policy(cache_size: usize) -> Value {
    policy_with(&[testkit::rsa().jwk()], cache_size, "auto")
}

/// The same policy with other keys, and `crypto` set to `auto` (host crypto when the host
/// has it) or `wasm`.
pub fn policy_with(jwks: &[Value], cache_size: usize, crypto: &str) -> Value {
    json!({
        "providers": {"idp": {
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "jwks": {"keys": jwks}
        }},
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public/"}}, "auth": "none"},
            {"name": "api", "match": {"path": {"prefix": "/api/"}}, "scopes": {"all_of": ["read"]}}
        ],
        "claim_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        "cache_size": cache_size,
        "crypto": crypto
    })
}
