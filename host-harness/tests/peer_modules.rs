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
    type Cache = Mutex<HashMap<String, Arc<OnceLock<Plugin>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Cache::default)
        .lock()
        .unwrap()
        .entry(format!("{lang}/{name}"))
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let path = module_path(lang, name);
        Plugin::from_file(&path).unwrap_or_else(|e| panic!("{} compiles: {e}", path.display()))
    })
    .clone()
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

/// The modules this file runs, each by at least one test below.
const COVERED: &[&str] = &[
    "go/http_auth_random",
    "go/http_body",
    "go/http_headers",
    "go/http_routing",
    "go/metrics",
    "go/postpone_requests",
    "go/shared_data",
    "rust/envoy_filter_metadata",
    "rust/grpc_auth_random",
    "rust/hello_world",
    "rust/http_auth_random",
    "rust/http_body",
    "rust/http_config",
    "rust/http_headers",
];

#[test]
fn every_peer_module_is_covered() {
    // A module added to ../shared/peer-modules/ without a test here fails this, instead of being skipped.
    let mut found = Vec::new();
    for lang in ["go", "rust"] {
        let dir = module_path(lang, "x").parent().unwrap().to_path_buf();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                found.push(format!("{lang}/{stem}"));
            }
        }
    }
    found.sort();
    assert_eq!(found, COVERED);
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

#[test]
fn rust_http_headers_logs_headers_and_answers_hello_locally() {
    let mut h = builder("rust", "http_headers").build().unwrap();
    let out = h.request(Request::get("/hello")).unwrap();
    let Outcome::LocalResponse {
        status,
        body,
        forwarded,
        ..
    } = &out
    else {
        panic!("/hello is answered locally: {out:?}");
    };
    assert_eq!(
        (*status, body.as_slice(), *forwarded),
        (200, &b"Hello, World!\n"[..], false)
    );
    assert_eq!(out.response_header("hello"), Some("World"));
    assert_eq!(out.response_header("powered-by"), Some("proxy-wasm"));
    assert!(h.logs_contain("-> :path: /hello"), "{:?}", h.log_messages());
    assert!(h.logs_contain("<- :status: 200"), "{:?}", h.log_messages());
    assert!(h.logs_contain("completed."));
    // Envoy's environment, as the plugin sees it: the local reply got content-length and content-type
    // before on_http_response_headers; date and server come after it (the client sees them, the plugin not).
    assert!(
        h.logs_contain("<- content-length: 14"),
        "{:?}",
        h.log_messages()
    );
    assert!(h.logs_contain("<- content-type: text/plain"));
    assert!(h.logs_contain("-> x-forwarded-proto: https"));
    assert!(h.logs_contain("-> x-request-id: "));
    assert!(!h.logs_contain("<- server:") && !h.logs_contain("<- date:"));
    assert_eq!(out.response_header("server"), Some("envoy"));
    assert!(out
        .response_header("date")
        .is_some_and(|d| d.ends_with(" GMT")));
    h.take_logs();
    let out = h.request(Request::get("/other")).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert!(h.logs_contain("-> :path: /other"));
    // The router's header on an origin response reaches the plugin.
    assert!(
        h.logs_contain("<- x-envoy-upstream-service-time: 0"),
        "{:?}",
        h.log_messages()
    );
    assert_eq!(out.response_header("server"), Some("envoy"));
    assert_no_violations(&h);
}

#[test]
fn rust_http_body_redacts_a_secret_response_body_and_drops_content_length() {
    let mut h = builder("rust", "http_body")
        .backend(Upstream::respond(
            Response::new(200)
                .header("content-length", "17")
                .body("my secret is out"),
        ))
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(
        out.response_body(),
        Some(&b"Original message body (16 bytes) redacted.\n"[..]),
        "{out:?}"
    );
    assert_eq!(out.response_header("content-length"), None);
    h.set_backend(Upstream::respond(
        Response::new(200).body("nothing to hide"),
    ));
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.response_body(), Some(&b"nothing to hide"[..]));
    assert_no_violations(&h);
}

#[test]
fn rust_http_config_puts_the_configuration_in_a_response_header() {
    let mut h = builder("rust", "http_config")
        .plugin_config(b"from-config".to_vec())
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.response_header("custom-header"), Some("from-config"));
    assert_no_violations(&h);
}

