//! One plugin VM: a wasmtime `Store` with the module instantiated in it, the exports the host calls, and
//! [`Vm::invoke`], the only way a callback runs: with its fuel and wall-time bounds, the context
//! bookkeeping, and the VM's death on a trap (like Envoy, a VM that trapped runs nothing again).

use std::time::Duration;

use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};

use crate::error::{chain, HarnessError};
use crate::host::{HostState, Running, ROOT_CONTEXT_ID};
use crate::plugin::{Plugin, EPOCH_TICK};
use crate::shared::VmKey;
use crate::types::{Callback, LogLevel};

/// How long one callback may run.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Limits {
    /// Fuel (about one unit per wasm instruction); `None`: unbounded.
    pub(crate) fuel: Option<u64>,
    /// Wall time, enforced by epoch interruption; `None`: unbounded.
    pub(crate) wall_time: Option<Duration>,
}

/// The exports the host calls, typed once at instantiation (a missing one is `None`: Envoy skips callbacks a
/// module does not export).
pub(crate) struct Exports {
    pub(crate) initialize: Option<TypedFunc<(), ()>>,
    pub(crate) start: Option<TypedFunc<(), ()>>,
    pub(crate) main: Option<TypedFunc<(i32, i32), i32>>,
    /// `(context_id, parent_context_id)`.
    pub(crate) context_create: Option<TypedFunc<(i32, i32), ()>>,
    /// `(root_context_id, configuration_size) -> ok`.
    pub(crate) vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) configure: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) tick: Option<TypedFunc<i32, ()>>,
    /// `(root_context_id, queue_id)`.
    pub(crate) queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    /// `(context_id, headers_or_body_size, end_of_stream) -> action`.
    pub(crate) request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub(crate) request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    /// `(context_id, trailer_count) -> action`.
    pub(crate) request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub(crate) response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub(crate) response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) http_call_response: Option<HttpCallResponseFn>,
    pub(crate) done: Option<TypedFunc<i32, i32>>,
    pub(crate) log: Option<TypedFunc<i32, ()>>,
    pub(crate) delete: Option<TypedFunc<i32, ()>>,
}

/// `proxy_on_http_call_response(context_id, token, header_count, body_size, trailer_count)`.
#[derive(Clone)]
pub(crate) struct HttpCallResponseFn(pub(crate) TypedFunc<(i32, i32, i32, i32, i32), ()>);

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
            // Some toolchains export a `main` of another shape; it is then simply not called.
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
            http_call_response: typed(i, s, "proxy_on_http_call_response")?.map(HttpCallResponseFn),
            done: typed(i, s, "proxy_on_done")?,
            log: typed(i, s, "proxy_on_log")?,
            delete: typed(i, s, "proxy_on_delete")?,
        })
    }
}

/// One VM: store, exports, and whether it is still alive.
pub(crate) struct Vm {
    /// The worker index the harness shows in logs and errors.
    pub(crate) index: usize,
    /// This VM among all VMs of the same shared state (for queue notices).
    pub(crate) key: VmKey,
    pub(crate) store: Store<HostState>,
    pub(crate) exports: Exports,
    dead: Option<String>,
    /// The next HTTP context id; ids are never reused within a VM (1 is the root context).
    next_ctx: u32,
    limits: Limits,
}

