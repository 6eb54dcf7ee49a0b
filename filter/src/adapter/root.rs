//! The root context: configuration, and the state every HTTP context shares.

use super::http::RequestFilter;
use super::metrics::Metrics;
use crate::config;
use crate::engine::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

/// Holds the engine built from the plugin configuration.
#[derive(Default)]
pub struct PluginRoot {
    engine: Option<Rc<RefCell<Engine>>>,
    metrics: Rc<Metrics>,
}

impl Context for PluginRoot {}

impl RootContext for PluginRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("portcullis: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match config::parse(&bytes) {
            Ok(cfg) => {
                log::info!(
                    "portcullis configured: {} provider(s), {} rule(s), mode {:?}",
                    cfg.policy.providers.len(),
                    cfg.policy.rules.len(),
                    cfg.policy.mode
                );
                self.engine = Some(Rc::new(RefCell::new(Engine::new(cfg))));
                self.metrics = Rc::new(Metrics::define());
                true
            }
            Err(e) => {
                log::error!("portcullis: invalid configuration: {e}");
                // A failed reconfiguration must not keep serving the old policy silently.
                self.engine = None;
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter::new(
            self.engine.clone(),
            Rc::clone(&self.metrics),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
