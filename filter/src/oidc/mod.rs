//! Browser sign-in with OpenID Connect (authorization code + PKCE): who is sent to the
//! identity provider ([`navigation`]), the per-flow state ([`flow`]), the code exchange
//! ([`exchange`]), the session ([`session_data`]) and the pages a browser is shown
//! ([`pages`]). Plain Rust: the engine turns these into steps.

pub mod discovery;
pub mod exchange;
pub mod flow;
pub mod form;
pub mod navigation;
pub mod pages;
pub mod session_data;

use crate::jwks_fetch::Endpoint;
use crate::request::Request;
use crate::session::{CookieAttributes, KeyRing};

/// How the plugin authenticates itself at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic over the form-encoded id and secret.
    Basic,
    /// `client_secret_post`: id and secret in the request body.
    Post,
    /// A public client: `client_id` in the body, PKCE only.
    None,
}

/// Where the provider signs people in, exchanges codes and ends sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where browsers are sent to sign in (absolute URL).
    pub authorization: String,
    /// Where codes are exchanged.
    pub token: Endpoint,
    /// RP-initiated logout, if the provider has it.
    pub end_session: Option<String>,
}

/// A provider's `login` block, compiled.
#[derive(Debug, Clone)]
pub struct Login {
    /// Index of the provider (in the policy's providers) whose keys verify the ID token.
    pub provider: usize,
    /// The OAuth client id; also the ID token's required audience.
    pub client_id: String,
    /// The client secret, if the client is confidential.
    pub client_secret: Option<String>,
    /// How the secret is sent.
    pub client_auth: ClientAuth,
    /// Scopes asked for, `openid` first.
    pub scopes: Vec<String>,
    /// The provider's endpoints as configured; `None` to read them from `discovery`.
    pub endpoints: Option<Endpoints>,
    /// The provider's discovery document (`{issuer}/.well-known/openid-configuration`).
    pub discovery: Option<Endpoint>,
    /// The proxy cluster the code exchange goes through.
    pub cluster: String,
    /// How long a code exchange may take.
    pub timeout_ms: u64,
    /// The path the provider redirects back to.
    pub callback_path: String,
    /// The path that signs out.
    pub logout_path: String,
    /// Where a browser lands after signing out (a path of this origin).
    pub post_logout_path: String,
    /// The session cookie's name; flow cookies add `-flow-...`, pieces `-1`, `-2`.
    pub cookie_name: String,
    /// Secure, Domain.
    pub cookie: CookieAttributes,
    /// How long a session lasts.
    pub session_seconds: u64,
    /// The cookie keys.
    pub keys: KeyRing,
}

impl Login {
    /// `scheme://authority` of the request, as the browser addressed this proxy.
    pub fn origin(req: &Request<'_>) -> String {
        let scheme = match req.header(":scheme") {
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            _ => "https",
        };
        format!("{scheme}://{}", req.header(":authority").unwrap_or(""))
    }

    /// The redirect URI registered at the provider, for this request's origin.
    pub fn redirect_uri(&self, req: &Request<'_>) -> String {
        format!("{}{}", Self::origin(req), self.callback_path)
    }

    /// True for a cookie name that is this login's (the session, its pieces, flows).
    pub fn owns_cookie(&self, name: &str) -> bool {
        name == self.cookie_name
            || name
                .strip_prefix(self.cookie_name.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// Compares secrets without an early exit, so timing does not tell how much matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
