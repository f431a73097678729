//! # Layout
//!
//! The broker side of Switchboard: whoever owns a channel keeps its order,
//! history and presence, and fans each publication out once per interested
//! gateway.
//!
//! - [`ids`]: what processes are called: [`GatewayId`], [`BrokerName`],
//!   and a broker's name with its address, [`BrokerAddr`].
//! - [`channel`]: channel names, namespaces and personal (per-user) channels.
//! - [`namespace`]: per-namespace options (presence, join/leave, history, publish rights).
//! - [`position`]: `(offset, epoch)` stream positions and the recovery decision.
//! - [`publication`]: [`Publication`], a stored publication: offset and
//!   encoded frame, as recovery and history return it.
//! - [`history`]: the bounded, TTL-limited publication log of one channel.
//! - [`presence`]: who is subscribed to a channel, and the counts.
//! - [`frame`]: publications and events encoded once into the client wire format.
//! - [`broker`]: the [`Broker`] trait gateways call, and the [`DeliverySink`] they receive on.
//! - [`control`]: commands for a user's connections (disconnect, unsubscribe), sent on `#user`.
//! - [`idempotency`]: the window in which a retried publish is answered, not repeated.
//! - [`host`]: [`host::Host`], the wall clock and randomness a node draws
//!   on (the machine's, or a simulation's seeded ones).
//! - [`ring`]: the consistent hash ring that picks each channel's owner and failover order.
//! - [`local_broker`]: [`LocalBroker`], the in-process owner of channels.
//! - [`ownership`]: who serves a channel and who held it before; snapshots
//!   and fences (sans-IO).
//! - [`handoff`]: [`handoff::Handoff`], which moves channel state between
//!   brokers as the ring changes.
//! - [`broker_service`]: the broker's gRPC service over a [`LocalBroker`].
//! - [`remote_broker`]: [`RemoteBroker`], one broker reached over gRPC.
//! - [`dialer`]: [`dialer::Dialer`], how routers and hand-overs reach a
//!   broker's gRPC address (TCP in production, turmoil in simulations).
//! - [`router`]: [`Router`], a gateway's view of the cluster: each call to
//!   the channel's owner, one link (stream re-attached) per broker, a sans-IO
//!   subscription table for order and de-duplication, and the reconciler
//!   that places subscriptions make-before-break.
//! - [`process`]: [`process::BrokerProcess`], a broker as a process: its
//!   listeners, gossip, hand-over and drain, as `switchboard node` and the
//!   simulation run it.
//! - [`server`]: the broker process's gRPC server, on a TCP listener or any
//!   stream of connections.
//! - [`membership`]: node identities (role, address, state, boot id) and the
//!   cluster view the ring of active brokers is derived from (sans-IO).
//! - [`gossip`]: the foca (SWIM) agent that keeps the view current, over
//!   any [`gossip::Datagram`] socket (UDP in production).
//! - [`wire`]: conversions to and from protobuf and gRPC status.
//! - [`error`]: the errors brokers report ([`BrokerError`]).

pub mod broker;
pub mod broker_service;
pub mod channel;
pub mod control;
pub mod dialer;
pub mod error;
pub mod frame;
pub mod gossip;
pub mod handoff;
pub mod history;
pub mod host;
pub mod idempotency;
pub mod ids;
pub mod local_broker;
pub mod membership;
pub mod namespace;
pub mod ownership;
pub mod position;
pub mod presence;
pub mod process;
pub mod publication;
pub mod remote_broker;
pub mod ring;
pub mod router;
pub mod server;
pub mod wire;

pub use broker::{
    Broker, ChannelSummary, ChannelsRequest, Delivery, DeliveryKind, DeliverySink, HistoryReply,
    HistoryRequest, NodeInfo, PublishRequest, SubscribeReply, SubscribeRequest,
};
pub use channel::ChannelName;
pub use control::Control;
pub use error::BrokerError;
pub use ids::{BrokerAddr, BrokerName, GatewayId};
pub use local_broker::{BrokerConfig, LocalBroker};
pub use namespace::{NamespaceOptions, Namespaces, PersonalOptions};
pub use position::Position;
pub use presence::{ClientInfo, PresenceStats};
pub use publication::Publication;
pub use remote_broker::RemoteBroker;
pub use router::Router;
