//! Moving channels between brokers, as seen from one broker: what it holds
//! of a channel, handing a channel over (with a fence), adopting one, and
//! the checks after a partition.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    LocalBroker,
    channel_state::{ChannelState, Lifecycle},
    registry::Locked,
};
use crate::{history::History, replica::takeover::HandedTo};
use switchboard_cluster::{
    ownership::{CopyRank, MAX_HANDED_KEYS, Release, Snapshot, SnapshotEntry},
    replication::Term,
};
use switchboard_core::{
    BrokerError, ChannelName, Control, DeliveryKind, NamespaceOptions, presence::Presence,
};

/// What this broker holds of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// Its state: this broker serves it (if it owns it).
    State,
    /// Nothing: a new owner asks the previous one first.
    Nothing,
    /// Handed over to this broker.
    Fenced(String),
    /// Its state, but this broker may hold a newer copy: ask it first.
    Unverified(String),
}

impl LocalBroker {
    /// What this broker holds of `channel`.
    pub fn holding(&self, channel: &ChannelName) -> Holding {
        match self.inner.registry.lock_existing(channel) {
            None => Holding::Nothing,
            Some(s) => match &s.lifecycle {
                Lifecycle::Serving => Holding::State,
                Lifecycle::Unverified(other) => Holding::Unverified(other.to_string()),
                Lifecycle::Fenced { to, .. } => Holding::Fenced(to.to_string()),
                Lifecycle::Removed => Holding::Nothing,
            },
        }
    }

    /// Channels whose state is here (not handed over).
    pub fn held(&self) -> Vec<ChannelName> {
        self.inner.registry.names(|_, s| !s.is_fenced())
    }

    /// Hands `channel` over to broker `to`: its state if held here, and in
    /// any case a fence, so that this broker refuses the channel from now
    /// on. Under the channel's lock, so a publication is either in the
    /// snapshot or refused, never both and never neither. For a broker that
    /// holds no copy of it (see [`Self::release_for`]).
    pub fn release(&self, channel: &ChannelName, to: &str) -> Result<Release, BrokerError> {
        self.release_for(channel, to, false)
    }

