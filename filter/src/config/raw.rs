//! The policy document as written: the serde types the JSON is read into, and with the
//! `schema` feature the JSON Schema they describe.
//!
//! Doc comments become the schema's descriptions. A description that states a default or a
//! bound is built from [`super::defaults`] instead, so the schema cannot promise a value the
//! compiler does not apply. The type names appear in the schema's `$defs`: renaming one
//! changes `policies/portcullis.schema.json`.

use super::defaults;
#[cfg(feature = "schema")]
use super::defaults::{
    CACHE_SIZE, CLOCK_SKEW_SECONDS, FETCH_TIMEOUT_MS, LOGIN_TIMEOUT_MS, MAX_REFRESH_SECONDS,
    MAX_STALE_SECONDS, MAX_TOKEN_BYTES, MIN_REFRESH_SECONDS, REFRESH_SECONDS, SESSION_SECONDS,
    UNKNOWN_KID_REFETCH_SECONDS,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A Portcullis policy: identity providers, rules (first match wins) and the claims passed upstream.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Portcullis policy"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Where editors find this document's JSON Schema; not read by the plugin.
    #[serde(rename = "$schema")]
    pub(super) _schema: Option<String>,
    /// "enforce" (default) answers denials; "observe" only logs them and lets every request through.
    #[serde(default)]
    pub(super) mode: RawMode,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "The realm of WWW-Authenticate (default \"{}\").", defaults::REALM)))]
    pub(super) realm: Option<String>,
    /// Identity providers by name.
    #[serde(default)]
    pub(super) providers: BTreeMap<String, RawProvider>,
    /// Rules, first match wins; a request no rule matches is denied with 403.
    pub(super) rules: Vec<RawRule>,
    /// Claims copied into request headers on allow; inbound copies are always stripped.
    #[serde(default)]
    pub(super) claim_headers: Vec<RawClaimHeader>,
    /// A header that carries the whole verified payload, base64url.
    pub(super) payload_header: Option<String>,
    #[serde(default = "defaults::forward_token")]
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "false removes the token (header, query parameter or cookie) before the request goes upstream (default {}).",
        defaults::FORWARD_TOKEN)))]
    pub(super) forward_token: bool,
    #[cfg_attr(feature = "schema", schemars(description = CACHE_SIZE.describe(
        "Verified tokens remembered; 0 disables the cache")))]
    pub(super) cache_size: Option<usize>,
    /// Where signatures are checked: "auto" (default) uses the host's verify_signature for RS* and ES* when it has one; "wasm" always checks inside the plugin.
    #[serde(default)]
    pub(super) crypto: Crypto,
    /// Rules match the normalized path, and a path servers could read differently gets 400. "reject" (default) forwards an unambiguous path as sent; "normalize" forwards the normalized path, so the upstream gets exactly what was authorized.
    #[serde(default)]
    pub(super) path_mode: PathMode,
    /// Route tags from verified claims: the tag goes upstream in a header the proxy routes on (rules opt in with "routing").
    pub(super) routing: Option<RawRouting>,
}

/// Maps verified claims to a route tag, for the proxy to choose the backend by.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "The request header that carries the tag upstream (default \"{}\"); inbound copies are always removed.",
        defaults::ROUTE_HEADER)))]
    pub(super) header: Option<String>,
    /// Claim tests in order: the first that holds gives the tag.
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    /// The tag when no entry holds (default: none, and the rule decides).
    pub(super) default: Option<String>,
}

/// One routing entry: a claim with exactly one test, as in a rule's "claims", and the tag it gives.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    /// The tag: letters, digits, ".", "_" and "-", at most 64.
    pub(super) tag: String,
    /// The claim.
    pub(super) claim: RawClaimPath,
    /// The value (or an element of an array claim) equals this.
    pub(super) equals: Option<Value>,
    /// Same as any_of.
    pub(super) one_of: Option<Vec<Value>>,
    /// The value (or an element) is one of these.
    pub(super) any_of: Option<Vec<Value>>,
    /// Every one of these is the value or one of its elements.
    pub(super) all_of: Option<Vec<Value>>,
    /// The value (or an element) matches this glob, e.g. "arn:aws:iam::*:role/Admin*".
    pub(super) glob: Option<String>,
    /// The claim is present (true) or absent (false).
    pub(super) present: Option<bool>,
}

