//! Browser sign-in in the engine: the callback and logout paths, the session a request
//! carries, the redirect a browser without one gets, and the code exchange's answer.

use super::{Attempt, Engine, Evaluation, Judgement, Outcome, Reason, Verdict};
use crate::engine::suspended::Continuation;
use crate::engine::Resumption;
use crate::keyring::{KeyAvailability, ProviderId};
use crate::oidc::exchange::{self, ExchangeError};
use crate::oidc::flow::{self, Flow};
use crate::oidc::session_data::{self, Session};
use crate::oidc::{form, navigation, pages, Login};
use crate::policy::{Policy, Rule};
use crate::request::Request;
use crate::session::strip_cookies;
use crate::time::UnixTime;
use crate::verify::{self, Native};
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
            let judgement = logout(login, req, now.secs());
            self.enforce_final(req, None, judgement)
        })
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
        let callout = exchange::request(login, &flow, &code, &login.redirect_uri(req));
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
        let Some(provider) = policy.providers.get(login.provider) else {
            return failed(
                500,
                "Sign-in failed",
                "the login's provider is missing".into(),
            );
        };
        let mut requirements = provider.requirements.clone();
        requirements.audiences = vec![login.client_id.clone()];
        requirements.require_access_token = false;
        let refused = |e: &dyn std::fmt::Display| {
            failed(
                401,
                "Sign-in failed",
                format!("the identity provider's ID token was refused: {e}"),
            )
        };
        let jwt = match crate::jwt::parse(&tokens.id_token, requirements.max_token_bytes) {
            Ok(j) => j,
            Err(e) => return refused(&e),
        };
        if let Err(e) = verify::check_claims(&jwt, &requirements, now.secs()) {
            return refused(&e);
        }
        let id = ProviderId::from_index(login.provider);
        let KeyAvailability::Ready(keys) = self.keyring.availability(id, now.secs()) else {
            return unavailable("the identity provider's signing keys are not available".into());
        };
        let native = self.native.as_deref().map(|host| Native {
            host,
            trust: &mut self.trust,
        });
        let backend = match verify::check_signature(&jwt, keys, &requirements, now.secs(), native) {
            Ok(b) => b,
            Err(e) => return refused(&e),
        };
        if let Err(e) = exchange::check_id_token(&jwt.payload, login, flow) {
            return refused(&e);
        }
        let session = Session {
            id_token: tokens.id_token.clone(),
            refresh_token: tokens.refresh_token,
            issued: now.secs(),
            expires: now.secs().saturating_add(login.session_seconds),
        };
        let mut cookies = match session_data::seal(login, &session) {
            Ok(c) => c,
            Err(e) => return failed(500, "Sign-in failed", e.to_string()),
        };
        cookies.push(login.cookie.clear_cookie(flow_cookie));
        let reply = pages::redirect(&flow.return_to, cookies);
        let mut j = answer(reply, Verdict::Allow, Reason::LoginOk, "signed in".into());
        j.claims = Some((id, Rc::new(jwt.payload)));
        j.crypto = Some(backend);
        j
    }

    /// A request on a login rule that carries no bearer token: its session, or a sign-in.
    pub(super) fn judge_session(
        &self,
        rule: &Rule,
        index: usize,
        req: &Request<'_>,
        now: u64,
    ) -> Option<Judgement> {
        let login = self.policy.logins.get(index)?;
        let Some(claims) = session_data::open(login, req, now).and_then(|s| s.claims()) else {
            if !navigation::is_browser_navigation(req) {
                // Programs get the bearer challenge, as on any rule.
                return None;
            }
            return Some(match flow::start(login, req, now) {
                Ok(start) => Judgement::new(
                    Outcome::Reply {
                        reply: pages::redirect(&start.location, vec![start.set_cookie]),
                        verdict: Verdict::Deny,
                        always: false,
                    },
                    Reason::LoginRedirect,
                    "no session: sent to sign in".into(),
                ),
                Err(e) => failed(500, "Sign-in failed", e.to_string()),
            });
        };
        let mut j = self.authorize_verified(
            rule,
            ProviderId::from_index(login.provider),
            Rc::new(claims),
        );
        if j.reason == Reason::Authorized {
            j.reason = Reason::SessionValid;
            j.detail = "session valid and rule satisfied".into();
        }
        j.strip_edits
            .extend(strip_cookies(req, |name| login.owns_cookie(name)));
        Some(j)
    }
}

/// 503 for a sign-in the identity provider could not finish now.
fn unavailable(detail: String) -> Judgement {
    let mut reply = pages::page(503, "Sign-in unavailable", &detail);
    reply.headers.push(("retry-after".into(), "5".into()));
    answer(reply, Verdict::Deny, Reason::LoginFailed, detail)
}

/// Clears the session and, when the provider has RP-initiated logout, ends it there too.
fn logout(login: &Login, req: &Request<'_>, now: u64) -> Judgement {
    let session = session_data::open(login, req, now);
    let location = match &login.end_session_endpoint {
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
