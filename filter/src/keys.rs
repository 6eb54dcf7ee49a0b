//! `KeySet`: a JWKS document turned into verification keys, indexed by `kid` and algorithm.
//!
//! Each key is bound to exactly one algorithm when it is loaded. A JWK without `alg` becomes
//! one entry per algorithm its key type allows (and the provider allows), so a token can
//! only ever be checked with a key of the family its `alg` names: an HMAC token is never
//! checked against an RSA public key (the classic algorithm-confusion attack).

use crate::alg::Alg;
use crate::jwt::UnverifiedJwt;
use crate::native_signature::NativeKey;
use crate::rsa_pkcs1::{RsaHash, RsaPublicKey};
use base64::Engine as _;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::{Map, Value};

/// A public key (or, for HS*, a shared secret) for one algorithm.
#[derive(Clone)]
enum VerifyingKey {
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
    /// RS* and PS*: checked by [`crate::rsa_pkcs1`]; jwt-simple only validates the key
    /// when it is loaded.
    Rsa(RsaCheck),
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
}

/// One usable key of a key set.
#[derive(Clone)]
pub struct KeyEntry {
    /// The JWK's `kid`, if it had one.
    pub kid: Option<String>,
    /// The one algorithm this entry verifies.
    pub alg: Alg,
    key: VerifyingKey,
    /// The key as the host's native crypto takes it, when the host can check `alg`.
    native: Option<NativeKey>,
    /// The public JWK members and algorithm: equal fingerprints mean the same key.
    fingerprint: String,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEntry({:?}, {})", self.kid, self.alg)
    }
}

impl KeyEntry {
    /// The key in the form the host's native crypto imports, if the host can check `alg`.
    pub fn native(&self) -> Option<&NativeKey> {
        self.native.as_ref()
    }

    /// Checks the token's signature inside the VM: RS* and PS* with [`crate::rsa_pkcs1`]
    /// (several times faster in wasm than jwt-simple's 64-bit bignums), the others with
    /// jwt-simple, which also re-checks the registered claims with `options` as a second
    /// line of defence.
    pub fn verify(
        &self,
        jwt: &UnverifiedJwt<'_>,
        options: VerificationOptions,
    ) -> Result<(), SignatureError> {
        let (token, o) = (jwt.raw, Some(options));
        let checked = match &self.key {
            VerifyingKey::Rsa(check) => {
                return match check.verify(jwt.signing_input().as_bytes(), &jwt.signature) {
                    true => Ok(()),
                    false => Err(SignatureError::BadSignature),
                }
            }
            VerifyingKey::Hs256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            VerifyingKey::Hs384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            VerifyingKey::Hs512(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            VerifyingKey::Es256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            VerifyingKey::Es384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            VerifyingKey::EdDsa(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
        };
        checked.map_err(|e| match e.downcast_ref::<JWTError>() {
            Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => {
                SignatureError::BadSignature
            }
            _ => SignatureError::Rejected(e.to_string()),
        })
    }
}

/// Why a signature check inside the VM failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature is not the key's over the signing input.
    #[error("signature does not verify")]
    BadSignature,
    /// jwt-simple refused the token for a reason other than its signature.
    #[error("token rejected: {0}")]
    Rejected(String),
}

/// Why a key set as a whole could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The document has no `keys` array.
    #[error("must be a JSON object with a \"keys\" array")]
    NoKeysArray,
    /// Every key was skipped; each one says why.
    #[error("no usable key{}", describe_issues(.0))]
    NoUsableKeys(Vec<KeyIssue>),
}

fn describe_issues(issues: &[KeyIssue]) -> String {
    if issues.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    format!(": {}", parts.join("; "))
}

/// A key of the set that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIssue {
    /// Position in the `keys` array.
    pub index: usize,
    /// The key's `kid`, if readable.
    pub kid: Option<String>,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for KeyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "keys[{}] (kid \"{kid}\"): {}", self.index, self.problem),
            None => write!(f, "keys[{}]: {}", self.index, self.problem),
        }
    }
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key has the token's `kid` (cut to 64 characters).
    #[error("no key with kid \"{0}\"")]
    UnknownKid(String),
    /// The key with that `kid` is for another algorithm: algorithm confusion refused.
    #[error("key \"{kid}\" is not a {alg} key")]
    AlgorithmMismatch {
        /// The token's `kid`.
        kid: String,
        /// The token's `alg`.
        alg: Alg,
    },
    /// The token has no `kid` and no key is for its `alg`.
    #[error("no {0} key")]
    NoKeyForAlgorithm(Alg),
}

