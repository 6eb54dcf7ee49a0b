//! Browser sign-in with the compiled plugin in the harness: the identity provider's token
//! endpoint scripted, the clock moved to the ID token's expiry for a refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{assert_clean, builder};
use portcullis_testkit::{self as testkit, claims, NOW};
use proxy_wasm_harness::{Outcome, Request, Response, Upstream};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn login_policy() -> Value {
    json!({
        "providers": {"idp": {
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "jwks": {"keys": [testkit::rsa().jwk()]},
            "login": {
                "client_id": "web",
                "client_secret": "s3cret",
                "authorization_endpoint": "https://idp.test/auth",
                "token_endpoint": "https://idp.test/token",
                "cluster": "idp",
                "cookie_keys": [base64::engine::general_purpose::STANDARD.encode([9u8; 32])]
            }
        }},
        "rules": [{"name": "app", "match": {"path": {"prefix": "/"}}, "auth": "login"}],
        "claim_headers": [
            {"claim": "sub", "header": "x-user-sub"},
            {"claim": "email", "header": "x-user-email"}
        ]
    })
}

fn browser(path: &str, cookie: &str) -> Request {
    let r = Request::get(path)
        .authority("app.test")
        .scheme("https")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate");
    if cookie.is_empty() {
        r
    } else {
        r.header("cookie", cookie)
    }
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_string()
}

/// `name=value` of each Set-Cookie the client received, deletions left out.
fn cookies(o: &Outcome) -> String {
    let headers = match o {
        Outcome::LocalResponse { headers, .. } => headers,
        Outcome::Forwarded { response, .. } => &response.headers,
        other => panic!("{other:?}"),
    };
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.split(';').next())
        .filter(|pair| !pair.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn sign_in_then_refresh_near_expiry_through_the_compiled_plugin() {
    // The token endpoint: a code gets an ID token (expiring at NOW + 300) and a refresh
    // token; the refresh token gets a fresh ID token with a new email.
    let nonce = Arc::new(Mutex::new(String::new()));
    let grants = Arc::new(Mutex::new(Vec::<String>::new()));
    let (n, g) = (Arc::clone(&nonce), Arc::clone(&grants));
    let idp = Upstream::handler(move |req| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        g.lock().unwrap().push(body.clone());
        let answer = if body.contains("grant_type=authorization_code") {
            let token = testkit::rsa().sign(claims(json!({
                "aud": "web", "nonce": n.lock().unwrap().clone(),
                "email": "alice@old.test", "exp": NOW + 300
            })));
            json!({"id_token": token, "refresh_token": "rt-1", "token_type": "Bearer"})
        } else {
            let token = testkit::rsa().sign(claims(json!({
                "aud": "web", "email": "alice@new.test", "iat": NOW + 250, "exp": NOW + 900
            })));
            json!({"id_token": token, "token_type": "Bearer"})
        };
        Response::new(200)
            .header("content-type", "application/json")
            .body(answer.to_string())
    });
    let mut h = builder(&login_policy())
        .upstream("idp", idp)
        .build()
        .unwrap();

    let start = h.request(browser("/app/page", "")).unwrap();
    assert_eq!(start.status(), Some(302));
    let location = start.response_header("location").unwrap().to_string();
    assert!(location.starts_with("https://idp.test/auth?"), "{location}");
    *nonce.lock().unwrap() = query_param(&location, "nonce");
    let flow = cookies(&start);

    let path = format!(
        "/oauth2/callback?code=c0de&state={}",
        query_param(&location, "state")
    );
    let back = h.request(browser(&path, &flow)).unwrap();
    let back = if back.is_paused() {
        h.advance_until_done(back.stream(), Duration::from_secs(5))
            .unwrap()
    } else {
        back
    };
    assert_eq!(back.status(), Some(302), "{back:?}");
    assert_eq!(back.response_header("location"), Some("/app/page"));
    let session = cookies(&back);
    assert!(session.starts_with("__Host-portcullis="), "{session}");
    assert!(grants.lock().unwrap()[0].contains("code=c0de"));

    let app = h
        .request(browser("/app/page", &format!("theme=dark; {session}")))
        .unwrap();
    assert!(app.is_forwarded(), "{app:?}");
    assert_eq!(app.upstream_header("x-user-sub"), Some("alice"));
    assert_eq!(app.upstream_header("x-user-email"), Some("alice@old.test"));
    assert_eq!(app.upstream_header("cookie"), Some("theme=dark"));

    // Within a minute of the ID token's expiry, the session is refreshed first and the
    // renewed cookie comes back on the upstream's response.
    h.advance(Duration::from_secs(260)).unwrap();
    let refreshed = h.request(browser("/app/page", &session)).unwrap();
    let refreshed = if refreshed.is_paused() {
        h.advance_until_done(refreshed.stream(), Duration::from_secs(5))
            .unwrap()
    } else {
        refreshed
    };
    assert!(refreshed.is_forwarded(), "{refreshed:?}");
    assert_eq!(
        refreshed.upstream_header("x-user-email"),
        Some("alice@new.test")
    );
    assert!(grants.lock().unwrap()[1].contains("grant_type=refresh_token&refresh_token=rt-1"));
    let renewed = cookies(&refreshed);
    assert!(renewed.starts_with("__Host-portcullis="), "{renewed}");
    assert_ne!(renewed, session);

    let later = h.request(browser("/app/page", &renewed)).unwrap();
    assert!(later.is_forwarded());
    assert_eq!(
        grants.lock().unwrap().len(),
        2,
        "the renewed session needs no refresh yet"
    );
    assert_clean(&h);
}
