//! The decision pipeline for one request: route → extract → cache → verify → authorize.
//!
//! Plain Rust: the adapter hands in the request headers and the current time, and gets
//! back a [`Decision`] to apply and a [`DecisionRecord`] to log and count.

use crate::cache::{TokenCache, TokenHash, VerifiedToken};
use crate::claims;
use crate::config::Config;
use crate::keys::KeySet;
use crate::policy::{AuthMode, KeySource, Mode, Policy, Rule};
use crate::request::Request;
use crate::token::{self, TokenError, TokenSource};
use crate::verify::{self, VerifyError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::rc::Rc;

/// Who the request is from, once a token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's configuration name.
    pub provider: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
}

/// A local answer refusing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status: 400, 401 or 403.
    pub status: u16,
    /// The `WWW-Authenticate` value, if the answer has one.
    pub www_authenticate: Option<String>,
    /// The OAuth error code (`invalid_token`, `insufficient_scope`, ...).
    pub error: &'static str,
    /// A short explanation, safe to show the client.
    pub description: String,
}

impl Denial {
    /// The JSON body of the local response.
    pub fn body(&self) -> String {
        serde_json::json!({"error": self.error, "error_description": self.description}).to_string()
    }
}

/// What the adapter must do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward it upstream after removing, then setting, these headers.
    Allow {
        /// Headers to remove first (inbound copies of the headers Portcullis owns).
        headers_to_remove: Vec<String>,
        /// Headers to set afterwards.
        headers_to_set: Vec<(String, String)>,
        /// The verified identity, if any.
        identity: Option<Identity>,
    },
    /// Answer locally.
    Deny(Denial),
}

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
    /// A stable short reason code.
    pub reason: &'static str,
    /// Longer explanation.
    pub detail: String,
    /// The token's `sub`, once known (verified or not: the log says which by the verdict).
    pub subject: Option<String>,
    /// The token's `iss`.
    pub issuer: Option<String>,
    /// First 12 hex digits of the token's SHA-256: correlates requests, never reveals the token.
    pub token_hash: Option<String>,
    /// Cache participation.
    pub cache: CacheUse,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

impl fmt::Display for DecisionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), quoted);
        write!(
            f,
            "portcullis decision verdict={} mode={} status={} rule={} reason={} sub={} iss={} token={} cache={} detail={}",
            match self.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
            },
            if self.enforced { "enforce" } else { "observe" },
            self.status,
            opt(&self.rule),
            self.reason,
            opt(&self.subject),
            opt(&self.issuer),
            self.token_hash.as_deref().unwrap_or("-"),
            match self.cache {
                CacheUse::None => "none",
                CacheUse::Hit => "hit",
                CacheUse::Miss => "miss",
            },
            quoted(&self.detail),
        )
    }
}

/// A decision and its record.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// What to do.
    pub decision: Decision,
    /// What to log and count.
    pub record: DecisionRecord,
}

/// The policy plus its runtime state: keys and the verified-token cache.
pub struct Engine {
    policy: Rc<Policy>,
    keys: Vec<Option<KeySet>>,
    cache: TokenCache,
    owned_headers: Vec<String>,
}

/// The outcome of the token part of the pipeline, before enforcement mode applies.
struct Reached {
    verdict: Result<(), Denial>,
    reason: &'static str,
    detail: String,
    claims: Option<(usize, Rc<Map<String, Value>>)>,
    token: Option<(String, TokenHash)>,
    strip_edits: Vec<(String, Option<String>)>,
    cache: CacheUse,
}

impl Reached {
    fn deny(denial: Denial, reason: &'static str) -> Reached {
        Reached {
            detail: denial.description.clone(),
            verdict: Err(denial),
            reason,
            claims: None,
            token: None,
            strip_edits: Vec::new(),
            cache: CacheUse::None,
        }
    }

    fn allow(reason: &'static str, detail: &str) -> Reached {
        Reached {
            verdict: Ok(()),
            reason,
            detail: detail.into(),
            claims: None,
            token: None,
            strip_edits: Vec::new(),
            cache: CacheUse::None,
        }
    }
}

