//! [`Handoff`]: moves channel state between brokers as the ring changes,
//! driving the decisions of [`switchboard_cluster::ownership`] over gRPC.
//!
//! Two paths lead to the same pull. A broker asked to serve a channel it
//! owns but does not hold pulls the channel from whoever held it before
//! ([`Handoff::admit`]); a broker that holds channels it no longer owns (it
//! is draining, or a broker joined) asks their owners to pull them
//! ([`Handoff::run`], with `Claim`). Pulls of one channel are serialised at
//! the new owner, and the old owner fences the channel as it hands it over,
//! so state moves once and is never served by two brokers at a time.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{LocalBroker, deferral::Deferrals, local_broker::Holding, seen_store::SeenStore};
use switchboard_cluster::{
    RemoteBroker,
    dialer::SharedDialer,
    membership::ClusterView,
    ownership::{Placement, Release},
};
use switchboard_core::{BrokerError, ChannelName, ids::BrokerAddr};

/// How many brokers a pull follows (`MovedTo`) before starting afresh.
const MAX_HOPS: usize = 3;

/// Channels per `Claim` call.
const CLAIM_BATCH: usize = 500;

/// How often held channels are checked against the ring even without a
/// change (a claim that failed is retried).
const RECHECK: Duration = Duration::from_secs(1);

/// How often a leader looks for replica sets that lost a member.
const REFILL_CHECK: Duration = Duration::from_millis(100);

/// Pulls in flight are serialised per channel over this many locks.
const STRIPES: usize = 64;

pub struct Handoff {
    broker: LocalBroker,
    placement: watch::Receiver<Arc<Placement>>,
    peers: Mutex<HashMap<String, (String, RemoteBroker)>>,
    /// How peers are reached (TCP in production).
    dialer: SharedDialer,
    /// The broker process's tasks and its end, for what peer clients run.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Channels refused while the broker to check them with is out of
    /// reach, without replication (see [`Handoff::deferrals`]).
    deferrals: Mutex<Deferrals>,
    /// When this broker last learned that the others counted it out.
    doubted: Arc<Mutex<Option<Instant>>>,
}

/// What a pull found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulled {
    /// The channel's state is here: taken, or checked and kept.
    Here,
    /// Nobody asked holds the channel, and nothing of it is here.
    Nowhere,
    /// A state is here, but a broker that may hold a newer copy was not
    /// reached.
    Unreached,
}

