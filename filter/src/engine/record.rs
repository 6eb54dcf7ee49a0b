//! The decision record: what one request's decision was and why, as the log line and the
//! counters see it.

use super::Reason;
use crate::verify::SignatureBackend;
use std::fmt;
use std::rc::Rc;

/// The verdict the policy reached, whether or not it was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

/// How the token cache took part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No token was verified.
    None,
    /// The token was found verified.
    Hit,
    /// The token had to be verified.
    Miss,
}

/// One decision, for the log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The matched rule, if any.
    pub rule: Option<String>,
    /// What the policy decided.
    pub verdict: Verdict,
    /// False in observe mode.
    pub enforced: bool,
    /// HTTP status the policy chose (200 when allowed).
    pub status: u16,
    /// Why: a stable code, documented in docs/configuration.md.
    pub reason: Reason,
    /// Longer explanation.
    pub detail: String,
    /// The token's `sub`, once known (verified or not: the log says which by the verdict).
    pub subject: Option<String>,
    /// The token's `iss`.
    pub issuer: Option<String>,
    /// First 12 hex digits of the token's SHA-256: correlates requests, never reveals the token.
    pub token_hash: Option<Rc<str>>,
    /// Cache participation.
    pub cache: CacheUse,
    /// What checked the signature, when this request verified a token afresh.
    pub crypto: Option<SignatureBackend>,
    /// The route tag the request went upstream with.
    pub route: Option<String>,
}

/// A string as a JSON string literal, written straight into the log line: a log field
/// cannot break the line or forge another field, and nothing is allocated to quote it.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c.is_control()) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or(' ');
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{:04x}", u32::from(c))?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)?;
        f.write_str("\"")
    }
}

/// A missing field is `-`; a present one is quoted.
struct Field<'a>(Option<&'a str>);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => Quoted(s).fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl fmt::Display for DecisionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "portcullis decision verdict={} mode={} status={} rule={} reason={} sub={} iss={} token={} cache={} crypto={} route={} detail={}",
            match self.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
            },
            if self.enforced { "enforce" } else { "observe" },
            self.status,
            Field(self.rule.as_deref()),
            self.reason,
            Field(self.subject.as_deref()),
            Field(self.issuer.as_deref()),
            self.token_hash.as_deref().unwrap_or("-"),
            match self.cache {
                CacheUse::None => "none",
                CacheUse::Hit => "hit",
                CacheUse::Miss => "miss",
            },
            self.crypto.map_or("-", SignatureBackend::name),
            Field(self.route.as_deref()),
            Quoted(&self.detail),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_are_json_string_literals() {
        for s in [
            "plain",
            "a\"b\\c",
            "line\nbreak\r\ttab",
            "nul\u{0}bell\u{7}",
            "é ✓ \u{85}",
            "",
        ] {
            let ours = Quoted(s).to_string();
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, s, "{ours}");
            assert!(!ours.contains('\n') && !ours.contains('\r'), "{ours}");
        }
        assert_eq!(Field(None).to_string(), "-");
    }
}
