//! The broker process's gRPC server: a [`LocalBroker`] served on a listener
//! until shutdown.

use std::{sync::Arc, time::Duration};

use futures_util::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::{Connected, TcpIncoming};

use crate::{
    LocalBroker, authorization::ConnectionAuth, broker_service::BrokerService, handoff::Handoff,
};

/// Serves `broker` on `listener` until `shutdown`; in a cluster, only the
/// channels `handoff` says it owns. Each gateway stream's watcher runs in
/// `tasks`.
pub async fn run(
    listener: TcpListener,
    broker: LocalBroker,
    handoff: Option<Arc<Handoff>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve(incoming(listener), broker, handoff, tasks, shutdown).await
}

/// Connections accepted on `listener`, as the broker's server takes them.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    // The builder's `tcp_nodelay` does not reach connections from our own
    // listener: set it on them. Without it, Nagle's algorithm held delivery
    // frames on the stream to each gateway until the previous one was
    // acknowledged (a delayed ACK: tens of milliseconds).
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// An accepted connection the broker's server takes: a byte stream whose
/// kind says how its peer is authenticated ([`ConnectionAuth`]).
pub trait Connection:
    AsyncRead + AsyncWrite + Connected<ConnectInfo: ConnectionAuth> + Unpin + Send + 'static
{
}

impl<T> Connection for T where
    T: AsyncRead + AsyncWrite + Connected<ConnectInfo: ConnectionAuth> + Unpin + Send + 'static
{
}

/// [`run`] over any stream of accepted connections: TLS connections
/// ([`switchboard_cluster::tls::TlsIncoming`]), or the simulation's from
/// turmoil's network. Same server settings either way; the connections'
/// kind decides whether calls need a proven identity.
pub async fn serve<I, IO, IE>(
    incoming: I,
    broker: LocalBroker,
    handoff: Option<Arc<Handoff>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        // A gateway that died without closing its stream is noticed within
        // a few seconds; its presence entries go with it.
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .add_service(
            BrokerService::new(
                broker,
                handoff,
                <IO::ConnectInfo as ConnectionAuth>::AUTH,
                tasks,
                shutdown.clone(),
            )
            .into_server(),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
}
