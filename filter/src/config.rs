//! The plugin configuration (JSON), validated into a compiled [`Policy`].
//!
//! Every error names the JSON path of the offending field, so `on_configure` can fail the
//! plugin start with a message a user can act on.

use crate::alg::Alg;
use crate::claims::ClaimPath;
use crate::jwks_fetch::{Endpoint, FetchSettings};
use crate::keys::KeySet;
use crate::policy::{
    AuthMode, ClaimCondition, ClaimHeader, ClaimTest, HostPattern, KeySource, Mode, PathMatch,
    Policy, Provider, RouteMatch, Rule, ScopeRequirement,
};
use crate::token::TokenSource;
use crate::verify::Requirements;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not parse, or a field has the wrong type or name.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// A field parses but its value cannot work.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

// The raw types mirror the JSON document; with the `schema` feature they also describe it as a
// JSON Schema (their doc comments become the schema's descriptions).

/// A Portcullis policy: identity providers, rules (first match wins) and the claims passed upstream.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Portcullis policy"))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Where editors find this document's JSON Schema; not read by the plugin.
    #[serde(rename = "$schema")]
    _schema: Option<String>,
    /// "enforce" (default) answers denials; "observe" only logs them and lets every request through.
    #[serde(default)]
    mode: RawMode,
    /// The realm of WWW-Authenticate (default "portcullis").
    realm: Option<String>,
    /// Identity providers by name.
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    /// Rules, first match wins; a request no rule matches is denied with 403.
    rules: Vec<RawRule>,
    /// Claims copied into request headers on allow; inbound copies are always stripped.
    #[serde(default)]
    claim_headers: Vec<RawClaimHeader>,
    /// A header that carries the whole verified payload, base64url.
    payload_header: Option<String>,
    /// false removes the token (header, query parameter or cookie) before the request goes upstream.
    #[serde(default = "yes")]
    forward_token: bool,
    /// Verified tokens remembered (default 10000, 0 disables the cache, at most 1000000).
    cache_size: Option<usize>,
    /// Where signatures are checked: "auto" (default) uses the host's verify_signature for RS* and ES* when it has one; "wasm" always checks inside the plugin.
    #[serde(default)]
    crypto: Crypto,
}

/// Where signatures are checked.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Crypto {
    /// The host's native `verify_signature` for RSA PKCS#1 and ECDSA when the host offers
    /// it, jwt-simple inside the VM otherwise.
    #[default]
    Auto,
    /// Always jwt-simple inside the VM.
    Wasm,
}

fn yes() -> bool {
    true
}

/// Whether denials are answered or only logged.
#[derive(Deserialize, Default, Clone, Copy)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
enum RawMode {
    #[default]
    Enforce,
    Observe,
}

/// An identity provider: whose tokens are accepted and where its keys come from.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProvider {
    /// The exact "iss" of its tokens: an absolute https URL (http only for localhost). Give this or "issuers".
    issuer: Option<String>,
    /// Several accepted "iss" values (Azure AD v1 and v2, Google with and without https://); a bare host name only next to its https URL.
    issuers: Option<Vec<String>>,
    /// The token's "aud" (string or array) must contain one of these.
    audiences: Vec<String>,
    /// The JSON Web Key Set, inline: an object or a string holding one. Give this or "remote_jwks".
    jwks: Option<Value>,
    /// Fetch the JWKS through a proxy cluster.
    remote_jwks: Option<RawRemoteJwks>,
    /// true: read {issuer}/.well-known/openid-configuration and follow its jwks_uri (needs remote_jwks.cluster, no uri).
    #[serde(default)]
    discovery: bool,
    /// Allowed algorithms (default: all asymmetric ones); HMAC only when listed.
    algorithms: Option<Vec<String>>,
    /// Tolerance for exp, nbf and iat (default 60, at most 3600).
    clock_skew_seconds: Option<u64>,
    /// Refuse tokens without exp (default true).
    require_expiration: Option<bool>,
    /// Refuse tokens valid for longer (exp - iat).
    max_lifetime_seconds: Option<u64>,
    /// Where tokens are found, in order (default: Authorization: Bearer).
    token_sources: Option<Vec<RawSource>>,
    /// Larger tokens are refused unread (default 8192, 64 to 65536).
    max_token_bytes: Option<usize>,
}

