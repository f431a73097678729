//! [`BrokerProcess`]: one broker as a process. Its gRPC server, gossip
//! membership, hand-over and sweeper start together and stop on one
//! signal, after a drain. `switchboard node` and the simulation tests run
//! this same code, on TCP and UDP or on turmoil's network.
//!
//! The drain: the signal marks the broker draining and announces it; the
//! new owners then take its channels (history and position) and gateways
//! move their subscriptions to them. Once nothing is left to hand over and
//! no gateway is attached, or at the drain deadline, the process stops:
//! the gRPC server is told to stop, and gateway streams that outlive it
//! (a static gateway does not follow the drain) are cut a moment later.
//!
//! A broker that finds its own name held by another live member gives
//! way: out of the ring at once, and stopped (no drain: it serves nothing
//! under a name that is not its own) if the other is still live after
//! [`CONFLICT_GRACE`].

use std::{sync::Arc, time::Duration};

use futures_util::Stream;
use rand::Rng;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    BrokerConfig, LocalBroker,
    handoff::Handoff,
    replica::Replicas,
    seen_store::SeenStore,
    webhook::{WebhookConfig, Webhooks},
};
use switchboard_cluster::{
    dialer::SharedDialer,
    gossip::{CONFLICT_GRACE, Datagram, Membership},
    keyring::Sealer,
    membership::{ClusterView, IdentityConflict, NodeId, NodeState, Role},
    proof::{self, Prover},
};
use switchboard_core::{Namespaces, host::Host};

/// How long a stopping broker waits, after its drain, for gateways to close
/// their streams.
const STREAMS_CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// What a broker process is, besides its listeners.
pub struct BrokerSettings {
    /// The broker's own settings; `name` is what the cluster knows it by.
    pub broker: BrokerConfig,
    pub namespaces: Namespaces,
    /// The gRPC address (`host:port`) the others reach this broker on.
    pub advertise: String,
    /// Gossip addresses (`host:port`) of members to join through.
    pub seeds: Vec<String>,
    /// This process' boot id ([`NodeId::boot`]).
    pub boot: u64,
    /// Clock and randomness (the machine's, or a simulation's).
    pub host: Host,
    /// How peers are reached (TCP in production).
    pub dialer: SharedDialer,
    /// Seals gossip packets; `None` gossips in the clear (`--insecure`).
    pub gossip_sealer: Option<Sealer>,
    /// Over mutual TLS: how a broker's claim to its name is proven before
    /// it counts in this broker's ring ([`proof`]).
    pub prover: Option<Prover>,
    /// Pusher apps' webhooks, sent for the channels this broker owns.
    pub webhooks: WebhookConfig,
}

/// The sockets a broker serves on, already bound.
pub struct BrokerListeners<I, D> {
    /// Accepted gRPC connections.
    pub grpc: I,
    /// The gossip socket; its address is the one announced.
    pub gossip: D,
}

/// How a broker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Every channel held here had been handed to its owner.
    pub handed_over: bool,
    /// The process stopped because its name belongs to another live member.
    pub conflict: Option<IdentityConflict>,
}

/// Serves the broker's gRPC service on `incoming` in `tracker`, until the
/// token; each gateway stream's watcher runs in `tracker` too.
fn serve_grpc<I, IO, IE>(
    tracker: &TaskTracker,
    incoming: I,
    (broker, handoff, replicas, shutdown): (
        LocalBroker,
        Arc<Handoff>,
        Arc<Replicas>,
        CancellationToken,
    ),
) where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: crate::server::Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let services = crate::server::Services {
        broker,
        handoff: Some(handoff),
        replicas: Some(replicas),
    };
    let serve = crate::server::serve(incoming, services, tracker.clone(), shutdown);
    tracker.spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
}

