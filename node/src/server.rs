//! The broker process's gRPC server: a [`LocalBroker`] served on a listener
//! until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{LocalBroker, broker_service::BrokerService};

/// Serves `broker` on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    broker: LocalBroker,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        // A gateway that died without closing its stream is noticed within
        // a few seconds; its presence entries go with it.
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .add_service(BrokerService::new(broker).into_server())
        // The builder's `tcp_nodelay` does not reach connections from our
        // own listener: set it on them. Without it, Nagle's algorithm held
        // delivery frames on the stream to each gateway until the previous
        // one was acknowledged (a delayed ACK: tens of milliseconds).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled(),
        )
        .await
}
