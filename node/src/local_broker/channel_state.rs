//! One channel at this broker: its order (epoch and offset), history,
//! presence, the gateways that want it, and where it stands in its
//! lifecycle between brokers.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    history::History,
    memory_budget::{CHANNEL_OVERHEAD, Charge, MemoryBudget, PRESENCE_ENTRY_OVERHEAD},
};
use switchboard_cluster::{ownership::Snapshot, replication::Term};
use switchboard_core::{
    BrokerError, ChannelName, ClientInfo, Delivery, DeliveryKind, DeliverySink, GatewayId,
    NamespaceOptions, Position,
    frame::push::{self as frame, PresenceEvent},
    presence::Presence,
};

/// How long a fence outlives its hand-over. Rings agree again within a
/// second or two of a change; until then the fence is what stops a broker
/// with a stale ring from serving a channel it gave away.
pub const FENCE_TTL: Duration = Duration::from_secs(60);

pub(super) struct Subscriber {
    pub(super) gateway: GatewayId,
    pub(super) sink: Arc<dyn DeliverySink>,
}

/// Where a channel's state stands here. One enum, so that no combination
/// of flags can say two of these at once.
pub(super) enum Lifecycle {
    /// The state is here and is served (while this broker owns it).
    Serving,
    /// The state is here, but the named broker may hold a newer copy (it
    /// came back from the other side of a partition, or this broker was
    /// counted out for a while): ask it before serving.
    Unverified(Arc<str>),
    /// Handed over: refused here until the state comes back or the fence
    /// expires.
    Fenced { to: Arc<str>, since: Instant },
    /// Dropped by the sweeper: a caller that looked the channel up just
    /// before tries again on a fresh one.
    Removed,
}

pub(super) struct ChannelState {
    pub(super) name: ChannelName,
    pub(super) options: NamespaceOptions,
    pub(super) epoch: String,
    /// When the epoch began (wall clock µs): of two copies, the newer wins.
    pub(super) created_micros: u64,
    pub(super) offset: u64,
    pub(super) history: History,
    pub(super) presence: Presence,
    pub(super) subscribers: Vec<Subscriber>,
    pub(super) lifecycle: Lifecycle,
    /// The replication term this copy was last led or followed in (the
    /// snapshot it was adopted from, or a term led here); zero for a
    /// channel started and served unreplicated. While the channel is not
    /// led here it ranks the copy against another (docs/replication.md,
    /// "Which copy wins"): a copy served from a replica after its leader
    /// was lost goes on from that term, not from nothing.
    pub(super) copy_term: Term,
    /// This channel's share of the broker's memory budget, released when
    /// the state is dropped (swept, replaced, handed over).
    charge: Charge,
}

/// Bytes charged per presence entry for its `info`, which is not looked
/// at one by one: tokens (and so their `info` claims) are bounded by the
/// gateway's message and header limits.
const PRESENCE_INFO_ESTIMATE: usize = 256;

impl ChannelState {
    /// A channel starting here, in a new epoch.
    pub(super) fn new(
        name: ChannelName,
        options: NamespaceOptions,
        epoch: String,
        created_micros: u64,
        budget: &Arc<MemoryBudget>,
    ) -> Self {
        let history = History::new(options.history_size, options.history_ttl)
            .with_max_bytes(options.history_max_bytes);
        let mut state = Self {
            name,
            options,
            epoch,
            created_micros,
            offset: 0,
            history,
            presence: Presence::default(),
            subscribers: Vec::new(),
            lifecycle: Lifecycle::Serving,
            copy_term: Term::ZERO,
            charge: Charge::new(budget),
        };
        state.account();
        state
    }

    /// Sets this channel's charge to its current estimated size: called
    /// after every change made under the channel's lock.
    pub(super) fn account(&mut self) {
        let presence = self.presence.stats().num_clients
            * (PRESENCE_ENTRY_OVERHEAD + PRESENCE_INFO_ESTIMATE + 64);
        let bytes = CHANNEL_OVERHEAD
            + self.name.as_str().len()
            + self.epoch.len()
            + self.history.bytes()
            + presence
            + self.subscribers.len() * std::mem::size_of::<Subscriber>();
        self.charge.set(bytes);
    }

