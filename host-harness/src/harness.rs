//! The harness: workers (VMs), the HTTP stream state machine, the event loop and virtual time.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};

use crate::error::HarnessError;
use crate::host::{CallResponse, HostState, Step, StreamState};
use crate::http::{Outcome, Phase, Request, Response, StreamId, UpstreamRequest};
use crate::plugin::{chain, Plugin};
use crate::types::{Callback, Headers, LogLevel, MetricKind, Status};
use crate::upstream::{Callout, CalloutRequest, CalloutResult, Upstream};
use crate::world::{lock, ForeignFunction, LogEntry, Metric, SharedWorld, Violation, World};

/// Fuel (roughly, wasm instructions) a single callback may use before it is stopped as runaway.
pub const DEFAULT_FUEL_PER_CALLBACK: u64 = 2_000_000_000;

/// The virtual clock starts here unless the builder says otherwise: 2025-01-01T00:00:00Z.
pub const DEFAULT_START_UNIX_SECS: u64 = 1_735_689_600;

const ROOT_CONTEXT_ID: u32 = 1;

/// A state with no world, used only to probe which imports the linker defines.
pub(crate) fn probe_state() -> HostState {
    new_state(
        0,
        Arc::new(Mutex::new(new_world(&Settings::default()))),
        &Settings::default(),
    )
}

#[derive(Clone)]
struct Settings {
    plugin_config: Arc<Vec<u8>>,
    vm_config: Arc<Vec<u8>>,
    workers: usize,
    fuel: Option<u64>,
    start: SystemTime,
    seed: u64,
    env: Arc<Vec<(String, String)>>,
    log_level: LogLevel,
    plugin_name: String,
    root_id: String,
    vm_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            plugin_config: Arc::new(Vec::new()),
            vm_config: Arc::new(Vec::new()),
            workers: 1,
            fuel: Some(DEFAULT_FUEL_PER_CALLBACK),
            start: UNIX_EPOCH + Duration::from_secs(DEFAULT_START_UNIX_SECS),
            seed: 0x5eed,
            env: Arc::new(Vec::new()),
            log_level: LogLevel::Trace,
            plugin_name: "plugin".into(),
            root_id: String::new(),
            vm_id: String::new(),
        }
    }
}

fn new_world(s: &Settings) -> World {
    World {
        start_unix_nanos: s
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        elapsed: Duration::ZERO,
        shared_data: HashMap::new(),
        next_cas: 1,
        queues: Vec::new(),
        queue_ready: Default::default(),
        metrics: Vec::new(),
        logs: Vec::new(),
        violations: Vec::new(),
        upstreams: HashMap::new(),
        upstream_calls: HashMap::new(),
        callouts: Vec::new(),
        pending: Vec::new(),
        next_token: 1,
        foreign: HashMap::new(),
        properties: HashMap::new(),
        log_level: s.log_level,
        plugin_name: s.plugin_name.clone(),
        root_id: s.root_id.clone(),
        vm_id: s.vm_id.clone(),
    }
}

fn new_state(worker: usize, world: SharedWorld, s: &Settings) -> HostState {
    HostState {
        worker,
        world,
        memory: None,
        alloc: None,
        root_id: ROOT_CONTEXT_ID,
        running: None,
        effective: ROOT_CONTEXT_ID,
        streams: HashMap::new(),
        vm_config: s.vm_config.clone(),
        plugin_config: s.plugin_config.clone(),
        call_response: None,
        status: (0, String::new()),
        tick_period: None,
        next_tick: None,
        rng: s.seed ^ (worker as u64).wrapping_mul(0x9E37_79B9),
        env: s.env.clone(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        done_called: HashSet::new(),
        awaiting_done: HashSet::new(),
    }
}

type F2<R> = Option<TypedFunc<(i32, i32), R>>;
type F3 = Option<TypedFunc<(i32, i32, i32), i32>>;
type F5 = Option<TypedFunc<(i32, i32, i32, i32, i32), ()>>;

struct Exports {
    initialize: Option<TypedFunc<(), ()>>,
    start: Option<TypedFunc<(), ()>>,
    main: Option<TypedFunc<(i32, i32), i32>>,
    context_create: F2<()>,
    vm_start: F2<i32>,
    configure: F2<i32>,
    tick: Option<TypedFunc<i32, ()>>,
    queue_ready: F2<()>,
    request_headers: F3,
    request_body: F3,
    request_trailers: F2<i32>,
    response_headers: F3,
    response_body: F3,
    response_trailers: F2<i32>,
    http_call_response: F5,
    done: Option<TypedFunc<i32, i32>>,
    log: Option<TypedFunc<i32, ()>>,
    delete: Option<TypedFunc<i32, ()>>,
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, HarnessError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f.typed::<P, R>(&*store).map(Some).map_err(|e| {
            HarnessError::Instantiate(format!(
                "export `{name}` has an unexpected signature: {}",
                chain(&e)
            ))
        }),
    }
}

