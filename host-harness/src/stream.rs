//! Envoy's HTTP stream lifecycle as a state machine: request headers, body, trailers, the origin, response
//! headers, body, trailers, then `proxy_on_done` / `proxy_on_log` / `proxy_on_delete`.
//!
//! Pause semantics are Envoy's defaults: a Pause from a headers callback holds the whole direction (Envoy's
//! `allow_on_headers_stop_iteration: false` turns it into `StopAllIterationAndWatermark`: the body and
//! trailers callbacks, and the origin, wait until the plugin continues); a Pause from a body or trailers
//! callback holds the stream only when it was the last callback of its direction. With
//! `allow_on_headers_stop_iteration` ([`crate::HarnessBuilder::allow_on_headers_stop_iteration`]) a headers
//! Pause holds only the headers, so the body callback still runs (and its answer decides); a
//! `proxy_continue_stream`, `proxy_close_stream` or `proxy_send_local_response` made during a callback is
//! acted on after it returns. A stream can also stop after the request phase ([`StreamMode::RequestPhase`])
//! and report what the plugin decided as a [`RequestVerdict`]: the request-header edits it made, or its
//! local reply. A proxy that consults the plugin only for a verdict (an HAProxy SPOE agent) needs exactly
//! that.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::error::HarnessError;
use crate::host::ROOT_CONTEXT_ID;
use crate::http::{Outcome, Phase, Request, Response, StreamId, UpstreamRequest};
use crate::types::{Callback, Headers};
use crate::upstream::{CalloutRequest, Upstream};
use crate::vm::Vm;

/// How far the host runs a stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// Request, origin, response, as Envoy does.
    #[default]
    Full,
    /// Only the request phase: stop where Envoy would forward to the origin (or where the plugin answers
    /// locally) and report a [`RequestVerdict`].
    RequestPhase,
}

/// One change the plugin made to the request headers before they went upstream, in the order made.
/// Applying the edits in order to the client's headers gives the headers the origin would see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// All values of the header were removed.
    Remove(String),
    /// The header was set to one value (replacing all of its values).
    Set(String, String),
    /// A value was added to the header.
    Add(String, String),
}

impl HeaderEdit {
    /// Applies the edit as the host did.
    pub fn apply(&self, headers: &mut Headers) {
        match self {
            HeaderEdit::Remove(name) => headers.remove(name),
            HeaderEdit::Set(name, value) => headers.set(name, value),
            HeaderEdit::Add(name, value) => headers.add(name, value),
        }
    }
}

/// What the plugin decided in the request phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Let the request through.
    Forward {
        /// The plugin's request-header edits, in order.
        edits: Vec<HeaderEdit>,
        /// The request headers after them (with pseudo-headers).
        headers: Headers,
    },
    /// The plugin answered itself (`proxy_send_local_response`).
    Respond {
        /// Status code.
        status: u32,
        /// Headers the plugin gave (without `:status`).
        headers: Headers,
        /// Body.
        body: Vec<u8>,
        /// The details string (Envoy's response code details).
        details: String,
    },
    /// The plugin reset the stream, or the client went away.
    Reset,
}

/// The result of sending a request for its request phase only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestPhase {
    /// The plugin decided.
    Decided(RequestVerdict),
    /// The plugin holds the request (e.g. waiting for a callout); see [`crate::Harness::request_verdict`].
    Paused {
        /// The stream.
        stream: StreamId,
    },
}

/// The next thing a stream does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    Forward,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Finish,
}

impl Step {
    /// Whether the step after a callback ends its direction (only then can a body or trailers Pause hold
    /// the stream).
    fn ends_direction(self) -> bool {
        matches!(self, Step::Forward | Step::Finish)
    }
}

