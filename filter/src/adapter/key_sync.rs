//! Remote keys on the host: the fetch callouts of the key ring, keys shared between
//! worker VMs through shared data, and waking the requests held for them.

use super::callouts;
use super::enact::{enact, Flow};
use super::state::{now_or_epoch, CalloutOwner, PluginState, FAST_TICK, SLOW_TICK};
use crate::callout::{CalloutResult, Ticket};
use crate::engine::Resumption;
use crate::fetch_lease::Lease;
use crate::jwks_fetch::FetchProgress;
use crate::keyring::ProviderId;
use crate::time::UnixTime;
use proxy_wasm::hostcalls;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// What this VM last saw of the keys other VMs published, and who it is among them.
pub(super) struct KeySync {
    /// This VM's name in the fetch leases: random, so VMs of one proxy (and a VM that
    /// replaced a crashed one) never share it.
    vm_id: u64,
    /// Shared-data CAS last seen per provider.
    seen_cas: HashMap<ProviderId, u32>,
    /// Providers with no keys to serve after failed fetches: their requests get 503. Said
    /// once when a provider enters that state and once when it leaves it, not per request.
    unavailable: HashSet<ProviderId>,
}

impl KeySync {
    pub(super) fn new() -> KeySync {
        use std::hash::BuildHasher;
        // std seeds RandomState from the host's random_get: no extra dependency for an id.
        let vm_id = std::collections::hash_map::RandomState::new().hash_one(0u8) | 1;
        KeySync {
            vm_id,
            seen_cas: HashMap::new(),
            unavailable: HashSet::new(),
        }
    }
}

fn shared_key(state: &PluginState, provider: ProviderId) -> Option<String> {
    let engine = state.engine.try_borrow().ok()?;
    let p = engine.policy().providers.get(provider.index())?;
    Some(format!(
        "portcullis.jwks.{}.{}",
        p.name, p.requirements.issuer
    ))
}

fn lease_key(state: &PluginState, provider: ProviderId) -> Option<String> {
    let engine = state.engine.try_borrow().ok()?;
    let p = engine.policy().providers.get(provider.index())?;
    Some(format!(
        "portcullis.fetch.{}.{}",
        p.name, p.requirements.issuer
    ))
}

/// A provider's fetch lease as stored, with its CAS; `None` when there is none yet (or it
/// is unreadable, and then overwritten by the next claim).
fn read_lease(state: &PluginState, provider: ProviderId) -> (Option<Lease>, Option<u32>) {
    let Some(key) = lease_key(state, provider) else {
        return (None, None);
    };
    match hostcalls::get_shared_data(&key) {
        Ok((value, cas)) => (value.as_deref().and_then(Lease::parse), cas),
        Err(_) => (None, None),
    }
}

fn vm_id(state: &PluginState) -> u64 {
    state.key_sync.try_borrow().map_or(0, |s| s.vm_id)
}

/// Starts the key fetches that are due, from the root context: only those this VM wins
/// the lease for, so the proxy sends one callout where each VM would have sent its own.
pub(super) fn dispatch_due(state: &PluginState, now: UnixTime) {
    let me = vm_id(state);
    let providers = match state.engine.try_borrow() {
        Ok(engine) => engine.keyring().remote_providers(),
        Err(_) => return,
    };
    let stored: HashMap<ProviderId, (Option<Lease>, Option<u32>)> = providers
        .into_iter()
        .map(|p| (p, read_lease(state, p)))
        .collect();
    let due = match state.engine.try_borrow_mut() {
        Ok(mut engine) => engine.keyring_mut().poll_shared_fetches(
            now.millis(),
            |p| stored.get(&p).and_then(|(lease, _)| *lease),
            me,
        ),
        Err(_) => return,
    };
    for (provider, callout, claim) in due {
        let cas = stored.get(&provider).and_then(|(_, cas)| *cas);
        let taken = lease_key(state, provider).is_some_and(|key| {
            hostcalls::set_shared_data(&key, Some(&claim.encode()), cas).is_ok()
        });
        if !taken {
            // Another VM claimed it between our read and our write: it fetches for us.
            if let Ok(mut engine) = state.engine.try_borrow_mut() {
                engine.keyring_mut().lost_lease(provider);
            }
            continue;
        }
        if let Err(failure) = callouts::dispatch(state, &callout, CalloutOwner::Keys(provider)) {
            if let Ok(mut engine) = state.engine.try_borrow_mut() {
                engine
                    .keyring_mut()
                    .fetch_failed(provider, now.secs(), failure);
            }
            state.metrics.fetch_failed();
            release_lease(state, provider);
        }
    }
}

