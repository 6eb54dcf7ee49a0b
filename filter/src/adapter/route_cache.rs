//! Envoy's `clear_route_cache` foreign function: Envoy picks a request's route before the
//! plugin runs, so after the plugin sets the route tag (or removes a spoofed one) the route
//! must be matched again on the edited headers.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The foreign function's name in Envoy (`source/extensions/common/wasm/foreign.cc`).
const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

/// Whether the host has the function. Probed from the root context, where Envoy's has no
/// stream to act on and answers `Ok`; a host without it answers `NotFound`.
pub(super) fn host_has_it() -> bool {
    !matches!(
        hostcalls::call_foreign_function(CLEAR_ROUTE_CACHE, Some(&[])),
        Err(Status::NotFound)
    )
}

/// Makes the host match the current request's route again.
pub(super) fn clear() -> Result<(), Status> {
    hostcalls::call_foreign_function(CLEAR_ROUTE_CACHE, Some(&[])).map(|_| ())
}
