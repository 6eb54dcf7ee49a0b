//! Remote keys on the host: callouts for the fetch state machine, keys shared between
//! worker VMs through shared data, and waking the requests that waited for them.

use super::http::{decide_current, enact, now_ms, Shared, Step};
use crate::jwks_fetch::{FetchProgress, FetchRequest};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// Root-side state of the key fetches.
#[derive(Default)]
pub struct KeyFetching {
    /// Callout token → provider.
    callouts: HashMap<u32, usize>,
    /// Shared-data CAS last seen per provider.
    seen_cas: HashMap<usize, u32>,
}

fn shared_key(shared: &Shared, provider: usize) -> String {
    let engine = shared.engine.borrow();
    let p = &engine.policy().providers[provider];
    format!("portcullis.jwks.{}.{}", p.name, p.requirements.issuer)
}

impl KeyFetching {
    /// Starts the callouts that are due.
    pub fn dispatch_due(&mut self, shared: &Shared, now: u64) {
        let due = shared.engine.borrow_mut().poll_fetches(now);
        for (provider, req) in due {
            self.dispatch(shared, provider, &req, now);
        }
    }

    fn dispatch(&mut self, shared: &Shared, provider: usize, req: &FetchRequest, now: u64) {
        let headers = vec![
            (":method", "GET"),
            (":path", req.path.as_str()),
            (":authority", req.authority.as_str()),
            ("accept", "application/json"),
            (
                "user-agent",
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            ),
        ];
        let timeout = Duration::from_millis(req.timeout_ms);
        match hostcalls::dispatch_http_call(&req.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                self.callouts.insert(token, provider);
            }
            Err(status) => {
                log::warn!(
                    "portcullis: cannot fetch keys from cluster {} ({}{}): {status:?}",
                    req.cluster,
                    req.authority,
                    req.path
                );
                shared.engine.borrow_mut().fetch_failed(provider, now);
                shared.metrics.fetch_failed();
            }
        }
    }

    /// Handles a callout response; returns the provider it was for.
    pub fn on_response(&mut self, shared: &Shared, token: u32, body_size: usize) -> Option<usize> {
        let provider = self.callouts.remove(&token)?;
        let now = now_ms().unwrap_or(0) / 1000;
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let cache_control =
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, "cache-control")
                .ok()
                .flatten();
        let limit = crate::jwks_fetch::MAX_DOCUMENT_BYTES + 1;
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(limit))
            .ok()
            .flatten()
            .unwrap_or_default();
        // A body over the limit is refused by its size, even though only part was read.
        let body = if body_size >= limit {
            vec![b' '; limit]
        } else {
            body
        };
        let outcome = match status {
            Some(status) => shared.engine.borrow_mut().fetch_response(
                provider,
                now,
                status,
                cache_control.as_deref(),
                &body,
            ),
            None => Err(shared
                .engine
                .borrow_mut()
                .fetch_failed(provider, now)
                .unwrap_or(crate::jwks_fetch::FetchError::Unexpected)),
        };
        let name = shared.engine.borrow().policy().providers[provider]
            .name
            .clone();
        match outcome {
            Ok(FetchProgress::Discovered(endpoint)) => {
                log::info!(
                    "portcullis: provider {name}: discovery names JWKS {}",
                    endpoint.uri
                );
                self.dispatch_due(shared, now);
            }
            Ok(FetchProgress::Keys(k)) => {
                log::info!(
                    "portcullis: provider {name}: {} key(s) fetched, next refresh in {} s",
                    k.keys.len(),
                    k.refresh_at.saturating_sub(now)
                );
                for issue in &k.issues {
                    log::warn!("portcullis: provider {name}: skipped JWKS {issue}");
                }
                shared.metrics.fetch_ok();
                self.publish(shared, provider, &k.document, now, k.refresh_at);
            }
            Err(e) => {
                log::warn!("portcullis: provider {name}: key fetch failed: {e}");
                shared.metrics.fetch_failed();
            }
        }
        self.report(shared, provider, now);
        Some(provider)
    }

    fn publish(
        &mut self,
        shared: &Shared,
        provider: usize,
        document: &[u8],
        now: u64,
        refresh_at: u64,
    ) {
        let key = shared_key(shared, provider);
        let value = serde_json::json!({
            "fetched_at": now,
            "refresh_at": refresh_at,
            "jwks": String::from_utf8_lossy(document),
        })
        .to_string();
        let cas = hostcalls::get_shared_data(&key)
            .ok()
            .and_then(|(_, cas)| cas);
        match hostcalls::set_shared_data(&key, Some(value.as_bytes()), cas) {
            Ok(()) => {
                if let Ok((_, Some(cas))) = hostcalls::get_shared_data(&key) {
                    self.seen_cas.insert(provider, cas);
                }
            }
            // Another VM published in between; its keys are picked up on the next tick.
            Err(status) => log::debug!("portcullis: shared keys not published: {status:?}"),
        }
    }

    /// Installs keys other VMs published; returns the providers that got new keys.
    pub fn adopt_shared(&mut self, shared: &Shared, now: u64) -> Vec<usize> {
        let mut changed = Vec::new();
        let providers = shared.engine.borrow().remote_providers();
        for provider in providers {
            let key = shared_key(shared, provider);
            let Ok((Some(value), Some(cas))) = hostcalls::get_shared_data(&key) else {
                continue;
            };
            if self.seen_cas.get(&provider) == Some(&cas) {
                continue;
            }
            self.seen_cas.insert(provider, cas);
            let parsed: Option<(u64, u64, String)> =
                serde_json::from_slice::<Value>(&value).ok().and_then(|v| {
                    Some((
                        v.get("fetched_at")?.as_u64()?,
                        v.get("refresh_at")?.as_u64()?,
                        v.get("jwks")?.as_str()?.to_string(),
                    ))
                });
            let Some((fetched_at, refresh_at, jwks)) = parsed else {
                log::warn!("portcullis: unreadable shared keys under {key}");
                continue;
            };
            let adopted = shared.engine.borrow_mut().adopt_shared_keys(
                provider,
                jwks.as_bytes(),
                fetched_at,
                refresh_at,
            );
            match adopted {
                Ok(true) => changed.push(provider),
                Ok(false) => {}
                Err(e) => log::warn!("portcullis: shared keys under {key} refused: {e}"),
            }
            self.report(shared, provider, now);
        }
        changed
    }

    fn report(&self, shared: &Shared, provider: usize, now: u64) {
        let engine = shared.engine.borrow();
        let keys = engine.keys(provider).map_or(0, |k| k.len());
        let age = engine
            .fetcher(provider)
            .and_then(|f| f.fetched_at())
            .map(|f| now.saturating_sub(f));
        shared
            .metrics
            .key_state(&engine.policy().providers[provider].name, keys, age);
    }
}

/// Decides again every request that waited for `provider` (or every waiter whose
/// deadline passed), in its own context; then returns to the root context.
pub fn wake(shared: &Shared, root_id: u32, provider: Option<usize>, now_ms: u64) {
    let waiters: Vec<_> = {
        let mut all = shared.waiters.borrow_mut();
        let (due, keep): (Vec<_>, Vec<_>) = all
            .drain(..)
            .partition(|w| Some(w.provider) == provider || w.deadline_ms <= now_ms);
        *all = keep;
        due
    };
    for w in waiters {
        if hostcalls::set_effective_context(w.context_id).is_err() {
            continue; // the client went away
        }
        let step = if Some(w.provider) == provider {
            decide_current(shared, w.context_id)
        } else {
            let eval = shared
                .engine
                .borrow()
                .wait_expired(w.provider, now_ms / 1000);
            enact(shared, eval, w.context_id, now_ms)
        };
        if step == Step::Forward {
            if let Err(s) = hostcalls::resume_http_request() {
                log::warn!("portcullis: cannot resume request: {s:?}");
            }
        }
    }
    let _ = hostcalls::set_effective_context(root_id);
}
