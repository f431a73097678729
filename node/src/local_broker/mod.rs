//! [`LocalBroker`]: owns channels in this process.
//!
//! Each channel is a small state machine behind its own lock: the next
//! offset, the epoch, history, presence and the attached gateways that want
//! it. Publishing assigns the offset, encodes the frame and hands it to every
//! interested gateway while holding that lock, which is what gives each
//! channel one total order.
//!
//! - [`config`]: the broker's settings ([`BrokerConfig`]).
//! - `channel_state`: one channel and its lifecycle (serving, unverified,
//!   fenced, removed).
//! - `registry`: the channels, their locks, and the sweeper's removals.
//! - `handover`: releasing and adopting channels between brokers.
//! - `occupancy`: what the app's webhooks hear of a channel's subscribers
//!   and client events.
//! - `replicated`: publishing to a channel led here as a replicated
//!   channel: acknowledged and delivered once every replica stored it.
//! - `sweep`: idle channels dropped (but led ones with publications
//!   pending), and the memory gauges, every `sweep_interval`.
//! - `retirement`: after each sweep, idle replicated channels led here
//!   retired at their voters and forgotten.

mod channel_state;
pub mod config;
mod handover;
mod occupancy;
mod registry;
pub mod replicated;
mod retirement;
mod sweep;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use dashmap::DashMap;
use parking_lot::Mutex;
use rand::{Rng, distr::Alphanumeric, rngs::StdRng};
use tokio::time::Instant;

pub use channel_state::FENCE_TTL;
use channel_state::{ChannelState, Subscriber};
pub use config::BrokerConfig;
pub use handover::Holding;
use registry::Registry;

use crate::{
    idempotency::{self, KeyWindows},
    memory_budget::{Charge, IDEMPOTENCY_ENTRY_OVERHEAD, MemoryBudget},
};
use switchboard_core::{
    Broker, BrokerError, ChannelName, ChannelSummary, ChannelsRequest, Control, DeliveryKind,
    DeliverySink, GatewayId, HistoryReply, HistoryRequest, NamespaceOptions, Namespaces, NodeInfo,
    Position, PresencePage, PresenceRequest, PresenceStats, PublishRequest, SubscribeReply,
    SubscribeRequest,
    frame::push::{self as frame, PresenceEvent},
    host::Host,
    position::Recovery,
};

/// Publishes remembered by channel and key.
type Idempotency = KeyWindows<ChannelName, Position>;

/// The in-process channel owner. Cheap to clone.
#[derive(Clone)]
pub struct LocalBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    namespaces: Namespaces,
    host: Host,
    registry: Registry,
    /// New epochs' ids: drawn from the host, so a simulation repeats them.
    epochs: Mutex<StdRng>,
    gateways: DashMap<GatewayId, Arc<dyn DeliverySink>, foldhash::fast::FixedState>,
    /// Keyed by channel too: a key names one publish to one channel. With
    /// its charge to the memory budget, under the same lock.
    idempotency: Mutex<(Idempotency, Charge)>,
    /// What channels, history, presence and idempotency keys may hold.
    budget: Arc<MemoryBudget>,
    started: Instant,
    publications: AtomicU64,
    /// Set while this broker drains: gateways leaving it are moving their
    /// clients to the channels' new owners, not losing them.
    draining: AtomicBool,
    /// Woken when a gateway goes or channels leave: what a drain waits on.
    changes: tokio::sync::Notify,
    /// Pusher apps' webhooks, if any ([`Self::set_webhooks`]).
    webhooks: std::sync::OnceLock<crate::webhook::Webhooks>,
    /// With a replication factor of 2 or more ([`Self::set_replicated`]).
    replicated: std::sync::OnceLock<replicated::Replicated>,
}

impl LocalBroker {
    pub fn new(config: BrokerConfig, namespaces: Namespaces) -> Self {
        Self::on_host(config, namespaces, Host::system())
    }

