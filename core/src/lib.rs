//! # Layout
//!
//! What every role of Switchboard shares, with no IO: the names, positions
//! and frames that travel from client to gateway to broker and back, the
//! errors, and the [`Broker`] contract gateways call and brokers serve.
//!
//! - [`ids`]: what processes are called: [`GatewayId`], [`BrokerName`],
//!   and a broker's name with its address, [`BrokerAddr`].
//! - [`channel`]: channel names, namespaces and personal (per-user) channels.
//! - [`namespace`]: per-namespace options (presence, join/leave, history, publish rights).
//! - [`position`]: `(offset, epoch)` stream positions and the recovery decision.
//! - [`publication`]: [`Publication`], a stored publication: offset and
//!   encoded frame, as recovery and history return it.
//! - [`presence`]: who is subscribed to a channel, the counts, and pages of it.
//! - [`frame`]: the client wire format: request, reply and push frames, the
//!   strict request parser, and the error and close codes; publications and
//!   events encoded once, shared as bytes.
//! - [`control`]: commands for a user's connections (disconnect, unsubscribe), sent on `#user`.
//! - [`broker`]: the [`Broker`] trait gateways call, and the [`DeliverySink`] they receive on.
//! - [`error`]: the errors brokers report ([`BrokerError`]).
//! - [`host`]: [`host::Host`], the wall clock and randomness a node draws
//!   on (the machine's, or a simulation's seeded ones).

pub mod broker;
pub mod channel;
pub mod control;
pub mod error;
pub mod frame;
pub mod host;
pub mod ids;
pub mod namespace;
pub mod position;
pub mod presence;
pub mod publication;

pub use broker::{
    Broker, ChannelSummary, ChannelsRequest, Delivery, DeliveryKind, DeliverySink, HistoryReply,
    HistoryRequest, NodeInfo, PresenceRequest, PublishRequest, SubscribeReply, SubscribeRequest,
};
pub use channel::ChannelName;
pub use control::Control;
pub use error::BrokerError;
pub use ids::{BrokerAddr, BrokerName, GatewayId};
pub use namespace::{NamespaceOptions, Namespaces, PersonalOptions};
pub use position::Position;
pub use presence::{ClientInfo, PresencePage, PresenceStats};
pub use publication::Publication;
