//! Browser sign-in through the engine, with the identity provider's answers scripted and
//! the clock moved by hand.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::callout::{Callout, CalloutFailure, CalloutResponse};
use crate::config;
use crate::request::percent_decode;
use base64::Engine as _;
use portcullis_testkit::{self as testkit, claims, NOW};
use serde_json::json;
use sha2::Digest;

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];
const CHROME: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn b64(k: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn engine_with(keys: &[[u8; 32]], extra: Value) -> Engine {
    let mut c = json!({
        "providers": {"idp": {
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "jwks": {"keys": [testkit::rsa().jwk()]},
            "login": {
                "client_id": "web",
                "client_secret": "s3cret",
                "scopes": ["email"],
                "authorization_endpoint": "https://idp.test/auth",
                "token_endpoint": "https://idp.test/token",
                "end_session_endpoint": "https://idp.test/logout",
                "cluster": "idp",
                "session_seconds": 3600,
                "cookie_keys": keys.iter().map(|k| b64(k)).collect::<Vec<_>>()
            }
        }},
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "auth": "none"},
            {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "auth": "login",
             "claims": [{"claim": "email", "glob": "*@admin.test"}]},
            {"name": "app", "match": {"path": {"prefix": "/"}}, "auth": "login"}
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-user-sub"},
            {"claim": "email", "header": "x-user-email"}
        ]
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    Engine::new(config::parse(c.to_string().as_bytes()).unwrap())
}

fn engine() -> Engine {
    engine_with(&[KEY_A], json!({}))
}

fn browser(path: &str, cookie: &str) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "app.test"),
        (":path", path),
        ("accept", CHROME),
        ("sec-fetch-mode", "navigate"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    if !cookie.is_empty() {
        h.push(("cookie".into(), cookie.into()));
    }
    h
}