/// Keeps `error_description` within RFC 6750 §3's character set.
fn sanitize(s: &str) -> String {
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

impl Engine {
    /// An engine for a validated configuration.
    pub fn new(config: Config) -> Engine {
        let keys = config
            .policy
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Inline(set) => Some(set.clone()),
            })
            .collect();
        let owned_headers = config.policy.owned_headers();
        Engine {
            policy: Rc::new(config.policy),
            keys,
            cache: TokenCache::new(config.cache_size),
            owned_headers,
        }
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces a provider's keys; tokens it verified before are verified again.
    pub fn set_keys(&mut self, provider: usize, keys: KeySet) {
        if let Some(slot) = self.keys.get_mut(provider) {
            *slot = Some(keys);
            self.cache.forget_provider(provider);
        }
    }

    fn challenge(&self, error: Option<(&str, &str)>, scope: &[String]) -> String {
        let mut v = format!("Bearer realm=\"{}\"", self.policy.realm);
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

    fn invalid_token(&self, description: &str) -> Denial {
        let description = sanitize(description);
        Denial {
            status: 401,
            www_authenticate: Some(self.challenge(Some(("invalid_token", &description)), &[])),
            error: "invalid_token",
            description,
        }
    }

    /// Decides one request. `now` is Unix time in seconds.
    pub fn decide(&mut self, headers: &[(String, String)], now: u64) -> Evaluation {
        let req = Request::new(headers);
        // A cheap handle on the policy, so the rule can be borrowed while the cache mutates.
        let policy = Rc::clone(&self.policy);
        let Some(rule) = policy.route(&req) else {
            let denial = Denial {
                status: 403,
                www_authenticate: None,
                error: "access_denied",
                description: "no rule allows this request".into(),
            };
            return self.finish(None, Reached::deny(denial, "no_rule"));
        };
        let reached = self.reach(&policy, rule, &req, now);
        self.finish(Some(rule), reached)
    }

    fn reach(&mut self, policy: &Policy, rule: &Rule, req: &Request<'_>, now: u64) -> Reached {
        if rule.auth == AuthMode::None {
            return Reached::allow("public", "rule needs no token");
        }
        let candidates: Vec<usize> = (0..policy.providers.len())
            .filter(|i| rule.accepts_provider(*i))
            .collect();
        let mut sources: Vec<&TokenSource> = Vec::new();
        let mut max_bytes = 0;
        for &i in &candidates {
            let p = &policy.providers[i];
            max_bytes = max_bytes.max(p.requirements.max_token_bytes);
            for s in &p.sources {
                if !sources.contains(&s) {
                    sources.push(s);
                }
            }
        }
        let found = match token::extract(&sources, req, max_bytes) {
            Ok(f) => f,
            Err(e @ TokenError::TooLarge { .. }) => {
                return Reached::deny(self.invalid_token(&e.to_string()), "too_large")
            }
            Err(e @ TokenError::Ambiguous { .. }) => {
                let description = sanitize(&e.to_string());
                let denial = Denial {
                    status: 400,
                    www_authenticate: Some(
                        self.challenge(Some(("invalid_request", &description)), &[]),
                    ),
                    error: "invalid_request",
                    description,
                };
                return Reached::deny(denial, "ambiguous_token");
            }
        };
        let Some(found) = found else {
            if rule.auth == AuthMode::Optional {
                return Reached::allow("anonymous", "no token; rule allows anonymous requests");
            }
            let denial = Denial {
                status: 401,
                www_authenticate: Some(self.challenge(None, &[])),
                error: "unauthorized",
                description: "a bearer token is required".into(),
            };
            return Reached::deny(denial, "missing_token");
        };
        let hash: TokenHash = Sha256::digest(found.token.as_bytes()).into();
        let mut reached = match self.cache.get(&hash, now) {
            Some(hit) => {
                let mut r = self.authorize_verified(rule, hit.provider, hit.claims);
                r.cache = CacheUse::Hit;
                r
            }
            None => {
                let mut r = self.verify_fresh(policy, rule, &candidates, &found.token, hash, now);
                r.cache = CacheUse::Miss;
                r
            }
        };
        if !policy.forward_token {
            if let Some(source) = sources.get(found.source) {
                reached.strip_edits = source.strip_edits(req);
            }
        }
        reached.token = Some((found.token, hash));
        reached
    }

    fn verify_fresh(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        candidates: &[usize],
        token: &str,
        hash: TokenHash,
        now: u64,
    ) -> Reached {
        let max_bytes = candidates
            .iter()
            .map(|i| policy.providers[*i].requirements.max_token_bytes)
            .max()
            .unwrap_or(0);
        let jwt = match verify::parse(token, max_bytes) {
            Ok(j) => j,
            Err(e) => return Reached::deny(self.invalid_token(&e.to_string()), e.code()),
        };
        let mut last = VerifyError::WrongIssuer;
        for &p in candidates {
            let provider = &policy.providers[p];
            let req = &provider.requirements;
            if jwt.issuer() != Some(req.issuer.as_str()) {
                continue;
            }
            let Some(keys) = self.keys.get(p).and_then(Option::as_ref) else {
                continue;
            };
            let outcome = verify::check_claims(&jwt, req, now)
                .and_then(|()| verify::check_signature(&jwt, keys, req, now));
            match outcome {
                Ok(()) => {
                    let num = |name: &str| {
                        jwt.payload
                            .get(name)
                            .and_then(Value::as_f64)
                            .map(|f| f as u64)
                    };
                    let verified = VerifiedToken {
                        provider: p,
                        valid_until: num("exp").map(|e| e.saturating_add(req.clock_skew)),
                        valid_from: num("nbf").map(|n| n.saturating_sub(req.clock_skew)),
                        claims: Rc::new(jwt.payload),
                    };
                    let claims = Rc::clone(&verified.claims);
                    self.cache.insert(hash, verified);
                    return self.authorize_verified(rule, p, claims);
                }
                Err(e) => last = e,
            }
        }
        Reached::deny(self.invalid_token(&last.to_string()), last.code())
    }

    fn authorize_verified(
        &self,
        rule: &Rule,
        provider: usize,
        claims: Rc<Map<String, Value>>,
    ) -> Reached {
        if !rule.accepts_provider(provider) {
            let d = self.invalid_token("issuer not accepted for this route");
            return Reached::deny(d, "wrong_issuer");
        }
        match rule.authorize(&claims) {
            Ok(()) => Reached {
                claims: Some((provider, claims)),
                ..Reached::allow("authorized", "token valid and rule satisfied")
            },
            Err(shortfall) => {
                let description = sanitize(&shortfall.description);
                let denial = Denial {
                    status: 403,
                    www_authenticate: Some(self.challenge(
                        Some(("insufficient_scope", &description)),
                        &shortfall.scopes,
                    )),
                    error: "insufficient_scope",
                    description,
                };
                let mut r = Reached::deny(denial, "insufficient_scope");
                r.claims = Some((provider, claims));
                r
            }
        }
    }

    fn finish(&self, rule: Option<&Rule>, reached: Reached) -> Evaluation {
        let enforced = self.policy.mode == Mode::Enforce;
        let identity = reached.claims.as_ref().map(|(p, c)| Identity {
            provider: self.policy.providers[*p].name.clone(),
            subject: c.get("sub").and_then(Value::as_str).map(str::to_string),
            issuer: c.get("iss").and_then(Value::as_str).map(str::to_string),
        });
        let record = DecisionRecord {
            rule: rule.map(|r| r.name.clone()),
            verdict: if reached.verdict.is_ok() {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            enforced,
            status: reached.verdict.as_ref().err().map_or(200, |d| d.status),
            reason: reached.reason,
            detail: reached.detail.clone(),
            subject: identity.as_ref().and_then(|i| i.subject.clone()),
            issuer: identity.as_ref().and_then(|i| i.issuer.clone()),
            token_hash: reached
                .token
                .as_ref()
                .map(|(_, h)| h.iter().take(6).map(|b| format!("{b:02x}")).collect()),
            cache: reached.cache,
        };
        let decision = match reached.verdict {
            Err(denial) if enforced => Decision::Deny(denial),
            _ => {
                let mut headers_to_set = Vec::new();
                if let Some((_, claims)) = &reached.claims {
                    for h in &self.policy.claim_headers {
                        if let Some(v) = h.path.lookup(claims).and_then(claims::header_value) {
                            headers_to_set.push((h.header.clone(), v));
                        }
                    }
                    if let (Some(name), Some((token, _))) =
                        (&self.policy.payload_header, &reached.token)
                    {
                        if let Some(payload) = token.split('.').nth(1) {
                            headers_to_set.push((name.clone(), payload.to_string()));
                        }
                    }
                }
                let mut headers_to_remove = self.owned_headers.clone();
                for (name, value) in reached.strip_edits {
                    match value {
                        Some(v) => headers_to_set.push((name, v)),
                        None => headers_to_remove.push(name),
                    }
                }
                Decision::Allow {
                    headers_to_remove,
                    headers_to_set,
                    identity,
                }
            }
        };
        Evaluation { decision, record }
    }
}