/// A JWKS fetched through the proxy's HTTP callouts.
#[derive(Deserialize, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    /// The proxy cluster the fetch goes through.
    cluster: String,
    /// The JWKS URL (absolute https); omit with "discovery": true.
    uri: Option<String>,
    /// Fetch timeout (default 5000, 100 to 60000).
    timeout_ms: Option<u64>,
    /// Refresh interval when the answer has no max-age (default 600).
    refresh_seconds: Option<u64>,
    /// Lower bound on the refresh interval (default 60).
    min_refresh_seconds: Option<u64>,
    /// Upper bound on the refresh interval (default 86400).
    max_refresh_seconds: Option<u64>,
    /// How long keys are kept past their refresh time while the IdP fails (default 86400).
    max_stale_seconds: Option<u64>,
    /// At most one refetch for an unknown kid per this many seconds (default 30).
    unknown_kid_refetch_seconds: Option<u64>,
}

/// One place a token is read from: {"header", "prefix"}, {"query"} or {"cookie"}.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// A request header.
    header: Option<String>,
    /// Text before the token in the header (e.g. "Bearer ").
    prefix: Option<String>,
    /// A query parameter.
    query: Option<String>,
    /// A cookie.
    cookie: Option<String>,
}

/// A rule: when it applies, and what the token must carry.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Used in the decision log (default rules[i]).
    name: Option<String>,
    /// When the rule applies (default: every request).
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    /// "required" (default), "optional" (no token is fine, a present one must be valid) or "none".
    #[serde(default)]
    auth: RawAuth,
    /// Names of the providers whose tokens the rule accepts (default: all).
    #[serde(default)]
    providers: Vec<String>,
    /// Scopes against "scope" (space-delimited) and "scp" (array or string).
    #[serde(default)]
    scopes: RawScopes,
    /// Claim conditions that must all hold.
    #[serde(default)]
    claims: Vec<RawClaimCondition>,
}

/// Request conditions; all given ones must hold.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawMatch {
    /// One of exact, prefix or regex, on the path without query.
    path: Option<RawPath>,
    /// HTTP methods, e.g. ["GET", "HEAD"] (default: any).
    #[serde(default)]
    methods: Vec<String>,
    /// "api.example.com" or "*.example.com", port ignored (default: any).
    #[serde(default)]
    hosts: Vec<String>,
}

/// A path condition: exactly one of exact, prefix or regex.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawPath {
    /// Exactly this path.
    exact: Option<String>,
    /// Paths starting with this.
    prefix: Option<String>,
    /// Paths this regex matches (anchor it to match whole paths).
    regex: Option<String>,
}

/// Whether a rule needs a token.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
enum RawAuth {
    #[default]
    Required,
    Optional,
    None,
}

/// Scopes the token must carry.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawScopes {
    /// Every one of these.
    #[serde(default)]
    all_of: Vec<String>,
    /// At least one of these.
    #[serde(default)]
    any_of: Vec<String>,
}

/// A claim: a name or dotted path ("realm_access.roles"; a claim whose whole name matches wins), or an array of object keys for names with dots.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
enum RawClaimPath {
    Dotted(String),
    Segments(Vec<String>),
}

/// A condition on one claim, with exactly one test.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimCondition {
    /// The claim.
    claim: RawClaimPath,
    /// The value (or an element of an array claim) equals this.
    equals: Option<Value>,
    /// Same as any_of.
    one_of: Option<Vec<Value>>,
    /// The value (or an element) is one of these.
    any_of: Option<Vec<Value>>,
    /// Every one of these is the value or one of its elements.
    all_of: Option<Vec<Value>>,
    /// The value (or an element) matches this glob: * any run, ? one character.
    glob: Option<String>,
    /// The claim is present (true) or absent (false).
    present: Option<bool>,
}

/// A claim copied into a request header on allow (arrays joined with ",", objects as JSON).
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    /// The claim.
    claim: RawClaimPath,
    /// The header; stripped from every inbound request.
    header: String,
}

/// The JSON Schema of the plugin configuration, generated from the types the parser reads
/// (so it cannot drift from them); `policies/portcullis.schema.json` is this, pretty-printed.
#[cfg(feature = "schema")]
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(RawConfig).to_value();
    drop_null_branches(&mut schema);
    schema
}

/// Optional fields are written out or left out, never `null`: without the null branch of
/// `Option`, a wrong value is reported at its own path instead of "not valid under anyOf" at
/// its parent's.
#[cfg(feature = "schema")]
fn drop_null_branches(v: &mut Value) {
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            let branch = match map.get("anyOf") {
                Some(Value::Array(b)) if b.len() == 2 && b.iter().any(is_null) => {
                    b.iter().find(|s| !is_null(s)).cloned()
                }
                _ => None,
            };
            if let Some(Value::Object(inner)) = branch {
                map.remove("anyOf");
                for (k, val) in inner {
                    map.entry(k).or_insert(val);
                }
            }
            map.values_mut().for_each(drop_null_branches);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_branches),
        _ => {}
    }
}

/// Default bound on a token's size.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// Default clock skew tolerance.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// Default number of verified tokens remembered.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

