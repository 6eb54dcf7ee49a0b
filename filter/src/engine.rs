//! The decision pipeline for one request: route → extract → cache → verify → authorize.
//!
//! Plain Rust: the adapter hands in the request headers and the current time, and gets
//! back a [`Decision`] to apply and a [`DecisionRecord`] to log and count.

use crate::cache::{self, RejectedTokens, TokenCache, VerifiedToken};
use crate::claims;
use crate::config::{Config, Crypto};
use crate::jwks_fetch::{max_age, FetchError, FetchProgress, FetchRequest, KeyFetcher};
use crate::keys::{JwksError, KeyLookupError, KeySet};
use crate::native_signature::{HostTrust, NativeVerifier};
use crate::policy::{AuthMode, KeySource, Mode, Policy, Rule};
use crate::request::Request;
use crate::token::{self, TokenError, TokenSource};
use crate::verify::{self, Native, SignatureBackend, VerifyError};
use serde_json::{Map, Value};
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
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
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
    /// Hold the request until the keys of this provider arrive (or the wait times out),
    /// then decide again.
    WaitForKeys(usize),
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
    pub token_hash: Option<Rc<str>>,
    /// Cache participation.
    pub cache: CacheUse,
    /// What checked the signature, when this request verified a token afresh.
    pub crypto: Option<SignatureBackend>,
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
            "portcullis decision verdict={} mode={} status={} rule={} reason={} sub={} iss={} token={} cache={} crypto={} detail={}",
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
            Quoted(&self.detail),
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
    fetchers: Vec<Option<KeyFetcher>>,
    cache: TokenCache,
    rejected: RejectedTokens,
    crypto: Crypto,
    native: Option<Box<dyn NativeVerifier>>,
    trust: HostTrust,
    owned_headers: Vec<String>,
    /// `None` while no one reads the decision log: a fingerprint is then not worth its
    /// SHA-256 over the whole token, and tokens get this placeholder instead.
    unlogged: Option<Rc<str>>,
}

/// The outcome of the token part of the pipeline, before enforcement mode applies.
struct Reached {
    verdict: Result<(), Denial>,
    wait: Option<usize>,
    reason: &'static str,
    detail: String,
    claims: Option<(usize, Rc<Map<String, Value>>)>,
    token: Option<(String, Rc<str>)>,
    strip_edits: Vec<(String, Option<String>)>,
    cache: CacheUse,
    crypto: Option<SignatureBackend>,
}

impl Reached {
    fn deny(denial: Denial, reason: &'static str) -> Reached {
        Reached {
            detail: denial.description.clone(),
            verdict: Err(denial),
            wait: None,
            reason,
            claims: None,
            token: None,
            strip_edits: Vec::new(),
            cache: CacheUse::None,
            crypto: None,
        }
    }

    fn wait(provider: usize) -> Reached {
        Reached {
            wait: Some(provider),
            ..Reached::allow("waiting_for_keys", "waiting for the provider's keys")
        }
    }

