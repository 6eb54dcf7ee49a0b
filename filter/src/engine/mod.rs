//! The decision for one request: route → extract → cache → verify → authorize → enforce.
//!
//! Sans-IO: the adapter hands in the request headers and the time, and gets back an
//! [`Evaluation`]: a [`Step`] for the host to carry out and a [`DecisionRecord`] to log
//! and count. A request that must wait (for keys, or for a callout's answer) comes back
//! as [`Step::Suspend`] with a ticket; [`Engine::resume`] takes the ticket and what
//! arrived, and returns the next evaluation. The engine never calls the host.

mod answer;
mod login;
mod reason;
mod record;
mod step;
mod suspended;

pub use answer::internal_error;
pub use reason::Reason;
pub use record::{CacheUse, DecisionRecord, Verdict};
pub use step::{
    Allow, Evaluation, Identity, LocalReply, RequestEdits, ResponseEdits, Resumption, Step,
    Suspension,
};

use crate::cache::{self, RejectedTokens, TokenCache, VerifiedToken};
use crate::callout::Ticket;
use crate::claims;
use crate::config::{Config, Crypto};
use crate::keyring::{KeyAvailability, KeyRing, ProviderId};
use crate::keys::KeyLookupError;
use crate::native_signature::{HostTrust, NativeVerifier};
use crate::path::{self, NormalizedPath};
use crate::policy::{AuthMode, Mode, PathMode, Policy, Rule, RuleRouting};
use crate::request::Request;
use crate::time::UnixTime;
use crate::token::{self, TokenError, TokenSource};
use crate::verify::{self, Native, SignatureBackend, VerifyError};
use answer::{challenge, sanitize, Denial};
use serde_json::{Map, Value};
use std::rc::Rc;
use suspended::{Awaiting, Continuation, Suspended, SuspendedRequests};

/// The policy and what deciding needs at run time: the key ring, the token caches, the
/// held requests.
pub struct Engine {
    policy: Rc<Policy>,
    keyring: KeyRing,
    /// The key ring's generation and per-provider revisions the caches were last made
    /// consistent with; indexed like the policy's providers.
    seen_generation: u64,
    seen_revisions: Vec<u64>,
    cache: TokenCache,
    rejected: RejectedTokens,
    /// Browser sessions already opened, by their sealed cookie value: a hit skips the
    /// AES-GCM open and the JSON parse (a separate map, so a session never passes as a
    /// bearer token).
    sessions: TokenCache,
    /// Each login's endpoints, once read from the provider's discovery document (when the
    /// policy does not give them); indexed like the policy's logins.
    discovered: Vec<Option<crate::oidc::Endpoints>>,
    crypto: Crypto,
    native: Option<Box<dyn NativeVerifier>>,
    trust: HostTrust,
    owned_headers: Vec<String>,
    /// `None` while no one reads the decision log: a fingerprint is then not worth its
    /// SHA-256 over the whole token, and tokens get this placeholder instead.
    unlogged: Option<Rc<str>>,
    suspended: SuspendedRequests,
}

/// Where the token part of the pipeline ended, before the enforcement mode applies.
#[derive(Debug)]
enum Outcome {
    Allow,
    Deny(Denial),
    /// Wait for this provider's keys (until the deadline, or the key ring's usual budget),
    /// then decide again.
    Wait(ProviderId, Option<UnixTime>),
    /// Answer with this page or redirect; `always` answers it in observe mode too (the
    /// plugin's own paths), otherwise a `Deny` is only logged there.
    Reply {
        reply: LocalReply,
        verdict: Verdict,
        always: bool,
    },
    /// Hold the request until this callout's answer, then go on with the continuation.
    Exchange {
        callout: crate::callout::Callout,
        continuation: Continuation,
    },
}

/// Whether a request is decided for the first time, or again after it waited for keys:
/// a request waits at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    AfterWait,
}

/// Requests one VM holds for unknown kids of one provider; past this a forged-kid flood
/// gets its 401s at once rather than filling the table every request shares.
const MAX_KID_WAITERS: usize = 1024;

