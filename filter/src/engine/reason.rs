//! Why a request was decided the way it was: one stable code per outcome, shared by the
//! decision log (`reason=`), the per-reason denial counters and the documentation.

use crate::keys::KeyLookupError;
use crate::verify::VerifyError;
use std::fmt;

/// The stable reason code of a decision. The codes never change meaning: dashboards and
/// alerts are built on them (`portcullis_denied_<code>_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The rule needs no token (`auth: none`).
    Public,
    /// No token was sent and the rule allows anonymous requests (`auth: optional`).
    Anonymous,
    /// A token verified and the rule's requirements were met.
    Authorized,
    /// The request is held until the provider's keys arrive (never logged as a verdict).
    WaitingForKeys,
    /// The request is held until a callout answers (never logged as a verdict).
    WaitingForCallout,
    /// The path is one servers could resolve differently (docs/paths.md): 400 before any rule.
    AmbiguousPath,
    /// No rule matched the request.
    NoRule,
    /// The rule needs a token and none was sent.
    MissingToken,
    /// The token is larger than `max_token_bytes`.
    TooLarge,
    /// More than one token was sent (e.g. header and query), or the same source twice.
    AmbiguousToken,
    /// Not a well-formed signed JWT (includes JWE and a wrong `typ`).
    Malformed,
    /// The provider requires RFC 9068 access tokens and this one is not (`typ` is not
    /// `at+jwt`, or a claim the RFC requires is missing): an ID token, say.
    WrongTokenType,
    /// `alg` is `none`, unknown, not allowed, or does not fit the key.
    BadAlgorithm,
    /// The header has `crit`.
    UnsupportedCrit,
    /// `iss` is not a provider this rule accepts.
    WrongIssuer,
    /// `aud` names none of the provider's audiences.
    WrongAudience,
    /// `exp` has passed, or is missing where required.
    Expired,
    /// `nbf` or `iat` is in the future.
    NotYetValid,
    /// The token's lifetime exceeds `max_lifetime_seconds`.
    LifetimeTooLong,
    /// No key has the token's `kid` (after the permitted re-fetch).
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// The in-VM verifier refused the token for another reason.
    Rejected,
    /// The token is valid but lacks a scope, role or claim the rule needs.
    InsufficientScope,
    /// The provider's keys could not be had in time (503).
    KeysUnavailable,
    /// Too many requests are held already (503).
    Overloaded,
    /// The plugin could not do its work (500): a host call failed or it is not configured.
    Internal,
    /// No session: the browser was sent to sign in (302).
    LoginRedirect,
    /// A sign-in ended: the session cookie was set (302 back to the page).
    LoginOk,
    /// A sign-in failed: its state, the code exchange or the ID token (400 to 503).
    LoginFailed,
    /// A valid browser session satisfied the rule.
    SessionValid,
    /// The session was cleared (302).
    Logout,
    /// The rule tags requests for routing and the identity maps to no tag (403).
    NoRoute,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 32] = [
        Reason::Public,
        Reason::Anonymous,
        Reason::Authorized,
        Reason::WaitingForKeys,
        Reason::WaitingForCallout,
        Reason::AmbiguousPath,
        Reason::NoRule,
        Reason::MissingToken,
        Reason::TooLarge,
        Reason::AmbiguousToken,
        Reason::Malformed,
        Reason::WrongTokenType,
        Reason::BadAlgorithm,
        Reason::UnsupportedCrit,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::LifetimeTooLong,
        Reason::UnknownKid,
        Reason::BadSignature,
        Reason::Rejected,
        Reason::InsufficientScope,
        Reason::KeysUnavailable,
        Reason::Overloaded,
        Reason::Internal,
        Reason::LoginRedirect,
        Reason::LoginOk,
        Reason::LoginFailed,
        Reason::SessionValid,
        Reason::Logout,
        Reason::NoRoute,
    ];

    /// The code as it appears in logs and metric names.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Public => "public",
            Reason::Anonymous => "anonymous",
            Reason::Authorized => "authorized",
            Reason::WaitingForKeys => "waiting_for_keys",
            Reason::WaitingForCallout => "waiting_for_callout",
            Reason::AmbiguousPath => "ambiguous_path",
            Reason::NoRule => "no_rule",
            Reason::MissingToken => "missing_token",
            Reason::TooLarge => "too_large",
            Reason::AmbiguousToken => "ambiguous_token",
            Reason::Malformed => "malformed",
            Reason::WrongTokenType => "wrong_token_type",
            Reason::BadAlgorithm => "bad_algorithm",
            Reason::UnsupportedCrit => "unsupported_crit",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::Rejected => "rejected",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::Overloaded => "overloaded",
            Reason::Internal => "internal",
            Reason::LoginRedirect => "login_redirect",
            Reason::LoginOk => "login_ok",
            Reason::LoginFailed => "login_failed",
            Reason::SessionValid => "session_valid",
            Reason::Logout => "logout",
            Reason::NoRoute => "no_route",
        }
    }
}

impl From<&VerifyError> for Reason {
    fn from(e: &VerifyError) -> Reason {
        match e {
            VerifyError::TooLarge(_) => Reason::TooLarge,
            VerifyError::Encrypted | VerifyError::Malformed(_) | VerifyError::NotJwt => {
                Reason::Malformed
            }
            VerifyError::Algorithm(_) | VerifyError::AlgorithmNotAllowed(_) => Reason::BadAlgorithm,
            VerifyError::UnsupportedCritical => Reason::UnsupportedCrit,
            VerifyError::NotAccessToken(_) => Reason::WrongTokenType,
            VerifyError::WrongIssuer => Reason::WrongIssuer,
            VerifyError::WrongAudience => Reason::WrongAudience,
            VerifyError::MissingExpiration | VerifyError::Expired => Reason::Expired,
            VerifyError::NotYetValid | VerifyError::IssuedInFuture => Reason::NotYetValid,
            VerifyError::LifetimeTooLong(_) => Reason::LifetimeTooLong,
            VerifyError::Key(KeyLookupError::UnknownKid(_)) => Reason::UnknownKid,
            VerifyError::Key(_) => Reason::BadAlgorithm,
            VerifyError::BadSignature => Reason::BadSignature,
            VerifyError::Rejected(_) => Reason::Rejected,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.code() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_metric_safe_names() {
        let codes: HashSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }

    #[test]
    fn the_documentation_lists_every_code() {
        let doc = include_str!("../../../docs/configuration.md");
        for r in Reason::ALL {
            assert!(
                doc.contains(&format!("`{}`", r.code())),
                "{r} is not documented"
            );
        }
    }
}
