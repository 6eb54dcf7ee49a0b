//! Browser sign-in in the engine: the callback and logout paths, the session a request
//! carries, the redirect a browser without one gets, and the code exchange's answer.

use super::CacheUse;
use super::Step;
use super::{Attempt, Engine, Evaluation, Judgement, Outcome, Reason, Verdict};
use crate::cache::VerifiedToken;
use crate::engine::suspended::Continuation;
use crate::engine::Resumption;
use crate::keyring::{KeyAvailability, ProviderId};
use crate::oidc::exchange::{self, ExchangeError};
use crate::oidc::flow::{self, Flow};
use crate::oidc::session_data::{self, Session};
use crate::oidc::{discovery, form, navigation, pages, Endpoints, Login};
use crate::policy::{Policy, Rule};
use crate::request::Request;
use crate::session::strip_cookies;
use crate::time::UnixTime;
use crate::verify::{self, Native, SignatureBackend};
use serde_json::{Map, Value};
use std::rc::Rc;

/// A page for the browser that ends the request here, whatever the mode: the callback and
/// logout paths are the plugin's own, the upstream has nothing there.
fn answer(
    reply: crate::engine::LocalReply,
    verdict: Verdict,
    reason: Reason,
    detail: String,
) -> Judgement {
    Judgement::new(
        Outcome::Reply {
            reply,
            verdict,
            always: true,
        },
        reason,
        detail,
    )
}

fn failed(status: u16, title: &str, detail: String) -> Judgement {
    let reply = pages::page(status, title, &detail);
    answer(reply, Verdict::Deny, Reason::LoginFailed, detail)
}

impl Engine {
    /// The callback or logout of a login whose path this is; `None` for any other path.
    pub(super) fn login_endpoint(
        &mut self,
        policy: &Policy,
        req: &Request<'_>,
        path: &str,
        now: UnixTime,
        attempt: Attempt,
    ) -> Option<Evaluation> {
        let (index, login) = policy
            .logins
            .iter()
            .enumerate()
            .find(|(_, l)| l.callback_path == path || l.logout_path == path)?;
        Some(if login.callback_path == path {
            let judgement = self.callback(index, login, req, now, attempt);
            self.enforce(req, None, judgement, now)
        } else {
            let judgement = match self.endpoints_of(index, login) {
                Ok(endpoints) => logout(login, &endpoints, req, now.secs()),
                Err(fetch) => *fetch,
            };
            self.enforce(req, None, judgement, now)
        })
    }

    /// The login's endpoints, as configured or as this VM discovered them; otherwise the
    /// judgement that reads the discovery document first.
    fn endpoints_of(&self, index: usize, login: &Login) -> Result<Endpoints, Box<Judgement>> {
        if let Some(e) = login
            .endpoints
            .as_ref()
            .or_else(|| self.discovered.get(index)?.as_ref())
        {
            return Ok(e.clone());
        }
        match discovery::request(login) {
            Some(callout) => Err(Box::new(Judgement::new(
                Outcome::Exchange {
                    callout,
                    continuation: Continuation::Discovery { login: index },
                },
                Reason::WaitingForCallout,
                "reading the identity provider's discovery document".into(),
            ))),
            None => Err(Box::new(unavailable(
                "the identity provider's endpoints are not known".into(),
            ))),
        }
    }

    /// The discovery document arrived (or did not): remember the endpoints and decide the
    /// request again, or answer 503.
    pub(super) fn discovered_endpoints(
        &mut self,
        index: usize,
        headers: &[(String, String)],
        resumption: Resumption,
        now: UnixTime,
    ) -> Evaluation {
        let policy = Rc::clone(&self.policy);
        let issuer = policy
            .logins
            .get(index)
            .and_then(|l| policy.providers.get(l.provider))
            .map_or("", |p| p.requirements.issuer.as_str());
        let result = match resumption {
            Resumption::Callout(r) => r,
            Resumption::TimedOut | Resumption::Keys => {
                Err(crate::callout::CalloutFailure::TimedOut)
            }
        };
        match discovery::endpoints(result, issuer) {
            Ok(endpoints) => {
                if let Some(slot) = self.discovered.get_mut(index) {
                    *slot = Some(endpoints);
                }
                self.decide_once(headers, now, Attempt::First)
            }
            Err(detail) => self.enforce_final(&Request::new(headers), None, unavailable(detail)),
        }
    }

