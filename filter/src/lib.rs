//! Portcullis: an identity-aware JWT policy filter for proxy-wasm hosts.
//!
//! Everything except [`adapter`] is plain Rust with no proxy-wasm types, so the decision
//! logic builds, tests and benchmarks natively. The adapter is the thin layer that reads
//! the request from the host and applies the [`engine::Decision`].

pub mod alg;
pub mod cache;
pub mod policy;

pub mod claims;
pub mod config;
pub mod engine;
pub mod jwks_fetch;

pub mod keys;
pub mod native_signature;
pub mod path;

pub mod request;
pub mod rsa_pkcs1;
pub mod token;
pub mod verify;

#[cfg(target_arch = "wasm32")]
pub mod adapter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    adapter::register();
}}