impl Handoff {
    /// Follows `view` as broker `me` until `shutdown`, reaching peers
    /// through `dialer`; the task that follows the view is `tracker`'s.
    /// With a `store`, the brokers seen before a restart count as seen,
    /// and every change to them is written there.
    pub fn start(
        tracker: &TaskTracker,
        broker: LocalBroker,
        (me, mut store): (&str, Option<SeenStore>),
        mut view: watch::Receiver<Arc<ClusterView>>,
        shutdown: CancellationToken,
        dialer: SharedDialer,
    ) -> Arc<Self> {
        let mut first = Placement::new(&view.borrow_and_update(), me);
        if let Some(store) = &mut store {
            first = first.remembering(store.remembered());
            remember(store, &first);
        }
        let (tx, rx) = watch::channel(Arc::new(first));
        let me = me.to_owned();
        let held = broker.clone();
        let doubted = Arc::new(Mutex::new(None));
        let doubts = doubted.clone();
        let (tasks, stop) = (tracker.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                biased;
                    _ = shutdown.cancelled() => return,
                    changed = view.changed() => if changed.is_err() { return },
                }
                let before = tx.borrow().clone();
                let placement = Placement::new(&view.borrow_and_update(), &me).after(&before);
                // A broker that (re)appears, or one that went on without
                // this one while it was counted out, may have taken over
                // channels held here: check with it before serving them.
                if placement.doubts() > before.doubts() {
                    *doubts.lock() = Some(Instant::now());
                }
                if let Some(recheck) = placement.recheck_since(&before) {
                    held.mark_unverified(|c| placement.verify_with(c.as_str(), &recheck));
                }
                if let Some(store) = &mut store {
                    remember(store, &placement);
                }
                tx.send_replace(Arc::new(placement));
            }
        });
        Arc::new(Self {
            broker,
            placement: rx,
            peers: Mutex::new(HashMap::new()),
            dialer,
            tasks,
            shutdown: stop,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            deferrals: Mutex::new(Deferrals::default()),
            doubted,
        })
    }

    /// Every new placement (a ring change as this broker sees it).
    pub fn placement_changes(&self) -> watch::Receiver<Arc<Placement>> {
        self.placement.clone()
    }

    pub fn placement(&self) -> Arc<Placement> {
        self.placement.borrow().clone()
    }

    /// Whether every channel held here is owned here: a draining broker
    /// may exit once it is.
    pub fn settled(&self) -> bool {
        self.placement().misplaced(&self.broker.held()).is_empty()
    }

    /// Lets a request for `channel` through if this broker owns it, first
    /// taking its state from the broker that held it before. `ring` is the
    /// version of the ring a gateway routed the request by, if it sent one.
    /// While that ring and this broker's differ, one of them has not yet
    /// seen a change, and this broker may be about to hand the channel over
    /// or to take a newer copy of it (after a partition): the gateway is
    /// asked to come back once the rings agree, rather than having a
    /// publication accepted into a copy that is about to be replaced, or a
    /// client resumed from one.
    pub async fn admit(&self, channel: &ChannelName, ring: Option<u64>) -> Result<(), BrokerError> {
        // One view of the ring for both checks and the pull.
        let placement = self.placement();
        let agrees = ring.is_none_or(|ring| ring == placement.ring_version());
        if !agrees || !placement.owns(channel.as_str()) {
            if self.successor(channel, &placement).await? {
                return Ok(());
            }
            return Err(BrokerError::NotOwner {
                owner: placement
                    .owner(channel.as_str())
                    .map(switchboard_core::BrokerName::from),
            });
        }
        if self.broker.holding(channel) == Holding::State {
            return self.led(channel, &placement).await;
        }
        // One pull per channel at a time; whoever waited finds it done.
        let pull = self.stripe(channel).lock().await;
        // The wait may have been long (an election, another pull): the ring
        // may have moved meanwhile, and this broker handed the channel on
        // (it is draining, say). Pulling it back on the view from before
        // the wait took it from its owner to a broker about to exit, and
        // the channel started anew there (rolling restarts, R = 2).
        if self.placement().ring_version() != placement.ring_version() {
            return Err(BrokerError::NotOwner { owner: None });
        }
        let source = match self.broker.holding(channel) {
            Holding::State => {
                drop(pull);
                return self.led(channel, &placement).await;
            }
            Holding::Unverified(other) => {
                self.verify(&placement, channel, &other).await?;
                drop(pull);
                return self.led(channel, &placement).await;
            }
            // Handed away earlier and now back: the fence names who has it.
            Holding::Fenced(to) => placement
                .addr(&to)
                .or_else(|| placement.source(channel.as_str())),
            // Led here, and swept while idle: the log it leads is the
            // channel (`LocalBroker::led_state`). Asked for the channel
            // as if it had lost its copy, its follower may hand over and
            // void the replica.
            Holding::Nothing if self.leads(channel) => {
                self.broker.touch(channel)?;
                drop(pull);
                return self.led(channel, &placement).await;
            }
            Holding::Nothing => placement.source(channel.as_str()),
        };
        if self.pull(&placement, channel, source).await == Pulled::Nowhere {
            self.refuse_while_doubted(&placement, channel)?;
            // Nobody alive held it: a replica held here takes over in the
            // same epoch (in `led`); otherwise it starts in a new epoch.
            self.broker.unfence(channel);
            let replica = self
                .broker
                .replicated()
                .is_some_and(|r| r.replicas.holds_epoch(channel));
            if !replica {
                if let Some(r) = self.broker.replicated() {
                    crate::succession::refuse_while_elsewhere(r, &placement, channel)?;
                    let plan = crate::succession::plan_for(r, &placement, channel);
                    crate::succession::refuse_short(r, &placement, channel, &plan)?;
                }
                self.broker.touch(channel)?;
            }
        }
        drop(pull);
        self.led(channel, &placement).await
    }

    /// A copy of `channel` held here that broker `other` may have a newer
    /// copy of (it came back, or went on without this one while this one
    /// was counted out): asks `other` for it first, unless this broker leads
    /// the channel with a majority's leases. While `other` cannot be asked
    /// (gossip has it down for a moment after a heal, or it is cut off), the
    /// channel is refused, for at most [`Deferrals::WAIT`]: serving the copy
    /// here would acknowledge publications into an epoch about to end, lost
    /// unannounced to whoever never followed it (seen at a partition's heal
    /// with R = 1: one acknowledged publication missing). Past the wait,
    /// `other` is taken to be gone and the copy here is served.
    async fn verify(
        &self,
        placement: &Placement,
        channel: &ChannelName,
        other: &str,
    ) -> Result<(), BrokerError> {
        let leads = self
            .broker
            .replicated()
            .is_some_and(|r| r.replicas.leads_with_majority(channel));
        let pulled = match placement.addr(other) {
            _ if leads => Pulled::Here,
            Some(addr) => self.pull(placement, channel, Some(addr)).await,
            None => Pulled::Unreached,
        };
        if pulled == Pulled::Unreached {
            let why = "the broker that may hold a newer copy cannot be asked";
            self.defer(channel, other, why)?;
        }
        self.deferrals().lock().settle(channel);
        self.broker.verified(channel);
        Ok(())
    }

    /// Refuses to start `channel` anew, for at most [`Deferrals::WAIT`],
    /// while this broker has lately learned the others counted it out and
    /// the broker that would hold the channel, were every broker seen live,
    /// is missing from its view. At a partition's heal, the cut-off
    /// broker's gossip can have a healthy broker down for a moment, in
    /// this broker's view and a gateway's alike: the channel lands here,
    /// and a new epoch started here (the newer of two copies wins) replaced
    /// the channel's history at its holder when it came back (seen with
    /// R = 1: an acknowledged publication missing, unannounced).
    fn refuse_while_doubted(
        &self,
        placement: &Placement,
        channel: &ChannelName,
    ) -> Result<(), BrokerError> {
        let lately = self
            .doubted
            .lock()
            .is_some_and(|at| at.elapsed() < Deferrals::WAIT);
        let holder = match placement.missing_holder(channel.as_str()) {
            Some(holder) if lately => holder,
            _ => return Ok(()),
        };
        let why = "counted out lately, and the channel's holder is missing from the view";
        self.defer(channel, holder.as_str(), why)
    }

    /// Refuses `channel` (the gateway asks again) until its wait in
    /// [`Deferrals`] is over, then lets it through. `broker` is whom it
    /// waits for, and `why` says what for, in the logs.
    fn defer(&self, channel: &ChannelName, broker: &str, why: &str) -> Result<(), BrokerError> {
        if self.deferrals().lock().refuse(channel, Instant::now()) {
            tracing::info!(channel = %channel, broker, reason = why, "refused for now");
            return Err(BrokerError::NotOwner { owner: None });
        }
        tracing::warn!(channel = %channel, broker, reason = why, "waited for too long: served from here");
        Ok(())
    }

    /// The waits of refused channels: with replication, the one
    /// `refuse_while_elsewhere` keeps too, so that a channel is refused for
    /// [`Deferrals::WAIT`] in all whichever check refuses it, not a wait
    /// per check one after the other.
    fn deferrals(&self) -> &Mutex<Deferrals> {
        self.broker
            .replicated()
            .map_or(&self.deferrals, |r| &*r.deferrals)
    }

    /// Fast failover (docs/replication.md): whether this broker serves
    /// `channel` though the ring names another owner. It does when it
    /// follows the channel and has lost the leader the ring names (its
    /// stream was reset, or it fell silent, and every lease granted to it
    /// here ran out): it stands for the next term without waiting for
    /// gossip to take that leader out of the ring, and a gateway that lost
    /// its own stream to the owner asks here. And it does while it leads
    /// the channel in a configuration that counted the ring's owner out.
    /// The election is what makes either safe: a leader that is alive after
    /// all either keeps a lease at a majority of voters, and this broker
    /// cannot win, or has lost its leadership.
    async fn successor(
        &self,
        channel: &ChannelName,
        placement: &Placement,
    ) -> Result<bool, BrokerError> {
        let Some(r) = self.broker.replicated() else {
            return Ok(false);
        };
        let Some(owner) = placement.owner(channel.as_str()) else {
            return Ok(false);
        };
        let owner = switchboard_core::BrokerName::from(owner);
        if r.replicas.leads(channel).is_some() {
            let counted_out = r
                .replicas
                .members_of(channel)
                .is_some_and(|members| !members.contains(&owner));
            if !counted_out || self.broker.holding(channel) != Holding::State {
                return Ok(false);
            }
        } else {
            let lost = r.replicas.lost_leader(channel);
            if lost.as_ref() != Some(&owner) {
                return Ok(false);
            }
            // One election per channel at a time, as in `led`.
            let _electing = self.stripe(channel).lock().await;
            match self.broker.holding(channel) {
                // No pull: the broker it would come from is the one lost.
                // (A hand-over from here while not leading marked the
                // replica log superseded, so a fence over a copy newer
                // than the log never gets this far: `lost_leader` wants a
                // complete log.)
                Holding::Fenced(_) | Holding::Nothing => self.broker.unfence(channel),
                Holding::State | Holding::Unverified(_) => return Ok(false),
            }
            tracing::info!(channel = %channel, leader = %owner, "leader lost: standing for the channel before gossip does");
            r.streams.mark_down(&owner);
            // Never a new epoch here: a broker that may not stand leaves
            // the channel to its ring owner.
            let succession = crate::succession::lead(&self.broker, r, placement, channel).await?;
            return Ok(succession == crate::succession::Succession::Leads);
        }
        self.led(channel, placement).await?;
        Ok(r.replicas.leads(channel).is_some())
    }

    /// With replication: leads `channel` (standing for its next term first
    /// if needed), or serves it unreplicated if this broker may not stand;
    /// a channel with no state here then starts in a new epoch.
    async fn led(&self, channel: &ChannelName, placement: &Placement) -> Result<(), BrokerError> {
        let Some(r) = self.broker.replicated() else {
            return Ok(());
        };
        let refill = || {
            !crate::succession::lost_members(r, placement, channel).is_empty()
                || crate::succession::short_handed(r, placement, channel)
        };
        if r.replicas.leads(channel).is_some() && !refill() {
            return Ok(());
        }
        // One election per channel at a time.
        let _electing = self.stripe(channel).lock().await;
        let mut succession = crate::succession::lead(&self.broker, r, placement, channel).await?;
        if let crate::succession::Succession::Stale(leader) = &succession {
            // Once: a newer copy there replaces this one; if there is none
            // (it handed its own away), this one is the newest after all.
            tracing::info!(channel = %channel, leader = %leader, "the copy here is of an earlier term: asking its leader for its copy");
            self.pull(placement, channel, placement.addr(leader.as_str()))
                .await;
            succession = crate::succession::lead(&self.broker, r, placement, channel).await?;
        }
        if succession != crate::succession::Succession::Leads
            && self.broker.epoch_of(channel).is_none()
        {
            self.broker.touch(channel)?;
        }
        Ok(())
    }

    /// Takes `channels` from broker `from`, which holds them but no longer
    /// owns them. State already here wins; `from` is fenced either way.
    pub async fn claim(&self, from: &str, channels: Vec<ChannelName>) {
        let placement = self.placement();
        let Some(source) = placement.addr(from) else {
            tracing::debug!(broker = %from, "claim from a broker not in the view");
            return;
        };
        for channel in channels {
            let _pull = self.stripe(&channel).lock().await;
            // Asked on the asker's view of the ring: a broker that does not
            // own the channel on its own (it is draining, or its ring moved
            // on) leaves it where it is. A draining broker pulled back a
            // channel it had just handed over, and exited with it: the
            // channel started anew (join and drain, R = 1).
            if !self.placement().owns(channel.as_str()) {
                tracing::debug!(channel = %channel, from, "claim of a channel not owned here; left where it is");
                continue;
            }
            self.pull(&placement, &channel, Some(source.clone())).await;
            if self.broker.holding(&channel) == Holding::Unverified(from.to_owned()) {
                self.broker.verified(&channel);
            }
        }
    }

    /// Pulls `channel` starting at `source`, following hand-overs.
    async fn pull(
        &self,
        placement: &Placement,
        channel: &ChannelName,
        mut source: Option<BrokerAddr>,
    ) -> Pulled {
        let me = placement.me();
        let mut reached = true;
        for _ in 0..MAX_HOPS {
            let Some(from) = source.take() else { break };
            if from.name == me {
                break;
            }
            // A copy here is asked to be checked, not replaced by a replica.
            let holds_copy = matches!(
                self.broker.holding(channel),
                Holding::State | Holding::Unverified(_)
            );
            let released = match self.peer(&from) {
                Ok(peer) => peer.release(channel, me, holds_copy).await,
                Err(e) => Err(e),
            };
            match released {
                Ok(Release::State(snapshot)) => {
                    let offset = snapshot.offset;
                    return match self.broker.adopt(snapshot) {
                        Ok(adopted) => {
                            tracing::info!(channel = %channel, from = %from.name, offset, adopted, "channel handed over");
                            Pulled::Here
                        }
                        Err(e) => {
                            tracing::warn!(channel = %channel, error = %e, "cannot adopt channel");
                            Pulled::Nowhere
                        }
                    };
                }
                Ok(Release::NotHeld) => {
                    tracing::debug!(channel = %channel, from = %from.name, "not held there");
                    break;
                }
                Ok(Release::MovedTo(next)) => {
                    tracing::debug!(channel = %channel, from = %from.name, next = %next, "held elsewhere, it says");
                    source = placement.addr(&next);
                    reached = source.is_some();
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, from = %from.name, error = %e, "hand-over failed; the channel starts anew");
                    metrics::counter!("switchboard_broker_handoff_failures_total").increment(1);
                    reached = false;
                    break;
                }
            }
        }
        match self.broker.holding(channel) {
            Holding::State | Holding::Unverified(_) if reached => Pulled::Here,
            Holding::State | Holding::Unverified(_) => Pulled::Unreached,
            _ => Pulled::Nowhere,
        }
    }

    /// Asks owners to take the channels held here that are theirs, on every
    /// ring change and every [`RECHECK`], until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut placement = self.placement.clone();
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                changed = placement.changed() => if changed.is_err() { return },
            }
            let current = placement.borrow_and_update().clone();
            for (owner, channels) in current.misplaced(&self.broker.held()) {
                let Some(addr) = current.addr(&owner) else {
                    continue;
                };
                tracing::info!(owner = %owner, channels = channels.len(), "asking the owner to claim channels");
                for batch in channels.chunks(CLAIM_BATCH) {
                    let claimed = match self.peer(&addr) {
                        Ok(peer) => peer.claim(current.me(), batch).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = claimed {
                        tracing::warn!(owner = %owner, error = %e, "claim failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// With replication: every [`REFILL_CHECK`], refills the replica set of
    /// each channel led here that lost a member (not live, or its stream
    /// ended), so that publishes waiting for it commit with its successor,
    /// or that lacks one a broker live again could be (a witness).
    pub async fn refill(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REFILL_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(r) = self.broker.replicated() else {
                return;
            };
            let placement = self.placement();
            let mut degraded = 0u32;
            for channel in r.replicas.led() {
                degraded += u32::from(crate::succession::degraded(r, &placement, &channel));
                let lost = !crate::succession::lost_members(r, &placement, &channel).is_empty();
                if !lost && !crate::succession::short_handed(r, &placement, &channel) {
                    continue;
                }
                if let Err(e) = self.led(&channel, &placement).await {
                    tracing::debug!(channel = %channel, error = %e, "refill failed; retrying");
                }
            }
            // A second fault before this is back to zero may cost what one
            // fault does not (docs/operations.md).
            metrics::gauge!("switchboard_replication_degraded_channels").set(degraded);
        }
    }

    /// Whether this broker leads `channel` as replicated.
    fn leads(&self, channel: &ChannelName) -> bool {
        self.broker
            .replicated()
            .is_some_and(|r| r.replicas.leads(channel).is_some())
    }

    fn stripe(&self, channel: &ChannelName) -> &tokio::sync::Mutex<()> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel.as_str());
        &self.stripes[hash as usize % STRIPES]
    }

    fn peer(&self, broker: &BrokerAddr) -> Result<RemoteBroker, BrokerError> {
        let mut peers = self.peers.lock();
        if let Some((addr, remote)) = peers.get(broker.name.as_str())
            && addr == &broker.addr
        {
            return Ok(remote.clone());
        }
        let remote = RemoteBroker::dial(
            &*self.dialer,
            broker,
            self.tasks.clone(),
            self.shutdown.clone(),
        )?;
        peers.insert(
            broker.name.to_string(),
            (broker.addr.clone(), remote.clone()),
        );
        Ok(remote)
    }
}

/// Writes down the brokers `placement` has seen. A failed write is logged
/// and tried again at the next change: the set in memory stays right, and
/// only a restart before a later write would forget the change.
fn remember(store: &mut SeenStore, placement: &Placement) {
    if let Err(e) = store.save(placement.seen()) {
        tracing::warn!(error = %e, "brokers seen not written to the data directory");
    }
}