/// Hands the lease back after this VM's fetch ended, with what the proxy should know of
/// its outcome. Left alone if another VM holds it now (ours had lapsed).
fn release_lease(state: &PluginState, provider: ProviderId) {
    let Some(key) = lease_key(state, provider) else {
        return;
    };
    let released = match state.engine.try_borrow() {
        Ok(engine) => engine.keyring().released_lease(provider),
        Err(_) => None,
    };
    let Some(released) = released else {
        return;
    };
    let (current, cas) = read_lease(state, provider);
    if current.is_some_and(|l| l.held_by_other(vm_id(state), now_or_epoch().millis())) {
        return;
    }
    if let Err(status) = hostcalls::set_shared_data(&key, Some(&released.encode()), cas) {
        log::debug!("portcullis: fetch lease not released: {status:?}");
    }
}

/// Handles the answer to `provider`'s key fetch, then wakes whoever waited for it.
pub(super) fn fetch_answered(
    state: &PluginState,
    provider: ProviderId,
    result: &CalloutResult,
    root_id: u32,
) {
    let now = now_or_epoch();
    let outcome = match state.engine.try_borrow_mut() {
        Ok(mut engine) => engine
            .keyring_mut()
            .fetch_result(provider, now.secs(), result),
        Err(_) => return,
    };
    let name = state
        .engine
        .try_borrow()
        .ok()
        .and_then(|e| {
            e.policy()
                .providers
                .get(provider.index())
                .map(|p| p.name.clone())
        })
        .unwrap_or_default();
    let mut failure = None;
    match outcome {
        Ok(FetchProgress::Discovered(endpoint)) => {
            log::info!(
                "portcullis: provider {name}: discovery names JWKS {}",
                endpoint.uri
            );
            dispatch_due(state, now);
            // Half-way: whoever waits for keys waits for the JWKS fetch just sent.
            after_key_change(state, root_id, None);
            return;
        }
        Ok(FetchProgress::Keys(k)) => {
            log::info!(
                "portcullis: provider {name}: {} key(s) fetched, next refresh in {} s",
                k.keys.len(),
                k.refresh_at.saturating_sub(now.secs())
            );
            for issue in &k.issues {
                log::warn!("portcullis: provider {name}: skipped JWKS {issue}");
            }
            state.metrics.fetch_ok();
            publish(state, provider, &k.document, now.secs(), k.refresh_at);
        }
        Err(e) => {
            log::warn!("portcullis: provider {name}: key fetch failed: {e}");
            state.metrics.fetch_failed();
            failure = Some(e);
        }
    }
    release_lease(state, provider);
    report(state, provider, now.secs());
    say_availability(state, provider, &name, failure.as_ref());
    after_key_change(state, root_id, Some(provider));
}

fn publish(state: &PluginState, provider: ProviderId, document: &[u8], now: u64, refresh_at: u64) {
    let Some(key) = shared_key(state, provider) else {
        return;
    };
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
            if let (Ok((_, Some(cas))), Ok(mut sync)) = (
                hostcalls::get_shared_data(&key),
                state.key_sync.try_borrow_mut(),
            ) {
                sync.seen_cas.insert(provider, cas);
            }
        }
        // Another VM published in between; its keys are picked up on the next tick.
        Err(status) => log::debug!("portcullis: shared keys not published: {status:?}"),
    }
}

/// Installs keys other VMs published; returns the providers that got new keys.
pub(super) fn adopt_shared(state: &PluginState, now: u64) -> Vec<ProviderId> {
    let mut changed = Vec::new();
    let providers = match state.engine.try_borrow() {
        Ok(engine) => engine.keyring().remote_providers(),
        Err(_) => return changed,
    };
    for provider in providers {
        let Some(key) = shared_key(state, provider) else {
            continue;
        };
        let Ok((Some(value), Some(cas))) = hostcalls::get_shared_data(&key) else {
            continue;
        };
        match state.key_sync.try_borrow_mut() {
            Ok(mut sync) => {
                if sync.seen_cas.insert(provider, cas) == Some(cas) {
                    continue;
                }
            }
            Err(_) => continue,
        }
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
        let adopted = match state.engine.try_borrow_mut() {
            Ok(mut engine) => {
                engine
                    .keyring_mut()
                    .adopt_shared(provider, jwks.as_bytes(), fetched_at, refresh_at)
            }
            Err(_) => continue,
        };
        match adopted {
            Ok(true) => changed.push(provider),
            Ok(false) => {}
            Err(e) => log::warn!("portcullis: shared keys under {key} refused: {e}"),
        }
        report(state, provider, now);
    }
    changed
}

