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
    /// at the same offsets. The copy goes with the term's configuration,
    /// as a leader's planned hand-over does: it holds every offset
    /// committed in the term (each needed this replica), and the leader
    /// that lost its own can commit nothing more in it, so the leader
    /// keeps it as its log and stands on the term (`Replicas::seed`),
    /// leading the channel replicated again, with this broker among its
    /// followers. This replica stops counting as complete: if that
    /// election fails, the leader serves the channel unreplicated from
    /// the copy, this log falls behind, and it must never stand with it.
    pub fn hand_to_leader(
        &self,
        channel: &ChannelName,
        leader: &BrokerName,
        now_micros: u64,
    ) -> Option<Snapshot> {
        let mut channels = self.channels.lock();
        let c = channels.get_mut(channel)?;
        let config = c.register.config()?;
        // A later term promised to this broker itself is a candidacy of its
        // own that ended having won nothing here (one still being decided
        // withholds the replica, below; with `lost_majority = refuse`, one
        // begun as the leader died and refused once its majority was seen
        // gone): its log is still the term's. Without this, a leader back
        // without its log found the one complete copy withheld, and
        // started its channel anew (tests/lost_majority.rs).
        let own_candidacy =
            c.register.promised() > config.term && c.register.promised_to() == Some(&self.me);
        let follows = config.leader == *leader
            && config.followers.contains(&self.me)
            && (c.register.promised() == config.term || own_candidacy)
            && c.log.is_complete_for(config.term)
            && c.leading.is_none();
        // A leader that still renews its lease for the channel here leads
        // it, copy and all: it asks to check its copy against this one (it
        // was counted out for a moment), not because it lost it. Handing
        // the replica then would only void this log, the channel's one
        // other copy. (Since session 16 the asker says so itself,
        // `ReleaseRequest.holds_copy`; this still covers older brokers, and
        // the lease may not have reached here yet, so it is not enough.)
        let renewing = c
            .register
            .lease()
            .is_some_and(|l| l.holder.as_ref() == Some(leader) && l.until > Instant::now());
        // While this broker stands for the channel itself, its log may
        // yet lead the term it stands for: handed away meanwhile, the term
        // was won by a leader with no log, and the handed copy lost its
        // own election to that term and was forgotten. Every copy of the
        // channel was gone; the ring owner started it anew after its
        // refusals (tests/lost_majority.rs, once in CI). The leader asks
        // again: by then this broker leads the channel (and hands it over
        // with its configuration) or lost, and hands the replica.
        if c.standing > 0 {
            tracing::debug!(channel = %channel, to = %leader, "replica not handed: this broker is standing for the channel");
            return None;
        }
        if !follows || renewing {
            tracing::debug!(channel = %channel, to = %leader, config = ?config, promised = ?c.register.promised(), complete = c.log.is_complete_for(config.term), "replica not handed: not a complete follower of that leader");
            return None;
        }
        // Only as the term's one follower (R = 2): with two, the other may
        // win the next term without this log's uncommitted tail, which the
        // leader would have served meanwhile; then the copy goes without
        // the configuration, served unreplicated, as before session 14.
        let only = matches!(config.followers.as_slice(), [f] if *f == self.me);
        let config = config.clone();
        let mut handed = snapshot_of(channel, c, now_micros)?;
        if only {
            handed.handed = Some(config);
            handed.handed_committed = Some(c.log.committed());
        }
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
        handed_committed: None,
    })
}
