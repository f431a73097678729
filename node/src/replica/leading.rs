//! The leader's side of a channel, in [`Replicas`]: leading a won
//! configuration, appending publications, and what each member's answers
//! mean ([`Leadership`] decides; this keeps it beside the channel's
//! register and log, under the same lock). Nothing here does IO: every
//! call returns the [`Outgoing`] messages for the caller to send.

use std::time::{Duration, Instant};

use switchboard_cluster::replication::{Leadership, ReplicaConfig};
use switchboard_core::{BrokerName, ChannelName};
use switchboard_proto::replica::v1::{
    self as pb, replicate_reply::Kind as Reply, replicate_request::Kind as Request,
};
use tokio::sync::watch;

use super::{Entry, Epoch, ReplicaChannel, ReplicaError, Replicas, wire::config_to_pb};

/// A message for one member's stream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: BrokerName,
    pub request: pb::ReplicateRequest,
}

/// What a leader keeps for a channel it leads.
pub(super) struct Leading {
    leadership: Leadership,
    epoch: Epoch,
    /// The committed offset; publishes wait on it. Dropped when this
    /// broker stops leading, which fails them.
    committed: watch::Sender<u64>,
    /// When the last lease renewal left (leases count from it).
    renewal_sent: Option<Instant>,
    /// Committed entries kept in the log (the history window, and at
    /// least [`MIN_KEPT`] so that delivery never finds one gone).
    keep: u64,
}

impl Leading {
    pub(super) fn config(&self) -> &ReplicaConfig {
        self.leadership.config()
    }

    pub(super) fn term(&self) -> switchboard_cluster::replication::Term {
        self.leadership.term()
    }

    /// The leader's log end.
    pub(super) fn end(&self) -> u64 {
        self.leadership.end()
    }
}

/// Committed entries a leader keeps at least, whatever the history size:
/// delivery reads committed entries from the log after the commit.
const MIN_KEPT: u64 = 4096;

/// A publication appended by the leader: its offset, and the committed
/// offset to wait on (closed if leadership is lost first).
pub struct Appended {
    pub offset: u64,
    pub committed: watch::Receiver<u64>,
    pub outgoing: Vec<Outgoing>,
}

/// A heartbeat's `sent_micros`: 1 + microseconds from `started` to `now`
/// (0 means "not said", from a leader before session 21).
fn sent_micros(started: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX - 1) + 1
}

/// The send a lease grant answers, from the `sent_micros` its voter
/// echoed: a grant counts from when the heartbeat it answers left, never
/// from a later one. Replies lag behind sends under load (a stream's
/// queue holds thousands of messages when a leader leads thousands of
/// channels), and counting each from the latest send overstated the lease
/// by as much as the lag: a leader counted on leases its voters no longer
/// held (`leads_with_majority`, which lets it serve its copy after a
/// partition without checking it elsewhere). None for a voter before
/// session 21 (0), or an echo from the future.
fn granted_for(started: Instant, echoed: u64) -> Option<Instant> {
    let sent = started.checked_add(Duration::from_micros(echoed.checked_sub(1)?))?;
    (sent <= Instant::now()).then_some(sent)
}

fn request(leader: &BrokerName, channel: &ChannelName, kind: Request) -> pb::ReplicateRequest {
    pb::ReplicateRequest {
        leader: leader.to_string(),
        channel: channel.to_string(),
        kind: Some(kind),
    }
}

impl ReplicaChannel {
    fn adopt_for(
        &self,
        me: &BrokerName,
        channel: &ChannelName,
        to: &BrokerName,
    ) -> Option<Outgoing> {
        let l = self.leading.as_ref()?;
        let adopt = pb::Adopt {
            config: Some(config_to_pb(l.leadership.config())),
            leader_end: l.leadership.end(),
            epoch: l.epoch.id.clone(),
            created_micros: l.epoch.created_micros,
        };
        Some(Outgoing {
            to: to.clone(),
            request: request(me, channel, Request::Adopt(adopt)),
        })
    }

