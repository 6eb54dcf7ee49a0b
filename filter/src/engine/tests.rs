//! The engine's behaviour, decided natively with keys and tokens from the test kit.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::config;
use portcullis_testkit::{self as testkit, claims, NOW};
use serde_json::json;

fn config_json(extra: Value) -> Value {
    let mut c = json!({
        "providers": {
            "idp": {
                "issuer": "https://idp.test",
                "audiences": ["api"],
                "jwks": {"keys": [testkit::rsa().jwk()]},
                "token_sources": [
                    {"header": "authorization", "prefix": "Bearer "},
                    {"query": "access_token"},
                    {"cookie": "session"}
                ]
            }
        },
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "read", "match": {"path": {"prefix": "/api/"}, "methods": ["GET"]},
             "scopes": {"all_of": ["read"]}},
            {"name": "write", "match": {"path": {"prefix": "/api/"}, "methods": ["POST"]},
             "scopes": {"any_of": ["write", "admin"]}},
            {"name": "admin", "match": {"path": {"regex": "^/admin(/|$)"}, "hosts": ["*.example.com"]},
             "claims": [{"claim": "realm_access.roles", "any_of": ["admin"]}]},
            {"name": "aws", "match": {"path": {"prefix": "/aws/"}},
             "claims": [{"claim": "https://aws.amazon.com/role", "glob": "arn:aws:iam::*:role/Admin*"}]},
            {"name": "public", "match": {"path": {"prefix": "/public/"}}, "auth": "optional"}
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-jwt-sub"},
            {"claim": "realm_access.roles", "header": "X-JWT-Roles"}
        ],
        "payload_header": "x-jwt-payload"
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn engine(extra: Value) -> Engine {
    Engine::new(config::parse(config_json(extra).to_string().as_bytes()).unwrap())
}

fn request(method: &str, path: &str, host: &str, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), host.to_string()),
    ];
    h.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

fn get(e: &mut Engine, path: &str, token: Option<&str>) -> Evaluation {
    let auth = token.map(|t| format!("Bearer {t}"));
    let more: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    e.decide(&request("GET", path, "api.test", &more), at(NOW))
}

#[test]
fn tokens_get_a_fingerprint_only_while_decisions_are_logged() {
    let mut e = engine(json!({}));
    let first = testkit::rsa().sign(claims(json!({"scope": "read"})));
    let second = testkit::rsa().sign(claims(json!({"scope": "read", "jti": "2"})));
    let logged = get(&mut e, "/api/items", Some(&first)).record;
    let hash = logged.token_hash.as_deref().unwrap();
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    e.set_logging(false);
    let unlogged = get(&mut e, "/api/items", Some(&second)).record;
    assert_eq!(unlogged.verdict, Verdict::Allow);
    assert_eq!(unlogged.token_hash.as_deref(), Some("-"));
    e.set_logging(true);
    let hit = get(&mut e, "/api/items", Some(&first)).record;
    assert_eq!(
        hit.token_hash.as_deref(),
        Some(hash),
        "a hit keeps its fingerprint"
    );
}

/// The parts of a local reply the tests look at.
struct Refusal {
    status: u16,
    www_authenticate: Option<String>,
    retry_after: Option<u64>,
    body: String,
}

impl Refusal {
    fn body(&self) -> String {
        self.body.clone()
    }
}

