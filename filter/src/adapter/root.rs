//! The root context: configuration, the tick (metrics, key refreshes, keys other VMs
//! fetched, held requests whose wait ran out), and the answers to its callouts.

use super::arrivals;
use super::http::RequestFilter;
use super::key_sync::{self, after_key_change};
use super::native::HostVerifier;
use super::route_cache;
use super::state::{host_prints_info, now_or_epoch, PluginState, FAST_TICK, SLOW_TICK};
use crate::config;
use crate::engine::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

/// Holds the state built from the plugin configuration.
pub(super) struct PluginRoot {
    context_id: u32,
    state: Option<Rc<PluginState>>,
}

impl PluginRoot {
    /// The root context with this id.
    pub(super) fn new(context_id: u32) -> Self {
        PluginRoot {
            context_id,
            state: None,
        }
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
        if let Some(state) = self.state.clone() {
            arrivals::answered(&state, token_id, body_size, self.context_id);
        }
    }
}

impl RootContext for PluginRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let Some(old) = &self.state {
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
                self.state = None;
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
        let remote = !engine.keyring().remote_providers().is_empty();
        let routes = engine.policy().routing.is_some();
        let state = Rc::new(PluginState::new(engine));
        if routes {
            let reroutes = route_cache::host_has_it();
            if !reroutes {
                log::warn!(
                    "portcullis: the host has no clear_route_cache: route tags are set, but routes chosen before the plugin ran are not matched again"
                );
            }
            state.reroutes.set(reroutes);
        }
        if remote {
            // Keys another VM already has are taken from shared data; the rest are fetched
            // now, so most requests never wait.
            let now = now_or_epoch();
            key_sync::adopt_shared(&state, now.secs());
            key_sync::dispatch_due(&state, now);
            let _ = hostcalls::set_tick_period(FAST_TICK);
        } else {
            // No keys to fetch, but the tick still hands the decision counts to the host.
            let _ = hostcalls::set_tick_period(SLOW_TICK);
        }
        self.state = Some(state);
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        state.metrics.flush();
        state.info_logs.set(host_prints_info());
        let now = now_or_epoch();
        let changed = key_sync::adopt_shared(&state, now.secs());
        for provider in changed {
            // Requests waiting for this VM's own fetch are decided when it answers.
            let pending = state.engine.try_borrow().is_ok_and(|e| {
                e.keyring()
                    .fetcher(provider)
                    .is_some_and(|f| f.fetch_pending())
            });
            if !pending {
                after_key_change(&state, self.context_id, Some(provider));
            }
        }
        key_sync::dispatch_due(&state, now);
        // Requests whose wait ran out get their 503 now.
        after_key_change(&state, self.context_id, None);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter::new(context_id, self.state.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
