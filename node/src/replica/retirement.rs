//! Retiring an idle channel (docs/replication.md "Retiring an idle
//! channel"): the state a replicated channel leaves at its replica set —
//! a register at every voter, a replica log at every data replica — is
//! forgotten once the channel has gone idle at its leader (no
//! subscribers, nothing pending, every publication past its history TTL),
//! so that channels that come and go do not grow the brokers without
//! bound.
//!
//! The leader asks every other voter of its term to retire the channel;
//! a voter forgets its register only if it took part in nothing later
//! (`Register::settled_at`), and raises its floor to the promise it
//! forgot, so that it never votes twice in one term nor takes an old
//! leader's appends. The leader forgets its own last, once every voter
//! has: a leader that forgot while a voter still held the configuration
//! would find it newer than anything it knows, and could not stand.

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
    /// This broker took part in a later term (`promised`), leads the
    /// channel or is standing for it: it keeps it.
    Kept { promised: Term },
}

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
    /// forgets this broker's register and log of it unless it took part in
    /// anything later, or holds more than `end` (a publication that came
    /// in meanwhile, which may be committed: forgotten here, it would be
    /// on the leader alone).
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
        let busy = c.leading.is_some() || c.standing > 0 || c.log.end() > end;
        if busy || !r.settled_at(term) || !from_its_leader {
            return Ok(Retired::Kept {
                promised: r.promised(),
            });
        }
        store.lock().forget(channel, r.promised())?;
        channels.remove(channel);
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

    /// Every other voter retired `retiring`: this broker steps down and
    /// forgets the channel too, if it still leads it in that term with
    /// nothing appended since. False if it kept it.
    pub fn forget_led(&self, retiring: &Retiring) -> Result<bool, ReplicaError> {
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
        c.step_down(&retiring.channel, "retired");
        channels.remove(&retiring.channel);
        Ok(true)
    }

    /// The highest term of any register this broker forgot.
    pub fn floor(&self) -> Term {
        self.store.as_ref().map_or(Term::ZERO, |s| s.lock().floor())
    }

    /// How many channels this broker keeps replication state for.
    pub fn held(&self) -> usize {
        self.channels.lock().len()
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
