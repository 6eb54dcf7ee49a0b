//! Target `jwt`: the compact-JWS parser, [`portcullis::jwt::parse`].
//!
//! Input: one byte choosing the size bound, then the token (lossy UTF-8).
//! Properties: no panic; a parsed token is exactly three segments within the bound, its
//! parts are the base64url-decoded segments (header and payload JSON objects, `alg` and
//! `kid` from the header), and the signing input is everything before the last dot; an
//! error message never contains the token.

use super::input::Input;
use base64::Engine as _;
use portcullis::jwt;
use serde_json::Value;

fn decode(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
}

fn object(segment: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(&decode(segment)?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The bound a first byte chooses: the default, the schema's extremes, or any.
pub fn max_bytes(selector: u8) -> usize {
    match selector % 4 {
        0 => 8192,
        1 => 64,
        2 => 65_536,
        _ => usize::from(selector) * 37,
    }
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let max = max_bytes(input.byte());
    let raw = String::from_utf8_lossy(input.rest());
    let parsed = jwt::parse(&raw, max);
    let jwt = match parsed {
        Ok(jwt) => jwt,
        Err(e) => {
            let message = e.to_string();
            // Only a token-like input counts: a fixed message may well contain short
            // texts, or be sent as the token itself (the fuzzer tried that).
            assert!(
                raw.len() < 8 || !raw.contains('.') || !message.contains(&*raw),
                "the error message echoes the token: {message:?}"
            );
            return;
        }
    };
    assert!(raw.len() <= max, "{} bytes accepted under {max}", raw.len());
    assert_eq!(jwt.raw, raw);
    let segments: Vec<&str> = raw.split('.').collect();
    let [header, payload, signature] = segments[..] else {
        panic!("accepted with {} segments: {raw:?}", segments.len());
    };
    assert_eq!(jwt.signing_input(), format!("{header}.{payload}"));
    assert!(!signature.is_empty(), "empty signature accepted");
    assert_eq!(
        Some(&jwt.signature),
        decode(signature).as_ref(),
        "signature"
    );
    let Some(h) = object(header) else {
        panic!("header is not a base64url JSON object: {raw:?}");
    };
    assert_eq!(
        h.get("alg").and_then(Value::as_str),
        Some(jwt.alg.name()),
        "alg"
    );
    assert!(!jwt.alg.name().eq_ignore_ascii_case("none"));
    assert!(!h.contains_key("crit"), "crit accepted");
    assert_eq!(
        h.get("kid").and_then(Value::as_str),
        jwt.kid.as_deref(),
        "kid"
    );
    if let Some(typ) = h.get("typ") {
        let typ = typ.as_str().map(str::to_ascii_lowercase);
        assert!(
            typ.as_deref()
                .is_some_and(|t| t == "jwt" || t.ends_with("+jwt")),
            "typ {typ:?} accepted"
        );
    }
    assert_eq!(object(payload).as_ref(), Some(&jwt.payload), "payload");
    assert_eq!(
        jwt.issuer(),
        jwt.payload.get("iss").and_then(Value::as_str),
        "issuer"
    );
}
