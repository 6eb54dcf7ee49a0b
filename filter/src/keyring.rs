//! Every provider's verification keys: given inline, or fetched from the IdP with the
//! state of that fetch. The decider reads keys from here; the adapter drives the fetches.
//!
//! Each slot is one [`ProviderKeys`] value, so "remote keys without a fetcher" cannot be
//! represented. Key changes are counted (a generation for any change, a revision per
//! provider for changes that remove a key), so the decider can drop what it cached under
//! older keys without the key ring knowing about its caches.

use crate::alg::Alg;
use crate::callout::{Callout, CalloutFailure, CalloutResult, Method};
use crate::config::defaults::FETCH_TIMEOUT_MS;
use crate::fetch_lease::Lease;
use crate::jwks_fetch::{max_age, FetchError, FetchProgress, KeyFetcher, MAX_DOCUMENT_BYTES};
use crate::keys::{JwksError, KeySet};
use crate::policy::{KeySource, Policy};
use crate::time::UnixTime;
use std::collections::VecDeque;

/// Kids a fetch proved absent, remembered per provider: a replayed forged kid is refused at
/// once instead of being held for the next re-fetch.
const MAX_ABSENT_KIDS: usize = 256;

/// A provider's position in the policy: valid for the key ring (and engine) built from
/// that policy, and only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(usize);

impl ProviderId {
    /// The index into [`Policy::providers`].
    pub const fn index(self) -> usize {
        self.0
    }

    /// The id of `policy.providers[index]`. Ids made up by a caller are harmless: every
    /// lookup by id is checked.
    pub const fn from_index(index: usize) -> ProviderId {
        ProviderId(index)
    }
}

/// Where one provider's keys stand.
#[derive(Debug, Clone)]
pub enum ProviderKeys {
    /// Keys from the configuration; they never change.
    Inline(KeySet),
    /// Keys from the IdP: the current set (none before the first fetch, or once they are
    /// too stale to serve) and the fetch state machine.
    Remote {
        /// Keys in use.
        keys: Option<KeySet>,
        /// When and what to fetch next (boxed: it holds the endpoints and settings).
        fetcher: Box<KeyFetcher>,
    },
}

#[derive(Debug)]
struct Slot {
    keys: ProviderKeys,
    algorithms: Vec<Alg>,
    /// Bumped whenever new keys do not include all of the old ones.
    revision: u64,
    /// Kids a completed fetch did not bring, with when that stops being news (Unix
    /// seconds): oldest first, at most [`MAX_ABSENT_KIDS`].
    absent_kids: VecDeque<(String, u64)>,
}

/// What the decider can do with a provider's keys right now.
#[derive(Debug)]
pub enum KeyAvailability<'a> {
    /// Verify with these.
    Ready(&'a KeySet),
    /// No usable keys; a fetch is asked for: the request should wait for it.
    Fetching,
    /// No usable keys and the IdP failed recently: answer 503 now.
    Unavailable,
}

/// The keys of every provider of one policy.
#[derive(Debug)]
pub struct KeyRing {
    slots: Vec<Slot>,
    /// Bumped on every install of keys.
    generation: u64,
}

impl KeyRing {
    /// Inline keys installed; remote ones waiting for their first fetch.
    pub fn new(policy: &Policy) -> KeyRing {
        let slots = policy
            .providers
            .iter()
            .map(|p| Slot {
                keys: match &p.keys {
                    KeySource::Inline(set) => ProviderKeys::Inline(set.clone()),
                    KeySource::Remote(settings) => ProviderKeys::Remote {
                        keys: None,
                        fetcher: Box::new(KeyFetcher::new((**settings).clone())),
                    },
                },
                algorithms: p.requirements.algorithms.clone(),
                revision: 0,
                absent_kids: VecDeque::new(),
            })
            .collect();
        KeyRing {
            slots,
            generation: 0,
        }
    }