impl Exports {
    fn load(i: &Instance, s: &mut Store<HostState>) -> Result<Exports, HarnessError> {
        Ok(Exports {
            initialize: typed(i, s, "_initialize")?,
            start: typed(i, s, "_start")?,
            main: typed(i, s, "main").ok().flatten(),
            context_create: typed(i, s, "proxy_on_context_create")?,
            vm_start: typed(i, s, "proxy_on_vm_start")?,
            configure: typed(i, s, "proxy_on_configure")?,
            tick: typed(i, s, "proxy_on_tick")?,
            queue_ready: typed(i, s, "proxy_on_queue_ready")?,
            request_headers: typed(i, s, "proxy_on_request_headers")?,
            request_body: typed(i, s, "proxy_on_request_body")?,
            request_trailers: typed(i, s, "proxy_on_request_trailers")?,
            response_headers: typed(i, s, "proxy_on_response_headers")?,
            response_body: typed(i, s, "proxy_on_response_body")?,
            response_trailers: typed(i, s, "proxy_on_response_trailers")?,
            http_call_response: typed(i, s, "proxy_on_http_call_response")?,
            done: typed(i, s, "proxy_on_done")?,
            log: typed(i, s, "proxy_on_log")?,
            delete: typed(i, s, "proxy_on_delete")?,
        })
    }
}

struct Worker {
    store: Store<HostState>,
    exports: Exports,
    dead: Option<String>,
    next_ctx: u32,
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
    Compiled(Plugin),
}

/// Builds a [`Harness`]: the module, its configuration, the world around it.
pub struct HarnessBuilder {
    source: Option<Source>,
    settings: Settings,
    upstreams: HashMap<String, Upstream>,
    backend: Upstream,
    properties: HashMap<String, Vec<u8>>,
    foreign: HashMap<String, ForeignFunction>,
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
        self.settings.plugin_config = Arc::new(config.into());
        self
    }

    /// The VM configuration (`proxy_on_vm_start`, buffer `VmConfiguration`).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_config = Arc::new(config.into());
        self
    }

    /// How many VMs (proxy worker threads) to run; default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.settings.workers = n.max(1);
        self
    }

    /// Defines an upstream cluster the plugin can call with `proxy_http_call`.
    pub fn upstream(mut self, name: &str, upstream: Upstream) -> Self {
        self.upstreams.insert(name.to_string(), upstream);
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
        self.settings.fuel = fuel;
        self
    }

    /// The wall-clock time at which the virtual clock starts.
    pub fn start_time(mut self, t: SystemTime) -> Self {
        self.settings.start = t;
        self
    }

    /// Seed for WASI `random_get`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// Adds a WASI environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        Arc::make_mut(&mut self.settings.env).push((key.to_string(), value.to_string()));
        self
    }

    /// The host log level (`proxy_get_log_level`); lower-level lines are dropped. Default `Trace`.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// The `plugin_name` property; default `plugin`.
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.settings.plugin_name = name.to_string();
        self
    }

    /// The `plugin_root_id` property; default empty.
    pub fn root_id(mut self, id: &str) -> Self {
        self.settings.root_id = id.to_string();
        self
    }

    /// The `plugin_vm_id` property and shared-queue VM id; default empty.
    pub fn vm_id(mut self, id: &str) -> Self {
        self.settings.vm_id = id.to_string();
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
        self.foreign.insert(name.to_string(), Arc::new(f));
        self
    }

    /// Removes a foreign function, built-in ones (`verify_signature`) included, as a host
    /// without it would behave.
    pub fn without_foreign_function(mut self, name: &str) -> Self {
        self.foreign.remove(name);
        self
    }

    /// Compiles (unless given a [`Plugin`]), starts every worker and configures the plugin.
    /// A configuration the plugin rejects is an `Err`, never a panic.
    pub fn build(self) -> Result<Harness, HarnessError> {
        let plugin = match self.source {
            None => return Err(HarnessError::NoModule),
            Some(Source::File(p)) => Plugin::from_file(p)?,
            Some(Source::Bytes(b)) => Plugin::from_bytes(&b)?,
            Some(Source::Compiled(p)) => p,
        };
        let mut world = new_world(&self.settings);
        world.upstreams = self.upstreams;
        world.properties = self.properties;
        world.foreign = self.foreign;
        let world = Arc::new(Mutex::new(world));
        let mut h = Harness {
            plugin,
            world,
            workers: Vec::new(),
            fuel: self.settings.fuel,
            live: HashMap::new(),
            outcomes: HashMap::new(),
            next_stream: 1,
            backend: self.backend,
            backend_calls: 0,
        };
        for i in 0..self.settings.workers {
            h.start_worker(i, &self.settings)?;
        }
        Ok(h)
    }
}

/// A proxy-wasm host for tests: N VMs of one module, a virtual clock, scripted upstreams, captured logs and
/// metrics. Everything is per harness; many harnesses can run in parallel in one process.
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
    plugin: Plugin,
    world: SharedWorld,
    workers: Vec<Worker>,
    fuel: Option<u64>,
    live: HashMap<StreamId, (usize, u32)>,
    outcomes: HashMap<StreamId, Outcome>,
    next_stream: u64,
    backend: Upstream,
    backend_calls: usize,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("workers", &self.workers.len())
            .field("live_streams", &self.live.len())
            .finish()
    }
}

