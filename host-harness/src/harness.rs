//! The test API on top of the runtime: build a host around a plugin, send requests, move time, inspect
//! what happened.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::{Clock, TimeSource, VirtualClock, WallClock};
use crate::error::HarnessError;
use crate::host::{HostState, Identity};
use crate::http::{Outcome, Phase, Request, Response, StreamId};
use crate::plugin::Plugin;
use crate::random::RandomChoice;
use crate::recorder::{History, LogEntry, Recorder, SharedRecorder, Violation};
use crate::runtime::Runtime;
use crate::scheduler::{RealtimeLoop, Scheduler, VirtualScheduler};
use crate::shared::{ForeignFunction, Metric, SharedState};
use crate::stream::{Origin, RequestPhase, RequestVerdict, StreamBook, StreamMode};
use crate::transport::{CalloutTransport, Callouts, Scripted, SharedTransport};
use crate::types::{LogLevel, Status};
use crate::upstream::{Callout, Upstream};
use crate::vm::{Limits, Vm};

/// Fuel (roughly, wasm instructions) a single callback may use before it is stopped as runaway.
pub const DEFAULT_FUEL_PER_CALLBACK: u64 = 2_000_000_000;

/// The virtual clock starts here unless the builder says otherwise: 2025-01-01T00:00:00Z.
pub const DEFAULT_START_UNIX_SECS: u64 = 1_735_689_600;

/// How much of what the plugin did a harness remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Recording {
    /// Everything: logs, violations, callouts, the outcome of every stream (the default; tests).
    #[default]
    Full,
    /// The latest `n` of each, and of finished streams' outcomes (long runs, servers).
    Bounded(usize),
    /// Nothing but the outcome of the latest finished stream.
    Off,
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
    Compiled(Plugin),
}

/// Builds a [`Harness`]: the module, its configuration, the world around it.
pub struct HarnessBuilder {
    source: Option<Source>,
    plugin_config: Arc<Vec<u8>>,
    vm_config: Arc<Vec<u8>>,
    workers: usize,
    limits: Limits,
    start: SystemTime,
    wall_clock: bool,
    random: RandomChoice,
    env: Arc<Vec<(String, String)>>,
    log_level: LogLevel,
    plugin_name: String,
    root_id: String,
    vm_id: String,
    upstreams: HashMap<String, Upstream>,
    transport: Option<SharedTransport>,
    backend: Upstream,
    properties: HashMap<String, Vec<u8>>,
    /// Foreign functions to add (`Some`) or take away (`None`), applied to the shared state at build.
    foreign: Vec<(String, Option<ForeignFunction>)>,
    shared: Option<SharedState>,
    recorder: Option<Box<dyn Recorder>>,
    recording: Recording,
    allow_on_headers_stop_iteration: bool,
    envoy_environment: bool,
}