    /// A lease renewal of the channel led here to each of its other voters,
    /// sent `now`.
    fn heartbeats(
        &mut self,
        me: &BrokerName,
        channel: &ChannelName,
        started: Instant,
        now: Instant,
    ) -> Vec<Outgoing> {
        let Some(l) = self.leading.as_mut() else {
            return Vec::new();
        };
        l.renewal_sent = Some(now);
        let term = l.leadership.term().0;
        let sent_micros = sent_micros(started, now);
        let voters = l.leadership.config().voters();
        voters
            .into_iter()
            .filter(|v| v != me)
            .map(|v| {
                let beat = Request::Heartbeat(pb::Heartbeat { term, sent_micros });
                Outgoing {
                    to: v,
                    request: request(me, channel, beat),
                }
            })
            .collect()
    }

    /// Appends of `range` to `to`, from this leader's log.
    fn appends(
        &self,
        me: &BrokerName,
        channel: &ChannelName,
        to: &BrokerName,
        range: std::ops::Range<u64>,
    ) -> Vec<Outgoing> {
        let Some(l) = self.leading.as_ref() else {
            return Vec::new();
        };
        let (term, committed) = (l.leadership.term().0, l.leadership.committed());
        range
            .filter_map(|offset| {
                let e = self.log.get(offset)?;
                let append = pb::Append {
                    term,
                    offset,
                    frame: e.frame.clone(),
                    idempotency_key: e.idempotency_key.clone().unwrap_or_default(),
                    committed,
                    published_micros: e.published_micros,
                    log_start: self.log.first(),
                };
                Some(Outgoing {
                    to: to.clone(),
                    request: request(me, channel, Request::Append(append)),
                })
            })
            .collect()
    }

    fn commit(&mut self, range: std::ops::Range<u64>) {
        if let Some(l) = &self.leading
            && !range.is_empty()
        {
            self.log.mark_committed(range.end - 1);
            l.committed.send_replace(range.end - 1);
            let end = self.log.end();
            self.log.forget_before(end.saturating_sub(l.keep) + 1);
        }
    }

    pub(super) fn step_down(&mut self, channel: &ChannelName, why: &str) {
        if let Some(l) = self.leading.take() {
            tracing::warn!(channel = %channel, term = %l.leadership.term(), reason = why, "no longer leading");
        }
    }
}

impl Replicas {
    /// Leads `config` (just won) in `epoch`: the configuration goes to every
    /// member, with this log's end.
    pub fn lead(
        &self,
        channel: &ChannelName,
        config: &ReplicaConfig,
        epoch: Epoch,
    ) -> Result<Vec<Outgoing>, ReplicaError> {
        let keep = self.namespaces.options(channel)?.history_size as u64;
        self.with(channel, |c, me| {
            let leadership =
                Leadership::new(config.clone(), c.log.end(), c.log.committed(), self.lease);
            // A new term of a channel led here (a refill) keeps the waits of
            // publishes already appended: they commit in the new term.
            let committed = match c.leading.take() {
                Some(previous) => previous.committed,
                None => watch::channel(leadership.committed()).0,
            };
            c.epoch = Some(epoch.clone());
            c.leading = Some(Leading {
                leadership,
                epoch,
                committed,
                renewal_sent: None,
                keep: keep.max(MIN_KEPT),
            });
            let mut out: Vec<Outgoing> = config
                .members()
                .filter(|m| *m != me)
                .filter_map(|m| c.adopt_for(me, channel, m))
                .collect();
            // Followers catch up on what they lack (all of it, for one new
            // to the set).
            for f in &config.followers {
                let range = c.leading.as_mut().map_or(0..0, |l| l.leadership.unacked(f));
                out.extend(c.appends(me, channel, f, range));
            }
            // Winning grants no lease (accepting a configuration is not a
            // renewal): a renewal now, rather than at the next tick, gives
            // the new leader its majority's leases, and so its reads
            // (`read_lease`), one round trip after it won.
            out.extend(c.heartbeats(me, channel, self.started, Instant::now()));
            (out, false)
        })
    }

