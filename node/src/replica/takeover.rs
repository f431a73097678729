//! What a follower that won a term takes over with: the channel as its
//! replica log holds it, in the same epoch at the same offsets, with the
//! idempotency keys of the publications it holds, so that subscribers go
//! on without a reset and a retried publish is answered, not repeated.

use std::time::{Duration, Instant};

use switchboard_cluster::{
    ownership::{MAX_HANDED_KEYS, Snapshot, SnapshotEntry},
    replication::ReplicaLog,
};
use switchboard_core::{BrokerName, ChannelName};

use super::{ReplicaChannel, Replicas};

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
    pub fn takeover(&self, channel: &ChannelName, now_micros: u64) -> Option<Snapshot> {
        let channels = self.channels.lock();
        snapshot_of(channel, channels.get(channel)?, now_micros)
    }

    /// [`Self::takeover`] without a term won: only from a log complete for
    /// the term this broker follows, and the channel is served
    /// unreplicated from it (no majority of voters is left to choose a
    /// term).
    pub fn unclean_takeover(&self, channel: &ChannelName, now_micros: u64) -> Option<Snapshot> {
        let channels = self.channels.lock();
        let c = channels.get(channel)?;
        self.followed_leader(c)?;
        snapshot_of(channel, c, now_micros)
    }

    /// `channel`'s state as this broker's replica holds it, for `leader`:
    /// the leader of the term this replica follows, which lost its own
    /// copy (it restarted before anyone took its place, so the ring still
    /// names it the owner). The channel goes on there in the same epoch
    /// at the same offsets. This replica stops counting as complete then:
    /// the leader serves the channel unreplicated from here (it lost its
    /// log, so it may not lead a replicated term), this log falls behind,
    /// and it must never stand with it.
    pub fn hand_to_leader(
        &self,
        channel: &ChannelName,
        leader: &BrokerName,
        now_micros: u64,
    ) -> Option<Snapshot> {
        let mut channels = self.channels.lock();
        let c = channels.get_mut(channel)?;
        let config = c.register.config()?;
        let follows = config.leader == *leader
            && config.followers.contains(&self.me)
            && c.register.promised() == config.term
            && c.log.is_complete_for(config.term)
            && c.leading.is_none();
        // A leader that still renews its lease for the channel here leads
        // it, copy and all: it asks to check its copy against this one (it
        // was counted out for a moment), not because it lost it. Handing
        // the replica then would only void this log, the channel's one
        // other copy.
        let renewing = c
            .register
            .lease()
            .is_some_and(|l| l.holder.as_ref() == Some(leader) && l.until > Instant::now());
        if !follows || renewing {
            tracing::debug!(channel = %channel, to = %leader, config = ?config, promised = ?c.register.promised(), complete = c.log.is_complete_for(config.term), "replica not handed: not a complete follower of that leader");
            return None;
        }
        let handed = snapshot_of(channel, c, now_micros)?;
        c.log = ReplicaLog::lost();
        c.epoch = None;
        Some(handed)
    }
}

/// The channel as `c`'s log holds it, if it holds the channel's epoch.
fn snapshot_of(channel: &ChannelName, c: &ReplicaChannel, now_micros: u64) -> Option<Snapshot> {
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
    // The log's keys are this epoch's; beyond the cap, the newest go.
    let skip = keys.len().saturating_sub(MAX_HANDED_KEYS);
    keys.drain(..skip);
    Some(Snapshot {
        channel: channel.clone(),
        epoch: epoch.id,
        created_micros: epoch.created_micros,
        offset: end,
        history,
        keys,
        term: c.register.config().map(|c| c.term).unwrap_or_default(),
        handed: None,
    })
}
