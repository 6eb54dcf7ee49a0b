//! The code exchange at the token endpoint (RFC 6749 §4.1.3, PKCE per RFC 7636 §4.5), sent
//! as a host callout, and what its answer must hold.

use super::flow::Flow;
use super::{form, ClientAuth, Endpoints, Login};
use crate::callout::{Callout, CalloutFailure, CalloutResult, Method};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Largest token endpoint answer read: ID tokens with many groups run to a few KiB.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// The callout that redeems `code`.
pub fn request(
    login: &Login,
    endpoints: &Endpoints,
    flow: &Flow,
    code: &str,
    redirect_uri: &str,
) -> Callout {
    grant(
        login,
        endpoints,
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", flow.verifier.as_str()),
        ],
    )
}

/// The callout that trades a refresh token for fresh tokens (RFC 6749 §6).
pub fn refresh_request(login: &Login, endpoints: &Endpoints, refresh_token: &str) -> Callout {
    grant(
        login,
        endpoints,
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

/// A token endpoint request with this grant, authenticated as the login says.
fn grant<'a>(
    login: &'a Login,
    endpoints: &Endpoints,
    mut body: Vec<(&'a str, &'a str)>,
) -> Callout {
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
    ];
    let secret = login.client_secret.as_deref().unwrap_or("");
    match login.client_auth {
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: id and secret are form-encoded before they are joined.
            let pair = format!(
                "{}:{}",
                form::encode(&login.client_id),
                form::encode(secret)
            );
            headers.push((
                "authorization".to_string(),
                format!("Basic {}", STANDARD.encode(pair)),
            ));
        }
        ClientAuth::Post => {
            body.push(("client_id", &login.client_id));
            body.push(("client_secret", secret));
        }
        ClientAuth::None => body.push(("client_id", &login.client_id)),
    }
    Callout {
        cluster: login.cluster.clone(),
        method: Method::Post,
        authority: endpoints.token.authority.clone(),
        path: endpoints.token.path.clone(),
        headers,
        body: Some(form::pairs(&body).into_bytes()),
        timeout_ms: login.timeout_ms,
        max_response_bytes: MAX_TOKEN_RESPONSE_BYTES,
    }
}

/// What a successful exchange brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The ID token (not yet verified).
    pub id_token: String,
    /// A refresh token, if the provider gave one.
    pub refresh_token: Option<String>,
}

/// Why an exchange brought no usable tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No answer: the provider is down or slow (503 for the browser).
    #[error("the identity provider's token endpoint did not answer: {0}")]
    Unreachable(CalloutFailure),
    /// The provider refused the code (an OAuth error) or answered with a status.
    #[error("the identity provider refused the sign-in code: HTTP {status} {error}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its `error` code, if it sent one.
        error: String,
    },
    /// 200, but not a token response with an ID token.
    #[error("the identity provider's token answer is unusable: {0}")]
    Malformed(&'static str),
}

/// Reads the token endpoint's answer.
pub fn tokens(result: CalloutResult) -> Result<Tokens, ExchangeError> {
    let response = result.map_err(ExchangeError::Unreachable)?;
    let json: Option<Map<String, Value>> = serde_json::from_slice(&response.body).ok();
    if response.status != 200 {
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(|e| {
                e.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        return Err(ExchangeError::Refused {
            status: response.status,
            error,
        });
    }
    if response.truncated {
        return Err(ExchangeError::Malformed("larger than the plugin reads"));
    }
    let json = json.ok_or(ExchangeError::Malformed("not a JSON object"))?;
    let id_token = json
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or(ExchangeError::Malformed(
            "no id_token (is \"openid\" among the scopes?)",
        ))?;
    Ok(Tokens {
        id_token: id_token.to_string(),
        refresh_token: json
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Why a verified ID token is still not this sign-in's (OIDC Core §3.1.3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// `nonce` is not the one this browser's flow sent: a replayed or injected token.
    #[error("the ID token's nonce is not this sign-in's")]
    WrongNonce,
    /// `azp` names another client.
    #[error("the ID token was issued to another client (azp)")]
    WrongParty,
    /// A refreshed ID token names another person.
    #[error("the refreshed ID token names another subject")]
    OtherSubject,
}

/// A refreshed ID token must be about the same person (OIDC Core §12.2): same `sub`, and a
/// `nonce`, if it has one, the original's.
pub fn check_refreshed_id_token(
    claims: &Map<String, Value>,
    original: &Map<String, Value>,
    login: &Login,
) -> Result<(), IdTokenError> {
    if claims.get("sub") != original.get("sub") {
        return Err(IdTokenError::OtherSubject);
    }
    if claims.get("nonce").is_some() && claims.get("nonce") != original.get("nonce") {
        return Err(IdTokenError::WrongNonce);
    }
    authorized_party(claims, login)
}

/// The checks an ID token needs beyond a bearer token's: nonce and authorized party.
pub fn check_id_token(
    claims: &Map<String, Value>,
    login: &Login,
    flow: &Flow,
) -> Result<(), IdTokenError> {
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !super::constant_time_eq(nonce.as_bytes(), flow.nonce.as_bytes()) {
        return Err(IdTokenError::WrongNonce);
    }
    authorized_party(claims, login)
}

/// `azp`, when present, names this client (OIDC Core §3.1.3.7, step 5).
fn authorized_party(claims: &Map<String, Value>, login: &Login) -> Result<(), IdTokenError> {
    match claims.get("azp") {
        None => Ok(()),
        Some(Value::String(azp)) if *azp == login.client_id => Ok(()),
        Some(_) => Err(IdTokenError::WrongParty),
    }
}
