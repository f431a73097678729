//! Errors a broker reports to its callers. Gateways map them to client error
//! frames; the cluster maps them to gRPC statuses.

use thiserror::Error;

use crate::BrokerName;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BrokerError {
    #[error("invalid channel name: {0}")]
    InvalidChannel(&'static str),
    #[error("unknown channel namespace")]
    UnknownNamespace,
    #[error("{0} is not enabled for this namespace")]
    NotAvailable(&'static str),
    /// The channel's presence holds `presence_max_clients` clients already.
    #[error("channel is full: at most {0} clients in its presence")]
    PresenceFull(usize),
    #[error("data is not valid JSON")]
    InvalidData,
    #[error("idempotency key must be 1 to 256 bytes")]
    InvalidIdempotencyKey,
    #[error("broker is shutting down")]
    ShuttingDown,
    #[error("gateway is not attached")]
    NotAttached,
    /// This broker does not serve the channel (another broker owns it, or
    /// it was handed over); the caller asks again once rings agree. Carries
    /// the owner this broker knows of, if any.
    #[error("not the channel's owner (owner: {})", owner.as_ref().map_or("unknown", BrokerName::as_str))]
    NotOwner { owner: Option<BrokerName> },
    /// The broker's memory budget is spent: no new channels here until
    /// some go (docs/protocol.md, code 114).
    #[error("over capacity: the broker's memory budget is spent")]
    OverCapacity,
    /// The channel's owner could not be reached (network, timeout, restart).
    #[error("owner unavailable: {0}")]
    Unavailable(String),
}
