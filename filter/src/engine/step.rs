//! What the engine tells the host to do next with a request: the sans-IO [`Step`].
//!
//! Every answer is one of three things: let the request through with edits, answer it
//! locally, or hold it until something arrives (keys, or the answer to a callout the
//! engine describes). A held request names a [`Ticket`]; the host hands the arrival back
//! with [`Engine::resume`](super::Engine::resume), which returns the next step.

use super::DecisionRecord;
use crate::callout::{Callout, CalloutResult, Ticket};
use crate::keyring::ProviderId;

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

/// Changes to the request before it goes upstream: removals first, then sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEdits {
    /// Headers to remove (inbound copies of headers Portcullis owns, consumed tokens).
    pub remove: Vec<String>,
    /// Headers to set afterwards (claims, a rewritten token source).
    pub set: Vec<(String, String)>,
}

/// Headers added to the upstream's response on its way to the client (`Set-Cookie` for a
/// refreshed session, say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEdits {
    /// Headers to add, in order.
    pub add: Vec<(String, String)>,
}

impl ResponseEdits {
    /// True when the response is left alone: the host then need not watch it at all.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
    }
}

/// Forward the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// Edits to the request.
    pub request: RequestEdits,
    /// Edits to the response.
    pub response: ResponseEdits,
    /// The verified identity, if any.
    pub identity: Option<Identity>,
    /// The edits change what the proxy routes on (the route tag, the path): the host must
    /// match the route again (Envoy's `clear_route_cache`).
    pub reroute: bool,
}

/// Answer the request here, without the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a held request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspension {
    /// A provider's keys: the host resumes the ticket when they change (its key fetches
    /// are the host's business), or when the wait has run out.
    Keys {
        /// The held request.
        ticket: Ticket,
        /// Whose keys.
        provider: ProviderId,
    },
    /// The answer to this callout, which the host sends on the request's behalf.
    Callout {
        /// The held request.
        ticket: Ticket,
        /// What to send.
        callout: Callout,
    },
}

impl Suspension {
    /// The held request's ticket.
    pub fn ticket(&self) -> Ticket {
        match self {
            Suspension::Keys { ticket, .. } | Suspension::Callout { ticket, .. } => *ticket,
        }
    }
}

/// The next thing the host does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward it, with these edits.
    Allow(Allow),
    /// Answer it locally.
    Respond(LocalReply),
    /// Hold it.
    Suspend(Suspension),
}

/// What a held request is resumed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumption {
    /// The keys it waited for changed: decide again.
    Keys,
    /// The callout it waited for ended.
    Callout(CalloutResult),
    /// Its wait ran out.
    TimedOut,
}

/// A step and its record.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// What to do.
    pub step: Step,
    /// What to log and count (for a suspension: not logged, the final step will be).
    pub record: DecisionRecord,
}