    /// Appends `entry` as the next publication of a channel this broker
    /// leads.
    pub fn append_led(
        &self,
        channel: &ChannelName,
        entry: Entry,
    ) -> Result<Appended, ReplicaError> {
        self.with(channel, |c, me| {
            let Some(l) = c.leading.as_mut() else {
                return (Err(ReplicaError::NotLeader), false);
            };
            let (offset, committed) = l.leadership.append();
            let followers = l.leadership.config().followers.clone();
            c.log.push(entry);
            let mut outgoing = Vec::new();
            for f in &followers {
                let range = c.leading.as_mut().map_or(0..0, |l| l.leadership.to_send(f));
                outgoing.extend(c.appends(me, channel, f, range));
            }
            c.commit(committed);
            let committed = c.leading.as_ref().map(|l| l.committed.subscribe());
            (
                committed
                    .map(|committed| Appended {
                        offset,
                        committed,
                        outgoing,
                    })
                    .ok_or(ReplicaError::NotLeader),
                false,
            )
        })?
    }

    /// A member's answer on its stream: what to send it next.
    pub fn on_reply(
        &self,
        from: &BrokerName,
        reply: pb::ReplicateReply,
    ) -> Result<Vec<Outgoing>, ReplicaError> {
        let channel = super::wire::channel(&reply.channel).map_err(|_| ReplicaError::NotLeader)?;
        let started = self.started;
        let grant = matches!(reply.kind, Some(Reply::LeaseMs(ms)) if ms > 0);
        // Only for a channel led here: a reply that was on its way when the
        // channel was retired must not bring it back.
        let out = self.with_held(&channel, |c, me| {
            let Some(l) = c.leading.as_mut() else {
                return (Vec::new(), false);
            };
            if reply.term != l.leadership.term().0 {
                return (Vec::new(), false);
            }
            let out = match reply.kind {
                Some(Reply::Stored(end)) => {
                    let range = l.leadership.on_ack(from, end);
                    c.commit(range);
                    Vec::new()
                }
                Some(Reply::Gap(next)) => {
                    let range = l.leadership.on_gap(from, next);
                    c.appends(me, &channel, from, range)
                }
                Some(Reply::NotAdopted(_)) => {
                    let range = l.leadership.unacked(from);
                    c.adopt_for(me, &channel, from)
                        .into_iter()
                        .chain(c.appends(me, &channel, from, range))
                        .collect()
                }
                Some(Reply::LeaseMs(ms)) if ms > 0 => {
                    if let Some(sent) = granted_for(started, reply.heartbeat_sent_micros)
                        .or(l.renewal_sent)
                    {
                        l.leadership.on_lease_granted(from, sent);
                    }
                    Vec::new()
                }
                // A witness that refuses the configuration holds no data,
                // so nothing waits on it, and the leader and its data
                // replicas accepted the configuration: a majority, which any
                // later candidate meets (and whose leases keep one from
                // winning while they run). Stepping down for it left, under
                // churn, channels whose witness's floor had just risen past
                // their first term led by nobody, and so never retired
                // (session 20). The model's leaders never stepped down for
                // a refused `Adopt`; a follower's refusal still counts, as
                // its `Stale` appends do there.
                Some(Reply::Adopted(false)) if !l.leadership.config().is_data_replica(from) => {
                    tracing::debug!(channel = %channel, witness = %from, term = reply.term, "the witness refused the configuration; leading on");
                    Vec::new()
                }
                Some(Reply::Stale(_) | Reply::Adopted(false)) => {
                    c.step_down(&channel, "a member promised a later term");
                    Vec::new()
                }
                _ => Vec::new(),
            };
            (out, false)
        })?;
        if grant {
            self.lease_waiters.granted();
        }
        Ok(out)
    }

    /// `peer`'s stream was (re)opened: the configuration again, and every
    /// append it has not acknowledged, for each channel led here that it is
    /// a member of.
    pub fn resync(&self, peer: &BrokerName) -> Vec<Outgoing> {
        let mut channels = self.channels.lock();
        let mut out = Vec::new();
        for (channel, c) in channels.iter_mut() {
            let Some(l) = c.leading.as_mut() else {
                continue;
            };
            if !l.leadership.config().members().any(|m| m == peer) {
                continue;
            }
            let range = l.leadership.unacked(peer);
            out.extend(c.adopt_for(&self.me, channel, peer));
            out.extend(c.appends(&self.me, channel, peer, range));
        }
        out
    }