/// A validated configuration: the policy plus engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The compiled policy.
    pub policy: Policy,
    /// Capacity of the verified-token cache.
    pub cache_size: usize,
    /// Where signatures are checked.
    pub crypto: Crypto,
}

/// Parses and validates a plugin configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Syntax {
            path: if path == "." || path == "?" {
                "configuration".into()
            } else {
                path
            },
            message: e.inner().to_string(),
        }
    })?;
    compile(raw)
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let realm = raw.realm.unwrap_or_else(|| "portcullis".into());
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(invalid(
            "realm",
            "must be non-empty, without quotes, backslashes or control characters",
        ));
    }
    let mut providers = Vec::new();
    for (name, p) in raw.providers {
        providers.extend(compile_provider(&name, p)?);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    if raw.rules.is_empty() {
        return Err(invalid(
            "rules",
            "must list at least one rule (with none, every request is denied)",
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        rules.push(compile_rule(&format!("rules[{i}]"), r, &names)?);
    }
    let source_headers: Vec<&str> = providers
        .iter()
        .flat_map(|p| p.sources.iter())
        .filter_map(|s| match s {
            TokenSource::Header { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut claim_headers = Vec::new();
    for (i, h) in raw.claim_headers.into_iter().enumerate() {
        let path = format!("claim_headers[{i}]");
        let header = owned_header_name(&format!("{path}.header"), &h.header, &source_headers)?;
        if claim_headers
            .iter()
            .any(|c: &ClaimHeader| c.header == header)
        {
            return Err(invalid(
                format!("{path}.header"),
                format!("\"{header}\" is used twice"),
            ));
        }
        claim_headers.push(ClaimHeader {
            path: claim_path(&format!("{path}.claim"), h.claim)?,
            header,
        });
    }
    let payload_header = match raw.payload_header {
        None => None,
        Some(h) => {
            let name = owned_header_name("payload_header", &h, &source_headers)?;
            if claim_headers.iter().any(|c| c.header == name) {
                return Err(invalid(
                    "payload_header",
                    format!("\"{name}\" is also a claim header"),
                ));
            }
            Some(name)
        }
    };
    let cache_size = raw.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
    if cache_size > 1_000_000 {
        return Err(invalid("cache_size", "must be at most 1000000"));
    }
    Ok(Config {
        policy: Policy {
            mode: match raw.mode {
                RawMode::Enforce => Mode::Enforce,
                RawMode::Observe => Mode::Observe,
            },
            realm,
            providers,
            rules,
            claim_headers,
            payload_header,
            forward_token: raw.forward_token,
        },
        cache_size,
        crypto: raw.crypto,
    })
}

fn valid_issuer(issuer: &str) -> bool {
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let host = r.split(['/', ':']).next().unwrap_or("");
        if !matches!(host, "localhost" | "127.0.0.1") {
            return false;
        }
        r
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !issuer.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A bare host name, as Google writes `iss` in some ID tokens (`accounts.google.com`).
fn bare_host(issuer: &str) -> bool {
    issuer.contains('.')
        && issuer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The accepted `iss` values. Some identity providers write one tenant's issuer two ways
/// (Azure AD's v1 and v2 endpoints, Google with and without `https://`), so `issuers` lists
/// them; a bare host name is accepted only next to its https URL, so a typo still fails.
fn issuers_of(
    name: &str,
    issuer: Option<String>,
    issuers: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    const NOT_A_URL: &str = "must be an absolute https URL (http only for localhost or 127.0.0.1)";
    let at = |field: &str| format!("providers.{name}.{field}");
    match (issuer, issuers) {
        (Some(_), Some(_)) => Err(invalid(
            format!("providers.{name}"),
            "give either \"issuer\" or \"issuers\" (a list), not both",
        )),
        (None, None) => Err(invalid(
            at("issuer"),
            "required: the exact \"iss\" of the provider's tokens (or \"issuers\", a list of them)",
        )),
        (Some(i), None) if valid_issuer(&i) => Ok(vec![i]),
        (Some(_), None) => Err(invalid(at("issuer"), NOT_A_URL)),
        (None, Some(list)) => {
            if list.is_empty() {
                return Err(invalid(at("issuers"), "must list at least one issuer"));
            }
            for (i, issuer) in list.iter().enumerate() {
                let path = format!("{}[{i}]", at("issuers"));
                if list[..i].contains(issuer) {
                    return Err(invalid(path, format!("\"{issuer}\" is listed twice")));
                }
                let beside_its_url =
                    bare_host(issuer) && list.contains(&format!("https://{issuer}"));
                if !valid_issuer(issuer) && !beside_its_url {
                    return Err(invalid(
                        path,
                        format!("{NOT_A_URL}; a bare host name (\"accounts.google.com\") only next to its https URL"),
                    ));
                }
            }
            Ok(list)
        }
    }
}

/// Compiles one configured provider into one [`Provider`] per accepted issuer: the engine
/// picks a provider by the token's `iss`, so several issuers become several entries that
/// share the name, audiences, sources and keys (remote keys are fetched once per issuer).
fn compile_provider(name: &str, p: RawProvider) -> Result<Vec<Provider>, ConfigError> {
    let at = |field: &str| format!("providers.{name}.{field}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            format!("providers.{name}"),
            "provider names use letters, digits, '-', '_' and '.'",
        ));
    }
    let issuers = issuers_of(name, p.issuer, p.issuers)?;
    if p.audiences.is_empty() {
        return Err(invalid(
            at("audiences"),
            "must list at least one audience (a token minted for another service must not pass)",
        ));
    }
    if let Some(i) = p.audiences.iter().position(String::is_empty) {
        return Err(invalid(
            format!("{}[{i}]", at("audiences")),
            "must not be empty",
        ));
    }
    let algorithms: Vec<Alg> = match p.algorithms {
        None => Alg::ASYMMETRIC.to_vec(),
        Some(list) => {
            if list.is_empty() {
                return Err(invalid(
                    at("algorithms"),
                    "must list at least one algorithm",
                ));
            }
            let mut out = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let alg = a
                    .parse::<Alg>()
                    .map_err(|e| invalid(format!("{}[{i}]", at("algorithms")), e.to_string()))?;
                out.push(alg);
            }
            out
        }
    };
    let clock_skew = p.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
    if clock_skew > 3600 {
        return Err(invalid(at("clock_skew_seconds"), "must be at most 3600"));
    }
    if p.max_lifetime_seconds == Some(0) {
        return Err(invalid(at("max_lifetime_seconds"), "must be positive"));
    }
    let max_token_bytes = p.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(64..=65536).contains(&max_token_bytes) {
        return Err(invalid(
            at("max_token_bytes"),
            "must be between 64 and 65536",
        ));
    }
    let sources = match p.token_sources {
        None => vec![TokenSource::bearer()],
        Some(list) => {
            if list.is_empty() {
                return Err(invalid(
                    at("token_sources"),
                    "must list at least one source",
                ));
            }
            list.into_iter()
                .enumerate()
                .map(|(i, s)| compile_source(&format!("{}[{i}]", at("token_sources")), s))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let keys: Vec<KeySource> =
        match (p.jwks, p.remote_jwks) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("providers.{name}"),
                    "give either \"jwks\" (inline keys) or \"remote_jwks\", not both",
                ))
            }
            (None, None) => return Err(invalid(
                at("jwks"),
                "required: the provider's JSON Web Key Set, inline, or \"remote_jwks\" to fetch it",
            )),
            (Some(_), None) if p.discovery => {
                return Err(invalid(
                    at("discovery"),
                    "discovery needs \"remote_jwks\" (at least its \"cluster\")",
                ))
            }
            (Some(v), None) => {
                let set = inline_keys(&at("jwks"), v, &algorithms)?;
                vec![KeySource::Inline(set); issuers.len()]
            }
            (None, Some(r)) => issuers
                .iter()
                .map(|issuer| {
                    remote_settings(&at("remote_jwks"), r.clone(), p.discovery, issuer)
                        .map(|s| KeySource::Remote(Box::new(s)))
                })
                .collect::<Result<_, _>>()?,
        };
    Ok(issuers
        .into_iter()
        .zip(keys)
        .map(|(issuer, keys)| Provider {
            name: name.to_string(),
            requirements: Requirements {
                issuer,
                audiences: p.audiences.clone(),
                algorithms: algorithms.clone(),
                clock_skew,
                require_expiration: p.require_expiration.unwrap_or(true),
                max_lifetime: p.max_lifetime_seconds,
                max_token_bytes,
            },
            sources: sources.clone(),
            keys,
        })
        .collect())
}

fn inline_keys(path: &str, v: Value, algorithms: &[Alg]) -> Result<KeySet, ConfigError> {
    let document = match v {
        Value::String(s) => s.into_bytes(),
        other @ Value::Object(_) => other.to_string().into_bytes(),
        _ => {
            return Err(invalid(
                path,
                "must be a JWKS object or a string holding one",
            ))
        }
    };
    let (set, issues) =
        KeySet::from_jwks(&document, algorithms).map_err(|e| invalid(path, e.to_string()))?;
    if let Some(issue) = issues.first() {
        return Err(invalid(
            format!("{path}.keys[{}]", issue.index),
            issue.to_string(),
        ));
    }
    Ok(set)
}

fn remote_settings(
    path: &str,
    r: RawRemoteJwks,
    discovery: bool,
    issuer: &str,
) -> Result<FetchSettings, ConfigError> {
    if r.cluster.is_empty() {
        return Err(invalid(
            format!("{path}.cluster"),
            "must name the proxy cluster the fetch goes through",
        ));
    }
    let jwks = match (&r.uri, discovery) {
        (Some(_), true) => return Err(invalid(
            format!("{path}.uri"),
            "with \"discovery\": true the JWKS URI comes from the discovery document; remove it",
        )),
        (None, false) => {
            return Err(invalid(
                format!("{path}.uri"),
                "required (or set \"discovery\": true)",
            ))
        }
        (Some(u), false) => Some(Endpoint::parse(u).ok_or_else(|| {
            invalid(
                format!("{path}.uri"),
                "must be an absolute https URL (http only for localhost or 127.0.0.1)",
            )
        })?),
        (None, true) => None,
    };
    let discovery = if discovery {
        let uri = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        Some(
            Endpoint::parse(&uri)
                .ok_or_else(|| invalid(path, "the issuer cannot be used for discovery"))?,
        )
    } else {
        None
    };
    let timeout_ms = r.timeout_ms.unwrap_or(5000);
    if !(100..=60_000).contains(&timeout_ms) {
        return Err(invalid(
            format!("{path}.timeout_ms"),
            "must be between 100 and 60000",
        ));
    }
    let min_refresh_seconds = r.min_refresh_seconds.unwrap_or(60);
    let max_refresh_seconds = r.max_refresh_seconds.unwrap_or(86_400);
    if min_refresh_seconds == 0 || min_refresh_seconds > max_refresh_seconds {
        return Err(invalid(
            format!("{path}.min_refresh_seconds"),
            "must be positive and at most max_refresh_seconds",
        ));
    }
    Ok(FetchSettings {
        cluster: r.cluster,
        jwks,
        discovery,
        issuer: issuer.to_string(),
        timeout_ms,
        refresh_seconds: r
            .refresh_seconds
            .unwrap_or(600)
            .clamp(min_refresh_seconds, max_refresh_seconds),
        min_refresh_seconds,
        max_refresh_seconds,
        max_stale_seconds: r.max_stale_seconds.unwrap_or(86_400),
        unknown_kid_refetch_seconds: r.unknown_kid_refetch_seconds.unwrap_or(30),
    })
}

fn compile_source(path: &str, s: RawSource) -> Result<TokenSource, ConfigError> {
    match (s.header, s.query, s.cookie) {
        (Some(h), None, None) => Ok(TokenSource::Header {
            name: header_name(&format!("{path}.header"), &h)?,
            prefix: s.prefix.filter(|p| !p.is_empty()),
        }),
        (None, Some(q), None) if s.prefix.is_none() && !q.is_empty() => Ok(TokenSource::Query { name: q }),
        (None, None, Some(c)) if s.prefix.is_none() && !c.is_empty() => Ok(TokenSource::Cookie { name: c }),
        _ => Err(invalid(
            path,
            "give exactly one of \"header\" (with optional \"prefix\"), \"query\" or \"cookie\", non-empty",
        )),
    }
}

fn compile_rule(path: &str, r: RawRule, providers: &[&str]) -> Result<Rule, ConfigError> {
    let name = r.name.unwrap_or_else(|| path.to_string());
    let matcher = compile_match(&format!("{path}.match"), r.matcher)?;
    let auth = match r.auth {
        RawAuth::Required => AuthMode::Required,
        RawAuth::Optional => AuthMode::Optional,
        RawAuth::None => AuthMode::None,
    };
    if auth == AuthMode::None
        && (!r.providers.is_empty()
            || !r.scopes.all_of.is_empty()
            || !r.scopes.any_of.is_empty()
            || !r.claims.is_empty())
    {
        return Err(invalid(
            path,
            "a rule with \"auth\": \"none\" cannot require providers, scopes or claims",
        ));
    }
    if auth != AuthMode::None && providers.is_empty() {
        return Err(invalid(
            path,
            "needs a token, but no provider is configured",
        ));
    }
    let mut indexes = Vec::new();
    for (i, p) in r.providers.iter().enumerate() {
        let before = indexes.len();
        // A provider with several issuers is several entries under one name.
        indexes.extend((0..providers.len()).filter(|&idx| providers[idx] == p.as_str()));
        if indexes.len() == before {
            return Err(invalid(
                format!("{path}.providers[{i}]"),
                format!("no provider named \"{p}\""),
            ));
        }
    }
    for (field, list) in [("all_of", &r.scopes.all_of), ("any_of", &r.scopes.any_of)] {
        if let Some(i) = list
            .iter()
            .position(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
        {
            return Err(invalid(
                format!("{path}.scopes.{field}[{i}]"),
                "a scope is one non-empty word without quotes",
            ));
        }
    }
    let mut claims = Vec::new();
    for (i, c) in r.claims.into_iter().enumerate() {
        claims.push(compile_condition(&format!("{path}.claims[{i}]"), c)?);
    }
    Ok(Rule {
        name,
        matcher,
        auth,
        providers: indexes,
        scopes: ScopeRequirement {
            all_of: r.scopes.all_of,
            any_of: r.scopes.any_of,
        },
        claims,
    })
}

fn compile_match(path: &str, m: RawMatch) -> Result<RouteMatch, ConfigError> {
    let path_match = match m.path {
        None => PathMatch::Any,
        Some(p) => match (p.exact, p.prefix, p.regex) {
            (Some(e), None, None) => PathMatch::Exact(e),
            (None, Some(pr), None) => PathMatch::Prefix(pr),
            (None, None, Some(re)) => {
                PathMatch::Regex(regex_lite::Regex::new(&re).map_err(|e| {
                    invalid(
                        format!("{path}.path.regex"),
                        format!("not a valid regex: {e}"),
                    )
                })?)
            }
            _ => {
                return Err(invalid(
                    format!("{path}.path"),
                    "give exactly one of \"exact\", \"prefix\" or \"regex\"",
                ))
            }
        },
    };
    let mut methods = Vec::new();
    for (i, method) in m.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(invalid(
                format!("{path}.methods[{i}]"),
                "not an HTTP method",
            ));
        }
        methods.push(method.to_ascii_uppercase());
    }
    let mut hosts = Vec::new();
    for (i, h) in m.hosts.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        let pattern = match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                HostPattern::Subdomain(suffix.to_string())
            }
            Some(_) => {
                return Err(invalid(
                    format!("{path}.hosts[{i}]"),
                    "a wildcard host is written \"*.example.com\"",
                ))
            }
            None if !h.is_empty() && !h.contains('*') => HostPattern::Exact(h),
            None => return Err(invalid(format!("{path}.hosts[{i}]"), "not a host name")),
        };
        hosts.push(pattern);
    }
    Ok(RouteMatch {
        path: path_match,
        methods,
        hosts,
    })
}

