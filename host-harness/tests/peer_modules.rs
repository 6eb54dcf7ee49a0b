//! Conformance: the compiled proxy-wasm SDK examples in `../shared/peer-modules/` (Rust and Go, written
//! elsewhere; their README says what each does) run in the harness with the requests a user would send, and
//! behave as that README (and Envoy) says, or the harness refuses them with a message naming what it lacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proxy_wasm_harness::{
    Harness, HarnessBuilder, Outcome, Phase, Plugin, Request, Response, Upstream,
};

/// The peer module `lang/name.wasm`.
fn module_path(lang: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/peer-modules")
        .join(lang)
        .join(format!("{name}.wasm"))
}

/// The module compiled once per test binary (the Go ones are megabytes).
fn plugin(lang: &str, name: &str) -> Plugin {
    static CACHE: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let key = format!("{lang}/{name}");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap().get(&key) {
        return p.clone();
    }
    let path = module_path(lang, name);
    let p = Plugin::from_file(&path).unwrap_or_else(|e| panic!("{} compiles: {e}", path.display()));
    cache.lock().unwrap().insert(key, p.clone());
    p
}

fn builder(lang: &str, name: &str) -> HarnessBuilder {
    Harness::builder().plugin(&plugin(lang, name))
}

/// An origin that counts the requests it gets and answers 200 `origin`.
fn counting_origin() -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let origin = Upstream::handler(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        Response::new(200)
            .header("content-type", "text/plain")
            .body("origin")
    });
    (origin, calls)
}

/// An `httpbin` cluster whose `/bytes/1` answers one byte, after 10 ms.
fn httpbin(byte: u8) -> Upstream {
    Upstream::delayed(
        Duration::from_millis(10),
        Upstream::respond(
            Response::new(200)
                .header("content-type", "application/octet-stream")
                .body(vec![byte]),
        ),
    )
}

fn assert_no_violations(h: &Harness) {
    assert!(
        h.violations().is_empty(),
        "violations: {:?}",
        h.violations()
    );
}

// ---------------------------------------------------------------------------------------------------------
// Rust SDK examples
// ---------------------------------------------------------------------------------------------------------

#[test]
fn rust_http_auth_random_holds_a_post_body_until_the_callout_answers_then_allows_on_even() {
    let (origin, calls) = counting_origin();
    let mut h = builder("rust", "http_auth_random")
        .upstream("httpbin", httpbin(2))
        .backend(origin)
        .build()
        .unwrap();
    let out = h.request(Request::post("/post").body("payload")).unwrap();
    assert!(
        matches!(
            out,
            Outcome::Paused {
                phase: Phase::RequestHeaders,
                ..
            }
        ),
        "held at the headers, body included: {out:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the origin waits for the callout"
    );
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 1);
    assert_eq!(callouts[0].request.upstream, "httpbin");
    assert_eq!(callouts[0].request.path(), "/bytes/1");
    assert_eq!(callouts[0].request.method(), "GET");
    h.advance(Duration::from_millis(10)).unwrap();
    let out = h.outcome(out.stream()).unwrap().clone();
    let Outcome::Forwarded {
        upstream_body,
        response,
        ..
    } = &out
    else {
        panic!("an even byte lets it through: {out:?}");
    };
    assert_eq!(upstream_body, b"payload");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(response.status, 200);
    assert_eq!(out.response_header("powered-by"), Some("proxy-wasm"));
    assert!(h.logs_contain("Access granted."));
    assert_no_violations(&h);
}

#[test]
fn rust_http_auth_random_answers_403_on_odd_and_the_origin_is_never_called() {
    let (origin, calls) = counting_origin();
    let mut h = builder("rust", "http_auth_random")
        .upstream("httpbin", httpbin(3))
        .backend(origin)
        .build()
        .unwrap();
    let out = h.request(Request::post("/post").body("payload")).unwrap();
    assert!(out.is_paused());
    h.advance(Duration::from_millis(10)).unwrap();
    let out = h.outcome(out.stream()).unwrap().clone();
    let Outcome::LocalResponse {
        status,
        body,
        forwarded,
        ..
    } = &out
    else {
        panic!("an odd byte denies: {out:?}");
    };
    assert_eq!(*status, 403);
    assert_eq!(body, b"Access forbidden.\n");
    assert!(!forwarded);
    assert_eq!(out.response_header("powered-by"), Some("proxy-wasm"));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the origin never saw it");
    assert!(h.logs_contain("Access forbidden."));
    assert_no_violations(&h);
}

#[test]
fn rust_http_auth_random_with_allow_on_headers_stop_iteration_lets_the_body_through() {
    // Envoy's `allow_on_headers_stop_iteration: true`: a headers Pause no longer holds the body, and the
    // SDK's body callback (absent here: Continue) lets the request go before the callout answers.
    let (origin, calls) = counting_origin();
    let mut h = builder("rust", "http_auth_random")
        .allow_on_headers_stop_iteration(true)
        .upstream("httpbin", httpbin(3))
        .backend(origin)
        .build()
        .unwrap();
    let out = h.request(Request::post("/post").body("payload")).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "forwarded before the answer: {out:?}"
    );
    // Without a body the headers callback is the last of its direction, and its Pause holds either way.
    let out = h.request(Request::get("/get")).unwrap();
    assert!(out.is_paused(), "{out:?}");
}
