//! # Layout
//!
//! The wire contract between gateways and brokers in a cluster. In one
//! process (`switchboard dev`) gateways call brokers directly through the
//! `switchboard_node::Broker` trait; the gRPC definitions that carry the
//! same calls between processes are added with cluster mode.