/// This broker's replicas (votes in `data_dir`), its replication factor
/// (2 or more needs a data directory), and the brokers it has seen (kept
/// in `data_dir` if there is one).
fn open_data_dir(
    config: &BrokerConfig,
    namespaces: &Namespaces,
) -> std::io::Result<(Arc<Replicas>, usize, Option<SeenStore>)> {
    let factor = config.replication_factor;
    if !(1..=3).contains(&factor) {
        let e = format!("broker.replication_factor is {factor}: it must be 1, 2 or 3");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    }
    if factor >= 2 && config.data_dir.is_none() {
        let e = format!(
            "broker.replication_factor is {factor}{}: it needs a data directory (--data-dir DIR), since a replica's votes must survive a restart; or --replication-factor 1 to store each channel on one broker only",
            if factor == 2 { " (the default)" } else { "" }
        );
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    }
    let me = config.name.as_str().into();
    let replicas = Replicas::open(me, namespaces.clone(), config.data_dir.as_deref())?;
    let seen = config
        .data_dir
        .as_deref()
        .map(SeenStore::open)
        .transpose()?;
    Ok((replicas, factor, seen))
}

/// With a replication factor of 2 or more: the leaders' streams, lease
/// renewals and refills, until `shutdown`.
fn spawn_replication(
    tracker: &TaskTracker,
    broker: &LocalBroker,
    handoff: &Arc<Handoff>,
    (replicas, factor, lost_majority, dialer): (
        Arc<Replicas>,
        usize,
        switchboard_cluster::replication::LostMajority,
        switchboard_cluster::dialer::SharedDialer,
    ),
    shutdown: &CancellationToken,
) {
    if factor < 2 {
        return;
    }
    let replicating = crate::succession::Replicating {
        replicas,
        placement: handoff.placement_changes(),
        dialer,
        factor,
        lost_majority,
    };
    crate::succession::start(tracker, broker, replicating, shutdown);
    tracker.spawn(handoff.clone().refill(shutdown.clone()));
}

/// The hand-over's claims and the sweeper, until `shutdown`.
fn spawn_upkeep(
    tracker: &TaskTracker,
    broker: &LocalBroker,
    handoff: &Arc<Handoff>,
    shutdown: &CancellationToken,
) {
    tracker.spawn(handoff.clone().run(shutdown.clone()));
    tracker.spawn({
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        async move { broker.maintain(shutdown).await }
    });
}

/// A started broker process.
pub struct BrokerProcess {
    broker: LocalBroker,
    membership: Membership,
    handoff: Arc<Handoff>,
    tracker: TaskTracker,
    drain: CancellationToken,
    shutdown: CancellationToken,
    drain_timeout: Duration,
}

impl BrokerProcess {
    /// Starts serving on `listeners`; cancelling `drain` starts the drain.
    pub fn start<I, IO, IE, D>(
        listeners: BrokerListeners<I, D>,
        settings: BrokerSettings,
        drain: CancellationToken,
    ) -> std::io::Result<Self>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: crate::server::Connection,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
        D: Datagram,
    {
        let BrokerSettings {
            broker: config,
            namespaces,
            advertise,
            seeds,
            boot,
            host,
            dialer,
            gossip_sealer,
            prover,
            webhooks,
        } = settings;
        let (name, drain_timeout) = (config.name.clone(), config.drain_timeout);
        let lost_majority = config.lost_majority;
        let (replicas, factor, seen) = open_data_dir(&config, &namespaces)?;
        let broker = LocalBroker::on_host(config, namespaces, host);
        // Two phases: `drain` starts the drain; `shutdown` ends the process.
        let shutdown = CancellationToken::new();
        let me = NodeId {
            name: name.clone(),
            role: Role::Broker,
            gossip: listeners.gossip.local_addr()?,
            grpc: advertise,
            state: NodeState::Active,
            boot,
            bump: 0,
        };
        let tracker = TaskTracker::new();
        broker.set_webhooks(Webhooks::start(webhooks, &tracker, &shutdown));
        let membership = Membership::start_in(
            &tracker,
            me,
            listeners.gossip,
            seeds,
            host.rng("gossip").random(),
            gossip_sealer,
            shutdown.clone(),
        )?;
        let view = match prover {
            Some(prove) => proof::proven_view(membership.view(), prove, &tracker, shutdown.clone()),
            None => membership.view(),
        };
        let handoff = Handoff::start(
            &tracker,
            broker.clone(),
            (&name, seen),
            view,
            shutdown.clone(),
            dialer.clone(),
        );
        spawn_upkeep(&tracker, &broker, &handoff, &shutdown);
        let replicating = (replicas.clone(), factor, lost_majority, dialer);
        spawn_replication(&tracker, &broker, &handoff, replicating, &shutdown);
        let grpc = (broker.clone(), handoff.clone(), replicas, shutdown.clone());
        serve_grpc(&tracker, listeners.grpc, grpc);
        Ok(Self {
            broker,
            membership,
            handoff,
            tracker,
            drain,
            shutdown,
            drain_timeout,
        })
    }

