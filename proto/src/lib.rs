//! # Layout
//!
//! The wire contracts between Switchboard processes, generated from the
//! `.proto` files under `proto/` at build time (protox, no system protoc).
//!
//! - [`broker::v1`]: gateways ↔ brokers: attach (the delivery stream),
//!   subscribe, publish, presence, history. Mirrors the
//!   `switchboard_core::Broker` trait, which gateways call in one process.
//! - [`api::v1`]: application backends → gateways: the server API (publish,
//!   send to a user, disconnect, presence, history, channels, info), the
//!   gRPC twin of the HTTP JSON API under `/api/` (docs/api.md).
//! - [`replica::v1`]: broker ↔ broker: a channel's replication (prepare and
//!   accept rounds of a new term; the leader's appends and lease renewals),
//!   docs/replication.md.

pub mod broker {
    // Generated: a release reply carries a whole channel snapshot or
    // nothing, once per hand-over; boxing it would buy nothing.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("switchboard.broker.v1");
    }
}

pub mod api {
    pub mod v1 {
        tonic::include_proto!("switchboard.api.v1");
    }
}

pub mod replica {
    pub mod v1 {
        tonic::include_proto!("switchboard.replica.v1");
    }
}
