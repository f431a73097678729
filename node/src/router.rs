//! [`Router`]: a gateway's view of the brokers. It implements [`Broker`] by
//! sending each call to the owner of the channel on the ring, keeps one
//! delivery stream per broker, and when a stream is lost and re-opened it
//! resubscribes every channel that broker owns from the last delivered
//! position: the owner gives back what was missed (`recovered`), or the
//! gateway tells its clients that continuity was lost (a `resubscribed`
//! frame in the new epoch). Presence is replayed from what this gateway's
//! clients joined, so a broker that lost it rebuilds it.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, atomic::AtomicU64},
    time::Duration,
};

use dashmap::DashMap;
use futures_util::StreamExt;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    Broker, BrokerError, ChannelName, ChannelSummary, ChannelsRequest, ClientInfo, Control,
    Delivery, DeliveryKind, DeliverySink, GatewayId, HistoryReply, HistoryRequest, NodeInfo,
    Position, PresenceStats, Publication, PublishRequest, SubscribeReply, SubscribeRequest,
    dialer::{SharedDialer, TcpDialer},
    frame,
    remote_broker::RemoteBroker,
    ring::Ring,
    wire,
};

/// How long a call waits for the owner's stream to be attached.
const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// How long a call keeps asking while brokers disagree on who owns its
/// channel ([`BrokerError::NotOwner`]); rings agree again well within it.
const OWNER_WAIT: Duration = Duration::from_secs(3);

/// How soon subscriptions that could not be placed are tried again.
const RECONCILE_RETRY: Duration = Duration::from_millis(100);
/// How often subscriptions are checked against the ring regardless.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Subscriptions moved at once.
const RECONCILE_PARALLEL: usize = 32;

/// Reconnect backoff bounds for a lost stream.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A broker as the router knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Stable name: what the ring hashes.
    pub name: String,
    /// gRPC address, `host:port`.
    pub addr: String,
}

struct Link {
    addr: String,
    remote: RemoteBroker,
    attached: watch::Receiver<bool>,
    /// Ends this link's stream task when the broker leaves the ring.
    stop: CancellationToken,
    /// Held until the stream task starts (at attach, or when the broker
    /// joins later).
    starter: Option<watch::Sender<bool>>,
}

/// This gateway's subscription to one channel.
struct Sub {
    owner: String,
    /// Whether `owner` is known to hold this gateway's subscription (and its
    /// presence entries). Cleared when its stream was lost; the reconciler
    /// places the subscription again.
    placed: bool,
    /// Bumped whenever the subscription must be placed again; a placement
    /// that started before a bump does not count as done.
    unplaced: u64,
    /// Last position delivered to local clients.
    last: Option<Position>,
    /// Clients of this gateway in the channel's presence.
    clients: HashMap<String, ClientInfo>,
    /// While (re)subscribing, live deliveries wait here so that recovered
    /// and live publications reach clients in offset order.
    pending: Option<Vec<Delivery>>,
}

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
    links: RwLock<HashMap<String, Link>>,
    subs: DashMap<ChannelName, Sub>,
    /// Wakes the reconciler: the ring changed or a stream came back.
    reconcile: tokio::sync::Notify,
    shutdown: CancellationToken,
}

