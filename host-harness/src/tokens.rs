//! Test tokens for auth plugins: signing keys generated per run, a JWKS to publish through a
//! scripted upstream, and JWTs minted from a JSON description at the virtual time they are sent.
//!
//! Nothing here knows any plugin's configuration: a test says which claims and header a token
//! has, and answers the plugin's key fetches with [`TestKeys::jwks`].

use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The description is not the expected shape.
    #[error("token: {0}")]
    Shape(String),
    /// The header asks for something the minting keys cannot do.
    #[error("token.header.{field}: {message}")]
    Header {
        /// The header field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Key generation or signing failed.
    #[error("token: signing failed: {0}")]
    Signing(String),
}

/// The key id of the generated RSA key (RS256).
pub const RS256_KID: &str = "harness-rs256";
/// The key id of the generated P-256 key (ES256).
pub const ES256_KID: &str = "harness-es256";

/// Which key signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChoice {
    /// A key whose public half is in [`TestKeys::jwks`].
    Published,
    /// A key of the same algorithm and `kid` that is never published: its signatures must fail.
    Unpublished,
}

/// Where the minted token goes in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A header, with a prefix (`authorization: Bearer …` by default).
    Header {
        /// Header name.
        name: String,
        /// Text before the token.
        prefix: String,
    },
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

impl Default for Placement {
    fn default() -> Self {
        Placement::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }
}

/// A token to mint: `{"claims": {...}, "header": {"alg": "RS256", "kid": "...", "typ": "..."},
/// "key": "published"|"unpublished", "send": {"header": "x", "prefix": ""}|{"query": "q"}|{"cookie": "c"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSpec {
    /// The payload. `exp`, `nbf`, `iat` and `auth_time` given as `"+600"` or `"-60"` are seconds
    /// from the virtual clock when the token is minted.
    pub claims: Map<String, Value>,
    /// `RS256` (default), `ES256` or `none` (an unsigned token).
    pub alg: String,
    /// Overrides the key's `kid`; `Some(None)` leaves `kid` out of the header.
    pub kid: Option<Option<String>>,
    /// The `typ` header (default `JWT`).
    pub typ: Option<String>,
    /// The `cty` header.
    pub cty: Option<String>,
    /// Which key signs.
    pub key: KeyChoice,
    /// Where it goes.
    pub placement: Placement,
}

/// Claims that hold a NumericDate, where a relative `"+N"` / `"-N"` is resolved.
const TIME_CLAIMS: [&str; 4] = ["exp", "nbf", "iat", "auth_time"];

impl TokenSpec {
    /// Reads a description (the `"token"` member of a request line).
    pub fn from_json(v: &Value) -> Result<TokenSpec, TokenError> {
        let obj = v
            .as_object()
            .ok_or_else(|| TokenError::Shape("expected an object".into()))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "claims" | "header" | "key" | "send"))
        {
            return Err(TokenError::Shape(format!(
                "unknown member `{k}` (use claims, header, key, send)"
            )));
        }
        let claims = match obj.get("claims") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(TokenError::Shape("`claims` must be an object".into())),
        };
        let mut spec = TokenSpec {
            claims,
            alg: "RS256".into(),
            kid: None,
            typ: None,
            cty: None,
            key: KeyChoice::Published,
            placement: Placement::default(),
        };
        match obj.get("header") {
            None => {}
            Some(Value::Object(h)) => {
                for (field, value) in h {
                    let header_err = |message: &str| TokenError::Header {
                        field: field.clone(),
                        message: message.into(),
                    };
                    match (field.as_str(), value) {
                        ("alg", Value::String(a)) => match a.as_str() {
                            "RS256" | "ES256" | "none" => spec.alg = a.clone(),
                            _ => return Err(header_err("the harness signs RS256, ES256 or none")),
                        },
                        ("kid", Value::String(k)) => spec.kid = Some(Some(k.clone())),
                        ("kid", Value::Null) => spec.kid = Some(None),
                        ("typ", Value::String(t)) => spec.typ = Some(t.clone()),
                        ("cty", Value::String(t)) => spec.cty = Some(t.clone()),
                        ("alg" | "typ" | "cty", _) => return Err(header_err("must be a string")),
                        ("kid", _) => return Err(header_err("must be a string or null")),
                        _ => return Err(header_err("not supported (alg, kid, typ and cty are)")),
                    }
                }
            }
            Some(_) => return Err(TokenError::Shape("`header` must be an object".into())),
        }
        spec.key = match obj.get("key").map(|k| k.as_str()) {
            None | Some(Some("published")) => KeyChoice::Published,
            Some(Some("unpublished")) => KeyChoice::Unpublished,
            _ => {
                return Err(TokenError::Shape(
                    "`key` is \"published\" or \"unpublished\"".into(),
                ))
            }
        };
        if let Some(send) = obj.get("send") {
            spec.placement = placement_of(send)?;
        }
        Ok(spec)
    }

    /// The claims with relative times resolved against `now` (Unix seconds).
    pub fn resolved_claims(&self, now: u64) -> Result<Map<String, Value>, TokenError> {
        let mut claims = self.claims.clone();
        for name in TIME_CLAIMS {
            let Some(Value::String(s)) = claims.get(name) else {
                continue;
            };
            let (sign, digits) = match s.as_bytes().first() {
                Some(b'+') => (1i64, &s[1..]),
                Some(b'-') => (-1i64, &s[1..]),
                _ => continue,
            };
            let offset: i64 = digits.parse().map_err(|_| {
                TokenError::Shape(format!(
                    "claims.{name}: {s:?} is not a relative time like \"+600\""
                ))
            })?;
            let at = (now as i64).saturating_add(sign * offset).max(0);
            claims.insert(name.to_string(), json!(at));
        }
        Ok(claims)
    }
}

