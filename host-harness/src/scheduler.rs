//! How time moves for a runtime. [`VirtualScheduler`]: the test moves a virtual clock and every tick and
//! callout answer in between happens in time order, instantly. [`RealtimeLoop`]: the wall clock moves by
//! itself; the loop sleeps until the next known event (or a short poll interval, since a network transport
//! cannot say when its answers arrive) and then runs what is due.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, VirtualClock, WallClock};
use crate::error::HarnessError;
use crate::runtime::Runtime;

/// Moves virtual time event by event.
pub(crate) struct VirtualScheduler {
    pub(crate) clock: Arc<VirtualClock>,
}

impl VirtualScheduler {
    /// Moves virtual time forward by `d`, firing due ticks and delivering callout answers and timeouts in
    /// time order, then runs what is due at the end.
    pub(crate) fn advance(&self, rt: &mut Runtime, d: Duration) -> Result<(), HarnessError> {
        let target = self.clock.elapsed().saturating_add(d);
        let mut last = None;
        while let Some(next) = rt.next_event() {
            if next > target {
                break;
            }
            // Everything due at `next` was run in the last round; the same time again means a transport
            // announces an answer it does not deliver, and waiting for it would never end.
            if last == Some(next) && next <= self.clock.elapsed() {
                break;
            }
            last = Some(next);
            self.clock.advance_to(next);
            rt.fire_ticks(next)?;
            rt.pump()?;
        }
        self.clock.advance_to(target);
        rt.pump()
    }

    /// The time of the next event if it comes within `limit` from now.
    pub(crate) fn next_within(&self, rt: &Runtime, limit: Duration) -> Option<Duration> {
        let deadline = self.clock.elapsed().saturating_add(limit);
        rt.next_event()
            .filter(|t| *t <= deadline)
            .map(|t| t.saturating_sub(self.clock.elapsed()))
    }
}

/// Runs a runtime on the wall clock.
pub(crate) struct RealtimeLoop {
    pub(crate) clock: Arc<WallClock>,
}

impl RealtimeLoop {
    /// The longest the loop sleeps without looking at the transport.
    pub(crate) const POLL: Duration = Duration::from_millis(1);

    /// One turn: runs what is due now, then sleeps until the next known event, the poll interval or
    /// `deadline` (time since start), whichever comes first. Returns whether `deadline` has passed.
    pub(crate) fn turn(&self, rt: &mut Runtime, deadline: Duration) -> Result<bool, HarnessError> {
        let now = self.clock.elapsed();
        rt.fire_ticks(now)?;
        rt.pump()?;
        let now = self.clock.elapsed();
        if now >= deadline {
            return Ok(true);
        }
        let wake = rt.next_event().map_or(deadline, |t| t.min(deadline));
        let sleep = wake.saturating_sub(now).min(Self::POLL);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
        Ok(false)
    }

    /// Runs turns until `done` says so or `limit` of wall time has passed; returns whether `done` did.
    pub(crate) fn run(
        &self,
        rt: &mut Runtime,
        limit: Duration,
        mut done: impl FnMut(&Runtime) -> bool,
    ) -> Result<bool, HarnessError> {
        let deadline = self.clock.elapsed().saturating_add(limit);
        loop {
            if done(rt) {
                return Ok(true);
            }
            if self.turn(rt, deadline)? {
                return Ok(done(rt));
            }
        }
    }
}

/// The scheduler a harness was built with.
pub(crate) enum Scheduler {
    Virtual(VirtualScheduler),
    Realtime(RealtimeLoop),
}