/// The judgement on a request, with what its record and its edits need.
struct Judgement {
    outcome: Outcome,
    reason: Reason,
    detail: String,
    claims: Option<(ProviderId, Rc<Map<String, Value>>)>,
    token: Option<(String, Rc<str>)>,
    strip_edits: Vec<(String, Option<String>)>,
    /// The path to forward instead of the client's (`path_mode: "normalize"`, path changed).
    path_rewrite: Option<NormalizedPath>,
    cache: CacheUse,
    crypto: Option<SignatureBackend>,
    /// The route tag the request goes upstream with.
    route: Option<String>,
}

impl Judgement {
    fn new(outcome: Outcome, reason: Reason, detail: String) -> Judgement {
        Judgement {
            outcome,
            reason,
            detail,
            claims: None,
            token: None,
            strip_edits: Vec::new(),
            path_rewrite: None,
            cache: CacheUse::None,
            crypto: None,
            route: None,
        }
    }

    fn deny(denial: Denial, reason: Reason) -> Judgement {
        let detail = denial.description.clone();
        Judgement::new(Outcome::Deny(denial), reason, detail)
    }

    fn allow(reason: Reason, detail: &str) -> Judgement {
        Judgement::new(Outcome::Allow, reason, detail.into())
    }

    fn wait(provider: ProviderId, until: Option<UnixTime>) -> Judgement {
        Judgement::new(
            Outcome::Wait(provider, until),
            Reason::WaitingForKeys,
            "waiting for the provider's keys".into(),
        )
    }
}

impl Engine {
    /// An engine for a validated configuration.
    pub fn new(config: Config) -> Engine {
        let keyring = KeyRing::new(&config.policy);
        let owned_headers = config.policy.owned_headers();
        let seen_revisions = vec![0; config.policy.providers.len()];
        let discovered = vec![None; config.policy.logins.len()];
        Engine {
            seen_generation: keyring.generation(),
            seen_revisions,
            keyring,
            policy: Rc::new(config.policy),
            cache: TokenCache::new(config.cache_size),
            // Forged tokens get a quarter of the room valid ones get: enough to absorb a
            // replayed forgery, too little for a flood of them to matter for memory.
            rejected: RejectedTokens::new(config.cache_size / 4),
            sessions: TokenCache::new(config.cache_size),
            discovered,
            crypto: config.crypto,
            native: None,
            trust: HostTrust::default(),
            owned_headers,
            unlogged: None,
            suspended: SuspendedRequests::default(),
        }
    }

    /// Decides one request.
    pub fn decide(&mut self, headers: &[(String, String)], now: UnixTime) -> Evaluation {
        self.decide_once(headers, now, Attempt::First)
    }

    fn decide_once(
        &mut self,
        headers: &[(String, String)],
        now: UnixTime,
        attempt: Attempt,
    ) -> Evaluation {
        self.sync_caches_with_keys();
        let req = Request::new(headers);
        // A cheap handle on the policy, so the rule can be borrowed while the cache mutates.
        let policy = Rc::clone(&self.policy);
        // Rules are matched against the path the upstream will resolve, never the spelling
        // the client chose; a path servers could resolve differently matches no rule.
        let normalized = match path::normalize(req.header(":path").unwrap_or("")) {
            Ok(n) => n,
            Err(e) => {
                let denial = Denial::plain(400, "invalid_request", e.to_string());
                let judgement = Judgement::deny(denial, Reason::AmbiguousPath);
                return self.enforce(&req, None, judgement, now);
            }
        };
        if let Some(eval) = self.login_endpoint(&policy, &req, normalized.path(), now, attempt) {
            return eval;
        }
        let Some(rule) = policy.route(&req, normalized.path()) else {
            let denial = Denial::plain(403, "access_denied", "no rule allows this request");
            return self.enforce(&req, None, Judgement::deny(denial, Reason::NoRule), now);
        };
        let mut judgement = self.judge(&policy, rule, &req, now.secs(), attempt);
        if policy.path_mode == PathMode::Normalize && normalized.changed() {
            judgement.path_rewrite = Some(normalized);
        }
        self.enforce(&req, Some(rule), judgement, now)
    }

