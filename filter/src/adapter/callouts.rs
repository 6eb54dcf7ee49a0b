//! Sends the engine's callouts through the host, and reads their answers.

use super::state::{CalloutOwner, PluginState};
use crate::callout::{Callout, CalloutFailure, CalloutResponse, CalloutResult};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;

/// Sends `callout` from the current context and remembers who its answer is for.
pub(super) fn dispatch(
    state: &PluginState,
    callout: &Callout,
    owner: CalloutOwner,
) -> Result<u32, CalloutFailure> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", callout.method.as_str()),
        (":path", callout.path.as_str()),
        (":authority", callout.authority.as_str()),
    ];
    headers.extend(
        callout
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let timeout = Duration::from_millis(callout.timeout_ms);
    let body = callout.body.as_deref();
    match hostcalls::dispatch_http_call(&callout.cluster, headers, body, vec![], timeout) {
        Ok(token) => {
            if let Ok(mut callouts) = state.callouts.try_borrow_mut() {
                callouts.insert(token, owner);
            }
            Ok(token)
        }
        Err(status) => {
            log::warn!(
                "portcullis: cannot call cluster {} ({}{}): {status:?}",
                callout.cluster,
                callout.authority,
                callout.path
            );
            Err(CalloutFailure::NotDispatched)
        }
    }
}

/// Reads the answer of the callout being delivered, reading at most `max_body` bytes.
pub(super) fn read_response(body_size: usize, max_body: usize) -> CalloutResult {
    // Bytes, not strings: the SDK's string reader panics on a non-UTF-8 value, and an IdP
    // (or whatever answers in its place) must not be able to trap the VM.
    let headers: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok())
        .ok_or(CalloutFailure::NoResponse)?;
    // One byte past the bound tells a document at the limit from one over it.
    let read = body_size.min(max_body.saturating_add(1));
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, read)
        .ok()
        .flatten()
        .unwrap_or_default();
    if let Some(failure) = CalloutFailure::from_envoy_reply(status, &headers, &body) {
        return Err(failure);
    }
    let truncated = body_size > max_body;
    Ok(CalloutResponse {
        status,
        headers,
        body: if truncated { Vec::new() } else { body },
        truncated,
    })
}
