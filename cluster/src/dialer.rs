//! [`Dialer`]: how a node reaches a broker's gRPC address. Gateways (their
//! [`crate::Router`]) and brokers (their [`crate::handoff::Handoff`]) ask
//! it for a [`Channel`] instead of opening TCP connections themselves, so
//! that the same routing and hand-over code can run over another network:
//! the simulation tests dial through turmoil's.
//!
//! The transport settings live in [`endpoint`], shared by every dialer, so
//! a simulated connection behaves like a real one (connect timeout,
//! keepalives that notice a silent peer); only how bytes move differs.

use std::{sync::Arc, time::Duration};

use tonic::transport::{Channel, Endpoint};

use switchboard_core::BrokerError;

/// Opens (lazily) a gRPC channel to a broker at `host:port`.
pub trait Dialer: Send + Sync + 'static {
    /// A lazily connected channel: nothing is sent until the first call,
    /// and a lost connection is re-established by the next one.
    fn dial(&self, addr: &str) -> Result<Channel, BrokerError>;
}

/// A shared [`Dialer`], as routers and hand-overs hold it.
pub type SharedDialer = Arc<dyn Dialer>;

/// The production dialer: TCP through the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str) -> Result<Channel, BrokerError> {
        Ok(endpoint(addr)?.connect_lazy())
    }
}

impl TcpDialer {
    pub fn shared() -> SharedDialer {
        Arc::new(Self)
    }
}

/// The endpoint for the broker at `addr` (`host:port`) with the transport
/// settings every broker connection uses.
pub fn endpoint(addr: &str) -> Result<Endpoint, BrokerError> {
    Ok(Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| BrokerError::Unavailable(format!("bad broker address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        // Keepalives turn a silently dead peer into an ended stream
        // within seconds, in both directions.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}
