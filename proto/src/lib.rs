//! # Layout
//!
//! The wire contracts between Switchboard processes, generated from the
//! `.proto` files under `proto/` at build time (protox, no system protoc).
//!
//! - [`broker::v1`]: gateways ↔ brokers: attach (the delivery stream),
//!   subscribe, publish, presence, history. Mirrors the
//!   `switchboard_node::Broker` trait, which gateways call in one process.

pub mod broker {
    pub mod v1 {
        tonic::include_proto!("switchboard.broker.v1");
    }
}
