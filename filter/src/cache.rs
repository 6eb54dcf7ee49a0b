//! The verified-token cache: one verification per token, not per request.
//!
//! Keyed by the SHA-256 of the token, so a forged token can only hit an entry by finding
//! a SHA-256 collision with a token that verified. Entries remember the time bounds of the
//! token, which are re-checked on every hit.

use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Index of the provider that verified it.
    pub provider: usize,
    /// The verified payload.
    pub claims: Rc<Map<String, Value>>,
    /// `exp` + skew: the last second the token may be used.
    pub valid_until: Option<u64>,
    /// `nbf` - skew: the first second the token may be used.
    pub valid_from: Option<u64>,
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
    entries: HashMap<TokenHash, V>,
    order: VecDeque<TokenHash>,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, hash: TokenHash, value: V) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(hash, value).is_none() {
            self.order.push_back(hash);
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

    /// The verified token for this hash, if cached and current now. An expired entry is
    /// dropped; one that is not valid yet stays for later.
    pub fn get(&mut self, hash: &TokenHash, now: u64) -> Option<VerifiedToken> {
        let entry = self.map.entries.get(hash)?;
        if entry.is_current(now) {
            return Some(entry.clone());
        }
        if entry.valid_until.is_some_and(|u| now > u) {
            self.map.entries.remove(hash);
        }
        None
    }

    /// Remembers a verified token.
    pub fn insert(&mut self, hash: TokenHash, token: VerifiedToken) {
        self.map.insert(hash, token);
    }

    /// Forgets every token verified by `provider` (its keys changed).
    pub fn forget_provider(&mut self, provider: usize) {
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
    map: Bounded<()>,
}

impl RejectedTokens {
    /// A set holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        RejectedTokens {
            map: Bounded::new(capacity),
        }
    }

    /// True when this token's signature was refused under the current keys.
    pub fn contains(&self, hash: &TokenHash) -> bool {
        self.map.entries.contains_key(hash)
    }

    /// Remembers a token whose signature the keys refused.
    pub fn insert(&mut self, hash: TokenHash) {
        self.map.insert(hash, ());
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
            provider,
            claims: Rc::new(Map::new()),
            valid_until: until,
            valid_from: from,
        }
    }

    #[test]
    fn time_is_rechecked_on_hit() {
        let mut c = TokenCache::new(4);
        c.insert([1; 32], tok(0, Some(100), Some(200)));
        assert!(c.get(&[1; 32], 99).is_none());
        assert!(c.get(&[1; 32], 150).is_some());
        assert!(c.get(&[1; 32], 201).is_none());
        assert!(
            c.get(&[1; 32], 150).is_none(),
            "expired entries are dropped"
        );
    }

    #[test]
    fn capacity_is_bounded_oldest_first() {
        let mut c = TokenCache::new(2);
        for i in 0..5u8 {
            c.insert([i; 32], tok(0, None, None));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&[0; 32], 0).is_none());
        assert!(c.get(&[4; 32], 0).is_some());
        assert!(c.get(&[3; 32], 0).is_some());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = TokenCache::new(0);
        c.insert([1; 32], tok(0, None, None));
        assert!(c.is_empty());
    }

    #[test]
    fn forgetting_a_provider_keeps_the_others() {
        let mut c = TokenCache::new(8);
        c.insert([1; 32], tok(0, None, None));
        c.insert([2; 32], tok(1, None, None));
        c.forget_provider(0);
        assert!(c.get(&[1; 32], 0).is_none());
        assert!(c.get(&[2; 32], 0).is_some());
    }

    #[test]
    fn rejections_are_bounded_and_cleared() {
        let mut r = RejectedTokens::new(2);
        for i in 0..4u8 {
            r.insert([i; 32]);
        }
        assert_eq!(r.len(), 2);
        assert!(!r.contains(&[1; 32]) && r.contains(&[2; 32]) && r.contains(&[3; 32]));
        r.clear();
        assert!(r.is_empty() && !r.contains(&[3; 32]));
        let mut none = RejectedTokens::new(0);
        none.insert([9; 32]);
        assert!(none.is_empty());
    }
}
