//! Who leads a replicated channel at its owner (docs/replication.md): the
//! ring's owner stands for the channel's next term before it serves it —
//! term 1 for a channel starting here, the next one for a channel whose
//! replica this broker holds (a takeover, in the same epoch at the same
//! offsets) — and then leads it, so that every publication is stored on
//! the replica set before it is acknowledged.

use std::time::{Duration, Instant};

use switchboard_cluster::{
    ownership::Placement,
    replication::{Ineligible, LostMajority, Plan, lost_majority::shortfall},
};
use switchboard_core::{BrokerError, ChannelName};

use crate::{
    LocalBroker,
    local_broker::replicated::Replicated,
    replica::{
        Epoch, ReplicaError,
        election::{Elected, stand},
    },
};

/// How long one election may take before the request that needed it is
/// sent back to try again.
const ELECTION: Duration = Duration::from_secs(3);

/// What standing for a channel came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Succession {
    /// This broker leads it now (or already did).
    Leads,
    /// It may not stand (it holds no complete replica): the channel is
    /// served as it is held here, unreplicated.
    Ineligible,
    /// It may not stand, and the copy held here is of an earlier term than
    /// the one this broker (a live one) leads: ask it for its copy before
    /// serving this one.
    Stale(switchboard_core::BrokerName),
}

