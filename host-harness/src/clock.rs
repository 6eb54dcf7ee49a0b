//! Where the host's time comes from: a virtual clock that only moves when the test (or the virtual
//! scheduler) says so, or the wall clock for a live host.
//!
//! Every time the plugin can see — `proxy_get_current_time_nanoseconds`, WASI `clock_time_get`, tick
//! deadlines, callout deadlines, log timestamps — is read from one [`Clock`], so a test that swaps the clock
//! changes all of them together.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time for one host. Implementations must be monotonic in [`Clock::elapsed`].
pub trait Clock: Send + Sync {
    /// Time since the host started; ticks and callout deadlines are measured on it.
    fn elapsed(&self) -> Duration;
    /// The wall-clock time now, in nanoseconds since the Unix epoch.
    fn unix_nanos(&self) -> u64;
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Time that passes only when it is moved: wall time is `start + elapsed`.
#[derive(Debug)]
pub struct VirtualClock {
    start_unix_nanos: u64,
    // A mutex rather than an atomic: a Duration does not fit one, and the clock is read far less often than
    // the plugin runs.
    elapsed: Mutex<Duration>,
}

impl VirtualClock {
    /// A clock that reads `start` until it is moved.
    pub fn starting_at(start: SystemTime) -> VirtualClock {
        VirtualClock {
            start_unix_nanos: nanos_since_epoch(start),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock to `elapsed` since the start; never backwards (an earlier time is ignored).
    pub fn advance_to(&self, elapsed: Duration) {
        let mut now = self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        if elapsed > *now {
            *now = elapsed;
        }
    }
}

impl Clock for VirtualClock {
    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unix_nanos(&self) -> u64 {
        self.start_unix_nanos
            .saturating_add(saturating_nanos(self.elapsed()))
    }
}

/// The real clock: elapsed time from a monotonic `Instant`, wall time from the system.
#[derive(Debug)]
pub struct WallClock {
    started: Instant,
}

impl WallClock {
    /// A wall clock whose elapsed time starts now.
    pub fn new() -> WallClock {
        WallClock {
            started: Instant::now(),
        }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

impl Clock for WallClock {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn unix_nanos(&self) -> u64 {
        nanos_since_epoch(SystemTime::now())
    }
}

/// The clock a harness runs on; the scheduler needs to know which kind it has (only virtual time can be
/// moved by the test).
#[derive(Clone, Debug)]
pub(crate) enum TimeSource {
    Virtual(std::sync::Arc<VirtualClock>),
    Wall(std::sync::Arc<WallClock>),
}

impl TimeSource {
    pub(crate) fn clock(&self) -> std::sync::Arc<dyn Clock> {
        match self {
            TimeSource::Virtual(c) => c.clone(),
            TimeSource::Wall(c) => c.clone(),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        match self {
            TimeSource::Virtual(c) => c.elapsed(),
            TimeSource::Wall(c) => c.elapsed(),
        }
    }

    pub(crate) fn unix_nanos(&self) -> u64 {
        match self {
            TimeSource::Virtual(c) => c.unix_nanos(),
            TimeSource::Wall(c) => c.unix_nanos(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_forward() {
        let c = VirtualClock::starting_at(UNIX_EPOCH + Duration::from_secs(10));
        assert_eq!(c.unix_nanos(), 10_000_000_000);
        c.advance_to(Duration::from_millis(5));
        c.advance_to(Duration::from_millis(1));
        assert_eq!(c.elapsed(), Duration::from_millis(5));
        assert_eq!(c.unix_nanos(), 10_005_000_000);
    }

    #[test]
    fn wall_clock_is_monotonic() {
        let c = WallClock::new();
        let a = c.elapsed();
        let b = c.elapsed();
        assert!(b >= a);
        assert!(c.unix_nanos() > 0);
    }
}
