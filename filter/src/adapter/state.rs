//! What every context of one VM shares: the engine, the counters, which stream holds
//! which ticket, and whose callout is whose.

use super::key_sync::KeySync;
use super::metrics::Metrics;
use crate::callout::Ticket;
use crate::engine::{Engine, ResponseEdits};
use crate::keyring::ProviderId;
use crate::time::UnixTime;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// Tick while requests wait for keys or keys are missing.
pub(super) const FAST_TICK: Duration = Duration::from_millis(50);
/// Tick otherwise: refresh checks and picking up keys other VMs fetched.
pub(super) const SLOW_TICK: Duration = Duration::from_secs(1);

/// Who a callout's answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CalloutOwner {
    /// The key fetch of a provider (sent by the root context).
    Keys(ProviderId),
    /// A held request, in its HTTP context.
    Request {
        /// The request's HTTP context.
        context_id: u32,
        /// Its ticket in the engine.
        ticket: Ticket,
        /// The most of the answer's body the engine reads.
        max_body: usize,
    },
}

/// The state shared by the root context and every HTTP context of the VM.
pub(super) struct PluginState {
    /// The decision engine.
    pub(super) engine: RefCell<Engine>,
    /// Host metrics.
    pub(super) metrics: Metrics,
    /// Key fetches and shared keys.
    pub(super) key_sync: RefCell<KeySync>,
    /// Held requests: engine ticket → HTTP context.
    pub(super) held: RefCell<HashMap<Ticket, u32>>,
    /// Outstanding callouts: host token → owner.
    pub(super) callouts: RefCell<HashMap<u32, CalloutOwner>>,
    /// Response edits waiting for their response, by HTTP context. Only requests whose
    /// step asked for them are here.
    pub(super) response_edits: RefCell<HashMap<u32, ResponseEdits>>,
    /// Whether the host prints info lines, as last read (at configure time and on each
    /// tick): asking per request would be a host call on every request's path.
    pub(super) info_logs: Cell<bool>,
    /// Whether the host can match a request's route again (`clear_route_cache`), probed at
    /// configure time when the policy routes by identity.
    pub(super) reroutes: Cell<bool>,
}

impl PluginState {
    /// State around a freshly configured engine.
    pub(super) fn new(engine: Engine) -> PluginState {
        PluginState {
            engine: RefCell::new(engine),
            metrics: Metrics::define(),
            key_sync: RefCell::new(KeySync::new()),
            held: RefCell::new(HashMap::new()),
            callouts: RefCell::new(HashMap::new()),
            response_edits: RefCell::new(HashMap::new()),
            info_logs: Cell::new(host_prints_info()),
            reroutes: Cell::new(false),
        }
    }

    /// Forgets everything a finished HTTP context left behind.
    pub(super) fn forget_context(&self, context_id: u32) {
        let tickets: Vec<Ticket> = match self.held.try_borrow_mut() {
            Ok(mut held) => {
                let mine: Vec<Ticket> = held
                    .iter()
                    .filter(|(_, c)| **c == context_id)
                    .map(|(t, _)| *t)
                    .collect();
                mine.iter().for_each(|t| {
                    held.remove(t);
                });
                mine
            }
            Err(_) => Vec::new(),
        };
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            tickets.into_iter().for_each(|t| engine.cancel(t));
        }
        if let Ok(mut callouts) = self.callouts.try_borrow_mut() {
            // The host cancels a finished stream's callouts; their tokens never answer.
            callouts.retain(|_, o| {
                !matches!(o, CalloutOwner::Request { context_id: c, .. } if *c == context_id)
            });
        }
        if let Ok(mut edits) = self.response_edits.try_borrow_mut() {
            edits.remove(&context_id);
        }
    }
}

/// Why the adapter could not read what a decision needs from the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum HostError {
    /// `proxy_get_current_time_nanoseconds` failed.
    #[error("cannot read the clock: {0:?}")]
    Clock(Status),
    /// `proxy_get_header_map_pairs` failed.
    #[error("cannot read request headers: {0:?}")]
    Headers(Status),
    /// Setting or removing a request header failed.
    #[error("cannot edit request header {name}: {status:?}")]
    EditHeader {
        /// The header.
        name: String,
        /// What the host said.
        status: Status,
    },
    /// The host could not match the request's route again after the route tag changed.
    #[error("cannot match the route again (clear_route_cache): {0:?}")]
    ClearRouteCache(Status),
    /// The engine was borrowed when a host callback re-entered the plugin.
    #[error("engine is busy (re-entrant call)")]
    Busy,
    /// The root context has no valid configuration.
    #[error("plugin is not configured")]
    NotConfigured,
}

/// The host's clock.
pub(super) fn now() -> Result<UnixTime, HostError> {
    let t = hostcalls::get_current_time().map_err(HostError::Clock)?;
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Ok(UnixTime::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

/// The host's clock, or the epoch when it cannot be read: for the root's housekeeping,
/// where a wrong time only makes a fetch early or late.
pub(super) fn now_or_epoch() -> UnixTime {
    now().unwrap_or(UnixTime::from_millis(0))
}

/// Whether the host prints info lines. A decision line is formatted only then: building
/// one that the host drops would cost every request a few microseconds for nothing.
pub(super) fn host_prints_info() -> bool {
    hostcalls::get_log_level().map_or(true, |level| level as u32 <= LogLevel::Info as u32)
}
