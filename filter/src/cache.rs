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

/// A bounded map from token hash to verified claims, evicting oldest-inserted first.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<TokenHash, VerifiedToken>,
    order: VecDeque<TokenHash>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The verified token for this hash, if cached and current now. An expired entry is
    /// dropped; one that is not valid yet stays for later.
    pub fn get(&mut self, hash: &TokenHash, now: u64) -> Option<VerifiedToken> {
        let entry = self.entries.get(hash)?;
        if entry.is_current(now) {
            return Some(entry.clone());
        }
        if entry.valid_until.is_some_and(|u| now > u) {
            self.entries.remove(hash);
        }
        None
    }

    /// Remembers a verified token.
    pub fn insert(&mut self, hash: TokenHash, token: VerifiedToken) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(hash, token).is_none() {
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
        // `order` may hold hashes already dropped by `get`; keep it from growing unbounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|h| entries.contains_key(h));
        }
    }

    /// Forgets every token verified by `provider` (its keys changed).
    pub fn forget_provider(&mut self, provider: usize) {
        self.entries.retain(|_, v| v.provider != provider);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
}
