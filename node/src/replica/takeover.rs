//! What a follower that won a term takes over with: the channel as its
//! replica log holds it, in the same epoch at the same offsets, with the
//! idempotency keys of the publications it holds, so that subscribers go
//! on without a reset and a retried publish is answered, not repeated.

use std::time::{Duration, Instant};

use switchboard_cluster::{
    ownership::{MAX_HANDED_KEYS, Snapshot, SnapshotEntry},
    replication::{PrepareReply, ReplicaLog},
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

    /// `channel`'s state as this broker's replica holds it, for broker
    /// `to`, and whom it went to ([`HandedTo`]). To the leader of the term
    /// this replica follows, which lost its own copy (it restarted before
    /// anyone took its place, so the ring still names it the owner); or,
    /// once that leader is lost here (its stream ended or fell silent and
    /// no lease granted to it here runs), to the broker that asks for the
    /// channel as its owner now (one that joined, or whose ring counted
    /// the leader out before anyone here stood: it may not stand without a
    /// log, and started the channel anew after refusing it for 5 s until
    /// session 17). The channel goes on there in the same epoch at the
    /// same offsets. The copy goes with the term's configuration, as a
    /// leader's planned hand-over does: it holds every offset committed in
    /// the term (each needed this replica), and the leader, which lost its
    /// copy or is lost, can commit nothing more in it without this log, so
    /// the recipient keeps it as its log and stands on the term
    /// (`Replicas::seed`), leading the channel replicated again, with this
    /// broker among its followers. This replica stops counting as
    /// complete: if that election fails, the recipient serves the channel
    /// unreplicated from the copy, this log falls behind, and it must
    /// never stand with it.
    pub fn hand_replica(
        &self,
        channel: &ChannelName,
        to: &BrokerName,
        now_micros: u64,
    ) -> Option<(Snapshot, HandedTo)> {
        let mut channels = self.channels.lock();
        let c = channels.get_mut(channel)?;
        let config = c.register.config()?.clone();
        // A later term promised to this broker itself is a candidacy of its
        // own that ended having won nothing here (one still being decided
        // withholds the replica, below; with `lost_majority = refuse`, one
        // begun as the leader died and refused once its majority was seen
        // gone): its log is still the term's. Without this, a leader back
        // without its log found the one complete copy withheld, and
        // started its channel anew (tests/lost_majority.rs).
        let own_candidacy =
            c.register.promised() > config.term && c.register.promised_to() == Some(&self.me);
        let follows = config.followers.contains(&self.me)
            && (c.register.promised() == config.term || own_candidacy)
            && c.log.is_complete_for(config.term)
            && c.leading.is_none();
        let handed_to = if config.leader == *to {
            HandedTo::Leader
        } else if self.leader_lost(&config.leader) {
            HandedTo::Owner
        } else {
            tracing::debug!(channel = %channel, to = %to, leader = %config.leader, "replica not handed: asked by another broker while its leader is not lost here");
            return None;
        };
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
            .is_some_and(|l| l.holder.as_ref() == Some(&config.leader) && l.until > Instant::now());
        // While this broker stands for the channel itself, its log may
        // yet lead the term it stands for: handed away meanwhile, the term
        // was won by a leader with no log, and the handed copy lost its
        // own election to that term and was forgotten. Every copy of the
        // channel was gone; the ring owner started it anew after its
        // refusals (tests/lost_majority.rs, once in CI). The asker asks
        // again: by then this broker leads the channel (and hands it over
        // with its configuration) or lost, and hands the replica.
        if c.standing > 0 {
            tracing::debug!(channel = %channel, to = %to, "replica not handed: this broker is standing for the channel");
            return None;
        }
        if !follows || renewing {
            tracing::debug!(channel = %channel, to = %to, config = ?config, promised = ?c.register.promised(), complete = c.log.is_complete_for(config.term), "replica not handed: not a complete follower of that leader");
            return None;
        }
        // Only as the term's one follower (R = 2): with two, the other may
        // win the next term without this log's uncommitted tail, which the
        // recipient would have served meanwhile; then the copy goes without
        // the configuration, served unreplicated, as before session 14.
        let only = matches!(config.followers.as_slice(), [f] if *f == self.me);
        if handed_to == HandedTo::Owner && !self.promise_next_term(channel, c, to) {
            return None;
        }
        let mut handed = snapshot_of(channel, c, now_micros)?;
        if only {
            handed.handed = Some(config);
            handed.handed_committed = Some(c.log.committed());
        }
        c.log = ReplicaLog::lost();
        c.epoch = None;
        Some((handed, handed_to))
    }

    /// Before its replica goes to an owner other than its term's leader:
    /// promises that owner the term after the one this broker follows
    /// (durably, as a vote), or says it may not. The leader may be alive
    /// after all (frozen, or cut off from this broker alone); with the
    /// promise it can neither adopt this broker into its term again nor
    /// commit anything more in it, so the copy handed holds all that the
    /// term committed. Without it, the replication model found a leader
    /// that adopted its follower again and committed what the handed copy
    /// lacked, and the owner won the next term without it
    /// (`an_owner_handed_a_log_without_a_promise_is_caught`). Not while a
    /// candidacy of this broker's own holds a later promise: the owner
    /// stands on the next term, which would meet it.
    fn promise_next_term(
        &self,
        channel: &ChannelName,
        c: &mut ReplicaChannel,
        to: &BrokerName,
    ) -> bool {
        let Some(term) = c.register.config().map(|cfg| cfg.term) else {
            return false;
        };
        if c.register.promised() != term {
            return false;
        }
        let reply = c.register.on_prepare(Instant::now(), to, term.next(), None);
        if !matches!(reply, PrepareReply::Promised { .. }) {
            tracing::debug!(channel = %channel, to = %to, reply = ?reply, "replica not handed: the next term cannot be promised to its owner");
            return false;
        }
        let Some(store) = self.store.as_ref() else {
            return false;
        };
        if let Err(e) = store.lock().save(channel, &c.register) {
            tracing::warn!(channel = %channel, error = %e, "replica not handed: the promise to its owner was not stored");
            return false;
        }
        true
    }

    /// Another broker of the newest configuration known here for
    /// `channel` that may hold it, for broker `to`, which asked this one
    /// for it and got nothing: the term's leader unless it is lost here,
    /// else a follower; never this broker nor `to`. A witness (or a
    /// follower that keeps its replica) names it so that an owner that
    /// holds nothing, and asked it first (its ring's previous owner),
    /// reaches the copy rather than starting the channel anew.
    pub fn holder_for(&self, channel: &ChannelName, to: &BrokerName) -> Option<BrokerName> {
        let config = self
            .channels
            .lock()
            .get(channel)?
            .register
            .config()?
            .clone();
        let other = |b: &&BrokerName| *b != &self.me && *b != to;
        let leader = Some(&config.leader)
            .filter(other)
            .filter(|l| !self.leader_lost(l));
        leader
            .or_else(|| config.followers.iter().find(other))
            .cloned()
    }
}

/// Whom [`Replicas::hand_replica`] handed a replica to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedTo {
    /// The leader of the term it followed, which lost its copy.
    Leader,
    /// The channel's owner now: the leader is lost here.
    Owner,
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
