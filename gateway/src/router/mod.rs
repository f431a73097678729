//! [`Router`]: a gateway's view of the brokers. It implements
//! [`Broker`](switchboard_core::Broker) by
//! sending each call to the owner of the channel on the ring, keeps one
//! delivery stream per broker, and when a stream is lost and re-opened it
//! resubscribes every channel that broker owns from the last delivered
//! position: the owner gives back what was missed (`recovered`), or the
//! gateway tells its clients that continuity was lost (a `resubscribed`
//! frame in the new epoch). Presence is replayed from what this gateway's
//! clients joined, so a broker that lost it rebuilds it.
//!
//! - `link`: one per broker: its client, and the delivery stream kept
//!   open and re-attached.
//! - `table`: the subscription table (sans-IO): what each delivery and
//!   subscribe reply means for local clients (deliver, drop as duplicate,
//!   gap, resubscribe).
//! - `reconciler`: places subscriptions at their owners, make-before-break.
//! - `broker`: the [`Broker`](switchboard_core::Broker) impl: each call at the
//!   channel's owner.
//! - `retry_key`: keys for publishes that came without one, so that a
//!   publish whose owner is lost mid-call is asked again, never applied
//!   twice.

mod broker;
mod link;
mod reconciler;
mod retry_key;
mod table;

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock, atomic::AtomicU64},
    time::Duration,
};

use dashmap::DashMap;
use parking_lot::RwLock;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    link::Link,
    table::{Live, Subscription},
};
use switchboard_cluster::{
    dialer::{SharedDialer, TcpDialer},
    remote_broker::RemoteBroker,
    ring::Ring,
};
use switchboard_core::{
    BrokerAddr, BrokerError, BrokerName, ChannelName, Delivery, DeliverySink, GatewayId, host::Host,
};

/// How long a call keeps asking while brokers disagree on who owns its
/// channel ([`BrokerError::NotOwner`]); rings agree again well within it.
const OWNER_WAIT: Duration = Duration::from_secs(3);

struct Inner {
    gateway: OnceLock<GatewayId>,
    sink: OnceLock<Arc<dyn DeliverySink>>,
    ring: RwLock<Arc<Ring>>,
    /// A router that follows gossip tells brokers its ring's version with
    /// each call, so that a broker whose own ring differs (it has not yet
    /// seen the same change) does not hand out a copy of a channel it has
    /// not checked. Static routers do not: their brokers know no ring.
    ring_version: Option<Arc<AtomicU64>>,
    /// How links reach brokers (TCP in production).
    dialer: SharedDialer,
    links: RwLock<BTreeMap<BrokerName, Link>>,
    subs: DashMap<ChannelName, Subscription, foldhash::fast::FixedState>,
    /// Retry jitter, drawn from the host (repeatable in a simulation).
    jitter: parking_lot::Mutex<rand::rngs::StdRng>,
    /// Keys for publishes without one (so that they may be asked again).
    retry_keys: retry_key::RetryKeys,
    /// Wakes the reconciler: the ring changed or a stream came back.
    reconcile: tokio::sync::Notify,
    /// Bumped with every new ring: a call waiting for an owner that is
    /// not reachable asks the new ring again (the owner died and the ring
    /// moved on) instead of failing.
    rings: watch::Sender<u64>,
    /// Ends the follower, the links and the reconciler.
    shutdown: CancellationToken,
    /// The gateway role's tasks: the follower, the links, their delivery
    /// streams and the reconciler run here, so that its drain waits for them.
    tasks: TaskTracker,
}

