//! Errors the harness reports: load failures, plugin failures, misuse; and how they are rendered.

use std::time::Duration;

use crate::types::Callback;

/// A boxed error that keeps its source chain (wasmtime's error type is not `std::error::Error` itself).
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from loading or driving a plugin. Plugin failures are values, never panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    ReadModule {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No module was given to the builder.
    #[error("no module given: call module_file() or module_bytes()")]
    NoModule,
    /// The module is not valid WebAssembly or could not be compiled.
    #[error("cannot compile module: {}", render(.0.as_ref()))]
    Compile(#[source] BoxedError),
    /// The module imports a function the harness does not provide.
    #[error("module imports unknown function `{module}::{name}`; the harness provides proxy-wasm ABI 0.2.1 (`env`) and WASI preview1")]
    UnknownImport {
        /// The import module (e.g. `env`).
        module: String,
        /// The import name.
        name: String,
    },
    /// The module could not be instantiated or an export has the wrong type.
    #[error("cannot instantiate module: {0}")]
    Instantiate(String),
    /// The plugin trapped (panicked, hit `unreachable`, touched memory out of bounds, called `proc_exit`, ...).
    /// The VM is dead afterwards, like in Envoy.
    #[error("plugin trapped in {callback} on worker {worker}: {message}")]
    Trap {
        /// The worker (VM).
        worker: usize,
        /// The callback that trapped.
        callback: Callback,
        /// The trap message and guest backtrace.
        message: String,
    },
    /// A callback ran past its fuel budget (a runaway loop) and was stopped. The VM is dead afterwards.
    #[error("plugin ran out of fuel in {callback} on worker {worker} (budget {budget} units): runaway callback stopped")]
    OutOfFuel {
        /// The worker (VM).
        worker: usize,
        /// The callback that ran away.
        callback: Callback,
        /// The fuel budget per callback.
        budget: u64,
    },
    /// A callback ran past its wall-time budget (epoch interruption) and was stopped. The VM is dead afterwards.
    #[error("plugin ran past its wall-time budget in {callback} on worker {worker} (budget {budget:?}): callback stopped")]
    WallTimeExceeded {
        /// The worker (VM).
        worker: usize,
        /// The callback that ran too long.
        callback: Callback,
        /// The wall-time budget per callback.
        budget: Duration,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("plugin rejected its VM configuration (proxy_on_vm_start returned false) on worker {worker}{}", render_logs(.logs))]
    VmStartFailed {
        /// The worker (VM).
        worker: usize,
        /// Warnings and errors the plugin logged meanwhile.
        logs: Vec<String>,
    },
    /// `proxy_on_configure` returned false.
    #[error("plugin rejected its configuration (proxy_on_configure returned false) on worker {worker}{}", render_logs(.logs))]
    ConfigureFailed {
        /// The worker (VM).
        worker: usize,
        /// Warnings and errors the plugin logged meanwhile.
        logs: Vec<String>,
    },
    /// The worker's VM failed earlier (trap or fuel) and cannot run anything.
    #[error("worker {worker} is dead: its plugin VM failed earlier ({reason})")]
    VmDead {
        /// The worker (VM).
        worker: usize,
        /// The first failure.
        reason: String,
    },
    /// The worker index is out of range.
    #[error("no worker {worker}: the harness has {workers} worker(s)")]
    NoSuchWorker {
        /// The index asked for.
        worker: usize,
        /// How many there are.
        workers: usize,
    },
    /// The stream id is unknown or finished.
    #[error("no active stream {0}")]
    NoSuchStream(crate::http::StreamId),
    /// A configuration or input problem in the harness itself.
    #[error("{0}")]
    Invalid(String),
    /// `cargo build` of a plugin failed.
    #[error("building the plugin {manifest} failed: {message}")]
    Build {
        /// The manifest that was built.
        manifest: String,
        /// What cargo said.
        message: String,
    },
}

fn render_logs(logs: &[String]) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("; plugin said: {}", logs.join(" | "))
    }
}

/// Renders a wasmtime error with its causes, outermost first (`a: b: c`).
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Renders a std error with its sources, outermost first.
pub(crate) fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.join(": ")
}
