//! What a session cookie holds: the verified ID token (its claims are the session's
//! identity), when the session ends, and the refresh token if there was one.

use super::Login;
use crate::request::Request;
use crate::session::{self, NoRandomness};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The sealed part of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The ID token, verified when the session began. Kept whole so logout can send it as
    /// `id_token_hint`; sealed, so its payload is trusted as it stands.
    #[serde(rename = "it")]
    pub id_token: String,
    /// Refresh token, if any.
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds the session began.
    #[serde(rename = "iat")]
    pub issued: u64,
    /// Unix seconds the session ends.
    #[serde(rename = "exp")]
    pub expires: u64,
}

impl Session {
    /// The ID token's claims.
    pub fn claims(&self) -> Option<Map<String, Value>> {
        let payload = self.id_token.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// Why a session could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No randomness for the nonce.
    #[error(transparent)]
    Random(#[from] NoRandomness),
    /// More than the cookie pieces hold.
    #[error(
        "the session is larger than {} cookies of {} bytes",
        session::MAX_PIECES,
        session::MAX_PIECE
    )]
    TooLarge,
}

/// The `Set-Cookie` values that store `s` (and clear pieces a larger session left).
pub fn seal(login: &Login, s: &Session, now: u64) -> Result<Vec<String>, SealError> {
    let plain = serde_json::to_vec(s).map_err(|_| SealError::TooLarge)?;
    let sealed = login.keys.seal(&login.cookie_name, &plain)?;
    let pieces = session::split(&login.cookie_name, &sealed).ok_or(SealError::TooLarge)?;
    let max_age = s.expires.saturating_sub(now);
    let mut out: Vec<String> = pieces
        .iter()
        .map(|(n, v)| login.cookie.set_cookie(n, v, max_age))
        .collect();
    for i in pieces.len()..session::MAX_PIECES {
        out.push(
            login
                .cookie
                .clear_cookie(&session::piece_name(&login.cookie_name, i)),
        );
    }
    Ok(out)
}

/// The session the request carries, if it opens and has not ended; tampered, truncated,
/// foreign or expired cookies are no session.
pub fn open(login: &Login, req: &Request<'_>, now: u64) -> Option<Session> {
    open_sealed(login, &session::join(req, &login.cookie_name)?, now)
}

/// [`open`] for the sealed value the request's cookie pieces make up.
pub fn open_sealed(login: &Login, sealed: &str, now: u64) -> Option<Session> {
    let plain = login.keys.open(&login.cookie_name, sealed)?;
    let s: Session = serde_json::from_slice(&plain).ok()?;
    (s.expires > now && s.issued <= now.saturating_add(60)).then_some(s)
}

/// `Set-Cookie` values that delete every piece of the session.
pub fn clear(login: &Login) -> Vec<String> {
    (0..session::MAX_PIECES)
        .map(|i| {
            login
                .cookie
                .clear_cookie(&session::piece_name(&login.cookie_name, i))
        })
        .collect()
}
