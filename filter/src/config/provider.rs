//! Compiles `providers.<name>`: which issuers and audiences its tokens carry, the limits
//! they are checked against, and where they are found. Its keys are [`super::key_source`]'s.

use super::defaults;
use super::headers::header_name;
use super::key_source;
use super::raw::{RawProvider, RawSource};
use super::{ConfigError, JsonPath};
use crate::alg::Alg;
use crate::policy::Provider;
use crate::token::TokenSource;
use crate::url::HttpsUrl;
use crate::verify::Requirements;

/// What an issuer must be: the start of the message for one that is not.
const NOT_A_URL: &str = "must be an absolute https URL";

/// One accepted `iss`, with its URL when it is one (a bare host name, accepted only beside
/// its own URL, is not).
pub(super) struct Issuer {
    /// The text as configured: compared with a token's `iss` byte for byte.
    pub(super) text: String,
    /// The parsed URL, for discovery.
    pub(super) url: Option<HttpsUrl>,
}

/// Compiles one configured provider into one [`Provider`] per accepted issuer: the engine
/// picks a provider by the token's `iss`, so several issuers become several entries that
/// share the name, audiences, sources and keys (remote keys are fetched once per issuer).
pub(super) fn compile(name: &str, p: RawProvider) -> Result<Vec<Provider>, ConfigError> {
    let RawProvider {
        issuer,
        issuers,
        audiences,
        jwks,
        remote_jwks,
        discovery,
        algorithms,
        clock_skew_seconds,
        require_expiration,
        max_lifetime_seconds,
        require_access_token,
        token_sources,
        max_token_bytes,
        login: _,
    } = p;
    let at = JsonPath::root("providers").field(name);
    check_name(&at, name)?;
    let issuers = compile_issuers(&at, issuer, issuers)?;
    let audiences = compile_audiences(&at.field("audiences"), audiences)?;
    let algorithms = compile_algorithms(&at.field("algorithms"), algorithms)?;
    let clock_skew = defaults::CLOCK_SKEW_SECONDS
        .resolve(clock_skew_seconds)
        .map_err(|message| at.field("clock_skew_seconds").invalid(message))?;
    if max_lifetime_seconds == Some(0) {
        return Err(at.field("max_lifetime_seconds").invalid("must be positive"));
    }
    let max_token_bytes = defaults::MAX_TOKEN_BYTES
        .resolve(max_token_bytes)
        .map_err(|message| at.field("max_token_bytes").invalid(message))?;
    let sources = compile_sources(&at.field("token_sources"), token_sources)?;
    let keys = key_source::compile(&at, jwks, remote_jwks, discovery, &issuers, &algorithms)?;
    let requirements = |issuer: String| Requirements {
        issuer,
        audiences: audiences.clone(),
        algorithms: algorithms.clone(),
        clock_skew,
        require_expiration: require_expiration.unwrap_or(defaults::REQUIRE_EXPIRATION),
        max_lifetime: max_lifetime_seconds,
        max_token_bytes,
        require_access_token,
    };
    Ok(issuers
        .into_iter()
        .zip(keys)
        .map(|(issuer, keys)| Provider {
            name: name.to_string(),
            requirements: requirements(issuer.text),
            sources: sources.clone(),
            keys,
        })
        .collect())
}

/// Provider names appear in JSON paths, logs and metrics, so they stay plain.
fn check_name(at: &JsonPath, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(at.invalid("provider names use letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// The accepted `iss` values. Some identity providers write one tenant's issuer two ways
/// (Azure AD's v1 and v2 endpoints, Google with and without `https://`), so `issuers` lists
/// them; a bare host name is accepted only next to its https URL, so a typo still fails.
fn compile_issuers(
    at: &JsonPath,
    issuer: Option<String>,
    issuers: Option<Vec<String>>,
) -> Result<Vec<Issuer>, ConfigError> {
    match (issuer, issuers) {
        (Some(_), Some(_)) => {
            Err(at.invalid("give either \"issuer\" or \"issuers\" (a list), not both"))
        }
        (None, None) => Err(at.field("issuer").invalid(
            "required: the exact \"iss\" of the provider's tokens (or \"issuers\", a list of them)",
        )),
        (Some(text), None) => match HttpsUrl::parse(&text) {
            Ok(url) => Ok(vec![Issuer {
                text,
                url: Some(url),
            }]),
            Err(e) => Err(at.field("issuer").invalid(format!("{NOT_A_URL}: {e}"))),
        },
        (None, Some(list)) => compile_issuer_list(&at.field("issuers"), list),
    }
}

fn compile_issuer_list(at: &JsonPath, list: Vec<String>) -> Result<Vec<Issuer>, ConfigError> {
    if list.is_empty() {
        return Err(at.invalid("must list at least one issuer"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let path = at.index(i);
        if list[..i].contains(text) {
            return Err(path.invalid(format!("\"{text}\" is listed twice")));
        }
        let url = match HttpsUrl::parse(text) {
            Ok(url) => Some(url),
            Err(_) if bare_host(text) && list.contains(&format!("https://{text}")) => None,
            Err(e) => {
                return Err(path.invalid(format!(
                    "{NOT_A_URL}: {e}; a bare host name (\"accounts.google.com\") only next to its https URL"
                )))
            }
        };
        out.push(Issuer {
            text: text.clone(),
            url,
        });
    }
    Ok(out)
}

/// A bare host name, as Google writes `iss` in some ID tokens (`accounts.google.com`).
fn bare_host(issuer: &str) -> bool {
    issuer.contains('.')
        && issuer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Without an audience, a token minted for another service of the same IdP would pass.
fn compile_audiences(at: &JsonPath, audiences: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if audiences.is_empty() {
        return Err(at.invalid(
            "must list at least one audience (a token minted for another service must not pass)",
        ));
    }
    if let Some(i) = audiences.iter().position(String::is_empty) {
        return Err(at.index(i).invalid("must not be empty"));
    }
    Ok(audiences)
}

fn compile_algorithms(
    at: &JsonPath,
    algorithms: Option<Vec<String>>,
) -> Result<Vec<Alg>, ConfigError> {
    let Some(list) = algorithms else {
        return Ok(defaults::algorithms());
    };
    if list.is_empty() {
        return Err(at.invalid("must list at least one algorithm"));
    }
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<Alg>()
                .map_err(|e| at.index(i).invalid(e.to_string()))
        })
        .collect()
}

fn compile_sources(
    at: &JsonPath,
    sources: Option<Vec<RawSource>>,
) -> Result<Vec<TokenSource>, ConfigError> {
    let Some(list) = sources else {
        return Ok(defaults::token_sources());
    };
    if list.is_empty() {
        return Err(at.invalid("must list at least one source"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, s)| compile_source(&at.index(i), s))
        .collect()
}

fn compile_source(at: &JsonPath, s: RawSource) -> Result<TokenSource, ConfigError> {
    match (s.header, s.query, s.cookie) {
        (Some(h), None, None) => Ok(TokenSource::Header {
            name: header_name(&at.field("header"), &h)?,
            prefix: s.prefix.filter(|p| !p.is_empty()),
        }),
        (None, Some(q), None) if s.prefix.is_none() && !q.is_empty() => {
            Ok(TokenSource::Query { name: q })
        }
        (None, None, Some(c)) if s.prefix.is_none() && !c.is_empty() => {
            Ok(TokenSource::Cookie { name: c })
        }
        _ => Err(at.invalid(
            "give exactly one of \"header\" (with optional \"prefix\"), \"query\" or \"cookie\", non-empty",
        )),
    }
}
