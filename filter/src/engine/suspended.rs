//! Requests the engine is holding, by ticket: what each waits for, until when, and what
//! the engine needs to carry on when it arrives.

use crate::callout::Ticket;
use crate::keyring::ProviderId;
use crate::time::UnixTime;
use std::collections::HashMap;

/// Most requests one VM holds at once. Each costs a copy of its headers; past this a
/// request that would wait is answered at once (503), so a flood of requests that need
/// keys cannot grow the VM's memory without bound.
pub(crate) const MAX_SUSPENDED: usize = 4096;

/// What the engine does with a callout's answer: one variant per feature that suspends
/// on a callout of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Continuation {
    /// The engine's own tests: a callout answered 200 allows the request, anything else
    /// refuses it.
    #[cfg(test)]
    Probe,
    /// A sign-in code is being exchanged for this flow of `login` (an index into the
    /// policy's logins); `flow_cookie` is deleted once it ends.
    TokenExchange {
        login: usize,
        flow: Box<crate::oidc::flow::Flow>,
        flow_cookie: String,
    },
    /// The discovery document of `login` is being read; the request is decided again once
    /// its endpoints are known.
    Discovery { login: usize },
    /// The session of `login` is being refreshed; the request is decided again with the
    /// refreshed session once the answer is in.
    Refresh {
        login: usize,
        session: Box<crate::oidc::session_data::Session>,
    },
}

/// What a held request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// A provider's keys.
    Keys(ProviderId),
    /// A callout's answer, and what to do with it.
    Callout(Continuation),
}

/// One held request.
#[derive(Debug, Clone)]
pub(crate) struct Suspended {
    /// The request as it was decided, to decide again.
    pub(crate) headers: Vec<(String, String)>,
    /// What it waits for.
    pub(crate) awaiting: Awaiting,
    /// When the wait runs out.
    pub(crate) deadline: UnixTime,
}

/// The held requests of one engine.
#[derive(Debug, Default)]
pub(crate) struct SuspendedRequests {
    next: u64,
    held: HashMap<Ticket, Suspended>,
}

impl SuspendedRequests {
    /// Holds a request; `None` when [`MAX_SUSPENDED`] are already held.
    pub(crate) fn hold(&mut self, request: Suspended) -> Option<Ticket> {
        if self.held.len() >= MAX_SUSPENDED {
            return None;
        }
        self.next = self.next.wrapping_add(1);
        let ticket = Ticket(self.next);
        self.held.insert(ticket, request);
        Some(ticket)
    }

    /// Releases a held request, for resuming it.
    pub(crate) fn release(&mut self, ticket: Ticket) -> Option<Suspended> {
        self.held.remove(&ticket)
    }

    /// Tickets waiting for `provider`'s keys, oldest first.
    pub(crate) fn waiting_for(&self, provider: ProviderId) -> Vec<Ticket> {
        let mut t: Vec<Ticket> = self
            .held
            .iter()
            .filter(|(_, s)| s.awaiting == Awaiting::Keys(provider))
            .map(|(t, _)| *t)
            .collect();
        t.sort_unstable();
        t
    }

    /// Tickets whose wait has run out at `now`, oldest first.
    /// How many held requests wait for `provider`'s keys.
    pub(crate) fn count_waiting_for(&self, provider: ProviderId) -> usize {
        self.held
            .values()
            .filter(|s| s.awaiting == Awaiting::Keys(provider))
            .count()
    }

    pub(crate) fn overdue(&self, now: UnixTime) -> Vec<Ticket> {
        let mut t: Vec<Ticket> = self
            .held
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        t.sort_unstable();
        t
    }

    /// Number of held requests.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: usize, deadline: u64) -> Suspended {
        Suspended {
            headers: Vec::new(),
            awaiting: Awaiting::Keys(ProviderId::from_index(p)),
            deadline: UnixTime::from_millis(deadline),
        }
    }

    #[test]
    fn tickets_are_found_by_provider_and_deadline() {
        let mut s = SuspendedRequests::default();
        let a = s.hold(keys(0, 100)).unwrap();
        let b = s.hold(keys(1, 50)).unwrap();
        let c = s.hold(keys(0, 200)).unwrap();
        assert_eq!(s.waiting_for(ProviderId::from_index(0)), vec![a, c]);
        assert_eq!(s.overdue(UnixTime::from_millis(100)), vec![a, b]);
        assert!(s.release(a).is_some());
        assert!(s.release(a).is_none(), "a ticket is released once");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut s = SuspendedRequests::default();
        for _ in 0..MAX_SUSPENDED {
            assert!(s.hold(keys(0, 1)).is_some());
        }
        assert!(s.hold(keys(0, 1)).is_none());
        let first = s.overdue(UnixTime::from_millis(1))[0];
        s.release(first);
        assert!(
            s.hold(keys(0, 1)).is_some(),
            "room again once one is released"
        );
    }
}
