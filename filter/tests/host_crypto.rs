//! Signatures checked by the host's native `verify_signature` (Envoy's foreign function,
//! which the harness implements too), and the wasm fallback when the host lacks it, cannot
//! be trusted for an algorithm, or the policy asks for wasm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_clean, builder, get, policy, status};
use portcullis_testkit::{self as testkit, claims, Signer};
use proxy_wasm_harness::{verify_signature, Status, VERIFY_SIGNATURE};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn keys(signers: &[&Signer]) -> Value {
    json!({"jwks": {"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}})
}

fn read_token(s: &Signer) -> String {
    s.sign(claims(json!({"scope": "read"})))
}

/// How often the host function was called, and how often it answered `result: true`.
type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>);
type HostFunction = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// The harness's own `verify_signature`, counting its calls and its `result: true` answers.
fn counted() -> (Arc<AtomicUsize>, Arc<AtomicUsize>, HostFunction) {
    let (calls, valid): Counters = Default::default();
    let (c, v) = (Arc::clone(&calls), Arc::clone(&valid));
    (
        calls,
        valid,
        Box::new(move |args: &[u8]| {
            c.fetch_add(1, Ordering::SeqCst);
            let answer = verify_signature(args);
            if answer.as_deref().is_ok_and(|a| a.starts_with(&[0x08, 1])) {
                v.fetch_add(1, Ordering::SeqCst);
            }
            answer
        }),
    )
}

#[test]
fn rsa_and_ecdsa_tokens_are_verified_by_the_host() {
    let (es256, es384) = (testkit::es256(), testkit::es384());
    let config = policy(keys(&[testkit::rsa(), &es256, &es384]), json!({}));
    let (calls, valid, f) = counted();
    let mut h = builder(&config)
        .foreign_function(VERIFY_SIGNATURE, f)
        .build()
        .unwrap();
    let probes = calls.load(Ordering::SeqCst);
    for (i, signer) in [testkit::rsa(), &es256, &es384].into_iter().enumerate() {
        let before = calls.load(Ordering::SeqCst);
        let out = h
            .request(get("/api/items", Some(&read_token(signer))))
            .unwrap();
        assert!(out.is_forwarded(), "{out:?}");
        assert_eq!(out.upstream_header("x-jwt-sub"), Some("alice"));
        assert_eq!(calls.load(Ordering::SeqCst), before + 1, "one host check");
        assert_eq!(valid.load(Ordering::SeqCst), i + 1, "the host accepted it");
    }
    assert!(probes >= 1, "the plugin looks for the function at start");
    assert_clean(&h);
}

#[test]
fn forged_tokens_are_refused_by_the_host_and_remembered() {
    let config = policy(keys(&[testkit::rsa()]), json!({}));
    let (calls, _, f) = counted();
    let mut h = builder(&config)
        .foreign_function(VERIFY_SIGNATURE, f)
        .build()
        .unwrap();
    // A genuine token first: from then on the host's refusals are final.
    let ok = h
        .request(get("/api/items", Some(&read_token(testkit::rsa()))))
        .unwrap();
    assert!(ok.is_forwarded());
    let forged = read_token(testkit::rsa_other());
    let before = calls.load(Ordering::SeqCst);
    let out = h.request(get("/api/items", Some(&forged))).unwrap();
    assert_eq!(status(&out), 401);
    assert!(out
        .response_header("www-authenticate")
        .unwrap()
        .contains("signature does not verify"));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    for _ in 0..3 {
        let again = h.request(get("/api/items", Some(&forged))).unwrap();
        assert_eq!(status(&again), 401);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "a repeated forgery costs a lookup, not another signature check"
    );
    assert!(h
        .logs()
        .iter()
        .any(|l| l.message.contains("reason=bad_signature") && l.message.contains("cache=hit")));
    assert_clean(&h);
}

#[test]
fn without_the_host_function_every_algorithm_still_verifies_in_wasm() {
    let (es256, eddsa) = (testkit::es256(), testkit::eddsa());
    let signers = [testkit::rsa(), testkit::ps256(), &es256, &eddsa];
    let config = policy(keys(&signers), json!({}));
    let mut h = builder(&config)
        .without_foreign_function(VERIFY_SIGNATURE)
        .build()
        .unwrap();
    for s in signers {
        let out = h.request(get("/api/items", Some(&read_token(s)))).unwrap();
        assert!(out.is_forwarded(), "{out:?}");
    }
    let forged = read_token(testkit::rsa_other());
    assert_eq!(
        status(&h.request(get("/api/items", Some(&forged))).unwrap()),
        401
    );
    assert!(h
        .logs()
        .iter()
        .any(|l| l.message.contains("no verify_signature")));
    assert_clean(&h);
}

#[test]
fn a_host_that_refuses_genuine_signatures_is_overruled_and_then_not_asked() {
    let config = policy(keys(&[testkit::rsa()]), json!({}));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    // `result` left out: "does not verify", for everything.
    let mut h = builder(&config)
        .foreign_function(VERIFY_SIGNATURE, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(b"\x12\x04nope".to_vec())
        })
        .build()
        .unwrap();
    let start = calls.load(Ordering::SeqCst);
    let first = read_token(testkit::rsa());
    assert!(h
        .request(get("/api/items", Some(&first)))
        .unwrap()
        .is_forwarded());
    assert_eq!(calls.load(Ordering::SeqCst), start + 1);
    let second = testkit::rsa().sign(claims(json!({"scope": "read", "sub": "bob"})));
    let out = h.request(get("/api/items", Some(&second))).unwrap();
    assert_eq!(out.upstream_header("x-jwt-sub"), Some("bob"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        start + 1,
        "RS256 is no longer sent to the host"
    );
    let forged = read_token(testkit::rsa_other());
    assert_eq!(
        status(&h.request(get("/api/items", Some(&forged))).unwrap()),
        401
    );
    assert_clean(&h);
}

#[test]
fn host_errors_fall_back_to_wasm() {
    let config = policy(keys(&[testkit::rsa()]), json!({}));
    let mut h = builder(&config)
        .foreign_function(VERIFY_SIGNATURE, |_| Err(Status::BadArgument))
        .build()
        .unwrap();
    let out = h
        .request(get("/api/items", Some(&read_token(testkit::rsa()))))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    let forged = read_token(testkit::rsa_other());
    assert_eq!(
        status(&h.request(get("/api/items", Some(&forged))).unwrap()),
        401
    );
    assert_clean(&h);
}

#[test]
fn crypto_wasm_never_asks_the_host() {
    let config = policy(keys(&[testkit::rsa()]), json!({"crypto": "wasm"}));
    let (calls, _, f) = counted();
    let mut h = builder(&config)
        .foreign_function(VERIFY_SIGNATURE, f)
        .build()
        .unwrap();
    let probes = calls.load(Ordering::SeqCst);
    let out = h
        .request(get("/api/items", Some(&read_token(testkit::rsa()))))
        .unwrap();
    assert!(out.is_forwarded());
    assert_eq!(calls.load(Ordering::SeqCst), probes);
    assert_clean(&h);
}

#[test]
fn the_harness_function_answers_like_envoy_on_bad_input() {
    assert_eq!(verify_signature(&[]), Err(Status::BadArgument), "no key");
    assert_eq!(
        verify_signature(&[0x12, 2, 0x30, 0]),
        Err(Status::BadArgument),
        "not a key"
    );
    assert_eq!(
        verify_signature(&[0x12, 9, 1]),
        Err(Status::BadArgument),
        "truncated"
    );
}
