//! Signature and registered claims: everything that decides whether a token is genuine
//! and current for one provider.
//!
//! The cheap structural and claim checks run first, so garbage and expired tokens are
//! refused before any signature arithmetic. Then the signature: by the host's crypto when
//! it offers it, else in the VM (RS* and PS* by [`crate::rsa_pkcs1`]; the others by
//! jwt-simple, which also re-checks the registered claims with the same options).

use crate::alg::{Alg, AlgError};
use crate::keys::{KeyLookupError, KeySet};
use crate::native_signature::{HostTrust, NativeVerdict, NativeVerifier};
use base64::Engine as _;
use jwt_simple::prelude::{Duration, HashSet, UnixTimeStamp, VerificationOptions};
use serde_json::{Map, Value};

/// What a provider requires of its tokens, apart from the keys.
#[derive(Debug, Clone)]
pub struct Requirements {
    /// Exact `iss`.
    pub issuer: String,
    /// Any one of these must appear in `aud`.
    pub audiences: Vec<String>,
    /// The algorithm allow-list.
    pub algorithms: Vec<Alg>,
    /// Tolerance for `exp`, `nbf` and `iat`, in seconds.
    pub clock_skew: u64,
    /// Refuse tokens without `exp`.
    pub require_expiration: bool,
    /// Refuse tokens valid for longer than this many seconds.
    pub max_lifetime: Option<u64>,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
}

/// Why a token was refused. Messages are safe to return to the client: they never
/// contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("encrypted tokens (JWE) are not accepted")]
    Encrypted,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Algorithm(#[from] AlgError),
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(Alg),
    #[error("unsupported critical header parameter")]
    UnsupportedCritical,
    #[error("token type is not JWT")]
    NotJwt,
    #[error("issuer not accepted")]
    WrongIssuer,
    #[error("audience not accepted")]
    WrongAudience,
    #[error("token has no expiration")]
    MissingExpiration,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds {0} seconds")]
    LifetimeTooLong(u64),
    #[error("{0}")]
    Key(#[from] KeyLookupError),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token rejected: {0}")]
    Rejected(String),
}

impl VerifyError {
    /// A stable short name, for metrics and the decision log.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::TooLarge(_) => "too_large",
            VerifyError::Encrypted | VerifyError::Malformed(_) | VerifyError::NotJwt => "malformed",
            VerifyError::Algorithm(_) | VerifyError::AlgorithmNotAllowed(_) => "bad_algorithm",
            VerifyError::UnsupportedCritical => "unsupported_crit",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::MissingExpiration | VerifyError::Expired => "expired",
            VerifyError::NotYetValid | VerifyError::IssuedInFuture => "not_yet_valid",
            VerifyError::LifetimeTooLong(_) => "lifetime_too_long",
            VerifyError::Key(KeyLookupError::UnknownKid(_)) => "unknown_kid",
            VerifyError::Key(_) => "bad_algorithm",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Rejected(_) => "rejected",
        }
    }
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

/// Which code checked a signature that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureBackend {
    /// The host's native crypto.
    Host,
    /// jwt-simple inside the VM.
    Wasm,
}

impl SignatureBackend {
    /// `host` or `wasm`, for logs and metric names.
    pub fn name(self) -> &'static str {
        match self {
            SignatureBackend::Host => "host",
            SignatureBackend::Wasm => "wasm",
        }
    }
}

/// The host's native crypto, and how far this VM trusts its answers.
pub struct Native<'a> {
    /// The transport to the host's `verify_signature`.
    pub host: &'a dyn NativeVerifier,
    /// Per-algorithm trust, updated by this check.
    pub trust: &'a mut HostTrust,
}

fn b64(segment: &str) -> Result<Vec<u8>, VerifyError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed("a segment is not unpadded base64url"))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, VerifyError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(VerifyError::Malformed(what)),
    }
}

/// Largest header we decode; real headers are well under 1 KiB.
const MAX_HEADER_SEGMENT: usize = 4096;