impl Placement {
    /// Puts `token` into `request` (a header value is replaced; a query parameter or cookie is
    /// added to those already there).
    pub fn apply(&self, request: &mut crate::Request, token: &str) {
        match self {
            Placement::Header { name, prefix } => {
                request.headers.set(name, &format!("{prefix}{token}"));
            }
            Placement::Query(name) => {
                let sep = if request.path.contains('?') { '&' } else { '?' };
                request.path = format!("{}{sep}{name}={token}", request.path);
            }
            Placement::Cookie(name) => {
                let cookie = match request.headers.get("cookie") {
                    Some(c) if !c.is_empty() => format!("{c}; {name}={token}"),
                    _ => format!("{name}={token}"),
                };
                request.headers.set("cookie", &cookie);
            }
        }
    }
}

fn placement_of(v: &Value) -> Result<Placement, TokenError> {
    let bad = || {
        TokenError::Shape(
            "`send` is {\"header\": NAME, \"prefix\": TEXT}, {\"query\": NAME} or {\"cookie\": NAME}"
                .into(),
        )
    };
    let obj = v.as_object().ok_or_else(bad)?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    match (s("header"), s("query"), s("cookie"), obj.len()) {
        (Some(name), None, None, _) if !name.is_empty() => {
            let prefix = s("prefix").unwrap_or_default();
            if obj.len() > 1 + usize::from(obj.contains_key("prefix")) {
                return Err(bad());
            }
            Ok(Placement::Header { name, prefix })
        }
        (None, Some(q), None, 1) if !q.is_empty() => Ok(Placement::Query(q)),
        (None, None, Some(c), 1) if !c.is_empty() => Ok(Placement::Cookie(c)),
        _ => Err(bad()),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_error(e: impl std::fmt::Display) -> TokenError {
    TokenError::Signing(e.to_string())
}

/// Signing keys for one run, generated when first needed (RSA generation takes a moment).
#[derive(Default)]
pub struct TestKeys {
    rsa: OnceLock<Result<RS256KeyPair, String>>,
    rsa_unpublished: OnceLock<Result<RS256KeyPair, String>>,
    ec: OnceLock<ES256KeyPair>,
    ec_unpublished: OnceLock<ES256KeyPair>,
}

impl std::fmt::Debug for TestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestKeys { .. }")
    }
}

impl TestKeys {
    /// Fresh keys (generated lazily, never stored anywhere).
    pub fn new() -> TestKeys {
        TestKeys::default()
    }