    /// Carries on with a held request: what it waited for arrived, or its wait ran out.
    /// `None` when the ticket is not held (already resumed, or cancelled).
    pub fn resume(
        &mut self,
        ticket: Ticket,
        resumption: Resumption,
        now: UnixTime,
    ) -> Option<Evaluation> {
        let held = self.suspended.release(ticket)?;
        Some(match (held.awaiting, resumption) {
            // Whatever the fetch brought (or failed to) is final for this request: decided
            // again, it does not wait a second time.
            (Awaiting::Keys(_), Resumption::Keys | Resumption::TimedOut) => {
                self.decide_once(&held.headers, now, Attempt::AfterWait)
            }
            (Awaiting::Keys(provider), Resumption::Callout(_)) => {
                self.keys_unavailable(provider, now)
            }
            (Awaiting::Callout(continuation), resumption) => {
                self.continue_after_callout(&continuation, &held.headers, resumption, now)
            }
        })
    }

    /// Forgets a held request whose client went away.
    pub fn cancel(&mut self, ticket: Ticket) {
        self.suspended.release(ticket);
    }

    /// Held requests waiting for `provider`'s keys, oldest first: resume them with
    /// [`Resumption::Keys`] once its keys changed or its fetch ended.
    pub fn waiting_for(&self, provider: ProviderId) -> Vec<Ticket> {
        self.suspended.waiting_for(provider)
    }

    /// Held requests whose wait ran out: resume them with [`Resumption::TimedOut`].
    pub fn overdue(&self, now: UnixTime) -> Vec<Ticket> {
        self.suspended.overdue(now)
    }

