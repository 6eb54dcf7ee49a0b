//! Whole requests through the harness (wasmtime): a minimal plugin as the floor against
//! Portcullis with a cached token, a replayed forgery and an anonymous route; and fresh
//! verification per algorithm inside the VM (`"crypto": "wasm"`) and by the host's
//! `verify_signature` (the harness's native implementation, as Envoy's BoringSSL would).

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_testkit::{self as testkit, claims, Signer, NOW};
use proxy_wasm_harness::{build_wasm, Harness, Plugin, Request};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn plugin(manifest: &str) -> Plugin {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = build_wasm(&root.join(manifest)).unwrap();
    Plugin::from_file(wasm).unwrap()
}

fn harness(plugin: &Plugin, config: Value) -> Harness {
    Harness::builder()
        .plugin(plugin)
        .plugin_config(config.to_string().into_bytes())
        .start_time(UNIX_EPOCH + Duration::from_secs(NOW))
        .build()
        .unwrap()
}

fn bearer(token: &str) -> Request {
    Request::get("/api/items").header("authorization", &format!("Bearer {token}"))
}

fn requests(c: &mut Criterion) {
    let minimal = plugin("host-harness/test-plugin/Cargo.toml");
    let filter = plugin("filter/Cargo.toml");
    let token = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let with_token = bearer(&token);

    let mut group = c.benchmark_group("harness_request");
    let mut floor = Harness::builder().plugin(&minimal).build().unwrap();
    group.bench_function("minimal_plugin", |b| {
        b.iter(|| {
            assert!(floor
                .request(Request::get("/api/items"))
                .unwrap()
                .is_forwarded())
        })
    });
    let mut cached = harness(&filter, portcullis_bench::policy(10_000));
    group.bench_function("portcullis_cached_token", |b| {
        b.iter(|| assert!(cached.request(with_token.clone()).unwrap().is_forwarded()))
    });
    let forged = bearer(&testkit::rsa_other().sign(claims(json!({"scope": "read"}))));
    group.bench_function("portcullis_forged_token_replayed", |b| {
        b.iter(|| assert_eq!(cached.request(forged.clone()).unwrap().status(), Some(401)))
    });
    let mut login = harness(&filter, portcullis_bench::login_policy(10_000));
    let with_session =
        Request::get("/app/page").header("cookie", &portcullis_bench::session_cookie(NOW));
    group.bench_function("portcullis_session_cookie", |b| {
        b.iter(|| assert!(login.request(with_session.clone()).unwrap().is_forwarded()))
    });
    group.bench_function("portcullis_anonymous_route", |b| {
        b.iter(|| {
            assert!(cached
                .request(Request::get("/public/x"))
                .unwrap()
                .is_forwarded())
        })
    });
    group.finish();

    // Fresh verification (cache off): the signature cost per algorithm and path.
    let es256 = testkit::es256();
    let eddsa = testkit::eddsa();
    let signers: [(&str, &Signer); 4] = [
        ("RS256", testkit::rsa()),
        ("ES256", &es256),
        ("PS256", testkit::ps256()),
        ("EdDSA", &eddsa),
    ];
    let jwks: Vec<Value> = signers.iter().map(|(_, s)| s.jwk()).collect();
    for crypto in ["wasm", "auto"] {
        let name = if crypto == "wasm" {
            "fresh_in_wasm"
        } else {
            "fresh_host_crypto"
        };
        let mut group = c.benchmark_group(name);
        let mut h = harness(&filter, portcullis_bench::policy_with(&jwks, 0, crypto));
        for (alg, signer) in &signers {
            if crypto == "auto" && matches!(*alg, "PS256" | "EdDSA") {
                continue; // Envoy's verify_signature cannot check these: same as in wasm
            }
            let request = bearer(&signer.sign(claims(json!({"scope": "read"}))));
            group.bench_function(*alg, |b| {
                b.iter(|| assert!(h.request(request.clone()).unwrap().is_forwarded()))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, requests);
criterion_main!(benches);
