//! Sends the engine's callouts through the host and routes each answer to its owner,
//! whichever context the host delivers it to.

use super::enact::{enact, Flow};
use super::key_sync;
use super::state::{now_or_epoch, CalloutOwner, PluginState};
use crate::callout::{Callout, CalloutFailure, CalloutResponse, CalloutResult};
use crate::engine::Resumption;
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
fn read_response(body_size: usize, max_body: usize) -> CalloutResult {
    let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
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
    let truncated = body_size > max_body;
    Ok(CalloutResponse {
        status,
        headers,
        body: if truncated { Vec::new() } else { body },
        truncated,
    })
}

/// Routes the answer to callout `token`; `root_id` is the context to return to.
pub(super) fn answered(state: &PluginState, token: u32, body_size: usize, root_id: u32) {
    let owner = state
        .callouts
        .try_borrow_mut()
        .ok()
        .and_then(|mut c| c.remove(&token));
    match owner {
        Some(CalloutOwner::Keys(provider)) => {
            let result = read_response(body_size, crate::jwks_fetch::MAX_DOCUMENT_BYTES);
            key_sync::fetch_answered(state, provider, &result, root_id);
        }
        Some(CalloutOwner::Request {
            context_id,
            ticket,
            max_body,
        }) => {
            let result = read_response(body_size, max_body);
            let now = now_or_epoch();
            if hostcalls::set_effective_context(context_id).is_err() {
                if let Ok(mut engine) = state.engine.try_borrow_mut() {
                    engine.cancel(ticket);
                }
                return;
            }
            if let Ok(mut held) = state.held.try_borrow_mut() {
                held.remove(&ticket);
            }
            let next = match state.engine.try_borrow_mut() {
                Ok(mut engine) => engine.resume(ticket, Resumption::Callout(result), now),
                Err(_) => None,
            };
            if let Some(eval) = next {
                if enact(state, eval, context_id, now) == Flow::Forward {
                    if let Err(s) = hostcalls::resume_http_request() {
                        log::warn!("portcullis: cannot resume request: {s:?}");
                    }
                }
            }
        }
        None => log::debug!("portcullis: answer to an unknown callout {token}"),
    }
}
