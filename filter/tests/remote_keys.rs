//! Keys from the identity provider through host callouts, in the harness: cold start,
//! timeouts, rotation, unknown-kid floods, outages, garbage, and several worker VMs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_clean, builder, get, policy, status};
use portcullis_testkit::{self as testkit, claims, Signer};
use proxy_wasm_harness::{Outcome, Response, Upstream};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn remote(extra: Value) -> Value {
    let mut r = json!({
        "cluster": "idp",
        "uri": "https://idp.test/keys",
        "timeout_ms": 1000,
        "refresh_seconds": 60,
        "max_stale_seconds": 120
    });
    if let (Value::Object(r), Value::Object(e)) = (&mut r, extra) {
        r.extend(e);
    }
    json!({ "remote_jwks": r })
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// An IdP whose answer the test can change while the harness runs.
#[derive(Clone)]
struct Idp(Arc<Mutex<Response>>);

impl Idp {
    fn serving(body: String) -> Idp {
        Idp(Arc::new(Mutex::new(Self::ok(body))))
    }
    fn ok(body: String) -> Response {
        Response::new(200)
            .header("content-type", "application/json")
            .body(body)
    }
    fn set(&self, r: Response) {
        *self.0.lock().unwrap() = r;
    }
    fn upstream(&self) -> Upstream {
        let me = self.clone();
        Upstream::handler(move |_| me.0.lock().unwrap().clone())
    }
}

fn read_token(s: &Signer, sub: &str) -> String {
    s.sign(claims(json!({"scope": "read", "sub": sub})))
}

#[test]
fn cold_start_pauses_requests_behind_one_callout() {
    let idp = Upstream::delayed(
        Duration::from_millis(300),
        Upstream::json(200, &jwks(&[testkit::rsa()])),
    );
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", idp)
        .build()
        .unwrap();
    let mut streams = Vec::new();
    for i in 0..50 {
        let out = h
            .request(get(
                "/api/a",
                Some(&read_token(testkit::rsa(), &format!("u{i}"))),
            ))
            .unwrap();
        assert!(out.is_paused(), "{out:?}");
        streams.push(out.stream());
    }
    assert_eq!(h.callouts().len(), 1, "one fetch, at start, for everybody");
    let c = &h.callouts()[0];
    assert_eq!(c.request.path(), "/keys");
    assert!(c
        .request
        .headers
        .0
        .iter()
        .any(|(k, v)| k == "user-agent" && v.starts_with("portcullis/")));
    h.advance(Duration::from_millis(400)).unwrap();
    for s in streams {
        let out = h.outcome(s).unwrap();
        assert!(out.is_forwarded(), "{out:?}");
    }
    assert_eq!(h.callouts().len(), 1);
    assert_eq!(h.metric("portcullis_jwks_fetch_ok_total"), Some(1));
    assert_eq!(h.metric("portcullis_jwks_keys_idp"), Some(1));
    assert_clean(&h);
}

#[test]
fn unreachable_idp_answers_503_with_retry_after() {
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", Upstream::hang())
        .build()
        .unwrap();
    let out = h
        .request(get("/api/a", Some(&read_token(testkit::rsa(), "a"))))
        .unwrap();
    assert!(out.is_paused());
    h.advance(Duration::from_millis(1200)).unwrap();
    let out = h.outcome(out.stream()).unwrap().clone();
    assert_eq!(status(&out), 503, "{out:?}");
    assert!(out.response_header("retry-after").is_some());
    assert!(h.logs_contain("reason=keys_unavailable"));
    // While backing off, new requests are answered at once instead of piling up.
    let out = h
        .request(get("/api/a", Some(&read_token(testkit::rsa(), "b"))))
        .unwrap();
    assert_eq!(status(&out), 503);
    assert!(h.metric("portcullis_jwks_fetch_failed_total").unwrap_or(0) >= 1);
    assert_clean(&h);
}

#[test]
fn a_rotated_key_is_accepted_on_its_first_request() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", idp.upstream())
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    let old = read_token(testkit::rsa(), "old");
    assert!(h.request(get("/api/a", Some(&old))).unwrap().is_forwarded());

    let new_key = testkit::es256();
    idp.set(Idp::ok(jwks(&[testkit::rsa(), &new_key])));
    let out = h
        .request(get("/api/a", Some(&read_token(&new_key, "new"))))
        .unwrap();
    assert!(
        out.is_paused(),
        "unknown kid waits for one re-fetch: {out:?}"
    );
    h.advance(Duration::from_millis(100)).unwrap();
    assert!(h.outcome(out.stream()).unwrap().is_forwarded());
    assert_eq!(h.callouts().len(), 2);
    // The old key is still published, so its tokens still pass.
    assert!(h.request(get("/api/a", Some(&old))).unwrap().is_forwarded());
    assert_clean(&h);
}