/// Leads `channel` if this broker can: stands for its next term, takes
/// its state over from the replica log if none is held here, and leads.
pub async fn lead(
    broker: &LocalBroker,
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Result<Succession, BrokerError> {
    let plan = plan_for(r, placement, channel);
    if let Some(term) = r.replicas.leads(channel) {
        let short = short_handed(r, placement, channel);
        if plan.down.is_empty() && !short {
            return Ok(Succession::Leads);
        }
        tracing::debug!(channel = %channel, term = %term, down = ?plan.down, short, "leading, but standing again to refill");
    }
    refuse_short(r, placement, channel, &plan)?;
    if let Some(why) = behind_the_state(broker, r, channel) {
        return Ok(ineligible(channel, &why));
    }
    if let Some(why) = no_majority_left(r, placement, channel) {
        serve_without_majority(broker, r, placement, channel)?;
        return Ok(ineligible(channel, &why));
    }
    // Leading with a member gone: a new term refills the replica set.
    let candidacy = match r.replicas.candidacy(channel, plan) {
        Ok(c) => c,
        Err(ReplicaError::Ineligible(why)) => {
            if let Some(leader) = stale_copy(broker, r, placement, channel) {
                return Ok(Succession::Stale(leader));
            }
            refuse_while_elsewhere(r, placement, channel)?;
            return Ok(ineligible(channel, &why));
        }
        Err(e) => return Err(BrokerError::Unavailable(e.to_string())),
    };
    let dial = &*r.dial;
    let deadline = Instant::now() + ELECTION;
    let elected = stand(&r.replicas, dial, channel, candidacy, deadline)
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let config = match elected {
        Elected::Leads { config, .. } => config,
        other => {
            tracing::info!(channel = %channel, outcome = ?other, "not elected; the request may come back");
            // A log handed over with the channel stands again when the
            // request comes back (until session 21 it stood once, and the
            // channel was then served unreplicated). Lost to a later term,
            // this broker learnt its configuration, and stands no more on
            // a log of an earlier one: it asks that term's leader for its
            // copy instead (`Succession::Stale`).
            return Err(BrokerError::NotOwner { owner: None });
        }
    };
    take_over(broker, r, channel, &config)?;
    let (id, created_micros) = broker
        .epoch_of(channel)
        .ok_or_else(|| BrokerError::Unavailable("the channel went away".into()))?;
    let epoch = Epoch { id, created_micros };
    if let Err(e) = broker.lead_won(r, channel, &config, epoch) {
        tracing::info!(channel = %channel, term = %config.term, "won, but the channel was handed over meanwhile");
        return Err(e);
    }
    r.deferrals.lock().settle(channel);
    Ok(Succession::Leads)
}

/// `broker.lost_majority = "serve"` for a channel [`no_majority_left`]
/// names: from here on it is served unreplicated, from this broker's
/// complete replica if it holds one (same epoch, same offsets).
fn serve_without_majority(
    broker: &LocalBroker,
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Result<(), BrokerError> {
    // Not while this broker leads it: then the copy here is the newest.
    if r.replicas.leads(channel).is_none() {
        refuse_while_elsewhere(r, placement, channel)?;
    }
    // Leading it: what is committed is served from here on, unreplicated;
    // what waits for a commit is refused, and retried.
    broker.stop_leading(r, channel);
    if broker.epoch_of(channel).is_none()
        && let Some(snapshot) = r.replicas.unclean_takeover(channel, broker.wall_micros())
    {
        let (epoch, offset) = (snapshot.epoch.clone(), snapshot.offset);
        broker.adopt(snapshot)?;
        tracing::warn!(channel = %channel, epoch = %epoch, offset, "no majority of voters left: serving this broker's complete replica, unreplicated");
    }
    Ok(())
}

/// The plan of `channel`'s next configuration: the ring's failover order,
/// with its members this broker has lost counted out (gossip's down,
/// ended streams, and a leader it follows and has lost, whatever gossip
/// says of it yet).
pub fn plan_for(r: &Replicated, placement: &Placement, channel: &ChannelName) -> Plan {
    let mut down: std::collections::BTreeSet<_> =
        lost_members(r, placement, channel).into_iter().collect();
    down.extend(r.replicas.lost_leader(channel));
    Plan {
        failover: placement.failover(channel.as_str()),
        first: placement.first_order(channel.as_str()),
        down,
        replicas: r.factor,
    }
}

/// With `broker.lost_majority = refuse`, refuses `channel` (the gateway
/// asks again, then answers code 100) while it cannot be replicated from
/// here: no majority of the voters of the newest configuration known here
/// is reachable, or fewer than R brokers are (docs/replication.md "A lost
/// majority"). A broker cut off by a partition then acknowledges nothing
/// that the majority's side goes on without, and starts no new epoch that
/// the heal would end.
/// `plan` is [`plan_for`] the channel.
pub fn refuse_short(
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
    plan: &Plan,
) -> Result<(), BrokerError> {
    if r.lost_majority != LostMajority::Refuse {
        return Ok(());
    }
    let newest = r.replicas.register(channel).and_then(|(_, _, c)| c);
    let live = |b: &switchboard_core::BrokerName| placement.is_live(b.as_str());
    let me = (r.replicas.me(), placement.brokers_seen());
    let Some(why) = shortfall(newest.as_ref(), me, live, plan) else {
        return Ok(());
    };
    tracing::debug!(channel = %channel, reason = %why, "refused: the channel cannot be replicated from here");
    metrics::counter!("switchboard_replication_refused_total").increment(1);
    Err(BrokerError::Unavailable(format!(
        "{why} (broker.lost_majority = refuse)"
    )))
}

/// Refuses `channel` (the gateway asks again) while a data replica of the
/// newest configuration this broker knows for it, other than this broker,
/// is live, for at most [`Deferrals::WAIT`](crate::deferral::Deferrals):
/// this broker may not stand on that term, and serving its own copy, or
/// none, would give away offsets acknowledged there (seen at a partition's
/// heal, when gossip took the healthy leader out of the ring for a moment:
/// a publication acknowledged at an offset the leader had given, then
/// lost; a new epoch announced, then ended). For a broker that may not
/// stand on that term, or holds nothing of the channel.
pub fn refuse_while_elsewhere(
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Result<(), BrokerError> {
    let Some(config) = r.replicas.register(channel).and_then(|(_, _, c)| c) else {
        return Ok(());
    };
    let live =
        |b: &switchboard_core::BrokerName| placement.is_live(b.as_str()) && !r.streams.is_down(b);
    let Some(holder) = config.data_elsewhere(r.replicas.me(), live) else {
        return Ok(());
    };
    if !r
        .deferrals
        .lock()
        .refuse(channel, std::time::Instant::now())
    {
        tracing::warn!(channel = %channel, holder = %holder, term = %config.term, "a newer copy is held elsewhere, but refused for too long: served from here");
        return Ok(());
    }
    tracing::info!(channel = %channel, holder = %holder, term = %config.term, "a newer copy is held elsewhere: refused for now");
    Err(BrokerError::NotOwner { owner: None })
}

/// After winning `config`'s term: the channel as this broker's replica log
/// holds it, if no state is held here (same epoch, same offsets), or a new
/// epoch if the log holds none.
fn take_over(
    broker: &LocalBroker,
    r: &Replicated,
    channel: &ChannelName,
    config: &switchboard_cluster::replication::ReplicaConfig,
) -> Result<(), BrokerError> {
    if broker.epoch_of(channel).is_some() {
        return Ok(());
    }
    match r.replicas.takeover(channel, broker.wall_micros()) {
        Some(snapshot) => {
            let (epoch, offset) = (snapshot.epoch.clone(), snapshot.offset);
            broker.adopt(snapshot)?;
            tracing::info!(channel = %channel, term = %config.term, epoch = %epoch, offset, "took the channel over from its replica");
            metrics::counter!("switchboard_replication_takeovers_total").increment(1);
            Ok(())
        }
        None => broker.touch(channel),
    }
}

/// Members of the configuration this broker leads `channel` in that are
/// no longer live.
pub fn lost_members(
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Vec<switchboard_core::BrokerName> {
    r.replicas
        .members_of(channel)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !placement.is_live(m.as_str()) || r.streams.is_down(m))
        .collect()
}

/// The live broker that leads a later term of `channel` than the one the
/// copy held here comes from, if any: this broker was frozen or cut off
/// while that one took the channel over, and its copy is stale. Served
/// unreplicated, it acknowledged a publication at an offset the new leader
/// had long given away (a thawed owner, in the SIGSTOP scenario with
/// R = 2). Its copy is to be checked against that leader's first.
fn stale_copy(
    broker: &LocalBroker,
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Option<switchboard_core::BrokerName> {
    let config = r.replicas.register(channel)?.2?;
    let held = broker.copy_term(channel)?;
    let elsewhere = &config.leader != r.replicas.me() && placement.is_live(config.leader.as_str());
    (elsewhere && held < config.term).then_some(config.leader)
}

/// Whether the configuration this broker leads `channel` in has fewer
/// members than the channel's failover order could name now: a broker was
/// down when the term began (R = 2's witness, say) and is live again. A
/// new term takes it in; without it, losing one more broker would leave
/// no majority of voters, and the channel would be served unreplicated.
pub fn short_handed(r: &Replicated, placement: &Placement, channel: &ChannelName) -> bool {
    let Some(members) = r.replicas.members_of(channel) else {
        return false;
    };
    // Besides the leader: R - 1 followers, and with R = 2 a witness.
    let wanted = if r.factor >= 2 { 2 } else { 0 };
    if members.len() >= wanted {
        return false;
    }
    let me = r.replicas.me();
    placement.failover(channel.as_str()).iter().any(|b| {
        b != me && !members.contains(b) && placement.is_live(b.as_str()) && !r.streams.is_down(b)
    })
}

/// Whether the configuration this broker leads `channel` in has fewer
/// members than the ring's brokers allow (besides the leader, R - 1
/// followers and, with R = 2, a witness), whether or not one can be taken
/// in yet: a broker back in the ring is taken in once its stream's down
/// mark runs out. For `switchboard_replication_degraded_channels`.
pub fn degraded(r: &Replicated, placement: &Placement, channel: &ChannelName) -> bool {
    let Some(members) = r.replicas.members_of(channel) else {
        return false;
    };
    let wanted = if r.factor >= 2 { 2 } else { 0 };
    let others = placement.failover(channel.as_str()).len().saturating_sub(1);
    members.len() < wanted.min(others)
}

/// Why this broker's replica log may not lead the channel it holds: it
/// lacks publications the held state has (the state came from another
/// broker, in a hand-over, and this log stopped earlier), or it is of
/// another epoch. Leading it would number new publications from the log's
/// end, at offsets subscribers already had: they would be acknowledged and
/// never delivered. Served as held, unreplicated, instead.
fn behind_the_state(
    broker: &LocalBroker,
    r: &Replicated,
    channel: &ChannelName,
) -> Option<Ineligible> {
    let (epoch, offset) = broker.held_at(channel)?;
    let (_, end, _, log_epoch) = r.replicas.state(channel)?;
    let other_epoch = log_epoch.is_some_and(|e| e.id != epoch);
    (other_epoch || offset > end).then_some(Ineligible::BehindHeldState {
        held: offset,
        log_end: end,
    })
}

/// Whether a majority of the voters of the newest configuration this
/// broker knows for `channel` is down (gossip counts them out) with its
/// leader lost here too (its stream ended or it fell silent, and every
/// lease granted to it here ran out), or this broker the leader: both
/// replicas of R = 2 killed, say, or a leader's follower and witness.
/// No candidate can win (an election would time out on every request:
/// code 100 for good). The channel is served here unreplicated: from
/// this broker's replica if it holds a complete one (same epoch, same
/// offsets), else in a new epoch, announced, as with R = 1. A broker cut
/// off from the others by a partition does the same while they may go
/// on: the price written in docs/replication.md.
fn no_majority_left(
    r: &Replicated,
    placement: &Placement,
    channel: &ChannelName,
) -> Option<Ineligible> {
    let config = r.replicas.register(channel)?.2?;
    let me = r.replicas.me();
    if &config.leader != me && !r.replicas.leader_lost(&config.leader) {
        return None;
    }
    config
        .majority_lost(me, |v| placement.is_live(v.as_str()))
        .then_some(Ineligible::NoMajorityLeft(config.term))
}

fn ineligible(channel: &ChannelName, why: &Ineligible) -> Succession {
    tracing::debug!(channel = %channel, reason = %why, "serving the channel unreplicated");
    metrics::counter!("switchboard_replication_unreplicated_total").increment(1);
    Succession::Ineligible
}

/// How often a leader renews the leases its voters grant: well inside
/// their length (the leader counts 90% of it), so that two renewals in
/// a row may be lost or late before its lease lapses.
const RENEW_EVERY: Duration = Duration::from_millis(150);

/// What [`start`] needs: this broker's replicas, its view of the ring,
/// how it reaches other brokers, and its settings.
pub struct Replicating {
    pub replicas: std::sync::Arc<crate::replica::Replicas>,
    pub placement: tokio::sync::watch::Receiver<std::sync::Arc<Placement>>,
    pub dialer: switchboard_cluster::dialer::SharedDialer,
    /// `broker.replication_factor`.
    pub factor: usize,
    /// `broker.lost_majority`.
    pub lost_majority: LostMajority,
}

/// Switches replication on for `broker` (a replication factor of 2 or
/// more): leaders' streams to their members, and lease renewals, until
/// `shutdown`. Other brokers are reached at the addresses `placement`
/// gives, through `dialer`.
pub fn start(
    tracker: &tokio_util::task::TaskTracker,
    broker: &LocalBroker,
    replicating: Replicating,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let Replicating {
        replicas,
        placement,
        dialer,
        factor,
        lost_majority,
    } = replicating;
    // Calls (votes, accepts, retirements) share one connection per broker;
    // each `Replicate` stream opens its own.
    let clients = std::sync::Arc::new(crate::replica::peer_clients::PeerClients::new(
        placement, dialer,
    ));
    let dial: crate::replica::peer_stream::SharedDial = {
        let clients = clients.clone();
        std::sync::Arc::new(move |name| clients.get(name))
    };
    let stream_dial: crate::replica::peer_stream::SharedDial =
        std::sync::Arc::new(move |name| clients.fresh(name));
    let streams = crate::replica::peer_stream::PeerStreams::new(
        replicas.clone(),
        stream_dial,
        tracker.clone(),
        shutdown.clone(),
    );
    broker.set_replicated(Replicated {
        replicas: replicas.clone(),
        streams: streams.clone(),
        dial,
        factor,
        lost_majority,
        deferrals: Default::default(),
    });
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => streams.send(replicas.renewals()),
            }
        }
    });
}