    /// Number of held requests.
    pub fn suspended(&self) -> usize {
        self.suspended.len()
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

    /// The providers' keys.
    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// The providers' keys, to install fetched or shared ones. Whatever changes here is
    /// reflected in the caches at the next decision.
    pub fn keyring_mut(&mut self) -> &mut KeyRing {
        &mut self.keyring
    }

    /// Cached tokens survive new keys only if no key was removed, so a routine refresh
    /// costs nothing and a revoked key stops working at once; any new keys may verify a
    /// token refused under the old ones.
    fn sync_caches_with_keys(&mut self) {
        if self.keyring.generation() == self.seen_generation {
            return;
        }
        self.seen_generation = self.keyring.generation();
        self.rejected.clear();
        for (index, seen) in self.seen_revisions.iter_mut().enumerate() {
            let provider = ProviderId::from_index(index);
            let now = self.keyring.revision(provider);
            if *seen != now {
                *seen = now;
                self.cache.forget_provider(provider);
            }
        }
    }

    /// The evaluation for a request whose wait for keys ran out.
    fn keys_unavailable(&self, provider: ProviderId, now: UnixTime) -> Evaluation {
        let judgement = Judgement::deny(
            self.keys_unavailable_denial(provider, now.secs()),
            Reason::KeysUnavailable,
        );
        // A denial edits no header, so the request itself is not needed.
        self.enforce_final(&Request::new(&[]), None, judgement)
    }

    fn keys_unavailable_denial(&self, provider: ProviderId, now: u64) -> Denial {
        let name = self
            .policy
            .providers
            .get(provider.index())
            .map_or("?", |p| p.name.as_str());
        Denial {
            retry_after: Some(self.keyring.retry_after(provider, now)),
            ..Denial::plain(
                503,
                "temporarily_unavailable",
                format!("signing keys of provider {name} are not available yet"),
            )
        }
    }

    /// Hands a callout's answer to the feature that asked for it. Until a feature that
    /// suspends on its own callout ships, only the engine's tests construct one.
    fn continue_after_callout(
        &mut self,
        continuation: &Continuation,
        _headers: &[(String, String)],
        _resumption: Resumption,
        _now: UnixTime,
    ) -> Evaluation {
        match continuation {
            Continuation::TokenExchange {
                login,
                flow,
                flow_cookie,
            } => {
                let judgement = self.exchanged(*login, flow, flow_cookie, _resumption, _now);
                self.enforce_final(&Request::new(_headers), None, judgement)
            }
            Continuation::Discovery { login } => {
                self.discovered_endpoints(*login, _headers, _resumption, _now)
            }
            Continuation::Refresh { login, session } => {
                self.refreshed(*login, session, _headers, _resumption, _now)
            }
            #[cfg(test)]
            Continuation::Probe => {
                let judgement = match _resumption {
                    Resumption::Callout(Ok(r)) if r.status == 200 => {
                        Judgement::allow(Reason::Authorized, "probe answered 200")
                    }
                    _ => Judgement::deny(
                        Denial::plain(403, "access_denied", "probe refused"),
                        Reason::InsufficientScope,
                    ),
                };
                self.enforce_final(&Request::new(_headers), None, judgement)
            }
        }
    }

    /// Holds a request until the answer to `callout` arrives (or `callout.timeout_ms`
    /// and a margin pass), then continues with `continuation`.
    fn suspend_on_callout(
        &mut self,
        headers: &[(String, String)],
        callout: crate::callout::Callout,
        continuation: Continuation,
        now: UnixTime,
    ) -> Evaluation {
        // The host times the callout out itself; the margin covers a tick of lateness.
        let deadline = now.plus_millis(callout.timeout_ms.saturating_add(500));
        let held = Suspended {
            headers: headers.to_vec(),
            awaiting: Awaiting::Callout(continuation),
            deadline,
        };
        let record = self.record(
            None,
            &Judgement::new(
                Outcome::Allow,
                Reason::WaitingForCallout,
                "waiting for a callout".into(),
            ),
        );
        match self.suspended.hold(held) {
            Some(ticket) => Evaluation {
                step: Step::Suspend(Suspension::Callout { ticket, callout }),
                record,
            },
            None => self.overloaded(&Request::new(headers), None),
        }
    }

    /// The 503 for a request that would be held when [`suspended::MAX_SUSPENDED`] are.
    fn overloaded(&self, req: &Request<'_>, rule: Option<&Rule>) -> Evaluation {
        let denial = Denial {
            retry_after: Some(1),
            ..Denial::plain(
                503,
                "temporarily_unavailable",
                "too many requests are waiting",
            )
        };
        self.enforce_final(req, rule, Judgement::deny(denial, Reason::Overloaded))
    }

    fn invalid_token(&self, description: &str) -> Denial {
        let description = sanitize(description);
        Denial {
            www_authenticate: Some(challenge(
                &self.policy.realm,
                Some(("invalid_token", &description)),
                &[],
            )),
            ..Denial::plain(401, "invalid_token", description)
        }
    }

    fn judge(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        req: &Request<'_>,
        now: u64,
        attempt: Attempt,
    ) -> Judgement {
        if rule.auth == AuthMode::None {
            return Judgement::allow(Reason::Public, "rule needs no token");
        }
        let candidates: Vec<ProviderId> = (0..policy.providers.len())
            .filter(|i| rule.accepts_provider(*i))
            .map(ProviderId::from_index)
            .collect();
        let mut sources: Vec<&TokenSource> = Vec::new();
        let mut max_bytes = 0;
        // Every candidate is an index below `policy.providers.len()` (built just above).
        for p in candidates
            .iter()
            .filter_map(|c| policy.providers.get(c.index()))
        {
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
                return Judgement::deny(self.invalid_token(&e.to_string()), Reason::TooLarge)
            }
            Err(e @ TokenError::Ambiguous { .. }) => {
                let description = sanitize(&e.to_string());
                let denial = Denial {
                    www_authenticate: Some(challenge(
                        &policy.realm,
                        Some(("invalid_request", &description)),
                        &[],
                    )),
                    ..Denial::plain(400, "invalid_request", description)
                };
                return Judgement::deny(denial, Reason::AmbiguousToken);
            }
        };
        let Some(found) = found else {
            if let AuthMode::Login(index) = rule.auth {
                if let Some(j) = self.judge_session(rule, index, req, now, attempt) {
                    return j;
                }
            }
            if rule.auth == AuthMode::Optional {
                let anonymous = Judgement::allow(
                    Reason::Anonymous,
                    "no token; rule allows anonymous requests",
                );
                return self.route_identity(rule, anonymous);
            }
            let denial = Denial {
                www_authenticate: Some(challenge(&policy.realm, None, &[])),
                ..Denial::plain(401, "unauthorized", "a bearer token is required")
            };
            return Judgement::deny(denial, Reason::MissingToken);
        };
        // The token is copied into a shared key only when a miss inserts it: a hit borrows it.
        let token = found.token;
        let (mut judgement, fingerprint) = match self.cache.get(&token, now) {
            Some(hit) => {
                let mut j = self.authorize_verified(rule, hit.provider, hit.claims);
                j.cache = CacheUse::Hit;
                (j, hit.fingerprint)
            }
            None => match self.rejected.get(&token) {
                Some(fingerprint) => {
                    let e = VerifyError::BadSignature;
                    let mut j =
                        Judgement::deny(self.invalid_token(&e.to_string()), Reason::from(&e));
                    j.cache = CacheUse::Hit;
                    (j, fingerprint)
                }
                None => {
                    let fingerprint = match &self.unlogged {
                        Some(placeholder) => Rc::clone(placeholder),
                        None => cache::fingerprint(&token),
                    };
                    let mut j = self.verify_fresh(
                        policy,
                        rule,
                        &candidates,
                        &token,
                        Rc::clone(&fingerprint),
                        now,
                        attempt,
                    );
                    j.cache = CacheUse::Miss;
                    (j, fingerprint)
                }
            },
        };
        if !policy.forward_token {
            if let Some(source) = sources.get(found.source) {
                judgement.strip_edits = source.strip_edits(req);
            }
        }
        judgement.token = Some((token, fingerprint));
        judgement
    }

