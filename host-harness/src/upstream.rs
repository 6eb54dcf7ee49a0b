//! Scriptable upstream clusters that answer the plugin's HTTP callouts (`proxy_http_call`), through the
//! [`crate::Scripted`] transport, and the records of callouts.

use std::sync::Arc;
use std::time::Duration;

use crate::http::Response;
use crate::types::Headers;

/// An HTTP callout as the plugin dispatched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalloutRequest {
    /// The cluster (upstream) name.
    pub upstream: String,
    /// Request headers including `:method`, `:path`, `:authority`.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// Timeout the plugin asked for.
    pub timeout: Duration,
}

impl CalloutRequest {
    /// The `:path` header.
    pub fn path(&self) -> &str {
        self.headers.get(":path").unwrap_or("")
    }

    /// The `:method` header.
    pub fn method(&self) -> &str {
        self.headers.get(":method").unwrap_or("")
    }
}

type Handler = dyn Fn(&CalloutRequest) -> Upstream + Send + Sync;

/// How an upstream cluster answers a callout.
#[derive(Clone)]
pub struct Upstream {
    pub(crate) kind: Kind,
}

#[derive(Clone)]
pub(crate) enum Kind {
    Respond(Response),
    Handler(Arc<Handler>),
    Delay(Duration, Box<Upstream>),
    Reset,
    Hang,
    Sequence(Arc<Vec<Upstream>>),
    Schedule(Arc<Vec<(Duration, Upstream)>>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Respond(r) => write!(f, "Upstream::respond({})", r.status),
            Kind::Handler(_) => write!(f, "Upstream::handler(..)"),
            Kind::Delay(d, u) => write!(f, "Upstream::delayed({d:?}, {u:?})"),
            Kind::Reset => write!(f, "Upstream::reset()"),
            Kind::Hang => write!(f, "Upstream::hang()"),
            Kind::Sequence(s) => write!(f, "Upstream::sequence({} steps)", s.len()),
            Kind::Schedule(s) => write!(f, "Upstream::schedule({} steps)", s.len()),
        }
    }
}

impl Upstream {
    /// Answers every callout at once with this status, headers and body.
    pub fn fixed(status: u32, headers: impl Into<Headers>, body: impl Into<Vec<u8>>) -> Upstream {
        Upstream::respond(Response {
            status,
            headers: headers.into(),
            body: body.into(),
            trailers: Headers::new(),
        })
    }

    /// Answers every callout at once with this response.
    pub fn respond(response: Response) -> Upstream {
        Upstream {
            kind: Kind::Respond(response),
        }
    }

    /// Answers with `status` and a JSON body (`content-type: application/json`).
    pub fn json(status: u32, body: &str) -> Upstream {
        Upstream::fixed(
            status,
            [("content-type", "application/json")],
            body.as_bytes().to_vec(),
        )
    }

    /// Answers each callout by calling `f` when the callout is dispatched (the answer still arrives later).
    pub fn handler(f: impl Fn(&CalloutRequest) -> Response + Send + Sync + 'static) -> Upstream {
        Upstream {
            kind: Kind::Handler(Arc::new(move |req| Upstream::respond(f(req)))),
        }
    }

    /// Decides per callout which behaviour applies (e.g. delay some, reset others).
    pub fn dynamic(f: impl Fn(&CalloutRequest) -> Upstream + Send + Sync + 'static) -> Upstream {
        Upstream {
            kind: Kind::Handler(Arc::new(f)),
        }
    }

    /// Answers like `inner`, but only after `delay` of virtual time (see [`crate::Harness::advance`]).
    pub fn delayed(delay: Duration, inner: Upstream) -> Upstream {
        Upstream {
            kind: Kind::Delay(delay, Box::new(inner)),
        }
    }

    /// Resets the connection: Envoy then calls `proxy_on_http_call_response` with 0 headers, 0 body bytes and 0
    /// trailers, and `proxy_get_status` reports `BrokenConnection` with message `reset`.
    pub fn reset() -> Upstream {
        Upstream { kind: Kind::Reset }
    }

