//! Reading claims the way identity providers write them: nested paths, URL-named claims,
//! values that are sometimes a string and sometimes an array.

use serde_json::{Map, Value};

/// A way to reach one claim inside a JWT payload.
///
/// Written as a string, `realm_access.roles` walks into nested objects, but a claim whose
/// whole name is the string (`https://example.com/roles`, `cognito:groups`) wins first, so
/// URL-named (Auth0-style) claims need no escaping. Written as an array, each element is
/// one object key, for the rare name that contains dots *and* sits under another object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    whole: String,
    segments: Vec<String>,
}

impl ClaimPath {
    /// A path from its dotted string form.
    pub fn dotted(path: &str) -> ClaimPath {
        ClaimPath {
            whole: path.to_string(),
            segments: path.split('.').map(str::to_string).collect(),
        }
    }

    /// A path from explicit object keys.
    pub fn segments(segments: Vec<String>) -> ClaimPath {
        ClaimPath {
            whole: segments.join("."),
            segments,
        }
    }

    /// The path as written, for logs and error messages.
    pub fn as_str(&self) -> &str {
        &self.whole
    }

    /// The claim's value in `payload`, if present.
    pub fn lookup<'a>(&self, payload: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = payload.get(&self.whole) {
            return Some(v);
        }
        let (first, rest) = self.segments.split_first()?;
        let mut current = payload.get(first)?;
        for key in rest {
            current = current.as_object()?.get(key)?;
        }
        Some(current)
    }
}

/// The individual values of a claim: the elements of an array, or the value itself.
pub fn values(v: &Value) -> impl Iterator<Item = &Value> {
    let slice: &[Value] = match v {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    };
    slice.iter()
}

/// The granted scopes: `scope` (space-delimited string, RFC 8693 / RFC 9068) and `scp`
/// (array or string, as Okta and Azure AD write it), merged.
pub fn scopes(payload: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match payload.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|x| !x.is_empty())),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::String(s) = item {
                        out.extend(s.split(' ').filter(|x| !x.is_empty()));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A claim rendered as a header value: strings as they are, arrays joined with `,`,
/// objects as compact JSON. `None` for null, or when the result could not be a header
/// value (control characters), so a header is never half-set.
pub fn header_value(v: &Value) -> Option<String> {
    let rendered = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => v.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            parts.join(",")
        }
    };
    if rendered
        .bytes()
        .any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return None;
    }
    Some(rendered)
}

/// Shell-style glob: `*` matches any run of characters (also empty), `?` exactly one.
/// Matching is linear in practice: the classic backtrack-to-last-star algorithm.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` of the pattern is a wildcard even where the text has a `*` too: tried as a
        // literal first, it would leave no point to backtrack to (`*b` against `*ab`).
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn nested_paths_walk_objects() {
        let p = obj(json!({"realm_access": {"roles": ["admin", "user"]}}));
        let v = ClaimPath::dotted("realm_access.roles").lookup(&p);
        assert_eq!(v, Some(&json!(["admin", "user"])));
        assert_eq!(ClaimPath::dotted("realm_access.groups").lookup(&p), None);
        assert_eq!(ClaimPath::dotted("realm_access.roles.x").lookup(&p), None);
    }

    #[test]
    fn whole_name_with_dots_wins() {
        let p = obj(json!({"https://example.com/roles": ["ops"], "cognito:groups": "g"}));
        assert_eq!(
            ClaimPath::dotted("https://example.com/roles").lookup(&p),
            Some(&json!(["ops"]))
        );
        assert_eq!(
            ClaimPath::dotted("cognito:groups").lookup(&p),
            Some(&json!("g"))
        );
    }

    #[test]
    fn explicit_segments_reach_dotted_keys_under_objects() {
        let p = obj(json!({"resource_access": {"api.example.com": {"roles": ["r"]}}}));
        let path = ClaimPath::segments(vec![
            "resource_access".into(),
            "api.example.com".into(),
            "roles".into(),
        ]);
        assert_eq!(path.lookup(&p), Some(&json!(["r"])));
    }

    #[test]
    fn scopes_merge_scope_string_and_scp_array() {
        let p = obj(json!({"scope": "read  write", "scp": ["admin", "a b"]}));
        assert_eq!(scopes(&p), vec!["read", "write", "admin", "a", "b"]);
        let p = obj(json!({"scp": "one two"}));
        assert_eq!(scopes(&p), vec!["one", "two"]);
        let p = obj(json!({"scope": 5}));
        assert!(scopes(&p).is_empty());
    }

    #[test]
    fn header_values_have_a_defined_encoding() {
        assert_eq!(header_value(&json!("alice")), Some("alice".into()));
        assert_eq!(header_value(&json!(["a", "b", 3])), Some("a,b,3".into()));
        assert_eq!(header_value(&json!({"k": 1})), Some("{\"k\":1}".into()));
        assert_eq!(header_value(&json!(true)), Some("true".into()));
        assert_eq!(header_value(&json!(null)), None);
        assert_eq!(header_value(&json!("evil\r\nx-admin: 1")), None);
    }

    #[test]
    fn globs_match_whole_values() {
        assert!(glob_matches(
            "arn:aws:iam::*:role/Admin*",
            "arn:aws:iam::123456789012:role/AdminFull"
        ));
        assert!(!glob_matches(
            "arn:aws:iam::*:role/Admin*",
            "arn:aws:iam::123456789012:role/ReadOnly"
        ));
        assert!(glob_matches("*@example.com", "bob@example.com"));
        assert!(!glob_matches("*@example.com", "bob@example.com.evil.io"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "abbc"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("admin", "superadmin"));
        // Found by the fuzzer: a `*` in the text does not stop the pattern's `*` matching.
        assert!(glob_matches("*b", "*ab"));
        assert!(glob_matches("*@example.com", "*bob@example.com"));
    }
}
