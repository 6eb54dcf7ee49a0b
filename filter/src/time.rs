//! Wall-clock time as the engine sees it: one type, so seconds and milliseconds cannot be
//! mixed up at a call site.

/// A point in time: milliseconds since the Unix epoch, as the host's clock reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// From whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> UnixTime {
        UnixTime(secs.saturating_mul(1000))
    }

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> UnixTime {
        UnixTime(ms)
    }

    /// Whole seconds since the epoch: the resolution of JWT NumericDates and key schedules.
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// This time plus `ms` milliseconds (saturating).
    pub const fn plus_millis(self, ms: u64) -> UnixTime {
        UnixTime(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_truncate_and_saturate() {
        assert_eq!(UnixTime::from_millis(1_999).secs(), 1);
        assert_eq!(UnixTime::from_secs(2).millis(), 2_000);
        assert_eq!(UnixTime::from_secs(u64::MAX).millis(), u64::MAX);
        assert_eq!(
            UnixTime::from_millis(u64::MAX).plus_millis(1).millis(),
            u64::MAX
        );
    }
}