    /// A broker whose clock and randomness come from `host` (a simulation
    /// passes its own).
    pub fn on_host(config: BrokerConfig, namespaces: Namespaces, host: Host) -> Self {
        let idempotency = KeyWindows::new(
            config.idempotency_window,
            config.idempotency_max_keys,
            |(channel, key): &(ChannelName, String)| {
                2 * (channel.as_str().len() + key.len()) + IDEMPOTENCY_ENTRY_OVERHEAD
            },
        );
        let budget = MemoryBudget::new(config.memory_budget_bytes);
        let charge = Charge::new(&budget);
        Self {
            inner: Arc::new(Inner {
                config,
                namespaces,
                registry: Registry::new(&host),
                epochs: Mutex::new(host.rng("epochs")),
                gateways: DashMap::with_hasher(host.hasher("gateways")),
                host,
                idempotency: Mutex::new((idempotency, charge)),
                budget,
                started: Instant::now(),
                publications: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                changes: tokio::sync::Notify::new(),
                webhooks: std::sync::OnceLock::new(),
                replicated: std::sync::OnceLock::new(),
            }),
        }
    }

    /// A channel starting here: in the epoch its log is of if this broker
    /// leads it as replicated (`led_state`), else in a new one.
    fn new_channel(&self, name: &ChannelName, options: NamespaceOptions) -> ChannelState {
        match self.led_state(name, &options) {
            Some(led) => led,
            None => self.fresh_channel(name, options),
        }
    }

    /// A channel starting here in a new epoch, whatever is led here.
    fn fresh_channel(&self, name: &ChannelName, options: NamespaceOptions) -> ChannelState {
        let epoch = self
            .inner
            .epochs
            .lock()
            .sample_iter(&Alphanumeric)
            .take(8)
            .map(char::from)
            .collect();
        ChannelState::new(
            name.clone(),
            options,
            epoch,
            self.inner.host.wall_micros(),
            &self.inner.budget,
        )
    }

    /// The broker's memory budget (what it charges, its limit).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    /// Resolves at the next departure of a gateway or of channels (a
    /// hand-over, a sweep).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changes.notified()
    }

    fn notify_changed(&self) {
        self.inner.changes.notify_waiters();
    }

    /// Number of gateways with an open delivery stream here.
    pub fn gateway_count(&self) -> usize {
        self.inner.gateways.len()
    }

    /// Number of channels with state at this broker.
    pub fn channel_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// Runs `f` on the channel's state, creating it if needed; refused if
    /// the channel was handed over, or is new and the memory budget is
    /// spent.
    fn with_channel<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ChannelState) -> T,
    ) -> Result<T, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        let mut s = if self.inner.budget.is_over() {
            // Checked before the insert: a refused channel never exists,
            // not even for the sweeper to find. Racing creators may pass
            // together; the overshoot is one channel each.
            self.inner.registry.lock_existing(channel).ok_or_else(|| {
                metrics::counter!("switchboard_broker_over_budget_total", "refused" => "new_channel")
                    .increment(1);
                tracing::debug!(channel = %channel, "new channel refused: memory budget spent");
                BrokerError::OverCapacity
            })?
        } else {
            self.inner
                .registry
                .lock_or_insert(channel, || self.new_channel(channel, options))
                .0
        };
        match s.fence_error() {
            Some(e) => Err(e),
            None => {
                let out = f(&mut s);
                s.account();
                Ok(out)
            }
        }
    }

    /// Runs `f` on the channel's state if it exists.
    fn with_existing<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ChannelState) -> T,
    ) -> Option<T> {
        let mut s = self.inner.registry.lock_existing(channel)?;
        let out = f(&mut s);
        s.account();
        Some(out)
    }

    /// Detaches `gateway` only if `sink` is still its current sink: a stream
    /// that ends after the gateway re-attached must not undo the new one.
    pub fn detach_sink(&self, gateway: &GatewayId, sink: &Arc<dyn DeliverySink>) {
        let current =
            |s: &Arc<dyn DeliverySink>| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(sink));
        if self
            .inner
            .gateways
            .remove_if(gateway, |_, s| current(s))
            .is_some()
        {
            self.forget_gateway(gateway);
        }
    }

    /// From now on, gateways that go away are moving elsewhere: their
    /// clients' presence entries are dropped without `leave` events.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Drops the gateway's subscriptions and presence entries everywhere.
    fn forget_gateway(&self, gateway: &GatewayId) {
        let quiet = self.inner.draining.load(Ordering::Relaxed);
        let now = self.inner.host.wall_micros();
        for channel in self.inner.registry.names(|_, _| true) {
            self.with_existing(&channel, |s| {
                s.subscribers.retain(|sub| &sub.gateway != gateway);
                for info in s.presence.remove_gateway(gateway) {
                    if !quiet {
                        s.send_event(PresenceEvent::Leave, &info, now);
                        self.left(s, &info);
                    }
                }
            });
            self.remove_if_idle(&channel);
        }
        self.notify_changed();
    }

    fn count_publish(&self, fresh: bool) {
        if fresh {
            self.inner.publications.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switchboard_broker_publications_total").increment(1);
        } else {
            tracing::debug!("idempotent retry answered with the original position");
            metrics::counter!("switchboard_broker_idempotent_retries_total").increment(1);
        }
    }

    fn refuse_fenced(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        match self.with_existing(channel, |s| s.fence_error()).flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn remove_if_idle(&self, channel: &ChannelName) {
        let now = Instant::now();
        self.inner.registry.remove_if(channel, |s| s.is_idle(now));
    }
}

