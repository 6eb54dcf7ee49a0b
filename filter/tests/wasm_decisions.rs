//! The verdicts of the plugin, run as the compiled `.wasm` in the proxy-wasm harness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_clean, builder, get, policy, status};
use portcullis_testkit::{self as testkit, claims, NOW};
use proxy_wasm_harness::{HarnessError, Outcome};
use serde_json::json;
use std::time::Duration;

/// Decision counters reach the host on the plugin's tick (once a second).
const TICK: Duration = Duration::from_secs(1);

fn inline() -> serde_json::Value {
    json!({"jwks": {"keys": [testkit::rsa().jwk()]}})
}

#[test]
fn valid_token_reaches_the_upstream_with_claim_headers_and_no_spoofing() {
    let mut h = builder(&policy(inline(), json!({}))).build().unwrap();
    let t = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let out = h
        .request(get("/api/items", Some(&t)).header("x-jwt-sub", "mallory"))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-jwt-sub"), Some("alice"));
    assert_eq!(out.upstream_header("x-jwt-scope"), Some("read"));
    let Outcome::Forwarded {
        upstream_headers, ..
    } = &out
    else {
        unreachable!()
    };
    let subs = upstream_headers
        .0
        .iter()
        .filter(|(k, _)| k == "x-jwt-sub")
        .count();
    assert_eq!(subs, 1, "the spoofed copy is gone, not merely shadowed");
    h.advance(TICK).unwrap();
    assert_eq!(h.metric("portcullis_allowed_total"), Some(1));
    assert_eq!(h.metric("portcullis_token_cache_misses_total"), Some(1));
    h.request(get("/api/items", Some(&t))).unwrap();
    h.advance(TICK).unwrap();
    assert_eq!(h.metric("portcullis_token_cache_hits_total"), Some(1));
    assert_eq!(h.metric("portcullis_allowed_total"), Some(2));
    assert_clean(&h);
}

#[test]
fn public_route_drops_spoofed_identity() {
    let mut h = builder(&policy(inline(), json!({}))).build().unwrap();
    let out = h
        .request(get("/healthz", None).header("x-jwt-sub", "mallory"))
        .unwrap();
    assert!(out.is_forwarded());
    assert_eq!(out.upstream_header("x-jwt-sub"), None);
    assert_clean(&h);
}

#[test]
fn denials_carry_the_oauth_answers() {
    let mut h = builder(&policy(inline(), json!({}))).build().unwrap();
    let out = h.request(get("/api/items", None)).unwrap();
    assert_eq!(status(&out), 401);
    assert_eq!(
        out.response_header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );

    let expired = testkit::rsa().sign(claims(json!({"scope": "read", "exp": NOW - 3600})));
    let out = h.request(get("/api/items", Some(&expired))).unwrap();
    assert_eq!(status(&out), 401);
    let w = out.response_header("www-authenticate").unwrap();
    assert!(
        w.contains("error=\"invalid_token\"") && w.contains("token expired"),
        "{w}"
    );
    let body: serde_json::Value = serde_json::from_slice(out.response_body().unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_token");

    let forged = testkit::rsa_other().sign(claims(json!({"scope": "read"})));
    assert_eq!(
        status(&h.request(get("/api/items", Some(&forged))).unwrap()),
        401
    );

    let none = format!(
        "{}.{}.",
        testkit::b64(br#"{"alg":"none"}"#),
        testkit::b64(claims(json!({"scope": "read"})).to_string().as_bytes())
    );
    assert_eq!(
        status(&h.request(get("/api/items", Some(&none))).unwrap()),
        401
    );

    let writer = testkit::rsa().sign(claims(json!({"scope": "write"})));
    let out = h.request(get("/api/items", Some(&writer))).unwrap();
    assert_eq!(status(&out), 403);
    let w = out.response_header("www-authenticate").unwrap();
    assert!(
        w.contains("error=\"insufficient_scope\"") && w.contains("scope=\"read\""),
        "{w}"
    );

    h.advance(TICK).unwrap();
    assert_eq!(h.metric("portcullis_denied_total"), Some(5));
    assert_eq!(h.metric("portcullis_denied_expired_total"), Some(1));
    let logs = h.log_messages().join("\n");
    assert!(!logs.contains(&expired), "the token itself is never logged");
    assert_eq!(logs.matches("portcullis decision").count(), 5, "{logs}");
    assert_clean(&h);
}

#[test]
fn observe_mode_lets_everything_through_and_logs_the_denial() {
    let mut h = builder(&policy(inline(), json!({"mode": "observe"})))
        .build()
        .unwrap();
    let out = h.request(get("/api/items", None)).unwrap();
    assert!(out.is_forwarded());
    assert!(h.logs_contain("verdict=deny mode=observe status=401"));
    h.advance(TICK).unwrap();
    assert_eq!(h.metric("portcullis_observed_denials_total"), Some(1));
    assert_clean(&h);
}

#[test]
fn a_bad_configuration_fails_the_start_naming_the_field() {
    let mut cfg = policy(inline(), json!({}));
    cfg["providers"]["idp"]["issuer"] = json!("idp.test");
    match builder(&cfg).build() {
        Err(HarnessError::ConfigureFailed { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a bad issuer must fail the start"),
    }
    let err = builder(&cfg).build().err().unwrap().to_string();
    assert!(
        err.contains("providers.idp.issuer: must be an absolute https URL"),
        "{err}"
    );
}
