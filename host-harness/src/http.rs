//! Requests sent through the plugin, responses, and what happened to a request.

use crate::types::Headers;

/// Identifies one HTTP stream (request) sent through the harness.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream#{}", self.0)
    }
}

/// A downstream HTTP request, as a client would send it to the proxy.
///
/// The plugin sees the pseudo-headers `:authority`, `:path`, `:method`, `:scheme` first (Envoy order), then the
/// headers added here, names lower-cased.
#[derive(Clone, Debug)]
pub struct Request {
    /// HTTP method (`:method`).
    pub method: String,
    /// Path with query (`:path`).
    pub path: String,
    /// Host (`:authority`); default `example.com`.
    pub authority: String,
    /// Scheme (`:scheme`); default `https`.
    pub scheme: String,
    /// Regular headers, in order.
    pub headers: Headers,
    /// Body; delivered in one `proxy_on_request_body` call if non-empty.
    pub body: Vec<u8>,
    /// Trailers; delivered in `proxy_on_request_trailers` if non-empty.
    pub trailers: Headers,
    /// Downstream peer address (`source.address` property).
    pub source_address: String,
    /// What the upstream (origin) answers if the request is forwarded; default: the harness backend.
    pub upstream_response: Option<Response>,
}

impl Request {
    /// A request with the given method and path.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authority: "example.com".to_string(),
            scheme: "https".to_string(),
            headers: Headers::new(),
            body: Vec::new(),
            trailers: Headers::new(),
            source_address: "127.0.0.1:40000".to_string(),
            upstream_response: None,
        }
    }

    /// A `GET` request.
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// A `POST` request.
    pub fn post(path: &str) -> Request {
        Request::new("POST", path)
    }

    /// Adds a header (name lower-cased, like Envoy).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.add(name, value);
        self
    }

    /// Sets `:authority`.
    pub fn authority(mut self, authority: &str) -> Request {
        self.authority = authority.to_string();
        self
    }

    /// Sets `:scheme`.
    pub fn scheme(mut self, scheme: &str) -> Request {
        self.scheme = scheme.to_string();
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Request {
        self.trailers.add(name, value);
        self
    }

    /// Sets the downstream peer address (`ip:port`).
    pub fn source_address(mut self, address: &str) -> Request {
        self.source_address = address.to_string();
        self
    }

    /// Sets what the origin answers if the plugin forwards this request.
    pub fn respond_with(mut self, response: Response) -> Request {
        self.upstream_response = Some(response);
        self
    }

    /// The full request header map as the plugin sees it (pseudo-headers first).
    pub fn header_map(&self) -> Headers {
        let mut h = Headers(vec![
            (":authority".to_string(), self.authority.clone()),
            (":path".to_string(), self.path.clone()),
            (":method".to_string(), self.method.clone()),
            (":scheme".to_string(), self.scheme.clone()),
        ]);
        for (k, v) in self.headers.iter() {
            h.add(k, v);
        }
        h
    }
}

/// An HTTP response: from the origin, from a callout upstream, or sent to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u32,
    /// Headers without `:status` (the harness adds it where the proxy would).
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: Headers,
}

impl Response {
    /// A response with a status and nothing else.
    pub fn new(status: u32) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: Vec::new(),
            trailers: Headers::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.add(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Response {
        self.trailers.add(name, value);
        self
    }

    /// The header map with `:status` first, as a proxy presents a response to a plugin.
    pub(crate) fn header_map(&self) -> Headers {
        let mut h = Headers(vec![(":status".to_string(), self.status.to_string())]);
        for (k, v) in self.headers.iter() {
            if k != ":status" {
                h.add(k, v);
            }
        }
        h
    }

    /// Builds a response from a header map with `:status`.
    pub(crate) fn from_header_map(headers: &Headers, body: Vec<u8>, trailers: Headers) -> Response {
        let status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut rest = headers.clone();
        rest.remove(":status");
        Response {
            status,
            headers: rest,
            body,
            trailers,
        }
    }
}

/// Where an HTTP stream stands, for a paused stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Held after `proxy_on_request_headers`.
    RequestHeaders,
    /// Held after `proxy_on_request_body`.
    RequestBody,
    /// Held after `proxy_on_request_trailers`.
    RequestTrailers,
    /// Held after `proxy_on_response_headers`.
    ResponseHeaders,
    /// Held after `proxy_on_response_body`.
    ResponseBody,
    /// Held after `proxy_on_response_trailers`.
    ResponseTrailers,
}

