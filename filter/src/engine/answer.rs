//! Refusals in the shape RFC 6750 gives them: the status, the `WWW-Authenticate`
//! challenge, and a JSON body, turned into a [`LocalReply`].

use super::LocalReply;

/// A refusal, before it becomes a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// HTTP status: 400, 401, 403 or 503.
    pub(crate) status: u16,
    /// The `WWW-Authenticate` value, if the answer has one.
    pub(crate) www_authenticate: Option<String>,
    /// The OAuth error code (`invalid_token`, `insufficient_scope`, ...).
    pub(crate) error: &'static str,
    /// A short explanation, safe to show the client.
    pub(crate) description: String,
    /// Seconds for `Retry-After` (503 only).
    pub(crate) retry_after: Option<u64>,
}

impl Denial {
    /// A refusal with no challenge and no `Retry-After`.
    pub(crate) fn plain(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Denial {
            status,
            www_authenticate: None,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// The local reply: a JSON body the client can read, never cached.
    pub(crate) fn reply(&self) -> LocalReply {
        let body = serde_json::json!({"error": self.error, "error_description": self.description})
            .to_string()
            .into_bytes();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
        ];
        if let Some(w) = &self.www_authenticate {
            headers.push(("www-authenticate".into(), w.clone()));
        }
        if let Some(r) = self.retry_after {
            headers.push(("retry-after".into(), r.to_string()));
        }
        LocalReply {
            status: self.status,
            headers,
            body,
        }
    }
}

/// The reply when the plugin itself cannot work (a host call failed, no configuration):
/// 500, so the failure is visible and nothing gets through.
pub fn internal_error(description: &str) -> LocalReply {
    Denial::plain(500, "server_error", description).reply()
}

/// A `Bearer` challenge (RFC 6750 §3) for `realm`, with an error and the scopes needed.
pub(crate) fn challenge(realm: &str, error: Option<(&str, &str)>, scope: &[String]) -> String {
    let mut v = format!("Bearer realm=\"{realm}\"");
    if let Some((code, description)) = error {
        v.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if !scope.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", scope.join(" ")));
    }
    v
}

/// Keeps `error_description` within RFC 6750 §3's character set.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(200)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_challenge_and_retry_after() {
        let mut d = Denial::plain(503, "temporarily_unavailable", "later");
        d.retry_after = Some(7);
        d.www_authenticate = Some(challenge("r", Some(("e", "d")), &["a".into(), "b".into()]));
        let r = d.reply();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"r\", error=\"e\", error_description=\"d\", scope=\"a b\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(internal_error("x").status, 500);
    }

    #[test]
    fn descriptions_stay_in_the_rfc_6750_character_set() {
        assert_eq!(sanitize("a\"b\\c\né"), "a'b/c??");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 200);
    }
}
