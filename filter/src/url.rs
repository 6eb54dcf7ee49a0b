//! The one URL type of a policy: every URL it holds (issuers, JWKS, discovery, and the
//! token, authorization and introspection endpoints to come) is an [`HttpsUrl`], checked
//! once when it is parsed and never re-split afterwards.
//!
//! The rules are deliberately narrower than RFC 3986: a URL Portcullis fetches from or
//! compares with must have one reading. So no user name or password (`user@host` is a
//! classic way to make a URL look like it points elsewhere), no fragment (it never reaches
//! the server, so a configured one only hides a mistake), no percent-encoded or
//! non-ASCII host, and a port that is a number.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// Longest URL accepted. Real issuer and JWKS URLs are well under 200 bytes; the bound
/// keeps a hostile discovery document from handing the fetcher a megabyte of `:path`.
pub const MAX_URL_BYTES: usize = 4096;

/// Longest host name (RFC 1035 §2.3.4, in its dotted form).
const MAX_HOST_BYTES: usize = 253;

/// The hosts plain `http` is allowed for: a local identity provider in development or a
/// sidecar on the same machine, where TLS adds nothing.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Why a text is not an [`HttpsUrl`]. The messages never repeat the URL: a mistyped one
/// could carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `https://…` or `http://…`.
    #[error("it must start with https:// (http:// only for localhost, 127.0.0.1 or [::1])")]
    Scheme,
    /// `http://` to a host that is not the loopback.
    #[error("http:// is only for localhost, 127.0.0.1 or [::1]; use https:// for {host}")]
    PlainHttp {
        /// The host that was named.
        host: String,
    },
    /// Nothing between `://` and the path.
    #[error("it has no host")]
    NoHost,
    /// `user:password@host`.
    #[error("it must not carry a user name or password (\"…@\" before the host)")]
    Userinfo,
    /// `#fragment`.
    #[error("it must not have a fragment (\"#…\")")]
    Fragment,
    /// Spaces, tabs, line breaks or other control characters.
    #[error("it must not contain whitespace or control characters")]
    Whitespace,
    /// A host with characters outside letters, digits, `-`, `_` and `.`, or an empty label.
    #[error("\"{host}\" is not a host name (letters, digits, '-', '_' and '.', or an IP address)")]
    Host {
        /// The host as written.
        host: String,
    },
    /// A host that is not ASCII.
    #[error("an internationalized host name must be written in its ASCII form (\"xn--…\")")]
    NonAsciiHost,
    /// `[…]` that is not an IPv6 address.
    #[error("\"{host}\" is not an IPv6 address in brackets, like [2001:db8::1]")]
    Ipv6 {
        /// The bracketed host as written.
        host: String,
    },
    /// A port that is empty, not a number, 0 or above 65535.
    #[error("the port after ':' must be a number from 1 to 65535")]
    Port,
    /// Longer than [`MAX_URL_BYTES`].
    #[error("it is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
}

/// An absolute `https` URL, or `http` to a loopback host, parsed once.
///
/// It keeps the text it was parsed from ([`HttpsUrl::as_str`]): an issuer is compared with
/// a token's `iss` byte for byte, so its spelling matters even where two spellings name the
/// same resource. The parts are for making requests: [`HttpsUrl::authority`] with the host
/// lower-cased, and [`HttpsUrl::path_and_query`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpsUrl {
    text: String,
    tls: bool,
    host: String,
    port: Option<u16>,
    authority: String,
    path: String,
    query: Option<String>,
}