    fn allow(reason: &'static str, detail: &str) -> Reached {
        Reached {
            verdict: Ok(()),
            wait: None,
            reason,
            detail: detail.into(),
            claims: None,
            token: None,
            strip_edits: Vec::new(),
            cache: CacheUse::None,
            crypto: None,
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
                KeySource::Remote(_) => None,
            })
            .collect();
        let fetchers = config
            .policy
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Inline(_) => None,
                KeySource::Remote(settings) => Some(KeyFetcher::new((**settings).clone())),
            })
            .collect();
        let owned_headers = config.policy.owned_headers();
        Engine {
            policy: Rc::new(config.policy),
            keys,
            fetchers,
            cache: TokenCache::new(config.cache_size),
            // Forged tokens get a quarter of the room valid ones get: enough to absorb a
            // replayed forgery, too little for a flood of them to matter for memory.
            rejected: RejectedTokens::new(config.cache_size / 4),
            crypto: config.crypto,
            native: None,
            trust: HostTrust::default(),
            owned_headers,
            unlogged: None,
        }
    }

    /// Whether decisions are logged. When they are not, a newly seen token gets no
    /// fingerprint (`token=-`, also on later hits while it stays cached).
    pub fn set_logging(&mut self, logged: bool) {
        match (logged, &self.unlogged) {
            (true, _) => self.unlogged = None,
            (false, None) => self.unlogged = Some(Rc::from("-")),
            (false, Some(_)) => {}
        }
    }

    /// Lets the engine check signatures with the host's native crypto (unless the
    /// configuration says `"crypto": "wasm"`).
    pub fn set_native_verifier(&mut self, verifier: Box<dyn NativeVerifier>) {
        if self.crypto == Crypto::Auto {
            self.native = Some(verifier);
        }
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces a provider's keys. Cached tokens survive only if no key was removed, so
    /// a routine refresh costs nothing and a revoked key stops working at once.
    pub fn set_keys(&mut self, provider: usize, keys: KeySet) {
        if let Some(slot) = self.keys.get_mut(provider) {
            let kept = slot.as_ref().is_some_and(|old| old.is_kept_by(&keys));
            if !kept {
                self.cache.forget_provider(provider);
            }
            // A token refused under the old keys may verify under the new ones.
            self.rejected.clear();
            *slot = Some(keys);
        }
    }

    /// Keys currently installed for a provider.
    pub fn keys(&self, provider: usize) -> Option<&KeySet> {
        self.keys.get(provider).and_then(Option::as_ref)
    }

    /// Indexes of the providers whose keys are fetched.
    pub fn remote_providers(&self) -> Vec<usize> {
        (0..self.fetchers.len())
            .filter(|i| self.fetchers[*i].is_some())
            .collect()
    }

    /// A provider's fetch state, if its keys are remote.
    pub fn fetcher(&self, provider: usize) -> Option<&KeyFetcher> {
        self.fetchers.get(provider).and_then(Option::as_ref)
    }

    /// Callouts due now, one per provider at most.
    pub fn poll_fetches(&mut self, now: u64) -> Vec<(usize, FetchRequest)> {
        let mut out = Vec::new();
        for (i, f) in self.fetchers.iter_mut().enumerate() {
            if let Some(req) = f.as_mut().and_then(|f| f.poll(now)) {
                out.push((i, req));
            }
        }
        out
    }

    /// The callout for `provider` failed without a response.
    pub fn fetch_failed(&mut self, provider: usize, now: u64) -> Option<FetchError> {
        let f = self.fetchers.get_mut(provider)?.as_mut()?;
        Some(f.on_failure(now))
    }

    /// A callout response for `provider`; installs the keys it brings.
    pub fn fetch_response(
        &mut self,
        provider: usize,
        now: u64,
        status: u16,
        cache_control: Option<&str>,
        body: &[u8],
    ) -> Result<FetchProgress, FetchError> {
        let algorithms = match self.policy.providers.get(provider) {
            Some(p) => p.requirements.algorithms.clone(),
            None => return Err(FetchError::Unexpected),
        };
        let Some(fetcher) = self.fetchers.get_mut(provider).and_then(Option::as_mut) else {
            return Err(FetchError::Unexpected);
        };
        let progress = fetcher.on_response(
            now,
            status,
            cache_control.and_then(max_age),
            body,
            &algorithms,
        )?;
        if let FetchProgress::Keys(k) = &progress {
            self.set_keys(provider, k.keys.clone());
        }
        Ok(progress)
    }

    /// Keys another VM fetched and published. Installs them when they are newer than
    /// ours; returns whether they were installed.
    pub fn adopt_shared_keys(
        &mut self,
        provider: usize,
        document: &[u8],
        fetched_at: u64,
        refresh_at: u64,
    ) -> Result<bool, JwksError> {
        let Some(p) = self.policy.providers.get(provider) else {
            return Ok(false);
        };
        let Some(fetcher) = self.fetchers.get(provider).and_then(Option::as_ref) else {
            return Ok(false);
        };
        if !fetcher.accepts_shared(fetched_at) {
            return Ok(false);
        }
        let (keys, _) = KeySet::from_jwks(document, &p.requirements.algorithms)?;
        if let Some(f) = self.fetchers.get_mut(provider).and_then(Option::as_mut) {
            f.adopt_shared(fetched_at, refresh_at);
        }
        self.set_keys(provider, keys);
        Ok(true)
    }

    /// The answer for a request that waited for keys that did not come.
    pub fn keys_unavailable(&self, provider: usize, now: u64) -> Denial {
        let name = self
            .policy
            .providers
            .get(provider)
            .map_or("?", |p| p.name.as_str());
        let retry_after = self.fetcher(provider).map_or(5, |f| f.retry_after(now));
        Denial {
            status: 503,
            www_authenticate: None,
            error: "temporarily_unavailable",
            description: format!("signing keys of provider {name} are not available yet"),
            retry_after: Some(retry_after),
        }
    }

    /// Builds the record and decision for a request whose wait for keys ran out.
    pub fn wait_expired(&self, provider: usize, now: u64) -> Evaluation {
        let denial = self.keys_unavailable(provider, now);
        // A denial edits no header, so the request itself is not needed.
        self.finish(
            &Request::new(&[]),
            None,
            Reached::deny(denial, "keys_unavailable"),
        )
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
            retry_after: None,
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
                retry_after: None,
            };
            return self.finish(&req, None, Reached::deny(denial, "no_rule"));
        };
        let reached = self.reach(&policy, rule, &req, now);
        self.finish(&req, Some(rule), reached)
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
                    retry_after: None,
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
                retry_after: None,
            };
            return Reached::deny(denial, "missing_token");
        };
        // The token is copied into a shared key only when a miss inserts it: a hit borrows it.
        let token = found.token;
        let (mut reached, fingerprint) = match self.cache.get(&token, now) {
            Some(hit) => {
                let mut r = self.authorize_verified(rule, hit.provider, hit.claims);
                r.cache = CacheUse::Hit;
                (r, hit.fingerprint)
            }
            None => match self.rejected.get(&token) {
                Some(fingerprint) => {
                    let e = VerifyError::BadSignature;
                    let mut r = Reached::deny(self.invalid_token(&e.to_string()), e.code());
                    r.cache = CacheUse::Hit;
                    (r, fingerprint)
                }
                None => {
                    let fingerprint = match &self.unlogged {
                        Some(placeholder) => Rc::clone(placeholder),
                        None => cache::fingerprint(&token),
                    };
                    let mut r = self.verify_fresh(
                        policy,
                        rule,
                        &candidates,
                        &token,
                        Rc::clone(&fingerprint),
                        now,
                    );
                    r.cache = CacheUse::Miss;
                    (r, fingerprint)
                }
            },
        };
        if !policy.forward_token {
            if let Some(source) = sources.get(found.source) {
                reached.strip_edits = source.strip_edits(req);
            }
        }
        reached.token = Some((token, fingerprint));
        reached
    }

    fn verify_fresh(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        candidates: &[usize],
        token: &str,
        fingerprint: Rc<str>,
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
            if let Err(e) = verify::check_claims(&jwt, req, now) {
                last = e;
                continue;
            }
            if let Some(f) = self.fetchers.get_mut(p).and_then(Option::as_mut) {
                if f.keys_too_stale(now) {
                    self.keys[p] = None;
                }
                if self.keys[p].is_none() {
                    if f.backing_off(now) {
                        let d = self.keys_unavailable(p, now);
                        return Reached::deny(d, "keys_unavailable");
                    }
                    f.want_now();
                    return Reached::wait(p);
                }
            }
            let Some(keys) = self.keys.get(p).and_then(Option::as_ref) else {
                continue;
            };
            let native = self.native.as_deref().map(|host| Native {
                host,
                trust: &mut self.trust,
            });
            let outcome = verify::check_signature(&jwt, keys, req, now, native);
            if let Err(VerifyError::Key(KeyLookupError::UnknownKid(_))) = &outcome {
                if let Some(f) = self.fetchers.get_mut(p).and_then(Option::as_mut) {
                    // A fetch already under way may bring the key: wait for it too.
                    if f.want_unknown_kid(now) || f.fetch_pending() {
                        return Reached::wait(p);
                    }
                }
            }
            match outcome {
                Ok(backend) => {
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
                        fingerprint,
                    };
                    let claims = Rc::clone(&verified.claims);
                    self.cache.insert(Rc::from(token), verified);
                    let mut r = self.authorize_verified(rule, p, claims);
                    r.crypto = Some(backend);
                    return r;
                }
                Err(e) => last = e,
            }
        }
        if last == VerifyError::BadSignature {
            self.rejected.insert(Rc::from(token), fingerprint);
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
                    retry_after: None,
                };
                let mut r = Reached::deny(denial, "insufficient_scope");
                r.claims = Some((provider, claims));
                r
            }
        }
    }

    fn finish(&self, req: &Request<'_>, rule: Option<&Rule>, reached: Reached) -> Evaluation {
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
            detail: reached.detail,
            subject: identity.as_ref().and_then(|i| i.subject.clone()),
            issuer: identity.as_ref().and_then(|i| i.issuer.clone()),
            token_hash: reached.token.as_ref().map(|(_, f)| Rc::clone(f)),
            cache: reached.cache,
            crypto: reached.crypto,
        };
        let decision = match (reached.wait, reached.verdict) {
            (Some(provider), _) => Decision::WaitForKeys(provider),
            (None, Err(denial)) if enforced => Decision::Deny(denial),
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
                // Removing a header the request does not carry would be a host call for nothing.
                let mut headers_to_remove: Vec<String> = self
                    .owned_headers
                    .iter()
                    .filter(|h| req.header(h).is_some())
                    .cloned()
                    .collect();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config;
    use portcullis_testkit::{self as testkit, claims, NOW};
    use serde_json::json;

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

    fn config_json(extra: Value) -> Value {
        let mut c = json!({
            "providers": {
                "idp": {
                    "issuer": "https://idp.test",
                    "audiences": ["api"],
                    "jwks": {"keys": [testkit::rsa().jwk()]},
                    "token_sources": [
                        {"header": "authorization", "prefix": "Bearer "},
                        {"query": "access_token"},
                        {"cookie": "session"}
                    ]
                }
            },
            "rules": [
                {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
                {"name": "read", "match": {"path": {"prefix": "/api/"}, "methods": ["GET"]},
                 "scopes": {"all_of": ["read"]}},
                {"name": "write", "match": {"path": {"prefix": "/api/"}, "methods": ["POST"]},
                 "scopes": {"any_of": ["write", "admin"]}},
                {"name": "admin", "match": {"path": {"regex": "^/admin(/|$)"}, "hosts": ["*.example.com"]},
                 "claims": [{"claim": "realm_access.roles", "any_of": ["admin"]}]},
                {"name": "aws", "match": {"path": {"prefix": "/aws/"}},
                 "claims": [{"claim": "https://aws.amazon.com/role", "glob": "arn:aws:iam::*:role/Admin*"}]},
                {"name": "public", "match": {"path": {"prefix": "/public/"}}, "auth": "optional"}
            ],
            "claim_headers": [
                {"claim": "sub", "header": "x-jwt-sub"},
                {"claim": "realm_access.roles", "header": "X-JWT-Roles"}
            ],
            "payload_header": "x-jwt-payload"
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
            c.extend(e);
        }
        c
    }

    fn engine(extra: Value) -> Engine {
        Engine::new(config::parse(config_json(extra).to_string().as_bytes()).unwrap())
    }

    fn request(
        method: &str,
        path: &str,
        host: &str,
        more: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), host.to_string()),
        ];
        h.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    fn get(e: &mut Engine, path: &str, token: Option<&str>) -> Evaluation {
        let auth = token.map(|t| format!("Bearer {t}"));
        let more: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        e.decide(&request("GET", path, "api.test", &more), NOW)
    }

    #[test]
    fn tokens_get_a_fingerprint_only_while_decisions_are_logged() {
        let mut e = engine(json!({}));
        let first = testkit::rsa().sign(claims(json!({"scope": "read"})));
        let second = testkit::rsa().sign(claims(json!({"scope": "read", "jti": "2"})));
        let logged = get(&mut e, "/api/items", Some(&first)).record;
        let hash = logged.token_hash.as_deref().unwrap();
        assert_eq!(hash.len(), 12);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
        e.set_logging(false);
        let unlogged = get(&mut e, "/api/items", Some(&second)).record;
        assert_eq!(unlogged.verdict, Verdict::Allow);
        assert_eq!(unlogged.token_hash.as_deref(), Some("-"));
        e.set_logging(true);
        let hit = get(&mut e, "/api/items", Some(&first)).record;
        assert_eq!(
            hit.token_hash.as_deref(),
            Some(hash),
            "a hit keeps its fingerprint"
        );
    }

    fn denial(ev: &Evaluation) -> &Denial {
        match &ev.decision {
            Decision::Deny(d) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn allowed(ev: &Evaluation) -> (&Vec<String>, &Vec<(String, String)>) {
        match &ev.decision {
            Decision::Allow {
                headers_to_remove,
                headers_to_set,
                ..
            } => (headers_to_remove, headers_to_set),
            other => panic!("expected allow, got {other:?}"),
        }
    }

    fn token(extra: Value) -> String {
        testkit::rsa().sign(claims(extra))
    }

    #[test]
    fn valid_token_is_allowed_with_claim_headers() {
        let mut e = engine(json!({}));
        let t = token(json!({"scope": "read", "realm_access": {"roles": ["user", "admin"]}}));
        let bearer = format!("Bearer {t}");
        let spoofed = [
            ("authorization", bearer.as_str()),
            ("x-jwt-sub", "mallory"),
            ("X-JWT-Payload", "e30"),
        ];
        let ev = e.decide(&request("GET", "/api/items", "api.test", &spoofed), NOW);
        let (remove, set) = allowed(&ev);
        // Only the copies the request carries are removed: the rest would be host calls
        // for nothing.
        assert_eq!(
            remove,
            &vec!["x-jwt-sub".to_string(), "x-jwt-payload".into()]
        );
        let clean = get(&mut e, "/api/items", Some(&t));
        assert!(allowed(&clean).0.is_empty());
        assert!(set.contains(&("x-jwt-sub".into(), "alice".into())));
        assert!(set.contains(&("x-jwt-roles".into(), "user,admin".into())));
        let payload = &set.iter().find(|(k, _)| k == "x-jwt-payload").unwrap().1;
        assert_eq!(Some(payload.as_str()), t.split('.').nth(1));
        assert_eq!(ev.record.verdict, Verdict::Allow);
        assert_eq!(ev.record.subject.as_deref(), Some("alice"));
        assert_eq!(ev.record.rule.as_deref(), Some("read"));
    }

    #[test]
    fn missing_token_gets_a_bare_challenge() {
        let mut e = engine(json!({}));
        let ev = get(&mut e, "/api/items", None);
        let d = denial(&ev);
        assert_eq!(d.status, 401);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some("Bearer realm=\"portcullis\"")
        );
        assert_eq!(ev.record.reason, "missing_token");
    }

    #[test]
    fn invalid_tokens_get_invalid_token_and_never_echo_the_token() {
        let mut e = engine(json!({}));
        let expired = token(json!({"scope": "read", "exp": NOW - 3600}));
        let forged = testkit::rsa_other().sign(claims(json!({"scope": "read"})));
        for (t, reason) in [
            (expired.as_str(), "expired"),
            (forged.as_str(), "bad_signature"),
            ("garbage", "malformed"),
        ] {
            let ev = get(&mut e, "/api/items", Some(t));
            let d = denial(&ev);
            assert_eq!(d.status, 401, "{reason}");
            let w = d.www_authenticate.as_deref().unwrap();
            assert!(
                w.starts_with(
                    "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\""
                ),
                "{w}"
            );
            assert_eq!(ev.record.reason, reason);
            let line = ev.record.to_string();
            for piece in t.split('.').filter(|p| p.len() > 8) {
                assert!(!w.contains(piece) && !d.body().contains(piece) && !line.contains(piece));
            }
        }
    }

    #[test]
    fn missing_scope_is_403_naming_the_scope() {
        let mut e = engine(json!({}));
        let ev = get(
            &mut e,
            "/api/items",
            Some(&token(json!({"scope": "write readonly"}))),
        );
        let d = denial(&ev);
        assert_eq!(d.status, 403);
        let w = d.www_authenticate.as_deref().unwrap();
        assert!(
            w.contains("error=\"insufficient_scope\"") && w.ends_with("scope=\"read\""),
            "{w}"
        );
        let body: Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(body["error"], "insufficient_scope");
    }

    #[test]
    fn scp_arrays_and_any_of_scopes() {
        let mut e = engine(json!({}));
        let t = token(json!({"scp": ["admin"]}));
        let ev = e.decide(
            &request(
                "POST",
                "/api/x",
                "api.test",
                &[("authorization", &format!("Bearer {t}"))],
            ),
            NOW,
        );
        allowed(&ev);
        let t = token(json!({"scp": "read"}));
        let ev = e.decide(
            &request(
                "POST",
                "/api/x",
                "api.test",
                &[("authorization", &format!("Bearer {t}"))],
            ),
            NOW,
        );
        assert_eq!(denial(&ev).status, 403);
    }

    #[test]
    fn roles_match_whole_values_only() {
        let mut e = engine(json!({}));
        let run = |e: &mut Engine, roles: Value, host: &str| {
            let t = token(json!({"realm_access": {"roles": roles}}));
            e.decide(
                &request(
                    "GET",
                    "/admin/stats",
                    host,
                    &[("authorization", &format!("Bearer {t}"))],
                ),
                NOW,
            )
        };
        allowed(&run(&mut e, json!(["admin"]), "ops.example.com"));
        allowed(&run(&mut e, json!("admin"), "ops.example.com:8443"));
        for roles in [
            json!(["superadmin"]),
            json!(["admin2"]),
            json!("administrator"),
            json!([]),
        ] {
            assert_eq!(
                denial(&run(&mut e, roles.clone(), "ops.example.com")).status,
                403,
                "{roles}"
            );
        }
        // The host condition is part of the match: elsewhere no rule applies.
        let ev = run(&mut e, json!(["admin"]), "example.com");
        assert_eq!(denial(&ev).status, 403);
        assert_eq!(ev.record.reason, "no_rule");
    }

    #[test]
    fn iam_role_arns_match_globs() {
        let mut e = engine(json!({}));
        let run = |e: &mut Engine, arn: &str| {
            get(
                e,
                "/aws/x",
                Some(&token(json!({"https://aws.amazon.com/role": arn}))),
            )
        };
        allowed(&run(&mut e, "arn:aws:iam::123456789012:role/AdminFull"));
        assert_eq!(
            denial(&run(&mut e, "arn:aws:iam::123456789012:role/ReadOnly")).status,
            403
        );
        assert_eq!(
            denial(&run(&mut e, "arn:aws:iam::1:user/AdminFull")).status,
            403
        );
    }

    #[test]
    fn public_routes_strip_spoofed_headers() {
        let mut e = engine(json!({}));
        let ev = e.decide(
            &request("GET", "/healthz", "api.test", &[("x-jwt-sub", "mallory")]),
            NOW,
        );
        let (remove, set) = allowed(&ev);
        assert!(remove.contains(&"x-jwt-sub".to_string()));
        assert!(set.is_empty());
        assert_eq!(ev.record.reason, "public");
    }

    #[test]
    fn optional_auth_allows_anonymous_but_not_bad_tokens() {
        let mut e = engine(json!({}));
        let ev = get(&mut e, "/public/x", None);
        assert_eq!(allowed(&ev).1.len(), 0);
        assert_eq!(ev.record.reason, "anonymous");
        let ev = get(&mut e, "/public/x", Some("not.a.token"));
        assert_eq!(denial(&ev).status, 401);
        let ev = get(&mut e, "/public/x", Some(&token(json!({}))));
        assert!(allowed(&ev)
            .1
            .contains(&("x-jwt-sub".into(), "alice".into())));
    }

    #[test]
    fn unmatched_requests_are_denied() {
        let mut e = engine(json!({}));
        let ev = e.decide(&request("DELETE", "/api/x", "api.test", &[]), NOW);
        assert_eq!(denial(&ev).status, 403);
    }

    #[test]
    fn observe_mode_lets_denials_through_and_records_them() {
        let mut e = engine(json!({"mode": "observe"}));
        let ev = e.decide(
            &request("GET", "/api/items", "api.test", &[("x-jwt-sub", "mallory")]),
            NOW,
        );
        let (remove, set) = allowed(&ev);
        assert!(remove.contains(&"x-jwt-sub".to_string()) && set.is_empty());
        assert_eq!(
            (ev.record.verdict, ev.record.enforced, ev.record.status),
            (Verdict::Deny, false, 401)
        );
        assert!(ev.record.to_string().contains("verdict=deny mode=observe"));
        // A verified identity lacking a scope is still passed on, marked by the log only.
        let ev = get(
            &mut e,
            "/api/items",
            Some(&token(json!({"scope": "other"}))),
        );
        assert!(allowed(&ev)
            .1
            .contains(&("x-jwt-sub".into(), "alice".into())));
        assert_eq!(ev.record.reason, "insufficient_scope");
    }

    #[test]
    fn cache_skips_verification_but_rechecks_time() {
        let mut e = engine(json!({}));
        let t = token(json!({"scope": "read", "exp": NOW + 100}));
        assert_eq!(get(&mut e, "/api/a", Some(&t)).record.cache, CacheUse::Miss);
        assert_eq!(get(&mut e, "/api/a", Some(&t)).record.cache, CacheUse::Hit);
        let later = request(
            "GET",
            "/api/a",
            "api.test",
            &[("authorization", &format!("Bearer {t}"))],
        );
        let ev = e.decide(&later, NOW + 161);
        assert_eq!(denial(&ev).status, 401);
        assert_eq!(
            ev.record.cache,
            CacheUse::Miss,
            "an expired entry is not a hit"
        );
        // A rule is re-evaluated on every hit.
        let ev = e.decide(
            &request(
                "POST",
                "/api/a",
                "api.test",
                &[("authorization", &format!("Bearer {t}"))],
            ),
            NOW,
        );
        assert_eq!(denial(&ev).status, 403);
    }

    #[test]
    fn tokens_from_query_and_cookie_and_ambiguity() {
        let mut e = engine(json!({"forward_token": false}));
        let t = token(json!({"scope": "read"}));
        let ev = e.decide(
            &request("GET", &format!("/api/a?x=1&access_token={t}"), "h", &[]),
            NOW,
        );
        let (_, set) = allowed(&ev);
        assert!(
            set.contains(&(":path".into(), "/api/a?x=1".into())),
            "{set:?}"
        );
        let ev = e.decide(
            &request(
                "GET",
                "/api/a",
                "h",
                &[("cookie", &format!("a=1; session={t}"))],
            ),
            NOW,
        );
        let (_, set) = allowed(&ev);
        assert!(set.contains(&("cookie".into(), "a=1".into())));
        let ev = e.decide(
            &request(
                "GET",
                "/api/a",
                "h",
                &[("authorization", &format!("Bearer {t}"))],
            ),
            NOW,
        );
        assert!(allowed(&ev).0.contains(&"authorization".to_string()));
        let other = token(json!({"scope": "read", "sub": "bob"}));
        let ev = e.decide(
            &request(
                "GET",
                &format!("/api/a?access_token={other}"),
                "h",
                &[("authorization", &format!("Bearer {t}"))],
            ),
            NOW,
        );
        assert_eq!(denial(&ev).status, 400);
    }

    #[test]
    fn decision_line_is_structured() {
        let mut e = engine(json!({}));
        let t = token(json!({"scope": "read"}));
        let line = get(&mut e, "/api/a", Some(&t)).record.to_string();
        assert!(line.starts_with("portcullis decision verdict=allow mode=enforce status=200 rule=\"read\" reason=authorized sub=\"alice\" iss=\"https://idp.test\" token="), "{line}");
        let hash = line
            .split("token=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(hash.len(), 12);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn new_keys_forget_cached_tokens() {
        let mut e = engine(json!({}));
        let t = token(json!({"scope": "read"}));
        allowed(&get(&mut e, "/api/a", Some(&t)));
        let es = testkit::es256();
        let jwks = json!({"keys": [es.jwk()]}).to_string();
        let (set, _) = KeySet::from_jwks(jwks.as_bytes(), &crate::alg::Alg::ASYMMETRIC).unwrap();
        e.set_keys(0, set);
        assert_eq!(denial(&get(&mut e, "/api/a", Some(&t))).status, 401);
    }

    fn remote_engine() -> Engine {
        let mut cfg = config_json(json!({}));
        let idp = cfg["providers"]["idp"].as_object_mut().unwrap();
        idp.remove("jwks");
        idp.insert(
            "remote_jwks".into(),
            json!({"cluster": "idp", "uri": "https://idp.test/keys", "timeout_ms": 1000}),
        );
        Engine::new(config::parse(cfg.to_string().as_bytes()).unwrap())
    }

    fn jwks_of(signers: &[&testkit::Signer]) -> Vec<u8> {
        json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn cold_start_waits_for_one_fetch() {
        let mut e = remote_engine();
        let t = token(json!({"scope": "read"}));
        assert_eq!(e.poll_fetches(NOW).len(), 1, "keys are fetched at start");
        for _ in 0..3 {
            assert_eq!(
                get(&mut e, "/api/a", Some(&t)).decision,
                Decision::WaitForKeys(0)
            );
        }
        assert!(e.poll_fetches(NOW).is_empty(), "single flight");
        e.fetch_response(
            0,
            NOW,
            200,
            Some("max-age=300"),
            &jwks_of(&[testkit::rsa()]),
        )
        .unwrap();
        allowed(&get(&mut e, "/api/a", Some(&t)));
        // Garbage checks happen before any wait: a bad issuer never waits for keys.
        let wrong = token(json!({"scope": "read", "iss": "https://other.test"}));
        assert_eq!(denial(&get(&mut e, "/api/a", Some(&wrong))).status, 401);
    }

    #[test]
    fn unreachable_idp_gives_503_not_401() {
        let mut e = remote_engine();
        let t = token(json!({"scope": "read"}));
        e.poll_fetches(NOW);
        e.fetch_response(0, NOW, 504, None, b"upstream request timeout")
            .unwrap_err();
        let ev = get(&mut e, "/api/a", Some(&t));
        let d = denial(&ev);
        assert_eq!((d.status, d.retry_after), (503, Some(1)));
        assert_eq!(ev.record.reason, "keys_unavailable");
    }

    #[test]
    fn unknown_kid_refetches_once_then_answers() {
        let mut e = remote_engine();
        e.poll_fetches(NOW);
        let es = testkit::es256();
        e.fetch_response(0, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
            .unwrap();
        let cached = token(json!({"scope": "read"}));
        allowed(&get(&mut e, "/api/a", Some(&cached)));
        let rotated = es.sign(claims(json!({"scope": "read"})));
        assert_eq!(
            get(&mut e, "/api/a", Some(&rotated)).decision,
            Decision::WaitForKeys(0)
        );
        assert_eq!(e.poll_fetches(NOW).len(), 1);
        // The IdP now publishes both keys: the new one works, the cache survives.
        e.fetch_response(0, NOW, 200, None, &jwks_of(&[testkit::rsa(), &es]))
            .unwrap();
        allowed(&get(&mut e, "/api/a", Some(&rotated)));
        assert_eq!(
            get(&mut e, "/api/a", Some(&cached)).record.cache,
            CacheUse::Hit
        );
        // A random kid right after: no second re-fetch within the interval.
        let random = testkit::Signer::Es256(
            jwt_simple::prelude::ES256KeyPair::generate().with_key_id("random-kid"),
        )
        .sign(claims(json!({"scope": "read"})));
        let ev = get(&mut e, "/api/a", Some(&random));
        assert_eq!(denial(&ev).status, 401);
        assert_eq!(ev.record.reason, "unknown_kid");
        assert!(e.poll_fetches(NOW).is_empty());
    }

    #[test]
    fn removed_keys_stop_working_at_once() {
        let mut e = remote_engine();
        e.poll_fetches(NOW);
        e.fetch_response(0, NOW, 200, None, &jwks_of(&[testkit::rsa()]))
            .unwrap();
        let t = token(json!({"scope": "read"}));
        allowed(&get(&mut e, "/api/a", Some(&t)));
        let es = testkit::es256();
        let changed = e
            .adopt_shared_keys(0, &jwks_of(&[&es]), NOW + 1, NOW + 600)
            .unwrap();
        assert!(changed);
        let ev = get(&mut e, "/api/a", Some(&t));
        assert_eq!(ev.record.cache, CacheUse::Miss);
        assert!(!e
            .adopt_shared_keys(0, &jwks_of(&[testkit::rsa()]), NOW, NOW + 600)
            .unwrap());
    }
}
