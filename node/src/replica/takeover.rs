//! What a follower that won a term takes over with: the channel as its
//! replica log holds it, in the same epoch at the same offsets, with the
//! idempotency keys of the publications it holds, so that subscribers go
//! on without a reset and a retried publish is answered, not repeated.

use std::time::Duration;

use switchboard_cluster::ownership::{Snapshot, SnapshotEntry};
use switchboard_core::ChannelName;

use super::Replicas;

/// A channel's state as a replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub snapshot: Snapshot,
    /// `(key, offset)` of every held publication that had a key.
    pub keys: Vec<(String, u64)>,
}

impl Replicas {
    /// Whether this broker holds `channel`'s epoch as a replica.
    pub fn holds_epoch(&self, channel: &ChannelName) -> bool {
        self.channels
            .lock()
            .get(channel)
            .is_some_and(|c| c.epoch.is_some())
    }

    /// `channel`'s state from this broker's log, if it holds the channel's
    /// epoch; entry ages are counted from `now_micros` (wall clock).
    pub fn takeover(&self, channel: &ChannelName, now_micros: u64) -> Option<Takeover> {
        let channels = self.channels.lock();
        let c = channels.get(channel)?;
        let epoch = c.epoch.clone()?;
        let end = c.log.end();
        let first = (1..=end)
            .rev()
            .take_while(|&o| c.log.get(o).is_some())
            .last()
            .unwrap_or(end + 1);
        let mut history = Vec::new();
        let mut keys = Vec::new();
        for offset in first..=end {
            let Some(e) = c.log.get(offset) else { continue };
            let age = now_micros.saturating_sub(e.published_micros);
            history.push(SnapshotEntry {
                offset,
                age: Duration::from_micros(age),
                frame: e.frame.clone(),
            });
            if let Some(k) = &e.idempotency_key {
                keys.push((k.clone(), offset));
            }
        }
        Some(Takeover {
            snapshot: Snapshot {
                channel: channel.clone(),
                epoch: epoch.id,
                created_micros: epoch.created_micros,
                offset: end,
                history,
            },
            keys,
        })
    }
}