/// Where a stream stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `step` runs next when the host drives the stream.
    Ready(Step),
    /// The callback for `phase` is running; `then` comes after it. `continued`: the plugin called
    /// `proxy_continue_stream` for this direction meanwhile, so a Pause it returns does not hold.
    Running {
        phase: Phase,
        then: Step,
        continued: bool,
    },
    /// Held by the plugin after `phase` until it continues that direction.
    Held { phase: Phase, then: Step },
    /// `proxy_close_stream` or a client reset: the stream ends with a reset when next driven.
    Resetting,
    /// The response went to the client (or the stream was reset, or its verdict was given); only the end
    /// callbacks may still run, and `proxy_on_delete` may wait for `proxy_done`.
    Finished,
}

/// A local reply as the plugin asked for it.
#[derive(Clone, Debug)]
pub(crate) struct LocalReply {
    pub(crate) status: u32,
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) details: String,
}

/// The plugin's local reply, if any.
#[derive(Clone, Debug, Default)]
pub(crate) enum LocalState {
    #[default]
    None,
    /// Asked for during a callback; sent when the callback returns.
    Requested(LocalReply),
    /// Sent; the response is the local reply.
    Sent { details: String },
}

fn is_request_side(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
    )
}

/// One HTTP stream (an HTTP context in the plugin).
pub(crate) struct StreamState {
    pub(crate) id: StreamId,
    pub(crate) mode: StreamMode,
    pub(crate) request: Request,
    pub(crate) request_headers: Headers,
    pub(crate) request_body: Vec<u8>,
    pub(crate) request_trailers: Headers,
    pub(crate) response_headers: Headers,
    pub(crate) response_body: Vec<u8>,
    pub(crate) response_trailers: Headers,
    pub(crate) stage: Stage,
    /// Callbacks that have started for this stream (to decide what a host call may touch).
    pub(crate) seen: HashSet<Callback>,
    pub(crate) local: LocalState,
    pub(crate) forwarded: Option<UpstreamRequest>,
    /// Request-header edits that reached the origin, in order.
    pub(crate) edits: Vec<HeaderEdit>,
    /// Times the plugin asked for the route to be matched again while it still could be.
    pub(crate) route_cache_cleared: u32,
    pub(crate) properties: HashMap<String, Vec<u8>>,
}

impl StreamState {
    pub(crate) fn new(id: StreamId, request: Request, mode: StreamMode) -> StreamState {
        StreamState {
            id,
            mode,
            request_headers: request.header_map(),
            request_body: request.body.clone(),
            request_trailers: request.trailers.clone(),
            response_headers: Headers::new(),
            response_body: Vec::new(),
            response_trailers: Headers::new(),
            stage: Stage::Ready(Step::RequestHeaders),
            seen: HashSet::new(),
            local: LocalState::None,
            forwarded: None,
            edits: Vec::new(),
            route_cache_cleared: 0,
            properties: HashMap::new(),
            request,
        }
    }

    /// The response went to the client (or the stream ended otherwise).
    pub(crate) fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// The details of the local reply that was sent, if one was.
    pub(crate) fn local_details(&self) -> Option<&str> {
        match &self.local {
            LocalState::Sent { details } => Some(details),
            _ => None,
        }
    }

    /// `proxy_continue_stream` for the request (`request`) or response direction. A continue for the other
    /// direction than the one held, or for a stream that is not held, has nothing to resume (Envoy ignores it).
    pub(crate) fn continue_direction(&mut self, request: bool) {
        self.stage = match self.stage {
            Stage::Running { phase, then, .. } if is_request_side(phase) == request => {
                Stage::Running {
                    phase,
                    then,
                    continued: true,
                }
            }
            Stage::Held { phase, then } if is_request_side(phase) == request => Stage::Ready(then),
            other => other,
        };
    }

    /// `proxy_close_stream` (or a client reset): ends the stream with a reset unless it already ended.
    pub(crate) fn close(&mut self) {
        if self.stage != Stage::Finished {
            self.stage = Stage::Resetting;
        }
    }