fn random_kid_token(i: usize) -> String {
    let kid = format!("random-{i}");
    let s = Signer::Es256(jwt_simple::prelude::ES256KeyPair::generate().with_key_id(&kid));
    read_token(&s, "x")
}

#[test]
fn random_kids_cannot_drive_callouts_and_every_forgery_gets_401() {
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", Upstream::json(200, &jwks(&[testkit::rsa()])))
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    let mut streams = Vec::new();
    for i in 0..200 {
        streams.push(
            h.request(get("/api/a", Some(&random_kid_token(i))))
                .unwrap(),
        );
        h.advance(Duration::from_millis(100)).unwrap();
    }
    // 20 s of random kids: the start-up fetch, one re-fetch at the first of them, and one
    // when the 15 s interval next permitted one.
    assert_eq!(h.callouts().len(), 3);
    // Held at most one interval (15 s) plus the timeout and a second; the kids that came
    // after the second re-fetch are answered by the third, 15 s after it.
    h.advance(Duration::from_secs(18)).unwrap();
    for out in &streams {
        let out = h.outcome(out.stream()).unwrap();
        assert_eq!(status(out), 401, "{out:?}");
    }
    assert_eq!(h.callouts().len(), 4);
    assert_clean(&h);
}

#[test]
fn a_key_rotated_in_during_a_kid_flood_works_on_its_first_request() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", idp.upstream())
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    for i in 0..20 {
        h.request(get("/api/a", Some(&random_kid_token(i))))
            .unwrap();
        h.advance(Duration::from_millis(100)).unwrap();
    }
    // The flood used the permitted re-fetch; now the IdP rotates.
    let new_key = testkit::es256();
    idp.set(Idp::ok(jwks(&[testkit::rsa(), &new_key])));
    let out = h
        .request(get("/api/a", Some(&read_token(&new_key, "new"))))
        .unwrap();
    assert!(
        out.is_paused(),
        "held for the next permitted re-fetch: {out:?}"
    );
    h.advance(Duration::from_secs(16)).unwrap();
    let done = h.outcome(out.stream()).unwrap();
    assert!(done.is_forwarded(), "{done:?}");
    assert_eq!(
        h.callouts().len(),
        3,
        "start-up, the flood's re-fetch, the rotation's"
    );
    assert_clean(&h);
}

#[test]
fn worker_vms_fetch_once_per_failure_and_back_off_together() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", idp.upstream())
        .workers(3)
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    let at_start = h.callouts().len();
    assert!(
        at_start <= 2,
        "one start-up fetch per proxy (a race may add one): {at_start}"
    );
    idp.set(Response::new(503).body("down"));
    // The refresh is due at 60 s; tries at 60, 61, 63, 67, 75 and 91 s (backoff 1, 2, 4,
    // 8, 16 s), each made by one VM for all three.
    h.advance(Duration::from_secs(60 + 31) + Duration::from_millis(500))
        .unwrap();
    let during_outage = h.callouts().len() - at_start;
    assert_eq!(during_outage, 6, "one callout per try for the whole proxy");
    for worker in 0..3 {
        let out = h
            .request_on(
                worker,
                get("/api/a", Some(&read_token(testkit::rsa(), "a"))),
            )
            .unwrap();
        assert!(
            out.is_forwarded(),
            "stale keys serve on worker {worker}: {out:?}"
        );
    }
    assert!(h.logs_contain("HTTP 503"));
    assert_clean(&h);
}