    /// Never answers: the callout times out after the plugin's timeout and comes back as a synthetic `504`
    /// (Envoy's `upstream request timeout`).
    pub fn hang() -> Upstream {
        Upstream { kind: Kind::Hang }
    }

    /// The n-th callout gets the n-th behaviour; the last one repeats.
    pub fn sequence(steps: impl IntoIterator<Item = Upstream>) -> Upstream {
        let steps: Vec<Upstream> = steps.into_iter().collect();
        Upstream {
            kind: Kind::Sequence(Arc::new(steps)),
        }
    }

    /// Behaviour by virtual time since the harness started: each `(from, upstream)` applies from `from` on
    /// (steps sorted by time; before the first step the first applies).
    pub fn schedule(steps: impl IntoIterator<Item = (Duration, Upstream)>) -> Upstream {
        let mut steps: Vec<(Duration, Upstream)> = steps.into_iter().collect();
        steps.sort_by_key(|(d, _)| *d);
        Upstream {
            kind: Kind::Schedule(Arc::new(steps)),
        }
    }

    /// Resolves the behaviour for one callout to what happens and when.
    pub(crate) fn resolve(
        &self,
        req: &CalloutRequest,
        call_index: usize,
        since_start: Duration,
    ) -> Resolved {
        match &self.kind {
            Kind::Respond(r) => Resolved {
                delay: Duration::ZERO,
                result: Some(Ok(r.clone())),
            },
            Kind::Handler(f) => f(req).resolve(req, call_index, since_start),
            Kind::Delay(d, inner) => {
                let mut r = inner.resolve(req, call_index, since_start);
                r.delay += *d;
                r
            }
            Kind::Reset => Resolved {
                delay: Duration::ZERO,
                result: Some(Err(())),
            },
            Kind::Hang => Resolved {
                delay: Duration::ZERO,
                result: None,
            },
            Kind::Sequence(steps) => match steps.get(call_index).or_else(|| steps.last()) {
                Some(u) => u.resolve(req, call_index, since_start),
                None => Resolved {
                    delay: Duration::ZERO,
                    result: None,
                },
            },
            Kind::Schedule(steps) => {
                let chosen = steps
                    .iter()
                    .rev()
                    .find(|(from, _)| *from <= since_start)
                    .or_else(|| steps.first());
                match chosen {
                    Some((_, u)) => u.resolve(req, call_index, since_start),
                    None => Resolved {
                        delay: Duration::ZERO,
                        result: None,
                    },
                }
            }
        }
    }
}

/// What a callout resolves to: after `delay`, a response (`Ok`), a reset (`Err`), or nothing (`None`: timeout).
pub(crate) struct Resolved {
    pub delay: Duration,
    pub result: Option<Result<Response, ()>>,
}

/// How a callout ended (or will end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalloutResult {
    /// The upstream answered.
    Response(Response),
    /// The connection was reset (delivered with 0 headers and `BrokenConnection`).
    Reset,
    /// The plugin's timeout passed first; delivered as a synthetic `504`.
    TimedOut,
}

/// A record of one HTTP callout the plugin dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callout {
    /// The token returned to the plugin.
    pub token: u32,
    /// The worker (VM) that dispatched it.
    pub worker: usize,
    /// The context that dispatched it.
    pub context_id: u32,
    /// The request.
    pub request: CalloutRequest,
    /// Virtual time since start at dispatch.
    pub dispatched_at: Duration,
    /// Time since start at which the plugin got the answer; until then, its deadline (`Duration::MAX`
    /// without a timeout): the answer is not known before it arrives.
    pub due_at: Duration,
    /// How it ended; until it is delivered, `TimedOut`, which is what happens if no answer comes first.
    pub result: CalloutResult,
    /// Whether it has been delivered to the plugin.
    pub delivered: bool,
    /// Whether it was dropped because its context ended first (Envoy cancels such callouts).
    pub cancelled: bool,
}