    fn rsa(&self, choice: KeyChoice) -> Result<&RS256KeyPair, TokenError> {
        let cell = match choice {
            KeyChoice::Published => &self.rsa,
            KeyChoice::Unpublished => &self.rsa_unpublished,
        };
        cell.get_or_init(|| {
            RS256KeyPair::generate(2048)
                .map(|k| k.with_key_id(RS256_KID))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TokenError::Signing(e.clone()))
    }

    fn ec(&self, choice: KeyChoice) -> &ES256KeyPair {
        let cell = match choice {
            KeyChoice::Published => &self.ec,
            KeyChoice::Unpublished => &self.ec_unpublished,
        };
        cell.get_or_init(|| ES256KeyPair::generate().with_key_id(ES256_KID))
    }

    /// The public JSON Web Key Set of the published keys (one RS256, one ES256).
    pub fn jwks(&self) -> Result<Value, TokenError> {
        let parse = |s: String| serde_json::from_str::<Value>(&s).map_err(signing_error);
        let rsa = parse(self.rsa(KeyChoice::Published)?.public_key().to_jwk())?;
        let ec = parse(self.ec(KeyChoice::Published).public_key().to_jwk())?;
        Ok(json!({ "keys": [rsa, ec] }))
    }

    /// Mints the token `spec` describes, with relative times taken from `now` (Unix seconds).
    pub fn mint(&self, spec: &TokenSpec, now: u64) -> Result<String, TokenError> {
        let claims = spec.resolved_claims(now)?;
        if spec.alg == "none" {
            let mut header = Map::new();
            header.insert("alg".into(), json!("none"));
            header.insert("typ".into(), json!(spec.typ.as_deref().unwrap_or("JWT")));
            if let Some(cty) = &spec.cty {
                header.insert("cty".into(), json!(cty));
            }
            if let Some(Some(kid)) = &spec.kid {
                header.insert("kid".into(), json!(kid));
            }
            return Ok(format!(
                "{}.{}.",
                b64(Value::Object(header).to_string().as_bytes()),
                b64(Value::Object(claims).to_string().as_bytes())
            ));
        }
        let body = JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: claims,
        };
        let options = HeaderOptions {
            content_type: spec.cty.clone(),
            signature_type: spec.typ.clone(),
        };
        if spec.alg == "ES256" {
            let key = self.ec(spec.key);
            return match &spec.kid {
                None => key.sign_with_options(body, &options),
                Some(kid) => {
                    let mut k = ES256KeyPair::from_bytes(&key.to_bytes()).map_err(signing_error)?;
                    if let Some(kid) = kid {
                        k = k.with_key_id(kid);
                    }
                    k.sign_with_options(body, &options)
                }
            }
            .map_err(signing_error);
        }
        let key = self.rsa(spec.key)?;
        match &spec.kid {
            None => key.sign_with_options(body, &options),
            Some(Some(kid)) => key
                .clone()
                .with_key_id(kid)
                .sign_with_options(body, &options),
            Some(None) => RS256KeyPair::from_der(&key.to_der().map_err(signing_error)?)
                .map_err(signing_error)?
                .sign_with_options(body, &options),
        }
        .map_err(signing_error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(part: &str) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn parts(token: &str) -> (Value, Value, String) {
        let p: Vec<&str> = token.split('.').collect();
        assert_eq!(p.len(), 3, "{token}");
        (decode(p[0]), decode(p[1]), p[2].to_string())
    }

    #[test]
    fn relative_times_follow_the_clock_and_other_claims_pass_through() {
        let spec = TokenSpec::from_json(&json!({"claims": {
            "sub": "alice", "exp": "+600", "nbf": "-60", "iat": 5, "custom": "+1"
        }}))
        .unwrap();
        let c = spec.resolved_claims(1_000).unwrap();
        assert_eq!(c["exp"], json!(1_600));
        assert_eq!(c["nbf"], json!(940));
        assert_eq!(c["iat"], json!(5));
        assert_eq!(c["custom"], json!("+1"));
        let bad = TokenSpec::from_json(&json!({"claims": {"exp": "+soon"}})).unwrap();
        assert!(bad
            .resolved_claims(0)
            .unwrap_err()
            .to_string()
            .contains("claims.exp"));
    }

    #[test]
    fn published_keys_verify_and_unpublished_keys_do_not() {
        let keys = TestKeys::new();
        let jwks = keys.jwks().unwrap();
        let rsa_jwk = jwks["keys"][0].to_string();
        let ec_jwk = jwks["keys"][1].to_string();
        let rsa = RS256PublicKey::from_jwk(&rsa_jwk).unwrap();
        let ec = ES256PublicKey::from_jwk(&ec_jwk).unwrap();

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let spec = TokenSpec::from_json(&json!({"claims": {"sub": "a", "exp": "+60"}})).unwrap();
        let t = keys.mint(&spec, now).unwrap();
        let (header, payload, _) = parts(&t);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], RS256_KID);
        assert_eq!(payload, json!({"sub": "a", "exp": now + 60}));
        let opts = VerificationOptions::default();
        if let Err(e) = rsa.verify_token::<Map<String, Value>>(&t, Some(opts.clone())) {
            panic!("{e}");
        }

        let spec = TokenSpec::from_json(&json!({"claims": {"exp": "+60"},
            "header": {"alg": "ES256", "typ": "at+jwt"}}))
        .unwrap();
        let t = keys.mint(&spec, now).unwrap();
        assert_eq!(parts(&t).0["typ"], "at+jwt");
        assert!(ec
            .verify_token::<Map<String, Value>>(&t, Some(opts.clone()))
            .is_ok());

        for alg in ["RS256", "ES256"] {
            let spec = TokenSpec::from_json(&json!({"claims": {"exp": "+60"},
                "header": {"alg": alg}, "key": "unpublished"}))
            .unwrap();
            let t = keys.mint(&spec, now).unwrap();
            let ok = if alg == "RS256" {
                rsa.verify_token::<Map<String, Value>>(&t, Some(opts.clone()))
                    .is_ok()
            } else {
                ec.verify_token::<Map<String, Value>>(&t, Some(opts.clone()))
                    .is_ok()
            };
            assert!(!ok, "{alg}: an unpublished key must not verify");
        }
    }