/// Routes a gateway's broker calls across the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router over a fixed set of brokers.
    pub fn new(brokers: &[BrokerAddr], shutdown: CancellationToken) -> Result<Self, BrokerError> {
        Self::with_dialer(brokers, TcpDialer::shared(), shutdown)
    }

    /// A router over a fixed set of brokers, reached through `dialer`.
    pub fn with_dialer(
        brokers: &[BrokerAddr],
        dialer: SharedDialer,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        Self::build(brokers, dialer, None, shutdown)
    }

    fn build(
        brokers: &[BrokerAddr],
        dialer: SharedDialer,
        ring_version: Option<Arc<AtomicU64>>,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let router = Self {
            inner: Arc::new(Inner {
                gateway: OnceLock::new(),
                sink: OnceLock::new(),
                ring: RwLock::new(Arc::new(Ring::new(Vec::<String>::new()))),
                ring_version,
                dialer,
                links: RwLock::new(HashMap::new()),
                subs: DashMap::new(),
                reconcile: tokio::sync::Notify::new(),
                shutdown,
            }),
        };
        router.set_brokers(brokers)?;
        Ok(router)
    }

    /// A router that follows the active brokers of a gossip view.
    pub fn following(
        view: watch::Receiver<Arc<crate::membership::ClusterView>>,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        Self::following_with(view, TcpDialer::shared(), shutdown)
    }

    /// A router that follows the active brokers of a gossip view, reached
    /// through `dialer`.
    pub fn following_with(
        mut view: watch::Receiver<Arc<crate::membership::ClusterView>>,
        dialer: SharedDialer,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let brokers = view.borrow_and_update().active_brokers();
        let version = Some(Arc::new(AtomicU64::new(0)));
        let router = Self::build(&brokers, dialer, version, shutdown.clone())?;
        let follower = router.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
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

    /// Brokers currently in this router's ring.
    pub fn brokers(&self) -> Vec<String> {
        self.inner
            .ring
            .read()
            .brokers()
            .map(str::to_owned)
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
                let mut link = Link {
                    addr: b.addr.clone(),
                    remote: match &self.inner.ring_version {
                        Some(version) => RemoteBroker::dial(&*self.inner.dialer, &b.addr)?
                            .vouching(version.clone()),
                        None => RemoteBroker::dial(&*self.inner.dialer, &b.addr)?,
                    },
                    attached: rx,
                    stop: self.inner.shutdown.child_token(),
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
        self.inner.reconcile.notify_one();
        Ok(())
    }

    fn start_link(&self, name: &str, link: &mut Link) {
        if let Some(tx) = link.starter.take() {
            tokio::spawn(self.clone().run_link(
                name.to_owned(),
                link.remote.clone(),
                tx,
                link.stop.clone(),
            ));
        }
    }

    /// Keeps every subscription at its channel's owner on the ring: moved
    /// make-before-break when the owner changes (subscribe at the new owner
    /// from the last delivered position, then let go of the old one), and
    /// placed again after a stream was lost. Failures are retried soon.
    async fn reconciler(self) {
        let mut wait = RECONCILE_EVERY;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.reconcile.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            wait = if self.reconcile().await {
                RECONCILE_EVERY
            } else {
                RECONCILE_RETRY
            };
        }
    }

    /// One pass of [`Self::reconciler`]; whether everything is in place.
    async fn reconcile(&self) -> bool {
        let ring = self.inner.ring.read().clone();
        let work: Vec<(ChannelName, String, String)> = self
            .inner
            .subs
            .iter()
            // Subscriptions still settling their first reply are left alone.
            .filter(|s| s.last.is_some() && s.pending.is_none())
            .filter_map(|s| {
                let new = ring.owner(s.key().as_str())?;
                (new != s.owner || !s.placed)
                    .then(|| (s.key().clone(), s.owner.clone(), new.to_owned()))
            })
            .collect();
        if work.is_empty() {
            return true;
        }
        tracing::info!(
            channels = work.len(),
            "placing subscriptions at their owners"
        );
        let failed = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(work)
            .for_each_concurrent(RECONCILE_PARALLEL, |(channel, old, new)| {
                let failed = &failed;
                async move {
                    if let Err(e) = self.place(&channel, &old, &new).await {
                        tracing::debug!(channel = %channel, broker = %new, error = %e, "cannot place subscription yet");
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        failed.into_inner() == 0
    }

    /// Subscribes at `new` from the last delivered position, then lets go of
    /// `old` if the owner changed.
    async fn place(&self, channel: &ChannelName, old: &str, new: &str) -> Result<(), BrokerError> {
        let remote = self
            .attached_now(new)
            .ok_or_else(|| BrokerError::Unavailable(format!("broker {new} is not attached")))?;
        let started = self.inner.subs.get(channel).map(|s| s.unplaced);
        self.resubscribe(channel, &remote).await?;
        if let Some(mut sub) = self.inner.subs.get_mut(channel) {
            sub.owner = new.to_owned();
            // The owner may have replaced the channel's state (or the
            // stream dropped) while this subscribe was in flight: then it
            // subscribed to what is gone, and must go again.
            sub.placed = Some(sub.unplaced) == started;
        }
        if old != new {
            let old_remote = self.inner.links.read().get(old).map(|l| l.remote.clone());
            if let Some(old_remote) = old_remote {
                let gateway = self.inner.gateway.get().expect("attached").clone();
                if let Err(e) = old_remote.unsubscribe(&gateway, channel).await {
                    tracing::debug!(channel = %channel, broker = %old, error = %e, "old owner unsubscribe failed");
                }
            }
        }
        Ok(())
    }

    /// The client of `broker` if its stream is up now.
    fn attached_now(&self, broker: &str) -> Option<RemoteBroker> {
        let links = self.inner.links.read();
        let link = links.get(broker)?;
        (*link.attached.borrow()).then(|| link.remote.clone())
    }

    /// Clients of every broker in the ring whose stream is up.
    async fn reachable(&self) -> Vec<RemoteBroker> {
        let names = self.brokers();
        let mut out = Vec::new();
        for name in names {
            if let Some(remote) = self.wait_attached(&name).await {
                out.push(remote);
            }
        }
        out
    }

    /// The client of `broker` once its stream is up, within [`ATTACH_WAIT`].
    async fn wait_attached(&self, broker: &str) -> Option<RemoteBroker> {
        let (remote, mut attached) = {
            let links = self.inner.links.read();
            let link = links.get(broker)?;
            (link.remote.clone(), link.attached.clone())
        };
        match tokio::time::timeout(ATTACH_WAIT, attached.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Some(remote),
            _ => None,
        }
    }

    /// The owner of `channel` and a client for it, once its stream is up.
    async fn owner(&self, channel: &ChannelName) -> Result<(String, RemoteBroker), BrokerError> {
        let owner = self
            .inner
            .ring
            .read()
            .owner(channel.as_str())
            .ok_or_else(|| BrokerError::Unavailable("no brokers".into()))?
            .to_owned();
        match self.wait_attached(&owner).await {
            Some(remote) => Ok((owner, remote)),
            None => Err(BrokerError::Unavailable(format!(
                "broker {owner} is not reachable"
            ))),
        }
    }

    /// Runs `call` at the owner of `channel`, asking again while brokers
    /// disagree on who that is (within [`OWNER_WAIT`]).
    async fn at_owner<T, F, Fut>(&self, channel: &ChannelName, call: F) -> Result<T, BrokerError>
    where
        F: Fn(String, RemoteBroker) -> Fut,
        Fut: std::future::Future<Output = Result<T, BrokerError>>,
    {
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        let mut backoff = Duration::from_millis(20);
        loop {
            let (owner, remote) = self.owner(channel).await?;
            match call(owner, remote).await {
                Err(BrokerError::NotOwner(hint)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(channel = %channel, owner = %hint, "not the owner yet; asking again");
                    tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    fn sink(&self) -> Option<&Arc<dyn DeliverySink>> {
        self.inner.sink.get()
    }

    /// Takes one delivery from a broker's stream.
    fn on_delivery(&self, d: Delivery) {
        let Some(sink) = self.sink() else { return };
        let Some(mut sub) = self.inner.subs.get_mut(&d.channel) else {
            return;
        };
        if d.kind == DeliveryKind::Control
            && matches!(Control::decode(&d.frame), Ok(Control::Resubscribe))
        {
            // The owner replaced the channel's state: subscribe again from
            // where clients are, so they hear of the new epoch.
            sub.placed = false;
            sub.unplaced += 1;
            drop(sub);
            self.inner.reconcile.notify_one();
            return;
        }
        if let Some(pending) = sub.pending.as_mut() {
            pending.push(d);
            return;
        }
        if let DeliveryKind::Publication { offset } = d.kind {
            match sub.last.as_mut() {
                Some(last) if offset <= last.offset => return,
                Some(last) => last.offset = offset,
                None => {}
            }
        }
        // The hub's deliver never blocks, so holding this entry is short.
        sink.deliver(d);
    }

    /// Ends a pending (re)subscription at `position`: recovered
    /// publications first, then what arrived live meanwhile, duplicates
    /// dropped.
    fn settle(
        &self,
        channel: &ChannelName,
        position: Position,
        recovered: Vec<Delivery>,
        reset: Option<Delivery>,
    ) {
        let Some(sink) = self.sink() else { return };
        let Some(mut sub) = self.inner.subs.get_mut(channel) else {
            return;
        };
        let pending = sub.pending.take().unwrap_or_default();
        // Where local clients stand: their last position if it is still in
        // this epoch, else (first subscription, or a reset) the reply's.
        let mut last = match (&reset, &sub.last) {
            (None, Some(last)) if last.epoch == position.epoch => last.offset,
            _ => position.offset,
        };
        if let Some(reset) = reset {
            sink.deliver(reset);
        }
        for d in recovered.into_iter().chain(pending) {
            match d.kind {
                DeliveryKind::Publication { offset } if offset <= last => continue,
                DeliveryKind::Publication { offset } => last = offset,
                _ => {}
            }
            sink.deliver(d);
        }
        sub.last = Some(Position {
            offset: last.max(position.offset),
            epoch: position.epoch,
        });
    }

    /// Keeps the stream to one broker open, resubscribing after each loss.
    async fn run_link(
        self,
        name: String,
        remote: RemoteBroker,
        attached: watch::Sender<bool>,
        stop: CancellationToken,
    ) {
        let gateway = self
            .inner
            .gateway
            .get()
            .expect("attached before links run")
            .clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            match remote.open_stream(&gateway).await {
                Ok(mut stream) => {
                    backoff = BACKOFF_MIN;
                    attached.send_replace(true);
                    // After a loss, the broker may have forgotten us (or be
                    // a restarted process): place again what it holds.
                    for mut sub in self.inner.subs.iter_mut() {
                        if sub.owner == name {
                            sub.placed = false;
                            sub.unplaced += 1;
                        }
                    }
                    self.inner.reconcile.notify_one();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            item = stream.next() => match item {
                                Some(Ok(d)) => match wire::delivery_from_pb(d) {
                                    Ok(d) => self.on_delivery(d),
                                    Err(e) => tracing::warn!(broker = %name, error = %e, "bad delivery"),
                                },
                                Some(Err(e)) => {
                                    tracing::warn!(broker = %name, error = %e, "stream failed");
                                    break;
                                }
                                None => {
                                    tracing::warn!(broker = %name, "stream ended");
                                    break;
                                }
                            },
                        }
                    }
                    attached.send_replace(false);
                }
                Err(e) => tracing::debug!(broker = %name, error = %e, "cannot open stream"),
            }
            // Full jitter, so that many gateways do not retry in step.
            let wait = backoff.mul_f64(rand::random::<f64>());
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn resubscribe(
        &self,
        channel: &ChannelName,
        remote: &RemoteBroker,
    ) -> Result<(), BrokerError> {
        let gateway = self.inner.gateway.get().expect("attached").clone();
        let (since, clients) = {
            let Some(mut sub) = self.inner.subs.get_mut(channel) else {
                return Ok(());
            };
            sub.pending.get_or_insert_with(Vec::new);
            (
                sub.last.clone(),
                sub.clients.values().cloned().collect::<Vec<_>>(),
            )
        };
        let req = SubscribeRequest {
            gateway: gateway.clone(),
            channel: channel.clone(),
            since: since.clone(),
            client: None,
        };
        let reply = match remote.subscribe(req).await {
            Ok(reply) => reply,
            Err(e) => {
                if let Some(mut sub) = self.inner.subs.get_mut(channel) {
                    // Release what waited; the next re-attach tries again.
                    let pending = sub.pending.take().unwrap_or_default();
                    drop(sub);
                    for d in pending {
                        self.on_delivery(d);
                    }
                }
                return Err(e);
            }
        };
        for client in clients {
            let req = SubscribeRequest {
                gateway: gateway.clone(),
                channel: channel.clone(),
                since: None,
                client: Some(client),
            };
            remote.subscribe(req).await?;
        }
        self.settle_reply(channel, since.is_some(), reply);
        Ok(())
    }

    /// Turns a subscribe reply into what local clients must receive.
    fn settle_reply(&self, channel: &ChannelName, had_position: bool, reply: SubscribeReply) {
        let recovered = reply.recovered == Some(true);
        let publications = if recovered {
            recovered_deliveries(channel, &reply.publications)
        } else {
            Vec::new()
        };
        // Without recovery, clients restart from what the owner still has:
        // the reset names the position just before it.
        let retained = if recovered {
            Vec::new()
        } else {
            recovered_deliveries(channel, &reply.publications)
        };
        let restart = match retained.first().map(|d| d.kind) {
            Some(DeliveryKind::Publication { offset }) => offset - 1,
            _ => reply.position.offset,
        };
        let reset = (had_position && !recovered).then(|| Delivery {
            channel: channel.clone(),
            kind: DeliveryKind::Reset { offset: restart },
            frame: frame::resubscribed(channel, restart, &reply.position.epoch),
            published_at_micros: 0,
        });
        let mut position = reply.position;
        let mut publications = publications;
        if reset.is_some() {
            position.offset = restart;
            publications = retained;
        }
        self.settle(channel, position, publications, reset);
    }
}

/// Recovered publications as deliveries, in the order the owner gave them.
fn recovered_deliveries(channel: &ChannelName, publications: &[Publication]) -> Vec<Delivery> {
    publications
        .iter()
        .map(|p| Delivery {
            channel: channel.clone(),
            kind: DeliveryKind::Publication { offset: p.offset },
            frame: p.frame.clone(),
            published_at_micros: 0,
        })
        .collect()
}

impl Broker for Router {
    async fn attach(
        &self,
        gateway: GatewayId,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<(), BrokerError> {
        if self.inner.gateway.set(gateway).is_err() || self.inner.sink.set(sink).is_err() {
            return Err(BrokerError::Unavailable(
                "router is already attached".into(),
            ));
        }
        let mut links = self.inner.links.write();
        for (name, link) in links.iter_mut() {
            self.start_link(name, link);
        }
        tokio::spawn(self.clone().reconciler());
        Ok(())
    }

    async fn detach(&self, gateway: &GatewayId) -> Result<(), BrokerError> {
        let remotes: Vec<RemoteBroker> = self
            .inner
            .links
            .read()
            .values()
            .map(|l| l.remote.clone())
            .collect();
        for remote in remotes {
            if let Err(e) = remote.detach(gateway).await {
                tracing::debug!(error = %e, "detach failed");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<SubscribeReply, BrokerError> {
        let channel = req.channel.clone();
        let client = req.client.clone();
        let reply = self
            .at_owner(&channel, |owner, remote| {
                let req = req.clone();
                async move {
                    {
                        let mut sub =
                            self.inner
                                .subs
                                .entry(req.channel.clone())
                                .or_insert_with(|| Sub {
                                    owner: owner.clone(),
                                    placed: false,
                                    unplaced: 0,
                                    last: None,
                                    clients: HashMap::new(),
                                    pending: None,
                                });
                        if sub.last.is_none() {
                            // First subscription here: hold live deliveries
                            // until the reply fixes where this gateway's
                            // stream begins.
                            sub.owner = owner.clone();
                            sub.pending.get_or_insert_with(Vec::new);
                        }
                    }
                    remote.subscribe(req).await
                }
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.inner
                    .subs
                    .remove_if(&channel, |_, s| s.last.is_none() && s.clients.is_empty());
                return Err(e);
            }
        };
        let first = self
            .inner
            .subs
            .get(&channel)
            .is_some_and(|s| s.pending.is_some() && s.last.is_none());
        if first {
            if let Some(mut sub) = self.inner.subs.get_mut(&channel) {
                sub.placed = true;
            }
            self.settle(&channel, reply.position.clone(), Vec::new(), None);
        }
        if let Some(client) = client
            && let Some(mut sub) = self.inner.subs.get_mut(&channel)
        {
            sub.clients.insert(client.client_id.clone(), client);
        }
        Ok(reply)
    }

    async fn unsubscribe(
        &self,
        gateway: &GatewayId,
        channel: &ChannelName,
    ) -> Result<(), BrokerError> {
        let owner = self.inner.subs.remove(channel).map(|(_, s)| s.owner);
        // Let go where the subscription is, whoever the ring names now.
        let remote = match owner.and_then(|o| self.attached_now(&o)) {
            Some(remote) => remote,
            None => self.owner(channel).await?.1,
        };
        remote.unsubscribe(gateway, channel).await
    }

    async fn leave(&self, channel: &ChannelName, client_id: &str) -> Result<(), BrokerError> {
        if let Some(mut sub) = self.inner.subs.get_mut(channel) {
            sub.clients.remove(client_id);
        }
        self.at_owner(channel, |_, remote| async move {
            remote.leave(channel, client_id).await
        })
        .await
    }

    async fn publish(&self, req: PublishRequest) -> Result<Position, BrokerError> {
        self.at_owner(&req.channel, |_, remote| {
            let req = req.clone();
            async move { remote.publish(req).await }
        })
        .await
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Vec<ClientInfo>, BrokerError> {
        self.at_owner(channel, |_, remote| async move {
            remote.presence(channel).await
        })
        .await
    }

    async fn presence_stats(&self, channel: &ChannelName) -> Result<PresenceStats, BrokerError> {
        self.at_owner(channel, |_, remote| async move {
            remote.presence_stats(channel).await
        })
        .await
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryReply, BrokerError> {
        self.at_owner(&req.channel, |_, remote| {
            let req = req.clone();
            async move { remote.history(req).await }
        })
        .await
    }

    async fn control(&self, channel: &ChannelName, command: Control) -> Result<(), BrokerError> {
        self.at_owner(channel, |_, remote| {
            let command = command.clone();
            async move { remote.control(channel, command).await }
        })
        .await
    }

    /// Every broker's channels, merged in name order.
    async fn channels(&self, req: ChannelsRequest) -> Result<Vec<ChannelSummary>, BrokerError> {
        let mut all = Vec::new();
        for remote in self.reachable().await {
            all.extend(remote.channels(req.clone()).await?);
        }
        all.sort_by(|a, b| a.channel.cmp(&b.channel));
        all.dedup_by(|a, b| a.channel == b.channel);
        all.truncate(req.limit);
        Ok(all)
    }

    /// Every broker's account of itself.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let mut all = Vec::new();
        for remote in self.reachable().await {
            all.extend(remote.nodes().await?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
