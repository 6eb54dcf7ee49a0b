//! Every default of the policy, with the bounds the compiler enforces. The compiler takes
//! its values from here, the JSON Schema's descriptions are written from here
//! ([`Number::describe`]), and a test holds docs/configuration.md to the same numbers.
//!
//! Enumerations (`mode`, `crypto`, a rule's `auth`) keep their default where serde needs
//! it, as `#[default]` on a variant in [`super::raw`], beside the description that names it.

use crate::alg::Alg;
use crate::token::TokenSource;
use std::fmt::Display;

/// A number the policy may set: the value used when it is left out, and the values the
/// compiler accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number<T> {
    /// Used when the field is absent.
    pub(crate) default: T,
    /// What a configured value must satisfy.
    pub(crate) bounds: Bounds<T>,
}

/// The values a [`Number`] accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bounds<T> {
    /// Any value; or a bound that depends on another field, which the compiler checks.
    Unbounded,
    /// Up to this, inclusive.
    AtMost(T),
    /// From the first to the second, inclusive.
    Between(T, T),
}

impl<T: Copy + PartialOrd + Display> Number<T> {
    /// The configured value, or the default; out of bounds, the message for the field.
    pub(crate) fn resolve(&self, configured: Option<T>) -> Result<T, String> {
        let value = configured.unwrap_or(self.default);
        match self.bounds {
            Bounds::Unbounded => Ok(value),
            Bounds::AtMost(max) if value <= max => Ok(value),
            Bounds::AtMost(max) => Err(format!("must be at most {max}")),
            Bounds::Between(min, max) if min <= value && value <= max => Ok(value),
            Bounds::Between(min, max) => Err(format!("must be between {min} and {max}")),
        }
    }

    /// The field's schema description: `what`, then its default and bounds.
    #[cfg(feature = "schema")]
    pub(crate) fn describe(&self, what: &str) -> String {
        let default = self.default;
        match self.bounds {
            Bounds::Unbounded => format!("{what} (default {default})."),
            Bounds::AtMost(max) => format!("{what} (default {default}, at most {max})."),
            Bounds::Between(min, max) => format!("{what} (default {default}, {min} to {max})."),
        }
    }
}

/// `realm`: the realm of `WWW-Authenticate`.
pub(crate) const REALM: &str = "portcullis";
/// The header a route tag goes upstream in.
pub(crate) const ROUTE_HEADER: &str = "x-portcullis-route";

/// `forward_token`: the token goes upstream unless told otherwise.
pub(crate) const FORWARD_TOKEN: bool = true;

/// serde's default for `forward_token` (serde takes a function, not a constant).
pub(super) fn forward_token() -> bool {
    FORWARD_TOKEN
}

/// `cache_size`: verified tokens remembered per VM; 0 disables the cache.
pub(crate) const CACHE_SIZE: Number<usize> = Number {
    default: 10_000,
    bounds: Bounds::AtMost(1_000_000),
};

/// `providers.*.clock_skew_seconds`: tolerance for `exp`, `nbf` and `iat`.
pub(crate) const CLOCK_SKEW_SECONDS: Number<u64> = Number {
    default: 60,
    bounds: Bounds::AtMost(3600),
};

/// `providers.*.require_expiration`: a token without `exp` is refused.
pub(crate) const REQUIRE_EXPIRATION: bool = true;

/// `providers.*.max_token_bytes`: larger tokens are refused unread.
pub(crate) const MAX_TOKEN_BYTES: Number<usize> = Number {
    default: 8192,
    bounds: Bounds::Between(64, 65_536),
};

/// `providers.*.algorithms`: every asymmetric algorithm; HMAC only when listed.
pub(crate) fn algorithms() -> Vec<Alg> {
    Alg::ASYMMETRIC.to_vec()
}

/// `providers.*.token_sources`: `Authorization: Bearer`.
pub(crate) fn token_sources() -> Vec<TokenSource> {
    vec![TokenSource::bearer()]
}

/// `remote_jwks.timeout_ms`: how long a fetch may take.
pub(crate) const FETCH_TIMEOUT_MS: Number<u64> = Number {
    default: 5000,
    bounds: Bounds::Between(100, 60_000),
};

/// `remote_jwks.refresh_seconds`: the refresh interval when the answer has no `max-age`;
/// clamped to the two bounds below rather than refused.
pub(crate) const REFRESH_SECONDS: Number<u64> = Number {
    default: 600,
    bounds: Bounds::Unbounded,
};

/// `remote_jwks.min_refresh_seconds`: positive and at most `max_refresh_seconds`, which the
/// compiler checks (the bound is another field).
pub(crate) const MIN_REFRESH_SECONDS: Number<u64> = Number {
    default: 60,
    bounds: Bounds::Unbounded,
};

/// `remote_jwks.max_refresh_seconds`: a day, so a key the IdP revoked without a rotation
/// notice is gone by the next day.
pub(crate) const MAX_REFRESH_SECONDS: Number<u64> = Number {
    default: 86_400,
    bounds: Bounds::Unbounded,
};

