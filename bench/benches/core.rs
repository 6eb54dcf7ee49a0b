//! The core's per-request cost, natively: verification per algorithm, and whole decisions
//! for a cached token, a fresh token, an anonymous route and garbage.

use criterion::{criterion_group, criterion_main, Criterion};
use jwt_simple::prelude::{
    NoCustomClaims, RS256PublicKey, RSAPublicKeyLike, UnixTimeStamp, VerificationOptions,
};
use portcullis::alg::Alg;
use portcullis::config;
use portcullis::engine::Engine;
use portcullis::keys::KeySet;
use portcullis::time::UnixTime;
use portcullis::verify::{self, Requirements};
use portcullis_testkit::{self as testkit, claims, Signer, NOW};
use serde_json::json;
use std::hint::black_box;

fn all_algorithms() -> Vec<Alg> {
    let mut algs = Alg::ASYMMETRIC.to_vec();
    algs.push(Alg::HS256);
    algs
}

fn verification(c: &mut Criterion) {
    let es256 = testkit::es256();
    let es384 = testkit::es384();
    let eddsa = testkit::eddsa();
    let hs256 = testkit::hs256();
    let signers: Vec<(&str, &Signer)> = vec![
        ("RS256", testkit::rsa()),
        ("PS256", testkit::ps256()),
        ("ES256", &es256),
        ("ES384", &es384),
        ("EdDSA", &eddsa),
        ("HS256", &hs256),
    ];
    let jwks = json!({"keys": signers.iter().map(|(_, s)| s.jwk()).collect::<Vec<_>>()});
    let (keys, _) = KeySet::from_jwks(jwks.to_string().as_bytes(), &all_algorithms()).unwrap();
    let req = Requirements {
        issuer: "https://idp.test".into(),
        audiences: vec!["api".into()],
        algorithms: all_algorithms(),
        clock_skew: 60,
        require_expiration: true,
        max_lifetime: None,
        max_token_bytes: 8192,
        require_access_token: false,
    };
    let mut group = c.benchmark_group("verify");
    for (name, signer) in &signers {
        let token = signer.sign(claims(json!({"scope": "read"})));
        assert!(verify::verify(&token, &keys, &req, NOW).is_ok());
        group.bench_function(*name, |b| {
            b.iter(|| verify::verify(black_box(&token), &keys, &req, NOW))
        });
    }
    group.finish();

    // The reference the plugin's own RSA code replaced in the VM: jwt-simple's pure-Rust RS256
    // (the `rsa` crate), natively.
    let mut group = c.benchmark_group("verify_jwt_simple");
    let rsa = testkit::rsa();
    let token = rsa.sign(claims(json!({"scope": "read"})));
    let key = RS256PublicKey::from_jwk(&rsa.jwk().to_string()).unwrap();
    let options = VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(NOW)),
        ..VerificationOptions::default()
    };
    assert!(key
        .verify_token::<NoCustomClaims>(&token, Some(options.clone()))
        .is_ok());
    group.bench_function("RS256", |b| {
        b.iter(|| key.verify_token::<NoCustomClaims>(black_box(&token), Some(options.clone())))
    });
    group.finish();
}

fn engine(cache_size: usize) -> Engine {
    let cfg = portcullis_bench::policy(cache_size);
    Engine::new(config::parse(cfg.to_string().as_bytes()).unwrap())
}

fn headers(path: &str, token: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api.test".to_string()),
        ("user-agent".to_string(), "bench".to_string()),
    ];
    if let Some(t) = token {
        h.push(("authorization".into(), format!("Bearer {t}")));
    }
    h
}

fn decisions(c: &mut Criterion) {
    let token = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let now = UnixTime::from_secs(NOW);
    let mut group = c.benchmark_group("decide");
    let mut cached = engine(10_000);
    let req = headers("/api/items", Some(&token));
    group.bench_function("rs256_cached", |b| {
        b.iter(|| cached.decide(black_box(&req), now))
    });
    let mut uncached = engine(0);
    group.bench_function("rs256_fresh", |b| {
        b.iter(|| uncached.decide(black_box(&req), now))
    });
    let anon = headers("/public/x", None);
    group.bench_function("anonymous_route", |b| {
        b.iter(|| cached.decide(black_box(&anon), now))
    });
    let forged = testkit::rsa_other().sign(claims(json!({"scope": "read"})));
    let forged_req = headers("/api/items", Some(&forged));
    group.bench_function("rs256_forged", |b| {
        b.iter(|| cached.decide(black_box(&forged_req), now))
    });
    let garbage = headers("/api/items", Some("eyJhbGciOiJub25lIn0.e30.x"));
    group.bench_function("garbage_token", |b| {
        b.iter(|| cached.decide(black_box(&garbage), now))
    });
    group.finish();
}

/// Browser sign-in beside a bearer token, in one group: a request carrying a session cookie
/// (AES-256-GCM open, the ID token's claims read) and one sent to sign in (state, nonce and
/// PKCE verifier from the CSPRNG, the flow cookie sealed).
fn sessions(c: &mut Criterion) {
    let now = UnixTime::from_secs(NOW);
    let mut engine = Engine::new(
        config::parse(
            portcullis_bench::login_policy(10_000)
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    let token = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let bearer = headers("/api/items", Some(&token));
    let mut session = headers("/app/page", None);
    session.push(("cookie".into(), portcullis_bench::session_cookie(NOW)));
    let mut browser = headers("/app/page", None);
    browser.push(("accept".into(), "text/html,*/*;q=0.8".into()));
    let mut group = c.benchmark_group("login");
    group.bench_function("bearer_cached", |b| {
        b.iter(|| engine.decide(black_box(&bearer), now))
    });
    group.bench_function("session_cookie", |b| {
        b.iter(|| engine.decide(black_box(&session), now))
    });
    group.bench_function("redirect_to_sign_in", |b| {
        b.iter(|| engine.decide(black_box(&browser), now))
    });
    group.finish();
}

criterion_group!(benches, verification, decisions, sessions);
criterion_main!(benches);
