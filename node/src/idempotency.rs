//! Idempotent publishing: the owner of a channel remembers, for a window,
//! which idempotency keys it has already published under and where, so that
//! a backend retrying a publish (after a timeout, through another gateway)
//! gets the original position back instead of a second delivery.
//!
//! Sans-IO: the caller passes the clock. Entries leave in insertion order,
//! which is also expiry order because the window is the same for all; the
//! number of entries is capped, the oldest giving way first.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::Duration,
};

use tokio::time::Instant;

/// Longest idempotency key accepted, in bytes: keys are held in memory at
/// the owner for the whole window.
pub const MAX_KEY_LEN: usize = 256;

/// Whether `key` may be used as an idempotency key.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN
}

/// Remembers `key → value` for `window`, at most `capacity` entries.
#[derive(Debug)]
pub struct IdempotencyCache<K, V> {
    window: Duration,
    capacity: usize,
    entries: HashMap<K, V>,
    /// Keys with their expiry, oldest first; always the same keys as `entries`.
    order: VecDeque<(Instant, K)>,
    /// Entries dropped before their window ended because the cache was full.
    evicted_early: u64,
    /// The estimated size of one entry, for the memory budget.
    weigh: fn(&K) -> usize,
    bytes: usize,
}

impl<K: Eq + Hash + Clone, V> IdempotencyCache<K, V> {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            evicted_early: 0,
            weigh: |_| 0,
            bytes: 0,
        }
    }

    /// The same cache, keeping a running total of `weigh` over its keys.
    pub fn with_weigher(mut self, weigh: fn(&K) -> usize) -> Self {
        self.weigh = weigh;
        self
    }

    /// The total of the weigher over the keys held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value remembered for `key`, if its window has not passed.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.expire(now);
        self.entries.get(key)
    }

    /// Remembers `key → value` from `now`. A key already present keeps its
    /// first value: callers look up before they insert.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.expire(now);
        if self.capacity == 0 || self.window.is_zero() || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
            self.bytes -= (self.weigh)(&oldest);
            self.evicted_early += 1;
        }
        self.bytes += (self.weigh)(&key);
        self.order.push_back((now + self.window, key.clone()));
        self.entries.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries were dropped early because the cache was full: a
    /// retry of one of those would be published again.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    /// Forgets keys whose window has passed.
    pub fn expire(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
                self.bytes -= (self.weigh)(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn remembers_within_the_window_only() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(5 * MIN, 10);
        c.insert("k", 1, t0);
        assert_eq!(c.get(&"k", t0 + 4 * MIN), Some(&1));
        assert_eq!(c.get(&"k", t0 + 5 * MIN), None);
        assert!(c.is_empty());
    }

    #[test]
    fn first_value_wins() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 10);
        c.insert("k", 1, t0);
        c.insert("k", 2, t0);
        assert_eq!(c.get(&"k", t0), Some(&1));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn capacity_is_a_hard_bound_oldest_go_first() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 3);
        for i in 0..5u32 {
            c.insert(i, i, t0 + Duration::from_millis(i.into()));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted_early(), 2);
        assert_eq!(c.get(&0, t0), None);
        assert_eq!(c.get(&1, t0), None);
        assert_eq!(c.get(&4, t0 + Duration::from_millis(4)), Some(&4));
    }

    #[test]
    fn expired_entries_make_room_without_counting_as_evictions() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 2);
        c.insert("a", 1, t0);
        c.insert("b", 2, t0);
        c.insert("c", 3, t0 + 2 * MIN);
        assert_eq!(c.len(), 1);
        assert_eq!(c.evicted_early(), 0);
    }

    #[test]
    fn zero_window_or_capacity_disables() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(Duration::ZERO, 10);
        c.insert("k", 1, t0);
        assert_eq!(c.get(&"k", t0), None);
        let mut c = IdempotencyCache::new(MIN, 0);
        c.insert("k", 1, t0);
        assert_eq!(c.get(&"k", t0), None);
    }

    #[test]
    fn bytes_follow_inserts_expiry_and_eviction() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 2).with_weigher(|k: &&str| k.len());
        c.insert("aa", 1, t0);
        c.insert("bbb", 2, t0);
        assert_eq!(c.bytes(), 5);
        c.insert("c", 3, t0);
        assert_eq!(c.bytes(), 4, "aa evicted early");
        c.get(&"c", t0 + MIN);
        assert_eq!(c.bytes(), 0, "all expired");
    }

    #[test]
    fn key_validity() {
        assert!(valid_key("order-42"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
    }
}
