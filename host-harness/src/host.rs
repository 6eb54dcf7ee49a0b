//! Per-VM host state: the data of one wasmtime `Store`, which the host functions read and change, and the
//! handles to what the VM shares with others (ABI state, callouts, recorder, clock).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wasmtime::{Memory, TypedFunc};

use crate::clock::{Clock, VirtualClock};
use crate::random::{OsRandom, RandomSource};
use crate::recorder::{Discard, LogEntry, SharedRecorder, Violation};
use crate::shared::{SharedState, VmKey};
use crate::stream::StreamState;
use crate::transport::{Callouts, Scripted, SharedTransport};
use crate::types::{Callback, Headers, LogLevel, Status};
use crate::vm::RecentLines;

/// The root context's id in every VM (the harness runs one plugin, so one root context per VM).
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// The callback running now (the context host calls act on is `HostState::effective`).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Running {
    pub(crate) callback: Callback,
}

/// The response of an HTTP callout while `proxy_on_http_call_response` runs.
pub(crate) struct CallResponse {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Headers,
}

/// What `proxy_get_status` reports: the status of the callout being delivered.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallStatus {
    pub(crate) code: i32,
    pub(crate) message: String,
}

/// What the plugin learns about itself through properties, and the host's log level.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) plugin_name: String,
    pub(crate) root_id: String,
    pub(crate) log_level: LogLevel,
}

/// A table of callouts shared by the VMs of one host.
pub(crate) type SharedCallouts = Arc<Mutex<Callouts>>;

/// Locks the callout table, ignoring poisoning.
pub(crate) fn lock_callouts(c: &SharedCallouts) -> MutexGuard<'_, Callouts> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The data of one VM's `Store`.
pub(crate) struct HostState {
    pub(crate) worker: usize,
    pub(crate) vm: VmKey,
    pub(crate) shared: SharedState,
    pub(crate) callouts: SharedCallouts,
    pub(crate) recorder: SharedRecorder,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Box<dyn RandomSource>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) recent: RecentLines,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    pub(crate) root_id: u32,
    pub(crate) running: Option<Running>,
    /// The context host calls act on: the running callback's, or what `proxy_set_effective_context` chose.
    pub(crate) effective: u32,
    /// HTTP streams by context id: from context creation until `proxy_on_delete`.
    pub(crate) streams: HashMap<u32, StreamState>,
    pub(crate) vm_config: Arc<Vec<u8>>,
    pub(crate) plugin_config: Arc<Vec<u8>>,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) status: CallStatus,
    /// The root context's tick period (Envoy keeps one per root context; a stream sets its root's).
    pub(crate) tick_period: Option<Duration>,
    pub(crate) next_tick: Option<Duration>,
    pub(crate) env: Arc<Vec<(String, String)>>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Contexts that called `proxy_done` (their deferred `proxy_on_delete` may run).
    pub(crate) done_called: HashSet<u32>,
    /// Finished streams whose `proxy_on_done` returned false: deleted once they call `proxy_done`.
    pub(crate) awaiting_done: HashSet<u32>,
    /// Envoy's `allow_on_headers_stop_iteration` (default false): whether a headers Pause lets the body
    /// callbacks run.
    pub(crate) allow_on_headers_stop_iteration: bool,
    /// Whether the headers Envoy adds around a plugin are added (see `envoy_env`).
    pub(crate) envoy_environment: bool,
}

impl HostState {
    /// A state wired to nothing, to ask the linker which imports it defines before any VM exists.
    pub(crate) fn probe() -> HostState {
        let transport: SharedTransport = Arc::new(Mutex::new(Scripted::default()));
        HostState::new(
            0,
            SharedState::default(),
            Arc::new(Mutex::new(Callouts::new(transport))),
            SharedRecorder::new(Box::new(Discard)),
            Arc::new(VirtualClock::starting_at(std::time::UNIX_EPOCH)),
            Box::new(OsRandom),
        )
    }

    /// A fresh state for VM `worker`; the builder fills in configuration and identity.
    pub(crate) fn new(
        worker: usize,
        shared: SharedState,
        callouts: SharedCallouts,
        recorder: SharedRecorder,
        clock: Arc<dyn Clock>,
        random: Box<dyn RandomSource>,
    ) -> HostState {
        HostState {
            worker,
            vm: shared.register_vm(),
            shared,
            callouts,
            recorder,
            clock,
            random,
            identity: Arc::new(Identity {
                plugin_name: "plugin".into(),
                root_id: String::new(),
                log_level: LogLevel::Trace,
            }),
            recent: RecentLines::default(),
            memory: None,
            alloc: None,
            root_id: ROOT_CONTEXT_ID,
            running: None,
            effective: ROOT_CONTEXT_ID,
            streams: HashMap::new(),
            vm_config: Arc::new(Vec::new()),
            plugin_config: Arc::new(Vec::new()),
            call_response: None,
            status: CallStatus::default(),
            tick_period: None,
            next_tick: None,
            env: Arc::new(Vec::new()),
            stdout: Vec::new(),
            stderr: Vec::new(),
            done_called: HashSet::new(),
            awaiting_done: HashSet::new(),
            allow_on_headers_stop_iteration: false,
            envoy_environment: true,
        }
    }

    /// The callback running now, if any.
    pub(crate) fn callback(&self) -> Option<Callback> {
        self.running.map(|r| r.callback)
    }

    /// The HTTP stream host calls act on, if the effective context is one.
    pub(crate) fn stream(&self) -> Option<&StreamState> {
        self.streams.get(&self.effective)
    }

    /// Mutable access to the current stream.
    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }

    /// Records a harness violation for the test to see.
    pub(crate) fn violation(&self, hostcall: &'static str, message: impl Into<String>) {
        let v = Violation {
            worker: self.worker,
            context_id: self.effective,
            callback: self.callback(),
            hostcall,
            message: message.into(),
        };
        self.recorder.lock().violation(v);
    }

    /// Records a log line if the host's level lets it through.
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        if level < self.identity.log_level {
            return;
        }
        self.recent.push(level, &message);
        let entry = LogEntry {
            worker: self.worker,
            context_id: self.effective,
            level,
            message,
            at: self.clock.elapsed(),
        };
        self.recorder.lock().log(entry);
    }

    /// Sets the tick period of the root context (0 stops ticks); the first tick is one period from now.
    pub(crate) fn set_tick_period(&mut self, period: Duration) {
        if period.is_zero() {
            self.tick_period = None;
            self.next_tick = None;
        } else {
            self.tick_period = Some(period);
            self.next_tick = Some(self.clock.elapsed() + period);
        }
    }

    /// The status `proxy_get_status` reports for a delivered callout.
    pub(crate) fn set_status(&mut self, status: Status, message: &str) {
        self.status = CallStatus {
            code: status.code(),
            message: message.to_string(),
        };
    }
}
