//! Target `config`: the policy document, [`portcullis::config::parse`], and an engine
//! built from whatever it accepts.
//!
//! Input: the document.
//! Properties: no panic (parsing, building the engine, deciding a few requests, asking
//! for key fetches); an error names a JSON path; parsing is deterministic; the cache size
//! is within its bound; key fetches are bounded; an allow in enforce mode has a reason that
//! allows, and one that says "authorized" carries an identity.

use portcullis::config::{self, ConfigError};
use portcullis::engine::{Engine, Reason, Step};
use portcullis::time::UnixTime;
use portcullis_testkit::NOW;

fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api.example.com".to_string()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

/// An unsigned token and a token with a made-up signature: neither may be allowed.
const FAKE: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0IiwiYXVkIjoiYXBpIiwic3ViIjoiYWxpY2UiLCJleHAiOjQwMDAwMDAwMDB9.c2ln";

/// Checks one input.
pub fn check(data: &[u8]) {
    let cfg = match config::parse(data) {
        Ok(c) => c,
        Err(e) => {
            let (ConfigError::Syntax { path, message } | ConfigError::Invalid { path, message }) =
                e;
            assert!(
                !message.is_empty(),
                "an error without a message at {path:?}"
            );
            assert!(
                !path.is_empty(),
                "an error without a JSON path: {message:?}"
            );
            return;
        }
    };
    assert!(config::parse(data).is_ok(), "parsing is deterministic");
    assert!(cfg.cache_size <= 1_000_000, "cache_size {}", cfg.cache_size);
    let enforced = cfg.policy.mode == portcullis::policy::Mode::Enforce;
    let mut engine = Engine::new(cfg);
    let bearer = format!("Bearer {FAKE}");
    let cookie = format!("session={FAKE}");
    let requests = [
        request("GET", "/", &[]),
        request("GET", "/api/items", &[("authorization", &bearer)]),
        request(
            "POST",
            "/admin/x?access_token=a.b.c",
            &[("cookie", &cookie)],
        ),
        request(
            "GET",
            "/public/../admin",
            &[("authorization", "Bearer a.b.c")],
        ),
    ];
    for (i, headers) in requests.iter().enumerate() {
        let ev = engine.decide(headers, UnixTime::from_secs(NOW));
        if let (Step::Allow(allow), true) = (&ev.step, enforced) {
            let r = ev.record.reason;
            assert!(
                matches!(r, Reason::Public | Reason::Anonymous | Reason::Authorized),
                "request {i} allowed with reason {r:?}"
            );
            if r == Reason::Authorized {
                assert!(allow.identity.is_some(), "authorized without identity");
            }
        }
    }
    for (_, callout) in engine.keyring_mut().poll_fetches(NOW) {
        assert!(callout.timeout_ms <= 60_000, "{callout:?}");
        assert!(callout.max_response_bytes <= 16 << 20, "{callout:?}");
    }
}
