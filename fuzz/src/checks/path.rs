//! Target `path`: request paths and hosts, [`portcullis::path::normalize`] and
//! [`portcullis::path::normalize_host`].
//!
//! Input: the raw `:path` (lossy UTF-8); the same bytes are also read as a host.
//! Properties: no panic; a normalized path is in normal form (no `//`, dot segments,
//! backslash, fragment, space, control or raw non-ASCII character; only upper-case
//! percent-encodings of reserved characters other than `/` and `\`), is its own normal
//! form, keeps the query byte for byte, and equals the path of a reference resolver
//! written here (decode unreserved, merge slashes, resolve dot segments with a stack);
//! a path with an encoded separator, backslash, control character or fragment is refused;
//! a refusal names a kind of problem. A normalized host is a lower-case prefix of the input.

use portcullis::path::{normalize, normalize_host};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The reference: percent-decode unreserved characters (upper-casing the other
/// encodings), drop empty segments, then resolve `.` and `..` on a stack of segments.
/// `None` for what it cannot resolve (malformed encoding, `..` above the root).
pub fn reference(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (h, l) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
            let v = h * 16 + l;
            if unreserved(v) {
                decoded.push(char::from(v));
            } else {
                decoded.push('%');
                decoded.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
        } else {
            let c = path[i..].chars().next()?;
            decoded.push(c);
            i += c.len_utf8();
        }
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let segments: Vec<&str> = decoded.strip_prefix('/')?.split('/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.into_iter().enumerate() {
        match segment {
            // Merged away; only a final one (the path ends with `/`) leaves a mark.
            "" if n == last => trailing_slash = true,
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                stack.pop()?;
                trailing_slash = true;
            }
            name => {
                stack.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::from("/");
    out.push_str(&stack.join("/"));
    if trailing_slash && !stack.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn assert_normal(path: &str, raw: &str) {
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    for bad in ["//", "/./", "/../", "\\", "#", " ", "?"] {
        assert!(!path.contains(bad), "{raw:?} -> {path:?} has {bad:?}");
    }
    assert!(
        !path.ends_with("/.") && !path.ends_with("/.."),
        "{raw:?} -> {path:?}"
    );
    assert!(
        path.is_ascii() && !path.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{raw:?}"
    );
    let b = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2)) else {
            panic!("{raw:?} -> {path:?}: cut percent-encoding");
        };
        assert!(
            [h, l]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
            "{raw:?} -> {path:?}: hex not upper-case"
        );
        let (Some(h), Some(l)) = (hex(*h), hex(*l)) else {
            unreachable!("checked above");
        };
        let v = h * 16 + l;
        assert!(!unreserved(v), "{raw:?} -> {path:?}: %{v:02X} left encoded");
        assert!(
            v != b'/' && v != b'\\' && v >= 0x20 && v != 0x7f,
            "{raw:?} -> {path:?}: %{v:02X} accepted"
        );
    }
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    check_host(&raw);
    let (raw_path, raw_query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*raw, None),
    };
    let n = match normalize(&raw) {
        Ok(n) => n,
        Err(e) => {
            // The refusal is a field-less enum: its message cannot carry the path.
            let message = e.to_string();
            assert!(message.starts_with("the path "), "{message:?}");
            return;
        }
    };
    let lower = raw_path.to_ascii_lowercase();
    for bad in [
        "%2f", "%5c", "\\", "#", " ", "\t", "%00", "%0a", "%0d", "%7f",
    ] {
        assert!(
            !lower.contains(bad),
            "{raw:?} accepted although it has {bad:?}"
        );
    }
    assert!(
        !raw.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{raw:?}: control accepted"
    );
    assert_eq!(n.query(), raw_query, "{raw:?}: the query is kept verbatim");
    let expected_whole = match n.query() {
        Some(q) => format!("{}?{q}", n.path()),
        None => n.path().to_string(),
    };
    assert_eq!(n.path_and_query(), expected_whole, "{raw:?}");
    assert_eq!(n.changed(), n.path_and_query() != raw, "{raw:?}: changed()");
    if raw == "*" {
        assert_eq!(n.path(), "*");
        return;
    }
    assert_normal(n.path(), &raw);
    let again = match normalize(n.path_and_query()) {
        Ok(a) => a,
        Err(e) => panic!(
            "{raw:?} -> {:?} is refused when normalized again: {e}",
            n.path()
        ),
    };
    assert_eq!(
        again.path_and_query(),
        n.path_and_query(),
        "{raw:?}: not idempotent"
    );
    assert!(!again.changed(), "{raw:?}");
    if raw_path.len() <= 4096 {
        assert_eq!(
            Some(n.path()),
            reference(raw_path).as_deref(),
            "{raw:?}: differs from the reference resolver"
        );
    }
    let owned = n.clone().into_path_and_query();
    assert_eq!(owned, n.path_and_query());
}

fn check_host(raw: &str) {
    let host = normalize_host(raw);
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "{raw:?} -> {host:?} has upper case"
    );
    assert!(
        raw.to_ascii_lowercase().starts_with(&*host),
        "{raw:?} -> {host:?} is not a prefix of the input"
    );
}
