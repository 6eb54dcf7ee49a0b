//! The only code that touches proxy-wasm: it reads the request from the host, asks the
//! [`Engine`](crate::engine::Engine), and applies the decision.

mod http;
mod key_fetch;
mod metrics;
mod native;
mod root;

use proxy_wasm::types::LogLevel;

/// Installs the root context factory; called from the module's `main`.
pub fn register() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::PluginRoot::new(context_id)));
}
