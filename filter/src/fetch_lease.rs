//! Who fetches a provider's keys for the whole proxy: the worker VMs of one proxy agree
//! through shared data, so the IdP sees one callout per refresh, failure or unknown-kid
//! re-fetch, not one per VM.
//!
//! The record is small and rewritten with compare-and-swap. A VM takes the lease before it
//! fetches; the lease expires on its own (the callout timeout plus a second), so a VM that
//! died mid-fetch holds nobody up for long. The holder writes back what the fetch taught:
//! the failure count and retry time (so every VM backs off together) and when an
//! unknown-kid re-fetch was last made (so the rate limit is the proxy's, not each VM's).

use serde_json::{json, Value};

/// The shared record of one provider's fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// The VM fetching now (0: nobody).
    pub holder: u64,
    /// When the holder's claim lapses, Unix milliseconds.
    pub until_ms: u64,
    /// When the last unknown-kid re-fetch was made, Unix seconds.
    pub last_kid_refetch: Option<u64>,
    /// Consecutive failed fetches, proxy-wide.
    pub failures: u32,
    /// No scheduled fetch before this, Unix seconds (the backoff after failures).
    pub retry_at: u64,
}

impl Lease {
    /// Reads a record; `None` for anything unreadable (then it is treated as absent and
    /// overwritten by the next claim).
    pub fn parse(bytes: &[u8]) -> Option<Lease> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let num = |name: &str| v.get(name).and_then(Value::as_u64);
        Some(Lease {
            holder: num("holder")?,
            until_ms: num("until_ms")?,
            last_kid_refetch: num("kid_at"),
            failures: u32::try_from(num("failures")?).unwrap_or(u32::MAX),
            retry_at: num("retry_at")?,
        })
    }

    /// The record as stored.
    pub fn encode(&self) -> Vec<u8> {
        json!({
            "holder": self.holder,
            "until_ms": self.until_ms,
            "kid_at": self.last_kid_refetch,
            "failures": self.failures,
            "retry_at": self.retry_at,
        })
        .to_string()
        .into_bytes()
    }

    /// Whether a VM other than `me` is fetching at `now_ms`.
    pub fn held_by_other(&self, me: u64, now_ms: u64) -> bool {
        self.holder != 0 && self.holder != me && now_ms < self.until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_reads_as_absent() {
        let lease = Lease {
            holder: 7,
            until_ms: 1_000_500,
            last_kid_refetch: Some(990),
            failures: 2,
            retry_at: 1002,
        };
        assert_eq!(Lease::parse(&lease.encode()), Some(lease));
        let idle = Lease::default();
        assert_eq!(Lease::parse(&idle.encode()), Some(idle));
        for garbage in [&b""[..], b"{}", b"<html>", b"{\"holder\": -1}"] {
            assert_eq!(Lease::parse(garbage), None);
        }
    }

    #[test]
    fn a_lease_is_held_only_by_someone_else_and_only_until_it_lapses() {
        let lease = Lease {
            holder: 7,
            until_ms: 2000,
            ..Lease::default()
        };
        assert!(lease.held_by_other(8, 1999));
        assert!(!lease.held_by_other(7, 1999), "not by me");
        assert!(!lease.held_by_other(8, 2000), "lapsed");
        assert!(!Lease::default().held_by_other(8, 0), "nobody");
    }
}