    pub fn broker(&self) -> &LocalBroker {
        &self.broker
    }

    /// The cluster as this broker sees it.
    pub fn view(&self) -> tokio::sync::watch::Receiver<Arc<ClusterView>> {
        self.membership.view()
    }

    /// The gossip socket's address.
    pub fn gossip_addr(&self) -> std::net::SocketAddr {
        self.membership.addr()
    }

    /// Cancelled once the drain starts: the process is no longer ready.
    pub fn draining(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Cancelled once the process stops: tasks beside it (an HTTP server)
    /// stop with it.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the drain signal, drains, and stops; or stops at once
    /// on an identity conflict that outlasts [`CONFLICT_GRACE`].
    pub async fn run(self) -> Stopped {
        let conflict = tokio::select! {
            () = self.drain.cancelled() => None,
            conflict = self.membership.identity_conflict(CONFLICT_GRACE) => Some(conflict),
        };
        if let Some(conflict) = conflict {
            tracing::error!(error = %conflict, "stopping");
            self.stop().await;
            return Stopped {
                handed_over: self.handoff.settled(),
                conflict: Some(conflict),
            };
        }
        self.broker.start_draining();
        self.membership.set_state(NodeState::Draining).await;
        tracing::info!(
            gateways = self.broker.gateway_count(),
            channels = self.broker.held().len(),
            "draining"
        );
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        let handed_over = self.until_drained(deadline).await;
        if !handed_over {
            tracing::warn!(
                channels = self.broker.held().len(),
                gateways = self.broker.gateway_count(),
                "drain deadline passed with channels not handed over or gateways attached"
            );
        }
        let handed_over = self.handoff.settled();
        self.stop().await;
        Stopped {
            handed_over,
            conflict: None,
        }
    }

    async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(STREAMS_CLOSE_WITHIN, self.tracker.wait())
            .await
            .is_err()
        {
            // The gRPC server's graceful stop waits for every open stream,
            // and a gateway that does not follow the drain never closes its
            // own: stop regardless.
            tracing::warn!("gateway streams still open after the drain; closing them");
        }
    }

    /// Waits until every channel is handed over and no gateway remains, or
    /// `deadline`; says whether that happened. Woken by the broker's and
    /// the ring's changes, not by polling.
    async fn until_drained(&self, deadline: tokio::time::Instant) -> bool {
        let mut placement = self.handoff.placement_changes();
        loop {
            let changed = self.broker.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Settled only counts once this broker's own placement shows it
            // out of the ring: until the view change reaches the hand-over,
            // the channels held here still look like its own.
            let out_of_ring = !self.handoff.placement().in_ring();
            if self.broker.gateway_count() == 0 && out_of_ring && self.handoff.settled() {
                return true;
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return false,
                () = &mut changed => {}
                Ok(()) = placement.changed() => {}
            }
        }
    }
}