#[test]
fn rust_envoy_filter_metadata_answers_with_the_dynamic_metadata_when_present() {
    let mut h = builder("rust", "envoy_filter_metadata").build().unwrap();
    assert!(h.request(Request::get("/")).unwrap().is_forwarded());
    let mut h = builder("rust", "envoy_filter_metadata")
        .property(
            "metadata.filter_metadata.envoy.filters.http.lua.uppercased-custom-metadata",
            b"HELLO".to_vec(),
        )
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.status(), Some(200));
    assert!(!out.is_forwarded(), "{out:?}");
    assert_eq!(out.response_header("uppercased-metadata"), Some("HELLO"));
    assert_eq!(
        out.response_body(),
        Some(&b"Custom response with Envoy metadata: \"HELLO\"\n"[..])
    );
    assert_no_violations(&h);
}

#[test]
fn rust_hello_world_logs_at_start_and_on_each_tick() {
    let mut h = builder("rust", "hello_world").build().unwrap();
    assert!(h.logs_contain("Hello, World!"));
    assert_eq!(h.tick_period(0), Some(Duration::from_secs(5)));
    h.advance(Duration::from_secs(5)).unwrap();
    assert!(
        h.logs_contain("your lucky number is"),
        "{:?}",
        h.log_messages()
    );
    assert_no_violations(&h);
}

