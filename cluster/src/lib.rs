//! # Layout
//!
//! Who is where in a Switchboard cluster: which brokers are up, which one
//! owns each channel, how a channel's state moves between them, and how
//! gateways and brokers reach a broker over gRPC.
//!
//! - [`ring`]: the consistent hash ring that picks each channel's owner and failover order.
//! - [`membership`]: node identities (role, address, state, boot id) and the
//!   cluster view the ring of active brokers is derived from, with one live
//!   identity per name (sans-IO).
//! - [`gossip`]: the foca (SWIM) agent that keeps the view current, over
//!   any [`gossip::Datagram`] socket (UDP in production).
//! - [`proof`]: over mutual TLS, a broker counts in the ring only once a
//!   handshake with the address it advertises proves the name it gossips.
//! - [`keyring`]: the cluster's gossip keys; every gossip packet is sealed
//!   and opened with them (ChaCha20-Poly1305), and reloaded from the file.
//! - [`ownership`]: who serves a channel and who held it before; snapshots
//!   and fences (sans-IO).
//! - [`replication`]: a channel replicated on R brokers: per-channel terms,
//!   voters' registers, replica logs, the leader's commits and leases, and
//!   candidacies for a new term (sans-IO; docs/replication.md).
//! - [`dialer`]: [`dialer::Dialer`], how routers and hand-overs reach a
//!   broker's gRPC address (TCP in production, turmoil in simulations).
//! - [`wire`]: conversions to and from protobuf and gRPC status, error
//!   kinds included.
//! - [`remote_broker`]: [`RemoteBroker`], one broker reached over gRPC.
//! - [`publish_stream`]: a gateway's publishes to one broker, pipelined on
//!   one long-lived stream.
//! - [`bundle`]: a queue read as bundles of what waits, one stream message
//!   each.
//! - [`tls`]: mutual TLS between nodes: identities in certificates, the
//!   CA, credentials that reload, the broker's acceptor and a TLS dialer.

pub mod bundle;
pub mod dialer;
pub mod gossip;
pub mod keyring;
pub mod membership;
pub mod ownership;
pub mod proof;
pub mod publish_stream;
pub mod remote_broker;
pub mod replication;
pub mod ring;
pub mod tls;
pub mod wire;

pub use remote_broker::RemoteBroker;