    /// `proxy_send_local_response`; refused (with the reason) when a reply was already sent or asked for.
    pub(crate) fn request_local(&mut self, reply: LocalReply) -> Result<(), &'static str> {
        if !matches!(self.local, LocalState::None) {
            return Err("a local response was already sent on this stream");
        }
        if self.is_finished() {
            return Err("the response was already sent to the client");
        }
        self.local = LocalState::Requested(reply);
        Ok(())
    }

    /// Whether the host must drive the stream now (it continued, was reset, or has a reply to send).
    pub(crate) fn wants_drive(&self) -> bool {
        matches!(self.stage, Stage::Ready(_) | Stage::Resetting)
            || matches!(self.local, LocalState::Requested(_))
    }

    /// Envoy's `clear_route_cache` on this stream: counted only while the route is yet to be used, i.e.
    /// before the request went upstream and unless the plugin answered it locally (Envoy clears the cache
    /// then too, but no later decision reads it).
    pub(crate) fn clear_route_cache(&mut self) {
        if self.forwarded.is_none() && matches!(self.local, LocalState::None) && !self.is_finished()
        {
            self.route_cache_cleared = self.route_cache_cleared.saturating_add(1);
        }
    }

    /// Records a request-header edit if it still reaches the origin.
    pub(crate) fn record_edit(&mut self, edit: HeaderEdit) {
        if self.forwarded.is_none() && !self.is_finished() {
            self.edits.push(edit);
        }
    }
}

/// Where a live stream runs: a VM and its context there.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamRef {
    pub(crate) vm: usize,
    pub(crate) context_id: u32,
}

/// How a stream ended, for the book.
pub(crate) enum StreamEnd {
    Outcome(Outcome),
    Verdict(RequestVerdict),
}

/// The host's record of streams: which are live and where, and what became of the finished ones.
#[derive(Default)]
pub(crate) struct StreamBook {
    next_stream: u64,
    /// Streams that have not finished, by id. A stream is here from creation until it finishes, and its
    /// `StreamRef` names a VM index that exists (VMs are never removed).
    pub(crate) live: HashMap<StreamId, StreamRef>,
    /// The latest outcome of each stream (paused ones while they are held).
    pub(crate) outcomes: HashMap<StreamId, Outcome>,
    pub(crate) verdicts: HashMap<StreamId, RequestVerdict>,
    /// Finished streams, oldest first, so that a bounded book drops the oldest first.
    finished: VecDeque<StreamId>,
    /// How many finished streams to remember (`None`: all).
    pub(crate) keep: Option<usize>,
}

impl StreamBook {
    /// A book that remembers `keep` finished streams (`None`: all).
    pub(crate) fn keeping(keep: Option<usize>) -> StreamBook {
        StreamBook {
            keep,
            ..StreamBook::default()
        }
    }

    pub(crate) fn open(&mut self, at: StreamRef) -> StreamId {
        self.next_stream += 1;
        let id = StreamId(self.next_stream);
        self.live.insert(id, at);
        id
    }

    fn paused(&mut self, id: StreamId, phase: Phase) {
        self.outcomes
            .insert(id, Outcome::Paused { stream: id, phase });
    }

    fn end(&mut self, id: StreamId, end: StreamEnd) {
        self.live.remove(&id);
        match end {
            StreamEnd::Outcome(o) => {
                self.outcomes.insert(id, o);
            }
            StreamEnd::Verdict(v) => {
                self.outcomes.remove(&id);
                self.verdicts.insert(id, v);
            }
        }
        self.finished.push_back(id);
        if let Some(keep) = self.keep {
            while self.finished.len() > keep.max(1) {
                if let Some(old) = self.finished.pop_front() {
                    self.outcomes.remove(&old);
                    self.verdicts.remove(&old);
                }
            }
        }
    }

    /// Forgets finished streams (live ones are kept).
    pub(crate) fn forget_finished(&mut self) {
        let live = &self.live;
        self.outcomes.retain(|id, _| live.contains_key(id));
        self.verdicts.clear();
        self.finished.clear();
    }
}

/// The origin behind the proxy, for streams run in full: what it answers to forwarded requests.
pub(crate) struct Origin {
    pub(crate) backend: Upstream,
    calls: usize,
}

impl Origin {
    pub(crate) fn new(backend: Upstream) -> Origin {
        Origin { backend, calls: 0 }
    }