    /// The identity provider's answer: the flow it ends, then the code exchange.
    fn callback(
        &mut self,
        index: usize,
        login: &Login,
        req: &Request<'_>,
        now: UnixTime,
        attempt: Attempt,
    ) -> Judgement {
        let state = req.query_params("state").into_iter().next();
        // RFC 9207: a provider that names itself in the answer must be this login's, or the
        // code may come from another provider the browser was sent to (a mix-up attack).
        if let Some(iss) = req.query_params("iss").into_iter().next() {
            let expected = self
                .policy
                .providers
                .get(login.provider)
                .map(|p| p.requirements.issuer.as_str());
            if Some(iss.as_str()) != expected {
                return failed(
                    400,
                    "Sign-in failed",
                    "the sign-in answer names another identity provider (iss)".into(),
                );
            }
        }
        let opened = flow::open(login, req, state.as_deref(), now.secs());
        if let Some(error) = req.query_params("error").into_iter().next() {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            let mut j = failed(
                403,
                "Sign-in refused",
                format!("the identity provider did not sign you in: {error}"),
            );
            if let (Ok((_, name)), Outcome::Reply { reply, .. }) = (&opened, &mut j.outcome) {
                reply
                    .headers
                    .push(("set-cookie".into(), login.cookie.clear_cookie(name)));
            }
            return j;
        }
        let (flow, flow_cookie) = match opened {
            Ok(f) => f,
            Err(e) => return failed(400, "Sign-in failed", e.to_string()),
        };
        let Some(code) = req
            .query_params("code")
            .into_iter()
            .next()
            .filter(|c| !c.is_empty())
        else {
            return failed(
                400,
                "Sign-in failed",
                "the sign-in answer has no code".into(),
            );
        };
        // The code is spent once exchanged: make sure the keys that will check the ID token
        // are here before it is.
        let provider = ProviderId::from_index(login.provider);
        match self.keyring.availability(provider, now.secs()) {
            KeyAvailability::Ready(_) => {}
            KeyAvailability::Fetching if attempt == Attempt::First => {
                return Judgement::wait(provider, None)
            }
            KeyAvailability::Fetching | KeyAvailability::Unavailable => {
                return unavailable("the identity provider's signing keys are not available".into())
            }
        }
        let endpoints = match self.endpoints_of(index, login) {
            Ok(e) => e,
            Err(fetch) => return *fetch,
        };
        let callout = exchange::request(login, &endpoints, &flow, &code, &login.redirect_uri(req));
        Judgement::new(
            Outcome::Exchange {
                callout,
                continuation: Continuation::TokenExchange {
                    login: index,
                    flow: Box::new(flow),
                    flow_cookie,
                },
            },
            Reason::WaitingForCallout,
            "exchanging the sign-in code".into(),
        )
    }