/// The verification keys of one provider.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
}

/// JWK members that carry key material or bind its use; everything else (x5c chains,
/// vendor extensions) is dropped before import so it cannot push a key over jwt-simple's
/// document size limit.
const JWK_MEMBERS: [&str; 10] = [
    "kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "key_ops",
];

/// JWK members that only a private key has: a JWKS that publishes one is broken.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

impl KeySet {
    /// Parses a JWKS document, keeping the keys usable with `allowed` algorithms.
    /// Returns the set and the keys that were skipped; fails only when nothing is usable.
    pub fn from_jwks(
        document: &[u8],
        allowed: &[Alg],
    ) -> Result<(KeySet, Vec<KeyIssue>), JwksError> {
        let doc: Value =
            serde_json::from_slice(document).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut entries = Vec::new();
        let mut issues = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
            match entries_for_jwk(jwk, allowed) {
                Ok(mut e) => entries.append(&mut e),
                Err(problem) => issues.push(KeyIssue {
                    index,
                    kid,
                    problem,
                }),
            }
        }
        if entries.is_empty() {
            return Err(JwksError::NoUsableKeys(issues));
        }
        Ok((KeySet { entries }, issues))
    }

    /// Number of (key, algorithm) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when every key of `self` is also in `newer`: tokens verified with `self`
    /// stay verified under `newer`.
    pub fn is_kept_by(&self, newer: &KeySet) -> bool {
        self.entries
            .iter()
            .all(|e| newer.entries.iter().any(|n| n.fingerprint == e.fingerprint))
    }

    /// The keys a token with this `alg` and `kid` may be checked against.
    pub fn candidates(
        &self,
        alg: Alg,
        kid: Option<&str>,
    ) -> Result<Vec<&KeyEntry>, KeyLookupError> {
        match kid {
            Some(kid) => {
                let with_kid: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid))
                    .collect();
                if with_kid.is_empty() {
                    return Err(KeyLookupError::UnknownKid(kid.chars().take(64).collect()));
                }
                let fitting: Vec<&KeyEntry> =
                    with_kid.into_iter().filter(|e| e.alg == alg).collect();
                if fitting.is_empty() {
                    return Err(KeyLookupError::AlgorithmMismatch {
                        kid: kid.to_string(),
                        alg,
                    });
                }
                Ok(fitting)
            }
            None => {
                let fitting: Vec<&KeyEntry> =
                    self.entries.iter().filter(|e| e.alg == alg).collect();
                if fitting.is_empty() {
                    return Err(KeyLookupError::NoKeyForAlgorithm(alg));
                }
                Ok(fitting)
            }
        }
    }
}

fn entries_for_jwk(jwk: &Value, allowed: &[Alg]) -> Result<Vec<KeyEntry>, String> {
    let obj = jwk.as_object().ok_or("not a JSON object")?;
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("missing \"kty\"")?;
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(format!("\"use\" is {u}, not \"sig\""));
        }
    }
    if kty != "oct" {
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(format!("publishes private key member \"{m}\""));
        }
    }
    let declared = match obj.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.parse::<Alg>().map_err(|e| e.to_string())?),
        Some(other) => return Err(format!("\"alg\" is {other}, not a string")),
    };
    let algs: Vec<Alg> = match declared {
        Some(a) if !allowed.contains(&a) => {
            return Err(format!("algorithm {a} is not in the provider's allow-list"))
        }
        Some(a) => vec![a],
        None => allowed
            .iter()
            .copied()
            .filter(|a| fits(*a, kty, obj))
            .collect(),
    };
    if algs.is_empty() {
        return Err(format!(
            "no allowed algorithm fits a \"{kty}\" key{}",
            if kty == "oct" {
                " (HMAC algorithms must be listed explicitly)"
            } else {
                ""
            }
        ));
    }
    let kid = obj.get("kid").and_then(Value::as_str).map(str::to_string);
    let public_doc = public_jwk(obj);
    let mut out = Vec::new();
    for alg in algs {
        if alg.key_type() != kty {
            return Err(format!("a \"{kty}\" key cannot verify {alg}"));
        }
        let (key, der) =
            load(alg, obj, &public_doc).map_err(|e| format!("{alg} key rejected: {e}"))?;
        let native = der.and_then(|der| NativeKey::for_alg(alg, der));
        out.push(KeyEntry {
            kid: kid.clone(),
            alg,
            key,
            native,
            fingerprint: format!("{alg}:{public_doc}"),
        });
    }
    Ok(out)
}

