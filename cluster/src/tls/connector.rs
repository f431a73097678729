//! [`TlsDialer`]: reaches a broker over mutual TLS, verifying that the
//! certificate it presents is the CA's and names that broker
//! (`NAME.broker.switchboard`), and presenting this node's own.

use std::{future::Future, io, pin::Pin, sync::Arc, time::Duration};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::Channel;

use super::{
    context::TlsContext,
    identity::{PeerIdentity, cert_info},
};
use crate::{
    dialer::{Dialer, SharedDialer, TcpTransport, Transport, endpoint},
    membership::Role,
};
use switchboard_core::{BrokerAddr, BrokerError};

/// How long a TLS handshake with a broker may take.
pub const CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials brokers over `T` (TCP in production) and mutual TLS.
pub struct TlsDialer<T> {
    transport: Arc<T>,
    context: Arc<TlsContext>,
}

impl TlsDialer<TcpTransport> {
    /// The production dialer with TLS.
    pub fn shared(context: Arc<TlsContext>) -> SharedDialer {
        Arc::new(Self::over(TcpTransport, context))
    }
}

impl<T: Transport> TlsDialer<T> {
    pub fn over(transport: T, context: Arc<TlsContext>) -> Self {
        Self {
            transport: Arc::new(transport),
            context,
        }
    }
}

impl<T: Transport> TlsDialer<T> {
    /// Whether the broker at `broker.addr` proves `broker.name`: a TLS
    /// handshake with it that shows a certificate for that name alone
    /// (what [`crate::proof`] asks before the broker counts in the ring).
    pub fn proves(&self, broker: &BrokerAddr) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let (transport, context) = (self.transport.clone(), self.context.clone());
        let (expected, authority) = (broker_identity(broker), broker.addr.clone());
        Box::pin(async move {
            handshake(&*transport, &context, expected, authority)
                .await
                .is_ok()
        })
    }
}

fn broker_identity(broker: &BrokerAddr) -> PeerIdentity {
    PeerIdentity {
        name: broker.name.to_string(),
        role: Role::Broker,
    }
}

/// A TLS connection to `authority`, which must present a certificate for
/// `expected` and nobody else.
async fn handshake<T: Transport>(
    transport: &T,
    context: &TlsContext,
    expected: PeerIdentity,
    authority: String,
) -> io::Result<tokio_rustls::client::TlsStream<T::Io>> {
    let server_name = ServerName::try_from(expected.san())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a DNS name"))?;
    let io = transport.connect(authority.clone()).await?;
    let tls = TlsConnector::from(context.current().client.clone());
    let stream = tokio::time::timeout(CLIENT_HANDSHAKE_TIMEOUT, tls.connect(server_name, io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    // rustls checked that the certificate covers the name; it must also
    // name nobody else.
    let named = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| cert_info(der).map(|i| i.identity));
    match named {
        Some(Ok(identity)) if identity == expected => Ok(stream),
        other => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("broker at {authority} is not {expected}: {other:?}"),
        )),
    }
}

impl<T: Transport> Dialer for TlsDialer<T> {
    fn dial(&self, broker: &BrokerAddr) -> Result<Channel, BrokerError> {
        let expected = broker_identity(broker);
        ServerName::try_from(expected.san()).map_err(|_| {
            BrokerError::Unavailable(format!("broker name {:?} is not a DNS label", broker.name))
        })?;
        let (transport, context) = (self.transport.clone(), self.context.clone());
        let connector = tower::service_fn(move |uri: Uri| {
            let (transport, context, expected) =
                (transport.clone(), context.clone(), expected.clone());
            async move {
                let authority = uri
                    .authority()
                    .map(|a| a.to_string())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no authority"))?;
                handshake(&*transport, &context, expected, authority)
                    .await
                    .map(TokioIo::new)
            }
        });
        Ok(endpoint(&broker.addr)?.connect_with_connector_lazy(connector))
    }
}