    /// Adds a publication to history. With the budget spent, history stops
    /// growing: the entry replaces older ones of this channel, or is not
    /// kept (then recovery says `recovered: false`); it is delivered either
    /// way.
    pub(super) fn store(&mut self, offset: u64, at: Instant, frame: bytes::Bytes) {
        if self.charge.budget().is_over() && self.history.is_enabled() {
            metrics::counter!("switchboard_broker_over_budget_total", "refused" => "history_growth")
                .increment(1);
            self.history.push_without_growth(offset, at, frame);
        } else {
            self.history.push(offset, at, frame);
        }
    }

    /// A channel handed over from another broker: its order goes on here.
    pub(super) fn from_snapshot(
        snapshot: Snapshot,
        options: NamespaceOptions,
        now: Instant,
        budget: &Arc<MemoryBudget>,
    ) -> Self {
        let mut state = Self::new(
            snapshot.channel,
            options,
            snapshot.epoch,
            snapshot.created_micros,
            budget,
        );
        state.offset = snapshot.offset;
        state.copy_term = snapshot.term;
        // Handed-over history is taken whole (within the channel's own
        // caps) even over budget: refusing it would lose publications the
        // old owner already acknowledged.
        for entry in snapshot.history {
            let at = now.checked_sub(entry.age).unwrap_or(now);
            state.history.push(entry.offset, at, entry.frame);
        }
        state.account();
        state
    }

    pub(super) fn is_removed(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Removed)
    }

    pub(super) fn is_fenced(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Fenced { .. })
    }

    pub(super) fn fence_error(&self) -> Option<BrokerError> {
        match &self.lifecycle {
            Lifecycle::Fenced { to, .. } => Some(BrokerError::NotOwner {
                owner: Some(switchboard_core::BrokerName::from(&**to)),
            }),
            _ => None,
        }
    }

    pub(super) fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }

    pub(super) fn is_idle(&mut self, now: Instant) -> bool {
        match &self.lifecycle {
            Lifecycle::Fenced { since, .. } => now.saturating_duration_since(*since) >= FENCE_TTL,
            Lifecycle::Removed => true,
            Lifecycle::Serving | Lifecycle::Unverified(_) => {
                let live_history = self.history.trim(now);
                self.account();
                self.subscribers.is_empty() && self.presence.is_empty() && !live_history
            }
        }
    }

    /// Refuses a client the channel's presence has no room for (its own
    /// entry, if it has one already, takes none).
    pub(super) fn presence_room(&self, client: Option<&ClientInfo>) -> Result<(), BrokerError> {
        let max = self.options.presence_max_clients;
        match client {
            Some(c)
                if self.options.presence
                    && self.presence.len() >= max
                    && !self.presence.contains(&c.client_id) =>
            {
                Err(BrokerError::PresenceFull(max))
            }
            _ => Ok(()),
        }
    }

    /// Whether `join`/`leave` go out now, for the subscribe reply.
    pub(super) fn join_leave(&self) -> Option<bool> {
        (self.options.presence && self.options.join_leave)
            .then(|| self.options.join_leave_at(self.presence.len()))
    }

    pub(super) fn deliver(
        &self,
        kind: DeliveryKind,
        frame: bytes::Bytes,
        published_at_micros: u64,
    ) {
        for sub in &self.subscribers {
            sub.sink.deliver(Delivery {
                channel: self.name.clone(),
                kind,
                frame: frame.clone(),
                published_at_micros,
                term: self.copy_term.0,
            });
        }
    }

    /// Sends `join`/`leave` for `info`, already added to or removed from
    /// presence, while the audience is small enough for events.
    pub(super) fn send_event(&self, event: PresenceEvent, info: &ClientInfo, now_micros: u64) {
        // The client joining or leaving counts, so that a join and its
        // leave are both sent or both not.
        let present = match event {
            PresenceEvent::Join => self.presence.len(),
            PresenceEvent::Leave => self.presence.len() + 1,
        };
        if self.options.join_leave_at(present) && !self.subscribers.is_empty() {
            let frame = frame::presence_event(event, &self.name, info);
            self.deliver(DeliveryKind::Event, frame, now_micros);
        }
    }
}