/// How an RS* or PS* key checks signatures.
#[derive(Clone)]
struct RsaCheck {
    /// RSASSA-PSS (PS*) rather than PKCS#1 v1.5 (RS*).
    pss: bool,
    hash: RsaHash,
    key: RsaPublicKey,
}

impl RsaCheck {
    /// The key of a JWK whose `n` and `e` jwt-simple has already validated.
    fn new(pss: bool, hash: RsaHash, obj: &Map<String, Value>) -> Result<RsaCheck, String> {
        let member = |name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .and_then(|v| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v)
                        .ok()
                })
                .ok_or_else(|| format!("\"{name}\" is not unpadded base64url"))
        };
        let key = RsaPublicKey::new(&member("n")?, &member("e")?).map_err(|e| e.to_string())?;
        Ok(RsaCheck { pss, hash, key })
    }

    /// Whether `signature` signs `input`.
    fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        let digest = self.hash.digest(&[input]);
        if self.pss {
            self.key.verify_pss_digest(self.hash, &digest, signature)
        } else {
            self.key.verify_digest(self.hash, &digest, signature)
        }
    }
}

fn fits(alg: Alg, kty: &str, obj: &Map<String, Value>) -> bool {
    if alg.key_type() != kty {
        return false;
    }
    let crv = obj.get("crv").and_then(Value::as_str);
    match alg {
        Alg::ES256 => crv == Some("P-256"),
        Alg::ES384 => crv == Some("P-384"),
        Alg::EdDSA => crv == Some("Ed25519"),
        _ => true,
    }
}

fn public_jwk(obj: &Map<String, Value>) -> String {
    let kept: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| JWK_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept).to_string()
}

/// The key for `alg`, and its SubjectPublicKeyInfo when the host's crypto can check `alg`.
/// jwt-simple validates every public key first (its messages name weak keys).
fn load(
    alg: Alg,
    obj: &Map<String, Value>,
    doc: &str,
) -> Result<(VerifyingKey, Option<Vec<u8>>), String> {
    let e = |err: jwt_simple::Error| err.to_string();
    let rsa = |pss, hash| RsaCheck::new(pss, hash, obj).map(VerifyingKey::Rsa);
    Ok(match alg {
        Alg::HS256 => (
            VerifyingKey::Hs256(HS256Key::from_bytes(&secret(obj, 32)?)),
            None,
        ),
        Alg::HS384 => (
            VerifyingKey::Hs384(HS384Key::from_bytes(&secret(obj, 48)?)),
            None,
        ),
        Alg::HS512 => (
            VerifyingKey::Hs512(HS512Key::from_bytes(&secret(obj, 64)?)),
            None,
        ),
        Alg::RS256 => {
            let der = RS256PublicKey::from_jwk(doc).map_err(e)?.to_der().ok();
            (rsa(false, RsaHash::Sha256)?, der)
        }
        Alg::RS384 => {
            let der = RS384PublicKey::from_jwk(doc).map_err(e)?.to_der().ok();
            (rsa(false, RsaHash::Sha384)?, der)
        }
        Alg::RS512 => {
            let der = RS512PublicKey::from_jwk(doc).map_err(e)?.to_der().ok();
            (rsa(false, RsaHash::Sha512)?, der)
        }
        Alg::PS256 => {
            PS256PublicKey::from_jwk(doc).map_err(e)?;
            (rsa(true, RsaHash::Sha256)?, None)
        }
        Alg::PS384 => {
            PS384PublicKey::from_jwk(doc).map_err(e)?;
            (rsa(true, RsaHash::Sha384)?, None)
        }
        Alg::PS512 => {
            PS512PublicKey::from_jwk(doc).map_err(e)?;
            (rsa(true, RsaHash::Sha512)?, None)
        }
        Alg::ES256 => {
            let k = ES256PublicKey::from_jwk(doc).map_err(e)?;
            let der = k.to_der().ok();
            (VerifyingKey::Es256(k), der)
        }
        Alg::ES384 => {
            let k = ES384PublicKey::from_jwk(doc).map_err(e)?;
            let der = k.to_der().ok();
            (VerifyingKey::Es384(k), der)
        }
        Alg::EdDSA => (
            VerifyingKey::EdDsa(Ed25519PublicKey::from_jwk(doc).map_err(e)?),
            None,
        ),
    })
}

