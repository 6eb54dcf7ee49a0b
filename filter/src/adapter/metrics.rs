//! Decision counters in the host's metrics (`define_metric`).

use crate::engine::{CacheUse, DecisionRecord, Reason, Verdict};
use crate::verify::SignatureBackend;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// A decision counter. Increments are summed in the VM and handed to the host on the root's
/// tick: a host call per counter per second instead of two per request, which under V8 is a
/// measurable share of a cached request. The host's figure lags by at most one tick.
#[derive(Default)]
struct Batched {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Batched {
    fn new(name: &str) -> Batched {
        Batched {
            id: counter(name),
            pending: Cell::new(0),
        }
    }

    fn add(&self) {
        self.pending.set(self.pending.get().saturating_add(1));
    }

    fn flush(&self) {
        let n = self.pending.replace(0);
        if let (Some(id), true) = (self.id, n > 0) {
            // A failed increment only loses counts; no request depends on it.
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The plugin's counters and gauges, defined once per VM.
#[derive(Default)]
pub(super) struct Metrics {
    allowed: Batched,
    denied: Batched,
    observed_denials: Batched,
    cache_hits: Batched,
    cache_misses: Batched,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    signatures_host: Batched,
    signatures_wasm: Batched,
    denied_by_reason: RefCell<HashMap<Reason, Batched>>,
    gauges: RefCell<HashMap<String, Option<u32>>>,
}

fn counter(name: &str) -> Option<u32> {
    define(MetricType::Counter, name)
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("portcullis: cannot define metric {name}: {status:?}");
            None
        }
    }
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        // A failed increment only loses a count; the request is unaffected.
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    /// Defines the fixed counters.
    pub(super) fn define() -> Metrics {
        Metrics {
            allowed: Batched::new("portcullis_allowed_total"),
            denied: Batched::new("portcullis_denied_total"),
            observed_denials: Batched::new("portcullis_observed_denials_total"),
            cache_hits: Batched::new("portcullis_token_cache_hits_total"),
            cache_misses: Batched::new("portcullis_token_cache_misses_total"),
            fetch_ok: counter("portcullis_jwks_fetch_ok_total"),
            fetch_failed: counter("portcullis_jwks_fetch_failed_total"),
            signatures_host: Batched::new("portcullis_signatures_host_total"),
            signatures_wasm: Batched::new("portcullis_signatures_wasm_total"),
            denied_by_reason: RefCell::new(HashMap::new()),
            gauges: RefCell::new(HashMap::new()),
        }
    }

    /// Counts a successful key fetch.
    pub(super) fn fetch_ok(&self) {
        bump(self.fetch_ok);
    }

    /// Counts a failed key fetch.
    pub(super) fn fetch_failed(&self) {
        bump(self.fetch_failed);
    }

    fn gauge(&self, name: String, value: u64) {
        let Ok(mut gauges) = self.gauges.try_borrow_mut() else {
            return;
        };
        let id = *gauges
            .entry(name)
            .or_insert_with_key(|name| define(MetricType::Gauge, name));
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Keys in use and their age for one provider.
    pub(super) fn key_state(&self, provider: &str, keys: usize, age_seconds: Option<u64>) {
        self.gauge(format!("portcullis_jwks_keys_{provider}"), keys as u64);
        if let Some(age) = age_seconds {
            self.gauge(format!("portcullis_jwks_age_seconds_{provider}"), age);
        }
    }

    /// Counts one decision (handed to the host by [`Metrics::flush`]).
    pub(super) fn count(&self, record: &DecisionRecord) {
        match (record.verdict, record.enforced) {
            (Verdict::Allow, _) => self.allowed.add(),
            (Verdict::Deny, true) => {
                self.denied.add();
                // Counting is best effort: a re-entrant borrow loses one count, never the VM.
                if let Ok(mut by_reason) = self.denied_by_reason.try_borrow_mut() {
                    by_reason
                        .entry(record.reason)
                        .or_insert_with(|| {
                            Batched::new(&format!("portcullis_denied_{}_total", record.reason))
                        })
                        .add();
                }
            }
            (Verdict::Deny, false) => self.observed_denials.add(),
        }
        match record.crypto {
            Some(SignatureBackend::Host) => self.signatures_host.add(),
            Some(SignatureBackend::Wasm) => self.signatures_wasm.add(),
            None => {}
        }
        match record.cache {
            CacheUse::Hit => self.cache_hits.add(),
            CacheUse::Miss => self.cache_misses.add(),
            CacheUse::None => {}
        }
    }

    /// Hands the decision counts gathered since the last call to the host.
    pub(super) fn flush(&self) {
        for c in [
            &self.allowed,
            &self.denied,
            &self.observed_denials,
            &self.cache_hits,
            &self.cache_misses,
            &self.signatures_host,
            &self.signatures_wasm,
        ] {
            c.flush();
        }
        if let Ok(by_reason) = self.denied_by_reason.try_borrow() {
            by_reason.values().for_each(Batched::flush);
        }
    }
}
