//! How callouts (`proxy_http_call`) reach an upstream and how their answers come back.
//!
//! A callout is dispatched now and answered later: `proxy_http_call` hands the request to a
//! [`CalloutTransport`] and returns a token; the scheduler later polls the transport and delivers each answer
//! through `proxy_on_http_call_response`. The host, not the transport, owns the plugin's timeout: an answer
//! that is not there by the deadline becomes Envoy's synthetic `504`, whatever the transport does.
//!
//! [`Scripted`] answers from the test's [`Upstream`] scripts on the host's clock; a live host plugs in a real
//! HTTP client.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::upstream::{Callout, CalloutRequest, CalloutResult, Upstream};

/// A callout the transport refused; `proxy_http_call` then returns `BadArgument` (as Envoy does for an
/// unknown cluster).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No upstream of that name is defined.
    #[error("no upstream cluster named `{0}` is defined")]
    UnknownCluster(String),
}

/// One answer from the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The token of the callout it answers.
    pub token: u32,
    /// When it arrived, as time since the host started (on the host's clock).
    pub at: Duration,
    /// What came back.
    pub result: CalloutResult,
}

/// Carries callouts to upstreams.
pub trait CalloutTransport: Send {
    /// Starts a callout. `now` is the host clock's time since start.
    fn dispatch(
        &mut self,
        token: u32,
        request: &CalloutRequest,
        now: Duration,
    ) -> Result<(), TransportError>;
    /// Answers that have arrived by `now`, in any order.
    fn poll(&mut self, now: Duration) -> Vec<Answer>;
    /// When the next answer will arrive, if the transport knows (a scripted one does; a network one does
    /// not and returns `None`). The virtual scheduler jumps the clock to it, so a time that has come must
    /// be answered by the next `poll`.
    fn next_answer_at(&self) -> Option<Duration>;
    /// The host no longer wants the answer (timed out, or its context ended).
    fn cancel(&mut self, token: u32);
    /// Whether the transport has a cluster of this name (`None`: it cannot tell). The host asks before a
    /// call it cannot carry (a gRPC callout), to answer as Envoy does for an unknown cluster, or to refuse
    /// the call by name for a known one.
    fn has_cluster(&self, _name: &str) -> Option<bool> {
        None
    }
}

/// Answers callouts from [`Upstream`] scripts: each behaviour is resolved when the callout is dispatched,
/// and its answer arrives after the scripted delay on the host's clock.
#[derive(Debug, Default)]
pub struct Scripted {
    upstreams: HashMap<String, Upstream>,
    /// Callouts per cluster so far: the index [`Upstream::sequence`] picks by.
    calls: HashMap<String, usize>,
    /// Answers not yet polled, by token; a hang has none.
    due: HashMap<u32, Answer>,
}

impl Scripted {
    /// A transport with these clusters.
    pub fn new(upstreams: HashMap<String, Upstream>) -> Scripted {
        Scripted {
            upstreams,
            ..Scripted::default()
        }
    }

    /// Defines or replaces a cluster.
    pub fn set_upstream(&mut self, name: &str, upstream: Upstream) {
        self.upstreams.insert(name.to_string(), upstream);
    }

    /// Removes a cluster (later callouts to it are refused).
    pub fn remove_upstream(&mut self, name: &str) {
        self.upstreams.remove(name);
    }
}

impl CalloutTransport for Scripted {
    fn dispatch(
        &mut self,
        token: u32,
        request: &CalloutRequest,
        now: Duration,
    ) -> Result<(), TransportError> {
        let behaviour = self
            .upstreams
            .get(&request.upstream)
            .cloned()
            .ok_or_else(|| TransportError::UnknownCluster(request.upstream.clone()))?;
        let n = self.calls.entry(request.upstream.clone()).or_insert(0);
        let index = *n;
        *n += 1;
        let resolved = behaviour.resolve(request, index, now);
        let result = match resolved.result {
            None => return Ok(()),
            Some(Ok(response)) => CalloutResult::Response(response),
            Some(Err(())) => CalloutResult::Reset,
        };
        self.due.insert(
            token,
            Answer {
                token,
                at: now.saturating_add(resolved.delay),
                result,
            },
        );
        Ok(())
    }

    fn poll(&mut self, now: Duration) -> Vec<Answer> {
        let ready: Vec<u32> = self
            .due
            .values()
            .filter(|a| a.at <= now)
            .map(|a| a.token)
            .collect();
        ready
            .into_iter()
            .filter_map(|t| self.due.remove(&t))
            .collect()
    }

    fn next_answer_at(&self) -> Option<Duration> {
        self.due.values().map(|a| a.at).min()
    }

    fn has_cluster(&self, name: &str) -> Option<bool> {
        Some(self.upstreams.contains_key(name))
    }

    fn cancel(&mut self, token: u32) {
        self.due.remove(&token);
    }
}

/// A transport shared by the VMs of one host.
pub type SharedTransport = Arc<Mutex<dyn CalloutTransport>>;

/// A callout between dispatch and delivery.
struct Pending {
    /// Dispatch order: callouts due at the same time are delivered in it.
    seq: u64,
    record: Callout,
    /// `None`: the plugin gave no timeout, so only an answer ends it.
    deadline: Option<Duration>,
    answer: Option<Answer>,
}

impl Pending {
    /// When and how it ends, if that is known: the answer if it came before the deadline, else a timeout at
    /// the deadline (an answer exactly at the deadline is too late, as a scripted delay equal to the timeout
    /// always was).
    fn end(&self) -> Option<(Duration, CalloutResult)> {
        match (&self.answer, self.deadline) {
            (Some(a), Some(d)) if a.at >= d => Some((d, CalloutResult::TimedOut)),
            (Some(a), _) => Some((a.at, a.result.clone())),
            (None, Some(d)) => Some((d, CalloutResult::TimedOut)),
            (None, None) => None,
        }
    }
}

