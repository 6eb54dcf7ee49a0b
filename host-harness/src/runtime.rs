//! The runtime of one host thread: its VMs and what they share (ABI state, the callout table, the recorder,
//! the clock), the book of streams, and "run everything that is due now". It knows nothing of how time
//! moves; the scheduler (`crate::scheduler`) decides that.

use std::time::Duration;

use crate::clock::TimeSource;
use crate::error::HarnessError;
use crate::host::{lock_callouts, CallResponse, SharedCallouts, ROOT_CONTEXT_ID};
use crate::http::{Request, StreamId};
use crate::plugin::Plugin;
use crate::recorder::{CalloutEnd, SharedRecorder};
use crate::shared::SharedState;
use crate::stream::{Drive, Origin, StreamBook, StreamMode, StreamRef};
use crate::transport::Due;
use crate::types::{Callback, Headers, Status};
use crate::upstream::CalloutResult;
use crate::vm::Vm;

pub(crate) struct Runtime {
    pub(crate) plugin: Plugin,
    /// VMs by worker index; never removed, so an index once valid stays valid.
    pub(crate) vms: Vec<Vm>,
    pub(crate) shared: SharedState,
    pub(crate) callouts: SharedCallouts,
    pub(crate) recorder: SharedRecorder,
    pub(crate) time: TimeSource,
    pub(crate) book: StreamBook,
    pub(crate) origin: Origin,
}

impl Runtime {
    /// The VM for `worker` if it exists and is alive.
    pub(crate) fn live_vm(&self, worker: usize) -> Result<usize, HarnessError> {
        let Some(vm) = self.vms.get(worker) else {
            return Err(HarnessError::NoSuchWorker {
                worker,
                workers: self.vms.len(),
            });
        };
        if let Some(reason) = vm.dead() {
            return Err(HarnessError::VmDead {
                worker,
                reason: reason.to_string(),
            });
        }
        Ok(worker)
    }

    /// Opens a stream on `worker` and runs everything that follows from it now.
    pub(crate) fn open(
        &mut self,
        worker: usize,
        request: Request,
        mode: StreamMode,
    ) -> Result<StreamId, HarnessError> {
        let w = self.live_vm(worker)?;
        let now = self.time.elapsed();
        let Some(vm) = self.vms.get_mut(w) else {
            return Err(HarnessError::NoSuchWorker { worker, workers: 0 });
        };
        let mut drive = Drive {
            book: &mut self.book,
            origin: &mut self.origin,
            now,
        };
        let id = vm.open_stream(request, mode, &mut drive)?;
        self.pump()?;
        Ok(id)
    }

    /// Drives one stream as far as it goes.
    pub(crate) fn drive(&mut self, at: StreamRef) -> Result<(), HarnessError> {
        let now = self.time.elapsed();
        let Some(vm) = self.vms.get_mut(at.vm) else {
            return Ok(());
        };
        let mut drive = Drive {
            book: &mut self.book,
            origin: &mut self.origin,
            now,
        };
        vm.drive(at.context_id, &mut drive)
    }

    /// Runs everything that is due now: queue notices, callout answers and timeouts, continued streams, and
    /// deferred deletes; repeats until nothing is left.
    pub(crate) fn pump(&mut self) -> Result<(), HarnessError> {
        loop {
            let vms = &self.vms;
            let notice = self
                .shared
                .take_notice(|key| vms.iter().any(|vm| vm.key == key));
            if let Some(n) = notice {
                let vm = self.vms.iter_mut().find(|vm| vm.key == n.owner.vm);
                if let Some(vm) = vm.filter(|vm| vm.is_alive()) {
                    if let Some(f) = vm.exports.queue_ready.clone() {
                        let ctx = n.owner.context_id;
                        vm.invoke(ctx, Callback::QueueReady, f, (ctx as i32, n.queue as i32))?;
                    }
                }
                continue;
            }
            let now = self.time.elapsed();
            let due = lock_callouts(&self.callouts).take_due(now);
            if let Some(due) = due {
                self.deliver(due)?;
                continue;
            }
            if !self.drive_ready()? {
                return Ok(());
            }
        }
    }

    /// Drives every stream that wants it and deletes the contexts whose `proxy_done` came; false if none.
    fn drive_ready(&mut self) -> Result<bool, HarnessError> {
        let mut todo: Vec<(usize, u32, bool)> = Vec::new();
        for (w, vm) in self.vms.iter().enumerate() {
            if !vm.is_alive() {
                continue;
            }
            let s = vm.store.data();
            for (ctx, st) in &s.streams {
                if s.awaiting_done.contains(ctx) {
                    if s.done_called.contains(ctx) {
                        todo.push((w, *ctx, true));
                    }
                } else if st.wants_drive() {
                    todo.push((w, *ctx, false));
                }
            }
        }
        if todo.is_empty() {
            return Ok(false);
        }
        // Worker, then context order: the order a test can predict.
        todo.sort();
        for (w, ctx, delete) in todo {
            if delete {
                if let Some(vm) = self.vms.get_mut(w) {
                    vm.delete_context(ctx)?;
                }
            } else {
                self.drive(StreamRef {
                    vm: w,
                    context_id: ctx,
                })?;
            }
        }
        Ok(true)
    }