    /// The code exchange ended: verify the ID token and start the session.
    pub(super) fn exchanged(
        &mut self,
        index: usize,
        flow: &Flow,
        flow_cookie: &str,
        resumption: Resumption,
        now: UnixTime,
    ) -> Judgement {
        let policy = Rc::clone(&self.policy);
        let Some(login) = policy.logins.get(index) else {
            return failed(500, "Sign-in failed", "the login is not configured".into());
        };
        let result = match resumption {
            Resumption::Callout(r) => r,
            Resumption::TimedOut | Resumption::Keys => {
                Err(crate::callout::CalloutFailure::TimedOut)
            }
        };
        let tokens = match exchange::tokens(result) {
            Ok(t) => t,
            Err(e @ ExchangeError::Unreachable(_)) => return unavailable(e.to_string()),
            Err(e) => return failed(502, "Sign-in failed", e.to_string()),
        };
        let (claims, backend) = match self.verify_id_token(login, &tokens.id_token, now.secs()) {
            Ok(v) => v,
            Err(IdTokenFailure::Unavailable(detail)) => return unavailable(detail),
            Err(IdTokenFailure::Refused(detail)) => return failed(401, "Sign-in failed", detail),
        };
        if let Err(e) = exchange::check_id_token(&claims, login, flow) {
            return failed(
                401,
                "Sign-in failed",
                format!("the identity provider's ID token was refused: {e}"),
            );
        }
        let session = Session {
            id_token: tokens.id_token.clone(),
            refresh_token: tokens.refresh_token,
            issued: now.secs(),
            expires: now.secs().saturating_add(login.session_seconds),
        };
        let mut cookies = match session_data::seal(login, &session, now.secs()) {
            Ok(c) => c,
            Err(e) => return failed(500, "Sign-in failed", e.to_string()),
        };
        cookies.push(login.cookie.clear_cookie(flow_cookie));
        let reply = pages::redirect(&flow.return_to, cookies);
        let mut j = answer(reply, Verdict::Allow, Reason::LoginOk, "signed in".into());
        j.claims = Some((ProviderId::from_index(login.provider), Rc::new(claims)));
        j.crypto = Some(backend);
        j
    }

    /// Verifies an ID token from the token endpoint as a bearer token of the provider is
    /// verified, with the client as its audience.
    fn verify_id_token(
        &mut self,
        login: &Login,
        id_token: &str,
        now: u64,
    ) -> Result<(Map<String, Value>, SignatureBackend), IdTokenFailure> {
        let policy = Rc::clone(&self.policy);
        let provider = policy
            .providers
            .get(login.provider)
            .ok_or_else(|| IdTokenFailure::Refused("the login's provider is missing".into()))?;
        let mut requirements = provider.requirements.clone();
        requirements.audiences = vec![login.client_id.clone()];
        requirements.require_access_token = false;
        let refused = |e: &dyn std::fmt::Display| {
            IdTokenFailure::Refused(format!("the identity provider's ID token was refused: {e}"))
        };
        let jwt =
            crate::jwt::parse(id_token, requirements.max_token_bytes).map_err(|e| refused(&e))?;
        verify::check_claims(&jwt, &requirements, now).map_err(|e| refused(&e))?;
        let id = ProviderId::from_index(login.provider);
        let KeyAvailability::Ready(keys) = self.keyring.availability(id, now) else {
            return Err(IdTokenFailure::Unavailable(
                "the identity provider's signing keys are not available".into(),
            ));
        };
        let native = self.native.as_deref().map(|host| Native {
            host,
            trust: &mut self.trust,
        });
        let backend = verify::check_signature(&jwt, keys, &requirements, now, native)
            .map_err(|e| refused(&e))?;
        Ok((jwt.payload, backend))
    }

    /// A session's refresh ended: decide the request again with the refreshed session (its
    /// cookies set on the response), or, when the refresh failed, as one without a session.
    pub(super) fn refreshed(
        &mut self,
        index: usize,
        old: &Session,
        headers: &[(String, String)],
        resumption: Resumption,
        now: UnixTime,
    ) -> Evaluation {
        let policy = Rc::clone(&self.policy);
        let Some(login) = policy.logins.get(index) else {
            return self.enforce_final(
                &Request::new(headers),
                None,
                failed(500, "Sign-in failed", "the login is not configured".into()),
            );
        };
        let outcome = self.refresh_outcome(login, old, resumption, now.secs());
        let (cookies, detail) = match outcome {
            Ok(cookies) => (cookies, "session refreshed".to_string()),
            Err(why) => (
                Vec::new(),
                format!("session refresh failed ({why}): signing in again"),
            ),
        };
        let req = Request::new(headers);
        let mut pairs: Vec<String> = req
            .headers_named("cookie")
            .flat_map(|h| h.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter(|c| !login.owns_cookie(c.split_once('=').map_or(*c, |(k, _)| k).trim()))
            .map(str::to_string)
            .collect();
        pairs.extend(
            cookies
                .iter()
                .filter_map(|c| c.split(';').next())
                .filter(|p| !p.ends_with('='))
                .map(str::to_string),
        );
        let mut again: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| n != "cookie")
            .cloned()
            .collect();
        if !pairs.is_empty() {
            again.push(("cookie".into(), pairs.join("; ")));
        }
        let mut eval = self.decide_once(&again, now, Attempt::AfterWait);
        eval.record.detail = format!("{detail}; {}", eval.record.detail);
        let set_cookies = if cookies.is_empty() {
            session_data::clear(login)
        } else {
            cookies
        };
        match &mut eval.step {
            Step::Allow(allow) => allow.response.add.extend(
                set_cookies
                    .into_iter()
                    .map(|c| ("set-cookie".to_string(), c)),
            ),
            Step::Respond(reply) => reply.headers.extend(
                set_cookies
                    .into_iter()
                    .map(|c| ("set-cookie".to_string(), c)),
            ),
            Step::Suspend(_) => {}
        }
        eval
    }

