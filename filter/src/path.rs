//! Request paths and hosts in the one form rules match, so a path cannot be smuggled past a rule.
//!
//! Envoy forwards `:path` as the client sent it, so `/public/../admin` would match a
//! `prefix: /public` rule while the upstream serves `/admin`. [`normalize`] turns a path into
//! the form every RFC 3986 server resolves it to, and refuses (as [`AmbiguousPath`]) a path
//! that servers resolve differently, so that the path a rule saw is the path the upstream serves.
//!
//! Steps, on the path part only (the query is kept verbatim):
//! 1. percent-encoded unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are decoded
//!    (RFC 3986 §2.3), every other percent-encoding stays, with upper-case hex (§6.2.2.1);
//! 2. repeated slashes are merged;
//! 3. dot-segments are removed (§5.2.4), after decoding, so `%2e%2E` is `..`.
//!
//! | kind | example | result |
//! | --- | --- | --- |
//! | plain path | `/api/v1/items` | unchanged |
//! | asterisk-form (`OPTIONS *`) | `*` | unchanged |
//! | query | `/a?x=%2e&y=..` | path normalized, query verbatim |
//! | encoded unreserved | `/%7Euser/%61` | `/~user/a` |
//! | other encodings | `/a%3bb%20c` | `/a%3Bb%20c` (stay encoded, hex upper-cased) |
//! | double encoding | `/%252e%252e/admin` | unchanged (`%25` stays, `2e` is data: a segment named `%2e%2e`, not `..`) |
//! | encoded non-ASCII, overlong UTF-8 | `/%c0%ae%c0%ae/` | `/%C0%AE%C0%AE/` (stays encoded) |
//! | repeated slashes | `//a///b` | `/a/b` (never `//host`) |
//! | `.` segments | `/a/./b/.` | `/a/b/` |
//! | `..` segments | `/public/../admin`, `/public/%2e%2E/admin` | `/admin` |
//! | trailing `..` | `/a/b/..` | `/a/` |
//! | `;` parameters on a name | `/a;v=1/b;jsessionid=x` | unchanged |
//! | empty path | (empty string) | refused: [`AmbiguousPath::NotOriginForm`] |
//! | not starting with `/` | `a/b`, `http://h/a`, `?x` | refused: [`AmbiguousPath::NotOriginForm`] |
//! | `..` above the root | `/..`, `/a/../..` | refused: [`AmbiguousPath::AboveRoot`] |
//! | `..` after an empty segment | `/admin//../public` | refused: [`AmbiguousPath::DotDotAfterEmptySegment`] |
//! | dot or empty segment with `;` parameters | `/public/..;/admin`, `/.;x`, `/;x/..`, `/..%3Bx` | refused: [`AmbiguousPath::SegmentParameters`] |
//! | encoded `/` or `\` | `/a%2Fb`, `/a%5cb` | refused: [`AmbiguousPath::EncodedSeparator`] |
//! | backslash | `/public\..\admin` | refused: [`AmbiguousPath::Backslash`] |
//! | control character, raw or encoded | `/a%00`, `/a%0D%0A`, `/a%7f`, a raw TAB | refused: [`AmbiguousPath::ControlCharacter`] |
//! | unencoded space (path or query) | `/a b` | refused: [`AmbiguousPath::Space`] |
//! | malformed percent-encoding | `/%`, `/%4`, `/%zz` | refused: [`AmbiguousPath::MalformedPercent`] |
//! | fragment | `/a#b` | refused: [`AmbiguousPath::Fragment`] |
//! | raw non-ASCII | `/café` | refused: [`AmbiguousPath::NonAscii`] (RFC 3986 requires `/caf%C3%A9`) |
//!
//! In the query only control characters, spaces and `#` are refused; its percent-encodings
//! are the application's business and are not touched.
//!
//! Why double encoding is safe: `%25` is a literal `%` (RFC 3986 §2.4: a string is decoded
//! exactly once), so `/%252e%252e/` names a segment whose text is `%2e%2e`; the rule matches
//! that segment and a conforming upstream serves that segment. Only an upstream that decodes
//! twice (CWE-174) would read `..`, and that upstream is broken with or without a proxy.
//! Refusing every `%25` would break legitimate names containing `%`.
//!
//! Everything here is a single left-to-right pass over the input: linear time and memory, no
//! recursion, however long the path or however many segments.

use std::borrow::Cow;

