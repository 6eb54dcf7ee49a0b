//! `application/x-www-form-urlencoded` (and URL query) encoding of what the login flow sends.

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k=v`, each side encoded.
pub fn pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `base` with the pairs appended as its query (after `&` if it has one already).
pub fn with_query(base: &str, query: &[(&str, &str)]) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", pairs(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_are_escaped() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(pairs(&[("x", "1 2"), ("y", "~")]), "x=1%202&y=~");
        assert_eq!(
            with_query("https://i/a?p=1", &[("q", "2")]),
            "https://i/a?p=1&q=2"
        );
        assert_eq!(with_query("https://i/a", &[("q", "2")]), "https://i/a?q=2");
    }
}
