//! Retiring an idle channel (docs/replication.md "Retiring an idle
//! channel"): the state a replicated channel leaves at its replica set —
//! a register at every voter, a replica log at every data replica — is
//! forgotten once the channel has gone idle at its leader (no
//! subscribers, nothing pending, every publication past its history TTL),
//! so that channels that come and go do not grow the brokers without
//! bound.
//!
//! The leader decides, and forgets first: it steps down and forgets its
//! register and log of the channel at once (under the registry's lock for
//! the channel, so that no state is made for it meanwhile), so the term
//! it led can never go on with part of its brokers gone. Then it tells
//! every other broker its configuration names (voters, and the holders:
//! brokers that may hold something of the channel from an earlier
//! configuration), again each sweep until each has answered. Each forgets
//! its register and log only if it knows no later configuration
//! (`Register::settled_at`) and holds nothing beyond the leader's end,
//! and raises its floor to the promise it forgot, so that it never votes
//! twice in one term nor takes an old leader's appends. (Voters first was
//! unsafe: a leader that then kept the channel, because a request came
//! in, went on leading its term while a voter that had forgotten could
//! decide a new first term without it; the model found it.)

use std::{sync::atomic::Ordering, time::Duration};

use switchboard_cluster::replication::{ReplicaConfig, Term};
use switchboard_core::{BrokerName, ChannelName};

use super::{Entry, ReplicaError, Replicas};
use crate::idempotency::{GATEWAY_KEY_PREFIX, GATEWAY_KEY_WINDOW};

/// A voter's answer to its leader's request to retire a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// Not held here (any more).
    Forgotten,
    /// This broker knows a later configuration (`configured`), leads the
    /// channel, stands for it or holds more than the leader's end: it
    /// keeps it. `promised` is its promise.
    Kept { promised: Term, configured: Term },
}

/// Retirements this broker remembers until every broker named has
/// confirmed them; beyond it the oldest is let go (its stragglers keep a
/// register each: docs/replication.md).
const MAX_UNTOLD: usize = 65_536;

/// A channel this broker leads that may be retired, as it was when asked.
#[derive(Debug, Clone)]
pub struct Retiring {
    pub channel: ChannelName,
    pub config: ReplicaConfig,
    /// The log's end: the channel is forgotten here only if nothing was
    /// appended since.
    pub end: u64,
}

impl Replicas {
    /// `leader` retires `channel` in `term`, its log ending at `end`:
    /// forgets this broker's register and log of it unless it knows a
    /// later configuration, leads or stands for the channel, or holds more
    /// than `end` (a publication that came in meanwhile, which may be
    /// committed: forgotten here, it would be on the leader alone).
    pub fn retire(
        &self,
        channel: &ChannelName,
        term: Term,
        leader: &BrokerName,
        end: u64,
    ) -> Result<Retired, ReplicaError> {
        let store = self.store.as_ref().ok_or(ReplicaError::NoDataDir)?;
        let mut channels = self.channels.lock();
        let Some(c) = channels.get(channel) else {
            return Ok(Retired::Forgotten);
        };
        let r = &c.register;
        let from_its_leader = r
            .config()
            .is_none_or(|cfg| cfg.term < term || cfg.leader == *leader);
        // A leader of an earlier term is out of date (a later one was
        // chosen): what it may have committed is in the retiring log.
        let leads_now = c.leading.as_ref().is_some_and(|l| l.term() >= term);
        // Only a log of the retiring term can hold a publication the
        // leader took after it decided; an older one holds nothing newer.
        let holds_more = c.log.term() >= term && c.log.end() > end;
        let busy = leads_now || c.standing > 0 || holds_more;
        if busy || !r.settled_at(term) || !from_its_leader {
            return Ok(Retired::Kept {
                promised: r.promised(),
                configured: r.config().map_or(Term::ZERO, |c| c.term),
            });
        }
        // Never below the retired term: no term is won twice, even by the
        // channel's next incarnation.
        store.lock().forget(channel, r.promised().max(term))?;
        if let Some(mut c) = channels.remove(channel) {
            c.step_down(channel, "retired by a later term's leader");
        }
        tracing::debug!(channel = %channel, term = %term, leader = %leader, "retired");
        Ok(Retired::Forgotten)
    }

