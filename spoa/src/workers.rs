//! The plugin VMs: one thread each, like Envoy's workers, all on one [`SharedState`] (shared data,
//! queues, metrics). Requests come in over a channel; each thread runs its VM on the wall clock,
//! answering requests as the plugin decides them, delivering callout answers and ticks in between.
//!
//! A VM that traps (or runs past its budget) refuses the request it was running and every request it
//! held, and is replaced by a fresh one, as Envoy's `FAIL_RELOAD` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_wasm_harness::{
    Harness, HarnessError, LogLevel, Plugin, Recording, Request, RequestPhase, SharedState,
    StreamId,
};

use crate::logs::{agent_line, StdoutLog};
use crate::plan::Plan;
use crate::upstreams::Client;
use crate::verdict::{self, Refusal, Var};

/// Called once with the request's variables.
pub type Reply = Box<dyn FnOnce(Vec<Var>) + Send>;

/// One request for a VM.
pub struct Job {
    /// The request.
    pub request: Request,
    /// Where its answer goes.
    pub reply: Reply,
}

/// What every VM is built with.
#[derive(Clone)]
pub struct VmSettings {
    /// The compiled module.
    pub plugin: Plugin,
    /// The plugin configuration (the policy).
    pub plugin_config: Vec<u8>,
    /// `plugin_name` and `plugin_root_id` (Envoy's `name` and `root_id`).
    pub plugin_name: String,
    /// The root id.
    pub root_id: String,
    /// The log level for the plugin's lines.
    pub log_level: LogLevel,
    /// The longest the agent lets the plugin hold a request before refusing it.
    pub hold_limit: Duration,
    /// Wall time one callback may run before it is stopped.
    pub callback_budget: Duration,
}

/// Counters the admin endpoint exports.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Requests decided by the plugin.
    pub decided: AtomicU64,
    /// Requests the agent refused, by [`Refusal::code`].
    pub refused: std::sync::Mutex<HashMap<&'static str, u64>>,
    /// VMs replaced after a failure.
    pub vm_restarts: AtomicU64,
    /// Requests waiting for the plugin now, over all VMs.
    pub held: AtomicUsize,
}

impl AgentStats {
    fn refusal(&self, r: &Refusal) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(r.code()).or_insert(0) += 1;
        }
    }
}

/// The VM threads.
pub struct VmPool {
    senders: Vec<SyncSender<Job>>,
    next: AtomicUsize,
    stats: Arc<AgentStats>,
}

/// Requests queued per VM beyond which new ones are refused at once.
const QUEUE: usize = 4096;
/// How often a VM with callouts or held requests looks at the transport.
const POLL: Duration = Duration::from_millis(1);
/// The longest a VM sleeps with nothing to do (it still wakes for its next tick).
const IDLE: Duration = Duration::from_millis(100);

impl VmPool {
    /// Starts `n` VMs; fails when the first cannot start (a policy the plugin rejects, say).
    pub fn start(
        n: usize,
        settings: VmSettings,
        plan: Arc<Plan>,
        client: Client,
        shared: SharedState,
        stats: Arc<AgentStats>,
    ) -> Result<VmPool, HarnessError> {
        let mut senders = Vec::new();
        for index in 0..n.max(1) {
            let vm = Vm {
                index,
                settings: settings.clone(),
                client: client.clone(),
                shared: shared.clone(),
            };
            let harness = vm.build()?;
            let (tx, rx) = sync_channel(QUEUE);
            let plan = plan.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("vm-{index}"))
                .spawn(move || vm.run(harness, rx, &plan, &stats))
                .map_err(|e| HarnessError::Instantiate(format!("cannot start a VM thread: {e}")))?;
            senders.push(tx);
        }
        Ok(VmPool {
            senders,
            next: AtomicUsize::new(0),
            stats,
        })
    }

    /// Hands a request to the next VM; a full queue refuses it at once.
    pub fn submit(&self, job: Job) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        match self.senders[i].try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                let r = Refusal::Unavailable("every VM is busy");
                self.stats.refusal(&r);
                (job.reply)(verdict::refused(&r));
            }
        }
    }
}

struct Vm {
    index: usize,
    settings: VmSettings,
    client: Client,
    shared: SharedState,
}

struct Held {
    reply: Reply,
    since: Instant,
}

