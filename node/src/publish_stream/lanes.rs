//! [`Lanes`]: one publish stream's calls by channel (sans-IO). A channel's
//! calls run one at a time in the order they were read, so that two
//! publishes a gateway sent in order are applied in that order; calls for
//! different channels run side by side.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

pub struct Lanes<K, T> {
    /// Busy lanes, each with the calls waiting behind the one running.
    busy: HashMap<K, VecDeque<T>>,
}

impl<K, T> Default for Lanes<K, T> {
    fn default() -> Self {
        Self {
            busy: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, T> Lanes<K, T> {
    /// Takes `call` on lane `key`: it is returned to run now if the lane
    /// was free, or waits behind the lane's running call.
    pub fn admit(&mut self, key: K, call: T) -> Option<T> {
        match self.busy.get_mut(&key) {
            Some(waiting) => {
                waiting.push_back(call);
                None
            }
            None => {
                self.busy.insert(key, VecDeque::new());
                Some(call)
            }
        }
    }

    /// Lane `key`'s running call ended: the next to run on it, if any
    /// waits (else the lane is free).
    pub fn finished(&mut self, key: &K) -> Option<T> {
        let waiting = self.busy.get_mut(key)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.busy.remove(key);
        }
        next
    }

    /// Drops every call waiting (not the running ones): they were never
    /// started.
    pub fn drop_waiting(&mut self) {
        for waiting in self.busy.values_mut() {
            waiting.clear();
        }
    }

    /// Whether no call runs or waits.
    pub fn is_empty(&self) -> bool {
        self.busy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lanes_calls_run_one_at_a_time_in_order_and_lanes_side_by_side() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.admit("a", 1), Some(1));
        assert_eq!(lanes.admit("a", 2), None);
        assert_eq!(lanes.admit("b", 10), Some(10), "another lane runs at once");
        assert_eq!(lanes.admit("a", 3), None);
        assert_eq!(lanes.finished(&"a"), Some(2));
        assert_eq!(lanes.finished(&"b"), None);
        assert_eq!(lanes.admit("b", 11), Some(11), "b was free again");
        assert_eq!(lanes.finished(&"a"), Some(3));
        assert_eq!(lanes.finished(&"a"), None);
        assert_eq!(lanes.admit("a", 4), Some(4), "a was free again");
        lanes.finished(&"a");
        lanes.finished(&"b");
        assert!(lanes.is_empty());
    }

    #[test]
    fn dropping_the_waiting_calls_keeps_the_running_lanes_busy() {
        let mut lanes = Lanes::default();
        lanes.admit("a", 1);
        lanes.admit("a", 2);
        lanes.drop_waiting();
        assert!(!lanes.is_empty(), "1 still runs");
        assert_eq!(lanes.finished(&"a"), None);
        assert!(lanes.is_empty());
    }
}