    #[allow(clippy::too_many_arguments)] // the pipeline's state, passed down once
    fn verify_fresh(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        candidates: &[ProviderId],
        token: &str,
        fingerprint: Rc<str>,
        now: u64,
        attempt: Attempt,
    ) -> Judgement {
        let max_bytes = candidates
            .iter()
            .filter_map(|c| policy.providers.get(c.index()))
            .map(|p| p.requirements.max_token_bytes)
            .max()
            .unwrap_or(0);
        let jwt = match crate::jwt::parse(token, max_bytes) {
            Ok(j) => j,
            Err(e) => {
                let e = VerifyError::from(e);
                return Judgement::deny(self.invalid_token(&e.to_string()), Reason::from(&e));
            }
        };
        let mut last = VerifyError::WrongIssuer;
        for &p in candidates {
            let Some(provider) = policy.providers.get(p.index()) else {
                continue;
            };
            let req = &provider.requirements;
            if jwt.issuer() != Some(req.issuer.as_str()) {
                continue;
            }
            if let Err(e) = verify::check_claims(&jwt, req, now) {
                last = e;
                continue;
            }
            let keys = match self.keyring.availability(p, now) {
                KeyAvailability::Ready(keys) => keys,
                KeyAvailability::Fetching if attempt == Attempt::First => {
                    return Judgement::wait(p, None)
                }
                KeyAvailability::Fetching | KeyAvailability::Unavailable => {
                    let d = self.keys_unavailable_denial(p, now);
                    return Judgement::deny(d, Reason::KeysUnavailable);
                }
            };
            let native = self.native.as_deref().map(|host| Native {
                host,
                trust: &mut self.trust,
            });
            let outcome = verify::check_signature(&jwt, keys, req, now, native);
            if let Err(VerifyError::Key(KeyLookupError::UnknownKid(_))) = &outcome {
                let kid = jwt.kid.as_deref();
                match attempt {
                    Attempt::First => {
                        if let Some(until) = self.unknown_kid_wait(p, kid, now) {
                            return Judgement::wait(p, Some(until));
                        }
                    }
                    Attempt::AfterWait => self.keyring.kid_absent(p, kid, now),
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
                    let mut j = self.authorize_verified(rule, p, claims);
                    j.crypto = Some(backend);
                    return j;
                }
                Err(e) => last = e,
            }
        }
        if last == VerifyError::BadSignature {
            self.rejected.insert(Rc::from(token), fingerprint);
        }
        Judgement::deny(self.invalid_token(&last.to_string()), Reason::from(&last))
    }