impl RawRoute {
    /// The tag and the condition, apart.
    pub(super) fn split(self) -> (String, RawClaimCondition) {
        let condition = RawClaimCondition {
            claim: self.claim,
            equals: self.equals,
            one_of: self.one_of,
            any_of: self.any_of,
            all_of: self.all_of,
            glob: self.glob,
            present: self.present,
        };
        (self.tag, condition)
    }
}

/// What the upstream receives of a path that normalization changed (docs/paths.md).
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum PathMode {
    /// The path as the client sent it; ambiguous paths get 400.
    #[default]
    Reject,
    /// The normalized path (with the query as sent); ambiguous paths get 400.
    Normalize,
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

/// Whether denials are answered or only logged.
#[derive(Deserialize, Default, Clone, Copy)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMode {
    #[default]
    Enforce,
    Observe,
}

/// An identity provider: whose tokens are accepted and where its keys come from.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    /// The exact "iss" of its tokens: an absolute https URL (http only for localhost, 127.0.0.1 or [::1]). Give this or "issuers".
    pub(super) issuer: Option<String>,
    /// Several accepted "iss" values (Azure AD v1 and v2, Google with and without https://); a bare host name only next to its https URL.
    pub(super) issuers: Option<Vec<String>>,
    /// The token's "aud" (string or array) must contain one of these.
    pub(super) audiences: Vec<String>,
    /// The JSON Web Key Set, inline: an object or a string holding one. Give this or "remote_jwks".
    pub(super) jwks: Option<Value>,
    /// Fetch the JWKS through a proxy cluster.
    pub(super) remote_jwks: Option<RawRemoteJwks>,
    /// true: read {issuer}/.well-known/openid-configuration and follow its jwks_uri (needs remote_jwks.cluster, no uri).
    #[serde(default)]
    pub(super) discovery: bool,
    /// Allowed algorithms (default: all asymmetric ones); HMAC only when listed.
    pub(super) algorithms: Option<Vec<String>>,
    #[cfg_attr(feature = "schema", schemars(description = CLOCK_SKEW_SECONDS.describe(
        "Tolerance for exp, nbf and iat")))]
    pub(super) clock_skew_seconds: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "Refuse tokens without exp (default {}).", defaults::REQUIRE_EXPIRATION)))]
    pub(super) require_expiration: Option<bool>,
    /// Refuse tokens valid for longer (exp - iat).
    pub(super) max_lifetime_seconds: Option<u64>,
    /// Accept only RFC 9068 access tokens (typ at+jwt with exp, iat, jti, client_id and sub), so an ID token of the same issuer and audience is refused (default false).
    #[serde(default)]
    pub(super) require_access_token: bool,
    /// Where tokens are found, in order (default: Authorization: Bearer).
    pub(super) token_sources: Option<Vec<RawSource>>,
    #[cfg_attr(feature = "schema", schemars(description = MAX_TOKEN_BYTES.describe(
        "Larger tokens are refused unread")))]
    pub(super) max_token_bytes: Option<usize>,
    /// Browser sign-in with this provider (OpenID Connect code flow with PKCE), for rules with "auth": "login".
    pub(super) login: Option<RawLogin>,
}