/// Checks the compact serialisation (RFC 7515 §7.1) and decodes header and payload.
pub fn parse(raw: &str, max_bytes: usize) -> Result<UnverifiedJwt<'_>, VerifyError> {
    if raw.len() > max_bytes {
        return Err(VerifyError::TooLarge(max_bytes));
    }
    let segments: Vec<&str> = raw.split('.').collect();
    match segments.len() {
        3 => {}
        5 => return Err(VerifyError::Encrypted),
        _ => return Err(VerifyError::Malformed("a JWT has exactly three segments")),
    }
    if segments[0].len() > MAX_HEADER_SEGMENT {
        return Err(VerifyError::Malformed("header too large"));
    }
    let header = json_object(&b64(segments[0])?, "header is not a JSON object")?;
    let alg: Alg = match header.get("alg") {
        Some(Value::String(a)) => a.parse()?,
        _ => return Err(VerifyError::Malformed("header has no \"alg\" string")),
    };
    if segments[2].is_empty() {
        return Err(VerifyError::Malformed("signature is empty"));
    }
    // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` lists an extension it
    // does not understand; Portcullis understands none, and `crit` may not be empty.
    if header.contains_key("crit") {
        return Err(VerifyError::UnsupportedCritical);
    }
    if let Some(typ) = header.get("typ") {
        let ok = typ.as_str().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == "jwt" || t.ends_with("+jwt")
        });
        if !ok {
            return Err(VerifyError::NotJwt);
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(VerifyError::Malformed("\"kid\" is not a string")),
    };
    let signature = b64(segments[2])?;
    let payload = json_object(&b64(segments[1])?, "payload is not a JSON object")?;
    Ok(UnverifiedJwt {
        raw,
        alg,
        kid,
        payload,
        signature,
    })
}

fn numeric_date(
    payload: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, VerifyError> {
    match payload.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(VerifyError::Malformed(match name {
                "exp" => "\"exp\" is not a NumericDate",
                "nbf" => "\"nbf\" is not a NumericDate",
                _ => "\"iat\" is not a NumericDate",
            })),
        },
    }
}

/// The registered-claim checks that need no key: algorithm, issuer, audience, time.
pub fn check_claims(
    jwt: &UnverifiedJwt<'_>,
    req: &Requirements,
    now: u64,
) -> Result<(), VerifyError> {
    if !req.algorithms.contains(&jwt.alg) {
        return Err(VerifyError::AlgorithmNotAllowed(jwt.alg));
    }
    if jwt.issuer() != Some(req.issuer.as_str()) {
        return Err(VerifyError::WrongIssuer);
    }
    let aud_ok = match jwt.payload.get("aud") {
        Some(Value::String(a)) => req.audiences.iter().any(|x| x == a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| req.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(VerifyError::WrongAudience);
    }
    let exp = numeric_date(&jwt.payload, "exp")?;
    let nbf = numeric_date(&jwt.payload, "nbf")?;
    let iat = numeric_date(&jwt.payload, "iat")?;
    let skew = req.clock_skew;
    match exp {
        None if req.require_expiration || req.max_lifetime.is_some() => {
            return Err(VerifyError::MissingExpiration)
        }
        Some(exp) if now > exp.saturating_add(skew) => return Err(VerifyError::Expired),
        _ => {}
    }
    if nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err(VerifyError::NotYetValid);
    }
    if iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
        return Err(VerifyError::IssuedInFuture);
    }
    if let (Some(max), Some(exp)) = (req.max_lifetime, exp) {
        let start = iat.or(nbf).unwrap_or(now);
        if exp.saturating_sub(start) > max {
            return Err(VerifyError::LifetimeTooLong(max));
        }
    }
    Ok(())
}