    /// How long a request with an unknown kid may be held for the re-fetch that could bring
    /// its key; `None` to refuse it now.
    fn unknown_kid_wait(
        &mut self,
        provider: ProviderId,
        kid: Option<&str>,
        now: u64,
    ) -> Option<UnixTime> {
        if self.suspended.count_waiting_for(provider) >= MAX_KID_WAITERS {
            return None;
        }
        self.keyring.unknown_kid(provider, kid, now)
    }

    fn authorize_verified(
        &self,
        rule: &Rule,
        provider: ProviderId,
        claims: Rc<Map<String, Value>>,
    ) -> Judgement {
        if !rule.accepts_provider(provider.index()) {
            let d = self.invalid_token("issuer not accepted for this route");
            return Judgement::deny(d, Reason::WrongIssuer);
        }
        match rule.authorize(&claims) {
            Ok(()) => self.route_identity(
                rule,
                Judgement {
                    claims: Some((provider, claims)),
                    ..Judgement::allow(Reason::Authorized, "token valid and rule satisfied")
                },
            ),
            Err(shortfall) => {
                let description = sanitize(&shortfall.description);
                let denial = Denial {
                    www_authenticate: Some(challenge(
                        &self.policy.realm,
                        Some(("insufficient_scope", &description)),
                        &shortfall.scopes,
                    )),
                    ..Denial::plain(403, "insufficient_scope", description)
                };
                let mut j = Judgement::deny(denial, Reason::InsufficientScope);
                j.claims = Some((provider, claims));
                j
            }
        }
    }

    /// Tags an allowed request with the route its identity maps to, when the rule routes;
    /// a rule that requires a tag refuses an identity that maps to none.
    fn route_identity(&self, rule: &Rule, mut judgement: Judgement) -> Judgement {
        let Some(routing) = self.policy.routing.as_ref() else {
            return judgement;
        };
        if rule.routing == RuleRouting::Off {
            return judgement;
        }
        let claims = judgement.claims.as_ref().map(|(_, c)| &**c);
        match (routing.tag_for(claims), rule.routing) {
            (Some(tag), _) => judgement.route = Some(tag.to_string()),
            (None, RuleRouting::Required) => {
                let denial = Denial::plain(
                    403,
                    "access_denied",
                    "no route is configured for this identity",
                );
                let mut denied = Judgement::deny(denial, Reason::NoRoute);
                denied.claims = judgement.claims;
                denied.token = judgement.token;
                return denied;
            }
            (None, _) => {}
        }
        judgement
    }

    /// Holds the request when the judgement is to wait; otherwise applies the mode.
    fn enforce(
        &mut self,
        req: &Request<'_>,
        rule: Option<&Rule>,
        judgement: Judgement,
        now: UnixTime,
    ) -> Evaluation {
        let (provider, until) = match judgement.outcome {
            Outcome::Wait(provider, until) => (provider, until),
            Outcome::Exchange {
                callout,
                continuation,
            } => return self.suspend_on_callout(req.headers, callout, continuation, now),
            _ => return self.enforce_final(req, rule, judgement),
        };
        let held = Suspended {
            headers: req.headers.to_vec(),
            awaiting: Awaiting::Keys(provider),
            deadline: until
                .unwrap_or_else(|| now.plus_millis(self.keyring.wait_budget_ms(provider))),
        };
        match self.suspended.hold(held) {
            Some(ticket) => Evaluation {
                step: Step::Suspend(Suspension::Keys { ticket, provider }),
                record: self.record(rule, &judgement),
            },
            // Too many requests are held already: this one gets its 503 now.
            None => self.overloaded(req, rule),
        }
    }

    /// Builds the step and record of a judgement that does not wait.
    fn enforce_final(
        &self,
        req: &Request<'_>,
        rule: Option<&Rule>,
        judgement: Judgement,
    ) -> Evaluation {
        let record = self.record(rule, &judgement);
        let step = match judgement.outcome {
            Outcome::Deny(denial) if record.enforced => Step::Respond(denial.reply()),
            Outcome::Reply { reply, always, .. } if always || record.enforced => {
                Step::Respond(reply)
            }
            _ => Step::Allow(self.allow(req, judgement)),
        };
        Evaluation { step, record }
    }