impl HttpsUrl {
    /// Parses an absolute `https://` URL (`http://` only for localhost, 127.0.0.1 and
    /// `[::1]`).
    pub fn parse(text: &str) -> Result<HttpsUrl, UrlError> {
        if text.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Whitespace);
        }
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(UrlError::Scheme);
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (authority, path_and_query) =
            rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        // Any '@' in the authority is userinfo, however it is disguised.
        if authority.contains('@') {
            return Err(UrlError::Userinfo);
        }
        let (host, port) = split_host_port(authority)?;
        if !tls && !LOOPBACK_HOSTS.contains(&host.as_str()) {
            return Err(UrlError::PlainHttp { host });
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Ok(HttpsUrl {
            text: text.to_string(),
            tls,
            host,
            port,
            authority,
            path: path.to_string(),
            query,
        })
    }

    /// The URL exactly as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Whether the scheme is `https` (the alternative is `http` to a loopback host).
    pub fn is_https(&self) -> bool {
        self.tls
    }

    /// The host, lower-cased; an IPv6 address keeps its brackets (`[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when the URL names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host[:port]`, as a request's `:authority` or `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path without the query; `/` when the URL has none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The path and query, as a request's `:path`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }

    /// Whether the host is localhost, 127.0.0.1 or `[::1]`.
    pub fn is_loopback(&self) -> bool {
        LOOPBACK_HOSTS.contains(&self.host.as_str())
    }

    /// The OpenID Connect discovery document of this URL as an issuer: its path without a
    /// trailing `/`, then `/.well-known/openid-configuration` (OpenID Connect Discovery §4).
    /// `None` for a URL with a query, where the spec says nothing about where it would go.
    pub fn openid_configuration(&self) -> Option<HttpsUrl> {
        const SUFFIX: &str = "/.well-known/openid-configuration";
        if self.query.is_some() {
            return None;
        }
        let mut text = self.text.trim_end_matches('/').to_string();
        text.push_str(SUFFIX);
        let mut path = self.path.trim_end_matches('/').to_string();
        path.push_str(SUFFIX);
        if text.len() > MAX_URL_BYTES {
            return None;
        }
        Some(HttpsUrl {
            text,
            path,
            ..self.clone()
        })
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HttpsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<HttpsUrl, UrlError> {
        HttpsUrl::parse(s)
    }
}

/// Splits `host[:port]` and checks both; the host comes back lower-cased.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::NoHost);
    }
    let (host, port) = if authority.starts_with('[') {
        // An IPv6 literal has colons of its own: the port can only follow the ']'.
        let Some(end) = authority.find(']') else {
            return Err(UrlError::Ipv6 {
                host: authority.to_string(),
            });
        };
        let (host, after) = authority.split_at(end + 1);
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::Port)?),
        };
        (ipv6_host(host)?, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (name_host(host)?, port)
    };
    Ok((host, port.map(parse_port).transpose()?))
}

/// `[…]`, checked by the standard library's IPv6 parser, lower-cased. Zone identifiers
/// (`%eth0`) are refused: they mean nothing to another machine.
fn ipv6_host(bracketed: &str) -> Result<String, UrlError> {
    let inner = bracketed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or_default();
    if inner.parse::<Ipv6Addr>().is_err() {
        return Err(UrlError::Ipv6 {
            host: bracketed.to_string(),
        });
    }
    Ok(bracketed.to_ascii_lowercase())
}

