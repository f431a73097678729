//! [`LocalBroker`]: owns channels in this process.
//!
//! Each channel is a small state machine behind its own lock: the next
//! offset, the epoch, history, presence and the attached gateways that want
//! it. Publishing assigns the offset, encodes the frame and hands it to every
//! interested gateway while holding that lock, which is what gives each
//! channel one total order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use parking_lot::Mutex;
use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    Broker, BrokerError, ChannelName, ChannelSummary, ChannelsRequest, ClientInfo, Control,
    Delivery, DeliveryKind, DeliverySink, GatewayId, HistoryReply, HistoryRequest,
    NamespaceOptions, Namespaces, NodeInfo, Position, PresenceStats, PublishRequest,
    SubscribeReply, SubscribeRequest,
    frame::{self, PresenceEvent},
    history::History,
    idempotency::{self, IdempotencyCache},
    ownership::{Release, Snapshot, SnapshotEntry},
    position::Recovery,
    presence::Presence,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's name, shown by the server API's `info`.
    pub name: String,
    /// How often idle channels and expired history are swept.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a publish's idempotency key is remembered; `0s` disables
    /// deduplication.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered at once; beyond it the oldest are
    /// forgotten before their window ends.
    pub idempotency_max_keys: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            name: "broker-1".into(),
            sweep_interval: Duration::from_secs(1),
            idempotency_window: Duration::from_secs(300),
            idempotency_max_keys: 100_000,
        }
    }
}

/// The in-process channel owner. Cheap to clone.
#[derive(Clone)]
pub struct LocalBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    namespaces: Namespaces,
    channels: DashMap<ChannelName, Arc<Mutex<ChannelState>>>,
    gateways: DashMap<GatewayId, Arc<dyn DeliverySink>>,
    /// Keyed by channel too: a key names one publish to one channel.
    idempotency: Mutex<IdempotencyCache<(ChannelName, String), Position>>,
    started: Instant,
    publications: AtomicU64,
    /// Set while this broker drains: gateways leaving it are moving their
    /// clients to the channels' new owners, not losing them.
    draining: AtomicBool,
}

struct Subscriber {
    gateway: GatewayId,
    sink: Arc<dyn DeliverySink>,
}

struct ChannelState {
    name: ChannelName,
    options: NamespaceOptions,
    epoch: String,
    offset: u64,
    history: History,
    presence: Presence,
    subscribers: Vec<Subscriber>,
    /// Set by the sweeper when it drops the channel, so that a caller that
    /// looked the channel up just before retries on a fresh one.
    removed: bool,
    /// Handed over to this broker: the channel is refused here (fenced)
    /// until its state comes back or the fence expires.
    moved: Option<Fence>,
    /// When the epoch began (wall clock µs): of two copies, the newer wins.
    created_micros: u64,
    /// A broker that came back may hold a newer copy of this channel: ask
    /// it before serving.
    verify_with: Option<Arc<str>>,
}

struct Fence {
    to: Arc<str>,
    since: Instant,
}

/// How long a fence outlives its hand-over. Rings agree again within a
/// second or two of a change; until then the fence is what stops a broker
/// with a stale ring from serving a channel it gave away.
pub const FENCE_TTL: Duration = Duration::from_secs(60);

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

impl ChannelState {
    fn new(name: ChannelName, options: NamespaceOptions) -> Self {
        let history = History::new(options.history_size, options.history_ttl);
        Self {
            name,
            options,
            epoch: new_epoch(),
            offset: 0,
            history,
            presence: Presence::default(),
            subscribers: Vec::new(),
            removed: false,
            moved: None,
            created_micros: now_micros(),
            verify_with: None,
        }
    }

    fn from_snapshot(snapshot: Snapshot, options: NamespaceOptions, now: Instant) -> Self {
        let mut state = Self::new(snapshot.channel, options);
        state.epoch = snapshot.epoch;
        state.created_micros = snapshot.created_micros;
        state.offset = snapshot.offset;
        for entry in snapshot.history {
            let at = now.checked_sub(entry.age).unwrap_or(now);
            state.history.push(entry.offset, at, entry.frame);
        }
        state
    }

    fn fence_error(&self) -> Option<BrokerError> {
        self.moved.as_ref().map(|f| BrokerError::NotOwner {
            owner: Some(crate::BrokerName::from(&*f.to)),
        })
    }

    fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }

    fn is_idle(&mut self, now: Instant) -> bool {
        if let Some(fence) = &self.moved {
            return now.saturating_duration_since(fence.since) >= FENCE_TTL;
        }
        self.subscribers.is_empty() && self.presence.is_empty() && !self.history.trim(now)
    }

    fn deliver(&self, kind: DeliveryKind, frame: bytes::Bytes, published_at_micros: u64) {
        for sub in &self.subscribers {
            sub.sink.deliver(Delivery {
                channel: self.name.clone(),
                kind,
                frame: frame.clone(),
                published_at_micros,
            });
        }
    }

    fn send_event(&self, event: PresenceEvent, info: &ClientInfo) {
        if self.options.join_leave && !self.subscribers.is_empty() {
            let frame = frame::presence_event(event, &self.name, info);
            self.deliver(DeliveryKind::Event, frame, now_micros());
        }
    }
}

fn new_epoch() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl LocalBroker {
    pub fn new(config: BrokerConfig, namespaces: Namespaces) -> Self {
        let idempotency =
            IdempotencyCache::new(config.idempotency_window, config.idempotency_max_keys);
        Self {
            inner: Arc::new(Inner {
                config,
                namespaces,
                channels: DashMap::new(),
                gateways: DashMap::new(),
                idempotency: Mutex::new(idempotency),
                started: Instant::now(),
                publications: AtomicU64::new(0),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Sweeps idle channels until `shutdown`. Without it, channels that had
    /// history are kept until touched again.
    pub async fn maintain(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sweep(Instant::now()),
            }
        }
    }

    /// Drops channels with no subscribers, no presence and no live history.
    pub fn sweep(&self, now: Instant) {
        self.inner.channels.retain(|_, state| {
            let mut s = state.lock();
            if s.is_idle(now) {
                s.removed = true;
                false
            } else {
                true
            }
        });
        metrics::gauge!("switchboard_broker_channels").set(self.inner.channels.len() as f64);
    }

    /// Number of channels with state at this broker.
    /// Number of gateways with an open delivery stream here.
    pub fn gateway_count(&self) -> usize {
        self.inner.gateways.len()
    }

    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }

    /// Runs `f` on the channel's state, creating it if needed.
    fn with_channel<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ChannelState) -> T,
    ) -> Result<T, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        let mut f = Some(f);
        loop {
            let state = self
                .inner
                .channels
                .entry(channel.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(ChannelState::new(
                        channel.clone(),
                        options.clone(),
                    )))
                })
                .clone();
            let mut s = state.lock();
            if s.removed {
                continue;
            }
            if let Some(e) = s.fence_error() {
                return Err(e);
            }
            let f = f.take().expect("called once");
            return Ok(f(&mut s));
        }
    }

    /// Runs `f` on the channel's state if it exists.
    fn with_existing<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ChannelState) -> T,
    ) -> Option<T> {
        let state = self.inner.channels.get(channel)?.clone();
        let mut s = state.lock();
        if s.removed { None } else { Some(f(&mut s)) }
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
        let channels: Vec<ChannelName> = self
            .inner
            .channels
            .iter()
            .map(|e| e.key().clone())
            .collect();
        for channel in channels {
            self.with_existing(&channel, |s| {
                s.subscribers.retain(|sub| &sub.gateway != gateway);
                for info in s.presence.remove_gateway(gateway) {
                    if !quiet {
                        s.send_event(PresenceEvent::Leave, &info);
                    }
                }
            });
            self.remove_if_idle(&channel);
        }
    }

    fn refuse_fenced(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        match self.with_existing(channel, |s| s.fence_error()).flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What this broker holds of `channel`.
    pub fn holding(&self, channel: &ChannelName) -> Holding {
        self.with_existing(channel, |s| match (&s.moved, &s.verify_with) {
            (Some(fence), _) => Holding::Fenced(fence.to.to_string()),
            (None, Some(other)) => Holding::Unverified(other.to_string()),
            (None, None) => Holding::State,
        })
        .unwrap_or(Holding::Nothing)
    }

    /// Channels whose state is here (not handed over).
    pub fn held(&self) -> Vec<ChannelName> {
        self.inner
            .channels
            .iter()
            .filter(|e| e.value().lock().moved.is_none())
            .map(|e| e.key().clone())
            .collect()
    }

    /// Hands `channel` over to broker `to`: its state if held here, and in
    /// any case a fence, so that this broker refuses the channel from now
    /// on. Under the channel's lock, so a publication is either in the
    /// snapshot or refused, never both and never neither.
    pub fn release(&self, channel: &ChannelName, to: &str) -> Result<Release, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        let now = Instant::now();
        let fence = || Fence {
            to: to.into(),
            since: now,
        };
        loop {
            let state = match self.inner.channels.entry(channel.clone()) {
                dashmap::Entry::Occupied(e) => e.get().clone(),
                dashmap::Entry::Vacant(e) => {
                    let mut s = ChannelState::new(channel.clone(), options);
                    s.moved = Some(fence());
                    e.insert(Arc::new(Mutex::new(s)));
                    return Ok(Release::NotHeld);
                }
            };
            let mut s = state.lock();
            if s.removed {
                continue;
            }
            if let Some(existing) = &s.moved {
                if &*existing.to != to {
                    return Ok(Release::MovedTo(existing.to.to_string()));
                }
                s.moved = Some(fence());
                return Ok(Release::NotHeld);
            }
            s.history.trim(now);
            let snapshot = Snapshot {
                channel: channel.clone(),
                epoch: s.epoch.clone(),
                created_micros: s.created_micros,
                offset: s.offset,
                history: s
                    .history
                    .entries()
                    .map(|(offset, at, frame)| SnapshotEntry {
                        offset,
                        age: now.saturating_duration_since(at),
                        frame: frame.clone(),
                    })
                    .collect(),
            };
            // Gateways move their subscriptions and presence themselves;
            // nobody left or joined, so no events.
            s.history = History::new(0, Duration::ZERO);
            s.subscribers.clear();
            s.presence = Presence::default();
            s.moved = Some(fence());
            metrics::counter!("switchboard_broker_handoffs_total", "direction" => "out")
                .increment(1);
            return Ok(Release::State(snapshot));
        }
    }

    /// Marks held channels that `verify_with` names a broker for: that
    /// broker may hold a newer copy, to be asked before they are served.
    pub fn mark_unverified(&self, verify_with: impl Fn(&ChannelName) -> Option<String>) {
        for entry in self.inner.channels.iter() {
            let mut s = entry.value().lock();
            if s.moved.is_none()
                && let Some(other) = verify_with(entry.key())
            {
                s.verify_with = Some(other.into());
            }
        }
    }

    /// The copy here is the one to serve (it was checked, or replaced).
    pub fn verified(&self, channel: &ChannelName) {
        self.with_existing(channel, |s| s.verify_with = None);
    }

    /// Takes over a channel's state from its previous owner. Replaces a
    /// fence or nothing, or an older epoch of the channel held here (two
    /// copies exist after a partition: the newer wins); otherwise the state
    /// here wins. Gateways subscribed to a replaced copy are told to
    /// subscribe again, so their clients learn of the new epoch.
    pub fn adopt(&self, snapshot: Snapshot) -> Result<bool, BrokerError> {
        let options = self.inner.namespaces.options(&snapshot.channel)?;
        let channel = snapshot.channel.clone();
        let mut snapshot = Some(snapshot);
        loop {
            let state = self
                .inner
                .channels
                .entry(channel.clone())
                .or_insert_with(|| {
                    let s = snapshot.take().expect("taken once");
                    Arc::new(Mutex::new(ChannelState::from_snapshot(
                        s,
                        options.clone(),
                        Instant::now(),
                    )))
                })
                .clone();
            let mut s = state.lock();
            if s.removed {
                continue;
            }
            let adopted = match snapshot.take() {
                // Inserted above from the snapshot.
                None => true,
                Some(snap) if s.moved.is_some() => {
                    *s = ChannelState::from_snapshot(snap, options.clone(), Instant::now());
                    true
                }
                Some(snap) if snap.created_micros > s.created_micros && snap.epoch != s.epoch => {
                    tracing::warn!(channel = %channel, stale = %s.epoch, newer = %snap.epoch, "a newer copy of the channel replaces the one here");
                    let stale = std::mem::replace(
                        &mut *s,
                        ChannelState::from_snapshot(snap, options.clone(), Instant::now()),
                    );
                    stale.deliver(
                        DeliveryKind::Control,
                        Control::Resubscribe.encode(),
                        now_micros(),
                    );
                    true
                }
                Some(_) => false,
            };
            if adopted {
                metrics::counter!("switchboard_broker_handoffs_total", "direction" => "in")
                    .increment(1);
            }
            return Ok(adopted);
        }
    }

    /// Creates the channel's state here if there is none.
    pub fn touch(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        self.with_channel(channel, |_| ())
    }

    /// Lifts a fence whose broker is gone: the channel starts anew here.
    pub fn unfence(&self, channel: &ChannelName) {
        self.inner.channels.remove_if(channel, |_, state| {
            let mut s = state.lock();
            if s.moved.is_some() {
                s.removed = true;
                true
            } else {
                false
            }
        });
    }

    fn remove_if_idle(&self, channel: &ChannelName) {
        let now = Instant::now();
        self.inner.channels.remove_if(channel, |_, state| {
            let mut s = state.lock();
            if s.is_idle(now) {
                s.removed = true;
                true
            } else {
                false
            }
        });
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
        self.with_channel(&req.channel, |s| {
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
                s.send_event(PresenceEvent::Join, &client);
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
            SubscribeReply {
                position,
                recoverable: s.history.is_enabled(),
                recovered,
                publications,
            }
        })
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
                s.send_event(PresenceEvent::Leave, &info);
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
        let published_at_micros = now_micros();
        let timestamp_ms = published_at_micros / 1000;
        let published = self.with_channel(&req.channel, |s| {
            // Looked up and remembered under the channel's lock, so two
            // concurrent retries of one key cannot both publish.
            let key = req
                .idempotency_key
                .as_ref()
                .map(|k| (req.channel.clone(), k.clone()));
            if let Some(key) = &key
                && let Some(original) = self.inner.idempotency.lock().get(key, Instant::now())
            {
                return (original.clone(), false);
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
            s.history.push(s.offset, Instant::now(), frame.clone());
            s.deliver(
                DeliveryKind::Publication { offset: s.offset },
                frame,
                published_at_micros,
            );
            let position = s.position();
            if let Some(key) = key {
                self.inner
                    .idempotency
                    .lock()
                    .insert(key, position.clone(), Instant::now());
            }
            (position, true)
        })?;
        let (position, fresh) = published;
        if fresh {
            self.inner.publications.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switchboard_broker_publications_total").increment(1);
        } else {
            tracing::debug!(channel = %req.channel, "idempotent retry answered with the original position");
            metrics::counter!("switchboard_broker_idempotent_retries_total").increment(1);
        }
        Ok(position)
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Vec<ClientInfo>, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        if !options.presence {
            return Err(BrokerError::NotAvailable("presence"));
        }
        self.refuse_fenced(channel)?;
        Ok(self
            .with_existing(channel, |s| s.presence.clients())
            .unwrap_or_default())
    }

    async fn presence_stats(&self, channel: &ChannelName) -> Result<PresenceStats, BrokerError> {
        let options = self.inner.namespaces.options(channel)?;
        if !options.presence {
            return Err(BrokerError::NotAvailable("presence"));
        }
        self.refuse_fenced(channel)?;
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
            s.deliver(DeliveryKind::Control, frame, now_micros())
        });
        Ok(())
    }

    async fn channels(&self, req: ChannelsRequest) -> Result<Vec<ChannelSummary>, BrokerError> {
        let mut names: Vec<ChannelName> = self
            .inner
            .channels
            .iter()
            .filter(|e| e.key().as_str().starts_with(&req.prefix))
            .map(|e| e.key().clone())
            .collect();
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
        for entry in self.inner.channels.iter() {
            let s = entry.value().lock();
            active += usize::from(!s.subscribers.is_empty());
            clients += s.presence.stats().num_clients;
        }
        Ok(vec![NodeInfo {
            name: self.inner.config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime: self.inner.started.elapsed(),
            num_channels: self.inner.channels.len(),
            num_active_channels: active,
            num_gateways: self.inner.gateways.len(),
            num_clients: clients,
            num_publications: self.inner.publications.load(Ordering::Relaxed),
        }])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use serde_json::value::RawValue;

    use super::*;

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
            created_micros: now_micros() + 1_000_000,
            offset: 40,
            history: Vec::new(),
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

    #[tokio::test]
    async fn idempotent_retry_returns_the_original_and_delivers_once() {
        let b = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let g = GatewayId::from("g");
        let rec = Arc::new(Recorder::default());
        b.attach(g.clone(), rec.clone()).await.unwrap();
        b.subscribe(SubscribeRequest {
            gateway: g,
            channel: ch("a:b"),
            since: None,
            client: None,
        })
        .await
        .unwrap();
        let req = |key: &str| PublishRequest {
            channel: ch("a:b"),
            from: String::new(),
            data: data("1"),
            idempotency_key: Some(key.into()),
        };
        let first = b.publish(req("k1")).await.unwrap();
        assert_eq!(b.publish(req("k1")).await.unwrap(), first);
        let other = b.publish(req("k2")).await.unwrap();
        assert_eq!(other.offset, first.offset + 1);
        let again = b
            .publish(PublishRequest {
                channel: ch("a:c"),
                ..req("k1")
            })
            .await
            .unwrap();
        assert_eq!(again.offset, 1, "keys are per channel");
        assert_eq!(rec.0.lock().unwrap().len(), 2);
        assert_eq!(b.nodes().await.unwrap()[0].num_publications, 3);
        assert_eq!(
            b.publish(req("")).await,
            Err(BrokerError::InvalidIdempotencyKey)
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
}
