//! The transport to the host's native signature check (Envoy's `verify_signature`).

use crate::native_signature::{NativeVerifier, FOREIGN_FUNCTION};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Calls the host's `verify_signature` foreign function.
pub(super) struct HostVerifier;

impl HostVerifier {
    /// The host's verifier, if the host has the function. Probed with an empty argument
    /// list, which a host that has it refuses (`BadArgument`: no key) and a host without
    /// it does not know (`NotFound`).
    pub(super) fn probe() -> Option<HostVerifier> {
        match hostcalls::call_foreign_function(FOREIGN_FUNCTION, Some(&[])) {
            Err(Status::NotFound) => None,
            _ => Some(HostVerifier),
        }
    }
}

impl NativeVerifier for HostVerifier {
    fn call(&self, arguments: &[u8]) -> Option<Vec<u8>> {
        match hostcalls::call_foreign_function(FOREIGN_FUNCTION, Some(arguments)) {
            // A result with every field at its default serialises to nothing.
            Ok(answer) => Some(answer.unwrap_or_default()),
            // BadArgument: the host could not import the key; let the VM decide.
            Err(_) => None,
        }
    }
}