#[test]
fn an_outage_keeps_serving_the_last_good_keys_until_the_staleness_bound() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let mut h = builder(&policy(remote(json!({})), json!({"cache_size": 0})))
        .upstream("idp", idp.upstream())
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    idp.set(Response::new(500).body("down"));
    h.advance(Duration::from_secs(90)).unwrap();
    assert!(h.metric("portcullis_jwks_fetch_failed_total").unwrap_or(0) >= 1);
    let out = h
        .request(get("/api/a", Some(&read_token(testkit::rsa(), "a"))))
        .unwrap();
    assert!(out.is_forwarded(), "stale keys still serve: {out:?}");
    // Refresh was due at 60 s; past 60 + 120 s the keys are too old to trust.
    h.advance(Duration::from_secs(100)).unwrap();
    let out = h
        .request(get("/api/a", Some(&read_token(testkit::rsa(), "b"))))
        .unwrap();
    let out = if out.is_paused() {
        h.advance(Duration::from_secs(3)).unwrap();
        h.outcome(out.stream()).unwrap().clone()
    } else {
        out
    };
    assert_eq!(status(&out), 503);
    assert_clean(&h);
}

#[test]
fn garbage_from_the_idp_never_replaces_good_keys() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let keys = remote(json!({"max_stale_seconds": 3600}));
    let mut h = builder(&policy(keys, json!({"cache_size": 0})))
        .upstream("idp", idp.upstream())
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    let garbage = [
        Response::new(200)
            .header("content-type", "text/html")
            .body("<html>maintenance</html>"),
        Response::new(200).body(r#"{"keys": []}"#),
        Response::new(200)
            .body(r#"{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}"#),
        Response::new(200).body(vec![b'{'; 10 * 1024 * 1024]),
        Response::new(200).body("null"),
    ];
    for (i, g) in garbage.into_iter().enumerate() {
        idp.set(g);
        h.advance(Duration::from_secs(61)).unwrap();
        let out = h
            .request(get(
                "/api/a",
                Some(&read_token(testkit::rsa(), &format!("u{i}"))),
            ))
            .unwrap();
        assert!(out.is_forwarded(), "after garbage #{i}: {out:?}");
    }
    assert!(h.is_alive(0));
    assert!(h.metric("portcullis_jwks_fetch_failed_total").unwrap_or(0) >= 5);
    assert_clean(&h);
}

#[test]
fn worker_vms_converge_on_keys_within_a_tick() {
    let idp = Idp::serving(jwks(&[testkit::rsa()]));
    let mut h = builder(&policy(remote(json!({})), json!({})))
        .upstream("idp", idp.upstream())
        .workers(2)
        .build()
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    let at_start = h.callouts().len();
    let new_key = testkit::es256();
    idp.set(Idp::ok(jwks(&[testkit::rsa(), &new_key])));
    let out = h
        .request_on(0, get("/api/a", Some(&read_token(&new_key, "a"))))
        .unwrap();
    h.advance(Duration::from_millis(100)).unwrap();
    assert!(h.outcome(out.stream()).unwrap().is_forwarded());
    h.advance(Duration::from_millis(1000)).unwrap();
    let out = h
        .request_on(1, get("/api/a", Some(&read_token(&new_key, "b"))))
        .unwrap();
    assert!(
        matches!(out, Outcome::Forwarded { .. }),
        "worker 1 has the new key: {out:?}"
    );
    assert_eq!(
        h.callouts().len(),
        at_start + 1,
        "worker 1 made no callout of its own"
    );
    assert_clean(&h);
}