    /// Up to `max` channels this broker leads with nothing pending, that
    /// `idle` says are idle here, and whose every publication is past both
    /// its history TTL and its idempotency key's window (`key_window` for
    /// clients' keys) at `now_micros`: a key forgotten early would let a
    /// retry be published twice. Each call starts where the last one
    /// stopped, so that channels some voter keeps do not hold back others.
    pub fn retirable(
        &self,
        now_micros: u64,
        key_window: Duration,
        max: usize,
        idle: impl Fn(&ChannelName) -> bool,
    ) -> Vec<Retiring> {
        let quiet: Vec<ChannelName> = {
            let channels = self.channels.lock();
            channels
                .iter()
                .filter(|(_, c)| {
                    c.leading.is_some() && c.standing == 0 && c.log.committed() == c.log.end()
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        // Not under this broker's lock: the registry takes its own first,
        // then this one (a state made from the replica log).
        let idle: Vec<ChannelName> = quiet.into_iter().filter(|name| idle(name)).collect();
        let channels = self.channels.lock();
        let all: Vec<Retiring> = idle
            .into_iter()
            .filter_map(|name| {
                let c = channels.get(&name)?;
                let l = c.leading.as_ref()?;
                let end = c.log.end();
                let ttl = self.namespaces.options(&name).ok()?.history_ttl;
                // Newest first: a live channel stops at its last publication.
                let expired = (c.log.first()..=end)
                    .rev()
                    .filter_map(|o| c.log.get(o))
                    .all(|e| {
                        let kept = ttl.max(key_window_of(e, key_window));
                        e.published_micros.saturating_add(kept.as_micros() as u64) <= now_micros
                    });
                let quiet = c.standing == 0 && c.log.committed() == end;
                (quiet && expired).then(|| Retiring {
                    channel: name,
                    config: l.config().clone(),
                    end,
                })
            })
            .collect();
        drop(channels);
        let from = self.retire_cursor.fetch_add(max, Ordering::Relaxed) % all.len().max(1);
        all.iter()
            .cycle()
            .skip(from)
            .take(max.min(all.len()))
            .cloned()
            .collect()
    }

    /// Retires `retiring` here, as its leader, first: steps down and
    /// forgets the channel if it still leads it in that term with nothing
    /// appended since, and remembers to tell the others. False if it kept
    /// it. The caller makes sure no state is made for the channel
    /// meanwhile.
    pub fn retire_led(&self, retiring: &Retiring) -> Result<bool, ReplicaError> {
        let store = self.store.as_ref().ok_or(ReplicaError::NoDataDir)?;
        let mut channels = self.channels.lock();
        let Some(c) = channels.get_mut(&retiring.channel) else {
            return Ok(false);
        };
        let same = c
            .leading
            .as_ref()
            .is_some_and(|l| l.term() == retiring.config.term && l.end() == retiring.end);
        if !same || c.standing > 0 {
            return Ok(false);
        }
        store
            .lock()
            .forget(&retiring.channel, c.register.promised())?;
        // Not `step_down`, which warns: retiring is routine (one debug line
        // per channel, `LocalBroker::retire_here`), and nothing waits on a
        // channel with nothing pending.
        channels.remove(&retiring.channel);
        drop(channels);
        let mut retired = self.retired.lock();
        if retired.len() >= MAX_UNTOLD
            && let Some(any) = retired.keys().next().cloned()
        {
            retired.remove(&any);
        }
        retired.insert(retiring.channel.clone(), retiring.clone());
        Ok(true)
    }

    /// Up to `max` retirements of this broker's that some broker has not
    /// confirmed yet.
    pub fn untold(&self, max: usize) -> Vec<Retiring> {
        let retired = self.retired.lock();
        // Each call starts further on: those a broker that is down keeps
        // unconfirmed do not hold back the others.
        let from = self.retire_cursor.fetch_add(max, Ordering::Relaxed) % retired.len().max(1);
        let max = max.min(retired.len());
        retired
            .values()
            .cycle()
            .skip(from)
            .take(max)
            .cloned()
            .collect()
    }

    /// Every broker `channel`'s configuration named forgot it.
    pub fn told(&self, channel: &ChannelName) {
        self.retired.lock().remove(channel);
    }

    /// Whether this broker retired `channel` in `term` or later and some
    /// broker has not confirmed it yet.
    pub fn retired_here(&self, channel: &ChannelName, term: Term) -> bool {
        self.retired
            .lock()
            .get(channel)
            .is_some_and(|t| t.config.term >= term)
    }

    /// `channel`'s floor: the highest term of any register this broker
    /// forgot in its bucket.
    pub fn floor(&self, channel: &ChannelName) -> Term {
        self.store
            .as_ref()
            .map_or(Term::ZERO, |s| s.lock().floor(channel))
    }

    /// How many channels this broker keeps replication state for.
    pub fn held(&self) -> usize {
        self.channels.lock().len()
    }

    /// Drops the channels whose state holds nothing a fresh one would not
    /// (made by a message that changed nothing: a refused `Commit`, a late
    /// `Adopt` for a channel this broker retired, a candidacy that got no
    /// further), so that such messages do not grow the broker; the next
    /// one makes it afresh, above a floor at least as high. Returns how
    /// many went.
    pub fn drop_blank(&self) -> usize {
        let Some(store) = self.store.as_ref() else {
            return 0;
        };
        let mut channels = self.channels.lock();
        let store = store.lock();
        let before = channels.len();
        channels.retain(|name, c| !c.is_blank(store.floor(name)));
        before - channels.len()
    }
}

impl super::ReplicaChannel {
    /// Nothing here but what [`Replicas::fresh`] makes: no promise above
    /// `floor` nor to anyone, no configuration, no lease, an empty log
    /// that follows no term, and no leadership, candidacy or outbidding.
    fn is_blank(&self, floor: Term) -> bool {
        let r = &self.register;
        let register = r.config().is_none()
            && r.promised_to().is_none()
            && r.promised() <= floor
            && r.lease().is_none();
        register
            && self.log.is_blank()
            && self.epoch.is_none()
            && self.leading.is_none()
            && self.standing == 0
            && self.outbid == Term::ZERO
    }
}

/// How long `e`'s idempotency key is remembered: a gateway's for
/// [`GATEWAY_KEY_WINDOW`], a client's for `clients`.
fn key_window_of(e: &Entry, clients: Duration) -> Duration {
    match &e.idempotency_key {
        None => Duration::ZERO,
        Some(k) if k.starts_with(GATEWAY_KEY_PREFIX) => GATEWAY_KEY_WINDOW,
        Some(_) => clients,
    }
}
