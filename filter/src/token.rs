//! Where bearer tokens come from, and the bounds on what we accept from there.

use crate::request::Request;

/// One place a provider's tokens may be carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header (lower-case name); `prefix` (matched case-insensitively, as auth schemes
    /// are) is removed, and a value without it is not a token for this source.
    Header {
        /// The header name, lower-case.
        name: String,
        /// The auth scheme before the token, e.g. `Bearer `.
        prefix: Option<String>,
    },
    /// A query parameter.
    Query {
        /// The parameter name.
        name: String,
    },
    /// A cookie.
    Cookie {
        /// The cookie name.
        name: String,
    },
}

impl TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    pub fn bearer() -> TokenSource {
        TokenSource::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Header { name, .. } => format!("header {name}"),
            TokenSource::Query { name } => format!("query parameter {name}"),
            TokenSource::Cookie { name } => format!("cookie {name}"),
        }
    }

    fn candidates(&self, req: &Request<'_>) -> Vec<String> {
        match self {
            // A proxy folds repeated headers into one, comma-separated (RFC 9110 §5.3), and
            // a token never holds a comma: each element is a credential of its own, so two
            // `Authorization` headers are two tokens, not one odd one.
            TokenSource::Header { name, prefix } => req
                .headers_named(name)
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter_map(|v| match prefix {
                    None => Some(v),
                    Some(p) => strip_prefix_ignore_case(v, p).map(str::trim),
                })
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            TokenSource::Query { name } => req
                .query_params(name)
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect(),
            TokenSource::Cookie { name } => req
                .cookies(name)
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Header edits that remove this source's token from the request before it goes
    /// upstream: `(name, None)` removes a header, `(name, Some(v))` replaces it.
    pub fn strip_edits(&self, req: &Request<'_>) -> Vec<(String, Option<String>)> {
        match self {
            TokenSource::Header { name, .. } => vec![(name.clone(), None)],
            TokenSource::Query { name } => {
                let Some(query) = req.query() else {
                    return Vec::new();
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                        crate::request::percent_decode(key) != *name
                    })
                    .collect();
                let path = if kept.is_empty() {
                    req.path().to_string()
                } else {
                    format!("{}?{}", req.path(), kept.join("&"))
                };
                vec![(":path".into(), Some(path))]
            }
            TokenSource::Cookie { name } => {
                let kept: Vec<&str> = req
                    .headers_named("cookie")
                    .flat_map(|h| h.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .filter(|c| c.split_once('=').map_or(*c, |(k, _)| k).trim() != name)
                    .collect();
                if kept.is_empty() {
                    vec![("cookie".into(), None)]
                } else {
                    vec![("cookie".into(), Some(kept.join("; ")))]
                }
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Why the token could not be taken from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Larger than every candidate provider's `max_token_bytes`.
    #[error("token is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The token's size in bytes.
        size: usize,
        /// The largest `max_token_bytes` of the candidate providers.
        limit: usize,
    },
    /// Two different tokens (RFC 6750 §2: a request carries at most one).
    #[error("more than one token in the request ({first} and {second})")]
    Ambiguous {
        /// Where the first was found.
        first: String,
        /// Where the other was found.
        second: String,
    },
}

/// A token found in the request, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The compact-serialised token.
    pub token: String,
    /// Index into the sources that were searched.
    pub source: usize,
}

/// Looks through `sources` in order. The same token in several places is fine; two
/// different tokens are refused, since RFC 6750 §2 lets a client use only one method and
/// we must not guess which one the upstream will trust.
pub fn extract(
    sources: &[&TokenSource],
    req: &Request<'_>,
    max_bytes: usize,
) -> Result<Option<FoundToken>, TokenError> {
    let mut found: Option<FoundToken> = None;
    for (i, source) in sources.iter().enumerate() {
        for candidate in source.candidates(req) {
            if candidate.len() > max_bytes {
                return Err(TokenError::TooLarge {
                    size: candidate.len(),
                    limit: max_bytes,
                });
            }
            match &found {
                None => {
                    found = Some(FoundToken {
                        token: candidate,
                        source: i,
                    });
                }
                Some(f) if f.token == candidate => {}
                Some(f) => {
                    return Err(TokenError::Ambiguous {
                        first: sources[f.source].describe(),
                        second: source.describe(),
                    })
                }
            }
        }
    }
    Ok(found)
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

    fn all() -> Vec<TokenSource> {
        vec![
            TokenSource::bearer(),
            TokenSource::Header {
                name: "x-token".into(),
                prefix: None,
            },
            TokenSource::Query {
                name: "access_token".into(),
            },
            TokenSource::Cookie {
                name: "session".into(),
            },
        ]
    }

    fn run(h: &[(&str, &str)]) -> Result<Option<FoundToken>, TokenError> {
        let owned = all();
        let refs: Vec<&TokenSource> = owned.iter().collect();
        let headers = hdrs(h);
        extract(&refs, &Request::new(&headers), 64)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let f = run(&[(":path", "/"), ("authorization", "bearer abc")]).unwrap();
        assert_eq!(f.unwrap().token, "abc");
    }

    #[test]
    fn other_schemes_are_not_tokens() {
        let f = run(&[(":path", "/"), ("authorization", "Basic Zm9vOmJhcg==")]).unwrap();
        assert_eq!(f, None);
        let f = run(&[(":path", "/"), ("authorization", "Bearer ")]).unwrap();
        assert_eq!(f, None);
    }

    #[test]
    fn each_source_kind_is_read() {
        let f = run(&[(":path", "/"), ("x-token", "t1")]).unwrap().unwrap();
        assert_eq!((f.token.as_str(), f.source), ("t1", 1));
        let f = run(&[(":path", "/x?access_token=t2")]).unwrap().unwrap();
        assert_eq!((f.token.as_str(), f.source), ("t2", 2));
        let f = run(&[(":path", "/"), ("cookie", "a=b; session=t3")])
            .unwrap()
            .unwrap();
        assert_eq!((f.token.as_str(), f.source), ("t3", 3));
    }

    #[test]
    fn same_token_twice_is_fine_different_tokens_are_not() {
        let f = run(&[
            (":path", "/x?access_token=t"),
            ("authorization", "Bearer t"),
        ])
        .unwrap();
        assert_eq!(f.unwrap().source, 0);
        let e = run(&[
            (":path", "/x?access_token=u"),
            ("authorization", "Bearer t"),
        ]);
        assert!(matches!(e, Err(TokenError::Ambiguous { .. })));
        let e = run(&[
            (":path", "/"),
            ("authorization", "Bearer t"),
            ("authorization", "Bearer u"),
        ]);
        assert!(matches!(e, Err(TokenError::Ambiguous { .. })));
    }

    #[test]
    fn oversized_token_is_refused() {
        let big = format!("Bearer {}", "a".repeat(65));
        let e = run(&[(":path", "/"), ("authorization", &big)]);
        assert_eq!(
            e,
            Err(TokenError::TooLarge {
                size: 65,
                limit: 64
            })
        );
    }

    #[test]
    fn strip_edits_remove_only_the_token() {
        let h = hdrs(&[
            (":path", "/p?a=1&access_token=t&b=2"),
            ("cookie", "x=1; session=t; y=2"),
        ]);
        let r = Request::new(&h);
        let q = TokenSource::Query {
            name: "access_token".into(),
        };
        assert_eq!(
            q.strip_edits(&r),
            vec![(":path".to_string(), Some("/p?a=1&b=2".to_string()))]
        );
        let c = TokenSource::Cookie {
            name: "session".into(),
        };
        assert_eq!(
            c.strip_edits(&r),
            vec![("cookie".to_string(), Some("x=1; y=2".to_string()))]
        );
        assert_eq!(
            TokenSource::bearer().strip_edits(&r),
            vec![("authorization".to_string(), None)]
        );
    }
}