    #[test]
    fn kid_can_be_replaced_or_dropped_and_none_is_unsigned() {
        let keys = TestKeys::new();
        let mint = |v: Value| keys.mint(&TokenSpec::from_json(&v).unwrap(), 0).unwrap();
        let t = mint(json!({"header": {"alg": "ES256", "kid": "rotated"}}));
        assert_eq!(parts(&t).0["kid"], "rotated");
        let t = mint(json!({"header": {"alg": "ES256", "kid": null}}));
        assert!(parts(&t).0.get("kid").is_none());
        let t = mint(json!({"header": {"alg": "none"}, "claims": {"sub": "x"}}));
        assert!(t.ends_with('.'));
        assert_eq!(decode(t.split('.').next().unwrap())["alg"], "none");
    }

    #[test]
    fn placement_puts_the_token_where_asked() {
        let mut r = crate::Request::get("/a?x=1").header("cookie", "theme=dark");
        Placement::default().apply(&mut r, "T1");
        Placement::Query("access_token".into()).apply(&mut r, "T2");
        Placement::Cookie("session".into()).apply(&mut r, "T3");
        assert_eq!(r.headers.get("authorization"), Some("Bearer T1"));
        assert_eq!(r.path, "/a?x=1&access_token=T2");
        assert_eq!(r.headers.get("cookie"), Some("theme=dark; session=T3"));
    }

    #[test]
    fn descriptions_are_checked() {
        let err = |v: Value| TokenSpec::from_json(&v).unwrap_err().to_string();
        assert!(err(json!({"header": {"alg": "HS256"}})).starts_with("token.header.alg:"));
        assert!(err(json!({"header": {"x5u": "https://evil"}})).starts_with("token.header.x5u:"));
        assert!(err(json!({"clams": {}})).contains("unknown member `clams`"));
        assert!(err(json!({"key": "other"})).contains("`key`"));
        assert!(err(json!({"send": {"query": "a", "cookie": "b"}})).contains("`send`"));
        let s = TokenSpec::from_json(&json!({"send": {"header": "x-token"}})).unwrap();
        assert_eq!(
            s.placement,
            Placement::Header {
                name: "x-token".into(),
                prefix: String::new()
            }
        );
        let s = TokenSpec::from_json(&json!({"send": {"query": "access_token"}})).unwrap();
        assert_eq!(s.placement, Placement::Query("access_token".into()));
    }
}
