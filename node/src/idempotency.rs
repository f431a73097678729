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

/// Keys a gateway gives publishes that came without one, so that it may ask
/// a channel's next owner again without publishing twice
/// (docs/replication.md, "Gateways"), begin with this character; a client's
/// key may not (the server API refuses it).
pub const GATEWAY_KEY_PREFIX: char = '\u{1}';

/// How long a gateway's key is remembered: its retries end within one
/// call's deadline (seconds), so the clients' window (minutes) would only
/// hold memory.
pub const GATEWAY_KEY_WINDOW: Duration = Duration::from_secs(30);

/// Whether `key` is a gateway's (see [`GATEWAY_KEY_PREFIX`]).
pub fn is_gateway_key(key: &str) -> bool {
    key.starts_with(GATEWAY_KEY_PREFIX)
}

/// A broker's keys: clients' for the configured window, gateways' for
/// [`GATEWAY_KEY_WINDOW`], each in a cache of its own with its own cap, so
/// that gateways' keys (one per publish without a key) never push a
/// client's out before its window ends.
#[derive(Debug)]
pub struct KeyWindows<G, V> {
    clients: IdempotencyCache<G, String, V>,
    gateways: IdempotencyCache<G, String, V>,
}

impl<G: Eq + Hash + Clone, V: Clone> KeyWindows<G, V> {
    /// Clients' keys for `window`; at most `capacity` of each kind.
    pub fn new(window: Duration, capacity: usize, weigh: fn(&(G, String)) -> usize) -> Self {
        Self {
            clients: IdempotencyCache::new(window, capacity).with_weigher(weigh),
            gateways: IdempotencyCache::new(GATEWAY_KEY_WINDOW, capacity).with_weigher(weigh),
        }
    }

    fn of(&mut self, key: &str) -> &mut IdempotencyCache<G, String, V> {
        if is_gateway_key(key) {
            &mut self.gateways
        } else {
            &mut self.clients
        }
    }

    /// [`IdempotencyCache::get`] in the key's window.
    pub fn get(&mut self, key: &(G, String), now: Instant) -> Option<&V> {
        self.of(&key.1).get(key, now)
    }

    /// [`IdempotencyCache::insert`] in the key's window.
    pub fn insert(&mut self, key: (G, String), value: V, now: Instant) {
        self.of(&key.1).insert(key, value, now);
    }

    /// [`IdempotencyCache::forget`] in the key's window.
    pub fn forget(&mut self, key: &(G, String)) {
        self.of(&key.1).forget(key);
    }

    /// [`IdempotencyCache::forget_group`] in both windows.
    pub fn forget_group(&mut self, group: &G) {
        self.clients.forget_group(group);
        self.gateways.forget_group(group);
    }

    /// The newest `max` keys of `group` of each kind, still in their
    /// windows: what a channel's next owner needs (a flood of gateways'
    /// keys does not crowd clients' out).
    pub fn newest_of(&mut self, group: &G, max: usize, now: Instant) -> Vec<(String, V)> {
        let mut keys = self.clients.newest_of(group, max, now);
        keys.extend(self.gateways.newest_of(group, max, now));
        keys
    }

    pub fn expire(&mut self, now: Instant) {
        self.clients.expire(now);
        self.gateways.expire(now);
    }

    pub fn bytes(&self) -> usize {
        self.clients.bytes() + self.gateways.bytes()
    }
}

/// Remembers `(group, key) → value` for `window`, at most `capacity`
/// entries in all. Grouped (by channel) so that one group's entries can be
/// handed over without a walk over every group's.
#[derive(Debug)]
pub struct IdempotencyCache<G, K, V> {
    window: Duration,
    capacity: usize,
    groups: HashMap<G, HashMap<K, (Instant, V)>>,
    len: usize,
    /// Entries with their expiry, oldest first; always the same entries as
    /// `groups`.
    order: VecDeque<(Instant, (G, K))>,
    /// Entries dropped before their window ended because the cache was full.
    evicted_early: u64,
    /// The estimated size of one entry, for the memory budget.
    weigh: fn(&(G, K)) -> usize,
    bytes: usize,
}

