//! `portcullis-spoa`: an HAProxy SPOE agent that hosts a proxy-wasm module (the Portcullis plugin,
//! unchanged) on the harness's wasmtime host, so HAProxy, which has no proxy-wasm support, gets the
//! same decisions Envoy does.
//!
//! # Module map
//! The request path, from HAProxy in:
//! - `spop/`: the SPOP wire protocol (frames, typed data, varints, `req.hdrs_bin`), sans-IO.
//! - `server`: SPOP connections: handshake, NOTIFY in, ACK out.
//! - `request`: the NOTIFY's message as the request a plugin sees in Envoy.
//! - `workers`: the plugin VMs, one thread each on one shared state; trap → refuse and replace.
//! - `upstreams`: the live callout transport (clusters by name, rustls).
//! - `verdict`: the plugin's verdict as SPOE variables, or the agent's refusal.
//!
//! Agreed between the agent and HAProxy's configuration:
//! - `plan`: the headers, statuses and variable names, from the policy.
//! - `haproxy_config`: the generated `haproxy.cfg` and SPOE file.
//!
//! Around them: `admin` (Prometheus `/metrics`, `/ready`), `logs` (the plugin's lines on stdout in
//! Envoy's layout).

pub mod admin;
pub mod haproxy_config;
pub mod logs;
pub mod plan;
pub mod request;
pub mod server;
pub mod spop;
pub mod upstreams;
pub mod verdict;
pub mod workers;
