//! Plain data types shared by the harness API and the ABI implementation.

use std::fmt;

/// A proxy-wasm status code (`proxy_status_t`) as returned by host functions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The call succeeded.
    Ok,
    /// The requested key, buffer, map or item does not exist (here, now).
    NotFound,
    /// An argument was invalid.
    BadArgument,
    /// A value could not be serialized.
    SerializationFailure,
    /// A value could not be parsed.
    ParseFailure,
    /// An expression was invalid.
    BadExpression,
    /// A guest pointer was out of bounds.
    InvalidMemoryAccess,
    /// A queue was empty.
    Empty,
    /// A compare-and-swap on shared data failed.
    CasMismatch,
    /// A result type did not match.
    ResultMismatch,
    /// The host failed internally.
    InternalFailure,
    /// A connection broke (HTTP callout reset).
    BrokenConnection,
    /// The host does not implement the operation.
    Unimplemented,
}

impl Status {
    /// The numeric code used on the wire.
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::BadArgument => 2,
            Status::SerializationFailure => 3,
            Status::ParseFailure => 4,
            Status::BadExpression => 5,
            Status::InvalidMemoryAccess => 6,
            Status::Empty => 7,
            Status::CasMismatch => 8,
            Status::ResultMismatch => 9,
            Status::InternalFailure => 10,
            Status::BrokenConnection => 11,
            Status::Unimplemented => 12,
        }
    }

    /// The status for a numeric code, if it is one.
    pub fn from_code(code: i32) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            5 => Status::BadExpression,
            6 => Status::InvalidMemoryAccess,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            9 => Status::ResultMismatch,
            10 => Status::InternalFailure,
            11 => Status::BrokenConnection,
            12 => Status::Unimplemented,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A proxy-wasm log level.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Trace (0).
    Trace,
    /// Debug (1).
    Debug,
    /// Info (2).
    Info,
    /// Warn (3).
    Warn,
    /// Error (4).
    Error,
    /// Critical (5).
    Critical,
}

impl LogLevel {
    /// The level for a wire code, if valid.
    pub fn from_code(code: i32) -> Option<LogLevel> {
        Some(match code {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The wire code of the level.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        };
        f.write_str(s)
    }
}

/// The kind of a metric defined by a plugin.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A monotonically increasing counter.
    Counter,
    /// A gauge that can go up and down.
    Gauge,
    /// A histogram of recorded values.
    Histogram,
}

/// Which header map a host call refers to (`proxy_map_type_t`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// Request headers of the current HTTP stream.
    RequestHeaders,
    /// Request trailers of the current HTTP stream.
    RequestTrailers,
    /// Response headers of the current HTTP stream.
    ResponseHeaders,
    /// Response trailers of the current HTTP stream.
    ResponseTrailers,
    /// gRPC initial metadata (not supported).
    GrpcReceiveInitialMetadata,
    /// gRPC trailing metadata (not supported).
    GrpcReceiveTrailingMetadata,
    /// Headers of the HTTP callout response being delivered.
    HttpCallResponseHeaders,
    /// Trailers of the HTTP callout response being delivered.
    HttpCallResponseTrailers,
}

impl MapType {
    /// The map type for a wire code.
    pub fn from_code(code: i32) -> Option<MapType> {
        Some(match code {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcReceiveInitialMetadata,
            5 => MapType::GrpcReceiveTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// Which buffer a host call refers to (`proxy_buffer_type_t`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// Request body of the current HTTP stream.
    RequestBody,
    /// Response body of the current HTTP stream.
    ResponseBody,
    /// Downstream data of a TCP stream (not supported).
    DownstreamData,
    /// Upstream data of a TCP stream (not supported).
    UpstreamData,
    /// Body of the HTTP callout response being delivered.
    HttpCallResponseBody,
    /// gRPC message (not supported).
    GrpcReceiveBuffer,
    /// The VM configuration.
    VmConfiguration,
    /// The plugin configuration.
    PluginConfiguration,
    /// Foreign function call data (not supported).
    CallData,
}

impl BufferType {
    /// The buffer type for a wire code.
    pub fn from_code(code: i32) -> Option<BufferType> {
        Some(match code {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// The plugin callback that was running when something happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Callback {
    /// `_initialize` / `main` / `_start` at load.
    Start,
    /// `proxy_on_context_create`.
    ContextCreate,
    /// `proxy_on_vm_start`.
    VmStart,
    /// `proxy_on_configure`.
    Configure,
    /// `proxy_on_tick`.
    Tick,
    /// `proxy_on_queue_ready`.
    QueueReady,
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
    /// `proxy_on_http_call_response`.
    HttpCallResponse,
    /// `proxy_on_done`.
    Done,
    /// `proxy_on_log`.
    Log,
    /// `proxy_on_delete`.
    Delete,
}

impl Callback {
    /// The name of the exported function the host calls for this callback.
    pub fn export_name(self) -> &'static str {
        match self {
            Callback::Start => "_initialize",
            Callback::ContextCreate => "proxy_on_context_create",
            Callback::VmStart => "proxy_on_vm_start",
            Callback::Configure => "proxy_on_configure",
            Callback::Tick => "proxy_on_tick",
            Callback::QueueReady => "proxy_on_queue_ready",
            Callback::RequestHeaders => "proxy_on_request_headers",
            Callback::RequestBody => "proxy_on_request_body",
            Callback::RequestTrailers => "proxy_on_request_trailers",
            Callback::ResponseHeaders => "proxy_on_response_headers",
            Callback::ResponseBody => "proxy_on_response_body",
            Callback::ResponseTrailers => "proxy_on_response_trailers",
            Callback::HttpCallResponse => "proxy_on_http_call_response",
            Callback::Done => "proxy_on_done",
            Callback::Log => "proxy_on_log",
            Callback::Delete => "proxy_on_delete",
        }
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.export_name())
    }
}

/// An ordered list of header (or trailer) name/value pairs; names are lower-case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// An empty list.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of `name` (case-insensitive), in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a pair (the name is lower-cased).
    pub fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Replaces all values of `name` by one value, keeping the first position (or appending).
    pub fn set(&mut self, name: &str, value: &str) {
        let lname = name.to_ascii_lowercase();
        if let Some(pos) = self.0.iter().position(|(k, _)| *k == lname) {
            self.0[pos].1 = value.to_string();
            let mut i = 0;
            self.0.retain(|(k, _)| {
                let keep = *k != lname || i == pos;
                i += 1;
                keep
            });
        } else {
            self.0.push((lname, value.to_string()));
        }
    }

    /// Removes all values of `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sum of the byte lengths of names and values (Envoy's `byteSize`).
    pub fn byte_size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_string()))
                .collect(),
        )
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> From<Vec<(K, V)>> for Headers {
    fn from(pairs: Vec<(K, V)>) -> Self {
        pairs.into_iter().collect()
    }
}

/// Serializes pairs in the proxy-wasm map format (count, sizes, NUL-terminated bytes).
pub(crate) fn serialize_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm map format; `None` if malformed.
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = read_u32(0)?;
    let mut pos = 4usize.checked_add(n.checked_mul(8)?)?;
    if pos > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let klen = read_u32(4 + i * 8)?;
        let vlen = read_u32(8 + i * 8)?;
        let k = bytes.get(pos..pos.checked_add(klen)?)?;
        pos += klen + 1;
        let v = bytes.get(pos..pos.checked_add(vlen)?)?;
        pos += vlen + 1;
        if pos > bytes.len() {
            return None;
        }
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Some(out)
}
