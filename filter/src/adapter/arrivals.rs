//! Callout answers, routed to their owner whichever context the host delivers them to:
//! the SDK hands an answer to the context that was running when the callout was sent,
//! which for a request resumed by the root is the root.

use super::callouts::read_response;
use super::enact::{enact, Flow};
use super::key_sync;
use super::state::{now_or_epoch, CalloutOwner, PluginState};
use crate::engine::Resumption;
use proxy_wasm::hostcalls;

/// Routes the answer to callout `token`; `return_to` is the context to leave effective.
pub(super) fn answered(state: &PluginState, token: u32, body_size: usize, return_to: u32) {
    let owner = state
        .callouts
        .try_borrow_mut()
        .ok()
        .and_then(|mut c| c.remove(&token));
    match owner {
        Some(CalloutOwner::Keys(provider)) => {
            let result = read_response(body_size, crate::jwks_fetch::MAX_DOCUMENT_BYTES);
            key_sync::fetch_answered(state, provider, &result, return_to);
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
            let _ = hostcalls::set_effective_context(return_to);
        }
        None => log::debug!("portcullis: answer to an unknown callout {token}"),
    }
}
