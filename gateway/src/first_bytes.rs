//! A deadline on the first bytes of a connection.
//!
//! The server tells HTTP/1.1 from HTTP/2 (gRPC) by the first bytes a client
//! sends, and that sniffing has no timeout of its own: a peer that connects
//! and sends a byte or two would hold its socket forever. This wrapper fails
//! reads once the deadline passes before the first `n` bytes arrived; from
//! then on HTTP's own timeouts (`handshake_timeout` for request headers)
//! take over, and it costs one branch per read.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use crate::refusal::{self, Limit};

pub struct FirstBytesDeadline<S> {
    inner: S,
    /// `None` once the first bytes arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    remaining: usize,
    /// The deadline passed: counted once, every read fails.
    expired: bool,
}

impl<S> FirstBytesDeadline<S> {
    pub fn new(inner: S, first: usize, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            remaining: first,
            expired: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut()
            && (this.expired || deadline.as_mut().poll(cx).is_ready())
        {
            if !this.expired {
                this.expired = true;
                refusal::record(Limit::Handshake);
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request did not start in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_some() {
            this.remaining = this.remaining.saturating_sub(buf.filled().len() - before);
            if this.remaining == 0 {
                this.deadline = None;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_talkative_one_does_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = FirstBytesDeadline::new(server, 4, Duration::from_secs(1));
        client.write_all(b"ab").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut io = FirstBytesDeadline::new(server, 4, Duration::from_secs(1));
        client.write_all(b"abcd").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.write_all(b"e").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
    }
}