    /// Lease renewals for every channel led here, to its other voters.
    pub fn renewals(&self) -> Vec<Outgoing> {
        let now = Instant::now();
        let mut channels = self.channels.lock();
        let mut out = Vec::new();
        for (channel, c) in channels.iter_mut() {
            out.extend(c.heartbeats(&self.me, channel, self.started, now));
        }
        out
    }

    /// The channels this broker leads.
    pub fn led(&self) -> Vec<ChannelName> {
        let channels = self.channels.lock();
        channels
            .iter()
            .filter(|(_, c)| c.leading.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The other members of the configuration this broker leads
    /// `channel` in.
    pub fn members_of(&self, channel: &ChannelName) -> Option<Vec<BrokerName>> {
        let channels = self.channels.lock();
        let config = channels
            .get(channel)?
            .leading
            .as_ref()?
            .leadership
            .config()
            .clone();
        Some(
            config
                .members()
                .filter(|m| **m != self.me)
                .cloned()
                .collect(),
        )
    }

    /// Stops leading `channel` (handed to another broker, or no majority
    /// of its voters left): its waiting publishes that are not committed
    /// fail, and nothing more is appended or committed here. Returns the offset committed by then,
    /// if it led the channel: every publication acknowledged here is at or
    /// below it.
    pub fn step_down(&self, channel: &ChannelName, why: &str) -> Option<u64> {
        let mut channels = self.channels.lock();
        let c = channels.get_mut(channel)?;
        let led = c.leading.is_some().then(|| c.log.committed());
        c.step_down(channel, why);
        led
    }

    /// [`Self::step_down`] to hand `channel` over (a planned move), with
    /// the configuration it led: the next owner may stand on that term
    /// with the copy it gets as its log (`Snapshot::handed`).
    pub fn hand_over(&self, channel: &ChannelName) -> Option<(u64, ReplicaConfig)> {
        let mut channels = self.channels.lock();
        let c = channels.get_mut(channel)?;
        let config = c.leading.as_ref()?.leadership.config().clone();
        let committed = c.log.committed();
        c.step_down(channel, "handed over");
        Some((committed, config))
    }

    /// Whether this broker leads `channel` with a lease from a majority of
    /// its voters: no other copy can be newer (a later term would need some
    /// of those voters, and they hold off every candidate meanwhile).
    pub fn leads_with_majority(&self, channel: &ChannelName) -> bool {
        self.lease_held(channel) == Some(true)
    }

    /// For a channel led here, whether a majority of its voters hold a
    /// lease for this broker; `None` if it does not lead the channel. One
    /// lock for both, as every read asks (`read_lease`).
    pub(super) fn lease_held(&self, channel: &ChannelName) -> Option<bool> {
        let channels = self.channels.lock();
        let l = channels.get(channel)?.leading.as_ref()?;
        Some(l.leadership.may_serve_reads(Instant::now()))
    }

    /// The committed offset of a channel led here, to wait on.
    pub fn committed(&self, channel: &ChannelName) -> Option<watch::Receiver<u64>> {
        let channels = self.channels.lock();
        Some(
            channels
                .get(channel)?
                .leading
                .as_ref()?
                .committed
                .subscribe(),
        )
    }

    /// The offset the next publication of a channel led here gets.
    pub fn next_offset(&self, channel: &ChannelName) -> Option<u64> {
        let channels = self.channels.lock();
        let l = channels.get(channel)?.leading.as_ref()?;
        Some(l.leadership.end() + 1)
    }

    /// The publication at `offset` of `channel`'s log, if held.
    pub fn entry(&self, channel: &ChannelName, offset: u64) -> Option<Entry> {
        self.channels.lock().get(channel)?.log.get(offset).cloned()
    }

    /// Whether this broker leads `channel` (and in which term).
    pub fn leads(&self, channel: &ChannelName) -> Option<switchboard_cluster::replication::Term> {
        let channels = self.channels.lock();
        channels
            .get(channel)?
            .leading
            .as_ref()
            .map(|l| l.leadership.term())
    }
}
