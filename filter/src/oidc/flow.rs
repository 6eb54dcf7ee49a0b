//! One sign-in in progress: the `state`, `nonce` and PKCE verifier it was started with and
//! the page to return to, sealed in a cookie of its own (named after the state, so every
//! tab's sign-in has its own and one tab's login does not break another's).

use super::{form, Endpoints, Login};
use crate::request::Request;
use crate::session::{random_token, NoRandomness};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a sign-in may take, in seconds: the flow cookie's lifetime.
pub const FLOW_SECONDS: u64 = 600;
/// Characters of the state in the flow cookie's name.
const STATE_IN_NAME: usize = 16;

/// Sign-ins one browser may have in progress: past this, starting one deletes the oldest,
/// so pages opened and never signed in to cannot grow the Cookie header until servers
/// refuse it (431).
pub const MAX_FLOWS: usize = 4;

/// What the callback needs of the sign-in it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The `state` sent.
    #[serde(rename = "s")]
    pub state: String,
    /// The OIDC `nonce` sent.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE `code_verifier` (RFC 7636 §4.1).
    #[serde(rename = "v")]
    pub verifier: String,
    /// The path (and query) to return to: always a path of this origin.
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix seconds after which the flow is void.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// A sign-in to start: where to send the browser, and the cookie that remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The authorization request URL.
    pub location: String,
    /// The flow cookie's `Set-Cookie` value.
    pub set_cookie: String,
}

/// The path to come back to after sign-in: the request's own, never another origin's.
pub fn return_path(req: &Request<'_>) -> String {
    let path = req.header(":path").unwrap_or("/");
    // `//host/x` and `/\host/x` are taken by browsers as another origin.
    if !path.starts_with('/') || path.starts_with("//") || path.starts_with("/\\") {
        "/".into()
    } else {
        path.to_string()
    }
}

/// The flow cookie's name for a state; `None` for a state the plugin cannot have made.
pub fn cookie_name(login: &Login, state: &str) -> Option<String> {
    let head = state.get(..STATE_IN_NAME)?;
    head.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then(|| format!("{}-flow-{head}", login.cookie_name))
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `Set-Cookie` values that delete this browser's flow cookies beyond the newest
/// `MAX_FLOWS - 1`, and every one that does not open or has expired, so the one about to
/// be added keeps the count at [`MAX_FLOWS`].
pub fn prune(login: &Login, req: &Request<'_>, now: u64) -> Vec<String> {
    let prefix = format!("{}-flow-", login.cookie_name);
    let mut live: Vec<(u64, String)> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    for pair in req.headers_named("cookie").flat_map(|h| h.split(';')) {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with(&prefix)
            || dead
                .iter()
                .chain(live.iter().map(|(_, n)| n))
                .any(|n| n == name)
        {
            continue;
        }
        let expires = login
            .keys
            .open(name, value.trim())
            .and_then(|plain| serde_json::from_slice::<Flow>(&plain).ok())
            .map(|f| f.expires)
            .filter(|e| *e > now);
        match expires {
            Some(e) => live.push((e, name.to_string())),
            None => dead.push(name.to_string()),
        }
    }
    // Newest first; the oldest beyond the room left go.
    live.sort_unstable_by_key(|(expires, _)| std::cmp::Reverse(*expires));
    dead.extend(live.into_iter().skip(MAX_FLOWS - 1).map(|(_, n)| n));
    dead.iter().map(|n| login.cookie.clear_cookie(n)).collect()
}

/// Starts a sign-in for this request.
pub fn start(
    login: &Login,
    endpoints: &Endpoints,
    req: &Request<'_>,
    now: u64,
) -> Result<Start, NoRandomness> {
    // 32 random octets each, as RFC 7636 §7.1 recommends for the verifier.
    let flow = Flow {
        state: random_token(32)?,
        nonce: random_token(32)?,
        verifier: random_token(32)?,
        return_to: return_path(req),
        expires: now.saturating_add(FLOW_SECONDS),
    };
    let name = cookie_name(login, &flow.state).ok_or(NoRandomness)?;
    let plain = serde_json::to_vec(&flow).map_err(|_| NoRandomness)?;
    let sealed = login.keys.seal(&name, &plain)?;
    let scope = login.scopes.join(" ");
    let redirect_uri = login.redirect_uri(req);
    let code_challenge = challenge(&flow.verifier);
    let location = form::with_query(
        &endpoints.authorization,
        &[
            ("response_type", "code"),
            ("client_id", &login.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &scope),
            ("state", &flow.state),
            ("nonce", &flow.nonce),
            ("code_challenge", &code_challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    Ok(Start {
        location,
        set_cookie: login.cookie.set_cookie(&name, &sealed, FLOW_SECONDS),
    })
}

/// Why a callback does not end a sign-in this browser started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// No `state` parameter.
    #[error("the sign-in answer has no state")]
    NoState,
    /// No flow cookie for the state, or one that does not open: another browser's sign-in,
    /// a replayed or forged answer, or cookies lost on the way.
    #[error("no sign-in was started in this browser for this answer; sign in again")]
    Unknown,
    /// The flow is older than [`FLOW_SECONDS`].
    #[error("the sign-in took too long; sign in again")]
    Expired,
}

/// The flow this browser started for `state`, with its cookie's name.
pub fn open(
    login: &Login,
    req: &Request<'_>,
    state: Option<&str>,
    now: u64,
) -> Result<(Flow, String), FlowError> {
    let state = state.filter(|s| !s.is_empty()).ok_or(FlowError::NoState)?;
    let name = cookie_name(login, state).ok_or(FlowError::Unknown)?;
    let value = match req.cookies(&name).as_slice() {
        [one] => *one,
        _ => return Err(FlowError::Unknown),
    };
    let plain = login.keys.open(&name, value).ok_or(FlowError::Unknown)?;
    let flow: Flow = serde_json::from_slice(&plain).map_err(|_| FlowError::Unknown)?;
    if !super::constant_time_eq(flow.state.as_bytes(), state.as_bytes()) {
        return Err(FlowError::Unknown);
    }
    if flow.expires <= now {
        return Err(FlowError::Expired);
    }
    Ok((flow, name))
}
