//! [`TlsIncoming`]: a broker's accepted connections, each through a TLS
//! handshake that demands a client certificate from the cluster CA. A
//! connection whose certificate names no identity (or two) is closed. The
//! identity each connection proved is handed to every RPC on it, through
//! tonic's [`Connected::connect_info`], as a [`TlsPeer`].
//!
//! Handshakes run side by side (a slow or silent client does not hold up
//! the others) and each within [`HANDSHAKE_TIMEOUT`].

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::Connected;

use super::{
    context::TlsContext,
    identity::{PeerIdentity, cert_info},
};

/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; beyond, accepting waits (connections
/// queue in the listen backlog).
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Who is at the other end of an accepted connection, as its certificate
/// proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    pub identity: PeerIdentity,
    /// The serial of the certificate the peer presented, in hex.
    pub serial: String,
}

/// An accepted connection after its handshake.
pub struct TlsConn<IO> {
    stream: TlsStream<IO>,
    peer: TlsPeer,
}

impl<IO> Connected for TlsConn<IO> {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

type Accepted<IO> = BoxFuture<'static, Option<TlsConn<IO>>>;

/// `incoming`'s connections after a successful mutual-TLS handshake;
/// failed handshakes are logged, counted and dropped.
pub struct TlsIncoming<S, IO> {
    incoming: Option<Pin<Box<S>>>,
    context: Arc<TlsContext>,
    handshakes: FuturesUnordered<Accepted<IO>>,
}

impl<S, IO, E> TlsIncoming<S, IO>
where
    S: Stream<Item = Result<IO, E>>,
{
    pub fn new(incoming: S, context: Arc<TlsContext>) -> Self {
        Self {
            incoming: Some(Box::pin(incoming)),
            context,
            handshakes: FuturesUnordered::new(),
        }
    }
}

impl<S, IO, E> Stream for TlsIncoming<S, IO>
where
    S: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Item = Result<TlsConn<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            while this.handshakes.len() < MAX_PENDING_HANDSHAKES {
                let Some(incoming) = this.incoming.as_mut() else {
                    break;
                };
                match incoming.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(io))) => this
                        .handshakes
                        .push(Box::pin(handshake(io, this.context.clone()))),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => this.incoming = None,
                    Poll::Pending => break,
                }
            }
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(None)) => continue,
                Poll::Ready(None) if this.incoming.is_none() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One server-side handshake with the credentials current now.
fn abandoned(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

async fn handshake<IO>(io: IO, context: Arc<TlsContext>) -> Option<TlsConn<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(context.current().server.clone());
    let refused = |reason: &'static str| {
        metrics::counter!("switchboard_tls_handshakes_refused_total", "reason" => reason)
            .increment(1);
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => stream,
        // The peer hung up before finishing: a caller that gave up (an
        // election drops the votes it no longer needs), not a refusal.
        Ok(Err(e)) if abandoned(&e) => {
            tracing::debug!(error = %e, "TLS handshake abandoned by the peer");
            refused("abandoned");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS handshake refused");
            refused("handshake");
            return None;
        }
        Err(_) => {
            tracing::warn!("TLS handshake timed out");
            refused("timeout");
            return None;
        }
    };
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    match cert_info(der) {
        Ok(info) => Some(TlsConn {
            peer: TlsPeer {
                identity: info.identity,
                serial: info.serial,
            },
            stream,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "TLS peer certificate names no identity; closing");
            refused("identity");
            None
        }
    }
}