fn compile_condition(path: &str, c: RawClaimCondition) -> Result<ClaimCondition, ConfigError> {
    let any_of = match (c.one_of, c.any_of) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                path,
                "\"one_of\" and \"any_of\" mean the same; give one",
            ))
        }
        (a, b) => a.or(b),
    };
    let mut tests = Vec::new();
    if let Some(v) = c.equals {
        tests.push(ClaimTest::Equals(v));
    }
    if let Some(v) = any_of {
        tests.push(ClaimTest::AnyOf(v));
    }
    if let Some(v) = c.all_of {
        tests.push(ClaimTest::AllOf(v));
    }
    if let Some(g) = c.glob {
        tests.push(ClaimTest::Glob(g));
    }
    if let Some(p) = c.present {
        tests.push(ClaimTest::Present(p));
    }
    let test = match (tests.pop(), tests.is_empty()) {
        (Some(t), true) => t,
        _ => {
            return Err(invalid(
                path,
                "give exactly one test: equals, one_of, any_of, all_of, glob or present",
            ))
        }
    };
    if let ClaimTest::AnyOf(v) | ClaimTest::AllOf(v) = &test {
        if v.is_empty() {
            return Err(invalid(path, "the list of values must not be empty"));
        }
    }
    Ok(ClaimCondition {
        path: claim_path(&format!("{path}.claim"), c.claim)?,
        test,
    })
}

