//! # Layout
//!
//! The broker: whoever owns a channel keeps its order, history and
//! presence, and fans each publication out once per interested gateway.
//! Shared types and the [`switchboard_core::Broker`] contract live in
//! `switchboard-core`; who owns what, and how brokers reach each other, in
//! `switchboard-cluster`.
//!
//! - [`local_broker`]: [`LocalBroker`], the in-process owner of channels.
//! - [`history`]: the bounded, TTL-limited publication log of one channel.
//! - [`idempotency`]: the window in which a retried publish is answered, not repeated.
//! - [`memory_budget`]: the bytes a broker's state may take, charged and
//!   released as channels, history, presence and keys come and go (sans-IO).
//! - [`handoff`]: [`handoff::Handoff`], which moves channel state between
//!   brokers as the ring changes.
//! - [`replica`]: [`replica::Replicas`], this broker as a voter and data
//!   replica of channels led elsewhere, and its gRPC service.
//! - [`succession`]: a replicated channel's owner standing for its next
//!   term and leading it (or taking it over from its replica).
//! - [`deferral`]: how long a channel whose newer copy is held elsewhere
//!   is refused (sans-IO).
//! - [`register_store`]: the durable part of this broker's replication
//!   registers (docs/replication.md), synced before a vote leaves.
//! - [`floors`]: the terms a register made afresh never votes in, by
//!   bucket of channel names (sans-IO).
//! - [`seen_store`]: the brokers this broker has seen, kept across
//!   restarts for the lost-majority check.
//! - [`webhook`]: Pusher apps' webhooks, sent by each channel's owner.
//! - [`broker_service`]: the broker's gRPC service over a [`LocalBroker`].
//! - [`delivery_stream`]: an attached gateway's stream, what is ready sent
//!   as one batch.
//! - [`publish_stream`]: a gateway's publishes on one stream, applied in
//!   each channel's order and answered by id.
//! - [`authorization`]: who may call which broker RPC, by the identity a
//!   caller proved over mutual TLS (sans-IO).
//! - [`server`]: the broker's gRPC server, on a TCP listener or any stream
//!   of connections.
//! - [`process`]: [`process::BrokerProcess`], a broker as a process: its
//!   listeners, gossip, hand-over and drain, as `switchboard node` and the
//!   simulation run it.

pub mod authorization;
pub mod broker_service;
pub mod deferral;
pub mod delivery_stream;
pub mod floors;
pub mod handoff;
pub mod history;
pub mod idempotency;
pub mod local_broker;
pub mod memory_budget;
pub mod process;
pub mod publish_stream;
pub mod register_store;
pub mod replica;
pub mod seen_store;
pub mod server;
pub mod succession;
pub mod webhook;

pub use local_broker::{BrokerConfig, LocalBroker};
