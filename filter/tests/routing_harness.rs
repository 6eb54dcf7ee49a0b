//! Identity routing with the compiled plugin in the harness: the route tag reaches the origin
//! as a request header, and the plugin asks the host (Envoy's `clear_route_cache`) to match
//! the route again on the edited headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_clean, builder, get};
use portcullis_testkit::{self as testkit, claims};
use proxy_wasm_harness::{LogLevel, Outcome, CLEAR_ROUTE_CACHE};
use serde_json::{json, Value};

const ADMIN_ROLE: &str = "arn:aws:iam::123456789012:role/AdminFull";

fn routing_policy() -> Value {
    json!({
        "providers": {"idp": {
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "jwks": {"keys": [testkit::rsa().jwk()]}
        }},
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "db", "match": {"path": {"prefix": "/db/"}}, "routing": "required"}
        ],
        "claim_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        "routing": {"routes": [
            {"claim": "https://aws.amazon.com/role", "glob": "arn:aws:iam::*:role/Admin*", "tag": "admin"},
            {"claim": "cognito:groups", "any_of": ["readers"], "tag": "replica"}
        ]}
    })
}

fn token(extra: Value) -> String {
    testkit::rsa().sign(claims(extra))
}

#[test]
fn an_admin_role_is_routed_to_admin_and_the_route_matched_again() {
    let mut h = builder(&routing_policy()).build().unwrap();
    let t = token(json!({"https://aws.amazon.com/role": ADMIN_ROLE}));
    let out = h.request(get("/db/orders", Some(&t))).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-portcullis-route"), Some("admin"));
    assert_eq!(out.upstream_header("x-jwt-sub"), Some("alice"));
    assert!(out.route_cache_cleared() >= 1, "{out:?}");
    assert_clean(&h);
}

#[test]
fn a_reader_is_routed_to_the_replica() {
    let mut h = builder(&routing_policy()).build().unwrap();
    let t = token(json!({"sub": "bob", "cognito:groups": ["staff", "readers"]}));
    // A tag the client sends is never the one the origin gets.
    let out = h
        .request(get("/db/orders", Some(&t)).header("x-portcullis-route", "admin"))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    let Outcome::Forwarded {
        upstream_headers,
        route_cache_cleared,
        ..
    } = &out
    else {
        unreachable!()
    };
    assert_eq!(
        upstream_headers.get_all("x-portcullis-route"),
        ["replica"],
        "{out:?}"
    );
    assert!(*route_cache_cleared >= 1, "{out:?}");
    assert_clean(&h);
}

#[test]
fn a_spoofed_tag_on_an_open_route_is_removed_and_the_route_matched_again() {
    let mut h = builder(&routing_policy()).build().unwrap();
    let out = h
        .request(get("/healthz", None).header("x-portcullis-route", "admin"))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-portcullis-route"), None, "{out:?}");
    assert!(out.route_cache_cleared() >= 1, "{out:?}");
    assert_clean(&h);
}

#[test]
fn an_identity_without_a_route_is_refused() {
    let mut h = builder(&routing_policy()).build().unwrap();
    let t = token(json!({"sub": "carol", "cognito:groups": ["writers"]}));
    let out = h.request(get("/db/orders", Some(&t))).unwrap();
    assert_eq!(out.status(), Some(403), "{out:?}");
    assert!(!out.is_forwarded());
    let body = String::from_utf8_lossy(out.response_body().unwrap()).into_owned();
    assert!(body.contains("access_denied"), "{body}");
    let logs = h.log_messages();
    assert!(
        logs.iter()
            .any(|l| l.contains("portcullis decision") && l.contains("reason=no_route")),
        "{logs:?}"
    );
    assert_clean(&h);
}

#[test]
fn a_host_without_clear_route_cache_is_warned_about_and_requests_are_still_tagged() {
    let mut h = builder(&routing_policy())
        .without_foreign_function(CLEAR_ROUTE_CACHE)
        .build()
        .unwrap();
    let warned = h
        .logs()
        .iter()
        .any(|l| l.level == LogLevel::Warn && l.message.contains("clear_route_cache"));
    assert!(warned, "{:?}", h.log_messages());
    let t = token(json!({"https://aws.amazon.com/role": ADMIN_ROLE}));
    let out = h.request(get("/db/orders", Some(&t))).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-portcullis-route"), Some("admin"));
    assert_eq!(out.route_cache_cleared(), 0);
    assert_clean(&h);
}
