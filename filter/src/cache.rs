//! The verified-token cache: one verification per token, not per request.
//!
//! Keyed by the token itself: the map hashes it with std's randomly keyed SipHash and
//! compares it in full on a hit, so a forged token can only hit an entry by being
//! byte-identical to a token that verified, and a hit costs no cryptographic hash (SHA-256
//! of a 1 KiB token is several microseconds inside a VM). Entries remember the time bounds
//! of the token, which are re-checked on every hit.

use crate::keyring::ProviderId;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// A token as a cache key: shared between the map and the eviction order.
pub type TokenKey = Rc<str>;

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The provider that verified it.
    pub provider: ProviderId,
    /// The verified payload.
    pub claims: Rc<Map<String, Value>>,
    /// `exp` + skew: the last second the token may be used.
    pub valid_until: Option<u64>,
    /// `nbf` - skew: the first second the token may be used.
    pub valid_from: Option<u64>,
    /// The token's fingerprint for logs (see [`fingerprint`]).
    pub fingerprint: Rc<str>,
}

/// The first 12 hex digits of the token's SHA-256: correlates log lines without revealing
/// the token.
pub fn fingerprint(token: &str) -> Rc<str> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    digest
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

impl VerifiedToken {
    /// True when `now` is inside the token's validity window.
    pub fn is_current(&self, now: u64) -> bool {
        self.valid_until.is_none_or(|u| now <= u) && self.valid_from.is_none_or(|f| now >= f)
    }
}

/// A map from token hash to `V` holding at most `capacity` entries, evicting the
/// oldest-inserted first.
#[derive(Debug)]
struct Bounded<V> {
    capacity: usize,
    entries: HashMap<TokenKey, V>,
    order: VecDeque<TokenKey>,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, token: TokenKey, value: V) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(Rc::clone(&token), value).is_none() {
            self.order.push_back(token);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        // `order` may hold hashes already removed; keep it from growing unbounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|h| entries.contains_key(h));
        }
    }
}

/// A bounded map from token hash to verified claims.
#[derive(Debug)]
pub struct TokenCache {
    map: Bounded<VerifiedToken>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            map: Bounded::new(capacity),
        }
    }

    /// The verified token, if cached and current now. An expired entry is dropped; one
    /// that is not valid yet stays for later.
    pub fn get(&mut self, token: &str, now: u64) -> Option<VerifiedToken> {
        let entry = self.map.entries.get(token)?;
        if entry.is_current(now) {
            return Some(entry.clone());
        }
        if entry.valid_until.is_some_and(|u| now > u) {
            self.map.entries.remove(token);
        }
        None
    }

    /// Remembers a verified token.
    pub fn insert(&mut self, token: TokenKey, verified: VerifiedToken) {
        self.map.insert(token, verified);
    }

    /// Forgets every token verified by `provider` (its keys changed).
    pub fn forget_provider(&mut self, provider: ProviderId) {
        self.map.entries.retain(|_, v| v.provider != provider);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.map.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.entries.is_empty()
    }
}

/// Tokens whose signature did not verify, so a forged token repeated costs a lookup, not
/// a signature check. Only signature failures go here: they cannot change while the keys
/// stay the same, and all of them are forgotten when any provider's keys change.
#[derive(Debug)]
pub struct RejectedTokens {
    map: Bounded<Rc<str>>,
}

impl RejectedTokens {
    /// A set holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        RejectedTokens {
            map: Bounded::new(capacity),
        }
    }

    /// The fingerprint of this token if its signature was refused under the current keys.
    pub fn get(&self, token: &str) -> Option<Rc<str>> {
        self.map.entries.get(token).cloned()
    }

    /// Remembers a token whose signature the keys refused.
    pub fn insert(&mut self, token: TokenKey, fingerprint: Rc<str>) {
        self.map.insert(token, fingerprint);
    }

    /// Forgets every refusal (keys changed).
    pub fn clear(&mut self) {
        self.map.entries.clear();
        self.map.order.clear();
    }

    /// Number of remembered refusals.
    pub fn len(&self) -> usize {
        self.map.entries.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(provider: usize, from: Option<u64>, until: Option<u64>) -> VerifiedToken {
        VerifiedToken {
            provider: ProviderId::from_index(provider),
            claims: Rc::new(Map::new()),
            valid_until: until,
            valid_from: from,
            fingerprint: fingerprint("t"),
        }
    }

    fn key(i: u8) -> TokenKey {
        format!("token-{i}").into()
    }

    #[test]
    fn time_is_rechecked_on_hit() {
        let mut c = TokenCache::new(4);
        c.insert(key(1), tok(0, Some(100), Some(200)));
        assert!(c.get(&key(1), 99).is_none());
        assert!(c.get(&key(1), 150).is_some());
        assert!(c.get(&key(1), 201).is_none());
        assert!(c.get(&key(1), 150).is_none(), "expired entries are dropped");
    }

    #[test]
    fn capacity_is_bounded_oldest_first() {
        let mut c = TokenCache::new(2);
        for i in 0..5u8 {
            c.insert(key(i), tok(0, None, None));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&key(0), 0).is_none());
        assert!(c.get(&key(4), 0).is_some());
        assert!(c.get(&key(3), 0).is_some());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = TokenCache::new(0);
        c.insert(key(1), tok(0, None, None));
        assert!(c.is_empty());
    }

    #[test]
    fn forgetting_a_provider_keeps_the_others() {
        let mut c = TokenCache::new(8);
        c.insert(key(1), tok(0, None, None));
        c.insert(key(2), tok(1, None, None));
        c.forget_provider(ProviderId::from_index(0));
        assert!(c.get(&key(1), 0).is_none());
        assert!(c.get(&key(2), 0).is_some());
    }

    #[test]
    fn rejections_are_bounded_and_cleared() {
        let mut r = RejectedTokens::new(2);
        for i in 0..4u8 {
            r.insert(key(i), fingerprint("x"));
        }
        assert_eq!(r.len(), 2);
        assert!(r.get(&key(1)).is_none() && r.get(&key(2)).is_some() && r.get(&key(3)).is_some());
        r.clear();
        assert!(r.is_empty() && r.get(&key(3)).is_none());
        let mut none = RejectedTokens::new(0);
        none.insert(key(9), fingerprint("x"));
        assert!(none.is_empty());
    }
}
