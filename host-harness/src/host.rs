//! Per-VM host state: the data of one wasmtime `Store`, which host functions read and change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Memory, TypedFunc};

use crate::http::{Phase, Request, Response, StreamId, UpstreamRequest};
use crate::types::{Callback, Headers};
use crate::world::{lock, SharedWorld, Violation};

/// The next thing an HTTP stream does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    Forward,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Finish,
}

pub(crate) struct LocalReply {
    pub status: u32,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub details: String,
}

/// One HTTP stream (an HTTP context in the plugin).
pub(crate) struct StreamState {
    pub id: StreamId,
    pub request: Request,
    pub request_headers: Headers,
    pub request_body: Vec<u8>,
    pub request_trailers: Headers,
    pub response_headers: Headers,
    pub response_body: Vec<u8>,
    pub response_trailers: Headers,
    pub step: Step,
    /// Callbacks that have started for this stream (to decide what a host call may touch).
    pub seen: HashSet<Callback>,
    pub held: Option<Phase>,
    pub continue_request: bool,
    pub continue_response: bool,
    pub reset: bool,
    pub local: Option<LocalReply>,
    pub local_started: bool,
    pub local_details: String,
    pub forwarded: Option<UpstreamRequest>,
    pub properties: HashMap<String, Vec<u8>>,
    /// The response went to the client (or the stream was reset).
    pub finished: bool,
    pub origin_response: Response,
}

/// The response of an HTTP callout while `proxy_on_http_call_response` runs.
pub(crate) struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// The data of one worker's `Store`.
pub(crate) struct HostState {
    pub worker: usize,
    pub world: SharedWorld,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub root_id: u32,
    pub running: Option<(u32, Callback)>,
    pub effective: u32,
    pub streams: HashMap<u32, StreamState>,
    pub vm_config: Arc<Vec<u8>>,
    pub plugin_config: Arc<Vec<u8>>,
    pub call_response: Option<CallResponse>,
    pub status: (i32, String),
    pub tick_period: Option<Duration>,
    pub next_tick: Option<Duration>,
    pub rng: u64,
    pub env: Arc<Vec<(String, String)>>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub done_called: HashSet<u32>,
    pub awaiting_done: HashSet<u32>,
}

impl HostState {
    /// The callback running now, if any.
    pub fn callback(&self) -> Option<Callback> {
        self.running.map(|(_, cb)| cb)
    }

    /// The HTTP stream host calls act on, if the effective context is one.
    pub fn stream(&self) -> Option<&StreamState> {
        self.streams.get(&self.effective)
    }

    /// Mutable access to the current stream.
    pub fn stream_mut(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }

    /// Records a harness violation for the test to see.
    pub fn violation(&self, hostcall: &'static str, message: impl Into<String>) {
        let v = Violation {
            worker: self.worker,
            context_id: self.effective,
            callback: self.callback(),
            hostcall,
            message: message.into(),
        };
        lock(&self.world).violations.push(v);
    }

    /// Next deterministic random 64-bit value (splitmix64).
    pub fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
