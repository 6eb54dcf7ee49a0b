//! The root context: configuration, key fetching, and the state HTTP contexts share.

use super::http::{host_prints_info, now_ms, RequestFilter, Shared};
use super::key_fetch::{wake, KeyFetching};
use super::metrics::Metrics;
use super::native::HostVerifier;
use crate::config;
use crate::engine::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// Tick while requests wait for keys or keys are missing.
pub const FAST_TICK: Duration = Duration::from_millis(50);
/// Tick otherwise: refresh checks and picking up keys other VMs fetched.
pub const SLOW_TICK: Duration = Duration::from_secs(1);

/// Holds the engine built from the plugin configuration.
pub struct PluginRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    fetching: KeyFetching,
}

impl PluginRoot {
    /// The root context with this id.
    pub fn new(context_id: u32) -> Self {
        PluginRoot {
            context_id,
            shared: None,
            fetching: KeyFetching::default(),
        }
    }

    fn after_key_change(&mut self, shared: &Shared, provider: Option<usize>) {
        let now = now_ms().unwrap_or(0);
        wake(shared, self.context_id, provider, now);
        let engine = shared.engine.borrow();
        let missing = engine
            .remote_providers()
            .into_iter()
            .any(|p| engine.keys(p).is_none());
        let waiting = !shared.waiters.borrow().is_empty();
        let tick = if missing || waiting {
            FAST_TICK
        } else {
            SLOW_TICK
        };
        let _ = hostcalls::set_tick_period(tick);
    }
}

impl Context for PluginRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if let Some(provider) = self.fetching.on_response(&shared, token_id, body_size) {
            self.after_key_change(&shared, Some(provider));
        }
    }
}

impl RootContext for PluginRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let Some(old) = &self.shared {
            // The counts of the policy being replaced still belong to the host.
            old.metrics.flush();
        }
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                log::error!("portcullis: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let cfg = match config::parse(&bytes) {
            Ok(cfg) => cfg,
            Err(e) => {
                log::error!("portcullis: invalid configuration: {e}");
                // A failed reconfiguration must not keep serving the old policy silently.
                self.shared = None;
                return false;
            }
        };
        log::info!(
            "portcullis configured: {} provider(s), {} rule(s), mode {:?}",
            cfg.policy.providers.len(),
            cfg.policy.rules.len(),
            cfg.policy.mode
        );
        let mut engine = Engine::new(cfg);
        match HostVerifier::probe() {
            Some(host) => engine.set_native_verifier(Box::new(host)),
            None => log::info!(
                "portcullis: the host has no verify_signature; signatures are checked in wasm"
            ),
        }
        let shared = Rc::new(Shared {
            engine: RefCell::new(engine),
            metrics: Metrics::define(),
            waiters: RefCell::new(Vec::new()),
            info_logs: Cell::new(host_prints_info()),
        });
        self.fetching = KeyFetching::default();
        if shared.engine.borrow().remote_providers().is_empty() {
            // No keys to fetch, but the tick still hands the decision counts to the host.
            let _ = hostcalls::set_tick_period(SLOW_TICK);
        } else {
            // Keys another VM already has are taken from shared data; the rest are fetched
            // now, so most requests never wait.
            let now = now_ms().unwrap_or(0) / 1000;
            self.fetching.adopt_shared(&shared, now);
            self.fetching.dispatch_due(&shared, now);
            let _ = hostcalls::set_tick_period(FAST_TICK);
        }
        self.shared = Some(shared);
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.metrics.flush();
        shared.info_logs.set(host_prints_info());
        let now = now_ms().unwrap_or(0) / 1000;
        let changed = self.fetching.adopt_shared(&shared, now);
        for provider in changed {
            // Requests waiting for this VM's own fetch are decided when it answers.
            let pending = shared
                .engine
                .borrow()
                .fetcher(provider)
                .is_some_and(|f| f.fetch_pending());
            if !pending {
                self.after_key_change(&shared, Some(provider));
            }
        }
        self.fetching.dispatch_due(&shared, now);
        // Requests whose wait ran out get their 503 now.
        self.after_key_change(&shared, None);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter::new(
            context_id,
            self.shared.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
