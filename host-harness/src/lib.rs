//! A proxy-wasm host: an implementation of the proxy-wasm host ABI v0.2.1 on wasmtime that loads any
//! proxy-wasm module (Rust, Go, C++ SDK), runs HTTP requests through it the way Envoy would, and lets a test
//! script the world around it — or runs it live, on the wall clock.
//!
//! # Module map
//! The runtime, from the bottom up:
//! - `plugin`: [`Plugin`], a module compiled once (engine with fuel and epoch interruption, linker, imports
//!   checked).
//! - `abi/`: the host functions, one file per family (headers, buffers, callouts, shared data, queues,
//!   metrics, time, properties, stream control, contexts, foreign functions, WASI preview1). Foreign
//!   functions built in, as in Envoy: [`VERIFY_SIGNATURE`] and [`CLEAR_ROUTE_CACHE`] (Ok with no bytes;
//!   on a stream still in its request phase it is counted in [`Outcome::route_cache_cleared`]).
//! - `host`: `HostState`, the data of one VM's store, and the handles to what it shares.
//! - `vm`: `Vm`, one instantiated module: exports, `invoke` with fuel and wall-time budgets, death on trap.
//! - `stream`: Envoy's HTTP stream lifecycle as a state machine; stops after the request phase on request
//!   ([`StreamMode`], [`RequestVerdict`], [`HeaderEdit`]).
//! - `shared`: [`SharedState`], the thread-safe ABI state VMs share (shared data, queues, metrics).
//! - `runtime`: the VMs of one thread and "run what is due now".
//!
//! The injectable parts:
//! - `clock`: [`Clock`] — [`VirtualClock`] (tests) or [`WallClock`] (live).
//! - `transport`: [`CalloutTransport`] — [`Scripted`] answers from [`Upstream`] scripts; a live host plugs
//!   in a real client. Callouts are dispatched now and answered later.
//! - `random`: [`RandomSource`] — [`OsRandom`] by default, [`InsecureSeededRandom`] only when asked.
//! - `recorder`: [`Recorder`] — [`History`] (full or bounded) or [`Discard`].
//! - `scheduler`: the virtual pump (time moves when the test says) or the real-time loop.
//!
//! On top:
//! - `harness`: [`Harness`], the test API: requests in, [`Outcome`]s out; [`Harness::advance`] moves time.
//! - `upstream`: [`Upstream`] scripts (fixed, closures, delays, resets, hangs, sequences, schedules).
//! - [`tokens`]: signing keys generated per run, their JWKS, and JWTs minted from a JSON description.
//! - `src/bin/host-harness.rs`: the CLI (`run`, `bench`, `validate`).
//!
//! # One VM per thread
//! A server builds one [`Harness`] per thread on one [`SharedState`]
//! ([`HarnessBuilder::shared_state`]): each thread's VM runs on its own, while shared data, queues and
//! metrics are common to all, as in Envoy. [`HarnessBuilder::wall_clock`] runs it live.
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
#![warn(missing_docs)]

mod abi;
mod cargo_build;
mod clock;
mod envoy_crypto;
mod envoy_env;
mod error;
mod harness;
mod host;
mod http;
mod plugin;
mod random;
mod recorder;
mod runtime;
mod scheduler;
mod shared;
mod stream;
pub mod tokens;
mod transport;
mod types;
mod upstream;
mod vm;

pub use cargo_build::build_wasm;
pub use clock::{Clock, VirtualClock, WallClock};
pub use envoy_crypto::{verify_signature, VERIFY_SIGNATURE};
pub use envoy_env::civil_date;
pub use error::{BoxedError, HarnessError};
pub use harness::{
    Harness, HarnessBuilder, Recording, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_START_UNIX_SECS,
};
pub use http::{Outcome, Phase, Request, Response, StreamId, UpstreamRequest};
pub use plugin::Plugin;
pub use random::{InsecureSeededRandom, OsRandom, RandomError, RandomSource};
pub use recorder::{CalloutEnd, Discard, History, LogEntry, Recorder, Violation};
pub use shared::{ForeignFunction, Metric, SharedState, VmKey, CLEAR_ROUTE_CACHE};
pub use stream::{HeaderEdit, RequestPhase, RequestVerdict, StreamMode};
pub use transport::{Answer, CalloutTransport, Scripted, SharedTransport, TransportError};
pub use types::{BufferType, Callback, Headers, LogLevel, MapType, MetricKind, Status};
pub use upstream::{Callout, CalloutRequest, CalloutResult, Upstream};