/// Logs a provider's passage into and out of "no keys, IdP failing" (where its requests
/// get 503 `keys_unavailable`), once per change of state.
fn say_availability(
    state: &PluginState,
    provider: ProviderId,
    name: &str,
    failure: Option<&crate::jwks_fetch::FetchError>,
) {
    let Ok(engine) = state.engine.try_borrow() else {
        return;
    };
    let ring = engine.keyring();
    let failing = ring.fetcher(provider).is_some_and(|f| f.failures() > 0);
    let unavailable = ring.keys(provider).is_none() && failing;
    let Ok(mut sync) = state.key_sync.try_borrow_mut() else {
        return;
    };
    if unavailable && sync.unavailable.insert(provider) {
        let why = failure.map_or_else(String::new, |e| format!(" ({e})"));
        log::warn!(
            "portcullis: provider {name}: no keys to verify with{why}; its requests get 503 \
             keys_unavailable until a fetch succeeds"
        );
    } else if !unavailable && ring.keys(provider).is_some() && sync.unavailable.remove(&provider) {
        log::info!("portcullis: provider {name}: keys available again");
    }
}

fn report(state: &PluginState, provider: ProviderId, now: u64) {
    let Ok(engine) = state.engine.try_borrow() else {
        return;
    };
    let ring = engine.keyring();
    let keys = ring.keys(provider).map_or(0, |k| k.len());
    let age = ring
        .fetcher(provider)
        .and_then(|f| f.fetched_at())
        .map(|f| now.saturating_sub(f));
    if let Some(p) = engine.policy().providers.get(provider.index()) {
        state.metrics.key_state(&p.name, keys, age);
    }
}

/// Wakes the requests held for `provider` (and every request whose wait ran out), then
/// sets the tick: fast while keys are missing or requests are held.
pub(super) fn after_key_change(state: &PluginState, root_id: u32, provider: Option<ProviderId>) {
    let now = now_or_epoch();
    wake(state, root_id, provider, now);
    let (missing, held) = match state.engine.try_borrow() {
        Ok(engine) => {
            let ring = engine.keyring();
            let missing = ring
                .remote_providers()
                .into_iter()
                .any(|p| ring.keys(p).is_none());
            (missing, engine.suspended() > 0)
        }
        Err(_) => (true, true),
    };
    let tick = if missing || held {
        FAST_TICK
    } else {
        SLOW_TICK
    };
    let _ = hostcalls::set_tick_period(tick);
}

/// Resumes, each in its own HTTP context, every request held for `provider`'s keys and
/// every request whose wait ran out; then returns to the root context.
fn wake(state: &PluginState, root_id: u32, provider: Option<ProviderId>, now: UnixTime) {
    let due: Vec<(Ticket, Resumption)> = match state.engine.try_borrow() {
        Ok(engine) => {
            let ready = provider.map(|p| engine.waiting_for(p)).unwrap_or_default();
            let mut due: Vec<(Ticket, Resumption)> =
                ready.iter().map(|t| (*t, Resumption::Keys)).collect();
            for t in engine.overdue(now) {
                if !ready.contains(&t) {
                    due.push((t, Resumption::TimedOut));
                }
            }
            // Tickets grow with time: this is the order the requests arrived in.
            due.sort_by_key(|(t, _)| *t);
            due
        }
        Err(_) => return,
    };
    for (ticket, resumption) in due {
        let context = state
            .held
            .try_borrow_mut()
            .ok()
            .and_then(|mut h| h.remove(&ticket));
        let Some(context_id) = context else {
            // No stream holds it any more: nothing to resume, only memory to free.
            if let Ok(mut engine) = state.engine.try_borrow_mut() {
                engine.cancel(ticket);
            }
            continue;
        };
        if hostcalls::set_effective_context(context_id).is_err() {
            // The client went away.
            if let Ok(mut engine) = state.engine.try_borrow_mut() {
                engine.cancel(ticket);
            }
            continue;
        }
        let next = match state.engine.try_borrow_mut() {
            Ok(mut engine) => engine.resume(ticket, resumption, now),
            Err(_) => None,
        };
        if let Some(eval) = next {
            if enact(state, eval, context_id, now) == Flow::Forward {
                if let Err(s) = hostcalls::resume_http_request() {
                    log::warn!("portcullis: cannot resume request: {s:?}");
                }
            }
        }
    }
    let _ = hostcalls::set_effective_context(root_id);
}
