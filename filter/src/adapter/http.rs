//! The HTTP context (one per request), and the decision step that a request runs when it
//! arrives and again when keys it waited for arrive.

use super::metrics::Metrics;
use crate::engine::{Decision, Denial, Engine, Evaluation};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// A request paused until a provider's keys arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// The HTTP context.
    pub context_id: u32,
    /// The provider whose keys it needs.
    pub provider: usize,
    /// When it gives up (Unix milliseconds).
    pub deadline_ms: u64,
}

/// What every context of one VM shares: the engine, the counters, the waiting requests.
pub struct Shared {
    /// The decision engine.
    pub engine: RefCell<Engine>,
    /// Host metrics.
    pub metrics: Metrics,
    /// Requests waiting for keys.
    pub waiters: RefCell<Vec<Waiter>>,
    /// Whether the host prints info lines, as last read (at configure time and on each
    /// tick): asking per request would be a host call on every request's path.
    pub info_logs: Cell<bool>,
}

/// Milliseconds since the Unix epoch by the host's clock.
pub fn now_ms() -> Result<u64, String> {
    let t = hostcalls::get_current_time().map_err(|s| format!("cannot read the clock: {s:?}"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// What happened to the request in the effective context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Headers edited; the request may go on.
    Forward,
    /// A local response was sent.
    Answered,
    /// The request waits for keys.
    Waiting,
}

fn server_error(reason: &str) -> Step {
    log::error!("portcullis decision verdict=deny status=500 reason=internal detail={reason:?}");
    respond(&Denial {
        status: 500,
        www_authenticate: None,
        error: "server_error",
        description: reason.into(),
        retry_after: None,
    })
}

fn respond(denial: &Denial) -> Step {
    let body = denial.body();
    let retry_after = denial.retry_after.map(|s| s.to_string());
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(w) = &denial.www_authenticate {
        headers.push(("www-authenticate", w.as_str()));
    }
    if let Some(r) = &retry_after {
        headers.push(("retry-after", r.as_str()));
    }
    let status = u32::from(denial.status);
    if let Err(s) = hostcalls::send_http_response(status, headers, Some(body.as_bytes())) {
        log::error!("portcullis: local response failed: {s:?}");
    }
    Step::Answered
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

/// Whether the host prints info lines. A decision line is formatted only then: building
/// one that the host drops would cost every request a few microseconds for nothing.
pub fn host_prints_info() -> bool {
    hostcalls::get_log_level().map_or(true, |level| level as u32 <= LogLevel::Info as u32)
}

/// Logs, counts and applies an evaluation to the request in the effective context.
pub fn enact(shared: &Shared, eval: Evaluation, context_id: u32, now_ms: u64) -> Step {
    if let Decision::WaitForKeys(provider) = eval.decision {
        let timeout = shared
            .engine
            .borrow()
            .fetcher(provider)
            .map_or(5000, |f| f.settings().timeout_ms);
        // Discovery then JWKS is two callouts; allow both, plus a tick.
        let deadline_ms = now_ms + 2 * timeout + 500;
        shared.waiters.borrow_mut().push(Waiter {
            context_id,
            provider,
            deadline_ms,
        });
        return Step::Waiting;
    }
    if shared.info_logs.get() {
        log::info!("{}", eval.record);
    }
    shared.metrics.count(&eval.record);
    match eval.decision {
        Decision::Allow {
            headers_to_remove,
            headers_to_set,
            ..
        } => match apply(&headers_to_remove, &headers_to_set) {
            Ok(()) => Step::Forward,
            Err(e) => server_error(&e),
        },
        Decision::Deny(denial) => respond(&denial),
        Decision::WaitForKeys(_) => Step::Waiting,
    }
}

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

/// Reads the request in the effective context and decides it.
pub fn decide_current(shared: &Shared, context_id: u32) -> Step {
    let headers: Vec<(String, String)> = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
    {
        Ok(h) => h.into_iter().map(owned_header).collect(),
        Err(s) => return server_error(&format!("cannot read request headers: {s:?}")),
    };
    let now_ms = match now_ms() {
        Ok(t) => t,
        Err(e) => return server_error(&e),
    };
    let eval = match shared.engine.try_borrow_mut() {
        Ok(mut engine) => {
            engine.set_logging(shared.info_logs.get());
            engine.decide(&headers, now_ms / 1000)
        }
        Err(_) => return server_error("engine is busy (re-entrant call)"),
    };
    enact(shared, eval, context_id, now_ms)
}

/// Applies the engine's decision to one request.
pub struct RequestFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl RequestFilter {
    /// A filter sharing the root's state (none if configuration failed).
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        RequestFilter { context_id, shared }
    }
}

impl Context for RequestFilter {
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            if let Ok(mut w) = shared.waiters.try_borrow_mut() {
                w.retain(|x| x.context_id != self.context_id);
            }
        }
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let step = match &self.shared {
            Some(shared) => decide_current(shared, self.context_id),
            None => server_error("plugin is not configured"),
        };
        match step {
            Step::Forward => Action::Continue,
            Step::Answered => Action::Pause,
            Step::Waiting => {
                // The root dispatches the fetch on its next tick; make that soon.
                let _ = hostcalls::set_tick_period(super::root::FAST_TICK);
                Action::Pause
            }
        }
    }
}
