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
    /// The host answered without an HTTP status.
    #[error("the callout failed without a response")]
    NoResponse,
    /// No connection could be made: refused, unreachable, or no healthy endpoint.
    #[error("the connection was refused or failed")]
    ConnectFailed,
    /// The connection was reset or closed before a response.
    #[error("the connection was reset before a response")]
    Reset,
    /// No answer within the timeout.
    #[error("the callout timed out")]
    TimedOut,
}

impl CalloutFailure {
    /// Envoy reports a callout that got no answer as a response its router made up: 503 for
    /// a refused connection or a reset, 504 for a timeout, with a fixed text body and no
    /// upstream `server` header. Those are failures, not what the upstream said.
    pub fn from_envoy_reply(
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Option<CalloutFailure> {
        if !matches!(status, 503 | 504) || headers.iter().any(|(n, _)| n == "server") {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        if status == 504 {
            return (text == "upstream request timeout").then_some(CalloutFailure::TimedOut);
        }
        if text == "no healthy upstream" {
            return Some(CalloutFailure::ConnectFailed);
        }
        let reason =
            text.strip_prefix("upstream connect error or disconnect/reset before headers.")?;
        Some(
            if reason.contains("connection failure") || reason.contains("connection_failure") {
                CalloutFailure::ConnectFailed
            } else if reason.contains("timeout") {
                CalloutFailure::TimedOut
            } else {
                CalloutFailure::Reset
            },
        )
    }
}

/// What became of a callout.
pub type CalloutResult = Result<CalloutResponse, CalloutFailure>;

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, server: bool, body: &str) -> Option<CalloutFailure> {
        let mut headers = vec![(":status".to_string(), status.to_string())];
        if server {
            headers.push(("server".into(), "idp".into()));
        }
        CalloutFailure::from_envoy_reply(status, &headers, body.as_bytes())
    }

    #[test]
    fn envoy_made_up_replies_are_failures_and_real_answers_are_not() {
        let connect = "upstream connect error or disconnect/reset before headers. \
                       reset reason: remote connection failure, transport failure reason: \
                       delayed connect error: Connection refused";
        assert_eq!(
            reply(503, false, connect),
            Some(CalloutFailure::ConnectFailed)
        );
        assert_eq!(
            reply(
                503,
                false,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            ),
            Some(CalloutFailure::Reset)
        );
        assert_eq!(
            reply(503, false, "no healthy upstream"),
            Some(CalloutFailure::ConnectFailed)
        );
        assert_eq!(
            reply(504, false, "upstream request timeout"),
            Some(CalloutFailure::TimedOut)
        );
        // What the IdP itself said stays an HTTP status.
        assert_eq!(reply(503, true, connect), None);
        assert_eq!(reply(503, false, "maintenance"), None);
        assert_eq!(reply(504, false, "gateway timeout"), None);
        assert_eq!(reply(500, false, "upstream request timeout"), None);
    }
}
