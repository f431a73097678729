//! The broker process's gRPC server: a [`LocalBroker`] served on a listener
//! until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::{LocalBroker, broker_service::BrokerService, handoff::Handoff};

/// Serves `broker` on `listener` until `shutdown`; in a cluster, only the
/// channels `handoff` says it owns.
pub async fn run(
    listener: TcpListener,
    broker: LocalBroker,
    handoff: Option<Arc<Handoff>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        // A gateway that died without closing its stream is noticed within
        // a few seconds; its presence entries go with it.
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .add_service(BrokerService::new(broker, handoff).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await
}
