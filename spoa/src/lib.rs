//! `portcullis-spoa`: an HAProxy SPOE agent that hosts a proxy-wasm module.
//!
//! # Module map
//! - `spop/`: the SPOP wire protocol (frames, typed data, varints), sans-IO.

pub mod spop;
