//! Signature and registered claims: everything that decides whether a token is genuine
//! and current for one provider.
//!
//! The cheap structural and claim checks run first, so garbage and expired tokens are
//! refused before any signature arithmetic. Then the signature: by the host's crypto when
//! it offers it, else in the VM (RS* and PS* by [`crate::rsa_pkcs1`]; the others by
//! jwt-simple, which also re-checks the registered claims with the same options).

use crate::alg::{Alg, AlgError};
use crate::jwt::{JwtError, UnverifiedJwt};
use crate::keys::{KeyLookupError, KeySet, SignatureError};
use crate::native_signature::{HostTrust, NativeVerdict, NativeVerifier};
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
    /// Only RFC 9068 access tokens: `typ` `at+jwt` and the RFC's claims.
    pub require_access_token: bool,
}

/// Why a token was refused. Messages are safe to return to the client: they never
/// contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than the provider's `max_token_bytes`.
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    /// A JWE, which Portcullis does not decrypt.
    #[error("encrypted tokens (JWE) are not accepted")]
    Encrypted,
    /// Not a compact JWS of JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none` or unknown.
    #[error("{0}")]
    Algorithm(#[from] AlgError),
    /// `alg` is not on the provider's allow-list.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(Alg),
    /// The header has `crit`.
    #[error("unsupported critical header parameter")]
    UnsupportedCritical,
    /// `typ` is neither `JWT` nor `…+jwt`.
    #[error("token type is not JWT")]
    NotJwt,
    /// The provider requires RFC 9068 access tokens and this is not one.
    #[error("not an access token: {0}")]
    NotAccessToken(&'static str),
    /// `iss` is not the provider's issuer.
    #[error("issuer not accepted")]
    WrongIssuer,
    /// No `aud` value is one of the provider's audiences.
    #[error("audience not accepted")]
    WrongAudience,
    /// No `exp`, and the provider requires one.
    #[error("token has no expiration")]
    MissingExpiration,
    /// `exp` has passed (beyond the clock skew).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp` is further from `iat`/`nbf` than the provider allows.
    #[error("token lifetime exceeds {0} seconds")]
    LifetimeTooLong(u64),
    /// No key fits the token's `kid` and `alg`.
    #[error("{0}")]
    Key(#[from] KeyLookupError),
    /// The signature is wrong for every candidate key.
    #[error("signature does not verify")]
    BadSignature,
    /// The in-VM verifier refused the token for another reason.
    #[error("token rejected: {0}")]
    Rejected(String),
}

impl From<JwtError> for VerifyError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::TooLarge(n) => VerifyError::TooLarge(n),
            JwtError::Encrypted => VerifyError::Encrypted,
            JwtError::Malformed(what) => VerifyError::Malformed(what),
            JwtError::Algorithm(a) => VerifyError::Algorithm(a),
            JwtError::UnsupportedCritical => VerifyError::UnsupportedCritical,
            JwtError::NotJwt => VerifyError::NotJwt,
        }
    }
}

impl From<SignatureError> for VerifyError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::BadSignature => VerifyError::BadSignature,
            SignatureError::Rejected(why) => VerifyError::Rejected(why),
        }
    }
}

/// Which code checked a signature that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureBackend {
    /// The host's native crypto.
    Host,
    /// Inside the VM: RS*/PS* by [`crate::rsa_pkcs1`], the others by jwt-simple.
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
    if req.require_access_token {
        check_access_token(jwt, exp.is_some(), iat.is_some())?;
    }
    Ok(())
}

/// RFC 9068 §2.1–2.2, §4: the header says `at+jwt` (an ID token says `JWT` or nothing) and
/// the payload has every claim the profile requires; `iss` and `aud` were checked already.
fn check_access_token(
    jwt: &UnverifiedJwt<'_>,
    has_exp: bool,
    has_iat: bool,
) -> Result<(), VerifyError> {
    // RFC 7515 §4.1.9 lets "application/" be left out, and media types are case-insensitive.
    let typ_ok = jwt.typ.as_deref().is_some_and(|t| {
        let t = t.strip_prefix("application/").unwrap_or(t);
        t == "at+jwt"
    });
    if !typ_ok {
        return Err(VerifyError::NotAccessToken("typ is not at+jwt"));
    }
    if !has_exp {
        return Err(VerifyError::NotAccessToken("no exp"));
    }
    if !has_iat {
        return Err(VerifyError::NotAccessToken("no iat"));
    }
    let string = |name| jwt.payload.get(name).and_then(Value::as_str).is_some();
    if !string("sub") {
        return Err(VerifyError::NotAccessToken("no sub"));
    }
    if !string("client_id") {
        return Err(VerifyError::NotAccessToken("no client_id"));
    }
    if !string("jti") {
        return Err(VerifyError::NotAccessToken("no jti"));
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
        match key
            .verify(jwt, options(req, now))
            .map_err(VerifyError::from)
        {
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
    let jwt = crate::jwt::parse(raw, req.max_token_bytes)?;
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
            require_access_token: false,
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
    fn access_tokens_are_told_from_id_tokens_when_the_provider_asks() {
        let hs = testkit::hs256();
        let Signer::Hs256(secret, _) = &hs else {
            unreachable!()
        };
        let mut algs = Alg::ASYMMETRIC.to_vec();
        algs.push(Alg::HS256);
        let set = keys(&[&hs], &algs);
        let mut req = requirements(&algs);
        req.require_access_token = true;
        let at_claims = || claims(json!({"client_id": "app", "jti": "j-1"}));
        let sign = |typ: Option<&str>, payload: &Value| {
            let header = match typ {
                Some(t) => json!({"alg": "HS256", "typ": t}),
                None => json!({"alg": "HS256"}),
            };
            hs256_raw(secret, &header, payload)
        };
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
            assert!(
                check(&sign(Some(typ), &at_claims()), &set, &req).is_ok(),
                "{typ}"
            );
        }
        // An ID token of the same issuer and audience: typ JWT, or none at all.
        for typ in [Some("JWT"), None, Some("application/jwt")] {
            assert_eq!(
                check(&sign(typ, &at_claims()), &set, &req).unwrap_err(),
                VerifyError::NotAccessToken("typ is not at+jwt"),
                "{typ:?}"
            );
        }
        for (missing, why) in [
            ("client_id", "no client_id"),
            ("jti", "no jti"),
            ("sub", "no sub"),
            ("iat", "no iat"),
        ] {
            let mut payload = at_claims();
            payload.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                check(&sign(Some("at+jwt"), &payload), &set, &req).unwrap_err(),
                VerifyError::NotAccessToken(why)
            );
        }
        // Off (the default), an ID token is an acceptable bearer token.
        req.require_access_token = false;
        assert!(check(&sign(Some("JWT"), &at_claims()), &set, &req).is_ok());
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