/// A provider's browser sign-in: the OAuth client, the provider's endpoints, the session cookie.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogin {
    /// The OAuth client id registered at the provider; ID tokens must name it in "aud".
    pub(super) client_id: String,
    /// The client secret; leave out for a public client (PKCE only).
    pub(super) client_secret: Option<String>,
    /// How the secret is sent to the token endpoint: "basic" (default, client_secret_basic) or "post" (client_secret_post).
    pub(super) client_auth: Option<RawClientAuth>,
    /// Scopes asked for (default ["openid"]; "openid" is always asked for).
    pub(super) scopes: Option<Vec<String>>,
    /// The provider's authorization endpoint (absolute https URL); with token_endpoint, or leave both out to read them from {issuer}/.well-known/openid-configuration.
    pub(super) authorization_endpoint: Option<String>,
    /// The provider's token endpoint (absolute https URL), called through "cluster".
    pub(super) token_endpoint: Option<String>,
    /// The provider's end_session_endpoint, for RP-initiated logout (discovered too when the other two are).
    pub(super) end_session_endpoint: Option<String>,
    /// The proxy cluster that reaches the token endpoint (default: remote_jwks.cluster).
    pub(super) cluster: Option<String>,
    #[cfg_attr(feature = "schema", schemars(description = LOGIN_TIMEOUT_MS.describe(
        "How long the code exchange may take, in milliseconds")))]
    pub(super) timeout_ms: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "The path the provider sends the browser back to (default \"{}\"); register {{scheme}}://{{host}}{{path}} as the redirect URI.",
        defaults::CALLBACK_PATH)))]
    pub(super) callback_path: Option<String>,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "The path that signs out (default \"{}\").", defaults::LOGOUT_PATH)))]
    pub(super) logout_path: Option<String>,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "Where the browser lands after signing out (default \"{}\").", defaults::POST_LOGOUT_PATH)))]
    pub(super) post_logout_path: Option<String>,
    #[cfg_attr(feature = "schema", schemars(description = format!(
        "The session cookie (default \"{}\"); flows add -flow-..., large sessions -1, -2.", defaults::COOKIE_NAME)))]
    pub(super) cookie_name: Option<String>,
    /// The cookie's Domain (not with a __Host- name).
    pub(super) cookie_domain: Option<String>,
    /// Mark the cookies Secure (default true; a __Host- or __Secure- name needs it).
    pub(super) cookie_secure: Option<bool>,
    #[cfg_attr(feature = "schema", schemars(description = SESSION_SECONDS.describe(
        "How long a session lasts, in seconds")))]
    pub(super) session_seconds: Option<u64>,
    /// Keys that seal the cookies (AES-256-GCM): each base64 of 32 random bytes. The first seals; all open, so a new key goes first and the old one stays until its sessions have ended.
    pub(super) cookie_keys: Vec<String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Deserialize, Clone, Copy)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(super) enum RawClientAuth {
    Basic,
    Post,
}

/// A JWKS fetched through the proxy's HTTP callouts.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemoteJwks {
    /// The proxy cluster the fetch goes through.
    pub(super) cluster: String,
    /// The JWKS URL (absolute https); omit with "discovery": true.
    pub(super) uri: Option<String>,
    #[cfg_attr(feature = "schema", schemars(description = FETCH_TIMEOUT_MS.describe(
        "Fetch timeout")))]
    pub(super) timeout_ms: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = REFRESH_SECONDS.describe(
        "Refresh interval when the answer has no max-age")))]
    pub(super) refresh_seconds: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = MIN_REFRESH_SECONDS.describe(
        "Lower bound on the refresh interval")))]
    pub(super) min_refresh_seconds: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = MAX_REFRESH_SECONDS.describe(
        "Upper bound on the refresh interval")))]
    pub(super) max_refresh_seconds: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = MAX_STALE_SECONDS.describe(
        "How long keys are kept past their refresh time while the IdP fails")))]
    pub(super) max_stale_seconds: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(description = UNKNOWN_KID_REFETCH_SECONDS.describe(
        "At most one refetch for an unknown kid per this many seconds")))]
    pub(super) unknown_kid_refetch_seconds: Option<u64>,
}

