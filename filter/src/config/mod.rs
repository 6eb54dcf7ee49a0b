//! The plugin configuration (JSON), compiled into a [`Policy`].
//!
//! [`raw`] reads the document (and describes it as a JSON Schema); a compiler per part
//! turns it into the policy: [`provider`] (issuers, audiences, token limits and sources)
//! with [`key_source`] (inline, fetched or discovered keys), [`rule`], and [`headers`]
//! (claim headers and the header-name rules). [`defaults`] is the one home of every default.
//!
//! Every error names the JSON path of the offending field ([`JsonPath`]), so `on_configure`
//! can fail the plugin start with a message a user can act on.

pub(crate) mod defaults;
mod headers;
mod key_source;
mod login;
mod provider;
mod raw;
mod routing;
mod rule;
#[cfg(feature = "schema")]
mod schema;

pub use raw::{Crypto, PathMode};
#[cfg(feature = "schema")]
pub use schema::json_schema;

use crate::policy::{Mode, Policy};
use raw::{RawConfig, RawMode};
use std::fmt;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not parse, or a field has the wrong type or name.
    #[error("{path}: {message}")]
    Syntax {
        /// Where in the document, e.g. `providers.okta.issuer`.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A field parses but its value cannot work.
    #[error("{path}: {message}")]
    Invalid {
        /// Where in the document, e.g. `providers.okta.issuer`.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// The place of a field in the document, as errors name it: `providers.okta.remote_jwks.uri`,
/// `rules[2].claims[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath(String);

impl JsonPath {
    /// A top-level field.
    pub(crate) fn root(field: &str) -> JsonPath {
        JsonPath(field.to_string())
    }

    /// A member of this object (a provider name is a member of `providers`, as written).
    pub(crate) fn field(&self, name: &str) -> JsonPath {
        JsonPath(format!("{}.{name}", self.0))
    }

    /// An element of this array.
    pub(crate) fn index(&self, i: usize) -> JsonPath {
        JsonPath(format!("{}[{i}]", self.0))
    }

    /// The error for an unusable value here.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.0.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default bound on a token's size.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = defaults::MAX_TOKEN_BYTES.default;
/// Default clock skew tolerance.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = defaults::CLOCK_SKEW_SECONDS.default;
/// Default number of verified tokens remembered.
pub const DEFAULT_CACHE_SIZE: usize = defaults::CACHE_SIZE.default;

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
            // An unknown member named "" has an empty path: name the document instead.
            path: if path == "." || path == "?" || path.is_empty() {
                "configuration".into()
            } else {
                path
            },
            message: e.inner().to_string(),
        }
    })?;
    compile(raw)
}

/// Compiles the document part by part, in the order of its fields, so the first error
/// reported is the first one a reader meets.
fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let RawConfig {
        _schema,
        mode,
        realm,
        providers: raw_providers,
        rules: raw_rules,
        claim_headers,
        payload_header,
        forward_token,
        cache_size,
        crypto,
        path_mode,
        routing,
    } = raw;
    let realm = compile_realm(realm)?;
    let mut providers = Vec::new();
    let mut logins = Vec::new();
    for (name, mut p) in raw_providers {
        let raw_login = p.login.take();
        let jwks_cluster = p.remote_jwks.as_ref().map(|r| r.cluster.clone());
        let index = providers.len();
        let compiled = provider::compile(&name, p)?;
        let issuers: Vec<String> = compiled
            .iter()
            .map(|p| p.requirements.issuer.clone())
            .collect();
        providers.extend(compiled);
        if let Some(raw_login) = raw_login {
            let at = JsonPath::root("providers").field(&name).field("login");
            let issuers: Vec<&str> = issuers.iter().map(String::as_str).collect();
            let login = login::compile(&at, raw_login, index, jwks_cluster, &issuers)?;
            if logins.iter().any(|o: &crate::oidc::Login| {
                [&o.callback_path, &o.logout_path]
                    .iter()
                    .any(|p| **p == login.callback_path || **p == login.logout_path)
                    || o.cookie_name == login.cookie_name
            }) {
                return Err(at.invalid(
                    "another provider's login uses the same callback_path, logout_path or cookie_name",
                ));
            }
            logins.push(login);
        }
    }
    let rules = rule::compile_all(raw_rules, &providers, &logins, routing.is_some())?;
    let (claim_headers, payload_header) =
        headers::compile(claim_headers, payload_header, &providers)?;
    let routing = routing
        .map(|r| routing::compile(r, &providers, &claim_headers, payload_header.as_deref()))
        .transpose()?;
    let cache_size = defaults::CACHE_SIZE
        .resolve(cache_size)
        .map_err(|message| JsonPath::root("cache_size").invalid(message))?;
    Ok(Config {
        policy: Policy {
            mode: match mode {
                RawMode::Enforce => Mode::Enforce,
                RawMode::Observe => Mode::Observe,
            },
            realm,
            providers,
            rules,
            claim_headers,
            payload_header,
            forward_token,
            path_mode,
            logins,
            routing,
        },
        cache_size,
        crypto,
    })
}

