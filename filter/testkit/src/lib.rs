//! Keys and tokens generated inside the tests (never pasted from elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::sync::OnceLock;

/// A fixed "now" for tests.
pub const NOW: u64 = 1_700_000_000;

/// A signing key of one algorithm with its kid.
pub enum Signer {
    Rs256(RS256KeyPair),
    Ps256(PS256KeyPair),
    Es256(ES256KeyPair),
    Es384(ES384KeyPair),
    EdDsa(Ed25519KeyPair),
    Hs256(Vec<u8>, String),
}

fn custom(payload: Value) -> JWTClaims<Map<String, Value>> {
    let custom = match payload {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    }
}

/// Base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    /// The public JWK (for HS256, the secret as an `oct` JWK).
    pub fn jwk(&self) -> Value {
        let s = match self {
            Signer::Rs256(k) => k.public_key().to_jwk(),
            Signer::Ps256(k) => k.public_key().to_jwk(),
            Signer::Es256(k) => k.public_key().to_jwk(),
            Signer::Es384(k) => k.public_key().to_jwk(),
            Signer::EdDsa(k) => k.public_key().to_jwk(),
            Signer::Hs256(secret, kid) => {
                return json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64(secret)})
            }
        };
        serde_json::from_str(&s).unwrap()
    }

    /// Signs any JSON payload.
    pub fn sign(&self, payload: Value) -> String {
        let c = custom(payload);
        match self {
            Signer::Rs256(k) => k.sign(c).unwrap(),
            Signer::Ps256(k) => k.sign(c).unwrap(),
            Signer::Es256(k) => k.sign(c).unwrap(),
            Signer::Es384(k) => k.sign(c).unwrap(),
            Signer::EdDsa(k) => k.sign(c).unwrap(),
            Signer::Hs256(secret, kid) => hs256_raw(
                secret,
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                &Value::Object(c.custom),
            ),
        }
    }
}

/// An HS256 token with any header at all.
pub fn hs256_raw(secret: &[u8], header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// The shared RSA key (generation is slow, so once per test binary).
pub fn rsa() -> &'static Signer {
    static K: OnceLock<Signer> = OnceLock::new();
    K.get_or_init(|| Signer::Rs256(RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1")))
}

/// A second RSA key, never published: its signatures must fail.
pub fn rsa_other() -> &'static Signer {
    static K: OnceLock<Signer> = OnceLock::new();
    K.get_or_init(|| Signer::Rs256(RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1")))
}

/// Fresh keys of the other algorithms.
pub fn ps256() -> &'static Signer {
    static K: OnceLock<Signer> = OnceLock::new();
    K.get_or_init(|| Signer::Ps256(PS256KeyPair::generate(2048).unwrap().with_key_id("ps-1")))
}

/// An ES256 key with kid `ec-1`.
pub fn es256() -> Signer {
    Signer::Es256(ES256KeyPair::generate().with_key_id("ec-1"))
}

/// An ES384 key with kid `ec384-1`.
pub fn es384() -> Signer {
    Signer::Es384(ES384KeyPair::generate().with_key_id("ec384-1"))
}

/// An Ed25519 key with kid `ed-1`.
pub fn eddsa() -> Signer {
    Signer::EdDsa(Ed25519KeyPair::generate().with_key_id("ed-1"))
}

/// A 32-byte HMAC secret with kid `hs-1`.
pub fn hs256() -> Signer {
    Signer::Hs256(
        (0u8..32).map(|i| i.wrapping_mul(37)).collect(),
        "hs-1".into(),
    )
}

/// Standard valid claims for issuer `https://idp.test` and audience `api`.
pub fn claims(extra: Value) -> Value {
    let mut base = json!({
        "iss": "https://idp.test",
        "aud": "api",
        "sub": "alice",
        "iat": NOW - 10,
        "exp": NOW + 600,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    base
}
