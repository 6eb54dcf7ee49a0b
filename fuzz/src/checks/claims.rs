//! Target `claims`: the claim readers of [`portcullis::claims`]: claim paths, scopes,
//! header values and globs, each against a reference written here.
//!
//! Input: three lines (a claim path, a glob pattern, a text) and then a JSON payload; when
//! the rest is not a JSON object, a payload is made of it (`scope`, `scp`, the path's name).
//! Properties: no panic; a dotted path finds the whole-name claim first and otherwise walks
//! objects; a path of segments agrees with it; scopes are the space-separated words of
//! `scope` and `scp` (string or array), none empty; a header value has no control
//! characters and renders as documented; globs agree with a dynamic-programming matcher.

use portcullis::claims::{self, ClaimPath};
use serde_json::{json, Map, Value};

fn reference_lookup<'a>(payload: &'a Map<String, Value>, whole: &str) -> Option<&'a Value> {
    if let Some(v) = payload.get(whole) {
        return Some(v);
    }
    let mut parts = whole.split('.');
    let mut current = payload.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn reference_scopes(payload: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = |s: &str| {
        out.extend(s.split(' ').filter(|w| !w.is_empty()).map(str::to_string));
    };
    for name in ["scope", "scp"] {
        match payload.get(name) {
            Some(Value::String(s)) => words(s),
            Some(Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).for_each(&mut words)
            }
            _ => {}
        }
    }
    out
}

fn reference_header(v: &Value) -> Option<String> {
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let bad = s.chars().any(|c| (c < ' ' && c != '\t') || c == '\u{7f}');
    (!bad).then_some(s)
}

/// Whole-text glob by dynamic programming over characters: `*` any run, `?` one.
pub fn reference_glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // m[j]: pattern prefix p[..i] matches text prefix t[..j].
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for pc in &p {
        let mut next = vec![false; t.len() + 1];
        if *pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && (*pc == '?' || *pc == t[j - 1]);
            }
        }
        m = next;
    }
    m[t.len()]
}

fn payload_from(rest: &[u8], path: &str) -> Map<String, Value> {
    match serde_json::from_slice(rest) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            let mut m = Map::new();
            m.insert(path.to_string(), other.clone());
            m.insert("scp".into(), other);
            m
        }
        Err(_) => {
            let text = String::from_utf8_lossy(rest).into_owned();
            let mut m = Map::new();
            m.insert("scope".into(), Value::String(text.clone()));
            m.insert("scp".into(), json!(text.split(',').collect::<Vec<_>>()));
            m.insert(path.to_string(), Value::String(text));
            m
        }
    }
}

fn split_line(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::from_utf8_lossy(data).into_owned(), &[]),
    }
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let (path, rest) = split_line(data);
    let (pattern, rest) = split_line(rest);
    let (text, rest) = split_line(rest);
    let payload = payload_from(rest, &path);

    let dotted = ClaimPath::dotted(&path);
    assert_eq!(dotted.as_str(), path);
    let found = dotted.lookup(&payload);
    assert_eq!(
        found,
        reference_lookup(&payload, &path),
        "lookup of {path:?}"
    );
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    let by_segments = ClaimPath::segments(segments);
    assert_eq!(by_segments.as_str(), path);
    assert_eq!(by_segments.lookup(&payload), found, "segments of {path:?}");
    // Segments split elsewhere: the whole name is still tried first, then the walk.
    let slashed: Vec<String> = path.split('/').map(str::to_string).collect();
    let walk = {
        let joined = slashed.join(".");
        payload.get(&joined).or_else(|| {
            let (first, more) = slashed.split_first()?;
            more.iter()
                .try_fold(payload.get(first)?, |v, k| v.as_object()?.get(k))
        })
    };
    assert_eq!(ClaimPath::segments(slashed).lookup(&payload), walk);

    let scopes = claims::scopes(&payload);
    assert!(scopes.iter().all(|s| !s.is_empty() && !s.contains(' ')));
    assert_eq!(scopes, reference_scopes(&payload), "scopes");

    let mut values: Vec<&Value> = payload.values().collect();
    values.extend(found);
    for v in values {
        let rendered = claims::header_value(v);
        assert_eq!(rendered, reference_header(v), "header value of {v}");
        if let Some(r) = rendered {
            assert!(!r.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f));
        }
        let n = claims::values(v).count();
        assert_eq!(n, v.as_array().map_or(1, Vec::len));
    }

    let matched = claims::glob_matches(&pattern, &text);
    if pattern.len() <= 512 && text.len() <= 512 {
        let expected = reference_glob(&pattern, &text);
        assert!(
            matched == expected,
            "glob {pattern:?} on {text:?}: {matched}, expected {expected}"
        );
    }
    // Without wildcards a pattern matches only itself.
    let literal = pattern.replace(['*', '?'], "");
    assert_eq!(claims::glob_matches(&literal, &text), literal == text);
}
