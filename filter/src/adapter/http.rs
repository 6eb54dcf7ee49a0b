//! The HTTP context: one per request.

use super::metrics::Metrics;
use crate::engine::{Decision, Denial, Engine};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// Applies the engine's decision to one request.
pub struct RequestFilter {
    engine: Option<Rc<RefCell<Engine>>>,
    metrics: Rc<Metrics>,
}

impl RequestFilter {
    /// A filter sharing the root's engine and metrics.
    pub fn new(engine: Option<Rc<RefCell<Engine>>>, metrics: Rc<Metrics>) -> Self {
        RequestFilter { engine, metrics }
    }
}

fn server_error(reason: &str) -> Action {
    log::error!("portcullis decision verdict=deny status=500 reason=internal detail={reason:?}");
    let body =
        serde_json::json!({"error": "server_error", "error_description": reason}).to_string();
    respond(
        &Denial {
            status: 500,
            www_authenticate: None,
            error: "server_error",
            description: reason.into(),
        },
        &body,
    )
}

fn respond(denial: &Denial, body: &str) -> Action {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(w) = &denial.www_authenticate {
        headers.push(("www-authenticate", w.as_str()));
    }
    if let Err(status) =
        hostcalls::send_http_response(u32::from(denial.status), headers, Some(body.as_bytes()))
    {
        log::error!("portcullis: local response failed: {status:?}");
    }
    Action::Pause
}

fn apply(remove: &[String], set: &[(String, String)]) -> Result<(), String> {
    for name in remove {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
            .map_err(|s| format!("cannot remove header {name}: {s:?}"))?;
    }
    for (name, value) in set {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
            .map_err(|s| format!("cannot set header {name}: {s:?}"))?;
    }
    Ok(())
}

impl Context for RequestFilter {}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(engine) = &self.engine else {
            return server_error("plugin is not configured");
        };
        let headers: Vec<(String, String)> =
            match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
                Ok(h) => h
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_ascii_lowercase(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect(),
                Err(status) => {
                    return server_error(&format!("cannot read request headers: {status:?}"))
                }
            };
        let now = match hostcalls::get_current_time() {
            Ok(t) => t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            Err(status) => return server_error(&format!("cannot read the clock: {status:?}")),
        };
        let Ok(mut engine) = engine.try_borrow_mut() else {
            return server_error("engine is busy (re-entrant call)");
        };
        let eval = engine.decide(&headers, now);
        drop(engine);
        log::info!("{}", eval.record);
        self.metrics.count(&eval.record);
        match eval.decision {
            Decision::Allow {
                headers_to_remove,
                headers_to_set,
                ..
            } => match apply(&headers_to_remove, &headers_to_set) {
                Ok(()) => Action::Continue,
                Err(e) => server_error(&e),
            },
            Decision::Deny(denial) => respond(&denial, &denial.body()),
        }
    }
}