/// Checks the signature with the keys the token's `alg` and `kid` select: natively in the
/// host when `native` is given and the host can check the algorithm, otherwise (or when
/// the host's refusal is not yet trusted) inside the VM ([`crate::keys::KeyEntry::verify`]).
/// Call [`check_claims`] first: a host answer covers the signature only.
pub fn check_signature(
    jwt: &UnverifiedJwt<'_>,
    keys: &KeySet,
    req: &Requirements,
    now: u64,
    mut native: Option<Native<'_>>,
) -> Result<SignatureBackend, VerifyError> {
    let candidates = keys.candidates(jwt.alg, jwt.kid.as_deref())?;
    let mut last = VerifyError::BadSignature;
    for key in candidates {
        let mut host_refused = false;
        if let (Some(n), Some(native_key)) = (native.as_mut(), key.native()) {
            if n.trust.ask(jwt.alg) {
                let input = jwt.signing_input().as_bytes();
                match native_key.verify(n.host, input, &jwt.signature) {
                    NativeVerdict::Valid => {
                        n.trust.confirm(jwt.alg);
                        return Ok(SignatureBackend::Host);
                    }
                    NativeVerdict::Invalid if n.trust.refusal_is_final(jwt.alg) => {
                        last = VerifyError::BadSignature;
                        continue;
                    }
                    NativeVerdict::Invalid => host_refused = true,
                    NativeVerdict::Unavailable => {}
                }
            }
        }
        match key.verify(jwt, options(req, now)) {
            Ok(()) => {
                if let (true, Some(n)) = (host_refused, native.as_mut()) {
                    n.trust.distrust(jwt.alg);
                }
                return Ok(SignatureBackend::Wasm);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn options(req: &Requirements, now: u64) -> VerificationOptions {
    VerificationOptions {
        time_tolerance: Some(Duration::from_secs(req.clock_skew)),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        allowed_issuers: Some(HashSet::from([req.issuer.clone()])),
        allowed_audiences: Some(req.audiences.iter().cloned().collect()),
        max_token_length: Some(req.max_token_bytes),
        ..VerificationOptions::default()
    }
}

/// Parses and fully verifies a token for one provider; on success, the payload.
pub fn verify(
    raw: &str,
    keys: &KeySet,
    req: &Requirements,
    now: u64,
) -> Result<Map<String, Value>, VerifyError> {
    let jwt = parse(raw, req.max_token_bytes)?;
    check_claims(&jwt, req, now)?;
    check_signature(&jwt, keys, req, now, None)?;
    Ok(jwt.payload)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::KeyLookupError;
    use jwt_simple::prelude::ES256KeyPair;
    use portcullis_testkit::{self as testkit, b64, claims, hs256_raw, Signer, NOW};
    use serde_json::json;

    fn requirements(algorithms: &[Alg]) -> Requirements {
        Requirements {
            issuer: "https://idp.test".into(),
            audiences: vec!["api".into(), "api2".into()],
            algorithms: algorithms.to_vec(),
            clock_skew: 60,
            require_expiration: true,
            max_lifetime: None,
            max_token_bytes: 8192,
        }
    }

    fn keys(signers: &[&Signer], algorithms: &[Alg]) -> KeySet {
        let jwks = json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
        let (set, issues) = KeySet::from_jwks(jwks.to_string().as_bytes(), algorithms).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        set
    }

    fn check(
        token: &str,
        set: &KeySet,
        req: &Requirements,
    ) -> Result<Map<String, Value>, VerifyError> {
        verify(token, set, req, NOW)
    }

    #[test]
    fn every_supported_algorithm_verifies() {
        let hs = testkit::hs256();
        let (es, es3, ed) = (testkit::es256(), testkit::es384(), testkit::eddsa());
        let signers: Vec<&Signer> = vec![testkit::rsa(), testkit::ps256(), &es, &es3, &ed, &hs];
        let mut algs = Alg::ASYMMETRIC.to_vec();
        algs.push(Alg::HS256);
        let set = keys(&signers, &algs);
        let req = requirements(&algs);
        for s in signers {
            let t = s.sign(claims(json!({})));
            let payload = check(&t, &set, &req).unwrap_or_else(|e| panic!("{e}: {}", s.jwk()));
            assert_eq!(payload["sub"], "alice");
        }
    }

    #[test]
    fn alg_none_is_refused_whatever_its_case() {
        let set = keys(&[testkit::rsa()], &Alg::ASYMMETRIC);
        for alg in ["none", "None", "NONE"] {
            for sig in ["", "AAAA"] {
                let t = format!(
                    "{}.{}.{sig}",
                    b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
                    b64(claims(json!({})).to_string().as_bytes())
                );
                let e = check(&t, &set, &requirements(&Alg::ASYMMETRIC)).unwrap_err();
                assert!(
                    matches!(
                        e,
                        VerifyError::Algorithm(AlgError::None) | VerifyError::Malformed(_)
                    ),
                    "{alg}/{sig}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn hmac_token_signed_with_the_rsa_public_key_is_refused() {
        // The classic confusion: use the published key's bytes as an HMAC secret.
        let rsa = testkit::rsa();
        let secret = rsa.jwk()["n"].as_str().unwrap().as_bytes().to_vec();
        let t = hs256_raw(
            &secret,
            &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
            &claims(json!({})),
        );
        let set = keys(&[rsa], &Alg::ASYMMETRIC);
        let e = check(&t, &set, &requirements(&Alg::ASYMMETRIC)).unwrap_err();
        assert_eq!(e, VerifyError::AlgorithmNotAllowed(Alg::HS256));
        // Even when HS256 is allowed for the provider, an RSA key never verifies an HMAC.
        let mut algs = Alg::ASYMMETRIC.to_vec();
        algs.push(Alg::HS256);
        let set = keys(&[rsa], &algs);
        let e = check(&t, &set, &requirements(&algs)).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Key(KeyLookupError::AlgorithmMismatch {
                kid: "rsa-1".into(),
                alg: Alg::HS256
            })
        );
    }

    #[test]
    fn key_of_another_family_under_the_same_kid_is_refused() {
        let es = Signer::Es256(ES256KeyPair::generate().with_key_id("rsa-1"));
        let t = es.sign(claims(json!({})));
        let set = keys(&[testkit::rsa()], &Alg::ASYMMETRIC);
        let e = check(&t, &set, &requirements(&Alg::ASYMMETRIC)).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Key(KeyLookupError::AlgorithmMismatch { .. })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_critical_header_is_refused_even_when_signed() {
        let hs = testkit::hs256();
        let Signer::Hs256(secret, _) = &hs else {
            unreachable!()
        };
        let mut algs = Alg::ASYMMETRIC.to_vec();
        algs.push(Alg::HS256);
        let set = keys(&[&hs], &algs);
        for crit in [json!(["exp"]), json!([]), json!("b64")] {
            let t = hs256_raw(
                secret,
                &json!({"alg": "HS256", "kid": "hs-1", "crit": crit, "exp": 1}),
                &claims(json!({})),
            );
            assert_eq!(
                check(&t, &set, &requirements(&algs)).unwrap_err(),
                VerifyError::UnsupportedCritical
            );
        }
        let ok = hs256_raw(
            secret,
            &json!({"alg": "HS256", "kid": "hs-1"}),
            &claims(json!({})),
        );
        assert!(check(&ok, &set, &requirements(&algs)).is_ok());
    }

    #[test]
    fn malformed_serialisations_are_refused_before_any_crypto() {
        let set = keys(&[testkit::rsa()], &Alg::ASYMMETRIC);
        let req = requirements(&Alg::ASYMMETRIC);
        let good = testkit::rsa().sign(claims(json!({})));
        let parts: Vec<&str> = good.split('.').collect();
        let header_b64 = parts[0];
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("abc".into(), "one segment"),
            (format!("{}.{}", parts[0], parts[1]), "two segments"),
            (format!("{good}.x"), "four segments"),
            (
                format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                "padding",
            ),
            (
                format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
                "standard base64",
            ),
            (format!("{}.{}.", parts[0], parts[1]), "empty signature"),
            (
                format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
                "header array",
            ),
            (
                format!("{}.{}.{}", b64(b"{\"alg\":"), parts[1], parts[2]),
                "header truncated",
            ),
            (
                format!("{header_b64}.{}.{}", b64(b"\"str\""), parts[2]),
                "payload string",
            ),
            (
                format!("{}.{}.{}", b64(b"{\"typ\":\"JWT\"}"), parts[1], parts[2]),
                "no alg",
            ),
            (
                format!(
                    "{}.{}.{}",
                    b64(b"{\"alg\":\"RS256\",\"kid\":7}"),
                    parts[1],
                    parts[2]
                ),
                "kid not string",
            ),
        ];
        for (t, what) in cases {
            let e = check(&t, &set, &req).unwrap_err();
            assert!(matches!(e, VerifyError::Malformed(_)), "{what}: {e:?}");
        }
        let jwe = "a.b.c.d.e";
        assert_eq!(check(jwe, &set, &req).unwrap_err(), VerifyError::Encrypted);
    }

    #[test]
    fn header_typ_must_be_a_jwt() {
        let hs = testkit::hs256();
        let Signer::Hs256(secret, _) = &hs else {
            unreachable!()
        };
        let mut algs = Alg::ASYMMETRIC.to_vec();
        algs.push(Alg::HS256);
        let set = keys(&[&hs], &algs);
        let at = hs256_raw(
            secret,
            &json!({"alg": "HS256", "typ": "at+jwt"}),
            &claims(json!({})),
        );
        assert!(check(&at, &set, &requirements(&algs)).is_ok());
        let other = hs256_raw(
            secret,
            &json!({"alg": "HS256", "typ": "secevent"}),
            &claims(json!({})),
        );
        assert_eq!(
            check(&other, &set, &requirements(&algs)).unwrap_err(),
            VerifyError::NotJwt
        );
    }

    #[test]
    fn issuer_and_audience_are_exact() {
        let s = testkit::rsa();
        let set = keys(&[s], &Alg::ASYMMETRIC);
        let req = requirements(&Alg::ASYMMETRIC);
        let cases = [
            (
                json!({"iss": "https://idp.test/"}),
                VerifyError::WrongIssuer,
            ),
            (json!({"iss": "https://IDP.test"}), VerifyError::WrongIssuer),
            (json!({"iss": null}), VerifyError::WrongIssuer),
            (json!({"aud": "other"}), VerifyError::WrongAudience),
            (json!({"aud": ["x", "y"]}), VerifyError::WrongAudience),
            (json!({"aud": null}), VerifyError::WrongAudience),
            (json!({"aud": "ap"}), VerifyError::WrongAudience),
        ];
        for (extra, want) in cases {
            let t = s.sign(claims(extra.clone()));
            assert_eq!(check(&t, &set, &req).unwrap_err(), want, "{extra}");
        }
        let t = s.sign(claims(json!({"aud": ["x", "api2"]})));
        assert!(check(&t, &set, &req).is_ok());
    }

    #[test]
    fn time_claims_honour_the_skew_and_nothing_more() {
        let s = testkit::rsa();
        let set = keys(&[s], &Alg::ASYMMETRIC);
        let req = requirements(&Alg::ASYMMETRIC);
        let ok = |extra: Value| check(&s.sign(claims(extra)), &set, &req);
        assert!(ok(json!({"exp": NOW - 59})).is_ok(), "inside skew");
        assert_eq!(
            ok(json!({"exp": NOW - 61})).unwrap_err(),
            VerifyError::Expired
        );
        // jwt-simple's default would accept 15 minutes past exp: the skew must win.
        assert_eq!(
            ok(json!({"exp": NOW - 300})).unwrap_err(),
            VerifyError::Expired
        );
        assert!(ok(json!({"nbf": NOW + 59})).is_ok());
        assert_eq!(
            ok(json!({"nbf": NOW + 61})).unwrap_err(),
            VerifyError::NotYetValid
        );
        assert_eq!(
            ok(json!({"iat": NOW + 120})).unwrap_err(),
            VerifyError::IssuedInFuture
        );
        assert_eq!(
            ok(json!({"exp": null})).unwrap_err(),
            VerifyError::MissingExpiration
        );
        assert!(matches!(
            ok(json!({"exp": "soon"})).unwrap_err(),
            VerifyError::Malformed(_)
        ));
        let mut lax = req.clone();
        lax.require_expiration = false;
        assert!(check(&s.sign(claims(json!({"exp": null}))), &set, &lax).is_ok());
        let mut short = req.clone();
        short.max_lifetime = Some(300);
        assert_eq!(
            check(&s.sign(claims(json!({}))), &set, &short).unwrap_err(),
            VerifyError::LifetimeTooLong(300)
        );
        assert!(check(&s.sign(claims(json!({"exp": NOW + 200}))), &set, &short).is_ok());
    }

    #[test]
    fn signatures_must_match_the_published_key() {
        let s = testkit::rsa();
        let set = keys(&[s], &Alg::ASYMMETRIC);
        let req = requirements(&Alg::ASYMMETRIC);
        let forged = testkit::rsa_other().sign(claims(json!({})));
        assert_eq!(
            check(&forged, &set, &req).unwrap_err(),
            VerifyError::BadSignature
        );
        // Same header and signature, payload swapped for one that says "admin".
        let good = s.sign(claims(json!({})));
        let p: Vec<&str> = good.split('.').collect();
        let evil = b64(claims(json!({"sub": "admin"})).to_string().as_bytes());
        let tampered = format!("{}.{evil}.{}", p[0], p[2]);
        assert_eq!(
            check(&tampered, &set, &req).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn kid_selects_the_key_and_a_missing_kid_tries_each() {
        let a = Signer::Es256(ES256KeyPair::generate());
        let b = Signer::Es256(ES256KeyPair::generate());
        let set = keys(&[&a, &b], &Alg::ASYMMETRIC);
        let req = requirements(&Alg::ASYMMETRIC);
        assert!(check(&b.sign(claims(json!({}))), &set, &req).is_ok());
        let named = Signer::Es256(ES256KeyPair::generate().with_key_id("nope"));
        assert_eq!(
            check(&named.sign(claims(json!({}))), &set, &req).unwrap_err(),
            VerifyError::Key(KeyLookupError::UnknownKid("nope".into()))
        );
    }

    #[test]
    fn oversized_tokens_are_refused_unread() {
        let set = keys(&[testkit::rsa()], &Alg::ASYMMETRIC);
        let mut req = requirements(&Alg::ASYMMETRIC);
        req.max_token_bytes = 100;
        let t = testkit::rsa().sign(claims(json!({})));
        assert_eq!(
            check(&t, &set, &req).unwrap_err(),
            VerifyError::TooLarge(100)
        );
    }
}