#[test]
fn rust_grpc_auth_random_rejects_non_grpc_and_traps_without_the_cluster_as_in_envoy() {
    let mut h = builder("rust", "grpc_auth_random").build().unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.status(), Some(503), "{out:?}");
    assert_eq!(
        out.response_body(),
        Some(&b"Service accessible only to gRPC clients.\n"[..])
    );
    assert_eq!(out.response_header("powered-by"), Some("proxy-wasm"));
    // The reflection API is always allowed.
    let grpc = |path: &str| Request::post(path).header("content-type", "application/grpc");
    let out = h
        .request(grpc("/grpc.reflection.v1alpha.ServerReflection/Info"))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_no_violations(&h);
    // Anything else calls cluster `grpcbin`; with no such cluster Envoy answers `ParseFailure` and the
    // example's `unwrap()` panics: the VM traps in Envoy too.
    let err = h.request(grpc("/grpcbin.GRPCBin/Index")).unwrap_err();
    assert!(err.to_string().contains("ParseFailure"), "{err}");
    // With a `grpcbin` cluster Envoy would make the gRPC call; the harness cannot, and says so by name.
    let mut h = builder("rust", "grpc_auth_random")
        .upstream("grpcbin", Upstream::respond(Response::new(200)))
        .build()
        .unwrap();
    let err = h.request(grpc("/grpcbin.GRPCBin/Index")).unwrap_err();
    assert!(
        err.to_string().contains(
            "proxy_grpc_call to cluster `grpcbin`: gRPC callouts are not supported by the harness"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Go SDK examples
// ---------------------------------------------------------------------------------------------------------

#[test]
fn go_http_headers_adds_headers_and_rejects_a_bad_configuration() {
    let mut h = builder("go", "http_headers")
        .plugin_config(br#"{"header": "x-wasm-header", "value": "demo-wasm"}"#.to_vec())
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.upstream_header("test"), Some("best"), "{out:?}");
    assert_eq!(
        out.response_header("x-proxy-wasm-go-sdk-example"),
        Some("http_headers")
    );
    assert_eq!(out.response_header("x-wasm-header"), Some("demo-wasm"));
    assert!(h.logs_contain("request header --> test: best"));
    assert!(h.logs_contain("finished"));
    assert_no_violations(&h);
    let Err(err) = builder("go", "http_headers")
        .plugin_config(b"not json".to_vec())
        .build()
    else {
        panic!("a bad configuration is refused");
    };
    assert!(
        err.to_string().contains("invalid configuration format"),
        "{err}"
    );
}

#[test]
fn go_http_body_replaces_appends_and_echoes() {
    let post = |body: &str| {
        Request::post("/")
            .header("content-length", &body.len().to_string())
            .body(body.to_string())
    };
    let mut h = builder("go", "http_body").build().unwrap();
    let out = h.request(post("hello")).unwrap();
    let Outcome::Forwarded { upstream_body, .. } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(upstream_body, b"[this is replaced body]");
    let out = h
        .request(post("hello").header("buffer-operation", "append"))
        .unwrap();
    let Outcome::Forwarded { upstream_body, .. } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(upstream_body, b"hello[this is appended body]");
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.status(), Some(400), "no content-length: {out:?}");
    assert_eq!(out.response_body(), Some(&b"content must be provided"[..]));
    assert!(h.logs_contain("original request body: hello"));
    assert_no_violations(&h);
    let mut h = builder("go", "http_body")
        .plugin_config(b"echo".to_vec())
        .build()
        .unwrap();
    let out = h.request(post("echo me")).unwrap();
    assert_eq!(out.status(), Some(200), "{out:?}");
    assert!(!out.is_forwarded());
    assert_eq!(out.response_body(), Some(&b"echo me"[..]));
    assert_no_violations(&h);
}

#[test]
fn go_http_auth_random_calls_httpbin_and_allows_or_forbids_by_the_answer() {
    // FNV-32a of the answer decides: of "a" (0xe40c292c) even, of "b" (0xe70c2de5) odd.
    let (origin, calls) = counting_origin();
    let mut h = builder("go", "http_auth_random")
        .upstream(
            "httpbin",
            Upstream::delayed(
                Duration::from_millis(10),
                Upstream::respond(Response::new(200).body("a")),
            ),
        )
        .backend(origin)
        .build()
        .unwrap();
    let out = h.request(Request::post("/").body("x")).unwrap();
    assert!(out.is_paused(), "{out:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    h.advance(Duration::from_millis(10)).unwrap();
    assert!(h.outcome(out.stream()).unwrap().is_forwarded());
    assert!(h.logs_contain("access granted"));
    assert!(h.logs_contain("http call dispatched to httpbin"));
    // Envoy's router stamps callout answers too.
    assert!(
        h.logs_contain("response header from httpbin: x-envoy-upstream-service-time: 10"),
        "{:?}",
        h.log_messages()
    );
    assert_no_violations(&h);
    let (origin, calls) = counting_origin();
    let mut h = builder("go", "http_auth_random")
        .upstream(
            "httpbin",
            Upstream::delayed(
                Duration::from_millis(10),
                Upstream::respond(Response::new(200).body("b")),
            ),
        )
        .backend(origin)
        .build()
        .unwrap();
    let out = h.request(Request::post("/").body("x")).unwrap();
    h.advance(Duration::from_millis(10)).unwrap();
    let out = h.outcome(out.stream()).unwrap().clone();
    assert_eq!(out.status(), Some(403), "{out:?}");
    assert_eq!(out.response_body(), Some(&b"access forbidden"[..]));
    assert_eq!(
        out.response_header("powered-by"),
        Some("proxy-wasm-go-sdk!!")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_no_violations(&h);
}

#[test]
fn go_http_routing_sends_even_dice_to_the_canary() {
    let mut h = builder("go", "http_routing")
        .plugin_config(vec![2u8])
        .build()
        .unwrap();
    let out = h.request(Request::get("/").authority("svc")).unwrap();
    assert_eq!(
        out.upstream_header(":authority"),
        Some("svc-canary"),
        "{out:?}"
    );
    let mut h = builder("go", "http_routing")
        .plugin_config(vec![1u8])
        .build()
        .unwrap();
    let out = h.request(Request::get("/").authority("svc")).unwrap();
    assert_eq!(out.upstream_header(":authority"), Some("svc"), "{out:?}");
    assert_no_violations(&h);
}

#[test]
fn go_postpone_requests_resumes_on_the_next_tick() {
    let mut h = builder("go", "postpone_requests").build().unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert!(out.is_paused(), "{out:?}");
    h.advance(Duration::from_secs(1)).unwrap();
    assert!(h.outcome(out.stream()).unwrap().is_forwarded());
    assert!(h.logs_contain("resume request with contextID="));
    assert_no_violations(&h);
}

#[test]
fn go_shared_data_counts_requests() {
    let mut h = builder("go", "shared_data").build().unwrap();
    for _ in 0..3 {
        assert!(h.request(Request::get("/")).unwrap().is_forwarded());
    }
    let logs = h.log_messages();
    for n in 1..=3 {
        assert!(
            logs.iter().any(|l| l == &format!("shared value: {n}")),
            "{logs:?}"
        );
    }
    assert_no_violations(&h);
}

#[test]
fn go_metrics_counts_requests_by_header_value() {
    let mut h = builder("go", "metrics").build().unwrap();
    for _ in 0..2 {
        let out = h
            .request(Request::get("/").header("my-custom-header", "foo"))
            .unwrap();
        assert!(out.is_forwarded());
    }
    assert_eq!(
        h.metric("custom_header_value_counts_value=foo_reporter=wasmgosdk"),
        Some(2),
        "{:?}",
        h.metrics()
    );
    assert_no_violations(&h);
}