    /// Providers whose keys are fetched, in policy order.
    pub fn remote_providers(&self) -> Vec<ProviderId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.keys, ProviderKeys::Remote { .. }))
            .map(|(i, _)| ProviderId(i))
            .collect()
    }

    /// A provider's slot.
    pub fn get(&self, provider: ProviderId) -> Option<&ProviderKeys> {
        self.slots.get(provider.0).map(|s| &s.keys)
    }

    /// Keys currently installed for a provider.
    pub fn keys(&self, provider: ProviderId) -> Option<&KeySet> {
        match self.get(provider)? {
            ProviderKeys::Inline(set) => Some(set),
            ProviderKeys::Remote { keys, .. } => keys.as_ref(),
        }
    }

    /// A provider's fetch state, if its keys are remote.
    pub fn fetcher(&self, provider: ProviderId) -> Option<&KeyFetcher> {
        match self.get(provider)? {
            ProviderKeys::Inline(_) => None,
            ProviderKeys::Remote { fetcher, .. } => Some(fetcher),
        }
    }

    fn fetcher_mut(&mut self, provider: ProviderId) -> Option<&mut KeyFetcher> {
        match &mut self.slots.get_mut(provider.0)?.keys {
            ProviderKeys::Inline(_) => None,
            ProviderKeys::Remote { fetcher, .. } => Some(fetcher),
        }
    }

    /// Counts every install of keys: when it has not moved, nothing cached is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counts the installs for `provider` that removed a key: tokens verified under an
    /// earlier revision must be verified again.
    pub fn revision(&self, provider: ProviderId) -> u64 {
        self.slots.get(provider.0).map_or(0, |s| s.revision)
    }

    /// Replaces a provider's keys (inline keys included, for tests and tools).
    pub fn set_keys(&mut self, provider: ProviderId, new: KeySet) {
        let Some(slot) = self.slots.get_mut(provider.0) else {
            return;
        };
        let current = match &mut slot.keys {
            ProviderKeys::Inline(set) => Some(set),
            ProviderKeys::Remote { keys, .. } => keys.as_mut(),
        };
        let kept = current.as_ref().is_some_and(|old| old.is_kept_by(&new));
        if !kept {
            slot.revision += 1;
        }
        match &mut slot.keys {
            ProviderKeys::Inline(set) => *set = new,
            ProviderKeys::Remote { keys, .. } => *keys = Some(new),
        }
        self.generation += 1;
    }

    /// Whether `provider`'s keys can be used now, and if not, whether to wait. Drops keys
    /// that are too stale to serve and asks for a fetch when there are none.
    pub fn availability(&mut self, provider: ProviderId, now: u64) -> KeyAvailability<'_> {
        let Some(slot) = self.slots.get_mut(provider.0) else {
            return KeyAvailability::Unavailable;
        };
        match &mut slot.keys {
            ProviderKeys::Inline(set) => KeyAvailability::Ready(set),
            ProviderKeys::Remote { keys, fetcher } => {
                // Tokens already verified under them stay cached: staleness is about
                // verifying new tokens with keys the IdP may have rotated away from.
                if fetcher.keys_too_stale(now) {
                    *keys = None;
                }
                match keys {
                    Some(set) => KeyAvailability::Ready(set),
                    None if fetcher.backing_off(now) => KeyAvailability::Unavailable,
                    None => {
                        fetcher.want_now();
                        KeyAvailability::Fetching
                    }
                }
            }
        }
    }

    /// A token named a `kid` that `provider` lacks. `Some(deadline)`: hold the request
    /// for the re-fetch that may bring the key (under way, or the next the rate limit
    /// permits). `None`: refuse it now, because the keys are inline or a fetch since the
    /// kid was last asked about proved it absent.
    pub fn unknown_kid(
        &mut self,
        provider: ProviderId,
        kid: Option<&str>,
        now: u64,
    ) -> Option<UnixTime> {
        let slot = self.slots.get_mut(provider.0)?;
        let ProviderKeys::Remote { fetcher, .. } = &mut slot.keys else {
            return None;
        };
        // A token without a kid was tried against every key: a re-fetch is its only hope,
        // like a new kid's.
        if let Some(kid) = kid {
            if slot
                .absent_kids
                .iter()
                .any(|(k, until)| k == kid && now < *until)
            {
                return None;
            }
        }
        Some(UnixTime::from_millis(fetcher.want_unknown_kid(now)))
    }

    /// A request held for `kid` was decided again after the fetch, and the kid is still
    /// not there: later requests with it are refused at once until the rate limit would
    /// permit another re-fetch.
    pub fn kid_absent(&mut self, provider: ProviderId, kid: Option<&str>, now: u64) {
        let Some(kid) = kid else {
            return;
        };
        let Some(slot) = self.slots.get_mut(provider.0) else {
            return;
        };
        let ProviderKeys::Remote { fetcher, .. } = &slot.keys else {
            return;
        };
        let until = fetcher.kid_refetch_at().max(now.saturating_add(1));
        slot.absent_kids.retain(|(k, u)| k != kid && now < *u);
        if slot.absent_kids.len() >= MAX_ABSENT_KIDS {
            slot.absent_kids.pop_front();
        }
        slot.absent_kids.push_back((kid.to_string(), until));
    }

    /// Callouts due now, one per provider at most, for a VM that fetches alone.
    pub fn poll_fetches(&mut self, now: u64) -> Vec<(ProviderId, Callout)> {
        self.poll_shared_fetches(now.saturating_mul(1000), |_| None, 0)
            .into_iter()
            .map(|(p, callout, _)| (p, callout))
            .collect()
    }

    /// Callouts due now, agreed with the proxy's other VMs: `lease` gives each provider's
    /// shared record, `me` names this VM. Each callout comes with the record to store
    /// (compare-and-swap) before it is sent.
    pub fn poll_shared_fetches(
        &mut self,
        now_ms: u64,
        lease: impl Fn(ProviderId) -> Option<Lease>,
        me: u64,
    ) -> Vec<(ProviderId, Callout, Lease)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let ProviderKeys::Remote { fetcher, .. } = &mut slot.keys else {
                continue;
            };
            let shared = lease(ProviderId(i));
            if let Some((req, claim)) = fetcher.poll_shared(now_ms, shared.as_ref(), me) {
                out.push((
                    ProviderId(i),
                    Callout {
                        cluster: req.cluster,
                        method: Method::Get,
                        authority: req.authority,
                        path: req.path,
                        headers: vec![
                            ("accept".into(), "application/json".into()),
                            (
                                "user-agent".into(),
                                concat!("portcullis/", env!("CARGO_PKG_VERSION")).into(),
                            ),
                        ],
                        body: None,
                        timeout_ms: req.timeout_ms,
                        max_response_bytes: MAX_DOCUMENT_BYTES,
                    },
                    claim,
                ));
            }
        }
        out
    }

    /// Another VM took `provider`'s lease first: the fetch is not sent.
    pub fn lost_lease(&mut self, provider: ProviderId) {
        if let Some(f) = self.fetcher_mut(provider) {
            f.lost_lease();
        }
    }

    /// The record to store after this VM's fetch for `provider` ended.
    pub fn released_lease(&self, provider: ProviderId) -> Option<Lease> {
        self.fetcher(provider).map(KeyFetcher::released_lease)
    }

    /// The callout for `provider` failed without a response.
    pub fn fetch_failed(
        &mut self,
        provider: ProviderId,
        now: u64,
        failure: CalloutFailure,
    ) -> Option<FetchError> {
        Some(self.fetcher_mut(provider)?.on_failure(now, failure))
    }

    /// A response to `provider`'s fetch; installs the keys it brings.
    pub fn fetch_response(
        &mut self,
        provider: ProviderId,
        now: u64,
        status: u16,
        cache_control: Option<&str>,
        body: &[u8],
    ) -> Result<FetchProgress, FetchError> {
        let algorithms = match self.slots.get(provider.0) {
            Some(s) => s.algorithms.clone(),
            None => return Err(FetchError::Unexpected),
        };
        let fetcher = self.fetcher_mut(provider).ok_or(FetchError::Unexpected)?;
        let progress = fetcher.on_response(
            now,
            status,
            cache_control.and_then(max_age),
            body,
            &algorithms,
        )?;
        if let FetchProgress::Keys(k) = &progress {
            self.set_keys(provider, k.keys.clone());
        }
        Ok(progress)
    }

    /// What became of `provider`'s fetch callout, whichever way it ended.
    pub fn fetch_result(
        &mut self,
        provider: ProviderId,
        now: u64,
        result: &CalloutResult,
    ) -> Result<FetchProgress, FetchError> {
        match result {
            Ok(response) if response.truncated && response.status == 200 => {
                let fetcher = self.fetcher_mut(provider).ok_or(FetchError::Unexpected)?;
                Err(fetcher.on_oversized(now))
            }
            Ok(response) => self.fetch_response(
                provider,
                now,
                response.status,
                response.header("cache-control"),
                &response.body,
            ),
            Err(failure) => Err(self
                .fetch_failed(provider, now, *failure)
                .unwrap_or(FetchError::Unexpected)),
        }
    }

    /// Keys another VM fetched and published. Installs them when they are newer than
    /// ours; returns whether they were installed.
    pub fn adopt_shared(
        &mut self,
        provider: ProviderId,
        document: &[u8],
        fetched_at: u64,
        refresh_at: u64,
    ) -> Result<bool, JwksError> {
        let Some(slot) = self.slots.get(provider.0) else {
            return Ok(false);
        };
        let ProviderKeys::Remote { fetcher, .. } = &slot.keys else {
            return Ok(false);
        };
        if !fetcher.accepts_shared(fetched_at) {
            return Ok(false);
        }
        let (keys, _) = KeySet::from_jwks(document, &slot.algorithms)?;
        if let Some(f) = self.fetcher_mut(provider) {
            f.adopt_shared(fetched_at, refresh_at);
        }
        self.set_keys(provider, keys);
        Ok(true)
    }

    /// Seconds a client should wait before retrying a request that found no keys.
    pub fn retry_after(&self, provider: ProviderId, now: u64) -> u64 {
        self.fetcher(provider).map_or(5, |f| f.retry_after(now))
    }

    /// How long a request may wait for `provider`'s keys, in milliseconds: discovery
    /// then JWKS is two callouts, plus a tick to notice the answer.
    pub fn wait_budget_ms(&self, provider: ProviderId) -> u64 {
        let timeout = self
            .fetcher(provider)
            .map_or(FETCH_TIMEOUT_MS.default, |f| f.settings().timeout_ms);
        timeout.saturating_mul(2).saturating_add(500)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::callout::CalloutResponse;
    use crate::config;
    use portcullis_testkit::{self as testkit, NOW};
    use serde_json::json;

    fn ring(keys: serde_json::Value) -> KeyRing {
        let mut provider = json!({"issuer": "https://idp.test", "audiences": ["api"]});
        provider
            .as_object_mut()
            .unwrap()
            .extend(keys.as_object().unwrap().clone());
        let cfg = json!({"providers": {"idp": provider}, "rules": [{"name": "all", "match": {"path": {"prefix": "/"}}}]});
        KeyRing::new(&config::parse(cfg.to_string().as_bytes()).unwrap().policy)
    }

    fn remote() -> KeyRing {
        ring(json!({"remote_jwks": {"cluster": "idp", "uri": "https://idp.test/keys"}}))
    }

    fn jwks(signers: &[&testkit::Signer]) -> Vec<u8> {
        json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
            .to_string()
            .into_bytes()
    }

    fn ok(status: u16, body: Vec<u8>, truncated: bool) -> CalloutResult {
        Ok(CalloutResponse {
            status,
            headers: vec![("Cache-Control".into(), "max-age=120".into())],
            body,
            truncated,
        })
    }

    const P: ProviderId = ProviderId(0);

    #[test]
    fn inline_keys_are_ready_and_never_fetched() {
        let mut r = ring(json!({"jwks": {"keys": [testkit::rsa().jwk()]}}));
        assert!(r.remote_providers().is_empty());
        assert!(matches!(r.availability(P, NOW), KeyAvailability::Ready(_)));
        assert!(r.poll_fetches(NOW).is_empty());
        assert_eq!(
            r.unknown_kid(P, Some("k"), NOW),
            None,
            "inline keys never wait"
        );
        assert!(r.get(ProviderId(7)).is_none());
    }

    #[test]
    fn fetch_callouts_are_described_for_any_host() {
        let mut r = remote();
        let due = r.poll_fetches(NOW);
        assert_eq!(due.len(), 1);
        let (p, c) = &due[0];
        assert_eq!(*p, P);
        assert_eq!(
            (
                c.cluster.as_str(),
                c.method,
                c.authority.as_str(),
                c.path.as_str()
            ),
            ("idp", Method::Get, "idp.test", "/keys")
        );
        assert_eq!(c.max_response_bytes, MAX_DOCUMENT_BYTES);
        assert!(r.poll_fetches(NOW).is_empty(), "single flight");
    }

    #[test]
    fn results_install_keys_and_count_revisions() {
        let mut r = remote();
        assert!(matches!(r.availability(P, NOW), KeyAvailability::Fetching));
        r.poll_fetches(NOW);
        let g0 = r.generation();
        let progress = r.fetch_result(P, NOW, &ok(200, jwks(&[testkit::rsa()]), false));
        let Ok(FetchProgress::Keys(k)) = progress else {
            panic!("{progress:?}");
        };
        assert_eq!(k.refresh_at, NOW + 120, "max-age read case-insensitively");
        assert!(r.generation() > g0);
        let rev = r.revision(P);
        // Same keys plus one: nothing verified under the old set needs verifying again.
        let es = testkit::es256();
        r.set_keys(
            P,
            KeySet::from_jwks(&jwks(&[testkit::rsa(), &es]), &Alg::ASYMMETRIC)
                .unwrap()
                .0,
        );
        assert_eq!(r.revision(P), rev);
        // A key removed: it does.
        r.set_keys(
            P,
            KeySet::from_jwks(&jwks(&[&es]), &Alg::ASYMMETRIC)
                .unwrap()
                .0,
        );
        assert_eq!(r.revision(P), rev + 1);
    }

    #[test]
    fn failures_and_oversized_documents_back_off() {
        let mut r = remote();
        r.poll_fetches(NOW);
        let e = r.fetch_result(P, NOW, &Err(CalloutFailure::ConnectFailed));
        assert!(
            matches!(
                e,
                Err(FetchError::NoAnswer {
                    failure: CalloutFailure::ConnectFailed,
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "Jwks fetch got no answer: the connection was refused or failed"
        );
        assert!(matches!(
            r.availability(P, NOW),
            KeyAvailability::Unavailable
        ));
        assert_eq!(r.retry_after(P, NOW), 1);
        let later = NOW + 5;
        assert_eq!(r.poll_fetches(later).len(), 1);
        let e = r.fetch_result(P, later, &ok(200, vec![b' '; 10], true));
        assert!(matches!(e, Err(FetchError::TooLarge(_))), "{e:?}");
        // A non-200 is reported as its status even when its body was long.
        assert_eq!(r.poll_fetches(later + 60).len(), 1);
        let e = r.fetch_result(P, later + 60, &ok(503, vec![], true));
        assert!(
            matches!(e, Err(FetchError::Status { status: 503, .. })),
            "{e:?}"
        );
    }

    #[test]
    fn shared_keys_are_adopted_unless_ours_are_newer() {
        let mut r = remote();
        assert!(r
            .adopt_shared(P, &jwks(&[testkit::rsa()]), NOW, NOW + 600)
            .unwrap());
        assert!(r.keys(P).is_some());
        assert!(!r
            .adopt_shared(P, &jwks(&[testkit::rsa()]), NOW - 1, NOW + 600)
            .unwrap());
        assert!(r.adopt_shared(P, b"{}", NOW + 1, NOW + 600).is_err());
        assert_eq!(r.wait_budget_ms(P), 2 * 5000 + 500);
    }

    #[test]
    fn vms_fetch_as_one_through_the_lease() {
        let (me, other) = (1, 2);
        let now_ms = NOW * 1000;
        let mut a = remote();
        let due = a.poll_shared_fetches(now_ms, |_| None, me);
        assert_eq!(due.len(), 1);
        let claim = due[0].2;
        assert_eq!((claim.holder, claim.until_ms), (me, now_ms + 5000 + 1000));
        // Another VM sees the claim: nothing for it to send while it holds.
        let mut b = remote();
        assert!(b
            .poll_shared_fetches(now_ms + 10, |_| Some(claim), other)
            .is_empty());
        assert!(matches!(b.availability(P, NOW), KeyAvailability::Fetching));
        // The holder's fetch fails; the record it writes back makes the proxy back off.
        a.fetch_result(P, NOW, &Err(CalloutFailure::TimedOut))
            .unwrap_err();
        let released = a.released_lease(P).unwrap();
        assert_eq!((released.holder, released.failures), (0, 1));
        assert!(b
            .poll_shared_fetches(now_ms + 20, |_| Some(released), other)
            .is_empty());
        assert!(matches!(
            b.availability(P, NOW),
            KeyAvailability::Unavailable
        ));
        // Once the backoff is over, either may claim; a lapsed claim is anyone's.
        let later = (released.retry_at) * 1000;
        assert_eq!(
            b.poll_shared_fetches(later, |_| Some(released), other)
                .len(),
            1
        );
        let mut c = remote();
        let lapsed = Lease {
            until_ms: later,
            ..claim
        };
        assert_eq!(c.poll_shared_fetches(later, |_| Some(lapsed), 3).len(), 1);
        // Lost the compare-and-swap: not sent, not a failure, still wanted.
        c.lost_lease(P);
        assert_eq!(c.fetcher(P).unwrap().failures(), 0);
        assert!(c.fetcher(P).unwrap().fetch_pending());
    }
}
