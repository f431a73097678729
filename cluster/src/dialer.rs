//! [`Dialer`]: how a node reaches a broker's gRPC address. Gateways (their
//! [`crate::Router`]) and brokers (their [`crate::handoff::Handoff`]) ask
//! it for a [`Channel`] instead of opening TCP connections themselves, so
//! that the same routing and hand-over code can run over another network:
//! the simulation tests dial through turmoil's.
//!
//! The transport settings live in [`endpoint`], shared by every dialer, so
//! a simulated connection behaves like a real one (connect timeout,
//! keepalives that notice a silent peer); only how bytes move differs.
//!
//! A dialer is told the broker's name as well as its address: over TLS
//! ([`crate::tls::TlsDialer`]) the name is what the broker's certificate
//! must prove.

use std::{future::Future, io, pin::Pin, sync::Arc, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

use switchboard_core::{BrokerAddr, BrokerError};

/// Opens (lazily) a gRPC channel to a broker.
pub trait Dialer: Send + Sync + 'static {
    /// A lazily connected channel to `broker` (at `broker.addr`, proving
    /// `broker.name` where the dialer checks identities): nothing is sent
    /// until the first call, and a lost connection is re-established by
    /// the next one.
    fn dial(&self, broker: &BrokerAddr) -> Result<Channel, BrokerError>;
}

/// How bytes reach a `host:port` under TLS: TCP in production, turmoil's
/// network in the simulation.
pub trait Transport: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(
        &self,
        authority: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send + 'static>>;
}

/// How long a TCP connect to a broker may take (as [`endpoint`]'s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// TCP through the operating system, without Nagle's delay.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Io = tokio::net::TcpStream;

    fn connect(
        &self,
        authority: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send + 'static>> {
        Box::pin(async move {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// A shared [`Dialer`], as routers and hand-overs hold it.
pub type SharedDialer = Arc<dyn Dialer>;

/// The dialer of a cluster that trusts its network (`--insecure`): plain
/// TCP through the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, broker: &BrokerAddr) -> Result<Channel, BrokerError> {
        Ok(endpoint(&broker.addr)?.connect_lazy())
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
        // Keepalives turn a silently dead peer (frozen, cut off: nothing
        // resets the connection) into an ended stream in 1 to 1.5 s, in
        // both directions: how soon a gateway routes a frozen owner's
        // channels to its follower, and the follower stands (session 15:
        // 1 s and 2 s made that 3 s). A live peer answers a ping from its
        // connection task, well within 1 s even on a loaded machine.
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}
