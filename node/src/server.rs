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
    LocalBroker,
    authorization::ConnectionAuth,
    broker_service::BrokerService,
    handoff::Handoff,
    replica::{Replicas, service::ReplicaService},
};

/// What a broker's gRPC server serves.
pub struct Services {
    pub broker: LocalBroker,
    /// In a cluster: only the channels this says the broker owns.
    pub handoff: Option<Arc<Handoff>>,
    /// In a cluster: this broker as a replica and voter of channels.
    pub replicas: Option<Arc<Replicas>>,
}

/// Serves `services` on `listener` until `shutdown`. Each gateway stream's
/// watcher runs in `tasks`.
pub async fn run(
    listener: TcpListener,
    services: Services,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve(incoming(listener), services, tasks, shutdown).await
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
    services: Services,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let auth = <IO::ConnectInfo as ConnectionAuth>::AUTH;
    let Services {
        broker,
        handoff,
        replicas,
    } = services;
    let replicas = replicas
        .map(|r| ReplicaService::new(r, auth, tasks.clone(), shutdown.clone()).into_server());
    tonic::transport::Server::builder()
        // A gateway that died without closing its stream is noticed within
        // a few seconds; its presence entries go with it.
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .add_service(
            BrokerService::new(broker, handoff, auth, tasks, shutdown.clone()).into_server(),
        )
        .add_optional_service(replicas)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
}
