//! Compiles `claim_headers` and `payload_header`, and holds the rules for header names
//! that token sources share.

use super::raw::RawClaimHeader;
use super::rule::claim_path;
use super::{ConfigError, JsonPath};
use crate::policy::{ClaimHeader, Provider};
use crate::token::TokenSource;

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

/// The claim headers and the payload header. Each is stripped from every inbound request,
/// so none may be a header a provider reads its token from.
pub(super) fn compile(
    claim_headers: Vec<RawClaimHeader>,
    payload_header: Option<String>,
    providers: &[Provider],
) -> Result<(Vec<ClaimHeader>, Option<String>), ConfigError> {
    let at = JsonPath::root("claim_headers");
    let mut compiled: Vec<ClaimHeader> = Vec::new();
    for (i, h) in claim_headers.into_iter().enumerate() {
        let at = at.index(i);
        let header = owned_header_name(&at.field("header"), &h.header, providers)?;
        if compiled.iter().any(|c| c.header == header) {
            return Err(at
                .field("header")
                .invalid(format!("\"{header}\" is used twice")));
        }
        compiled.push(ClaimHeader {
            path: claim_path(&at.field("claim"), h.claim)?,
            header,
        });
    }
    let payload_header = match payload_header {
        None => None,
        Some(h) => {
            let at = JsonPath::root("payload_header");
            let name = owned_header_name(&at, &h, providers)?;
            if compiled.iter().any(|c| c.header == name) {
                return Err(at.invalid(format!("\"{name}\" is also a claim header")));
            }
            Some(name)
        }
    };
    Ok((compiled, payload_header))
}

/// A token character (RFC 9110 §5.6.2): what header names and methods are made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header name, lower-cased as proxy-wasm hosts present them.
pub(super) fn header_name(at: &JsonPath, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(at.invalid(format!("\"{name}\" is not a valid header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// A header Portcullis sets and strips: it must not be one the proxy needs, or one a
/// provider reads its token from.
pub(super) fn owned_header_name(
    at: &JsonPath,
    name: &str,
    providers: &[Provider],
) -> Result<String, ConfigError> {
    let name = header_name(at, name)?;
    let token_header = providers
        .iter()
        .flat_map(|p| p.sources.iter())
        .any(|s| matches!(s, TokenSource::Header { name: n, .. } if *n == name));
    if RESERVED_HEADERS.contains(&name.as_str()) || token_header {
        return Err(at.invalid(format!(
            "\"{name}\" cannot be set by Portcullis: it is stripped from every request and is needed elsewhere"
        )));
    }
    Ok(name)
}
