//! Compiles `providers.<name>.login`: the OAuth client, the provider's endpoints and the
//! session cookie of browser sign-in.

use super::defaults;
use super::headers::is_tchar;
use super::raw::{RawClientAuth, RawLogin};
use super::{ConfigError, JsonPath};
use crate::jwks_fetch::Endpoint;
use crate::oidc::{ClientAuth, Endpoints, Login};
use crate::session::{CookieAttributes, KeyRing};
use crate::url::HttpsUrl;

/// One login block; `provider` is the index its provider compiled to, `jwks_cluster` the
/// cluster its keys come through (the default for the code exchange), `issuers` the
/// issuers the provider accepts.
pub(super) fn compile(
    at: &JsonPath,
    raw: RawLogin,
    provider: usize,
    jwks_cluster: Option<String>,
    issuers: &[&str],
) -> Result<Login, ConfigError> {
    let [issuer] = issuers else {
        return Err(at.invalid(
            "sign-in needs a provider with one \"issuer\": the ID token's iss must be exactly it",
        ));
    };
    if raw.client_id.is_empty() || raw.client_id.chars().any(char::is_control) {
        return Err(at
            .field("client_id")
            .invalid("must be non-empty, without control characters"));
    }
    let client_auth = match (raw.client_secret.as_deref(), raw.client_auth) {
        (Some(""), _) => return Err(at.field("client_secret").invalid("must not be empty")),
        (Some(_), None | Some(RawClientAuth::Basic)) => ClientAuth::Basic,
        (Some(_), Some(RawClientAuth::Post)) => ClientAuth::Post,
        (None, None) => ClientAuth::None,
        (None, Some(_)) => {
            return Err(at
                .field("client_auth")
                .invalid("needs \"client_secret\" (a public client sends none)"))
        }
    };
    let scopes = compile_scopes(&at.field("scopes"), raw.scopes)?;
    let endpoints = match (raw.authorization_endpoint, raw.token_endpoint) {
        (Some(authorization), Some(token)) => Some(Endpoints {
            authorization: url(&at.field("authorization_endpoint"), &authorization)?
                .as_str()
                .to_string(),
            token: Endpoint::from(&url(&at.field("token_endpoint"), &token)?),
            end_session: raw
                .end_session_endpoint
                .map(|u| {
                    url(&at.field("end_session_endpoint"), &u).map(|u| u.as_str().to_string())
                })
                .transpose()?,
        }),
        (None, None) if raw.end_session_endpoint.is_none() => None,
        (None, None) => {
            return Err(at.field("end_session_endpoint").invalid(
                "only with authorization_endpoint and token_endpoint; without them all three are discovered",
            ))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(at.invalid(
                "give both authorization_endpoint and token_endpoint, or neither to read them from the issuer's discovery document",
            ))
        }
    };
    let discovery = HttpsUrl::parse(issuer)
        .ok()
        .and_then(|u| u.openid_configuration())
        .map(|u| Endpoint::from(&u));
    if endpoints.is_none() && discovery.is_none() {
        return Err(at.invalid(
            "the issuer has no discovery document URL: give authorization_endpoint and token_endpoint",
        ));
    }
    let cluster =
        match raw.cluster.or(jwks_cluster) {
            Some(c) if !c.is_empty() => c,
            _ => return Err(at.field("cluster").invalid(
                "required without remote_jwks: the proxy cluster that reaches the token endpoint",
            )),
        };
    let timeout_ms = defaults::LOGIN_TIMEOUT_MS
        .resolve(raw.timeout_ms)
        .map_err(|m| at.field("timeout_ms").invalid(m))?;
    let callback_path = path(
        &at.field("callback_path"),
        raw.callback_path,
        defaults::CALLBACK_PATH,
    )?;
    let logout_path = path(
        &at.field("logout_path"),
        raw.logout_path,
        defaults::LOGOUT_PATH,
    )?;
    let post_logout_path = path(
        &at.field("post_logout_path"),
        raw.post_logout_path,
        defaults::POST_LOGOUT_PATH,
    )?;
    if callback_path == logout_path {
        return Err(at
            .field("logout_path")
            .invalid("must differ from callback_path"));
    }
    let cookie_name = raw
        .cookie_name
        .unwrap_or_else(|| defaults::COOKIE_NAME.into());
    if cookie_name.is_empty() || !cookie_name.bytes().all(is_tchar) {
        return Err(at
            .field("cookie_name")
            .invalid("must be a cookie name (letters, digits, -_.!#$%&'*+^`|~)"));
    }
    let secure = raw.cookie_secure.unwrap_or(true);
    let prefixed = cookie_name.starts_with("__Host-") || cookie_name.starts_with("__Secure-");
    if prefixed && !secure {
        return Err(at
            .field("cookie_secure")
            .invalid("a __Host- or __Secure- cookie must be Secure: browsers drop it otherwise"));
    }
    if let Some(d) = &raw.cookie_domain {
        if cookie_name.starts_with("__Host-") {
            return Err(at.field("cookie_domain").invalid(
                "a __Host- cookie cannot have a Domain: rename the cookie or drop the domain",
            ));
        }
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(at.field("cookie_domain").invalid("must be a host name"));
        }
    }
    let session_seconds = defaults::SESSION_SECONDS
        .resolve(raw.session_seconds)
        .map_err(|m| at.field("session_seconds").invalid(m))?;
    if raw.cookie_keys.is_empty() {
        return Err(at.field("cookie_keys").invalid(
            "must list at least one key: base64 of 32 random bytes (openssl rand -base64 32)",
        ));
    }
    let keys = raw
        .cookie_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            KeyRing::decode_key(k)
                .map_err(|e| at.field("cookie_keys").index(i).invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Login {
        provider,
        client_id: raw.client_id,
        client_secret: raw.client_secret,
        client_auth,
        scopes,
        endpoints,
        discovery,
        cluster,
        timeout_ms,
        callback_path,
        logout_path,
        post_logout_path,
        cookie_name,
        cookie: CookieAttributes {
            secure,
            domain: raw.cookie_domain,
        },
        session_seconds,
        keys: KeyRing::new(&keys),
    })
}

fn url(at: &JsonPath, text: &str) -> Result<HttpsUrl, ConfigError> {
    HttpsUrl::parse(text).map_err(|e| at.invalid(format!("must be an absolute https URL: {e}")))
}

fn path(at: &JsonPath, configured: Option<String>, default: &str) -> Result<String, ConfigError> {
    let p = configured.unwrap_or_else(|| default.into());
    if !p.starts_with('/')
        || p.starts_with("//")
        || p.bytes()
            .any(|b| b == b'?' || b == b'#' || b == b'\\' || b <= b' ' || b >= 0x7f)
    {
        return Err(
            at.invalid("must be a path: starting with one /, without query, spaces or backslashes")
        );
    }
    Ok(p)
}

fn compile_scopes(at: &JsonPath, scopes: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let mut out = vec!["openid".to_string()];
    for (i, s) in scopes.unwrap_or_default().into_iter().enumerate() {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b > b' ' && b != b'"' && b != b'\\' && b < 0x7f)
        {
            return Err(at
                .index(i)
                .invalid("a scope is one word of printable ASCII without quotes"));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}