/// The realm is quoted in `WWW-Authenticate`, so it cannot carry what would end the quote.
fn compile_realm(realm: Option<String>) -> Result<String, ConfigError> {
    let realm = realm.unwrap_or_else(|| defaults::REALM.into());
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(JsonPath::root("realm")
            .invalid("must be non-empty, without quotes, backslashes or control characters"));
    }
    Ok(realm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alg::Alg;
    use crate::policy::KeySource;
    use crate::token::TokenSource;
    use portcullis_testkit as testkit;
    use serde_json::json;
    use serde_json::Value;

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
             "claim_headers[0].header: \"authorization\" cannot be set by Portcullis"),
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
            e.starts_with("claim_headers[0].header: \"x-token\" cannot be set by Portcullis"),
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

    fn remote(edit: impl FnOnce(&mut Value)) -> Result<crate::jwks_fetch::FetchSettings, String> {
        let mut v = base();
        let okta = v["providers"]["okta"].as_object_mut().unwrap();
        okta.remove("jwks");
        okta.insert(
            "remote_jwks".into(),
            json!({"cluster": "okta", "uri": "https://idp.test/keys"}),
        );
        edit(&mut v);
        let c = parse(v.to_string().as_bytes()).map_err(|e| e.to_string())?;
        match &c.policy.providers[0].keys {
            KeySource::Remote(s) => Ok((**s).clone()),
            KeySource::Inline(_) => Err("inline keys".into()),
        }
    }

    #[test]
    fn json_paths_are_built_the_way_errors_name_them() {
        let p = JsonPath::root("providers")
            .field("okta.eu")
            .field("issuers")
            .index(2);
        assert_eq!(p.to_string(), "providers.okta.eu.issuers[2]");
        assert_eq!(
            p.invalid("x"),
            ConfigError::Invalid {
                path: "providers.okta.eu.issuers[2]".into(),
                message: "x".into()
            }
        );
    }

    #[test]
    fn remote_jwks_fields_default_to_the_defaults_module() {
        let s = remote(|_| {}).unwrap();
        assert_eq!(s.cluster, "okta");
        assert_eq!(s.issuer, "https://idp.test");
        let jwks = s.jwks.unwrap();
        assert_eq!(
            (jwks.authority.as_str(), jwks.path.as_str()),
            ("idp.test", "/keys")
        );
        assert_eq!(s.discovery, None);
        assert_eq!(s.timeout_ms, defaults::FETCH_TIMEOUT_MS.default);
        assert_eq!(s.refresh_seconds, defaults::REFRESH_SECONDS.default);
        assert_eq!(s.min_refresh_seconds, defaults::MIN_REFRESH_SECONDS.default);
        assert_eq!(s.max_refresh_seconds, defaults::MAX_REFRESH_SECONDS.default);
        assert_eq!(s.max_stale_seconds, defaults::MAX_STALE_SECONDS.default);
        assert_eq!(
            s.unknown_kid_refetch_seconds,
            defaults::UNKNOWN_KID_REFETCH_SECONDS.default
        );
        assert_eq!(
            (
                s.timeout_ms,
                s.refresh_seconds,
                s.min_refresh_seconds,
                s.max_refresh_seconds
            ),
            (5000, 600, 60, 86_400)
        );
        assert_eq!(
            (s.max_stale_seconds, s.unknown_kid_refetch_seconds),
            (86_400, 15)
        );
    }

    #[test]
    fn remote_jwks_fields_are_read_and_bounded() {
        let s = remote(|v| {
            v["providers"]["okta"]["remote_jwks"] = json!({
                "cluster": "okta", "uri": "https://idp.test/keys", "timeout_ms": 100,
                "refresh_seconds": 5, "min_refresh_seconds": 10, "max_refresh_seconds": 20,
                "max_stale_seconds": 7, "unknown_kid_refetch_seconds": 3
            });
        })
        .unwrap();
        // refresh_seconds is brought inside the bounds, not refused.
        assert_eq!(
            (
                s.timeout_ms,
                s.refresh_seconds,
                s.min_refresh_seconds,
                s.max_refresh_seconds
            ),
            (100, 10, 10, 20)
        );
        assert_eq!((s.max_stale_seconds, s.unknown_kid_refetch_seconds), (7, 3));
        let cases = [
            (json!({"cluster": "", "uri": "https://idp.test/k"}),
             "providers.okta.remote_jwks.cluster: must name the proxy cluster"),
            (json!({"cluster": "c"}),
             "providers.okta.remote_jwks.uri: required (or set \"discovery\": true)"),
            (json!({"cluster": "c", "uri": "http://idp.test/k"}),
             "providers.okta.remote_jwks.uri: must be an absolute https URL: http:// is only for localhost"),
            (json!({"cluster": "c", "uri": "https://u:p@idp.test/k"}),
             "providers.okta.remote_jwks.uri: must be an absolute https URL: it must not carry a user name"),
            (json!({"cluster": "c", "uri": "https://idp.test/k", "timeout_ms": 99}),
             "providers.okta.remote_jwks.timeout_ms: must be between 100 and 60000"),
            (json!({"cluster": "c", "uri": "https://idp.test/k", "min_refresh_seconds": 0}),
             "providers.okta.remote_jwks.min_refresh_seconds: must be positive and at most max_refresh_seconds"),
            (json!({"cluster": "c", "uri": "https://idp.test/k", "min_refresh_seconds": 100, "max_refresh_seconds": 99}),
             "providers.okta.remote_jwks.min_refresh_seconds: must be positive"),
        ];
        for (remote_jwks, want) in cases {
            let got = remote(|v| v["providers"]["okta"]["remote_jwks"] = remote_jwks).unwrap_err();
            assert!(got.starts_with(want), "wanted {want:?}\n   got {got:?}");
        }
    }

    #[test]
    fn discovery_reads_the_document_under_each_issuer() {
        let s = remote(|v| {
            v["providers"]["okta"]["issuer"] = json!("https://idp.test/realms/a/");
            v["providers"]["okta"]["discovery"] = json!(true);
            v["providers"]["okta"]["remote_jwks"] = json!({"cluster": "okta"});
        })
        .unwrap();
        assert_eq!(s.jwks, None);
        assert_eq!(s.issuer, "https://idp.test/realms/a/");
        let d = s.discovery.unwrap();
        assert_eq!(
            (d.authority.as_str(), d.path.as_str()),
            ("idp.test", "/realms/a/.well-known/openid-configuration")
        );
        let discovery_error = |issuers: Value| {
            remote(|v| {
                let okta = v["providers"]["okta"].as_object_mut().unwrap();
                okta.remove("issuer");
                okta.insert("issuers".into(), issuers);
                okta.insert("discovery".into(), json!(true));
                okta.insert("remote_jwks".into(), json!({"cluster": "okta"}));
            })
            .unwrap_err()
        };
        let e = discovery_error(json!([
            "https://accounts.google.com",
            "accounts.google.com"
        ]));
        assert!(
            e.starts_with("providers.okta.remote_jwks: the issuer cannot be used for discovery"),
            "{e}"
        );
        let e = discovery_error(json!(["https://idp.test/?tenant=a"]));
        assert!(
            e.starts_with("providers.okta.remote_jwks: the issuer cannot be used for discovery"),
            "{e}"
        );
        let e = remote(|v| {
            v["providers"]["okta"]["discovery"] = json!(true);
        })
        .unwrap_err();
        assert!(
            e.starts_with("providers.okta.remote_jwks.uri: with \"discovery\": true the JWKS URI comes from the discovery document"),
            "{e}"
        );
        let e = error_of(|v| v["providers"]["okta"]["discovery"] = json!(true));
        assert!(
            e.starts_with("providers.okta.discovery: discovery needs \"remote_jwks\""),
            "{e}"
        );
    }

    #[test]
    fn issuers_follow_the_url_rules_and_keep_their_spelling() {
        for (issuer, want) in [
            ("https://idp.test#x", "providers.okta.issuer: must be an absolute https URL: it must not have a fragment"),
            ("https://user@idp.test", "providers.okta.issuer: must be an absolute https URL: it must not carry a user name"),
            ("https://idp.test:0", "providers.okta.issuer: must be an absolute https URL: the port"),
            ("http://localhost.evil.test", "providers.okta.issuer: must be an absolute https URL: http:// is only for localhost"),
            ("idp.test", "providers.okta.issuer: must be an absolute https URL: it must start with https://"),
        ] {
            let e = error_of(|v| v["providers"]["okta"]["issuer"] = json!(issuer));
            assert!(e.starts_with(want), "{issuer}: {e}");
            assert!(!e.contains("user@"), "{e}");
        }
        for issuer in [
            "http://localhost:8080/realms/a",
            "http://127.0.0.1",
            "http://[::1]:9000",
            "https://IdP.Test/",
        ] {
            let mut v = base();
            v["providers"]["okta"]["issuer"] = json!(issuer);
            let c = parse(v.to_string().as_bytes()).unwrap();
            // Compared with "iss" byte for byte: kept as written, not normalized.
            assert_eq!(c.policy.providers[0].requirements.issuer, issuer);
        }
    }

    #[test]
    fn bounded_numbers_name_their_field() {
        let e = error_of(|v| {
            v.as_object_mut()
                .unwrap()
                .insert("cache_size".into(), json!(1_000_001));
        });
        assert!(e.starts_with("cache_size: must be at most 1000000"), "{e}");
        for (field, value, want) in [
            (
                "clock_skew_seconds",
                json!(3601),
                "providers.okta.clock_skew_seconds: must be at most 3600",
            ),
            (
                "max_token_bytes",
                json!(63),
                "providers.okta.max_token_bytes: must be between 64 and 65536",
            ),
            (
                "max_token_bytes",
                json!(65_537),
                "providers.okta.max_token_bytes: must be between 64 and 65536",
            ),
            (
                "max_lifetime_seconds",
                json!(0),
                "providers.okta.max_lifetime_seconds: must be positive",
            ),
        ] {
            let e = error_of(|v| v["providers"]["okta"][field] = value);
            assert!(e.starts_with(want), "{e}");
        }
        let mut v = base();
        v["cache_size"] = json!(0);
        v["providers"]["okta"]["clock_skew_seconds"] = json!(3600);
        v["providers"]["okta"]["max_token_bytes"] = json!(64);
        let c = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.cache_size, 0);
        assert_eq!(c.policy.providers[0].requirements.clock_skew, 3600);
        assert_eq!(c.policy.providers[0].requirements.max_token_bytes, 64);
        assert_eq!(DEFAULT_MAX_TOKEN_BYTES, 8192);
        assert_eq!(DEFAULT_CLOCK_SKEW_SECONDS, 60);
        assert_eq!(DEFAULT_CACHE_SIZE, 10_000);
    }
}