impl HarnessBuilder {
    /// Loads the module from a `.wasm` file.
    pub fn module_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(Source::File(path.into()));
        self
    }

    /// Loads the module from bytes.
    pub fn module_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.source = Some(Source::Bytes(bytes.into()));
        self
    }

    /// Uses an already compiled plugin (fast: no compilation).
    pub fn plugin(mut self, plugin: &Plugin) -> Self {
        self.source = Some(Source::Compiled(plugin.clone()));
        self
    }

    /// The plugin configuration (`proxy_on_configure`, buffer `PluginConfiguration`).
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = Arc::new(config.into());
        self
    }

    /// The VM configuration (`proxy_on_vm_start`, buffer `VmConfiguration`).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = Arc::new(config.into());
        self
    }

    /// How many VMs (proxy worker threads) to run; default 1. They all run on the harness's thread; for
    /// one VM per thread, build one harness per thread on one [`SharedState`] (see
    /// [`HarnessBuilder::shared_state`]).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Defines an upstream cluster the plugin can call with `proxy_http_call` (scripted transport).
    pub fn upstream(mut self, name: &str, upstream: Upstream) -> Self {
        self.upstreams.insert(name.to_string(), upstream);
        self
    }

    /// Carries callouts with this transport instead of the scripted upstreams (which are then unused).
    pub fn transport(mut self, transport: impl CalloutTransport + 'static) -> Self {
        let transport: SharedTransport = Arc::new(Mutex::new(transport));
        self.transport = Some(transport);
        self
    }

    /// What the origin answers to forwarded requests (default: `200`, no headers, empty body). Delays are
    /// ignored; a reset answers `503`, a hang `504`, as Envoy's router would.
    pub fn backend(mut self, upstream: Upstream) -> Self {
        self.backend = upstream;
        self
    }

    /// Fuel per callback (`None`: unbounded). A callback that uses it up is stopped: [`HarnessError::OutOfFuel`].
    pub fn fuel_per_callback(mut self, fuel: Option<u64>) -> Self {
        self.limits.fuel = fuel;
        self
    }

    /// Wall time per callback (`None`, the default: unbounded), enforced by epoch interruption with a
    /// resolution of a few milliseconds. A callback that runs longer is stopped:
    /// [`HarnessError::WallTimeExceeded`]. Meant for live hosts, where fuel is not a measure of latency.
    pub fn wall_time_per_callback(mut self, budget: Option<Duration>) -> Self {
        self.limits.wall_time = budget;
        self
    }

    /// The wall-clock time at which the virtual clock starts.
    pub fn start_time(mut self, t: SystemTime) -> Self {
        self.start = t;
        self
    }

    /// Runs on the wall clock with a real-time loop instead of virtual time (live mode): ticks and callout
    /// answers happen when they are due in real time, and [`Harness::advance`] waits for real.
    pub fn wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    /// INSECURE, deterministic WASI `random_get`: the same as [`HarnessBuilder::insecure_seeded_random`].
    /// Kept for tests that replay exact bytes; without it the VMs read the OS CSPRNG.
    pub fn seed(self, seed: u64) -> Self {
        self.insecure_seeded_random(seed)
    }

    /// INSECURE: WASI `random_get` from a seeded generator, so every run sees the same bytes. Only for tests;
    /// a plugin's nonces and keys are predictable with it.
    pub fn insecure_seeded_random(mut self, seed: u64) -> Self {
        self.random = RandomChoice::InsecureSeeded(seed);
        self
    }

    /// Adds a WASI environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        Arc::make_mut(&mut self.env).push((key.to_string(), value.to_string()));
        self
    }

    /// The host log level (`proxy_get_log_level`); lower-level lines are dropped. Default `Trace`.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// The `plugin_name` property; default `plugin`.
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = name.to_string();
        self
    }

    /// The `plugin_root_id` property; default empty.
    pub fn root_id(mut self, id: &str) -> Self {
        self.root_id = id.to_string();
        self
    }

    /// The `plugin_vm_id` property and shared-queue VM id; default empty. Ignored with
    /// [`HarnessBuilder::shared_state`], whose VM id applies.
    pub fn vm_id(mut self, id: &str) -> Self {
        self.vm_id = id.to_string();
        self
    }

    /// Sets a property (dot-separated path, e.g. `node.metadata.region`) to raw bytes.
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path.to_string(), value.into());
        self
    }

    /// Registers a foreign function for `proxy_call_foreign_function`.
    pub fn foreign_function(
        mut self,
        name: &str,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) -> Self {
        self.foreign.push((name.to_string(), Some(Arc::new(f))));
        self
    }

    /// Removes a foreign function, built-in ones (`verify_signature`) included, as a host
    /// without it would behave.
    pub fn without_foreign_function(mut self, name: &str) -> Self {
        self.foreign.push((name.to_string(), None));
        self
    }

    /// Runs the VMs on this shared state (shared data, queues, metrics, properties, foreign functions)
    /// instead of a new one, so that harnesses on other threads share it: one VM per thread, as a proxy
    /// runs them. The builder's properties and foreign functions are added to it.
    pub fn shared_state(mut self, shared: SharedState) -> Self {
        self.shared = Some(shared);
        self
    }

    /// How much history to keep; default [`Recording::Full`].
    pub fn recording(mut self, recording: Recording) -> Self {
        self.recording = recording;
        self
    }

    /// Sends logs, violations and callout records to this recorder (overrides [`HarnessBuilder::recording`]
    /// for them; the harness's inspection methods read its [`Recorder::history`]).
    pub fn recorder(mut self, recorder: impl Recorder + 'static) -> Self {
        self.recorder = Some(Box::new(recorder));
        self
    }

    /// Envoy's `allow_on_headers_stop_iteration` (default `false`, as in Envoy): with `false` a Pause from
    /// `on_http_request_headers` (or `..._response_headers`) holds the body and trailers callbacks and the
    /// origin until the plugin continues; with `true` only the headers wait, the body callback still runs,
    /// and the stream is held only if the last callback of the direction pauses.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.allow_on_headers_stop_iteration = allow;
        self
    }

    /// Whether the harness adds what Envoy adds around a plugin (default `true`): `x-forwarded-proto` and
    /// `x-request-id` on requests; `content-length` and `content-type` on local replies; the router's
    /// `x-envoy-upstream-service-time` on origin responses and callout answers; `date` and `server: envoy` on what the client
    /// gets. `false` models a host that adds nothing.
    pub fn envoy_environment(mut self, on: bool) -> Self {
        self.envoy_environment = on;
        self
    }

    /// Compiles (unless given a [`Plugin`]), starts every worker and configures the plugin.
    /// A configuration the plugin rejects is an `Err`, never a panic.
    pub fn build(self) -> Result<Harness, HarnessError> {
        let plugin = match &self.source {
            None => return Err(HarnessError::NoModule),
            Some(Source::File(p)) => Plugin::from_file(p)?,
            Some(Source::Bytes(b)) => Plugin::from_bytes(b)?,
            Some(Source::Compiled(p)) => p.clone(),
        };
        let shared = self
            .shared
            .clone()
            .unwrap_or_else(|| SharedState::new(&self.vm_id));
        for (path, value) in &self.properties {
            shared.set_property(path, value.clone());
        }
        for (name, f) in &self.foreign {
            match f {
                Some(f) => shared.register_foreign_function(name, f.clone()),
                None => shared.remove_foreign_function(name),
            }
        }
        let scripted = Arc::new(Mutex::new(Scripted::new(self.upstreams.clone())));
        let transport: SharedTransport = match &self.transport {
            Some(t) => t.clone(),
            None => scripted.clone() as SharedTransport,
        };
        let (time, scheduler) = if self.wall_clock {
            let clock = Arc::new(WallClock::new());
            (
                TimeSource::Wall(clock.clone()),
                Scheduler::Realtime(RealtimeLoop { clock }),
            )
        } else {
            let clock = Arc::new(VirtualClock::starting_at(self.start));
            (
                TimeSource::Virtual(clock.clone()),
                Scheduler::Virtual(VirtualScheduler { clock }),
            )
        };
        let (recorder, keep): (Box<dyn Recorder>, Option<usize>) = match self.recording {
            Recording::Full => (Box::new(History::unbounded()), None),
            Recording::Bounded(n) => (Box::new(History::bounded(n)), Some(n)),
            Recording::Off => (Box::new(crate::recorder::Discard), Some(1)),
        };
        let recorder = SharedRecorder::new(match self.recorder {
            Some(r) => r,
            None => recorder,
        });
        let mut rt = Runtime {
            plugin: plugin.clone(),
            vms: Vec::new(),
            shared,
            callouts: Arc::new(Mutex::new(Callouts::new(transport))),
            recorder,
            time,
            book: StreamBook::keeping(keep),
            origin: Origin::new(self.backend.clone()),
        };
        let identity = Arc::new(Identity {
            plugin_name: self.plugin_name.clone(),
            root_id: self.root_id.clone(),
            log_level: self.log_level,
        });
        for worker in 0..self.workers {
            let mut state = HostState::new(
                worker,
                rt.shared.clone(),
                rt.callouts.clone(),
                rt.recorder.clone(),
                rt.time.clock(),
                self.random.for_worker(worker),
            );
            state.identity = identity.clone();
            state.vm_config = self.vm_config.clone();
            state.plugin_config = self.plugin_config.clone();
            state.env = self.env.clone();
            state.allow_on_headers_stop_iteration = self.allow_on_headers_stop_iteration;
            state.envoy_environment = self.envoy_environment;
            rt.vms.push(Vm::instantiate(&plugin, state, self.limits)?);
            if let Some(vm) = rt.vms.last_mut() {
                vm.start()?;
            }
            rt.pump()?;
        }
        Ok(Harness {
            rt,
            scheduler,
            scripted,
        })
    }
}

