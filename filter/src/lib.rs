//! Portcullis: an identity-aware JWT policy filter for proxy-wasm hosts.
//!
//! Everything except [`adapter`] is plain Rust with no proxy-wasm types, so the decision
//! logic builds, tests and benchmarks natively. The path of one request, top down:
//!
//! - [`engine`]: `decide` / `resume`, returning a [`engine::Step`] (allow with edits,
//!   respond locally, or suspend on keys or a callout) and the decision record;
//! - [`path`]: the one normal form of a request path, or its refusal as ambiguous (the
//!   rules do not use it yet);
//! - [`policy`]: which rule applies, and what it requires ([`claims`] reads claim values);
//! - [`token`]: where the bearer token is, from the [`request`]'s headers;
//! - [`cache`]: tokens already verified (or already refused);
//! - [`jwt`] parses the token, [`verify`] checks it against the keys of the
//!   [`keyring`] ([`keys`] builds them from a JWKS; [`alg`] names the algorithms;
//!   [`rsa_pkcs1`] and [`native_signature`] are the in-VM and host signature checks);
//! - [`jwks_fetch`]: when to fetch remote keys; [`callout`] describes any HTTP callout the
//!   host must make; [`time`] is the clock's reading;
//! - [`config`]: the policy document compiled into the above, every URL in it an
//!   [`url::HttpsUrl`].
//!
//! The adapter is the thin layer that reads the request from the host, asks the engine,
//! and carries out the step.

pub mod engine;
pub mod path;
pub mod policy;
pub mod token;
pub mod request;
pub mod claims;
pub mod cache;
pub mod oidc;
pub mod session;

pub mod jwt;
pub mod verify;
pub mod keyring;
pub mod keys;
pub mod alg;
pub mod rsa_pkcs1;
pub mod native_signature;

pub mod jwks_fetch;
pub mod fetch_lease;
pub mod callout;
pub mod time;

pub mod config;
pub mod url;

#[cfg(target_arch = "wasm32")]
pub mod adapter;

/// The module's entry point, which the SDK's macro defines (and documents nothing of).
#[cfg(target_arch = "wasm32")]
mod entry {
    #![allow(missing_docs)]
    proxy_wasm::main! {{
        super::adapter::register();
    }}
}
