//! Compiles `routing`: the route tag each verified identity gets, and the header that
//! carries it upstream.

use super::headers::owned_header_name;
use super::raw::RawRouting;
use super::rule::compile_condition;
use super::{defaults, ConfigError, JsonPath};
use crate::policy::{ClaimHeader, Provider, RouteTag, Routing};

/// Longest tag: it becomes a header value, an HAProxy backend name and an Envoy match.
const MAX_TAG_BYTES: usize = 64;

/// The routing section; `claim_headers` and `payload_header` are the other headers the
/// plugin owns, which the tag's header must not be.
pub(super) fn compile(
    raw: RawRouting,
    providers: &[Provider],
    claim_headers: &[ClaimHeader],
    payload_header: Option<&str>,
) -> Result<Routing, ConfigError> {
    let at = JsonPath::root("routing");
    let header_at = at.field("header");
    let header = owned_header_name(
        &header_at,
        raw.header.as_deref().unwrap_or(defaults::ROUTE_HEADER),
        providers,
    )?;
    if claim_headers.iter().any(|c| c.header == header) || payload_header == Some(&header) {
        return Err(header_at.invalid(format!(
            "\"{header}\" also carries claims: the route tag needs a header of its own"
        )));
    }
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = at.field("routes").index(i);
            let (t, when) = r.split();
            Ok(RouteTag {
                tag: tag(&at.field("tag"), t)?,
                when: compile_condition(&at, when)?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let default = raw
        .default
        .map(|t| tag(&at.field("default"), t))
        .transpose()?;
    if routes.is_empty() && default.is_none() {
        return Err(at.invalid("give \"routes\", a \"default\" tag, or both"));
    }
    Ok(Routing {
        header,
        routes,
        default,
    })
}

/// A tag is a plain word, so it is the same literal in a header, an Envoy route match and
/// an HAProxy backend name.
fn tag(at: &JsonPath, tag: String) -> Result<String, ConfigError> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES || !tag.bytes().all(plain) {
        return Err(at.invalid(format!(
            "a tag is 1 to {MAX_TAG_BYTES} letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(tag)
}
