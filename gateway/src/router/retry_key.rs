//! Keys for publishes that came without one, so that the router may ask a
//! channel's next owner again when the owner is lost mid-call, and the
//! owner (or its successor, which holds the replicated keys) answers a
//! repeat with the first position instead of publishing twice
//! (docs/replication.md, "Gateways").

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use switchboard_node::idempotency::GATEWAY_KEY_PREFIX;

/// Makes this gateway's keys: the prefix that client keys may not start
/// with, a nonce drawn once per process (a gateway restarted under the same
/// name must not repeat its predecessor's keys within their window), and a
/// counter.
pub(super) struct RetryKeys {
    nonce: u64,
    next: AtomicU64,
}

impl RetryKeys {
    pub(super) fn new(rng: &mut impl Rng) -> Self {
        Self {
            nonce: rng.random(),
            next: AtomicU64::new(0),
        }
    }

    /// A key no other publish of this cluster carries.
    pub(super) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{GATEWAY_KEY_PREFIX}{:016x}.{n:x}", self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn keys_are_distinct_within_and_across_processes_and_marked() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (a, b) = (RetryKeys::new(&mut rng), RetryKeys::new(&mut rng));
        let keys = [a.next(), a.next(), b.next(), b.next()];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), 4);
        for k in &keys {
            assert!(switchboard_node::idempotency::is_gateway_key(k));
            assert!(switchboard_node::idempotency::valid_key(k));
        }
    }
}
