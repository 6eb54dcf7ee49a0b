//! Compact JWS parsing (RFC 7515 §7.1): header, payload and signature decoded and checked
//! for shape before any key is looked at.
//!
//! Nothing here trusts the token: [`UnverifiedJwt`] is what the key lookup and the
//! signature check work on. Keeping the parser apart from [`crate::verify`] lets the key
//! store name the token type without depending on the verifier.

use crate::alg::{Alg, AlgError};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Why a token is not a well-formed signed JWT. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than the provider's `max_token_bytes`.
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    /// Five segments: a JWE, which Portcullis does not decrypt.
    #[error("encrypted tokens (JWE) are not accepted")]
    Encrypted,
    /// Not three base64url segments of JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is `none` or unknown.
    #[error("{0}")]
    Algorithm(#[from] AlgError),
    /// The header has `crit`, whose extensions Portcullis does not implement.
    #[error("unsupported critical header parameter")]
    UnsupportedCritical,
    /// The header's `typ` is neither `JWT` nor `…+jwt`.
    #[error("token type is not JWT")]
    NotJwt,
}

/// A structurally valid token, not yet trusted.
#[derive(Debug, Clone)]
pub struct UnverifiedJwt<'a> {
    /// The compact serialisation.
    pub raw: &'a str,
    /// The header's `alg`.
    pub alg: Alg,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The header's `typ`, lower-cased (media types are case-insensitive).
    pub typ: Option<String>,
    /// The decoded payload.
    pub payload: Map<String, Value>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl UnverifiedJwt<'_> {
    /// The `iss` claim, if it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.payload.get("iss").and_then(Value::as_str)
    }

    /// Header and payload as sent, the bytes the signature covers (RFC 7515 §5.2).
    pub fn signing_input(&self) -> &str {
        self.raw
            .rsplit_once('.')
            .map_or(self.raw, |(input, _)| input)
    }
}

fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed("a segment is not unpadded base64url"))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed(what)),
    }
}

/// Largest header we decode; real headers are well under 1 KiB.
const MAX_HEADER_SEGMENT: usize = 4096;

/// Checks the compact serialisation and decodes header and payload. The size bound comes
/// first, so an oversized token costs no decoding at all.
pub fn parse(raw: &str, max_bytes: usize) -> Result<UnverifiedJwt<'_>, JwtError> {
    if raw.len() > max_bytes {
        return Err(JwtError::TooLarge(max_bytes));
    }
    let mut segments = raw.split('.');
    let (Some(header), Some(payload), Some(signature)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return Err(JwtError::Malformed("a JWT has exactly three segments"));
    };
    match segments.count() {
        0 => {}
        2 => return Err(JwtError::Encrypted),
        _ => return Err(JwtError::Malformed("a JWT has exactly three segments")),
    }
    if header.len() > MAX_HEADER_SEGMENT {
        return Err(JwtError::Malformed("header too large"));
    }
    let header = json_object(&b64(header)?, "header is not a JSON object")?;
    let alg: Alg = match header.get("alg") {
        Some(Value::String(a)) => a.parse()?,
        _ => return Err(JwtError::Malformed("header has no \"alg\" string")),
    };
    if signature.is_empty() {
        return Err(JwtError::Malformed("signature is empty"));
    }
    // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` lists an extension it
    // does not understand; Portcullis understands none, and `crit` may not be empty.
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedCritical);
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => {
            let t = t.to_ascii_lowercase();
            let bare = t.strip_prefix("application/").unwrap_or(&t);
            if bare != "jwt" && !bare.ends_with("+jwt") {
                return Err(JwtError::NotJwt);
            }
            Some(t)
        }
        Some(_) => return Err(JwtError::NotJwt),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("\"kid\" is not a string")),
    };
    let signature = b64(signature)?;
    let payload = json_object(&b64(payload)?, "payload is not a JSON object")?;
    Ok(UnverifiedJwt {
        raw,
        alg,
        kid,
        typ,
        payload,
        signature,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seg(v: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn segment_counts_are_told_apart() {
        let h = seg(r#"{"alg":"RS256"}"#);
        let p = seg("{}");
        assert!(parse(&format!("{h}.{p}.c2ln"), 1000).is_ok());
        assert_eq!(
            parse(&format!("{h}.{p}.a.b.c"), 1000).unwrap_err(),
            JwtError::Encrypted
        );
        for bad in ["", "a", "a.b", "a.b.c.d", "a.b.c.d.e.f"] {
            assert!(
                matches!(parse(bad, 1000).unwrap_err(), JwtError::Malformed(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_size_bound_comes_before_any_decoding() {
        let long = "x".repeat(101);
        assert_eq!(parse(&long, 100).unwrap_err(), JwtError::TooLarge(100));
    }

    #[test]
    fn signing_input_is_everything_before_the_last_dot() {
        let h = seg(r#"{"alg":"ES256","kid":"k"}"#);
        let p = seg(r#"{"iss":"i"}"#);
        let raw = format!("{h}.{p}.c2ln");
        let jwt = parse(&raw, 1000).unwrap();
        assert_eq!(jwt.signing_input(), format!("{h}.{p}"));
        assert_eq!(jwt.issuer(), Some("i"));
        assert_eq!(jwt.kid.as_deref(), Some("k"));
        assert_eq!(jwt.signature, b"sig");
    }
}
