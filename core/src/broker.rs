//! The interface between gateways and channel owners.
//!
//! A gateway attaches once with a [`DeliverySink`], then holds at most one
//! subscription per channel on behalf of all its local clients; the owner
//! sends each publication once per attached gateway, and the gateway fans
//! it out locally. In one process ([`crate::LocalBroker`]) calls are direct;
//! in a cluster the same trait is served over gRPC.

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    BrokerError, ChannelName, ClientInfo, Control, Position, PresenceStats, Publication,
    ids::GatewayId, presence::PresencePage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A publication; subscribers track its offset.
    Publication { offset: u64 },
    /// A `join` or `leave` event; not part of the offset sequence.
    Event,
    /// Continuity was lost (the owner lost the channel's state): the
    /// channel goes on from `offset` in a new epoch. The frame tells
    /// clients so; they must not expect the publications in between.
    Reset { offset: u64 },
    /// A [`Control`] command for the connections subscribed to a personal
    /// channel; never forwarded to clients.
    Control,
}

/// One frame for every local subscriber of `channel` at a gateway.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: ChannelName,
    pub kind: DeliveryKind,
    /// The client frame, encoded once by the owner.
    pub frame: Bytes,
    /// Wall-clock microseconds when the owner accepted the publication, for
    /// the publish-to-deliver latency histogram.
    pub published_at_micros: u64,
    /// The replication term of the copy the owner served this from; 0 for
    /// a channel served unreplicated since its epoch began. A gateway
    /// refuses an older term than it has seen in the epoch (fencing:
    /// docs/replication.md, "Gateways").
    pub term: u64,
}

/// Where an owner pushes deliveries for one gateway.
pub trait DeliverySink: Send + Sync + 'static {
    /// Must not block or fail: the owner calls it while it holds the
    /// channel's order. A sink that cannot keep up drops and recovers on
    /// its own side.
    fn deliver(&self, delivery: Delivery);
}

#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub gateway: GatewayId,
    pub channel: ChannelName,
    /// The last position the client saw; asks for the missed publications.
    pub since: Option<Position>,
    /// Adds the client to the channel's presence (where enabled).
    pub client: Option<ClientInfo>,
}

#[derive(Debug, Clone)]
pub struct SubscribeReply {
    /// The channel's position when the subscription took effect: live
    /// deliveries continue after it.
    pub position: Position,
    /// Whether history can serve recovery in this channel.
    pub recoverable: bool,
    /// With `since`: whether `publications` are all that was missed.
    pub recovered: Option<bool>,
    /// Missed publications, oldest first.
    pub publications: Vec<Publication>,
    /// Whether `join`/`leave` events are sent in this channel now; `None`
    /// where the namespace has no events at all.
    pub join_leave: Option<bool>,
    /// The replication term of the copy that answered (as in [`Delivery`]).
    pub term: u64,
}

/// A page of a channel's presence.
#[derive(Debug, Clone)]
pub struct PresenceRequest {
    pub channel: ChannelName,
    /// Only clients whose `client_id` sorts after this (the previous
    /// page's `next`).
    pub after: Option<String>,
    /// At most this many; clamped to 1..=[`crate::presence::MAX_PAGE`].
    pub limit: usize,
}

impl PresenceRequest {
    /// The first page, as large as pages go.
    pub fn first(channel: ChannelName) -> Self {
        Self {
            channel,
            after: None,
            limit: crate::presence::MAX_PAGE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub channel: ChannelName,
    /// The publisher's user id (`""` for anonymous clients and backends).
    pub from: String,
    pub data: Box<RawValue>,
    /// A retry with the same key within the owner's idempotency window is
    /// not published again: the owner answers with the original position.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HistoryRequest {
    pub channel: ChannelName,
    /// Only publications after this position.
    pub since: Option<Position>,
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

#[derive(Debug, Clone)]
pub struct HistoryReply {
    pub position: Position,
    pub publications: Vec<Publication>,
    /// With `since`: whether every publication after it is in `publications`
    /// (or would be, but for `limit`).
    pub complete: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ChannelsRequest {
    /// Only channels whose name starts with this (`""`: all).
    pub prefix: String,
    /// At most this many, the first by name.
    pub limit: usize,
}

/// A channel with at least one subscribed gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    pub channel: ChannelName,
    /// Counts of subscribed clients, where the channel keeps presence.
    pub presence: Option<PresenceStats>,
}

/// What one broker says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub version: String,
    pub uptime: Duration,
    /// Channels with state (subscribers, presence or history).
    pub num_channels: usize,
    /// Channels with at least one subscribed gateway.
    pub num_active_channels: usize,
    pub num_gateways: usize,
    /// Presence entries across channels, personal channels included.
    pub num_clients: usize,
    /// Publications accepted since start (idempotent retries not counted).
    pub num_publications: u64,
}

/// What a gateway can ask of the owner of a channel.
pub trait Broker: Send + Sync + 'static {
    /// Registers the gateway's sink. Re-attaching replaces the sink.
    fn attach(
        &self,
        gateway: GatewayId,
        sink: Arc<dyn DeliverySink>,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Forgets the gateway: its subscriptions and presence entries.
    fn detach(&self, gateway: &GatewayId) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Subscribes the gateway to the channel (idempotent), adds the client
    /// to presence, and recovers what the client missed — atomically, so
    /// that recovered and live publications meet without a gap.
    fn subscribe(
        &self,
        req: SubscribeRequest,
    ) -> impl Future<Output = Result<SubscribeReply, BrokerError>> + Send;

    /// Ends the gateway's subscription to the channel.
    fn unsubscribe(
        &self,
        gateway: &GatewayId,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Removes a client from the channel's presence (sending `leave`).
    fn leave(
        &self,
        channel: &ChannelName,
        client_id: &str,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    fn publish(
        &self,
        req: PublishRequest,
    ) -> impl Future<Output = Result<Position, BrokerError>> + Send;

    /// One page of the channel's presence, in `client_id` order.
    fn presence(
        &self,
        req: PresenceRequest,
    ) -> impl Future<Output = Result<PresencePage, BrokerError>> + Send;

    fn presence_stats(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<PresenceStats, BrokerError>> + Send;

    fn history(
        &self,
        req: HistoryRequest,
    ) -> impl Future<Output = Result<HistoryReply, BrokerError>> + Send;

    /// Delivers `command` to every gateway subscribed to `channel` (a
    /// personal channel `#user`), which applies it to its local
    /// subscribers. No offset, no history; nobody subscribed, no effect.
    fn control(
        &self,
        channel: &ChannelName,
        command: Control,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Active channels (at least one subscribed gateway) known here,
    /// sorted by name; a cluster merges the lists of its brokers.
    fn channels(
        &self,
        req: ChannelsRequest,
    ) -> impl Future<Output = Result<Vec<ChannelSummary>, BrokerError>> + Send;

    /// The brokers behind this handle: one for a [`crate::LocalBroker`],
    /// each reachable one in a cluster.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, BrokerError>> + Send;
}