impl Harness {
    /// Starts building a harness.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            source: None,
            settings: Settings::default(),
            upstreams: HashMap::new(),
            backend: Upstream::respond(Response::new(200)),
            properties: HashMap::new(),
            // Envoy registers verify_signature for every plugin; so does the harness.
            foreign: HashMap::from([(
                crate::envoy_crypto::VERIFY_SIGNATURE.to_string(),
                Arc::new(crate::envoy_crypto::verify_signature) as ForeignFunction,
            )]),
        }
    }

    fn start_worker(&mut self, index: usize, settings: &Settings) -> Result<(), HarnessError> {
        let engine = &self.plugin.inner.engine;
        let mut store = Store::new(engine, new_state(index, self.world.clone(), settings));
        store
            .set_fuel(self.fuel.unwrap_or(u64::MAX))
            .map_err(|e| HarnessError::Instantiate(chain(&e)))?;
        let instance = self
            .plugin
            .inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| HarnessError::Instantiate(chain(&e)))?;
        let memory = instance.get_memory(&mut store, "memory");
        if memory.is_none() {
            return Err(HarnessError::Instantiate(
                "module exports no memory named `memory`".into(),
            ));
        }
        let alloc = match typed::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")? {
            Some(f) => Some(f),
            None => typed::<i32, i32>(&instance, &mut store, "malloc")?,
        };
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let exports = Exports::load(&instance, &mut store)?;
        self.workers.push(Worker {
            store,
            exports,
            dead: None,
            next_ctx: ROOT_CONTEXT_ID + 1,
        });
        let w = self.workers.len() - 1;
        let root = ROOT_CONTEXT_ID as i32;

        // Start the module: reactor `_initialize`, or command `_start`; then `main(0, 0)` if exported.
        let mut command = false;
        if let Some(f) = self.workers[w].exports.initialize.clone() {
            self.invoke(w, 0, Callback::Start, f, ())?;
        } else if let Some(f) = self.workers[w].exports.start.clone() {
            command = true;
            match self.invoke(w, 0, Callback::Start, f, ()) {
                Err(HarnessError::Trap { message, .. }) if message.contains("proc_exit(0)") => {
                    self.workers[w].dead = None;
                }
                other => other?,
            }
        }
        if let Some(f) = self.workers[w].exports.main.clone().filter(|_| !command) {
            self.invoke(w, 0, Callback::Start, f, (0, 0))?;
        }
        if let Some(f) = self.workers[w].exports.context_create.clone() {
            self.invoke(w, ROOT_CONTEXT_ID, Callback::ContextCreate, f, (root, 0))?;
        }
        if let Some(f) = self.workers[w].exports.vm_start.clone() {
            let len = settings.vm_config.len() as i32;
            if self.invoke(w, ROOT_CONTEXT_ID, Callback::VmStart, f, (root, len))? == 0 {
                return Err(HarnessError::VmStartFailed {
                    worker: index,
                    logs: self.complaints(index),
                });
            }
        }
        if let Some(f) = self.workers[w].exports.configure.clone() {
            let len = settings.plugin_config.len() as i32;
            if self.invoke(w, ROOT_CONTEXT_ID, Callback::Configure, f, (root, len))? == 0 {
                return Err(HarnessError::ConfigureFailed {
                    worker: index,
                    logs: self.complaints(index),
                });
            }
        }
        self.pump()
    }

    fn complaints(&self, worker: usize) -> Vec<String> {
        lock(&self.world)
            .logs
            .iter()
            .filter(|l| l.worker == worker && l.level >= LogLevel::Warn)
            .map(|l| l.message.clone())
            .collect()
    }

    /// Calls one plugin callback with fuel, context bookkeeping and error mapping.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        w: usize,
        ctx: u32,
        cb: Callback,
        f: TypedFunc<P, R>,
        params: P,
    ) -> Result<R, HarnessError> {
        let fuel = self.fuel;
        let worker = &mut self.workers[w];
        if let Some(reason) = &worker.dead {
            return Err(HarnessError::VmDead {
                worker: w,
                reason: reason.clone(),
            });
        }
        let _ = worker.store.set_fuel(fuel.unwrap_or(u64::MAX));
        {
            let s = worker.store.data_mut();
            s.running = Some((ctx, cb));
            s.effective = if ctx == 0 { ROOT_CONTEXT_ID } else { ctx };
        }
        let result = f.call(&mut worker.store, params);
        {
            let s = worker.store.data_mut();
            s.running = None;
            s.effective = ROOT_CONTEXT_ID;
        }
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                let err = if matches!(e.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)) {
                    HarnessError::OutOfFuel {
                        worker: w,
                        callback: cb,
                        budget: fuel.unwrap_or(u64::MAX),
                    }
                } else {
                    let mut message = chain(&e);
                    let last = lock(&self.world)
                        .logs
                        .iter()
                        .rev()
                        .take(5)
                        .find(|l| l.worker == w && l.level >= LogLevel::Error)
                        .map(|l| l.message.clone());
                    if let Some(last) = last {
                        message = format!("{message} (plugin logged: {last})");
                    }
                    HarnessError::Trap {
                        worker: w,
                        callback: cb,
                        message,
                    }
                };
                self.workers[w].dead = Some(err.to_string());
                Err(err)
            }
        }
    }

    fn worker_index(&self, worker: usize) -> Result<usize, HarnessError> {
        if worker >= self.workers.len() {
            return Err(HarnessError::NoSuchWorker {
                worker,
                workers: self.workers.len(),
            });
        }
        if let Some(reason) = &self.workers[worker].dead {
            return Err(HarnessError::VmDead {
                worker,
                reason: reason.clone(),
            });
        }
        Ok(worker)
    }

    /// Sends a request through worker 0 and runs it as far as it goes now (including callouts that answer
    /// without delay). A `Paused` outcome means the plugin holds it; see [`Harness::advance`].
    pub fn request(&mut self, request: Request) -> Result<Outcome, HarnessError> {
        self.request_on(0, request)
    }

    /// Sends a request through the given worker (VM).
    pub fn request_on(&mut self, worker: usize, request: Request) -> Result<Outcome, HarnessError> {
        let w = self.worker_index(worker)?;
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        let ctx = self.workers[w].next_ctx;
        self.workers[w].next_ctx += 1;
        let stream = StreamState {
            id,
            request_headers: request.header_map(),
            request_body: request.body.clone(),
            request_trailers: request.trailers.clone(),
            response_headers: Headers::new(),
            response_body: Vec::new(),
            response_trailers: Headers::new(),
            step: Step::RequestHeaders,
            seen: HashSet::new(),
            held: None,
            continue_request: false,
            continue_response: false,
            reset: false,
            local: None,
            local_started: false,
            local_details: String::new(),
            forwarded: None,
            properties: HashMap::new(),
            finished: false,
            origin_response: Response::new(200),
            request,
        };
        self.workers[w].store.data_mut().streams.insert(ctx, stream);
        self.live.insert(id, (w, ctx));
        if let Some(f) = self.workers[w].exports.context_create.clone() {
            self.invoke(
                w,
                ctx,
                Callback::ContextCreate,
                f,
                (ctx as i32, ROOT_CONTEXT_ID as i32),
            )?;
        }
        self.drive(w, ctx)?;
        self.pump()?;
        self.outcomes
            .get(&id)
            .cloned()
            .ok_or(HarnessError::NoSuchStream(id))
    }

    /// The latest outcome of a stream (it changes when a paused stream goes on).
    pub fn outcome(&self, stream: StreamId) -> Option<&Outcome> {
        self.outcomes.get(&stream)
    }

    /// Resumes a paused stream from the host side, as if the plugin had called `proxy_continue_stream`.
    pub fn resume(&mut self, stream: StreamId) -> Result<Outcome, HarnessError> {
        let (w, ctx) = *self
            .live
            .get(&stream)
            .ok_or(HarnessError::NoSuchStream(stream))?;
        if let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) {
            match st.held {
                Some(Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers) => {
                    st.continue_request = true
                }
                Some(_) => st.continue_response = true,
                None => {}
            }
        }
        self.drive(w, ctx)?;
        self.pump()?;
        self.outcomes
            .get(&stream)
            .cloned()
            .ok_or(HarnessError::NoSuchStream(stream))
    }

    /// Resets a stream from the client side (downstream disconnect); its pending callouts are cancelled.
    pub fn reset_stream(&mut self, stream: StreamId) -> Result<Outcome, HarnessError> {
        let (w, ctx) = *self
            .live
            .get(&stream)
            .ok_or(HarnessError::NoSuchStream(stream))?;
        if let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) {
            st.reset = true;
        }
        self.drive(w, ctx)?;
        self.pump()?;
        self.outcomes
            .get(&stream)
            .cloned()
            .ok_or(HarnessError::NoSuchStream(stream))
    }

    fn origin_response(&mut self, fixed: Option<Response>, fwd: &UpstreamRequest) -> Response {
        if let Some(r) = fixed {
            return r;
        }
        let req = CalloutRequest {
            upstream: "origin".into(),
            headers: fwd.headers.clone(),
            body: fwd.body.clone(),
            trailers: fwd.trailers.clone(),
            timeout: Duration::ZERO,
        };
        let elapsed = lock(&self.world).elapsed;
        let resolved = self.backend.resolve(&req, self.backend_calls, elapsed);
        self.backend_calls += 1;
        match resolved.result {
            Some(Ok(r)) => r,
            Some(Err(())) => Response::new(503)
                .header("content-type", "text/plain")
                .body("upstream connect error or disconnect/reset before headers. reset reason: connection termination"),
            None => Response::new(504)
                .header("content-type", "text/plain")
                .body("upstream request timeout"),
        }
    }

    /// Runs a stream's state machine until it is held, finished, or gone.
    fn drive(&mut self, w: usize, ctx: u32) -> Result<(), HarnessError> {
        loop {
            let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) else {
                return Ok(());
            };
            let id = st.id;
            if st.reset {
                st.step = Step::Finish;
                return self.finish(w, ctx, Outcome::Reset { stream: id });
            }
            if st.local.is_some() && !st.local_started {
                st.local_started = true;
                st.held = None;
                st.continue_response = false;
                if let Some(l) = &st.local {
                    let mut h = Headers(vec![(":status".into(), l.status.to_string())]);
                    for (k, v) in l.headers.iter() {
                        h.add(k, v);
                    }
                    st.response_headers = h;
                    st.response_body = l.body.clone();
                    st.response_trailers = Headers::new();
                    st.local_details = l.details.clone();
                }
                if st.seen.contains(&Callback::ResponseHeaders) {
                    // Sent from a response callback: the reply replaces the response; the plugin's response
                    // callbacks do not run again for it.
                    st.step = Step::Finish;
                } else {
                    // Sent from the request path: like Envoy, the reply goes through the response callbacks.
                    st.step = Step::ResponseHeaders;
                }
                continue;
            }
            if let Some(phase) = st.held {
                let request_side = matches!(
                    phase,
                    Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
                );
                let go = if request_side {
                    std::mem::take(&mut st.continue_request)
                } else {
                    std::mem::take(&mut st.continue_response)
                };
                if !go {
                    self.outcomes
                        .insert(id, Outcome::Paused { stream: id, phase });
                    return Ok(());
                }
                st.held = None;
            }
            st.continue_request = false;
            st.continue_response = false;
            let c = ctx as i32;
            match st.step {
                Step::RequestHeaders => {
                    let n = st.request_headers.len() as i32;
                    let eos = st.request.body.is_empty() && st.request.trailers.is_empty();
                    st.step = if !st.request.body.is_empty() {
                        Step::RequestBody
                    } else if !st.request.trailers.is_empty() {
                        Step::RequestTrailers
                    } else {
                        Step::Forward
                    };
                    st.seen.insert(Callback::RequestHeaders);
                    if let Some(f) = self.workers[w].exports.request_headers.clone() {
                        let a = self.invoke(
                            w,
                            ctx,
                            Callback::RequestHeaders,
                            f,
                            (c, n, i32::from(eos)),
                        )?;
                        self.after(w, ctx, a, Phase::RequestHeaders);
                    }
                }
                Step::RequestBody => {
                    let n = st.request_body.len() as i32;
                    let eos = st.request.trailers.is_empty();
                    st.step = if eos {
                        Step::Forward
                    } else {
                        Step::RequestTrailers
                    };
                    st.seen.insert(Callback::RequestBody);
                    if let Some(f) = self.workers[w].exports.request_body.clone() {
                        let a =
                            self.invoke(w, ctx, Callback::RequestBody, f, (c, n, i32::from(eos)))?;
                        self.after(w, ctx, a, Phase::RequestBody);
                    }
                }
                Step::RequestTrailers => {
                    let n = st.request_trailers.len() as i32;
                    st.step = Step::Forward;
                    st.seen.insert(Callback::RequestTrailers);
                    if let Some(f) = self.workers[w].exports.request_trailers.clone() {
                        let a = self.invoke(w, ctx, Callback::RequestTrailers, f, (c, n))?;
                        self.after(w, ctx, a, Phase::RequestTrailers);
                    }
                }
                Step::Forward => {
                    let fwd = UpstreamRequest {
                        headers: st.request_headers.clone(),
                        body: st.request_body.clone(),
                        trailers: st.request_trailers.clone(),
                    };
                    st.forwarded = Some(fwd.clone());
                    let fixed = st.request.upstream_response.clone();
                    let resp = self.origin_response(fixed, &fwd);
                    let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) else {
                        return Ok(());
                    };
                    st.response_headers = resp.header_map();
                    st.response_body = resp.body.clone();
                    st.response_trailers = resp.trailers.clone();
                    st.origin_response = resp;
                    st.step = Step::ResponseHeaders;
                }
                Step::ResponseHeaders => {
                    let n = st.response_headers.len() as i32;
                    let eos = st.response_body.is_empty() && st.response_trailers.is_empty();
                    st.step = if !st.response_body.is_empty() {
                        Step::ResponseBody
                    } else if !st.response_trailers.is_empty() {
                        Step::ResponseTrailers
                    } else {
                        Step::Finish
                    };
                    st.seen.insert(Callback::ResponseHeaders);
                    if let Some(f) = self.workers[w].exports.response_headers.clone() {
                        let a = self.invoke(
                            w,
                            ctx,
                            Callback::ResponseHeaders,
                            f,
                            (c, n, i32::from(eos)),
                        )?;
                        self.after(w, ctx, a, Phase::ResponseHeaders);
                    }
                }
                Step::ResponseBody => {
                    let n = st.response_body.len() as i32;
                    let eos = st.response_trailers.is_empty();
                    st.step = if eos {
                        Step::Finish
                    } else {
                        Step::ResponseTrailers
                    };
                    st.seen.insert(Callback::ResponseBody);
                    if let Some(f) = self.workers[w].exports.response_body.clone() {
                        let a =
                            self.invoke(w, ctx, Callback::ResponseBody, f, (c, n, i32::from(eos)))?;
                        self.after(w, ctx, a, Phase::ResponseBody);
                    }
                }
                Step::ResponseTrailers => {
                    let n = st.response_trailers.len() as i32;
                    st.step = Step::Finish;
                    st.seen.insert(Callback::ResponseTrailers);
                    if let Some(f) = self.workers[w].exports.response_trailers.clone() {
                        let a = self.invoke(w, ctx, Callback::ResponseTrailers, f, (c, n))?;
                        self.after(w, ctx, a, Phase::ResponseTrailers);
                    }
                }
                Step::Finish => {
                    let outcome = if st.local_started {
                        let resp = Response::from_header_map(
                            &st.response_headers,
                            st.response_body.clone(),
                            Headers::new(),
                        );
                        Outcome::LocalResponse {
                            stream: id,
                            status: resp.status,
                            headers: resp.headers,
                            body: resp.body,
                            details: st.local_details.clone(),
                            forwarded: st.forwarded.is_some(),
                        }
                    } else {
                        let fwd = st.forwarded.clone().unwrap_or(UpstreamRequest {
                            headers: Headers::new(),
                            body: Vec::new(),
                            trailers: Headers::new(),
                        });
                        Outcome::Forwarded {
                            stream: id,
                            upstream_headers: fwd.headers,
                            upstream_body: fwd.body,
                            upstream_trailers: fwd.trailers,
                            response: Response::from_header_map(
                                &st.response_headers,
                                st.response_body.clone(),
                                st.response_trailers.clone(),
                            ),
                        }
                    };
                    return self.finish(w, ctx, outcome);
                }
            }
        }
    }

    /// Applies a callback's returned action. Like Envoy, a Pause (anything but Continue, 0) does not stop the
    /// plugin from receiving the rest of the same direction (body, trailers): only the action returned by the
    /// last callback of a direction decides whether the stream is held there.
    fn after(&mut self, w: usize, ctx: u32, action: i32, phase: Phase) {
        if let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) {
            let last_of_direction = matches!(st.step, Step::Forward | Step::Finish);
            let local_pending = st.local.is_some() && !st.local_started;
            if action != 0 && last_of_direction && !local_pending && !st.reset {
                st.held = Some(phase);
            }
        }
    }

    /// Ends a stream: `proxy_on_done`, `proxy_on_log`, then `proxy_on_delete` (deferred until `proxy_done`
    /// if `proxy_on_done` returned false).
    fn finish(&mut self, w: usize, ctx: u32, outcome: Outcome) -> Result<(), HarnessError> {
        let id = outcome.stream();
        if let Some(st) = self.workers[w].store.data_mut().streams.get_mut(&ctx) {
            st.finished = true;
        }
        self.outcomes.insert(id, outcome);
        self.live.remove(&id);
        let c = ctx as i32;
        let done = match self.workers[w].exports.done.clone() {
            Some(f) => self.invoke(w, ctx, Callback::Done, f, c)? != 0,
            None => true,
        };
        if let Some(f) = self.workers[w].exports.log.clone() {
            self.invoke(w, ctx, Callback::Log, f, c)?;
        }
        if done {
            if let Some(f) = self.workers[w].exports.delete.clone() {
                self.invoke(w, ctx, Callback::Delete, f, c)?;
            }
            self.workers[w].store.data_mut().streams.remove(&ctx);
        } else {
            let s = self.workers[w].store.data_mut();
            s.awaiting_done.insert(ctx);
            if let Some(st) = s.streams.get_mut(&ctx) {
                st.held = None;
            }
        }
        Ok(())
    }

    /// Runs everything that is due now: queue notifications, callout responses, continued streams.
    fn pump(&mut self) -> Result<(), HarnessError> {
        loop {
            let ready = lock(&self.world).queue_ready.pop_front();
            if let Some((w, ctx, token)) = ready {
                if w < self.workers.len() && self.workers[w].dead.is_none() {
                    if let Some(f) = self.workers[w].exports.queue_ready.clone() {
                        self.invoke(w, ctx, Callback::QueueReady, f, (ctx as i32, token as i32))?;
                    }
                }
                continue;
            }
            let due = {
                let world = lock(&self.world);
                world
                    .pending
                    .iter()
                    .map(|&i| (i, world.callouts[i].due_at))
                    .filter(|(_, due)| *due <= world.elapsed)
                    .min_by_key(|(i, due)| (*due, *i))
                    .map(|(i, _)| i)
            };
            if let Some(i) = due {
                self.deliver(i)?;
                continue;
            }
            let mut todo = Vec::new();
            for (w, worker) in self.workers.iter().enumerate() {
                if worker.dead.is_some() {
                    continue;
                }
                let s = worker.store.data();
                for (ctx, st) in &s.streams {
                    if s.awaiting_done.contains(ctx) {
                        if s.done_called.contains(ctx) {
                            todo.push((w, *ctx, true));
                        }
                        continue;
                    }
                    let wants = st.reset
                        || (st.local.is_some() && !st.local_started)
                        || match st.held {
                            Some(
                                Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers,
                            ) => st.continue_request,
                            Some(_) => st.continue_response,
                            None => false,
                        };
                    if wants {
                        todo.push((w, *ctx, false));
                    }
                }
            }
            if todo.is_empty() {
                return Ok(());
            }
            todo.sort();
            for (w, ctx, delete) in todo {
                if delete {
                    let s = self.workers[w].store.data_mut();
                    s.awaiting_done.remove(&ctx);
                    s.done_called.remove(&ctx);
                    if let Some(f) = self.workers[w].exports.delete.clone() {
                        self.invoke(w, ctx, Callback::Delete, f, ctx as i32)?;
                    }
                    self.workers[w].store.data_mut().streams.remove(&ctx);
                } else {
                    self.drive(w, ctx)?;
                }
            }
        }
    }

    /// Delivers callout `i` through `proxy_on_http_call_response`.
    fn deliver(&mut self, i: usize) -> Result<(), HarnessError> {
        let callout = {
            let mut world = lock(&self.world);
            world.pending.retain(|&p| p != i);
            world.callouts[i].delivered = true;
            world.callouts[i].clone()
        };
        let w = callout.worker;
        if w >= self.workers.len() || self.workers[w].dead.is_some() {
            return Ok(());
        }
        let ctx = callout.context_id;
        {
            let s = self.workers[w].store.data();
            let alive = ctx == s.root_id
                || (s.streams.contains_key(&ctx) && !s.awaiting_done.contains(&ctx));
            if !alive {
                let mut world = lock(&self.world);
                world.callouts[i].delivered = false;
                world.callouts[i].cancelled = true;
                return Ok(());
            }
        }
        let (response, status) = match &callout.result {
            CalloutResult::Response(r) => (
                CallResponse {
                    headers: r.header_map(),
                    body: r.body.clone(),
                    trailers: r.trailers.clone(),
                },
                (0, String::new()),
            ),
            CalloutResult::Reset => (
                CallResponse {
                    headers: Headers::new(),
                    body: Vec::new(),
                    trailers: Headers::new(),
                },
                (Status::BrokenConnection.code(), "reset".to_string()),
            ),
            CalloutResult::TimedOut => {
                let body = b"upstream request timeout".to_vec();
                (
                    CallResponse {
                        headers: Headers::from([
                            (":status", "504"),
                            ("content-length", &body.len().to_string()),
                            ("content-type", "text/plain"),
                        ]),
                        body,
                        trailers: Headers::new(),
                    },
                    (0, String::new()),
                )
            }
        };
        let counts = (
            response.headers.len() as i32,
            response.body.len() as i32,
            response.trailers.len() as i32,
        );
        {
            let s = self.workers[w].store.data_mut();
            s.call_response = Some(response);
            s.status = status;
        }
        let result = match self.workers[w].exports.http_call_response.clone() {
            Some(f) => self
                .invoke(
                    w,
                    ctx,
                    Callback::HttpCallResponse,
                    f,
                    (
                        ctx as i32,
                        callout.token as i32,
                        counts.0,
                        counts.1,
                        counts.2,
                    ),
                )
                .map(|_| ()),
            None => Ok(()),
        };
        let s = self.workers[w].store.data_mut();
        s.call_response = None;
        s.status = (0, String::new());
        result
    }

    fn next_event(&self) -> Option<Duration> {
        let world = lock(&self.world);
        let callout = world
            .pending
            .iter()
            .map(|&i| world.callouts[i].due_at)
            .min();
        let tick = self
            .workers
            .iter()
            .filter(|w| w.dead.is_none())
            .filter_map(|w| w.store.data().next_tick)
            .min();
        match (callout, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves virtual time forward by `d`, firing due ticks (`proxy_on_tick`) and delivering delayed callout
    /// responses and timeouts in time order.
    pub fn advance(&mut self, d: Duration) -> Result<(), HarnessError> {
        let target = lock(&self.world).elapsed + d;
        while let Some(next) = self.next_event() {
            if next > target {
                break;
            }
            {
                let mut world = lock(&self.world);
                if next > world.elapsed {
                    world.elapsed = next;
                }
            }
            for w in 0..self.workers.len() {
                if self.workers[w].dead.is_some() {
                    continue;
                }
                let s = self.workers[w].store.data_mut();
                match (s.next_tick, s.tick_period) {
                    (Some(t), Some(p)) if t <= next => {
                        s.next_tick = Some(t + p);
                        if let Some(f) = self.workers[w].exports.tick.clone() {
                            self.invoke(
                                w,
                                ROOT_CONTEXT_ID,
                                Callback::Tick,
                                f,
                                ROOT_CONTEXT_ID as i32,
                            )?;
                        }
                    }
                    _ => {}
                }
            }
            self.pump()?;
        }
        lock(&self.world).elapsed = target;
        self.pump()
    }

    /// Advances virtual time event by event until `stream` is no longer paused or `limit` has passed;
    /// returns its outcome then.
    pub fn advance_until_done(
        &mut self,
        stream: StreamId,
        limit: Duration,
    ) -> Result<Outcome, HarnessError> {
        let deadline = lock(&self.world).elapsed + limit;
        loop {
            let out = self
                .outcomes
                .get(&stream)
                .cloned()
                .ok_or(HarnessError::NoSuchStream(stream))?;
            if !out.is_paused() {
                return Ok(out);
            }
            let now = lock(&self.world).elapsed;
            match self.next_event() {
                Some(next) if next <= deadline => self.advance(next.saturating_sub(now))?,
                _ => {
                    self.advance(deadline.saturating_sub(now))?;
                    return self
                        .outcomes
                        .get(&stream)
                        .cloned()
                        .ok_or(HarnessError::NoSuchStream(stream));
                }
            }
        }
    }

    /// Forgets finished streams' outcomes, delivered callouts and captured logs (for long runs such as
    /// benchmarks; pending callouts and paused streams are kept).
    pub fn clear_history(&mut self) {
        let live = &self.live;
        self.outcomes.retain(|id, _| live.contains_key(id));
        let mut world = lock(&self.world);
        world.logs.clear();
        let pending: Vec<Callout> = world
            .pending
            .iter()
            .map(|&i| world.callouts[i].clone())
            .collect();
        world.pending = (0..pending.len()).collect();
        world.callouts = pending;
    }

    /// Virtual time elapsed since the harness started.
    pub fn elapsed(&self) -> Duration {
        lock(&self.world).elapsed
    }

    /// The current virtual wall-clock time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(lock(&self.world).now_unix_nanos())
    }

    /// Number of workers (VMs).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Whether a worker's VM is still alive (it dies on a trap or runaway callback).
    pub fn is_alive(&self, worker: usize) -> bool {
        self.workers.get(worker).is_some_and(|w| w.dead.is_none())
    }

    /// The tick period a worker's root context asked for, if any.
    pub fn tick_period(&self, worker: usize) -> Option<Duration> {
        self.workers
            .get(worker)
            .and_then(|w| w.store.data().tick_period)
    }

    /// Streams the plugin still holds.
    pub fn paused_streams(&self) -> Vec<StreamId> {
        let mut v: Vec<StreamId> = self.live.keys().copied().collect();
        v.sort();
        v
    }

    /// Every captured log line so far (plugin `proxy_log` and WASI stdout/stderr), in order.
    pub fn logs(&self) -> Vec<LogEntry> {
        lock(&self.world).logs.clone()
    }

    /// Captured log messages only.
    pub fn log_messages(&self) -> Vec<String> {
        lock(&self.world)
            .logs
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }

    /// Removes and returns the captured log lines.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut lock(&self.world).logs)
    }

    /// Whether any captured log message contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        lock(&self.world)
            .logs
            .iter()
            .any(|l| l.message.contains(needle))
    }

    /// The value of a counter or gauge by name.
    pub fn metric(&self, name: &str) -> Option<i64> {
        lock(&self.world)
            .metrics
            .iter()
            .find(|m| m.name == name && m.kind != MetricKind::Histogram)
            .map(|m| m.value)
    }

    /// The values recorded in a histogram by name.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        lock(&self.world)
            .metrics
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Histogram)
            .map(|m| m.samples.clone())
    }

    /// All metrics the plugin defined.
    pub fn metrics(&self) -> Vec<Metric> {
        lock(&self.world).metrics.clone()
    }

    /// Every HTTP callout dispatched so far (delivered or not).
    pub fn callouts(&self) -> Vec<Callout> {
        lock(&self.world).callouts.clone()
    }

    /// Callouts not yet answered.
    pub fn pending_callouts(&self) -> Vec<Callout> {
        let world = lock(&self.world);
        world
            .pending
            .iter()
            .map(|&i| world.callouts[i].clone())
            .collect()
    }

    /// What the plugin did that a proxy would refuse or ignore (see [`Violation`]).
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.world).violations.clone()
    }

    /// A shared-data value and its CAS token.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.world).shared_data.get(key).cloned()
    }

    /// Sets a shared-data value from the test (a new CAS token is assigned).
    pub fn set_shared_data(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        let mut w = lock(&self.world);
        let cas = w.next_cas();
        w.shared_data.insert(key.to_string(), (value.into(), cas));
    }

    /// Pushes an item onto a shared queue the plugin registered (by name, in the harness's VM id) and
    /// delivers `proxy_on_queue_ready`.
    pub fn enqueue(&mut self, queue: &str, item: impl Into<Vec<u8>>) -> Result<(), HarnessError> {
        {
            let mut w = lock(&self.world);
            let vm_id = w.vm_id.clone();
            let Some(i) = w
                .queues
                .iter()
                .position(|q| q.vm_id == vm_id && q.name == queue)
            else {
                return Err(HarnessError::Invalid(format!(
                    "no shared queue named `{queue}` is registered"
                )));
            };
            w.queues[i].items.push_back(item.into());
            let (worker, ctx) = w.queues[i].owner;
            w.queue_ready.push_back((worker, ctx, i as u32 + 1));
        }
        self.pump()
    }

    /// Items left in a shared queue, oldest first.
    pub fn queue_items(&self, queue: &str) -> Option<Vec<Vec<u8>>> {
        let w = lock(&self.world);
        w.queues
            .iter()
            .find(|q| q.vm_id == w.vm_id && q.name == queue)
            .map(|q| q.items.iter().cloned().collect())
    }

    /// Defines or replaces an upstream cluster while running.
    pub fn set_upstream(&mut self, name: &str, upstream: Upstream) {
        lock(&self.world)
            .upstreams
            .insert(name.to_string(), upstream);
    }

    /// Removes an upstream cluster (later callouts to it get `BadArgument`).
    pub fn remove_upstream(&mut self, name: &str) {
        lock(&self.world).upstreams.remove(name);
    }

    /// Replaces what the origin answers to forwarded requests.
    pub fn set_backend(&mut self, upstream: Upstream) {
        self.backend = upstream;
    }

    /// Registers (or replaces) a foreign function while running.
    pub fn register_foreign_function(
        &mut self,
        name: &str,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) {
        lock(&self.world)
            .foreign
            .insert(name.to_string(), Arc::new(f));
    }

    /// Sets a property (dot-separated path) for every context.
    pub fn set_property(&mut self, path: &str, value: impl Into<Vec<u8>>) {
        lock(&self.world)
            .properties
            .insert(path.to_string(), value.into());
    }

    /// Reads a property as the plugin's root context on worker 0 would see it.
    pub fn property(&self, path: &str) -> Option<Vec<u8>> {
        let segments: Vec<&str> = path.split('.').collect();
        self.workers
            .first()
            .and_then(|w| crate::abi::property_lookup(w.store.data(), &segments))
    }

    /// The compiled plugin (to build more harnesses without compiling again).
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}
