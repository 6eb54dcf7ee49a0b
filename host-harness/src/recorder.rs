//! What a host remembers of what the plugin did: log lines, [`Violation`]s and the history of callouts.
//!
//! Tests want all of it ([`History::unbounded`], the default); a server wants a bounded window
//! ([`History::bounded`]) or nothing ([`Discard`]). Nothing the runtime needs to work reads the recorder: the
//! table of pending callouts and the lines quoted in startup and trap errors live elsewhere, so switching the
//! recorder off changes only what can be inspected afterwards.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::types::{Callback, LogLevel};
use crate::upstream::{Callout, CalloutResult};

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
    /// Time since start (virtual or wall, as the host's clock).
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

/// How a dispatched callout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalloutEnd {
    /// The plugin received this result at this time since start.
    Delivered {
        /// When.
        at: Duration,
        /// What.
        result: CalloutResult,
    },
    /// Its context ended first, so the answer was dropped (as Envoy cancels such callouts).
    Cancelled,
}

/// Receives what the plugin did. Implementations decide how much to keep.
pub trait Recorder: Send {
    /// A log line at or above the host's log level.
    fn log(&mut self, entry: LogEntry);
    /// An ABI misuse.
    fn violation(&mut self, violation: Violation);
    /// A callout was dispatched (not yet answered).
    fn callout_dispatched(&mut self, callout: &Callout);
    /// A callout dispatched earlier (by token) ended.
    fn callout_ended(&mut self, token: u32, end: &CalloutEnd);
    /// What was kept, for inspection; `None` if this recorder keeps nothing.
    fn history(&self) -> Option<&History> {
        None
    }
    /// What was kept, to clear parts of it.
    fn history_mut(&mut self) -> Option<&mut History> {
        None
    }
}

/// Keeps logs, violations and callouts, all of them or the latest `limit` of each.
#[derive(Clone, Debug, Default)]
pub struct History {
    limit: Option<usize>,
    logs: VecDeque<LogEntry>,
    violations: VecDeque<Violation>,
    callouts: VecDeque<Callout>,
}

impl History {
    /// Keeps everything (tests).
    pub fn unbounded() -> History {
        History::default()
    }

    /// Keeps the latest `limit` entries of each kind (servers, benchmarks); older ones are dropped.
    pub fn bounded(limit: usize) -> History {
        History {
            limit: Some(limit),
            ..History::default()
        }
    }

    /// Captured log lines, oldest first.
    pub fn logs(&self) -> &VecDeque<LogEntry> {
        &self.logs
    }

    /// Recorded violations, oldest first.
    pub fn violations(&self) -> &VecDeque<Violation> {
        &self.violations
    }

    /// Dispatched callouts, oldest first, with how they ended so far.
    pub fn callouts(&self) -> &VecDeque<Callout> {
        &self.callouts
    }

    /// Removes and returns the log lines.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.logs).into()
    }

    /// Forgets logs and ended callouts (callouts still pending stay, so their end can be recorded).
    pub fn clear(&mut self) {
        self.logs.clear();
        self.callouts.retain(|c| !c.delivered && !c.cancelled);
    }

    fn push<T>(limit: Option<usize>, q: &mut VecDeque<T>, item: T) {
        if limit == Some(0) {
            return;
        }
        if limit.is_some_and(|l| q.len() >= l) {
            q.pop_front();
        }
        q.push_back(item);
    }
}

impl Recorder for History {
    fn log(&mut self, entry: LogEntry) {
        History::push(self.limit, &mut self.logs, entry);
    }

    fn violation(&mut self, violation: Violation) {
        History::push(self.limit, &mut self.violations, violation);
    }

    fn callout_dispatched(&mut self, callout: &Callout) {
        History::push(self.limit, &mut self.callouts, callout.clone());
    }

    fn callout_ended(&mut self, token: u32, end: &CalloutEnd) {
        // Tokens wrap only after 2^32 callouts; the latest record with the token is the one that ended.
        // A bounded history may have dropped it already, which is fine.
        let Some(c) = self
            .callouts
            .iter_mut()
            .rev()
            .find(|c| c.token == token && !c.delivered && !c.cancelled)
        else {
            return;
        };
        match end {
            CalloutEnd::Delivered { at, result } => {
                c.delivered = true;
                c.due_at = *at;
                c.result = result.clone();
            }
            CalloutEnd::Cancelled => c.cancelled = true,
        }
    }

    fn history(&self) -> Option<&History> {
        Some(self)
    }

    fn history_mut(&mut self) -> Option<&mut History> {
        Some(self)
    }
}

/// Keeps nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Recorder for Discard {
    fn log(&mut self, _entry: LogEntry) {}
    fn violation(&mut self, _violation: Violation) {}
    fn callout_dispatched(&mut self, _callout: &Callout) {}
    fn callout_ended(&mut self, _token: u32, _end: &CalloutEnd) {}
}

/// A recorder shared by the VMs of one host.
#[derive(Clone)]
pub(crate) struct SharedRecorder(Arc<Mutex<Box<dyn Recorder>>>);

impl SharedRecorder {
    pub(crate) fn new(recorder: Box<dyn Recorder>) -> SharedRecorder {
        SharedRecorder(Arc::new(Mutex::new(recorder)))
    }

    /// Locks the recorder, ignoring poisoning (a panicking test thread must not hide the record).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Box<dyn Recorder>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the history (empty results if the recorder keeps none).
    pub(crate) fn read<T: Default>(&self, f: impl FnOnce(&History) -> T) -> T {
        self.lock().history().map(f).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> LogEntry {
        LogEntry {
            worker: 0,
            context_id: 1,
            level: LogLevel::Info,
            message: n.to_string(),
            at: Duration::ZERO,
        }
    }

    #[test]
    fn bounded_history_keeps_the_latest() {
        let mut h = History::bounded(2);
        for n in 0..5 {
            h.log(line(n));
        }
        let kept: Vec<&str> = h.logs().iter().map(|l| l.message.as_str()).collect();
        assert_eq!(kept, ["3", "4"]);
        let mut none = History::bounded(0);
        none.log(line(1));
        assert!(none.logs().is_empty());
    }
}