    /// The refreshed session's cookies, or why there are none.
    fn refresh_outcome(
        &mut self,
        login: &Login,
        old: &Session,
        resumption: Resumption,
        now: u64,
    ) -> Result<Vec<String>, String> {
        let result = match resumption {
            Resumption::Callout(r) => r,
            Resumption::TimedOut | Resumption::Keys => {
                Err(crate::callout::CalloutFailure::TimedOut)
            }
        };
        let tokens = exchange::tokens(result).map_err(|e| e.to_string())?;
        let (claims, _) =
            self.verify_id_token(login, &tokens.id_token, now)
                .map_err(|e| match e {
                    IdTokenFailure::Unavailable(d) | IdTokenFailure::Refused(d) => d,
                })?;
        let original = old.claims().unwrap_or_default();
        exchange::check_refreshed_id_token(&claims, &original, login).map_err(|e| e.to_string())?;
        let session = Session {
            id_token: tokens.id_token,
            // RFC 6749 §6: without a new refresh token, the old one stays good.
            refresh_token: tokens.refresh_token.or_else(|| old.refresh_token.clone()),
            issued: old.issued,
            expires: old.expires,
        };
        session_data::seal(login, &session, now).map_err(|e| e.to_string())
    }

    /// A request on a login rule that carries no bearer token: its session, or a sign-in.
    pub(super) fn judge_session(
        &mut self,
        rule: &Rule,
        index: usize,
        req: &Request<'_>,
        now: u64,
        attempt: Attempt,
    ) -> Option<Judgement> {
        let policy = Rc::clone(&self.policy);
        let login = policy.logins.get(index)?;
        let provider = ProviderId::from_index(login.provider);
        let sealed = crate::session::join(req, &login.cookie_name);
        if let Some(hit) = sealed.as_deref().and_then(|v| self.sessions.get(v, now)) {
            if hit.provider == provider {
                let mut j = self.session_judgement(rule, login, req, hit.claims);
                j.cache = CacheUse::Hit;
                return Some(j);
            }
        }
        // The pieces are joined once, for the cache's key and for opening.
        let session = sealed
            .as_deref()
            .and_then(|v| session_data::open_sealed(login, v, now));
        let Some((session, claims)) = session.and_then(|s| s.claims().map(|c| (s, c))) else {
            if !navigation::is_browser_navigation(req) {
                // Programs get the bearer challenge, as on any rule.
                return None;
            }
            let endpoints = match self.endpoints_of(index, login) {
                Ok(e) => e,
                Err(fetch) => return Some(*fetch),
            };
            return Some(match flow::start(login, &endpoints, req, now) {
                Ok(start) => Judgement::new(
                    Outcome::Reply {
                        reply: pages::redirect(&start.location, {
                            let mut cookies = flow::prune(login, req, now);
                            cookies.push(start.set_cookie);
                            cookies
                        }),
                        verdict: Verdict::Deny,
                        always: false,
                    },
                    Reason::LoginRedirect,
                    "no session: sent to sign in".into(),
                ),
                Err(e) => failed(500, "Sign-in failed", e.to_string()),
            });
        };
        if attempt == Attempt::First {
            if let Some(refresh) = &session.refresh_token {
                let expires = claims.get("exp").and_then(Value::as_u64);
                if expires.is_some_and(|e| e <= now.saturating_add(REFRESH_MARGIN_SECONDS)) {
                    let endpoints = match self.endpoints_of(index, login) {
                        Ok(e) => e,
                        Err(fetch) => return Some(*fetch),
                    };
                    return Some(Judgement::new(
                        Outcome::Exchange {
                            callout: exchange::refresh_request(login, &endpoints, refresh),
                            continuation: Continuation::Refresh {
                                login: index,
                                session: Box::new(session),
                            },
                        },
                        Reason::WaitingForCallout,
                        "refreshing the session".into(),
                    ));
                }
            }
        }
        // Remembered while the session needs nothing done: until it ends, or, with a refresh
        // token, until its refresh falls due.
        let id_expires = claims.get("exp").and_then(Value::as_u64);
        let valid_until = match (&session.refresh_token, id_expires) {
            (Some(_), Some(e)) => e.saturating_sub(REFRESH_MARGIN_SECONDS + 1),
            _ => session.expires.saturating_sub(1),
        }
        .min(session.expires.saturating_sub(1));
        let claims = Rc::new(claims);
        if let Some(sealed) = sealed {
            self.sessions.insert(
                Rc::from(sealed),
                VerifiedToken {
                    provider,
                    claims: Rc::clone(&claims),
                    valid_until: Some(valid_until),
                    valid_from: None,
                    fingerprint: Rc::from("-"),
                },
            );
        }
        let mut j = self.session_judgement(rule, login, req, claims);
        j.cache = CacheUse::Miss;
        Some(j)
    }