/// One place a token is read from: {"header", "prefix"}, {"query"} or {"cookie"}.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    /// A request header.
    pub(super) header: Option<String>,
    /// Text before the token in the header (e.g. "Bearer ").
    pub(super) prefix: Option<String>,
    /// A query parameter.
    pub(super) query: Option<String>,
    /// A cookie.
    pub(super) cookie: Option<String>,
}

/// A rule: when it applies, and what the token must carry.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    /// Used in the decision log (default rules[i]).
    pub(super) name: Option<String>,
    /// When the rule applies (default: every request).
    #[serde(rename = "match", default)]
    pub(super) matcher: RawMatch,
    /// "required" (default), "optional" (no token is fine, a present one must be valid), "none", or "login" (a token or a browser session: browsers without one are sent to sign in, everything else gets 401).
    #[serde(default)]
    pub(super) auth: RawAuth,
    /// Names of the providers whose tokens the rule accepts (default: all).
    #[serde(default)]
    pub(super) providers: Vec<String>,
    /// Scopes against "scope" (space-delimited) and "scp" (array or string).
    #[serde(default)]
    pub(super) scopes: RawScopes,
    /// Claim conditions that must all hold.
    #[serde(default)]
    pub(super) claims: Vec<RawClaimCondition>,
    /// Tag the request for routing by the policy's "routing" section: "required" refuses (403) an identity no entry maps, "optional" forwards it untagged (default: no tag).
    #[serde(default)]
    pub(super) routing: RawRuleRouting,
}

/// Whether a rule tags its requests for routing.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(super) enum RawRuleRouting {
    #[default]
    Off,
    Required,
    Optional,
}

/// Request conditions; all given ones must hold.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    /// One of exact, prefix or regex, on the path without query.
    pub(super) path: Option<RawPath>,
    /// HTTP methods, e.g. ["GET", "HEAD"] (default: any).
    #[serde(default)]
    pub(super) methods: Vec<String>,
    /// "api.example.com" or "*.example.com", port ignored (default: any).
    #[serde(default)]
    pub(super) hosts: Vec<String>,
}

/// A path condition: exactly one of exact, prefix or regex.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPath {
    /// Exactly this path.
    pub(super) exact: Option<String>,
    /// Paths starting with this.
    pub(super) prefix: Option<String>,
    /// Paths this regex matches (anchor it to match whole paths).
    pub(super) regex: Option<String>,
}

/// Whether a rule needs a token.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(super) enum RawAuth {
    #[default]
    Required,
    Optional,
    None,
    Login,
}

/// Scopes the token must carry.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawScopes {
    /// Every one of these.
    #[serde(default)]
    pub(super) all_of: Vec<String>,
    /// At least one of these.
    #[serde(default)]
    pub(super) any_of: Vec<String>,
}

/// A claim: a name or dotted path ("realm_access.roles"; a claim whose whole name matches wins), or an array of object keys for names with dots.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(super) enum RawClaimPath {
    Dotted(String),
    Segments(Vec<String>),
}

/// A condition on one claim, with exactly one test.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaimCondition {
    /// The claim.
    pub(super) claim: RawClaimPath,
    /// The value (or an element of an array claim) equals this.
    pub(super) equals: Option<Value>,
    /// Same as any_of.
    pub(super) one_of: Option<Vec<Value>>,
    /// The value (or an element) is one of these.
    pub(super) any_of: Option<Vec<Value>>,
    /// Every one of these is the value or one of its elements.
    pub(super) all_of: Option<Vec<Value>>,
    /// The value (or an element) matches this glob: * any run, ? one character.
    pub(super) glob: Option<String>,
    /// The claim is present (true) or absent (false).
    pub(super) present: Option<bool>,
}

/// A claim copied into a request header on allow (arrays joined with ",", objects as JSON).
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaimHeader {
    /// The claim.
    pub(super) claim: RawClaimPath,
    /// The header; stripped from every inbound request.
    pub(super) header: String,
}