fn denial(ev: &Evaluation) -> Refusal {
    match &ev.step {
        Step::Respond(r) => Refusal {
            status: r.status,
            www_authenticate: r.header("www-authenticate").map(str::to_string),
            retry_after: r.header("retry-after").map(|v| v.parse().unwrap()),
            body: String::from_utf8(r.body.clone()).unwrap(),
        },
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn allowed(ev: &Evaluation) -> (&Vec<String>, &Vec<(String, String)>) {
    match &ev.step {
        Step::Allow(a) => (&a.request.remove, &a.request.set),
        other => panic!("expected allow, got {other:?}"),
    }
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

const P: ProviderId = ProviderId::from_index(0);

/// The provider a held request waits for, if it is held for keys.
fn waits_for_keys(ev: &Evaluation) -> Option<ProviderId> {
    match &ev.step {
        Step::Suspend(Suspension::Keys { provider, .. }) => Some(*provider),
        _ => None,
    }
}

fn token(extra: Value) -> String {
    testkit::rsa().sign(claims(extra))
}

#[test]
fn valid_token_is_allowed_with_claim_headers() {
    let mut e = engine(json!({}));
    let t = token(json!({"scope": "read", "realm_access": {"roles": ["user", "admin"]}}));
    let bearer = format!("Bearer {t}");
    let spoofed = [
        ("authorization", bearer.as_str()),
        ("x-jwt-sub", "mallory"),
        ("X-JWT-Payload", "e30"),
    ];
    let ev = e.decide(&request("GET", "/api/items", "api.test", &spoofed), at(NOW));
    let (remove, set) = allowed(&ev);
    // Only the copies the request carries are removed: the rest would be host calls
    // for nothing.
    assert_eq!(
        remove,
        &vec!["x-jwt-sub".to_string(), "x-jwt-payload".into()]
    );
    let clean = get(&mut e, "/api/items", Some(&t));
    assert!(allowed(&clean).0.is_empty());
    assert!(set.contains(&("x-jwt-sub".into(), "alice".into())));
    assert!(set.contains(&("x-jwt-roles".into(), "user,admin".into())));
    let payload = &set.iter().find(|(k, _)| k == "x-jwt-payload").unwrap().1;
    assert_eq!(Some(payload.as_str()), t.split('.').nth(1));
    assert_eq!(ev.record.verdict, Verdict::Allow);
    assert_eq!(ev.record.subject.as_deref(), Some("alice"));
    assert_eq!(ev.record.rule.as_deref(), Some("read"));
}

#[test]
fn missing_token_gets_a_bare_challenge() {
    let mut e = engine(json!({}));
    let ev = get(&mut e, "/api/items", None);
    let d = denial(&ev);
    assert_eq!(d.status, 401);
    assert_eq!(
        d.www_authenticate.as_deref(),
        Some("Bearer realm=\"portcullis\"")
    );
    assert_eq!(ev.record.reason, "missing_token");
}

#[test]
fn invalid_tokens_get_invalid_token_and_never_echo_the_token() {
    let mut e = engine(json!({}));
    let expired = token(json!({"scope": "read", "exp": NOW - 3600}));
    let forged = testkit::rsa_other().sign(claims(json!({"scope": "read"})));
    for (t, reason) in [
        (expired.as_str(), "expired"),
        (forged.as_str(), "bad_signature"),
        ("garbage", "malformed"),
    ] {
        let ev = get(&mut e, "/api/items", Some(t));
        let d = denial(&ev);
        assert_eq!(d.status, 401, "{reason}");
        let w = d.www_authenticate.as_deref().unwrap();
        assert!(
            w.starts_with(
                "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\""
            ),
            "{w}"
        );
        assert_eq!(ev.record.reason, reason);
        let line = ev.record.to_string();
        for piece in t.split('.').filter(|p| p.len() > 8) {
            assert!(!w.contains(piece) && !d.body().contains(piece) && !line.contains(piece));
        }
    }
}

#[test]
fn missing_scope_is_403_naming_the_scope() {
    let mut e = engine(json!({}));
    let ev = get(
        &mut e,
        "/api/items",
        Some(&token(json!({"scope": "write readonly"}))),
    );
    let d = denial(&ev);
    assert_eq!(d.status, 403);
    let w = d.www_authenticate.as_deref().unwrap();
    assert!(
        w.contains("error=\"insufficient_scope\"") && w.ends_with("scope=\"read\""),
        "{w}"
    );
    let body: Value = serde_json::from_str(&d.body()).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[test]
fn scp_arrays_and_any_of_scopes() {
    let mut e = engine(json!({}));
    let t = token(json!({"scp": ["admin"]}));
    let ev = e.decide(
        &request(
            "POST",
            "/api/x",
            "api.test",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        at(NOW),
    );
    allowed(&ev);
    let t = token(json!({"scp": "read"}));
    let ev = e.decide(
        &request(
            "POST",
            "/api/x",
            "api.test",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        at(NOW),
    );
    assert_eq!(denial(&ev).status, 403);
}

#[test]
fn roles_match_whole_values_only() {
    let mut e = engine(json!({}));
    let run = |e: &mut Engine, roles: Value, host: &str| {
        let t = token(json!({"realm_access": {"roles": roles}}));
        e.decide(
            &request(
                "GET",
                "/admin/stats",
                host,
                &[("authorization", &format!("Bearer {t}"))],
            ),
            at(NOW),
        )
    };
    allowed(&run(&mut e, json!(["admin"]), "ops.example.com"));
    allowed(&run(&mut e, json!("admin"), "ops.example.com:8443"));
    for roles in [
        json!(["superadmin"]),
        json!(["admin2"]),
        json!("administrator"),
        json!([]),
    ] {
        assert_eq!(
            denial(&run(&mut e, roles.clone(), "ops.example.com")).status,
            403,
            "{roles}"
        );
    }
    // The host condition is part of the match: elsewhere no rule applies.
    let ev = run(&mut e, json!(["admin"]), "example.com");
    assert_eq!(denial(&ev).status, 403);
    assert_eq!(ev.record.reason, "no_rule");
}

#[test]
fn iam_role_arns_match_globs() {
    let mut e = engine(json!({}));
    let run = |e: &mut Engine, arn: &str| {
        get(
            e,
            "/aws/x",
            Some(&token(json!({"https://aws.amazon.com/role": arn}))),
        )
    };
    allowed(&run(&mut e, "arn:aws:iam::123456789012:role/AdminFull"));
    assert_eq!(
        denial(&run(&mut e, "arn:aws:iam::123456789012:role/ReadOnly")).status,
        403
    );
    assert_eq!(
        denial(&run(&mut e, "arn:aws:iam::1:user/AdminFull")).status,
        403
    );
}

#[test]
fn public_routes_strip_spoofed_headers() {
    let mut e = engine(json!({}));
    let ev = e.decide(
        &request("GET", "/healthz", "api.test", &[("x-jwt-sub", "mallory")]),
        at(NOW),
    );
    let (remove, set) = allowed(&ev);
    assert!(remove.contains(&"x-jwt-sub".to_string()));
    assert!(set.is_empty());
    assert_eq!(ev.record.reason, "public");
}

#[test]
fn optional_auth_allows_anonymous_but_not_bad_tokens() {
    let mut e = engine(json!({}));
    let ev = get(&mut e, "/public/x", None);
    assert_eq!(allowed(&ev).1.len(), 0);
    assert_eq!(ev.record.reason, "anonymous");
    let ev = get(&mut e, "/public/x", Some("not.a.token"));
    assert_eq!(denial(&ev).status, 401);
    let ev = get(&mut e, "/public/x", Some(&token(json!({}))));
    assert!(allowed(&ev)
        .1
        .contains(&("x-jwt-sub".into(), "alice".into())));
}

#[test]
fn unmatched_requests_are_denied() {
    let mut e = engine(json!({}));
    let ev = e.decide(&request("DELETE", "/api/x", "api.test", &[]), at(NOW));
    assert_eq!(denial(&ev).status, 403);
}

#[test]
fn observe_mode_lets_denials_through_and_records_them() {
    let mut e = engine(json!({"mode": "observe"}));
    let ev = e.decide(
        &request("GET", "/api/items", "api.test", &[("x-jwt-sub", "mallory")]),
        at(NOW),
    );
    let (remove, set) = allowed(&ev);
    assert!(remove.contains(&"x-jwt-sub".to_string()) && set.is_empty());
    assert_eq!(
        (ev.record.verdict, ev.record.enforced, ev.record.status),
        (Verdict::Deny, false, 401)
    );
    assert!(ev.record.to_string().contains("verdict=deny mode=observe"));
    // A verified identity lacking a scope is still passed on, marked by the log only.
    let ev = get(
        &mut e,
        "/api/items",
        Some(&token(json!({"scope": "other"}))),
    );
    assert!(allowed(&ev)
        .1
        .contains(&("x-jwt-sub".into(), "alice".into())));
    assert_eq!(ev.record.reason, "insufficient_scope");
}

#[test]
fn cache_skips_verification_but_rechecks_time() {
    let mut e = engine(json!({}));
    let t = token(json!({"scope": "read", "exp": NOW + 100}));
    assert_eq!(get(&mut e, "/api/a", Some(&t)).record.cache, CacheUse::Miss);
    assert_eq!(get(&mut e, "/api/a", Some(&t)).record.cache, CacheUse::Hit);
    let later = request(
        "GET",
        "/api/a",
        "api.test",
        &[("authorization", &format!("Bearer {t}"))],
    );
    let ev = e.decide(&later, at(NOW + 161));
    assert_eq!(denial(&ev).status, 401);
    assert_eq!(
        ev.record.cache,
        CacheUse::Miss,
        "an expired entry is not a hit"
    );
    // A rule is re-evaluated on every hit.
    let ev = e.decide(
        &request(
            "POST",
            "/api/a",
            "api.test",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        at(NOW),
    );
    assert_eq!(denial(&ev).status, 403);
}

#[test]
fn tokens_from_query_and_cookie_and_ambiguity() {
    let mut e = engine(json!({"forward_token": false}));
    let t = token(json!({"scope": "read"}));
    let ev = e.decide(
        &request("GET", &format!("/api/a?x=1&access_token={t}"), "h", &[]),
        at(NOW),
    );
    let (_, set) = allowed(&ev);
    assert!(
        set.contains(&(":path".into(), "/api/a?x=1".into())),
        "{set:?}"
    );
    let ev = e.decide(
        &request(
            "GET",
            "/api/a",
            "h",
            &[("cookie", &format!("a=1; session={t}"))],
        ),
        at(NOW),
    );
    let (_, set) = allowed(&ev);
    assert!(set.contains(&("cookie".into(), "a=1".into())));
    let ev = e.decide(
        &request(
            "GET",
            "/api/a",
            "h",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        at(NOW),
    );
    assert!(allowed(&ev).0.contains(&"authorization".to_string()));
    let other = token(json!({"scope": "read", "sub": "bob"}));
    let ev = e.decide(
        &request(
            "GET",
            &format!("/api/a?access_token={other}"),
            "h",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        at(NOW),
    );
    assert_eq!(denial(&ev).status, 400);
}

#[test]
fn decision_line_is_structured() {
    let mut e = engine(json!({}));
    let t = token(json!({"scope": "read"}));
    let line = get(&mut e, "/api/a", Some(&t)).record.to_string();
    assert!(line.starts_with("portcullis decision verdict=allow mode=enforce status=200 rule=\"read\" reason=authorized sub=\"alice\" iss=\"https://idp.test\" token="), "{line}");
    let hash = line
        .split("token=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(hash.len(), 12);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn new_keys_forget_cached_tokens() {
    let mut e = engine(json!({}));
    let t = token(json!({"scope": "read"}));
    allowed(&get(&mut e, "/api/a", Some(&t)));
    let es = testkit::es256();
    let jwks = json!({"keys": [es.jwk()]}).to_string();
    let (set, _) =
        crate::keys::KeySet::from_jwks(jwks.as_bytes(), &crate::alg::Alg::ASYMMETRIC).unwrap();
    e.keyring_mut().set_keys(P, set);
    assert_eq!(denial(&get(&mut e, "/api/a", Some(&t))).status, 401);
}

fn remote_engine() -> Engine {
    let mut cfg = config_json(json!({}));
    let idp = cfg["providers"]["idp"].as_object_mut().unwrap();
    idp.remove("jwks");
    idp.insert(
        "remote_jwks".into(),
        json!({"cluster": "idp", "uri": "https://idp.test/keys", "timeout_ms": 1000}),
    );
    Engine::new(config::parse(cfg.to_string().as_bytes()).unwrap())
}

fn jwks_of(signers: &[&testkit::Signer]) -> Vec<u8> {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
        .to_string()
        .into_bytes()
}

#[test]
fn cold_start_waits_for_one_fetch() {
    let mut e = remote_engine();
    let t = token(json!({"scope": "read"}));
    assert_eq!(
        e.keyring_mut().poll_fetches(NOW).len(),
        1,
        "keys are fetched at start"
    );
    for _ in 0..3 {
        assert_eq!(waits_for_keys(&get(&mut e, "/api/a", Some(&t))), Some(P));
    }
    assert!(
        e.keyring_mut().poll_fetches(NOW).is_empty(),
        "single flight"
    );
    e.keyring_mut()
        .fetch_response(
            P,
            NOW,
            200,
            Some("max-age=300"),
            &jwks_of(&[testkit::rsa()]),
        )
        .unwrap();
    allowed(&get(&mut e, "/api/a", Some(&t)));
    // Garbage checks happen before any wait: a bad issuer never waits for keys.
    let wrong = token(json!({"scope": "read", "iss": "https://other.test"}));
    assert_eq!(denial(&get(&mut e, "/api/a", Some(&wrong))).status, 401);
}

#[test]
fn unreachable_idp_gives_503_not_401() {
    let mut e = remote_engine();
    let t = token(json!({"scope": "read"}));
    e.keyring_mut().poll_fetches(NOW);
    e.keyring_mut()
        .fetch_response(P, NOW, 504, None, b"upstream request timeout")
        .unwrap_err();
    let ev = get(&mut e, "/api/a", Some(&t));
    let d = denial(&ev);
    assert_eq!((d.status, d.retry_after), (503, Some(1)));
    assert_eq!(ev.record.reason, "keys_unavailable");
}

#[test]
fn unknown_kids_wait_for_the_next_permitted_refetch_then_answer() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    let es = testkit::es256();
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
        .unwrap();
    let cached = token(json!({"scope": "read"}));
    allowed(&get(&mut e, "/api/a", Some(&cached)));
    let rotated = es.sign(claims(json!({"scope": "read"})));
    assert_eq!(
        waits_for_keys(&get(&mut e, "/api/a", Some(&rotated))),
        Some(P)
    );
    assert_eq!(e.keyring_mut().poll_fetches(NOW).len(), 1);
    // The IdP now publishes both keys: the new one works, the cache survives.
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa(), &es]))
        .unwrap();
    allowed(&get(&mut e, "/api/a", Some(&rotated)));
    assert_eq!(
        get(&mut e, "/api/a", Some(&cached)).record.cache,
        CacheUse::Hit
    );
    // A random kid right after: no second re-fetch within the 15 s interval, so it is
    // held for the next one (a rotated key must not be refused because of a flood).
    let random = testkit::Signer::Es256(
        jwt_simple::prelude::ES256KeyPair::generate().with_key_id("random-kid"),
    )
    .sign(claims(json!({"scope": "read"})));
    let ev = get(&mut e, "/api/a", Some(&random));
    let ticket = held(&ev);
    assert!(e.keyring_mut().poll_fetches(NOW + 14).is_empty());
    assert_eq!(e.keyring_mut().poll_fetches(NOW + 15).len(), 1);
    e.keyring_mut()
        .fetch_response(P, NOW + 15, 200, None, &jwks_of(&[testkit::rsa(), &es]))
        .unwrap();
    let ev = e.resume(ticket, Resumption::Keys, at(NOW + 15)).unwrap();
    assert_eq!(denial(&ev).status, 401);
    assert_eq!(ev.record.reason, "unknown_kid");
    // Proven absent: the same kid again is refused at once, not held.
    let ev = e.decide(
        &request(
            "GET",
            "/api/a",
            "api.test",
            &[("authorization", &format!("Bearer {random}"))],
        ),
        at(NOW + 16),
    );
    assert_eq!(denial(&ev).status, 401);
    assert!(e.keyring_mut().poll_fetches(NOW + 16).is_empty());
}

#[test]
fn a_kid_wait_that_runs_out_is_a_401_never_a_5xx() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
        .unwrap();
    let forged = testkit::es256().sign(claims(json!({"scope": "read"})));
    let ticket = held(&get(&mut e, "/api/a", Some(&forged)));
    // The re-fetch goes out and the IdP hangs: the wait ends at its deadline, and keys
    // are still there to say the kid is not among them.
    assert_eq!(e.keyring_mut().poll_fetches(NOW).len(), 1);
    // Held for at most the interval (15 s) plus the timeout (1 s) and a second.
    assert!(e
        .overdue(UnixTime::from_millis((NOW + 17) * 1000 - 1))
        .is_empty());
    let overdue = e.overdue(UnixTime::from_millis((NOW + 17) * 1000));
    assert_eq!(overdue, vec![ticket]);
    let ev = e
        .resume(ticket, Resumption::TimedOut, at(NOW + 17))
        .unwrap();
    assert_eq!(denial(&ev).status, 401);
    assert_eq!(ev.record.reason, "unknown_kid");
}

#[test]
fn kid_waiters_are_bounded_per_provider() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
        .unwrap();
    let es = testkit::es256();
    for i in 0..MAX_KID_WAITERS {
        let forged = es.sign(claims(json!({"scope": "read", "jti": i})));
        held(&get(&mut e, "/api/a", Some(&forged)));
    }
    let one_more = es.sign(claims(json!({"scope": "read", "jti": "last"})));
    let ev = get(&mut e, "/api/a", Some(&one_more));
    assert_eq!(denial(&ev).status, 401);
    assert_eq!(e.suspended(), MAX_KID_WAITERS);
}

#[test]
fn removed_keys_stop_working_at_once() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
        .unwrap();
    let t = token(json!({"scope": "read"}));
    allowed(&get(&mut e, "/api/a", Some(&t)));
    let es = testkit::es256();
    let changed = e
        .keyring_mut()
        .adopt_shared(P, &jwks_of(&[&es]), NOW + 1, NOW + 600)
        .unwrap();
    assert!(changed);
    let ev = get(&mut e, "/api/a", Some(&t));
    assert_eq!(ev.record.cache, CacheUse::Miss);
    assert!(!e
        .keyring_mut()
        .adopt_shared(P, &jwks_of(&[testkit::rsa()]), NOW, NOW + 600)
        .unwrap());
}

fn held(ev: &Evaluation) -> Ticket {
    match &ev.step {
        Step::Suspend(s) => s.ticket(),
        other => panic!("expected a suspension, got {other:?}"),
    }
}

#[test]
fn a_held_request_resumes_with_the_keys_it_waited_for() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    let t = token(json!({"scope": "read"}));
    let first = get(&mut e, "/api/a", Some(&t));
    let second = get(&mut e, "/api/a", Some(&t));
    let (a, b) = (held(&first), held(&second));
    assert_ne!(a, b);
    assert_eq!(e.waiting_for(P), vec![a, b]);
    assert_eq!(e.suspended(), 2);
    e.keyring_mut()
        .fetch_response(P, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
        .unwrap();
    let resumed = e.resume(a, Resumption::Keys, at(NOW)).unwrap();
    let (_, set) = allowed(&resumed);
    assert!(set.contains(&("x-jwt-sub".into(), "alice".into())));
    assert_eq!(resumed.record.reason, Reason::Authorized);
    assert!(
        e.resume(a, Resumption::Keys, at(NOW)).is_none(),
        "a ticket resumes once"
    );
    assert_eq!(e.waiting_for(P), vec![b]);
}

#[test]
fn a_wait_that_runs_out_is_a_503_at_its_deadline() {
    let mut e = remote_engine();
    e.keyring_mut().poll_fetches(NOW);
    let t = token(json!({"scope": "read"}));
    let start = UnixTime::from_millis(NOW * 1000 + 250);
    let ev = e.decide(
        &request(
            "GET",
            "/api/a",
            "api.test",
            &[("authorization", &format!("Bearer {t}"))],
        ),
        start,
    );
    let ticket = held(&ev);
    // timeout_ms is 1000 in remote_engine: two callouts and a tick's margin.
    let budget = 2 * 1000 + 500;
    assert!(e.overdue(start.plus_millis(budget - 1)).is_empty());
    assert_eq!(e.overdue(start.plus_millis(budget)), vec![ticket]);
    let out = e
        .resume(ticket, Resumption::TimedOut, start.plus_millis(budget))
        .unwrap();
    let d = denial(&out);
    assert_eq!(d.status, 503);
    assert!(d.retry_after.is_some());
    assert_eq!(out.record.reason, Reason::KeysUnavailable);
    assert_eq!(e.suspended(), 0);
}

#[test]
fn a_cancelled_request_is_forgotten() {
    let mut e = remote_engine();
    let t = token(json!({"scope": "read"}));
    let ticket = held(&get(&mut e, "/api/a", Some(&t)));
    e.cancel(ticket);
    assert_eq!(e.suspended(), 0);
    assert!(e.resume(ticket, Resumption::Keys, at(NOW)).is_none());
    assert!(e.waiting_for(P).is_empty());
}

#[test]
fn held_requests_are_bounded() {
    let mut e = remote_engine();
    let t = token(json!({"scope": "read"}));
    for _ in 0..suspended::MAX_SUSPENDED {
        held(&get(&mut e, "/api/a", Some(&t)));
    }
    let ev = get(&mut e, "/api/a", Some(&t));
    assert_eq!(denial(&ev).status, 503);
    assert_eq!(ev.record.reason, Reason::Overloaded);
    assert_eq!(ev.record.rule.as_deref(), Some("read"));
}

#[test]
fn observe_mode_still_waits_for_keys() {
    let mut cfg = config_json(json!({"mode": "observe"}));
    let idp = cfg["providers"]["idp"].as_object_mut().unwrap();
    idp.remove("jwks");
    idp.insert(
        "remote_jwks".into(),
        json!({"cluster": "idp", "uri": "https://idp.test/keys"}),
    );
    let mut e = Engine::new(config::parse(cfg.to_string().as_bytes()).unwrap());
    let t = token(json!({"scope": "read"}));
    assert_eq!(waits_for_keys(&get(&mut e, "/api/a", Some(&t))), Some(P));
}

fn probe_callout() -> crate::callout::Callout {
    crate::callout::Callout {
        cluster: "approvals".into(),
        method: crate::callout::Method::Post,
        authority: "approvals.test".into(),
        path: "/check".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(b"{}".to_vec()),
        timeout_ms: 800,
        max_response_bytes: 1024,
    }
}

#[test]
fn a_request_suspended_on_a_callout_resumes_with_its_answer() {
    use crate::callout::{CalloutFailure, CalloutResponse};
    let mut e = engine(json!({}));
    let headers = request("GET", "/api/a", "api.test", &[]);
    let ev = e.suspend_on_callout(&headers, probe_callout(), Continuation::Probe, at(NOW));
    let Step::Suspend(Suspension::Callout { ticket, callout }) = &ev.step else {
        panic!("{:?}", ev.step);
    };
    assert_eq!(callout, &probe_callout());
    assert!(
        e.waiting_for(P).is_empty(),
        "a callout wait is not a key wait"
    );
    let answer = CalloutResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
        truncated: false,
    };
    let out = e
        .resume(*ticket, Resumption::Callout(Ok(answer)), at(NOW))
        .unwrap();
    assert!(matches!(out.step, Step::Allow(_)), "{:?}", out.step);

    let ev = e.suspend_on_callout(&headers, probe_callout(), Continuation::Probe, at(NOW));
    let ticket = held(&ev);
    let out = e
        .resume(
            ticket,
            Resumption::Callout(Err(CalloutFailure::TimedOut)),
            at(NOW),
        )
        .unwrap();
    assert_eq!(denial(&out).status, 403);

    let ev = e.suspend_on_callout(&headers, probe_callout(), Continuation::Probe, at(NOW));
    let ticket = held(&ev);
    let start = at(NOW);
    assert!(e.overdue(start.plus_millis(800)).is_empty());
    assert_eq!(e.overdue(start.plus_millis(1300)), vec![ticket]);
}

#[test]
fn allowing_edits_only_the_request() {
    let mut e = engine(json!({}));
    let t = token(json!({"scope": "read"}));
    match get(&mut e, "/api/items", Some(&t)).step {
        Step::Allow(a) => {
            assert!(a.response.is_empty());
            assert_eq!(a.identity.unwrap().subject.as_deref(), Some("alice"));
        }
        other => panic!("{other:?}"),
    }
}

/// The `:path` an allowed request is forwarded with, when the step rewrites it.
fn forwarded_path(ev: &Evaluation) -> Option<String> {
    allowed(ev)
        .1
        .iter()
        .find(|(name, _)| name == ":path")
        .map(|(_, v)| v.clone())
}

#[test]
fn rules_match_the_normalized_path_so_dot_segments_cannot_smuggle_past_a_public_rule() {
    let mut e = engine(json!({}));
    // `/healthz` is public; `/admin` needs a token. Each spelling resolves to `/admin`.
    for raw in [
        "/healthz/../admin",
        "/healthz/%2e%2E/admin",
        "/healthz/.%2e/admin",
        "//admin",
        "/./admin",
    ] {
        let ev = e.decide(&request("GET", raw, "x.example.com", &[]), at(NOW));
        assert_eq!(denial(&ev).status, 401, "{raw}");
        assert_eq!(ev.record.rule.as_deref(), Some("admin"), "{raw}");
    }
    // And the other way round: an encoded spelling of a public path is still public.
    let ev = e.decide(&request("GET", "/%68ealthz", "api.test", &[]), at(NOW));
    assert_eq!(ev.record.reason, "public");
    assert_eq!(
        forwarded_path(&ev),
        None,
        "reject mode forwards the path as sent"
    );
}

#[test]
fn ambiguous_paths_get_400_before_any_rule_and_the_body_never_echoes_them() {
    let mut e = engine(json!({}));
    for raw in [
        "/healthz/..;/admin",
        "/healthz/%2Fadmin",
        "/healthz\\..\\admin",
        "/..",
        "/admin//../healthz",
        "/healthz%00",
        "/healthz%0d%0aX-Evil:%201",
        "/%zz",
        "healthz",
        "",
    ] {
        let ev = e.decide(&request("GET", raw, "api.test", &[]), at(NOW));
        let refusal = denial(&ev);
        assert_eq!(refusal.status, 400, "{raw:?}");
        assert_eq!(ev.record.reason, "ambiguous_path", "{raw:?}");
        assert_eq!(ev.record.rule, None, "{raw:?}");
        if !raw.is_empty() {
            assert!(!refusal.body().contains(raw), "{raw:?}");
        }
    }
    // In observe mode the request goes through, as every denial does, and is recorded.
    let mut e = engine(json!({"mode": "observe"}));
    let ev = e.decide(&request("GET", "/a%2Fb", "api.test", &[]), at(NOW));
    assert_eq!(ev.record.reason, "ambiguous_path");
    assert!(!ev.record.enforced);
    assert!(matches!(ev.step, Step::Allow(_)));
}

#[test]
fn normalize_mode_forwards_the_path_that_was_authorized() {
    let mut e = engine(json!({"path_mode": "normalize", "forward_token": false}));
    let ev = e.decide(
        &request("GET", "/public/a/../%62//c?q=%2e%2e", "api.test", &[]),
        at(NOW),
    );
    assert_eq!(ev.record.rule.as_deref(), Some("public"));
    assert_eq!(forwarded_path(&ev).as_deref(), Some("/public/b/c?q=%2e%2e"));
    // Already normal: no rewrite at all.
    let ev = e.decide(&request("GET", "/public/b?q=1", "api.test", &[]), at(NOW));
    assert_eq!(forwarded_path(&ev), None);
    // A query token removed and a path normalized: both edits land in one `:path`.
    let t = token(json!({"scope": "read"}));
    let ev = e.decide(
        &request("GET", &format!("/api/./a?x=1&access_token={t}"), "h", &[]),
        at(NOW),
    );
    assert_eq!(forwarded_path(&ev).as_deref(), Some("/api/a?x=1"));
    let ev = e.decide(
        &request("GET", &format!("/api//a?access_token={t}"), "h", &[]),
        at(NOW),
    );
    assert_eq!(forwarded_path(&ev).as_deref(), Some("/api/a"));
}

#[test]
fn hosts_match_without_case_port_or_trailing_dot_and_methods_match_as_sent() {
    let mut e = engine(json!({}));
    let admin = token(json!({"realm_access": {"roles": ["admin"]}}));
    let bearer = format!("Bearer {admin}");
    for host in [
        "x.example.com",
        "X.Example.COM",
        "x.example.com.:8443",
        "x.example.com:443",
    ] {
        let ev = e.decide(
            &request("GET", "/admin", host, &[("authorization", &bearer)]),
            at(NOW),
        );
        assert_eq!(ev.record.rule.as_deref(), Some("admin"), "{host}");
        assert_eq!(ev.record.reason, "authorized", "{host}");
    }
    let ev = e.decide(
        &request(
            "GET",
            "/admin",
            "x.example.org",
            &[("authorization", &bearer)],
        ),
        at(NOW),
    );
    assert_eq!(ev.record.rule, None);
    // `get` is not `GET` (RFC 9110 §9.1): the GET-only rule does not apply to it.
    let read = token(json!({"scope": "read"}));
    let ev = e.decide(
        &request(
            "get",
            "/api/x",
            "api.test",
            &[("authorization", &format!("Bearer {read}"))],
        ),
        at(NOW),
    );
    assert_eq!(denial(&ev).status, 403);
    assert_eq!(ev.record.reason, "no_rule");
}

#[test]
fn claim_headers_spelt_with_underscores_are_stripped_too() {
    let mut e = engine(json!({}));
    let ev = e.decide(
        &request(
            "GET",
            "/healthz",
            "api.test",
            &[
                ("x_jwt_sub", "mallory"),
                ("X_JWT-Roles", "admin"),
                ("x_other", "kept"),
            ],
        ),
        at(NOW),
    );
    let (remove, _) = allowed(&ev);
    assert!(remove.contains(&"x_jwt_sub".to_string()), "{remove:?}");
    assert!(remove.contains(&"X_JWT-Roles".to_string()), "{remove:?}");
    assert!(!remove.iter().any(|h| h == "x_other"));
}

#[test]
fn two_authorization_headers_folded_into_one_are_two_tokens() {
    let mut e = engine(json!({}));
    let (a, b) = (
        token(json!({"scope": "read"})),
        token(json!({"scope": "read", "sub": "bob"})),
    );
    let folded = format!("Bearer {a},Bearer {b}");
    let ev = e.decide(
        &request("GET", "/api/x", "api.test", &[("authorization", &folded)]),
        at(NOW),
    );
    assert_eq!(denial(&ev).status, 400);
    assert_eq!(ev.record.reason, "ambiguous_token");
    // The same token twice is still one token.
    let twice = format!("Bearer {a}, Bearer {a}");
    let ev = e.decide(
        &request("GET", "/api/x", "api.test", &[("authorization", &twice)]),
        at(NOW),
    );
    assert_eq!(ev.record.reason, "authorized");
}