    /// The judgement on a valid session's claims: the rule applies to them as to a token's,
    /// and the plugin's cookies do not go upstream.
    fn session_judgement(
        &self,
        rule: &Rule,
        login: &Login,
        req: &Request<'_>,
        claims: Rc<Map<String, Value>>,
    ) -> Judgement {
        let mut j = self.authorize_verified(rule, ProviderId::from_index(login.provider), claims);
        if j.reason == Reason::Authorized {
            j.reason = Reason::SessionValid;
            j.detail = "session valid and rule satisfied".into();
        }
        j.strip_edits
            .extend(strip_cookies(req, |name| login.owns_cookie(name)));
        j
    }
}

/// Why an ID token from the token endpoint was not accepted.
enum IdTokenFailure {
    /// The keys to check it are not here (503).
    Unavailable(String),
    /// It does not verify (401).
    Refused(String),
}

/// A session whose ID token expires within this many seconds is refreshed first (when it
/// has a refresh token), so its claims stay current and a revoked grant ends it.
const REFRESH_MARGIN_SECONDS: u64 = 60;

/// 503 for a sign-in the identity provider could not finish now.
fn unavailable(detail: String) -> Judgement {
    let mut reply = pages::page(503, "Sign-in unavailable", &detail);
    reply.headers.push(("retry-after".into(), "5".into()));
    answer(reply, Verdict::Deny, Reason::LoginFailed, detail)
}

/// Clears the session and, when the provider has RP-initiated logout, ends it there too.
fn logout(login: &Login, endpoints: &Endpoints, req: &Request<'_>, now: u64) -> Judgement {
    let session = session_data::open(login, req, now);
    let location = match &endpoints.end_session {
        Some(endpoint) => {
            let after = format!("{}{}", Login::origin(req), login.post_logout_path);
            let mut query = vec![
                ("client_id", login.client_id.as_str()),
                ("post_logout_redirect_uri", after.as_str()),
            ];
            if let Some(s) = &session {
                query.push(("id_token_hint", s.id_token.as_str()));
            }
            form::with_query(endpoint, &query)
        }
        None => login.post_logout_path.clone(),
    };
    let mut j = answer(
        pages::redirect(&location, session_data::clear(login)),
        Verdict::Allow,
        Reason::Logout,
        if session.is_some() {
            "signed out"
        } else {
            "no session to sign out"
        }
        .into(),
    );
    j.claims = session
        .and_then(|s| s.claims())
        .map(|c| (ProviderId::from_index(login.provider), Rc::new(c)));
    j
}
