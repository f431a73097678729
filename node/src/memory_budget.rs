//! The broker's memory budget: one byte count for everything clients can
//! make a broker hold (channels, history, presence, idempotency keys), and
//! the limit above which new channels are refused and history stops
//! growing (docs/operations.md, "Memory budget").
//!
//! Sizes are estimates, charged when state is added and released when it
//! goes: what a client controls (names, payloads, presence info) counted
//! exactly, plus a fixed overhead per item for the maps and queues that
//! hold it. Sans-IO: no clock, no IO; a [`Charge`] is the one way to move
//! the count, so a charge is released exactly once, when its owner drops.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// Bytes a channel costs before it holds anything: its map entry, lock,
/// state struct, epoch and empty collections.
pub const CHANNEL_OVERHEAD: usize = 512;
/// Bytes a history entry costs besides its encoded frame.
pub const HISTORY_ENTRY_OVERHEAD: usize = 64;
/// Bytes one presence entry costs besides its client id, user id and info
/// (two map entries, the gateway id).
pub const PRESENCE_ENTRY_OVERHEAD: usize = 160;
/// Bytes one remembered idempotency key costs besides the key and the
/// channel name (held twice: in the map and in the expiry queue).
pub const IDEMPOTENCY_ENTRY_OVERHEAD: usize = 128;

/// The byte count and its limit, shared by every [`Charge`] of a broker.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; 0 means no limit (only counted).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the count has reached the limit: what refuses new channels
    /// and stops history from growing.
    pub fn is_over(&self) -> bool {
        self.limit != 0 && self.used() >= self.limit
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What one owner (a channel, the idempotency cache) has charged to the
/// budget; set to the owner's current estimate after each change, and
/// released on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    pub fn new(budget: &Arc<MemoryBudget>) -> Self {
        Self {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Moves the charge to `bytes`, the owner's current estimate.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.add(bytes - self.bytes);
        } else {
            self.budget.sub(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_move_the_count_and_release_on_drop() {
        let budget = MemoryBudget::new(1000);
        let mut a = Charge::new(&budget);
        let mut b = Charge::new(&budget);
        a.set(600);
        b.set(300);
        assert_eq!(budget.used(), 900);
        assert!(!budget.is_over());
        b.set(400);
        assert!(budget.is_over());
        a.set(100);
        assert_eq!((budget.used(), budget.is_over()), (500, false));
        drop(a);
        assert_eq!(budget.used(), 400);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn zero_limit_counts_but_never_refuses() {
        let budget = MemoryBudget::new(0);
        let mut a = Charge::new(&budget);
        a.set(usize::MAX / 2);
        assert!(!budget.is_over());
        assert_eq!(budget.used(), usize::MAX / 2);
    }
}