/// An HMAC secret from an `oct` JWK; RFC 7518 §3.2 wants at least the hash's size.
fn secret(obj: &Map<String, Value>, min_len: usize) -> Result<Vec<u8>, String> {
    let k = obj
        .get("k")
        .and_then(Value::as_str)
        .ok_or("missing \"k\"")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|_| "\"k\" is not unpadded base64url".to_string())?;
    if bytes.len() < min_len {
        return Err(format!(
            "secret is {} bytes; at least {min_len} are required",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use portcullis_testkit as testkit;
    use serde_json::json;

    fn parse(doc: Value) -> Result<(KeySet, Vec<KeyIssue>), JwksError> {
        KeySet::from_jwks(doc.to_string().as_bytes(), &Alg::ASYMMETRIC)
    }

    #[test]
    fn rsa_key_without_alg_serves_each_rsa_algorithm() {
        let mut jwk = testkit::rsa().jwk();
        jwk.as_object_mut().unwrap().remove("alg");
        let (set, issues) = parse(json!({"keys": [jwk]})).unwrap();
        assert!(issues.is_empty());
        assert_eq!(set.len(), 6, "RS256/384/512 and PS256/384/512");
        assert!(set.candidates(Alg::PS384, Some("rsa-1")).is_ok());
        assert!(set.candidates(Alg::ES256, Some("rsa-1")).is_err());
    }

    #[test]
    fn rsa_key_under_2048_bits_is_skipped_with_a_reason() {
        use rsa::traits::PublicKeyParts;
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let small = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let jwk = json!({"kty": "RSA", "kid": "small", "alg": "RS256",
            "n": b64(small.n().to_bytes_be()), "e": b64(small.e().to_bytes_be())});
        let (set, issues) = parse(json!({"keys": [jwk, testkit::rsa().jwk()]})).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].kid.as_deref(), Some("small"));
        assert!(issues[0].problem.contains("minimum size"), "{}", issues[0]);
    }

    #[test]
    fn declared_alg_binds_the_key() {
        let (set, _) = parse(json!({"keys": [testkit::rsa().jwk()]})).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.candidates(Alg::RS384, Some("rsa-1")).unwrap_err(),
            KeyLookupError::AlgorithmMismatch {
                kid: "rsa-1".into(),
                alg: Alg::RS384
            }
        );
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let good = testkit::es256().jwk();
        let mut enc = testkit::es256().jwk();
        enc["use"] = json!("enc");
        let mut private = testkit::es256().jwk();
        private["d"] = json!("AAAA");
        let mut huge_x5c = testkit::rsa().jwk();
        huge_x5c["x5c"] = json!(["A".repeat(20_000)]);
        let (set, issues) = parse(json!({"keys": [
            good, enc, private, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "EC", "crv": "P-521"},
            "not an object", {"kid": "no-kty"}, {"kty": "RSA", "alg": "none"}, huge_x5c
        ]}))
        .unwrap();
        assert_eq!(
            set.len(),
            2,
            "the good EC key and the RSA key with a long x5c"
        );
        let indexes: Vec<usize> = issues.iter().map(|i| i.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(issues[0].problem.contains("not \"sig\""));
        assert!(issues[1].problem.contains("private key member"));
        assert!(issues[6].problem.contains("never accepted"));
    }

    #[test]
    fn broken_documents_are_errors_not_panics() {
        assert!(matches!(
            KeySet::from_jwks(b"<html>", &Alg::ASYMMETRIC),
            Err(JwksError::NotJson(_))
        ));
        assert_eq!(parse(json!([])).unwrap_err(), JwksError::NoKeysArray);
        assert_eq!(
            parse(json!({"keys": {}})).unwrap_err(),
            JwksError::NoKeysArray
        );
        assert_eq!(
            parse(json!({"keys": []})).unwrap_err(),
            JwksError::NoUsableKeys(vec![])
        );
        let e = parse(json!({"keys": [{"kty": "RSA", "kid": "k", "n": "", "e": ""}]})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no usable key: keys[0] (kid \"k\"): RS256 key rejected"),
            "{e}"
        );
    }
}
