//! Host-agnostic HTTP callouts: what the engine asks the host to fetch, and what came back.
//!
//! The engine describes a callout ([`Callout`]); the adapter dispatches it through the
//! host (an Envoy cluster, the SPOE agent's client, the harness's scripted upstreams) and
//! hands the answer back as a [`CalloutResult`]. Nothing here knows proxy-wasm.

use std::fmt;

/// Names one suspended request inside the engine; the adapter maps it to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub(crate) u64);

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// HTTP request methods the engine sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// An HTTP request for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The host's name for the upstream (an Envoy cluster).
    pub cluster: String,
    /// The method.
    pub method: Method,
    /// `:authority`.
    pub authority: String,
    /// `:path`, with the query.
    pub path: String,
    /// Further request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The request body, if any.
    pub body: Option<Vec<u8>>,
    /// How long the host waits for the answer, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body the engine reads; a longer one is reported as truncated.
    pub max_response_bytes: usize,
}

/// A response the host received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body, at most [`Callout::max_response_bytes`] of it.
    pub body: Vec<u8>,
    /// True when the body was longer than the bound and only its start was read.
    pub truncated: bool,
}

impl CalloutResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a callout brought no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CalloutFailure {
    /// The host refused to send it (unknown cluster, bad headers).
    #[error("the host refused to dispatch the callout")]
    NotDispatched,
    /// The host answered without an HTTP status (connection failure or reset).
    #[error("the callout failed without a response")]
    NoResponse,
    /// No answer within the timeout.
    #[error("the callout timed out")]
    TimedOut,
}

/// What became of a callout.
pub type CalloutResult = Result<CalloutResponse, CalloutFailure>;
