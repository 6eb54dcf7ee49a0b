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

/// [`policy`] with browser sign-in: provider `idp` gains a login block and `/app/` needs a
/// token or a session.
pub fn login_policy(cache_size: usize) -> Value {
    let mut p = policy(cache_size);
    p["providers"]["idp"]["login"] = json!({
        "client_id": "web",
        "client_secret": "s3cret",
        "authorization_endpoint": "https://idp.test/auth",
        "token_endpoint": "https://idp.test/token",
        "cluster": "idp",
        "cookie_keys": ["AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="]
    });
    if let Some(rules) = p["rules"].as_array_mut() {
        rules.push(json!({"name": "app", "match": {"path": {"prefix": "/app/"}}, "auth": "login"}));
    }
    p
}

/// A `Cookie` header value holding a session of [`login_policy`] for the test kit's user,
/// valid at `now`, as a sign-in would have set it.
pub fn session_cookie(now: u64) -> String {
    use portcullis::oidc::session_data::{self, Session};
    let config = portcullis::config::parse(login_policy(0).to_string().as_bytes())
        .expect("the login policy compiles");
    let login = &config.policy.logins[0];
    let id_token = testkit::rsa().sign(testkit::claims(json!({
        "aud": "web", "email": "alice@example.test", "name": "Alice Example"
    })));
    let session = Session {
        id_token,
        refresh_token: None,
        issued: now,
        expires: now + 3600,
    };
    session_data::seal(login, &session, now)
        .expect("the session seals")
        .iter()
        .filter_map(|c| c.split(';').next())
        .filter(|pair| !pair.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}