    /// The origin's answer: the request's own if it has one, else the backend script's, with a reset or a
    /// hang mapped to the 503/504 Envoy's router sends (delays are not simulated).
    fn respond(
        &mut self,
        fixed: Option<Response>,
        fwd: &UpstreamRequest,
        now: Duration,
    ) -> Response {
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
        let resolved = self.backend.resolve(&req, self.calls, now);
        self.calls += 1;
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
}

/// What one drive of a stream needs from the host around the VM.
pub(crate) struct Drive<'a> {
    pub(crate) book: &'a mut StreamBook,
    pub(crate) origin: &'a mut Origin,
    pub(crate) now: Duration,
}

/// A callback to run for a step, and its arguments.
struct Planned {
    callback: Callback,
    phase: Phase,
    then: Step,
    size: i32,
    end_of_stream: bool,
}

/// The callback a step runs and the step after it. Request and response directions are the same shape:
/// headers, then the body if there is one, then trailers if there are any.
fn plan(step: Step, st: &StreamState) -> Option<Planned> {
    let (request, part) = match step {
        Step::RequestHeaders => (true, 0),
        Step::RequestBody => (true, 1),
        Step::RequestTrailers => (true, 2),
        Step::ResponseHeaders => (false, 0),
        Step::ResponseBody => (false, 1),
        Step::ResponseTrailers => (false, 2),
        Step::Forward | Step::Finish => return None,
    };
    let (headers, body, trailers) = if request {
        (&st.request_headers, &st.request_body, &st.request_trailers)
    } else {
        (
            &st.response_headers,
            &st.response_body,
            &st.response_trailers,
        )
    };
    let [b, t, end] = if request {
        [Step::RequestBody, Step::RequestTrailers, Step::Forward]
    } else {
        [Step::ResponseBody, Step::ResponseTrailers, Step::Finish]
    };
    let phases = if request {
        [
            Phase::RequestHeaders,
            Phase::RequestBody,
            Phase::RequestTrailers,
        ]
    } else {
        [
            Phase::ResponseHeaders,
            Phase::ResponseBody,
            Phase::ResponseTrailers,
        ]
    };
    let callbacks = if request {
        [
            Callback::RequestHeaders,
            Callback::RequestBody,
            Callback::RequestTrailers,
        ]
    } else {
        [
            Callback::ResponseHeaders,
            Callback::ResponseBody,
            Callback::ResponseTrailers,
        ]
    };
    let after_body = if trailers.is_empty() { end } else { t };
    let (then, size, end_of_stream) = match part {
        0 => {
            let then = if !body.is_empty() { b } else { after_body };
            (then, headers.len(), body.is_empty() && trailers.is_empty())
        }
        1 => (after_body, body.len(), trailers.is_empty()),
        _ => (end, trailers.len(), false),
    };
    // `part` is 0, 1 or 2 by the first match, and both arrays have three entries.
    Some(Planned {
        callback: callbacks[part],
        phase: phases[part],
        then,
        size: size as i32,
        end_of_stream,
    })
}

/// Where a drive left the stream.
enum Progress {
    Again,
    Stop,
}

impl Vm {
    /// Opens a stream for `request` on this VM: creates its context and runs it as far as it goes now.
    pub(crate) fn open_stream(
        &mut self,
        request: Request,
        mode: StreamMode,
        drive: &mut Drive<'_>,
    ) -> Result<StreamId, HarnessError> {
        let ctx = self.new_context();
        let id = drive.book.open(StreamRef {
            vm: self.index,
            context_id: ctx,
        });
        let mut stream = StreamState::new(id, request, mode);
        let state = self.store.data_mut();
        // A request-phase stream models a proxy that asks the plugin for a verdict (an HAProxy SPOE agent),
        // not Envoy's connection manager: its headers are the client's, so the edits replay onto them.
        if state.envoy_environment && mode == StreamMode::Full {
            crate::envoy_env::request_headers(&mut stream.request_headers, state.random.as_mut());
        }
        state.streams.insert(ctx, stream);
        if let Some(f) = self.exports.context_create.clone() {
            self.invoke(
                ctx,
                Callback::ContextCreate,
                f,
                (ctx as i32, ROOT_CONTEXT_ID as i32),
            )?;
        }
        self.drive(ctx, drive)?;
        Ok(id)
    }