    /// Delivers a callout's answer (or timeout) through `proxy_on_http_call_response`, unless its context
    /// ended first.
    fn deliver(&mut self, due: Due) -> Result<(), HarnessError> {
        let token = due.record.token;
        let ctx = due.record.context_id;
        let Some(vm) = self
            .vms
            .get_mut(due.record.worker)
            .filter(|vm| vm.is_alive())
        else {
            let end = CalloutEnd::Delivered {
                at: due.at,
                result: due.result,
            };
            self.recorder.lock().callout_ended(token, &end);
            return Ok(());
        };
        let s = vm.store.data();
        let alive =
            ctx == s.root_id || (s.streams.contains_key(&ctx) && !s.awaiting_done.contains(&ctx));
        if !alive {
            lock_callouts(&self.callouts).cancelled(token);
            self.recorder
                .lock()
                .callout_ended(token, &CalloutEnd::Cancelled);
            return Ok(());
        }
        let (mut response, status, message) = call_response(&due.result);
        // Envoy's router stamps the answer of an HTTP callout as it does an origin's.
        if vm.store.data().envoy_environment && matches!(due.result, CalloutResult::Response(_)) {
            let took = due.at.saturating_sub(due.record.dispatched_at).as_millis();
            crate::envoy_env::upstream_service_time(&mut response.headers, took);
        }
        let counts = (
            response.headers.len() as i32,
            response.body.len() as i32,
            response.trailers.len() as i32,
        );
        let end = CalloutEnd::Delivered {
            at: due.at,
            result: due.result,
        };
        self.recorder.lock().callout_ended(token, &end);
        {
            let s = vm.store.data_mut();
            s.call_response = Some(response);
            s.set_status(status, message);
        }
        // As the ABI says and Envoy does (a callout belongs to the root context in proxy-wasm-cpp-host), the
        // answer comes to the plugin's root context; the SDKs find the dispatching stream by the token and
        // switch to it with `proxy_set_effective_context`.
        let root = vm.store.data().root_id;
        let result = match vm.exports.http_call_response.clone() {
            Some(f) => vm
                .invoke(
                    root,
                    Callback::HttpCallResponse,
                    f.0,
                    (root as i32, token as i32, counts.0, counts.1, counts.2),
                )
                .map(|_| ()),
            None => Ok(()),
        };
        let s = vm.store.data_mut();
        s.call_response = None;
        s.set_status(Status::Ok, "");
        result
    }

    /// Fires `proxy_on_tick` on every live VM whose tick is due by `now` (once each).
    pub(crate) fn fire_ticks(&mut self, now: Duration) -> Result<(), HarnessError> {
        for vm in &mut self.vms {
            if !vm.is_alive() {
                continue;
            }
            let s = vm.store.data_mut();
            let (Some(t), Some(p)) = (s.next_tick, s.tick_period) else {
                continue;
            };
            if t > now {
                continue;
            }
            s.next_tick = Some(t + p);
            if let Some(f) = vm.exports.tick.clone() {
                vm.invoke(ROOT_CONTEXT_ID, Callback::Tick, f, ROOT_CONTEXT_ID as i32)?;
            }
        }
        Ok(())
    }

    /// The time of the next known event: a callout answer or deadline, or a tick.
    pub(crate) fn next_event(&self) -> Option<Duration> {
        let callout = lock_callouts(&self.callouts).next_due();
        let tick = self
            .vms
            .iter()
            .filter(|vm| vm.is_alive())
            .filter_map(|vm| vm.store.data().next_tick)
            .min();
        match (callout, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the plugin reads in `proxy_on_http_call_response` for a result, and what `proxy_get_status` says.
fn call_response(result: &CalloutResult) -> (CallResponse, Status, &'static str) {
    match result {
        CalloutResult::Response(r) => (
            CallResponse {
                headers: r.header_map(),
                body: r.body.clone(),
                trailers: r.trailers.clone(),
            },
            Status::Ok,
            "",
        ),
        // Envoy delivers a reset with nothing in it and the status `BrokenConnection`.
        CalloutResult::Reset => (
            CallResponse {
                headers: Headers::new(),
                body: Vec::new(),
                trailers: Headers::new(),
            },
            Status::BrokenConnection,
            "reset",
        ),
        // Envoy's router answers a timed-out callout with a synthetic 504.
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
                Status::Ok,
                "",
            )
        }
    }
}
