//! The HTTP context of one request: decides it when its headers arrive, receives the
//! answers to callouts sent on its behalf, and applies response edits.

use super::arrivals;
use super::enact::{enact, server_error, Flow};
use super::state::{now, HostError, PluginState};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;

/// One header pair as the engine reads it. Proxies hand over lower-case names and UTF-8
/// values, so this normally reuses both buffers; it copies only to fix either up.
fn owned_header((mut name, value): (String, Vec<u8>)) -> (String, String) {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.make_ascii_lowercase();
    }
    let value = String::from_utf8(value)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    (name, value)
}

/// Reads the request in the current context and decides it.
fn decide_current(state: &PluginState, context_id: u32) -> Result<Flow, HostError> {
    let headers: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map_err(HostError::Headers)?
        .into_iter()
        .map(owned_header)
        .collect();
    let now = now()?;
    let eval = {
        let mut engine = state.engine.try_borrow_mut().map_err(|_| HostError::Busy)?;
        engine.set_logging(state.info_logs.get());
        engine.decide(&headers, now)
    };
    Ok(enact(state, eval, context_id, now))
}

/// The plugin's side of one request.
pub(super) struct RequestFilter {
    context_id: u32,
    state: Option<Rc<PluginState>>,
}

impl RequestFilter {
    /// A filter sharing the root's state (none if configuration failed).
    pub(super) fn new(context_id: u32, state: Option<Rc<PluginState>>) -> Self {
        RequestFilter { context_id, state }
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(state) = &self.state {
            arrivals::answered(state, token_id, body_size, self.context_id);
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(state) = &self.state {
            state.forget_context(self.context_id);
        }
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let flow = match &self.state {
            Some(state) => decide_current(state, self.context_id)
                .unwrap_or_else(|e| server_error(&e.to_string())),
            None => server_error(&HostError::NotConfigured.to_string()),
        };
        match flow {
            Flow::Forward => Action::Continue,
            Flow::Answered | Flow::Held => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(state) = &self.state {
            super::enact::apply_response_edits(state, self.context_id);
        }
        Action::Continue
    }
}