/// A path in normal form: what rules match and what the `normalize` mode forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// The normalized path followed by `?` and the verbatim query, if the request had one.
    path_and_query: String,
    /// Byte length of the path part of `path_and_query` (an ASCII boundary: the path is ASCII).
    path_len: usize,
    /// Whether `path_and_query` differs from the raw `:path`.
    changed: bool,
}

impl NormalizedPath {
    /// The normalized path without the query: what rules match.
    pub fn path(&self) -> &str {
        // `path_len` is where the path ends inside `path_and_query`, so `get` always succeeds;
        // the fallback only keeps this free of a panic path.
        self.path_and_query
            .get(..self.path_len)
            .unwrap_or(&self.path_and_query)
    }

    /// The query after `?`, verbatim, if the request had a `?`.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query
            .get(self.path_len..)
            .and_then(|rest| rest.strip_prefix('?'))
    }

    /// The normalized path with the verbatim query: what the `normalize` mode forwards.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The normalized path with the verbatim query, as an owned string (for a header write).
    pub fn into_path_and_query(self) -> String {
        self.path_and_query
    }

    /// Whether normalization changed anything (false: the raw `:path` is already normal).
    pub fn changed(&self) -> bool {
        self.changed
    }
}

/// Why a path was refused: servers could resolve it differently, so no rule can be trusted to match it.
///
/// The messages name only the kind of problem, never the path, so they are safe in a 400 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AmbiguousPath {
    /// Empty, or does not start with `/` (and is not the asterisk-form `*`).
    #[error("the path must start with '/'")]
    NotOriginForm,
    /// A `..` segment that would climb above `/`.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// A `..` right after an empty segment: servers that merge slashes and servers that do not
    /// resolve it to different paths (`/admin//../x` is `/x` or `/admin/x`).
    #[error("the path has '..' after an empty segment ('//')")]
    DotDotAfterEmptySegment,
    /// A segment that is empty, `.` or `..` once its `;` parameters are removed: Tomcat and
    /// other servlet containers strip the parameters and then resolve the dot-segment.
    #[error("the path has a segment that is empty, '.' or '..' before its ';' parameters")]
    SegmentParameters,
    /// `%2F` or `%5C` (any case): some servers decode it into a separator, others do not.
    #[error("the path contains an encoded '/' or '\\' (%2F, %5C)")]
    EncodedSeparator,
    /// A raw `\`: Windows servers and some frameworks treat it as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// A control character (U+0000–U+001F, U+007F), raw or percent-encoded in the path, raw
    /// in the query: truncation (NUL) and header splitting (CR LF) tricks.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// An unencoded space: it ends the request target in an HTTP/1 request line.
    #[error("the path contains an unencoded space")]
    Space,
    /// A `%` not followed by two hex digits: servers disagree about what it means.
    #[error("the path contains a malformed percent-encoding")]
    MalformedPercent,
    /// A `#`: a fragment is never part of a request target (RFC 9112 §3.2).
    #[error("the path contains a fragment ('#')")]
    Fragment,
    /// A raw non-ASCII character: RFC 3986 requires it percent-encoded (as UTF-8 bytes).
    #[error("the path contains a non-ASCII character that is not percent-encoded")]
    NonAscii,
}

