//! Whole requests through the harness (wasmtime): a minimal plugin as the floor against
//! Portcullis with a cached token, a fresh RS256 verification, and an anonymous route.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_testkit::{self as testkit, claims, NOW};
use proxy_wasm_harness::{build_wasm, Harness, Plugin, Request};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn plugin(manifest: &str) -> Plugin {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = build_wasm(&root.join(manifest)).unwrap();
    Plugin::from_file(wasm).unwrap()
}

fn portcullis(plugin: &Plugin, cache_size: usize) -> Harness {
    let cfg = portcullis_bench::policy(cache_size);
    Harness::builder()
        .plugin(plugin)
        .plugin_config(cfg.to_string().into_bytes())
        .start_time(UNIX_EPOCH + Duration::from_secs(NOW))
        .build()
        .unwrap()
}

fn requests(c: &mut Criterion) {
    let minimal = plugin("host-harness/test-plugin/Cargo.toml");
    let filter = plugin("filter/Cargo.toml");
    let token = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let with_token = Request::get("/api/items").header("authorization", &format!("Bearer {token}"));

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
    let mut cached = portcullis(&filter, 10_000);
    group.bench_function("portcullis_cached_token", |b| {
        b.iter(|| assert!(cached.request(with_token.clone()).unwrap().is_forwarded()))
    });
    group.bench_function("portcullis_anonymous_route", |b| {
        b.iter(|| {
            assert!(cached
                .request(Request::get("/public/x"))
                .unwrap()
                .is_forwarded())
        })
    });
    let mut fresh = portcullis(&filter, 0);
    group.bench_function("portcullis_rs256_fresh", |b| {
        b.iter(|| assert!(fresh.request(with_token.clone()).unwrap().is_forwarded()))
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