    /// Runs a stream's state machine until it is held, finished, or gone.
    pub(crate) fn drive(&mut self, ctx: u32, drive: &mut Drive<'_>) -> Result<(), HarnessError> {
        while let Progress::Again = self.step(ctx, drive)? {}
        Ok(())
    }

    /// One transition of the state machine.
    fn step(&mut self, ctx: u32, drive: &mut Drive<'_>) -> Result<Progress, HarnessError> {
        let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(Progress::Stop);
        };
        let id = st.id;
        // A reset wins over everything; then a requested local reply; then the hold.
        if st.stage == Stage::Resetting {
            let end = match st.mode {
                StreamMode::Full => StreamEnd::Outcome(Outcome::Reset { stream: id }),
                StreamMode::RequestPhase => StreamEnd::Verdict(RequestVerdict::Reset),
            };
            self.finish(ctx, end, drive)?;
            return Ok(Progress::Stop);
        }
        if let LocalState::Requested(reply) = &st.local {
            let reply = reply.clone();
            return self.start_local(ctx, reply, drive);
        }
        let step = match st.stage {
            Stage::Ready(step) => step,
            Stage::Held { phase, .. } => {
                drive.book.paused(id, phase);
                return Ok(Progress::Stop);
            }
            Stage::Running { .. } | Stage::Resetting | Stage::Finished => {
                return Ok(Progress::Stop)
            }
        };
        match step {
            Step::Forward => self.forward(ctx, drive),
            Step::Finish => {
                if self.store.data().envoy_environment {
                    let now = self.store.data().clock.unix_nanos();
                    if let Some(st) = self.store.data_mut().streams.get_mut(&ctx) {
                        crate::envoy_env::client_response(&mut st.response_headers, now);
                    }
                }
                let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
                    return Ok(Progress::Stop);
                };
                let outcome = finished_outcome(st);
                self.finish(ctx, StreamEnd::Outcome(outcome), drive)?;
                Ok(Progress::Stop)
            }
            _ => {
                // Every step but Forward and Finish has a callback.
                let Some(p) = plan(step, st) else {
                    return Ok(Progress::Stop);
                };
                self.run_callback(ctx, p)?;
                Ok(Progress::Again)
            }
        }
    }

    /// Runs the callback of one step and applies the action it returns, as Envoy converts it (see the
    /// module docs).
    fn run_callback(&mut self, ctx: u32, p: Planned) -> Result<(), HarnessError> {
        if let Some(st) = self.store.data_mut().streams.get_mut(&ctx) {
            st.stage = Stage::Running {
                phase: p.phase,
                then: p.then,
                continued: false,
            };
            st.seen.insert(p.callback);
        }
        let c = ctx as i32;
        let eos = i32::from(p.end_of_stream);
        let e = &self.exports;
        let three = match p.callback {
            Callback::RequestHeaders => e.request_headers.clone(),
            Callback::RequestBody => e.request_body.clone(),
            Callback::ResponseHeaders => e.response_headers.clone(),
            Callback::ResponseBody => e.response_body.clone(),
            _ => None,
        };
        let two = match p.callback {
            Callback::RequestTrailers => e.request_trailers.clone(),
            Callback::ResponseTrailers => e.response_trailers.clone(),
            _ => None,
        };
        let action = match (three, two) {
            (Some(f), _) => Some(self.invoke(ctx, p.callback, f, (c, p.size, eos))?),
            (None, Some(f)) => Some(self.invoke(ctx, p.callback, f, (c, p.size))?),
            (None, None) => None,
        };
        let allow_headers_stop_iteration = self.store.data().allow_on_headers_stop_iteration;
        let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        if let Stage::Running {
            phase,
            then,
            continued,
        } = st.stage
        {
            let pause = action.is_some_and(|a| a != 0);
            // Envoy turns a headers callback's Pause (`StopIteration`, 1) into `StopAllIterationAndWatermark`
            // unless `allow_on_headers_stop_iteration` is set: the body and trailers then wait too. Any other
            // non-zero answer from a headers callback stops everything regardless.
            let headers_cb = matches!(
                p.callback,
                Callback::RequestHeaders | Callback::ResponseHeaders
            );
            let stop_all = headers_cb
                && action.is_some_and(|a| a != 0 && (a != 1 || !allow_headers_stop_iteration));
            let local_pending = matches!(st.local, LocalState::Requested(_));
            st.stage =
                if pause && (then.ends_direction() || stop_all) && !local_pending && !continued {
                    Stage::Held { phase, then }
                } else {
                    Stage::Ready(then)
                };
        }
        Ok(())
    }

    /// Sends the plugin's local reply. From the request path it goes through the response callbacks, as in
    /// Envoy; sent from a response callback it replaces the response without running them again. In the
    /// request-phase mode the reply is the verdict.
    fn start_local(
        &mut self,
        ctx: u32,
        reply: LocalReply,
        drive: &mut Drive<'_>,
    ) -> Result<Progress, HarnessError> {
        let envoy = self.store.data().envoy_environment;
        let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(Progress::Stop);
        };
        st.local = LocalState::Sent {
            details: reply.details.clone(),
        };
        if st.mode == StreamMode::RequestPhase {
            let verdict = RequestVerdict::Respond {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
                details: reply.details,
            };
            self.finish(ctx, StreamEnd::Verdict(verdict), drive)?;
            return Ok(Progress::Stop);
        }
        st.response_headers = if envoy {
            crate::envoy_env::local_reply_headers(reply.status, &reply.headers, &reply.body)
        } else {
            let mut h = Headers(vec![(":status".into(), reply.status.to_string())]);
            for (k, v) in reply.headers.iter() {
                h.add(k, v);
            }
            h
        };
        st.response_body = reply.body;
        st.response_trailers = Headers::new();
        st.stage = Stage::Ready(if st.seen.contains(&Callback::ResponseHeaders) {
            Step::Finish
        } else {
            Step::ResponseHeaders
        });
        Ok(Progress::Again)
    }

    /// The request leaves the plugin: to the origin (full mode) or as the verdict (request-phase mode).
    fn forward(&mut self, ctx: u32, drive: &mut Drive<'_>) -> Result<Progress, HarnessError> {
        let envoy = self.store.data().envoy_environment;
        let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(Progress::Stop);
        };
        let fwd = UpstreamRequest {
            headers: st.request_headers.clone(),
            body: st.request_body.clone(),
            trailers: st.request_trailers.clone(),
        };
        st.forwarded = Some(fwd.clone());
        if st.mode == StreamMode::RequestPhase {
            let verdict = RequestVerdict::Forward {
                edits: st.edits.clone(),
                headers: fwd.headers,
            };
            self.finish(ctx, StreamEnd::Verdict(verdict), drive)?;
            return Ok(Progress::Stop);
        }
        let fixed = st.request.upstream_response.clone();
        let resp = drive.origin.respond(fixed, &fwd, drive.now);
        st.response_headers = resp.header_map();
        if envoy {
            // The origin answers at once (its delays are not simulated): 0 ms.
            crate::envoy_env::upstream_service_time(&mut st.response_headers, 0);
        }
        st.response_body = resp.body;
        st.response_trailers = resp.trailers;
        st.stage = Stage::Ready(Step::ResponseHeaders);
        Ok(Progress::Again)
    }

    /// Ends a stream: `proxy_on_done`, `proxy_on_log`, then `proxy_on_delete` (deferred until `proxy_done`
    /// if `proxy_on_done` returned false). The outcome is recorded first, so it stands even if one of these
    /// callbacks traps.
    fn finish(
        &mut self,
        ctx: u32,
        end: StreamEnd,
        drive: &mut Drive<'_>,
    ) -> Result<(), HarnessError> {
        let Some(st) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        st.stage = Stage::Finished;
        drive.book.end(st.id, end);
        let c = ctx as i32;
        let done = match self.exports.done.clone() {
            Some(f) => self.invoke(ctx, Callback::Done, f, c)? != 0,
            None => true,
        };
        if let Some(f) = self.exports.log.clone() {
            self.invoke(ctx, Callback::Log, f, c)?;
        }
        if done {
            self.delete_context(ctx)?;
        } else {
            self.store.data_mut().awaiting_done.insert(ctx);
        }
        Ok(())
    }

    /// `proxy_on_delete` and the end of the context's state.
    pub(crate) fn delete_context(&mut self, ctx: u32) -> Result<(), HarnessError> {
        let s = self.store.data_mut();
        s.awaiting_done.remove(&ctx);
        s.done_called.remove(&ctx);
        if let Some(f) = self.exports.delete.clone() {
            self.invoke(ctx, Callback::Delete, f, ctx as i32)?;
        }
        self.store.data_mut().streams.remove(&ctx);
        Ok(())
    }
}