/// Routes a gateway's broker calls across the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router over a fixed set of brokers; its tasks run in `tasks` until
    /// `shutdown`.
    pub fn new(
        brokers: &[BrokerAddr],
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, BrokerError> {
        Self::with_dialer(brokers, TcpDialer::shared(), shutdown, tasks)
    }

    /// A router over a fixed set of brokers, reached through `dialer`.
    pub fn with_dialer(
        brokers: &[BrokerAddr],
        dialer: SharedDialer,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, BrokerError> {
        Self::build(brokers, dialer, None, Host::system(), (shutdown, tasks))
    }

    fn build(
        brokers: &[BrokerAddr],
        dialer: SharedDialer,
        ring_version: Option<Arc<AtomicU64>>,
        host: Host,
        (shutdown, tasks): (CancellationToken, TaskTracker),
    ) -> Result<Self, BrokerError> {
        let router = Self {
            inner: Arc::new(Inner {
                gateway: OnceLock::new(),
                sink: OnceLock::new(),
                ring: RwLock::new(Arc::new(Ring::new(Vec::<String>::new()))),
                ring_version,
                dialer,
                links: RwLock::new(BTreeMap::new()),
                subs: DashMap::with_hasher(host.hasher("subscriptions")),
                jitter: parking_lot::Mutex::new(host.rng("jitter")),
                retry_keys: retry_key::RetryKeys::new(&mut host.rng("retry keys")),
                reconcile: tokio::sync::Notify::new(),
                rings: watch::Sender::new(0),
                shutdown,
                tasks,
            }),
        };
        router.set_brokers(brokers)?;
        Ok(router)
    }

    /// A router that follows the active brokers of a gossip view; its
    /// tasks run in `tasks` until `shutdown`.
    pub fn following(
        view: watch::Receiver<Arc<switchboard_cluster::membership::ClusterView>>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, BrokerError> {
        Self::following_with(view, TcpDialer::shared(), Host::system(), shutdown, tasks)
    }

    /// A router that follows the active brokers of a gossip view, reached
    /// through `dialer`, drawing its retry jitter from `host`.
    pub fn following_with(
        mut view: watch::Receiver<Arc<switchboard_cluster::membership::ClusterView>>,
        dialer: SharedDialer,
        host: Host,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, BrokerError> {
        let brokers = view.borrow_and_update().active_brokers();
        let version = Some(Arc::new(AtomicU64::new(0)));
        let router = Self::build(
            &brokers,
            dialer,
            version,
            host,
            (shutdown.clone(), tasks.clone()),
        )?;
        let follower = router.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                biased;
                    _ = shutdown.cancelled() => return,
                    changed = view.changed() => if changed.is_err() { return },
                }
                let brokers = view.borrow_and_update().active_brokers();
                if let Err(e) = follower.set_brokers(&brokers) {
                    tracing::warn!(error = %e, "cannot apply membership change");
                }
            }
        });
        Ok(router)
    }

    /// A draw in [0, 1) for retry jitter.
    fn jitter(&self) -> f64 {
        self.inner.jitter.lock().random::<f64>()
    }

    /// Brokers currently in this router's ring.
    pub fn brokers(&self) -> Vec<BrokerName> {
        self.inner
            .ring
            .read()
            .brokers()
            .map(BrokerName::from)
            .collect()
    }

    /// Applies a new set of active brokers: links opened and closed, the
    /// ring rebuilt, and every subscription whose owner changed moved to
    /// its new owner from the last delivered position.
    pub fn set_brokers(&self, brokers: &[BrokerAddr]) -> Result<(), BrokerError> {
        let ring = Arc::new(Ring::new(brokers.iter().map(|b| b.name.clone())));
        if *ring == **self.inner.ring.read()
            && brokers.iter().all(|b| {
                self.inner
                    .links
                    .read()
                    .get(&b.name)
                    .is_some_and(|l| l.addr == b.addr)
            })
        {
            return Ok(());
        }
        let attached = self.inner.gateway.get().is_some();
        {
            let mut links = self.inner.links.write();
            links.retain(|name, link| {
                let keep = brokers
                    .iter()
                    .any(|b| &b.name == name && b.addr == link.addr);
                if !keep {
                    link.stop.cancel();
                }
                keep
            });
            for b in brokers {
                if links.contains_key(&b.name) {
                    continue;
                }
                let (tx, rx) = watch::channel(false);
                let stop = self.inner.shutdown.child_token();
                let remote = RemoteBroker::dial(
                    &*self.inner.dialer,
                    b,
                    self.inner.tasks.clone(),
                    stop.clone(),
                )?;
                let mut link = Link {
                    addr: b.addr.clone(),
                    remote: match &self.inner.ring_version {
                        Some(version) => remote.vouching(version.clone()),
                        None => remote,
                    },
                    attached: rx,
                    lost: Default::default(),
                    stop,
                    starter: Some(tx),
                };
                if attached {
                    self.start_link(&b.name, &mut link);
                }
                links.insert(b.name.clone(), link);
            }
        }
        tracing::info!(brokers = ?ring.brokers().collect::<Vec<_>>(), "ring changed");
        if let Some(version) = &self.inner.ring_version {
            version.store(ring.version(), std::sync::atomic::Ordering::Relaxed);
        }
        *self.inner.ring.write() = ring;
        self.inner.rings.send_modify(|n| *n += 1);
        self.inner.reconcile.notify_one();
        Ok(())
    }

    /// The owner of `channel` and a client for it, once its stream is up
    /// (within [`link::ATTACH_WAIT`]). While it is not, a new ring is
    /// asked again: an owner that died is not reachable until gossip
    /// takes it out of the ring, and then the next one is the owner.
    async fn owner(
        &self,
        channel: &ChannelName,
    ) -> Result<(BrokerName, RemoteBroker), BrokerError> {
        let deadline = tokio::time::Instant::now() + link::ATTACH_WAIT;
        let mut rings = self.inner.rings.subscribe();
        loop {
            rings.mark_unchanged();
            let lost = self.lost_links();
            let owner = link::route(self.inner.ring.read().failover(channel.as_str()), &lost)
                .map(BrokerName::from)
                .ok_or_else(|| BrokerError::Unavailable("no brokers".into()))?;
            let unreachable =
                || BrokerError::Unavailable(format!("broker {owner} is not reachable"));
            let (remote, mut attached) = {
                let links = self.inner.links.read();
                let link = links.get(&owner).ok_or_else(unreachable)?;
                (link.remote.clone(), link.attached.clone())
            };
            tokio::select! {
                up = attached.wait_for(|up| *up) => {
                    return match up {
                        Ok(_) => Ok((owner, remote)),
                        Err(_) => Err(unreachable()),
                    };
                }
                changed = rings.changed() => if changed.is_err() { return Err(unreachable()) },
                () = tokio::time::sleep_until(deadline) => return Err(unreachable()),
            }
        }
    }

    /// Runs `call` at the owner of `channel`, asking again while brokers
    /// disagree on who that is (within [`OWNER_WAIT`]). An `idempotent`
    /// call (one that applied twice does what applied once does: a read,
    /// a subscribe, a publish with an idempotency key) is also asked again
    /// when the owner could not be reached, which is how a call in flight
    /// when an owner dies reaches the broker that takes its channel over.
    async fn at_owner<T, F, Fut>(
        &self,
        channel: &ChannelName,
        idempotent: bool,
        call: F,
    ) -> Result<T, BrokerError>
    where
        F: Fn(BrokerName, RemoteBroker) -> Fut,
        Fut: std::future::Future<Output = Result<T, BrokerError>>,
    {
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        let mut backoff = Duration::from_millis(20);
        loop {
            let outcome = match self.owner(channel).await {
                Ok((owner, remote)) => call(owner, remote).await,
                Err(e) => Err(e),
            };
            let again = match &outcome {
                Err(BrokerError::NotOwner { .. }) => true,
                Err(BrokerError::Unavailable(_)) => idempotent,
                _ => false,
            };
            if !again || tokio::time::Instant::now() >= deadline {
                return outcome;
            }
            if let Err(e) = &outcome {
                tracing::debug!(channel = %channel, error = %e, "owner not there yet; asking again");
            }
            let jitter = self.jitter();
            tokio::time::sleep(backoff.mul_f64(0.5 + jitter / 2.0)).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }

    fn sink(&self) -> Option<&Arc<dyn DeliverySink>> {
        self.inner.sink.get()
    }

    /// Takes one delivery from `from`'s stream (`None`: one that was held
    /// and is handed back, already taken).
    fn on_delivery(&self, from: Option<&BrokerName>, d: Delivery) {
        let Some(sink) = self.sink() else { return };
        let Some(mut sub) = self.inner.subs.get_mut(&d.channel) else {
            return;
        };
        if let Some(from) = from
            && !sub.accepts(from)
        {
            tracing::debug!(channel = %d.channel, broker = %from, owner = %sub.owner, "delivery from a broker the subscription is not placed at; dropped");
            return;
        }
        // The hub's deliver never blocks, so holding this entry (which keeps
        // the channel's order) is short.
        match sub.on_live(d) {
            Live::Deliver(d) => sink.deliver(d),
            Live::Duplicate | Live::Held => {}
            Live::Stale { resubscribe } => {
                metrics::counter!(crate::telemetry::STALE_DELIVERIES).increment(1);
                if resubscribe {
                    drop(sub);
                    self.inner.reconcile.notify_one();
                }
            }
            Live::Resubscribe => {
                drop(sub);
                self.inner.reconcile.notify_one();
            }
        }
    }
}