/// A proxy-wasm host for tests: N VMs of one module, a virtual clock, scripted upstreams, captured logs and
/// metrics. Everything is per harness (or per [`SharedState`]); many harnesses can run in parallel.
///
/// ```no_run
/// use proxy_wasm_harness::{Harness, Outcome, Request, Upstream};
/// # fn main() -> Result<(), proxy_wasm_harness::HarnessError> {
/// let mut h = Harness::builder()
///     .module_file("plugin.wasm")
///     .plugin_config(br#"{"issuer":"x"}"#.to_vec())
///     .upstream("idp", Upstream::json(200, r#"{"keys":[]}"#))
///     .build()?;
/// let out = h.request(Request::get("/api").header("authorization", "Bearer x"))?;
/// if let Outcome::LocalResponse { status, .. } = out {
///     assert_eq!(status, 401);
/// }
/// # Ok(()) }
/// ```
pub struct Harness {
    rt: Runtime,
    scheduler: Scheduler,
    /// The scripted transport `set_upstream` changes (unused when the builder was given a transport).
    scripted: Arc<Mutex<Scripted>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("workers", &self.rt.vms.len())
            .field("live_streams", &self.rt.book.live.len())
            .finish()
    }
}

impl Harness {
    /// Starts building a harness.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            source: None,
            plugin_config: Arc::new(Vec::new()),
            vm_config: Arc::new(Vec::new()),
            workers: 1,
            limits: Limits {
                fuel: Some(DEFAULT_FUEL_PER_CALLBACK),
                wall_time: None,
            },
            start: UNIX_EPOCH + Duration::from_secs(DEFAULT_START_UNIX_SECS),
            wall_clock: false,
            random: RandomChoice::Os,
            env: Arc::new(Vec::new()),
            log_level: LogLevel::Trace,
            plugin_name: "plugin".into(),
            root_id: String::new(),
            vm_id: String::new(),
            upstreams: HashMap::new(),
            transport: None,
            backend: Upstream::respond(Response::new(200)),
            properties: HashMap::new(),
            foreign: Vec::new(),
            shared: None,
            recorder: None,
            recording: Recording::Full,
            allow_on_headers_stop_iteration: false,
            envoy_environment: true,
        }
    }

    fn outcome_of(&self, stream: StreamId) -> Result<Outcome, HarnessError> {
        self.rt
            .book
            .outcomes
            .get(&stream)
            .cloned()
            .ok_or(HarnessError::NoSuchStream(stream))
    }

    /// Sends a request through worker 0 and runs it as far as it goes now (including callouts that answer
    /// without delay). A `Paused` outcome means the plugin holds it; see [`Harness::advance`].
    pub fn request(&mut self, request: Request) -> Result<Outcome, HarnessError> {
        self.request_on(0, request)
    }

    /// Sends a request through the given worker (VM).
    pub fn request_on(&mut self, worker: usize, request: Request) -> Result<Outcome, HarnessError> {
        let id = self.rt.open(worker, request, StreamMode::Full)?;
        self.outcome_of(id)
    }

    /// Sends a request through worker 0 for its request phase only: the plugin's verdict (header edits, or
    /// its local reply) where Envoy would forward to the origin; the origin and the response callbacks do
    /// not run. A paused request decides later; see [`Harness::request_verdict`].
    pub fn request_phase(&mut self, request: Request) -> Result<RequestPhase, HarnessError> {
        self.request_phase_on(0, request)
    }

    /// [`Harness::request_phase`] on the given worker.
    pub fn request_phase_on(
        &mut self,
        worker: usize,
        request: Request,
    ) -> Result<RequestPhase, HarnessError> {
        let id = self.rt.open(worker, request, StreamMode::RequestPhase)?;
        Ok(match self.rt.book.verdicts.get(&id) {
            Some(v) => RequestPhase::Decided(v.clone()),
            None => RequestPhase::Paused { stream: id },
        })
    }

    /// The verdict of a request-phase stream, once the plugin decided.
    pub fn request_verdict(&self, stream: StreamId) -> Option<&RequestVerdict> {
        self.rt.book.verdicts.get(&stream)
    }

    /// Takes the verdict of a request-phase stream once the plugin decided, so a long-running host
    /// forgets it (a bounded book would otherwise drop the oldest verdicts first).
    pub fn take_verdict(&mut self, stream: StreamId) -> Option<RequestVerdict> {
        self.rt.book.verdicts.remove(&stream)
    }

    /// Runs what is due now (ticks, callout answers and timeouts) and returns without waiting: the
    /// step of a live host that waits for its own work (new requests) between calls; see
    /// [`Harness::next_event_in`].
    pub fn run_due(&mut self) -> Result<(), HarnessError> {
        let now = self.rt.time.elapsed();
        self.rt.fire_ticks(now)?;
        self.rt.pump()
    }

    /// How long from now until the next event the host knows of (a tick, a callout's deadline or
    /// scripted answer); `None` when none is scheduled. A network transport cannot say when its
    /// answers come, so a live host with callouts in flight polls as well.
    pub fn next_event_in(&self) -> Option<Duration> {
        let now = self.rt.time.elapsed();
        self.rt.next_event().map(|t| t.saturating_sub(now))
    }

    /// Whether any callout is in flight (dispatched and neither answered, timed out nor cancelled).
    pub fn has_pending_callouts(&self) -> bool {
        crate::host::lock_callouts(&self.rt.callouts).in_flight() > 0
    }

    /// The latest outcome of a stream (it changes when a paused stream goes on).
    pub fn outcome(&self, stream: StreamId) -> Option<&Outcome> {
        self.rt.book.outcomes.get(&stream)
    }

    fn live(&self, stream: StreamId) -> Result<crate::stream::StreamRef, HarnessError> {
        self.rt
            .book
            .live
            .get(&stream)
            .copied()
            .ok_or(HarnessError::NoSuchStream(stream))
    }

    /// The outcome after a host-side action, or the verdict's stream staying unknown to `outcome`.
    fn after_action(&mut self, stream: StreamId) -> Result<Outcome, HarnessError> {
        self.rt.pump()?;
        if let Some(o) = self.rt.book.outcomes.get(&stream) {
            return Ok(o.clone());
        }
        match self.rt.book.verdicts.get(&stream) {
            Some(RequestVerdict::Reset) => Ok(Outcome::Reset { stream }),
            _ => Err(HarnessError::NoSuchStream(stream)),
        }
    }

    /// Resumes a paused stream from the host side, as if the plugin had called `proxy_continue_stream`.
    pub fn resume(&mut self, stream: StreamId) -> Result<Outcome, HarnessError> {
        let at = self.live(stream)?;
        if let Some(vm) = self.rt.vms.get_mut(at.vm) {
            if let Some(st) = vm.store.data_mut().streams.get_mut(&at.context_id) {
                if let crate::stream::Stage::Held { phase, .. } = st.stage {
                    let request_side = matches!(
                        phase,
                        Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
                    );
                    st.continue_direction(request_side);
                }
            }
        }
        self.rt.drive(at)?;
        self.after_action(stream)
    }

    /// Resets a stream from the client side (downstream disconnect); its pending callouts are cancelled.
    pub fn reset_stream(&mut self, stream: StreamId) -> Result<Outcome, HarnessError> {
        let at = self.live(stream)?;
        if let Some(vm) = self.rt.vms.get_mut(at.vm) {
            if let Some(st) = vm.store.data_mut().streams.get_mut(&at.context_id) {
                st.close();
            }
        }
        self.rt.drive(at)?;
        self.after_action(stream)
    }

    /// Moves time forward by `d`, firing due ticks (`proxy_on_tick`) and delivering callout responses and
    /// timeouts in time order. On the virtual clock this is instant; on the wall clock
    /// ([`HarnessBuilder::wall_clock`]) it runs the real-time loop for `d`.
    pub fn advance(&mut self, d: Duration) -> Result<(), HarnessError> {
        match &self.scheduler {
            Scheduler::Virtual(s) => s.advance(&mut self.rt, d),
            Scheduler::Realtime(r) => r.run(&mut self.rt, d, |_| false).map(|_| ()),
        }
    }

    /// Advances time event by event until `stream` is no longer paused or `limit` has passed; returns its
    /// outcome then.
    pub fn advance_until_done(
        &mut self,
        stream: StreamId,
        limit: Duration,
    ) -> Result<Outcome, HarnessError> {
        match &self.scheduler {
            Scheduler::Virtual(s) => {
                let deadline = s.clock.elapsed().saturating_add(limit);
                loop {
                    let out = self.outcome_of(stream)?;
                    if !out.is_paused() {
                        return Ok(out);
                    }
                    let left = deadline.saturating_sub(s.clock.elapsed());
                    match s.next_within(&self.rt, left) {
                        Some(step) => s.advance(&mut self.rt, step)?,
                        None => {
                            s.advance(&mut self.rt, left)?;
                            return self.outcome_of(stream);
                        }
                    }
                }
            }
            Scheduler::Realtime(r) => {
                r.run(&mut self.rt, limit, |rt| {
                    !rt.book.outcomes.get(&stream).is_some_and(|o| o.is_paused())
                })?;
                self.outcome_of(stream)
            }
        }
    }

    /// On the wall clock, runs the real-time loop until `done` holds or `limit` passes; on the virtual
    /// clock, advances event by event the same way. Returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Harness) -> bool,
    ) -> Result<bool, HarnessError> {
        let start = self.elapsed();
        loop {
            if done(self) {
                return Ok(true);
            }
            let spent = self.elapsed().saturating_sub(start);
            if spent >= limit {
                return Ok(false);
            }
            let left = limit - spent;
            match &self.scheduler {
                Scheduler::Virtual(s) => {
                    let step = s.next_within(&self.rt, left).unwrap_or(left);
                    s.advance(&mut self.rt, step)?;
                }
                Scheduler::Realtime(r) => {
                    let deadline = r.clock.elapsed().saturating_add(left);
                    r.turn(&mut self.rt, deadline)?;
                }
            }
        }
    }

    /// Forgets finished streams' outcomes, delivered callouts and captured logs (pending callouts and paused
    /// streams are kept). Long runs can use [`Recording::Bounded`] instead.
    pub fn clear_history(&mut self) {
        self.rt.book.forget_finished();
        if let Some(h) = self.rt.recorder.lock().history_mut() {
            h.clear();
        }
    }

    /// Time elapsed since the harness started (virtual, or real on the wall clock).
    pub fn elapsed(&self) -> Duration {
        self.rt.time.elapsed()
    }

    /// The current wall-clock time as the plugin sees it.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.rt.time.unix_nanos())
    }

    /// Number of workers (VMs).
    pub fn workers(&self) -> usize {
        self.rt.vms.len()
    }

    /// Whether a worker's VM is still alive (it dies on a trap or runaway callback).
    pub fn is_alive(&self, worker: usize) -> bool {
        self.rt.vms.get(worker).is_some_and(|w| w.is_alive())
    }

    /// The tick period a worker's root context asked for, if any.
    pub fn tick_period(&self, worker: usize) -> Option<Duration> {
        self.rt
            .vms
            .get(worker)
            .and_then(|w| w.store.data().tick_period)
    }

    /// Streams the plugin still holds.
    pub fn paused_streams(&self) -> Vec<StreamId> {
        let mut v: Vec<StreamId> = self.rt.book.live.keys().copied().collect();
        v.sort();
        v
    }

    /// Every captured log line so far (plugin `proxy_log` and WASI stdout/stderr), in order.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.rt
            .recorder
            .read(|h| h.logs().iter().cloned().collect())
    }

    /// Captured log messages only.
    pub fn log_messages(&self) -> Vec<String> {
        self.rt
            .recorder
            .read(|h| h.logs().iter().map(|l| l.message.clone()).collect())
    }

    /// Removes and returns the captured log lines.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        self.rt
            .recorder
            .lock()
            .history_mut()
            .map(History::take_logs)
            .unwrap_or_default()
    }

    /// Whether any captured log message contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.rt
            .recorder
            .read(|h| h.logs().iter().any(|l| l.message.contains(needle)))
    }

    /// The value of a counter or gauge by name.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.rt.shared.metric(name)
    }

    /// The values recorded in a histogram by name.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.rt.shared.histogram(name)
    }

    /// All metrics the plugin defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.rt.shared.metrics()
    }

    /// Every HTTP callout dispatched so far (delivered or not), as far as the recorder keeps them.
    pub fn callouts(&self) -> Vec<Callout> {
        self.rt
            .recorder
            .read(|h| h.callouts().iter().cloned().collect())
    }

    /// Callouts not yet answered (whatever the recorder keeps).
    pub fn pending_callouts(&self) -> Vec<Callout> {
        crate::host::lock_callouts(&self.rt.callouts).pending()
    }

    /// What the plugin did that a proxy would refuse or ignore (see [`Violation`]).
    pub fn violations(&self) -> Vec<Violation> {
        self.rt
            .recorder
            .read(|h| h.violations().iter().cloned().collect())
    }

    /// A shared-data value and its CAS token.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.rt.shared.shared_data(key)
    }

    /// Sets a shared-data value from the test (a new CAS token is assigned).
    pub fn set_shared_data(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.rt.shared.set_shared_data(key, value.into());
    }

    /// The ABI state the VMs share (to hand to harnesses on other threads).
    pub fn shared_state(&self) -> &SharedState {
        &self.rt.shared
    }

    /// Pushes an item onto a shared queue the plugin registered (by name, in the harness's VM id) and
    /// delivers `proxy_on_queue_ready`.
    pub fn enqueue(&mut self, queue: &str, item: impl Into<Vec<u8>>) -> Result<(), HarnessError> {
        self.rt.shared.enqueue(queue, item.into())?;
        self.rt.pump()
    }

    /// Items left in a shared queue, oldest first.
    pub fn queue_items(&self, queue: &str) -> Option<Vec<Vec<u8>>> {
        self.rt.shared.queue_items(queue)
    }

    fn scripted(&self) -> std::sync::MutexGuard<'_, Scripted> {
        self.scripted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Defines or replaces an upstream cluster while running (scripted transport).
    pub fn set_upstream(&mut self, name: &str, upstream: Upstream) {
        self.scripted().set_upstream(name, upstream);
    }

    /// Removes an upstream cluster (later callouts to it get `BadArgument`).
    pub fn remove_upstream(&mut self, name: &str) {
        self.scripted().remove_upstream(name);
    }

    /// Replaces what the origin answers to forwarded requests.
    pub fn set_backend(&mut self, upstream: Upstream) {
        self.rt.origin.backend = upstream;
    }

    /// Registers (or replaces) a foreign function while running.
    pub fn register_foreign_function(
        &mut self,
        name: &str,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) {
        self.rt.shared.register_foreign_function(name, Arc::new(f));
    }

    /// Sets a property (dot-separated path) for every context.
    pub fn set_property(&mut self, path: &str, value: impl Into<Vec<u8>>) {
        self.rt.shared.set_property(path, value.into());
    }

    /// Reads a property as the plugin's root context on worker 0 would see it.
    pub fn property(&self, path: &str) -> Option<Vec<u8>> {
        let segments: Vec<&str> = path.split('.').collect();
        self.rt
            .vms
            .first()
            .and_then(|w| crate::abi::property_lookup(w.store.data(), &segments))
    }

    /// The compiled plugin (to build more harnesses without compiling again).
    pub fn plugin(&self) -> &Plugin {
        &self.rt.plugin
    }
}