/// The outcome of a stream whose response went to the client.
fn finished_outcome(st: &StreamState) -> Outcome {
    if let LocalState::Sent { details } = &st.local {
        let resp = Response::from_header_map(
            &st.response_headers,
            st.response_body.clone(),
            Headers::new(),
        );
        return Outcome::LocalResponse {
            stream: st.id,
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
            details: details.clone(),
            forwarded: st.forwarded.is_some(),
            route_cache_cleared: st.route_cache_cleared,
        };
    }
    let fwd = st.forwarded.clone().unwrap_or(UpstreamRequest {
        headers: Headers::new(),
        body: Vec::new(),
        trailers: Headers::new(),
    });
    Outcome::Forwarded {
        stream: st.id,
        upstream_headers: fwd.headers,
        upstream_body: fwd.body,
        upstream_trailers: fwd.trailers,
        response: Response::from_header_map(
            &st.response_headers,
            st.response_body.clone(),
            st.response_trailers.clone(),
        ),
        route_cache_cleared: st.route_cache_cleared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(req: Request) -> StreamState {
        StreamState::new(StreamId(1), req, StreamMode::Full)
    }

    #[test]
    fn plan_walks_each_direction_in_envoy_order() {
        let mut st = stream(Request::post("/").body("b").trailer("t", "1"));
        let p = plan(Step::RequestHeaders, &st).unwrap();
        assert_eq!((p.then, p.end_of_stream), (Step::RequestBody, false));
        let p = plan(Step::RequestBody, &st).unwrap();
        assert_eq!((p.then, p.end_of_stream), (Step::RequestTrailers, false));
        assert_eq!(
            plan(Step::RequestTrailers, &st).unwrap().then,
            Step::Forward
        );
        st.response_headers = Headers::from([(":status", "200")]);
        let p = plan(Step::ResponseHeaders, &st).unwrap();
        assert_eq!((p.then, p.end_of_stream), (Step::Finish, true));
    }

    #[test]
    fn continue_resumes_only_the_held_direction() {
        let mut st = stream(Request::get("/"));
        st.stage = Stage::Held {
            phase: Phase::RequestHeaders,
            then: Step::Forward,
        };
        st.continue_direction(false);
        assert!(!st.wants_drive());
        st.continue_direction(true);
        assert_eq!(st.stage, Stage::Ready(Step::Forward));
        st.stage = Stage::Finished;
        st.close();
        assert_eq!(
            st.stage,
            Stage::Finished,
            "a finished stream cannot be reset"
        );
    }

    #[test]
    fn edits_replay_to_the_forwarded_headers() {
        let original = Headers::from([("a", "1"), ("b", "2"), ("b", "3")]);
        let edits = [
            HeaderEdit::Set("b".into(), "x".into()),
            HeaderEdit::Add("c".into(), "y".into()),
            HeaderEdit::Remove("a".into()),
        ];
        let mut h = original;
        for e in &edits {
            e.apply(&mut h);
        }
        assert_eq!(h, Headers::from([("b", "x"), ("c", "y")]));
    }
}