impl Broker for LocalBroker {
    async fn attach(
        &self,
        gateway: GatewayId,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<(), BrokerError> {
        self.inner.gateways.insert(gateway, sink);
        Ok(())
    }

    async fn detach(&self, gateway: &GatewayId) -> Result<(), BrokerError> {
        self.inner.gateways.remove(gateway);
        self.forget_gateway(gateway);
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<SubscribeReply, BrokerError> {
        let sink = self
            .inner
            .gateways
            .get(&req.gateway)
            .map(|s| s.value().clone())
            .ok_or(BrokerError::NotAttached)?;
        self.read_lease(&req.channel).await?;
        self.with_channel(&req.channel, |s| {
            s.presence_room(req.client.as_ref())?;
            // A gateway that re-attached (a new stream) resubscribes: its
            // entry must point at the new sink.
            match s
                .subscribers
                .iter_mut()
                .find(|sub| sub.gateway == req.gateway)
            {
                Some(sub) => sub.sink = sink,
                None => s.subscribers.push(Subscriber {
                    gateway: req.gateway.clone(),
                    sink,
                }),
            }
            if let Some(client) = req.client
                && s.options.presence
                && s.presence.add(req.gateway.clone(), client.clone())
            {
                s.send_event(PresenceEvent::Join, &client, self.inner.host.wall_micros());
                self.joined(s, &client);
            }
            let now = Instant::now();
            s.history.trim(now);
            let position = s.position();
            let (recovered, publications) = match &req.since {
                None => (None, Vec::new()),
                Some(since) => match Recovery::decide(since, &position, s.history.oldest()) {
                    Recovery::Complete { from_offset } => {
                        (Some(true), s.history.since(from_offset, usize::MAX))
                    }
                    Recovery::Partial { from_offset } => {
                        (Some(false), s.history.since(from_offset, usize::MAX))
                    }
                    Recovery::Impossible => (Some(false), Vec::new()),
                },
            };
            Ok(SubscribeReply {
                position,
                recoverable: s.history.is_enabled(),
                recovered,
                publications,
                join_leave: s.join_leave(),
                term: s.copy_term.0,
            })
        })?
    }

    async fn unsubscribe(
        &self,
        gateway: &GatewayId,
        channel: &ChannelName,
    ) -> Result<(), BrokerError> {
        self.with_existing(channel, |s| {
            s.subscribers.retain(|sub| &sub.gateway != gateway)
        });
        self.remove_if_idle(channel);
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, client_id: &str) -> Result<(), BrokerError> {
        self.with_existing(channel, |s| {
            if let Some(info) = s.presence.remove(client_id) {
                s.send_event(PresenceEvent::Leave, &info, self.inner.host.wall_micros());
                self.left(s, &info);
            }
        });
        self.remove_if_idle(channel);
        Ok(())
    }

    async fn publish(&self, req: PublishRequest) -> Result<Position, BrokerError> {
        if let Some(key) = &req.idempotency_key
            && !idempotency::valid_key(key)
        {
            return Err(BrokerError::InvalidIdempotencyKey);
        }
        if let Some(r) = self.inner.replicated.get()
            && r.replicas.leads(&req.channel).is_some()
        {
            let (position, fresh) = self.publish_replicated(r, req).await?;
            self.count_publish(fresh);
            return Ok(position);
        }
        let published_at_micros = self.inner.host.wall_micros();
        let timestamp_ms = published_at_micros / 1000;
        let published = self.with_channel(&req.channel, |s| {
            // Looked up and remembered under the channel's lock, so two
            // concurrent retries of one key cannot both publish.
            let key = req
                .idempotency_key
                .as_ref()
                .map(|k| (req.channel.clone(), k.clone()));
            if let Some(key) = &key {
                let mut idempotency = self.inner.idempotency.lock();
                match idempotency.0.get(key, Instant::now()) {
                    Some(original) if original.epoch == s.epoch && original.offset <= s.offset => {
                        return (original.clone(), false);
                    }
                    // Appended while this broker led the channel replicated
                    // and never committed (it serves the channel
                    // unreplicated now, from what was committed): answering
                    // it would acknowledge what nobody stores.
                    Some(_) => idempotency.0.forget(key),
                    None => {}
                }
            }
            s.offset += 1;
            let frame = frame::publication(
                &s.name,
                &req.from,
                &req.data,
                s.offset,
                &s.epoch,
                timestamp_ms,
            );
            s.store(s.offset, Instant::now(), frame.clone());
            self.published(s, &req.data);
            s.deliver(
                DeliveryKind::Publication { offset: s.offset },
                frame,
                published_at_micros,
            );
            let position = s.position();
            if let Some(key) = key {
                let mut idempotency = self.inner.idempotency.lock();
                let (cache, charge) = &mut *idempotency;
                cache.insert(key, position.clone(), Instant::now());
                charge.set(cache.bytes());
            }
            (position, true)
        })?;
        let (position, fresh) = published;
        self.count_publish(fresh);
        Ok(position)
    }

    async fn presence(&self, req: PresenceRequest) -> Result<PresencePage, BrokerError> {
        let options = self.inner.namespaces.options(&req.channel)?;
        if !options.presence {
            return Err(BrokerError::NotAvailable("presence"));
        }
        self.refuse_fenced(&req.channel)?;
        self.read_lease(&req.channel).await?;
        Ok(self
            .with_existing(&req.channel, |s| {
                s.presence.page(req.after.as_deref(), req.limit)
            })
            .unwrap_or_default())
    }

    async fn presence_stats(&self, channel: &ChannelName) -> Result<PresenceStats, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        if !options.presence {
            return Err(BrokerError::NotAvailable("presence"));
        }
        self.refuse_fenced(channel)?;
        self.read_lease(channel).await?;
        Ok(self
            .with_existing(channel, |s| s.presence.stats())
            .unwrap_or(PresenceStats {
                num_clients: 0,
                num_users: 0,
            }))
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryReply, BrokerError> {
        let options = self.inner.namespaces.options(&req.channel)?;
        if !options.history_enabled() {
            return Err(BrokerError::NotAvailable("history"));
        }
        self.read_lease(&req.channel).await?;
        let reply = self.with_channel(&req.channel, |s| {
            s.history.trim(Instant::now());
            let position = s.position();
            match &req.since {
                None if req.reverse => HistoryReply {
                    publications: s.history.latest(req.limit),
                    position,
                    complete: None,
                },
                None => HistoryReply {
                    publications: s.history.since(0, req.limit),
                    position,
                    complete: None,
                },
                Some(since) => {
                    let (complete, from) =
                        match Recovery::decide(since, &position, s.history.oldest()) {
                            Recovery::Complete { from_offset } => (true, Some(from_offset)),
                            Recovery::Partial { from_offset } => (false, Some(from_offset)),
                            Recovery::Impossible => (false, None),
                        };
                    let mut publications = from
                        .map(|f| s.history.since(f, req.limit))
                        .unwrap_or_default();
                    if req.reverse {
                        publications.reverse();
                    }
                    HistoryReply {
                        publications,
                        position,
                        complete: Some(complete),
                    }
                }
            }
        })?;
        self.remove_if_idle(&req.channel);
        Ok(reply)
    }

    async fn control(&self, channel: &ChannelName, command: Control) -> Result<(), BrokerError> {
        self.inner.namespaces.options(channel)?;
        self.refuse_fenced(channel)?;
        let frame = command.encode();
        self.with_existing(channel, |s| {
            s.deliver(DeliveryKind::Control, frame, self.inner.host.wall_micros())
        });
        Ok(())
    }

    async fn channels(&self, req: ChannelsRequest) -> Result<Vec<ChannelSummary>, BrokerError> {
        let mut names = self
            .inner
            .registry
            .names(|name, _| name.as_str().starts_with(&req.prefix));
        names.sort();
        let mut active = Vec::new();
        for name in names {
            if active.len() >= req.limit {
                break;
            }
            let summary = self.with_existing(&name, |s| {
                (!s.subscribers.is_empty()).then(|| ChannelSummary {
                    channel: s.name.clone(),
                    presence: s.options.presence.then(|| s.presence.stats()),
                })
            });
            active.extend(summary.flatten());
        }
        Ok(active)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let (mut active, mut clients) = (0, 0);
        self.inner.registry.for_each(|_, s| {
            active += usize::from(!s.subscribers.is_empty());
            clients += s.presence.stats().num_clients;
        });
        Ok(vec![NodeInfo {
            name: self.inner.config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime: self.inner.started.elapsed(),
            num_channels: self.inner.registry.len(),
            num_active_channels: active,
            num_gateways: self.inner.gateways.len(),
            num_clients: clients,
            num_publications: self.inner.publications.load(Ordering::Relaxed),
        }])
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex as StdMutex, time::Duration};

    use serde_json::value::RawValue;

    use super::*;
    use switchboard_cluster::ownership::{Release, Snapshot};
    use switchboard_core::{ClientInfo, Delivery};

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<Delivery>>);

    impl DeliverySink for Recorder {
        fn deliver(&self, delivery: Delivery) {
            self.0.lock().unwrap().push(delivery);
        }
    }

    fn data(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    async fn publish(b: &LocalBroker, channel: &str, n: u64) -> Position {
        b.publish(PublishRequest {
            channel: ch(channel),
            from: "u".into(),
            data: data(&n.to_string()),
            idempotency_key: None,
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn offsets_order_and_recovery() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        let sub = b
            .subscribe(SubscribeRequest {
                gateway: g.clone(),
                channel: ch("a:b"),
                since: None,
                client: None,
            })
            .await
            .unwrap();
        assert_eq!(sub.position.offset, 0);
        for i in 1..=5 {
            assert_eq!(publish(&b, "a:b", i).await.offset, i);
        }
        let offsets: Vec<_> = rec.0.lock().unwrap().iter().map(|d| d.kind).collect();
        assert_eq!(
            offsets,
            (1..=5)
                .map(|offset| DeliveryKind::Publication { offset })
                .collect::<Vec<_>>()
        );

        let since = Position {
            offset: 2,
            epoch: sub.position.epoch.clone(),
        };
        let again = b
            .subscribe(SubscribeRequest {
                gateway: g.clone(),
                channel: ch("a:b"),
                since: Some(since),
                client: None,
            })
            .await
            .unwrap();
        assert_eq!(again.recovered, Some(true));
        assert_eq!(again.publications.len(), 3);

        let wrong = Position {
            offset: 2,
            epoch: "other".into(),
        };
        let lost = b
            .subscribe(SubscribeRequest {
                gateway: g,
                channel: ch("a:b"),
                since: Some(wrong),
                client: None,
            })
            .await
            .unwrap();
        assert_eq!(lost.recovered, Some(false));
        // Not recovered, but the current epoch's retained publications.
        assert_eq!(lost.publications.len(), 5);
    }

    /// A copy frozen or cut off while a replica went on in the same epoch
    /// gives way to the copy further on, never the other way round.
    #[tokio::test]
    async fn a_copy_of_the_same_epoch_further_on_replaces_the_one_here() {
        let first = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let frozen = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let went_on = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        for i in 1..=3 {
            publish(&first, "a:b", i).await;
        }
        let Release::State(at3) = first.release(&ch("a:b"), "b2").unwrap() else {
            panic!("state expected");
        };
        assert!(frozen.adopt(at3.clone()).unwrap());
        assert!(went_on.adopt(at3.clone()).unwrap());
        for i in 4..=5 {
            publish(&went_on, "a:b", i).await;
        }
        let Release::State(at5) = went_on.release(&ch("a:b"), "b3").unwrap() else {
            panic!("state expected");
        };
        assert_eq!((at5.epoch.as_str(), at5.offset), (at3.epoch.as_str(), 5));
        assert!(frozen.adopt(at5).unwrap());
        let next = publish(&frozen, "a:b", 6).await;
        assert_eq!((next.offset, next.epoch.as_str()), (6, at3.epoch.as_str()));
        // The copy behind does not replace the one further on.
        assert!(!frozen.adopt(at3).unwrap());
        assert_eq!(publish(&frozen, "a:b", 7).await.offset, 7);
    }

    #[tokio::test]
    async fn release_hands_over_history_and_fences_the_channel() {
        let old = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let new = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        for i in 1..=3 {
            publish(&old, "a:b", i).await;
        }
        let Release::State(snapshot) = old.release(&ch("a:b"), "b2").unwrap() else {
            panic!("state expected");
        };
        assert_eq!((snapshot.offset, snapshot.history.len()), (3, 3));
        // Fenced: refused from now on, and a second ask says where it went.
        let refused = old
            .publish(PublishRequest {
                channel: ch("a:b"),
                from: String::new(),
                data: data("4"),
                idempotency_key: None,
            })
            .await;
        assert_eq!(
            refused,
            Err(BrokerError::NotOwner {
                owner: Some("b2".into())
            })
        );
        assert_eq!(old.holding(&ch("a:b")), Holding::Fenced("b2".into()));
        assert_eq!(
            old.release(&ch("a:b"), "b3").unwrap(),
            Release::MovedTo("b2".into())
        );
        assert!(old.held().is_empty());

        let epoch = snapshot.epoch.clone();
        assert!(new.adopt(snapshot).unwrap());
        let next = publish(&new, "a:b", 4).await;
        assert_eq!((next.offset, next.epoch.as_str()), (4, epoch.as_str()));
        let g = GatewayId::from("g");
        new.attach(g.clone(), Arc::new(Recorder::default()))
            .await
            .unwrap();
        let recovered = new
            .subscribe(SubscribeRequest {
                gateway: g,
                channel: ch("a:b"),
                since: Some(Position { offset: 1, epoch }),
                client: None,
            })
            .await
            .unwrap();
        assert_eq!(recovered.recovered, Some(true));
        assert_eq!(recovered.publications.len(), 3);
    }

    #[tokio::test]
    async fn release_of_nothing_still_fences_and_state_here_wins_over_adoption() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        assert_eq!(b.release(&ch("a:x"), "b2").unwrap(), Release::NotHeld);
        assert_eq!(b.holding(&ch("a:x")), Holding::Fenced("b2".into()));
        // The fence expires with FENCE_TTL or is lifted when its broker
        // is gone; the channel then starts anew here.
        b.unfence(&ch("a:x"));
        assert_eq!(b.holding(&ch("a:x")), Holding::Nothing);
        let mine = publish(&b, "a:x", 1).await;
        let older = Snapshot {
            channel: ch("a:x"),
            epoch: "older".into(),
            created_micros: 0,
            offset: 9,
            history: Vec::new(),
            keys: Vec::new(),
            term: Default::default(),
            handed: None,
            handed_committed: None,
        };
        assert!(!b.adopt(older).unwrap());
        assert_eq!(publish(&b, "a:x", 2).await.epoch, mine.epoch);

        // After a partition: a newer copy replaces the one here, and the
        // gateways subscribed to it are told to subscribe again.
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        b.subscribe(SubscribeRequest {
            gateway: g,
            channel: ch("a:x"),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        let newer = Snapshot {
            channel: ch("a:x"),
            epoch: "newer".into(),
            created_micros: Host::system().wall_micros() + 1_000_000,
            offset: 40,
            history: Vec::new(),
            keys: Vec::new(),
            term: Default::default(),
            handed: None,
            handed_committed: None,
        };
        assert!(b.adopt(newer).unwrap());
        let told = rec.0.lock().unwrap().pop().unwrap();
        assert_eq!(Control::decode(&told.frame).unwrap(), Control::Resubscribe);
        let next = publish(&b, "a:x", 3).await;
        assert_eq!((next.offset, next.epoch.as_str()), (41, "newer"));

        b.release(&ch("a:y"), "b2").unwrap();
        b.sweep(Instant::now() + FENCE_TTL);
        assert_eq!(b.holding(&ch("a:y")), Holding::Nothing, "fence expired");
    }

    /// A copy taken from a replica of term 2 and served unreplicated (its
    /// leader lost) keeps ranking by term 2: a copy further on in the same
    /// epoch and term replaces it, an unreplicated one does not, and it is
    /// handed on with its term.
    #[tokio::test]
    async fn a_copy_served_from_a_replica_ranks_by_its_term() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let copy = |offset, term| Snapshot {
            channel: ch("a:x"),
            epoch: "e".into(),
            created_micros: 1,
            offset,
            history: Vec::new(),
            keys: Vec::new(),
            term: switchboard_cluster::replication::Term(term),
            handed: None,
            handed_committed: None,
        };
        assert!(b.adopt(copy(4, 2)).unwrap());
        assert!(!b.adopt(copy(9, 0)).unwrap(), "an unreplicated copy");
        assert!(!b.adopt(copy(3, 2)).unwrap(), "behind");
        assert!(b.adopt(copy(5, 2)).unwrap(), "further on, same term");
        let Release::State(handed) = b.release(&ch("a:x"), "b2").unwrap() else {
            panic!("the copy is held here");
        };
        assert_eq!((handed.offset, handed.term.0), (5, 2));
    }

    #[tokio::test]
    async fn idle_channel_is_swept_and_gets_new_epoch() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let p1 = publish(&b, "a:b", 1).await;
        assert_eq!(b.channel_count(), 1);
        b.sweep(Instant::now() + Duration::from_secs(301));
        assert_eq!(b.channel_count(), 0);
        let p2 = publish(&b, "a:b", 2).await;
        assert_ne!(p1.epoch, p2.epoch);
        assert_eq!(p2.offset, 1);
    }

    #[tokio::test]
    async fn presence_events_and_detach() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let (g1, g2) = (GatewayId::from("g1"), GatewayId::from("g2"));
        let watcher = Arc::new(Recorder::default());
        b.attach(g1.clone(), Arc::new(Recorder::default()))
            .await
            .unwrap();
        b.attach(g2.clone(), watcher.clone()).await.unwrap();
        b.subscribe(SubscribeRequest {
            gateway: g2,
            channel: ch("a:b"),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        let client = ClientInfo {
            client_id: "c1".into(),
            user_id: "alice".into(),
            info: None,
        };
        b.subscribe(SubscribeRequest {
            gateway: g1.clone(),
            channel: ch("a:b"),
            since: None,
            client: Some(client),
        })
        .await
        .unwrap();
        assert_eq!(b.presence_stats(&ch("a:b")).await.unwrap().num_clients, 1);
        b.detach(&g1).await.unwrap();
        assert_eq!(b.presence_stats(&ch("a:b")).await.unwrap().num_clients, 0);
        let frames: Vec<String> = watcher
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|d| String::from_utf8(d.frame.to_vec()).unwrap())
            .collect();
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[0].starts_with(r#"{"type":"join""#), "{frames:?}");
        assert!(frames[1].starts_with(r#"{"type":"leave""#), "{frames:?}");
    }

    /// A publish to `a:b` with idempotency key `key`.
    fn keyed(key: &str) -> PublishRequest {
        PublishRequest {
            channel: ch("a:b"),
            from: String::new(),
            data: data("1"),
            idempotency_key: Some(key.into()),
        }
    }

    /// Gateway `g` attached to `b` and subscribed to `channel`: what it
    /// receives.
    async fn watching(b: &LocalBroker, channel: &str) -> Arc<Recorder> {
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        b.subscribe(SubscribeRequest {
            gateway: g,
            channel: ch(channel),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        rec
    }

    #[tokio::test]
    async fn idempotent_retry_returns_the_original_and_delivers_once() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let rec = watching(&b, "a:b").await;
        let first = b.publish(keyed("k1")).await.unwrap();
        assert_eq!(b.publish(keyed("k1")).await.unwrap(), first);
        let other = b.publish(keyed("k2")).await.unwrap();
        assert_eq!(other.offset, first.offset + 1);
        let again = b
            .publish(PublishRequest {
                channel: ch("a:c"),
                ..keyed("k1")
            })
            .await
            .unwrap();
        assert_eq!(again.offset, 1, "keys are per channel");
        assert_eq!(rec.0.lock().unwrap().len(), 2);
        assert_eq!(b.nodes().await.unwrap()[0].num_publications, 3);
        assert_eq!(
            b.publish(keyed("")).await,
            Err(BrokerError::InvalidIdempotencyKey)
        );
    }

    #[tokio::test]
    async fn a_hand_over_carries_the_keys_so_a_retry_is_answered_not_repeated() {
        let old = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let first = old.publish(keyed("k1")).await.unwrap();
        let Release::State(snapshot) = old.release(&ch("a:b"), "new").unwrap() else {
            panic!("the state is handed over")
        };
        assert_eq!(snapshot.keys, vec![("k1".to_owned(), first.offset)]);

        let new = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        assert!(new.adopt(snapshot).unwrap());
        let rec = watching(&new, "a:b").await;
        assert_eq!(new.publish(keyed("k1")).await.unwrap(), first);
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "the retry is not delivered"
        );
        assert_eq!(
            new.publish(keyed("k2")).await.unwrap().offset,
            first.offset + 1
        );
    }

    #[tokio::test]
    async fn control_reaches_subscribed_gateways_without_offset_or_history() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        let cmd = Control::Disconnect {
            code: 4000,
            reason: "bye".into(),
            reconnect: false,
        };
        b.control(&ch("#alice"), cmd.clone()).await.unwrap();
        assert!(rec.0.lock().unwrap().is_empty(), "nobody subscribed");
        b.subscribe(SubscribeRequest {
            gateway: g,
            channel: ch("#alice"),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        b.control(&ch("#alice"), cmd.clone()).await.unwrap();
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, DeliveryKind::Control);
        assert_eq!(Control::decode(&got[0].frame).unwrap(), cmd);
        let history = b
            .history(HistoryRequest {
                channel: ch("#alice"),
                since: None,
                limit: 10,
                reverse: false,
            })
            .await
            .unwrap();
        assert_eq!(history.position.offset, 0);
        assert!(history.publications.is_empty());
    }

    #[tokio::test]
    async fn channels_lists_active_ones_with_counts() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let g = GatewayId::from("g");
        b.attach(g.clone(), Arc::new(Recorder::default()))
            .await
            .unwrap();
        for (i, name) in ["chat:b", "chat:a", "news:x"].into_iter().enumerate() {
            b.subscribe(SubscribeRequest {
                gateway: g.clone(),
                channel: ch(name),
                since: None,
                client: Some(ClientInfo {
                    client_id: format!("c{i}"),
                    user_id: "u".into(),
                    info: None,
                }),
            })
            .await
            .unwrap();
        }
        publish(&b, "chat:history-only", 1).await;
        let all = b
            .channels(ChannelsRequest {
                prefix: "chat:".into(),
                limit: 10,
            })
            .await
            .unwrap();
        let names: Vec<&str> = all.iter().map(|c| c.channel.as_str()).collect();
        assert_eq!(names, ["chat:a", "chat:b"]);
        assert_eq!(all[0].presence.unwrap().num_clients, 1);
        let one = b
            .channels(ChannelsRequest {
                prefix: String::new(),
                limit: 1,
            })
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        let node = &b.nodes().await.unwrap()[0];
        assert_eq!(
            (
                node.num_channels,
                node.num_active_channels,
                node.num_gateways,
                node.num_clients
            ),
            (4, 3, 1, 3)
        );
    }

    #[tokio::test]
    async fn over_budget_refuses_new_channels_keeps_delivering_and_recovers_after_a_sweep() {
        let config = BrokerConfig {
            memory_budget_bytes: 8 * 1024,
            ..Default::default()
        };
        let b = LocalBroker::new(config, Namespaces::permissive());
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        b.subscribe(SubscribeRequest {
            gateway: g.clone(),
            channel: ch("a:kept"),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        let mut created = 0;
        let refused = loop {
            let req = PublishRequest {
                channel: ch(&format!("a:{created}")),
                from: "u".into(),
                data: data("1"),
                idempotency_key: Some("k".into()),
            };
            match b.publish(req).await {
                Ok(_) => created += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(refused, BrokerError::OverCapacity);
        assert!(created > 3, "{created}");
        let budget = b.memory_budget().clone();
        assert!(budget.is_over());
        let used = budget.used();
        // An existing channel is still served and its subscriber reached,
        // without the count growing.
        for i in 1..=10 {
            assert_eq!(publish(&b, "a:kept", i).await.offset, i);
        }
        assert_eq!(rec.0.lock().unwrap().len(), 10);
        assert!(budget.used() <= used, "{} > {used}", budget.used());
        // Once history expires and idle channels go, the budget is back.
        b.sweep(Instant::now() + Duration::from_secs(301));
        assert!(!budget.is_over());
        publish(&b, "a:new", 1).await;
        b.detach(&g).await.unwrap();
        b.sweep(Instant::now() + Duration::from_secs(301) + b.inner.config.idempotency_window);
        assert_eq!(budget.used(), 0, "everything charged is released");
    }
}
