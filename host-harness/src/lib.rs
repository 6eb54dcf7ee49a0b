//! A proxy-wasm host for tests and the command line: an implementation of the proxy-wasm host ABI v0.2.1
//! on wasmtime that loads any proxy-wasm module (Rust, Go, C++ SDK), runs HTTP requests through it the way
//! Envoy would, and lets a test script the world around it.
//!
//! - [`Harness`] runs N VMs (workers) of one compiled module, sharing shared data, queues and metrics.
//! - [`Request`] goes in, an [`Outcome`] comes out: forwarded (with what the origin saw), a local response,
//!   paused, or reset.
//! - [`Upstream`] scripts the clusters the plugin calls with `proxy_http_call`: fixed responses, closures,
//!   delays, resets, timeouts (synthetic 504), sequences and schedules over virtual time.
//! - Virtual time: [`Harness::advance`] fires ticks and delivers delayed callouts in time order.
//! - [`tokens`]: signing keys generated per run, their JWKS, and JWTs minted from a JSON description.
//! - Logs, metrics, callouts, shared data and [`Violation`]s (ABI misuse a proxy would refuse) are inspectable.
//!
//! ```no_run
//! use std::time::Duration;
//! use proxy_wasm_harness::{Harness, Outcome, Request, Upstream};
//!
//! # fn main() -> Result<(), proxy_wasm_harness::HarnessError> {
//! let mut h = Harness::builder()
//!     .module_file("target/wasm32-wasip1/release/my_filter.wasm")
//!     .plugin_config(br#"{"jwks_cluster":"idp"}"#.to_vec())
//!     .workers(2)
//!     .upstream("idp", Upstream::delayed(Duration::from_millis(50), Upstream::json(200, r#"{"keys":[]}"#)))
//!     .build()?;
//! let out = h.request(Request::get("/api").header("authorization", "Bearer x"))?;
//! if let Outcome::Paused { stream, .. } = out {
//!     h.advance(Duration::from_millis(50))?;
//!     println!("{:?}", h.outcome(stream));
//! }
//! println!("{:?} {:?}", h.metric("jwt_ok"), h.logs());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod abi;
mod cargo_build;
mod envoy_crypto;
mod error;
mod harness;
mod host;
mod http;
mod plugin;
pub mod tokens;
mod types;
mod upstream;
mod world;

pub use cargo_build::build_wasm;
pub use envoy_crypto::{verify_signature, VERIFY_SIGNATURE};
pub use error::HarnessError;
pub use harness::{Harness, HarnessBuilder, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_START_UNIX_SECS};
pub use http::{Outcome, Phase, Request, Response, StreamId, UpstreamRequest};
pub use plugin::Plugin;
pub use types::{BufferType, Callback, Headers, LogLevel, MapType, MetricKind, Status};
pub use upstream::{Callout, CalloutRequest, CalloutResult, Upstream};
pub use world::{ForeignFunction, LogEntry, Metric, Violation};
