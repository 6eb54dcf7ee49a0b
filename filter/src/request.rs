//! The parts of an HTTP request the decision needs, borrowed from whatever the host gave us.

use crate::path::normalize_host;
use std::borrow::Cow;

/// A read-only view of one request's headers (names lower-case, pseudo-headers included).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// All header pairs in the order the host gave them.
    pub headers: &'a [(String, String)],
}

impl<'a> Request<'a> {
    /// A view over header pairs; names must already be lower-case, as proxies give them.
    pub fn new(headers: &'a [(String, String)]) -> Self {
        Request { headers }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// Every value of a header, in order.
    pub fn headers_named<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `:method`, or empty.
    pub fn method(&self) -> &'a str {
        self.header(":method").unwrap_or("")
    }

    /// `:authority` (or `host`) as rules match it: lower-case, without port or trailing
    /// dot ([`crate::path::normalize_host`]); empty when absent.
    pub fn host(&self) -> Cow<'a, str> {
        let authority = self
            .header(":authority")
            .or_else(|| self.header("host"))
            .unwrap_or("");
        normalize_host(authority)
    }

    /// `:path` without the query string.
    pub fn path(&self) -> &'a str {
        let full = self.header(":path").unwrap_or("");
        full.split_once('?').map_or(full, |(p, _)| p)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.header(":path")?.split_once('?').map(|(_, q)| q)
    }

    /// Values of query parameter `name`, percent-decoded.
    pub fn query_params(&self, name: &str) -> Vec<String> {
        let Some(query) = self.query() else {
            return Vec::new();
        };
        query
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
            .collect()
    }

    /// Values of cookie `name` across every `cookie` header.
    pub fn cookies(&self, name: &str) -> Vec<&'a str> {
        self.headers_named("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
            .collect()
    }
}

/// Decodes `%XX` escapes and `+` (as space, form encoding); invalid escapes stay as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn path_query_host() {
        let h = hdrs(&[
            (":method", "GET"),
            (":authority", "api.example.com:8443"),
            (":path", "/a/b?x=1&access_token=abc%2Edef&x=2"),
        ]);
        let r = Request::new(&h);
        assert_eq!(r.method(), "GET");
        assert_eq!(r.host(), "api.example.com");
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query_params("access_token"), vec!["abc.def"]);
        assert_eq!(r.query_params("x"), vec!["1", "2"]);
        assert!(r.query_params("y").is_empty());
    }

    #[test]
    fn ipv6_authority_keeps_brackets() {
        let h = hdrs(&[(":authority", "[::1]:10000")]);
        assert_eq!(Request::new(&h).host(), "[::1]");
        let h = hdrs(&[(":authority", "API.Example.com.:443")]);
        assert_eq!(Request::new(&h).host(), "api.example.com");
    }

    #[test]
    fn cookies_across_headers() {
        let h = hdrs(&[
            ("cookie", "a=1; session=tok"),
            ("cookie", "b=2;session=\"t2\""),
        ]);
        assert_eq!(Request::new(&h).cookies("session"), vec!["tok", "t2"]);
        assert!(Request::new(&h).cookies("sess").is_empty());
    }

    #[test]
    fn percent_decoding_is_lenient_on_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%zzb"), "a%zzb");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