    fn identity(&self, judgement: &Judgement) -> Option<Identity> {
        judgement.claims.as_ref().map(|(p, c)| Identity {
            provider: self
                .policy
                .providers
                .get(p.index())
                .map_or_else(String::new, |p| p.name.clone()),
            subject: c.get("sub").and_then(Value::as_str).map(str::to_string),
            issuer: c.get("iss").and_then(Value::as_str).map(str::to_string),
        })
    }

    fn record(&self, rule: Option<&Rule>, judgement: &Judgement) -> DecisionRecord {
        let claim = |name: &str| {
            judgement
                .claims
                .as_ref()
                .and_then(|(_, c)| c.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (verdict, status) = match &judgement.outcome {
            Outcome::Deny(d) => (Verdict::Deny, d.status),
            Outcome::Reply { reply, verdict, .. } => (*verdict, reply.status),
            Outcome::Allow | Outcome::Wait(..) | Outcome::Exchange { .. } => (Verdict::Allow, 200),
        };
        DecisionRecord {
            rule: rule.map(|r| r.name.clone()),
            verdict,
            enforced: self.policy.mode == Mode::Enforce,
            status,
            reason: judgement.reason,
            detail: judgement.detail.clone(),
            subject: claim("sub"),
            issuer: claim("iss"),
            token_hash: judgement.token.as_ref().map(|(_, f)| Rc::clone(f)),
            cache: judgement.cache,
            crypto: judgement.crypto,
            route: judgement.route.clone(),
        }
    }

    fn allow(&self, req: &Request<'_>, judgement: Judgement) -> Allow {
        let identity = self.identity(&judgement);
        let mut set = Vec::new();
        if let Some((_, claims)) = &judgement.claims {
            for h in &self.policy.claim_headers {
                if let Some(v) = h.path.lookup(claims).and_then(claims::header_value) {
                    set.push((h.header.clone(), v));
                }
            }
            if let (Some(name), Some((token, _))) = (&self.policy.payload_header, &judgement.token)
            {
                if let Some(payload) = token.split('.').nth(1) {
                    set.push((name.clone(), payload.to_string()));
                }
            }
        }
        if let (Some(routing), Some(tag)) = (&self.policy.routing, judgement.route) {
            set.push((routing.header.clone(), tag));
        }
        // Removing a header the request does not carry would be a host call for nothing.
        let mut remove: Vec<String> = self
            .owned_headers
            .iter()
            .filter(|h| req.header(h).is_some())
            .cloned()
            .collect();
        // CGI, WSGI and PHP upstreams read `x_jwt_sub` as `x-jwt-sub`: to them a spelling
        // with underscores is the same header, so it is the plugin's too.
        for (name, _) in req.headers {
            if name.contains('_')
                && !remove.contains(name)
                && self
                    .owned_headers
                    .iter()
                    .any(|owned| owned.eq_ignore_ascii_case(&name.replace('_', "-")))
            {
                remove.push(name.clone());
            }
        }
        for (name, value) in judgement.strip_edits {
            match value {
                Some(v) => set.push((name, v)),
                None => remove.push(name),
            }
        }
        // The proxy chose the route before the plugin ran: it must choose again when the
        // route tag was set or a spoofed one removed (any edit could touch a header the
        // routes match, so any edit counts), or when the path changed.
        let reroute = judgement.path_rewrite.is_some()
            || (self.policy.routing.is_some() && !(remove.is_empty() && set.is_empty()));
        if let Some(normal) = judgement.path_rewrite {
            // A query token already removed keeps its removal: only the path part changes.
            match set.iter_mut().find(|(name, _)| name == ":path") {
                Some((_, value)) => {
                    *value = match value.split_once('?') {
                        Some((_, query)) => format!("{}?{query}", normal.path()),
                        None => normal.path().to_string(),
                    };
                }
                None => set.push((":path".into(), normal.into_path_and_query())),
            }
        }
        Allow {
            request: RequestEdits { remove, set },
            response: ResponseEdits::default(),
            identity,
            reroute,
        }
    }
}

#[cfg(test)]
mod login_tests;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
