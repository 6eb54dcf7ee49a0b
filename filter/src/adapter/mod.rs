//! The only code that touches proxy-wasm: it reads the request from the host, asks the
//! [`Engine`](crate::engine::Engine), and carries out the step it returns.
//!
//! - `root`: the root context: configuration, ticks, and the answers to root callouts;
//! - `http`: the HTTP context of one request;
//! - `arrivals`: routes each callout answer to the key fetch or held request it is for;
//! - `key_sync`: key fetch answers, keys shared with the other VMs, waking held requests;
//! - `enact`: carries out a [`Step`](crate::engine::Step) in the current context;
//! - `callouts`: sends any [`Callout`](crate::callout::Callout) and reads its answer;
//! - `state`: what every context of the VM shares, and the host's clock;
//! - `metrics`, `native`, `route_cache`: the host's counters, its `verify_signature`, and
//!   its `clear_route_cache`.

mod root;
mod http;
mod arrivals;
mod key_sync;
mod enact;
mod callouts;
mod state;
mod metrics;
mod native;
mod route_cache;

use proxy_wasm::types::LogLevel;

/// Installs the root context factory; called from the module's `main`.
pub fn register() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::PluginRoot::new(context_id)));
}