/// `remote_jwks.max_stale_seconds`: how long past its refresh time the last good key set
/// keeps serving while the IdP fails.
pub(crate) const MAX_STALE_SECONDS: Number<u64> = Number {
    default: 86_400,
    bounds: Bounds::Unbounded,
};

/// `remote_jwks.unknown_kid_refetch_seconds`: at most one refetch per this many seconds
/// because of an unknown `kid`, so random kids cannot drive callouts.
pub(crate) const UNKNOWN_KID_REFETCH_SECONDS: Number<u64> = Number {
    default: 15,
    bounds: Bounds::Unbounded,
};

/// `login.timeout_ms`: how long a code exchange may take.
pub(crate) const LOGIN_TIMEOUT_MS: Number<u64> = Number {
    default: 5000,
    bounds: Bounds::Between(100, 60_000),
};

/// `login.session_seconds`: how long a browser session lasts (eight hours: a working day).
pub(crate) const SESSION_SECONDS: Number<u64> = Number {
    default: 28_800,
    bounds: Bounds::Between(60, 2_592_000),
};

/// `login.callback_path`: where the identity provider sends the browser back.
pub(crate) const CALLBACK_PATH: &str = "/oauth2/callback";
/// `login.logout_path`: the path that signs out.
pub(crate) const LOGOUT_PATH: &str = "/oauth2/logout";
/// `login.post_logout_path`: where a browser lands after signing out.
pub(crate) const POST_LOGOUT_PATH: &str = "/";
/// `login.cookie_name`: `__Host-` makes browsers refuse it without Secure, with a Domain,
/// or from a sibling subdomain (RFC 6265bis §4.1.3.2).
pub(crate) const COOKIE_NAME: &str = "__Host-portcullis";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounds_give_the_field_messages() {
        assert_eq!(CLOCK_SKEW_SECONDS.resolve(None), Ok(60));
        assert_eq!(CLOCK_SKEW_SECONDS.resolve(Some(3600)), Ok(3600));
        assert_eq!(
            CLOCK_SKEW_SECONDS.resolve(Some(3601)).unwrap_err(),
            "must be at most 3600"
        );
        assert_eq!(MAX_TOKEN_BYTES.resolve(Some(64)), Ok(64));
        assert_eq!(
            MAX_TOKEN_BYTES.resolve(Some(63)).unwrap_err(),
            "must be between 64 and 65536"
        );
        assert_eq!(
            FETCH_TIMEOUT_MS.resolve(Some(60_001)).unwrap_err(),
            "must be between 100 and 60000"
        );
        assert_eq!(CACHE_SIZE.resolve(Some(0)), Ok(0));
        assert_eq!(REFRESH_SECONDS.resolve(Some(u64::MAX)), Ok(u64::MAX));
    }

    /// docs/configuration.md states each default in its tables; they are the values here.
    #[test]
    fn the_configuration_guide_states_these_defaults() {
        let guide = include_str!("../../../docs/configuration.md");
        let rows = [
            ("realm", format!("`\"{REALM}\"`")),
            ("forward_token", format!("`{FORWARD_TOKEN}`")),
            ("cache_size", format!("`{}`", CACHE_SIZE.default)),
            (
                "clock_skew_seconds",
                format!("`{}`", CLOCK_SKEW_SECONDS.default),
            ),
            ("require_expiration", format!("`{REQUIRE_EXPIRATION}`")),
            ("max_token_bytes", format!("`{}`", MAX_TOKEN_BYTES.default)),
            ("timeout_ms", format!("`{}`", FETCH_TIMEOUT_MS.default)),
            ("refresh_seconds", format!("`{}`", REFRESH_SECONDS.default)),
            (
                "min_refresh_seconds",
                format!("`{}`", MIN_REFRESH_SECONDS.default),
            ),
            (
                "max_refresh_seconds",
                format!("`{}`", MAX_REFRESH_SECONDS.default),
            ),
            (
                "max_stale_seconds",
                format!("`{}`", MAX_STALE_SECONDS.default),
            ),
            (
                "unknown_kid_refetch_seconds",
                format!("`{}`", UNKNOWN_KID_REFETCH_SECONDS.default),
            ),
            ("timeout_ms", format!("`{}`", LOGIN_TIMEOUT_MS.default)),
            ("session_seconds", format!("`{}`", SESSION_SECONDS.default)),
            ("callback_path", format!("`\"{CALLBACK_PATH}\"`")),
            ("logout_path", format!("`\"{LOGOUT_PATH}\"`")),
            ("post_logout_path", format!("`\"{POST_LOGOUT_PATH}\"`")),
            ("cookie_name", format!("`\"{COOKIE_NAME}\"`")),
            ("header", format!("`\"{ROUTE_HEADER}\"`")),
        ];
        for (field, default) in rows {
            let row = format!("| `{field}` | {default} |");
            assert!(
                guide.contains(&row),
                "docs/configuration.md has no row {row}"
            );
        }
    }
}