/// A callout ready to be delivered now.
pub(crate) struct Due {
    pub(crate) record: Callout,
    pub(crate) at: Duration,
    pub(crate) result: CalloutResult,
}

/// The host's table of callouts in flight, in front of the transport.
pub(crate) struct Callouts {
    transport: SharedTransport,
    next_token: u32,
    next_seq: u64,
    /// Callouts dispatched and neither delivered nor cancelled, by token. A token is here from dispatch until
    /// its delivery or cancellation and never longer; the recorder's history is not consulted, so a bounded
    /// or disabled recorder changes nothing here.
    pending: BTreeMap<u32, Pending>,
}

impl Callouts {
    pub(crate) fn new(transport: SharedTransport) -> Callouts {
        Callouts {
            transport,
            next_token: 1,
            next_seq: 0,
            pending: BTreeMap::new(),
        }
    }

    fn transport(&self) -> MutexGuard<'_, dyn CalloutTransport + 'static> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the transport has cluster `name` (`None`: it cannot tell).
    pub(crate) fn has_cluster(&self, name: &str) -> Option<bool> {
        self.transport().has_cluster(name)
    }

    /// Hands a callout to the transport; returns the record to keep (token assigned).
    pub(crate) fn dispatch(
        &mut self,
        worker: usize,
        context_id: u32,
        request: CalloutRequest,
        now: Duration,
    ) -> Result<Callout, TransportError> {
        let token = self.next_token;
        self.transport().dispatch(token, &request, now)?;
        // Token 0 is never handed out: SDKs treat it as "no callout".
        self.next_token = self.next_token.wrapping_add(1).max(1);
        let deadline = (!request.timeout.is_zero()).then(|| now.saturating_add(request.timeout));
        let record = Callout {
            token,
            worker,
            context_id,
            dispatched_at: now,
            due_at: deadline.unwrap_or(Duration::MAX),
            result: CalloutResult::TimedOut,
            delivered: false,
            cancelled: false,
            request,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            token,
            Pending {
                seq,
                record: record.clone(),
                deadline,
                answer: None,
            },
        );
        Ok(record)
    }

    fn collect_answers(&mut self, now: Duration) {
        let answers = self.transport().poll(now);
        for a in answers {
            // An answer for a callout no longer pending (timed out, cancelled) is dropped.
            if let Some(p) = self.pending.get_mut(&a.token) {
                p.answer.get_or_insert(a);
            }
        }
    }

    /// Takes the callout that ends first among those ending by `now` (ties in dispatch order).
    pub(crate) fn take_due(&mut self, now: Duration) -> Option<Due> {
        self.collect_answers(now);
        let token = self
            .pending
            .iter()
            .filter_map(|(t, p)| p.end().map(|(at, _)| (at, p.seq, *t)))
            .filter(|(at, _, _)| *at <= now)
            .min()
            .map(|(_, _, t)| t)?;
        let p = self.pending.remove(&token)?;
        let (at, result) = p.end()?;
        if result == CalloutResult::TimedOut && p.answer.is_none() {
            self.transport().cancel(token);
        }
        Some(Due {
            record: p.record,
            at,
            result,
        })
    }

    /// The earliest time something will be due, as far as is known.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        let table = self
            .pending
            .values()
            .filter_map(|p| p.end().map(|(at, _)| at))
            .min();
        let transport = self.transport().next_answer_at();
        match (table, transport) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many callouts are pending.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Records of the callouts still pending, in dispatch order.
    pub(crate) fn pending(&self) -> Vec<Callout> {
        let mut v: Vec<&Pending> = self.pending.values().collect();
        v.sort_by_key(|p| p.seq);
        v.into_iter().map(|p| p.record.clone()).collect()
    }

    /// Tells the transport that a delivered-to-nobody callout is not wanted (its context is gone).
    pub(crate) fn cancelled(&mut self, token: u32) {
        self.transport().cancel(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Headers;

    fn req(upstream: &str, timeout_ms: u64) -> CalloutRequest {
        CalloutRequest {
            upstream: upstream.into(),
            headers: Headers::from([(":method", "GET"), (":path", "/"), (":authority", "a")]),
            body: Vec::new(),
            trailers: Headers::new(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn scripted_answers_after_the_delay_and_timeouts_win_ties() {
        let ups = HashMap::from([
            (
                "slow".to_string(),
                Upstream::delayed(Duration::from_millis(100), Upstream::json(200, "{}")),
            ),
            ("hang".to_string(), Upstream::hang()),
        ]);
        let t: SharedTransport = Arc::new(Mutex::new(Scripted::new(ups)));
        let mut c = Callouts::new(t);
        let a = c.dispatch(0, 2, req("slow", 100), Duration::ZERO).unwrap();
        let b = c.dispatch(0, 2, req("hang", 0), Duration::ZERO).unwrap();
        assert!(c.dispatch(0, 2, req("nope", 0), Duration::ZERO).is_err());
        assert_eq!((a.token, b.token), (1, 2));
        assert_eq!(c.next_due(), Some(Duration::from_millis(100)));
        assert!(c.take_due(Duration::from_millis(99)).is_none());
        let due = c.take_due(Duration::from_millis(100)).unwrap();
        assert_eq!(due.result, CalloutResult::TimedOut);
        assert_eq!(c.pending().len(), 1, "the hang without timeout stays");
        assert_eq!(c.next_due(), None);
    }
}