impl Vm {
    fn build(&self) -> Result<Harness, HarnessError> {
        let s = &self.settings;
        Harness::builder()
            .plugin(&s.plugin)
            .plugin_config(s.plugin_config.clone())
            .plugin_name(&s.plugin_name)
            .root_id(&s.root_id)
            .wall_clock()
            .shared_state(self.shared.clone())
            .transport(self.client.transport())
            .log_level(s.log_level)
            // Verdicts are taken as they come; the bound only caps what a burst leaves behind.
            .recording(Recording::Bounded(QUEUE))
            .recorder(StdoutLog {
                thread: format!("vm-{}", self.index),
                plugin: format!("{} {}", s.plugin_name, s.root_id),
                level: s.log_level,
            })
            // The plugin's budget is wall time, not fuel: the agent serves live traffic.
            .fuel_per_callback(None)
            .wall_time_per_callback(Some(s.callback_budget))
            // HAProxy, not Envoy, is the proxy: no x-request-id or x-forwarded-proto made up here.
            .envoy_environment(false)
            .build()
    }

    fn run(self, mut harness: Harness, rx: Receiver<Job>, plan: &Plan, stats: &AgentStats) {
        let mut held: HashMap<StreamId, Held> = HashMap::new();
        let mut last_held = 0;
        loop {
            let wait = if !held.is_empty() || harness.has_pending_callouts() {
                POLL
            } else {
                harness.next_event_in().map_or(IDLE, |d| d.min(IDLE))
            };
            let first = match rx.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut failure = None;
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(256))
            {
                match harness.request_phase(job.request) {
                    Ok(RequestPhase::Decided(v)) => answer(plan, stats, job.reply, &v),
                    Ok(RequestPhase::Paused { stream }) => {
                        held.insert(
                            stream,
                            Held {
                                reply: job.reply,
                                since: Instant::now(),
                            },
                        );
                    }
                    Err(e) => {
                        let r = Refusal::VmFailed(e.to_string());
                        stats.refusal(&r);
                        (job.reply)(verdict::refused(&r));
                        if !harness.is_alive(0) {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
            if failure.is_none() {
                if let Err(e) = harness.run_due() {
                    failure = Some(e);
                }
            }
            let ids: Vec<StreamId> = held.keys().copied().collect();
            for id in ids {
                if let Some(v) = harness.take_verdict(id) {
                    if let Some(h) = held.remove(&id) {
                        answer(plan, stats, h.reply, &v);
                    }
                } else if held
                    .get(&id)
                    .is_some_and(|h| h.since.elapsed() > self.settings.hold_limit)
                {
                    let _ = harness.reset_stream(id);
                    let _ = harness.take_verdict(id);
                    if let Some(h) = held.remove(&id) {
                        let r = Refusal::Held(self.settings.hold_limit.as_millis() as u64);
                        stats.refusal(&r);
                        (h.reply)(verdict::refused(&r));
                    }
                }
            }
            // Each VM adds its own change, so the gauge is the sum over VMs.
            let now_held = held.len();
            if now_held >= last_held {
                stats
                    .held
                    .fetch_add(now_held - last_held, Ordering::Relaxed);
            } else {
                stats
                    .held
                    .fetch_sub(last_held - now_held, Ordering::Relaxed);
            }
            last_held = now_held;
            if let Some(e) = failure.filter(|_| !harness.is_alive(0)) {
                harness = self.replace(e, &mut held, stats);
            }
        }
    }

    /// Refuses what the dead VM held and starts a fresh one (retrying while it cannot start).
    fn replace(
        &self,
        e: HarnessError,
        held: &mut HashMap<StreamId, Held>,
        stats: &AgentStats,
    ) -> Harness {
        agent_line(
            LogLevel::Error,
            &format!("vm-{}: plugin failed, replacing its VM: {e}", self.index),
        );
        let r = Refusal::VmFailed(e.to_string());
        for (_, h) in held.drain() {
            stats.refusal(&r);
            (h.reply)(verdict::refused(&r));
        }
        stats.vm_restarts.fetch_add(1, Ordering::Relaxed);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.build() {
                Ok(h) => return h,
                Err(e) => {
                    agent_line(
                        LogLevel::Error,
                        &format!("vm-{}: cannot start a new VM: {e}; retrying", self.index),
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn answer(plan: &Plan, stats: &AgentStats, reply: Reply, v: &proxy_wasm_harness::RequestVerdict) {
    match verdict::encode(plan, v) {
        Ok(vars) => {
            stats.decided.fetch_add(1, Ordering::Relaxed);
            reply(vars);
        }
        Err(r) => {
            agent_line(LogLevel::Error, &format!("refused a request: {r}"));
            stats.refusal(&r);
            reply(verdict::refused(&r));
        }
    }
}
