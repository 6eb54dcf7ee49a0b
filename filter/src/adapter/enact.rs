//! Carries out an engine [`Step`] for the request in the effective context.

use super::callouts;
use super::route_cache;
use super::state::{CalloutOwner, HostError, PluginState, FAST_TICK};
use crate::engine::{
    internal_error, Evaluation, LocalReply, RequestEdits, Resumption, Step, Suspension,
};
use crate::time::UnixTime;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// Where the request stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Headers edited; the request may go on.
    Forward,
    /// A local response was sent.
    Answered,
    /// The request is held by the engine.
    Held,
}

/// Most steps one arrival may lead to: a callout that cannot be sent resumes the request
/// at once, and the engine may suspend it again; this bounds that loop.
const MAX_STEPS: usize = 8;

/// Logs, counts and carries out an evaluation for the request in HTTP context
/// `context_id` (the effective context).
pub(super) fn enact(
    state: &PluginState,
    mut eval: Evaluation,
    context_id: u32,
    now: UnixTime,
) -> Flow {
    for _ in 0..MAX_STEPS {
        let suspension = match eval.step {
            Step::Suspend(s) => s,
            Step::Allow(allow) => {
                record(state, &eval.record);
                if let Err(e) = apply(&allow.request) {
                    return server_error(&e.to_string());
                }
                // A route chosen on the headers as they came in would send the request
                // where its identity does not belong: better refused than misrouted.
                if allow.reroute && state.reroutes.get() {
                    if let Err(status) = route_cache::clear() {
                        return server_error(&HostError::ClearRouteCache(status).to_string());
                    }
                }
                if !allow.response.is_empty() {
                    if let Ok(mut edits) = state.response_edits.try_borrow_mut() {
                        edits.insert(context_id, allow.response);
                    }
                }
                return Flow::Forward;
            }
            Step::Respond(reply) => {
                record(state, &eval.record);
                respond(&reply);
                return Flow::Answered;
            }
        };
        let ticket = suspension.ticket();
        let failure = match suspension {
            Suspension::Keys { .. } => None,
            Suspension::Callout { callout, .. } => {
                let owner = CalloutOwner::Request {
                    context_id,
                    ticket,
                    max_body: callout.max_response_bytes,
                };
                callouts::dispatch(state, &callout, owner).err()
            }
        };
        let Some(failure) = failure else {
            if let Ok(mut held) = state.held.try_borrow_mut() {
                held.insert(ticket, context_id);
            }
            // Envoy sets the tick of the stream's root context: the root checks the held
            // request's deadline (and dispatches a key fetch) within one fast tick.
            let _ = hostcalls::set_tick_period(FAST_TICK);
            return Flow::Held;
        };
        let next = match state.engine.try_borrow_mut() {
            Ok(mut engine) => engine.resume(ticket, Resumption::Callout(Err(failure)), now),
            Err(_) => return server_error(&HostError::Busy.to_string()),
        };
        match next {
            Some(next) => eval = next,
            None => return server_error("a held request was lost"),
        }
    }
    server_error("too many steps for one request")
}

fn record(state: &PluginState, record: &crate::engine::DecisionRecord) {
    if state.info_logs.get() {
        log::info!("{record}");
    }
    state.metrics.count(record);
}

/// Answers 500 when the plugin itself fails: visible, and nothing gets through.
pub(super) fn server_error(reason: &str) -> Flow {
    log::error!("portcullis decision verdict=deny status=500 reason=internal detail={reason:?}");
    respond(&internal_error(reason));
    Flow::Answered
}

fn respond(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let status = u32::from(reply.status);
    if let Err(s) = hostcalls::send_http_response(status, headers, Some(&reply.body)) {
        log::error!("portcullis: local response failed: {s:?}");
    }
}

fn apply(edits: &RequestEdits) -> Result<(), HostError> {
    for name in &edits.remove {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None).map_err(|status| {
            HostError::EditHeader {
                name: name.clone(),
                status,
            }
        })?;
    }
    for (name, value) in &edits.set {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).map_err(
            |status| HostError::EditHeader {
                name: name.clone(),
                status,
            },
        )?;
    }
    Ok(())
}

/// Adds the response edits a step left for this HTTP context, if any.
pub(super) fn apply_response_edits(state: &PluginState, context_id: u32) {
    let Some(edits) = state
        .response_edits
        .try_borrow_mut()
        .ok()
        .and_then(|mut e| e.remove(&context_id))
    else {
        return;
    };
    for (name, value) in &edits.add {
        if let Err(s) = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value) {
            log::warn!("portcullis: cannot add response header {name}: {s:?}");
        }
    }
}