impl Vm {
    /// Instantiates the plugin in a new store holding `state`. Runs no plugin code.
    pub(crate) fn instantiate(
        plugin: &Plugin,
        state: HostState,
        limits: Limits,
    ) -> Result<Vm, HarnessError> {
        if limits.wall_time.is_some() {
            plugin.start_epoch_ticker()?;
        }
        let index = state.worker;
        let key = state.vm;
        let mut store = Store::new(&plugin.inner.engine, state);
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| HarnessError::Instantiate(chain(&e)))?;
        store.set_epoch_deadline(NO_DEADLINE);
        let instance = plugin
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
        Ok(Vm {
            index,
            key,
            store,
            exports,
            dead: None,
            next_ctx: ROOT_CONTEXT_ID + 1,
            limits,
        })
    }

    /// Starts the module and its root context: `_initialize` (reactor) or `_start` (command), `main`,
    /// `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`.
    pub(crate) fn start(&mut self) -> Result<(), HarnessError> {
        let root = ROOT_CONTEXT_ID as i32;
        let mut command = false;
        if let Some(f) = self.exports.initialize.clone() {
            self.invoke(0, Callback::Start, f, ())?;
        } else if let Some(f) = self.exports.start.clone() {
            command = true;
            match self.invoke(0, Callback::Start, f, ()) {
                // A command module that exits 0 from `_start` has started; its memory lives on.
                Err(HarnessError::Trap { message, .. }) if message.contains("proc_exit(0)") => {
                    self.dead = None;
                }
                other => other?,
            }
        }
        if let Some(f) = self.exports.main.clone().filter(|_| !command) {
            self.invoke(0, Callback::Start, f, (0, 0))?;
        }
        if let Some(f) = self.exports.context_create.clone() {
            self.invoke(ROOT_CONTEXT_ID, Callback::ContextCreate, f, (root, 0))?;
        }
        if let Some(f) = self.exports.vm_start.clone() {
            let len = self.store.data().vm_config.len() as i32;
            if self.invoke(ROOT_CONTEXT_ID, Callback::VmStart, f, (root, len))? == 0 {
                return Err(HarnessError::VmStartFailed {
                    worker: self.index,
                    logs: self.store.data().recent.complaints(),
                });
            }
        }
        if let Some(f) = self.exports.configure.clone() {
            let len = self.store.data().plugin_config.len() as i32;
            if self.invoke(ROOT_CONTEXT_ID, Callback::Configure, f, (root, len))? == 0 {
                return Err(HarnessError::ConfigureFailed {
                    worker: self.index,
                    logs: self.store.data().recent.complaints(),
                });
            }
        }
        Ok(())
    }

    /// Why the VM is dead, if it is.
    pub(crate) fn dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// Whether the VM can still run callbacks.
    pub(crate) fn is_alive(&self) -> bool {
        self.dead.is_none()
    }

    /// A fresh HTTP context id.
    pub(crate) fn new_context(&mut self) -> u32 {
        let ctx = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1).max(ROOT_CONTEXT_ID + 1);
        ctx
    }

    /// Calls one plugin callback with its budgets, context bookkeeping and error mapping.
    pub(crate) fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        ctx: u32,
        cb: Callback,
        f: TypedFunc<P, R>,
        params: P,
    ) -> Result<R, HarnessError> {
        if let Some(reason) = &self.dead {
            return Err(HarnessError::VmDead {
                worker: self.index,
                reason: reason.clone(),
            });
        }
        // Setting fuel cannot fail on a store with fuel enabled (the engine always enables it).
        let _ = self.store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        match self.limits.wall_time {
            Some(d) => self.store.set_epoch_deadline(epoch_ticks(d)),
            None => self.store.set_epoch_deadline(NO_DEADLINE),
        }
        {
            let s = self.store.data_mut();
            s.running = Some(Running { callback: cb });
            s.effective = if ctx == 0 { ROOT_CONTEXT_ID } else { ctx };
        }
        let result = f.call(&mut self.store, params);
        {
            let s = self.store.data_mut();
            s.running = None;
            s.effective = ROOT_CONTEXT_ID;
        }
        result.map_err(|e| {
            let err = self.failure(cb, &e);
            self.dead = Some(err.to_string());
            err
        })
    }

    fn failure(&self, cb: Callback, e: &wasmtime::Error) -> HarnessError {
        let worker = self.index;
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => HarnessError::OutOfFuel {
                worker,
                callback: cb,
                budget: self.limits.fuel.unwrap_or(u64::MAX),
            },
            Some(Trap::Interrupt) => HarnessError::WallTimeExceeded {
                worker,
                callback: cb,
                budget: self.limits.wall_time.unwrap_or(Duration::MAX),
            },
            _ => {
                let mut message = chain(e);
                if let Some(last) = self.store.data().recent.last_error() {
                    message = format!("{message} (plugin logged: {last})");
                }
                HarnessError::Trap {
                    worker,
                    callback: cb,
                    message,
                }
            }
        }
    }
}

/// An epoch deadline that is never reached: the ticker adds one per `EPOCH_TICK`, so this is centuries away
/// while leaving room for the addition wasmtime does.
const NO_DEADLINE: u64 = u64::MAX / 4;

/// Epoch ticks for a budget: rounded up, plus one because the current tick may be nearly over.
fn epoch_ticks(budget: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = budget.as_nanos().div_ceil(tick);
    u64::try_from(ticks)
        .unwrap_or(NO_DEADLINE)
        .saturating_add(1)
        .min(NO_DEADLINE)
}

/// The log lines a VM keeps for its own error messages, whatever the recorder keeps.
#[derive(Debug, Default)]
pub(crate) struct RecentLines {
    /// Warnings and worse, for a failed start (`VmStartFailed`, `ConfigureFailed`).
    complaints: std::collections::VecDeque<String>,
    /// The last few lines of any level, to quote the error a trap followed.
    last: std::collections::VecDeque<(LogLevel, String)>,
}

impl RecentLines {
    const COMPLAINTS: usize = 32;
    const LAST: usize = 5;

    pub(crate) fn push(&mut self, level: LogLevel, message: &str) {
        if level >= LogLevel::Warn {
            if self.complaints.len() >= Self::COMPLAINTS {
                self.complaints.pop_front();
            }
            self.complaints.push_back(message.to_string());
        }
        if self.last.len() >= Self::LAST {
            self.last.pop_front();
        }
        self.last.push_back((level, message.to_string()));
    }

    pub(crate) fn complaints(&self) -> Vec<String> {
        self.complaints.iter().cloned().collect()
    }

    /// The latest error among the last few lines.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last
            .iter()
            .rev()
            .find(|(level, _)| *level >= LogLevel::Error)
            .map(|(_, m)| m.clone())
    }
}