/// A DNS name or an IPv4 address, lower-cased.
fn name_host(host: &str) -> Result<String, UrlError> {
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if !host.is_ascii() {
        return Err(UrlError::NonAsciiHost);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // One trailing dot is the fully qualified form of the same name.
    let labels = host.strip_suffix('.').unwrap_or(host);
    if host.len() > MAX_HOST_BYTES || !labels.split('.').all(label_ok) {
        return Err(UrlError::Host {
            host: host.to_string(),
        });
    }
    Ok(host.to_ascii_lowercase())
}

/// 1 to 65535, digits only (no sign, no spaces, no empty port).
fn parse_port(port: &str) -> Result<u16, UrlError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::Port);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::Port),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, String, bool) {
        let url = HttpsUrl::parse(text).unwrap();
        (
            url.authority().to_string(),
            url.path_and_query(),
            url.is_loopback(),
        )
    }

    fn error(text: &str) -> UrlError {
        HttpsUrl::parse(text).unwrap_err()
    }

    #[test]
    fn an_https_url_splits_into_authority_and_path() {
        let url = HttpsUrl::parse("https://Login.Example.com:8443/T/keys?v=2").unwrap();
        assert_eq!(url.as_str(), "https://Login.Example.com:8443/T/keys?v=2");
        assert_eq!(url.to_string(), url.as_str());
        assert_eq!(url.scheme(), "https");
        assert!(url.is_https());
        assert_eq!(url.host(), "login.example.com");
        assert_eq!(url.port(), Some(8443));
        assert_eq!(url.authority(), "login.example.com:8443");
        assert_eq!(url.path(), "/T/keys");
        assert_eq!(url.query(), Some("v=2"));
        assert_eq!(url.path_and_query(), "/T/keys?v=2");
        assert!(!url.is_loopback());
    }

    #[test]
    fn a_missing_path_is_the_root() {
        assert_eq!(
            parts("https://idp.test"),
            ("idp.test".into(), "/".into(), false)
        );
        assert_eq!(parts("https://idp.test?a=b").1, "/?a=b");
        assert_eq!(parts("https://idp.test/").1, "/");
        assert_eq!(
            HttpsUrl::parse("https://idp.test?").unwrap().query(),
            Some("")
        );
    }

    #[test]
    fn plain_http_is_only_for_the_loopback() {
        assert_eq!(
            parts("http://localhost:8080/keys"),
            ("localhost:8080".into(), "/keys".into(), true)
        );
        assert_eq!(parts("http://127.0.0.1/keys").0, "127.0.0.1");
        assert_eq!(
            parts("http://[::1]:9000/k"),
            ("[::1]:9000".into(), "/k".into(), true)
        );
        assert_eq!(parts("http://LocalHost/").0, "localhost");
        assert_eq!(
            HttpsUrl::parse("http://localhost").unwrap().scheme(),
            "http"
        );
        for text in [
            "http://idp.test/keys",
            "http://localhost.evil.test/",
            "http://127.0.0.2/",
            "http://127.0.0.1.evil.test/",
            "http://[::2]/",
            "http://0.0.0.0/",
        ] {
            assert!(matches!(error(text), UrlError::PlainHttp { .. }), "{text}");
        }
        assert_eq!(
            error("http://idp.test/").to_string(),
            "http:// is only for localhost, 127.0.0.1 or [::1]; use https:// for idp.test"
        );
    }

    #[test]
    fn an_ipv6_host_keeps_its_brackets_and_its_port() {
        let url = HttpsUrl::parse("https://[2001:DB8::1]:8443/jwks").unwrap();
        assert_eq!(url.host(), "[2001:db8::1]");
        assert_eq!(url.authority(), "[2001:db8::1]:8443");
        assert!(!url.is_loopback());
        assert_eq!(
            HttpsUrl::parse("https://[::1]").unwrap().authority(),
            "[::1]"
        );
        for text in [
            "https://[::1",
            "https://[not-v6]/",
            "https://[fe80::1%25eth0]/",
            "https://[]/",
            "https://[::1]x/",
        ] {
            let e = error(text);
            assert!(
                matches!(e, UrlError::Ipv6 { .. } | UrlError::Port),
                "{text}: {e:?}"
            );
        }
        assert_eq!(error("https://[::1]:/"), UrlError::Port);
    }

    #[test]
    fn other_schemes_and_relative_urls_are_refused() {
        for text in [
            "idp.test",
            "accounts.google.com",
            "ftp://idp.test/",
            "HTTPS://idp.test/",
            "//idp.test/keys",
            "/keys",
            "https:/idp.test",
            "https:idp.test",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(error(text), UrlError::Scheme, "{text}");
        }
    }

    #[test]
    fn userinfo_is_refused_however_it_is_disguised() {
        for text in [
            "https://user@idp.test/",
            "https://user:secret@idp.test/",
            "https://idp.test@evil.test/",
            "https://@idp.test/",
            "http://localhost@evil.test/",
            "http://evil.test@localhost/",
        ] {
            assert_eq!(error(text), UrlError::Userinfo, "{text}");
        }
        // A '@' in the path or query is not userinfo.
        assert_eq!(parts("https://idp.test/a@b?c=d@e").1, "/a@b?c=d@e");
        // The message does not repeat the password.
        assert!(!error("https://u:hunter2@idp.test/")
            .to_string()
            .contains("hunter2"));
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for (text, want) in [
            ("https://", UrlError::NoHost),
            ("https:///keys", UrlError::NoHost),
            ("https://?x", UrlError::NoHost),
            ("https://:443/", UrlError::NoHost),
            ("https://idp.test#frag", UrlError::Fragment),
            ("https://idp.test/keys#", UrlError::Fragment),
            ("https://idp.test/a b", UrlError::Whitespace),
            ("https://idp.test/\nHost: evil", UrlError::Whitespace),
            ("https://idp.test\u{0}/", UrlError::Whitespace),
            ("https://idp.test\u{a0}/", UrlError::Whitespace),
            ("https://bücher.test/", UrlError::NonAsciiHost),
            ("https://idp.test:0/", UrlError::Port),
            ("https://idp.test:65536/", UrlError::Port),
            ("https://idp.test:99999999999999999999/", UrlError::Port),
            ("https://idp.test:+443/", UrlError::Port),
            ("https://idp.test:/", UrlError::Port),
            ("https://idp.test:443:443/", UrlError::Port),
            ("https://idp.test:http/", UrlError::Port),
        ] {
            assert_eq!(error(text), want, "{text}");
        }
        for text in [
            "https://evil.test\\@idp.test/",
            "https://idp..test/",
            "https://.idp.test/",
            "https://idp.test../",
            "https://idp%2etest/",
            "https://idp.test;x/",
            "https://*.idp.test/",
        ] {
            assert!(
                matches!(error(text), UrlError::Host { .. } | UrlError::Userinfo),
                "{text}"
            );
        }
        let long_label = format!("https://{}.test/", "a".repeat(260));
        assert!(matches!(error(&long_label), UrlError::Host { .. }));
        let long = format!("https://idp.test/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(error(&long), UrlError::TooLong);
    }

    #[test]
    fn hosts_that_are_unusual_but_valid_are_kept() {
        assert_eq!(parts("https://idp.test.:443/").0, "idp.test.:443");
        assert_eq!(parts("https://my_idp:8443/").0, "my_idp:8443");
        assert_eq!(parts("https://xn--bcher-kva.test/").0, "xn--bcher-kva.test");
        assert_eq!(parts("https://10.0.0.1/").0, "10.0.0.1");
        assert_eq!(
            HttpsUrl::parse("https://idp.test:00443/").unwrap().port(),
            Some(443)
        );
        // Non-ASCII in the path is the server's business, as before.
        assert_eq!(parts("https://idp.test/clé").1, "/clé");
    }

    #[test]
    fn the_discovery_document_sits_under_the_issuer_path() {
        let doc = |issuer: &str| {
            HttpsUrl::parse(issuer)
                .unwrap()
                .openid_configuration()
                .map(|u| u.as_str().to_string())
        };
        assert_eq!(
            doc("https://idp.test").as_deref(),
            Some("https://idp.test/.well-known/openid-configuration")
        );
        assert_eq!(
            doc("https://idp.test/realms/a/").as_deref(),
            Some("https://idp.test/realms/a/.well-known/openid-configuration")
        );
        assert_eq!(doc("https://idp.test/?tenant=a"), None);
        // It is the same URL as parsing its text.
        let url = HttpsUrl::parse("https://IdP.test:8443/t/v2.0/").unwrap();
        let derived = url.openid_configuration().unwrap();
        assert_eq!(derived, HttpsUrl::parse(derived.as_str()).unwrap());
        assert_eq!(
            derived.path_and_query(),
            "/t/v2.0/.well-known/openid-configuration"
        );
    }

    #[test]
    fn from_str_is_parse() {
        let url: HttpsUrl = "https://idp.test/k".parse().unwrap();
        assert_eq!(url.path(), "/k");
        assert_eq!(
            "http://idp.test".parse::<HttpsUrl>(),
            Err(UrlError::PlainHttp {
                host: "idp.test".into()
            })
        );
    }
}
