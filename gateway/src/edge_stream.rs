//! [`EdgeStream`]: an accepted connection, plain or after the edge TLS
//! handshake ([`crate::edge_tls`]), as one type for the HTTP server.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;

/// A client connection on a public listener.
pub enum EdgeStream {
    Plain(TcpStream),
    /// Boxed: a TLS session's state is large, a plain socket's small.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EdgeStream::Plain(s) => s.is_write_vectored(),
            EdgeStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