/// Normalizes an HTTP `:path` (origin-form, possibly with `?query`), or says why it is ambiguous.
pub fn normalize(raw: &str) -> Result<NormalizedPath, AmbiguousPath> {
    // `OPTIONS *` has no path to resolve; anything else that does not start with `/` (empty,
    // relative, absolute-form, authority-form) is not a path a rule can reason about.
    if raw == "*" {
        return Ok(NormalizedPath {
            path_and_query: raw.to_owned(),
            path_len: raw.len(),
            changed: false,
        });
    }
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let rest = path.strip_prefix('/').ok_or(AmbiguousPath::NotOriginForm)?;

    let mut out = String::with_capacity(raw.len());
    // The segments still in effect, each as (byte offset of its `/` in `out`, whether an empty
    // segment came right before it). Merging drops empty segments, but a server that does not
    // merge slashes still counts them, so a `..` that would remove one is ambiguous; one flag
    // per kept segment is enough to know, because any number of empty segments is refused the
    // same way. Only kept segments take an entry, at most one per two bytes of input.
    let mut kept: Vec<(usize, bool)> = Vec::new();
    // Whether an empty segment came after the last kept one.
    let mut after_empty = false;
    // Whether the last segment leaves a trailing `/` (RFC 3986: `/a/.` and `/a/b/..` end in `/`).
    let mut trailing_slash = false;

    for raw_segment in rest.split('/') {
        let start = out.len();
        out.push('/');
        decode_segment(raw_segment, &mut out)?;
        let kind = out.get(start + 1..).map_or(SegmentKind::Name, classify);
        match kind {
            SegmentKind::Name => {
                kept.push((start, after_empty));
                after_empty = false;
                trailing_slash = false;
            }
            SegmentKind::Empty => {
                out.truncate(start);
                after_empty = true;
                trailing_slash = true;
            }
            SegmentKind::Dot => {
                out.truncate(start);
                trailing_slash = true;
            }
            SegmentKind::DotDot => {
                out.truncate(start);
                if after_empty {
                    return Err(AmbiguousPath::DotDotAfterEmptySegment);
                }
                let (parent, parent_after_empty) = kept.pop().ok_or(AmbiguousPath::AboveRoot)?;
                out.truncate(parent);
                after_empty = parent_after_empty;
                trailing_slash = true;
            }
            SegmentKind::ParametersOnDotOrEmpty => return Err(AmbiguousPath::SegmentParameters),
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    let path_len = out.len();

    if let Some(query) = query {
        check_query(query)?;
        out.push('?');
        out.push_str(query);
    }
    let changed = out != raw;
    Ok(NormalizedPath {
        path_and_query: out,
        path_len,
        changed,
    })
}

/// What a decoded segment means for dot-segment removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentKind {
    /// An ordinary segment, kept.
    Name,
    /// Between two slashes with nothing in it: merged away.
    Empty,
    /// `.`: removed.
    Dot,
    /// `..`: removes itself and the segment before it.
    DotDot,
    /// `..;x`, `.;x`, `;x`: a servlet container would read `..`, `.` or an empty segment.
    ParametersOnDotOrEmpty,
}

/// Classifies a decoded segment (without its leading `/`).
fn classify(segment: &str) -> SegmentKind {
    // Parameters start at `;`, or at `%3B` for a server that decodes before it strips
    // parameters (the decoder upper-cased the hex, so `%3B` is the only spelling left).
    let name_end = segment
        .find(';')
        .into_iter()
        .chain(segment.find("%3B"))
        .min();
    let Some(name_end) = name_end else {
        return match segment {
            "" => SegmentKind::Empty,
            "." => SegmentKind::Dot,
            ".." => SegmentKind::DotDot,
            _ => SegmentKind::Name,
        };
    };
    match segment.get(..name_end) {
        Some("" | "." | "..") => SegmentKind::ParametersOnDotOrEmpty,
        _ => SegmentKind::Name,
    }
}

/// Appends `segment` to `out` with unreserved characters decoded and other encodings upper-cased.
fn decode_segment(segment: &str, out: &mut String) -> Result<(), AmbiguousPath> {
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(hex_value);
            let low = bytes.next().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(AmbiguousPath::MalformedPercent);
            };
            let decoded = high << 4 | low;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else if decoded == b'/' || decoded == b'\\' {
                return Err(AmbiguousPath::EncodedSeparator);
            } else if is_control(decoded) {
                return Err(AmbiguousPath::ControlCharacter);
            } else {
                // Reserved, `%`, space, non-ASCII (including overlong UTF-8 such as `%C0%AE`):
                // data, not structure, so it stays encoded and means the same to every server.
                out.push('%');
                out.push(hex_digit(high));
                out.push(hex_digit(low));
            }
        } else {
            check_raw(byte)?;
            out.push(char::from(byte));
        }
    }
    Ok(())
}

/// Refuses a raw path byte that servers read differently; the rest pass through verbatim.
fn check_raw(byte: u8) -> Result<(), AmbiguousPath> {
    match byte {
        b'\\' => Err(AmbiguousPath::Backslash),
        b'#' => Err(AmbiguousPath::Fragment),
        b' ' => Err(AmbiguousPath::Space),
        _ if is_control(byte) => Err(AmbiguousPath::ControlCharacter),
        _ if !byte.is_ascii() => Err(AmbiguousPath::NonAscii),
        _ => Ok(()),
    }
}