/// The request exactly as the origin (upstream) received it, after the plugin's changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Headers including pseudo-headers.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: Headers,
}

/// What happened to a request sent through the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The plugin let the request through: the origin saw `upstream_headers`, the client got `response`.
    Forwarded {
        /// The stream.
        stream: StreamId,
        /// Request headers the origin saw (with pseudo-headers).
        upstream_headers: Headers,
        /// Request body the origin saw.
        upstream_body: Vec<u8>,
        /// Request trailers the origin saw.
        upstream_trailers: Headers,
        /// The response the client received (after the plugin's response callbacks).
        response: Response,
        /// How many times the plugin asked to match the route again (`clear_route_cache`) before the
        /// request went upstream: Envoy's router then picks the route on the edited headers.
        route_cache_cleared: u32,
    },
    /// The plugin answered itself with `proxy_send_local_response` (the origin never saw the request, unless
    /// the local response was sent from a response callback).
    LocalResponse {
        /// The stream.
        stream: StreamId,
        /// Status code sent to the client.
        status: u32,
        /// Headers sent to the client (without `:status`).
        headers: Headers,
        /// Body sent to the client.
        body: Vec<u8>,
        /// The details string the plugin gave (Envoy's response code details).
        details: String,
        /// Whether the origin had already received the request.
        forwarded: bool,
        /// How many times the plugin asked to match the route again (`clear_route_cache`) before it
        /// answered.
        route_cache_cleared: u32,
    },
    /// The stream is held by the plugin (returned Pause and has not continued yet).
    Paused {
        /// The stream; resume with the plugin's own callouts/ticks or [`crate::Harness::resume`].
        stream: StreamId,
        /// Where it is held.
        phase: Phase,
    },
    /// The plugin reset the stream with `proxy_close_stream`.
    Reset {
        /// The stream.
        stream: StreamId,
    },
}

impl Outcome {
    /// The stream this outcome is about.
    pub fn stream(&self) -> StreamId {
        match self {
            Outcome::Forwarded { stream, .. }
            | Outcome::LocalResponse { stream, .. }
            | Outcome::Paused { stream, .. }
            | Outcome::Reset { stream } => *stream,
        }
    }

    /// The status the client received, if the stream finished with a response.
    pub fn status(&self) -> Option<u32> {
        match self {
            Outcome::Forwarded { response, .. } => Some(response.status),
            Outcome::LocalResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How many times the plugin asked to match the route again before the route was used (0 for a
    /// paused or reset stream).
    pub fn route_cache_cleared(&self) -> u32 {
        match self {
            Outcome::Forwarded {
                route_cache_cleared,
                ..
            }
            | Outcome::LocalResponse {
                route_cache_cleared,
                ..
            } => *route_cache_cleared,
            _ => 0,
        }
    }

    /// Whether the request reached the origin and the stream finished.
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Outcome::Forwarded { .. })
    }

    /// Whether the plugin holds the stream.
    pub fn is_paused(&self) -> bool {
        matches!(self, Outcome::Paused { .. })
    }

    /// A request header the origin saw, if forwarded.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Forwarded {
                upstream_headers, ..
            } => upstream_headers.get(name),
            _ => None,
        }
    }

    /// A response header the client received.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Forwarded { response, .. } => response.headers.get(name),
            Outcome::LocalResponse { headers, .. } => headers.get(name),
            _ => None,
        }
    }

    /// The response body the client received.
    pub fn response_body(&self) -> Option<&[u8]> {
        match self {
            Outcome::Forwarded { response, .. } => Some(&response.body),
            Outcome::LocalResponse { body, .. } => Some(body),
            _ => None,
        }
    }
}