    /// [`Self::release`] for broker `to`, which `holds_copy` of the channel
    /// or not: one that does is never handed this broker's replica.
    pub fn release_for(
        &self,
        channel: &ChannelName,
        to: &str,
        holds_copy: bool,
    ) -> Result<Release, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        let now = Instant::now();
        let fence = || Lifecycle::Fenced {
            to: to.into(),
            since: now,
        };
        let (mut s, created) = self.lock_or_fence(channel, options, fence());
        if created && s.is_fenced() {
            drop(s);
            return Ok(self.replica_for(channel, to, holds_copy));
        }
        if let Lifecycle::Fenced { to: existing, .. } = &s.lifecycle {
            if &**existing != to {
                let existing = existing.to_string();
                drop(s);
                return Ok(self.past_a_lost_leaders_fence(channel, (&existing, to), holds_copy));
            }
            s.lifecycle = fence();
            drop(s);
            return Ok(self.replica_for(channel, to, holds_copy));
        }
        // Stepped down first, under the channel's lock: no commit is
        // recorded after this, so a publication committed but not yet
        // delivered (its publisher is about to be acknowledged) is stored
        // now and goes with the snapshot. Without this, one acknowledged
        // at the offset after the snapshot's was lost, and the next
        // owner gave that offset to another publication. A leader also
        // sends its term's configuration: the copy then holds all that may
        // have been committed in that term (the whole log it started the
        // term with, and every commit since), so the next owner may stand
        // on it with the copy as its log (a planned move).
        let term = self.rank_term(channel, &s);
        let mut handed = None;
        if let Some(r) = self.replicated() {
            match r.replicas.hand_over(channel) {
                Some((committed, config)) => {
                    super::replicated::catch_up(r, &mut s, committed);
                    handed = Some(config);
                }
                None => r.replicas.supersede(channel),
            }
        }
        s.history.trim(now);
        let snapshot = Snapshot {
            channel: channel.clone(),
            epoch: s.epoch.clone(),
            created_micros: s.created_micros,
            offset: s.offset,
            history: history_of(&s, now),
            keys: self.keys_of(channel, &s.epoch, now),
            term,
            handed,
            handed_committed: None,
        };
        // Gateways move their subscriptions and presence themselves;
        // nobody left or joined, so no events.
        s.history = History::new(0, Duration::ZERO);
        s.subscribers.clear();
        s.presence = Presence::default();
        s.lifecycle = fence();
        s.account();
        drop(s);
        self.notify_changed();
        metrics::counter!("switchboard_broker_handoffs_total", "direction" => "out").increment(1);
        Ok(Release::State(snapshot))
    }

    /// `channel`'s state here, locked, or a new one fenced with `fence`
    /// if none is, and whether it was made now. A channel this broker
    /// leads, swept while idle, is held all the same: its log is the
    /// channel, handed over like any led channel's. (Answered "not held"
    /// until session 17, it went to the new owner as nothing, and started
    /// there in a new epoch.)
    fn lock_or_fence(
        &self,
        channel: &ChannelName,
        options: NamespaceOptions,
        fence: Lifecycle,
    ) -> (Locked, bool) {
        self.inner.registry.lock_or_insert(channel, || {
            self.led_state(channel, &options).unwrap_or_else(|| {
                let mut s = self.fresh_channel(channel, options);
                s.lifecycle = fence;
                s
            })
        })
    }

    /// A channel not held here (never, or handed to `to` before and asked
    /// for again), asked for by `to`: this broker's replica of it if `to`
    /// leads the term it follows and lost its own copy (it restarted
    /// within the failure-detection time, so nobody took its place;
    /// docs/replication.md, "Hand-back"), or if that leader is lost here
    /// and `to` owns the channel now (`Replicas::hand_replica`). Per
    /// channel, not per broker: a leader back after a restart may have
    /// some channels back already and still lack the others. Never while
    /// `to` `holds_copy`: it asks to check its copy (it was counted out,
    /// saw this broker come back, or a claim crossed the hand-over), and a
    /// follower of its term holds nothing newer. Handed then, this log was
    /// voided under a live leader whose lease had not reached it yet, and
    /// the leader's death next lost the channel's history
    /// (tests/replication.rs, session 16). With no replica to hand, a
    /// voter of the channel names the broker that may hold it
    /// (`Replicas::holder_for`), so that `to` asks there next.
    fn replica_for(&self, channel: &ChannelName, to: &str, holds_copy: bool) -> Release {
        if holds_copy {
            tracing::debug!(channel = %channel, to, "asked by a broker that holds a copy: the replica is kept");
            return Release::NotHeld;
        }
        let Some(r) = self.replicated() else {
            return Release::NotHeld;
        };
        let asker = switchboard_core::BrokerName::from(to);
        match r.replicas.hand_replica(channel, &asker, self.wall_micros()) {
            Some((t, HandedTo::Leader)) => {
                tracing::info!(channel = %channel, to, offset = t.offset, "replica handed to its leader, which lost its copy");
                Release::State(t)
            }
            Some((t, HandedTo::Owner)) => {
                tracing::info!(channel = %channel, to, offset = t.offset, "replica handed to the channel's owner: its leader is lost here");
                Release::State(t)
            }
            None => match r.replicas.holder_for(channel, &asker) {
                Some(holder) => {
                    tracing::debug!(channel = %channel, to, holder = %holder, "no replica to hand: naming the broker that may hold it");
                    Release::MovedTo(holder.to_string())
                }
                None => Release::NotHeld,
            },
        }
    }

    /// A channel fenced here for broker `existing`, asked for by `to`:
    /// "ask `existing`", unless `existing` is the leader of the term this
    /// broker's replica of it follows and that leader is lost here. Then
    /// the fence is only what the leader's first request for the channel
    /// left (it asked here, its ring's previous owner, and was told "not
    /// held"), and the replica, or the name of who holds it, goes to `to`
    /// as to any owner that asks ([`Self::replica_for`]); the fence then
    /// names `to`. Sent to the lost leader instead, an owner that joined
    /// after its death found nobody to ask, and started the channel anew
    /// (tests/hand_back.rs).
    fn past_a_lost_leaders_fence(
        &self,
        channel: &ChannelName,
        (existing, to): (&str, &str),
        holds_copy: bool,
    ) -> Release {
        let moved = || Release::MovedTo(existing.to_owned());
        let Some(r) = self.replicated() else {
            return moved();
        };
        let leader = r
            .replicas
            .register(channel)
            .and_then(|(_, _, c)| c)
            .map(|c| c.leader);
        let Some(leader) = leader.filter(|l| l.as_str() == existing) else {
            return moved();
        };
        if !r.replicas.leader_lost(&leader) {
            return moved();
        }
        let release = self.replica_for(channel, to, holds_copy);
        if let Release::State(_) = &release
            && let Some(mut s) = self.inner.registry.lock_existing(channel)
            && s.is_fenced()
        {
            s.lifecycle = Lifecycle::Fenced {
                to: to.into(),
                since: Instant::now(),
            };
        }
        match release {
            Release::NotHeld => moved(),
            other => other,
        }
    }

    /// Marks held channels that `verify_with` names a broker for: that
    /// broker may hold a newer copy, to be asked before they are served.
    pub fn mark_unverified(&self, verify_with: impl Fn(&ChannelName) -> Option<String>) {
        self.inner.registry.for_each(|channel, s| {
            if matches!(s.lifecycle, Lifecycle::Serving | Lifecycle::Unverified(_))
                && let Some(other) = verify_with(channel)
            {
                s.lifecycle = Lifecycle::Unverified(other.into());
            }
        });
    }

    /// The term the copy of `channel` held here comes from, if one is held.
    pub fn copy_term(&self, channel: &ChannelName) -> Option<Term> {
        let s = self.inner.registry.lock_existing(channel)?;
        (!s.is_fenced()).then(|| self.rank_term(channel, &s))
    }

    /// The copy here is the one to serve (it was checked, or replaced).
    pub fn verified(&self, channel: &ChannelName) {
        if let Some(mut s) = self.inner.registry.lock_existing(channel)
            && matches!(s.lifecycle, Lifecycle::Unverified(_))
        {
            s.lifecycle = Lifecycle::Serving;
        }
    }

    /// Takes over a channel's state from its previous owner. Replaces a
    /// fence or nothing, or an older epoch of the channel held here (two
    /// copies exist after a partition: the newer wins); otherwise the state
    /// here wins. Gateways subscribed to a replaced copy are told to
    /// subscribe again, so their clients learn of the new epoch.
    pub fn adopt(&self, mut snapshot: Snapshot) -> Result<bool, BrokerError> {
        let options = self.inner.namespaces.options(&snapshot.channel)?;
        let channel = snapshot.channel.clone();
        // A leader's hand-over: its log comes too, to stand on its term.
        let handed = snapshot
            .handed
            .take()
            .filter(|_| self.replicated().is_some())
            .map(|config| (config, snapshot.clone()));
        let keys = std::mem::take(&mut snapshot.keys);
        let epoch = snapshot.epoch.clone();
        let mut snapshot = Some(snapshot);
        let (mut s, created) = self.inner.registry.lock_or_insert(&channel, || {
            let snap = snapshot.take().expect("taken once");
            ChannelState::from_snapshot(snap, options.clone(), Instant::now(), &self.inner.budget)
        });
        let adopted = match snapshot {
            _ if created => true,
            Some(snap) if s.is_fenced() => {
                *s = ChannelState::from_snapshot(snap, options, Instant::now(), &self.inner.budget);
                true
            }
            // A copy of a later term, a newer epoch, or the same epoch
            // further on: a replica took the channel over while this copy
            // was frozen or cut off, and went on at the same offsets.
            Some(snap)
                if snap.rank().supersedes(&CopyRank {
                    term: self.rank_term(&channel, &s),
                    epoch: &s.epoch,
                    created_micros: s.created_micros,
                    offset: s.offset,
                }) =>
            {
                tracing::warn!(channel = %channel, stale = %s.epoch, newer = %snap.epoch, offset = snap.offset, "a newer copy of the channel replaces the one here");
                // What this broker led of it is over: its log ends where
                // the copy it replaces did.
                if let Some(r) = self.replicated() {
                    r.replicas.step_down(&channel, "a newer copy replaced it");
                }
                let stale = std::mem::replace(
                    &mut *s,
                    ChannelState::from_snapshot(snap, options, Instant::now(), &self.inner.budget),
                );
                stale.deliver(
                    DeliveryKind::Control,
                    Control::Resubscribe.encode(),
                    self.inner.host.wall_micros(),
                );
                true
            }
            _ => false,
        };
        if adopted {
            // Under the channel's lock, before any publish here can look:
            // the copy's keys replace those remembered here, some of which
            // may be of appends never committed, at offsets the copy gave
            // to other publications; a retry answered with one would be
            // acknowledged and never stored (tests/split_partition.rs,
            // after a heal).
            self.replace_keys(&channel, &epoch, keys);
            if let (Some((config, copy)), Some(r)) = (handed, self.replicated()) {
                r.replicas.seed(&copy, &config, self.wall_micros());
            }
            drop(s);
            metrics::counter!("switchboard_broker_handoffs_total", "direction" => "in")
                .increment(1);
        }
        Ok(adopted)
    }

    /// The term that ranks the copy `s` of `channel` held here: the one it
    /// is led in, else the one it was last led or followed in.
    fn rank_term(&self, channel: &ChannelName, s: &ChannelState) -> Term {
        self.replicated()
            .and_then(|r| r.replicas.leads(channel))
            .unwrap_or(s.copy_term)
    }

    /// `channel`'s idempotency keys in `epoch`, the newest
    /// [`MAX_HANDED_KEYS`], with their offsets: for its next owner.
    fn keys_of(&self, channel: &ChannelName, epoch: &str, now: Instant) -> Vec<(String, u64)> {
        let mut idempotency = self.inner.idempotency.lock();
        idempotency
            .0
            .newest_of(channel, MAX_HANDED_KEYS, now)
            .into_iter()
            .filter(|(_, position)| position.epoch == epoch)
            .map(|(key, position)| (key, position.offset))
            .collect()
    }

    /// Replaces the keys remembered for `channel` with those handed over
    /// with it (in `epoch`): a retry here is answered with the first
    /// position, and only by the copy held now. Each is remembered for a
    /// whole window from now, so a key may outlive its window by the time
    /// it spent at the previous owner.
    fn replace_keys(&self, channel: &ChannelName, epoch: &str, keys: Vec<(String, u64)>) {
        let now = Instant::now();
        let mut idempotency = self.inner.idempotency.lock();
        let (cache, charge) = &mut *idempotency;
        cache.forget_group(channel);
        for (key, offset) in keys {
            if !crate::idempotency::valid_key(&key) {
                continue;
            }
            let position = switchboard_core::Position {
                offset,
                epoch: epoch.to_owned(),
            };
            cache.insert((channel.clone(), key), position, now);
        }
        charge.set(cache.bytes());
    }

    /// Creates the channel's state here if there is none.
    pub fn touch(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        self.with_channel(channel, |_| ())
    }

    /// Lifts a fence whose broker is gone: the channel starts anew here.
    pub fn unfence(&self, channel: &ChannelName) {
        self.inner.registry.remove_if(channel, |s| s.is_fenced());
    }
}

/// `s`'s history as a snapshot carries it: each entry's age at `now`.
fn history_of(s: &ChannelState, now: Instant) -> Vec<SnapshotEntry> {
    s.history
        .entries()
        .map(|(offset, at, frame)| SnapshotEntry {
            offset,
            age: now.saturating_duration_since(at),
            frame: frame.clone(),
        })
        .collect()
}
