//! [`Floors`]: the terms at or below which a register made afresh never
//! votes (docs/replication.md "The floor"), one per bucket of channel
//! names. A broker that forgot a channel's register (retired, or an
//! abandoned promise) no longer knows which channels it forgot, so the
//! floor cannot be per channel; one for every channel made every fresh
//! register refuse the low terms of every other channel forgotten before
//! it, and under churn each retirement of a later term made the first
//! elections then under way refuse at one voter (a wave every history
//! window). A bucket's floor is the highest term forgotten among the
//! channels hashed to it, which is at least any of theirs, and is all
//! that safety needs; [`BUCKETS`] of them cost 32 KiB per broker.

use serde_json::{Value, json};
use switchboard_cluster::{replication::Term, ring::stable_hash};
use switchboard_core::ChannelName;

/// Buckets of channel names. Never change it: the floors on disk are by
/// bucket (a store that finds no bucketed floors takes its single floor
/// for every bucket).
pub const BUCKETS: usize = 4096;

/// The floor of every bucket.
#[derive(Debug, Clone)]
pub struct Floors {
    by_bucket: Vec<Term>,
}

impl Default for Floors {
    fn default() -> Self {
        Self {
            by_bucket: vec![Term::ZERO; BUCKETS],
        }
    }
}

/// The bucket `channel` falls in, the same on every broker and build.
pub fn bucket(channel: &ChannelName) -> usize {
    (stable_hash(channel.as_str().as_bytes()) % BUCKETS as u64) as usize
}

impl Floors {
    /// `channel`'s floor: the highest term forgotten in its bucket.
    pub fn of(&self, channel: &ChannelName) -> Term {
        self.by_bucket[bucket(channel)]
    }

    /// `channel`'s register, whose promise was `promised`, was forgotten.
    pub fn raise(&mut self, channel: &ChannelName, promised: Term) {
        let floor = &mut self.by_bucket[bucket(channel)];
        *floor = (*floor).max(promised);
    }

    /// The highest floor of any bucket.
    pub fn highest(&self) -> Term {
        self.by_bucket.iter().copied().max().unwrap_or(Term::ZERO)
    }

    /// The record a compacted file starts with: the buckets above zero
    /// (`floors`), and the highest (`floor`), which is what a broker from
    /// before buckets reads (it then refuses more terms than it needs to,
    /// never fewer).
    pub fn to_record(&self) -> Value {
        let floors: Vec<[u64; 2]> = self
            .by_bucket
            .iter()
            .enumerate()
            .filter(|(_, t)| **t > Term::ZERO)
            .map(|(b, t)| [b as u64, t.0])
            .collect();
        json!({ "floor": self.highest().0, "floors": floors })
    }

    /// Reads the floors a record holds, if any: bucketed ones, else a
    /// single floor (a file from before buckets), which counts for every
    /// bucket.
    pub fn read(&mut self, record: &Value) {
        if let Some(floors) = record["floors"].as_array() {
            for pair in floors {
                let (Some(b), Some(t)) = (pair[0].as_u64(), pair[1].as_u64()) else {
                    continue;
                };
                if let Some(floor) = self.by_bucket.get_mut(b as usize) {
                    *floor = (*floor).max(Term(t));
                }
            }
        } else if let Some(t) = record["floor"].as_u64() {
            for floor in &mut self.by_bucket {
                *floor = (*floor).max(Term(t));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn a_forgotten_channel_raises_its_bucket_only() {
        let (a, b) = (ch("chat:a"), ch("chat:b"));
        assert_ne!(bucket(&a), bucket(&b));
        let mut floors = Floors::default();
        floors.raise(&a, Term(4));
        floors.raise(&a, Term(2));
        assert_eq!((floors.of(&a), floors.of(&b)), (Term(4), Term::ZERO));
        assert_eq!(floors.highest(), Term(4));
    }

    #[test]
    fn floors_read_back_from_their_record_and_a_single_floor_counts_for_all() {
        let mut floors = Floors::default();
        floors.raise(&ch("chat:a"), Term(7));
        floors.raise(&ch("chat:b"), Term(3));
        let mut again = Floors::default();
        again.read(&floors.to_record());
        assert_eq!(again.of(&ch("chat:a")), Term(7));
        assert_eq!(again.of(&ch("chat:b")), Term(3));
        assert_eq!(again.of(&ch("chat:c")), Term::ZERO);
        let mut old = Floors::default();
        old.read(&json!({ "floor": 5 }));
        assert_eq!(old.of(&ch("chat:c")), Term(5));
        // A register's line carries no floor.
        old.read(&json!({ "channel": "chat:c", "promised": 9 }));
        assert_eq!(old.highest(), Term(5));
    }

    /// The bucket is part of what is on disk: it must not change.
    #[test]
    fn buckets_are_stable() {
        assert_eq!((bucket(&ch("chat:a")), bucket(&ch("chat:b"))), (807, 3506));
        let spread: std::collections::BTreeSet<usize> = (0..1000)
            .map(|i| bucket(&ch(&format!("churn:{i}"))))
            .collect();
        assert!(spread.len() > 800, "{} buckets of 1000", spread.len());
    }
}