impl<G: Eq + Hash + Clone, K: Eq + Hash + Clone, V: Clone> IdempotencyCache<G, K, V> {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            groups: HashMap::new(),
            len: 0,
            order: VecDeque::new(),
            evicted_early: 0,
            weigh: |_| 0,
            bytes: 0,
        }
    }

    /// The same cache, keeping a running total of `weigh` over its keys.
    pub fn with_weigher(mut self, weigh: fn(&(G, K)) -> usize) -> Self {
        self.weigh = weigh;
        self
    }

    /// The total of the weigher over the keys held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value remembered for `key`, if its window has not passed.
    pub fn get(&mut self, key: &(G, K), now: Instant) -> Option<&V> {
        self.expire(now);
        self.groups.get(&key.0)?.get(&key.1).map(|(_, v)| v)
    }

    /// Remembers `key → value` from `now`. A key already present keeps its
    /// first value: callers look up before they insert.
    pub fn insert(&mut self, key: (G, K), value: V, now: Instant) {
        self.expire(now);
        let present = self
            .groups
            .get(&key.0)
            .is_some_and(|g| g.contains_key(&key.1));
        if self.capacity == 0 || self.window.is_zero() || present {
            return;
        }
        while self.len >= self.capacity {
            let Some((expires, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.remove(&oldest, Some(expires)) {
                self.evicted_early += 1;
            }
        }
        self.bytes += (self.weigh)(&key);
        self.len += 1;
        self.groups
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), (now, value));
        self.order.push_back((now + self.window, key));
    }

    /// The newest `max` entries of `group` still in their window, oldest
    /// first: what a channel's new owner needs to answer retries.
    pub fn newest_of(&mut self, group: &G, max: usize, now: Instant) -> Vec<(K, V)> {
        self.expire(now);
        let Some(entries) = self.groups.get(group) else {
            return Vec::new();
        };
        let mut newest: Vec<_> = entries.iter().collect();
        newest.sort_by_key(|(_, (at, _))| std::cmp::Reverse(*at));
        newest.truncate(max);
        newest
            .into_iter()
            .rev()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
            if let Some((expires, key)) = self.order.pop_front() {
                self.remove(&key, Some(expires));
            }
        }
    }

    /// Forgets `key` now; its place in the expiry order is skipped when
    /// reached, so the same key remembered again keeps a whole window.
    pub fn forget(&mut self, key: &(G, K)) {
        self.remove(key, None);
    }

    /// Forgets every key of `group` now, as [`Self::forget`] does one.
    pub fn forget_group(&mut self, group: &G) {
        let Some(entries) = self.groups.remove(group) else {
            return;
        };
        self.len -= entries.len();
        for k in entries.into_keys() {
            self.bytes -= (self.weigh)(&(group.clone(), k));
        }
    }

    /// Removes `key` if held (and, given `expires`, only the entry that
    /// expires then); whether it was.
    fn remove(&mut self, key: &(G, K), expires: Option<Instant>) -> bool {
        let Some(group) = self.groups.get_mut(&key.0) else {
            return false;
        };
        let window = self.window;
        let held = group
            .get(&key.1)
            .is_some_and(|(at, _)| expires.is_none_or(|e| *at + window == e));
        if held {
            group.remove(&key.1);
            self.len -= 1;
            self.bytes -= (self.weigh)(key);
        }
        if group.is_empty() {
            self.groups.remove(&key.0);
        }
        held
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
        c.insert(("g", "k"), 1, t0);
        assert_eq!(c.get(&("g", "k"), t0 + 4 * MIN), Some(&1));
        assert_eq!(c.get(&("g", "k"), t0 + 5 * MIN), None);
        assert!(c.is_empty());
    }

    #[test]
    fn a_group_is_forgotten_whole_and_its_keys_may_come_back() {
        let t0 = Instant::now();
        let mut w = KeyWindows::new(5 * MIN, 10, |_: &(&str, String)| 3);
        w.insert(("a", "k1".into()), 41, t0);
        w.insert(("a", format!("{GATEWAY_KEY_PREFIX}x.1")), 42, t0);
        w.insert(("b", "k1".into()), 7, t0);
        assert_eq!(w.bytes(), 9);
        w.forget_group(&"a");
        assert_eq!(w.get(&("a", "k1".into()), t0), None);
        assert_eq!(w.get(&("b", "k1".into()), t0), Some(&7));
        assert_eq!(w.bytes(), 3);
        // Remembered again (from the copy that replaced the channel), at
        // its new position, for a whole window.
        w.insert(("a", "k1".into()), 40, t0 + MIN);
        assert_eq!(w.get(&("a", "k1".into()), t0 + 5 * MIN), Some(&40));
    }

    #[test]
    fn gateway_keys_have_a_short_window_and_a_cap_of_their_own() {
        let t0 = Instant::now();
        let mut w = KeyWindows::new(5 * MIN, 2, |_: &(&str, String)| 1);
        let gateway = |n: u32| ("g", format!("{GATEWAY_KEY_PREFIX}x.{n}"));
        w.insert(("g", "client".to_owned()), 1, t0);
        for n in 0..3 {
            w.insert(gateway(n), 10 + n, t0 + Duration::from_millis(u64::from(n)));
        }
        // Three gateway keys in a cap of two: the oldest gateway key gave
        // way, the client's key did not.
        assert_eq!(w.get(&("g", "client".to_owned()), t0), Some(&1));
        assert_eq!(w.get(&gateway(0), t0), None);
        assert_eq!(w.get(&gateway(2), t0), Some(&12));
        assert_eq!(w.bytes(), 3);
        let handed: Vec<_> = w
            .newest_of(&"g", 1, t0)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(handed, [1, 12]);
        // The gateway's window ends long before the client's.
        let later = t0 + GATEWAY_KEY_WINDOW + Duration::from_millis(2);
        assert_eq!(w.get(&gateway(2), later), None);
        assert_eq!(w.get(&("g", "client".to_owned()), later), Some(&1));
        assert!(is_gateway_key(&gateway(1).1) && !is_gateway_key("client"));
    }

    #[test]
    fn first_value_wins() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 10);
        c.insert(("g", "k"), 1, t0);
        c.insert(("g", "k"), 2, t0);
        assert_eq!(c.get(&("g", "k"), t0), Some(&1));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn capacity_is_a_hard_bound_oldest_go_first() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 3);
        for i in 0..5u32 {
            c.insert((0, i), i, t0 + Duration::from_millis(i.into()));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted_early(), 2);
        assert_eq!(c.get(&(0, 0), t0), None);
        assert_eq!(c.get(&(0, 1), t0), None);
        assert_eq!(c.get(&(0, 4), t0 + Duration::from_millis(4)), Some(&4));
    }

    #[test]
    fn expired_entries_make_room_without_counting_as_evictions() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 2);
        c.insert(("g", "a"), 1, t0);
        c.insert(("g", "b"), 2, t0);
        c.insert(("h", "c"), 3, t0 + 2 * MIN);
        assert_eq!(c.len(), 1);
        assert_eq!(c.evicted_early(), 0);
    }

    #[test]
    fn zero_window_or_capacity_disables() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(Duration::ZERO, 10);
        c.insert(("g", "k"), 1, t0);
        assert_eq!(c.get(&("g", "k"), t0), None);
        let mut c = IdempotencyCache::new(MIN, 0);
        c.insert(("g", "k"), 1, t0);
        assert_eq!(c.get(&("g", "k"), t0), None);
    }

    #[test]
    fn bytes_follow_inserts_expiry_and_eviction() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 2).with_weigher(|(_, k): &(&str, &str)| k.len());
        c.insert(("g", "aa"), 1, t0);
        c.insert(("h", "bbb"), 2, t0);
        assert_eq!(c.bytes(), 5);
        c.insert(("g", "c"), 3, t0);
        assert_eq!(c.bytes(), 4, "aa evicted early");
        c.get(&("g", "c"), t0 + MIN);
        assert_eq!(c.bytes(), 0, "all expired");
    }

    #[test]
    fn a_group_s_newest_entries_oldest_first() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 10);
        for i in 0..4u64 {
            c.insert(("a", i), i, t0 + Duration::from_millis(i));
            c.insert(("b", i), 10 + i, t0 + Duration::from_millis(i));
        }
        let now = t0 + Duration::from_millis(4);
        assert_eq!(c.newest_of(&"a", 2, now), vec![(2, 2), (3, 3)]);
        assert_eq!(c.newest_of(&"b", 9, now).len(), 4);
        assert!(c.newest_of(&"c", 9, now).is_empty());
        assert!(
            c.newest_of(&"a", 9, t0 + MIN + Duration::from_millis(3))
                .is_empty(),
            "expired"
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_key_forgotten_and_remembered_again_keeps_a_whole_window() {
        let t0 = Instant::now();
        let mut c = IdempotencyCache::new(MIN, 10);
        c.insert(("g", "k"), 1, t0);
        c.forget(&("g", "k"));
        assert_eq!(c.get(&("g", "k"), t0), None);
        c.insert(("g", "k"), 2, t0 + MIN / 2);
        assert_eq!(
            c.get(&("g", "k"), t0 + MIN),
            Some(&2),
            "the first window ended"
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&("g", "k"), t0 + MIN + MIN / 2), None);
        assert!(c.is_empty());
        assert_eq!(c.evicted_early(), 0);
    }

    #[test]
    fn key_validity() {
        assert!(valid_key("order-42"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
    }
}