/// Refuses what the query must not carry: it is forwarded verbatim, so only bytes that could
/// end the request target or split a header matter.
fn check_query(query: &str) -> Result<(), AmbiguousPath> {
    query.bytes().try_for_each(|byte| match byte {
        b'#' => Err(AmbiguousPath::Fragment),
        b' ' => Err(AmbiguousPath::Space),
        _ if is_control(byte) => Err(AmbiguousPath::ControlCharacter),
        _ => Ok(()),
    })
}

/// RFC 3986 §2.3 unreserved: the characters whose encoded and raw forms are equivalent.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// C0 controls and DEL.
fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

/// The value of one hex digit, either case.
fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The upper-case hex digit of a nibble (RFC 3986 §6.2.2.1).
fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble & 0x0F), 16).map_or('0', |c| c.to_ascii_uppercase())
}

/// The host a rule matches: lower-case, without port and without one trailing dot.
///
/// `Example.COM.:443` → `example.com`, `[::1]:8080` → `[::1]`; borrowed when nothing changes case.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // IPv6 literal: everything up to the bracket, whose colons are not a port separator.
        raw.find(']').and_then(|end| raw.get(..=end)).unwrap_or(raw)
    } else {
        // A port is digits after the only colon (empty is allowed: RFC 3986 `port = *DIGIT`);
        // a second colon means an unbracketed IPv6 address, which is left alone.
        let without_port = match raw.rsplit_once(':') {
            Some((host, port))
                if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => raw,
        };
        // `example.com.` is the same fully qualified name as `example.com` (RFC 1034 §3.1).
        without_port.strip_suffix('.').unwrap_or(without_port)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AmbiguousPath::*;

    /// Normalized path-with-query, or the refusal.
    fn norm(raw: &str) -> Result<String, AmbiguousPath> {
        normalize(raw).map(NormalizedPath::into_path_and_query)
    }

    /// Asserts each `(raw, expected)`; `expected` is the normalized path-with-query.
    fn check_ok(cases: &[(&str, &str)]) {
        for (raw, expected) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(*expected), "input {raw:?}");
        }
    }

    /// Asserts each `(raw, refusal)`.
    fn check_err(cases: &[(&str, AmbiguousPath)]) {
        for (raw, expected) in cases {
            assert_eq!(norm(raw), Err(*expected), "input {raw:?}");
        }
    }

    #[test]
    fn normal_paths_are_unchanged() {
        for raw in [
            "/",
            "*",
            "/api/v1/items",
            "/a/",
            "/a?x=1",
            "/a?",
            "/a%20b",
            "/a%3Bb",
            "/a;v=1/b;jsessionid=x",
            "/a+b!$&'()*,=:@",
            "/~user/a-b_c.d",
            "/...",
            "/.../b",
            "/.a/..b/a.",
        ] {
            let n = normalize(raw).unwrap();
            assert_eq!(n.path_and_query(), raw, "input {raw:?}");
            assert!(!n.changed(), "input {raw:?}");
        }
    }

    #[test]
    fn unreserved_encodings_are_decoded() {
        check_ok(&[
            ("/%7Euser/%61", "/~user/a"),
            ("/%41%5a%30%39%2D%2e%5F%7e", "/AZ09-._~"),
            ("/a%2ehtml", "/a.html"),
            ("/%2E", "/"),
            ("/a/%2e%2E/b", "/b"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/%2E./admin", "/admin"),
        ]);
    }

    #[test]
    fn other_encodings_stay_with_upper_case_hex() {
        check_ok(&[
            ("/a%3bb%20c", "/a%3Bb%20c"),
            ("/%25", "/%25"),
            ("/%252e%252e/admin", "/%252e%252e/admin"),
            ("/%252E", "/%252E"),
            ("/%2541", "/%2541"),
            ("/%c0%ae%c0%ae/", "/%C0%AE%C0%AE/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/%3f%23%5b%5D%40", "/%3F%23%5B%5D%40"),
            ("/%ff", "/%FF"),
            ("/%80", "/%80"),
        ]);
    }

    #[test]
    fn dot_segments_and_slashes() {
        check_ok(&[
            ("//a///b", "/a/b"),
            ("//host/x", "/host/x"),
            ("//", "/"),
            ("///", "/"),
            ("/a//", "/a/"),
            ("/a/./b/.", "/a/b/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/./a", "/a"),
            ("/a/.", "/a/"),
            ("/a/./", "/a/"),
            ("/a/.//b", "/a/b"),
            ("/public/../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/..", "/"),
            ("/a/b/../../c", "/c"),
            ("/a/./b/../c/./d", "/a/c/d"),
            ("/a//b/c/..", "/a/b/"),
            ("/a/b;x/../c", "/a/c"),
        ]);
    }

    #[test]
    fn query_is_kept_verbatim() {
        check_ok(&[
            ("/a/../b?x=%2e%2e&y=../z", "/b?x=%2e%2e&y=../z"),
            ("/a?%zz", "/a?%zz"),
            ("/a?\\", "/a?\\"),
            ("/a?%00", "/a?%00"),
            ("/a?q=caf\u{e9}", "/a?q=caf\u{e9}"),
            ("/%61?", "/a?"),
            ("/a??b", "/a??b"),
        ]);
        let n = normalize("/x/../y?a=1").unwrap();
        assert_eq!(n.path(), "/y");
        assert_eq!(n.query(), Some("a=1"));
        assert!(n.changed());
        assert_eq!(normalize("/y").unwrap().query(), None);
        assert_eq!(normalize("*").unwrap().path(), "*");
    }

    #[test]
    fn not_origin_form_is_refused() {
        check_err(&[
            ("", NotOriginForm),
            ("a/b", NotOriginForm),
            ("?x=1", NotOriginForm),
            ("http://h/a", NotOriginForm),
            ("h:80", NotOriginForm),
            ("*?x", NotOriginForm),
            ("**", NotOriginForm),
            (".", NotOriginForm),
            ("%2F", NotOriginForm),
        ]);
    }

    #[test]
    fn climbing_is_refused() {
        check_err(&[
            ("/..", AboveRoot),
            ("/../", AboveRoot),
            ("/%2e%2e", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/./..", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("/admin//../public", DotDotAfterEmptySegment),
            ("//..", DotDotAfterEmptySegment),
            ("/a/.//..", DotDotAfterEmptySegment),
        ]);
    }

    #[test]
    fn parameters_on_dot_segments_are_refused() {
        check_err(&[
            ("/public/..;/admin", SegmentParameters),
            ("/public/..;x/admin", SegmentParameters),
            ("/public/.;jsessionid=x", SegmentParameters),
            ("/public/%2e%2e;/admin", SegmentParameters),
            ("/public/..%3bx/admin", SegmentParameters),
            ("/public/..%3B/admin", SegmentParameters),
            ("/public/;x/../admin", SegmentParameters),
            ("/;x", SegmentParameters),
            ("/;", SegmentParameters),
        ]);
    }

    #[test]
    fn separators_and_characters_are_refused() {
        check_err(&[
            ("/a%2Fb", EncodedSeparator),
            ("/a%2fb", EncodedSeparator),
            ("/a%5Cb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/public/..%2F..%2Fadmin", EncodedSeparator),
            ("/public\\..\\admin", Backslash),
            ("/a\\", Backslash),
            ("/a%00", ControlCharacter),
            ("/a%0d%0aX-Injected:1", ControlCharacter),
            ("/a%1F", ControlCharacter),
            ("/a%7f", ControlCharacter),
            ("/a\u{0}b", ControlCharacter),
            ("/a\tb", ControlCharacter),
            ("/a\u{7f}", ControlCharacter),
            ("/a?x=\r\n", ControlCharacter),
            ("/a?x=\u{0}", ControlCharacter),
            ("/a b", Space),
            ("/a?x= HTTP/1.1", Space),
            ("/%", MalformedPercent),
            ("/%4", MalformedPercent),
            ("/%zz", MalformedPercent),
            ("/%4g", MalformedPercent),
            ("/%%41", MalformedPercent),
            ("/a%/b", MalformedPercent),
            ("/a#b", Fragment),
            ("/a?x#y", Fragment),
            ("/caf\u{e9}", NonAscii),
            ("/\u{ff0e}\u{ff0e}/admin", NonAscii),
        ]);
    }

    #[test]
    fn messages_never_echo_the_path() {
        let raw = "/secret-token-XYZ/%2F";
        let message = normalize(raw).unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
        for kind in [
            NotOriginForm,
            AboveRoot,
            DotDotAfterEmptySegment,
            SegmentParameters,
            EncodedSeparator,
            Backslash,
            ControlCharacter,
            Space,
            MalformedPercent,
            Fragment,
            NonAscii,
        ] {
            let message = kind.to_string();
            assert!(message.starts_with("the path "), "{message}");
            assert!(message.is_ascii() && !message.chars().any(|c| c.is_control()));
        }
    }

    #[test]
    fn long_paths_are_linear() {
        // A quadratic algorithm would take minutes on these; a linear one milliseconds.
        let deep = "/a".repeat(200_000) + &"/..".repeat(200_000) + "/end";
        assert_eq!(norm(&deep).as_deref(), Ok("/end"));
        let slashes = "/".repeat(1_000_000) + "x";
        assert_eq!(norm(&slashes).as_deref(), Ok("/x"));
        let encoded = "/".to_owned() + &"%2e".repeat(300_000);
        let expected = "/".to_owned() + &".".repeat(300_000);
        assert_eq!(norm(&encoded), Ok(expected));
        let dots = "/%2e".repeat(300_000);
        assert_eq!(norm(&dots).as_deref(), Ok("/"));
        let params = "/a;".repeat(300_000) + "/..;";
        assert_eq!(norm(&params), Err(SegmentParameters));
    }

    #[test]
    fn hosts() {
        for (raw, expected) in [
            ("example.com", "example.com"),
            ("Example.COM.:443", "example.com"),
            ("EXAMPLE.com:8080", "example.com"),
            ("example.com.", "example.com"),
            ("example.com..", "example.com."),
            ("example.com:", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[FE80::1]:443", "[fe80::1]"),
            ("::1", "::1"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("host:abc", "host:abc"),
            ("", ""),
        ] {
            assert_eq!(normalize_host(raw), expected, "input {raw:?}");
        }
        assert!(matches!(
            normalize_host("api.example.com:443"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(normalize_host("API.example.com"), Cow::Owned(_)));
    }

    // ---- property-style tests over generated paths ----

    /// A small deterministic generator (xorshift64*), so the tests need no new dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    /// Pieces the generated paths are built from: every trick the module must handle.
    const ALPHABET: &[&str] = &[
        "/", "/", "/", "/", ".", ".", "..", "a", "a", "B", "%2e", "%2E", "%2F", "%2f", "%5c", ";",
        ";x", "%3b", "%3B", "\\", "%00", "%0a", "%7f", "%41", "%7e", "%7E", "%25", "%252e", "%20",
        "%c0%ae", "%", "%4", "%zz", "~", "-", "_", "?", "=", "&", "#", "\u{e9}", " ", "*", "\t",
        ":", "@", "%ff", "+",
    ];

    fn generate(rng: &mut Rng) -> String {
        let mut s = String::new();
        // Mostly origin-form, sometimes not, so the refusal path for that is exercised too.
        if rng.below(10) != 0 {
            s.push('/');
        }
        for _ in 0..rng.below(16) {
            s.push_str(ALPHABET[rng.below(ALPHABET.len())]);
        }
        s
    }

    /// RFC 3986 §5.2.4 transcribed literally (string buffers, quadratic, tests only), after the
    /// same decoding and (if `merge`) slash merging: an independent oracle for the single pass.
    fn reference(path: &str, merge: bool) -> String {
        let mut decoded = String::new();
        let mut rest = path;
        while let Some(c) = rest.chars().next() {
            if c == '%' {
                let value = u8::from_str_radix(&rest[1..3], 16).unwrap();
                if is_unreserved(value) {
                    decoded.push(char::from(value));
                } else {
                    decoded.push_str(&rest[..3].to_ascii_uppercase());
                }
                rest = &rest[3..];
            } else {
                decoded.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        let mut input = if merge {
            merge_slashes(&decoded)
        } else {
            decoded
        };
        let mut output = String::new();
        while !input.is_empty() {
            if let Some(r) = input
                .strip_prefix("../")
                .or_else(|| input.strip_prefix("./"))
            {
                input = r.to_owned();
            } else if input.starts_with("/./") {
                input = input[2..].to_owned();
            } else if input == "/." {
                input = "/".to_owned();
            } else if input.starts_with("/../") || input == "/.." {
                input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
                let cut = output.rfind('/').unwrap_or(0);
                output.truncate(cut);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let from = usize::from(input.starts_with('/'));
                let end = input[from..].find('/').map_or(input.len(), |i| i + from);
                output.push_str(&input[..end]);
                input = input[end..].to_owned();
            }
        }
        output
    }

    fn merge_slashes(path: &str) -> String {
        let mut merged = String::new();
        for c in path.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        merged
    }

    /// Removes the `;` parameters of every segment, as servlet containers do before resolving.
    fn strip_parameters(path: &str) -> String {
        let segments: Vec<&str> = path
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or(segment))
            .collect();
        segments.join("/")
    }

    /// The invariants of a normalized path.
    fn assert_normal(path: &str, raw: &str) {
        assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
        for bad in ["//", "/./", "/../", "\\", "#", " ", "?"] {
            assert!(!path.contains(bad), "{raw:?} -> {path:?} contains {bad:?}");
        }
        assert!(
            !path.ends_with("/.") && !path.ends_with("/.."),
            "{raw:?} -> {path:?}"
        );
        assert!(
            path.is_ascii() && !path.bytes().any(is_control),
            "{raw:?} -> {path:?}"
        );
        // No segment a servlet container would read as empty, `.` or `..`.
        for segment in path.split('/').skip(1) {
            let name = segment
                .split(';')
                .next()
                .and_then(|n| n.split("%3B").next());
            if name != Some(segment) {
                assert!(
                    !matches!(name, Some("" | "." | "..")),
                    "{raw:?} -> {path:?}"
                );
            }
        }
        let bytes = path.as_bytes();
        for (i, _) in path.match_indices('%') {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{raw:?} -> {path:?}: lower-case hex"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !is_unreserved(value),
                "{raw:?} -> {path:?}: encoded unreserved"
            );
            assert!(
                value != b'/' && value != b'\\' && !is_control(value),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn generated_paths_hold_the_invariants() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..50_000 {
            let raw = generate(&mut rng);
            let Ok(n) = normalize(&raw) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            if raw == "*" {
                continue;
            }
            let (raw_path, raw_query) = match raw.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (raw.as_str(), None),
            };
            assert_normal(n.path(), &raw);
            // Idempotent: the output is its own normal form.
            let again = normalize(n.path_and_query()).unwrap();
            assert_eq!(again.path_and_query(), n.path_and_query(), "{raw:?}");
            assert!(!again.changed(), "{raw:?}");
            // The query is the raw one, byte for byte.
            assert_eq!(n.query(), raw_query, "{raw:?}");
            assert_eq!(n.changed(), n.path_and_query() != raw, "{raw:?}");
            // The single pass agrees with the RFC's own algorithm.
            assert_eq!(n.path(), reference(raw_path, true), "{raw:?}");
            // Nothing ambiguous got through.
            let lower = raw_path.to_ascii_lowercase();
            for bad in ["%2f", "%5c", "%00", "%0a", "%7f", "\\", "#", " ", "\t"] {
                assert!(!lower.contains(bad), "{raw:?} accepted");
            }
        }
        // The alphabet is hostile enough that both outcomes are common.
        assert!(accepted > 5_000 && refused > 5_000, "{accepted} {refused}");
    }

    #[test]
    fn generated_dot_paths_match_the_reference() {
        // A narrow alphabet where nearly everything is accepted, to exercise dot-segment removal.
        const DOTS: &[&str] = &["/", "/", ".", "..", "%2e", "a", "b", "%2E%2e", ";p"];
        let mut rng = Rng(42);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut raw = "/".to_owned();
            for _ in 0..rng.below(20) {
                raw.push_str(DOTS[rng.below(DOTS.len())]);
            }
            if let Ok(n) = normalize(&raw) {
                accepted += 1;
                assert_normal(n.path(), &raw);
                assert_eq!(n.path(), reference(&raw, true), "{raw:?}");
                // A server that does not merge slashes resolves it to the same path...
                assert_eq!(merge_slashes(&reference(&raw, false)), n.path(), "{raw:?}");
                // ...and so does one that strips `;` parameters first, as Tomcat does.
                let tomcat = reference(&strip_parameters(&raw), true);
                assert_eq!(tomcat, strip_parameters(n.path()), "{raw:?}");
                assert_eq!(norm(n.path()).as_deref(), Ok(n.path()), "{raw:?}");
            }
        }
        assert!(accepted > 10_000, "{accepted}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Any UTF-8 at all, including multi-byte characters next to `%` and `?`.
        let pieces = [
            '/',
            '%',
            '.',
            ';',
            '?',
            '#',
            'a',
            '2',
            'e',
            'F',
            '\u{0}',
            '\u{e9}',
            '\u{10000}',
        ];
        let mut rng = Rng(7);
        for _ in 0..50_000 {
            let raw: String = (0..rng.below(12))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            let _ = normalize(&raw);
            let _ = normalize_host(&raw);
        }
    }
}
