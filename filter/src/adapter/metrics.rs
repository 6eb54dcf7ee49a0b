//! Decision counters in the host's metrics (`define_metric`).

use crate::engine::{CacheUse, DecisionRecord, Verdict};
use crate::verify::SignatureBackend;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// Counter ids, defined once per VM.
#[derive(Default)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    observed_denials: Option<u32>,
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    signatures_host: Option<u32>,
    signatures_wasm: Option<u32>,
    denied_by_reason: RefCell<HashMap<&'static str, Option<u32>>>,
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
    pub fn define() -> Metrics {
        Metrics {
            allowed: counter("portcullis_allowed_total"),
            denied: counter("portcullis_denied_total"),
            observed_denials: counter("portcullis_observed_denials_total"),
            cache_hits: counter("portcullis_token_cache_hits_total"),
            cache_misses: counter("portcullis_token_cache_misses_total"),
            fetch_ok: counter("portcullis_jwks_fetch_ok_total"),
            fetch_failed: counter("portcullis_jwks_fetch_failed_total"),
            signatures_host: counter("portcullis_signatures_host_total"),
            signatures_wasm: counter("portcullis_signatures_wasm_total"),
            denied_by_reason: RefCell::new(HashMap::new()),
            gauges: RefCell::new(HashMap::new()),
        }
    }

    /// Counts a successful key fetch.
    pub fn fetch_ok(&self) {
        bump(self.fetch_ok);
    }

    /// Counts a failed key fetch.
    pub fn fetch_failed(&self) {
        bump(self.fetch_failed);
    }

    fn gauge(&self, name: String, value: u64) {
        let id = *self
            .gauges
            .borrow_mut()
            .entry(name.clone())
            .or_insert_with(|| define(MetricType::Gauge, &name));
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Keys in use and their age for one provider.
    pub fn key_state(&self, provider: &str, keys: usize, age_seconds: Option<u64>) {
        self.gauge(format!("portcullis_jwks_keys_{provider}"), keys as u64);
        if let Some(age) = age_seconds {
            self.gauge(format!("portcullis_jwks_age_seconds_{provider}"), age);
        }
    }

    /// Counts one decision.
    pub fn count(&self, record: &DecisionRecord) {
        match (record.verdict, record.enforced) {
            (Verdict::Allow, _) => bump(self.allowed),
            (Verdict::Deny, true) => {
                bump(self.denied);
                let id = self
                    .denied_by_reason
                    .borrow_mut()
                    .entry(record.reason)
                    .or_insert_with(|| {
                        counter(&format!("portcullis_denied_{}_total", record.reason))
                    })
                    .to_owned();
                bump(id);
            }
            (Verdict::Deny, false) => bump(self.observed_denials),
        }
        match record.crypto {
            Some(SignatureBackend::Host) => bump(self.signatures_host),
            Some(SignatureBackend::Wasm) => bump(self.signatures_wasm),
            None => {}
        }
        match record.cache {
            CacheUse::Hit => bump(self.cache_hits),
            CacheUse::Miss => bump(self.cache_misses),
            CacheUse::None => {}
        }
    }
}
