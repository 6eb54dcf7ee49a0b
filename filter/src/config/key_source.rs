//! Compiles where a provider's keys come from: `jwks` (inline), `remote_jwks` (fetched from
//! a URL through a proxy cluster), or `remote_jwks` with `discovery` (the URL read from the
//! issuer's OpenID Connect discovery document).

use super::defaults;
use super::provider::Issuer;
use super::raw::RawRemoteJwks;
use super::{ConfigError, JsonPath};
use crate::alg::Alg;
use crate::jwks_fetch::{Endpoint, FetchSettings};
use crate::keys::KeySet;
use crate::policy::KeySource;
use crate::url::HttpsUrl;
use serde_json::Value;

/// One key source per issuer, in the order of `issuers`. Inline keys are shared; remote
/// keys are fetched per issuer, since with discovery each issuer names its own JWKS.
pub(super) fn compile(
    at: &JsonPath,
    jwks: Option<Value>,
    remote_jwks: Option<RawRemoteJwks>,
    discovery: bool,
    issuers: &[Issuer],
    algorithms: &[Alg],
) -> Result<Vec<KeySource>, ConfigError> {
    match (jwks, remote_jwks) {
        (Some(_), Some(_)) => {
            Err(at.invalid("give either \"jwks\" (inline keys) or \"remote_jwks\", not both"))
        }
        (None, None) => Err(at.field("jwks").invalid(
            "required: the provider's JSON Web Key Set, inline, or \"remote_jwks\" to fetch it",
        )),
        (Some(_), None) if discovery => Err(at
            .field("discovery")
            .invalid("discovery needs \"remote_jwks\" (at least its \"cluster\")")),
        (Some(v), None) => {
            let set = inline_keys(&at.field("jwks"), v, algorithms)?;
            Ok(vec![KeySource::Inline(set); issuers.len()])
        }
        (None, Some(r)) => {
            let at = at.field("remote_jwks");
            let shared = compile_remote(&at, r, discovery)?;
            issuers
                .iter()
                .map(|issuer| {
                    let discovery = discovery
                        .then(|| discovery_endpoint(&at, issuer))
                        .transpose()?;
                    Ok(KeySource::Remote(Box::new(FetchSettings {
                        discovery,
                        issuer: issuer.text.clone(),
                        ..shared.clone()
                    })))
                })
                .collect()
        }
    }
}

/// `jwks`: an object, or a string holding one (as some tools write it).
fn inline_keys(at: &JsonPath, v: Value, algorithms: &[Alg]) -> Result<KeySet, ConfigError> {
    let document = match v {
        Value::String(s) => s.into_bytes(),
        other @ Value::Object(_) => other.to_string().into_bytes(),
        _ => return Err(at.invalid("must be a JWKS object or a string holding one")),
    };
    let (set, issues) =
        KeySet::from_jwks(&document, algorithms).map_err(|e| at.invalid(e.to_string()))?;
    // Every key must load: a key that is skipped at startup is a mistake nobody would see.
    if let Some(issue) = issues.first() {
        return Err(at
            .field("keys")
            .index(issue.index)
            .invalid(issue.to_string()));
    }
    Ok(set)
}

/// The settings every issuer of the provider shares, with `issuer` and `discovery` left
/// empty: [`compile`] fills them in per issuer.
fn compile_remote(
    at: &JsonPath,
    r: RawRemoteJwks,
    discovery: bool,
) -> Result<FetchSettings, ConfigError> {
    let RawRemoteJwks {
        cluster,
        uri,
        timeout_ms,
        refresh_seconds,
        min_refresh_seconds,
        max_refresh_seconds,
        max_stale_seconds,
        unknown_kid_refetch_seconds,
    } = r;
    if cluster.is_empty() {
        return Err(at
            .field("cluster")
            .invalid("must name the proxy cluster the fetch goes through"));
    }
    let jwks = jwks_endpoint(&at.field("uri"), uri, discovery)?;
    let timeout_ms = defaults::FETCH_TIMEOUT_MS
        .resolve(timeout_ms)
        .map_err(|message| at.field("timeout_ms").invalid(message))?;
    let (min_refresh_seconds, max_refresh_seconds) = refresh_bounds(
        at,
        min_refresh_seconds.unwrap_or(defaults::MIN_REFRESH_SECONDS.default),
        max_refresh_seconds.unwrap_or(defaults::MAX_REFRESH_SECONDS.default),
    )?;
    Ok(FetchSettings {
        cluster,
        jwks,
        discovery: None,
        issuer: String::new(),
        timeout_ms,
        // A refresh interval outside the bounds is brought inside them, as a max-age is.
        refresh_seconds: refresh_seconds
            .unwrap_or(defaults::REFRESH_SECONDS.default)
            .clamp(min_refresh_seconds, max_refresh_seconds),
        min_refresh_seconds,
        max_refresh_seconds,
        max_stale_seconds: max_stale_seconds.unwrap_or(defaults::MAX_STALE_SECONDS.default),
        unknown_kid_refetch_seconds: unknown_kid_refetch_seconds
            .unwrap_or(defaults::UNKNOWN_KID_REFETCH_SECONDS.default),
    })
}

/// `remote_jwks.uri`: given exactly when the JWKS is not found by discovery.
fn jwks_endpoint(
    at: &JsonPath,
    uri: Option<String>,
    discovery: bool,
) -> Result<Option<Endpoint>, ConfigError> {
    match (uri, discovery) {
        (Some(_), true) => Err(at.invalid(
            "with \"discovery\": true the JWKS URI comes from the discovery document; remove it",
        )),
        (None, false) => Err(at.invalid("required (or set \"discovery\": true)")),
        (Some(uri), false) => match HttpsUrl::parse(&uri) {
            Ok(url) => Ok(Some(Endpoint::from(&url))),
            Err(e) => Err(at.invalid(format!("must be an absolute https URL: {e}"))),
        },
        (None, true) => Ok(None),
    }
}

/// The lower bound must leave room below the upper one; zero would let `max-age: 0` turn
/// every poll into a fetch.
fn refresh_bounds(at: &JsonPath, min: u64, max: u64) -> Result<(u64, u64), ConfigError> {
    if min == 0 || min > max {
        return Err(at
            .field("min_refresh_seconds")
            .invalid("must be positive and at most max_refresh_seconds"));
    }
    Ok((min, max))
}

/// The issuer's discovery document, which must name the same issuer when it is read.
fn discovery_endpoint(at: &JsonPath, issuer: &Issuer) -> Result<Endpoint, ConfigError> {
    const CANNOT: &str = "the issuer cannot be used for discovery";
    let Some(url) = &issuer.url else {
        return Err(at.invalid(format!("{CANNOT}: \"{}\" is not a URL", issuer.text)));
    };
    match url.openid_configuration() {
        Some(document) => Ok(Endpoint::from(&document)),
        None => Err(at.invalid(format!(
            "{CANNOT}: it has a query, and discovery appends to the path"
        ))),
    }
}
