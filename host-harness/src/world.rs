//! State shared by all VMs (workers) of one harness: clock, shared data, queues, metrics, logs, callouts.
//!
//! One `World` per `Harness`, behind an `Arc<Mutex<_>>` that every worker's store holds; there is no global state.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::types::{Callback, LogLevel, MetricKind, Status};
use crate::upstream::{Callout, Upstream};

/// A foreign function a test registers: bytes in, bytes out (or a status).
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// One line the plugin logged (`proxy_log`, or WASI stdout/stderr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The worker (VM) that logged.
    pub worker: usize,
    /// The context that was active (0 if none).
    pub context_id: u32,
    /// Level (stdout is `Info`, stderr is `Error`).
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// Virtual time since start.
    pub at: Duration,
}

impl std::fmt::Display for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>5} w{} ctx{}] {}",
            self.level, self.worker, self.context_id, self.message
        )
    }
}

/// Something the plugin did that a real proxy would refuse or ignore (e.g. reading the request body during
/// `proxy_on_request_headers`). The host call still returns what Envoy returns; this record lets a test see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The worker (VM).
    pub worker: usize,
    /// The context that was active.
    pub context_id: u32,
    /// The callback that was running, if any.
    pub callback: Option<Callback>,
    /// The host function called.
    pub hostcall: &'static str,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.callback {
            Some(cb) => write!(
                f,
                "{} in {} (worker {}, ctx {}): {}",
                self.hostcall, cb, self.worker, self.context_id, self.message
            ),
            None => write!(
                f,
                "{} (worker {}, ctx {}): {}",
                self.hostcall, self.worker, self.context_id, self.message
            ),
        }
    }
}

/// A metric defined by the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Name as defined.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Current value (counter, gauge); for a histogram the last recorded value.
    pub value: i64,
    /// All recorded values (histogram only).
    pub samples: Vec<u64>,
}

pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    pub items: VecDeque<Vec<u8>>,
    /// (worker, root context) to notify with `proxy_on_queue_ready`.
    pub owner: (usize, u32),
}

pub(crate) struct World {
    pub start_unix_nanos: u64,
    pub elapsed: Duration,
    pub shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub queues: Vec<Queue>,
    pub queue_ready: VecDeque<(usize, u32, u32)>,
    pub metrics: Vec<Metric>,
    pub logs: Vec<LogEntry>,
    pub violations: Vec<Violation>,
    pub upstreams: HashMap<String, Upstream>,
    pub upstream_calls: HashMap<String, usize>,
    pub callouts: Vec<Callout>,
    /// Indices into `callouts` not yet delivered or cancelled.
    pub pending: Vec<usize>,
    pub next_token: u32,
    pub foreign: HashMap<String, ForeignFunction>,
    pub properties: HashMap<String, Vec<u8>>,
    pub log_level: LogLevel,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
}

impl World {
    pub fn now_unix_nanos(&self) -> u64 {
        self.start_unix_nanos
            .saturating_add(self.elapsed.as_nanos() as u64)
    }

    pub fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        cas
    }
}

pub(crate) type SharedWorld = Arc<Mutex<World>>;

/// Locks the world, ignoring poisoning (a panicking test thread must not hide the state from others).
pub(crate) fn lock(world: &SharedWorld) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}