fn reply(ev: &Evaluation) -> &LocalReply {
    match &ev.step {
        Step::Respond(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// `name=value` of each `Set-Cookie` of a reply.
fn set_cookies(r: &LocalReply) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| {
            let pair = v.split(';').next().unwrap();
            let (n, v) = pair.split_once('=').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect()
}

fn cookie_header(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A sign-in started at `path`: the authorization URL and the flow cookie.
fn start(e: &mut Engine, path: &str, now: u64) -> (String, String) {
    let ev = e.decide(&browser(path, ""), at(now));
    let r = reply(&ev);
    assert_eq!(r.status, 302);
    assert_eq!(ev.record.reason, Reason::LoginRedirect);
    let cookies = set_cookies(r);
    assert_eq!(cookies.len(), 1);
    (
        r.header("location").unwrap().to_string(),
        cookie_header(&cookies),
    )
}

fn id_token(nonce: &str, extra: Value) -> String {
    let mut more = json!({"aud": "web", "nonce": nonce, "email": "alice@example.test"});
    if let (Value::Object(m), Value::Object(e)) = (&mut more, extra) {
        m.extend(e);
    }
    testkit::rsa().sign(claims(more))
}

fn token_answer(status: u16, body: Value) -> Resumption {
    Resumption::Callout(Ok(CalloutResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        truncated: false,
    }))
}

/// The callback for the sign-in at `location`, held on the code exchange.
fn callback(e: &mut Engine, location: &str, flow_cookie: &str, now: u64) -> (Ticket, Callout) {
    let state = param(location, "state");
    let path = format!("/oauth2/callback?code=the-code&state={state}&iss=https%3A%2F%2Fidp.test");
    let ev = e.decide(&browser(&path, flow_cookie), at(now));
    match ev.step {
        Step::Suspend(Suspension::Callout { ticket, callout }) => (ticket, callout),
        other => panic!("expected the code exchange, got {other:?}"),
    }
}

/// A whole sign-in at `path`; the session's cookies.
fn sign_in(e: &mut Engine, path: &str, extra: Value) -> String {
    let (location, flow) = start(e, path, NOW);
    let (ticket, _) = callback(e, &location, &flow, NOW);
    let token = id_token(&param(&location, "nonce"), extra);
    let ev = e
        .resume(
            ticket,
            token_answer(200, json!({"id_token": token})),
            at(NOW),
        )
        .unwrap();
    let r = reply(&ev);
    assert_eq!(
        (r.status, ev.record.reason),
        (302, Reason::LoginOk),
        "{}",
        ev.record.detail
    );
    cookie_header(&set_cookies(r))
}

fn allowed_edits(ev: &Evaluation) -> &Allow {
    match &ev.step {
        Step::Allow(a) => a,
        other => panic!("expected allow, got {other:?} ({})", ev.record.detail),
    }
}

/// Whether an allowed request's edits set `name` to `value`.
fn sets(a: &Allow, name: &str, value: &str) -> bool {
    a.request.set.iter().any(|(n, v)| n == name && v == value)
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

#[test]
fn a_browser_signs_in_and_its_session_carries_the_identity() {
    let mut e = engine();
    let (location, flow) = start(&mut e, "/app/page?x=1", NOW);
    assert!(location.starts_with("https://idp.test/auth?"));
    assert_eq!(param(&location, "client_id"), "web");
    assert_eq!(
        param(&location, "redirect_uri"),
        "https://app.test/oauth2/callback"
    );
    assert_eq!(param(&location, "scope"), "openid email");
    assert_eq!(param(&location, "code_challenge_method"), "S256");
    assert!(flow.starts_with("__Host-portcullis-flow-"));
    let (ticket, callout) = callback(&mut e, &location, &flow, NOW);
    assert_eq!(
        (callout.cluster.as_str(), callout.path.as_str()),
        ("idp", "/token")
    );
    let body = String::from_utf8(callout.body.clone().unwrap()).unwrap();
    let verifier = percent_decode(
        body.split('&')
            .find_map(|p| p.strip_prefix("code_verifier="))
            .unwrap(),
    );
    let challenge = testkit::b64(&sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, param(&location, "code_challenge"), "PKCE S256");
    assert!(body.contains("code=the-code") && body.contains("grant_type=authorization_code"));
    let basic = callout
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap();
    assert_eq!(basic.1, format!("Basic {}", b64(b"web:s3cret")));

    let token = id_token(&param(&location, "nonce"), json!({}));
    let ev = e
        .resume(
            ticket,
            token_answer(200, json!({"id_token": token})),
            at(NOW),
        )
        .unwrap();
    let r = reply(&ev);
    assert_eq!(r.header("location"), Some("/app/page?x=1"));
    assert_eq!(ev.record.subject.as_deref(), Some("alice"));
    let set = set_cookies(r);
    let flow_name = flow.split('=').next().unwrap();
    assert!(
        set.iter().any(|(n, v)| n == flow_name && v.is_empty()),
        "flow cookie cleared"
    );
    let session = cookie_header(&set);
    assert!(r.headers.iter().any(|(n, v)| n == "set-cookie"
        && v.starts_with("__Host-portcullis=")
        && v.contains("Max-Age=3600; HttpOnly; SameSite=Lax; Secure")));

    let ev = e.decide(
        &browser("/app/other", &format!("theme=dark; {session}")),
        at(NOW + 5),
    );
    assert_eq!(ev.record.reason, Reason::SessionValid);
    let a = allowed_edits(&ev);
    assert!(sets(a, "x-user-sub", "alice"), "{:?}", a.request);
    assert!(
        sets(a, "x-user-email", "alice@example.test"),
        "{:?}",
        a.request
    );
    assert!(
        sets(a, "cookie", "theme=dark"),
        "the session cookie does not go upstream: {:?}",
        a.request
    );
    // A rule's claim conditions apply to the session's claims.
    let ev = e.decide(&browser("/admin", &session), at(NOW + 5));
    assert_eq!(reply(&ev).status, 403);
}

#[test]
fn programs_get_401_and_never_the_providers_page() {
    let mut e = engine();
    for (method, accept, extra) in [
        ("GET", "application/json", None),
        ("GET", "*/*", None),
        ("POST", CHROME, None),
        ("GET", CHROME, Some(("x-requested-with", "XMLHttpRequest"))),
    ] {
        let mut h = browser("/app", "");
        h.retain(|(n, _)| n != "sec-fetch-mode");
        h[0].1 = method.into();
        h.iter_mut().find(|(n, _)| n == "accept").unwrap().1 = accept.into();
        h.extend(extra.map(|(n, v)| (n.to_string(), v.to_string())));
        let ev = e.decide(&h, at(NOW));
        let r = reply(&ev);
        assert_eq!(r.status, 401, "{method} {accept} {extra:?}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    // A bearer token is checked as on any rule, and wins.
    let t = testkit::rsa().sign(claims(json!({})));
    let mut h = browser("/app", "");
    h.push(("authorization".into(), format!("Bearer {t}")));
    assert_eq!(e.decide(&h, at(NOW)).record.reason, Reason::Authorized);
}

#[test]
fn a_callback_this_browser_did_not_start_is_refused() {
    let mut e = engine();
    let (location, flow) = start(&mut e, "/app", NOW);
    let state = param(&location, "state");
    for (path, cookie) in [
        (
            format!("/oauth2/callback?code=c&state={state}"),
            String::new(),
        ),
        (
            "/oauth2/callback?code=c&state=forged-state-of-many-chars".to_string(),
            flow.clone(),
        ),
        ("/oauth2/callback?code=c".to_string(), flow.clone()),
        (format!("/oauth2/callback?state={state}"), flow.clone()),
    ] {
        let ev = e.decide(&browser(&path, &cookie), at(NOW));
        let r = reply(&ev);
        assert_eq!(
            (r.status, ev.record.reason),
            (400, Reason::LoginFailed),
            "{path}"
        );
        assert!(set_cookies(r).iter().all(|(n, _)| n != "__Host-portcullis"));
    }
    // Another key set's flow cookie does not open; nor does a flow past its ten minutes.
    let mut other = engine_with(&[KEY_B], json!({}));
    let ev = other.decide(
        &browser(&format!("/oauth2/callback?code=c&state={state}"), &flow),
        at(NOW),
    );
    assert_eq!(reply(&ev).status, 400);
    let ev = e.decide(
        &browser(&format!("/oauth2/callback?code=c&state={state}"), &flow),
        at(NOW + 601),
    );
    assert_eq!(reply(&ev).status, 400);
    // The provider's refusal is shown, and the flow ends.
    let ev = e.decide(
        &browser(
            &format!("/oauth2/callback?error=access_denied&state={state}"),
            &flow,
        ),
        at(NOW),
    );
    let r = reply(&ev);
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("access_denied"));
    assert_eq!(set_cookies(r).len(), 1);
}

#[test]
fn id_tokens_that_are_not_this_sign_ins_are_refused() {
    let mut e = engine();
    for (extra, why) in [
        (json!({"nonce": "another"}), "nonce"),
        (json!({"aud": "api"}), "audience"),
        (
            json!({"azp": "other-client", "aud": ["web", "other-client"]}),
            "azp",
        ),
        (json!({"exp": NOW - 120}), "expired"),
        (json!({"iss": "https://evil.test"}), "issuer"),
    ] {
        let (location, flow) = start(&mut e, "/app", NOW);
        let (ticket, _) = callback(&mut e, &location, &flow, NOW);
        let mut token = id_token(&param(&location, "nonce"), json!({}));
        if let Value::Object(m) = extra {
            let mut c = claims(json!({"aud": "web", "nonce": param(&location, "nonce")}));
            c.as_object_mut().unwrap().extend(m);
            token = testkit::rsa().sign(c);
        }
        let ev = e
            .resume(
                ticket,
                token_answer(200, json!({"id_token": token})),
                at(NOW),
            )
            .unwrap();
        assert_eq!(
            (reply(&ev).status, ev.record.reason),
            (401, Reason::LoginFailed),
            "{why}"
        );
    }
    // Signed by a key the provider does not have.
    let (location, flow) = start(&mut e, "/app", NOW);
    let (ticket, _) = callback(&mut e, &location, &flow, NOW);
    let forged = testkit::rsa_other().sign(claims(
        json!({"aud": "web", "nonce": param(&location, "nonce")}),
    ));
    let ev = e
        .resume(
            ticket,
            token_answer(200, json!({"id_token": forged})),
            at(NOW),
        )
        .unwrap();
    assert_eq!(reply(&ev).status, 401);
}

#[test]
fn a_failing_token_endpoint_gets_a_page_not_a_session() {
    let mut e = engine();
    for (answer, status) in [
        (Resumption::Callout(Err(CalloutFailure::ConnectFailed)), 503),
        (Resumption::TimedOut, 503),
        (token_answer(400, json!({"error": "invalid_grant"})), 502),
        (token_answer(200, json!({"access_token": "x"})), 502),
    ] {
        let (location, flow) = start(&mut e, "/app", NOW);
        let (ticket, _) = callback(&mut e, &location, &flow, NOW);
        let ev = e.resume(ticket, answer, at(NOW)).unwrap();
        let r = reply(&ev);
        assert_eq!(r.status, status, "{}", ev.record.detail);
        assert!(set_cookies(r).is_empty());
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
}

#[test]
fn bad_expired_and_foreign_sessions_are_a_fresh_sign_in() {
    let mut e = engine();
    let session = sign_in(&mut e, "/app", json!({}));
    assert_eq!(
        e.decide(&browser("/app", &session), at(NOW)).record.reason,
        Reason::SessionValid
    );
    let value = session.split_once('=').unwrap().1;
    let mut tampered = value.to_string().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    for cookie in [
        format!("__Host-portcullis={}", String::from_utf8(tampered).unwrap()),
        format!("__Host-portcullis={}", &value[..value.len() - 4]),
        "__Host-portcullis=".to_string(),
    ] {
        let ev = e.decide(&browser("/app", &cookie), at(NOW));
        assert_eq!(ev.record.reason, Reason::LoginRedirect);
    }
    // Past session_seconds, the same cookie is no session.
    let ev = e.decide(&browser("/app", &session), at(NOW + 3601));
    assert_eq!(ev.record.reason, Reason::LoginRedirect);
    // Another deployment's keys do not open it; a rotated ring (new key first) does.
    let ev = engine_with(&[KEY_B], json!({})).decide(&browser("/app", &session), at(NOW));
    assert_eq!(ev.record.reason, Reason::LoginRedirect);
    let ev = engine_with(&[KEY_B, KEY_A], json!({})).decide(&browser("/app", &session), at(NOW));
    assert_eq!(ev.record.reason, Reason::SessionValid);
}

#[test]
fn a_large_session_is_split_across_cookies() {
    let mut e = engine();
    let groups: Vec<String> = (0..300).map(|i| format!("group-number-{i}")).collect();
    let session = sign_in(&mut e, "/app", json!({"groups": groups}));
    assert!(
        session.contains("__Host-portcullis-1="),
        "{}",
        &session[..80]
    );
    let ev = e.decide(&browser("/app", &session), at(NOW));
    assert_eq!(ev.record.reason, Reason::SessionValid);
    let a = allowed_edits(&ev);
    assert!(
        a.request.remove.contains(&"cookie".to_string()),
        "{:?}",
        a.request
    );
}

#[test]
fn logout_clears_the_session_and_ends_it_at_the_provider() {
    let mut e = engine();
    let session = sign_in(&mut e, "/app", json!({}));
    let ev = e.decide(&browser("/oauth2/logout", &session), at(NOW));
    let r = reply(&ev);
    assert_eq!((r.status, ev.record.reason), (302, Reason::Logout));
    let location = r.header("location").unwrap();
    assert!(location.starts_with("https://idp.test/logout?"));
    assert_eq!(
        param(location, "post_logout_redirect_uri"),
        "https://app.test/"
    );
    assert_eq!(param(location, "id_token_hint").split('.').count(), 3);
    let cleared = set_cookies(r);
    assert!(cleared
        .iter()
        .any(|(n, v)| n == "__Host-portcullis" && v.is_empty()));
    assert!(cleared.iter().all(|(_, v)| v.is_empty()));
}

#[test]
fn observe_mode_lets_browsers_through_but_still_answers_its_own_paths() {
    let mut e = engine_with(&[KEY_A], json!({"mode": "observe"}));
    let ev = e.decide(&browser("/app", ""), at(NOW));
    assert_eq!(ev.record.reason, Reason::LoginRedirect);
    assert!(matches!(ev.step, Step::Allow(_)));
    let ev = e.decide(&browser("/oauth2/callback?code=c&state=x", ""), at(NOW));
    assert_eq!(reply(&ev).status, 400);
}

#[test]
fn login_configuration_errors_name_the_field() {
    let base = |login: Value| {
        json!({
            "providers": {"idp": {
                "issuer": "https://idp.test", "audiences": ["api"],
                "jwks": {"keys": [testkit::rsa().jwk()]},
                "login": login
            }},
            "rules": [{"auth": "login"}]
        })
    };
    let ok = json!({
        "client_id": "web", "authorization_endpoint": "https://idp.test/a",
        "token_endpoint": "https://idp.test/t", "cluster": "idp", "cookie_keys": [b64(&KEY_A)]
    });
    assert!(config::parse(base(ok.clone()).to_string().as_bytes()).is_ok());
    for (field, value, message) in [
        (
            "cookie_keys",
            json!([]),
            "providers.idp.login.cookie_keys: must list at least one key",
        ),
        (
            "cookie_keys",
            json!([b64(&[1; 16])]),
            "providers.idp.login.cookie_keys[0]: decodes to 16 bytes",
        ),
        (
            "cookie_secure",
            json!(false),
            "providers.idp.login.cookie_secure: a __Host- or __Secure- cookie must be Secure",
        ),
        (
            "cookie_domain",
            json!("example.com"),
            "providers.idp.login.cookie_domain: a __Host- cookie cannot have a Domain",
        ),
        (
            "token_endpoint",
            json!("http://idp.test/t"),
            "providers.idp.login.token_endpoint: must be an absolute https URL",
        ),
        (
            "callback_path",
            json!("oauth2"),
            "providers.idp.login.callback_path: must be a path",
        ),
        (
            "client_auth",
            json!("post"),
            "providers.idp.login.client_auth: needs \"client_secret\"",
        ),
    ] {
        let mut l = ok.clone();
        l[field] = value;
        let e = config::parse(base(l).to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(message), "{e}");
    }
    let mut no_cluster = ok;
    no_cluster.as_object_mut().unwrap().remove("cluster");
    let e = config::parse(base(no_cluster).to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("providers.idp.login.cluster: required"),
        "{e}"
    );
    let no_login = json!({
        "providers": {"idp": {"issuer": "https://idp.test", "audiences": ["api"],
                              "jwks": {"keys": [testkit::rsa().jwk()]}}},
        "rules": [{"auth": "login"}]
    });
    let e = config::parse(no_login.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("rules[0].auth: \"login\" needs a provider"),
        "{e}"
    );
}

/// A sign-in whose token answer carries a refresh token and an ID token that expires at
/// `NOW + 300`; the session's cookies.
fn sign_in_with_refresh(e: &mut Engine) -> String {
    let (location, flow) = start(e, "/app", NOW);
    let (ticket, _) = callback(e, &location, &flow, NOW);
    let token = id_token(&param(&location, "nonce"), json!({"exp": NOW + 300}));
    let answer = token_answer(200, json!({"id_token": token, "refresh_token": "rt-1"}));
    let ev = e.resume(ticket, answer, at(NOW)).unwrap();
    cookie_header(&set_cookies(reply(&ev)))
}

fn api(path: &str, cookie: &str) -> Vec<(String, String)> {
    let mut h = browser(path, cookie);
    h.retain(|(n, _)| n != "sec-fetch-mode");
    h.iter_mut().find(|(n, _)| n == "accept").unwrap().1 = "application/json".into();
    h
}

#[test]
fn a_session_near_its_id_tokens_expiry_is_refreshed_through_a_callout() {
    let mut e = engine();
    let session = sign_in_with_refresh(&mut e);
    // Well before the ID token's expiry: no refresh.
    let ev = e.decide(&browser("/app", &session), at(NOW + 100));
    assert_eq!(ev.record.reason, Reason::SessionValid);
    // Within a minute of it: the request is held while the refresh token is used.
    let ev = e.decide(
        &browser("/app", &format!("theme=dark; {session}")),
        at(NOW + 250),
    );
    let Step::Suspend(Suspension::Callout { ticket, callout }) = &ev.step else {
        panic!("{:?}", ev.step);
    };
    let body = String::from_utf8(callout.body.clone().unwrap()).unwrap();
    assert!(body.contains("grant_type=refresh_token") && body.contains("refresh_token=rt-1"));
    let fresh = testkit::rsa().sign(claims(json!({
        "aud": "web", "email": "alice@new.test", "iat": NOW + 250, "exp": NOW + 900
    })));
    let answer = token_answer(200, json!({"id_token": fresh, "refresh_token": "rt-2"}));
    let ev = e.resume(*ticket, answer, at(NOW + 250)).unwrap();
    assert_eq!(ev.record.reason, Reason::SessionValid);
    assert!(
        ev.record.detail.starts_with("session refreshed"),
        "{}",
        ev.record.detail
    );
    let a = allowed_edits(&ev);
    assert!(sets(a, "x-user-email", "alice@new.test"), "{:?}", a.request);
    assert!(sets(a, "cookie", "theme=dark"), "{:?}", a.request);
    let renewed: Vec<(String, String)> = a
        .response
        .add
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| {
            let (n, v) = v.split(';').next().unwrap().split_once('=').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    let renewed = cookie_header(&renewed);
    assert!(renewed.starts_with("__Host-portcullis="));
    // The refreshed session stands on its own until its new ID token nears expiry.
    let ev = e.decide(&browser("/app", &renewed), at(NOW + 400));
    assert_eq!(ev.record.reason, Reason::SessionValid);
}

#[test]
fn a_failed_refresh_is_a_fresh_sign_in() {
    let mut e = engine();
    let session = sign_in_with_refresh(&mut e);
    let other_sub = testkit::rsa().sign(claims(json!({"aud": "web", "sub": "mallory"})));
    for answer in [
        token_answer(400, json!({"error": "invalid_grant"})),
        Resumption::Callout(Err(CalloutFailure::ConnectFailed)),
        token_answer(200, json!({"id_token": other_sub})),
        token_answer(200, json!({"access_token": "no id token"})),
    ] {
        let ev = e.decide(&browser("/app", &session), at(NOW + 290));
        let ticket = match &ev.step {
            Step::Suspend(s) => s.ticket(),
            other => panic!("{other:?}"),
        };
        let ev = e.resume(ticket, answer, at(NOW + 290)).unwrap();
        assert_eq!(
            ev.record.reason,
            Reason::LoginRedirect,
            "{}",
            ev.record.detail
        );
        let r = reply(&ev);
        assert_eq!(r.status, 302);
        assert!(set_cookies(r)
            .iter()
            .any(|(n, v)| n == "__Host-portcullis" && v.is_empty()));
    }
    // A program with the same session gets 401, not the provider's page.
    let ev = e.decide(&api("/app", &session), at(NOW + 290));
    let ticket = match &ev.step {
        Step::Suspend(s) => s.ticket(),
        other => panic!("{other:?}"),
    };
    let ev = e
        .resume(
            ticket,
            token_answer(400, json!({"error": "invalid_grant"})),
            at(NOW + 290),
        )
        .unwrap();
    assert_eq!(reply(&ev).status, 401);
}

#[test]
fn a_browser_keeps_at_most_four_sign_ins_in_progress() {
    let mut e = engine();
    let mut jar: Vec<(String, String)> = Vec::new();
    for i in 0..7u64 {
        let ev = e.decide(&browser("/app", &cookie_header(&jar)), at(NOW + i));
        for (name, value) in set_cookies(reply(&ev)) {
            jar.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                jar.push((name, value));
            }
        }
        assert!(
            jar.len() <= crate::oidc::flow::MAX_FLOWS,
            "{i}: {}",
            jar.len()
        );
    }
    assert_eq!(jar.len(), crate::oidc::flow::MAX_FLOWS);
    // Expired flows go first, whatever their number.
    let ev = e.decide(&browser("/app", &cookie_header(&jar)), at(NOW + 1000));
    let cleared = set_cookies(reply(&ev))
        .iter()
        .filter(|(_, v)| v.is_empty())
        .count();
    assert_eq!(cleared, crate::oidc::flow::MAX_FLOWS);
}

#[test]
fn an_answer_naming_another_provider_is_refused() {
    let mut e = engine();
    let (location, flow) = start(&mut e, "/app", NOW);
    let state = param(&location, "state");
    let path = format!("/oauth2/callback?code=c&state={state}&iss=https%3A%2F%2Fevil.test");
    let ev = e.decide(&browser(&path, &flow), at(NOW));
    assert_eq!(reply(&ev).status, 400);
    assert!(ev.record.detail.contains("(iss)"), "{}", ev.record.detail);
}

#[test]
fn an_opened_session_is_remembered_until_it_needs_something_done() {
    let mut e = engine();
    let session = sign_in(&mut e, "/app", json!({}));
    let first = e.decide(&browser("/app", &session), at(NOW));
    assert_eq!(
        (first.record.reason, first.record.cache),
        (Reason::SessionValid, CacheUse::Miss)
    );
    let again = e.decide(&browser("/app", &session), at(NOW + 10));
    assert_eq!(
        (again.record.reason, again.record.cache),
        (Reason::SessionValid, CacheUse::Hit)
    );
    assert!(sets(allowed_edits(&again), "x-user-sub", "alice"));
    // Not past the session's end (session_seconds = 3600), even when remembered.
    let ended = e.decide(&browser("/app", &session), at(NOW + 3600));
    assert_eq!(ended.record.reason, Reason::LoginRedirect);
    // With a refresh token, only until the refresh falls due (ID token exp - 60 s).
    let mut e = engine();
    let session = sign_in_with_refresh(&mut e);
    assert_eq!(
        e.decide(&browser("/app", &session), at(NOW)).record.cache,
        CacheUse::Miss
    );
    assert_eq!(
        e.decide(&browser("/app", &session), at(NOW + 239))
            .record
            .cache,
        CacheUse::Hit
    );
    let due = e.decide(&browser("/app", &session), at(NOW + 240));
    assert!(
        matches!(due.step, Step::Suspend(Suspension::Callout { .. })),
        "{:?}",
        due.step
    );
}

#[test]
fn endpoints_left_out_are_read_from_the_discovery_document_once() {
    assert!(engine().policy().logins[0].endpoints.is_some());
    let mut doc = json!({
        "providers": {"idp": {
            "issuer": "https://idp.test", "audiences": ["api"],
            "jwks": {"keys": [testkit::rsa().jwk()]},
            "login": {"client_id": "web", "client_secret": "s3cret", "cluster": "idp",
                      "cookie_keys": [b64(&KEY_A)]}
        }},
        "rules": [{"name": "app", "match": {"path": {"prefix": "/"}}, "auth": "login"}]
    });
    let mut e = Engine::new(config::parse(doc.to_string().as_bytes()).unwrap());
    let ev = e.decide(&browser("/app", ""), at(NOW));
    let Step::Suspend(Suspension::Callout { ticket, callout }) = &ev.step else {
        panic!("{:?}", ev.step);
    };
    assert_eq!(
        (callout.cluster.as_str(), callout.path.as_str()),
        ("idp", "/.well-known/openid-configuration")
    );
    let discovery = |issuer: &str| {
        token_answer(
            200,
            json!({
                "issuer": issuer,
                "authorization_endpoint": "https://login.idp.test/authorize",
                "token_endpoint": "https://login.idp.test/oauth/token",
                "end_session_endpoint": "https://login.idp.test/bye"
            }),
        )
    };
    // A document for another issuer is refused, and the next request asks again.
    let ev = e
        .resume(*ticket, discovery("https://evil.test"), at(NOW))
        .unwrap();
    assert_eq!(reply(&ev).status, 503);
    let ev = e.decide(&browser("/app", ""), at(NOW));
    let ticket = match &ev.step {
        Step::Suspend(s) => s.ticket(),
        other => panic!("{other:?}"),
    };
    let ev = e
        .resume(ticket, discovery("https://idp.test"), at(NOW))
        .unwrap();
    let location = reply(&ev).header("location").unwrap().to_string();
    assert!(
        location.starts_with("https://login.idp.test/authorize?"),
        "{location}"
    );
    // Known from now on: no second fetch, and the code goes to the discovered token endpoint.
    let (location, flow) = start(&mut e, "/app", NOW);
    let (_, exchange) = callback(&mut e, &location, &flow, NOW);
    assert_eq!(exchange.path, "/oauth/token");
    assert_eq!(exchange.authority, "login.idp.test");
    // Half the endpoints is a configuration error.
    doc["providers"]["idp"]["login"]["token_endpoint"] = json!("https://idp.test/t");
    let err = config::parse(doc.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("providers.idp.login: give both"), "{err}");
}