fn claim_path(path: &str, c: RawClaimPath) -> Result<ClaimPath, ConfigError> {
    match c {
        RawClaimPath::Dotted(s) if !s.is_empty() => Ok(ClaimPath::dotted(&s)),
        RawClaimPath::Segments(v) if !v.is_empty() && v.iter().all(|s| !s.is_empty()) => {
            Ok(ClaimPath::segments(v))
        }
        _ => Err(invalid(
            path,
            "a claim is a non-empty name, dotted path, or array of keys",
        )),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(invalid(
            path,
            format!("\"{name}\" is not a valid header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Headers that must stay under the proxy's control.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "authorization",
];

/// A header Portcullis sets and strips: it must not be one the proxy or the token needs.
fn owned_header_name(
    path: &str,
    name: &str,
    token_headers: &[&str],
) -> Result<String, ConfigError> {
    let name = header_name(path, name)?;
    if RESERVED_HEADERS.contains(&name.as_str()) || token_headers.contains(&name.as_str()) {
        return Err(invalid(
            path,
            format!("\"{name}\" cannot carry claims: it is stripped from every request and is needed elsewhere"),
        ));
    }
    Ok(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use portcullis_testkit as testkit;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "providers": {"okta": {
                "issuer": "https://idp.test",
                "audiences": ["api"],
                "jwks": {"keys": [testkit::rsa().jwk()]}
            }},
            "rules": [{"match": {"path": {"prefix": "/"}}}]
        })
    }

    /// Applies `edit` to the base config and returns the error message.
    fn error_of(edit: impl FnOnce(&mut Value)) -> String {
        let mut v = base();
        edit(&mut v);
        parse(v.to_string().as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn base_config_compiles_with_defaults() {
        let c = parse(base().to_string().as_bytes()).unwrap();
        let p = &c.policy.providers[0];
        assert_eq!(p.requirements.clock_skew, 60);
        assert!(p.requirements.require_expiration);
        assert_eq!(p.requirements.algorithms, Alg::ASYMMETRIC.to_vec());
        assert_eq!(p.sources, vec![TokenSource::bearer()]);
        assert_eq!(p.requirements.max_token_bytes, 8192);
        assert_eq!(c.policy.mode, Mode::Enforce);
        assert!(c.policy.forward_token);
        assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
    }

    #[test]
    fn errors_name_the_field() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|v| v["providers"]["okta"]["issuer"] = json!("idp.test")),
             "providers.okta.issuer: must be an absolute https URL"),
            (Box::new(|v| v["providers"]["okta"]["issuer"] = json!("http://idp.test")),
             "providers.okta.issuer: must be an absolute https URL"),
            (Box::new(|v| v["providers"]["okta"]["audiences"] = json!([])),
             "providers.okta.audiences: must list at least one audience"),
            (Box::new(|v| v["providers"]["okta"]["algorithms"] = json!(["RS256", "none"])),
             "providers.okta.algorithms[1]: algorithm \"none\" is never accepted"),
            (Box::new(|v| v["providers"]["okta"]["clock_skew_seconds"] = json!("60")),
             "providers.okta.clock_skew_seconds: invalid type"),
            (Box::new(|v| v["providers"]["okta"]["isuer"] = json!("x")),
             "providers.okta.isuer: unknown field `isuer`"),
            (Box::new(|v| { v["providers"]["okta"].as_object_mut().unwrap().remove("jwks"); }),
             "providers.okta.jwks: required"),
            (Box::new(|v| v["providers"]["okta"]["jwks"] = json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]})),
             "providers.okta.jwks: no usable key: keys[0]: RS256 key rejected"),
            (Box::new(|v| v["providers"]["okta"]["jwks"]["keys"].as_array_mut().unwrap().push(json!({"kty": "oct", "k": "AAAA"}))),
             "providers.okta.jwks.keys[1]: keys[1]: no allowed algorithm fits a \"oct\" key (HMAC algorithms must be listed explicitly)"),
            (Box::new(|v| v["providers"]["okta"]["token_sources"] = json!([{"header": "x-token", "query": "t"}])),
             "providers.okta.token_sources[0]: give exactly one of"),
            (Box::new(|v| v["mode"] = json!("audit")),
             "mode: unknown variant `audit`"),
            (Box::new(|v| v["rules"] = json!([])),
             "rules: must list at least one rule"),
            (Box::new(|v| v["rules"][0]["providers"] = json!(["azure"])),
             "rules[0].providers[0]: no provider named \"azure\""),
            (Box::new(|v| v["rules"][0]["match"]["path"] = json!({"regex": "(unclosed"})),
             "rules[0].match.path.regex: not a valid regex"),
            (Box::new(|v| v["rules"][0]["match"]["path"] = json!({"prefix": "/a", "exact": "/b"})),
             "rules[0].match.path: give exactly one of"),
            (Box::new(|v| v["rules"][0]["match"]["hosts"] = json!(["api.*.com"])),
             "rules[0].match.hosts[0]: not a host name"),
            (Box::new(|v| v["rules"][0]["claims"] = json!([{"claim": "groups", "glob": "a*", "equals": "b"}])),
             "rules[0].claims[0]: give exactly one test"),
            (Box::new(|v| v["rules"][0]["claims"] = json!([{"claim": "", "present": true}])),
             "rules[0].claims[0].claim: a claim is a non-empty name"),
            (Box::new(|v| { v["rules"][0]["auth"] = json!("none"); v["rules"][0]["scopes"] = json!({"all_of": ["a"]}); }),
             "rules[0]: a rule with \"auth\": \"none\" cannot require"),
            (Box::new(|v| v["rules"][0]["scopes"] = json!({"all_of": ["a b"]})),
             "rules[0].scopes.all_of[0]: a scope is one non-empty word"),
            (Box::new(|v| v["claim_headers"] = json!([{"claim": "sub", "header": "authorization"}])),
             "claim_headers[0].header: \"authorization\" cannot carry claims"),
            (Box::new(|v| v["claim_headers"] = json!([{"claim": "sub", "header": "x a"}])),
             "claim_headers[0].header: \"x a\" is not a valid header name"),
            (Box::new(|v| v["claim_headers"] = json!([{"claim": "sub", "header": "x-a"}, {"claim": "email", "header": "X-A"}])),
             "claim_headers[1].header: \"x-a\" is used twice"),
            (Box::new(|v| v["realm"] = json!("a\"b")),
             "realm: must be non-empty"),
        ];
        for (edit, want) in cases {
            let got = error_of(edit);
            assert!(got.starts_with(want), "wanted {want:?}\n   got {got:?}");
        }
        let e = parse(b"{not json").unwrap_err().to_string();
        assert!(e.starts_with("configuration: key must be a string"), "{e}");
        let e = parse(b"").unwrap_err().to_string();
        assert!(e.contains("EOF"), "{e}");
    }

    #[test]
    fn token_header_cannot_double_as_a_claim_header() {
        let e = error_of(|v| {
            v["providers"]["okta"]["token_sources"] = json!([{"header": "x-token"}]);
            v["claim_headers"] = json!([{"claim": "sub", "header": "x-token"}]);
        });
        assert!(
            e.starts_with("claim_headers[0].header: \"x-token\" cannot carry claims"),
            "{e}"
        );
    }

    #[test]
    fn hmac_needs_an_explicit_algorithm_and_a_long_secret() {
        let mut v = base();
        v["providers"]["okta"]["algorithms"] = json!(["HS256"]);
        v["providers"]["okta"]["jwks"] = json!({"keys": [testkit::hs256().jwk()]});
        assert!(parse(v.to_string().as_bytes()).is_ok());
        v["providers"]["okta"]["jwks"] =
            json!({"keys": [{"kty": "oct", "alg": "HS256", "k": testkit::b64(&[1; 16])}]});
        let e = parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(
            e.contains("secret is 16 bytes; at least 32 are required"),
            "{e}"
        );
    }

    #[test]
    fn issuers_list_accepts_each_issuer_under_one_provider_name() {
        let mut v = base();
        let okta = v["providers"]["okta"].as_object_mut().unwrap();
        okta.remove("issuer");
        okta.insert(
            "issuers".into(),
            json!(["https://idp.test/v2.0", "https://sts.idp.test/"]),
        );
        v["rules"][0]["providers"] = json!(["okta"]);
        let c = parse(v.to_string().as_bytes()).unwrap();
        let issuers: Vec<&str> = c
            .policy
            .providers
            .iter()
            .map(|p| p.requirements.issuer.as_str())
            .collect();
        assert_eq!(issuers, ["https://idp.test/v2.0", "https://sts.idp.test/"]);
        assert!(c.policy.providers.iter().all(|p| p.name == "okta"));
        assert_eq!(c.policy.rules[0].providers, vec![0, 1]);
    }

    #[test]
    fn a_bare_host_issuer_needs_its_https_url_beside_it() {
        let with = |issuers: Value| {
            let mut v = base();
            let okta = v["providers"]["okta"].as_object_mut().unwrap();
            okta.remove("issuer");
            okta.insert("issuers".into(), issuers);
            parse(v.to_string().as_bytes()).map(|c| c.policy.providers.len())
        };
        assert_eq!(
            with(json!([
                "https://accounts.google.com",
                "accounts.google.com"
            ])),
            Ok(2)
        );
        let e = with(json!(["accounts.google.com"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("providers.okta.issuers[0]: must be an absolute https URL"),
            "{e}"
        );
        let e = with(json!(["https://a.test", "https://a.test"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("providers.okta.issuers[1]: \"https://a.test\" is listed twice"),
            "{e}"
        );
        let e = with(json!([])).unwrap_err().to_string();
        assert!(
            e.starts_with("providers.okta.issuers: must list at least one"),
            "{e}"
        );
        let e = error_of(|v| v["providers"]["okta"]["issuers"] = json!(["https://b.test"]));
        assert!(
            e.starts_with("providers.okta: give either \"issuer\" or \"issuers\""),
            "{e}"
        );
        let e = error_of(|v| {
            v["providers"]["okta"]
                .as_object_mut()
                .unwrap()
                .remove("issuer");
        });
        assert!(e.starts_with("providers.okta.issuer: required"), "{e}");
    }

    #[test]
    fn the_schema_key_is_accepted_and_ignored() {
        let mut v = base();
        v["$schema"] = json!("./portcullis.schema.json");
        assert!(parse(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn jwks_may_be_given_as_a_string() {
        let mut v = base();
        v["providers"]["okta"]["jwks"] = json!(json!({"keys": [testkit::rsa().jwk()]}).to_string());
        assert!(parse(v.to_string().as_bytes()).is_ok());
    }
}
